//! The wrapper every input runs in: interval, naming, extra tags and filters live here once,
//! not in each plugin (Telegraf's `models/running_input.go`).

use std::time::{Duration, Instant};

use super::filter::Filter;
use crate::inputs::{Input, InputSpec};
use crate::metric::Metric;
use crate::plugin::{Accumulator, BuildContext, GatherError};
use wk_core::options::Options;

/// Options every input accepts, read before the plugin's own.
pub const COMMON_INPUT_KEYS: &[&str] = &[
    "interval",
    "precision",
    "collection_jitter",
    "collection_offset",
    "name_override",
    "name_prefix",
    "name_suffix",
    "tags",
    "alias",
];

/// Common Telegraf input options that wk-agent accepts but does not act on.
pub const UNSUPPORTED_INPUT_KEYS: &[&str] = &[
    "log_level",
    "startup_error_behavior",
    "labels",
    "time_source",
    "metricpass",
];

/// Tags added to every metric after the input's own: `[global_tags]` and `host`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GlobalTags {
    pub tags: Vec<(String, String)>,
}

/// What one gather produced.
#[derive(Debug, Default)]
pub struct GatherOutcome {
    pub metrics: Vec<Metric>,
    pub errors: Vec<GatherError>,
    pub elapsed: Duration,
}

/// An input with its common options applied.
pub struct RunningInput {
    pub spec: &'static InputSpec,
    pub alias: Option<String>,
    input: Box<dyn Input>,
    /// None = the agent's interval.
    pub interval: Option<Duration>,
    pub precision: Option<Duration>,
    pub collection_jitter: Option<Duration>,
    pub collection_offset: Option<Duration>,
    rename: super::Rename,
    tags: Vec<(String, String)>,
    filter: Filter,
}

impl RunningInput {
    /// Reads the common options, then lets the plugin read its own.
    pub fn build(
        spec: &'static InputSpec,
        opts: &mut Options<'_, '_>,
        ctx: &BuildContext<'_>,
    ) -> RunningInput {
        let interval = opts.opt_period("interval", crate::plugin::MIN_PERIOD);
        let precision = opts.opt_duration("precision");
        let collection_jitter = opts.opt_duration("collection_jitter");
        let collection_offset = opts.opt_duration("collection_offset");
        let rename = super::Rename::from_options(opts);
        let tags = opts.string_table("tags");
        let alias = opts.opt_string("alias");
        let filter = Filter::from_options(opts);
        opts.unsupported(UNSUPPORTED_INPUT_KEYS);
        let ctx = BuildContext {
            paths: ctx.paths,
            interval: interval.unwrap_or(ctx.interval),
            stats: ctx.stats,
        };
        let input = (spec.build)(opts, &ctx);
        RunningInput {
            spec,
            alias,
            input,
            interval,
            precision,
            collection_jitter,
            collection_offset,
            rename,
            tags,
            filter,
        }
    }

    /// The plugin name and alias, as self-telemetry keys them.
    pub fn stats_key(&self) -> crate::selfstat::PluginKey {
        (self.spec.name.to_owned(), self.alias.clone())
    }

    /// The plugin name, with its alias when it has one (for logs).
    pub fn log_name(&self) -> String {
        super::log_name("inputs", self.spec.name, self.alias.as_deref())
    }

    /// Gathers once at `time` (ns, already rounded) and returns the finished metrics.
    pub fn gather(&mut self, time: i64, global: &GlobalTags) -> GatherOutcome {
        self.gather_at(time, time, global)
    }

    /// Gathers once, stamping metrics with `time` (rounded) while rates use `clock`
    /// (unrounded), both in ns.
    pub fn gather_at(&mut self, time: i64, clock: i64, global: &GlobalTags) -> GatherOutcome {
        let start = Instant::now();
        let mut acc = Accumulator::with_clock(time, clock);
        let result = self.input.gather(&mut acc);
        let (raw, mut errors) = acc.take();
        if let Err(e) = result {
            errors.push(e);
        }
        let metrics = raw
            .into_iter()
            .filter_map(|m| self.make_metric(m, global))
            .collect();
        GatherOutcome {
            metrics,
            errors,
            elapsed: start.elapsed(),
        }
    }

    /// Telegraf's order: selectors on the raw metric, renaming, input tags, global tags,
    /// then modifiers.
    pub fn make_metric(&self, mut m: Metric, global: &GlobalTags) -> Option<Metric> {
        if !self.filter.select(&m) {
            return None;
        }
        self.rename.apply(&mut m);
        for (k, v) in &self.tags {
            m.add_tag_if_absent(k, v);
        }
        for (k, v) in &global.tags {
            m.add_tag_if_absent(k, v);
        }
        if !self.filter.modify(&mut m) {
            return None;
        }
        Some(m)
    }
}
