//! Self-healing, measured (issue 9, "Measured"; figures in docs/performance.md and
//! docs/performance-alerter.md): fault → detection → action start → verified recovery, over
//! N injected faults per scenario, with the real processes of the end-to-end tests
//! (`tests/heal/`: supervisor, squatter, CLOSE_WAIT server, stack).
//!
//! Modes:
//! - **query**: a real influxd; wk-agent with its defaults (collect every 10 s, flush every
//!   10 s) writing to it; the rules run `every: "10s"` against it.
//! - **stream**: no database; wk-agent collects and flushes every 1 s into wk-alerter's
//!   `[stream]` receiver; the rules run `every: "1s"`.
//!
//! Scenarios (one stack each: influxd or none, aiosmtpd, wk-alerter, wk-agent):
//! - `web`: `python3 -m http.server` under the test supervisor, SIGKILLed → `http_response`
//!   fails → `restart_process` (pattern, start via its ctl script, probe the port);
//! - `squatter`: the web server killed and another process bound to its port → `free_port`
//!   (names and stops the squatter) + `restart_process`;
//! - `close_wait`: 6 connections the server never closes → the agent's `procstat_tcp`
//!   (`tcp_close_wait` per pid) passes 3 → `restart_process` of that pid;
//! - `never`: a service whose every start fails → attempts up to `max_attempts: 3`, then one
//!   page (one fault per mode: the budget is per window).
//!
//! Times are taken on the harness side: the fault at t0 (wall clock, just before the bench
//! injects it); detection = the `time` of the rule's first alert event after t0 (log
//! notifier; the evaluation that fired); action start and verified recovery from the audit
//! log (`<state_dir>/actions.log`: `started_ns` of the first action, `verified_ns` of the
//! last); "answers" = when the service was first seen healthy again by the bench (polled
//! every 50 ms); "email" = when the report email reached aiosmtpd (its file's mtime). Before
//! each fault the bench waits for the alert to be OK again and then a random 0–1 interval,
//! so that faults fall at random phases of the agent's and the rules' schedules.
//!
//! Run: `scripts/bench heal` (builds wk-agent in release first), or
//! `cargo build --release -p wk-agent && cargo bench -p wk-alerter --bench heal -- [options]`
//!   --faults N          faults per scenario in both modes (default 10)
//!   --query-faults N    … in query mode only
//!   --stream-faults N   … in stream mode only
//!   --mode query|stream|both              (default both)
//!   --scenarios web,squatter,close_wait,never  (default all)
//!   --serial            scenarios one after another (default: the scenarios of a mode run
//!                       at the same time, each with its own stack)
//!   --out FILE          also write the report (markdown) to FILE
//! Needs influxd (Debian influxdb), python3-aiosmtpd, iproute2 (`ss`).

#[path = "../tests/common/mod.rs"]
mod common;

/// The healing harness of the end-to-end tests (`tests/heal/`), without its tests.
#[path = "../tests/heal/kit.rs"]
mod heal;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use heal::close_wait;
use heal::rules::{self, http_input};
use heal::squatter::Squatter;
use heal::stack::{Source, Stack, parse_mail};
use heal::supervisor::Supervisor;

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Scenario {
    Web,
    Squatter,
    CloseWait,
    Never,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Web => "web",
            Scenario::Squatter => "squatter",
            Scenario::CloseWait => "close_wait",
            Scenario::Never => "never",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Scenario::Web => "web server killed → restart_process",
            Scenario::Squatter => "port squatter → free_port + restart_process",
            Scenario::CloseWait => "CLOSE_WAIT pile-up → restart_process of the owner",
            Scenario::Never => "service never comes back → 3 attempts, one page",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Mode {
    name: &'static str,
    source: Source,
    /// The agent's interval and the rules' `every`.
    interval: Duration,
    /// `None`: the agent's defaults (10 s collection, 10 s flush).
    agent_interval: Option<&'static str>,
    every: &'static str,
    /// The rules' query range (three intervals: a fresh point is always inside).
    range: &'static str,
    settle: &'static str,
    cooldown: &'static str,
}

const QUERY: Mode = Mode {
    name: "query",
    source: Source::Query,
    interval: Duration::from_secs(10),
    agent_interval: None,
    every: "10s",
    range: "30s",
    settle: "1s",
    cooldown: "5s",
};

const STREAM: Mode = Mode {
    name: "stream",
    source: Source::Stream,
    interval: Duration::from_secs(1),
    agent_interval: Some("1s"),
    every: "1s",
    range: "3s",
    // Half the interval: at a 1 s interval the service (python's http.server) is up
    // within it, and a repair that does not hold is caught by the rule's next evaluations.
    settle: "500ms",
    cooldown: "2s",
};

/// One injected fault, ns since the epoch.
#[derive(Clone, Debug, Default)]
struct Sample {
    fault: i64,
    detected: Option<i64>,
    started: Option<i64>,
    verified: Option<i64>,
    answers: Option<i64>,
    email: Option<i64>,
    recovered: bool,
    attempts: usize,
    note: String,
}

struct Outcome {
    scenario: Scenario,
    mode: Mode,
    samples: Vec<Sample>,
    /// The `never` scenario: what happened.
    never: Option<String>,
    error: Option<String>,
}

/// A small deterministic generator for the random phases (no rand dependency).
struct Lcg(u64);

impl Lcg {
    fn next_f64(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Polls `f` every 50 ms until it gives Some, or `timeout` passes.
fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() >= end {
            return None;
        }
        sleep_ms(50);
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn is_report(e: &Value) -> bool {
    s(&e["id"]).ends_with(":actions")
}

/// [`rules::http_rule`] at `mode`'s pace.
fn http_rule(mode: &Mode, actions: &str) -> String {
    rules::http_rule(mode.every, mode.range, actions)
}

/// [`rules::restart_web`] with the action budget `budget` and `mode`'s pace, verified by
/// probing.
fn restart_web(mode: &Mode, web: &Supervisor, budget: &str) -> String {
    let options = format!(
        r#"{budget}, window: "1h", cooldown: "{}", settle: "{}",
            verify: "probe""#,
        mode.cooldown, mode.settle
    );
    rules::restart_web(web, &options)
}

/// Watches a stack's outputs: events, audit lines, report emails.
struct Watch<'a> {
    st: &'a Stack,
    rule: &'static str,
    mails_seen: std::collections::HashSet<PathBuf>,
}

impl<'a> Watch<'a> {
    /// Runs `text` as the rule `rule` on `st`, starts the alerter and the agent (`inputs`
    /// at `mode`'s pace) for host web1, and watches the rule once a few evaluations have seen
    /// the healthy service (the warm-up).
    fn start(st: &'a mut Stack, mode: &Mode, rule: &'static str, text: &str, inputs: &str) -> Self {
        st.rule(&format!("{rule}.rhai"), text);
        st.start_alerter();
        st.start_agent_every("web1", inputs, mode.agent_interval);
        std::thread::sleep(mode.interval * 3);
        Watch {
            st,
            rule,
            mails_seen: Default::default(),
        }
    }

    fn events(&self) -> Vec<Value> {
        self.st
            .events()
            .into_iter()
            .filter(|e| e["rule"] == self.rule)
            .collect()
    }

    /// When the alerter saw the fault (the engine's clock when the alert event reached it:
    /// `detected_ns` of the audit lines), at or after `t0`. The alert event itself is held
    /// back for the report (one message per incident) and is stamped with its tick.
    fn detected_after(&self, t0: i64) -> Option<i64> {
        self.st
            .audit()
            .into_iter()
            .filter(|a| a["rule"] == self.rule)
            .filter_map(|a| a["detected_ns"].as_i64())
            .filter(|t| *t >= t0)
            .min()
    }

    /// Whether the alert is OK: no instance of the rule is non-OK in its state file
    /// (written after every evaluation).
    fn clear(&self) -> bool {
        let file = self
            .st
            .dir
            .path()
            .join(format!("state/{}.state.json", self.rule));
        let Ok(text) = std::fs::read_to_string(file) else {
            return true;
        };
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        v["instances"]
            .as_array()
            .is_none_or(|a| a.iter().all(|i| i["level"] == "OK"))
    }

    /// Action reports at or after `t0`.
    fn reports_after(&self, t0: i64) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| is_report(e) && e["time"].as_i64().unwrap_or(0) >= t0)
            .collect()
    }

    /// Audit lines of actions that ran (started at or after `t0`).
    fn ran_after(&self, t0: i64) -> Vec<Value> {
        self.st
            .audit()
            .into_iter()
            .filter(|a| {
                a["rule"] == self.rule
                    && a["status"] == "ran"
                    && a["started_ns"].as_i64().unwrap_or(0) >= t0
            })
            .collect()
    }

    /// Report emails that arrived since the last call: (mtime ns, subject).
    fn new_mails(&mut self) -> Vec<(i64, String)> {
        let dir = self.st.dir.path().join("mail/new");
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return out;
        };
        for e in rd.flatten() {
            let p = e.path();
            if self.mails_seen.contains(&p) {
                continue;
            }
            let Ok(m) = std::fs::metadata(&p) else {
                continue;
            };
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i64);
            let mail = parse_mail(&p);
            self.mails_seen.insert(p);
            out.push((mtime, mail.subject));
        }
        out
    }
}

/// Waits for this fault's recovered report and fills the sample from the events and the
/// audit log. `healthy` is the bench's own view of the service.
fn measure(
    w: &mut Watch,
    mode: &Mode,
    t0: i64,
    mut healthy: impl FnMut() -> bool,
) -> Result<Sample, String> {
    let mut smp = Sample {
        fault: t0,
        ..Default::default()
    };
    let timeout = mode.interval * 6 + Duration::from_secs(30);
    let done = poll(timeout, || {
        if smp.answers.is_none() && healthy() {
            smp.answers = Some(now_ns());
        }
        for (t, subject) in w.new_mails() {
            if subject.contains(" — ") && t >= t0 && smp.email.is_none() {
                smp.email = Some(t);
            }
        }
        let reports = w.reports_after(t0);
        reports
            .iter()
            .any(|r| r["fields"]["recovered"] == true)
            .then_some(())
    });
    smp.detected = w.detected_after(t0).or_else(|| {
        // Still firing from before (should not happen: the bench waits for OK).
        smp.note = "no new alert event".into();
        None
    });
    let ran = w.ran_after(t0);
    // One report per attempt (all the rule's actions, then one verification).
    smp.attempts = w.reports_after(t0).len();
    smp.started = ran.iter().filter_map(|a| a["started_ns"].as_i64()).min();
    let first_ok = ran
        .iter()
        .filter(|a| a["recovered"] == true)
        .filter_map(|a| a["verified_ns"].as_i64())
        .max();
    smp.verified = first_ok;
    smp.recovered = done.is_some();
    if done.is_none() {
        smp.note = format!(
            "no recovered report within {timeout:?}; audit: {}",
            ran.iter()
                .map(|a| format!("{} → {}", s(&a["did"]), s(&a["after"])))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        return Ok(smp);
    }
    // The report email (sent after the report event; give it a moment).
    if smp.email.is_none() {
        poll(Duration::from_secs(10), || {
            for (t, subject) in w.new_mails() {
                if subject.contains(" — ") && t >= t0 && smp.email.is_none() {
                    smp.email = Some(t);
                }
            }
            smp.email.map(|_| ())
        });
    }
    if smp.answers.is_none() && poll(Duration::from_secs(5), || healthy().then_some(())).is_some() {
        smp.answers = Some(now_ns());
    }
    Ok(smp)
}

/// Waits until the alert is OK again, then a random part of an interval.
fn rest(w: &mut Watch, mode: &Mode, rng: &mut Lcg) -> Result<(), String> {
    let timeout = mode.interval * 6 + Duration::from_secs(20);
    if poll(timeout, || w.clear().then_some(())).is_none() {
        return Err(format!("the alert did not clear within {timeout:?}"));
    }
    let _ = w.new_mails();
    std::thread::sleep(mode.interval.mul_f64(rng.next_f64()));
    Ok(())
}

fn new_stack(mode: &Mode) -> Result<Stack, String> {
    Stack::with_source(mode.source, "", "").ok_or_else(|| "servers missing".to_owned())
}

fn run_web(mode: Mode, faults: usize, squat: bool, seed: u64) -> Result<Vec<Sample>, String> {
    let web = Supervisor::web();
    web.start();
    let mut st = new_stack(&mode)?;
    let restart = restart_web(&mode, &web, "max_attempts: 100");
    let actions = if squat {
        format!(
            r#"#{{ action: "free_port", port: {}, max_attempts: 100, window: "1h",
                  cooldown: "{}", settle: "{}" }}, {restart}"#,
            web.port, mode.cooldown, mode.settle
        )
    } else {
        restart
    };
    let rule = http_rule(&mode, &actions);
    let mut w = Watch::start(&mut st, &mode, "web", &rule, &http_input(&web));
    let mut rng = Lcg(seed);
    let mut out = Vec::new();
    for i in 0..faults {
        rest(&mut w, &mode, &mut rng).map_err(|e| format!("before fault {}: {e}", i + 1))?;
        let t0 = now_ns();
        web.kill();
        let _squatter = squat.then(|| Squatter::start(web.port));
        let smp = measure(&mut w, &mode, t0, || {
            web.pid().is_some() && web.answers_http()
        })?;
        let scenario = if squat { "squatter" } else { "web" };
        if keep(&mut out, smp, &mode, scenario, (i + 1, faults)) {
            // The service may still be down: bring it back for the next fault.
            web.kill();
            drop(_squatter);
            web.start();
        }
    }
    Ok(out)
}

fn run_close_wait(mode: Mode, faults: usize, seed: u64) -> Result<Vec<Sample>, String> {
    let server = Supervisor::close_wait();
    server.start();
    let mut st = new_stack(&mode)?;
    let options = format!(
        r#"max_attempts: 100, window: "1h", cooldown: "{}", settle: "{}", verify: "probe""#,
        mode.cooldown, mode.settle
    );
    let rule = rules::close_wait_rule(
        mode.every,
        mode.range,
        r#"["ops", "log"]"#,
        &server,
        &options,
    );
    // The real agent's procstat input: the CLOSE_WAIT server's command line has `held.append`.
    let procstat = "[[inputs.procstat]]\n  pattern = 'held\\.append'\n";
    let mut w = Watch::start(&mut st, &mode, "close_wait", &rule, procstat);
    let mut rng = Lcg(seed);
    let mut out = Vec::new();
    for i in 0..faults {
        // Each fault is a new pid, so a new alert instance: no need to wait for the old one
        // (its series simply stops) — only for the agent to have seen the new process.
        std::thread::sleep(mode.interval + mode.interval.mul_f64(rng.next_f64()));
        let _ = w.new_mails();
        let pid = server.pid().ok_or("the CLOSE_WAIT server is not running")?;
        let t0 = now_ns();
        close_wait::open_and_close(server.port, pid, 6);
        let smp = measure(&mut w, &mode, t0, || {
            server.pid().is_some_and(|p| p != pid) && !heal::listeners(server.port).is_empty()
        })?;
        if keep(&mut out, smp, &mode, "close_wait", (i + 1, faults)) {
            server.kill();
            server.start();
        }
    }
    Ok(out)
}

/// Prints the sample of fault `n` of `of` (`(n, of)`) of `scenario` and keeps it in `out`;
/// whether the service did not recover.
fn keep(
    out: &mut Vec<Sample>,
    smp: Sample,
    mode: &Mode,
    scenario: &str,
    (n, of): (usize, usize),
) -> bool {
    eprintln!(
        "heal bench {} {scenario}: fault {n}/{of}: {}",
        mode.name,
        line(&smp)
    );
    let failed = !smp.recovered;
    out.push(smp);
    failed
}

/// One fault, a service that never starts again: attempts, time to the page, pages.
fn run_never(mode: Mode) -> Result<String, String> {
    let web = Supervisor::web();
    web.start();
    let mut st = new_stack(&mode)?;
    let rule = http_rule(&mode, &restart_web(&mode, &web, "max_attempts: 3"));
    let w = Watch::start(&mut st, &mode, "web", &rule, &http_input(&web));
    let t0 = now_ns();
    web.set_broken(true);
    web.kill();
    let timeout = mode.interval * 6 + Duration::from_secs(60);
    let page = poll(timeout, || {
        w.reports_after(t0)
            .into_iter()
            .find(|r| r["fields"]["status"] == "gave_up")
    })
    .ok_or_else(|| format!("no page within {timeout:?}"))?;
    let paged = page["time"].as_i64().unwrap_or(0);
    // Anything more would show up within a few cooldowns.
    std::thread::sleep(Duration::from_secs(10) + mode.interval * 2);
    let pages = w
        .reports_after(t0)
        .iter()
        .filter(|r| r["fields"]["status"] == "gave_up")
        .count();
    let ran = w.ran_after(t0);
    let detected = w.detected_after(t0);
    let secs = |t: Option<i64>| t.map_or("–".to_owned(), |t| fmt_s(t - t0));
    Ok(format!(
        "{} start attempts by the action ({} ctl starts refused), {} page(s); fault → detection {}, \
         → first attempt {}, → page {}",
        ran.len(),
        web.starts().saturating_sub(1),
        pages,
        secs(detected),
        secs(ran.iter().filter_map(|a| a["started_ns"].as_i64()).min()),
        fmt_s(paged - t0),
    ))
}

fn fmt_s(ns: i64) -> String {
    format!("{:.2} s", ns as f64 / 1e9)
}

fn line(x: &Sample) -> String {
    let d = |t: Option<i64>| t.map_or("–".to_owned(), |t| fmt_s(t - x.fault));
    format!(
        "detection {}, action {}, verified {}, answers {}, email {}, attempts {}{}{}",
        d(x.detected),
        d(x.started),
        d(x.verified),
        d(x.answers),
        d(x.email),
        x.attempts,
        if x.recovered { "" } else { ", NOT RECOVERED" },
        if x.note.is_empty() {
            String::new()
        } else {
            format!(" ({})", x.note)
        }
    )
}

/// Median and worst of the offsets from the fault (seconds).
fn stats(samples: &[Sample], pick: impl Fn(&Sample) -> Option<i64>) -> (String, String) {
    let mut v: Vec<f64> = samples
        .iter()
        .filter_map(|x| pick(x).map(|t| (t - x.fault) as f64 / 1e9))
        .collect();
    if v.is_empty() {
        return ("–".into(), "–".into());
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    let missing = samples.len() - n;
    let worst = if missing > 0 {
        format!("{:.2} (+{missing} missing)", v[n - 1])
    } else {
        format!("{:.2}", v[n - 1])
    };
    (format!("{median:.2}"), worst)
}

fn run_scenario(mode: Mode, sc: Scenario, faults: usize, seed: u64) -> Outcome {
    let mut o = Outcome {
        scenario: sc,
        mode,
        samples: Vec::new(),
        never: None,
        error: None,
    };
    let r = match sc {
        Scenario::Web => run_web(mode, faults, false, seed).map(|s| o.samples = s),
        Scenario::Squatter => run_web(mode, faults, true, seed).map(|s| o.samples = s),
        Scenario::CloseWait => run_close_wait(mode, faults, seed).map(|s| o.samples = s),
        Scenario::Never => run_never(mode).map(|s| o.never = Some(s)),
    };
    if let Err(e) = r {
        eprintln!("heal bench {} {}: {e}", mode.name, sc.name());
        o.error = Some(e);
    }
    o
}

fn report(outcomes: &[Outcome], args: &str, wall: Duration) -> String {
    let mut r = String::new();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_default();
    let _ = writeln!(
        r,
        "Self-healing benchmark: `cargo bench -p wk-alerter --bench heal --{args}` \
         ({cpus} CPUs, {model}; {:.0} s wall)\n",
        wall.as_secs_f64()
    );
    let _ = writeln!(
        r,
        "Seconds from the injected fault. detection = the alert reached the action engine \
         (audit log); action = the first action started; verified = the action's probe said \
         recovered (audit log); answers = the bench saw the service healthy; email = the \
         report email (the one message of the incident) reached the SMTP server.\n"
    );
    let _ = writeln!(
        r,
        "| mode | scenario | recovered | detection median / worst | action median / worst | verified median / worst | answers median / worst | email median / worst |"
    );
    let _ = writeln!(r, "| --- | --- | --- | --- | --- | --- | --- | --- |");
    for o in outcomes.iter().filter(|o| o.scenario != Scenario::Never) {
        let ok = o.samples.iter().filter(|x| x.recovered).count();
        let cell = |f: &dyn Fn(&Sample) -> Option<i64>| {
            let (m, w) = stats(&o.samples, f);
            format!("{m} / {w}")
        };
        let _ = writeln!(
            r,
            "| {} ({} s) | {} | {ok} of {}{} | {} | {} | {} | {} | {} |",
            o.mode.name,
            o.mode.interval.as_secs(),
            o.scenario.describe(),
            o.samples.len(),
            o.error
                .as_ref()
                .map(|e| format!(" (stopped: {e})"))
                .unwrap_or_default(),
            cell(&|x| x.detected),
            cell(&|x| x.started),
            cell(&|x| x.verified),
            cell(&|x| x.answers),
            cell(&|x| x.email),
        );
    }
    for o in outcomes.iter().filter(|o| o.scenario == Scenario::Never) {
        let _ = writeln!(
            r,
            "\n{} mode ({} s), {}: {}",
            o.mode.name,
            o.mode.interval.as_secs(),
            o.scenario.describe(),
            o.never
                .clone()
                .or_else(|| o.error.clone().map(|e| format!("FAILED: {e}")))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(r, "\nEvery fault:\n");
    for o in outcomes.iter().filter(|o| o.scenario != Scenario::Never) {
        for (i, x) in o.samples.iter().enumerate() {
            let _ = writeln!(
                r,
                "- {} {} #{}: {}",
                o.mode.name,
                o.scenario.name(),
                i + 1,
                line(x)
            );
        }
    }
    r
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("heal: skipped (not run by `cargo bench`)");
        return;
    }
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let faults: usize = value("--faults").and_then(|v| v.parse().ok()).unwrap_or(10);
    let query_faults = value("--query-faults")
        .and_then(|v| v.parse().ok())
        .unwrap_or(faults);
    let stream_faults = value("--stream-faults")
        .and_then(|v| v.parse().ok())
        .unwrap_or(faults);
    let mode = value("--mode").unwrap_or_else(|| "both".into());
    let serial = args.iter().any(|a| a == "--serial");
    let all = [
        Scenario::Web,
        Scenario::Squatter,
        Scenario::CloseWait,
        Scenario::Never,
    ];
    let scenarios: Vec<Scenario> = match value("--scenarios") {
        Some(list) => list
            .split(',')
            .map(|n| {
                *all.iter()
                    .find(|s| s.name() == n)
                    .unwrap_or_else(|| panic!("unknown scenario {n:?}"))
            })
            .collect(),
        None => all.to_vec(),
    };
    let modes: Vec<(Mode, usize)> = match mode.as_str() {
        "query" => vec![(QUERY, query_faults)],
        "stream" => vec![(STREAM, stream_faults)],
        _ => vec![(QUERY, query_faults), (STREAM, stream_faults)],
    };
    let start = std::time::Instant::now();
    let seed = now_ns() as u64;
    let mut outcomes = Vec::new();
    for (m, n) in modes {
        if serial {
            for (i, sc) in scenarios.iter().enumerate() {
                outcomes.push(run_scenario(m, *sc, n, seed + i as u64));
            }
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = scenarios
                    .iter()
                    .enumerate()
                    .map(|(i, sc)| scope.spawn(move || run_scenario(m, *sc, n, seed + i as u64)))
                    .collect();
                for h in handles {
                    outcomes.push(h.join().expect("scenario thread"));
                }
            });
        }
    }
    let shown: String = args
        .iter()
        .filter(|a| *a != "--bench")
        .fold(String::new(), |acc, a| acc + " " + a.as_str());
    let text = report(&outcomes, &shown, start.elapsed());
    println!("{text}");
    if let Some(out) = value("--out") {
        std::fs::write(&out, &text).unwrap_or_else(|e| panic!("write {out}: {e}"));
        eprintln!("heal bench: report written to {out}");
    }
}
