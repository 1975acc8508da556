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
use wk_alerter::model::{AlertEvent, EventKind, Level, RuleSettings};
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
    let pattern = format!("http.server --bind 127.0.0.1 {port}");
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
    assert!(done.did.contains("started"), "{}", done.did);
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
    for p in wk_alerter::actions::restart_process::matching(std::path::Path::new("/proc"), &pattern)
    {
        kill(p.pid);
    }
}

fn kill(pid: i32) {
    let _ = Command::new("kill").arg(pid.to_string()).status();
}

fn event(tags: &[(&str, &str)]) -> AlertEvent {
    AlertEvent {
        rule: "squat".into(),
        id: "squat:x".into(),
        message: "port check failed".into(),
        details: String::new(),
        kind: EventKind::Alert,
        level: Level::Critical,
        previous_level: Level::Ok,
        tags: tags
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        fields: Default::default(),
        time: wk_alerter::clock::now_ns(),
        duration: Duration::from_secs(2),
        notify: vec!["log".into()],
        category: None,
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
    assert!(ran.before.contains(&format!("pid {}", squatter.id())));
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
