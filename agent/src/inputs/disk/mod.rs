//! `[[inputs.disk]]`: space and inode usage of every mounted filesystem, from
//! `/proc/1/mountinfo` and `statfs(2)`. See README.md for the schema and formulas.
//!
//! Split in three so that fixtures can run without the machine's mounts: the pure mountinfo
//! parsers, the pure selection (Telegraf's filters, overmount removal, `HOST_MOUNT_PREFIX`),
//! and the `statfs` source, which is the syscall in production and a table file in fixtures
//! (see [`FIXTURE_STATFS`]).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::{BuildContext, GatherError, Input, InputSpec};
use crate::hostpaths::HostPaths;
use crate::plugin::Accumulator;
use wk_core::options::Options;

/// Registry entry.
pub const SPEC: InputSpec = InputSpec {
    name: "disk",
    description: "Disk space and inode usage of mounted filesystems",
    sample_config: include_str!("sample.conf"),
    build,
    test_twice: false,
};

/// A file under the /proc root that, when present, replaces `statfs(2)` with a table (fixture
/// cases only). A real procfs cannot contain it, so production never reads it; the check is
/// made once, at the first gather. Format: one mount per line,
/// `<path> <bsize> <blocks> <bfree> <bavail> <files> <ffree>` or `<path> error`, where `<path>`
/// is the path statfs would be called on, written with mountinfo's octal escapes (`\040`);
/// `#` starts a comment. A path missing from the table fails like a missing mount point.
pub const FIXTURE_STATFS: &str = "wk-fixture-statfs";

/// One mount, as listed in mountinfo (or /proc/mounts, which lacks ids, device and root).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mount {
    /// Mount id and parent id (mountinfo only).
    pub id: Option<u64>,
    pub parent: Option<u64>,
    /// `major:minor` of the filesystem's device (mountinfo only, "" otherwise).
    pub dev: String,
    /// The mount point, octal escapes decoded.
    pub mount_point: String,
    /// Per-mount options, plus `bind` when the mount's root is not `/` (gopsutil's rule).
    pub opts: Vec<String>,
    pub fstype: String,
    /// The mount source (`/dev/sda1`, `tmpfs`, `none`), escapes decoded.
    pub source: String,
    /// Superblock options (mountinfo only).
    pub super_opts: Vec<String>,
}

impl Mount {
    /// `ro` if the mount or its superblock is read-only, else `rw` if the mount says so, else
    /// `unknown`.
    pub fn mode(&self) -> &'static str {
        let has = |v: &[String], o: &str| v.iter().any(|x| x == o);
        if has(&self.opts, "ro") || has(&self.super_opts, "ro") {
            "ro"
        } else if has(&self.opts, "rw") {
            "rw"
        } else {
            "unknown"
        }
    }
}

/// Decodes the `\NNN` octal escapes the kernel writes for space, tab, newline and `\`
/// (gopsutil: `strconv.Unquote`); anything else is kept as written.
pub fn unescape_octal(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let d = &b[i + 1..i + 4];
            if d.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = u32::from(d[0] - b'0') * 64
                    + u32::from(d[1] - b'0') * 8
                    + u32::from(d[2] - b'0');
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn split_opts(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|o| !o.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Parses `/proc/<pid>/mountinfo`:
/// `id parent major:minor root mount_point opts [optional…] - fstype source super_opts`.
/// A line without the ` - ` separator or with too few fields is an error naming the line
/// (gopsutil fails the gather the same way).
pub fn parse_mountinfo(text: &str) -> Result<Vec<Mount>, (usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |m: &str| (i + 1, format!("{m}: {line:?}"));
        let Some((left, right)) = line.split_once(" - ") else {
            return Err(bad("no ' - ' separator"));
        };
        let l: Vec<&str> = left.split_ascii_whitespace().collect();
        let r: Vec<&str> = right.split_ascii_whitespace().collect();
        if l.len() < 6 || r.len() < 2 {
            return Err(bad("too few fields"));
        }
        let mut opts = split_opts(l[5]);
        if !l[3].is_empty() && l[3] != "/" {
            opts.push("bind".to_owned());
        }
        out.push(Mount {
            id: l[0].parse().ok(),
            parent: l[1].parse().ok(),
            dev: l[2].to_owned(),
            mount_point: unescape_octal(l[4]),
            opts,
            fstype: r[0].to_owned(),
            source: unescape_octal(r[1]),
            super_opts: r.get(2).map(|s| split_opts(s)).unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Parses `/proc/mounts` (`source mount_point fstype opts dump pass`), the last fallback.
pub fn parse_mounts(text: &str) -> Result<Vec<Mount>, (usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        if f.len() < 4 {
            return Err((i + 1, format!("too few fields: {line:?}")));
        }
        out.push(Mount {
            source: unescape_octal(f[0]),
            mount_point: unescape_octal(f[1]),
            fstype: f[2].to_owned(),
            opts: split_opts(f[3]),
            ..Mount::default()
        });
    }
    Ok(out)
}

/// Drops mounts hidden by a later mount on the same mount point: statfs on that path
/// measures the top one (the last listed), so a hidden entry would carry another
/// filesystem's numbers under its own tags. Telegraf keeps both (see README).
pub fn drop_overmounted(mounts: Vec<Mount>) -> Vec<Mount> {
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, m) in mounts.iter().enumerate() {
        last.insert(m.mount_point.as_str(), i);
    }
    let keep: Vec<bool> = (0..mounts.len())
        .map(|i| last.get(mounts[i].mount_point.as_str()) == Some(&i))
        .collect();
    mounts
        .into_iter()
        .zip(keep)
        .filter_map(|(m, k)| k.then_some(m))
        .collect()
}

/// The `disk` options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Exact mount points to report (empty: all).
    pub mount_points: Vec<String>,
    /// Filesystem types to skip (`autofs` always is).
    pub ignore_fs: Vec<String>,
    /// Mount options that skip a mount (`bind` matches bind mounts).
    pub ignore_mount_opts: Vec<String>,
}

/// A mount chosen for statfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected<'a> {
    pub mount: &'a Mount,
    /// Where to call statfs (the mount point under `HOST_MOUNT_PREFIX`).
    pub stat_path: PathBuf,
    /// The `path` tag: the mount point with the prefix stripped.
    pub path: String,
}

/// Telegraf's `DiskUsage` selection, in its order: mount options, mount points, fstype
/// (`autofs` always), then the host prefix (a prefixed path that is itself a mount point is
/// skipped as a conflict).
pub fn select<'a>(mounts: &'a [Mount], filter: &Filter, prefix: &str) -> Vec<Selected<'a>> {
    let all_points: HashSet<&str> = mounts.iter().map(|m| m.mount_point.as_str()).collect();
    let mut out = Vec::new();
    for m in mounts {
        if m.opts.iter().any(|o| filter.ignore_mount_opts.contains(o)) {
            continue;
        }
        if !filter.mount_points.is_empty() && !filter.mount_points.contains(&m.mount_point) {
            continue;
        }
        if m.fstype == "autofs" || filter.ignore_fs.contains(&m.fstype) {
            continue;
        }
        let mut stat_path = PathBuf::from(&m.mount_point);
        if !prefix.is_empty() && !m.mount_point.starts_with(prefix) {
            let joined = clean(&format!("{prefix}/{}", m.mount_point));
            if all_points.contains(joined.as_str()) {
                continue;
            }
            stat_path = PathBuf::from(joined);
        }
        let rest = m.mount_point.strip_prefix(prefix).unwrap_or(&m.mount_point);
        out.push(Selected {
            mount: m,
            stat_path,
            path: clean(&format!("/{rest}")),
        });
    }
    out
}

/// Go's `filepath.Clean` for absolute paths without `..`: collapses `//` and `.`, no
/// trailing `/` except for the root.
fn clean(p: &str) -> String {
    let parts: Vec<&str> = p
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// What statfs(2) says about one filesystem.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsStats {
    pub bsize: u64,
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
}

/// The `disk` fields, computed as gopsutil and Telegraf do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub total: u64,
    pub free: u64,
    pub used: u64,
    pub used_percent: f64,
    pub inodes_total: u64,
    pub inodes_free: u64,
    pub inodes_used: u64,
    pub inodes_used_percent: f64,
}

impl FsStats {
    /// total = blocks·bsize, free = bavail·bsize (what an unprivileged user may use),
    /// used = (blocks − bfree)·bsize; percentages over used+free as `df` does.
    pub fn usage(&self) -> Usage {
        let total = self.blocks.saturating_mul(self.bsize);
        let free = self.bavail.saturating_mul(self.bsize);
        let used = self
            .blocks
            .saturating_sub(self.bfree)
            .saturating_mul(self.bsize);
        let pct = |u: u64, f: u64| {
            if u as f64 + f as f64 > 0.0 {
                u as f64 / (u as f64 + f as f64) * 100.0
            } else {
                0.0
            }
        };
        // gopsutil leaves inodes_used at 0 when the filesystem reports more free than total.
        let inodes_used = self.files.saturating_sub(self.ffree);
        Usage {
            total,
            free,
            used,
            used_percent: pct(used, free),
            inodes_total: self.files,
            inodes_free: self.ffree,
            inodes_used,
            inodes_used_percent: pct(inodes_used, self.ffree),
        }
    }
}

/// Parses the fixture statfs table (see [`FIXTURE_STATFS`]): path → stats, or `None` for a
/// path whose statfs fails.
pub fn parse_statfs_table(text: &str) -> Result<HashMap<String, Option<FsStats>>, (usize, String)> {
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("");
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        match f.as_slice() {
            [] => {}
            [path, "error"] => {
                out.insert(unescape_octal(path), None);
            }
            [path, nums @ ..] if nums.len() == 6 => {
                let mut v = [0u64; 6];
                for (slot, n) in v.iter_mut().zip(nums) {
                    *slot = n
                        .parse()
                        .map_err(|_| (i + 1, format!("bad number {n:?}")))?;
                }
                let [bsize, blocks, bfree, bavail, files, ffree] = v;
                out.insert(
                    unescape_octal(path),
                    Some(FsStats {
                        bsize,
                        blocks,
                        bfree,
                        bavail,
                        files,
                        ffree,
                    }),
                );
            }
            _ => {
                return Err((
                    i + 1,
                    format!("expected 7 columns or '<path> error': {line:?}"),
                ));
            }
        }
    }
    Ok(out)
}

/// statfs(2) on `path`.
fn statfs(path: &Path) -> std::io::Result<FsStats> {
    let st = rustix::fs::statfs(path)?;
    // The casts widen: the fields are unsigned (or non-negative c_long for f_bsize) of at
    // most 64 bits on every Linux target.
    Ok(FsStats {
        bsize: st.f_bsize as u64,
        blocks: st.f_blocks as u64,
        bfree: st.f_bfree as u64,
        bavail: st.f_bavail as u64,
        files: st.f_files as u64,
        ffree: st.f_ffree as u64,
    })
}

/// A mount-table parser.
type ParseFn = fn(&str) -> Result<Vec<Mount>, (usize, String)>;

/// Where statfs results come from, decided at the first gather.
enum StatfsSource {
    Syscall,
    /// The fixture table at this path, read at every gather.
    Table(PathBuf),
}

struct Disk {
    paths: HostPaths,
    filter: Filter,
    source: Option<StatfsSource>,
}

fn build(opts: &mut Options<'_, '_>, ctx: &BuildContext<'_>) -> Box<dyn Input> {
    Box::new(Disk {
        paths: ctx.paths.clone(),
        filter: Filter {
            mount_points: opts.strings("mount_points"),
            ignore_fs: opts.strings("ignore_fs"),
            ignore_mount_opts: opts.strings("ignore_mount_opts"),
        },
        source: None,
    })
}

impl Disk {
    /// Reads the mount table: `<proc>/1/mountinfo`, else `<proc>/self/mountinfo`, else
    /// `<proc>/mounts`. When all fail the error names the first.
    fn mounts(&self) -> Result<Vec<Mount>, GatherError> {
        let parse_with = |rel: &str, parse: ParseFn| self.paths.parse_proc(rel, parse);
        let first = match parse_with("1/mountinfo", parse_mountinfo) {
            Ok(m) => return Ok(m),
            Err(e @ GatherError::Malformed { .. }) => return Err(e),
            Err(e) => e,
        };
        tracing::debug!("disk: {first}; trying self/mountinfo");
        if let Ok(m) = parse_with("self/mountinfo", parse_mountinfo) {
            return Ok(m);
        }
        parse_with("mounts", parse_mounts).map_err(|_| first)
    }

    /// The `device` tag: `/dev/mapper/X` resolved to `dm-N`, `/dev/root` to the real device,
    /// `/dev/` removed, and the fstype when the source is `none` or empty.
    fn device(&self, m: &Mount) -> String {
        let mut dev = m.source.clone();
        if let Some(name) = dev.strip_prefix("/dev/mapper/") {
            if let Some(dm) = self.resolve_mapper(name) {
                dev = format!("/dev/{dm}");
            }
        } else if dev == "/dev/root"
            && !m.dev.is_empty()
            && let Ok(target) = std::fs::read_link(self.paths.sys(&format!("dev/block/{}", m.dev)))
            && let Some(base) = target.file_name()
        {
            dev = format!("/dev/{}", base.to_string_lossy());
        }
        let dev = dev.replace("/dev/", "");
        if dev.is_empty() || dev == "none" {
            m.fstype.clone()
        } else {
            dev
        }
    }

    /// `dm-N` for a device-mapper name: the `/dev/mapper` symlink, else a scan of
    /// `/sys/block/dm-*/dm/name`.
    fn resolve_mapper(&self, name: &str) -> Option<String> {
        if let Ok(target) = std::fs::read_link(self.paths.dev.join("mapper").join(name)) {
            let base = target.file_name()?.to_string_lossy().into_owned();
            if base.starts_with("dm-") {
                return Some(base);
            }
        }
        let rd = std::fs::read_dir(self.paths.sys("block")).ok()?;
        rd.flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("dm-"))
            .find(|n| {
                std::fs::read_to_string(self.paths.sys(&format!("block/{n}/dm/name")))
                    .is_ok_and(|s| s.trim() == name)
            })
    }

    /// The `label` tag: the device-mapper name, else udev's `ID_FS_LABEL`.
    fn label(&self, device: &str, m: &Mount) -> Option<String> {
        if let Ok(s) = std::fs::read_to_string(self.paths.sys(&format!("block/{device}/dm/name"))) {
            return Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        }
        if m.dev.is_empty() || m.dev.starts_with("0:") {
            return None;
        }
        let udev =
            std::fs::read_to_string(self.paths.run.join(format!("udev/data/b{}", m.dev))).ok()?;
        udev.lines()
            .find_map(|l| l.strip_prefix("E:ID_FS_LABEL="))
            .map(str::to_owned)
            .filter(|s| !s.is_empty())
    }
}

impl Input for Disk {
    fn gather(&mut self, acc: &mut Accumulator) -> Result<(), GatherError> {
        let mounts = drop_overmounted(self.mounts()?);
        let source = self.source.get_or_insert_with(|| {
            let table = self.paths.proc(FIXTURE_STATFS);
            if table.is_file() {
                StatfsSource::Table(table)
            } else {
                StatfsSource::Syscall
            }
        });
        let table = match source {
            StatfsSource::Syscall => None,
            StatfsSource::Table(path) => {
                let text = crate::hostpaths::read_to_string(path)?;
                Some(
                    parse_statfs_table(&text)
                        .map_err(|(line, msg)| GatherError::malformed(&*path, line, msg))?,
                )
            }
        };
        let prefix = self.paths.mount_prefix.to_string_lossy().into_owned();
        for sel in select(&mounts, &self.filter, &prefix) {
            let stats = match &table {
                None => statfs(&sel.stat_path),
                Some(t) => t
                    .get(sel.stat_path.to_string_lossy().as_ref())
                    .copied()
                    .flatten()
                    .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound)),
            };
            let stats = match stats {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!("disk: statfs {}: {e}", sel.stat_path.display());
                    continue;
                }
            };
            let u = stats.usage();
            if u.total == 0 {
                // procfs, sysfs, cgroup…: nothing to measure.
                continue;
            }
            let device = self.device(sel.mount);
            let mut m = acc
                .metric("disk")
                .with_tag("path", sel.path.clone())
                .with_tag("fstype", sel.mount.fstype.clone())
                .with_tag("mode", sel.mount.mode());
            if let Some(label) = self.label(&device, sel.mount) {
                m.set_tag("label", label);
            }
            m.set_tag("device", device);
            let m = m
                .with_field("total", u.total)
                .with_field("free", u.free)
                .with_field("used", u.used)
                .with_field("used_percent", u.used_percent)
                .with_field("inodes_total", u.inodes_total)
                .with_field("inodes_free", u.inodes_free)
                .with_field("inodes_used", u.inodes_used)
                .with_field("inodes_used_percent", u.inodes_used_percent);
            acc.push(m);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 master:2 - ext4 /dev/vda rw,discard
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24683656k
30 25 0:27 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=1k
40 27 254:0 /srv/data /mnt/my\\040disk ro,relatime - ext4 /dev/vda rw
41 27 0:40 / /net rw - autofs systemd-1 rw
";

    #[test]
    fn mountinfo_fields_escapes_and_bind() {
        let m = parse_mountinfo(MOUNTINFO).unwrap();
        assert_eq!(m.len(), 6);
        assert_eq!(m[1].mount_point, "/");
        assert_eq!(m[1].source, "/dev/vda");
        assert_eq!(m[1].dev, "254:0");
        assert_eq!(m[1].super_opts, vec!["rw", "discard"]);
        assert_eq!(m[4].mount_point, "/mnt/my disk");
        assert_eq!(m[4].opts, vec!["ro", "relatime", "bind"]);
        assert_eq!(m[4].mode(), "ro");
        assert_eq!(m[1].mode(), "rw");
    }

    #[test]
    fn superblock_ro_wins() {
        let m = parse_mountinfo("1 0 8:1 / /x rw - ext4 /dev/sda1 ro,errors=remount-ro\n").unwrap();
        assert_eq!(m[0].mode(), "ro");
        let m = parse_mountinfo("1 0 8:1 / /x relatime - ext4 /dev/sda1\n").unwrap();
        assert_eq!(m[0].mode(), "unknown");
        assert!(m[0].super_opts.is_empty());
    }

    #[test]
    fn malformed_mountinfo_names_the_line() {
        assert_eq!(
            parse_mountinfo("22 27 0:21 / /proc rw - proc proc rw\n1 2 3\n")
                .unwrap_err()
                .0,
            2
        );
        assert_eq!(parse_mountinfo("1 2 0:1 / - proc\n").unwrap_err().0, 1);
        assert!(parse_mountinfo("\n").unwrap().is_empty());
    }

    #[test]
    fn unescape() {
        assert_eq!(unescape_octal("/a\\040b\\011c\\134d"), "/a b\tc\\d");
        assert_eq!(unescape_octal("/a\\04"), "/a\\04");
        assert_eq!(unescape_octal("/a\\999"), "/a\\999");
        assert_eq!(unescape_octal("\\"), "\\");
    }

    #[test]
    fn mounts_fallback() {
        let m =
            parse_mounts("/dev/sda1 / ext4 rw,relatime 0 0\nnone /a\\040b tmpfs ro 0 0\n").unwrap();
        assert_eq!(m[0].opts, vec!["rw", "relatime"]);
        assert_eq!(m[1].mount_point, "/a b");
        assert_eq!(m[1].mode(), "ro");
        assert!(parse_mounts("x y\n").is_err());
    }

    #[test]
    fn overmounted_entries_are_dropped() {
        let m = drop_overmounted(parse_mountinfo(MOUNTINFO).unwrap());
        let shm: Vec<_> = m.iter().filter(|m| m.mount_point == "/dev/shm").collect();
        assert_eq!(shm.len(), 1);
        assert_eq!(shm[0].id, Some(30));
        let m = drop_overmounted(parse_mounts("a /x ext4 rw 0 0\nb /x xfs rw 0 0\n").unwrap());
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].source, "b");
    }

    #[test]
    fn selection_follows_telegraf_order() {
        let mounts = parse_mountinfo(MOUNTINFO).unwrap();
        let names = |f: &Filter, prefix: &str| -> Vec<String> {
            select(&mounts, f, prefix)
                .into_iter()
                .map(|s| s.path)
                .collect()
        };
        let all = names(&Filter::default(), "");
        assert_eq!(
            all,
            vec!["/proc", "/", "/dev/shm", "/dev/shm", "/mnt/my disk"]
        );
        let f = Filter {
            ignore_fs: vec!["tmpfs".into(), "proc".into()],
            ignore_mount_opts: vec!["bind".into()],
            ..Filter::default()
        };
        assert_eq!(names(&f, ""), vec!["/"]);
        let f = Filter {
            mount_points: vec!["/mnt/my disk".into(), "/net".into()],
            ..Filter::default()
        };
        assert_eq!(names(&f, ""), vec!["/mnt/my disk"]);
    }

    #[test]
    fn host_mount_prefix() {
        let mounts = parse_mounts(
            "/dev/sda1 / ext4 rw 0 0\n/dev/sda2 /hostfs ext4 rw 0 0\n/dev/sda3 /hostfs/var ext4 rw 0 0\n/dev/sda4 /var ext4 rw 0 0\n",
        )
        .unwrap();
        let s = select(&mounts, &Filter::default(), "/hostfs");
        let got: Vec<_> = s
            .iter()
            .map(|s| (s.stat_path.display().to_string(), s.path.clone()))
            .collect();
        // "/" → /hostfs conflicts with the /hostfs mount; "/var" → /hostfs/var likewise.
        assert_eq!(
            got,
            vec![
                ("/hostfs".to_owned(), "/".to_owned()),
                ("/hostfs/var".to_owned(), "/var".to_owned()),
            ]
        );
    }

    #[test]
    fn usage_formulas() {
        let s = FsStats {
            bsize: 4096,
            blocks: 1000,
            bfree: 300,
            bavail: 250,
            files: 100,
            ffree: 40,
        };
        let u = s.usage();
        assert_eq!(u.total, 4_096_000);
        assert_eq!(u.free, 1_024_000);
        assert_eq!(u.used, 2_867_200);
        assert!((u.used_percent - 700.0 / 950.0 * 100.0).abs() < 1e-9);
        assert_eq!(u.inodes_used, 60);
        assert!((u.inodes_used_percent - 60.0).abs() < 1e-9);
        let u = FsStats {
            files: 1,
            ffree: 5,
            ..FsStats::default()
        }
        .usage();
        assert_eq!((u.inodes_used, u.used_percent), (0, 0.0));
    }

    #[test]
    fn statfs_table() {
        let t = parse_statfs_table("# c\n/ 4096 10 5 4 100 50\n/a\\040b error\n\n").unwrap();
        assert_eq!(t["/"].unwrap().bavail, 4);
        assert_eq!(t["/a b"], None);
        assert_eq!(parse_statfs_table("/ 1 2\n").unwrap_err().0, 1);
        assert!(parse_statfs_table("/ 1 2 3 4 5 x\n").is_err());
    }

    #[test]
    fn statfs_syscall_on_root() {
        let s = statfs(Path::new("/")).unwrap();
        assert!(s.blocks > 0 && s.bsize > 0);
        assert!(statfs(Path::new("/nonexistent/wk")).is_err());
    }
}
