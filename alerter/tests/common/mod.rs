//! Helpers shared by the integration tests: real servers started in temp dirs.

pub mod influxd;
