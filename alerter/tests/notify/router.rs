//! The router with notifiers written here (hang, fail, gate) and a paused tokio clock:
//! isolation, timeouts, retries with backoff, queue overflow, level filters, silences,
//! inhibition, reload.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use wk_alerter::model::{AlertEvent, EventKind, Level, RuleSettings};
use wk_alerter::notify::{
    Notifier, NotifierSettings, NotifyError, NotifyPlan, Router, RunningNotifier, SendFuture,
};

use super::support::{event, plan, to};

#[derive(Clone)]
enum Behavior {
    Ok,
    Hang,
    Fail(NotifyError),
    /// Fail with a retryable error this many times, then succeed.
    FailTimes(u32),
    /// Hang on the first attempt, then succeed.
    HangOnce,
    /// Wait for a permit, then succeed.
    Gate(Arc<Semaphore>),
    /// Panic on the first attempt, then succeed.
    PanicOnce,
    /// Fail (retryable) while the flag is set.
    DownWhile(Arc<AtomicBool>),
    /// Wait for a permit, then fail (retryable) while the flag is set.
    GateThenDownWhile(Arc<Semaphore>, Arc<AtomicBool>),
    /// Fail (retryable) on the first attempt, then hang.
    FailThenHang,
}

/// Records (time, event) at the start of every attempt.
struct Fake {
    behavior: Behavior,
    attempts: AtomicU32,
    tx: mpsc::UnboundedSender<(Instant, AlertEvent)>,
}

impl Notifier for Fake {
    fn send<'a>(&'a self, event: &'a AlertEvent) -> SendFuture<'a> {
        Box::pin(async move {
            let n = self.attempts.fetch_add(1, Ordering::SeqCst);
            let _ = self.tx.send((Instant::now(), event.clone()));
            match &self.behavior {
                Behavior::Ok => Ok(()),
                Behavior::Hang => std::future::pending().await,
                Behavior::Fail(e) => Err(e.clone()),
                Behavior::FailTimes(k) if n < *k => Err(NotifyError::Retryable("flaky".into())),
                Behavior::FailTimes(_) => Ok(()),
                Behavior::HangOnce if n == 0 => std::future::pending().await,
                Behavior::HangOnce => Ok(()),
                Behavior::FailThenHang if n == 0 => {
                    Err(NotifyError::Retryable("connection refused".into()))
                }
                Behavior::FailThenHang => std::future::pending().await,
                Behavior::PanicOnce if n == 0 => panic!("a bug in a notifier"),
                Behavior::PanicOnce => Ok(()),
                Behavior::DownWhile(down) if down.load(Ordering::SeqCst) => {
                    Err(NotifyError::Retryable("connection refused".into()))
                }
                Behavior::DownWhile(_) => Ok(()),
                Behavior::GateThenDownWhile(gate, down) => {
                    let _permit = gate.acquire().await;
                    if down.load(Ordering::SeqCst) {
                        Err(NotifyError::Retryable("connection refused".into()))
                    } else {
                        Ok(())
                    }
                }
                Behavior::Gate(s) => {
                    let _permit = s.acquire().await;
                    Ok(())
                }
            }
        })
    }
}

type Attempts = mpsc::UnboundedReceiver<(Instant, AlertEvent)>;

fn fake(name: &str, behavior: Behavior) -> (RunningNotifier, Attempts) {
    fake_with(NotifierSettings::new(name, "fake"), behavior)
}

fn fake_with(settings: NotifierSettings, behavior: Behavior) -> (RunningNotifier, Attempts) {
    let (tx, rx) = mpsc::unbounded_channel();
    let n = Fake {
        behavior,
        attempts: AtomicU32::new(0),
        tx,
    };
    (RunningNotifier::new(settings, n), rx)
}

/// A router over these notifiers, with no silences.
/// A notifier `pager` whose messages wait for their receiver at once (no retries), probe it
/// every 10 s, and are given up after an hour.
fn waiting_pager() -> NotifierSettings {
    let mut s = NotifierSettings::new("pager", "fake");
    s.retries = 0;
    s.backoff = Duration::from_secs(10);
    s.backoff_max = Duration::from_secs(10);
    s.give_up_after = Duration::from_secs(3600);
    s
}

fn start(notifiers: Vec<RunningNotifier>) -> Router {
    Router::start(NotifyPlan {
        notifiers,
        silences: vec![],
    })
}

fn drain(rx: &mut Attempts) -> Vec<(Instant, AlertEvent)> {
    let mut v = Vec::new();
    while let Ok(x) = rx.try_recv() {
        v.push(x);
    }
    v
}

/// What was delivered since the last drain, as "kind id".
fn delivered(rx: &mut Attempts) -> Vec<String> {
    drain(rx)
        .into_iter()
        .map(|(_, e)| format!("{:?} {}", e.kind, e.id))
        .collect()
}

fn alert(rule: &str, host: &str, level: Level, names: &[&str]) -> AlertEvent {
    to(event(rule, host, EventKind::Alert, level), names)
}

fn recovery(rule: &str, host: &str, names: &[&str]) -> AlertEvent {
    to(event(rule, host, EventKind::Recovery, Level::Ok), names)
}

#[tokio::test(start_paused = true)]
async fn hanging_notifier_does_not_delay_another() {
    let mut slow = NotifierSettings::new("slow", "fake");
    slow.retries = 0;
    slow.give_up_after = Duration::ZERO;
    let (a, mut a_rx) = fake_with(slow, Behavior::Hang);
    let (b, mut b_rx) = fake("fast", Behavior::Ok);
    let router = start(vec![a, b]);
    let t0 = Instant::now();
    router.dispatch(vec![alert(
        "cpu",
        "web1",
        Level::Critical,
        &["slow", "fast"],
    )]);
    let (at, _) = b_rx.recv().await.unwrap();
    assert_eq!(at, t0, "the fast notifier got the event without waiting");
    router.dispatch(vec![alert("cpu", "web2", Level::Critical, &["fast"])]);
    let (at, e) = b_rx.recv().await.unwrap();
    assert_eq!((at, e.id.as_str()), (t0, "cpu:host=web2"));
    assert_eq!(a_rx.recv().await.unwrap().0, t0, "the slow one started too");

    router.flush().await;
    assert_eq!(
        t0.elapsed(),
        Duration::from_secs(10),
        "the hang ended at the timeout"
    );
    let s = router.stats();
    let slow = s.notifier("slow").unwrap();
    assert_eq!((slow.timeouts, slow.failed, slow.sent), (1, 1, 0));
    assert_eq!(s.notifier("fast").unwrap().sent, 2);
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_doubling_with_jitter_then_give_up() {
    let mut s = NotifierSettings::new("flaky", "fake");
    s.retries = 3;
    s.backoff = Duration::from_secs(1);
    s.backoff_max = Duration::from_secs(3);
    s.give_up_after = Duration::ZERO;
    let (n, mut rx) = fake_with(s, Behavior::Fail(NotifyError::Retryable("503".into())));
    let router = start(vec![n]);
    router.dispatch(vec![alert("cpu", "web1", Level::Critical, &["flaky"])]);
    router.flush().await;
    let times: Vec<Instant> = drain(&mut rx).into_iter().map(|(t, _)| t).collect();
    assert_eq!(times.len(), 4, "one attempt and three retries");
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // backoff 1s, 2s, then 4s capped at 3s; equal jitter keeps each in [d/2, d].
    let bounds = [(500, 1000), (1000, 2000), (1500, 3000)];
    for (g, (lo, hi)) in gaps.iter().zip(bounds) {
        assert!(
            *g >= Duration::from_millis(lo) && *g <= Duration::from_millis(hi),
            "gap {g:?} not in [{lo}ms, {hi}ms]: {gaps:?}"
        );
    }
    let st = router.stats();
    let st = st.notifier("flaky").unwrap();
    assert_eq!((st.retries, st.failed, st.sent), (3, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_are_not_retried_and_transient_ones_recover() {
    let (perm, mut perm_rx) = fake(
        "perm",
        Behavior::Fail(NotifyError::Permanent("HTTP 404".into())),
    );
    let (flaky, mut flaky_rx) = fake("flaky", Behavior::FailTimes(2));
    let (hang, mut hang_rx) = fake("hang-once", Behavior::HangOnce);
    let router = start(vec![perm, flaky, hang]);
    let t0 = Instant::now();
    router.dispatch(vec![alert(
        "cpu",
        "web1",
        Level::Critical,
        &["perm", "flaky", "hang-once"],
    )]);
    router.flush().await;
    assert_eq!(drain(&mut perm_rx).len(), 1);
    assert_eq!(drain(&mut flaky_rx).len(), 3);
    let hang_times = drain(&mut hang_rx);
    assert_eq!(hang_times.len(), 2);
    let second = hang_times[1].0 - t0;
    assert!(
        second >= Duration::from_millis(10_500) && second <= Duration::from_secs(11),
        "retry after the 10s timeout plus a jittered 1s backoff: {second:?}"
    );
    let s = router.stats();
    let p = s.notifier("perm").unwrap();
    assert_eq!((p.failed, p.retries), (1, 0));
    let f = s.notifier("flaky").unwrap();
    assert_eq!((f.sent, f.retries, f.failed), (1, 2, 0));
    let h = s.notifier("hang-once").unwrap();
    assert_eq!((h.sent, h.timeouts), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn full_queue_drops_the_oldest_and_counts_it() {
    let gate = Arc::new(Semaphore::new(0));
    let mut s = NotifierSettings::new("gated", "fake");
    s.queue_size = 2;
    s.timeout = Duration::from_secs(3600);
    let (n, mut rx) = fake_with(s, Behavior::Gate(gate.clone()));
    let router = start(vec![n]);
    router.dispatch(vec![alert("r", "h1", Level::Critical, &["gated"])]);
    // The first event is in flight (blocked at the gate) before the others arrive.
    assert_eq!(rx.recv().await.unwrap().1.id, "r:host=h1");
    for h in ["h2", "h3", "h4", "h5"] {
        router.dispatch(vec![alert("r", h, Level::Critical, &["gated"])]);
    }
    let st = router.stats();
    let st = st.notifier("gated").unwrap();
    assert_eq!((st.dropped, st.queued, st.pending), (2, 5, 3));
    gate.add_permits(10);
    router.flush().await;
    let ids: Vec<String> = drain(&mut rx).into_iter().map(|(_, e)| e.id).collect();
    assert_eq!(ids, ["r:host=h4", "r:host=h5"], "h2 and h3 were dropped");
    assert_eq!(router.stats().notifier("gated").unwrap().sent, 3);
}

#[tokio::test(start_paused = true)]
async fn min_level_and_send_recoveries_filter_per_notifier() {
    let mut pager = NotifierSettings::new("pager", "fake");
    pager.min_level = Level::Critical;
    let mut chat = NotifierSettings::new("chat", "fake");
    chat.send_recoveries = false;
    let (p, mut p_rx) = fake_with(pager, Behavior::Ok);
    let (c, mut c_rx) = fake_with(chat, Behavior::Ok);
    let router = start(vec![p, c]);
    let names = ["pager", "chat"];
    let mut warn_recovery = recovery("cpu", "web2", &names);
    warn_recovery.previous_level = Level::Warning;
    router.dispatch(vec![
        alert("cpu", "web1", Level::Warning, &names),
        alert("cpu", "web1", Level::Critical, &names),
        recovery("cpu", "web1", &names),
        warn_recovery,
    ]);
    router.flush().await;
    let kinds = |rx: &mut Attempts| -> Vec<(EventKind, Level)> {
        drain(rx)
            .into_iter()
            .map(|(_, e)| (e.kind, e.level))
            .collect()
    };
    assert_eq!(
        kinds(&mut p_rx),
        [
            (EventKind::Alert, Level::Critical),
            (EventKind::Recovery, Level::Ok)
        ]
    );
    assert_eq!(
        kinds(&mut c_rx),
        [
            (EventKind::Alert, Level::Warning),
            (EventKind::Alert, Level::Critical)
        ]
    );
    let s = router.stats();
    assert_eq!(s.notifier("pager").unwrap().filtered, 2);
    assert_eq!(s.notifier("chat").unwrap().filtered, 2);
}

#[tokio::test(start_paused = true)]
async fn silences_mute_matching_events_in_their_window() {
    let silences = plan(
        r#"
[[silences]]
  matchers = { host = "web*", rule = "cpu_*" }
  starts = "2026-11-18T11:00:00Z"
  ends = 2026-11-18T12:00:00Z
  comment = "web maintenance"
"#,
    )
    .silences;
    let (n, mut rx) = fake("ops", Behavior::Ok);
    let router = Router::start(NotifyPlan {
        notifiers: vec![n],
        silences,
    });
    let at = |mut e: AlertEvent, hhmm: &str| {
        e.time =
            wk_alerter::notify::text::parse_rfc3339(&format!("2026-11-18T{hhmm}:00Z")).unwrap();
        e
    };
    let ops = ["ops"];
    router.dispatch(vec![
        // Before the window: delivered, so its recovery inside the window is delivered too.
        at(alert("cpu_high", "web3", Level::Critical, &ops), "10:59"),
        at(alert("cpu_high", "web1", Level::Critical, &ops), "11:06"), // silenced
        at(alert("disk_full", "web1", Level::Critical, &ops), "11:06"), // other rule
        at(alert("cpu_high", "db1", Level::Critical, &ops), "11:06"),  // other host
        at(recovery("cpu_high", "web1", &ops), "11:30"),               // its alert was muted
        at(recovery("cpu_high", "web3", &ops), "11:30"),               // closes what was sent
        at(alert("cpu_high", "web2", Level::Warning, &ops), "12:00"),  // window over
    ]);
    router.flush().await;
    assert_eq!(
        delivered(&mut rx),
        [
            "Alert cpu_high:host=web3",
            "Alert disk_full:host=web1",
            "Alert cpu_high:host=db1",
            "Recovery cpu_high:host=web3",
            "Alert cpu_high:host=web2",
        ]
    );
    assert_eq!(router.stats().silenced, 2);
}

#[tokio::test(start_paused = true)]
async fn inhibitors_mute_their_category_on_equal_tags_while_non_ok() {
    let (n, mut rx) = fake("ops", Behavior::Ok);
    let router = start(vec![n]);
    let host_down = RuleSettings {
        name: "host_down".into(),
        category: Some("system".into()),
        inhibits: vec![("system".into(), vec!["host".into()])],
        ..RuleSettings::default()
    };
    router.set_rules([&host_down]);
    let ops = ["ops"];
    let cpu = |host: &str, level| {
        let mut e = alert("cpu", host, level, &ops);
        e.category = Some("system".into());
        e
    };
    let cpu_recovery = |host: &str| {
        let mut e = recovery("cpu", host, &ops);
        e.category = Some("system".into());
        e
    };
    let mut down = to(
        event("host_down", "web1", EventKind::NoData, Level::Critical),
        &ops,
    );
    down.category = Some("system".into());
    let up = {
        let mut e = recovery("host_down", "web1", &ops);
        e.category = Some("system".into());
        e
    };
    // The victim comes first in the batch: the inhibitor still counts.
    router.dispatch(vec![cpu("web1", Level::Critical), down]);
    router.dispatch(vec![cpu("web2", Level::Critical)]); // other host: not inhibited
    router.dispatch(vec![cpu("web1", Level::Warning)]); // still inhibited
    router.dispatch(vec![up, cpu_recovery("web1")]); // recovery of a muted alert: muted
    router.dispatch(vec![cpu("web1", Level::Critical)]); // inhibitor gone
    router.flush().await;
    assert_eq!(
        delivered(&mut rx),
        [
            "NoData host_down:host=web1",
            "Alert cpu:host=web2",
            "Recovery host_down:host=web1",
            "Alert cpu:host=web1",
        ]
    );
    assert_eq!(router.stats().inhibited, 3);

    // A reload without the rule drops its inhibitors.
    router.set_rules(std::iter::empty::<&RuleSettings>());
    let mut down = to(
        event("host_down", "web2", EventKind::NoData, Level::Critical),
        &ops,
    );
    down.category = Some("system".into());
    router.dispatch(vec![down, cpu("web2", Level::Warning)]);
    router.flush().await;
    assert_eq!(drain(&mut rx).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn unknown_names_are_reported_and_counted() {
    let (n, _rx) = fake("ops", Behavior::Ok);
    let router = start(vec![n]);
    assert!(router.validate_names(&["ops".into()]).is_ok());
    let err = router
        .validate_names(&["ops".into(), "opz".into()])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown notifier \"opz\": configured notifiers are \"ops\""
    );
    router.dispatch(vec![alert("cpu", "web1", Level::Critical, &["nope"])]);
    assert_eq!(router.stats().unknown_notifier, 1);
}

#[tokio::test(start_paused = true)]
async fn reload_hands_queued_events_to_the_new_notifier_of_the_same_name() {
    let gate = Arc::new(Semaphore::new(0));
    let mut s = NotifierSettings::new("ops", "fake");
    s.timeout = Duration::from_secs(3600);
    let (old, mut old_rx) = fake_with(s, Behavior::Gate(gate.clone()));
    let router = start(vec![old]);
    for h in ["h1", "h2", "h3"] {
        router.dispatch(vec![alert("r", h, Level::Critical, &["ops"])]);
    }
    assert_eq!(old_rx.recv().await.unwrap().1.id, "r:host=h1");
    let (new, mut new_rx) = fake("ops", Behavior::Ok);
    router.replace(NotifyPlan {
        notifiers: vec![new],
        silences: vec![],
    });
    router.flush().await;
    let ids: Vec<String> = drain(&mut new_rx).into_iter().map(|(_, e)| e.id).collect();
    assert_eq!(ids, ["r:host=h2", "r:host=h3"]);
    let st = router.stats();
    assert_eq!(
        st.notifier("ops").unwrap().queued,
        3,
        "counters survive the reload"
    );
    gate.add_permits(1);
    router.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_notifier_loses_one_event_not_its_worker() {
    let (n, mut rx) = fake("buggy", Behavior::PanicOnce);
    let router = start(vec![n]);
    router.dispatch(vec![
        alert("cpu", "web1", Level::Critical, &["buggy"]),
        alert("cpu", "web2", Level::Critical, &["buggy"]),
    ]);
    router.flush().await;
    assert_eq!(drain(&mut rx).len(), 2);
    let st = router.stats();
    let st = st.notifier("buggy").unwrap();
    assert_eq!((st.failed, st.retries, st.sent), (1, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn the_state_machines_view_ends_an_inhibitor_that_sends_no_recovery() {
    let (n, mut rx) = fake("ops", Behavior::Ok);
    let router = start(vec![n]);
    router.set_inhibits("host_down", vec![("system".into(), vec!["host".into()])]);
    let ops = ["ops"];
    let mut cpu = alert("cpu", "web1", Level::Critical, &ops);
    cpu.category = Some("system".into());
    // Restored at start: web1 is down (no event is emitted for it).
    let web1 = event("host_down", "web1", EventKind::NoData, Level::Critical).tags;
    router.sync_inhibitors("host_down", [web1]);
    router.dispatch(vec![cpu.clone()]);
    // host_down has `recoveries: false`: when web1 comes back only its state says so.
    router.sync_inhibitors("host_down", []);
    let mut cpu2 = cpu.clone();
    cpu2.level = Level::Warning;
    router.dispatch(vec![cpu2]);
    router.flush().await;
    let got: Vec<Level> = drain(&mut rx).into_iter().map(|(_, e)| e.level).collect();
    assert_eq!(got, [Level::Warning]);
    assert_eq!(router.stats().inhibited, 1);
}

/// A receiver down longer than a message's `retries`: the message waits for it (tried again
/// every `backoff_max` at most), and goes when it answers again.
#[tokio::test(start_paused = true)]
async fn a_message_whose_retries_are_spent_waits_for_its_receiver() {
    let mut s = NotifierSettings::new("pager", "fake");
    s.retries = 2;
    s.backoff = Duration::from_secs(1);
    s.backoff_max = Duration::from_secs(20);
    let down = Arc::new(AtomicBool::new(true));
    let (n, mut rx) = fake_with(s, Behavior::DownWhile(down.clone()));
    let router = start(vec![n]);
    let t0 = Instant::now();
    router.dispatch(vec![alert("cpu", "web1", Level::Critical, &["pager"])]);
    tokio::time::sleep(Duration::from_secs(600)).await;
    let tries: Vec<Instant> = drain(&mut rx).into_iter().map(|(t, _)| t).collect();
    let gaps: Vec<Duration> = tries.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(tries.len() >= 30 && tries.len() <= 62, "{gaps:?}");
    assert!(
        gaps.iter().all(|g| *g <= Duration::from_secs(20)),
        "{gaps:?}"
    );
    let d = router.history();
    assert_eq!(
        (d[0].status.as_str(), d[0].attempts as usize),
        ("retrying", tries.len())
    );
    assert_eq!(d[0].error, "connection refused");
    let st = router.stats();
    let st = st.notifier("pager").unwrap();
    assert_eq!((st.pending, st.failed, st.sent), (1, 0, 0));
    assert_eq!(router.undelivered().len(), 1, "kept for the outbox");

    down.store(false, Ordering::SeqCst);
    router.flush().await;
    let sent_at = drain(&mut rx).last().unwrap().0;
    assert!(
        sent_at - t0 <= Duration::from_secs(620),
        "{:?}",
        sent_at - t0
    );
    let st = router.stats();
    let st = st.notifier("pager").unwrap();
    assert_eq!((st.pending, st.failed, st.sent), (0, 0, 1));
    assert_eq!(router.history()[0].status, "sent");
    assert!(router.undelivered().is_empty());
}

/// A later event of the same alert replaces the one waiting for the receiver: the receiver is
/// told where the alert is now, once.
#[tokio::test(start_paused = true)]
async fn a_waiting_alert_is_replaced_by_its_recovery() {
    let mut s = NotifierSettings::new("pager", "fake");
    s.retries = 0;
    let down = Arc::new(AtomicBool::new(true));
    let (n, mut rx) = fake_with(s, Behavior::DownWhile(down.clone()));
    let router = start(vec![n]);
    router.dispatch(vec![
        alert("cpu", "web1", Level::Critical, &["pager"]),
        alert("cpu", "web2", Level::Critical, &["pager"]),
    ]);
    tokio::time::sleep(Duration::from_secs(30)).await;
    router.dispatch(vec![recovery("cpu", "web1", &["pager"])]);
    tokio::time::sleep(Duration::from_secs(30)).await;
    drain(&mut rx);
    down.store(false, Ordering::SeqCst);
    router.flush().await;
    let mut got = delivered(&mut rx);
    got.sort();
    assert_eq!(got, ["Alert cpu:host=web2", "Recovery cpu:host=web1"]);
    let statuses: Vec<String> = router.history().into_iter().map(|d| d.status).collect();
    assert_eq!(statuses, ["superseded", "sent", "sent"]);
}

/// While the receiver is down one waiting message probes it per round, not every one of
/// them; the first that goes through sends the others at once. Past `give_up_after` a message
/// is given up.
#[tokio::test(start_paused = true)]
async fn one_waiting_message_probes_a_receiver_that_is_down_and_they_end_at_give_up_after() {
    let s = waiting_pager();
    let down = Arc::new(AtomicBool::new(true));
    let (n, mut rx) = fake_with(s.clone(), Behavior::DownWhile(down.clone()));
    let router = start(vec![n]);
    let hosts: Vec<String> = (1..=20).map(|i| format!("web{i}")).collect();
    router.dispatch(
        hosts
            .iter()
            .map(|h| alert("cpu", h, Level::Critical, &["pager"]))
            .collect(),
    );
    tokio::time::sleep(Duration::from_secs(300)).await;
    let tries = drain(&mut rx).len();
    // 20 first attempts, then one probe every 5-10 s (jitter) in 300 s.
    assert!((20 + 25..=20 + 61).contains(&tries), "{tries} attempts");
    down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(router.stats().notifier("pager").unwrap().sent, 20);

    // Down for good: given up an hour after the first attempt.
    down.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    router.dispatch(vec![alert("disk", "db1", Level::Critical, &["pager"])]);
    router.flush().await;
    let took = t0.elapsed();
    assert!(
        took > Duration::from_secs(3580) && took <= Duration::from_secs(3600),
        "{took:?}"
    );
    let st = router.stats();
    let st = st.notifier("pager").unwrap();
    assert_eq!((st.sent, st.failed, st.pending), (20, 1, 0));
    assert_eq!(router.history().last().unwrap().status, "failed");
}

/// A send in flight at a reload that then has to wait for its receiver waits at the new
/// notifier of the same name, and goes from there.
#[tokio::test(start_paused = true)]
async fn a_send_in_flight_at_a_reload_waits_at_the_new_notifier() {
    let gate = Arc::new(Semaphore::new(0));
    let down = Arc::new(AtomicBool::new(true));
    let mut s = NotifierSettings::new("pager", "fake");
    s.retries = 1;
    s.timeout = Duration::from_secs(3600);
    let (old, mut old_rx) = fake_with(s, Behavior::GateThenDownWhile(gate.clone(), down.clone()));
    let router = start(vec![old]);
    router.dispatch(vec![alert("cpu", "web1", Level::Critical, &["pager"])]);
    assert_eq!(old_rx.recv().await.unwrap().1.id, "cpu:host=web1");
    let (new, mut new_rx) = fake("pager", Behavior::DownWhile(down.clone()));
    router.replace(NotifyPlan {
        notifiers: vec![new],
        silences: vec![],
    });
    gate.add_permits(2); // the old notifier's attempt and its retry fail
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(drain(&mut old_rx).len(), 1, "the retry");
    assert_eq!(router.undelivered().len(), 1, "waiting at the new notifier");
    down.store(false, Ordering::SeqCst);
    router.flush().await;
    assert_eq!(
        delivered(&mut new_rx).last().unwrap(),
        "Alert cpu:host=web1"
    );
    let st = router.stats();
    assert_eq!(st.notifier("pager").unwrap().sent, 1);
    assert_eq!(router.history()[0].status, "sent");
}

/// Two reloads while a send is in flight: the message that then has to wait goes to the
/// notifier of the name now (through the one between, gone by then), and does not push out
/// of sight the message that notifier has in flight (both stay in the outbox).
#[tokio::test(start_paused = true)]
async fn a_send_in_flight_across_two_reloads_waits_at_the_latest_notifier() {
    let down = Arc::new(AtomicBool::new(true));
    let (gate_a, gate_b) = (Arc::new(Semaphore::new(0)), Arc::new(Semaphore::new(0)));
    let mut s = NotifierSettings::new("pager", "fake");
    s.retries = 0;
    s.timeout = Duration::from_secs(3600);
    let behavior = Behavior::GateThenDownWhile(gate_a.clone(), down.clone());
    let (a, _a_rx) = fake_with(s.clone(), behavior);
    let router = start(vec![a]);
    let plan = |n| NotifyPlan {
        notifiers: vec![n],
        silences: vec![],
    };
    router.dispatch(vec![alert("cpu", "web1", Level::Critical, &["pager"])]);
    tokio::task::yield_now().await;
    let (b, mut b_rx) = fake_with(s.clone(), Behavior::Gate(gate_b.clone()));
    router.replace(plan(b));
    router.dispatch(vec![alert("cpu", "web2", Level::Critical, &["pager"])]);
    assert_eq!(b_rx.recv().await.unwrap().1.id, "cpu:host=web2");
    let (c, mut c_rx) = fake("pager", Behavior::DownWhile(down.clone()));
    router.replace(plan(c));
    gate_b.add_permits(1); // the one between delivers its message and ends
    tokio::time::sleep(Duration::from_millis(100)).await;
    router.dispatch(vec![alert("cpu", "web3", Level::Critical, &["pager"])]);
    assert_eq!(c_rx.recv().await.unwrap().1.id, "cpu:host=web3");
    gate_a.add_permits(1); // the first one's send fails while the latest is retrying web3
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut waiting: Vec<String> = router
        .undelivered()
        .into_iter()
        .map(|p| p.event.id)
        .collect();
    waiting.sort();
    assert_eq!(waiting, ["cpu:host=web1", "cpu:host=web3"]);
    down.store(false, Ordering::SeqCst);
    router.flush().await;
    let mut got: Vec<String> = drain(&mut c_rx).into_iter().map(|(_, e)| e.id).collect();
    got.dedup();
    assert!(got.contains(&"cpu:host=web1".to_owned()), "{got:?}");
    assert_eq!(router.stats().notifier("pager").unwrap().sent, 3);
}

/// An alert waiting for its receiver is not sent after its instance ended for this notifier
/// (here by a recovery it does not take).
#[tokio::test(start_paused = true)]
async fn a_waiting_alert_whose_instance_ended_is_not_sent() {
    let mut s = NotifierSettings::new("pager", "fake");
    s.retries = 0;
    s.send_recoveries = false;
    let down = Arc::new(AtomicBool::new(true));
    let (n, mut rx) = fake_with(s, Behavior::DownWhile(down.clone()));
    let router = start(vec![n]);
    router.dispatch(vec![alert("cpu", "web1", Level::Critical, &["pager"])]);
    tokio::time::sleep(Duration::from_secs(30)).await;
    router.dispatch(vec![recovery("cpu", "web1", &["pager"])]);
    assert!(router.undelivered().is_empty());
    drain(&mut rx);
    down.store(false, Ordering::SeqCst);
    router.flush().await;
    assert_eq!(delivered(&mut rx), Vec::<String>::new());
    assert_eq!(router.history()[0].status, "superseded");
}

/// A waiting message that gets through at the notifier a reload closed tells the new
/// notifier of the name that the receiver is back: what waits there goes at once, not after
/// its next probe.
#[tokio::test(start_paused = true)]
async fn a_probe_that_gets_through_at_the_old_notifier_releases_the_new_ones_waiting() {
    let gate = Arc::new(Semaphore::new(0));
    let down = Arc::new(AtomicBool::new(true));
    let mut s = NotifierSettings::new("pager", "fake");
    s.retries = 0;
    s.backoff = Duration::from_secs(3600);
    s.backoff_max = Duration::from_secs(3600);
    s.timeout = Duration::from_secs(7200);
    let behavior = Behavior::GateThenDownWhile(gate.clone(), down.clone());
    let (old, mut old_rx) = fake_with(s.clone(), behavior);
    let router = start(vec![old]);
    router.dispatch(vec![alert("cpu", "web1", Level::Critical, &["pager"])]);
    old_rx.recv().await.unwrap();
    gate.add_permits(1); // the first attempt fails: web1 waits
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The gate gives its permit back after each attempt: take it, so the probe waits.
    gate.acquire().await.unwrap().forget();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(
        old_rx.recv().await.unwrap().1.id,
        "cpu:host=web1",
        "its probe, in flight"
    );
    let (new, mut new_rx) = fake_with(s, Behavior::DownWhile(down.clone()));
    router.replace(NotifyPlan {
        notifiers: vec![new],
        silences: vec![],
    });
    router.dispatch(vec![alert("cpu", "web2", Level::Critical, &["pager"])]);
    assert_eq!(new_rx.recv().await.unwrap().1.id, "cpu:host=web2");
    tokio::time::sleep(Duration::from_secs(1)).await; // refused: web2 waits an hour
    down.store(false, Ordering::SeqCst);
    gate.add_permits(1); // the old notifier's probe gets through
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        delivered(&mut new_rx),
        ["Alert cpu:host=web2"],
        "at once, not in an hour"
    );
    assert_eq!(router.stats().notifier("pager").unwrap().sent, 2);
}

/// A send in flight at a reload that then has to wait is not delivered after a newer event of
/// its alert that the new notifier already sent: the receiver would read "firing" last.
#[tokio::test(start_paused = true)]
async fn a_send_handed_on_at_a_reload_after_its_recovery_went_out_is_dropped() {
    let gate = Arc::new(Semaphore::new(0));
    let down = Arc::new(AtomicBool::new(true));
    let mut s = NotifierSettings::new("pager", "fake");
    s.retries = 1;
    s.timeout = Duration::from_secs(3600);
    let (old, mut old_rx) = fake_with(s, Behavior::GateThenDownWhile(gate.clone(), down));
    let router = start(vec![old]);
    router.dispatch(vec![alert("cpu", "web1", Level::Critical, &["pager"])]);
    assert_eq!(old_rx.recv().await.unwrap().1.id, "cpu:host=web1");
    let (new, mut new_rx) = fake("pager", Behavior::Ok);
    router.replace(NotifyPlan {
        notifiers: vec![new],
        silences: vec![],
    });
    router.dispatch(vec![recovery("cpu", "web1", &["pager"])]);
    router.flush().await;
    assert_eq!(delivered(&mut new_rx), ["Recovery cpu:host=web1"]);
    gate.add_permits(2); // the old notifier's attempt and its retry fail
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(
        delivered(&mut new_rx),
        Vec::<String>::new(),
        "no stale alert"
    );
    assert!(router.undelivered().is_empty());
    let statuses: Vec<String> = router.history().into_iter().map(|d| d.status).collect();
    assert_eq!(statuses, ["superseded", "sent"]);
}

/// A message that waits for its receiver keeps its `give_up_after` deadline across a
/// restart (the outbox): it was given a new one at each start, so an alerter restarted
/// daily kept an undeliverable page for ever.
#[tokio::test(start_paused = true)]
async fn a_waiting_message_keeps_its_deadline_across_a_restart() {
    let s = waiting_pager();
    let down = Arc::new(AtomicBool::new(true));
    let (n, _rx) = fake_with(s.clone(), Behavior::DownWhile(down.clone()));
    let router = start(vec![n]);
    router.dispatch(vec![alert("cpu", "web1", Level::Critical, &["pager"])]);
    tokio::time::sleep(Duration::from_secs(600)).await;
    let mut left = router.undelivered();
    assert_eq!(left.len(), 1);
    let w = left[0].waiting.expect("it waits for its receiver");
    let wall = wk_alerter::clock::now_ns();
    let in_s = (w.give_up_at - wall) / 1_000_000_000;
    assert!((2990..=3000).contains(&in_s), "given up in {in_s} s");
    assert!(w.attempts >= 1);

    // The next start: 100 s left of it, then given up (not an hour after the start).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(wk_alerter::notify::outbox::OUTBOX_FILE);
    left[0].waiting = Some(wk_alerter::notify::outbox::Waiting {
        give_up_at: wall + 100_000_000_000,
        ..w
    });
    wk_alerter::notify::outbox::store(&path, &wk_alerter::notify::outbox::encode(&left), false)
        .unwrap();
    let (n, _rx2) = fake_with(s.clone(), Behavior::DownWhile(down.clone()));
    let next = start(vec![n]);
    next.keep_outbox(path.clone());
    let t0 = Instant::now();
    next.flush().await;
    let took = t0.elapsed();
    assert!(took <= Duration::from_secs(100), "{took:?}");
    let st = next.stats();
    assert_eq!(st.notifier("pager").unwrap().failed, 1);

    // Past its deadline already: given up at the start, not tried.
    left[0].waiting = Some(wk_alerter::notify::outbox::Waiting {
        give_up_at: wall - 1,
        ..w
    });
    wk_alerter::notify::outbox::store(&path, &wk_alerter::notify::outbox::encode(&left), false)
        .unwrap();
    let (n, mut rx3) = fake_with(s, Behavior::DownWhile(down));
    let last = start(vec![n]);
    last.keep_outbox(path);
    last.flush().await;
    assert!(drain(&mut rx3).is_empty(), "not tried");
    let st = last.stats();
    let st = st.notifier("pager").unwrap();
    assert_eq!((st.failed, st.pending), (1, 0));
}

/// The notification history survives a restart (the status page showed nothing of what was
/// sent before it); a message still under way at the stop reads `interrupted`.
#[tokio::test]
async fn the_notification_history_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(wk_alerter::notify::outbox::OUTBOX_FILE);
    let (n, _rx) = fake("pager", Behavior::Ok);
    let router = start(vec![n]);
    router.keep_outbox(path.clone());
    router.dispatch(vec![alert("cpu", "web1", Level::Critical, &["pager"])]);
    router.flush().await;
    router.shutdown(Duration::from_secs(1)).await;
    let history = dir.path().join(wk_alerter::notify::router::HISTORY_FILE);
    let text = std::fs::read_to_string(&history).expect("written at shutdown");
    // As if a second message had been under way at the stop.
    let mut entries: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let mut queued = entries[0].clone();
    queued["id"] = "cpu:host=web2".into();
    queued["status"] = "queued".into();
    entries.push(queued);
    std::fs::write(&history, serde_json::to_vec(&entries).unwrap()).unwrap();

    let (n, _rx) = fake("pager", Behavior::Ok);
    let next = start(vec![n]);
    next.keep_outbox(path);
    let seen: Vec<(String, String)> = next
        .history()
        .into_iter()
        .map(|d| (d.id, d.status))
        .collect();
    assert_eq!(
        seen,
        [
            ("cpu:host=web1".to_owned(), "sent".to_owned()),
            ("cpu:host=web2".to_owned(), "interrupted".to_owned())
        ]
    );
    next.dispatch(vec![alert("cpu", "web3", Level::Critical, &["pager"])]);
    next.flush().await;
    let last = next.history().pop().unwrap();
    assert_eq!(
        (last.id.as_str(), last.status.as_str()),
        ("cpu:host=web3", "sent")
    );
}

/// A waiting message whose probe is in flight at the stop keeps its deadline too (it was
/// saved as a fresh message: a receiver that hangs, restarted daily, never gave up).
#[tokio::test(start_paused = true)]
async fn a_waiting_message_in_flight_keeps_its_deadline() {
    let mut s = waiting_pager();
    s.timeout = Duration::from_secs(3600);
    let (n, mut rx) = fake_with(s, Behavior::FailThenHang);
    let router = start(vec![n]);
    router.dispatch(vec![alert("cpu", "web1", Level::Critical, &["pager"])]);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        drain(&mut rx).len(),
        2,
        "the first attempt, and the probe that hangs"
    );
    let left = router.undelivered();
    assert_eq!(left.len(), 1);
    let w = left[0]
        .waiting
        .expect("the probe in flight is a waiting message");
    let in_s = (w.give_up_at - wk_alerter::clock::now_ns()) / 1_000_000_000;
    assert!((3530..=3545).contains(&in_s), "given up in {in_s} s");
}
