//! `scripts/wk-remote-helper`, what the /proc-reading actions run on a remote host: run here
//! against this host's /proc, its answers are compared with wk-core's procs module (the
//! alerter's local path); bad arguments are refused without running anything; and through a
//! real sshd the actions free_port, restart_process and top_processes work on the "remote"
//! host with it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use wk_alerter::actions::Ctx;
use wk_alerter::actions::host::{Host, SshHost};
use wk_core::testing::free_port;

use crate::common::procs::{
    action, http_server_argv, http_server_pattern, kill_matching, listener, probe_until, reap,
    spawn, wait_listening,
};

fn helper_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/wk-remote-helper")
}

fn helper(args: &[&str]) -> Output {
    Command::new(helper_path())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run wk-remote-helper")
}

fn lines(out: &Output) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn proc_of(pid: u32) -> wk_core::procs::Process {
    wk_core::procs::get(Path::new("/proc"), pid as i32).expect("process exists")
}

#[test]
fn procs_lists_what_wk_core_reads_but_its_own_session() {
    let mut child = spawn(&["sleep", "30"]);
    let listed = lines(&helper(&["procs"]));
    let core: HashMap<i32, wk_core::procs::Process> = wk_core::procs::list(Path::new("/proc"))
        .unwrap()
        .into_iter()
        .map(|p| (p.pid, p))
        .collect();
    let users = wk_core::procs::user_names(Path::new("/etc/passwd"));
    let mut compared = 0;
    for p in &listed {
        let pid = p["pid"].as_i64().unwrap() as i32;
        let Some(c) = core.get(&pid) else { continue }; // came or went in between
        assert_eq!(p["ppid"], c.ppid, "{p}");
        assert_eq!(p["uid"], c.uid, "{p}");
        assert_eq!(p["start_ticks"], c.start_ticks, "{p}");
        assert_eq!(
            p["user"],
            users.get(&c.uid).cloned().unwrap_or(c.uid.to_string()),
            "{p}"
        );
        compared += 1;
    }
    assert!(
        compared * 10 >= core.len() * 8,
        "{compared} of {}",
        core.len()
    );
    let sleep = listed
        .iter()
        .find(|p| p["pid"] == child.id())
        .expect("the child is listed");
    assert_eq!(sleep["cmdline"], serde_json::json!(["sleep", "30"]));
    // (comm compared on a process of ours only: kernel workers rename themselves.)
    assert_eq!(sleep["comm"], proc_of(child.id()).comm.as_str());
    assert_eq!(sleep["ppid"], std::process::id());
    assert!(
        !listed.iter().any(|p| p["pid"] == std::process::id()),
        "the helper's ancestors (here: this test) are left out"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn port_holders_are_wk_cores_port_holders() {
    let port = free_port();
    let l = listener(port);
    let listed = lines(&helper(&["port-holders", &port.to_string()]));
    let pids: Vec<i64> = listed.iter().map(|p| p["pid"].as_i64().unwrap()).collect();
    let core: Vec<i64> = wk_core::procs::tcp_port_holders(Path::new("/proc"), port)
        .iter()
        .map(|p| i64::from(p.pid))
        .collect();
    assert_eq!(pids, core);
    assert_eq!(pids, [i64::from(l.id())]);
    assert_eq!(listed[0]["cmdline"][0], proc_of(l.id()).cmdline[0].as_str());
    reap(l);
    assert!(lines(&helper(&["port-holders", &port.to_string()])).is_empty());
}

#[test]
fn top_sorts_by_memory_and_finds_a_busy_process() {
    let rows = lines(&helper(&["top", "memory", "4"]));
    assert_eq!(rows.len(), 4);
    let rss: Vec<u64> = rows
        .iter()
        .map(|r| r["rss_bytes"].as_u64().unwrap())
        .collect();
    assert!(rss.windows(2).all(|w| w[0] >= w[1]), "{rss:?}");
    // The biggest is within 10% of what wk-core reads for it.
    let top = proc_of(rows[0]["pid"].as_u64().unwrap() as u32);
    let diff = (top.rss_bytes as f64 - rss[0] as f64).abs() / rss[0] as f64;
    assert!(diff < 0.1, "{} vs {}", top.rss_bytes, rss[0]);
    let busy = spawn(&["python3", "-c", "while True: pass"]);
    std::thread::sleep(Duration::from_millis(300));
    // The most it lists (a shared 2-core machine under a parallel build put 15 busier ones
    // ahead of it, at 20 % of a core): the busy one is found with a share of the CPU, and
    // the list is sorted by it.
    let rows = lines(&helper(&["top", "cpu", "99"]));
    let pid = busy.id();
    reap(busy);
    let row = rows
        .iter()
        .find(|r| r["pid"] == pid)
        .unwrap_or_else(|| panic!("{pid} not among {rows:#?}"));
    assert!(row["cpu_pct"].as_f64().unwrap() > 2.0, "{row}");
    let cpu: Vec<f64> = rows
        .iter()
        .map(|r| r["cpu_pct"].as_f64().unwrap())
        .collect();
    assert!(cpu.windows(2).all(|w| w[0] >= w[1]), "{cpu:?}");
}

#[test]
fn stop_terms_then_kills_and_never_its_own_session() {
    let polite = spawn(&["sleep", "30"]);
    let stubborn = spawn(&[
        "python3",
        "-c",
        "import signal,time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(30)",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    let rows = lines(&helper(&[
        "stop",
        "400",
        &named(polite.id()),
        &named(stubborn.id()),
        &named(std::process::id()),
    ]));
    let result = |pid: u32| {
        rows.iter().find(|r| r["pid"] == pid).unwrap()["result"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(result(polite.id()), "exited after SIGTERM");
    assert!(
        result(stubborn.id()).starts_with("SIGKILL after 0.4s"),
        "{rows:?}"
    );
    assert_eq!(
        result(std::process::id()),
        "not signalled: the helper's own session"
    );
    for c in [polite, stubborn] {
        let status = { c }.wait().unwrap();
        assert!(!status.success());
    }
}

/// `PID:START` of a running process, as the alerter passes it to `stop`.
fn named(pid: u32) -> String {
    format!("{pid}:{}", proc_of(pid).start_ticks)
}

/// The list and the stop are two ssh calls: a pid reused in between belongs to another
/// process, which `stop` signalled all the same. It now checks the start time first.
#[test]
fn stop_leaves_a_reused_pid_alone() {
    let mut other = spawn(&["sleep", "30"]);
    let pid = other.id();
    let earlier = format!("{pid}:{}", proc_of(pid).start_ticks - 1);
    let rows = lines(&helper(&["stop", "0", &earlier]));
    assert_eq!(
        rows,
        [serde_json::json!({"pid": pid, "result": "gone (pid reused)"})]
    );
    assert!(
        other.try_wait().unwrap().is_none(),
        "the reused pid's process was signalled"
    );
    let rows = lines(&helper(&["stop", "5000", &named(pid)]));
    assert_eq!(rows[0]["result"], "exited after SIGTERM");
    assert!(!{ other }.wait().unwrap().success());
}

#[test]
fn start_detaches_and_port_open_probes() {
    let rows = lines(&helper(&["start", "--", "sleep", "30"]));
    let pid = rows[0]["pid"].as_i64().unwrap() as i32;
    // The helper answers once the program is started, not once it has exec'd: its command
    // line can still be empty for a moment (seen in CI).
    let cmdline = || {
        wk_core::procs::get(Path::new("/proc"), pid)
            .expect("started")
            .cmdline
    };
    wk_core::testing::poll_until(Duration::from_secs(5), || !cmdline().is_empty());
    assert_eq!(cmdline(), ["sleep", "30"]);
    // Its own session (setsid): the sid is its pid.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let sid: i32 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(3)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(sid, pid);
    // SAFETY: kill(2) on the process just started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let port = free_port();
    let open = |port: u16| lines(&helper(&["port-open", &port.to_string()]))[0]["open"].clone();
    assert_eq!(open(port), false);
    let l = listener(port);
    assert_eq!(open(port), true);
    reap(l);
}

/// Whatever reaches the helper's arguments, nothing but the subcommand runs: every number is
/// digits only, unknown subcommands and extra arguments are usage errors (exit 2).
#[test]
fn bad_arguments_are_refused_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("X");
    let inject = format!("1; touch {}", marker.display());
    let sub = format!("$(touch {})", marker.display());
    for args in [
        vec!["stop", "100", inject.as_str()],
        vec!["stop", "100", "1:5"],
        vec!["stop", "-9", "4242:5"],
        vec!["stop", "100", "--", "4242:5"],
        vec!["stop", "100", "4242"],
        vec!["stop", "100", "4242:"],
        vec!["stop", "100", ":5"],
        vec!["stop", "100", "4242:5:6"],
        vec!["stop", "100", "4242:-5"],
        vec!["port-holders", sub.as_str()],
        vec!["port-holders", "0"],
        vec!["port-holders", "+80"],
        vec!["port-open", "80 81"],
        vec!["top", "disk", "5"],
        vec!["top", "cpu", "1000"],
        vec!["top", "cpu", "٣"],
        vec!["procs", "extra"],
        vec!["start", "sleep", "1"],
        vec!["sh", "-c", "touch X"],
        vec![],
    ] {
        let out = helper(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    assert!(!marker.exists());
}

/// The same actions on a "remote" host: a real sshd on loopback, the helper from this
/// repository, the actions' ssh path end to end.
#[tokio::test]
async fn actions_run_on_a_remote_host_through_sshd_and_the_helper() {
    let Some(sshd) = crate::heal::sshd::Sshd::start() else {
        return;
    };
    let mut ctx = Ctx::local();
    ctx.grace = Duration::from_millis(500);
    ctx.host = Host::Ssh(SshHost {
        host: "remote1".into(),
        address: "127.0.0.1".into(),
        user: sshd.user.clone(),
        port: sshd.port,
        key: sshd.key.clone(),
        known_hosts: sshd.known_hosts.clone(),
        connect_timeout: Duration::from_secs(5),
        helper: helper_path().canonicalize().unwrap(),
    });
    // free_port names the squatter and stops it.
    let port = free_port();
    let mut squatter = listener(port);
    let a = action("free_port", &[("port", &port.to_string())], &[]);
    let done = a.run(&ctx).await;
    assert!(done.ok, "{done:?}\n{}", sshd.log());
    assert!(
        done.before.contains(&format!("pid {}", squatter.id())) && done.before.contains("python3"),
        "{done:?}"
    );
    assert!(done.did.contains("exited after SIGTERM"), "{done:?}");
    assert!(
        done.commands.iter().all(|c| c[0] == "ssh"),
        "{:?}",
        done.commands
    );
    squatter.wait().unwrap();
    let probe = a.probe(&ctx).await;
    assert_eq!(probe.healthy, Some(true), "{probe:?}");
    assert!(sshd.log().contains("Accepted publickey"), "{}", sshd.log());

    // restart_process: the pattern (a regex) is matched on the helper's list; the stop and
    // the start run there.
    let port = free_port();
    let ps = port.to_string();
    let server = http_server_argv(&ps);
    let mut old = spawn(&server);
    wait_listening(port);
    let pattern = http_server_pattern(port);
    let a = action(
        "restart_process",
        &[("pattern", &pattern), ("port", &ps)],
        &[("start", &server)],
    );
    let done = a.run(&ctx).await;
    assert!(done.ok, "{done:?}");
    assert!(
        done.before.contains(&format!("pid {}", old.id())),
        "{done:?}"
    );
    assert!(done.did.contains("started"), "{done:?}");
    old.wait().unwrap();
    let pause = Duration::from_millis(250);
    let probe = probe_until(&*a, &ctx, 20, pause, |p| p.healthy == Some(true)).await;
    assert_eq!(probe.healthy, Some(true), "{probe:?}");
    kill_matching(&pattern); // the started server

    // top_processes reports rows from the helper.
    let a = action("top_processes", &[("by", "memory"), ("n", "3")], &[]);
    let done = a.run(&ctx).await;
    assert!(done.ok, "{done:?}");
    assert_eq!(done.before.lines().count(), 4, "{}", done.before);
    assert!(done.before.contains("% mem"), "{}", done.before);
}

/// Over ssh only the local client was killed at the timeout (no tty, so no SIGHUP reaches
/// the remote side) and the remote command ran on, while the record said "process group
/// killed". It now runs under timeout(1) there and is stopped at its time.
#[tokio::test]
async fn a_remote_command_past_its_timeout_is_stopped_on_the_remote_host() {
    let Some(sshd) = crate::heal::sshd::Sshd::start() else {
        return;
    };
    let host = Host::Ssh(SshHost {
        host: "remote1".into(),
        address: "127.0.0.1".into(),
        user: sshd.user.clone(),
        port: sshd.port,
        key: sshd.key.clone(),
        known_hosts: sshd.known_hosts.clone(),
        connect_timeout: Duration::from_secs(5),
        helper: helper_path(),
    });
    // A duration no other process sleeps for, to find this one.
    let nap = format!(
        "{}.{}",
        40 + std::process::id() % 50,
        std::process::id() % 997
    );
    let argv = ["sleep".to_owned(), nap.clone()];
    let out = wk_alerter::actions::host::run(&host, &argv, Duration::from_secs(1), 4096).await;
    let running = || {
        wk_core::procs::list(Path::new("/proc"))
            .unwrap()
            .iter()
            .any(|p| p.cmdline == argv)
    };
    let stopped = wk_core::testing::poll_until(Duration::from_secs(3), || !running());
    kill_matching(&format!("^sleep {}$", regex::escape(&nap)));
    assert!(
        stopped,
        "`sleep {nap}` still runs on the remote host: {out:?}"
    );
    let error = out.error.unwrap_or_default();
    assert!(
        error.contains("stopped on the remote host"),
        "{error}\n{}",
        sshd.log()
    );
}
