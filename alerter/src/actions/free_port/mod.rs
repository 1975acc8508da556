//! `free_port`: finds who holds a listening TCP port (from /proc: socket inode → process;
//! command, pid, user), stops it (SIGTERM, then SIGKILL after the grace time) and reports
//! who it was. On a remote host the same through `wk-remote-helper` over ssh
//! (`port-holders`, `stop`, `procs`; see `remote.rs`).

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
            let users = wk_core::procs::user_names(&ctx.passwd);
            let me = std::process::id() as i32;
            let procs: Vec<_> = wk_core::procs::tcp_port_holders(&ctx.proc_root, self.port)
                .into_iter()
                .filter(|p| p.pid != me)
                .collect();
            let holders: Vec<(i32, String)> = procs
                .iter()
                .map(|p| (p.pid, describe_process(p, &users)))
                .collect();
            let mut d = Done {
                ok: true,
                ..Done::default()
            };
            if self.found(&mut d, &holders).is_none() {
                return d;
            }
            let started: Vec<(i32, u64)> = procs.iter().map(|p| (p.pid, p.start_ticks)).collect();
            let stopped = stop_processes(ctx, &started).await;
            d.ok = all_stopped(&stopped);
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
    /// Says in `d` who holds the port (pid, description: local or remote alike) and
    /// remembers their pids for the probe; `None` when nobody does (nothing to stop).
    fn found(&self, d: &mut Done, holders: &[(i32, String)]) -> Option<Vec<i32>> {
        if holders.is_empty() {
            d.before = format!("port {} is not held by any process", self.port);
            d.did = "nothing to stop".into();
            d.nothing_to_do = true;
            return None;
        }
        let who: Vec<&str> = holders.iter().map(|(_, w)| w.as_str()).collect();
        d.before = format!("port {} held by {}", self.port, who.join("; "));
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
        let holders: Vec<(i32, String)> = match r.rows {
            Ok(h) => h.iter().map(|p| (p.pid, p.describe())).collect(),
            Err(e) => {
                d.ok = false;
                d.before = format!("could not list the holders of port {}", self.port);
                d.stderr = e;
                return d;
            }
        };
        let Some(pids) = self.found(&mut d, &holders) else {
            return d;
        };
        let r = remote::stop(ctx, ssh, &pids).await;
        d.commands.push(r.argv);
        d.exit_status = r.code;
        match r.rows {
            Ok(rows) => {
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
