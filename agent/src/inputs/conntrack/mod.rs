//! `[[inputs.conntrack]]`: the netfilter connection-tracking table — its size against its
//! limit (`ip_conntrack_count`, `ip_conntrack_max` from `/proc/sys/net/netfilter`) and, with
//! `collect`, the table's statistics from `/proc/net/stat/nf_conntrack`, summed (`cpu=all`)
//! or per CPU. Telegraf 1.39's schema; see README.md.

use std::path::{Path, PathBuf};

use super::{BuildContext, GatherError, Input, InputSpec};
use crate::hostpaths::HostPaths;
use crate::plugin::Accumulator;
use wk_core::options::Options;

/// Registry entry.
pub const SPEC: InputSpec = InputSpec {
    name: "conntrack",
    description: "Netfilter connection tracking: table size, limit and statistics",
    sample_config: include_str!("sample.conf"),
    build,
    test_twice: false,
};

const DEFAULT_DIRS: [&str; 2] = ["/proc/sys/net/ipv4/netfilter", "/proc/sys/net/netfilter"];
const DEFAULT_FILES: [&str; 4] = [
    "ip_conntrack_count",
    "ip_conntrack_max",
    "nf_conntrack_count",
    "nf_conntrack_max",
];

/// The 17 columns of `/proc/net/stat/nf_conntrack`, in order, under Telegraf's field names
/// (newer kernels renamed some headers — `clashres`, `chainlength` — but gopsutil, and so
/// Telegraf, read them by position).
pub const STAT_FIELDS: [&str; 17] = [
    "entries",
    "searched",
    "found",
    "new",
    "invalid",
    "ignore",
    "delete",
    "delete_list",
    "insert",
    "insert_failed",
    "drop",
    "early_drop",
    "icmp_error",
    "expect_new",
    "expect_create",
    "expect_delete",
    "search_restart",
];

struct Conntrack {
    paths: HostPaths,
    dirs: Vec<PathBuf>,
    files: Vec<String>,
    all: usize,
    percpu: usize,
}

/// `/proc/…` directories are read under the agent's /proc root (`HOST_PROC`), so the input
/// sees the monitored host's table from a container, as the statistics file already is.
fn rebase(paths: &HostPaths, dir: &str) -> PathBuf {
    match dir.strip_prefix("/proc/") {
        Some(rel) => paths.proc(rel),
        None => PathBuf::from(dir),
    }
}

fn build(opts: &mut Options<'_, '_>, ctx: &BuildContext<'_>) -> Box<dyn Input> {
    let collect = opts.strings("collect");
    for c in &collect {
        if c != "all" && c != "percpu" {
            opts.error_at(
                "collect",
                format!("unknown choice {c:?}: expected \"all\" or \"percpu\""),
            );
        }
    }
    let mut dirs = opts.strings("dirs");
    if dirs.is_empty() {
        dirs = DEFAULT_DIRS.map(String::from).to_vec();
    }
    let mut files = opts.strings("files");
    if files.is_empty() {
        files = DEFAULT_FILES.map(String::from).to_vec();
    }
    Box::new(Conntrack {
        dirs: dirs.iter().map(|d| rebase(ctx.paths, d)).collect(),
        paths: ctx.paths.clone(),
        files,
        all: collect.iter().filter(|c| *c == "all").count(),
        percpu: collect.iter().filter(|c| *c == "percpu").count(),
    })
}

/// The rows of `/proc/net/stat/nf_conntrack` (one per CPU), as gopsutil reads them: lines of
/// exactly 17 columns other than the header, hexadecimal (an unparsable column is 0).
pub fn parse_stats(text: &str) -> Vec<[u64; 17]> {
    text.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() != 17 || cols[0] == "entries" {
                return None;
            }
            let mut row = [0u64; 17];
            for (v, c) in row.iter_mut().zip(cols) {
                *v = u64::from(u32::from_str_radix(c, 16).unwrap_or(0));
            }
            Some(row)
        })
        .collect()
}

impl Conntrack {
    /// The statistics lines (Telegraf emits them first), and the errors met.
    fn stats(&self, acc: &mut Accumulator) -> Vec<GatherError> {
        if self.all + self.percpu == 0 {
            return Vec::new();
        }
        let rows = match self.paths.read_proc("net/stat/nf_conntrack") {
            Ok(t) => parse_stats(&t),
            Err(e) => return vec![e],
        };
        let mut errors = Vec::new();
        let push = |acc: &mut Accumulator, cpu: String, row: &[u64; 17]| {
            let mut m = acc.metric("conntrack").with_tag("cpu", cpu);
            for (k, v) in STAT_FIELDS.iter().zip(row) {
                m.add_field(*k, *v);
            }
            acc.push(m);
        };
        for _ in 0..self.all {
            if rows.is_empty() {
                errors.push(GatherError::Other(
                    "conntrack input failed to collect stats".into(),
                ));
                continue;
            }
            let mut sum = [0u64; 17];
            for r in &rows {
                for (s, v) in sum.iter_mut().zip(r) {
                    *s += v;
                }
            }
            push(acc, "all".into(), &sum);
        }
        for _ in 0..self.percpu {
            if rows.is_empty() {
                errors.push(GatherError::Other(
                    "conntrack input failed to collect stats".into(),
                ));
            }
            for (i, r) in rows.iter().enumerate() {
                push(acc, format!("cpu{i}"), r);
            }
        }
        errors
    }
}

fn read_number(path: &Path) -> Result<Option<f64>, GatherError> {
    let Some(t) = crate::hostpaths::read_if_exists(path)? else {
        return Ok(None);
    };
    t.trim().parse::<f64>().map(Some).map_err(|_| {
        GatherError::Other(format!(
            "failed to parse metric, expected number but found {:?} in {}",
            t.trim(),
            path.display()
        ))
    })
}

impl Input for Conntrack {
    fn gather(&mut self, acc: &mut Accumulator) -> Result<(), GatherError> {
        let mut errors = self.stats(acc);
        // Every (dir, file) that exists; `nf_`/`ip_` prefixes become `ip_`, the last one wins.
        let mut fields: Vec<(String, f64)> = Vec::new();
        for dir in &self.dirs {
            for file in &self.files {
                let Some((_, rest)) = file.split_once('_') else {
                    continue;
                };
                let key = format!("ip_{rest}");
                match read_number(&dir.join(file)) {
                    Ok(Some(v)) => {
                        fields.retain(|(k, _)| *k != key);
                        fields.push((key, v));
                    }
                    Ok(None) => {}
                    Err(e) => errors.push(e),
                }
            }
        }
        if !fields.is_empty() {
            let mut m = acc.metric("conntrack");
            for (k, v) in fields {
                m.add_field(k, v);
            }
            acc.push(m);
        } else {
            errors.push(GatherError::Other(
                "conntrack input failed to collect metrics, make sure that the kernel module is loaded"
                    .into(),
            ));
        }
        GatherError::all(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_rows_by_position_skipping_the_header_and_short_lines() {
        let text = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n\
                    0000000a  00000001 00000002 00000003 00000004 00000005 00000006 00000007 00000008 00000009 0000000a 0000000b 0000000c  0000000d 0000000e 0000000f ffffffff\n\
                    00000001 2\n\
                    0000000a  zz 0 0 0 0 0 0 0 0 0 0 0 0 0 0 1\n";
        let rows = parse_stats(text);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0][0], 10);
        assert_eq!(rows[0][16], 0xffff_ffff);
        assert_eq!(rows[1][1], 0, "an unparsable column is 0, as gopsutil");
    }
}
