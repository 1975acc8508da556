//! wk-agent: a Telegraf-compatible host agent.
//!
//! Map of the crate:
//! - [`config`]: telegraf.conf TOML → validated [`config::Plan`] (two stages; errors name
//!   file:line:column).
//! - [`inputs`]: one folder per Telegraf input (`cpu`, `mem`, …) and the registry.
//! - [`outputs`]: one folder per output and the registry.
//! - [`models`]: the wrappers every plugin runs in (filters, naming, tags, buffers).
//! - [`agent`]: the collect/flush loop, `--test`/`--once` gathering.
//! - [`daemon`]: the program's modes (`test`, `once`, `run` with reload/stop) for `main.rs`
//!   and in-process tests.
//! - [`metric`], [`lineproto`], [`glob`], [`logging`]: re-exported from `wk_core`, the crate
//!   both programs share.
//! - [`plugin`]: the plugin contract (`BuildContext`), [`error`]: `GatherError`.
//! - [`common`]: what several plugins share (the HTTP/TLS client), as Telegraf's plugins/common.
//! - [`hostpaths`]: where /proc, /sys and the host root are.
//! - [`selfstat`]: the agent's own counters, read by the `internal` input.

pub mod agent;
pub mod common;
pub mod config;
pub mod daemon;
pub mod error;
pub mod hostpaths;
pub mod inputs;
pub mod memory;
pub mod models;
pub mod outputs;
pub mod plugin;
pub mod selfstat;

pub use wk_core::{glob, lineproto, logging, metric};
