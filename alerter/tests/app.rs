//! The commands as library functions (`wk_alerter::app`), in-process: the daemon starts in
//! stream mode, reloads and stops through its control channel; `replay` and the `test`
//! command report evaluations that fail.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;
use wk_alerter::app::{self, Control};

use crate::common::alerter::{crit_rule, event_at, write_alerter_conf};
use crate::common::wait::poll_until_async;

const GOOD_RULE: &str = r#"
rule(#{ every: "1s" });
fn check() { query("cpu").field("busy").range("1h").last().group_by("host").run() }
"#;

fn stream_config(dir: &std::path::Path, token: &str) -> std::path::PathBuf {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join("cpu.rhai"), GOOD_RULE).unwrap();
    let conf = dir.join("alerter.conf");
    std::fs::write(
        &conf,
        format!(
            "[alerter]\n  rules_dir = {:?}\n  state_dir = {:?}\n\
             [stream]\n  listen = \"127.0.0.1:0\"\n  token = \"{token}\"\n",
            rules.display().to_string(),
            dir.join("state").display().to_string()
        ),
    )
    .unwrap();
    conf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_runs_reloads_and_stops_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let conf = stream_config(dir.path(), "s3cret-token-for-tests");
    let daemon = Daemon::start(&conf);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A broken config on reload is refused; the daemon keeps running.
    std::fs::write(&conf, "[alerter\n").unwrap();
    daemon.tx.send(Control::Reload).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !daemon.running.is_finished(),
        "a bad reload must not stop the daemon"
    );
    daemon.stop(Duration::from_secs(10)).await;
}

/// The daemon (`app::run`) on the config file `conf`, in a task of its own.
struct Daemon {
    tx: mpsc::Sender<Control>,
    running: tokio::task::JoinHandle<Result<(), app::StartError>>,
}

impl Daemon {
    fn start(conf: &Path) -> Daemon {
        let cfg = app::load_config(conf, &|_: &str| None).expect("config loads");
        let (tx, rx) = mpsc::channel(4);
        let path = conf.to_owned();
        let running = tokio::spawn(async move { app::run(&path, cfg, |_: &str| None, rx).await });
        Daemon { tx, running }
    }

    /// Tells it to stop; fails the test unless it stops cleanly `within`.
    async fn stop(self, within: Duration) {
        self.tx.send(Control::Stop).await.unwrap();
        let result = tokio::time::timeout(within, self.running)
            .await
            .expect("stops")
            .unwrap();
        assert!(result.is_ok(), "{result:?}");
    }
}

/// Writes `rule` (Rhai) and `data` (line protocol) to files in `dir`; their paths.
fn rule_and_data(dir: &Path, rule: &str, data: &str) -> (PathBuf, PathBuf) {
    let paths = (dir.join("rule.rhai"), dir.join("data.lp"));
    std::fs::write(&paths.0, rule).unwrap();
    std::fs::write(&paths.1, data).unwrap();
    paths
}

/// `wk-alerter test RULE --data DATA`.
fn test_command(rule: &Path, data: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_wk-alerter"));
    c.arg("test").arg(rule).arg("--data").arg(data);
    c
}

#[test]
fn replay_reports_failed_evaluations_and_test_exits_non_zero_when_all_fail() {
    let dir = tempfile::tempdir().unwrap();
    // Loads, then fails at every evaluation (arithmetic on `()`).
    let (rule, data) = rule_and_data(
        dir.path(),
        "rule(#{ every: \"10s\" });\nfn check() { let s = query(\"m\").field(\"v\").range(\"1m\").last().run(); let n = (); n + 1; s }\n",
        "m v=1 1000000000\nm v=2 21000000000\n",
    );
    let r = app::load_rule(&rule, None).unwrap();
    let points = wk_core::lineproto::parse(&std::fs::read_to_string(&data).unwrap(), 0).unwrap();
    let steps = app::replay(&r, &points, Duration::ZERO);
    assert!(!steps.is_empty());
    assert!(steps.iter().all(|s| s.failure.is_some()), "{steps:?}");

    // Regression: `wk-alerter test` printed "0 events" and exited 0.
    let out = test_command(&rule, &data).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("every evaluation failed"), "{stderr}");
}

/// Broken rules `wk-alerter check` passed (issue 10 item 7): each must fail it, naming the
/// file, line and column, without a database.
pub const BROKEN_RULES: &[(&str, &str)] = &[
    (
        "go_template",
        "rule(#{ message: \"{{ .Level }} on {{ index .Tags \\\"host\\\" }}\" });\nfn check() { [] }\n",
    ),
    (
        "memory",
        "fn check() {\n  let a = [];\n  loop { let m = #{}; for i in 0..5000 { m[\"k\" + i] = i; } a.push(m); }\n}\n",
    ),
    (
        "endless",
        "fn check() {\n  let i = 0;\n  loop { i += 1; }\n}\n",
    ),
    (
        "recursion",
        "fn down(n) { down(n + 1) }\nfn check() { down(0) }\n",
    ),
    (
        "undefined_fn",
        "fn check() {\n  let s = query(\"cpu\").field(\"usage_idle\").last().run();\n  notify_ops(s);\n  s\n}\n",
    ),
    (
        "misspelled_method",
        "fn check() {\n  query(\"cpu\").feild(\"usage_idle\").last().run()\n}\n",
    ),
    (
        "bad_return",
        "fn check() {\n  let s = query(\"cpu\").field(\"usage_idle\").last().group_by(\"host\").run();\n  for x in s { x.crit(x.value > 90.0); }\n}\n",
    ),
    (
        "unit_arithmetic",
        "fn check() {\n  let s = query(\"cpu\").field(\"usage_idle\").last().group_by(\"host\").run();\n  for x in s { x.crit(100.0 - x.get(\"nope\") > 90.0); }\n  s\n}\n",
    ),
];

#[test]
fn check_runs_each_rule_once_and_fails_the_broken_kinds() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in BROKEN_RULES {
        let path = dir.path().join(format!("{name}.rhai"));
        std::fs::write(&path, text).unwrap();
        let mut out = Vec::new();
        let ok = app::check(
            None,
            std::slice::from_ref(&path),
            &app::CheckOptions::default(),
            &mut out,
        );
        let out = String::from_utf8(out).unwrap();
        assert!(!ok, "{name} passed check: {out}");
        let prefix = format!("{}:", path.display());
        let rest = out.strip_prefix(&prefix).unwrap_or("");
        let mut parts = rest.splitn(3, ':');
        assert!(
            parts.next().is_some_and(|l| l.parse::<usize>().is_ok())
                && parts.next().is_some_and(|c| c.parse::<usize>().is_ok()),
            "{name}: no file:line:column in {out}"
        );
    }
    // A good rule passes, and with recorded data it runs on that data.
    let good = dir.path().join("good.rhai");
    std::fs::write(&good, GOOD_RULE).unwrap();
    let points = wk_core::lineproto::parse("cpu,host=a busy=1 1000000000\n", 0).unwrap();
    for data in [None, Some(&points[..])] {
        let mut out = Vec::new();
        let opts = app::CheckOptions { eval: false, data };
        assert!(
            app::check(None, std::slice::from_ref(&good), &opts, &mut out),
            "{}",
            String::from_utf8_lossy(&out)
        );
        // Durations read as people write them (it printed `for 0ns`), and the message is
        // rendered once so the operator sees how it reads.
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("every 1s, for 0s,"), "{out}");
        assert!(out.contains("  message: good:"), "{out}");
    }
}

/// Regression: two files whose rules have the same name passed `check`; the running
/// alerter then refused the second one and kept it refused.
#[test]
fn check_refuses_a_rule_name_used_twice() {
    let dir = tempfile::tempdir().unwrap();
    let named = GOOD_RULE.replacen("rule(#{", "rule(#{\n  name: \"cpu\",", 1);
    let (a, b) = (dir.path().join("cpu.rhai"), dir.path().join("cpu2.rhai"));
    std::fs::write(&a, &named).unwrap();
    std::fs::write(&b, &named).unwrap();
    let mut out = Vec::new();
    let ok = app::check(
        None,
        &[a.clone(), b.clone()],
        &app::CheckOptions::default(),
        &mut out,
    );
    let out = String::from_utf8(out).unwrap();
    assert!(!ok, "{out}");
    let want = format!(
        "{}:3:9: rule name \"cpu\" is already used by {}",
        b.display(),
        a.display()
    );
    assert!(out.contains(&want), "{out}");
}

/// A rule naming a notifier that is not configured: file:line:column of its `notify`.
#[test]
fn an_unknown_notifier_is_reported_at_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("alerter.conf");
    std::fs::write(
        &conf,
        format!(
            "[alerter]\n  rules_dir = {:?}\n  state_dir = {:?}\n\
             [stream]\n  listen = \"127.0.0.1:0\"\n  token = \"a-token-long-enough-for-tests\"\n\
             [[notifiers.log]]\n  name = \"ops\"\n",
            dir.path().display().to_string(),
            dir.path().join("state").display().to_string()
        ),
    )
    .unwrap();
    let cfg = app::load_config(&conf, &|_| None).expect("config loads");
    let rule = dir.path().join("cpu.rhai");
    std::fs::write(
        &rule,
        GOOD_RULE.replacen("rule(#{", "rule(#{\n  notify: [\"opz\"],", 1),
    )
    .unwrap();
    let mut out = Vec::new();
    let opts = app::CheckOptions {
        eval: false,
        data: None,
    };
    assert!(!app::check(
        Some(&cfg),
        std::slice::from_ref(&rule),
        &opts,
        &mut out
    ));
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.starts_with(&format!(
            "{}:3:11: unknown notifier \"opz\"",
            rule.display()
        )),
        "{out}"
    );
}

/// Regression: `wk-alerter test ... | head` panicked on the broken pipe.
#[test]
fn test_command_stops_quietly_when_stdout_closes() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let lp: String = (0..3000)
        .map(|h| format!("m,host=h{h} v=1 1000000000\n"))
        .collect();
    let (rule, data) = rule_and_data(
        dir.path(),
        "rule(#{ every: \"10s\" });\nfn check() {\n  let s = query(\"m\").field(\"v\").last().group_by(\"host\").run();\n  for x in s { x.crit(x.value > 0.5); }\n  s\n}\n",
        &lp,
    );
    let mut child = test_command(&rule, &data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 64];
    let _ = child.stdout.as_mut().unwrap().read(&mut first);
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(status.code(), Some(0), "{stderr}");
}

/// Regression: a rule that failed to load repeated its error text in several log lines (the
/// error, the wk_rules event, the delivery). One line per load error now.
#[test]
fn a_load_error_is_one_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let conf = stream_config(dir.path(), "s3cret-token-for-tests");
    std::fs::write(
        dir.path().join("rules").join("broken.rhai"),
        "rule(#{ every: \"1s\" });\nfn check() { let x = ; }\n",
    )
    .unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_wk-alerter"))
        .arg("--config")
        .arg(&conf)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = stderr
        .lines()
        .filter(|l| l.contains("broken.rhai:2:"))
        .count();
    assert_eq!(lines, 1, "{stderr}");
}

/// The shortcut's hysteresis through the state machine, as Kapacitor's warnReset/critReset:
/// a level is entered above its threshold and left only below threshold − hysteresis.
#[test]
fn threshold_hysteresis_through_the_state_machine() {
    use wk_alerter::model::EventKind::{Alert, Recovery};
    use wk_alerter::model::Level;
    const S: i64 = 1_000_000_000;
    const NOW: i64 = 1_700_000_000 * S;
    use Level::{Critical as C, Ok as O, Warning as W};
    let rule = wk_alerter::rules::load_rule_source(
        "rules/test.rhai",
        "rule(#{ every: \"1s\" });\nfn check() {\n  let a = query(\"cpu\").field(\"v\").range(\"1s\").last().group_by(\"host\").run();\n  for s in a { s.above(80, 90, 5); }\n  a\n}\n",
    )
    .unwrap();
    let values = [81.0, 77.0, 74.0, 92.0, 87.0, 84.0, 79.0, 76.0, 74.0];
    let points = crate::common::alerter::points("cpu,host=a v", &values, NOW, S);
    let got: Vec<_> = app::replay(&rule, &points, Duration::ZERO)
        .into_iter()
        .flat_map(|step| step.events)
        .map(|(e, _)| (e.kind, e.level, (e.time - NOW) / S))
        .collect();
    assert_eq!(
        got,
        [
            (Alert, W, 0),    // 81 > 80
            (Recovery, O, 2), // 77 holds warn (not < 75); 74 resets
            (Alert, C, 3),    // 92 > 90
            (Alert, W, 5),    // 87 holds crit; 84 < 85 resets crit to warn (84 > 80)
            (Recovery, O, 8), // 79 and 76 hold warn; 74 < 75 resets
        ]
    );
}

/// POSTs line protocol to a stream receiver on `port`; the answer's status line.
fn post_write(port: u16, token: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /write?db=telegraf HTTP/1.1\r\nHost: x\r\nAuthorization: Token {token}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines().next().unwrap_or("").to_owned()
}

/// Issue 13: a restart in stream mode lost the whole window (rules saw no data until the
/// agents' next writes). Points written before a stop are seen by a rule after the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_in_stream_mode_keeps_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let token = "s3cret-token-for-tests";
    let port = wk_core::testing::free_port();
    let (conf, events) = write_alerter_conf(
        dir.path(),
        &format!(
            "[stream]\n  listen = \"127.0.0.1:{port}\"\n  token = \"{token}\"\n  window = \"1h\"\n"
        ),
    );
    let rules = dir.path().join("rules");
    let start = || Daemon::start(&conf);
    let stop = |d: Daemon| d.stop(Duration::from_secs(20));
    let listening = move || {
        let t0 = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(20), "not listening");
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    // First run: no rule yet; points of two hosts, some minutes old, over several chunks.
    let daemon = start();
    tokio::task::spawn_blocking(listening).await.unwrap();
    let now = wk_alerter::clock::now_ns();
    let mut body = String::new();
    for k in 0..300i64 {
        let t = now - (600 - k) * 1_000_000_000;
        body += &format!("mem,host=a used_percent={} {t}\n", 90.0 + k as f64 / 1000.0);
        body += &format!("mem,host=b used_percent=10.5 {t}\n");
    }
    let status = tokio::task::spawn_blocking(move || post_write(port, token, &body))
        .await
        .unwrap();
    assert!(status.contains("204"), "{status}");
    stop(daemon).await;
    let snap = dir
        .path()
        .join("state")
        .join(wk_alerter::stream::WINDOW_FILE);
    assert!(snap.exists(), "the window is saved at stop");

    // Second run: a rule over the last 15 minutes, and no new write.
    let mem_rule = crit_rule(
        r#"every: "1s", notify: ["log"], message: "{{host}} {{value}}""#,
        r#"query("mem").field("used_percent").range("15m").max().group_by("host")"#,
        "s.value > 50.0",
    );
    std::fs::write(rules.join("mem.rhai"), mem_rule).unwrap();
    let daemon = start();
    let fired = || event_at(&events, "mem", "CRITICAL");
    let (within, pause) = (Duration::from_secs(30), Duration::from_millis(100));
    poll_until_async(within, pause, || fired().is_some()).await;
    let event = fired().expect("the rule sees the points written before the restart");
    assert_eq!(event["tags"]["host"], "a", "{event}");
    // The newest point of host a, written before the restart.
    assert!(
        event["message"].as_str().unwrap().starts_with("a 90.299"),
        "{event}"
    );
    stop(daemon).await;

    // A damaged snapshot: a clear warning, an empty window, and the daemon runs.
    std::fs::write(&snap, b"WKWINDOW\x01 not a window").unwrap();
    let daemon = start();
    tokio::task::spawn_blocking(listening).await.unwrap();
    assert!(!daemon.running.is_finished());
    let mut aside = snap.clone().into_os_string();
    aside.push(".corrupt");
    assert!(std::path::Path::new(&aside).exists(), "kept aside");
    stop(daemon).await;
}

/// Regression: in stream mode the alerter is the source, and its window has a gap for the
/// time it was stopped. After a restart longer than a rule's range, every known host went
/// NoData at the first evaluation, before the agents had re-sent what they buffered. Now
/// NoData waits `source_recovery_grace` from the start, as after a database outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_in_stream_mode_is_no_nodata_storm() {
    let dir = tempfile::tempdir().unwrap();
    let token = "s3cret-token-for-tests";
    let port = wk_core::testing::free_port();
    let (conf, events) = write_alerter_conf(
        dir.path(),
        &format!("[stream]\n  listen = \"127.0.0.1:{port}\"\n  token = \"{token}\"\n"),
    );
    let conf_text = std::fs::read_to_string(&conf).unwrap();
    let conf_text = conf_text.replacen(
        "[alerter]\n",
        "[alerter]\n  source_recovery_grace = \"4s\"\n",
        1,
    );
    std::fs::write(&conf, conf_text).unwrap();
    let fresh = r#"
rule(#{ every: "1s", notify: ["log"] });
fn check() { query("mem").field("used_percent").range("2s").last().group_by("host").run() }
"#;
    std::fs::write(dir.path().join("rules").join("fresh.rhai"), fresh).unwrap();
    let write = move || {
        let t0 = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(20), "not listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        let now = wk_alerter::clock::now_ns();
        let status = post_write(port, token, &format!("mem,host=a used_percent=10 {now}\n"));
        assert!(status.contains("204"), "{status}");
    };
    let no_data = || {
        std::fs::read_to_string(&events)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"no_data\""))
            .count()
    };

    // First run: host a writes every 0.5 s, so the rule knows it (and saves it at the stop).
    let daemon = Daemon::start(&conf);
    for _ in 0..6 {
        tokio::task::spawn_blocking(write).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    daemon.stop(Duration::from_secs(20)).await;
    assert_eq!(no_data(), 0);

    // Stopped longer than the rule's range: at the start the window holds nothing recent.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let daemon = Daemon::start(&conf);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(no_data(), 0, "NoData within the grace after the start");
    // The agent does not come back: once the grace is over, the host goes NoData.
    let (within, pause) = (Duration::from_secs(20), Duration::from_millis(100));
    poll_until_async(within, pause, || no_data() == 1).await;
    assert_eq!(no_data(), 1);
    daemon.stop(Duration::from_secs(20)).await;
}
