//! `[[inputs.internal]]`: the agent's own counters (Telegraf's `internal_agent`,
//! `internal_gather`, `internal_write`) and memory (`internal_memstats`), so an operator can
//! alert on a struggling agent.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{BuildContext, GatherError, Input, InputSpec};
use crate::metric::Metric;
use crate::plugin::Accumulator;
use crate::selfstat::{GatherStats, PluginKey, SelfStats, WriteStats};
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
/// The compiler that built the agent: Telegraf's `go_version` tag, here `rust_version`.
const RUST_VERSION: &str = env!("WK_RUSTC_VERSION");

struct Internal {
    stats: Arc<SelfStats>,
    per_instance: bool,
    memstats: bool,
    proc_root: std::path::PathBuf,
}

fn build(opts: &mut Options<'_, '_>, ctx: &BuildContext<'_>) -> Box<dyn Input> {
    let per_instance = opts.bool("per_instance", false);
    let memstats = opts.bool("collect_memstats", true);
    opts.unsupported(&["collect_gostats"]);
    Box::new(Internal {
        stats: ctx.stats.clone(),
        per_instance,
        memstats,
        proc_root: ctx.paths.proc.clone(),
    })
}

/// `internal_memstats` from what Linux and glibc's malloc say of this process, under
/// Telegraf's names where they mean the same thing: `heap_alloc_bytes`/`alloc_bytes` (bytes
/// in use by allocations, malloc's `uordblks` + `hblkhd`), `heap_sys_bytes` (heap obtained
/// from the OS: `arena` + `hblkhd`), `heap_idle_bytes` (free inside it, `fordblks`),
/// `heap_in_use_bytes` (= alloc), `sys_bytes` (resident memory, VmRSS). Go's GC counters
/// (`mallocs`, `frees`, `num_gc`, `pointer_lookups`, `heap_objects`, `total_alloc_bytes`,
/// `heap_released_bytes`) have no meaning here and are not sent. Static (musl) builds have no
/// glibc malloc to ask: no `internal_memstats` there.
#[cfg(not(target_env = "gnu"))]
fn memstats(_proc_root: &std::path::Path) -> Option<[(&'static str, u64); 6]> {
    None
}

/// See the musl variant above.
#[cfg(target_env = "gnu")]
fn memstats(proc_root: &std::path::Path) -> Option<[(&'static str, u64); 6]> {
    // SAFETY: mallinfo2 reads the allocator's counters into a plain struct it returns by
    // value; it takes no pointers and has no preconditions.
    let mi = unsafe { libc::mallinfo2() };
    let in_use = (mi.uordblks + mi.hblkhd) as u64;
    let status = std::fs::read_to_string(proc_root.join("self/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some([
        ("alloc_bytes", in_use),
        ("heap_alloc_bytes", in_use),
        ("heap_idle_bytes", mi.fordblks as u64),
        ("heap_in_use_bytes", in_use),
        ("heap_sys_bytes", (mi.arena + mi.hblkhd) as u64),
        ("sys_bytes", rss_kb * 1024),
    ])
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
    a.counts += b.counts;
    a.buffer_size += b.buffer_size;
    a.buffer_limit += b.buffer_limit;
    a.write_time_ns = a.write_time_ns.max(b.write_time_ns);
}

/// The head of one plugin's `internal_gather` or `internal_write` metric: the plugin's name
/// under `kind` (`input`, `output`), the version, and its alias when it has one.
fn plugin_metric(
    acc: &Accumulator,
    measurement: &'static str,
    kind: &'static str,
    (name, alias): PluginKey,
) -> Metric {
    let mut m = acc
        .metric(measurement)
        .with_tag(kind, name)
        .with_tag("version", VERSION);
    if let Some(a) = alias {
        m.set_tag("alias", a);
    }
    m
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
            agent.2 += s.counts.metrics_dropped;
            agent.4 += s.counts.metrics_rejected;
            agent.5 += s.counts.metrics_written;
            agent.6 += s.counts.write_errors;
        }
        if self.memstats
            && let Some(fields) = memstats(&self.proc_root)
        {
            let mut m = acc.metric("internal_memstats");
            for (k, v) in fields {
                m.add_field(k, v);
            }
            acc.push(m);
        }
        acc.push(
            acc.metric("internal_agent")
                .with_tag("version", VERSION)
                .with_tag("rust_version", RUST_VERSION)
                .with_field("gather_errors", int(agent.0))
                .with_field("gather_timeouts", int(agent.1))
                .with_field("metrics_dropped", int(agent.2))
                .with_field("metrics_gathered", int(agent.3))
                .with_field("metrics_rejected", int(agent.4))
                .with_field("metrics_written", int(agent.5))
                .with_field("write_errors", int(agent.6)),
        );
        for (key, s) in self.group(inputs, add_gather) {
            acc.push(
                plugin_metric(acc, "internal_gather", "input", key)
                    .with_field("errors", int(s.gather_errors))
                    .with_field("gather_errors", int(s.gather_errors))
                    .with_field("gather_time_ns", int(s.gather_time_ns))
                    .with_field("gather_timeouts", int(s.gather_timeouts))
                    .with_field("metrics_gathered", int(s.metrics_gathered))
                    .with_field("startup_errors", 0i64),
            );
        }
        for (key, s) in self.group(outputs, add_write) {
            let c = &s.counts;
            acc.push(
                plugin_metric(acc, "internal_write", "output", key)
                    .with_field("buffer_limit", int(s.buffer_limit))
                    .with_field("buffer_size", int(s.buffer_size))
                    .with_field("errors", int(c.write_errors))
                    .with_field("metrics_added", int(c.metrics_added))
                    .with_field("metrics_dropped", int(c.metrics_dropped))
                    .with_field("metrics_filtered", int(c.metrics_filtered))
                    .with_field("metrics_rejected", int(c.metrics_rejected))
                    .with_field("metrics_written", int(c.metrics_written))
                    .with_field("startup_errors", 0i64)
                    .with_field("write_errors", int(c.write_errors))
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
    use crate::selfstat::WriteCounts;

    fn gather(per_instance: bool, stats: &Arc<SelfStats>) -> Vec<Metric> {
        let mut i = Internal {
            stats: stats.clone(),
            per_instance,
            memstats: true,
            proc_root: "/proc".into(),
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
            WriteCounts {
                metrics_dropped: 7,
                metrics_written: 2,
                ..Default::default()
            },
            1,
            None,
        );
        let m = gather(false, &stats);
        // This process's own memory, in Telegraf's field names.
        assert_eq!(m[0].name, "internal_memstats");
        // uint64, as Go's runtime.MemStats.
        let Some(FieldValue::Uint(rss)) = m[0].field("sys_bytes") else {
            panic!("{:?}", m[0])
        };
        assert!(*rss > 1 << 20, "{rss}");
        let m: Vec<Metric> = m.into_iter().skip(1).collect();
        assert_eq!(m[0].name, "internal_agent");
        assert!(
            m[0].tag("rust_version")
                .is_some_and(|v| v.starts_with("1."))
        );
        assert_eq!(m[0].field("metrics_gathered"), Some(&FieldValue::Int(7)));
        assert_eq!(m[0].field("metrics_dropped"), Some(&FieldValue::Int(7)));
        assert_eq!(m[0].field("gather_errors"), Some(&FieldValue::Int(1)));
        let gathers: Vec<_> = m.iter().filter(|m| m.name == "internal_gather").collect();
        assert_eq!(gathers.len(), 1);
        assert_eq!(gathers[0].field("gather_errors"), Some(&FieldValue::Int(1)));
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
