//! wk-core: the pieces both Watchkeeper programs use, with no knowledge of either.
//!
//! Map of the crate (each module is a leaf or depends only on modules above it):
//! - [`metric`]: the metric model (`Metric`, `FieldValue`) and the gather `Accumulator`.
//! - [`lineproto`]: InfluxDB line protocol, the serializer (Telegraf's bytes) and the parser
//!   (InfluxDB 1.x's unescaping).
//! - [`diag`]: file:line:column diagnostics for config files.
//! - [`values`]: durations, sizes and `${VAR}` substitution as Telegraf reads them.
//! - [`suggest`]: "did you mean" for misspelled names.
//! - [`options`]: typed, key-tracking reading of one TOML table, reporting through [`diag`].
//! - [`glob`]: Telegraf's glob syntax (filters, silences).
//! - [`logging`]: the log set-up of both programs.
//! - [`testing`]: `skip!`, the one way a test may skip (counted; a failure in CI).
//! - [`control`]: reload/stop messages and the signals that send them.
//! - [`cli`]: exit statuses, shell completions and man pages of both command lines.
//! - [`sockmap`]: socket inode → holding processes and fds, kept between gathers (rustix).
//! - [`procs`]: the process table and socket inode → process, from /proc (procfs crate).
//! - [`systemd`]: systemd's unit types.
//!
//! The agent adds inputs, outputs and its loop on top; the alerter adds rules, state and
//! notifiers. Neither depends on the other.

pub mod cli;
pub mod control;
pub mod diag;
pub mod glob;
pub mod lineproto;
pub mod logging;
pub mod metric;
pub mod options;
pub mod procs;
pub mod sockmap;
pub mod suggest;
pub mod systemd;
pub mod testing;
pub mod values;
