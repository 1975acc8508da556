//! `[[inputs.procstat]]`: per-process CPU, memory, I/O, threads and file descriptors for the
//! processes a selector picks (Telegraf 1.39's schema, spec/telegraf.md §3.13), the
//! `procstat_lookup` summary, and — beyond Telegraf — `procstat_tcp`: each selected process's
//! TCP sockets per state, so a rule can name the process that piles up CLOSE_WAIT. See
//! README.md.
//!
//! Processes are read from the configured proc root with the `procfs` crate; the TCP states
//! come from one netlink sock_diag walk per gather (the `netstat` input's), matched to the
//! selected processes' sockets through a map of their fd tables kept between gathers
//! (`wk_core::sockmap`: only processes whose fds changed are read again, each one in full at
//! least every 10 minutes).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use procfs::process::Process as ProcfsProcess;
use regex::Regex;

use std::time::{Duration, Instant};

use super::netstat::Counter;
use super::netstat::netlink::DiagError;
use super::{BuildContext, GatherError, Input, InputSpec};
use crate::hostpaths::HostPaths;
use crate::metric::FieldValue;
use crate::plugin::Accumulator;
use wk_core::options::Options;
use wk_core::sockmap::{Hint, SockMap};

/// Registry entry.
pub const SPEC: InputSpec = InputSpec {
    name: "procstat",
    description: "Per-process CPU, memory, I/O and TCP states of selected processes",
    sample_config: include_str!("sample.conf"),
    build,
    test_twice: true,
};

/// The `netstat` input's field names, indexed by kernel TCP state (1 ESTABLISHED … 11 CLOSING).
use super::netstat::TCP_FIELDS;

/// How processes are picked (Telegraf's old-style selectors, one per instance).
#[derive(Debug)]
enum Selector {
    PidFile(PathBuf),
    /// Regex on the process name (`pgrep`) or the executable path (`native`).
    Exe(Regex, bool),
    /// Regex on the full command line.
    Pattern(Regex),
    User(String),
    /// Processes of a cgroup directory (a systemd unit's or a named one).
    Cgroup(PathBuf),
}

#[derive(Debug, Clone, Copy, Default)]
struct Properties {
    cpu: bool,
    memory: bool,
    mmap: bool,
}

struct Procstat {
    paths: HostPaths,
    selector: Selector,
    /// The lookup tag: (`pidfile` | `exe` | `pattern` | `user` | `systemd_unit` | `cgroup`, value).
    lookup: (&'static str, String),
    pid_finder: String,
    process_name: Option<String>,
    prefix: String,
    solaris: bool,
    tag_with: HashSet<String>,
    props: Properties,
    /// Previous (cpu ticks, clock ns) per pid, for `cpu_usage`.
    prev: HashMap<i32, (u64, i64)>,
    /// Made at the first gather with samples.
    owners: Option<TcpOwners>,
    /// Selected pids whose fd table was unreadable, already logged (once per pid).
    fd_unreadable: HashSet<i32>,
}

fn build(opts: &mut Options<'_, '_>, ctx: &BuildContext<'_>) -> Box<dyn Input> {
    let pid_finder = opts.string("pid_finder", "pgrep");
    if pid_finder != "pgrep" && pid_finder != "native" {
        opts.error_at(
            "pid_finder",
            format!("{pid_finder:?}: expected \"pgrep\" or \"native\""),
        );
    }
    let regex = |opts: &mut Options<'_, '_>, key: &str, s: &str| match Regex::new(s) {
        Ok(r) => Some(r),
        Err(e) => {
            opts.error_at(key, format!("invalid regular expression {s:?}: {e}"));
            None
        }
    };
    let cgroup_root = ctx.paths.sys("fs/cgroup");
    // Telegraf's precedence when several are set: systemd_unit, cgroup, pid_file, exe,
    // pattern, user.
    let mut selector = None;
    if let Some(unit) = opts.opt_string("systemd_unit") {
        let dir = systemd_unit_cgroup(&cgroup_root, &unit);
        selector = Some((Selector::Cgroup(dir), ("systemd_unit", unit)));
    }
    if let Some(cg) = opts.opt_string("cgroup")
        && selector.is_none()
    {
        let dir = cgroup_root.join(cg.trim_start_matches('/'));
        selector = Some((Selector::Cgroup(dir), ("cgroup", cg)));
    }
    if let Some(f) = opts.opt_string("pid_file")
        && selector.is_none()
    {
        selector = Some((Selector::PidFile(PathBuf::from(&f)), ("pidfile", f)));
    }
    if let Some(e) = opts.opt_string("exe")
        && selector.is_none()
        && let Some(r) = regex(opts, "exe", &e)
    {
        selector = Some((Selector::Exe(r, pid_finder == "native"), ("exe", e)));
    }
    if let Some(p) = opts.opt_string("pattern")
        && selector.is_none()
        && let Some(r) = regex(opts, "pattern", &p)
    {
        selector = Some((Selector::Pattern(r), ("pattern", p)));
    }
    if let Some(u) = opts.opt_string("user")
        && selector.is_none()
    {
        selector = Some((Selector::User(u.clone()), ("user", u)));
    }
    opts.unsupported(&[
        "supervisor_units",
        "supervisor_unit",
        "win_service",
        "filter",
    ]);
    if opts.bool("include_systemd_children", false) {
        opts.warn_at(
            "include_systemd_children",
            "not implemented: only the unit's own cgroup is read",
        );
    }
    let mode = opts.string("mode", "irix");
    if mode != "irix" && mode != "solaris" {
        opts.error_at(
            "mode",
            format!("{mode:?}: expected \"irix\" or \"solaris\""),
        );
    }
    let mut tag_with: HashSet<String> = opts.strings("tag_with").into_iter().collect();
    for t in &tag_with {
        if !["cmdline", "pid", "ppid", "status", "user"].contains(&t.as_str()) {
            opts.warn_at(
                "tag_with",
                format!("{t:?} is not collected by wk-agent (cmdline, pid, ppid, status, user)"),
            );
        }
    }
    // Deprecated spellings (Telegraf < 1.29).
    if opts.bool("pid_tag", false) {
        tag_with.insert("pid".into());
    }
    if opts.bool("cmdline_tag", false) {
        tag_with.insert("cmdline".into());
    }
    let mut props = Properties::default();
    let names = opts
        .opt_strings("properties")
        .unwrap_or_else(|| vec!["cpu".into(), "memory".into(), "mmap".into()]);
    for p in &names {
        match p.as_str() {
            "cpu" => props.cpu = true,
            "memory" => props.memory = true,
            "mmap" => props.mmap = true,
            "limits" | "sockets" => opts.warn_at(
                "properties",
                format!("{p:?} is not implemented by wk-agent and is not collected"),
            ),
            other => opts.error_at(
                "properties",
                format!("{other:?}: expected cpu, memory, mmap, limits or sockets"),
            ),
        }
    }
    opts.accepted(&["socket_protocols"]);
    let process_name = opts.opt_string("process_name");
    let prefix = opts.string("prefix", "");
    let Some((selector, lookup)) = selector else {
        let given = [
            "pid_file",
            "exe",
            "pattern",
            "user",
            "systemd_unit",
            "cgroup",
        ]
        .iter()
        .any(|k| opts.has(k));
        if !given {
            opts.error_at(
                "pid_file",
                "one of pid_file, exe, pattern, user, systemd_unit or cgroup is required",
            );
        }
        return Box::new(Procstat::empty(ctx.paths.clone()));
    };
    Box::new(Procstat {
        paths: ctx.paths.clone(),
        selector,
        lookup,
        pid_finder,
        process_name,
        prefix,
        solaris: mode == "solaris",
        tag_with,
        props,
        prev: HashMap::new(),
        owners: None,
        fd_unreadable: HashSet::new(),
    })
}

/// A unit's cgroup directory: cgroup v2 (`system.slice/<unit>` under the unified root) or v1
/// (`systemd/system.slice/<unit>`), whichever exists.
fn systemd_unit_cgroup(root: &Path, unit: &str) -> PathBuf {
    let slice = if unit.ends_with(".slice") {
        PathBuf::from(unit)
    } else {
        Path::new("system.slice").join(unit)
    };
    let v2 = root.join(&slice);
    if v2.is_dir() {
        v2
    } else {
        root.join("systemd").join(slice)
    }
}

impl Procstat {
    fn empty(paths: HostPaths) -> Procstat {
        Procstat {
            paths,
            selector: Selector::User(String::new()),
            lookup: ("user", String::new()),
            pid_finder: "pgrep".into(),
            process_name: None,
            prefix: String::new(),
            solaris: false,
            tag_with: HashSet::new(),
            props: Properties::default(),
            prev: HashMap::new(),
            owners: None,
            fd_unreadable: HashSet::new(),
        }
    }

    /// The pids the selector picks, sorted; an error is a lookup error.
    fn find_pids(&self, users: &HashMap<u32, String>) -> Result<Vec<i32>, String> {
        let mut pids = match &self.selector {
            Selector::PidFile(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let pid = text
                    .split_whitespace()
                    .next()
                    .and_then(|t| t.parse::<i32>().ok())
                    .ok_or_else(|| format!("{}: no pid in the file", path.display()))?;
                vec![pid]
            }
            Selector::Cgroup(dir) => {
                let path = dir.join("cgroup.procs");
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                text.lines().filter_map(|l| l.trim().parse().ok()).collect()
            }
            Selector::User(name) => {
                let uid = name
                    .parse::<u32>()
                    .ok()
                    .or_else(|| users.iter().find(|(_, n)| *n == name).map(|(u, _)| *u))
                    .ok_or_else(|| format!("unknown user {name:?}"))?;
                self.list()?
                    .into_iter()
                    .filter(|p| p.uid == uid)
                    .map(|p| p.pid)
                    .collect()
            }
            Selector::Pattern(re) => self
                .list()?
                .into_iter()
                .filter(|p| !p.cmdline.is_empty() && re.is_match(&p.cmdline.join(" ")))
                .map(|p| p.pid)
                .collect(),
            Selector::Exe(re, native) => {
                let mut out = Vec::new();
                for p in self.list()? {
                    let subject = if *native {
                        std::fs::read_link(self.paths.proc(&format!("{}/exe", p.pid)))
                            .map(|e| e.to_string_lossy().into_owned())
                            .unwrap_or_default()
                    } else {
                        p.comm.clone()
                    };
                    if !subject.is_empty() && re.is_match(&subject) {
                        out.push(p.pid);
                    }
                }
                out
            }
        };
        // Like pgrep, never report the agent itself.
        let me = std::process::id() as i32;
        pids.retain(|p| *p != me);
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    fn list(&self) -> Result<Vec<wk_core::procs::Process>, String> {
        wk_core::procs::list(&self.paths.proc).map_err(|e| e.to_string())
    }

    fn field(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}_{name}", self.prefix)
        }
    }
}

/// What one process looked like in this gather.
struct Sample {
    pid: i32,
    name: String,
    tags: BTreeMap<String, String>,
    fields: Vec<(String, FieldValue)>,
}

/// `ps`-style status words for state letters, as gopsutil names them.
fn status_word(state: char) -> String {
    match state {
        'R' => "running",
        'S' => "sleep",
        'D' => "blocked",
        'T' | 't' => "stop",
        'Z' => "zombie",
        'I' => "idle",
        'W' => "wait",
        'L' => "lock",
        'X' | 'x' => "dead",
        other => return other.to_string(),
    }
    .to_owned()
}

/// `smaps_rollup` lines `Name:   123 kB` → (name, kB).
pub fn parse_smaps_rollup(text: &str) -> Vec<(&str, u64)> {
    text.lines()
        .filter_map(|l| {
            let (k, rest) = l.split_once(':')?;
            // The header line (an address range) has no `Name:` key.
            if k.contains(char::is_whitespace) {
                return None;
            }
            let v = rest.split_whitespace().next()?.parse().ok()?;
            Some((k, v))
        })
        .collect()
}

impl Input for Procstat {
    fn gather(&mut self, acc: &mut Accumulator) -> Result<(), GatherError> {
        let users = wk_core::procs::user_names(&self.paths.etc.join("passwd"));
        let found = self.find_pids(&users);
        let mut lookup = acc.metric("procstat_lookup");
        lookup.set_tag("pid_finder", self.pid_finder.clone());
        lookup.set_tag(self.lookup.0, self.lookup.1.clone());
        let pids = match found {
            Ok(p) => p,
            Err(e) => {
                lookup.set_tag("result", "lookup_error");
                lookup.add_field("pid_count", 0i64);
                lookup.add_field("running", 0i64);
                lookup.add_field("result_code", 1i64);
                acc.push(lookup);
                acc.add_error(format!("procstat: {e}"));
                return Ok(());
            }
        };
        let tps = wk_core::procs::ticks_per_second().max(1);
        let boot = self
            .paths
            .read_proc("stat")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())
            })
            .unwrap_or(0);
        let mem_total_kb = self
            .paths
            .read_proc("meminfo")
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("MemTotal:")?
                        .split_whitespace()
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
            })
            .unwrap_or(0);
        let ncpu = self
            .paths
            .read_proc("stat")
            .map(|t| {
                t.lines()
                    .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
                    .count()
            })
            .unwrap_or(1)
            .max(1);
        let clock = acc.clock();
        let mut samples = Vec::new();
        let mut seen = HashSet::new();
        for pid in &pids {
            let Ok(p) = ProcfsProcess::new_with_root(self.paths.proc.join(pid.to_string())) else {
                continue;
            };
            let Ok(stat) = p.stat() else { continue };
            let cmdline = p.cmdline().unwrap_or_default();
            let name = self
                .process_name
                .clone()
                .unwrap_or_else(|| wk_core::procs::process_name(&stat.comm, &cmdline));
            if name.is_empty() {
                continue;
            }
            seen.insert(*pid);
            // The real uid from status, as gopsutil's Username(); the directory owner when
            // status is unreadable.
            let status = p.status().ok();
            let uid = status.as_ref().map(|st| st.ruid).or_else(|| p.uid().ok());
            let user = uid.map(|u| users.get(&u).cloned().unwrap_or_else(|| u.to_string()));
            let mut tags = BTreeMap::new();
            let mut fields: Vec<(String, FieldValue)> = Vec::new();
            let mut put = |key: &str, value: FieldValue, tag: bool| {
                if tag {
                    let text = match &value {
                        FieldValue::Str(s) => s.clone(),
                        FieldValue::Int(i) => i.to_string(),
                        FieldValue::Uint(u) => u.to_string(),
                        FieldValue::Float(f) => f.to_string(),
                        FieldValue::Bool(b) => b.to_string(),
                    };
                    tags.insert(key.to_owned(), text);
                } else {
                    fields.push((key.to_owned(), value));
                }
            };
            let with = |k: &str| self.tag_with.contains(k);
            put("pid", FieldValue::Int(i64::from(*pid)), with("pid"));
            put("ppid", FieldValue::Int(i64::from(stat.ppid)), with("ppid"));
            put(
                "status",
                FieldValue::Str(status_word(stat.state)),
                with("status"),
            );
            if let Some(u) = user {
                put("user", FieldValue::Str(u), with("user"));
            }
            if !cmdline.is_empty() {
                put(
                    "cmdline",
                    FieldValue::Str(cmdline.join(" ")),
                    with("cmdline"),
                );
            }
            let mut f: Vec<(&str, FieldValue)> = vec![
                ("num_threads", FieldValue::Int(stat.num_threads)),
                ("minor_faults", FieldValue::Uint(stat.minflt)),
                ("major_faults", FieldValue::Uint(stat.majflt)),
                ("child_minor_faults", FieldValue::Uint(stat.cminflt)),
                ("child_major_faults", FieldValue::Uint(stat.cmajflt)),
            ];
            if let Ok(n) = p.fd_count() {
                f.push(("num_fds", FieldValue::Int(n as i64)));
            }
            if let Some(st) = &status {
                if let Some(v) = st.voluntary_ctxt_switches {
                    f.push(("voluntary_context_switches", FieldValue::Int(v as i64)));
                }
                if let Some(v) = st.nonvoluntary_ctxt_switches {
                    f.push(("involuntary_context_switches", FieldValue::Int(v as i64)));
                }
            }
            if let Ok(io) = p.io() {
                f.push(("read_count", FieldValue::Uint(io.syscr)));
                f.push(("write_count", FieldValue::Uint(io.syscw)));
                f.push(("read_bytes", FieldValue::Uint(io.rchar)));
                f.push(("write_bytes", FieldValue::Uint(io.wchar)));
                f.push(("disk_read_bytes", FieldValue::Uint(io.read_bytes)));
                f.push(("disk_write_bytes", FieldValue::Uint(io.write_bytes)));
            }
            let start_ms = boot * 1000 + stat.starttime * 1000 / tps;
            f.push(("created_at", FieldValue::Int((start_ms as i64) * 1_000_000)));
            if self.props.cpu {
                let secs = |t: u64| t as f64 / tps as f64;
                f.push(("cpu_time_user", FieldValue::Float(secs(stat.utime))));
                f.push(("cpu_time_system", FieldValue::Float(secs(stat.stime))));
                if let Some(w) = stat.delayacct_blkio_ticks {
                    f.push(("cpu_time_iowait", FieldValue::Float(secs(w))));
                }
                let ticks = stat.utime + stat.stime;
                if let Some((t0, c0)) = self.prev.get(pid)
                    && clock > *c0
                    && ticks >= *t0
                {
                    let wall = (clock - c0) as f64 / 1e9;
                    let mut usage = 100.0 * secs(ticks - t0) / wall;
                    if self.solaris {
                        usage /= ncpu as f64;
                    }
                    f.push(("cpu_usage", FieldValue::Float(usage)));
                }
                self.prev.insert(*pid, (ticks, clock));
            }
            if self.props.memory {
                let page = procfs::page_size();
                let rss = (stat.rss).saturating_mul(page);
                f.push(("memory_rss", FieldValue::Uint(rss)));
                f.push(("memory_vms", FieldValue::Uint(stat.vsize)));
                if mem_total_kb > 0 {
                    // Telegraf computes it in float32.
                    let pct = (100.0f32 * rss as f32 / (mem_total_kb as f32 * 1024.0)) as f64;
                    f.push(("memory_usage", FieldValue::Float(pct)));
                }
            }
            if self.props.mmap
                && let Ok(text) =
                    std::fs::read_to_string(self.paths.proc(&format!("{pid}/smaps_rollup")))
            {
                for (k, v) in parse_smaps_rollup(&text) {
                    let name = match k {
                        "Pss" => "memory_pss",
                        "Shared_Clean" => "memory_shared_clean",
                        "Shared_Dirty" => "memory_shared_dirty",
                        "Private_Clean" => "memory_private_clean",
                        "Private_Dirty" => "memory_private_dirty",
                        "Referenced" => "memory_referenced",
                        "Anonymous" => "memory_anonymous",
                        "Swap" => "memory_swap",
                        _ => continue,
                    };
                    f.push((name, FieldValue::Uint(v)));
                }
                f.push(("memory_size", FieldValue::Uint(0)));
            }
            fields.extend(f.into_iter().map(|(k, v)| (k.to_owned(), v)));
            samples.push(Sample {
                pid: *pid,
                name,
                tags,
                fields,
            });
        }
        self.prev.retain(|pid, _| seen.contains(pid));
        self.fd_unreadable.retain(|pid| seen.contains(pid));

        for s in &samples {
            let mut m = acc.metric("procstat");
            m.set_tag("process_name", s.name.clone());
            m.set_tag(self.lookup.0, self.lookup.1.clone());
            for (k, v) in &s.tags {
                m.set_tag(k.clone(), v.clone());
            }
            for (k, v) in &s.fields {
                // `prefix` goes before every field but `pid`, as in Telegraf.
                let k = if k == "pid" { k.clone() } else { self.field(k) };
                m.add_field(k, v.clone());
            }
            acc.push(m);
        }

        if !samples.is_empty() {
            match self.tcp_states(&samples) {
                Ok(states) => {
                    for s in &samples {
                        // No entry: its fd table was unreadable, so its sockets are unknown;
                        // zeros would claim it has none.
                        let Some(counts) = states.get(&s.pid).copied() else {
                            continue;
                        };
                        let mut m = acc
                            .metric("procstat_tcp")
                            .with_tag("process_name", s.name.clone())
                            .with_tag("pid", s.pid.to_string());
                        m.set_tag(self.lookup.0, self.lookup.1.clone());
                        for (name, n) in TCP_FIELDS[1..].iter().zip(counts) {
                            m.add_field(*name, n as i64);
                        }
                        acc.push(m);
                    }
                }
                Err(e) => acc.add_error(format!("procstat_tcp: {e}")),
            }
        }

        lookup.set_tag("result", "success");
        lookup.add_field("pid_count", pids.len() as i64);
        lookup.add_field("running", samples.len() as i64);
        lookup.add_field("result_code", 0i64);
        acc.push(lookup);
        Ok(())
    }
}

impl Procstat {
    /// Socket counts per TCP state for each sampled pid whose fd table could be read.
    fn tcp_states(&mut self, samples: &[Sample]) -> Result<HashMap<i32, [u64; 11]>, String> {
        let mut pids: Vec<i32> = samples.iter().map(|s| s.pid).collect();
        pids.sort_unstable();
        let owners = self
            .owners
            .get_or_insert_with(|| TcpOwners::new(&self.paths.proc, FD_FULL_READ_PERIOD));
        let states = owners.states(&pids).map_err(|e| e.to_string())?;
        for (pid, e) in &states.unreadable {
            if self.fd_unreadable.insert(*pid) {
                tracing::debug!(
                    "procstat: no procstat_tcp line for pid {pid}: {}/{pid}/fd: {e}",
                    self.paths.proc.display()
                );
            }
        }
        Ok(states.counts)
    }
}

/// How often each selected process's fd table is read in full (the staleness bound of
/// `procstat_tcp`; between full reads only changed processes are read). Ten minutes: at
/// 100k sockets and a 10 s interval the spread full reads cost 0.07× the netlink walk (5
/// minutes: 0.13×); CLOSE_WAIT, which rules act on, is confirmed every gather anyway.
pub const FD_FULL_READ_PERIOD: Duration = Duration::from_secs(600);

/// Kernel TCP state number of CLOSE_WAIT.
const TCP_CLOSE_WAIT: u8 = 8;

/// `procstat_tcp`'s state, kept between gathers: which selected process holds which TCP
/// socket (a [`SockMap`]: only processes whose fds changed are read again; every one in full
/// at least once per period), the netlink socket and the dump buffer. Public for the
/// benchmark, which times it apart from the gather.
pub struct TcpOwners {
    map: SockMap,
    counter: Counter,
    /// (inode, state, holders as the map knew them) of every TCP socket of the last dump.
    dump: Vec<(u32, u8, Hint)>,
}

/// One gather's `procstat_tcp` counts.
#[derive(Debug, Default)]
pub struct TcpStates {
    /// Per readable pid, sockets per TCP state (index = kernel state − 1), zeros included.
    pub counts: HashMap<i32, [u64; 11]>,
    /// Pids whose fd table could not be read (another user's process when not root): no
    /// counts, since zeros would claim they hold no socket.
    pub unreadable: Vec<(i32, std::io::Error)>,
}

impl TcpOwners {
    /// Owners of the processes under `proc_root`, each read in full at least once per
    /// `period` (zero: every gather).
    pub fn new(proc_root: &Path, period: Duration) -> TcpOwners {
        TcpOwners {
            map: SockMap::new(proc_root, period, true),
            counter: Counter::new(),
            dump: Vec::new(),
        }
    }

    /// One netlink walk of every TCP socket, the map brought up to date for `pids` (sorted),
    /// and the counts per pid. CLOSE_WAIT sockets — what recovery rules restart a process for —
    /// are confirmed fd by fd, so none is credited to a process that has let go of it.
    pub fn states(&mut self, pids: &[i32]) -> Result<TcpStates, DiagError> {
        self.states_at(Instant::now(), pids)
    }

    /// [`TcpOwners::states`] as if at `now` (benchmarks drive the map's schedules with it).
    pub fn states_at(&mut self, now: Instant, pids: &[i32]) -> Result<TcpStates, DiagError> {
        let sorted;
        let pids = if pids.is_sorted() {
            pids
        } else {
            sorted = {
                let mut v = pids.to_vec();
                v.sort_unstable();
                v
            };
            &sorted[..]
        };
        let (dump, map) = (&mut self.dump, &mut self.map);
        dump.clear();
        map.begin();
        self.counter.for_each_tcp_netlink(&mut |s| {
            if (1..=11).contains(&s.state) {
                let hint = map.live(u64::from(s.inode));
                dump.push((s.inode, s.state, hint));
            }
        })?;
        let changes = self.map.changes();
        self.map.update_at(now, Some(pids));
        let close_wait: Vec<u64> = self
            .dump
            .iter()
            .filter(|(i, st, _)| *st == TCP_CLOSE_WAIT && *i != 0)
            .map(|(i, _, _)| u64::from(*i))
            .collect();
        self.map.confirm_at(now, &close_wait);
        // Counted by position in `pids` (a binary search per holder). When no holder changed
        // during the update (the steady state), each socket's holder is the one `live` saw.
        let unchanged = self.map.changes() == changes;
        let mut counts = vec![[0u64; 11]; pids.len()];
        let mut add = |pid: i32, state: u8| {
            if let Ok(i) = pids.binary_search(&pid) {
                counts[i][usize::from(state) - 1] += 1;
            }
        };
        for &(inode, state, hint) in &self.dump {
            match hint.holder() {
                Some(Some(pid)) if unchanged => add(pid, state),
                Some(None) if unchanged => {}
                _ => {
                    for (pid, _) in self.map.holders(u64::from(inode)) {
                        add(pid, state);
                    }
                }
            }
        }
        let mut out = TcpStates::default();
        for (&pid, c) in pids.iter().zip(counts) {
            match self.map.readable(pid) {
                Some(Ok(())) => {
                    out.counts.insert(pid, c);
                }
                Some(Err(e)) => out.unreadable.push((pid, e)),
                None => {}
            }
        }
        Ok(out)
    }

    /// The map's work counters.
    pub fn map_stats(&self) -> wk_core::sockmap::Stats {
        self.map.stats()
    }

    /// The next call reads every selected process's fds in full.
    pub fn force_full(&mut self) {
        self.map.force_full();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_come_from_argv0_as_telegraf_does() {
        use wk_core::procs::process_name;
        let argv = vec!["/usr/local/bin/very-long-daemon-name".to_owned()];
        assert_eq!(process_name("very-long-daem", &argv), "very-long-daem");
        assert_eq!(
            process_name("very-long-daemo", &argv),
            "very-long-daemon-name"
        );
        assert_eq!(process_name("nginx", &argv), "nginx");
    }

    #[test]
    fn status_words() {
        assert_eq!(status_word('R'), "running");
        assert_eq!(status_word('D'), "blocked");
        assert_eq!(status_word('Z'), "zombie");
        assert_eq!(status_word('?'), "?");
    }

    #[test]
    fn an_unreadable_fd_table_gets_no_tcp_counts_rather_than_zeros() {
        // procstat_tcp reported all zeros for a process whose fd/ it could not read (another
        // user's process when not root), as if it held no sockets.
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("100")).unwrap();
        std::fs::create_dir_all(root.path().join("200/fd")).unwrap();
        std::os::unix::fs::symlink("pipe:[4242]", root.path().join("200/fd/0")).unwrap();
        let mut owners = TcpOwners::new(root.path(), FD_FULL_READ_PERIOD);
        let states = owners.states(&[100, 200]).unwrap();
        assert_eq!(
            states
                .unreadable
                .iter()
                .map(|(p, _)| *p)
                .collect::<Vec<_>>(),
            [100]
        );
        assert_eq!(
            states.counts.get(&200),
            Some(&[0; 11]),
            "readable, no sockets: zeros"
        );
        assert_eq!(
            states.counts.get(&100),
            None,
            "unreadable: no counts at all"
        );
    }

    #[test]
    fn smaps_rollup_values_are_kilobytes() {
        let text = "55d1-7ffd ---p 00000000 00:00 0   [rollup]\nRss:  1024 kB\nPss:   512 kB\nSwap:    0 kB\n";
        assert_eq!(
            parse_smaps_rollup(text),
            [("Rss", 1024), ("Pss", 512), ("Swap", 0)]
        );
    }
}
