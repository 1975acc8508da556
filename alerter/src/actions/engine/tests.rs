use std::time::Duration;

use super::*;
use crate::actions::RawArg;
use crate::actions::rule::ActionRule;
use crate::notify::NotifyPlan;

fn event(rule: &str, level: Level, tags: &[(&str, &str)]) -> AlertEvent {
    AlertEvent {
        rule: rule.into(),
        id: format!("{rule}:x"),
        message: "down".into(),
        level,
        tags: tags
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        time: crate::clock::now_ns(),
        ..Default::default()
    }
}

fn never_recovers() -> ActionRule {
    let mut a = ActionRule {
        action: "restart_process".into(),
        max_attempts: 2,
        window: Duration::from_secs(3600),
        cooldown: Duration::from_secs(60),
        settle: Duration::from_secs(5),
        after: Duration::from_secs(30),
        ..ActionRule::default()
    };
    a.args.insert(
        "pattern".into(),
        RawArg::One("wk-no-such-process-zz".into()),
    );
    a.args
        .insert("start".into(), RawArg::List(vec!["true".into()]));
    a
}

fn engine(dir: &std::path::Path, actions: Vec<ActionRule>) -> Engine {
    let e = Engine::new(
        ActionsConfig::default(),
        dir.to_owned(),
        Router::start(NotifyPlan::default()),
        None,
    );
    e.set_rules([RuleEntry {
        settings: RuleSettings {
            name: "r".into(),
            actions,
            ..RuleSettings::default()
        },
        rule: None,
    }]);
    e
}

/// Waits for `n` results: up to 1,000 s of the test's clock (paused tests advance it at
/// once), and 2 min of real time, so that an engine that never acts fails, not hangs.
async fn settle(e: &Engine, n: usize) {
    let real = std::time::Instant::now();
    for _ in 0..10_000 {
        if e.results().len() >= n {
            return;
        }
        if real.elapsed() > Duration::from_secs(120) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("only {:?}", e.results());
}

#[tokio::test(start_paused = true)]
async fn waits_after_then_at_most_n_attempts_then_pages_once() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), vec![never_recovers()]);
    e.handle(&[event("r", Level::Critical, &[])]);
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert!(e.results().is_empty(), "nothing before `after`");
    settle(&e, 3).await;
    let r = e.results();
    let st: Vec<&str> = r.iter().map(|r| r.status.as_str()).collect();
    assert_eq!(st, ["ran", "ran", "gave_up"]);
    assert!(!r[0].recovered && !r[1].recovered);
    assert_eq!((r[0].attempt, r[1].attempt), (1, 2));
    let gap = r[1].started_ns - r[0].finished_ns;
    assert!(gap >= 60_000_000_000, "cooldown respected: {gap}");
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(e.results().len(), 3, "paged once, then silent");
    // The budget survives a restart: a new engine over the same state dir runs nothing, and
    // does not page again for the window already paged. It shows what the last run did
    // (from the audit log).
    let e2 = engine(dir.path(), vec![never_recovers()]);
    assert_eq!(e2.results(), r, "the last run's results, restored");
    e2.handle(&[event("r", Level::Critical, &[])]);
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(e2.results(), r, "nothing run, nobody paged twice");
}

/// "No more actions until the window frees up": the alert still firing then, the repair is
/// tried again, and a spent budget pages again.
#[tokio::test(start_paused = true)]
async fn a_spent_budget_is_tried_again_when_its_window_frees_up() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), vec![never_recovers()]);
    e.handle(&[event("r", Level::Critical, &[])]);
    settle(&e, 3).await;
    let first = e.results()[0].started_ns;
    tokio::time::sleep(Duration::from_secs(3600)).await;
    settle(&e, 6).await;
    let r = e.results();
    let st: Vec<&str> = r.iter().map(|r| r.status.as_str()).collect();
    assert_eq!(
        st[..6],
        ["ran", "ran", "gave_up", "ran", "ran", "gave_up"],
        "{st:?}"
    );
    assert!(
        r[3].started_ns >= first + 3_600_000_000_000,
        "not before the window"
    );
    // Each run when one attempt has left the window (the first, then the second).
    assert_eq!((r[3].attempt, r[4].attempt), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn a_recovery_before_after_cancels() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), vec![never_recovers()]);
    e.handle(&[event("r", Level::Critical, &[])]);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut ok = event("r", Level::Ok, &[]);
    ok.kind = EventKind::Recovery;
    e.handle(&[ok]);
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert!(e.results().is_empty());
}

#[tokio::test(start_paused = true)]
async fn injected_tag_values_are_refused_never_run() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("X");
    let mut a = ActionRule {
        action: "restart_service".into(),
        ..ActionRule::default()
    };
    a.args
        .insert("unit".into(), RawArg::One("{{tags.service}}".into()));
    let e = engine(dir.path(), vec![a]);
    for (i, payload) in [
        format!("nginx; touch {}", marker.display()),
        "$(id)".into(),
        "`id`".into(),
        "a\nb".into(),
        "--help".into(),
    ]
    .iter()
    .enumerate()
    {
        let mut ev = event("r", Level::Critical, &[("service", payload)]);
        ev.id = format!("r:{i}");
        e.handle(&[ev]);
    }
    settle(&e, 5).await;
    for r in e.results() {
        assert_eq!(r.status, "refused", "{r:?}");
        assert!(r.commands.is_empty());
    }
    assert!(!marker.exists());
}

#[tokio::test(start_paused = true)]
async fn dry_run_says_what_it_would_do_and_spends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = never_recovers();
    a.dry_run = true;
    let e = engine(dir.path(), vec![a]);
    e.handle(&[event("r", Level::Critical, &[])]);
    settle(&e, 1).await;
    let r = &e.results()[0];
    assert_eq!(r.status, "dry_run");
    assert!(r.did.contains("would run on local"), "{}", r.did);
    assert!(e.guard().targets.values().all(|t| t.attempts.is_empty()));
}

#[tokio::test(start_paused = true)]
async fn unknown_hosts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), vec![never_recovers()]);
    e.handle(&[event("r", Level::Critical, &[("host", "elsewhere-zz")])]);
    settle(&e, 1).await;
    assert_eq!(e.results()[0].status, "refused");
    assert!(e.results()[0].stderr.contains("[[actions.ssh]]"));
}

/// A rule whose only action is a diagnosis: a repeat of its alert is the same episode, so the
/// diagnosis does not run again; a higher level is news, and runs it.
#[tokio::test(start_paused = true)]
async fn a_repeat_of_the_alert_does_not_run_a_diagnosis_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut top = ActionRule {
        action: "top_processes".into(),
        on: Level::Warning,
        ..ActionRule::default()
    };
    top.args.insert("by".into(), RawArg::One("memory".into()));
    top.args.insert("n".into(), RawArg::One("3".into()));
    let e = engine(dir.path(), vec![top]);
    e.handle(&[event("r", Level::Warning, &[])]);
    settle(&e, 1).await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(300)).await;
        e.handle(&[event("r", Level::Warning, &[])]);
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(e.results().len(), 1, "{:?}", e.results());
    // The rise is the engine's to tell: its report carries it (one message, not two).
    assert_eq!(e.handle(&[event("r", Level::Critical, &[])]), [true]);
    settle(&e, 2).await;
    assert_eq!(e.results()[1].status, "diagnosed");
}

fn top(n: &str) -> ActionRule {
    let mut top = ActionRule {
        action: "top_processes".into(),
        on: Level::Warning,
        ..ActionRule::default()
    };
    top.args.insert("by".into(), RawArg::One("memory".into()));
    top.args.insert("n".into(), RawArg::One(n.into()));
    top
}

/// The alert of a dormant episode was announced: a rise held for the report, then the
/// alert's recovery before the report came, must not swallow the recovery.
#[tokio::test(start_paused = true)]
async fn a_recovery_right_after_a_held_rise_goes_out() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), vec![top("3")]);
    e.handle(&[event("r", Level::Warning, &[])]);
    settle(&e, 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        e.handle(&[event("r", Level::Critical, &[])]),
        [true],
        "held"
    );
    assert_eq!(e.handle(&[recovery("r")]), [false], "the recovery is news");
}

/// A dormant episode (nothing left to do) still sees what matters: a reload that gives the
/// rule new actions, and a level that drops and rises back.
#[tokio::test(start_paused = true)]
async fn a_dormant_episode_sees_a_reload_and_a_drop_and_rise() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), vec![top("3")]);
    e.handle(&[event("r", Level::Critical, &[])]);
    settle(&e, 1).await;
    // A reload adds an action: run within the recheck, the first again with it.
    let mut rule = read(&e.inner.rules).get("r").cloned().unwrap();
    rule.settings.actions.push(top("5"));
    e.set_rules([rule]);
    settle(&e, 3).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(e.results().len(), 3, "then dormant again");
    // Down to WARNING (still firing), back up to CRITICAL: a rise.
    e.handle(&[event("r", Level::Warning, &[])]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    e.handle(&[event("r", Level::Critical, &[])]);
    settle(&e, 5).await;
}

/// With `recoveries = false` the engine never hears the alert end: no dormant episode (it
/// would swallow the next fault); each firing starts its own, as before.
#[tokio::test(start_paused = true)]
async fn without_recoveries_an_episode_ends_when_nothing_is_left_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), vec![top("3")]);
    let mut rule = read(&e.inner.rules).get("r").cloned().unwrap();
    rule.settings.recoveries = false;
    e.set_rules([rule]);
    e.handle(&[event("r", Level::Warning, &[])]);
    settle(&e, 1).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    e.handle(&[event("r", Level::Warning, &[])]);
    settle(&e, 2).await;
}

/// Regression (the demo's second fault, fresh-clone CI): free_port looked before the squatter
/// had bound the port, found nothing to do, and was never looked at again in the episode,
/// while restart_process failed on the held port at every attempt. A repair with nothing to
/// do looks again at the next attempt.
#[tokio::test(start_paused = true)]
async fn a_repair_with_nothing_to_do_looks_again_at_the_next_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let [port] = wk_core::testing::free_ports::<1>();
    let mut fp = ActionRule {
        action: "free_port".into(),
        settle: Duration::from_secs(1),
        ..ActionRule::default()
    };
    fp.args.insert("port".into(), RawArg::One(port.to_string()));
    let e = engine(dir.path(), vec![fp, never_recovers()]);
    e.handle(&[event("r", Level::Critical, &[])]);
    settle(&e, 2).await;
    assert_eq!(e.results()[0].status, "nothing_to_do");
    // The squatter binds now (real time: the runtime is held while it starts).
    let mut squatter = std::process::Command::new("python3")
        .args([
            "-c",
            &format!(
                "import socket,time; s=socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(60)"
            ),
        ])
        .spawn()
        .unwrap();
    let real = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            real.elapsed() < Duration::from_secs(10),
            "squatter never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    settle(&e, 4).await;
    let r = e.results();
    let _ = squatter.kill();
    let _ = squatter.wait();
    assert_eq!(
        (r[2].action.as_str(), r[2].status.as_str()),
        ("free_port", "ran"),
        "{r:?}"
    );
    assert!(r[2].recovered, "{r:?}");
}

/// Regression: report-only actions (top_processes) were retried after every cooldown while the
/// alert kept firing, spent the repair budget and ended in a "gave up" page. A diagnosis runs
/// once per firing episode, beside the repairs.
#[tokio::test(start_paused = true)]
async fn a_diagnosis_runs_once_per_episode_and_spends_no_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut top = ActionRule {
        action: "top_processes".into(),
        cooldown: Duration::from_secs(60),
        settle: Duration::from_secs(1),
        ..ActionRule::default()
    };
    top.args.insert("by".into(), RawArg::One("memory".into()));
    top.args.insert("n".into(), RawArg::One("3".into()));
    let e = engine(dir.path(), vec![top, never_recovers()]);
    e.handle(&[event("r", Level::Critical, &[])]);
    settle(&e, 4).await;
    tokio::time::sleep(Duration::from_secs(900)).await;
    let st: Vec<String> = e.results().iter().map(|r| r.status.clone()).collect();
    assert_eq!(
        st,
        ["diagnosed", "ran", "ran", "gave_up"],
        "the diagnosis once, the repair up to its budget"
    );
}

/// A diagnosis listed after the repair still runs first (it reports the state the repair is
/// about to change), and both are in the one report of the first attempt.
#[tokio::test(start_paused = true)]
async fn a_diagnosis_runs_before_the_repair_and_shares_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let mut top = ActionRule {
        action: "top_processes".into(),
        ..ActionRule::default()
    };
    top.args.insert("by".into(), RawArg::One("memory".into()));
    let e = engine(dir.path(), vec![never_recovers(), top]);
    e.handle(&[event("r", Level::Critical, &[])]);
    settle(&e, 2).await;
    let r = e.results();
    assert_eq!(
        [r[0].status.as_str(), r[1].status.as_str()],
        ["diagnosed", "ran"],
        "{r:?}"
    );
    let text = report_text(&event("r", Level::Critical, &[]), &r[..2]);
    let (diag, repair) = (
        text.find("top_processes").unwrap(),
        text.find("restart_process").unwrap(),
    );
    assert!(diag < repair, "{text}");
    assert!(
        r[0].before.contains("top 5 by memory"),
        "the diagnosis output is in the report: {}",
        r[0].before
    );
}

/// A `restart_process` that works: starts a shell whose command line carries a nonce.
fn restarts(nonce: &str) -> ActionRule {
    let mut a = ActionRule {
        action: "restart_process".into(),
        settle: Duration::from_millis(300),
        ..ActionRule::default()
    };
    a.args.insert("pattern".into(), RawArg::One(nonce.into()));
    a.args.insert(
        "start".into(),
        RawArg::List(vec![
            "sh".into(),
            "-c".into(),
            "sleep 60; :".into(),
            nonce.into(),
        ]),
    );
    a
}

/// Stops what [`restarts`] started for these nonces.
fn kill_started(nonces: &[&str]) {
    for n in nonces {
        let _ = std::process::Command::new("pkill").args(["-f", n]).status();
    }
}

fn recovery(rule: &str) -> AlertEvent {
    let mut ok = event(rule, Level::Ok, &[]);
    ok.kind = EventKind::Recovery;
    ok
}

/// One incident, one message: the alert the engine acts on at once is held back (and its
/// repeats), the report carries it; the recovery a report already announced is not sent.
#[tokio::test]
async fn the_report_is_the_one_message_of_an_incident() {
    let dir = tempfile::tempdir().unwrap();
    let nonce = format!("wk-one-message-{}", std::process::id());
    let e = engine(dir.path(), vec![restarts(&nonce)]);
    assert_eq!(e.handle(&[event("r", Level::Critical, &[])]), [true]);
    assert_eq!(
        e.handle(&[event("r", Level::Critical, &[])]),
        [true],
        "a repeat waits for the report"
    );
    settle(&e, 1).await;
    assert!(e.results()[0].recovered, "{:?}", e.results());
    assert_eq!(
        e.handle(&[recovery("r")]),
        [true],
        "the report said recovered"
    );
    // The next incident: the same, and a recovery after a report that said NOT recovered
    // is news.
    let mut a = never_recovers();
    a.after = Duration::ZERO;
    a.settle = Duration::from_millis(100);
    let e2 = engine(&dir.path().join("2"), vec![a]);
    assert_eq!(e2.handle(&[event("r", Level::Critical, &[])]), [true]);
    settle(&e2, 1).await;
    assert!(!e2.results()[0].recovered);
    assert_eq!(e2.handle(&[recovery("r")]), [false]);
    // With `after`, people hear of the fault at once; a recovery before acting goes out too.
    let e3 = engine(&dir.path().join("3"), vec![never_recovers()]);
    assert_eq!(e3.handle(&[event("r", Level::Critical, &[])]), [false]);
    assert_eq!(e3.handle(&[recovery("r")]), [false]);
    kill_started(&[&nonce]);
}

/// `[actions] enabled = false` by a reload stops the episodes already running: no more
/// attempts after the next cooldown (they went on to the end of their budget).
#[tokio::test(start_paused = true)]
async fn disabling_actions_stops_running_episodes() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), vec![never_recovers()]);
    e.handle(&[event("r", Level::Critical, &[])]);
    settle(&e, 1).await;
    e.set_config(ActionsConfig {
        enabled: false,
        ..ActionsConfig::default()
    });
    tokio::time::sleep(Duration::from_secs(900)).await;
    let st: Vec<String> = e.results().iter().map(|r| r.status.clone()).collect();
    assert_eq!(st, ["ran"], "no attempt after actions were disabled");
}

/// An action refused (a tag value that does not fit) is reported once; the rule's other
/// repairs are still retried within their budget (the refusal used to end the episode).
#[tokio::test(start_paused = true)]
async fn a_refused_action_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let mut bad = ActionRule {
        action: "restart_service".into(),
        ..ActionRule::default()
    };
    bad.args
        .insert("unit".into(), RawArg::One("{{tags.service}}".into()));
    let e = engine(dir.path(), vec![bad, never_recovers()]);
    e.handle(&[event("r", Level::Critical, &[("service", "a;b")])]);
    settle(&e, 4).await;
    tokio::time::sleep(Duration::from_secs(900)).await;
    let st: Vec<String> = e.results().iter().map(|r| r.status.clone()).collect();
    assert_eq!(st, ["refused", "ran", "ran", "gave_up"]);
}

/// The alert recovers while its action runs, and the verification then says "not
/// recovered": the report goes out, and the recovery after it (it was swallowed, and the
/// last message people had was the CRITICAL report).
#[tokio::test(start_paused = true)]
async fn a_recovery_during_an_attempt_follows_a_not_recovered_report() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.log");
    let toml = format!("[[notifiers.log]]\nname = \"log\"\nfile = {log:?}\n");
    let (plan, _) = crate::notify::load_str("wk.conf", &toml, &|_| None).unwrap();
    let router = Router::start(plan);
    let e = Engine::new(
        ActionsConfig::default(),
        dir.path().to_owned(),
        router.clone(),
        None,
    );
    let mut a = never_recovers();
    a.after = Duration::ZERO;
    e.set_rules([RuleEntry {
        settings: RuleSettings {
            name: "r".into(),
            notify: vec!["log".into()],
            actions: vec![a],
            ..RuleSettings::default()
        },
        rule: None,
    }]);
    let mut alert = event("r", Level::Critical, &[]);
    alert.notify = vec!["log".into()];
    assert_eq!(e.handle(&[alert]), [true], "held for the report");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut ok = recovery("r");
    ok.notify = vec!["log".into()];
    assert_eq!(e.handle(&[ok]), [true], "held until the report is out");
    settle(&e, 1).await;
    assert!(!e.results()[0].recovered);
    let mut sent = Vec::new();
    for _ in 0..100 {
        sent = router
            .history()
            .iter()
            .map(|d| (d.id.clone(), d.kind.clone()))
            .collect();
        if sent.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ids: Vec<&str> = sent.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["r:x:actions", "r:x"], "{sent:?}");
}

/// The alert recovers and fires again while the first episode's action still runs: the
/// first report, late and "recovered", must not speak for the second episode (it did: the
/// second alert went out, and its recovery was then swallowed as "already announced").
#[tokio::test]
async fn a_late_report_leaves_the_next_episode_alone() {
    let dir = tempfile::tempdir().unwrap();
    let nonce = format!("wk-late-report-{}", std::process::id());
    let mut a = restarts(&nonce);
    a.settle = Duration::from_millis(800);
    let e = engine(dir.path(), vec![a]);
    assert_eq!(e.handle(&[event("r", Level::Critical, &[])]), [true]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(e.handle(&[recovery("r")]), [true], "held until the report");
    e.handle(&[event("r", Level::Critical, &[])]);
    settle(&e, 1).await;
    assert!(e.results()[0].recovered, "{:?}", e.results());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        e.handle(&[recovery("r")]),
        [false],
        "the second episode's recovery is news"
    );
    kill_started(&[&nonce]);
}

/// A tag that names the alerter's own service is refused before anything runs, dry run or
/// not: the restart would kill the alerter in the middle of the action.
#[tokio::test(start_paused = true)]
async fn restarting_the_alerters_own_service_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = ActionRule {
        action: "restart_service".into(),
        dry_run: true,
        ..ActionRule::default()
    };
    a.args
        .insert("unit".into(), RawArg::One("{{tags.service}}".into()));
    let e = engine(dir.path(), vec![a]);
    e.handle(&[event("r", Level::Critical, &[("service", "wk-alerter")])]);
    settle(&e, 1).await;
    let r = &e.results()[0];
    assert_eq!(r.status, "refused", "{r:?}");
    assert!(r.stderr.contains("own service"), "{}", r.stderr);
}

/// One repair recovers while another waits for its cooldown: the attempt is not over (it
/// was: "recovered", and the waiting repair never ran while the alert went on firing).
#[tokio::test]
async fn a_repair_in_its_cooldown_is_tried_when_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (n1, n2) = (
        format!("wk-cool-a-{}", std::process::id()),
        format!("wk-cool-b-{}", std::process::id()),
    );
    let mut a1 = restarts(&n1);
    a1.cooldown = Duration::ZERO;
    let mut a2 = restarts(&n2);
    a2.cooldown = Duration::from_secs(3);
    let e = engine(dir.path(), vec![a1, a2]);
    e.handle(&[event("r", Level::Critical, &[])]);
    settle(&e, 2).await;
    e.handle(&[recovery("r")]);
    // It fires again at once: the second repair is in its cooldown.
    e.handle(&[event("r", Level::Critical, &[])]);
    settle(&e, 4).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let first: Vec<String> = e
        .results()
        .iter()
        .filter(|r| r.args.contains(&n1))
        .map(|r| r.status.clone())
        .collect();
    assert_eq!(
        first,
        ["ran", "ran"],
        "verified, not run again for the other: {:?}",
        e.results()
    );
    let second: Vec<String> = e
        .results()
        .iter()
        .filter(|r| r.args.contains(&n2))
        .map(|r| r.status.clone())
        .collect();
    assert_eq!(second, ["ran", "ran"], "{:?}", e.results());
    assert!(
        e.results().iter().all(|r| r.status != "waiting"),
        "not recorded"
    );
    kill_started(&[&n1, &n2]);
}

/// Regression: a repair waiting for its cooldown was tried only once every repair of the
/// attempt was out of its cooldown (the latest end, not the earliest): the demo's web server
/// stayed down 5 s longer, behind free_port's cooldown.
#[tokio::test]
async fn a_waiting_repair_runs_at_the_end_of_its_own_cooldown() {
    let dir = tempfile::tempdir().unwrap();
    let (n1, n2) = (
        format!("wk-wait-a-{}", std::process::id()),
        format!("wk-wait-b-{}", std::process::id()),
    );
    let mut a1 = restarts(&n1);
    a1.cooldown = Duration::from_secs(30);
    let mut a2 = restarts(&n2);
    a2.cooldown = Duration::from_secs(2);
    let e = engine(dir.path(), vec![a1, a2]);
    e.handle(&[event("r", Level::Critical, &[])]);
    settle(&e, 2).await;
    e.handle(&[recovery("r")]);
    e.handle(&[event("r", Level::Critical, &[])]);
    settle(&e, 3).await;
    let runs: Vec<(bool, i64)> = (e.results().iter())
        .filter(|r| r.status == "ran")
        .map(|r| (r.args.contains(&n2), r.started_ns))
        .collect();
    kill_started(&[&n1, &n2]);
    let (second, again) = runs[2];
    assert!(
        second,
        "the short cooldown's repair runs first: {:?}",
        e.results()
    );
    let waited = Duration::from_nanos((again - runs[1].1) as u64);
    assert!(
        waited < Duration::from_secs(10),
        "{waited:?} after its first run"
    );
}

/// The repair says "recovered" but the alert goes on firing. Without fresh evidence of the
/// fault (no rule's query to ask here, the level unchanged) the repair is not run again: a
/// rule may keep an alert up for reasons of its own (keep_firing, reset conditions). A level
/// that rises is evidence: the repairs run again at once (the episode had ended, and the
/// alert fired on unseen).
#[tokio::test]
async fn an_alert_that_goes_on_firing_after_a_verified_repair_needs_fresh_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let nonce = format!("wk-still-firing-{}", std::process::id());
    let mut a = restarts(&nonce);
    a.cooldown = Duration::ZERO;
    a.on = Level::Warning;
    let e = engine(dir.path(), vec![a]);
    // Evaluated every second: watched for 10 s after the repair (the floor).
    let mut rule = read(&e.inner.rules).get("r").cloned().unwrap();
    rule.settings.every = Duration::from_secs(1);
    e.set_rules([rule]);
    e.handle(&[event("r", Level::Warning, &[])]);
    settle(&e, 1).await;
    assert!(e.results()[0].recovered);
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(e.results().len(), 1, "no evidence, no second restart");
    // A repeat of the alert is no evidence either (it was a new episode, run at once).
    e.handle(&[event("r", Level::Warning, &[])]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(e.results().len(), 1, "a repeat is not a new episode");
    // A new episode, then the level rises while it is watched.
    e.handle(&[recovery("r")]);
    e.handle(&[event("r", Level::Warning, &[])]);
    settle(&e, 2).await;
    let t0 = std::time::Instant::now();
    assert_eq!(
        e.handle(&[event("r", Level::Critical, &[])]),
        [false],
        "news"
    );
    settle(&e, 3).await;
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "at once: {:?}",
        t0.elapsed()
    );
    kill_started(&[&nonce]);
}

/// While an attempt holds the alert for its report, a repeat is the report's, but a level
/// change or flapping is news (the critical event was swallowed and the report spoke of the
/// warning it started with).
#[tokio::test(start_paused = true)]
async fn a_level_change_or_flapping_during_an_attempt_is_news() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = never_recovers();
    a.after = Duration::ZERO;
    a.on = Level::Warning;
    let e = engine(dir.path(), vec![a]);
    assert_eq!(e.handle(&[event("r", Level::Warning, &[])]), [true]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        e.handle(&[event("r", Level::Warning, &[])]),
        [true],
        "a repeat"
    );
    assert_eq!(
        e.handle(&[event("r", Level::Critical, &[])]),
        [false],
        "a level change"
    );
    let mut flapping = event("r", Level::Critical, &[]);
    flapping.kind = EventKind::Flapping;
    assert_eq!(e.handle(&[flapping]), [false], "flapping");
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert!(
        e.results().len() >= 2,
        "flapping did not end the episode: {:?}",
        e.results()
    );
}
