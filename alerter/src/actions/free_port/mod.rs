//! `free_port`: finds who holds a listening TCP port (from /proc: socket inode → process;
//! command, pid, user), stops it (SIGTERM, then SIGKILL after the grace time) and reports
//! who it was; never the alerter or its ancestors (as `restart_process`). On a remote host
//! the same through `wk-remote-helper` over ssh (`port-holders`, `stop`, `procs`; see
//! `remote.rs`), whose `stop` spares its own session.

use std::sync::Mutex;

use super::host::SshHost;
use super::remote::{self, Call, RemoteProc};
use super::{
    Action, ArgKind, ArgSpec, Args, BoxFuture, Ctx, Done, Host, Probe, alive, all_stopped,
    describe_process, stop_processes,
};

/// Registry entry.
pub const SPEC: super::ActionSpec = super::ActionSpec::new(
    "free_port",
    "Find the process holding a TCP port (command, pid, user), stop it and report who it was",
    &[ArgSpec::required("port", ArgKind::Port)],
    build,
);

fn build(a: &Args) -> Box<dyn Action> {
    Box::new(FreePort {
        port: a.get("port").and_then(|p| p.parse().ok()).unwrap_or(0),
        stopped: Mutex::new(Vec::new()),
    })
}

/// The action.
pub struct FreePort {
    pub port: u16,
    stopped: Mutex<Vec<i32>>,
}

impl Action for FreePort {
    fn run<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, Done> {
        Box::pin(async move {
            if let Host::Ssh(s) = &ctx.host {
                return self.run_remote(ctx, s).await;
            }
            let (procs, spared) = local_holders(ctx, self.port, std::process::id() as i32);
            let users = wk_core::procs::user_names(&ctx.passwd);
            let holders: Vec<(i32, String)> = procs
                .iter()
                .map(|p| (p.pid, describe_process(p, &users)))
                .collect();
            let mut d = Done {
                ok: true,
                ..Done::default()
            };
            if self.found(&mut d, &holders, &spared).is_none() {
                return d;
            }
            let started: Vec<(i32, u64)> = procs.iter().map(|p| (p.pid, p.start_ticks)).collect();
            let stopped = stop_processes(ctx, &started).await;
            d.ok = all_stopped(stopped.iter().map(|(_, how)| how.as_str()));
            d.did = stopped_text(&holders, stopped.iter().map(|(p, how)| (*p, how.as_str())));
            d
        })
    }

    fn probe<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, Probe> {
        Box::pin(async move {
            let old = self.stopped.lock().map(|s| s.clone()).unwrap_or_default();
            if let Host::Ssh(s) = &ctx.host {
                return self.probe_remote(ctx, s, &old).await;
            }
            let left: Vec<i32> = old
                .iter()
                .copied()
                .filter(|p| alive(&ctx.proc_root, *p))
                .collect();
            let users = wk_core::procs::user_names(&ctx.passwd);
            let now: Vec<String> = wk_core::procs::tcp_port_holders(&ctx.proc_root, self.port)
                .iter()
                .map(|p| describe_process(p, &users))
                .collect();
            self.verdict(&old, &left, &now)
        })
    }

    fn target(&self) -> Option<String> {
        Some(format!("port={}", self.port))
    }

    fn plan(&self) -> Vec<String> {
        vec![format!(
            "SIGTERM (then SIGKILL) the holder of TCP port {}",
            self.port
        )]
    }
}

/// The holders of `port` but `me` (the alerter) and its ancestors, and
/// the descriptions of those spared: `free_port 22` must not stop the sshd that holds the
/// alerter's session, nor a supervisor that listens.
fn local_holders(ctx: &Ctx, port: u16, me: i32) -> (Vec<wk_core::procs::Process>, Vec<String>) {
    let users = wk_core::procs::user_names(&ctx.passwd);
    let all = wk_core::procs::list(&ctx.proc_root).unwrap_or_default();
    let ours = super::restart_process::ours(&all, me);
    let (spared, holders): (Vec<_>, Vec<_>) =
        wk_core::procs::tcp_port_holders(&ctx.proc_root, port)
            .into_iter()
            .partition(|p| ours.contains(&p.pid));
    let spared = spared.iter().map(|p| describe_process(p, &users)).collect();
    (holders, spared)
}

/// `stopped <who>: <how>` for each stopped pid, `who` from the holders (pid, description).
fn stopped_text<'s>(
    holders: &[(i32, String)],
    stopped: impl Iterator<Item = (i32, &'s str)>,
) -> String {
    stopped
        .map(|(pid, how)| {
            let who = holders
                .iter()
                .find(|(p, _)| *p == pid)
                .map_or_else(|| format!("pid {pid}"), |(_, who)| who.clone());
            format!("stopped {who}: {how}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl FreePort {
    /// Says in `d` who holds the port (pid, description: local or remote alike; `spared`:
    /// the alerter and its ancestors, never stopped) and remembers the pids to stop for the
    /// probe; `None` when there are none (nothing to stop).
    fn found(
        &self,
        d: &mut Done,
        holders: &[(i32, String)],
        spared: &[String],
    ) -> Option<Vec<i32>> {
        let spared = if spared.is_empty() {
            String::new()
        } else {
            format!(
                " (not stopped: {}, the alerter or a parent of it)",
                spared.join("; ")
            )
        };
        if holders.is_empty() {
            d.before = if spared.is_empty() {
                format!("port {} is not held by any process", self.port)
            } else {
                format!(
                    "port {} held only by the alerter's own processes{spared}",
                    self.port
                )
            };
            d.did = "nothing to stop".into();
            d.nothing_to_do = true;
            return None;
        }
        let who: Vec<&str> = holders.iter().map(|(_, w)| w.as_str()).collect();
        d.before = format!("port {} held by {}{spared}", self.port, who.join("; "));
        let pids: Vec<i32> = holders.iter().map(|(p, _)| *p).collect();
        if let Ok(mut s) = self.stopped.lock() {
            *s = pids.clone();
        }
        Some(pids)
    }

    /// The probe's verdict: healthy once none of the stopped pids (`old`) runs (`left`: those
    /// still running); `now` describes who holds the port now. When nobody held the port,
    /// nothing was done and the probe has no verdict: the fault lies elsewhere, and only the
    /// rule's query can say whether it is gone.
    fn verdict(&self, old: &[i32], left: &[i32], now: &[String]) -> Probe {
        if old.is_empty() {
            let after = if now.is_empty() {
                format!("port {} was not held: nothing was stopped", self.port)
            } else {
                format!(
                    "port {} was not held when the action ran; now held by {}",
                    self.port,
                    now.join("; ")
                )
            };
            return Probe {
                after,
                healthy: None,
                ..Probe::default()
            };
        }
        let after = match (left.is_empty(), now.is_empty()) {
            (false, _) => format!("still running: {left:?}"),
            (true, true) => format!("port {} is free", self.port),
            (true, false) => format!("port {} now held by {}", self.port, now.join("; ")),
        };
        Probe {
            after,
            healthy: Some(left.is_empty()),
            ..Probe::default()
        }
    }

    async fn run_remote(&self, ctx: &Ctx, ssh: &SshHost) -> Done {
        let mut d = Done {
            ok: true,
            ..Done::default()
        };
        let r = remote::call::<RemoteProc>(ctx, ssh, &Call::PortHolders(self.port)).await;
        d.commands.push(r.argv);
        d.exit_status = r.code;
        let rows = match r.rows {
            Ok(rows) => rows,
            Err(e) => {
                d.ok = false;
                d.before = format!("could not list the holders of port {}", self.port);
                d.stderr = e;
                return d;
            }
        };
        let holders: Vec<(i32, String)> = rows.iter().map(|p| (p.pid, p.describe())).collect();
        // The helper spares its own session itself ("not signalled").
        let Some(pids) = self.found(&mut d, &holders, &[]) else {
            return d;
        };
        let r = remote::stop(ctx, ssh, &rows.iter().collect::<Vec<_>>()).await;
        d.commands.push(r.argv);
        d.exit_status = r.code;
        match r.rows {
            Ok(rows) => {
                d.ok = all_stopped(rows.iter().map(|s| s.result.as_str()));
                d.did = stopped_text(&holders, rows.iter().map(|s| (s.pid, s.result.as_str())));
            }
            Err(e) => {
                d.ok = false;
                d.did = format!("could not stop {pids:?}");
                d.stderr = e;
            }
        }
        d
    }

    async fn probe_remote(&self, ctx: &Ctx, ssh: &SshHost, old: &[i32]) -> Probe {
        let procs = remote::call::<RemoteProc>(ctx, ssh, &Call::Procs).await;
        let holders = remote::call::<RemoteProc>(ctx, ssh, &Call::PortHolders(self.port)).await;
        let (procs, holders) = match (procs.rows, holders.rows) {
            (Ok(p), Ok(h)) => (p, h),
            (Err(e), _) | (_, Err(e)) => {
                return Probe {
                    after: format!("could not look: {e}"),
                    healthy: Some(false),
                    ..Probe::default()
                };
            }
        };
        let left: Vec<i32> = old
            .iter()
            .copied()
            .filter(|pid| procs.iter().any(|p| p.pid == *pid && p.alive()))
            .collect();
        let now: Vec<String> = holders.iter().map(RemoteProc::describe).collect();
        self.verdict(old, &left, &now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `free_port` spared only the alerter's own pid: a port held by one of its ancestors
    /// (sshd holding the session the alerter was started from, a supervisor) was freed by
    /// stopping it. Here a python3 that listens, with a child standing for the alerter.
    #[test]
    fn the_alerters_ancestors_are_not_holders_to_stop() {
        use std::io::BufRead;
        let mut parent = std::process::Command::new("python3")
            .args([
                "-c",
                "import socket, subprocess\n\
                 s = socket.socket()\n\
                 s.bind(('127.0.0.1', 0))\n\
                 s.listen()\n\
                 c = subprocess.Popen(['sleep', '30'])\n\
                 print(s.getsockname()[1], c.pid, flush=True)\n\
                 c.wait()",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(parent.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let (port, child) = line.trim().split_once(' ').unwrap();
        let (port, child): (u16, i32) = (port.parse().unwrap(), child.parse().unwrap());
        let ctx = Ctx::local();
        let pid = parent.id() as i32;
        let stranger = local_holders(&ctx, port, std::process::id() as i32);
        let as_child = local_holders(&ctx, port, child);
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(child).unwrap(),
            rustix::process::Signal::KILL,
        );
        parent.wait().unwrap();
        assert_eq!(stranger.0.iter().map(|h| h.pid).collect::<Vec<_>>(), [pid]);
        assert!(as_child.0.is_empty(), "{as_child:?}");
        assert!(
            as_child.1[0].starts_with(&format!("pid {pid} ")),
            "{as_child:?}"
        );
    }
}
