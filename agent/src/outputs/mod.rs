//! Outputs: one folder per Telegraf output plugin, listed once in the registry below.

use std::time::Duration;

use crate::metric::Metric;
use crate::plugin::BuildContext;
use wk_core::options::Options;

pub mod file;
pub mod influxdb;
pub mod influxdb_v2;

/// An output plugin: built from validated options (no I/O), then handed batches.
pub trait Output: Send {
    /// Writes one batch. `Ok` means every metric was stored; each [`WriteError`] variant says
    /// which metrics leave the buffer and which are kept for a later retry.
    fn write(&mut self, metrics: &[Metric]) -> Result<(), WriteError>;

    /// The queue a metric set aside after a [`WriteError::Kept`] waits in (influxdb_v2: its
    /// bucket): each such queue holds the metrics of one key only and is read on its own
    /// (but one, shared by the keys beyond a cap: see `running_output::MAX_PARKED_QUEUES`).
    fn kept_key(&self, _metric: &Metric) -> String {
        String::new()
    }

    /// When the metrics set aside under `key` may be tried again (influxdb_v2: the end of
    /// that bucket's backoff); `None` (or a past instant): now. Until then their queue is not
    /// read.
    fn kept_due_at(&self, _key: &str) -> Option<std::time::Instant> {
        None
    }

    /// No metric set aside under `key` is left (written, or dropped by the limit): the
    /// output may forget what it knew about it (influxdb_v2: the bucket's backoff, so that a
    /// new metric for it is asked at once; the count of refusals goes on).
    fn forget_kept(&mut self, _key: &str) {}

    /// At a reload: what the output that replaces this one should know (influxdb_v2: the
    /// buckets refused so far), given to its [`Output::take_over`].
    fn hand_over(&mut self) -> Option<HandOver> {
        None
    }

    /// Takes what the output this one replaces handed over (a state of another type, from
    /// another plugin, is ignored).
    fn take_over(&mut self, _state: HandOver) {}

    /// Flushes and releases resources at shutdown or reload.
    fn close(&mut self) {}
}

/// An output's state handed to the output that replaces it at a reload.
pub type HandOver = Box<dyn std::any::Any + Send>;

/// Why a batch was not (entirely) written, and what becomes of its metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// Worth retrying later (network down, server error, disk full): the whole batch is kept.
    #[error("{0}")]
    Retry(String),
    /// As `Retry`, but the server asked us to wait (HTTP 429/503 `Retry-After`): no new
    /// attempt before `after` has passed.
    #[error("{reason} (server asked to retry after {after:?})")]
    RetryAfter { after: Duration, reason: String },
    /// The batch is settled and leaves the buffer: the server stored every metric except
    /// `rejected` of them, which it refused for good (type conflict, parse error, other 4xx).
    /// Retrying them could never succeed; `reason` is logged and they are counted as
    /// `metrics_rejected`.
    #[error("{rejected} metric(s) rejected: {reason}")]
    Rejected { rejected: usize, reason: String },
    /// Every metric of the batch is settled (stored, or `rejected` of them refused for good)
    /// but those at `kept` (ascending indices into the batch), which the server refused for
    /// now on their own: influxdb_v2 with `bucket_tag`, a bucket the token may not write
    /// (401/403). They are set aside (parked by [`Output::kept_key`], see [`Output::kept_due_at`]), so they never hold up
    /// the metrics behind them, and the flush goes on: not a failure of the output (no
    /// backoff) unless the flush settled nothing and `refused` (the server answered a refusal
    /// in this write, not merely a bucket still in its backoff).
    #[error("{reason} ({} metric(s) kept for a later retry, {rejected} rejected, the others written)", kept.len())]
    Kept {
        kept: Vec<usize>,
        rejected: usize,
        reason: String,
        refused: bool,
    },
    /// Only the first `done` metrics of the batch are settled (stored, or `rejected` of them
    /// refused for good); the rest stays at the head of the buffer for a retry, for `reason`
    /// (a batch split after HTTP 413 whose second half failed).
    #[error("{reason} ({done} metric(s) settled, {rejected} of them rejected; the rest is kept)")]
    Partial {
        done: usize,
        rejected: usize,
        reason: String,
        retry_after: Option<Duration>,
    },
}

/// A secret file that cannot be read or a request without an answer: worth retrying (the file
/// may be fixed, the server come back), so the batch is kept.
impl From<crate::common::http::HttpError> for WriteError {
    fn from(e: crate::common::http::HttpError) -> Self {
        WriteError::Retry(e.to_string())
    }
}

/// A constructor from options.
pub type BuildFn = fn(&mut Options<'_, '_>, &BuildContext<'_>) -> Box<dyn Output>;

/// One registry entry.
pub struct OutputSpec {
    /// `[[outputs.<name>]]`, the folder name.
    pub name: &'static str,
    pub description: &'static str,
    pub sample_config: &'static str,
    pub build: BuildFn,
}

/// Every output, one line each.
pub static REGISTRY: &[OutputSpec] = &[file::SPEC, influxdb::SPEC, influxdb_v2::SPEC];

/// The registry entry of an output.
pub fn find(name: &str) -> Option<&'static OutputSpec> {
    REGISTRY.iter().find(|s| s.name == name)
}

/// Reads the `influx` serializer options shared by every serializer-based output
/// (`data_format`, `influx_*`).
pub fn serializer_options(opts: &mut Options<'_, '_>) -> crate::lineproto::Serializer {
    let format = opts.string("data_format", "influx");
    if format != "influx" {
        opts.error_at(
            "data_format",
            format!("{format:?} is not supported: wk-agent writes only \"influx\" line protocol"),
        );
    }
    let s = crate::lineproto::Serializer {
        uint_support: opts.bool("influx_uint_support", false),
        omit_timestamp: opts.bool("influx_omit_timestamp", false),
        sort_fields: opts.bool("influx_sort_fields", false),
    };
    if opts.has("influx_max_line_bytes") && opts.int("influx_max_line_bytes", 0, 0, i64::MAX) != 0 {
        opts.warn_at(
            "influx_max_line_bytes",
            "is not implemented; lines are never split",
        );
    }
    s
}
