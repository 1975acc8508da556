//! Outputs: one folder per Telegraf output plugin, listed once in the registry below.

use crate::config::Options;
use crate::inputs::BuildContext;
use crate::metric::Metric;

pub mod file;

/// An output plugin: built from validated options (no I/O), then handed batches.
pub trait Output: Send {
    /// Writes one batch. On `Err` the caller keeps the batch and retries it later.
    fn write(&mut self, metrics: &[Metric]) -> Result<(), WriteError>;

    /// Flushes and releases resources at shutdown or reload.
    fn close(&mut self) {}
}

/// Why a batch was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Worth retrying later (network down, server error, disk full): the batch is kept.
    #[error("{0}")]
    Retry(String),
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
pub static REGISTRY: &[OutputSpec] = &[file::SPEC];

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
