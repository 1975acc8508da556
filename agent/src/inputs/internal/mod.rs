//! `[[inputs.internal]]`: the agent's own counters (Telegraf's `internal_agent`,
//! `internal_gather`, `internal_write`), so an operator can alert on a struggling agent.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{BuildContext, GatherError, Input, InputSpec};
use crate::metric::Metric;
use crate::plugin::Accumulator;
use crate::selfstat::{GatherStats, SelfStats, WriteStats};
use wk_core::options::Options;

/// Registry entry.
pub const SPEC: InputSpec = InputSpec {
    name: "internal",
    description: "The agent's own statistics",
    sample_config: include_str!("sample.conf"),
    build,
    test_twice: false,
};

const VERSION: &str = env!("CARGO_PKG_VERSION");

struct Internal {
    stats: Arc<SelfStats>,
    per_instance: bool,
}

fn build(opts: &mut Options<'_, '_>, ctx: &BuildContext<'_>) -> Box<dyn Input> {
    let per_instance = opts.bool("per_instance", false);
    opts.unsupported(&["collect_memstats", "collect_gostats"]);
    Box::new(Internal {
        stats: ctx.stats.clone(),
        per_instance,
    })
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Internal {
    /// Groups instances by (plugin, alias) or by plugin alone, summing counters.
    fn group<T: Clone>(
        &self,
        items: Vec<((String, Option<String>), T)>,
        add: fn(&mut T, &T),
    ) -> BTreeMap<(String, Option<String>), T> {
        let mut out: BTreeMap<(String, Option<String>), T> = BTreeMap::new();
        for ((name, alias), v) in items {
            let key = (name, if self.per_instance { alias } else { None });
            match out.get_mut(&key) {
                Some(acc) => add(acc, &v),
                None => {
                    out.insert(key, v);
                }
            }
        }
        out
    }
}

fn add_gather(a: &mut GatherStats, b: &GatherStats) {
    a.metrics_gathered += b.metrics_gathered;
    a.gather_errors += b.gather_errors;
    a.gather_timeouts += b.gather_timeouts;
    a.gather_time_ns = a.gather_time_ns.max(b.gather_time_ns);
}

fn add_write(a: &mut WriteStats, b: &WriteStats) {
    a.metrics_added += b.metrics_added;
    a.metrics_written += b.metrics_written;
    a.metrics_dropped += b.metrics_dropped;
    a.metrics_filtered += b.metrics_filtered;
    a.metrics_rejected += b.metrics_rejected;
    a.write_errors += b.write_errors;
    a.buffer_size += b.buffer_size;
    a.buffer_limit += b.buffer_limit;
    a.write_time_ns = a.write_time_ns.max(b.write_time_ns);
}

impl Input for Internal {
    fn gather(&mut self, acc: &mut Accumulator) -> Result<(), GatherError> {
        let (inputs, outputs) = self.stats.read();
        let mut agent = (0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
        for (_, s) in &inputs {
            agent.0 += s.gather_errors;
            agent.1 += s.gather_timeouts;
            agent.3 += s.metrics_gathered;
        }
        for (_, s) in &outputs {
            agent.2 += s.metrics_dropped;
            agent.4 += s.metrics_rejected;
            agent.5 += s.metrics_written;
            agent.6 += s.write_errors;
        }
        acc.push(
            acc.metric("internal_agent")
                .with_tag("version", VERSION)
                .with_field("gather_errors", int(agent.0))
                .with_field("gather_timeouts", int(agent.1))
                .with_field("metrics_dropped", int(agent.2))
                .with_field("metrics_gathered", int(agent.3))
                .with_field("metrics_rejected", int(agent.4))
                .with_field("metrics_written", int(agent.5))
                .with_field("write_errors", int(agent.6)),
        );
        for ((name, alias), s) in self.group(inputs, add_gather) {
            let mut m: Metric = acc
                .metric("internal_gather")
                .with_tag("input", name)
                .with_tag("version", VERSION);
            if let Some(a) = alias {
                m.set_tag("alias", a);
            }
            acc.push(
                m.with_field("errors", int(s.gather_errors))
                    .with_field("gather_time_ns", int(s.gather_time_ns))
                    .with_field("gather_timeouts", int(s.gather_timeouts))
                    .with_field("metrics_gathered", int(s.metrics_gathered))
                    .with_field("startup_errors", 0i64),
            );
        }
        for ((name, alias), s) in self.group(outputs, add_write) {
            let mut m: Metric = acc
                .metric("internal_write")
                .with_tag("output", name)
                .with_tag("version", VERSION);
            if let Some(a) = alias {
                m.set_tag("alias", a);
            }
            acc.push(
                m.with_field("buffer_limit", int(s.buffer_limit))
                    .with_field("buffer_size", int(s.buffer_size))
                    .with_field("errors", int(s.write_errors))
                    .with_field("metrics_added", int(s.metrics_added))
                    .with_field("metrics_dropped", int(s.metrics_dropped))
                    .with_field("metrics_filtered", int(s.metrics_filtered))
                    .with_field("metrics_rejected", int(s.metrics_rejected))
                    .with_field("metrics_written", int(s.metrics_written))
                    .with_field("startup_errors", 0i64)
                    .with_field("write_errors", int(s.write_errors))
                    .with_field("write_time_ns", int(s.write_time_ns)),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metric::FieldValue;
    use crate::selfstat::WriteDelta;

    fn gather(per_instance: bool, stats: &Arc<SelfStats>) -> Vec<Metric> {
        let mut i = Internal {
            stats: stats.clone(),
            per_instance,
        };
        let mut acc = Accumulator::new(0);
        i.gather(&mut acc).unwrap();
        acc.take().0
    }

    #[test]
    fn instances_are_summed_unless_per_instance() {
        let stats: Arc<SelfStats> = Default::default();
        stats.record_gather(
            &("cpu".into(), Some("a".into())),
            3,
            1,
            Duration::from_nanos(10),
        );
        stats.record_gather(&("cpu".into(), None), 4, 0, Duration::from_nanos(10));
        stats.record_write(
            &("file".into(), None),
            WriteDelta {
                metrics_dropped: 7,
                metrics_written: 2,
                ..Default::default()
            },
            1,
            None,
        );
        let m = gather(false, &stats);
        assert_eq!(m[0].name, "internal_agent");
        assert_eq!(m[0].field("metrics_gathered"), Some(&FieldValue::Int(7)));
        assert_eq!(m[0].field("metrics_dropped"), Some(&FieldValue::Int(7)));
        assert_eq!(m[0].field("gather_errors"), Some(&FieldValue::Int(1)));
        let gathers: Vec<_> = m.iter().filter(|m| m.name == "internal_gather").collect();
        assert_eq!(gathers.len(), 1);
        assert_eq!(
            gathers[0].field("metrics_gathered"),
            Some(&FieldValue::Int(7))
        );
        let m = gather(true, &stats);
        let gathers: Vec<_> = m.iter().filter(|m| m.name == "internal_gather").collect();
        assert_eq!(gathers.len(), 2);
        assert!(gathers.iter().any(|g| g.tag("alias") == Some("a")));
    }
}
