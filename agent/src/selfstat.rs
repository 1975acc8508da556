//! Self-telemetry: what the agent did, per input and per output, read by the `internal` input
//! (Telegraf's `internal_agent`, `internal_gather`, `internal_write`).
//!
//! One registry per process, created by `main` and handed to every plan, so counters keep
//! counting across SIGHUP reloads (as Telegraf's selfstat registry does). Counters only grow;
//! the timings are means since the previous read, as Telegraf's timing stats.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Identifies a plugin instance: plugin name and optional alias.
pub type PluginKey = (String, Option<String>);

/// A read of the registry: every input's and every output's counters.
pub type Snapshot = (Vec<(PluginKey, GatherStats)>, Vec<(PluginKey, WriteStats)>);

/// Counters of one input.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GatherStats {
    pub metrics_gathered: u64,
    pub gather_errors: u64,
    pub gather_timeouts: u64,
    /// Sum and count of gather durations since the last read (the field is their mean).
    pub gather_time_ns_sum: u64,
    pub gather_time_count: u64,
    /// Mean of the previous window, kept so a read between gathers still has a value.
    pub gather_time_ns: u64,
}

/// Counters of one output.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteStats {
    pub counts: WriteCounts,
    pub buffer_size: u64,
    pub buffer_limit: u64,
    pub write_time_ns_sum: u64,
    pub write_time_count: u64,
    pub write_time_ns: u64,
}

/// The counts an output keeps (Telegraf's `internal_write` fields of the same names): its
/// own since it was built, the registry's totals, or the change between two reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteCounts {
    pub metrics_added: u64,
    pub metrics_written: u64,
    pub metrics_dropped: u64,
    /// Refused for good by the server (type conflict, parse error, 4xx): removed, not retried.
    pub metrics_rejected: u64,
    pub metrics_filtered: u64,
    pub write_errors: u64,
}

impl WriteCounts {
    /// What was counted since `earlier` (a previous read of the same counters).
    pub fn since(self, earlier: WriteCounts) -> WriteCounts {
        WriteCounts {
            metrics_added: self.metrics_added - earlier.metrics_added,
            metrics_written: self.metrics_written - earlier.metrics_written,
            metrics_dropped: self.metrics_dropped - earlier.metrics_dropped,
            metrics_rejected: self.metrics_rejected - earlier.metrics_rejected,
            metrics_filtered: self.metrics_filtered - earlier.metrics_filtered,
            write_errors: self.write_errors - earlier.write_errors,
        }
    }
}

impl std::ops::AddAssign for WriteCounts {
    fn add_assign(&mut self, d: WriteCounts) {
        self.metrics_added += d.metrics_added;
        self.metrics_written += d.metrics_written;
        self.metrics_dropped += d.metrics_dropped;
        self.metrics_rejected += d.metrics_rejected;
        self.metrics_filtered += d.metrics_filtered;
        self.write_errors += d.write_errors;
    }
}

/// The registry.
#[derive(Debug, Default)]
pub struct SelfStats {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    inputs: BTreeMap<PluginKey, GatherStats>,
    outputs: BTreeMap<PluginKey, WriteStats>,
}

impl SelfStats {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the counters inconsistent in a way that
        // matters (they are independent numbers), so a poisoned lock is used as is.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes an input known (so it reports zeros before its first gather).
    pub fn register_input(&self, key: &PluginKey) {
        self.lock().inputs.entry(key.clone()).or_default();
    }

    /// Makes an output known.
    pub fn register_output(&self, key: &PluginKey, buffer_limit: usize) {
        self.lock()
            .outputs
            .entry(key.clone())
            .or_default()
            .buffer_limit = buffer_limit as u64;
    }

    /// Records one gather.
    pub fn record_gather(&self, key: &PluginKey, metrics: usize, errors: usize, elapsed: Duration) {
        let mut g = self.lock();
        let s = g.inputs.entry(key.clone()).or_default();
        s.metrics_gathered += metrics as u64;
        s.gather_errors += errors as u64;
        s.gather_time_ns_sum += elapsed.as_nanos() as u64;
        s.gather_time_count += 1;
    }

    /// Records what an output did since its last report, and its buffer fill.
    pub fn record_write(
        &self,
        key: &PluginKey,
        d: WriteCounts,
        buffer_size: usize,
        write_time: Option<Duration>,
    ) {
        let mut g = self.lock();
        let s = g.outputs.entry(key.clone()).or_default();
        s.counts += d;
        s.buffer_size = buffer_size as u64;
        if let Some(t) = write_time {
            s.write_time_ns_sum += t.as_nanos() as u64;
            s.write_time_count += 1;
        }
    }

    /// Reads every counter; timing means restart from here.
    pub fn read(&self) -> Snapshot {
        let mut g = self.lock();
        for s in g.inputs.values_mut() {
            if let Some(mean) = s.gather_time_ns_sum.checked_div(s.gather_time_count) {
                s.gather_time_ns = mean;
                (s.gather_time_ns_sum, s.gather_time_count) = (0, 0);
            }
        }
        for s in g.outputs.values_mut() {
            if let Some(mean) = s.write_time_ns_sum.checked_div(s.write_time_count) {
                s.write_time_ns = mean;
                (s.write_time_ns_sum, s.write_time_count) = (0, 0);
            }
        }
        let inputs = g
            .inputs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let outputs = g
            .outputs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (inputs, outputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_and_timings_are_means_since_the_last_read() {
        let s = SelfStats::default();
        let k: PluginKey = ("cpu".into(), None);
        s.record_gather(&k, 10, 0, Duration::from_nanos(100));
        s.record_gather(&k, 10, 1, Duration::from_nanos(300));
        let (i, _) = s.read();
        assert_eq!(i[0].1.metrics_gathered, 20);
        assert_eq!(i[0].1.gather_errors, 1);
        assert_eq!(i[0].1.gather_time_ns, 200);
        // No gather since: the last mean stays.
        assert_eq!(s.read().0[0].1.gather_time_ns, 200);
        let o: PluginKey = ("file".into(), Some("a".into()));
        s.register_output(&o, 5);
        s.record_write(
            &o,
            WriteCounts {
                metrics_dropped: 3,
                ..Default::default()
            },
            5,
            None,
        );
        s.record_write(
            &o,
            WriteCounts {
                metrics_dropped: 2,
                ..Default::default()
            },
            5,
            None,
        );
        let (_, out) = s.read();
        assert_eq!(
            (
                out[0].1.counts.metrics_dropped,
                out[0].1.buffer_limit,
                out[0].1.buffer_size
            ),
            (5, 5, 5)
        );
    }
}
