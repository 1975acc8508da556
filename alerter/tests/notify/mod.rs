//! Tests of the notification side: config, router, and each notifier against a real
//! receiver (HTTP server, SMTP server, processes, InfluxDB).

mod config;
mod email;
mod exec;
mod grouping;
mod influxdb;
mod log;
mod outbox;
mod router;
pub mod support;
mod test_command;
mod webhook;
