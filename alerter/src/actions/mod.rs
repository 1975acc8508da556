//! Recovery actions: what the alerter *does* about an alert, beside telling people.
//!
//! - [`Action`]: the contract. Arguments are validated at load ([`args`], typed: a tag value
//!   that does not fit its type is refused, never run) → [`Action::run`] (argv to a fixed
//!   command, locally or over ssh, [`host`]) → after a settle time [`Action::probe`] (process
//!   exists, port free / answers, unit active) → a structured [`ActionResult`].
//! - [`REGISTRY`]: every action, one line each; one folder per action with its code and
//!   `README.md` (and `testdata/` where it parses a tool's output). The folder name is what
//!   rules write in `action:`.
//! - [`guard`]: the guard rails (held-for time, N attempts per target per window, cooldown,
//!   one at a time per target, paging once when the budget is spent), persisted under
//!   `state_dir` so a restart keeps the budget and reports interrupted actions.
//! - [`engine`]: the consumer of alert events beside the notifiers: schedules, runs, verifies,
//!   sends the one report, writes the audit log.
//! - [`config`]: the `[actions]` and `[[actions.ssh]]` tables; [`rule`]: the `actions: [...]`
//!   rule setting.

use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod args;
pub mod audit;
pub mod config;
pub mod engine;
pub mod guard;
pub mod host;
pub mod record;
pub mod remote;
pub mod rule;

pub mod firewall_rules;
pub mod free_port;
pub mod restart_container;
pub mod restart_process;
pub mod restart_service;
pub mod run_script;
pub mod top_processes;

pub use args::{ArgKind, ArgSpec, Args, RawArg};
pub use config::ActionsConfig;
pub use engine::Engine;
pub use host::Host;
pub use rule::ActionRule;

/// A boxed future returned by the action methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What an action needs from the outside: where it runs and the host paths, as values.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub host: Host,
    /// `/proc` of the alerter's host (local actions).
    pub proc_root: PathBuf,
    /// `/etc/passwd` for user names.
    pub passwd: PathBuf,
    /// The operator scripts directory (`run_script`).
    pub scripts_dir: PathBuf,
    /// One command may take this long; then its process group is killed (over ssh: the
    /// remote `timeout` stops it on that host).
    pub timeout: Duration,
    /// How long a stopped process gets between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Output kept per command.
    pub max_output: usize,
    /// How started services and operator scripts run on this host.
    pub launch: Launch,
}

/// How local commands that must live outside the alerter run: a service `restart_process`
/// starts (`start`) and operator scripts (`run_script`). `[actions] launch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Launch {
    /// As the alerter's children: in its cgroup (stopping or restarting the alerter's unit
    /// kills them) and under its sandbox (no write+execute memory, its capability bounding
    /// set, read-only /proc/sys…). Right when the alerter runs outside systemd.
    #[default]
    Direct,
    /// As transient systemd services (`systemd-run`): their own cgroup, the system's
    /// defaults rather than the alerter's sandbox, their output in the journal.
    SystemdRun,
}

impl Ctx {
    /// A local context over the real `/proc` (tests, `wk-alerter test`).
    pub fn local() -> Ctx {
        Ctx {
            host: Host::Local,
            proc_root: "/proc".into(),
            passwd: "/etc/passwd".into(),
            scripts_dir: "/etc/watchkeeper/scripts".into(),
            timeout: Duration::from_secs(30),
            grace: Duration::from_secs(5),
            max_output: 4096,
            launch: Launch::Direct,
        }
    }

    /// Runs one command where the action runs.
    pub async fn cmd(&self, argv: &[&str]) -> host::CmdOutput {
        let argv: Vec<String> = argv.iter().map(|s| (*s).to_owned()).collect();
        host::run(&self.host, &argv, self.timeout, self.max_output).await
    }
}

/// What [`Action::run`] saw and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    /// What it found first (state, exit code, port holder, top processes).
    pub before: String,
    /// What it did, in words ("restarted nginx.service", "sent SIGTERM to pid 42 …").
    pub did: String,
    /// The main command's exit status (`None`: not run, killed, or no command).
    pub exit_status: Option<i32>,
    /// The end of stderr (or the error) of a failed command; journal lines for a unit.
    pub stderr: String,
    /// Whether the action did what it meant to (not yet whether the fault is gone).
    pub ok: bool,
    /// It found nothing to do (`free_port`: nobody held the port): nothing to verify, and
    /// no claim that it repaired anything (status `nothing_to_do`).
    pub nothing_to_do: bool,
    /// It refused once it saw the host (a pattern matching too many processes): nothing
    /// changed, no attempt spent, not tried again in the episode (status `refused`).
    pub refused: bool,
    /// The commands run, as argv.
    pub commands: Vec<Vec<String>>,
}

impl Done {
    /// Refuses: nothing done, `why` in the report (see [`Done::refused`]).
    pub fn refuse(&mut self, why: String) {
        self.refused = true;
        self.ok = false;
        self.did = "nothing".into();
        self.stderr = why;
    }

    /// Records the action's main command: its argv, its exit status and whether it succeeded.
    pub fn main_command(&mut self, o: &host::CmdOutput) {
        self.commands.push(o.argv.clone());
        self.exit_status = o.code;
        self.ok = o.ok();
    }
}

/// What [`Action::probe`] saw after the settle time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub after: String,
    /// `Some(true)`: healthy again; `None`: this action has no probe of its own.
    pub healthy: Option<bool>,
    /// The exit status of what the action started, when it has died since.
    pub exit_status: Option<i32>,
    /// The end of its stderr then.
    pub stderr: String,
}

/// An action ready to run: built from validated, rendered arguments.
pub trait Action: Send + Sync {
    /// Looks, acts, reports. Never panics; failures are in [`Done::ok`] / `stderr`.
    fn run<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, Done>;
    /// Looks again after the settle time. By default nothing to look at: a diagnosis changes
    /// nothing and is not verified.
    fn probe<'a>(&'a self, _ctx: &'a Ctx) -> BoxFuture<'a, Probe> {
        Box::pin(async { Probe::default() })
    }
    /// The commands it would run (dry run, `wk-alerter test`), as text.
    fn plan(&self) -> Vec<String>;
    /// Why it must not run on `ctx`'s host at all (checked before a dry run too): refused,
    /// reported, never run.
    fn refuse(&self, _ctx: &Ctx) -> Option<String> {
        None
    }
    /// What it acts on, in one canonical form, for the guard rails (budget, cooldown, one at
    /// a time): `nginx` and `nginx.service` are one unit; a restart by pid is of the program
    /// named, whose pid changes with every restart. `None`: the rendered arguments.
    fn target(&self) -> Option<String> {
        None
    }
}

/// One registry entry.
pub struct ActionSpec {
    /// `action: "<name>"`, the folder name.
    pub name: &'static str,
    pub description: &'static str,
    pub args: &'static [ArgSpec],
    /// At least one of these arguments must be given (e.g. pattern or pid); empty = none.
    pub one_of: &'static [&'static str],
    /// Builds the action; `args` fit [`ActionSpec::args`] already.
    pub build: fn(&Args) -> Box<dyn Action>,
    /// Reports on the host without repairing anything (top processes, firewall rules): runs
    /// once per firing episode, spends no attempt budget and is not verified.
    pub diagnosis: bool,
    /// (argument, others): when the argument takes `{{...}}` from the alert, one of the
    /// others must be written in the rule. A pid from a point names any process on the host;
    /// the rule must say which program it may be.
    pub templated_needs: Option<(&'static str, &'static [&'static str])>,
}

impl ActionSpec {
    /// A repair: changes the host, spends the attempt budget and is verified by its probe.
    pub const fn new(
        name: &'static str,
        description: &'static str,
        args: &'static [ArgSpec],
        build: fn(&Args) -> Box<dyn Action>,
    ) -> ActionSpec {
        ActionSpec {
            name,
            description,
            args,
            one_of: &[],
            build,
            diagnosis: false,
            templated_needs: None,
        }
    }

    /// The same as a diagnosis: reports on the host, changes nothing.
    pub const fn as_diagnosis(self) -> ActionSpec {
        ActionSpec {
            diagnosis: true,
            ..self
        }
    }

    /// The same, with at least one of the arguments `names` required.
    pub const fn one_of(self, names: &'static [&'static str]) -> ActionSpec {
        ActionSpec {
            one_of: names,
            ..self
        }
    }

    /// The same, where `arg` taken from the alert needs one of `others` written in the rule.
    pub const fn templated_needs(
        self,
        arg: &'static str,
        others: &'static [&'static str],
    ) -> ActionSpec {
        ActionSpec {
            templated_needs: Some((arg, others)),
            ..self
        }
    }
}

/// Every action, one line each.
pub static REGISTRY: &[ActionSpec] = &[
    firewall_rules::SPEC,
    free_port::SPEC,
    restart_container::SPEC,
    restart_process::SPEC,
    restart_service::SPEC,
    run_script::SPEC,
    top_processes::SPEC,
];

/// The registry entry of an action.
pub fn find(name: &str) -> Option<&'static ActionSpec> {
    REGISTRY.iter().find(|s| s.name == name)
}

/// The structured result of one action run: what message templates, the audit log and
/// `wk_actions` show.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActionResult {
    pub rule: String,
    pub alert_id: String,
    pub action: String,
    /// `name=value, …` of the rendered arguments.
    pub args: String,
    /// The alert's `host` tag (empty when none).
    pub host: String,
    /// `local` or `user@address:port`.
    pub ran_on: String,
    /// `ran`, `nothing_to_do`, `diagnosed`, `dry_run`, `refused` (bad argument), `gave_up`
    /// (budget spent), `interrupted`.
    pub status: String,
    pub before: String,
    pub did: String,
    pub after: String,
    pub exit_status: Option<i32>,
    pub stderr: String,
    pub recovered: bool,
    pub commands: Vec<Vec<String>>,
    /// Attempt number within the window (1-based) and the budget.
    pub attempt: u32,
    pub max_attempts: u32,
    /// ns since the epoch: fault (first evaluation that saw it), detection (the alert fired),
    /// action start and end, verification.
    pub fault_ns: i64,
    pub detected_ns: i64,
    pub started_ns: i64,
    pub finished_ns: i64,
    pub verified_ns: i64,
}

impl ActionResult {
    /// What the action found, did and saw after, under the names the report and
    /// `wk_actions` give them (`found`, `did`, `after`); empty ones left out.
    pub fn findings(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("found", &self.before),
            ("did", &self.did),
            ("after", &self.after),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k, v.as_str()))
    }

    /// The fields an event (report, `wk_actions` point) carries.
    pub fn fields(&self) -> crate::model::Fields {
        use crate::model::Value;
        let ms = |a: i64, b: i64| Value::Int(((b - a).max(0)) / 1_000_000);
        let mut f = crate::model::Fields::new();
        f.insert("action".into(), Value::Str(self.action.clone()));
        f.insert("args".into(), Value::Str(self.args.clone()));
        f.insert("status".into(), Value::Str(self.status.clone()));
        f.insert("before".into(), Value::Str(self.before.clone()));
        f.insert("did".into(), Value::Str(self.did.clone()));
        f.insert("after".into(), Value::Str(self.after.clone()));
        f.insert("stderr".into(), Value::Str(self.stderr.clone()));
        f.insert("recovered".into(), Value::Bool(self.recovered));
        f.insert(
            "exit_status".into(),
            Value::Int(self.exit_status.map_or(-1, i64::from)),
        );
        f.insert("attempt".into(), Value::Int(self.attempt.into()));
        f.insert("detection_ms".into(), ms(self.fault_ns, self.detected_ns));
        f.insert("action_ms".into(), ms(self.fault_ns, self.started_ns));
        f.insert("recovery_ms".into(), ms(self.fault_ns, self.verified_ns));
        f
    }
}

/// Whether `pid` still runs (not a zombie) under `proc_root`.
pub(crate) fn alive(proc_root: &std::path::Path, pid: i32) -> bool {
    wk_core::procs::get(proc_root, pid).is_some_and(|p| p.state != 'Z' && p.state != 'X')
}

/// Whether the process `pid` that started at `start` (clock ticks since boot) still runs:
/// another process under the same pid is not it.
fn still_runs(proc_root: &std::path::Path, pid: i32, start: u64) -> bool {
    wk_core::procs::get(proc_root, pid)
        .is_some_and(|p| p.start_ticks == start && p.state != 'Z' && p.state != 'X')
}

/// A handle on the process `pid` that started at `start`: a pidfd, so that every signal
/// reaches that process and no other, even once it has exited and its pid is reused. `Err`
/// with the words for the report when it is gone or cannot be had.
fn hold(proc_root: &std::path::Path, pid: i32, start: u64) -> Result<OwnedFd, String> {
    use rustix::process::{Pid, PidfdFlags, pidfd_open};
    let Some(p) = Pid::from_raw(pid).filter(|_| pid > 1) else {
        return Err(format!("NOT stopped: pid {pid} is not one to signal"));
    };
    let fd = match pidfd_open(p, PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::SRCH) => return Err("gone before SIGTERM".into()),
        Err(e) => return Err(format!("NOT stopped: cannot open the process ({e})")),
    };
    // The pidfd names whatever runs under the pid now: it is ours only if that is still the
    // process that was found.
    match wk_core::procs::get(proc_root, pid) {
        Some(now) if now.start_ticks == start => Ok(fd),
        Some(_) => Err("gone before SIGTERM (its pid now names another process)".into()),
        None => Err("gone before SIGTERM".into()),
    }
}

/// SIGTERM, then up to `grace` for the processes to exit, then SIGKILL. Each process is given
/// as (pid, start time in clock ticks, as [`wk_core::procs::Process::start_ticks`]) and held
/// by a pidfd from before the first signal: a process that exits meanwhile and whose pid is
/// reused is never signalled in its place. Returns a description per process: "exited
/// after SIGTERM" / "SIGKILL after 5s" / "NOT stopped: …" (the alerter may not signal it).
pub(crate) async fn stop_processes(ctx: &Ctx, procs: &[(i32, u64)]) -> Vec<(i32, String)> {
    use rustix::process::{Signal, pidfd_send_signal};
    let mut out = Vec::new();
    let mut held = Vec::new();
    for &(pid, start) in procs {
        let fd = match hold(&ctx.proc_root, pid, start) {
            Ok(fd) => fd,
            Err(how) => {
                out.push((pid, how));
                continue;
            }
        };
        match pidfd_send_signal(&fd, Signal::TERM) {
            Ok(()) => {
                out.push((pid, String::new()));
                held.push((out.len() - 1, start, fd));
            }
            Err(rustix::io::Errno::SRCH) => out.push((pid, "gone before SIGTERM".into())),
            // Still running: a failure, not "gone" (the alerter lacks CAP_KILL for another
            // user's process, see docs/packaging.md).
            Err(e) => out.push((pid, format!("NOT stopped: SIGTERM refused ({e})"))),
        }
    }
    let deadline = tokio::time::Instant::now() + ctx.grace;
    loop {
        held.retain(|(i, start, _)| {
            let runs = still_runs(&ctx.proc_root, out[*i].0, *start);
            if !runs {
                out[*i].1 = "exited after SIGTERM".into();
            }
            runs
        });
        if held.is_empty() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let mut killed = Vec::new();
            for (i, start, fd) in held {
                out[i].1 = match pidfd_send_signal(&fd, Signal::KILL) {
                    Ok(()) => {
                        killed.push((i, start));
                        format!(
                            "SIGKILL after {} (ignored SIGTERM)",
                            crate::template::format_duration(ctx.grace)
                        )
                    }
                    Err(rustix::io::Errno::SRCH) => "exited after SIGTERM".into(),
                    Err(e) => format!("NOT stopped: SIGKILL refused ({e})"),
                };
            }
            // Gone before anything is started in its place (its port released): a process
            // stuck in the kernel (state D) dies only when it leaves it.
            let gone_by = tokio::time::Instant::now() + KILL_WAIT;
            while killed
                .iter()
                .any(|(i, start)| still_runs(&ctx.proc_root, out[*i].0, *start))
            {
                if tokio::time::Instant::now() >= gone_by {
                    for (i, start) in &killed {
                        if still_runs(&ctx.proc_root, out[*i].0, *start) {
                            out[*i].1 = format!(
                                "NOT stopped: still running {} after SIGKILL",
                                crate::template::format_duration(KILL_WAIT)
                            );
                        }
                    }
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    out
}

/// How long a process SIGKILLed may take to be gone before the stop counts as failed.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Whether every process of a stop's result was stopped, was gone already, or was spared on
/// purpose: locally [`stop_processes`] says "NOT stopped: …", the remote helper "not
/// signalled: permission denied" (its own session, also "not signalled", is spared).
pub(crate) fn all_stopped<'a>(how: impl IntoIterator<Item = &'a str>) -> bool {
    !how.into_iter()
        .any(|h| h.starts_with("NOT stopped") || h == "not signalled: permission denied")
}

/// `pid 42 "python3 -m http.server" (user www-data)`.
pub(crate) fn describe_process(
    p: &wk_core::procs::Process,
    users: &std::collections::HashMap<u32, String>,
) -> String {
    let user = users
        .get(&p.uid)
        .cloned()
        .unwrap_or_else(|| p.uid.to_string());
    format!("pid {} {:?} (user {user})", p.pid, p.command())
}

/// The last `n` lines of `text`.
pub(crate) fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::path::Path;

    /// A process that ignores SIGTERM is killed after the grace time, and is gone when the
    /// stop returns.
    #[tokio::test]
    async fn a_process_ignoring_sigterm_is_killed_and_gone() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "trap '' TERM; while :; do sleep 1; done"])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        std::thread::sleep(Duration::from_millis(200));
        let start = wk_core::procs::get(Path::new("/proc"), pid)
            .unwrap()
            .start_ticks;
        let mut ctx = Ctx::local();
        ctx.grace = Duration::from_millis(300);
        let out = stop_processes(&ctx, &[(pid, start)]).await;
        assert_eq!(out[0].1, "SIGKILL after 300ms (ignored SIGTERM)");
        assert!(!still_runs(Path::new("/proc"), pid, start));
        assert_eq!(child.wait().unwrap().signal(), Some(9));
    }

    #[test]
    fn a_stop_refused_is_not_stopped_a_spared_one_is_no_failure() {
        assert!(all_stopped(["exited after SIGTERM", "gone (pid reused)"]));
        assert!(all_stopped(["not signalled: the helper's own session"]));
        assert!(!all_stopped(["NOT stopped: SIGTERM refused (EPERM)"]));
        assert!(!all_stopped([
            "exited after SIGTERM",
            "not signalled: permission denied"
        ]));
    }

    /// The guard rails go by what is acted on, not how the rule spelled it.
    #[test]
    fn one_target_however_spelled() {
        let target = |action: &str, args: &[(&str, &str)]| {
            let a = Args {
                one: args
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                lists: Default::default(),
            };
            let spec = find(action).unwrap();
            (spec.build)(&a).target().unwrap_or_else(|| a.summary())
        };
        assert_eq!(
            target("restart_service", &[("unit", "nginx")]),
            target("restart_service", &[("unit", "nginx.service")])
        );
        // By pid: the program, whatever its pid (it changes with every restart) or the
        // other arguments.
        assert_eq!(
            target("restart_process", &[("pid", "41"), ("name", "myapp")]),
            target(
                "restart_process",
                &[("pid", "42"), ("name", "myapp"), ("max_matches", "1")]
            )
        );
        assert_ne!(
            target("restart_process", &[("pid", "41"), ("name", "myapp")]),
            target("restart_process", &[("pid", "41"), ("name", "other")])
        );
        assert_eq!(
            target("free_port", &[("port", "8080")]),
            target("free_port", &[("port", "08080")])
        );
    }

    #[tokio::test]
    async fn a_process_whose_pid_names_another_is_not_signalled() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let start = wk_core::procs::get(Path::new("/proc"), pid)
            .unwrap()
            .start_ticks;
        let ctx = Ctx::local();
        // As if `sleep` had been found earlier and its pid given since to this one.
        let out = stop_processes(&ctx, &[(pid, start + 1)]).await;
        assert_eq!(
            out[0].1,
            "gone before SIGTERM (its pid now names another process)"
        );
        assert!(child.try_wait().unwrap().is_none(), "not signalled");
        let out = stop_processes(&ctx, &[(pid, start)]).await;
        assert_eq!(out[0].1, "exited after SIGTERM");
        assert!(all_stopped(out.iter().map(|(_, h)| h.as_str())));
        assert!(child.wait().unwrap().signal().is_some());
    }
}
