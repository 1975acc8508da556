//! `[[inputs.system]]`: load averages, CPU counts, logged-in users and uptime.
//! See README.md for the schema and sources.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use super::{BuildContext, GatherError, Input, InputSpec};
use crate::hostpaths::{HostPaths, read_to_string};
use crate::plugin::Accumulator;
use wk_core::options::Options;

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

/// Size of glibc's `struct utmp` where `ut_session` and `ut_tv` are kept 32-bit for
/// compatibility with a 32-bit ABI (x86_64, ppc64, s390x, riscv64, mips64 and every 32-bit
/// target).
pub const UTMP_SIZE_COMPAT32: usize = 384;
/// Size where they are native 64-bit (aarch64, loongarch64): 400 bytes, gopsutil's
/// `sizeOfUtmp = 0x190` for arm64 and loong64 (its other Linux targets use 0x180).
pub const UTMP_SIZE_64: usize = 400;
/// This build's record size.
pub const UTMP_SIZE: usize = if cfg!(any(target_arch = "aarch64", target_arch = "loongarch64")) {
    UTMP_SIZE_64
} else {
    UTMP_SIZE_COMPAT32
};
/// `ut_user` is at the same offset in both layouts.
const UT_USER_OFFSET: usize = 44;
const UT_USER_LEN: usize = 32;
const USER_PROCESS: i16 = 7;

/// The record size to read `data` with: this build's, unless the file is not a whole number
/// of such records but is of the other layout's (a utmp file copied from, or a fixture made
/// on, the other kind of machine).
pub fn utmp_record_size(len: usize) -> usize {
    let other = if UTMP_SIZE == UTMP_SIZE_64 {
        UTMP_SIZE_COMPAT32
    } else {
        UTMP_SIZE_64
    };
    if !len.is_multiple_of(UTMP_SIZE) && len.is_multiple_of(other) {
        other
    } else {
        UTMP_SIZE
    }
}

/// The user names of the `USER_PROCESS` records of a utmp file made of `record`-byte
/// records. A trailing partial record is ignored, as in gopsutil.
pub fn parse_utmp(data: &[u8], record: usize) -> Vec<String> {
    data.chunks_exact(record)
        .filter(|r| i16::from_le_bytes([r[0], r[1]]) == USER_PROCESS)
        .map(|r| {
            let name = &r[UT_USER_OFFSET..UT_USER_OFFSET + UT_USER_LEN];
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            String::from_utf8_lossy(&name[..end]).into_owned()
        })
        .collect()
}

/// The `os` group's values from `/etc` files, as gopsutil's `PlatformInformation`:
/// (platform, platform_family, platform_version). `read(name)` returns the content of
/// `/etc/<name>` when it exists with more than 4 bytes (gopsutil's `PathExistsWithContents`).
pub fn platform_information(
    read: &dyn Fn(&str) -> Option<String>,
    raspi_config: bool,
) -> (String, String, String) {
    let lsb = read("lsb-release")
        .map(|t| parse_lsb(&t))
        .unwrap_or_default();
    let lines = |t: String| -> Vec<String> { t.lines().map(str::to_owned).collect() };
    let (mut platform, mut version) = (String::new(), String::new());
    if let Some(t) = read("oracle-release").or_else(|| read("enterprise-release")) {
        platform = "oracle".into();
        version = redhatish_version(&lines(t));
    } else if let Some(t) = read("slackware-version") {
        platform = "slackware".into();
        version = lines(t)
            .concat()
            .to_lowercase()
            .replacen("slackware ", "", 1);
    } else if let Some(t) = read("debian_version") {
        let from_lsb = match lsb.id.as_str() {
            "Ubuntu" => Some("ubuntu"),
            "LinuxMint" => Some("linuxmint"),
            "Kylin" => Some("Kylin"),
            "\"Cumulus Linux\"" => Some("cumuluslinux"),
            "uos" => Some("uos"),
            "Deepin" => Some("Deepin"),
            _ => None,
        };
        if let Some(p) = from_lsb {
            platform = p.into();
            version = lsb.release.clone();
        } else {
            platform = if raspi_config { "raspbian" } else { "debian" }.into();
            version = t.lines().next().unwrap_or("").to_owned();
        }
    } else if let Some(t) = read("neokylin-release")
        .or_else(|| read("redhat-release"))
        .or_else(|| read("system-release"))
    {
        let l = lines(t);
        version = redhatish_version(&l);
        platform = redhatish_platform(&l);
    } else if let Some(t) = read("gentoo-release") {
        platform = "gentoo".into();
        version = redhatish_version(&lines(t));
    } else if let Some(t) = read("SuSE-release") {
        let l = lines(t);
        version = suse_version(&l);
        platform = if l.concat().to_lowercase().contains("opensuse") {
            "opensuse"
        } else {
            "suse"
        }
        .into();
    } else if read("arch-release").is_some() {
        platform = "arch".into();
        version = lsb.release.clone();
    } else if let Some(t) = read("alpine-release") {
        platform = "alpine".into();
        version = t.lines().next().unwrap_or("").to_owned();
    } else if let Some(t) = read("os-release") {
        for line in t.lines() {
            let mut f = line.split('=');
            let (Some(k), Some(v)) = (f.next(), f.next()) else {
                continue;
            };
            match k {
                "ID" => platform = trim_quotes(v).to_owned(),
                "VERSION_ID" => version = trim_quotes(v).to_owned(),
                _ => {}
            }
        }
        if platform == "amzn" {
            platform = "amazon".into();
        }
    } else {
        let known = match lsb.id.as_str() {
            "RedHat" => Some("redhat"),
            "Amazon" => Some("amazon"),
            "ScientificSL" => Some("scientific"),
            "XenServer" => Some("xenserver"),
            _ => None,
        };
        if let Some(p) = known {
            platform = p.into();
        } else {
            platform = lsb.id.to_lowercase();
        }
        version = lsb.release.clone();
    }
    let platform = platform.trim_matches('"').to_owned();
    let family = match platform.as_str() {
        "debian" | "ubuntu" | "linuxmint" | "raspbian" | "Kylin" | "cumuluslinux" | "uos"
        | "Deepin" => "debian",
        "fedora" => "fedora",
        "oracle"
        | "centos"
        | "redhat"
        | "scientific"
        | "enterpriseenterprise"
        | "amazon"
        | "xenserver"
        | "cloudlinux"
        | "ibm_powerkvm"
        | "rocky"
        | "almalinux" => "rhel",
        "suse"
        | "opensuse"
        | "opensuse-leap"
        | "opensuse-tumbleweed"
        | "opensuse-tumbleweed-kubic"
        | "sles"
        | "sled"
        | "caasp" => "suse",
        "gentoo" | "slackware" | "arch" | "exherbo" | "alpine" | "coreos" | "solus"
        | "neokylin" | "anolis" => platform.as_str(),
        _ => "",
    }
    .to_owned();
    (platform, family, version)
}

#[derive(Debug, Default)]
struct Lsb {
    id: String,
    release: String,
}

/// `/etc/lsb-release`: `DISTRIB_ID` and `DISTRIB_RELEASE`, quotes removed. Like gopsutil, a
/// value ends at a second `=`.
fn parse_lsb(text: &str) -> Lsb {
    let mut lsb = Lsb::default();
    for line in text.lines() {
        let mut f = line.split('=');
        let (Some(k), Some(v)) = (f.next(), f.next()) else {
            continue;
        };
        match k {
            "DISTRIB_ID" => lsb.id = v.replace('"', ""),
            "DISTRIB_RELEASE" => lsb.release = v.replace('"', ""),
            _ => {}
        }
    }
    lsb
}

fn trim_quotes(s: &str) -> &str {
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        &s[1..s.len() - 1]
    } else {
        s
    }
}

/// gopsutil's `release (\w[\d.]*)` on the lower-cased file, or `rawhide`.
fn redhatish_version(lines: &[String]) -> String {
    let c = lines.concat().to_lowercase();
    if c.contains("rawhide") {
        return "rawhide".into();
    }
    let mut from = 0;
    while let Some(i) = c[from..].find("release ") {
        let rest = &c[from + i + "release ".len()..];
        let mut chars = rest.char_indices();
        if let Some((_, first)) = chars.next()
            && (first.is_alphanumeric() || first == '_')
        {
            let end = rest[first.len_utf8()..]
                .find(|ch: char| !(ch.is_ascii_digit() || ch == '.'))
                .map_or(rest.len(), |e| e + first.len_utf8());
            return rest[..end].to_owned();
        }
        from += i + 1;
    }
    String::new()
}

fn redhatish_platform(lines: &[String]) -> String {
    let c = lines.concat().to_lowercase();
    if c.contains("red hat") {
        return "redhat".into();
    }
    c.split(' ').next().unwrap_or("").to_owned()
}

/// gopsutil's `VERSION = ([\d.]+)` and `PATCHLEVEL = (\d+)` over SuSE-release.
fn suse_version(lines: &[String]) -> String {
    let grab = |line: &str, key: &str, dots: bool| -> Option<String> {
        let i = line.find(key)?;
        let v: String = line[i + key.len()..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || (dots && *c == '.'))
            .collect();
        (!v.is_empty()).then_some(v)
    };
    let mut version = String::new();
    for line in lines {
        if let Some(v) = grab(line, "VERSION = ", true) {
            version = v;
        } else if let Some(p) = grab(line, "PATCHLEVEL = ", false) {
            version = format!("{version}.{p}");
        }
    }
    version
}

/// `uname(2)` release and machine, for kernels without /proc/sys/kernel/{osrelease,arch}.
fn uname() -> (String, String) {
    let u = rustix::system::uname();
    (
        u.release().to_string_lossy().into_owned(),
        u.machine().to_string_lossy().into_owned(),
    )
}

/// SMBIOS chassis type codes (DSP0134) → ghw's descriptions.
const CHASSIS_TYPES: &[&str] = &[
    "Other",
    "Unknown",
    "Desktop",
    "Low profile desktop",
    "Pizza box",
    "Mini tower",
    "Tower",
    "Portable",
    "Laptop",
    "Notebook",
    "Hand held",
    "Docking station",
    "All in one",
    "Sub notebook",
    "Space-saving",
    "Lunch box",
    "Main server chassis",
    "Expansion chassis",
    "SubChassis",
    "Bus Expansion chassis",
    "Peripheral chassis",
    "RAID chassis",
    "Rack mount chassis",
    "Sealed-case PC",
    "Multi-system chassis",
    "Compact PCI",
    "Advanced TCA",
    "Blade",
    "Blade enclosure",
    "Tablet",
    "Convertible",
    "Detachable",
    "IoT gateway",
    "Embedded PC",
    "Mini PC",
    "Stick PC",
];

/// The description of a `chassis_type` code, `unknown` for codes outside the table.
pub fn chassis_type_description(code: &str) -> &'static str {
    code.parse::<usize>()
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| CHASSIS_TYPES.get(i))
        .copied()
        .unwrap_or("unknown")
}

/// The `dmi` group's fields, in Telegraf's order: (field, file under /sys/class/dmi/id).
const DMI_FIELDS: &[(&str, &str)] = &[
    ("bios_vendor", "bios_vendor"),
    ("bios_version", "bios_version"),
    ("bios_date", "bios_date"),
    ("board_vendor", "board_vendor"),
    ("board_product", "board_name"),
    ("board_version", "board_version"),
    ("board_serial", "board_serial"),
    ("board_asset_tag", "board_asset_tag"),
    ("chassis_vendor", "chassis_vendor"),
    ("chassis_type_code", "chassis_type"),
    ("chassis_type", ""),
    ("chassis_version", "chassis_version"),
    ("chassis_serial", "chassis_serial"),
    ("chassis_asset_tag", "chassis_asset_tag"),
    ("product_vendor", "sys_vendor"),
    ("product_name", "product_name"),
    ("product_family", "product_family"),
    ("product_version", "product_version"),
    ("product_serial", "product_serial"),
    ("product_sku", "product_sku"),
    ("product_uuid", "product_uuid"),
];

/// Reads the `dmi` group from `dir` (`/sys/class/dmi/id`) as ghw does: each file trimmed,
/// `unknown` when it cannot be read (missing, or root-only like the serial numbers).
pub fn read_dmi(dir: &Path) -> Vec<(&'static str, String)> {
    let item = |file: &str| {
        std::fs::read_to_string(dir.join(file))
            .map(|t| t.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned())
    };
    let mut out = Vec::with_capacity(DMI_FIELDS.len());
    let mut code = String::new();
    for (field, file) in DMI_FIELDS {
        let v = if file.is_empty() {
            chassis_type_description(&code).to_owned()
        } else {
            item(file)
        };
        if *field == "chassis_type_code" {
            code = v.clone();
        }
        out.push((*field, v));
    }
    out
}

/// A metric group of the `include` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    Legacy,
    Load,
    Cpus,
    Users,
    Uptime,
    Os,
    Dmi,
}

const GROUPS: &[&str] = &["legacy", "cpus", "dmi", "load", "os", "uptime", "users"];

struct System {
    paths: HostPaths,
    groups: Vec<Group>,
    os_cache_ttl: Duration,
    os_cache: Option<Cached>,
    dmi_cache_ttl: Duration,
    dmi_cache: Option<Cached>,
}

/// A group's string fields and when they were read.
type Cached = (std::time::Instant, Vec<(&'static str, String)>);

/// The cached fields when younger than `ttl` (a zero ttl re-reads every time, as Telegraf's
/// `time.Since(cachedAt) > ttl`).
fn fresh(cache: &Option<Cached>, ttl: Duration) -> Option<Vec<(&'static str, String)>> {
    let (at, fields) = cache.as_ref()?;
    (!ttl.is_zero() && at.elapsed() <= ttl).then(|| fields.clone())
}

fn build(opts: &mut Options<'_, '_>, ctx: &BuildContext<'_>) -> Box<dyn Input> {
    let mut include = opts.strings("include");
    if include.is_empty() {
        include.push("legacy".to_owned());
    }
    let mut groups = Vec::new();
    for g in &include {
        let group = match g.as_str() {
            "legacy" => Group::Legacy,
            "load" => Group::Load,
            "cpus" => Group::Cpus,
            "users" => Group::Users,
            "uptime" => Group::Uptime,
            "os" => Group::Os,
            "dmi" => Group::Dmi,
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
    let os_cache_ttl = opts.duration("os_cache_ttl", Duration::from_secs(8 * 3600));
    let dmi_cache_ttl = opts.duration("dmi_cache_ttl", Duration::from_secs(8 * 3600));
    Box::new(System {
        paths: ctx.paths.clone(),
        groups,
        os_cache_ttl,
        os_cache: None,
        dmi_cache_ttl,
        dmi_cache: None,
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

    /// (n_users, n_unique_users) from utmp, or the read error.
    fn users(&self) -> Result<(i64, i64), std::io::Error> {
        let path = self.paths.var.join("run/utmp");
        let data = std::fs::read(&path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let names = parse_utmp(&data, utmp_record_size(data.len()));
        let unique: HashSet<&String> = names.iter().collect();
        Ok((names.len() as i64, unique.len() as i64))
    }

    /// The `os` group's fields, re-read when older than `os_cache_ttl`.
    fn os(&mut self) -> Vec<(&'static str, String)> {
        if let Some(fields) = fresh(&self.os_cache, self.os_cache_ttl) {
            return fields;
        }
        let etc = self.paths.etc.clone();
        let read = |name: &str| -> Option<String> {
            let path = etc.join(name);
            let meta = std::fs::metadata(&path).ok()?;
            if meta.is_dir() || meta.len() <= 4 {
                return None;
            }
            std::fs::read_to_string(&path).ok()
        };
        let raspi = std::fs::metadata("/usr/bin/raspi-config").is_ok_and(|m| m.len() > 4);
        let (platform, family, version) = platform_information(&read, raspi);
        let from_proc = |rel: &str| {
            self.paths
                .read_proc(rel)
                .ok()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
        };
        let (mut kernel, mut arch) = (
            from_proc("sys/kernel/osrelease"),
            from_proc("sys/kernel/arch"),
        );
        if kernel.is_none() || arch.is_none() {
            let (r, m) = uname();
            kernel.get_or_insert(r);
            arch.get_or_insert(m);
        }
        let mut arch = arch.unwrap_or_default();
        if arch.is_empty() {
            arch = std::env::consts::ARCH.to_owned();
        }
        let fields = vec![
            ("os", "linux".to_owned()),
            ("arch", arch),
            ("platform", platform),
            ("platform_family", family),
            ("platform_version", version),
            ("kernel_version", kernel.unwrap_or_default()),
        ];
        self.os_cache = Some((std::time::Instant::now(), fields.clone()));
        fields
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
    /// As Telegraf 1.39: each group's failure is reported and the other groups still run;
    /// the fine-grained groups share one untyped line, pushed after the legacy lines.
    fn gather(&mut self, acc: &mut Accumulator) -> Result<(), GatherError> {
        let mut fine = acc.metric("system");
        for group in self.groups.clone() {
            match group {
                Group::Legacy => {
                    if let Err(e) = self.gather_legacy(acc) {
                        acc.add_error(e);
                    }
                }
                Group::Load => match self.load() {
                    Ok([l1, l5, l15]) => {
                        fine.add_field("load1", l1);
                        fine.add_field("load5", l5);
                        fine.add_field("load15", l15);
                    }
                    Err(e) => acc.add_error(format!("reading load averages: {e}")),
                },
                Group::Cpus => match self.cpus() {
                    Ok((logical, physical)) => {
                        fine.add_field("n_cpus", logical);
                        fine.add_field("n_physical_cpus", physical);
                    }
                    Err(e) => acc.add_error(format!("reading logical CPU count: {e}")),
                },
                Group::Users => match self.users() {
                    Ok((n, unique)) => {
                        fine.add_field("n_users", n);
                        fine.add_field("n_unique_users", unique);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                        ) =>
                    {
                        tracing::trace!("system: reading users: {e}");
                    }
                    Err(e) => tracing::warn!("system: reading users: {e}"),
                },
                Group::Uptime => match self.uptime() {
                    Ok(up) => fine.add_field("uptime", up),
                    Err(e) => acc.add_error(format!("reading uptime: {e}")),
                },
                Group::Os => {
                    for (k, v) in self.os() {
                        fine.add_field(k, v);
                    }
                }
                Group::Dmi => {
                    let fields = match fresh(&self.dmi_cache, self.dmi_cache_ttl) {
                        Some(f) => f,
                        None => {
                            let f = read_dmi(&self.paths.sys("class/dmi/id"));
                            self.dmi_cache = Some((std::time::Instant::now(), f.clone()));
                            f
                        }
                    };
                    for (k, v) in fields {
                        fine.add_field(k, v);
                    }
                }
            }
        }
        acc.push(fine);
        Ok(())
    }
}

impl System {
    /// The default: three lines (gauge, counter, untyped) as Telegraf before 1.39.
    fn gather_legacy(&self, acc: &mut Accumulator) -> Result<(), String> {
        let [l1, l5, l15] = self
            .load()
            .map_err(|e| format!("reading load averages: {e}"))?;
        let (logical, physical) = self
            .cpus()
            .map_err(|e| format!("reading logical CPU count: {e}"))?;
        let mut gauge = acc
            .metric("system")
            .with_field("load1", l1)
            .with_field("load5", l5)
            .with_field("load15", l15)
            .with_field("n_cpus", logical)
            .with_field("n_physical_cpus", physical);
        match self.users() {
            Ok((n, unique)) => {
                gauge.add_field("n_users", n);
                gauge.add_field("n_unique_users", unique);
            }
            Err(e) => tracing::debug!("system: reading users: {e}"),
        }
        acc.push(gauge);
        let up = self.uptime().map_err(|e| format!("reading uptime: {e}"))?;
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

    #[test]
    fn platform_from_os_release_and_debian_version() {
        type Files = &'static [(&'static str, &'static str)];
        let cases: [(Files, (&str, &str, &str)); 7] = [
            (
                &[("debian_version", "12.8\n"), ("os-release", "ID=debian\n")],
                ("debian", "debian", "12.8"),
            ),
            (
                &[
                    ("debian_version", "trixie/sid\n"),
                    ("lsb-release", "DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=24.04\n"),
                ],
                ("ubuntu", "debian", "24.04"),
            ),
            (
                &[("redhat-release", "Rocky Linux release 9.4 (Blue Onyx)\n")],
                ("rocky", "rhel", "9.4"),
            ),
            (
                &[(
                    "redhat-release",
                    "Red Hat Enterprise Linux Server release 7.9 (Maipo)\n",
                )],
                ("redhat", "rhel", "7.9"),
            ),
            (
                &[("os-release", "ID=\"amzn\"\nVERSION_ID=\"2023\"\n")],
                ("amazon", "rhel", "2023"),
            ),
            (
                &[(
                    "SuSE-release",
                    "SUSE Linux Enterprise Server 11 (x86_64)\nVERSION = 11\nPATCHLEVEL = 4\n",
                )],
                ("suse", "suse", "11.4"),
            ),
            (&[], ("", "", "")),
        ];
        for (files, (platform, family, version)) in cases {
            let read = |n: &str| {
                files
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| (*v).to_owned())
            };
            assert_eq!(
                platform_information(&read, false),
                (platform.into(), family.into(), version.into()),
                "{files:?}"
            );
        }
    }

    #[test]
    fn chassis_types() {
        assert_eq!(chassis_type_description("23"), "Rack mount chassis");
        assert_eq!(chassis_type_description("1"), "Other");
        assert_eq!(chassis_type_description("36"), "Stick PC");
        for bad in ["0", "37", "", "unknown", "-1"] {
            assert_eq!(chassis_type_description(bad), "unknown", "{bad}");
        }
    }

    fn utmp_record(ty: i16, user: &str) -> Vec<u8> {
        utmp_record_of(UTMP_SIZE, ty, user)
    }

    fn utmp_record_of(size: usize, ty: i16, user: &str) -> Vec<u8> {
        let mut r = vec![0u8; size];
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
        assert_eq!(utmp_record_size(data.len()), UTMP_SIZE);
        assert_eq!(
            parse_utmp(&data, UTMP_SIZE),
            ["alice", "bob", "alice", "a_name_of_exactly_32_characters_"]
        );
        assert!(parse_utmp(&[], UTMP_SIZE).is_empty());
    }

    #[test]
    fn utmp_of_the_other_layout() {
        let other = if UTMP_SIZE == UTMP_SIZE_64 {
            UTMP_SIZE_COMPAT32
        } else {
            UTMP_SIZE_64
        };
        let mut data = Vec::new();
        for (ty, user) in [(2, "reboot"), (7, "root"), (7, "ops")] {
            data.extend(utmp_record_of(other, ty, user));
        }
        // 3 × 384 = 1152 is not a multiple of 400 and 3 × 400 = 1200 not one of 384.
        assert_eq!(utmp_record_size(data.len()), other);
        assert_eq!(parse_utmp(&data, other), ["root", "ops"]);
    }
}
