//! The wrapper every output runs in: filters, renaming, a bounded buffer that drops the oldest
//! metric when full and counts every drop, and batched flushing that keeps a failed batch.

use std::collections::VecDeque;
use std::time::Duration;

use super::filter::Filter;
use crate::config::Options;
use crate::inputs::BuildContext;
use crate::metric::Metric;
use crate::outputs::{Output, OutputSpec, WriteError};

/// Common Telegraf output options that wk-agent accepts but does not act on.
pub const UNSUPPORTED_OUTPUT_KEYS: &[&str] = &[
    "log_level",
    "startup_error_behavior",
    "labels",
    "metricpass",
];

/// Counters of one output (reported by the `internal` measurements).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OutputStats {
    pub metrics_added: u64,
    pub metrics_written: u64,
    pub metrics_dropped: u64,
    pub metrics_filtered: u64,
    pub write_errors: u64,
}

/// An output with its buffer.
pub struct RunningOutput {
    pub spec: &'static OutputSpec,
    pub alias: Option<String>,
    output: Box<dyn Output>,
    filter: Filter,
    name_override: Option<String>,
    name_prefix: Option<String>,
    name_suffix: Option<String>,
    pub batch_size: usize,
    pub buffer_limit: usize,
    pub flush_interval: Option<Duration>,
    pub flush_jitter: Option<Duration>,
    buffer: VecDeque<Metric>,
    /// Drops not yet reported in the log.
    unreported_drops: u64,
    pub stats: OutputStats,
}

impl RunningOutput {
    /// Reads the common options, then lets the plugin read its own. `batch_size` and
    /// `buffer_limit` are the agent-wide defaults.
    pub fn build(
        spec: &'static OutputSpec,
        opts: &mut Options<'_, '_>,
        ctx: &BuildContext<'_>,
        batch_size: usize,
        buffer_limit: usize,
    ) -> RunningOutput {
        let alias = opts.opt_string("alias");
        let flush_interval = opts.opt_duration("flush_interval");
        if flush_interval == Some(Duration::ZERO) {
            opts.error_at("flush_interval", "must be greater than 0");
        }
        let flush_jitter = opts.opt_duration("flush_jitter");
        let batch_size = opts.int("metric_batch_size", batch_size as i64, 0, i64::MAX) as usize;
        let buffer_limit =
            opts.int("metric_buffer_limit", buffer_limit as i64, 0, i64::MAX) as usize;
        let name_override = opts.opt_string("name_override");
        let name_prefix = opts.opt_string("name_prefix");
        let name_suffix = opts.opt_string("name_suffix");
        let filter = Filter::from_options(opts);
        opts.unsupported(UNSUPPORTED_OUTPUT_KEYS);
        let output = (spec.build)(opts, ctx);
        RunningOutput {
            spec,
            alias,
            output,
            filter,
            name_override,
            name_prefix,
            name_suffix,
            batch_size: if batch_size == 0 { 1000 } else { batch_size },
            buffer_limit: if buffer_limit == 0 {
                10000
            } else {
                buffer_limit
            },
            flush_interval,
            flush_jitter,
            buffer: VecDeque::new(),
            unreported_drops: 0,
            stats: OutputStats::default(),
        }
    }

    /// The plugin name and alias, as self-telemetry keys them.
    pub fn stats_key(&self) -> crate::selfstat::PluginKey {
        (self.spec.name.to_owned(), self.alias.clone())
    }

    /// The plugin name, with its alias when it has one (for logs).
    pub fn log_name(&self) -> String {
        match &self.alias {
            Some(a) => format!("outputs.{}::{a}", self.spec.name),
            None => format!("outputs.{}", self.spec.name),
        }
    }

    /// Metrics waiting to be written.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Filters, renames and buffers a copy of `m`; when the buffer is full the oldest metric
    /// is dropped and counted.
    pub fn add(&mut self, m: &Metric) {
        if !self.filter.is_empty() && !self.filter.select(m) {
            self.stats.metrics_filtered += 1;
            return;
        }
        let mut m = m.clone();
        if !self.filter.is_empty() && !self.filter.modify(&mut m) {
            self.stats.metrics_filtered += 1;
            return;
        }
        if let Some(n) = &self.name_override {
            m.name = n.clone().into();
        }
        if self.name_prefix.is_some() || self.name_suffix.is_some() {
            let prefix = self.name_prefix.as_deref().unwrap_or("");
            let suffix = self.name_suffix.as_deref().unwrap_or("");
            m.name = format!("{prefix}{}{suffix}", m.name).into();
        }
        if self.buffer.len() >= self.buffer_limit {
            self.buffer.pop_front();
            self.stats.metrics_dropped += 1;
            self.unreported_drops += 1;
        }
        self.buffer.push_back(m);
        self.stats.metrics_added += 1;
    }

    /// True when a full batch is waiting.
    pub fn batch_ready(&self) -> bool {
        self.buffer.len() >= self.batch_size
    }

    /// Drops since the last call (to be logged once per flush, as Telegraf's
    /// "Metric buffer overflow; N metrics have been dropped").
    pub fn take_unreported_drops(&mut self) -> u64 {
        std::mem::take(&mut self.unreported_drops)
    }

    /// Writes what is buffered, oldest first, one batch at a time; stops at the first failed
    /// batch, which stays at the head of the buffer.
    pub fn flush(&mut self) -> Result<usize, WriteError> {
        let mut written = 0;
        while !self.buffer.is_empty() {
            let n = self.batch_size.min(self.buffer.len());
            let batch = self.buffer.make_contiguous();
            match self.output.write(&batch[..n]) {
                Ok(()) => {
                    self.buffer.drain(..n);
                    self.stats.metrics_written += n as u64;
                    written += n;
                }
                Err(e) => {
                    self.stats.write_errors += 1;
                    return Err(e);
                }
            }
        }
        Ok(written)
    }

    /// Closes the plugin.
    pub fn close(&mut self) {
        self.output.close();
    }
}
