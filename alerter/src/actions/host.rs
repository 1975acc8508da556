//! Where an action runs: on the alerter's host, or on the monitored host over ssh (the
//! system client: `BatchMode=yes`, key auth only, `StrictHostKeyChecking=yes` against a
//! known_hosts file). Commands are argv; over ssh the remote side joins the words into one
//! command line for its shell, so each element is single-quoted here ([`shell_quote`]) and
//! arrives as exactly one argument. Values were validated before (`args.rs`) anyway.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::notify::exec::{Program, run_program};
use crate::notify::text::truncate;

/// One `[[actions.ssh]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshHost {
    /// The alert's `host` tag value this entry is for.
    pub host: String,
    /// Where to connect (default: `host`).
    pub address: String,
    pub user: String,
    pub port: u16,
    /// Private key file (`-i`, `IdentitiesOnly=yes`).
    pub key: PathBuf,
    /// known_hosts file; empty = ssh's default (`~/.ssh/known_hosts`).
    pub known_hosts: PathBuf,
    pub connect_timeout: Duration,
    /// `scripts/wk-remote-helper` on that host (`free_port`, `restart_process`,
    /// `top_processes` read its /proc through it).
    pub helper: PathBuf,
}

/// Where one action runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Local,
    Ssh(SshHost),
}

impl Host {
    /// `local` or `user@address:port`.
    pub fn describe(&self) -> String {
        match self {
            Host::Local => "local".into(),
            Host::Ssh(s) => format!("{}@{}:{}", s.user, s.address, s.port),
        }
    }

    /// The argv that runs `argv` on this host.
    pub fn wrap(&self, argv: &[String]) -> Vec<String> {
        match self {
            Host::Local => argv.to_vec(),
            Host::Ssh(s) => {
                // -F /dev/null: neither ~/.ssh/config nor /etc/ssh/ssh_config can add a
                // ProxyCommand, another identity or a weaker host-key policy; -T: no tty.
                let mut v: Vec<String> =
                    vec!["ssh".into(), "-F".into(), "/dev/null".into(), "-T".into()];
                let mut o = |opt: String| {
                    v.push("-o".into());
                    v.push(opt);
                };
                o("BatchMode=yes".into());
                o("StrictHostKeyChecking=yes".into());
                o("PasswordAuthentication=no".into());
                o("KbdInteractiveAuthentication=no".into());
                o("IdentitiesOnly=yes".into());
                o(format!(
                    "ConnectTimeout={}",
                    s.connect_timeout.as_secs().max(1)
                ));
                if !s.known_hosts.as_os_str().is_empty() {
                    // Only the configured file vouches for hosts.
                    o(format!("UserKnownHostsFile={}", s.known_hosts.display()));
                    o("GlobalKnownHostsFile=/dev/null".into());
                }
                v.extend([
                    "-i".into(),
                    s.key.display().to_string(),
                    "-p".into(),
                    s.port.to_string(),
                    "-l".into(),
                    s.user.clone(),
                    "--".into(),
                    s.address.clone(),
                ]);
                v.push(
                    argv.iter()
                        .map(|a| shell_quote(a))
                        .collect::<Vec<_>>()
                        .join(" "),
                );
                v
            }
        }
    }
}

/// Quotes one word for a POSIX shell: `'…'`, with `'` written as `'\''`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// What one command did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CmdOutput {
    /// The argv as run (with the ssh wrapper).
    pub argv: Vec<String>,
    /// Exit code; `None` when killed by a signal, timed out or not started.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Why it did not run or finish (not found, timeout, killed by signal N).
    pub error: Option<String>,
    pub took: Duration,
}

impl CmdOutput {
    /// Exit status 0.
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// `ok` when it exited 0, else why not (the error, or the exit status).
    pub fn outcome(&self, ok: &str) -> String {
        if self.ok() {
            ok.to_owned()
        } else {
            self.error
                .clone()
                .unwrap_or_else(|| format!("exit status {:?}", self.code))
        }
    }

    /// stderr, or stdout when stderr is empty, or the error, trimmed and shortened.
    pub fn excerpt(&self, max: usize) -> String {
        let t = [
            self.stderr.trim(),
            self.stdout.trim(),
            self.error.as_deref().unwrap_or(""),
        ]
        .into_iter()
        .find(|s| !s.is_empty())
        .unwrap_or("");
        truncate(t, max)
    }
}

/// How long after its SIGTERM a remote command past its time is SIGKILLed (`timeout -k`).
const REMOTE_KILL_AFTER: Duration = Duration::from_secs(2);

/// How much longer than a remote command's time (and ssh's `connect_timeout`) the local ssh
/// client is waited for: the remote SIGKILL, authentication, the network.
const SSH_SLACK: Duration = Duration::from_secs(5);

/// `argv` under coreutils `timeout` on the remote host: SIGTERM after `limit`, SIGKILL
/// [`REMOTE_KILL_AFTER`] later. Killing the local ssh client would not stop it: without a
/// tty (`-T`) nothing sends the remote command a SIGHUP.
fn remote_deadline(argv: &[String], limit: Duration) -> Vec<String> {
    let secs = |d: Duration| format!("{}.{:03}s", d.as_secs(), d.subsec_millis());
    let mut v = vec![
        "timeout".to_owned(),
        "-k".to_owned(),
        secs(REMOTE_KILL_AFTER),
        secs(limit),
    ];
    v.extend(argv.iter().cloned());
    v
}

/// Runs `argv` on `host` with `timeout`. Locally its process group is killed when it
/// expires; over ssh the remote command runs under [`remote_deadline`] and the ssh client
/// gets `connect_timeout` and [`SSH_SLACK`] more before it is killed.
pub async fn run(host: &Host, argv: &[String], timeout: Duration, max_output: usize) -> CmdOutput {
    let (argv, wait) = match host {
        Host::Local => (argv.to_vec(), timeout),
        Host::Ssh(s) => (
            host.wrap(&remote_deadline(argv, timeout)),
            timeout + s.connect_timeout + SSH_SLACK,
        ),
    };
    let remote = matches!(host, Host::Ssh(_));
    let started = Instant::now();
    let env: Vec<(String, String)> = vec![("LC_ALL".into(), "C".into())];
    let fut = run_program(Program {
        argv: &argv,
        env: &env,
        inherit_env: false,
        stdin: Vec::new(),
        max_output_bytes: max_output,
    });
    let mut out = CmdOutput {
        argv: argv.clone(),
        ..Default::default()
    };
    let limit = crate::template::format_duration(timeout);
    match tokio::time::timeout(wait, fut).await {
        Ok(Ok(c)) => {
            out.code = c.status.code();
            if out.code.is_none() {
                out.error = Some(c.how());
            }
            // timeout(1)'s status after SIGTERM (124) or SIGKILL (128 + 9).
            let past = out.code == Some(124) || out.code == Some(137);
            if remote && past && started.elapsed() >= timeout {
                out.error = Some(format!(
                    "timed out after {limit} (stopped on the remote host by timeout)"
                ));
            }
            out.stdout = String::from_utf8_lossy(&c.stdout).into_owned();
            out.stderr = String::from_utf8_lossy(&c.stderr).into_owned();
        }
        Ok(Err(e)) => out.error = Some(format!("cannot run {:?}: {e}", argv[0])),
        Err(_) if remote => {
            out.error = Some(format!(
                "timed out after {}: ssh client killed; the remote command may still run",
                crate::template::format_duration(wait)
            ))
        }
        Err(_) => out.error = Some(format!("timed out after {limit} (process group killed)")),
    }
    out.took = started.elapsed();
    out
}

/// How long a `systemd-run --wait` unit may run: stopped by systemd after `run`
/// (`RuntimeMaxSec`; killing `systemd-run` alone would leave the unit running), its whole
/// cgroup SIGKILLed `grace` after the SIGTERM (`TimeoutStopSec`; systemd's default is 90 s).
#[derive(Debug, Clone, Copy)]
pub struct UnitLimit {
    pub run: Duration,
    pub grace: Duration,
}

impl UnitLimit {
    /// How long the `systemd-run` client waits for the unit's end: its run, its stop, and
    /// a margin for systemd to say so.
    pub fn client_timeout(&self) -> Duration {
        self.run + self.grace + Duration::from_secs(5)
    }
}

/// The argv that runs `argv` as the transient systemd service `unit` (`systemd-run`): in its
/// own cgroup, outside the alerter's sandbox. `wait`: run it to the end with its output and
/// exit status piped back (`--wait --pipe`), within the limit; `None`: start it and return
/// (a service; it stays loaded if it fails, for `systemctl status`).
pub fn systemd_run(unit: &str, argv: &[String], wait: Option<UnitLimit>) -> Vec<String> {
    let mut v: Vec<String> = ["systemd-run", "--quiet", "--unit", unit]
        .map(String::from)
        .into();
    match wait {
        // A launcher that forks and exits 0 (nginx, `apachectl start`) would end a plain
        // service unit and take its daemon with it.
        None => v.push("--property=RemainAfterExit=yes".into()),
        Some(l) => v.extend([
            "--wait".into(),
            "--pipe".into(),
            "--collect".into(),
            format!("--property=RuntimeMaxSec={}ms", l.run.as_millis().max(1)),
            format!("--property=TimeoutStopSec={}ms", l.grace.as_millis().max(1)),
        ]),
    }
    v.push("--".into());
    v.extend(argv.iter().cloned());
    v
}

/// A unit name for something the alerter launches: `wk-<what>-<ns>` (`what`: letters,
/// digits, `_.-`; anything else becomes `_`).
pub fn unit_name(what: &str) -> String {
    let what: String = what
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("wk-{what}-{}.service", crate::clock::now_ns())
}

/// Whether `program` is on `PATH` (local only; remote hosts answer with an exit status).
pub fn local_has(program: &str) -> bool {
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).any(|d| d.join(program).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_argv_quotes_each_remote_word() {
        let h = Host::Ssh(SshHost {
            host: "web1".into(),
            address: "10.0.0.5".into(),
            user: "wk".into(),
            port: 2222,
            key: "/k/id".into(),
            known_hosts: "/k/known".into(),
            connect_timeout: Duration::from_secs(5),
            helper: "/usr/local/bin/wk-remote-helper".into(),
        });
        let v = h.wrap(&[
            "systemctl".into(),
            "restart".into(),
            "--".into(),
            "it's".into(),
        ]);
        assert_eq!(v[0], "ssh");
        assert!(v.contains(&"BatchMode=yes".to_string()));
        assert!(v.contains(&"StrictHostKeyChecking=yes".to_string()));
        assert!(v.contains(&"UserKnownHostsFile=/k/known".to_string()));
        assert!(v.contains(&"GlobalKnownHostsFile=/dev/null".to_string()));
        assert_eq!(
            v[1..3],
            ["-F", "/dev/null"],
            "no ssh config file can change the policy"
        );
        let dd = v.iter().position(|a| a == "--").unwrap();
        assert_eq!(v[dd + 1], "10.0.0.5");
        assert_eq!(v[dd + 2], "'systemctl' 'restart' '--' 'it'\\''s'");
        assert_eq!(v.len(), dd + 3);
    }

    #[test]
    fn systemd_run_argv() {
        let argv: Vec<String> = vec!["/opt/app".into(), "--serve".into()];
        assert_eq!(
            systemd_run("wk-start-1.service", &argv, None),
            [
                "systemd-run",
                "--quiet",
                "--unit",
                "wk-start-1.service",
                "--property=RemainAfterExit=yes",
                "--",
                "/opt/app",
                "--serve"
            ]
        );
        let limit = UnitLimit {
            run: Duration::from_secs(30),
            grace: Duration::from_secs(5),
        };
        let w = systemd_run("u.service", &argv, Some(limit));
        assert!(w.contains(&"--wait".to_owned()) && w.contains(&"--pipe".to_owned()));
        assert!(w.contains(&"--property=RuntimeMaxSec=30000ms".to_owned()));
        assert!(w.contains(&"--property=TimeoutStopSec=5000ms".to_owned()));
        assert!(limit.client_timeout() > limit.run + limit.grace);
        assert_eq!(w[w.len() - 3..], ["--", "/opt/app", "--serve"]);
        let u = unit_name("script-a b/c");
        assert!(
            u.starts_with("wk-script-a_b_c-") && u.ends_with(".service"),
            "{u}"
        );
    }

    /// The remote command has a deadline of its own, the configured timeout; ssh's
    /// words stay as they were, quoted.
    #[test]
    fn remote_commands_run_under_timeout() {
        let argv = remote_deadline(&["sleep".into(), "9".into()], Duration::from_millis(1500));
        assert_eq!(argv, ["timeout", "-k", "2.000s", "1.500s", "sleep", "9"]);
    }

    #[tokio::test]
    async fn timeout_kills_the_group() {
        let o = run(
            &Host::Local,
            &["sleep".into(), "30".into()],
            Duration::from_millis(200),
            1024,
        )
        .await;
        assert!(o.error.unwrap().contains("timed out"));
        assert!(o.took < Duration::from_secs(5));
    }
}
