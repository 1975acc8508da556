//! Notification grouping (`group_by`, `group_wait`, `group_interval`) through the router,
//! with a notifier that records each grouped message and a paused tokio clock.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use wk_alerter::model::{AlertEvent, EventKind, Level};
use wk_alerter::notify::{Notification, Notifier, NotifyPlan, Router, SendFuture};

use super::support::{config_errors, event, plan, to};

/// Records (time, message) of every grouped message and every single event.
struct Recorder(mpsc::UnboundedSender<(Instant, Notification)>);

impl Notifier for Recorder {
    fn send<'a>(&'a self, event: &'a AlertEvent) -> SendFuture<'a> {
        let n = Notification {
            labels: Default::default(),
            firing: vec![event.clone().into()],
            resolved: vec![],
            reports: vec![],
        };
        let _ = self.0.send((Instant::now(), n));
        Box::pin(async { Ok(()) })
    }

    fn send_group<'a>(&'a self, group: &'a Notification) -> SendFuture<'a> {
        let _ = self.0.send((Instant::now(), group.clone()));
        Box::pin(async { Ok(()) })
    }
}

type Messages = mpsc::UnboundedReceiver<(Instant, Notification)>;

/// A router with one recording notifier `ops` whose shared options (grouping among them)
/// come from `options` (TOML lines), plus the config's `silences`.
fn router(options: &str, silences: &str) -> (Router, Messages) {
    let p = plan(&format!(
        "[[notifiers.log]]\nname = \"ops\"\n{options}\n{silences}"
    ));
    let (tx, rx) = mpsc::unbounded_channel();
    let mut rn = p.notifiers[0].clone();
    rn.notifier = std::sync::Arc::new(Recorder(tx));
    let router = Router::start(NotifyPlan {
        notifiers: vec![rn],
        silences: p.silences,
    });
    (router, rx)
}

const BY_RULE: &str = "group_by = [\"rule\"]\ngroup_wait = \"30s\"\ngroup_interval = \"5m\"";

fn fire(rule: &str, host: &str) -> AlertEvent {
    to(
        event(rule, host, EventKind::Alert, Level::Critical),
        &["ops"],
    )
}

fn resolve(rule: &str, host: &str) -> AlertEvent {
    to(event(rule, host, EventKind::Recovery, Level::Ok), &["ops"])
}

fn hosts(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("web{i:02}")).collect()
}

fn drain(rx: &mut Messages) -> Vec<(Duration, String)> {
    drain_at(rx, None)
}

/// Each message as (time since `t0`, "status key: ids").
fn drain_at(rx: &mut Messages, t0: Option<Instant>) -> Vec<(Duration, String)> {
    let mut v = Vec::new();
    while let Ok((t, n)) = rx.try_recv() {
        let ids: Vec<&str> = n.events().map(|e| e.id.as_str()).collect();
        let since = t0.map_or(Duration::ZERO, |t0| t - t0);
        v.push((
            since,
            format!("{} {}: {}", n.status(), n.key(), ids.join(" ")),
        ));
    }
    v
}

async fn sleep(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

#[tokio::test(start_paused = true)]
async fn thirty_instances_are_one_message_per_group_after_group_wait_then_per_interval() {
    let (router, mut rx) = router(BY_RULE, "");
    let t0 = Instant::now();
    // One incident: 30 hosts fire over 20 s (three evaluation cycles), and one disk alert.
    for batch in hosts(30).chunks(10) {
        router.dispatch(batch.iter().map(|h| fire("cpu_high", h)).collect());
        sleep(10).await;
    }
    router.dispatch(vec![fire("disk_full", "db1")]);
    sleep(9).await; // t0 + 39 s: cpu_high's group_wait (30 s from its first event) is over
    let got = drain_at(&mut rx, Some(t0));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, Duration::from_secs(30));
    assert!(
        got[0]
            .1
            .starts_with("FIRING:30 rule=cpu_high: cpu_high:host=web01 ")
    );
    sleep(30).await; // disk_full's group started at t0 + 30 s
    assert_eq!(
        drain_at(&mut rx, Some(t0)),
        [(
            Duration::from_secs(60),
            "FIRING:1 rule=disk_full: disk_full:host=db1".to_owned()
        )]
    );

    // Two hosts recover a minute later: told at the next group_interval tick (t0 + 5m30s),
    // the still-firing instances listed again so the message shows the whole incident.
    router.dispatch(vec![
        resolve("cpu_high", "web01"),
        resolve("cpu_high", "web02"),
    ]);
    sleep(260).await; // t0 + 5m29s
    assert_eq!(drain(&mut rx), []);
    sleep(2).await;
    let got = drain_at(&mut rx, Some(t0));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, Duration::from_secs(330));
    assert!(
        got[0]
            .1
            .starts_with("FIRING:28 RESOLVED:2 rule=cpu_high: cpu_high:host=web03 "),
        "{got:?}"
    );
    assert!(
        got[0]
            .1
            .ends_with("cpu_high:host=web30 cpu_high:host=web01 cpu_high:host=web02")
    );

    // Nothing changes: nothing is sent (repeats are the rule's `repeat`, not the group's).
    sleep(900).await;
    assert_eq!(drain(&mut rx), []);

    // All recover: one resolved message, then the group is gone and a new alert waits
    // group_wait again.
    router.dispatch(
        hosts(30)[2..]
            .iter()
            .map(|h| resolve("cpu_high", h))
            .collect(),
    );
    router.flush().await;
    let got = drain(&mut rx);
    assert_eq!(got.len(), 1);
    assert!(
        got[0].1.starts_with("RESOLVED:28 rule=cpu_high: "),
        "{got:?}"
    );
    let t1 = Instant::now();
    router.dispatch(vec![fire("cpu_high", "web05")]);
    router.flush().await;
    assert_eq!(
        drain_at(&mut rx, Some(t1)),
        [(
            Duration::from_secs(30),
            "FIRING:1 rule=cpu_high: cpu_high:host=web05".to_owned()
        )]
    );
    let st = router.stats();
    let ops = st.notifier("ops").unwrap();
    assert_eq!((ops.messages, ops.queued), (5, 62), "{st:?}");
}

#[tokio::test(start_paused = true)]
async fn an_instance_that_recovers_within_group_wait_is_never_told() {
    let (router, mut rx) = router(BY_RULE, "");
    router.dispatch(vec![fire("cpu_high", "web1"), fire("cpu_high", "web2")]);
    sleep(5).await;
    router.dispatch(vec![resolve("cpu_high", "web1")]);
    router.flush().await;
    assert_eq!(
        drain(&mut rx),
        [(
            Duration::ZERO,
            "FIRING:1 rule=cpu_high: cpu_high:host=web2".to_owned()
        )]
    );
    // A group whose only instance came and went sends nothing at all.
    router.dispatch(vec![fire("disk_full", "db1")]);
    router.dispatch(vec![resolve("disk_full", "db1")]);
    router.flush().await;
    sleep(600).await;
    assert_eq!(drain(&mut rx), []);
}

#[tokio::test(start_paused = true)]
async fn group_by_tags_splits_and_an_empty_list_groups_everything() {
    let (router, mut rx) = router("group_by = [\"host\"]\ngroup_wait = \"10s\"", "");
    router.dispatch(vec![
        fire("cpu_high", "web1"),
        fire("mem_high", "web1"),
        fire("cpu_high", "web2"),
    ]);
    router.flush().await;
    let got: Vec<String> = drain(&mut rx).into_iter().map(|(_, s)| s).collect();
    assert_eq!(
        got,
        [
            "FIRING:2 host=web1: cpu_high:host=web1 mem_high:host=web1",
            "FIRING:1 host=web2: cpu_high:host=web2"
        ]
    );
    let (router, mut rx) = router_all();
    router.dispatch(vec![fire("cpu_high", "web1"), fire("mem_high", "web2")]);
    router.flush().await;
    let got: Vec<String> = drain(&mut rx).into_iter().map(|(_, s)| s).collect();
    assert_eq!(got, ["FIRING:2 all: cpu_high:host=web1 mem_high:host=web2"]);
}

fn router_all() -> (Router, Messages) {
    router("group_by = []", "")
}

#[tokio::test(start_paused = true)]
async fn silenced_instances_leave_the_group_and_reports_are_listed_once() {
    let silence = "[[silences]]\nmatchers = { host = \"web2\" }\nstarts = \"2020-01-01T00:00:00Z\"\n\
                   ends = \"2099-01-01T00:00:00Z\"\ncomment = \"maintenance\"";
    let (router, mut rx) = router(BY_RULE, silence);
    router.dispatch(vec![fire("cpu_high", "web1"), fire("cpu_high", "web2")]);
    router.flush().await;
    assert_eq!(
        drain(&mut rx),
        [(
            Duration::ZERO,
            "FIRING:1 rule=cpu_high: cpu_high:host=web1".to_owned()
        )]
    );
    // The action engine's report for web1 (its alert was held back): listed once, then gone.
    let mut report = fire("cpu_high", "web3");
    report.id = "cpu_high:host=web3:actions".into();
    report.level = Level::Ok;
    router.dispatch_reports(vec![report]);
    router.flush().await;
    assert_eq!(
        drain(&mut rx),
        [(
            Duration::ZERO,
            "FIRING:1 rule=cpu_high: cpu_high:host=web1 cpu_high:host=web3:actions".to_owned()
        )]
    );
    // The silenced instance's recovery is muted like its alert; web1's is told.
    router.dispatch(vec![
        resolve("cpu_high", "web2"),
        resolve("cpu_high", "web1"),
    ]);
    router.flush().await;
    assert_eq!(
        drain(&mut rx),
        [(
            Duration::ZERO,
            "RESOLVED:1 rule=cpu_high: cpu_high:host=web1".to_owned()
        )]
    );
    assert_eq!(router.stats().silenced, 2);
}

#[tokio::test(start_paused = true)]
async fn without_send_recoveries_a_recovered_instance_just_leaves_the_group() {
    let (router, mut rx) = router(&format!("{BY_RULE}\nsend_recoveries = false"), "");
    router.dispatch(vec![fire("cpu_high", "web1"), fire("cpu_high", "web2")]);
    router.flush().await;
    assert_eq!(drain(&mut rx).len(), 1);
    router.dispatch(vec![resolve("cpu_high", "web1")]);
    router.dispatch(vec![fire("cpu_high", "web3")]);
    router.flush().await;
    assert_eq!(
        drain(&mut rx),
        [(
            Duration::ZERO,
            "FIRING:2 rule=cpu_high: cpu_high:host=web2 cpu_high:host=web3".to_owned()
        )]
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_sends_the_groups_still_waiting() {
    let (router, mut rx) = router(BY_RULE, "");
    router.dispatch(vec![fire("cpu_high", "web1")]);
    sleep(1).await;
    assert_eq!(drain(&mut rx), []);
    let t = Instant::now();
    router.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        drain_at(&mut rx, Some(t)),
        [(
            Duration::ZERO,
            "FIRING:1 rule=cpu_high: cpu_high:host=web1".to_owned()
        )]
    );
}

#[tokio::test(start_paused = true)]
async fn reload_keeps_the_groups_of_a_notifier_that_still_groups() {
    let (router, mut rx) = router(BY_RULE, "");
    router.dispatch(vec![fire("cpu_high", "web1")]);
    router.flush().await;
    assert_eq!(drain(&mut rx).len(), 1);
    // The same notifier reloaded (a new Recorder): web1 is still known as told, so its
    // recovery is sent, at web1's group's next tick.
    let (router2_plan, mut rx2) = {
        let p = plan(&format!("[[notifiers.log]]\nname = \"ops\"\n{BY_RULE}"));
        let (tx, rx) = mpsc::unbounded_channel();
        let mut rn = p.notifiers[0].clone();
        rn.notifier = std::sync::Arc::new(Recorder(tx));
        (
            NotifyPlan {
                notifiers: vec![rn],
                silences: vec![],
            },
            rx,
        )
    };
    router.replace(router2_plan);
    router.dispatch(vec![resolve("cpu_high", "web1")]);
    router.flush().await;
    assert_eq!(
        drain(&mut rx2),
        [(
            Duration::ZERO,
            "RESOLVED:1 rule=cpu_high: cpu_high:host=web1".to_owned()
        )]
    );
    assert_eq!(drain(&mut rx), []);
}

#[test]
fn grouping_options_are_checked_with_their_position() {
    let errs = config_errors(
        "[[notifiers.log]]\nname = \"ops\"\ngroup_wait = \"10s\"\n\n\
         [[notifiers.log]]\nname = \"ops2\"\ngroup_by = [\"...\", \"host\"]\ngroup_interval = \"0s\"\n",
    );
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(
        errs[0].contains("alerter.toml:3:1") && errs[0].contains("only used with `group_by`"),
        "{errs:#?}"
    );
    assert!(
        errs[1].contains("alerter.toml:7:") && errs[1].contains("\"...\""),
        "{errs:#?}"
    );
    assert!(
        errs[2].contains("alerter.toml:8:") && errs[2].contains("greater than 0"),
        "{errs:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_recovery_the_action_report_announced_takes_the_instance_out_of_the_group() {
    let (router, mut rx) = router(BY_RULE, "");
    router.dispatch(vec![fire("cpu_high", "web1"), fire("cpu_high", "web2")]);
    router.flush().await;
    assert_eq!(drain(&mut rx).len(), 1);
    // The engine's report said web1 recovered; it holds the recovery back.
    router.dispatch_except(vec![resolve("cpu_high", "web1")], &[true]);
    router.dispatch(vec![fire("cpu_high", "web3")]);
    router.flush().await;
    assert_eq!(
        drain(&mut rx),
        [(
            Duration::ZERO,
            "FIRING:2 rule=cpu_high: cpu_high:host=web2 cpu_high:host=web3".to_owned()
        )]
    );
}

#[tokio::test(start_paused = true)]
async fn the_recovery_of_an_alert_told_before_a_restart_is_still_sent() {
    // A fresh router (the alerter restarted; groups are not persisted) gets the recovery of
    // an instance the state machine restored as firing.
    let (router, mut rx) = router(BY_RULE, "");
    router.dispatch(vec![resolve("cpu_high", "web1")]);
    router.flush().await;
    assert_eq!(
        drain(&mut rx),
        [(
            Duration::ZERO,
            "RESOLVED:1 rule=cpu_high: cpu_high:host=web1".to_owned()
        )]
    );
}

#[tokio::test(start_paused = true)]
async fn a_rule_repeat_resends_the_whole_group_at_the_next_tick() {
    let (router, mut rx) = router(BY_RULE, "");
    let t0 = Instant::now();
    router.dispatch(vec![fire("cpu_high", "web1"), fire("cpu_high", "web2")]);
    router.flush().await;
    sleep(60).await;
    router.dispatch(vec![fire("cpu_high", "web2")]); // the rule's `repeat`
    router.flush().await;
    assert_eq!(
        drain_at(&mut rx, Some(t0)),
        [
            (
                Duration::from_secs(30),
                "FIRING:2 rule=cpu_high: cpu_high:host=web1 cpu_high:host=web2".to_owned()
            ),
            (
                Duration::from_secs(330),
                "FIRING:2 rule=cpu_high: cpu_high:host=web1 cpu_high:host=web2".to_owned()
            )
        ]
    );
}
