//! The scheduler (`Service::run`) on tokio's paused time through an injected clock: rules are
//! evaluated at their scheduled tick, so `for` and `repeat` hold to the tick, not one `every`
//! late when an evaluation starts a few microseconds after its tick.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use wk_alerter::clock::{Clock, TokioClock};
use wk_alerter::model::{AlertEvent, EventKind};
use wk_alerter::service::Service;
use wk_alerter::source::{MemorySource, QuerySource};

const SEC: i64 = 1_000_000_000;
/// A simulated start, one second after a multiple of every interval used here.
const START: i64 = 1_800_000_000 * SEC + SEC;

/// Tokio's time plus a jitter that shrinks with each reading, as evaluations that start a
/// few hundred microseconds after their tick, less each time.
struct JitteryClock {
    inner: TokioClock,
    reads: AtomicI64,
}

impl Clock for JitteryClock {
    fn now_ns(&self) -> i64 {
        let n = self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.now_ns() + (900 - (n * 37) % 900) * 1_000
    }
}

/// Tokio's time minus a step the test sets (a wall clock set back).
struct SteppedClock {
    inner: TokioClock,
    back: AtomicI64,
}

impl Clock for SteppedClock {
    fn now_ns(&self) -> i64 {
        self.inner.now_ns() - self.back.load(Ordering::Relaxed)
    }
}

pub struct Running {
    pub events: mpsc::UnboundedReceiver<AlertEvent>,
    pub board: Arc<wk_alerter::api::board::Board>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    pub _dir: tempfile::TempDir,
}

impl Running {
    pub async fn stop(self) -> Vec<AlertEvent> {
        self.stop_keeping_dir().await.0
    }

    /// Stops the service (its states flushed) and keeps its directory to look into.
    pub async fn stop_keeping_dir(self) -> (Vec<AlertEvent>, tempfile::TempDir) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
        let mut events = self.events;
        let mut out = Vec::new();
        while let Ok(e) = events.try_recv() {
            out.push(e);
        }
        (out, self._dir)
    }
}

/// Starts a service over `rules` (file name, text) and `source`, on the clock `clock`.
pub fn start(
    rules: &[(&str, &str)],
    source: Arc<dyn QuerySource>,
    clock: Arc<dyn Clock>,
    extra: &str,
) -> Running {
    start_in(tempfile::tempdir().unwrap(), rules, source, clock, extra)
}

/// [`start`] in `dir` (a restart: its rules and states as a stopped run left them).
pub fn start_in(
    dir: tempfile::TempDir,
    rules: &[(&str, &str)],
    source: Arc<dyn QuerySource>,
    clock: Arc<dyn Clock>,
    extra: &str,
) -> Running {
    let rules_dir = dir.path().join("rules");
    std::fs::create_dir_all(&rules_dir).unwrap();
    for (name, text) in rules {
        std::fs::write(rules_dir.join(name), text).unwrap();
    }
    let conf = format!(
        "[alerter]\n  rules_dir = {:?}\n  state_dir = {:?}\n{extra}\
         [stream]\n  listen = \"127.0.0.1:0\"\n  token = \"a-token-long-enough-for-tests\"\n",
        rules_dir.display().to_string(),
        dir.path().join("state").display().to_string(),
    );
    let no_env = |_: &str| None;
    let cfg = wk_alerter::config::load_str(&dir.path().join("alerter.conf"), &conf, &no_env)
        .unwrap_or_else(|e| panic!("config: {:?}", e.errors));
    let mut service = Service::with_clock(cfg, source, clock);
    let events = service.subscribe();
    let board = service.board();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (_reload_tx, reload_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let _keep = _reload_tx;
        service
            .run(
                async {
                    let _ = stopped.await;
                },
                reload_rx,
            )
            .await;
    });
    Running {
        events,
        board,
        stop,
        task,
        _dir: dir,
    }
}

fn busy_host() -> Arc<dyn QuerySource> {
    let points =
        wk_core::lineproto::parse(&format!("cpu,host=web1 busy=95 {}\n", START - SEC), 0).unwrap();
    Arc::new(MemorySource::from_metrics(&points))
}

const FOR_8S: &str = r#"
rule(#{ every: "4s", "for": "8s", repeat: "20s", no_data: "keep" });
fn check() {
    let cpu = query("cpu").field("busy").range("1h").last().group_by("host").run();
    for s in cpu { s.crit(s.value > 90.0); }
    cpu
}
"#;

/// Regression: `for "8s"` with `every "4s"` fired after 12 s and `repeat "20s"` gave gaps of
/// 24 s about half the time, because evaluation start times (tick + jitter) were compared.
#[tokio::test(start_paused = true)]
async fn for_and_repeat_hold_to_the_tick_whatever_the_jitter() {
    let clock = Arc::new(JitteryClock {
        inner: TokioClock::starting_at(START),
        reads: AtomicI64::new(0),
    });
    let t0 = tokio::time::Instant::now();
    let mut run = start(&[("cpu.rhai", FOR_8S)], busy_host(), clock, "");
    let mut received = Vec::new();
    let deadline = t0 + Duration::from_secs(75);
    while let Ok(Some(e)) = tokio::time::timeout_at(deadline, run.events.recv()).await {
        received.push((tokio::time::Instant::now() - t0, e));
    }
    run.stop().await;

    // Ticks at multiples of 4 s: the first after START is 3 s in; each is evaluated 1 s
    // after it (the default evaluation delay: a quarter of `every`), as of the tick.
    let first_tick = Duration::from_secs(3 + 1);
    let alerts: Vec<_> = received
        .iter()
        .filter(|(_, e)| e.kind == EventKind::Alert)
        .collect();
    let at: Vec<Duration> = alerts.iter().map(|(t, _)| *t - first_tick).collect();
    let want: Vec<Duration> = [8, 28, 48, 68].map(Duration::from_secs).to_vec();
    assert_eq!(
        at, want,
        "fired/reminded at these times after the first tick"
    );
    let stamped: Vec<i64> = alerts.iter().map(|(_, e)| e.time - START).collect();
    assert_eq!(stamped, [11, 31, 51, 71].map(|s| s * SEC), "event times");
    assert_eq!(alerts[0].1.duration, Duration::from_secs(8));
}

/// The next event within `secs` of (paused) time, if any.
async fn next_event(run: &mut Running, secs: u64) -> Option<AlertEvent> {
    tokio::time::timeout(Duration::from_secs(secs), run.events.recv())
        .await
        .ok()
        .flatten()
}

/// Regression: the `wk_rules` recovery said "does not load; the last good version keeps
/// running: " with an empty reason.
#[tokio::test(start_paused = true)]
async fn a_fixed_rule_file_recovers_with_a_recovery_text() {
    let clock = Arc::new(TokioClock::starting_at(START));
    let mut run = start(
        &[("cpu.rhai", "rule(#{ every: \"1s\" });\nfn check( {\n")],
        busy_host(),
        clock,
        "",
    );
    let alert = next_event(&mut run, 10)
        .await
        .expect("the broken-file alert");
    assert_eq!(
        (alert.rule.as_str(), alert.kind),
        ("wk_rules", EventKind::Alert)
    );
    assert!(
        alert
            .message
            .starts_with("rule file cpu.rhai does not load")
            && alert.message.contains("cpu.rhai:2:"),
        "{}",
        alert.message
    );
    assert!(
        alert.message.contains("no earlier version runs"),
        "{}",
        alert.message
    );
    let rules_dir = run._dir.path().join("rules");
    std::fs::write(rules_dir.join("cpu.rhai"), FOR_8S).unwrap();
    let recovery = next_event(&mut run, 20).await.expect("the recovery");
    assert_eq!(
        (recovery.rule.as_str(), recovery.kind),
        ("wk_rules", EventKind::Recovery)
    );
    assert_eq!(recovery.message, "rule file cpu.rhai loads again");
    run.stop().await;
}

fn host_rule(measurement: &str, every: &str) -> String {
    format!(
        "rule(#{{ every: \"{every}\" }});\n\
         fn check() {{\n\
           let s = query(\"{measurement}\").field(\"v\").range(\"3s\").last().group_by(\"host\").run();\n\
           for x in s {{ x.crit(x.value > 90.0); }}\n\
           s\n\
         }}\n"
    )
}

/// Regression: a host that died raised one CRITICAL per rule (each rule's NoData) within a
/// minute. With the defaults it is one page per dead host; a healthy host is untouched.
#[tokio::test(start_paused = true)]
async fn one_dead_host_is_one_page() {
    let mut text = String::new();
    for k in -1..2 {
        for m in ["cpu", "mem", "disk"] {
            text += &format!("{m},host=web1 v=1 {}\n", START + k * SEC);
        }
    }
    for k in -1..120 {
        for m in ["cpu", "mem", "disk"] {
            text += &format!("{m},host=web2 v=1 {}\n", START + k * SEC);
        }
    }
    let points = wk_core::lineproto::parse(&text, 0).unwrap();
    let source: Arc<dyn QuerySource> = Arc::new(MemorySource::from_metrics(&points));
    let cpu = host_rule("cpu", "1s");
    let mem = host_rule("mem", "2s");
    let disk = host_rule("disk", "5s");
    let run = start(
        &[("cpu.rhai", &cpu), ("mem.rhai", &mem), ("disk.rhai", &disk)],
        source,
        Arc::new(TokioClock::starting_at(START)),
        "",
    );
    tokio::time::sleep(Duration::from_secs(90)).await;
    let events = run.stop().await;
    let pages: Vec<(String, String)> = events
        .iter()
        .map(|e| (e.rule.clone(), e.message.clone()))
        .collect();
    assert_eq!(events.len(), 1, "{pages:#?}");
    assert_eq!(events[0].kind, EventKind::NoData);
    assert_eq!(events[0].tags["host"], "web1");
}

/// A source whose `slow` measurement blocks its thread for 3 s (an InfluxDB query that hangs),
/// burning no CPU, and that fails every query while `down` is set (a database outage);
/// everything else is answered by `inner`.
struct TestSource {
    inner: MemorySource,
    down: Arc<std::sync::atomic::AtomicBool>,
}

impl QuerySource for TestSource {
    fn query(
        &self,
        q: &wk_alerter::query::Query,
        now_ns: i64,
    ) -> Result<Vec<wk_alerter::source::Series>, wk_alerter::source::SourceError> {
        if self.down.load(Ordering::Relaxed) {
            return Err(wk_alerter::source::SourceError::Connect {
                engine: "InfluxDB",
                url: "http://db.invalid:8086".into(),
                message: "connection refused".into(),
            });
        }
        if q.measurement == "slow" {
            std::thread::sleep(Duration::from_secs(3));
        }
        self.inner.query(q, now_ns)
    }

    fn influxql(
        &self,
        text: &str,
        now_ns: i64,
    ) -> Result<Vec<wk_alerter::source::Series>, wk_alerter::source::SourceError> {
        self.inner.influxql(text, now_ns)
    }
}

const SLOW_RULE: &str = r#"
rule(#{ every: "1s", no_data: "keep" });
fn check() { query("slow").field("v").range("1h").last().run() }
"#;

const HEALTHY_RULE: &str = r#"
rule(#{ every: "1s", repeat: "1s", no_data: "keep" });
fn check() {
    let cpu = query("cpu").field("busy").range("1h").last().group_by("host").run();
    for s in cpu { s.crit(s.value > 90.0); }
    cpu
}
"#;

/// Regression: with 6 rules running into the time limit, a 1 s rule ran every 5 s (4 shared
/// evaluation slots). Real time, as the runaway evaluations block real threads: the healthy
/// rule keeps its ticks, and the runaway ones are stopped at the limit and reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_rules_do_not_delay_a_healthy_one() {
    let now = wk_alerter::clock::now_ns();
    let points = wk_core::lineproto::parse(&format!("cpu,host=web1 busy=95 {now}\n"), 0).unwrap();
    let source = Arc::new(TestSource {
        inner: MemorySource::from_metrics(&points),
        down: Arc::default(),
    });
    let mut rules: Vec<(String, &str)> = (0..6)
        .map(|i| (format!("a_slow{i}.rhai"), SLOW_RULE))
        .collect();
    rules.push(("z_healthy.rhai".into(), HEALTHY_RULE));
    let rules: Vec<(&str, &str)> = rules.iter().map(|(n, t)| (n.as_str(), *t)).collect();
    let run = start(
        &rules,
        source,
        Arc::new(wk_alerter::clock::SystemClock),
        "  max_eval_time = \"500ms\"\n",
    );
    tokio::time::sleep(Duration::from_millis(4_600)).await;
    let events = run.stop().await;
    assert_ticks(&events, "z_healthy", 4);
    let reported: Vec<&str> = events
        .iter()
        .filter(|e| e.rule == "wk_rules")
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(reported.len(), 6, "{reported:#?}");
    assert!(
        reported
            .iter()
            .all(|m| m.contains("stopped at its time limit of 500ms")),
        "{reported:#?}"
    );
}

/// Fails the test unless `rule` ran at least `n` times, each a second after the one before
/// (no tick skipped).
#[track_caller]
fn assert_ticks(events: &[AlertEvent], rule: &str, n: usize) {
    let ran: Vec<i64> = events
        .iter()
        .filter(|e| e.rule == rule)
        .map(|e| e.time)
        .collect();
    assert!(ran.len() >= n, "{rule} ran at {ran:?}");
    assert!(
        ran.windows(2).all(|w| w[1] - w[0] == SEC),
        "{rule} skipped ticks: {ran:?}"
    );
}

/// A rule whose top level (run when the file loads) takes about a second.
const SLOW_TO_LOAD: &str = r#"
rule(#{ every: "1h" });
let i = 0;
while i < 2_500_000 { i += 1; }
fn check() { [] }
"#;

/// Regression (issue 10 item 12): rule files were read and compiled on the scheduler task, so
/// a file slow to load (or a slow disk) delayed every rule's tick. Real time: compiling runs
/// on the blocking pool, and the healthy rule keeps its ticks while a new file loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loading_a_rule_file_does_not_delay_the_others() {
    let now = wk_alerter::clock::now_ns();
    let points = wk_core::lineproto::parse(&format!("cpu,host=web1 busy=95 {now}\n"), 0).unwrap();
    let run = start(
        &[("healthy.rhai", HEALTHY_RULE)],
        Arc::new(MemorySource::from_metrics(&points)),
        Arc::new(wk_alerter::clock::SystemClock),
        "  reload_interval = \"300ms\"\n",
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    for n in 0..3 {
        let path = run._dir.path().join("rules").join(format!("slow{n}.rhai"));
        std::fs::write(path, SLOW_TO_LOAD).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let events = run.stop().await;
    assert_ticks(&events, "healthy", 5);
}

/// Regression: a rule file deleted while its alert fired left the incident open forever and
/// its state file behind (Kapacitor does the same). Now a recovery says why, and the state
/// goes.
#[tokio::test(start_paused = true)]
async fn a_deleted_rule_closes_its_alerts_and_forgets_its_state() {
    let clock = Arc::new(TokioClock::starting_at(START));
    let rule = r#"
rule(#{ every: "1s", no_data: "keep" });
fn check() {
    let cpu = query("cpu").field("busy").range("1h").last().group_by("host").run();
    for s in cpu { s.crit(s.value > 90.0); }
    cpu
}
"#;
    let mut run = start(
        &[("cpu.rhai", rule)],
        busy_host(),
        clock,
        "  reload_interval = \"1s\"\n",
    );
    let alert = next_event(&mut run, 10).await.expect("the alert");
    assert_eq!(
        (alert.kind, alert.id.as_str()),
        (EventKind::Alert, "cpu:host=web1")
    );
    let state = run._dir.path().join("state").join("cpu.state.json");
    // States are written by their own thread: give it a moment (real time).
    let t0 = std::time::Instant::now();
    while !state.exists() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(state.exists());
    std::fs::remove_file(run._dir.path().join("rules").join("cpu.rhai")).unwrap();
    let closed = next_event(&mut run, 10).await.expect("a recovery");
    assert_eq!(closed.kind, EventKind::Recovery);
    assert!(
        closed
            .message
            .starts_with("cpu:host=web1 is closed: the rule was removed"),
        "{}",
        closed.message
    );
    let (_, _dir) = run.stop_keeping_dir().await;
    assert!(state.with_file_name("").exists());
    assert!(!state.exists(), "the removed rule's state is forgotten");
}

const NAMED_CPU: &str = r#"
rule(#{ name: "cpu", every: "1s", no_data: "keep" });
fn check() {
    let cpu = query("cpu").field("busy").range("1h").last().group_by("host").run();
    for s in cpu { s.crit(s.value > 90.0); }
    cpu
}
"#;

/// Waits (paused time) until the alert of rule `cpu` fires, then returns the run.
async fn cpu_firing(rules: &[(&str, &str)]) -> Running {
    let clock = Arc::new(TokioClock::starting_at(START));
    let mut run = start(rules, busy_host(), clock, "  reload_interval = \"1s\"\n");
    let alert = next_event(&mut run, 10).await.expect("the alert");
    assert_eq!(
        (alert.kind, alert.id.as_str()),
        (EventKind::Alert, "cpu:host=web1")
    );
    run
}

/// Each event as (kind, rule, message).
fn summarize(events: &[AlertEvent]) -> Vec<(EventKind, &str, &str)> {
    events
        .iter()
        .map(|e| (e.kind, e.rule.as_str(), e.message.as_str()))
        .collect()
}

/// What the run sent in `secs` seconds of (paused) time.
async fn events_for(run: &mut Running, secs: u64) -> Vec<AlertEvent> {
    let mut out = Vec::new();
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    while let Ok(Some(e)) = tokio::time::timeout_at(end, run.events.recv()).await {
        out.push(e);
    }
    out
}

/// Regression: `git pull` replaces a changed file by unlinking it and writing the new one; a
/// scan between the two closed the rule's alerts ("the rule was removed") and the next scan
/// fired them again: two pages for nothing. A file is gone when two scans miss it.
#[tokio::test(start_paused = true)]
async fn a_rule_file_missing_for_one_scan_keeps_its_alerts() {
    let mut run = cpu_firing(&[("cpu.rhai", NAMED_CPU)]).await;
    let file = run._dir.path().join("rules").join("cpu.rhai");
    std::fs::remove_file(&file).unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    std::fs::write(&file, NAMED_CPU.replace("90.0", "91.0")).unwrap();
    let events = events_for(&mut run, 5).await;
    assert!(events.is_empty(), "{events:#?}");
    run.stop().await;
}

/// `git pull` writes a changed file in place: a scan may read it half-written. A file that
/// does not load is reported when the next scan reads the same text; meanwhile the running
/// version goes on, and nobody is paged for a file caught mid-write.
#[tokio::test(start_paused = true)]
async fn a_rule_file_read_half_written_is_no_page() {
    let mut run = cpu_firing(&[("cpu.rhai", NAMED_CPU)]).await;
    let file = run._dir.path().join("rules").join("cpu.rhai");
    let half = &NAMED_CPU[..NAMED_CPU.len() / 2];
    std::fs::write(&file, half).unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    std::fs::write(&file, NAMED_CPU.replace("90.0", "91.0")).unwrap();
    let events = events_for(&mut run, 5).await;
    assert!(events.is_empty(), "{events:#?}");
    // Left broken, it is reported.
    std::fs::write(&file, half).unwrap();
    let told = next_event(&mut run, 5).await.expect("wk_rules");
    assert_eq!(
        (told.kind, told.rule.as_str()),
        (EventKind::Alert, "wk_rules")
    );
    run.stop().await;
}

/// Regression: a scan that could not read the rules directory (NFS, a directory swapped by a
/// deploy) retired every rule: all alerts closed, their states deleted, and fired again once
/// the directory was back. Now the rules keep running and `wk_rules` says why.
#[tokio::test(start_paused = true)]
async fn an_unreadable_rules_directory_stops_no_rule() {
    let mut run = cpu_firing(&[("cpu.rhai", NAMED_CPU)]).await;
    let rules = run._dir.path().join("rules");
    let aside = run._dir.path().join("rules.old");
    std::fs::rename(&rules, &aside).unwrap();
    let events = events_for(&mut run, 4).await;
    let said = summarize(&events);
    assert_eq!(said.len(), 1, "{said:#?}");
    assert_eq!((said[0].0, said[0].1), (EventKind::Alert, "wk_rules"));
    assert!(
        said[0]
            .2
            .contains("cannot be read; the rules loaded keep running"),
        "{}",
        said[0].2
    );
    std::fs::rename(&aside, &rules).unwrap();
    let events = events_for(&mut run, 4).await;
    let said = summarize(&events);
    assert_eq!(said.len(), 1, "{said:#?}");
    assert_eq!((said[0].0, said[0].1), (EventKind::Recovery, "wk_rules"));
    assert!(said[0].2.ends_with("can be read again"), "{}", said[0].2);
    run.stop().await;
}

/// Regression: `git mv cpu.rhai cpu_high.rhai` of a rule that names itself loaded the new
/// file with the old state, then retired the old one: receivers read "closed: the rule was
/// removed" for an alert that still fired, and its state file was deleted. Now the alerts
/// carry on under the new file, silently.
#[tokio::test(start_paused = true)]
async fn a_renamed_rule_file_carries_its_alerts() {
    let mut run = cpu_firing(&[("cpu.rhai", NAMED_CPU)]).await;
    let rules = run._dir.path().join("rules");
    std::fs::rename(rules.join("cpu.rhai"), rules.join("cpu_high.rhai")).unwrap();
    let events = events_for(&mut run, 5).await;
    assert!(events.is_empty(), "{events:#?}");
    // The carried state is the running one: the recovery still comes when the value drops.
    let state = run._dir.path().join("state").join("cpu.state.json");
    let (_, _dir) = run.stop_keeping_dir().await;
    assert!(state.exists(), "the rule's state is kept");
}

/// A rule renamed in its script is a new rule to receivers: alert ids carry the rule's name,
/// so the old name's alerts are closed (saying why) and the new name fires its own. Before,
/// the instances carried on under new ids and the old incidents stayed open forever.
#[tokio::test(start_paused = true)]
async fn a_rule_renamed_in_its_script_closes_the_old_names_alerts() {
    let mut run = cpu_firing(&[("cpu.rhai", NAMED_CPU)]).await;
    let file = run._dir.path().join("rules").join("cpu.rhai");
    std::fs::write(
        &file,
        NAMED_CPU.replace("name: \"cpu\"", "name: \"cpu_busy\""),
    )
    .unwrap();
    let events = events_for(&mut run, 5).await;
    let said: Vec<(EventKind, &str)> = events.iter().map(|e| (e.kind, e.id.as_str())).collect();
    assert_eq!(
        said,
        [
            (EventKind::Recovery, "cpu:host=web1"),
            (EventKind::Alert, "cpu_busy:host=web1")
        ],
        "{events:#?}"
    );
    assert!(
        events[0]
            .message
            .contains("the rule was renamed to cpu_busy"),
        "{}",
        events[0].message
    );
    let state = run._dir.path().join("state");
    let (_, _dir) = run.stop_keeping_dir().await;
    assert!(
        !state.join("cpu.state.json").exists(),
        "the old name's state is forgotten"
    );
}

/// Two files that load rules of one name would share one state file (each restoring the
/// other's alerts after a restart): the second is refused, and the first keeps running.
#[tokio::test(start_paused = true)]
async fn a_second_rule_of_the_same_name_is_refused() {
    let mut run = cpu_firing(&[("cpu.rhai", NAMED_CPU)]).await;
    let rules = run._dir.path().join("rules");
    std::fs::write(rules.join("cpu_copy.rhai"), NAMED_CPU).unwrap();
    let events = events_for(&mut run, 4).await;
    let said = summarize(&events);
    assert_eq!(said.len(), 1, "{said:#?}");
    assert_eq!((said[0].0, said[0].1), (EventKind::Alert, "wk_rules"));
    assert!(
        said[0]
            .2
            .contains("cpu_copy.rhai:2:15: rule name \"cpu\" is already used by"),
        "{}",
        said[0].2
    );
    run.stop().await;
}

/// Regression: evaluations were scheduled on the wall clock, so a clock set back (NTP
/// correcting a clock that ran ahead) stopped every rule for as long as the step, while the
/// heartbeat went on. Now the schedule is rebuilt from the new time.
#[tokio::test(start_paused = true)]
async fn a_clock_set_back_does_not_stop_the_rules() {
    let clock = Arc::new(SteppedClock {
        inner: TokioClock::starting_at(START),
        back: AtomicI64::new(0),
    });
    let run = start(&[("cpu.rhai", NAMED_CPU)], busy_host(), clock.clone(), "");
    let evaluations =
        |run: &Running| -> u64 { run.board.get().rules.values().map(|r| r.evaluations).sum() };
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let before = evaluations(&run);
    assert!(before >= 3, "{before}");
    clock.back.store(3_600 * SEC, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = evaluations(&run) - before;
    assert!(
        after >= 4,
        "{after} evaluations in the 5 s after the clock went back an hour"
    );
    run.stop().await;
}

/// Regression: the last good version of a rule whose file does not load runs only until a
/// restart. After one, the rule did not run at all, and receivers had last read "the last good
/// version keeps running" (the wk_rules alert, restored as firing, was not sent again).
#[tokio::test(start_paused = true)]
async fn after_a_restart_a_broken_rule_that_no_longer_runs_is_told_again() {
    let mut run = cpu_firing(&[("cpu.rhai", NAMED_CPU)]).await;
    std::fs::write(
        run._dir.path().join("rules").join("cpu.rhai"),
        "fn check( {\n",
    )
    .unwrap();
    let told = next_event(&mut run, 5).await.expect("wk_rules");
    assert_eq!(
        (told.kind, told.rule.as_str()),
        (EventKind::Alert, "wk_rules")
    );
    assert!(
        told.message.contains("the last good version keeps running"),
        "{}",
        told.message
    );
    let (_, dir) = run.stop_keeping_dir().await;

    let clock = Arc::new(TokioClock::starting_at(START + 60 * SEC));
    let mut run = start_in(dir, &[], busy_host(), clock, "  reload_interval = \"1s\"\n");
    let events = events_for(&mut run, 5).await;
    let said = summarize(&events);
    assert_eq!(said.len(), 1, "{said:#?}");
    assert_eq!((said[0].0, said[0].1), (EventKind::Alert, "wk_rules"));
    assert!(
        said[0]
            .2
            .contains("does not load (no earlier version runs)"),
        "{}",
        said[0].2
    );
    run.stop().await;
}

/// Regression: a reload that changed a rule's `group_by` left the instances of the old
/// grouping to go NoData (CRITICAL by default) until `expire_after`, 24 h, inhibiting what
/// they inhibit. The first series of the new version close them, saying why.
#[tokio::test(start_paused = true)]
async fn a_reload_that_regroups_closes_the_old_groups_alerts() {
    let by = |tags: &str| {
        format!(
            r#"
rule(#{{ every: "1s" }});
fn check() {{
    let cpu = query("cpu").field("busy").range("1h").last().group_by({tags}).run();
    for s in cpu {{ s.crit(s.value > 90.0); }}
    cpu
}}
"#
        )
    };
    let points = format!(
        "cpu,host=web1,cpu=cpu0 busy=95 {t}\ncpu,host=web1,cpu=cpu1 busy=5 {t}\n",
        t = START - SEC
    );
    let source = Arc::new(MemorySource::from_metrics(
        &wk_core::lineproto::parse(&points, 0).unwrap(),
    ));
    let clock = Arc::new(TokioClock::starting_at(START));
    let rule = by("\"host\"");
    let mut run = start(
        &[("cpu.rhai", &rule)],
        source,
        clock,
        "  reload_interval = \"1s\"\n",
    );
    let alert = next_event(&mut run, 10).await.expect("the alert");
    assert_eq!(alert.id, "cpu:host=web1");
    let file = run._dir.path().join("rules").join("cpu.rhai");
    std::fs::write(&file, by("\"host\", \"cpu\"")).unwrap();
    let events = events_for(&mut run, 5).await;
    let said: Vec<(EventKind, &str, &str)> = events
        .iter()
        .map(|e| (e.kind, e.id.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(said.len(), 2, "{said:#?}");
    assert_eq!(
        (said[0].0, said[0].1),
        (EventKind::Recovery, "cpu:host=web1")
    );
    assert_eq!(
        said[0].2,
        "cpu:host=web1 is closed: the rule now groups its series by other tags"
    );
    assert_eq!(
        (said[1].0, said[1].1),
        (EventKind::Alert, "cpu:cpu=cpu0,host=web1")
    );
    run.stop().await;
}

/// `evaluation_spread`: rules that share a tick start at offsets of their own (fixed by their
/// name, within the spread), so they do not all query at once, and are still evaluated as of
/// the tick: `for`, `repeat` and event times are those of the run without a spread.
#[tokio::test(start_paused = true)]
async fn evaluation_spread_staggers_starts_not_ticks() {
    let clock = Arc::new(TokioClock::starting_at(START));
    let t0 = tokio::time::Instant::now();
    let names = ["a", "b", "c", "d"];
    let files: Vec<(String, &str)> = names
        .iter()
        .map(|n| (format!("{n}.rhai"), FOR_8S))
        .collect();
    let files: Vec<(&str, &str)> = files.iter().map(|(f, t)| (f.as_str(), *t)).collect();
    let extra = "  evaluation_spread = \"2s\"\n";
    let mut run = start(&files, busy_host(), clock, extra);
    let mut first = std::collections::BTreeMap::new();
    let deadline = t0 + Duration::from_secs(30);
    while let Ok(Some(e)) = tokio::time::timeout_at(deadline, run.events.recv()).await {
        if e.kind == EventKind::Alert {
            first
                .entry(e.rule.clone())
                .or_insert((tokio::time::Instant::now() - t0, e.time - START));
        }
    }
    run.stop().await;

    let settings = wk_alerter::config::Settings {
        evaluation_spread: Duration::from_secs(2),
        ..Default::default()
    };
    let every = Duration::from_secs(4);
    let mut starts = Vec::new();
    for n in names {
        let after = settings.start_after(every, n);
        let delay = Duration::from_secs(1); // the default: a quarter of `every`
        assert!(
            after >= delay && after < delay + Duration::from_secs(2),
            "{n}: {after:?}"
        );
        // The first tick is 3 s in; `for "8s"` holds from it: the alert is evaluated as of
        // the tick 8 s later and sent when that evaluation starts.
        let (at, stamped) = first[n];
        // (tokio's timers round up to the millisecond)
        let want = Duration::from_secs(3 + 8) + after;
        assert!(
            at >= want && at <= want + Duration::from_millis(1),
            "{n}: {at:?}, want {want:?}"
        );
        assert_eq!(stamped, 11 * SEC, "{n}: stamped with its tick");
        starts.push(after);
    }
    starts.sort();
    starts.dedup();
    assert_eq!(
        starts.len(),
        names.len(),
        "each rule at an offset of its own: {starts:?}"
    );
}

const ALWAYS: &str = r#"
rule(#{ every: "1s", notify: ["hook"] });
fn check() {
    let cpu = query("cpu").field("busy").range("1h").last().group_by("host").run();
    for s in cpu { s.crit(true); }
    cpu
}
"#;

/// Runs [`ALWAYS`] with its page going to a webhook that answers `statuses` in turn
/// (`notifier_outage_after` 1 s) until `health` events of `wk_notifiers` or `secs` seconds;
/// returns them and the first `requests` bodies the webhook received.
async fn webhook_health(
    statuses: Vec<u16>,
    health: usize,
    secs: u64,
    requests: usize,
) -> (Vec<AlertEvent>, Vec<serde_json::Value>) {
    let now = wk_alerter::clock::now_ns();
    let points = wk_core::lineproto::parse(&format!("cpu,host=web1 busy=95 {now}\n"), 0).unwrap();
    let mut sink = crate::notify::support::HttpSink::start(statuses).await;
    let extra = format!(
        "  reload_interval = \"100ms\"\n  notifier_outage_after = \"1s\"\n\
         [[notifiers.webhook]]\n  name = \"hook\"\n  url = \"{}\"\n  retries = 1\n  backoff = \"100ms\"\n",
        sink.url("/hook")
    );
    let mut run = start(
        &[("cpu.rhai", ALWAYS)],
        Arc::new(MemorySource::from_metrics(&points)),
        Arc::new(wk_alerter::clock::SystemClock),
        &extra,
    );
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while seen.len() < health {
        let Ok(Some(e)) = tokio::time::timeout_at(deadline, run.events.recv()).await else {
            break;
        };
        if e.rule == "wk_notifiers" {
            seen.push(e);
        }
    }
    let mut bodies = Vec::new();
    for _ in 0..requests {
        bodies.push(sink.next().await.json());
    }
    run.stop().await;
    (seen, bodies)
}

/// A receiver that refuses for longer than `notifier_outage_after` is one `wk_notifiers`
/// alert naming the notifier and the error, and a recovery once a message gets through;
/// the page itself waits for the receiver and is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_refuses_is_a_health_alert_until_a_message_gets_through() {
    // Two attempts refused (the retry), the parked message's probe refused, then accepted.
    let (health, bodies) = webhook_health(vec![503, 503, 503, 200], 2, 15, 4).await;
    let kinds: Vec<_> = health.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [EventKind::Alert, EventKind::Recovery],
        "{health:#?}"
    );
    assert_eq!(health[0].id, "wk_notifiers:hook");
    assert!(
        health[0]
            .message
            .starts_with("notifier hook has not delivered for 1s: ")
            && health[0].message.contains("503"),
        "{}",
        health[0].message
    );
    assert_eq!(health[1].message, "notifier hook delivers again");
    // The page was tried four times (the fourth delivered it) and nothing else was sent.
    assert!(
        bodies
            .iter()
            .all(|b| b["rule"] == "cpu" && b["kind"] == "alert"),
        "{bodies:#?}"
    );
}

/// A refusal that a retry gets past within `notifier_outage_after` is no alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_shorter_than_notifier_outage_after_is_no_alert() {
    let (health, bodies) = webhook_health(vec![503, 200], 1, 4, 2).await;
    assert_eq!(health, [], "no wk_notifiers event");
    assert_eq!(bodies[1]["rule"], "cpu", "delivered by the retry");
}

/// `[heartbeat]`: the dead man's switch is pinged at once and every `interval`; while the
/// source does not answer (`wk_source` fires) the pings stop and `fail_url` gets the reason
/// once; when it answers again the pings resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_stops_while_the_alerter_cannot_see_and_says_why() {
    let now = wk_alerter::clock::now_ns();
    let points = wk_core::lineproto::parse(&format!("cpu,host=web1 busy=5 {now}\n"), 0).unwrap();
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let source = Arc::new(TestSource {
        inner: MemorySource::from_metrics(&points),
        down: down.clone(),
    });
    let mut sink = crate::notify::support::HttpSink::start(vec![200]).await;
    let extra = format!(
        "  reload_interval = \"100ms\"\n  source_outage_after = \"1s\"\n\
         [heartbeat]\n  url = \"{}\"\n  fail_url = \"{}\"\n  interval = \"1s\"\n  method = \"POST\"\n\
         [heartbeat.headers]\n  Authorization = \"Bearer hb\"\n",
        sink.url("/ping/uuid"),
        sink.url("/ping/uuid/fail"),
    );
    let t0 = tokio::time::Instant::now();
    let run = start(
        &[(
            "cpu.rhai",
            ALWAYS
                .replace("notify: [\"hook\"]", "no_data: \"keep\"")
                .as_str(),
        )],
        source,
        Arc::new(wk_alerter::clock::SystemClock),
        &extra,
    );
    let first = sink.next().await;
    assert_eq!(first.path, "/ping/uuid");
    assert_eq!(first.header("authorization"), Some("Bearer hb"));
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "the first ping at start"
    );
    let second = sink.next().await;
    assert_eq!(second.path, "/ping/uuid", "every interval");

    down.store(true, Ordering::Relaxed);
    let mut fail = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fail.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no fail_url request"
        );
        let r = sink.next().await;
        if r.path.ends_with("/fail") {
            fail = Some(r);
        }
    }
    let fail = fail.unwrap();
    let reason = String::from_utf8_lossy(&fail.body).into_owned();
    assert!(
        reason.contains("query source") && reason.contains("does not answer"),
        "{reason}"
    );
    // Withheld: nothing for three intervals.
    let quiet = tokio::time::timeout(Duration::from_secs(3), sink.next()).await;
    assert!(
        quiet.is_err(),
        "a ping while the source was down: {:?}",
        quiet.map(|r| r.path)
    );

    down.store(false, Ordering::Relaxed);
    let back = sink.next().await;
    assert_eq!(back.path, "/ping/uuid", "the pings resume");
    run.stop().await;
}

/// Runs [`ALWAYS`] paging a webhook nothing listens on, with a heartbeat to a sink and
/// `rule_errors_notify = tellers`; once `wk_notifiers` fires, returns the paths the sink got
/// over the next 3 s.
async fn heartbeat_with_a_dead_notifier(tellers: &str) -> Vec<String> {
    let now = wk_alerter::clock::now_ns();
    let points = wk_core::lineproto::parse(&format!("cpu,host=web1 busy=95 {now}\n"), 0).unwrap();
    let mut sink = crate::notify::support::HttpSink::start(vec![200]).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "  reload_interval = \"100ms\"\n  notifier_outage_after = \"1s\"\n  rule_errors_notify = {tellers}\n\
         [[notifiers.webhook]]\n  name = \"hook\"\n  url = \"http://127.0.0.1:{}/\"\n  retries = 0\n\
         [[notifiers.log]]\n  name = \"log\"\n  file = {:?}\n\
         [heartbeat]\n  url = \"{}\"\n  fail_url = \"{}\"\n  interval = \"1s\"\n",
        wk_core::testing::free_port(),
        dir.path().join("events.jsonl"),
        sink.url("/ping"),
        sink.url("/fail"),
    );
    let mut run = start(
        &[("cpu.rhai", ALWAYS)],
        Arc::new(MemorySource::from_metrics(&points)),
        Arc::new(wk_alerter::clock::SystemClock),
        &extra,
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let e = tokio::time::timeout_at(deadline, run.events.recv()).await;
        let e = e.expect("wk_notifiers fires").unwrap();
        if e.rule == "wk_notifiers" {
            assert_eq!(e.id, "wk_notifiers:hook");
            break;
        }
    }
    while sink.requests.try_recv().is_ok() {}
    let mut paths = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Some(r)) = tokio::time::timeout_at(until, sink.requests.recv()).await {
        paths.push(r.path);
    }
    run.stop().await;
    paths
}

/// One notifier down while another can tell about it is a `wk_notifiers` alert, not a page
/// through the dead man's switch; the one that would tell being down withholds the pings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_is_withheld_only_when_no_notifier_can_tell() {
    let paths = heartbeat_with_a_dead_notifier("[\"log\", \"hook\"]").await;
    assert!(
        paths.len() >= 2 && paths.iter().all(|p| p == "/ping"),
        "{paths:?}"
    );
    let paths = heartbeat_with_a_dead_notifier("[\"hook\"]").await;
    assert!(
        paths.len() <= 1 && paths.iter().all(|p| p == "/fail"),
        "{paths:?}"
    );
}

/// A notifier still down across a restart stays a `wk_notifiers` alert: the fresh counters
/// read as "delivers again" until its first attempt, a false recovery at every restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notifier_down_across_a_restart_is_still_down() {
    let now = wk_alerter::clock::now_ns();
    let points = wk_core::lineproto::parse(&format!("cpu,host=web1 busy=95 {now}\n"), 0).unwrap();
    let sink = crate::notify::support::HttpSink::start(vec![503; 1000]).await;
    let extra = format!(
        "  reload_interval = \"100ms\"\n  notifier_outage_after = \"1s\"\n\
         [[notifiers.webhook]]\n  name = \"hook\"\n  url = \"{}\"\n  retries = 0\n  backoff = \"30s\"\n  backoff_max = \"30s\"\n",
        sink.url("/hook")
    );
    let source = Arc::new(MemorySource::from_metrics(&points));
    let clock = Arc::new(wk_alerter::clock::SystemClock);
    let mut run = start(
        &[("cpu.rhai", ALWAYS)],
        source.clone(),
        clock.clone(),
        &extra,
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let e = tokio::time::timeout_at(deadline, run.events.recv())
            .await
            .expect("wk_notifiers fires")
            .unwrap();
        if e.rule == "wk_notifiers" {
            assert_eq!(e.kind, EventKind::Alert, "{e:?}");
            break;
        }
    }
    let (_, dir) = run.stop_keeping_dir().await;
    let mut run = start_in(dir, &[], source, clock, &extra);
    let quiet = tokio::time::Instant::now() + Duration::from_secs(4);
    while let Ok(Some(e)) = tokio::time::timeout_at(quiet, run.events.recv()).await {
        assert_ne!(
            e.rule, "wk_notifiers",
            "no recovery while it is down: {e:?}"
        );
    }
    let still = run
        .board
        .get()
        .builtin
        .iter()
        .any(|c| c.event.rule == "wk_notifiers");
    assert!(still, "still firing after the restart");
    // Nothing to send after the next restart (the outbox gone): nothing says it is still
    // down, and the alert ends once notifier_outage_after passes with no attempt.
    let (_, dir) = run.stop_keeping_dir().await;
    std::fs::remove_file(dir.path().join("state").join("notify-outbox.json")).unwrap();
    let source = Arc::new(MemorySource::from_metrics(&points));
    let clock = Arc::new(wk_alerter::clock::SystemClock);
    let mut run = start_in(dir, &[], source, clock, &extra);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let ended = loop {
        let e = tokio::time::timeout_at(deadline, run.events.recv())
            .await
            .expect("wk_notifiers ends")
            .unwrap();
        if e.rule == "wk_notifiers" {
            break e;
        }
    };
    assert_eq!(ended.kind, EventKind::Recovery, "{ended:?}");
    assert!(
        ended.message.contains("had nothing to send"),
        "{}",
        ended.message
    );
    run.stop().await;
}
