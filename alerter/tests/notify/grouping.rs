//! Notification grouping (`group_by`, `group_wait`, `group_interval`) through the router,
//! with a notifier that records each grouped message and a paused tokio clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use wk_alerter::model::{AlertEvent, EventKind, Level};
use wk_alerter::notify::{Notification, Notifier, NotifyError, NotifyPlan, Router, SendFuture};

use super::support::{config_errors, event, plan, to};

/// Records (time, message) of every grouped message and every single event, unless its
/// receiver is down (then the send fails, retryable, and nothing is recorded).
struct Recorder(
    mpsc::UnboundedSender<(Instant, Notification)>,
    Arc<AtomicBool>,
);

impl Notifier for Recorder {
    fn send<'a>(&'a self, event: &'a AlertEvent) -> SendFuture<'a> {
        let n = Notification {
            labels: Default::default(),
            firing: vec![event.clone().into()],
            resolved: vec![],
            reports: vec![],
            unchanged: Default::default(),
        };
        let _ = self.0.send((Instant::now(), n));
        Box::pin(async { Ok(()) })
    }

    fn send_group<'a>(&'a self, group: &'a Notification) -> SendFuture<'a> {
        if self.1.load(Ordering::SeqCst) {
            return Box::pin(async { Err(NotifyError::Retryable("receiver down".into())) });
        }
        let _ = self.0.send((Instant::now(), group.clone()));
        Box::pin(async { Ok(()) })
    }
}

type Messages = mpsc::UnboundedReceiver<(Instant, Notification)>;

/// A router with one recording notifier `ops`, and the messages it recorded.
struct Ops {
    router: Router,
    rx: Messages,
    /// The receiver is down while set.
    down: Arc<AtomicBool>,
}

impl Ops {
    /// The notifier's shared options (grouping among them) come from `options` (TOML lines),
    /// plus the config's `silences`.
    fn start(options: &str, silences: &str) -> Ops {
        let (plan, rx, down) = recorder_plan(options, silences);
        Ops {
            router: Router::start(plan),
            rx,
            down,
        }
    }

    /// Each message recorded so far as "status key: ids".
    fn drain(&mut self) -> Vec<String> {
        self.drain_at(None).into_iter().map(|(_, s)| s).collect()
    }

    /// Each message recorded so far as (time since `t0`, "status key: ids").
    fn drain_at(&mut self, t0: Option<Instant>) -> Vec<(Duration, String)> {
        let mut v = Vec::new();
        while let Ok((t, n)) = self.rx.try_recv() {
            let ids: Vec<&str> = n.events().map(|e| e.id.as_str()).collect();
            let since = t0.map_or(Duration::ZERO, |t0| t - t0);
            v.push((
                since,
                format!("{} {}: {}", n.status(), n.key(), ids.join(" ")),
            ));
        }
        v
    }

    /// [`Ops::drain`] once the router has sent what is due.
    async fn flushed(&mut self) -> Vec<String> {
        self.router.flush().await;
        self.drain()
    }

    /// [`Ops::flushed`] after dispatching `events`.
    async fn send(&mut self, events: Vec<AlertEvent>) -> Vec<String> {
        self.router.dispatch(events);
        self.flushed().await
    }
}

/// The plan of [`Ops::start`], its notifier a new [`Recorder`].
fn recorder_plan(options: &str, silences: &str) -> (NotifyPlan, Messages, Arc<AtomicBool>) {
    let p = plan(&format!(
        "[[notifiers.log]]\nname = \"ops\"\n{options}\n{silences}"
    ));
    let (tx, rx) = mpsc::unbounded_channel();
    let mut rn = p.notifiers[0].clone();
    let down = Arc::new(AtomicBool::new(false));
    rn.notifier = Arc::new(Recorder(tx, down.clone()));
    let plan = NotifyPlan {
        notifiers: vec![rn],
        silences: p.silences,
    };
    (plan, rx, down)
}

/// What [`Ops::drain`] returns when nothing was sent.
const NONE: [&str; 0] = [];

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

/// `cpu_high` fires on each of `hosts`.
fn cpu_high(hosts: &[&str]) -> Vec<AlertEvent> {
    hosts.iter().map(|h| fire("cpu_high", h)).collect()
}

fn hosts(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("web{i:02}")).collect()
}

async fn sleep(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

#[tokio::test(start_paused = true)]
async fn thirty_instances_are_one_message_per_group_after_group_wait_then_per_interval() {
    let mut ops = Ops::start(BY_RULE, "");
    let t0 = Instant::now();
    // One incident: 30 hosts fire over 20 s (three evaluation cycles), and one disk alert.
    for batch in hosts(30).chunks(10) {
        ops.router
            .dispatch(batch.iter().map(|h| fire("cpu_high", h)).collect());
        sleep(10).await;
    }
    ops.router.dispatch(vec![fire("disk_full", "db1")]);
    sleep(9).await; // t0 + 39 s: cpu_high's group_wait (30 s from its first event) is over
    let got = ops.drain_at(Some(t0));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, Duration::from_secs(30));
    assert!(
        got[0]
            .1
            .starts_with("FIRING:30 rule=cpu_high: cpu_high:host=web01 ")
    );
    sleep(30).await; // disk_full's group started at t0 + 30 s
    assert_eq!(
        ops.drain_at(Some(t0)),
        [(
            Duration::from_secs(60),
            "FIRING:1 rule=disk_full: disk_full:host=db1".to_owned()
        )]
    );

    // Two hosts recover a minute later: told at the next group_interval tick (t0 + 5m30s),
    // the still-firing instances listed again so the message shows the whole incident.
    ops.router.dispatch(vec![
        resolve("cpu_high", "web01"),
        resolve("cpu_high", "web02"),
    ]);
    sleep(260).await; // t0 + 5m29s
    assert_eq!(ops.drain(), NONE);
    sleep(2).await;
    let got = ops.drain_at(Some(t0));
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
    assert_eq!(ops.drain(), NONE);

    // All recover: one resolved message, then the group is gone and a new alert waits
    // group_wait again.
    let got = ops
        .send(
            hosts(30)[2..]
                .iter()
                .map(|h| resolve("cpu_high", h))
                .collect(),
        )
        .await;
    assert_eq!(got.len(), 1);
    assert!(got[0].starts_with("RESOLVED:28 rule=cpu_high: "), "{got:?}");
    let t1 = Instant::now();
    ops.router.dispatch(cpu_high(&["web05"]));
    ops.router.flush().await;
    assert_eq!(
        ops.drain_at(Some(t1)),
        [(
            Duration::from_secs(30),
            "FIRING:1 rule=cpu_high: cpu_high:host=web05".to_owned()
        )]
    );
    let st = ops.router.stats();
    let n = st.notifier("ops").unwrap();
    assert_eq!((n.messages, n.queued), (5, 62), "{st:?}");
}

#[tokio::test(start_paused = true)]
async fn an_instance_that_recovers_within_group_wait_is_never_told() {
    let mut ops = Ops::start(BY_RULE, "");
    ops.router.dispatch(cpu_high(&["web1", "web2"]));
    sleep(5).await;
    assert_eq!(
        ops.send(vec![resolve("cpu_high", "web1")]).await,
        ["FIRING:1 rule=cpu_high: cpu_high:host=web2"]
    );
    // A group whose only instance came and went sends nothing at all.
    ops.router.dispatch(vec![fire("disk_full", "db1")]);
    assert_eq!(ops.send(vec![resolve("disk_full", "db1")]).await, NONE);
    sleep(600).await;
    assert_eq!(ops.drain(), NONE);
}

#[tokio::test(start_paused = true)]
async fn group_by_tags_splits_and_an_empty_list_groups_everything() {
    let mut ops = Ops::start("group_by = [\"host\"]\ngroup_wait = \"10s\"", "");
    let three = vec![
        fire("cpu_high", "web1"),
        fire("mem_high", "web1"),
        fire("cpu_high", "web2"),
    ];
    assert_eq!(
        ops.send(three).await,
        [
            "FIRING:2 host=web1: cpu_high:host=web1 mem_high:host=web1",
            "FIRING:1 host=web2: cpu_high:host=web2"
        ]
    );
    let mut all = Ops::start("group_by = []", "");
    let two = vec![fire("cpu_high", "web1"), fire("mem_high", "web2")];
    assert_eq!(
        all.send(two).await,
        ["FIRING:2 all: cpu_high:host=web1 mem_high:host=web2"]
    );
}

#[tokio::test(start_paused = true)]
async fn silenced_instances_leave_the_group_and_reports_are_listed_once() {
    let silence = "[[silences]]\nmatchers = { host = \"web2\" }\nstarts = \"2020-01-01T00:00:00Z\"\n\
                   ends = \"2099-01-01T00:00:00Z\"\ncomment = \"maintenance\"";
    let mut ops = Ops::start(BY_RULE, silence);
    let told = ops.send(cpu_high(&["web1", "web2"])).await;
    assert_eq!(told, ["FIRING:1 rule=cpu_high: cpu_high:host=web1"]);
    // The action engine's report for web1 (its alert was held back): listed once, then gone.
    let mut report = fire("cpu_high", "web3");
    report.id = "cpu_high:host=web3:actions".into();
    report.level = Level::Ok;
    ops.router.dispatch_reports(vec![report]);
    assert_eq!(
        ops.flushed().await,
        ["FIRING:1 rule=cpu_high: cpu_high:host=web1 cpu_high:host=web3:actions"]
    );
    // The silenced instance's recovery is muted like its alert; web1's is told.
    let told = ops
        .send(vec![
            resolve("cpu_high", "web2"),
            resolve("cpu_high", "web1"),
        ])
        .await;
    assert_eq!(told, ["RESOLVED:1 rule=cpu_high: cpu_high:host=web1"]);
    assert_eq!(ops.router.stats().silenced, 2);
}

#[tokio::test(start_paused = true)]
async fn without_send_recoveries_a_recovered_instance_just_leaves_the_group() {
    let mut ops = Ops::start(&format!("{BY_RULE}\nsend_recoveries = false"), "");
    assert_eq!(ops.send(cpu_high(&["web1", "web2"])).await.len(), 1);
    ops.router.dispatch(vec![resolve("cpu_high", "web1")]);
    let told = ops.send(cpu_high(&["web3"])).await;
    assert_eq!(
        told,
        ["FIRING:2 rule=cpu_high: cpu_high:host=web2 cpu_high:host=web3"]
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_sends_the_groups_still_waiting() {
    let mut ops = Ops::start(BY_RULE, "");
    ops.router.dispatch(cpu_high(&["web1"]));
    sleep(1).await;
    assert_eq!(ops.drain(), NONE);
    let t = Instant::now();
    ops.router.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        ops.drain_at(Some(t)),
        [(
            Duration::ZERO,
            "FIRING:1 rule=cpu_high: cpu_high:host=web1".to_owned()
        )]
    );
}

#[tokio::test(start_paused = true)]
async fn reload_keeps_the_groups_of_a_notifier_that_still_groups() {
    let mut ops = Ops::start(BY_RULE, "");
    assert_eq!(ops.send(cpu_high(&["web1"])).await.len(), 1);
    // The same notifier reloaded (a new Recorder): web1 is still known as told, so its
    // recovery is sent, at web1's group's next tick.
    let (plan2, rx2, _) = recorder_plan(BY_RULE, "");
    ops.router.replace(plan2);
    let rx1 = std::mem::replace(&mut ops.rx, rx2);
    let told = ops.send(vec![resolve("cpu_high", "web1")]).await;
    assert_eq!(told, ["RESOLVED:1 rule=cpu_high: cpu_high:host=web1"]);
    ops.rx = rx1;
    assert_eq!(ops.drain(), NONE);
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
    let mut ops = Ops::start(BY_RULE, "");
    assert_eq!(ops.send(cpu_high(&["web1", "web2"])).await.len(), 1);
    // The engine's report said web1 recovered; it holds the recovery back.
    ops.router
        .dispatch_except(vec![resolve("cpu_high", "web1")], &[true]);
    let told = ops.send(cpu_high(&["web3"])).await;
    assert_eq!(
        told,
        ["FIRING:2 rule=cpu_high: cpu_high:host=web2 cpu_high:host=web3"]
    );
}

#[tokio::test(start_paused = true)]
async fn the_recovery_of_an_alert_told_before_a_restart_is_still_sent() {
    // A fresh router (the alerter restarted; groups are not persisted) gets the recovery of
    // an instance the state machine restored as firing.
    let mut ops = Ops::start(BY_RULE, "");
    let told = ops.send(vec![resolve("cpu_high", "web1")]).await;
    assert_eq!(told, ["RESOLVED:1 rule=cpu_high: cpu_high:host=web1"]);
}

#[tokio::test(start_paused = true)]
async fn a_rule_repeat_resends_the_whole_group_at_the_next_tick() {
    let mut ops = Ops::start(BY_RULE, "");
    let t0 = Instant::now();
    ops.router.dispatch(cpu_high(&["web1", "web2"]));
    ops.router.flush().await;
    sleep(60).await;
    ops.router.dispatch(cpu_high(&["web2"])); // the rule's `repeat`
    ops.router.flush().await;
    let both = "FIRING:2 rule=cpu_high: cpu_high:host=web1 cpu_high:host=web2";
    assert_eq!(
        ops.drain_at(Some(t0)),
        [
            (Duration::from_secs(30), both.to_owned()),
            (Duration::from_secs(330), both.to_owned())
        ]
    );
}

/// What a group gathered and had not sent is in the outbox within a second or two: after a
/// crash, the next start sends it as one message (its report still a report), and the
/// outbox is emptied once it is delivered.
#[tokio::test(start_paused = true)]
async fn a_waiting_group_survives_a_crash_through_the_outbox() {
    use wk_alerter::notify::outbox;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(outbox::OUTBOX_FILE);
    let before = Ops::start(BY_RULE, "");
    before.router.keep_outbox(path.clone());
    before.router.dispatch(cpu_high(&["web1", "web2"]));
    let mut report = fire("cpu_high", "web3");
    report.id = "cpu_high:host=web3:actions".into();
    before.router.dispatch_reports(vec![report]);
    let mut saved = Vec::new();
    for _ in 0..50 {
        sleep(1).await;
        saved = outbox::load(&path);
        if saved.len() == 3 {
            break;
        }
    }
    let mut ids: Vec<(&str, bool)> = saved
        .iter()
        .map(|p| (p.event.id.as_str(), p.oneshot))
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            ("cpu_high:host=web1", false),
            ("cpu_high:host=web2", false),
            ("cpu_high:host=web3:actions", true)
        ]
    );
    assert!(saved.iter().all(|p| p.notifier == "ops"));
    // The crash: this router's tasks are gone with nothing sent.
    drop(before);
    let mut after = Ops::start(BY_RULE, "");
    after.router.keep_outbox(path.clone());
    sleep(31).await;
    assert_eq!(
        after.flushed().await,
        [
            "FIRING:2 rule=cpu_high: cpu_high:host=web1 cpu_high:host=web2 cpu_high:host=web3:actions"
        ]
    );
    for _ in 0..50 {
        if !path.exists() {
            break;
        }
        sleep(1).await;
    }
    assert!(!path.exists(), "delivered: the outbox is emptied");
}

/// An outbox the disk refuses is tried again every second, not only at the next change.
#[tokio::test(start_paused = true)]
async fn an_outbox_write_that_failed_is_tried_again() {
    use wk_alerter::notify::outbox;
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("state");
    std::fs::write(&blocker, b"a file where the directory should be").unwrap();
    let path = blocker.join(outbox::OUTBOX_FILE);
    let ops = Ops::start(BY_RULE, "");
    ops.router.keep_outbox(path.clone());
    ops.router.dispatch(cpu_high(&["web1"]));
    sleep(3).await;
    assert!(!path.exists());
    std::fs::remove_file(&blocker).unwrap();
    let mut saved = Vec::new();
    for _ in 0..10 {
        sleep(1).await;
        saved = outbox::load(&path);
        if !saved.is_empty() {
            break;
        }
    }
    assert_eq!(saved.len(), 1, "written once the disk takes it");
}

/// A group message its receiver did not take waits for the receiver; the group's next message
/// takes its place, with the resolution only the lost one told, and goes when the receiver
/// answers again.
#[tokio::test(start_paused = true)]
async fn the_next_message_of_a_group_takes_over_one_not_delivered() {
    let mut ops = Ops::start(
        &format!("{BY_RULE}\nretries = 0\nbackoff = \"10s\"\nbackoff_max = \"10s\""),
        "",
    );
    ops.router.dispatch(cpu_high(&["h1", "h2"]));
    sleep(31).await;
    assert_eq!(
        ops.drain(),
        ["FIRING:2 rule=cpu_high: cpu_high:host=h1 cpu_high:host=h2"]
    );
    ops.down.store(true, Ordering::SeqCst);
    ops.router.dispatch(vec![resolve("cpu_high", "h1")]);
    sleep(300).await; // the tick at 5m30s: told to a receiver that is down
    ops.router.dispatch(cpu_high(&["h3"]));
    sleep(300).await; // the next tick: a new message, while the receiver is still down
    assert_eq!(ops.drain(), NONE);
    let history = ops.router.history();
    let statuses: Vec<&str> = history.iter().map(|d| d.status.as_str()).collect();
    assert_eq!(statuses, ["sent", "superseded", "retrying"], "{history:?}");
    assert_eq!(
        ops.router.undelivered().len(),
        3,
        "h2 and h3 firing, h1 resolved: kept for the outbox"
    );
    ops.down.store(false, Ordering::SeqCst);
    sleep(11).await;
    assert_eq!(
        ops.drain(),
        ["FIRING:2 RESOLVED:1 rule=cpu_high: cpu_high:host=h2 cpu_high:host=h3 cpu_high:host=h1"]
    );
    let st = ops.router.stats();
    let st = st.notifier("ops").unwrap();
    assert_eq!((st.messages, st.failed, st.pending), (2, 0, 0));
}
