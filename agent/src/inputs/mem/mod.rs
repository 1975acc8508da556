//! `[[inputs.mem]]`: memory usage from `/proc/meminfo`.
//! See README.md for the schema and formulas.

use std::collections::HashMap;

use super::{BuildContext, GatherError, Input, InputSpec};
use crate::hostpaths::HostPaths;
use crate::plugin::Accumulator;
use wk_core::options::Options;

/// Registry entry.
pub const SPEC: InputSpec = InputSpec {
    name: "mem",
    description: "Memory usage from /proc/meminfo",
    sample_config: include_str!("sample.conf"),
    build,
    test_twice: false,
};

/// `/proc/meminfo` as key → value, kB values already in bytes, page counts
/// (`HugePages_*`) as they are.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Meminfo {
    values: HashMap<String, u64>,
}

impl Meminfo {
    /// A key's value; a key this kernel does not have yields 0, as in Telegraf.
    pub fn get(&self, key: &str) -> u64 {
        self.values.get(key).copied().unwrap_or(0)
    }

    /// True when the kernel reports the key.
    pub fn has(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }
}

/// The meminfo keys this input reads: a garbage value on one of them is an error, on any
/// other key it is ignored (as in gopsutil), so a future kernel line cannot break us.
const USED_KEYS: &[&str] = &[
    "MemTotal",
    "MemFree",
    "MemAvailable",
    "Buffers",
    "Cached",
    "SwapCached",
    "Active",
    "Inactive",
    "Active(anon)",
    "Inactive(anon)",
    "Active(file)",
    "Inactive(file)",
    "Unevictable",
    "HighTotal",
    "HighFree",
    "LowTotal",
    "LowFree",
    "SwapTotal",
    "SwapFree",
    "Dirty",
    "Writeback",
    "Mapped",
    "Shmem",
    "Slab",
    "SReclaimable",
    "SUnreclaim",
    "PageTables",
    "WritebackTmp",
    "CommitLimit",
    "Committed_AS",
    "VmallocTotal",
    "VmallocUsed",
    "VmallocChunk",
    "Percpu",
    "HugePages_Total",
    "HugePages_Free",
    "Hugepagesize",
];

/// Parses `/proc/meminfo`. Lines are `Key:   value [kB]`; `kB` values are multiplied by 1024.
/// Lines without a colon are skipped; a value that is not a number is an error naming the
/// line when the key is one we use (gopsutil fails the same way), ignored otherwise.
pub fn parse_meminfo(text: &str) -> Result<Meminfo, (usize, String)> {
    let mut values = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let key = key.trim();
        let mut cols = rest.split_ascii_whitespace();
        let Some(num) = cols.next() else { continue };
        let n: u64 = match num.parse() {
            Ok(n) => n,
            Err(_) if !USED_KEYS.contains(&key) => continue,
            Err(_) => return Err((i + 1, format!("bad number {num:?} for {key}"))),
        };
        let v = match cols.next() {
            Some("kB") => n.saturating_mul(1024),
            _ => n,
        };
        values.insert(key.to_owned(), v);
    }
    Ok(Meminfo { values })
}

/// Sums the `low` watermarks (in pages) of every zone in `/proc/zoneinfo`.
pub fn parse_zoneinfo_low(text: &str) -> u64 {
    let mut sum = 0u64;
    for line in text.lines() {
        let mut cols = line.split_ascii_whitespace();
        if cols.next().is_some_and(|k| k.starts_with("low")) {
            // gopsutil counts an unparsable value as 0.
            let v = cols.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            sum = sum.saturating_add(v);
        }
    }
    sum
}

/// The pre-3.14 `MemAvailable` estimate (gopsutil's `calculateAvailVmem`, after the kernel
/// commit that introduced MemAvailable): free memory above the low watermark, plus the page
/// cache and reclaimable slab that could be freed without going below it. `low_wm` in bytes.
pub fn estimate_available(m: &Meminfo, low_wm: u64) -> u64 {
    // gopsutil computes this with wrapping u64 arithmetic, which gives the exact result
    // whenever the sum is non-negative (even if `free < wm`); i128 does the same without
    // wrapping, and a negative sum (Go: a huge number) is clamped to 0.
    let wm = i128::from(low_wm);
    let page_cache = i128::from(m.get("Active(file)")) + i128::from(m.get("Inactive(file)"));
    let sreclaimable = i128::from(m.get("SReclaimable"));
    let avail = i128::from(m.get("MemFree")) - wm
        + (page_cache - (page_cache / 2).min(wm))
        + (sreclaimable - (sreclaimable / 2).min(wm));
    u64::try_from(avail.max(0)).unwrap_or(u64::MAX)
}

/// What `available` is, given meminfo and (on old kernels) the zoneinfo text.
pub fn available(m: &Meminfo, zoneinfo: Option<&str>, page_size: u64) -> u64 {
    if m.has("MemAvailable") {
        return m.get("MemAvailable");
    }
    let cached = m.get("Cached") + m.get("SReclaimable");
    let can_estimate = m.has("Active(file)") && m.has("Inactive(file)") && m.has("SReclaimable");
    match zoneinfo {
        Some(z) if can_estimate => {
            estimate_available(m, parse_zoneinfo_low(z).saturating_mul(page_size))
        }
        _ => cached + m.get("MemFree"),
    }
}

struct Mem {
    paths: HostPaths,
    collect_extended: bool,
    page_size: u64,
}

fn build(opts: &mut Options<'_, '_>, ctx: &BuildContext<'_>) -> Box<dyn Input> {
    Box::new(Mem {
        paths: ctx.paths.clone(),
        collect_extended: opts.bool("collect_extended", false),
        page_size: page_size(),
    })
}

/// `sysconf(_SC_PAGESIZE)`, 4096 when unknown.
fn page_size() -> u64 {
    match rustix::param::page_size() {
        0 => 4096,
        p => p as u64,
    }
}

impl Input for Mem {
    fn gather(&mut self, acc: &mut Accumulator) -> Result<(), GatherError> {
        let m = self.paths.parse_proc("meminfo", parse_meminfo)?;
        let zoneinfo = if m.has("MemAvailable") {
            None
        } else {
            // Only needed (and only read) on kernels older than 3.14.
            std::fs::read_to_string(self.paths.proc("zoneinfo")).ok()
        };
        let total = m.get("MemTotal");
        let avail = available(&m, zoneinfo.as_deref(), self.page_size);
        // gopsutil subtracts unsigned values and would wrap; we clamp at 0.
        let used = total.saturating_sub(avail);
        let pct = |v: u64| 100.0 * v as f64 / total as f64;
        let mut metric = acc
            .metric("mem")
            .with_field("total", total)
            .with_field("available", avail)
            .with_field("used", used)
            .with_field("available_percent", pct(avail))
            .with_field("used_percent", pct(used));
        let fields: &[(&'static str, &str)] = &[
            ("active", "Active"),
            ("buffered", "Buffers"),
            ("commit_limit", "CommitLimit"),
            ("committed_as", "Committed_AS"),
            ("dirty", "Dirty"),
            ("free", "MemFree"),
            ("high_free", "HighFree"),
            ("high_total", "HighTotal"),
            ("huge_pages_free", "HugePages_Free"),
            ("huge_page_size", "Hugepagesize"),
            ("huge_pages_total", "HugePages_Total"),
            ("inactive", "Inactive"),
            ("low_free", "LowFree"),
            ("low_total", "LowTotal"),
            ("mapped", "Mapped"),
            ("page_tables", "PageTables"),
            ("shared", "Shmem"),
            ("slab", "Slab"),
            ("sreclaimable", "SReclaimable"),
            ("sunreclaim", "SUnreclaim"),
            ("swap_cached", "SwapCached"),
            ("swap_free", "SwapFree"),
            ("swap_total", "SwapTotal"),
            ("vmalloc_chunk", "VmallocChunk"),
            ("vmalloc_total", "VmallocTotal"),
            ("vmalloc_used", "VmallocUsed"),
            ("write_back_tmp", "WritebackTmp"),
            ("write_back", "Writeback"),
        ];
        for (field, key) in fields {
            metric.add_field(*field, m.get(key));
            if *field == "buffered" {
                metric.add_field("cached", m.get("Cached") + m.get("SReclaimable"));
            }
        }
        if self.collect_extended {
            for (field, key) in [
                ("active_anon", "Active(anon)"),
                ("active_file", "Active(file)"),
                ("inactive_anon", "Inactive(anon)"),
                ("inactive_file", "Inactive(file)"),
                ("percpu", "Percpu"),
                ("unevictable", "Unevictable"),
            ] {
                metric.add_field(field, m.get(key));
            }
        }
        acc.push(metric);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kb_values_become_bytes_and_page_counts_stay() {
        let m = parse_meminfo(
            "MemTotal:       1000 kB\nHugePages_Total:      3\nHugepagesize:    2048 kB\n",
        )
        .unwrap();
        assert_eq!(m.get("MemTotal"), 1_024_000);
        assert_eq!(m.get("HugePages_Total"), 3);
        assert_eq!(m.get("Hugepagesize"), 2048 * 1024);
        assert_eq!(m.get("HighTotal"), 0);
        assert!(!m.has("HighTotal"));
    }

    #[test]
    fn parenthesised_keys_short_lines_and_new_keys() {
        let m = parse_meminfo(
            "Active(file):     10 kB\nGarbage line\nEmpty:\nFutureKey:   7 kB extra\nFutureText: n/a\n",
        )
        .unwrap();
        assert_eq!(m.get("Active(file)"), 10240);
        assert_eq!(m.get("FutureKey"), 7168);
        assert!(!m.has("Empty"));
        assert!(!m.has("FutureText"));
    }

    #[test]
    fn bad_number_names_the_line() {
        let e = parse_meminfo("MemTotal: 1 kB\nMemFree: x kB\n").unwrap_err();
        assert_eq!(e.0, 2);
        assert!(e.1.contains("MemFree"), "{}", e.1);
    }

    #[test]
    fn mem_available_wins_when_present() {
        let m = parse_meminfo("MemAvailable: 5 kB\nMemFree: 1 kB\n").unwrap();
        assert_eq!(available(&m, Some("low 100"), 4096), 5120);
    }

    #[test]
    fn old_kernel_estimate_from_low_watermarks() {
        // 2 zones with low 10 and 20 pages → 30 pages × 4096 = 122880 bytes.
        let zi = "Node 0, zone      DMA\n  pages free     3975\n        min      5\n        low      10\n        high     12\nNode 0, zone   Normal\n        low      20\n\n";
        assert_eq!(parse_zoneinfo_low(zi), 30);
        let m = parse_meminfo(
            "MemFree: 1000 kB\nCached: 300 kB\nActive(file): 200 kB\nInactive(file): 100 kB\nSReclaimable: 50 kB\n",
        )
        .unwrap();
        let wm = 122_880;
        // free − wm + (pc − min(pc/2, wm)) + (sr − min(sr/2, wm))
        let pc = 300 * 1024;
        let sr = 50 * 1024;
        let want = 1000 * 1024 - wm + (pc - wm) + (sr - sr / 2);
        assert_eq!(available(&m, Some(zi), 4096), want);
        // no zoneinfo: cached (incl. SReclaimable) + free
        assert_eq!(available(&m, None, 4096), (300 + 50 + 1000) * 1024);
    }

    #[test]
    fn estimate_with_free_below_the_watermark_like_gopsutil_and_never_below_zero() {
        // (MemFree, Active(file) in kB, zoneinfo, MemAvailable estimate in bytes)
        for (free, active_file, zoneinfo, want) in [
            // free 4 KiB < wm 8 KiB, but the page cache makes up for it: Go's wrapping u64
            // arithmetic lands on the exact sum, 4096 − 8192 + (65536 − 8192) = 53248.
            (4, 64, "low 2", 53248),
            (1, 0, "low 1000000", 0),
        ] {
            let m = parse_meminfo(&format!(
                "MemFree: {free} kB\nActive(file): {active_file} kB\nInactive(file): 0 kB\nSReclaimable: 0 kB\n"
            ))
            .unwrap();
            assert_eq!(available(&m, Some(zoneinfo), 4096), want, "{zoneinfo}");
        }
    }
}
