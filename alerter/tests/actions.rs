//! Recovery actions against real processes: free_port stops a real listener and names it,
//! restart_process restarts a real server, and the engine's whole path (alert → wait →
//! guarded action → settle → verify → one report through a real log notifier → audit log),
//! with injected tag values that must never run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wk_alerter::actions::engine::{Engine, RuleEntry};
use wk_alerter::actions::rule::ActionRule;
use wk_alerter::actions::{ActionsConfig, Ctx, RawArg};
use wk_alerter::model::{AlertEvent, Level, RuleSettings};
use wk_alerter::notify::Router;

use crate::common::procs::{
    action, http_server_argv, http_server_pattern, kill_matching, listener, probe_until, reap,
    spawn, wait_listening,
};
use crate::common::wait::poll_until_async;
use wk_core::testing::free_port;

#[tokio::test]
async fn free_port_names_and_stops_the_real_holder() {
    let port = free_port();
    let mut squatter = listener(port);
    let a = action("free_port", &[("port", &port.to_string())], &[]);
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

/// Nothing held the port: nothing was done, and the probe does not call that a recovery
/// (with `verify = "auto"` the rule's query decides).
#[tokio::test]
async fn free_port_on_a_free_port_claims_no_recovery() {
    let port = free_port();
    let a = action("free_port", &[("port", &port.to_string())], &[]);
    let ctx = Ctx::local();
    let done = a.run(&ctx).await;
    assert!(done.before.contains("not held"), "{done:?}");
    let probe = a.probe(&ctx).await;
    assert_eq!(probe.healthy, None, "{probe:?}");
    assert!(probe.after.contains("nothing was stopped"), "{probe:?}");
}

/// A pid from a tag is checked before anything is stopped: never the alerter (here, the test
/// process) or one of its ancestors, and, with `name`, only a process of that name (a pid
/// reused by another program since the point was written is left alone). The probe of a
/// restart by pid: the old pid is gone and, with `name`, a process of that name runs that did
/// not before the action.
#[tokio::test]
async fn restart_process_by_pid_spares_the_alerter_and_checks_the_name() {
    let ctx = Ctx::local();
    let me = std::process::id().to_string();
    let parent = std::os::unix::process::parent_id().to_string();
    for pid in [&me, &parent] {
        let done = action("restart_process", &[("pid", pid)], &[])
            .run(&ctx)
            .await;
        assert!(
            done.before.contains("no matching process"),
            "pid {pid}: {done:?}"
        );
    }
    let mut target = spawn(&["sleep", "600"]);
    let other = spawn(&["sleep", "601"]);
    let pid = target.id().to_string();
    let done = action("restart_process", &[("pid", &pid), ("name", "nginx")], &[])
        .run(&ctx)
        .await;
    assert!(done.before.contains("no matching process"), "{done:?}");
    assert!(target.try_wait().unwrap().is_none(), "a sleep is no nginx");
    let a = action("restart_process", &[("pid", &pid), ("name", "sleep")], &[]);
    let done = a.run(&ctx).await;
    assert!(done.before.contains(&format!("pid {pid}")), "{done:?}");
    assert!(!target.wait().unwrap().success(), "stopped");
    // A process of that name that ran before the action proves no restart.
    let probe = a.probe(&ctx).await;
    assert_eq!(probe.healthy, Some(false), "{probe:?}");
    assert!(
        probe.after.contains(&format!("pid {pid} gone")),
        "{probe:?}"
    );
    // The supervisor starts it again: that one counts.
    let restarted = spawn(&["sleep", "602"]);
    let probe = a.probe(&ctx).await;
    assert_eq!(probe.healthy, Some(true), "{probe:?}");
    assert!(
        probe.after.contains(&format!("{}", restarted.id())),
        "{probe:?}"
    );
    assert!(
        !probe.after.contains(&format!("{}", other.id())),
        "{probe:?}"
    );
    reap(other);
    reap(restarted);
}

/// A pattern that matches more processes than `max_matches` (default 10) stops none of
/// them: the report says how many matched. Within the cap, all of them are stopped.
#[tokio::test]
async fn restart_process_refuses_a_pattern_that_matches_too_many() {
    let nonce = format!("wk-too-many-{}", std::process::id());
    let mut kids: Vec<_> = (0..3)
        .map(|_| spawn(&["sh", "-c", "sleep 600", &nonce]))
        .collect();
    let ctx = Ctx::local();
    let re = regex::Regex::new(&nonce).unwrap();
    let all_up = poll_until_async(Duration::from_secs(10), Duration::from_millis(20), || {
        wk_alerter::actions::restart_process::matching(&ctx.proc_root, &re).len() == 3
    })
    .await;
    assert!(all_up, "the three processes started");
    let done = action(
        "restart_process",
        &[("pattern", &nonce), ("max_matches", "2")],
        &[],
    )
    .run(&ctx)
    .await;
    assert!(done.refused && !done.ok, "{done:?}");
    assert!(done.stderr.contains("3 processes match"), "{done:?}");
    for k in &mut kids {
        assert!(k.try_wait().unwrap().is_none(), "nothing was stopped");
    }
    let done = action(
        "restart_process",
        &[("pattern", &nonce), ("max_matches", "3")],
        &[],
    )
    .run(&ctx)
    .await;
    assert!(!done.refused, "{done:?}");
    for k in &mut kids {
        assert!(!k.wait().unwrap().success(), "stopped");
    }
}

#[tokio::test]
async fn restart_process_restarts_a_real_server() {
    let port = free_port();
    let port_s = port.to_string();
    let start = http_server_argv(&port_s);
    let mut old = spawn(&start);
    wait_listening(port);
    // A decoy whose command line contains the server's, but does not start with it: the
    // anchored regular expression (matched against the whole command line, as pgrep -f)
    // leaves it alone. A substring match stopped it too.
    let mut decoy = spawn(&[
        "python3",
        "-c",
        "import time; time.sleep(60)",
        &start.join(" "),
    ]);
    let pattern = http_server_pattern(port);
    let a = action(
        "restart_process",
        &[("pattern", &pattern), ("port", &port_s)],
        &[("start", &start)],
    );
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
    reap(decoy);
    old.wait().unwrap();
    let pause = Duration::from_millis(250);
    let probe = probe_until(&*a, &ctx, 60, pause, |p| p.healthy == Some(true)).await;
    assert_eq!(probe.healthy, Some(true), "{probe:?}");
    assert!(probe.after.contains("answers"), "{}", probe.after);
    kill_matching(&pattern); // the started server
}

/// A start that dies at once (the port is taken) is reported with its exit status and the
/// end of its stderr, and the probe says not recovered.
#[tokio::test]
async fn a_start_that_dies_reports_its_exit_status_and_stderr() {
    let nonce = format!("wk-dies-at-once-{}", std::process::id());
    let script = "echo 'OSError: [Errno 98] Address already in use' >&2; exit 3";
    let start: Vec<&str> = vec!["sh", "-c", script, &nonce];
    let a = action(
        "restart_process",
        &[("pattern", &nonce)],
        &[("start", &start)],
    );
    let ctx = Ctx::local();
    let done = a.run(&ctx).await;
    assert!(done.ok && done.did.contains("started"), "{done:?}");
    let pause = Duration::from_millis(100);
    let probe = probe_until(&*a, &ctx, 40, pause, |p| p.exit_status.is_some()).await;
    assert_eq!(probe.exit_status, Some(3), "{probe:?}");
    assert_eq!(probe.healthy, Some(false), "{probe:?}");
    assert!(probe.stderr.contains("Address already in use"), "{probe:?}");
    assert!(probe.after.contains("exited with status 3"), "{probe:?}");

    // A launcher that daemonizes (exits 0 at once, its child runs on) is a normal start.
    let nonce = format!("wk-daemonizes-{}", std::process::id());
    let script = format!("sh -c 'sleep 30; : {nonce}' >/dev/null 2>&1 & exit 0");
    let start: Vec<&str> = vec!["sh", "-c", &script];
    let a = action(
        "restart_process",
        &[("pattern", &nonce)],
        &[("start", &start)],
    );
    assert!(a.run(&ctx).await.ok);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let probe = a.probe(&ctx).await;
    assert_eq!(probe.healthy, Some(true), "{probe:?}");
    assert_eq!(probe.exit_status, None, "{probe:?}");
    let _ = std::process::Command::new("pkill")
        .args(["-f", &nonce])
        .status();
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
    let (router, [log]) = log_router(dir.path(), ["log"]);
    let squat = ActionRule {
        settle: Duration::from_millis(300),
        after: Duration::ZERO,
        ..free_port_action()
    };
    let engine = squat_engine(dir.path(), ActionsConfig::default(), &router, squat);
    let port = free_port();
    let mut squatter = listener(port);
    let marker = dir.path().join("X");
    // An injected value first: refused and reported, nothing runs.
    let mut bad = event(&[("port", &format!("80; touch {}", marker.display()))]);
    bad.id = "squat:bad".into();
    engine.handle(&[bad]);
    engine.handle(&[event(&[("port", &port.to_string())])]);
    poll_until_async(SECS_20, PAUSE, || engine.results().len() >= 2).await;
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

/// Waits (10 s at most) until the engine's guard counts an attempt on a target whose key
/// (host it ran on | action | target) holds `needle`.
async fn started(engine: &Engine, needle: &str) {
    poll_until_async(Duration::from_secs(10), Duration::from_millis(20), || {
        engine
            .guard()
            .targets
            .iter()
            .any(|(k, t)| k.contains(needle) && !t.attempts.is_empty())
    })
    .await;
}

const SECS_20: Duration = Duration::from_secs(20);
const PAUSE: Duration = Duration::from_millis(100);

/// A router with one log notifier per name of `names`, writing to `dir/NAME.log`; the files.
fn log_router<const N: usize>(dir: &Path, names: [&str; N]) -> (Router, [PathBuf; N]) {
    let files = names.map(|n| dir.join(format!("{n}.log")));
    let toml: String = names
        .iter()
        .zip(&files)
        .map(|(n, f)| format!("[[notifiers.log]]\nname = \"{n}\"\nfile = {f:?}\n"))
        .collect();
    let (plan, _) = wk_alerter::notify::load_str("wk.conf", &toml, &|_| None).unwrap();
    (Router::start(plan), files)
}

/// `free_port` on the port in the alert's `port` tag.
fn free_port_action() -> ActionRule {
    let mut a = ActionRule {
        action: "free_port".into(),
        ..ActionRule::default()
    };
    a.args
        .insert("port".into(), RawArg::One("{{tags.port}}".into()));
    a
}

/// An engine (audit log in `dir`) whose rule `squat`, notifying `log`, runs `action`.
fn squat_engine(dir: &Path, config: ActionsConfig, router: &Router, action: ActionRule) -> Engine {
    let engine = Engine::new(config, dir.into(), router.clone(), None);
    engine.set_rules([RuleEntry {
        settings: RuleSettings {
            name: "squat".into(),
            notify: vec!["log".into()],
            actions: vec![action],
            ..RuleSettings::default()
        },
        rule: None,
    }]);
    engine
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
    actions: [#{ action: "restart_process", pattern: "^wk-no-such-process-{{host}}$", start: ["true"],
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
    for host in ["localhost", "web2", "web3", "web4"] {
        data.push(&svc_point(host, 0.0, now - 5_000_000_000));
    }
    let source: Arc<dyn QuerySource> = data.clone();
    let engine = Engine::new(
        ActionsConfig {
            local_hosts: ["localhost", "web2", "web3", "web4"]
                .map(String::from)
                .into(),
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
    for host in ["localhost", "web2", "web3", "web4"] {
        let mut e = event(&[("host", host)]);
        e.rule = "svc".into();
        e.id = format!("svc:host={host}");
        engine.handle(&[e]);
    }
    // The action "fixes" localhost: once it started, the data says the service is up. web2's
    // data after the action says it is still down; web3 sends nothing after the action, and
    // its last point (from before) is no verdict either way.
    // (Each host's pattern names it: all four run here, on one host, so one pattern would
    // be one target, acted on once.)
    for host in ["localhost", "web2"] {
        started(&engine, host).await;
    }
    data.push(&svc_point("localhost", 1.0, wk_alerter::clock::now_ns()));
    data.push(&svc_point("web2", 0.0, wk_alerter::clock::now_ns()));
    // web4's data after the action arrives late (after `settle`): the query is asked again.
    started(&engine, "web4").await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    data.push(&svc_point("web4", 1.0, wk_alerter::clock::now_ns()));
    poll_until_async(SECS_20, PAUSE, || engine.results().len() >= 4).await;
    let results = engine.results();
    let late = by_host_in(&results, "web4");
    assert!(late.recovered, "{late:?}");
    let by_host = |h: &str| by_host_in(&results, h);
    let (fixed, broken, silent) = (by_host("localhost"), by_host("web2"), by_host("web3"));
    assert!(!silent.recovered, "{silent:?}");
    assert!(
        silent
            .after
            .contains("rule query: no data since the action"),
        "{silent:?}"
    );
    assert_eq!(fixed.status, "ran");
    assert!(fixed.recovered, "{fixed:?}");
    assert!(fixed.after.contains("rule query: recovered"), "{fixed:?}");
    assert!(!broken.recovered, "{broken:?}");
    assert!(
        broken.after.contains("rule query: still firing"),
        "{broken:?}"
    );
}

fn by_host_in(
    results: &[wk_alerter::actions::ActionResult],
    host: &str,
) -> wk_alerter::actions::ActionResult {
    results.iter().find(|r| r.host == host).unwrap().clone()
}

/// Action results are recorded — in InfluxDB (`wk_actions`, written directly) and to the
/// `[actions] record` notifiers — even when a silence starts while the action runs: the
/// silence mutes the report to people, never the record. (Through the router, the record
/// event was silenced too, and nothing was written to InfluxDB.)
#[tokio::test]
async fn records_reach_influxdb_and_record_notifiers_inside_a_silence() {
    use wk_alerter::actions::config::RecordOptions;
    use wk_alerter::notify::silence::Silence;
    let Some(db) = crate::common::influxd::Influxd::start() else {
        return;
    };
    db.create_database("wk");
    let dir = tempfile::tempdir().unwrap();
    let (router, [ops, rec]) = log_router(dir.path(), ["log", "rec"]);
    let mut config = ActionsConfig {
        record: vec!["rec".into()],
        record_options: RecordOptions {
            url: db.url.clone(),
            database: "wk".into(),
            measurement: "wk_actions".into(),
            ..RecordOptions::default()
        },
        ..ActionsConfig::default()
    };
    config.resolve_record(None);
    let squat = ActionRule {
        settle: Duration::from_secs(2),
        ..free_port_action()
    };
    let engine = squat_engine(dir.path(), config, &router, squat);
    let port = free_port();
    let mut squatter = listener(port);
    engine.handle(&[event(&[("port", &port.to_string())])]);
    let start = Instant::now();
    started(&engine, "").await;
    // Maintenance starts while the action settles.
    router.set_silences(vec![Silence {
        matchers: vec![],
        starts: None,
        ends: i64::MAX,
        comment: "maintenance".into(),
    }]);
    poll_until_async(SECS_20, PAUSE, || !engine.results().is_empty()).await;
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
