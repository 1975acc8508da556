//! `restart_process`: stops the processes whose full command line matches `pattern` (a
//! regular expression, as `pgrep -f` and procstat's `pattern`; or the process `pid`) with
//! SIGTERM, then SIGKILL after the grace time, and starts `start` (a program and its
//! arguments from the rule) in its own process group. Without `start`, a supervisor
//! (systemd, docker, runit) is expected to start it again. On a remote host the process
//! table, the stop and the start go through `wk-remote-helper` over ssh (`remote.rs`); the
//! pattern is matched here either way.

use std::sync::{Arc, Mutex};

use regex::Regex;

use super::host::SshHost;
use super::remote::{self, Call, PortOpen, RemoteProc, Started};
use super::{
    Action, ArgKind, ArgSpec, Args, BoxFuture, Ctx, Done, Host, Probe, all_stopped,
    describe_process, stop_processes,
};

/// Registry entry.
pub const SPEC: super::ActionSpec = super::ActionSpec::new(
    "restart_process",
    "Stop the processes matching a pattern (or a pid), SIGTERM then SIGKILL, and start a configured command",
    &[
        ArgSpec::optional("pattern", ArgKind::Pattern),
        ArgSpec::optional("pid", ArgKind::Pid),
        ArgSpec::optional("start", ArgKind::Argv),
        ArgSpec::optional("port", ArgKind::Port),
        ArgSpec::optional("name", ArgKind::Word),
        ArgSpec::optional("max_matches", ArgKind::Count),
    ],
    build,
)
.one_of(&["pattern", "pid"])
.templated_needs("pid", &["name", "pattern"]);

fn build(a: &Args) -> Box<dyn Action> {
    Box::new(RestartProcess {
        // Checked when the rule loaded and again after rendering; a failure here cannot
        // happen, and would match nothing.
        pattern: a
            .get("pattern")
            .map(|p| super::args::check_pattern(p).unwrap_or_else(|_| never())),
        pid: a.get("pid").and_then(|p| p.parse().ok()),
        start: a.list("start").to_vec(),
        port: a.get("port").and_then(|p| p.parse().ok()),
        name: a.get("name").map(str::to_owned),
        max_matches: a
            .get("max_matches")
            .and_then(|n| n.parse().ok())
            .unwrap_or(DEFAULT_MAX_MATCHES),
        stopped: Mutex::new(Vec::new()),
        started: Mutex::new(None),
        started_unit: Mutex::new(None),
        before: Mutex::new(Vec::new()),
    })
}

fn never() -> Regex {
    Regex::new(r"[^\s\S]").expect("a constant valid regex")
}

/// Whether a command line (its argv) matches: the arguments joined with spaces, as
/// `pgrep -f` and procstat see it. Kernel threads (no command line) never match.
pub fn cmdline_matches(re: &Regex, cmdline: &[String]) -> bool {
    !cmdline.is_empty() && re.is_match(&cmdline.join(" "))
}

/// The action.
pub struct RestartProcess {
    pub pattern: Option<Regex>,
    pub pid: Option<i32>,
    pub start: Vec<String>,
    /// When set, the probe also checks that this TCP port on 127.0.0.1 answers.
    pub port: Option<u16>,
    /// The process's name must be this (Telegraf's `process_name`: `comm`, or argv[0]'s
    /// basename): a pid from a tag may have been reused by another program since the point
    /// was written, or be crafted.
    pub name: Option<String>,
    /// More processes matching than this: nothing is stopped (a pattern too broad, such as
    /// `python`, would stop every Python program on the host).
    pub max_matches: usize,
    stopped: Mutex<Vec<i32>>,
    /// What `start` started, watched until the probe.
    started: Mutex<Option<Arc<StartWatch>>>,
    /// The transient unit `start` runs as (`launch = "systemd-run"`), watched until the probe.
    started_unit: Mutex<Option<String>>,
    /// The processes that matched (pattern or name) before the action: the probe wants one
    /// that was not running then (another process of that name proves no restart).
    before: Mutex<Vec<i32>>,
}

/// The default `max_matches`: a service's master and its workers on a small host, not
/// everything of one language.
pub const DEFAULT_MAX_MATCHES: usize = 10;

/// Whether `n` processes are too many to stop; says why, for the report.
fn too_many(n: usize, max: usize) -> Option<String> {
    (n > max).then(|| {
        format!(
            "refused: {n} processes match, more than max_matches = {max}; nothing was stopped (narrow the pattern, add `name`, or raise max_matches)"
        )
    })
}

/// `me` (the alerter's pid) and its ancestors' (up to, not including, init): never stopped,
/// whatever a pattern, a pid or a port from a tag says (a test runner, a shell, sshd, the
/// supervisor). `free_port` spares them too.
pub(crate) fn ours(all: &[wk_core::procs::Process], me: i32) -> Vec<i32> {
    let mut ours = vec![me];
    let by_pid: std::collections::HashMap<i32, i32> = all.iter().map(|p| (p.pid, p.ppid)).collect();
    let mut p = me;
    while let Some(&pp) = by_pid.get(&p) {
        if pp <= 1 || ours.contains(&pp) {
            break;
        }
        ours.push(pp);
        p = pp;
    }
    ours
}

/// The processes that may be stopped, by `pattern` or by `pid` (both: the pid, if it
/// matches), named `name` if given: never the alerter or its ancestors, init, kernel
/// threads or zombies.
pub fn candidates(
    proc_root: &std::path::Path,
    pattern: Option<&Regex>,
    pid: Option<i32>,
    name: Option<&str>,
) -> Vec<wk_core::procs::Process> {
    let Ok(all) = wk_core::procs::list(proc_root) else {
        return Vec::new();
    };
    let ours = ours(&all, std::process::id() as i32);
    all.into_iter()
        .filter(|p| p.pid > 1 && !ours.contains(&p.pid) && p.state != 'Z' && !p.cmdline.is_empty())
        .filter(|p| selected(pattern, pid, name, p.pid, &p.comm, &p.cmdline))
        .collect()
}

/// Processes whose command line matches `pattern` (see [`candidates`]).
pub fn matching(proc_root: &std::path::Path, pattern: &Regex) -> Vec<wk_core::procs::Process> {
    candidates(proc_root, Some(pattern), None, None)
}

/// Whether one process (pid, comm, argv) is the action's target.
fn selected(
    pattern: Option<&Regex>,
    pid: Option<i32>,
    name: Option<&str>,
    p_pid: i32,
    comm: &str,
    cmdline: &[String],
) -> bool {
    let by = match (pattern, pid) {
        (Some(re), pid) => cmdline_matches(re, cmdline) && pid.is_none_or(|pid| pid == p_pid),
        (None, Some(pid)) => p_pid == pid,
        // Only the probe asks by name alone (a rule gives a pattern or a pid).
        (None, None) => name.is_some(),
    };
    by && name.is_none_or(|n| wk_core::procs::process_name(comm, cmdline) == n)
}

/// What became of a started process: its exit status once it died, and the end of its
/// stderr (so that "Address already in use" reaches the report).
#[derive(Debug, Default)]
pub(crate) struct StartWatch {
    exit: Mutex<Option<i32>>,
    stderr: Mutex<Vec<u8>>,
}

impl StartWatch {
    /// `Some((status, stderr tail))` once the process has exited (status: the exit code, or
    /// 128 + the signal that killed it, as shells say). A start command may well exit 0 at
    /// once (a launcher that daemonizes): callers judge only a non-zero status.
    pub(crate) fn exited(&self) -> Option<(i32, String)> {
        let code = (*self.exit.lock().ok()?)?;
        let err = self.stderr.lock().ok()?;
        Some((code, String::from_utf8_lossy(&err).trim().to_owned()))
    }
}

/// The environment a started service keeps from the alerter's.
const KEPT_ENV: &[&str] = &["PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "TZ"];

/// Starts `argv` detached (own process group, stdin and stdout on /dev/null) and reaps it
/// when it exits; its stderr is drained for as long as it runs, keeping the last
/// `max_output` bytes.
pub(crate) fn spawn_detached(
    argv: &[String],
    max_output: usize,
) -> std::io::Result<(u32, Arc<StartWatch>)> {
    use std::os::unix::process::ExitStatusExt;
    use tokio::io::AsyncReadExt;
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"))?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    // Not the alerter's secrets (INFLUX_PASSWORD, SMTP_PASSWORD… from its environment
    // file): a login-like environment only.
    cmd.env_clear();
    for (k, v) in std::env::vars_os() {
        let k_str = k.to_string_lossy();
        if KEPT_ENV.contains(&k_str.as_ref()) || k_str.starts_with("LC_") {
            cmd.env(&k, v);
        }
    }
    crate::memory::for_child(cmd.as_std_mut());
    // SIGPIPE ignored, as systemd starts services (IgnoreSIGPIPE=yes): its stderr is a pipe
    // to the alerter, and once the alerter exits (a restart, an upgrade) a write to it must
    // fail with EPIPE, not kill the service it restarted.
    // SAFETY: runs in the child between fork and exec; signal() is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let pid = child.id().unwrap_or(0);
    let watch = Arc::new(StartWatch::default());
    let stderr = child.stderr.take();
    let w = watch.clone();
    tokio::spawn(async move {
        if let Some(mut err) = stderr {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if let Ok(mut kept) = w.stderr.lock() {
                    kept.extend_from_slice(&buf[..n]);
                    let extra = kept.len().saturating_sub(max_output.max(1));
                    kept.drain(..extra);
                }
            }
        }
        let code = match child.wait().await {
            Ok(st) => st.code().or(st.signal().map(|s| 128 + s)).unwrap_or(-1),
            Err(_) => -1,
        };
        if let Ok(mut e) = w.exit.lock() {
            *e = Some(code);
        }
    });
    Ok((pid, watch))
}

impl RestartProcess {
    async fn run_local(&self, ctx: &Ctx) -> Done {
        let users = wk_core::procs::user_names(&ctx.passwd);
        let already: Vec<i32> = candidates(
            &ctx.proc_root,
            self.pattern.as_ref(),
            None,
            self.name.as_deref(),
        )
        .iter()
        .map(|p| p.pid)
        .collect();
        if let Ok(mut b) = self.before.lock() {
            *b = already;
        }
        let procs = candidates(
            &ctx.proc_root,
            self.pattern.as_ref(),
            self.pid,
            self.name.as_deref(),
        );
        let described: Vec<String> = procs.iter().map(|p| describe_process(p, &users)).collect();
        let mut d = Done {
            before: before(&described),
            ..Done::default()
        };
        if let Some(why) = too_many(procs.len(), self.max_matches) {
            d.refuse(why);
            return d;
        }
        let pids: Vec<i32> = procs.iter().map(|p| p.pid).collect();
        let started: Vec<(i32, u64)> = procs.iter().map(|p| (p.pid, p.start_ticks)).collect();
        let stopped = stop_processes(ctx, &started).await;
        if let Ok(mut s) = self.stopped.lock() {
            *s = pids.clone();
        }
        let mut did: Vec<String> = stopped
            .iter()
            .map(|(p, how)| format!("pid {p}: {how}"))
            .collect();
        d.ok = true;
        if !all_stopped(stopped.iter().map(|(_, how)| how.as_str())) {
            // Starting beside a process that still runs would make two instances, and the
            // probe could take the new one for a repair.
            d.ok = false;
            d.stderr = "a process could not be stopped".into();
            if !self.start.is_empty() {
                did.push(format!("did not start {:?}", self.start.join(" ")));
            }
        } else if !self.start.is_empty() && ctx.launch == super::Launch::SystemdRun {
            // Its own cgroup, outside the alerter's sandbox: a restart of the alerter does
            // not kill it, and it may map JIT memory or bind port 80.
            let unit = super::host::unit_name("start");
            let argv = super::host::systemd_run(&unit, &self.start, None);
            let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
            let o = ctx.cmd(&refs).await;
            d.main_command(&o);
            if o.ok() {
                did.push(format!(
                    "started {:?} as {unit} (journalctl -u {unit})",
                    self.start.join(" ")
                ));
                if let Ok(mut s) = self.started_unit.lock() {
                    *s = Some(unit);
                }
            } else {
                d.stderr = o.excerpt(ctx.max_output);
                did.push(format!("could not start {:?}", self.start.join(" ")));
            }
            d.ok = o.ok();
        } else if !self.start.is_empty() {
            d.commands.push(self.start.clone());
            match spawn_detached(&self.start, ctx.max_output) {
                Ok((pid, watch)) => {
                    did.push(format!("started {:?} as pid {pid}", self.start.join(" ")));
                    d.exit_status = None;
                    if let Ok(mut s) = self.started.lock() {
                        *s = Some(watch);
                    }
                }
                Err(e) => {
                    d.ok = false;
                    d.stderr = format!("cannot start {:?}: {e}", self.start.join(" "));
                    did.push(format!("could not start {:?}", self.start.join(" ")));
                }
            }
        } else if pids.is_empty() {
            did.push("nothing to stop and no start command".into());
            d.ok = false;
        }
        d.did = did.join("; ");
        d
    }
}

impl Action for RestartProcess {
    fn run<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, Done> {
        Box::pin(async move {
            match &ctx.host {
                Host::Ssh(s) => self.run_remote(ctx, s).await,
                Host::Local => self.run_local(ctx).await,
            }
        })
    }

    fn probe<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, Probe> {
        Box::pin(async move {
            let old = self.stopped.lock().map(|s| s.clone()).unwrap_or_default();
            let earlier = self.before.lock().map(|s| s.clone()).unwrap_or_default();
            if let Host::Ssh(s) = &ctx.host {
                return self.probe_remote(ctx, s, &old).await;
            }
            let users = wk_core::procs::user_names(&ctx.passwd);
            let mut v = Verdict::default();
            if self.pattern.is_some() || self.name.is_some() {
                let now: Vec<String> = candidates(
                    &ctx.proc_root,
                    self.pattern.as_ref(),
                    None,
                    self.name.as_deref(),
                )
                .iter()
                .filter(|p| !old.contains(&p.pid) && !earlier.contains(&p.pid))
                .map(|p| describe_process(p, &users))
                .collect();
                v.processes(&now);
            }
            if self.pattern.is_none() {
                let left: Vec<i32> = old
                    .iter()
                    .copied()
                    .filter(|p| super::alive(&ctx.proc_root, *p))
                    .collect();
                v.stopped(&old, &left);
            }
            if let Some(port) = self.port {
                v.port(port, port_answers(port).await);
            }
            let mut probe = v.probe();
            // A start that died meanwhile says why (its status and stderr).
            let exited = self
                .started
                .lock()
                .ok()
                .and_then(|s| s.as_ref().and_then(|s| s.exited()));
            // A launcher that daemonizes exits 0 at once: only a failure is news.
            if let Some((code, err)) = exited.filter(|(code, _)| *code != 0) {
                probe.after = format!(
                    "{}; the started {:?} exited with status {code}",
                    probe.after,
                    self.start.join(" ")
                );
                probe.healthy = Some(false);
                probe.exit_status = Some(code);
                probe.stderr = err;
            }
            let unit = self.started_unit.lock().ok().and_then(|u| u.clone());
            if let Some(unit) = unit {
                unit_failed(ctx, &unit, &mut probe).await;
            }
            probe
        })
    }

    fn target(&self) -> Option<String> {
        // A pid changes with every restart: by pid, the target is the program named (so the
        // budget holds across restarts), else the pid.
        Some(match (&self.pattern, &self.name, self.pid) {
            (Some(re), _, _) => format!("pattern={}", re.as_str()),
            (None, Some(name), _) => format!("name={name}"),
            (None, None, pid) => format!("pid={}", pid.unwrap_or_default()),
        })
    }

    fn plan(&self) -> Vec<String> {
        let what = match (&self.pattern, self.pid) {
            (Some(p), _) => format!("processes matching /{}/", p.as_str()),
            (None, Some(pid)) => format!("pid {pid}"),
            _ => "nothing".into(),
        };
        let mut v = vec![format!("SIGTERM (then SIGKILL) {what}")];
        if !self.start.is_empty() {
            v.push(format!("start {:?}", self.start));
        }
        v
    }
}

/// `Done::before`: the processes found (their descriptions), or that none runs.
fn before(described: &[String]) -> String {
    if described.is_empty() {
        "no matching process running".into()
    } else {
        described.join("; ")
    }
}

/// What the probe found, check by check (local and remote alike).
#[derive(Default)]
struct Verdict {
    after: Vec<String>,
    /// `None` until a check ran; then healthy while every check passed.
    healthy: Option<bool>,
}

impl Verdict {
    /// Matching processes that are not the stopped ones (their descriptions): healthy when
    /// one runs.
    fn processes(&mut self, now: &[String]) {
        self.after.push(if now.is_empty() {
            "no new matching process".to_owned()
        } else {
            format!("running: {}", now.join("; "))
        });
        self.healthy = Some(!now.is_empty());
    }

    /// The stopped pids (`old`; those still running: `left`), for a restart by pid: healthy
    /// once they are gone. Nothing stopped is no verdict.
    fn stopped(&mut self, old: &[i32], left: &[i32]) {
        if old.is_empty() {
            self.after.push("nothing was stopped".to_owned());
            return;
        }
        if left.is_empty() {
            let pids: Vec<String> = old.iter().map(i32::to_string).collect();
            self.after.push(format!("pid {} gone", pids.join(", ")));
            self.healthy = Some(self.healthy.unwrap_or(true));
        } else {
            self.after.push(format!("still running: {left:?}"));
            self.healthy = Some(false);
        }
    }

    /// A check that could not be made: unhealthy.
    fn failed(&mut self, why: String) {
        self.after.push(why);
        self.healthy = Some(false);
    }

    fn port(&mut self, port: u16, answers: bool) {
        let word = if answers {
            "answers"
        } else {
            "does not answer"
        };
        self.after.push(format!("port {port} {word}"));
        self.healthy = Some(self.healthy.unwrap_or(true) && answers);
    }

    fn probe(self) -> Probe {
        Probe {
            after: self.after.join("; "),
            healthy: self.healthy,
            ..Probe::default()
        }
    }
}

/// A started transient unit that failed says so in the probe: its state, exit status and
/// last journal lines (a unit that is running, or exited 0 after daemonizing, is no news).
async fn unit_failed(ctx: &Ctx, unit: &str, probe: &mut Probe) {
    use super::restart_service::{journal_argv, show_argv};
    let show = ctx.cmd(&show_argv(unit)).await;
    let get = |k: &str| {
        show.stdout
            .lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .map(str::trim)
    };
    if get("ActiveState") != Some("failed") {
        return;
    }
    probe.after = format!("{}; {unit} failed", probe.after);
    probe.healthy = Some(false);
    probe.exit_status = get("ExecMainStatus").and_then(|s| s.parse().ok());
    let journal = ctx.cmd(&journal_argv(unit)).await;
    probe.stderr = super::last_lines(journal.stdout.trim(), 20);
}

/// Whether 127.0.0.1:`port` accepts a TCP connection within a second.
pub async fn port_answers(port: u16) -> bool {
    matches!(
        tokio::time::timeout(
            std::time::Duration::from_secs(1),
            tokio::net::TcpStream::connect(("127.0.0.1", port))
        )
        .await,
        Ok(Ok(_))
    )
}

impl RestartProcess {
    /// The processes this action is about, from a process list.
    fn select<'p>(&self, procs: &'p [RemoteProc], pid: Option<i32>) -> Vec<&'p RemoteProc> {
        procs
            .iter()
            .filter(|p| p.pid > 1 && p.alive() && !p.cmdline.is_empty())
            .filter(|p| {
                selected(
                    self.pattern.as_ref(),
                    pid,
                    self.name.as_deref(),
                    p.pid,
                    &p.comm,
                    &p.cmdline,
                )
            })
            .collect()
    }

    async fn run_remote(&self, ctx: &Ctx, ssh: &SshHost) -> Done {
        let mut d = Done::default();
        let r = remote::call::<RemoteProc>(ctx, ssh, &Call::Procs).await;
        d.commands.push(r.argv);
        let all = match r.rows {
            Ok(all) => all,
            Err(e) => {
                d.before = "could not list the processes".into();
                d.stderr = e;
                d.exit_status = r.code;
                return d;
            }
        };
        let already: Vec<i32> = self.select(&all, None).iter().map(|p| p.pid).collect();
        if let Ok(mut b) = self.before.lock() {
            *b = already;
        }
        let procs = self.select(&all, self.pid);
        let described: Vec<String> = procs.iter().map(|p| p.describe()).collect();
        d.before = before(&described);
        if let Some(why) = too_many(procs.len(), self.max_matches) {
            d.refuse(why);
            return d;
        }
        let pids: Vec<i32> = procs.iter().map(|p| p.pid).collect();
        if let Ok(mut s) = self.stopped.lock() {
            *s = pids.clone();
        }
        let mut did = Vec::new();
        d.ok = true;
        if !pids.is_empty() {
            let r = remote::stop(ctx, ssh, &procs).await;
            d.commands.push(r.argv);
            match r.rows {
                Ok(rows) => {
                    did.extend(rows.iter().map(|s| format!("pid {}: {}", s.pid, s.result)));
                    if !all_stopped(rows.iter().map(|s| s.result.as_str())) {
                        // As locally: no second instance beside one that still runs.
                        d.ok = false;
                        d.stderr = "a process could not be stopped".into();
                        if !self.start.is_empty() {
                            did.push(format!("did not start {:?}", self.start.join(" ")));
                        }
                    }
                }
                Err(e) => {
                    d.ok = false;
                    d.stderr = e;
                    did.push(format!("could not stop {pids:?}"));
                }
            }
        }
        if !self.start.is_empty() && d.ok {
            let r = remote::call::<Started>(ctx, ssh, &Call::Start(&self.start)).await;
            d.commands.push(r.argv);
            d.exit_status = r.code;
            match r.rows.map(|s| s.first().map(|s| s.pid)) {
                Ok(Some(pid)) => {
                    did.push(format!("started {:?} as pid {pid}", self.start.join(" ")))
                }
                Ok(None) => {
                    d.ok = false;
                    did.push(format!(
                        "could not start {:?}: no pid",
                        self.start.join(" ")
                    ));
                }
                Err(e) => {
                    d.ok = false;
                    d.stderr = e;
                    did.push(format!("could not start {:?}", self.start.join(" ")));
                }
            }
        } else if self.start.is_empty() && pids.is_empty() {
            did.push("nothing to stop and no start command".into());
            d.ok = false;
        }
        d.did = did.join("; ");
        d
    }

    async fn probe_remote(&self, ctx: &Ctx, ssh: &SshHost, old: &[i32]) -> Probe {
        let earlier = self.before.lock().map(|s| s.clone()).unwrap_or_default();
        let mut v = Verdict::default();
        if self.pattern.is_some() || self.name.is_some() || self.pid.is_some() {
            let r = remote::call::<RemoteProc>(ctx, ssh, &Call::Procs).await;
            match r.rows {
                Ok(all) => {
                    if self.pattern.is_some() || self.name.is_some() {
                        let now: Vec<String> = self
                            .select(&all, None)
                            .into_iter()
                            .filter(|p| !old.contains(&p.pid) && !earlier.contains(&p.pid))
                            .map(RemoteProc::describe)
                            .collect();
                        v.processes(&now);
                    }
                    if self.pattern.is_none() {
                        let left: Vec<i32> = old
                            .iter()
                            .copied()
                            .filter(|pid| all.iter().any(|p| p.pid == *pid && p.alive()))
                            .collect();
                        v.stopped(old, &left);
                    }
                }
                Err(e) => v.failed(format!("could not list the processes: {e}")),
            }
        }
        if let Some(port) = self.port {
            let r = remote::call::<PortOpen>(ctx, ssh, &Call::PortOpen(port)).await;
            let answers = r.rows.ok().and_then(|r| r.first().map(|p| p.open)) == Some(true);
            v.port(port, answers);
        }
        v.probe()
    }
}

#[cfg(test)]
mod tests {
    /// A started service outlives the alerter's end of its stderr pipe: it writes to stderr
    /// after the alerter (here: the runtime that drained it) is gone, and goes on.
    #[test]
    fn a_started_process_survives_the_alerter_closing_its_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let alive = dir.path().join("alive");
        let script = format!(
            "sleep 0.5; echo one >&2; echo two >&2; touch {}",
            alive.display()
        );
        let argv: Vec<String> = vec!["/bin/sh".into(), "-c".into(), script];
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (pid, _watch) = rt.block_on(async { super::spawn_detached(&argv, 4096).unwrap() });
        // The alerter exits: the task draining stderr, and the pipe's read end, are gone.
        drop(rt);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !alive.exists() && super::super::alive(std::path::Path::new("/proc"), pid as i32) {
            assert!(std::time::Instant::now() < deadline, "still running");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(alive.exists(), "killed by its write to stderr");
    }

    /// A started service gets a login-like environment, not the alerter's (whose environment
    /// file holds its secrets). Cargo's variables stand in for them here.
    #[tokio::test]
    async fn a_started_process_does_not_inherit_the_alerters_environment() {
        assert!(
            std::env::var_os("CARGO_MANIFEST_DIR").is_some(),
            "run by cargo"
        );
        let argv: Vec<String> = ["/bin/sh", "-c", "env >&2"].map(String::from).into();
        let watch = super::spawn_detached(&argv, 1 << 16).unwrap().1;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let env = loop {
            if let Some((_, env)) = watch.exited() {
                break env;
            }
            assert!(std::time::Instant::now() < deadline, "did not exit");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
        assert!(!env.contains("CARGO_"), "{env}");
    }

    /// A started service does not run with the alerter's memory settings: the alerter turns
    /// transparent huge pages off for itself (`memory::tune`) and the flag survives exec.
    #[tokio::test]
    async fn a_started_process_gets_transparent_huge_pages_back() {
        let argv: Vec<String> = ["/bin/sh", "-c", "grep THP_enabled /proc/self/status >&2"]
            .map(String::from)
            .into();
        let watch = {
            let _only = crate::memory::thp_test_lock();
            rustix::thread::disable_transparent_huge_pages(true).unwrap();
            let started = super::spawn_detached(&argv, 4096);
            rustix::thread::disable_transparent_huge_pages(false).unwrap();
            started.unwrap().1
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let (code, stderr) = loop {
            if let Some(done) = watch.exited() {
                break done;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the process did not exit"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert_eq!((code, stderr.as_str()), (0, "THP_enabled:\t1"));
    }
}
