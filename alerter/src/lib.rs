//! wk-alerter: a Kapacitor-style alert processor running Rhai rules over InfluxDB.
//!
//! Map of the crate:
//! - [`model`]: the shared types: levels, rule settings, observations, alert events.
//! - [`rules`]: the Rhai engine (sandboxed), loading a rule file (settings + `check()`), the
//!   query builder and series API exposed to scripts.
//! - [`source`]: where queries go: InfluxDB (InfluxQL over `/query`) or in-memory points
//!   (recorded line protocol; later the stream window).
//! - [`state`]: the per-instance alert state machine (pending, keep-firing, hysteresis,
//!   flapping, NoData, Error, repeat, expiry), its persistence, and message templates.
//! - [`notify`]: routing, silences, inhibition and the notifiers (log, email, webhook, exec).

pub mod model;
pub mod notify;
pub mod rules;
pub mod source;
pub mod state;
