//! The plugin contract both inputs and outputs are built against: what a plugin may know
//! while it is built ([`BuildContext`]), where an input puts what it gathered
//! ([`Accumulator`]) and why a gather fails ([`GatherError`]). A leaf below
//! `inputs`, `outputs` and `models`, so none of them needs another's internals.

use std::sync::Arc;
use std::time::Duration;

pub use crate::error::GatherError;
use crate::hostpaths::HostPaths;
use crate::selfstat::SelfStats;
use wk_core::metric::{Metric, Name};

/// The shortest collection or flush interval accepted: `"1ns"` gathered ~800 times a second.
pub const MIN_PERIOD: Duration = Duration::from_millis(100);

/// What an input may know while it is built.
pub struct BuildContext<'a> {
    pub paths: &'a HostPaths,
    /// The interval this input will run at.
    pub interval: Duration,
    /// The agent's self-telemetry (read by the `internal` input).
    pub stats: &'a Arc<SelfStats>,
}

/// Where an input puts what it gathered. The time is frozen for one gather so that every line
/// of a collection carries the same (rounded) timestamp, and tests can pin it.
#[derive(Debug, Default)]
pub struct Accumulator {
    time: i64,
    clock: i64,
    metrics: Vec<Metric>,
    errors: Vec<GatherError>,
}

impl Accumulator {
    /// An empty accumulator whose metrics get `time` (ns since the epoch).
    pub fn new(time: i64) -> Self {
        Self::with_clock(time, time)
    }

    /// An accumulator stamping metrics with `time` (rounded to the precision) whose rate
    /// clock is `clock` (the unrounded gather time).
    pub fn with_clock(time: i64, clock: i64) -> Self {
        Accumulator {
            time,
            clock,
            metrics: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// The gather's timestamp in ns (rounded to the precision), stamped on its metrics.
    pub fn time(&self) -> i64 {
        self.time
    }

    /// The unrounded gather time in ns: what inputs divide by to compute rates. (Rounded
    /// stamps of two gathers 500 ms apart can be equal, or a whole second apart.)
    pub fn clock(&self) -> i64 {
        self.clock
    }

    /// Starts a metric stamped with the gather time; push it with [`Accumulator::push`].
    pub fn metric(&self, name: impl Into<Name>) -> Metric {
        Metric::new(name, self.time)
    }

    /// Adds a finished metric; metrics without fields are dropped as in Telegraf.
    pub fn push(&mut self, metric: Metric) {
        if !metric.fields.is_empty() {
            self.metrics.push(metric);
        }
    }

    /// Records a non-fatal error: the input keeps what it gathered (Telegraf's `acc.AddError`).
    pub fn add_error(&mut self, error: impl Into<GatherError>) {
        self.errors.push(error.into());
    }

    /// The metrics gathered so far.
    pub fn metrics(&self) -> &[Metric] {
        &self.metrics
    }

    /// Errors recorded so far.
    pub fn errors(&self) -> &[GatherError] {
        &self.errors
    }

    /// Takes the metrics and errors out, leaving the accumulator empty.
    pub fn take(&mut self) -> (Vec<Metric>, Vec<GatherError>) {
        (
            std::mem::take(&mut self.metrics),
            std::mem::take(&mut self.errors),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_without_fields_are_not_kept() {
        let mut acc = Accumulator::new(5);
        acc.push(acc.metric("empty"));
        acc.push(acc.metric("full").with_field("x", 1i64));
        assert_eq!(acc.metrics().len(), 1);
        assert_eq!(acc.metrics()[0].time, 5);
    }
}
