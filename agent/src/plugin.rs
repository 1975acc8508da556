//! The plugin contract both inputs and outputs are built against: what a plugin may know
//! while it is built ([`BuildContext`]) and why a gather fails ([`GatherError`]). A leaf below
//! `inputs`, `outputs` and `models`, so none of them needs another's internals.

use std::sync::Arc;
use std::time::Duration;

pub use crate::error::GatherError;
use crate::hostpaths::HostPaths;
use crate::selfstat::SelfStats;

/// What an input may know while it is built.
pub struct BuildContext<'a> {
    pub paths: &'a HostPaths,
    /// The interval this input will run at.
    pub interval: Duration,
    /// The agent's self-telemetry (read by the `internal` input).
    pub stats: &'a Arc<SelfStats>,
}
