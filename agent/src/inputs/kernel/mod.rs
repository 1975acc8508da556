//! `[[inputs.kernel]]`: kernel counters from `/proc/stat`, the entropy pool, and optionally
//! KSM (`/sys/kernel/mm/ksm`) and pressure stall information (`/proc/pressure`).
//! See README.md for the schema.

use super::{BuildContext, GatherError, Input, InputSpec};
use crate::hostpaths::{HostPaths, read_to_string};
use crate::plugin::Accumulator;
use wk_core::options::Options;

/// Registry entry.
pub const SPEC: InputSpec = InputSpec {
    name: "kernel",
    description: "Kernel counters: boot time, context switches, interrupts, forks, entropy, KSM, PSI",
    sample_config: include_str!("sample.conf"),
    build,
    test_twice: false,
};

/// The `/proc/stat` values this input reports; `None` when the kernel has no such line.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct KernelStat {
    pub interrupts: Option<i64>,
    pub context_switches: Option<i64>,
    pub processes_forked: Option<i64>,
    pub boot_time: Option<i64>,
    /// The `page` line (kernels before 2.6): pages paged in and out.
    pub disk_pages: Option<(i64, i64)>,
}

/// Parses the `intr`, `ctxt`, `processes`, `btime` and `page` lines of `/proc/stat`.
/// Other lines (cpu, softirq, procs_running, …) are ignored; a line we use whose number is
/// missing or not a number is an error naming the line.
pub fn parse_stat(text: &str) -> Result<KernelStat, (usize, String)> {
    let mut s = KernelStat::default();
    for (i, line) in text.lines().enumerate() {
        let mut cols = line.split_ascii_whitespace();
        let Some(key) = cols.next() else { continue };
        let mut num = |what: &str| -> Result<i64, (usize, String)> {
            let v = cols.next().unwrap_or("");
            v.parse()
                .map_err(|_| (i + 1, format!("bad {what} value {v:?} in {key} line")))
        };
        match key {
            "intr" => s.interrupts = Some(num("total")?),
            "ctxt" => s.context_switches = Some(num("count")?),
            "processes" => s.processes_forked = Some(num("count")?),
            "btime" => s.boot_time = Some(num("time")?),
            "page" => {
                let pin = num("pages in")?;
                s.disk_pages = Some((pin, num("pages out")?));
            }
            _ => {}
        }
    }
    Ok(s)
}

/// Parses a single-integer file (`entropy_avail`, a KSM counter).
pub fn parse_int(text: &str) -> Result<i64, String> {
    let t = text.trim();
    t.parse().map_err(|_| format!("bad number {t:?}"))
}

/// One line of a `/proc/pressure/<resource>` file.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PsiLine {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    /// Total stall time in µs.
    pub total: u64,
}

/// The `some` and `full` lines of a pressure file (`full` is absent for cpu before 5.13).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Psi {
    pub some: Option<PsiLine>,
    pub full: Option<PsiLine>,
}

/// Parses `some avg10=0.00 avg60=0.00 avg300=0.00 total=0` / `full …` lines.
pub fn parse_psi(text: &str) -> Result<Psi, (usize, String)> {
    let mut psi = Psi::default();
    for (i, line) in text.lines().enumerate() {
        let mut cols = line.split_ascii_whitespace();
        let slot = match cols.next() {
            Some("some") => &mut psi.some,
            Some("full") => &mut psi.full,
            Some(other) => return Err((i + 1, format!("unknown pressure type {other:?}"))),
            None => continue,
        };
        let mut p = PsiLine::default();
        let mut seen = 0;
        for col in cols {
            let bad = || (i + 1, format!("bad pressure column {col:?}"));
            let (k, v) = col.split_once('=').ok_or_else(bad)?;
            match k {
                "avg10" => p.avg10 = v.parse().map_err(|_| bad())?,
                "avg60" => p.avg60 = v.parse().map_err(|_| bad())?,
                "avg300" => p.avg300 = v.parse().map_err(|_| bad())?,
                "total" => p.total = v.parse().map_err(|_| bad())?,
                _ => continue, // a column a newer kernel might add
            }
            seen += 1;
        }
        if seen < 4 {
            return Err((i + 1, "pressure line lacks avg10/avg60/avg300/total".into()));
        }
        *slot = Some(p);
    }
    Ok(psi)
}

/// The KSM counters Telegraf requires, in its order.
const KSM_REQUIRED: &[&str] = &[
    "full_scans",
    "max_page_sharing",
    "merge_across_nodes",
    "pages_shared",
    "pages_sharing",
    "pages_to_scan",
    "pages_unshared",
    "pages_volatile",
    "run",
    "sleep_millisecs",
    "stable_node_chains",
    "stable_node_chains_prune_millisecs",
    "stable_node_dups",
    "use_zero_pages",
];

/// KSM counters that only newer kernels have (6.1+).
const KSM_OPTIONAL: &[&str] = &["general_profit"];

struct Kernel {
    paths: HostPaths,
    ksm: bool,
    psi: bool,
}

fn build(opts: &mut Options<'_, '_>, ctx: &BuildContext<'_>) -> Box<dyn Input> {
    let (mut ksm, mut psi) = (false, false);
    for c in opts.strings("collect") {
        match c.as_str() {
            "ksm" => ksm = true,
            "psi" => psi = true,
            // Telegraf ignores other values; a warning says so rather than a refusal.
            other => opts.warn_at(
                "collect",
                format!("unknown value {other:?} ignored: expected ksm or psi"),
            ),
        }
    }
    Box::new(Kernel {
        paths: ctx.paths.clone(),
        ksm,
        psi,
    })
}

impl Kernel {
    fn ksm_fields(&self) -> Result<Vec<(String, i64)>, GatherError> {
        let dir = self.paths.sys("kernel/mm/ksm");
        if !dir.is_dir() {
            return Err(GatherError::Unsupported(format!(
                "directory {:?} does not exist: KSM is not enabled in this kernel",
                dir.display().to_string()
            )));
        }
        let mut out = Vec::new();
        let names = KSM_REQUIRED.iter().map(|n| (n, true));
        for (name, required) in names.chain(KSM_OPTIONAL.iter().map(|n| (n, false))) {
            let path = dir.join(name);
            let value = std::fs::read_to_string(&path)
                .map_err(|e| GatherError::io(&path, e))
                .and_then(|t| parse_int(&t).map_err(|m| GatherError::malformed(&path, 1, m)));
            let v = match value {
                Ok(v) => v,
                // Telegraf skips an optional counter on any error.
                Err(_) if !required => continue,
                Err(e) => return Err(e),
            };
            out.push((format!("ksm_{name}"), v));
        }
        Ok(out)
    }

    fn gather_pressure(&self, acc: &mut Accumulator) -> Result<(), GatherError> {
        for resource in ["cpu", "memory", "io"] {
            let path = self.paths.proc(&format!("pressure/{resource}"));
            let text = read_to_string(&path).map_err(|e| match e {
                // No /proc/pressure: a kernel before 4.20 or built without PSI.
                GatherError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                    GatherError::Unsupported(format!("{}: {source}", path.display()))
                }
                other => other,
            })?;
            let psi = parse_psi(&text).map_err(|(l, m)| GatherError::malformed(&path, l, m))?;
            for (typ, line) in [("some", psi.some), ("full", psi.full)] {
                // Telegraf: resource=cpu,type=full is left out (always zero before 5.13).
                if resource == "cpu" && typ == "full" {
                    continue;
                }
                let Some(p) = line else { continue };
                let m = || {
                    acc.metric("pressure")
                        .with_tag("resource", resource)
                        .with_tag("type", typ)
                };
                let counter = m().with_field("total", p.total);
                let gauge = m()
                    .with_field("avg10", p.avg10)
                    .with_field("avg60", p.avg60)
                    .with_field("avg300", p.avg300);
                acc.push(counter);
                acc.push(gauge);
            }
        }
        Ok(())
    }
}

impl Input for Kernel {
    fn gather(&mut self, acc: &mut Accumulator) -> Result<(), GatherError> {
        let stat = self.paths.parse_proc("stat", parse_stat)?;
        let ent_path = self.paths.proc("sys/kernel/random/entropy_avail");
        let entropy = parse_int(&read_to_string(&ent_path)?)
            .map_err(|m| GatherError::malformed(&ent_path, 1, m))?;

        let mut m = acc.metric("kernel").with_field("entropy_avail", entropy);
        if let Some(v) = stat.interrupts {
            m.add_field("interrupts", v);
        }
        if let Some(v) = stat.context_switches {
            m.add_field("context_switches", v);
        }
        if let Some(v) = stat.processes_forked {
            m.add_field("processes_forked", v);
        }
        if let Some(v) = stat.boot_time {
            m.add_field("boot_time", v);
        }
        if let Some((pin, pout)) = stat.disk_pages {
            m.add_field("disk_pages_in", pin);
            m.add_field("disk_pages_out", pout);
        }
        if self.ksm {
            for (k, v) in self.ksm_fields()? {
                m.add_field(k, v);
            }
        }
        acc.push(m);
        if self.psi {
            self.gather_pressure(acc)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_we_use() {
        let s = parse_stat(
            "cpu  1 2 3 4\nintr 209348 0 0 5\nctxt 327145\nbtime 1795318604\nprocesses 10381\nprocs_running 3\nsoftirq 1 2\n",
        )
        .unwrap();
        assert_eq!(s.interrupts, Some(209348));
        assert_eq!(s.context_switches, Some(327145));
        assert_eq!(s.boot_time, Some(1795318604));
        assert_eq!(s.processes_forked, Some(10381));
        assert_eq!(s.disk_pages, None);
    }

    #[test]
    fn old_kernel_page_line_and_missing_lines() {
        let s = parse_stat("page 5741 1808\nswap 1 0\nintr 7\n").unwrap();
        assert_eq!(s.disk_pages, Some((5741, 1808)));
        assert_eq!(s.interrupts, Some(7));
        assert_eq!(s.boot_time, None);
    }

    #[test]
    fn garbage_names_the_line() {
        assert_eq!(parse_stat("ctxt 1\nbtime\n").unwrap_err().0, 2);
        assert_eq!(parse_stat("page 1 x\n").unwrap_err().0, 1);
        assert!(parse_int(" 256\n").is_ok());
        assert!(parse_int("").is_err());
    }

    #[test]
    fn psi_lines() {
        let p = parse_psi(
            "some avg10=16.41 avg60=6.89 avg300=2.80 total=14245241\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        )
        .unwrap();
        let some = p.some.unwrap();
        assert_eq!(some.avg10, 16.41);
        assert_eq!(some.total, 14245241);
        assert_eq!(p.full.unwrap().total, 0);
        // cpu on kernels before 5.13: no full line.
        assert!(
            parse_psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=1\n")
                .unwrap()
                .full
                .is_none()
        );
    }

    #[test]
    fn psi_garbage() {
        assert_eq!(
            parse_psi("some avg10=0.00 avg60=0.00 total=1\n")
                .unwrap_err()
                .0,
            1
        );
        assert!(parse_psi("some avg10=x avg60=0 avg300=0 total=1\n").is_err());
        assert!(parse_psi("most avg10=0 avg60=0 avg300=0 total=1\n").is_err());
    }
}
