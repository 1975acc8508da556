//! What several plugins share, as Telegraf's plugins/common: the HTTP/TLS client of the
//! influxdb outputs and the http_response input, and running a helper program (systemd_units).

pub mod command;
pub mod http;
