//! `[[inputs.system]]`: load averages, CPU counts, logged-in users and uptime.
//! See README.md for the schema and sources.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use super::{BuildContext, GatherError, Input, InputSpec};
use crate::config::Options;
use crate::hostpaths::{HostPaths, read_to_string};
use crate::metric::{Accumulator, Metric};

/// Registry entry.
pub const SPEC: InputSpec = InputSpec {
    name: "system",
    description: "Load averages, CPU counts, logged-in users and uptime",
    sample_config: include_str!("sample.conf"),
    build,
    test_twice: false,
};

/// `/proc/loadavg`: the three load averages.
pub fn parse_loadavg(text: &str) -> Result<[f64; 3], String> {
    let mut cols = text.split_ascii_whitespace();
    let mut out = [0.0; 3];
    for slot in out.iter_mut() {
        let c = cols.next().ok_or("fewer than 3 columns")?;
        *slot = c.parse().map_err(|_| format!("bad load average {c:?}"))?;
    }
    Ok(out)
}

/// `/proc/uptime` first column, in whole seconds rounded **up** the way `sysinfo(2)` does
/// (`tv_sec + (tv_nsec ? 1 : 0)`): `1067.11` → 1068, `1067.00` → 1067.
pub fn parse_uptime(text: &str) -> Result<u64, String> {
    let first = text.split_ascii_whitespace().next().ok_or("empty file")?;
    let (secs, frac) = first.split_once('.').unwrap_or((first, ""));
    let bad = || format!("bad uptime {first:?}");
    let secs: u64 = secs.parse().map_err(|_| bad())?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    Ok(secs + u64::from(frac.bytes().any(|b| b != b'0')))
}

/// Telegraf's `uptime_format`: `"%d day%s, "` when there are days (`s` only for more than
/// one), then `"%2d:%02d"` hours and minutes.
pub fn format_uptime(uptime: u64) -> String {
    let days = uptime / 86_400;
    let hours = (uptime / 3600) % 24;
    let minutes = (uptime / 60) % 60;
    let mut s = String::new();
    if days != 0 {
        let plural = if days > 1 { "s" } else { "" };
        s.push_str(&format!("{days} day{plural}, "));
    }
    s.push_str(&format!("{hours:2}:{minutes:02}"));
    s
}

/// Logical CPUs: `processor : N` lines of `/proc/cpuinfo` (gopsutil's rule: the key starts
/// with `processor`, case-insensitive, and the value is an integer).
pub fn count_logical_cpus(cpuinfo: &str) -> usize {
    cpuinfo
        .lines()
        .filter(|l| {
            let lower = l.to_ascii_lowercase();
            lower.starts_with("processor")
                && lower
                    .split_once(':')
                    .is_some_and(|(_, v)| v.trim().parse::<i32>().is_ok())
        })
        .count()
}

/// Logical CPUs from `/proc/stat` `cpuN` lines (gopsutil's fallback when cpuinfo has no
/// `processor` lines, e.g. some ARM kernels).
pub fn count_stat_cpus(stat: &str) -> usize {
    stat.lines()
        .filter(|l| l.len() >= 4 && l.starts_with("cpu") && l.as_bytes()[3].is_ascii_digit())
        .count()
}

/// Physical cores from `/proc/cpuinfo` when /sys has no topology: the sum of `cpu cores`
/// over the distinct `physical id`s (gopsutil's fallback, after psutil).
pub fn count_cores_from_cpuinfo(cpuinfo: &str) -> usize {
    let mut per_package = std::collections::HashMap::new();
    let (mut id, mut cores) = (None::<i64>, None::<usize>);
    let mut flush = |id: &mut Option<i64>, cores: &mut Option<usize>| {
        if let (Some(i), Some(c)) = (id.take(), cores.take()) {
            per_package.insert(i, c);
        }
        *id = None;
        *cores = None;
    };
    for line in cpuinfo.lines() {
        let line = line.trim();
        if line.is_empty() {
            flush(&mut id, &mut cores);
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "physical id" => id = v.trim().parse().ok().or(id),
            "cpu cores" => cores = v.trim().parse().ok().or(cores),
            _ => {}
        }
    }
    flush(&mut id, &mut cores);
    per_package.values().sum()
}

/// Size of `struct utmp` on Linux x86_64 and aarch64 (glibc, 64-bit time kept in 32-bit
/// fields for compatibility).
pub const UTMP_SIZE: usize = 384;
const UT_USER_OFFSET: usize = 44;
const UT_USER_LEN: usize = 32;
const USER_PROCESS: i16 = 7;

/// The user names of the `USER_PROCESS` records of a utmp file. A trailing partial record
/// is ignored, as in gopsutil.
pub fn parse_utmp(data: &[u8]) -> Vec<String> {
    data.chunks_exact(UTMP_SIZE)
        .filter(|r| i16::from_le_bytes([r[0], r[1]]) == USER_PROCESS)
        .map(|r| {
            let name = &r[UT_USER_OFFSET..UT_USER_OFFSET + UT_USER_LEN];
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            String::from_utf8_lossy(&name[..end]).into_owned()
        })
        .collect()
}

/// A metric group of the `include` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    Legacy,
    Load,
    Cpus,
    Users,
    Uptime,
}

const GROUPS: &[&str] = &["legacy", "cpus", "dmi", "load", "os", "uptime", "users"];

struct System {
    paths: HostPaths,
    groups: Vec<Group>,
}

fn build(opts: &mut Options<'_, '_>, ctx: &BuildContext<'_>) -> Box<dyn Input> {
    let include = opts
        .opt_strings("include")
        .unwrap_or_else(|| vec!["legacy".to_owned()]);
    let mut groups = Vec::new();
    for g in &include {
        let group = match g.as_str() {
            "legacy" => Group::Legacy,
            "load" => Group::Load,
            "cpus" => Group::Cpus,
            "users" => Group::Users,
            "uptime" => Group::Uptime,
            "os" | "dmi" => {
                opts.warn_at(
                    "include",
                    format!("the {g:?} group is not implemented by wk-agent yet; ignored"),
                );
                continue;
            }
            other => {
                opts.error_at(
                    "include",
                    format!(
                        "invalid value {other:?}: expected one of {}",
                        GROUPS.join(", ")
                    ),
                );
                continue;
            }
        };
        if !groups.contains(&group) {
            groups.push(group);
        }
    }
    // Only used by the os and dmi groups; read so that their values are checked.
    let _: Duration = opts.duration("os_cache_ttl", Duration::from_secs(8 * 3600));
    let _: Duration = opts.duration("dmi_cache_ttl", Duration::from_secs(8 * 3600));
    Box::new(System {
        paths: ctx.paths.clone(),
        groups,
    })
}

impl System {
    fn load(&self) -> Result<[f64; 3], GatherError> {
        let path = self.paths.proc("loadavg");
        parse_loadavg(&read_to_string(&path)?).map_err(|m| GatherError::malformed(&path, 1, m))
    }

    fn uptime(&self) -> Result<u64, GatherError> {
        let path = self.paths.proc("uptime");
        parse_uptime(&read_to_string(&path)?).map_err(|m| GatherError::malformed(&path, 1, m))
    }

    /// (logical CPUs, physical cores).
    fn cpus(&self) -> Result<(i64, i64), GatherError> {
        let cpuinfo = self.paths.read_proc("cpuinfo");
        let mut logical = cpuinfo.as_deref().map_or(0, count_logical_cpus);
        if logical == 0 {
            logical = count_stat_cpus(&self.paths.read_proc("stat")?);
        }
        let mut physical = count_core_lists(&self.paths.sys("devices/system/cpu"));
        if physical == 0 {
            physical = count_cores_from_cpuinfo(cpuinfo.as_deref().unwrap_or(""));
        }
        Ok((logical as i64, physical as i64))
    }

    /// (n_users, n_unique_users), `None` when utmp cannot be read (no login records on this
    /// system, or no permission): Telegraf then leaves both fields out without an error.
    fn users(&self) -> Option<(i64, i64)> {
        let path = self.paths.var.join("run/utmp");
        match std::fs::read(&path) {
            Ok(data) => {
                let names = parse_utmp(&data);
                let unique: HashSet<&String> = names.iter().collect();
                Some((names.len() as i64, unique.len() as i64))
            }
            Err(e) => {
                tracing::debug!("system: reading users: {}: {e}", path.display());
                None
            }
        }
    }
}

/// Physical cores: the number of distinct `cpu*/topology/core_cpus_list` contents (each core
/// lists its hardware threads), falling back to the older `thread_siblings_list`.
fn count_core_lists(cpu_dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(cpu_dir) else {
        return 0;
    };
    let cpus: Vec<_> = rd
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name();
            let b = n.as_encoded_bytes();
            b.len() > 3 && b.starts_with(b"cpu") && b[3].is_ascii_digit()
        })
        .map(|e| e.path())
        .collect();
    let mut lists = HashSet::new();
    for file in ["core_cpus_list", "thread_siblings_list"] {
        for cpu in &cpus {
            let Ok(text) = std::fs::read_to_string(cpu.join("topology").join(file)) else {
                continue;
            };
            // gopsutil only takes files of exactly one line.
            let mut lines = text.lines();
            if let (Some(l), None) = (lines.next(), lines.next()) {
                lists.insert(l.to_owned());
            }
        }
        if !lists.is_empty() {
            break;
        }
    }
    lists.len()
}

impl Input for System {
    fn gather(&mut self, acc: &mut Accumulator) -> Result<(), GatherError> {
        let mut fine: Option<Metric> = None;
        for group in self.groups.clone() {
            match group {
                Group::Legacy => self.gather_legacy(acc)?,
                Group::Load => {
                    let [l1, l5, l15] = self.load()?;
                    let m = fine.get_or_insert_with(|| acc.metric("system"));
                    m.add_field("load1", l1);
                    m.add_field("load5", l5);
                    m.add_field("load15", l15);
                }
                Group::Cpus => {
                    let (logical, physical) = self.cpus()?;
                    let m = fine.get_or_insert_with(|| acc.metric("system"));
                    m.add_field("n_cpus", logical);
                    m.add_field("n_physical_cpus", physical);
                }
                Group::Users => {
                    if let Some((n, unique)) = self.users() {
                        let m = fine.get_or_insert_with(|| acc.metric("system"));
                        m.add_field("n_users", n);
                        m.add_field("n_unique_users", unique);
                    }
                }
                Group::Uptime => {
                    let up = self.uptime()?;
                    let m = fine.get_or_insert_with(|| acc.metric("system"));
                    m.add_field("uptime", up);
                    m.add_field("uptime_format", format_uptime(up));
                }
            }
        }
        if let Some(m) = fine {
            acc.push(m);
        }
        Ok(())
    }
}

impl System {
    /// The default: three lines (gauge, counter, untyped) as Telegraf before 1.39.
    fn gather_legacy(&self, acc: &mut Accumulator) -> Result<(), GatherError> {
        let [l1, l5, l15] = self.load()?;
        let (logical, physical) = self.cpus()?;
        let mut gauge = acc
            .metric("system")
            .with_field("load1", l1)
            .with_field("load5", l5)
            .with_field("load15", l15)
            .with_field("n_cpus", logical)
            .with_field("n_physical_cpus", physical);
        if let Some((n, unique)) = self.users() {
            gauge.add_field("n_users", n);
            gauge.add_field("n_unique_users", unique);
        }
        let up = self.uptime()?;
        acc.push(gauge);
        acc.push(acc.metric("system").with_field("uptime", up));
        acc.push(
            acc.metric("system")
                .with_field("uptime_format", format_uptime(up)),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadavg() {
        assert_eq!(
            parse_loadavg("0.95 0.47 0.19 4/105 10372\n").unwrap(),
            [0.95, 0.47, 0.19]
        );
        assert!(parse_loadavg("0.95 0.47\n").is_err());
        assert!(parse_loadavg("0.95 x 0.1\n").is_err());
    }

    #[test]
    fn uptime_rounds_up_like_sysinfo() {
        assert_eq!(parse_uptime("1067.11 1952.63\n").unwrap(), 1068);
        assert_eq!(parse_uptime("1067.00 1952.63\n").unwrap(), 1067);
        assert_eq!(parse_uptime("1067.01 0\n").unwrap(), 1068);
        assert_eq!(parse_uptime("42\n").unwrap(), 42);
        assert!(parse_uptime("").is_err());
        assert!(parse_uptime("-1.00 0").is_err());
        assert!(parse_uptime("1.x0 0").is_err());
    }

    #[test]
    fn uptime_format_like_telegraf() {
        assert_eq!(
            format_uptime(14 * 86400 + 11 * 3600 + 7 * 60 + 59),
            "14 days, 11:07"
        );
        assert_eq!(format_uptime(86400 + 3 * 3600 + 5 * 60), "1 day,  3:05");
        assert_eq!(format_uptime(3 * 3600 + 5 * 60), " 3:05");
        assert_eq!(format_uptime(0), " 0:00");
        assert_eq!(format_uptime(2 * 86400), "2 days,  0:00");
    }

    #[test]
    fn logical_cpus() {
        let x86 = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\n\nprocessor\t: 1\n";
        assert_eq!(count_logical_cpus(x86), 2);
        // s390x has a "processor 0: version = …" line per CPU but no "processor : N".
        let s390 =
            "vendor_id       : IBM/S390\nprocessor 0: version = FF\nprocessor 1: version = FF\n";
        assert_eq!(count_logical_cpus(s390), 0);
        assert_eq!(
            count_stat_cpus("cpu  1 2\ncpu0 1\ncpu1 2\ncpufreq\nintr 1\n"),
            2
        );
    }

    #[test]
    fn cores_from_cpuinfo() {
        let text = "processor : 0\nphysical id : 0\ncpu cores : 4\n\nprocessor : 1\nphysical id : 0\ncpu cores : 4\n\nprocessor : 2\nphysical id : 1\ncpu cores : 4\n";
        assert_eq!(count_cores_from_cpuinfo(text), 8);
        assert_eq!(count_cores_from_cpuinfo("processor : 0\n"), 0);
    }

    fn utmp_record(ty: i16, user: &str) -> Vec<u8> {
        let mut r = vec![0u8; UTMP_SIZE];
        r[..2].copy_from_slice(&ty.to_le_bytes());
        r[UT_USER_OFFSET..UT_USER_OFFSET + user.len()].copy_from_slice(user.as_bytes());
        r
    }

    #[test]
    fn utmp_user_processes_only() {
        let mut data = Vec::new();
        data.extend(utmp_record(2, "reboot")); // BOOT_TIME
        data.extend(utmp_record(7, "alice"));
        data.extend(utmp_record(7, "bob"));
        data.extend(utmp_record(8, "carol")); // DEAD_PROCESS
        data.extend(utmp_record(7, "alice"));
        data.extend(utmp_record(7, "a_name_of_exactly_32_characters_"));
        data.extend(&[7, 0, 0]); // partial record
        assert_eq!(
            parse_utmp(&data),
            ["alice", "bob", "alice", "a_name_of_exactly_32_characters_"]
        );
        assert!(parse_utmp(&[]).is_empty());
    }
}
