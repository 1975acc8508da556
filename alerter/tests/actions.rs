//! Recovery actions against real processes: free_port stops a real listener and names it,
//! restart_process restarts a real server, and the engine's whole path (alert → wait →
//! guarded action → settle → verify → one report through a real log notifier → audit log),
//! with injected tag values that must never run.

use std::net::TcpListener;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use wk_alerter::actions::engine::{Engine, RuleEntry};
use wk_alerter::actions::rule::ActionRule;
use wk_alerter::actions::{ActionsConfig, Args, Ctx, RawArg};
use wk_alerter::model::{AlertEvent, Level, RuleSettings};
use wk_alerter::notify::Router;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A python listener on `port` (the "squatter"), once it listens.
fn listener(port: u16) -> Child {
    let child = Command::new("python3")
        .args([
            "-c",
            "import socket,sys,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('127.0.0.1',int(sys.argv[1])))\ns.listen()\ntime.sleep(600)",
            &port.to_string(),
        ])
        .spawn()
        .unwrap();
    wait_until(|| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    child
}

fn wait_until(mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("condition not met in 10s");
}

fn args(one: &[(&str, &str)], lists: &[(&str, &[&str])]) -> Args {
    Args {
        one: one
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        lists: lists
            .iter()
            .map(|(k, v)| ((*k).into(), v.iter().map(|s| (*s).to_owned()).collect()))
            .collect(),
    }
}

#[tokio::test]
async fn free_port_names_and_stops_the_real_holder() {
    let port = free_port();
    let mut squatter = listener(port);
    let spec = wk_alerter::actions::find("free_port").unwrap();
    let a = (spec.build)(&args(&[("port", &port.to_string())], &[]));
    let ctx = Ctx::local();
    let done = a.run(&ctx).await;
    assert!(done.ok, "{done:?}");
    assert!(
        done.before.contains(&format!("pid {}", squatter.id())) && done.before.contains("python3"),
        "names the squatter: {}",
        done.before
    );
    assert!(done.before.contains("(user "), "{}", done.before);
    assert!(done.did.contains("exited after SIGTERM"), "{}", done.did);
    // The child is ours, so it is a zombie until reaped; wait() reaps it.
    let status = squatter.wait().unwrap();
    assert!(!status.success());
    let probe = a.probe(&ctx).await;
    assert_eq!(probe.healthy, Some(true), "{probe:?}");
}

#[tokio::test]
async fn restart_process_restarts_a_real_server() {
    let port = free_port();
    let mut old = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(|| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    // A decoy whose command line contains the server's, but does not start with it: the
    // anchored regular expression (matched against the whole command line, as pgrep -f)
    // leaves it alone. A substring match stopped it too.
    let mut decoy = Command::new("python3")
        .args([
            "-c",
            "import time; time.sleep(60)",
            &format!("python3 -m http.server --bind 127.0.0.1 {port}"),
        ])
        .spawn()
        .unwrap();
    // (`python3` may run as its full path: a pyenv shim execs the real one.)
    let pattern = format!(r"^(\S*/)?python3 -m http\.server --bind 127\.0\.0\.1 {port}$");
    let port_s = port.to_string();
    let start: Vec<&str> = vec![
        "python3",
        "-m",
        "http.server",
        "--bind",
        "127.0.0.1",
        &port_s,
    ];
    let spec = wk_alerter::actions::find("restart_process").unwrap();
    let a = (spec.build)(&args(
        &[("pattern", &pattern), ("port", &port_s)],
        &[("start", &start)],
    ));
    let ctx = Ctx::local();
    let done = a.run(&ctx).await;
    assert!(done.ok, "{done:?}");
    assert!(
        done.before.contains(&format!("pid {}", old.id())),
        "{}",
        done.before
    );
    assert!(
        !done.before.contains(&format!("pid {}", decoy.id())),
        "the decoy does not match: {}",
        done.before
    );
    assert!(done.did.contains("started"), "{}", done.did);
    assert!(decoy.try_wait().unwrap().is_none(), "the decoy still runs");
    let _ = decoy.kill();
    let _ = decoy.wait();
    old.wait().unwrap();
    // The new server needs a moment to listen (longer on a loaded machine).
    let mut probe = a.probe(&ctx).await;
    for _ in 0..60 {
        if probe.healthy == Some(true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        probe = a.probe(&ctx).await;
    }
    assert_eq!(probe.healthy, Some(true), "{probe:?}");
    assert!(probe.after.contains("answers"), "{}", probe.after);
    // Clean up the started server.
    let re = regex::Regex::new(&pattern).unwrap();
    for p in wk_alerter::actions::restart_process::matching(std::path::Path::new("/proc"), &re) {
        kill(p.pid);
    }
}

/// A start that dies at once (the port is taken) is reported with its exit status and the
/// end of its stderr, and the probe says not recovered.
#[tokio::test]
async fn a_start_that_dies_reports_its_exit_status_and_stderr() {
    let nonce = format!("wk-dies-at-once-{}", std::process::id());
    let script = "echo 'OSError: [Errno 98] Address already in use' >&2; exit 3";
    let start: Vec<&str> = vec!["sh", "-c", script, &nonce];
    let spec = wk_alerter::actions::find("restart_process").unwrap();
    let a = (spec.build)(&args(&[("pattern", &nonce)], &[("start", &start)]));
    let ctx = Ctx::local();
    let done = a.run(&ctx).await;
    assert!(done.ok && done.did.contains("started"), "{done:?}");
    let mut probe = a.probe(&ctx).await;
    for _ in 0..40 {
        if probe.exit_status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        probe = a.probe(&ctx).await;
    }
    assert_eq!(probe.exit_status, Some(3), "{probe:?}");
    assert_eq!(probe.healthy, Some(false), "{probe:?}");
    assert!(probe.stderr.contains("Address already in use"), "{probe:?}");
    assert!(probe.after.contains("exited with status 3"), "{probe:?}");

    // A launcher that daemonizes (exits 0 at once, its child runs on) is a normal start.
    let nonce = format!("wk-daemonizes-{}", std::process::id());
    let script = format!("sh -c 'sleep 30; : {nonce}' >/dev/null 2>&1 & exit 0");
    let start: Vec<&str> = vec!["sh", "-c", &script];
    let a = (spec.build)(&args(&[("pattern", &nonce)], &[("start", &start)]));
    assert!(a.run(&ctx).await.ok);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let probe = a.probe(&ctx).await;
    assert_eq!(probe.healthy, Some(true), "{probe:?}");
    assert_eq!(probe.exit_status, None, "{probe:?}");
    let _ = Command::new("pkill").args(["-f", &nonce]).status();
}

fn kill(pid: i32) {
    let _ = Command::new("kill").arg(pid.to_string()).status();
}

fn event(tags: &[(&str, &str)]) -> AlertEvent {
    AlertEvent {
        rule: "squat".into(),
        id: "squat:x".into(),
        message: "port check failed".into(),
        level: Level::Critical,
        tags: tags
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        time: wk_alerter::clock::now_ns(),
        duration: Duration::from_secs(2),
        notify: vec!["log".into()],
        ..Default::default()
    }
}

fn read_lines(p: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test]
async fn alert_to_guarded_action_to_one_report_and_audit_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("notify.log");
    let (plan, _) = wk_alerter::notify::load_str(
        "wk.conf",
        &format!("[[notifiers.log]]\nname = \"log\"\nfile = {log:?}\n"),
        &|_| None,
    )
    .unwrap();
    let router = Router::start(plan);
    let engine = Engine::new(
        ActionsConfig::default(),
        dir.path().into(),
        router.clone(),
        None,
    );
    let mut a = ActionRule {
        action: "free_port".into(),
        settle: Duration::from_millis(300),
        after: Duration::ZERO,
        ..ActionRule::default()
    };
    a.args
        .insert("port".into(), RawArg::One("{{tags.port}}".into()));
    engine.set_rules([RuleEntry {
        settings: RuleSettings {
            name: "squat".into(),
            notify: vec!["log".into()],
            actions: vec![a],
            ..RuleSettings::default()
        },
        rule: None,
    }]);
    let port = free_port();
    let mut squatter = listener(port);
    let marker = dir.path().join("X");
    // An injected value first: refused and reported, nothing runs.
    let mut bad = event(&[("port", &format!("80; touch {}", marker.display()))]);
    bad.id = "squat:bad".into();
    engine.handle(&[bad]);
    engine.handle(&[event(&[("port", &port.to_string())])]);
    let start = Instant::now();
    while engine.results().len() < 2 && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    router.flush().await;
    let results = engine.results();
    assert_eq!(results.len(), 2, "{results:?}");
    let refused = results.iter().find(|r| r.status == "refused").unwrap();
    assert!(refused.stderr.contains("refused"), "{refused:?}");
    assert!(!marker.exists());
    let ran = results.iter().find(|r| r.status == "ran").unwrap();
    assert!(ran.recovered, "{ran:?}");
    assert!(
        ran.before.contains(&format!("pid {}", squatter.id())),
        "{ran:?}"
    );
    squatter.wait().unwrap();
    // One report per attempt through the rule's notifier.
    let lines = read_lines(&log);
    let reports: Vec<_> = lines
        .iter()
        .filter(|l| l["id"] == "squat:x:actions")
        .collect();
    assert_eq!(reports.len(), 1, "{lines:?}");
    let details = reports[0]["details"].as_str().unwrap();
    assert!(
        details.contains("RECOVERED") && details.contains("timeline"),
        "{details}"
    );
    assert!(
        details.contains(&format!("pid {}", squatter.id())),
        "{details}"
    );
    // The audit log has both.
    let audit = read_lines(&dir.path().join("actions.log"));
    assert_eq!(audit.len(), 2);
}

fn guard_started(engine: &Engine, host: &str) -> bool {
    engine
        .guard()
        .targets
        .iter()
        .any(|(k, t)| k.starts_with(&format!("{host}|")) && !t.attempts.is_empty())
}

fn svc_point(host: &str, up: f64, time: i64) -> wk_core::metric::Metric {
    let mut m = wk_core::metric::Metric::new("svc", time);
    m.set_tag("host", host);
    m.add_field("up", up);
    m
}

/// `verify: "query"` re-runs the rule (a real Rhai rule over a MemorySource) after the
/// settle time: the instance whose data shows the service back after the action is
/// recovered; the one whose data does not is not.
#[tokio::test]
async fn verify_by_query_reruns_the_rule_on_the_data() {
    use std::sync::Arc;
    use wk_alerter::source::{MemorySource, QuerySource};
    let dir = tempfile::tempdir().unwrap();
    let rule = wk_alerter::rules::load_rule_source(
        "svc.rhai",
        r#"
rule(#{
    every: "1s",
    actions: [#{ action: "restart_process", pattern: "^wk-no-such-process-qq$", start: ["true"],
                 verify: "query", settle: "1s", cooldown: "1h", max_attempts: 1 }],
});
fn check() {
    let up = query("svc").field("up").range("1h").last().group_by("host").run();
    for s in up { s.crit(s.value < 1.0); }
    up
}
"#,
    )
    .unwrap();
    let now = wk_alerter::clock::now_ns();
    let data = Arc::new(MemorySource::new());
    for host in ["localhost", "web2"] {
        data.push(&svc_point(host, 0.0, now - 5_000_000_000));
    }
    let source: Arc<dyn QuerySource> = data.clone();
    let engine = Engine::new(
        ActionsConfig {
            local_hosts: vec!["web2".into()],
            ..ActionsConfig::default()
        },
        dir.path().into(),
        Router::start(Default::default()),
        Some(source),
    );
    engine.set_rules([RuleEntry {
        settings: rule.settings().clone(),
        rule: Some(Arc::new(rule)),
    }]);
    for host in ["localhost", "web2"] {
        let mut e = event(&[("host", host)]);
        e.rule = "svc".into();
        e.id = format!("svc:host={host}");
        engine.handle(&[e]);
    }
    // The action "fixes" localhost: once it started, the data says the service is up.
    let start = Instant::now();
    while !guard_started(&engine, "localhost") && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    data.push(&svc_point("localhost", 1.0, wk_alerter::clock::now_ns()));
    while engine.results().len() < 2 && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let results = engine.results();
    let by_host = |h: &str| results.iter().find(|r| r.host == h).unwrap().clone();
    let (fixed, broken) = (by_host("localhost"), by_host("web2"));
    assert_eq!(fixed.status, "ran");
    assert!(fixed.recovered, "{fixed:?}");
    assert!(fixed.after.contains("rule query: recovered"), "{fixed:?}");
    assert!(!broken.recovered, "{broken:?}");
    assert!(
        broken.after.contains("rule query: still firing"),
        "{broken:?}"
    );
}

/// Action results are recorded — in InfluxDB (`wk_actions`, written directly) and to the
/// `[actions] record` notifiers — even when a silence starts while the action runs: the
/// silence mutes the report to people, never the record. (Through the router, the record
/// event was silenced too, and nothing was written to InfluxDB.)
#[tokio::test]
async fn records_reach_influxdb_and_record_notifiers_inside_a_silence() {
    use wk_alerter::actions::record::RecordTarget;
    use wk_alerter::notify::silence::Silence;
    let Some(db) = crate::common::influxd::Influxd::start() else {
        return;
    };
    db.create_database("wk");
    let dir = tempfile::tempdir().unwrap();
    let (ops, rec) = (dir.path().join("ops.log"), dir.path().join("rec.log"));
    let (plan, _) = wk_alerter::notify::load_str(
        "wk.conf",
        &format!(
            "[[notifiers.log]]\nname = \"log\"\nfile = {ops:?}\n[[notifiers.log]]\nname = \"rec\"\nfile = {rec:?}\n"
        ),
        &|_| None,
    )
    .unwrap();
    let router = Router::start(plan);
    let engine = Engine::new(
        ActionsConfig {
            record: vec!["rec".into()],
            record_target: Some(RecordTarget {
                url: db.url.clone(),
                database: "wk".into(),
                retention_policy: String::new(),
                measurement: "wk_actions".into(),
                username: String::new(),
                password: String::new(),
                token: String::new(),
            }),
            ..ActionsConfig::default()
        },
        dir.path().into(),
        router.clone(),
        None,
    );
    let mut a = ActionRule {
        action: "free_port".into(),
        settle: Duration::from_secs(2),
        ..ActionRule::default()
    };
    a.args
        .insert("port".into(), RawArg::One("{{tags.port}}".into()));
    engine.set_rules([RuleEntry {
        settings: RuleSettings {
            name: "squat".into(),
            notify: vec!["log".into()],
            actions: vec![a],
            ..RuleSettings::default()
        },
        rule: None,
    }]);
    let port = free_port();
    let mut squatter = listener(port);
    engine.handle(&[event(&[("port", &port.to_string())])]);
    let start = Instant::now();
    while !guard_started(&engine, "") && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Maintenance starts while the action settles.
    router.set_silences(vec![Silence {
        matchers: vec![],
        starts: None,
        ends: i64::MAX,
        comment: "maintenance".into(),
    }]);
    while engine.results().is_empty() && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    squatter.wait().unwrap();
    router.flush().await;
    assert!(engine.results()[0].recovered, "{:?}", engine.results());
    assert!(
        read_lines(&ops).is_empty(),
        "the report to people is silenced"
    );
    assert!(router.stats().silenced >= 1);
    let recs = read_lines(&rec);
    assert_eq!(
        recs.len(),
        1,
        "the record notifier got the result: {recs:?}"
    );
    assert_eq!(recs[0]["id"], "squat:x:action:free_port");
    let mut body = String::new();
    while start.elapsed() < Duration::from_secs(30) {
        body = db
            .http("GET", "/query?db=wk&q=SELECT+*+FROM+wk_actions", "")
            .map(|(_, b)| b)
            .unwrap_or_default();
        if body.contains("free_port") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for want in [
        "\"result\"",
        "\"recovered\"",
        "\"free_port\"",
        &format!("port={port}"),
        "\"squat\"",
        "recovery_ms",
    ] {
        assert!(body.contains(want), "{want} in {body}");
    }
}
