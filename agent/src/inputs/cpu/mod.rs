//! `[[inputs.cpu]]`: CPU time and usage per CPU and in total, from `/proc/stat`.
//! See README.md for the schema and formulas.

use std::collections::HashMap;

use super::{BuildContext, GatherError, Input, InputSpec};
use crate::hostpaths::HostPaths;
use crate::plugin::Accumulator;
use wk_core::options::Options;

/// Registry entry.
pub const SPEC: InputSpec = InputSpec {
    name: "cpu",
    description: "CPU time and usage per CPU and in total",
    sample_config: include_str!("sample.conf"),
    build,
    test_twice: true,
};

/// One `cpu*` line of /proc/stat, in seconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuTimes {
    /// `cpu-total` or `cpuN`.
    pub cpu: String,
    pub user: f64,
    pub nice: f64,
    pub system: f64,
    pub idle: f64,
    pub iowait: f64,
    pub irq: f64,
    pub softirq: f64,
    pub steal: f64,
    pub guest: f64,
    pub guest_nice: f64,
}

impl CpuTimes {
    /// Telegraf's total: guest and guest_nice are already inside user and nice.
    fn total(&self) -> f64 {
        self.user
            + self.system
            + self.nice
            + self.iowait
            + self.irq
            + self.softirq
            + self.steal
            + self.idle
    }

    /// Everything but idle (iowait counts as active, as in Telegraf).
    fn active(&self) -> f64 {
        self.total() - self.idle
    }
}

/// Parses the `cpu` lines of /proc/stat; columns missing on old kernels are 0 and extra
/// columns from newer kernels are ignored. `ticks_per_sec` is `sysconf(_SC_CLK_TCK)`.
pub fn parse_stat(text: &str, ticks_per_sec: f64) -> Result<Vec<CpuTimes>, (usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if !line.starts_with("cpu") {
            continue;
        }
        let mut cols = line.split_ascii_whitespace();
        let Some(name) = cols.next() else { continue };
        let mut v = [0f64; 10];
        let mut n = 0;
        for (slot, col) in v.iter_mut().zip(cols) {
            let ticks: u64 = col
                .parse()
                .map_err(|_| (i + 1, format!("bad number {col:?} in {name} line")))?;
            *slot = ticks as f64 / ticks_per_sec;
            n += 1;
        }
        if n < 4 {
            return Err((
                i + 1,
                format!("{name} line has {n} columns, expected at least 4"),
            ));
        }
        let cpu = if name == "cpu" {
            "cpu-total".to_owned()
        } else {
            name.to_owned()
        };
        out.push(CpuTimes {
            cpu,
            user: v[0],
            nice: v[1],
            system: v[2],
            idle: v[3],
            iowait: v[4],
            irq: v[5],
            softirq: v[6],
            steal: v[7],
            guest: v[8],
            guest_nice: v[9],
        });
    }
    Ok(out)
}

/// Parses /proc/cpuinfo into `cpuN` → (core id, physical id) for `core_tags`.
pub fn parse_cpuinfo(text: &str) -> HashMap<String, (String, String)> {
    let mut out = HashMap::new();
    let (mut cpu, mut core, mut phys) = (None::<String>, String::new(), String::new());
    let mut flush = |cpu: &mut Option<String>, core: &mut String, phys: &mut String| {
        if let Some(c) = cpu.take() {
            out.insert(
                format!("cpu{c}"),
                (std::mem::take(core), std::mem::take(phys)),
            );
        }
    };
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            if line.trim().is_empty() {
                flush(&mut cpu, &mut core, &mut phys);
            }
            continue;
        };
        match k.trim() {
            "processor" => {
                flush(&mut cpu, &mut core, &mut phys);
                cpu = Some(v.trim().to_owned());
            }
            "core id" => core = v.trim().to_owned(),
            "physical id" => phys = v.trim().to_owned(),
            _ => {}
        }
    }
    flush(&mut cpu, &mut core, &mut phys);
    out
}

struct Cpu {
    paths: HostPaths,
    percpu: bool,
    totalcpu: bool,
    collect_cpu_time: bool,
    report_active: bool,
    core_tags: bool,
    ticks_per_sec: f64,
    last: HashMap<String, CpuTimes>,
    topology: Option<HashMap<String, (String, String)>>,
}

fn build(opts: &mut Options<'_, '_>, ctx: &BuildContext<'_>) -> Box<dyn Input> {
    Box::new(Cpu {
        paths: ctx.paths.clone(),
        percpu: opts.bool("percpu", true),
        totalcpu: opts.bool("totalcpu", true),
        collect_cpu_time: opts.bool("collect_cpu_time", false),
        report_active: opts.bool("report_active", false),
        core_tags: opts.bool("core_tags", false),
        ticks_per_sec: clock_ticks(),
        last: HashMap::new(),
        topology: None,
    })
}

/// `sysconf(_SC_CLK_TCK)`, 100 on every mainstream Linux.
fn clock_ticks() -> f64 {
    match rustix::param::clock_ticks_per_second() {
        0 => 100.0,
        t => t as f64,
    }
}

impl Input for Cpu {
    fn gather(&mut self, acc: &mut Accumulator) -> Result<(), GatherError> {
        let ticks = self.ticks_per_sec;
        let all = self.paths.parse_proc("stat", |t| parse_stat(t, ticks))?;
        if self.core_tags && self.topology.is_none() {
            let info = self.paths.read_proc("cpuinfo").map(|t| parse_cpuinfo(&t));
            match info {
                Ok(t) => self.topology = Some(t),
                Err(e) => acc.add_error(e),
            }
        }
        // Telegraf's order: the per-CPU lines first, then cpu-total.
        let (total, per): (Vec<_>, Vec<_>) = all.into_iter().partition(|c| c.cpu == "cpu-total");
        let mut selected = Vec::new();
        if self.percpu {
            selected.extend(per);
        }
        if self.totalcpu {
            selected.extend(total);
        }
        let mut current = HashMap::with_capacity(selected.len());
        let mut skip_usage = false;
        for t in selected {
            if skip_usage {
                // Telegraf stops emitting for the rest of this gather once totals went back.
                current.insert(t.cpu.clone(), t);
                continue;
            }
            let mut tags = vec![("cpu", t.cpu.clone())];
            if let Some((core, phys)) = self.topology.as_ref().and_then(|m| m.get(&t.cpu)) {
                tags.push(("core_id", core.clone()));
                tags.push(("physical_id", phys.clone()));
            }
            let time = acc.time();
            let metric = || {
                let mut m = crate::metric::Metric::new("cpu", time);
                for (k, v) in &tags {
                    m.set_tag(*k, v.clone());
                }
                m
            };
            if self.collect_cpu_time {
                let mut m = metric()
                    .with_field("time_user", t.user)
                    .with_field("time_system", t.system)
                    .with_field("time_idle", t.idle)
                    .with_field("time_nice", t.nice)
                    .with_field("time_iowait", t.iowait)
                    .with_field("time_irq", t.irq)
                    .with_field("time_softirq", t.softirq)
                    .with_field("time_steal", t.steal)
                    .with_field("time_guest", t.guest)
                    .with_field("time_guest_nice", t.guest_nice);
                if self.report_active {
                    m.add_field("time_active", t.active());
                }
                acc.push(m);
            }
            if let Some(last) = self.last.get(&t.cpu) {
                let total_delta = t.total() - last.total();
                if total_delta < 0.0 {
                    acc.add_error("current total CPU time is less than previous total CPU time");
                    skip_usage = true;
                } else if total_delta > 0.0 {
                    let pct = |d: f64| 100.0 * d / total_delta;
                    let mut m = metric()
                        .with_field(
                            "usage_user",
                            pct(t.user - last.user - (t.guest - last.guest)),
                        )
                        .with_field("usage_system", pct(t.system - last.system))
                        .with_field("usage_idle", pct(t.idle - last.idle))
                        .with_field(
                            "usage_nice",
                            pct(t.nice - last.nice - (t.guest_nice - last.guest_nice)),
                        )
                        .with_field("usage_iowait", pct(t.iowait - last.iowait))
                        .with_field("usage_irq", pct(t.irq - last.irq))
                        .with_field("usage_softirq", pct(t.softirq - last.softirq))
                        .with_field("usage_steal", pct(t.steal - last.steal))
                        .with_field("usage_guest", pct(t.guest - last.guest))
                        .with_field("usage_guest_nice", pct(t.guest_nice - last.guest_nice));
                    if self.report_active {
                        m.add_field("usage_active", pct(t.active() - last.active()));
                    }
                    acc.push(m);
                }
            }
            current.insert(t.cpu.clone(), t);
        }
        self.last = current;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_old_and_new_kernels() {
        // 2.6.9-era line with 7 columns, and a line with an extra future column.
        let text = "cpu  100 0 50 850 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10 11\nintr 5\n";
        let c = parse_stat(text, 100.0).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].cpu, "cpu-total");
        assert_eq!(c[0].user, 1.0);
        assert_eq!(c[0].steal, 0.0);
        assert_eq!(c[1].guest_nice, 0.1);
    }

    #[test]
    fn malformed_lines_name_the_line() {
        assert_eq!(parse_stat("intr 1\ncpu 1 x 3 4\n", 100.0).unwrap_err().0, 2);
        assert!(parse_stat("cpu 1 2\n", 100.0).is_err());
    }

    #[test]
    fn cpuinfo_topology() {
        let t = parse_cpuinfo(
            "processor\t: 0\ncore id\t\t: 0\nphysical id\t: 0\n\nprocessor\t: 1\ncore id\t: 1\nphysical id : 0\n",
        );
        assert_eq!(t["cpu1"], ("1".to_owned(), "0".to_owned()));
    }
}
