//! `top_processes`: reports the top `n` processes by CPU (sampled over half a second from
//! /proc) or by memory (RSS) — command, pid, user, % — changing nothing. Over ssh the same
//! figures from `wk-remote-helper top cpu|memory N` (`remote.rs`).

use std::collections::HashMap;
use std::time::Duration;

use super::remote::{self, Call, TopRow};
use super::{Action, ArgKind, ArgSpec, Args, BoxFuture, Ctx, Done, Host};

/// Registry entry.
pub const SPEC: super::ActionSpec = super::ActionSpec::new(
    "top_processes",
    "Report the top N processes by CPU or memory (command, pid, user, %); changes nothing",
    &[
        ArgSpec::optional("by", ArgKind::OneOf(&["cpu", "memory"])),
        ArgSpec::optional("n", ArgKind::Count),
    ],
    build,
)
.as_diagnosis();

fn build(a: &Args) -> Box<dyn Action> {
    Box::new(TopProcesses {
        by_memory: a.get("by") == Some("memory"),
        n: a.get("n").and_then(|n| n.parse().ok()).unwrap_or(5),
    })
}

/// The action.
pub struct TopProcesses {
    pub by_memory: bool,
    pub n: usize,
}

/// Top `n` by CPU % over `interval`, from two reads of the process table.
pub async fn top_local(ctx: &Ctx, by_memory: bool, n: usize, interval: Duration) -> Vec<String> {
    let users = wk_core::procs::user_names(&ctx.passwd);
    let first = wk_core::procs::list(&ctx.proc_root).unwrap_or_default();
    let mem_total = std::fs::read_to_string(ctx.proc_root.join("meminfo"))
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024);
    let mut rows: Vec<(f64, String)> = if by_memory {
        first
            .iter()
            .map(|p| {
                let pct = if mem_total > 0 {
                    p.rss_bytes as f64 * 100.0 / mem_total as f64
                } else {
                    0.0
                };
                (
                    p.rss_bytes as f64,
                    format!("{:.1}% mem ({} MiB)", pct, p.rss_bytes >> 20),
                    p,
                )
            })
            .map(|(k, what, p)| (k, line(p, &users, &what)))
            .collect()
    } else {
        tokio::time::sleep(interval).await;
        let before: HashMap<i32, u64> = first.iter().map(|p| (p.pid, p.cpu_ticks)).collect();
        let second = wk_core::procs::list(&ctx.proc_root).unwrap_or_default();
        let hz = wk_core::procs::ticks_per_second().max(1) as f64;
        second
            .iter()
            .map(|p| {
                let d = p
                    .cpu_ticks
                    .saturating_sub(*before.get(&p.pid).unwrap_or(&p.cpu_ticks));
                let pct = d as f64 / hz / interval.as_secs_f64() * 100.0;
                (pct, line(p, &users, &format!("{pct:.1}% cpu")))
            })
            .collect()
    };
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    rows.into_iter().take(n).map(|r| r.1).collect()
}

fn line(p: &wk_core::procs::Process, users: &HashMap<u32, String>, what: &str) -> String {
    let user = users
        .get(&p.uid)
        .cloned()
        .unwrap_or_else(|| p.uid.to_string());
    let mut cmd = p.command();
    if cmd.len() > 80 {
        cmd = crate::notify::text::truncate(&cmd, 80);
    }
    format!("{what} pid {} user {user}: {cmd}", p.pid)
}

/// A helper row in the local format.
fn remote_line(r: &TopRow, by_memory: bool) -> String {
    let what = if by_memory {
        format!("{:.1}% mem ({} MiB)", r.mem_pct, r.rss_bytes >> 20)
    } else {
        format!("{:.1}% cpu", r.cpu_pct)
    };
    let cmd = if r.cmdline.is_empty() {
        format!("[{}]", r.comm)
    } else {
        r.cmdline.join(" ")
    };
    format!(
        "{what} pid {} user {}: {}",
        r.pid,
        r.user,
        crate::notify::text::truncate(&cmd, 80)
    )
}

impl Action for TopProcesses {
    fn run<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, Done> {
        Box::pin(async move {
            let mut d = Done {
                ok: true,
                ..Done::default()
            };
            let rows = match &ctx.host {
                Host::Local => {
                    top_local(ctx, self.by_memory, self.n, Duration::from_millis(500)).await
                }
                Host::Ssh(s) => {
                    let call = Call::Top {
                        by_memory: self.by_memory,
                        n: self.n,
                    };
                    let r = remote::call::<TopRow>(ctx, s, &call).await;
                    d.commands.push(r.argv);
                    d.exit_status = r.code;
                    match r.rows {
                        Ok(rows) => rows
                            .iter()
                            .take(self.n)
                            .map(|r| remote_line(r, self.by_memory))
                            .collect(),
                        Err(e) => {
                            d.ok = false;
                            d.stderr = e;
                            Vec::new()
                        }
                    }
                }
            };
            d.before = format!(
                "top {} by {}:\n{}",
                self.n,
                if self.by_memory { "memory" } else { "cpu" },
                rows.join("\n")
            );
            d.did = "reported (nothing changed)".into();
            d
        })
    }

    fn plan(&self) -> Vec<String> {
        vec![format!(
            "list the top {} processes by {}",
            self.n,
            if self.by_memory { "memory" } else { "cpu" }
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A busy loop is among the top CPU users. Not necessarily first: the test suite's own
    /// threads and a parallel build may be busier on 2 cores (a load of 10 put 15 ahead of it).
    #[tokio::test]
    async fn a_busy_child_is_among_the_top_cpu_users() {
        let mut child = std::process::Command::new("python3")
            .args(["-c", "while True: pass"])
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rows = top_local(&Ctx::local(), false, 40, Duration::from_millis(500)).await;
        let _ = child.kill();
        let _ = child.wait();
        let pid = format!("pid {} ", child.id());
        assert!(rows.iter().any(|r| r.contains(&pid)), "{rows:?}");
    }
}
