//! The wk-agent binary: --test, --once, --sample-config, exit codes, the daemon's SIGHUP
//! reload and SIGTERM shutdown.

use std::fs;
use std::process::{Output, Stdio};
use std::time::Duration;

use crate::support::{Conf, agent, conf, daemon, daemon_config, signal};

fn run(args: &[&str]) -> Output {
    agent().args(args).output().expect("run wk-agent")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
use wk_core::testing::poll_until as wait_for;

#[test]
fn test_mode_prints_line_protocol_and_exits_zero() {
    let c = conf("[[inputs.cpu]]\n  percpu = false\n[[outputs.file]]\n");
    let out = run(&["--config", c.arg(), "--test"]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("> cpu,cpu=cpu-total,host=") && l.contains("usage_idle=")),
        "{stdout}"
    );
}

#[test]
fn invalid_config_exits_2_and_names_file_and_line() {
    let c = conf("[agent]\n  interval = \"10x\"\n[[inputs.cpu]]\n  percpu = 1\n");
    let out = run(&["--config", c.arg(), "--test"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:2:14: error: [agent] interval: invalid duration",
            c.path.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{}:4:12: error: [inputs.cpu] percpu: expected a boolean",
            c.path.display()
        )),
        "{err}"
    );
}

#[test]
fn missing_config_file_exits_2() {
    let out = run(&["--config", "/nonexistent/wk.conf", "--test"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/wk.conf: error: cannot read"));
}

#[test]
fn sample_config_loads_back() {
    let out = run(&["--sample-config"]);
    assert!(out.status.success());
    let c = conf(&out.stdout);
    let out = run(&["--config", c.arg(), "--test"]);
    assert!(
        out.status.success(),
        "the printed sample config must load and gather: {}",
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("> cpu,"));
    // Regression: every probe was on, so the first --test showed connection_failed results.
    let stdout = text(&out.stdout);
    assert!(
        !stdout.contains("result="),
        "no probe runs from the sample: {stdout}"
    );
    assert!(!stdout.contains("> internal"), "{stdout}");
}

#[test]
fn input_filter_limits_inputs() {
    let out = run(&["--sample-config", "--input-filter", "cpu"]);
    let s = text(&out.stdout);
    assert!(s.contains("[[inputs.cpu]]"));
    assert!(!s.contains("[[inputs.mem]]"));
}

#[test]
fn once_writes_to_the_file_output() {
    let c = Conf::empty();
    let out_file = c.beside("metrics.lp");
    c.write(format!(
        "[agent]\n  omit_hostname = true\n[[inputs.cpu]]\n[[outputs.file]]\n  files = [{out_file:?}]\n"
    ));
    let out = run(&["--config", c.arg(), "--once"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lp = fs::read_to_string(&out_file).unwrap();
    assert!(
        lp.lines()
            .any(|l| l.starts_with("cpu,cpu=cpu-total usage_")),
        "{lp}"
    );
    assert!(!lp.contains("host="));
}

#[test]
fn daemon_reloads_on_sighup_keeps_running_on_a_bad_config_and_stops_on_sigterm() {
    let c = Conf::empty();
    let out_file = c.beside("metrics.lp");
    c.write(daemon_config(&out_file, "v1"));
    let mut child = daemon(&c.path, Stdio::piped());
    let read = || fs::read_to_string(&out_file).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(10), || read().contains("version=v1")),
        "no metrics written"
    );

    // A good change is applied.
    c.write(daemon_config(&out_file, "v2"));
    signal(&child, libc::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(10), || read().contains("version=v2")),
        "reload not applied"
    );

    // A broken change is refused: the agent keeps running the v2 config.
    c.write("[agent]\n  interval = \"soon\"\n");
    signal(&child, libc::SIGHUP);
    let len_at_bad_reload = read().len();
    assert!(
        wait_for(Duration::from_secs(10), || read().len() > len_at_bad_reload),
        "agent stopped writing after a bad reload"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "agent exited after a bad reload"
    );
    let tail = read()[len_at_bad_reload..].to_owned();
    assert!(
        tail.contains("version=v2") && !tail.contains("version=v1"),
        "{tail}"
    );

    signal(&child, libc::SIGTERM);
    assert!(
        wait_for(Duration::from_secs(10), || child
            .try_wait()
            .unwrap()
            .is_some()),
        "no exit on SIGTERM"
    );
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "exit status {}", out.status);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("interval: invalid duration \"soon\""),
        "{stderr}"
    );
    assert!(stderr.contains("keeping the running one"), "{stderr}");
}

/// `internal_write.metrics_dropped` must say exactly how many metrics a full buffer discarded.
#[test]
fn internal_metrics_count_every_dropped_metric() {
    let c = Conf::empty();
    let good = c.beside("internal.lp");
    c.write(format!(
            "[agent]\n  interval = \"1s\"\n  flush_interval = \"1s\"\n  omit_hostname = true\n\
             [[inputs.cpu]]\n  percpu = false\n[[inputs.internal]]\n  per_instance = true\n\
             [[outputs.file]]\n  alias = \"broken\"\n  files = [\"/dev/full\"]\n  metric_buffer_limit = 3\n  namepass = [\"cpu\"]\n\
             [[outputs.file]]\n  alias = \"good\"\n  files = [{good:?}]\n  namepass = [\"internal_*\"]\n"
    ));
    let mut child = daemon(&c.path, Stdio::null());
    let field = |line: &str, key: &str| -> i64 {
        let fields = line.split(' ').nth(1).unwrap();
        let v = fields
            .split(',')
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap();
        v.trim_end_matches('i').parse().unwrap()
    };
    let mut checked = None;
    wait_for(Duration::from_secs(20), || {
        let text = fs::read_to_string(&good).unwrap_or_default();
        checked = text
            .lines()
            .filter(|l| l.starts_with("internal_write,alias=broken,output=file"))
            .find(|l| field(l, "metrics_added") >= 5)
            .map(str::to_owned);
        checked.is_some()
    });
    signal(&child, libc::SIGTERM);
    child.wait().unwrap();
    let line = checked.expect("no internal_write line for the broken output with 5 metrics added");
    assert_eq!(field(&line, "buffer_limit"), 3, "{line}");
    assert_eq!(field(&line, "buffer_size"), 3, "{line}");
    assert_eq!(field(&line, "metrics_written"), 0, "{line}");
    assert_eq!(
        field(&line, "metrics_dropped"),
        field(&line, "metrics_added") - 3,
        "{line}"
    );
    assert!(field(&line, "write_errors") > 0, "{line}");
}

/// docs/cli.md's exit statuses of wk-agent, case by case (the table is read by the test).
#[test]
fn exit_statuses_are_the_documented_ones() {
    let good = conf("[[inputs.cpu]]\n  percpu = false\n[[outputs.file]]\n");
    // Nothing listens on port 1: the nginx input fails to gather.
    let failing =
        conf("[[inputs.nginx]]\n  urls = [\"http://127.0.0.1:1/status\"]\n[[outputs.file]]\n");
    let bad = conf("[agent]\n  interval = \"10x\"\n[[inputs.cpu]]\n");
    let man = good.beside("man1");
    let cases: &[(&str, &dyn Fn() -> Output)] = &[
        ("`--test`, every input gathered", &|| {
            run(&["--config", good.arg(), "--test"])
        }),
        ("`--test`, an input failed", &|| {
            run(&["--config", failing.arg(), "--test"])
        }),
        ("a config that does not load", &|| {
            run(&["--config", bad.arg(), "--test"])
        }),
        ("a config file that does not exist", &|| {
            run(&["--config", "/nonexistent/wk.conf", "--test"])
        }),
        ("an unknown option", &|| run(&["--no-such-option"])),
        ("`completions bash`", &|| run(&["completions", "bash"])),
        ("`man --dir DIR`", &|| {
            run(&["man", "--dir", man.to_str().unwrap()])
        }),
    ];
    wk_core::testing::assert_documented_exit_statuses("wk-agent", cases);
}

/// `--help` of every command, the man pages and the bash completion come from one definition.
#[test]
fn help_man_pages_and_completions_cover_every_command() {
    let pages = wk_core::testing::assert_help_man_and_completions_agree(std::path::Path::new(
        env!("CARGO_BIN_EXE_wk-agent"),
    ));
    assert_eq!(
        pages,
        ["wk-agent-completions.1", "wk-agent-man.1", "wk-agent.1"]
    );
}

/// `[agent] debug` and `quiet` set the log level when no flag does (they were read and did
/// nothing).
#[test]
fn agent_debug_and_quiet_set_the_log_level() {
    let log_of = |agent_table: &str| {
        let c = conf(format!(
            "[agent]\n  interval = \"500ms\"\n{agent_table}\n[[inputs.mem]]\n[[outputs.file]]\n  files = [\"/dev/null\"]\n"
        ));
        let child = daemon(std::path::Path::new(c.arg()), Stdio::piped());
        std::thread::sleep(Duration::from_millis(1_500));
        signal(&child, libc::SIGTERM);
        text(&child.wait_with_output().unwrap().stderr)
    };
    let plain = log_of("");
    assert!(
        plain.contains("agent started") && !plain.contains("DEBUG"),
        "{plain}"
    );
    let quiet = log_of("  quiet = true");
    assert!(!quiet.contains("agent started"), "{quiet}");
    let debug = log_of("  debug = true");
    assert!(debug.contains("DEBUG gathered"), "{debug}");
    // A reload applies them again: debug off, then on.
    let text_of = |debug: bool| {
        format!(
            "[agent]\n  interval = \"500ms\"\n  debug = {debug}\n[[inputs.mem]]\n[[outputs.file]]\n  files = [\"/dev/null\"]\n"
        )
    };
    let c = conf(text_of(false));
    let child = daemon(std::path::Path::new(c.arg()), Stdio::piped());
    std::thread::sleep(Duration::from_millis(1_500));
    c.write(text_of(true));
    signal(&child, libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(1_500));
    signal(&child, libc::SIGTERM);
    let log = text(&child.wait_with_output().unwrap().stderr);
    let (before, after) = log.split_once("reloading configuration").expect("reloaded");
    assert!(!before.contains("DEBUG"), "{log}");
    assert!(after.contains("DEBUG gathered"), "{log}");
}

/// A disk buffer is one writer's: a reload reopens it (the old output lets go of its lock
/// first), and a `--once` beside the running daemon is refused it and keeps to memory.
#[test]
fn a_disk_buffer_survives_reloads_and_is_not_shared() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[agent]\n  interval = \"500ms\"\n  flush_interval = \"500ms\"\n  buffer_strategy = \"disk\"\n  buffer_directory = {:?}\n[[inputs.mem]]\n[[outputs.file]]\n  files = [\"/dev/null\"]\n",
        dir.path().join("buffer")
    );
    let c = conf(&config);
    let child = daemon(std::path::Path::new(c.arg()), Stdio::piped());
    std::thread::sleep(Duration::from_millis(1_500));
    for _ in 0..2 {
        signal(&child, libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(1_500));
    }
    let once = agent()
        .args(["--config", c.arg(), "--once"])
        .output()
        .unwrap();
    signal(&child, libc::SIGTERM);
    let log = text(&child.wait_with_output().unwrap().stderr);
    assert_eq!(log.matches("disk buffer opened").count(), 3, "{log}");
    assert!(!log.contains("cannot open the disk buffer"), "{log}");
    let once = text(&once.stderr);
    assert!(once.contains("in use by another wk-agent"), "{once}");
}

/// A gather that hangs (here a ping helper that sleeps 30 s) does not hold up SIGTERM: it
/// gets a few seconds, then is abandoned (the agent waited for it to the end).
#[test]
fn a_hung_gather_does_not_hold_up_the_stop() {
    let nonce = format!("wk-hung-{}", std::process::id());
    let c = conf(format!(
        "[agent]\n  interval = \"1s\"\n[[inputs.ping]]\n  urls = [\"x\"]\n  binary = \"sh\"\n  arguments = [\"-c\", \"sleep 30; : {nonce}\"]\n[[outputs.file]]\n  files = [\"/dev/null\"]\n",
    ));
    let child = daemon(std::path::Path::new(c.arg()), Stdio::piped());
    std::thread::sleep(Duration::from_millis(2_500));
    let asked = std::time::Instant::now();
    signal(&child, libc::SIGTERM);
    let out = child.wait_with_output().unwrap();
    let took = asked.elapsed();
    let log = text(&out.stderr);
    assert!(
        took < Duration::from_secs(15),
        "stopped after {took:?}: {log}"
    );
    assert!(log.contains("abandoned"), "{log}");
    // Its helper does not outlive the agent.
    let left = std::process::Command::new("pgrep")
        .args(["-f", &nonce])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "still running: {}",
        text(&left.stdout)
    );
}

/// An input that overruns its interval: the tick that passed meanwhile starts the next
/// gather at once, as Telegraf's buffered ticker does (it waited for the tick after, so a
/// 1.2 s gather on a 1 s interval ran every 2 s).
#[test]
fn an_overrun_gather_is_followed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.lp");
    let c = conf(format!(
        "[agent]\n  interval = \"1s\"\n  flush_interval = \"1s\"\n\
         [[inputs.ping]]\n  urls = [\"x\"]\n  binary = \"sh\"\n  arguments = [\"-c\", \"sleep 1.2\"]\n\
         [[outputs.file]]\n  files = [{out:?}]\n"
    ));
    let child = daemon(std::path::Path::new(c.arg()), Stdio::null());
    std::thread::sleep(Duration::from_secs(8));
    signal(&child, libc::SIGTERM);
    let _ = child.wait_with_output();
    let gathered = fs::read_to_string(&out)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("ping,"))
        .count();
    // Every 1.2 s: at least 5 in 8 s (every 2 s: at most 4).
    assert!(gathered >= 5, "{gathered} gathers in 8 s");
}
