//! Helpers shared by the integration tests: real servers started in temp dirs, bounded waits.

pub mod influxd;
pub mod wait;
