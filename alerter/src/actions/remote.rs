//! /proc on a monitored host: the actions that read the process table locally (`free_port`,
//! `restart_process`, `top_processes`) run `scripts/wk-remote-helper` over ssh when the host
//! is remote. The helper has fixed subcommands; the alerter builds its argv here from typed
//! values only (ports, pids, counts and durations are numbers; a program to start comes from
//! the rule, never from tags), ssh quotes each word for the remote shell ([`super::host`]),
//! and the helper checks every argument again and evaluates nothing. It answers in JSON
//! lines, parsed into the types below.
//!
//! Regular expressions (`restart_process`'s `pattern`) never leave the alerter: the helper
//! lists the processes and the alerter matches, so remote and local matching are the same
//! code.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::Ctx;
use super::host::{self, SshHost};

/// Where the helper is installed on monitored hosts unless `[[actions.ssh]] helper` says.
pub const DEFAULT_HELPER: &str = "/usr/local/bin/wk-remote-helper";

/// The helper's output kept per call (a process list with long command lines is large).
const MAX_OUTPUT: usize = 8 << 20;

/// One helper subcommand with its (typed) arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call<'a> {
    /// Every process but the helper's own session.
    Procs,
    /// Processes holding a TCP socket listening on the port.
    PortHolders(u16),
    /// The top `n` processes by CPU or resident memory.
    Top { by_memory: bool, n: usize },
    /// SIGTERM, `grace`, SIGKILL: each process named by its pid and start time (the helper
    /// signals a pid only while its process started then: a pid reused since the list, or
    /// during the grace time, is left alone).
    Stop {
        grace: Duration,
        procs: &'a [(i32, u64)],
    },
    /// Start a program (from the rule) detached.
    Start(&'a [String]),
    /// Whether 127.0.0.1:port accepts a connection.
    PortOpen(u16),
}

impl Call<'_> {
    /// The helper's argv (before ssh wraps and quotes it).
    pub fn argv(&self, helper: &Path) -> Vec<String> {
        let mut v = vec![helper.display().to_string()];
        match self {
            Call::Procs => v.push("procs".into()),
            Call::PortHolders(port) => v.extend(["port-holders".into(), port.to_string()]),
            Call::Top { by_memory, n } => v.extend([
                "top".into(),
                if *by_memory { "memory" } else { "cpu" }.into(),
                n.to_string(),
            ]),
            Call::Stop { grace, procs } => {
                v.extend(["stop".into(), grace.as_millis().to_string()]);
                v.extend(procs.iter().map(|(pid, start)| format!("{pid}:{start}")));
            }
            Call::Start(argv) => {
                v.extend(["start".into(), "--".into()]);
                v.extend(argv.iter().cloned());
            }
            Call::PortOpen(port) => v.extend(["port-open".into(), port.to_string()]),
        }
        v
    }
}

/// One process as the helper lists it (`procs`, `port-holders`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RemoteProc {
    pub pid: i32,
    pub ppid: i32,
    pub uid: u32,
    pub user: String,
    pub state: String,
    pub comm: String,
    pub cmdline: Vec<String>,
    /// When it started, in clock ticks after boot (field 22 of /proc/PID/stat): with the
    /// pid, it names one process (`stop` takes both).
    pub start_ticks: u64,
}

impl RemoteProc {
    /// The command line joined with spaces, or `[comm]` (as `wk_core::procs::Process`).
    pub fn command(&self) -> String {
        if self.cmdline.is_empty() {
            format!("[{}]", self.comm)
        } else {
            self.cmdline.join(" ")
        }
    }

    /// `pid 42 "python3 -m http.server" (user www-data)`, as for a local process.
    pub fn describe(&self) -> String {
        format!("pid {} {:?} (user {})", self.pid, self.command(), self.user)
    }

    /// Running (not a zombie).
    pub fn alive(&self) -> bool {
        self.state != "Z" && self.state != "X"
    }
}

/// One row of `top`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TopRow {
    pub pid: i32,
    pub user: String,
    pub cpu_pct: f64,
    pub mem_pct: f64,
    pub rss_bytes: u64,
    pub comm: String,
    pub cmdline: Vec<String>,
}

/// One line of `stop`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Stopped {
    pub pid: i32,
    pub result: String,
}

/// `start`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Started {
    pub pid: i32,
}

/// `port-open`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PortOpen {
    pub open: bool,
}

/// What one helper call gave.
#[derive(Debug, Clone)]
pub struct Reply<T> {
    /// The argv run (ssh and all), for the report.
    pub argv: Vec<String>,
    pub code: Option<i32>,
    /// The parsed lines, or why there are none (ssh or the helper failed, bad output).
    pub rows: Result<Vec<T>, String>,
}

/// Parses the helper's JSON lines.
pub fn parse<T: DeserializeOwned>(stdout: &str) -> Result<Vec<T>, String> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).map_err(|e| {
                format!(
                    "unexpected output from the remote helper ({e}): {}",
                    crate::notify::text::truncate(l, 200)
                )
            })
        })
        .collect()
}

/// Runs `call` on `ssh`'s host through its helper.
pub async fn call<T: DeserializeOwned>(ctx: &Ctx, ssh: &SshHost, call: &Call<'_>) -> Reply<T> {
    let argv = call.argv(&ssh.helper);
    let out = host::run(
        &super::Host::Ssh(ssh.clone()),
        &argv,
        ctx.timeout,
        MAX_OUTPUT,
    )
    .await;
    let rows = if out.ok() {
        parse(&out.stdout)
    } else {
        let mut why = out.excerpt(ctx.max_output);
        if out.code == Some(127) {
            why = format!(
                "{why} (is scripts/wk-remote-helper installed as {} on {}? [[actions.ssh]] helper sets the path; coreutils timeout must be on the PATH too)",
                ssh.helper.display(),
                ssh.address
            );
        }
        Err(why)
    };
    Reply {
        argv: out.argv,
        code: out.code,
        rows,
    }
}

/// SIGTERM, the context's grace time, SIGKILL: `procs` (as listed by the helper) on `ssh`'s
/// host (as [`super::stop_processes`] locally).
pub async fn stop(ctx: &Ctx, ssh: &SshHost, procs: &[&RemoteProc]) -> Reply<Stopped> {
    let procs: Vec<(i32, u64)> = procs.iter().map(|p| (p.pid, p.start_ticks)).collect();
    call(
        ctx,
        ssh,
        &Call::Stop {
            grace: ctx.grace,
            procs: &procs,
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssh() -> SshHost {
        SshHost {
            host: "web1".into(),
            address: "10.0.0.5".into(),
            user: "wk".into(),
            port: 22,
            key: "/k/id".into(),
            known_hosts: "/k/known".into(),
            connect_timeout: Duration::from_secs(5),
            helper: DEFAULT_HELPER.into(),
        }
    }

    /// The remote command is the helper, a fixed subcommand and typed values, each quoted
    /// for the remote shell; a program to start follows `--`.
    #[test]
    fn the_ssh_argv_is_the_helper_with_quoted_typed_arguments() {
        let s = ssh();
        let remote = |c: Call<'_>| {
            super::super::Host::Ssh(s.clone())
                .wrap(&c.argv(&s.helper))
                .pop()
                .unwrap()
        };
        assert_eq!(
            remote(Call::PortHolders(8080)),
            "'/usr/local/bin/wk-remote-helper' 'port-holders' '8080'"
        );
        assert_eq!(
            remote(Call::Stop {
                grace: Duration::from_secs(5),
                procs: &[(42, 1234), (43, 0)]
            }),
            "'/usr/local/bin/wk-remote-helper' 'stop' '5000' '42:1234' '43:0'"
        );
        assert_eq!(
            remote(Call::Top {
                by_memory: true,
                n: 5
            }),
            "'/usr/local/bin/wk-remote-helper' 'top' 'memory' '5'"
        );
        let start = ["/opt/app/run".to_owned(), "it's; $(id)".to_owned()];
        assert_eq!(
            remote(Call::Start(&start)),
            "'/usr/local/bin/wk-remote-helper' 'start' '--' '/opt/app/run' 'it'\\''s; $(id)'"
        );
        assert_eq!(
            remote(Call::Procs),
            "'/usr/local/bin/wk-remote-helper' 'procs'"
        );
    }

    #[test]
    fn helper_output_is_parsed_and_garbage_is_an_error() {
        let rows: Vec<RemoteProc> = parse(
            "{\"cmdline\":[\"nginx:\",\"master\"],\"comm\":\"nginx\",\"pid\":7,\"ppid\":1,\"start_ticks\":812,\"state\":\"S\",\"uid\":0,\"user\":\"root\"}\n\n",
        )
        .unwrap();
        assert_eq!(rows[0].describe(), "pid 7 \"nginx: master\" (user root)");
        let e = parse::<RemoteProc>("Welcome to web1!\n").unwrap_err();
        assert!(e.contains("unexpected output"), "{e}");
    }
}
