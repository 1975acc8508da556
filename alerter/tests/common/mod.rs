//! Helpers shared by the integration tests: real servers started in temp dirs, bounded waits.

/// Used by the tests, not by the benches that include this module.
#[allow(dead_code)]
pub mod alerter;
pub mod influxd;
/// Used by the tests, not by the benches that include this module.
#[allow(dead_code)]
pub mod procs;
/// The agent's test servers (VictoriaMetrics among them), shared rather than copied.
#[allow(dead_code)]
#[path = "../../../agent/tests/outputs/servers.rs"]
pub mod servers;
pub mod wait;
