//! `[[inputs.diskio]]`: block-device I/O counters from `/proc/diskstats`, with udev names
//! and tags, plus await/svctm/util from the previous gather. See README.md.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use super::{BuildContext, GatherError, Input, InputSpec};
use crate::glob::GlobSet;
use crate::hostpaths::HostPaths;
use crate::plugin::Accumulator;
use wk_core::options::Options;

/// Registry entry.
pub const SPEC: InputSpec = InputSpec {
    name: "diskio",
    description: "Block device I/O counters, await, service time and utilisation",
    sample_config: include_str!("sample.conf"),
    build,
    // io_await/io_svctm/io_util need a previous sample (Telegraf's --test shows none).
    test_twice: true,
};

/// Bytes per diskstats sector: always 512, whatever the device's sector size.
const SECTOR_SIZE: u64 = 512;

/// One line of /proc/diskstats (the first 11 counters; discard and flush columns of newer
/// kernels are not reported by Telegraf).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskStats {
    pub major: u32,
    pub minor: u32,
    pub name: String,
    pub reads: u64,
    pub merged_reads: u64,
    pub read_sectors: u64,
    pub read_time: u64,
    pub writes: u64,
    pub merged_writes: u64,
    pub write_sectors: u64,
    pub write_time: u64,
    pub in_progress: u64,
    pub io_time: u64,
    pub weighted_io_time: u64,
}

impl DiskStats {
    /// True when every counter is zero (never-used loop and ram devices): gopsutil drops them.
    pub fn is_idle(&self) -> bool {
        [
            self.reads,
            self.merged_reads,
            self.read_sectors,
            self.read_time,
            self.writes,
            self.merged_writes,
            self.write_sectors,
            self.write_time,
            self.in_progress,
            self.io_time,
            self.weighted_io_time,
        ]
        .iter()
        .all(|v| *v == 0)
    }
}

/// Parses /proc/diskstats. Lines with fewer than 14 columns (2.6 kernels' partition lines)
/// are skipped as gopsutil does; a counter that is not a number is an error naming the line.
pub fn parse_diskstats(text: &str) -> Result<Vec<DiskStats>, (usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        if f.len() < 14 {
            continue;
        }
        let num = |k: usize| -> Result<u64, (usize, String)> {
            f[k].parse()
                .map_err(|_| (i + 1, format!("bad number {:?} for {}", f[k], f[2])))
        };
        let small = |k: usize| -> Result<u32, (usize, String)> {
            f[k].parse()
                .map_err(|_| (i + 1, format!("bad device number {:?} for {}", f[k], f[2])))
        };
        out.push(DiskStats {
            major: small(0)?,
            minor: small(1)?,
            name: f[2].to_owned(),
            reads: num(3)?,
            merged_reads: num(4)?,
            read_sectors: num(5)?,
            read_time: num(6)?,
            writes: num(7)?,
            merged_writes: num(8)?,
            write_sectors: num(9)?,
            write_time: num(10)?,
            in_progress: num(11)?,
            io_time: num(12)?,
            weighted_io_time: num(13)?,
        });
    }
    Ok(out)
}

/// What udev knows about a device: its `E:` properties and its `S:` links (without `/dev/`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UdevInfo {
    pub props: HashMap<String, String>,
    pub links: Vec<String>,
}

/// Parses a udev database file (`/run/udev/data/b8:0`): `E:KEY=value` and `S:link` lines;
/// the links are also exposed as the `DEVLINKS` property (`/dev/`-prefixed, space separated),
/// as Telegraf does.
pub fn parse_udev_data(text: &str) -> UdevInfo {
    let mut info = UdevInfo::default();
    for line in text.lines() {
        if line.len() < 4 {
            continue;
        }
        if let Some(link) = line.strip_prefix("S:") {
            info.links.push(link.to_owned());
        } else if let Some(kv) = line.strip_prefix("E:")
            && let Some((k, v)) = kv.split_once('=')
        {
            info.props.insert(k.to_owned(), v.to_owned());
        }
    }
    if !info.links.is_empty() {
        let joined: Vec<String> = info.links.iter().map(|l| format!("/dev/{l}")).collect();
        info.props.insert("DEVLINKS".to_owned(), joined.join(" "));
    }
    info
}

/// Expands `$VAR` and `${VAR}` (VAR made of letters, digits and `_`) from `props`; `None` when
/// any variable is missing (Telegraf then tries the next template). A `$` not followed by a
/// variable stays as written.
pub fn expand_template(template: &str, props: &HashMap<String, String>) -> Option<String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::new();
    let mut rest = template;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let (var, consumed) = if let Some(inner) = after.strip_prefix('{') {
            let n = inner.find(|c: char| !word(c)).unwrap_or(inner.len());
            if n > 0 && inner[n..].starts_with('}') {
                (Some(&inner[..n]), n + 2)
            } else {
                (None, 0)
            }
        } else {
            let n = after.find(|c: char| !word(c)).unwrap_or(after.len());
            ((n > 0).then(|| &after[..n]), n)
        };
        match var {
            Some(v) => out.push_str(props.get(v)?),
            None => out.push('$'),
        }
        rest = &after[consumed..];
    }
    out.push_str(rest);
    Some(out)
}

/// The `devices` option: Telegraf treats the list as globs as soon as one entry has a glob
/// character (`*`, `?`, `[`), and as exact kernel names (symlinks such as
/// `/dev/disk/by-id/…` resolved) otherwise.
#[derive(Debug, Clone)]
enum Devices {
    All,
    Exact(Vec<String>),
    Glob(GlobSet),
}

struct DiskIo {
    paths: HostPaths,
    devices: Devices,
    skip_serial_number: bool,
    device_tags: Vec<String>,
    name_templates: Vec<String>,
    last: HashMap<String, DiskStats>,
    last_time: Option<i64>,
}

fn build(opts: &mut Options<'_, '_>, ctx: &BuildContext<'_>) -> Box<dyn Input> {
    let list = opts.strings("devices");
    let devices = if list.is_empty() {
        Devices::All
    } else if list.iter().any(|d| d.contains(['*', '?', '['])) {
        match GlobSet::new(&list) {
            Ok(g) => Devices::Glob(g),
            Err(e) => {
                opts.error_at("devices", e);
                Devices::All
            }
        }
    } else {
        Devices::Exact(list)
    };
    Box::new(DiskIo {
        paths: ctx.paths.clone(),
        devices,
        skip_serial_number: opts.bool("skip_serial_number", true),
        device_tags: opts.strings("device_tags"),
        name_templates: opts.strings("name_templates"),
        last: HashMap::new(),
        last_time: None,
    })
}

impl DiskIo {
    /// A `devices` entry as a kernel name: a path (or a name under /dev) that is a symlink is
    /// followed to its target's base name.
    fn resolve_name(&self, name: &str) -> String {
        let candidate: PathBuf = match name.strip_prefix("/dev/") {
            Some(rest) => self.paths.dev.join(rest),
            None if name.starts_with('/') => PathBuf::from(name),
            None => self.paths.dev.join(name),
        };
        std::fs::canonicalize(&candidate)
            .ok()
            .and_then(|p| p.file_name().map(|b| b.to_string_lossy().into_owned()))
            .unwrap_or_else(|| name.to_owned())
    }

    /// The udev record of a device: `<run>/udev/data/b<major>:<minor>`, else the pre-systemd
    /// `<dev>/.udev/db/block:<name>`.
    fn udev(&self, d: &DiskStats) -> Option<UdevInfo> {
        let new = self
            .paths
            .run
            .join(format!("udev/data/b{}:{}", d.major, d.minor));
        let old = self.paths.dev.join(format!(".udev/db/block:{}", d.name));
        std::fs::read_to_string(new)
            .or_else(|_| std::fs::read_to_string(old))
            .ok()
            .map(|t| parse_udev_data(&t))
    }

    /// gopsutil's serial: udev `ID_SERIAL`, else `model_serial` of the whole disk in sysfs.
    fn serial(&self, d: &DiskStats, udev: Option<&UdevInfo>) -> Option<String> {
        if let Some(s) = udev.and_then(|u| u.props.get("ID_SERIAL"))
            && !s.is_empty()
        {
            return Some(s.clone());
        }
        let dir = self.paths.sys(&format!("dev/block/{}:0/device", d.major));
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
        let (model, serial) = (read("model")?, read("serial")?);
        let (model, serial) = (model.trim(), serial.trim());
        (!model.is_empty() && !serial.is_empty()).then(|| format!("{model}_{serial}"))
    }
}

impl Input for DiskIo {
    fn gather(&mut self, acc: &mut Accumulator) -> Result<(), GatherError> {
        let stats = self.paths.parse_proc("diskstats", parse_diskstats)?;
        let exact: Option<HashSet<String>> = match &self.devices {
            Devices::Exact(list) => Some(list.iter().map(|d| self.resolve_name(d)).collect()),
            _ => None,
        };
        let glob = match &self.devices {
            Devices::Glob(g) => Some(g),
            _ => None,
        };
        let need_udev = glob.is_some()
            || !self.name_templates.is_empty()
            || !self.device_tags.is_empty()
            || !self.skip_serial_number;
        let now = acc.clock();
        let wall_ms = self
            .last_time
            .map(|t| (now - t) as f64 / 1e6)
            .filter(|ms| *ms > 0.0);
        let mut current = HashMap::with_capacity(stats.len());
        for d in stats {
            if exact.as_ref().is_some_and(|set| !set.contains(&d.name)) || d.is_idle() {
                continue;
            }
            let udev = if need_udev { self.udev(&d) } else { None };
            if let Some(g) = glob {
                let links = udev.as_ref().map(|u| u.links.as_slice()).unwrap_or(&[]);
                if !g.is_match(&d.name) && !links.iter().any(|l| g.is_match(l)) {
                    current.insert(d.name.clone(), d);
                    continue;
                }
            }
            let name = udev
                .as_ref()
                .and_then(|u| {
                    self.name_templates
                        .iter()
                        .find_map(|t| expand_template(t, &u.props))
                })
                .unwrap_or_else(|| d.name.clone());
            let mut m = acc.metric("diskio").with_tag("name", name);
            if let Ok(w) =
                std::fs::read_to_string(self.paths.sys(&format!("block/{}/wwid", d.name)))
            {
                m.set_tag("wwid", w.trim());
            }
            if let Some(u) = &udev {
                for t in &self.device_tags {
                    if let Some(v) = u.props.get(t) {
                        m.set_tag(t.clone(), v.clone());
                    }
                }
            }
            if !self.skip_serial_number {
                let serial = self.serial(&d, udev.as_ref());
                m.set_tag("serial", serial.unwrap_or_else(|| "unknown".to_owned()));
            }
            m = m
                .with_field("reads", d.reads)
                .with_field("writes", d.writes)
                .with_field("read_bytes", d.read_sectors.wrapping_mul(SECTOR_SIZE))
                .with_field("write_bytes", d.write_sectors.wrapping_mul(SECTOR_SIZE))
                .with_field("read_time", d.read_time)
                .with_field("write_time", d.write_time)
                .with_field("io_time", d.io_time)
                .with_field("weighted_io_time", d.weighted_io_time)
                .with_field("iops_in_progress", d.in_progress)
                .with_field("merged_reads", d.merged_reads)
                .with_field("merged_writes", d.merged_writes);
            if let Some(prev) = self.last.get(&d.name) {
                let went_back = d.reads < prev.reads
                    || d.writes < prev.writes
                    || d.read_time < prev.read_time
                    || d.write_time < prev.write_time
                    || d.io_time < prev.io_time;
                if !went_back {
                    let count = ((d.reads - prev.reads) + (d.writes - prev.writes)) as f64;
                    let rw_time =
                        ((d.read_time - prev.read_time) + (d.write_time - prev.write_time)) as f64;
                    let io_time = (d.io_time - prev.io_time) as f64;
                    if count > 0.0 {
                        m.add_field("io_await", rw_time / count);
                        m.add_field("io_svctm", io_time / count);
                    }
                    if let Some(ms) = wall_ms {
                        m.add_field("io_util", 100.0 * io_time / ms);
                    }
                }
            }
            acc.push(m);
            current.insert(d.name.clone(), d);
        }
        self.last = current;
        self.last_time = Some(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diskstats_current_old_and_short_lines() {
        let text = "\
 254       0 vda 16539 4940 3131746 12379 2997 16605 3094608 23310 0 4488 37010 4343 98 378880 1056 33 264
   8       0 sda 1 2 3 4 5 6 7 8 9 10 11
   8       1 sda1 100 200 300 400
   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
";
        let d = parse_diskstats(text).unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(d[0].name, "vda");
        assert_eq!((d[0].major, d[0].minor), (254, 0));
        assert_eq!(d[0].read_sectors, 3131746);
        assert_eq!(d[0].weighted_io_time, 37010);
        assert_eq!(d[1].weighted_io_time, 11);
        assert!(d[2].is_idle());
        assert!(!d[1].is_idle());
    }

    #[test]
    fn diskstats_garbage_names_the_line() {
        let err =
            parse_diskstats("8 0 sda 1 2 3 4 5 6 7 8 9 10 11\n8 1 sdb 1 2 x 4 5 6 7 8 9 10 11\n")
                .unwrap_err();
        assert_eq!(err.0, 2);
        assert!(err.1.contains("\"x\""), "{}", err.1);
        assert!(parse_diskstats("a 0 sda 1 2 3 4 5 6 7 8 9 10 11\n").is_err());
        assert!(parse_diskstats("8 0 sda -1 2 3 4 5 6 7 8 9 10 11\n").is_err());
    }

    #[test]
    fn udev_data() {
        let u = parse_udev_data(
            "S:disk/by-id/ata-X\nS:disk/by-path/pci-0\nE:ID_SERIAL=X_123\nE:ID_MODEL=Model=Y\nI:123\nE:\nG:systemd\n",
        );
        assert_eq!(u.props["ID_SERIAL"], "X_123");
        assert_eq!(u.props["ID_MODEL"], "Model=Y");
        assert_eq!(u.links, vec!["disk/by-id/ata-X", "disk/by-path/pci-0"]);
        assert_eq!(
            u.props["DEVLINKS"],
            "/dev/disk/by-id/ata-X /dev/disk/by-path/pci-0"
        );
    }

    #[test]
    fn templates() {
        let props: HashMap<String, String> = [("ID_FS_LABEL", "data"), ("DM_NAME", "vg-x")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(
            expand_template("$ID_FS_LABEL", &props).as_deref(),
            Some("data")
        );
        assert_eq!(
            expand_template("${DM_NAME}-1", &props).as_deref(),
            Some("vg-x-1")
        );
        assert_eq!(
            expand_template("$DM_NAME$ID_FS_LABEL", &props).as_deref(),
            Some("vg-xdata")
        );
        assert_eq!(expand_template("$MISSING", &props), None);
        assert_eq!(expand_template("a$-${b", &props).as_deref(), Some("a$-${b"));
        assert_eq!(expand_template("plain", &props).as_deref(), Some("plain"));
    }
}
