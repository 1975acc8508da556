//! wk-alerter: a Kapacitor-style alert processor running Rhai rules over InfluxDB,
//! VictoriaMetrics or a stream window.
//!
//! Map of the crate:
//! - [`app`]: the commands (`run` with reload/stop, `check`, `replay`) as library functions.
//! - [`config`]: the alerter's TOML config (sources, notifiers, silences), file:line errors.
//! - [`service`]: the scheduler: evaluates each rule on its schedule, feeds the state machine,
//!   routes events, reloads changed rule files (keeping the last good version of a broken one).
//! - [`model`]: the shared types: levels, rule settings, observations, alert events.
//! - [`rules`]: the Rhai engine (sandboxed), loading a rule file (settings + `check()`) and
//!   the series API exposed to scripts.
//! - [`query`]: the query a rule builds, which every source answers (a leaf below `rules`
//!   and `source`, so neither depends on the other).
//! - [`source`]: where queries go: InfluxDB (InfluxQL over `/query`), VictoriaMetrics
//!   (MetricsQL over the Prometheus API) or in-memory points (recorded line protocol, the
//!   stream window).
//! - [`state`]: the per-instance alert state machine (pending, keep-firing, hysteresis,
//!   flapping, NoData, Error, repeat, expiry) and its persistence.
//! - [`template`]: message templates (`{{host}}`, `{{value:.1}}`), used by state and notifiers.
//! - [`clock`]: the wall clock in ns.
//! - [`memory`]: the process's allocator settings (purge delay, no huge pages) and undoing
//!   them for the programs it starts.
//! - [`notify`]: routing, silences, inhibition and the notifiers (log, email, webhook, exec).
//! - [`heartbeat`]: pings an external dead man's switch while the alerter is healthy.
//! - [`api`]: the status page, the JSON API (`/api/v1/…`), `/metrics`, and the client the
//!   `silence` command uses.
//! - [`actions`]: recovery actions beside the notifiers (typed arguments, local or ssh, guard
//!   rails persisted with the state, verify, one report, audit log).

pub mod actions;
pub mod api;
pub mod app;
pub mod clock;
pub mod config;
pub mod heartbeat;
pub mod memory;
pub mod model;
pub mod notify;
pub mod query;
pub mod rules;
pub mod service;
pub mod source;
pub mod state;
pub mod stream;
pub mod template;

/// Counts the bytes each thread holds: the rule sandbox's memory budget
/// ([`rules::budget`]).
#[global_allocator]
static ALLOC: rules::budget::CountingAlloc = rules::budget::CountingAlloc;
