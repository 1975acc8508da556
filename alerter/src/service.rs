//! The running alerter: loads every rule of the rules directory, evaluates each on its own
//! schedule (on tokio's blocking pool, one thread and one time limit per rule, so a runaway
//! rule delays no other; runaways are reported through `wk_rules`), feeds the results to the
//! rule's state machine, persists the state and routes the events.
//!
//! Hot reload (the rules directory is a git checkout): the directory is re-read every
//! `reload_interval`; a changed file is recompiled and replaces the running version only if it
//! loads; otherwise the last good version keeps running and the broken file raises an alert of
//! the built-in rule `wk_rules` (recovered when the file is fixed). A deleted file stops its
//! rule.
//!
//! Evaluation failures are typed ([`FailureKind`]): a source failure follows the rule's `error`
//! policy, as does a runaway (time limit); a script error or a bad return value leaves the
//! instances alone and raises `wk_rules` naming file:line:column, and a newly loaded version
//! that fails so before it has evaluated cleanly once is rolled back to the last version that
//! did. Every evaluation and failure is counted per rule ([`Service::self_metrics`],
//! measurement `wk_alerter`).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::actions::engine::{Engine, RuleEntry};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::model::{
    AlertEvent, Condition, CycleResult, EvalFailure, EventKind, FailureKind, Level,
    LevelConditions, Observation, Policy, RuleSettings, Value,
};
use crate::notify::router::Router;
use crate::rules::{Limits, Rule, load_rule_source_with};
use crate::source::QuerySource;
use crate::state::RuleState;

/// Name of the built-in rule that reports rule files that do not load.
pub const RULES_RULE: &str = "wk_rules";

/// Name of the built-in rule that reports a query source that does not answer.
pub const SOURCE_RULE: &str = "wk_source";

/// Name of the built-in rule that reports a notifier that cannot deliver.
pub const NOTIFIER_RULE: &str = "wk_notifiers";

/// An observation of a built-in rule (`wk_rules`, `wk_source`, `wk_notifiers`): one instance
/// per `tag` value, its `status` text, critical while `failing`.
fn health_observation(
    rule: &str,
    tag: &str,
    value: String,
    status: String,
    failing: bool,
    now: i64,
) -> Observation {
    let mut o = Observation {
        measurement: rule.into(),
        time: now,
        ..Default::default()
    };
    o.tags.insert(tag.into(), value);
    o.fields.insert("status".into(), Value::Str(status));
    o.levels = LevelConditions {
        crit: Some(Condition {
            matched: failing,
            reset: None,
        }),
        ..Default::default()
    };
    o
}

/// How far the clock may go back between two looks before the schedule is rebuilt.
const CLOCK_STEP_BACK: i64 = 2_000_000_000;

/// The next multiple of `every` after `now` (ns).
fn next_tick(now: i64, every: Duration) -> i64 {
    let e = every.as_nanos().max(1) as i64;
    (now.div_euclid(e) + 1) * e
}

/// One rule file and what runs for it.
struct Slot {
    /// The last version that loaded (keeps running while a newer one is broken).
    rule: Option<Arc<Rule>>,
    /// The last version that evaluated cleanly: what a failing new version is rolled back to.
    good: Option<Arc<Rule>>,
    /// The file's content when last read, to notice changes.
    text: String,
    /// Why the current content does not load, if it does not.
    broken: Option<String>,
    /// Why the current content was rolled back (it failed before it evaluated cleanly once).
    rolled_back: Option<String>,
    /// The running version's last failure of its own (cleared by a clean evaluation).
    failing: Option<String>,
    state: RuleState,
    next_due: i64,
    /// An evaluation's thread is busy (at most one per rule).
    running: bool,
    /// Why its last evaluation was stopped at the time limit, while it is a runaway.
    runaway: Option<String>,
    /// What the `wk_rules` recovery says about this file: fits the last problem reported.
    ok_status: &'static str,
    /// Versions (see [`crate::api::board::version_of`]) of the running rule and of `good`.
    version: String,
    good_version: String,
    /// When the running version was loaded (ns).
    loaded_ns: i64,
    /// The last evaluation: its tick (ns), how long it took, its failure.
    last_eval_ns: i64,
    last_elapsed: Duration,
    last_error: Option<String>,
    /// The last scan of the directory did not list the file (it goes at the next that does
    /// not either).
    missing: bool,
    /// A reloaded version has not returned series yet: its first ones tell whether it groups
    /// by other tags than the instances it inherited.
    regroup_check: bool,
    /// Why the file's new content does not load, until a second scan reads the same content
    /// (then it is `broken`).
    unconfirmed: Option<String>,
    /// Clean evaluations of the running version that returned no series, until one returns
    /// some (then `None`): a misspelled measurement, field or tag value matches nothing, and
    /// a rule without series never fires nor goes NoData.
    no_series_yet: Option<u32>,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            rule: None,
            good: None,
            text: String::new(),
            broken: None,
            rolled_back: None,
            failing: None,
            state: RuleState::new(),
            next_due: 0,
            running: false,
            runaway: None,
            ok_status: "loads again",
            version: String::new(),
            good_version: String::new(),
            loaded_ns: 0,
            last_eval_ns: 0,
            last_elapsed: Duration::ZERO,
            last_error: None,
            missing: false,
            regroup_check: false,
            unconfirmed: None,
            no_series_yet: Some(0),
        }
    }

    /// How many clean evaluations since the running version loaded returned no series, once
    /// that many, over long enough, make it suspect.
    fn no_series_suspect(&self) -> Option<u32> {
        let age = self.last_eval_ns.saturating_sub(self.loaded_ns);
        self.no_series_yet
            .filter(|n| *n >= NO_SERIES_WARN_AFTER && age >= NO_SERIES_WARN_AGE.as_nanos() as i64)
    }

    /// The file's content does not load, for `msg`: logged, and reported through wk_rules.
    fn mark_broken(&mut self, msg: String) {
        if self.rule.is_some() {
            error!("{msg} (the last good version keeps running)");
        } else {
            error!("{msg}");
        }
        self.broken = Some(msg);
        self.ok_status = "loads again";
    }
}

/// How an evaluation ended, sent back from the blocking pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// It returned within the time limit (or its script stopped itself at the deadline).
    Finished,
    /// The time limit passed and its thread is still busy (a query in flight cannot be
    /// interrupted): the scheduler stops waiting and counts it as failed now.
    Overran,
    /// An overrun evaluation's thread is free again; its late result is dropped.
    Ended,
}

/// One evaluation's result.
struct Evaluated {
    path: PathBuf,
    /// The version evaluated (a reload may have replaced it meanwhile).
    rule: Arc<Rule>,
    result: CycleResult,
    /// The scheduled tick it was evaluated as of (ns).
    now: i64,
    outcome: Outcome,
    /// Wall time it took.
    elapsed: Duration,
}

/// Evaluations and failures of one rule since start (Prometheus'
/// rule_evaluations_total / rule_evaluation_failures_total).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvalCounts {
    pub evaluations: u64,
    /// Failures by kind.
    pub failures: BTreeMap<FailureKind, u64>,
    /// Series the last clean evaluation returned.
    pub series: Option<u64>,
}

/// The typed event for a failed evaluation: [`EvaluationFailed::emit`] logs it and counts it,
/// so the log and the self-metric cannot drift.
struct EvaluationFailed<'a> {
    rule: &'a str,
    failure: &'a EvalFailure,
}

impl EvaluationFailed<'_> {
    fn emit(self, counts: &mut BTreeMap<String, EvalCounts>) {
        let kind = self.failure.kind.as_str();
        warn!(rule = %self.rule, kind, "evaluation failed: {}", self.failure);
        *counts
            .entry(self.rule.to_owned())
            .or_default()
            .failures
            .entry(self.failure.kind)
            .or_default() += 1;
    }
}

/// The alerter.
pub struct Service {
    config: Config,
    source: Arc<dyn QuerySource>,
    router: Router,
    engine: Engine,
    slots: BTreeMap<PathBuf, Slot>,
    /// Why the last scan could not read the rules directory; `Some(None)` once it reads
    /// again after failing (so that `wk_rules` recovers), `None` if it never failed.
    rules_dir_error: Option<Option<String>>,
    /// The state of a rule whose file was removed while another file, refused for taking
    /// its name, waits to load it (`cp cpu.rhai cpu2.rhai; rm cpu.rhai`): that file takes
    /// the alerts over when it loads, as a renamed file does.
    heirs: BTreeMap<String, RuleState>,
    /// Configs taken since the start: a scan started under an earlier one compiled with its
    /// limits and is read again.
    config_generation: u64,
    /// The rules directory was read since the start.
    scanned_once: bool,
    /// The clock when due evaluations were last looked for (to notice a step back).
    last_now: i64,
    meta: RuleState,
    /// The `wk_source` alert: the query source does not answer (whatever the rules'
    /// `error` policy, an outage is one alert on the alerter's own health).
    source_health: RuleState,
    /// The source's last error while it fails.
    source_failing: Option<String>,
    /// When the source answered again after failing: NoData waits a grace period.
    source_back_at: Option<i64>,
    /// The `wk_notifiers` alert: a notifier's receiver has refused or not answered for
    /// `notifier_outage_after` (its messages wait; this one goes to the others).
    notifier_health: RuleState,
    limits: Limits,
    counts: BTreeMap<String, EvalCounts>,
    clock: Arc<dyn Clock>,
    host_pages: HostPages,
    /// The silences active at the last scan (to see one end).
    active_silences: Vec<String>,
    /// Writes rule states off the scheduler.
    persister: Option<crate::state::Persister>,
    /// A copy of every routed event, for in-process observers (tests).
    tap: Option<mpsc::UnboundedSender<AlertEvent>>,
    /// What the status page shows, updated after each evaluation and rescan.
    board: Arc<crate::api::board::Board>,
    /// `[heartbeat]`: pings an external dead man's switch from the scheduler loop.
    heartbeat: Option<crate::heartbeat::Heartbeat>,
}

impl Service {
    /// A service over `config`, querying `source`. Must be created inside a tokio runtime
    /// (the router starts its notifier tasks).
    pub fn new(config: Config, source: Arc<dyn QuerySource>) -> Service {
        Service::with_clock(config, source, Arc::new(SystemClock))
    }

    /// As [`Service::new`], reading the time from `clock` (tests drive it with tokio's paused
    /// time through [`crate::clock::TokioClock`]).
    pub fn with_clock(
        config: Config,
        source: Arc<dyn QuerySource>,
        clock: Arc<dyn Clock>,
    ) -> Service {
        let router = Router::start(config.notify.clone());
        let limits = Limits::from_config(&config);
        let meta = RuleState::load(&config.settings.state_dir, RULES_RULE);
        let source_health = RuleState::load(&config.settings.state_dir, SOURCE_RULE);
        let notifier_health = RuleState::load(&config.settings.state_dir, NOTIFIER_RULE);
        // A notifier that was down at the stop is down at the start until it delivers.
        for i in notifier_health.instances() {
            if let (true, Some(since), Some(name)) =
                (i.level > Level::Ok, i.since, i.tags.get("notifier"))
            {
                let after = config.settings.notifier_outage_after.as_nanos() as i64;
                router.resume_failing(
                    name,
                    since.saturating_sub(after),
                    "not delivered before the restart".into(),
                );
            }
        }
        let persister = crate::state::Persister::start(config.settings.state_dir.clone())
            .inspect_err(|e| {
                warn!("cannot start the state writer thread; states are saved inline: {e}")
            })
            .ok();
        let engine = Engine::new(
            config.actions.clone(),
            config.settings.state_dir.clone(),
            router.clone(),
            Some(source.clone()),
        );
        Service {
            config,
            source,
            router,
            engine,
            slots: BTreeMap::new(),
            rules_dir_error: None,
            heirs: BTreeMap::new(),
            config_generation: 0,
            scanned_once: false,
            last_now: 0,
            meta,
            source_health,
            source_failing: None,
            source_back_at: None,
            notifier_health,
            limits,
            counts: BTreeMap::new(),
            clock,
            host_pages: HostPages::default(),
            active_silences: Vec::new(),
            persister,
            tap: None,
            board: Arc::default(),
            heartbeat: None,
        }
    }

    /// The status page's snapshot (shared with the HTTP API).
    pub fn board(&self) -> Arc<crate::api::board::Board> {
        self.board.clone()
    }

    /// Publishes the rule of `only` (or every rule) and the built-in alerts to the board.
    fn publish(&self, only: Option<&Path>) {
        use crate::api::board::{RuleView, version_of};
        let now = self.clock.now_ns();
        let view = |path: &Path, slot: &Slot| {
            let rule = slot.rule.as_ref();
            let counts = rule.and_then(|r| self.counts.get(&r.settings().name));
            RuleView {
                file: path
                    .file_name()
                    .map_or_else(String::new, |f| f.to_string_lossy().into_owned()),
                name: rule.map_or_else(String::new, |r| r.settings().name.clone()),
                every: rule.map_or_else(String::new, |r| {
                    crate::template::format_duration(r.settings().every)
                }),
                loaded_ns: slot.loaded_ns,
                version: slot.version.clone(),
                file_version: version_of(&slot.text),
                newer_file_failed: slot.broken.clone().or_else(|| slot.rolled_back.clone()),
                last_evaluation_ns: slot.last_eval_ns,
                last_duration_ms: slot.last_elapsed.as_secs_f64() * 1000.0,
                last_error: slot.last_error.clone(),
                no_series: slot.no_series_suspect().map(no_series_text),
                series: counts.and_then(|c| c.series),
                evaluations: counts.map_or(0, |c| c.evaluations),
                failures: counts.map_or(0, |c| c.failures.values().sum()),
                alerts: rule.map_or_else(Vec::new, |r| slot.state.current(r.settings(), now)),
            }
        };
        let mut builtin = self.meta.current(&self.meta_settings(), now);
        builtin.extend(self.source_health.current(&self.source_settings(), now));
        builtin.extend((self.notifier_health).current(&self.notifier_settings(), now));
        // After one evaluation only its rule's entries change: the cost stays per evaluation,
        // not per rule loaded.
        let metric = |name: &str| {
            self.counts
                .get(name)
                .map(|c| (name.to_owned(), rule_metric(name, c, now)))
        };
        self.board.update(|b| {
            match only {
                Some(p) => {
                    if let Some(slot) = self.slots.get(p) {
                        b.rules.insert(p.to_owned(), view(p, slot));
                        if let Some((name, m)) =
                            slot.rule.as_ref().and_then(|r| metric(&r.settings().name))
                        {
                            b.self_metrics.insert(name, m);
                        }
                    }
                }
                None => {
                    b.rules = self
                        .slots
                        .iter()
                        .map(|(p, slot)| (p.clone(), view(p, slot)))
                        .collect();
                    b.self_metrics = self.counts.keys().filter_map(|name| metric(name)).collect();
                }
            }
            b.builtin = builtin;
        });
    }

    /// One line saying what the alerter did since `since` (ns): rules, evaluations, alerts
    /// firing and silenced, actions run (logged every `summary_interval`).
    pub fn summary_line(&self, since: i64, evaluations: u64, failures: u64) -> String {
        let now = self.clock.now_ns();
        let c = self.board.get().counts(&self.router, now);
        let results = self.engine.results();
        let actions: Vec<_> = results.iter().filter(|r| r.finished_ns > since).collect();
        let recovered = actions.iter().filter(|r| r.recovered).count();
        let mut line = format!(
            "{} ({} with problems), {} ({} failed) in the last {}; {} firing \
             ({} silenced, {} inhibited), {} pending; {} ({} recovered)",
            crate::template::count(c.rules as u64, "rule"),
            c.broken,
            crate::template::count(c.evaluations.saturating_sub(evaluations), "evaluation"),
            c.failures.saturating_sub(failures),
            crate::template::format_duration(Duration::from_nanos(
                u64::try_from(now.saturating_sub(since)).unwrap_or(0)
            )),
            c.firing,
            c.silenced,
            c.inhibited,
            c.pending,
            crate::template::count(actions.len() as u64, "action"),
            recovered,
        );
        if let Some(url) = self.board.url() {
            line.push_str(&format!("; status page {url}"));
        }
        line
    }

    /// Every event routed from now on is also sent to the returned receiver.
    pub fn subscribe(&mut self) -> mpsc::UnboundedReceiver<AlertEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.tap = Some(tx);
        rx
    }

    /// Evaluation counts per rule name.
    pub fn eval_counts(&self) -> &BTreeMap<String, EvalCounts> {
        &self.counts
    }

    /// The counts as `wk_alerter` metrics (one per rule, tag `rule`): `evaluations`,
    /// `evaluation_failures` and one `evaluation_failures_<kind>` per kind.
    pub fn self_metrics(&self, now: i64) -> Vec<wk_core::metric::Metric> {
        self.counts
            .iter()
            .map(|(rule, c)| rule_metric(rule, c, now))
            .collect()
    }

    /// The router (tests read its counters).
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The action engine (tests read its results).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Settings of the built-in rule reporting broken rule files.
    fn meta_settings(&self) -> RuleSettings {
        RuleSettings {
            name: RULES_RULE.into(),
            id_template: "wk_rules:{{file}}".into(),
            // `status` is set per observation, so the recovery (rendered from the last one)
            // says the file loads again instead of repeating the problem with an empty reason.
            message_template: "rule file {{file}} {{status}}".into(),
            no_data: Policy::Ok,
            notify: self.config.settings.rule_errors_notify.clone(),
            expire_after: Duration::ZERO,
            ..RuleSettings::default()
        }
    }

    /// Settings of the built-in rule reporting a source that does not answer.
    fn source_settings(&self) -> RuleSettings {
        RuleSettings {
            name: SOURCE_RULE.into(),
            id_template: "wk_source:{{source}}".into(),
            message_template: "query source {{source}} {{status}}".into(),
            pending: self.config.settings.source_outage_after,
            no_data: Policy::Ok,
            notify: self.config.settings.rule_errors_notify.clone(),
            expire_after: Duration::ZERO,
            ..RuleSettings::default()
        }
    }

    /// Settings of the built-in rule reporting a notifier that cannot deliver.
    fn notifier_settings(&self) -> RuleSettings {
        RuleSettings {
            name: NOTIFIER_RULE.into(),
            id_template: "wk_notifiers:{{notifier}}".into(),
            message_template: "notifier {{notifier}} {{status}}".into(),
            // A notifier the config no longer has is not failing.
            no_data: Policy::Ok,
            notify: self.config.settings.rule_errors_notify.clone(),
            expire_after: Duration::ZERO,
            ..RuleSettings::default()
        }
    }

    /// What withholds the heartbeat now: the messages of the firing built-in alerts its
    /// `stop_on` names.
    ///
    /// `wk_notifiers` withholds it only when the alerter cannot tell anyone: every notifier
    /// of `rule_errors_notify` (every notifier, when that is empty) fails. One of them failing
    /// is a `wk_notifiers` alert the others deliver, not a reason to page through the switch.
    fn heartbeat_problems(&self, now: i64) -> Vec<String> {
        let Some(h) = &self.heartbeat else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for name in &h.config().stop_on {
            let (state, settings) = match name.as_str() {
                SOURCE_RULE => (&self.source_health, self.source_settings()),
                NOTIFIER_RULE => (&self.notifier_health, self.notifier_settings()),
                _ => (&self.meta, self.meta_settings()),
            };
            let firing = state.firing_events(&settings, now);
            if name == NOTIFIER_RULE {
                let down: Vec<&str> = (firing.iter())
                    .filter_map(|e| e.tags.get("notifier").map(String::as_str))
                    .collect();
                let tellers = &self.config.settings.rule_errors_notify;
                let all = self
                    .config
                    .notify
                    .notifiers
                    .iter()
                    .map(|n| &n.settings.name);
                let cannot_tell = if tellers.is_empty() {
                    all.into_iter().all(|n| down.contains(&n.as_str()))
                } else {
                    tellers.iter().all(|n| down.contains(&n.as_str()))
                };
                if !cannot_tell || down.is_empty() {
                    continue;
                }
            }
            out.extend(firing.into_iter().map(|e| e.message));
        }
        out
    }

    /// Feeds the `wk_notifiers` state machine from the router: one instance per notifier,
    /// critical once no attempt of it has succeeded for `notifier_outage_after` since one
    /// failed. Called at each rescan tick.
    fn notifier_status(&mut self, now: i64) {
        let after = self.config.settings.notifier_outage_after;
        let observations = (self.router.stats().notifiers.into_iter())
            .map(|n| {
                // A spell carried over a restart with nothing to send since: nothing says it
                // is still down once `notifier_outage_after` has passed without a message.
                let stale = |f: &&crate::notify::router::NotifierFailing| {
                    n.pending == 0 && f.untried_for.is_some_and(|t| t >= after)
                };
                let down = (n.failing.as_ref())
                    .filter(|f| f.for_ >= after)
                    .filter(|f| !stale(f));
                let status = match down {
                    Some(f) => format!(
                        "has not delivered for {}: {}",
                        crate::template::format_duration(after),
                        f.error
                    ),
                    None if n.failing.as_ref().is_some_and(|f| stale(&f)) => format!(
                        "had nothing to send for {} since the restart (it was down before it)",
                        crate::template::format_duration(after)
                    ),
                    None => "delivers again".to_owned(),
                };
                let mut o = health_observation(
                    NOTIFIER_RULE,
                    "notifier",
                    n.name,
                    status,
                    down.is_some(),
                    now,
                );
                o.fields
                    .insert("waiting".into(), Value::Int(n.pending as i64));
                o
            })
            .collect();
        let settings = self.notifier_settings();
        // The board shows it after the rescan this tick starts.
        self.apply_health(NOTIFIER_RULE, &settings, observations, now);
    }

    /// Applies `observations` to the state of the built-in rule `name` (`wk_rules`,
    /// `wk_source`, `wk_notifiers`), saves it and routes its events.
    fn apply_health(
        &mut self,
        name: &str,
        settings: &RuleSettings,
        observations: Vec<Observation>,
        now: i64,
    ) {
        let state = match name {
            RULES_RULE => &mut self.meta,
            SOURCE_RULE => &mut self.source_health,
            _ => &mut self.notifier_health,
        };
        let events = state.apply(settings, &CycleResult::Observed(observations), now);
        let dir = &self.config.settings.state_dir;
        save_due(self.persister.as_ref(), dir, name, state, now);
        self.route(events);
    }

    /// The source starts now after being down: stream mode, where the alerter is the source
    /// and its window has a gap for the time it was stopped. Series missing from results
    /// wait `source_recovery_grace` before going NoData, while the agents re-send what they
    /// buffered, as after a database outage.
    pub fn source_back_now(&mut self) {
        self.source_back_at = Some(self.clock.now_ns());
    }

    /// The source failed a query (`Some(error)`) or answered after failing (`None`): feeds
    /// the `wk_source` state machine. Called for every failed evaluation while it fails (so
    /// `source_outage_after` can pass) and once when it answers again.
    fn source_status(&mut self, error: Option<&str>, now: i64) {
        match error {
            Some(e) => {
                if self.source_failing.is_none() {
                    warn!(
                        "the query source fails: {e}; rules keep their state (their `error` policy) and wk_source fires if it lasts {}",
                        crate::template::format_duration(self.config.settings.source_outage_after)
                    );
                }
                self.source_failing = Some(e.to_owned());
            }
            None => {
                if self.source_failing.take().is_none() {
                    return;
                }
                self.source_back_at = Some(now);
                info!(
                    "the query source answers again; NoData waits {} while agents re-send what they buffered",
                    crate::template::format_duration(self.config.settings.source_recovery_grace)
                );
            }
        }
        let name = self.config.sources.first().map_or_else(
            || "stream".to_owned(),
            |s| format!("{} ({})", s.name, s.url),
        );
        let status = match error {
            Some(e) => format!("does not answer: {e}"),
            None => "answers again".to_owned(),
        };
        let o = health_observation(SOURCE_RULE, "source", name, status, error.is_some(), now);
        let settings = self.source_settings();
        self.apply_health(SOURCE_RULE, &settings, vec![o], now);
    }

    /// Re-reads the rules directory: loads new and changed files, drops deleted ones, and
    /// raises or clears the alert about broken files.
    pub fn scan(&mut self, now: i64) {
        let scanned = self.scanner().read();
        self.apply_scan(scanned, now);
    }

    /// What reads and compiles the rules directory, detached from the service so it can run
    /// on the blocking pool: it knows each file's last text and compiles only changed files.
    fn scanner(&self) -> Scanner {
        Scanner {
            dir: self.config.settings.rules_dir.clone(),
            known: self
                .slots
                .iter()
                .map(|(p, s)| (p.clone(), s.text.clone()))
                .collect(),
            limits: self.limits.clone(),
        }
    }

    /// Applies a read of the rules directory: new and changed rules replace the running
    /// ones (after checking their notifiers and actions), deleted files stop.
    fn apply_scan(&mut self, scanned: Scanned, now: i64) {
        let mut rearm = Vec::new();
        let files = match scanned {
            Ok(files) => {
                if let Some(e) = &mut self.rules_dir_error {
                    *e = None;
                }
                files
            }
            Err(e) => {
                // Unreadable for a moment (NFS, a directory swapped by a deploy) is not "every
                // rule was deleted": what runs keeps running, and wk_rules says why.
                error!("{e} (the rules loaded keep running)");
                self.rules_dir_error = Some(Some(e));
                self.report_broken(now);
                self.publish(None);
                return;
            }
        };
        let listed: BTreeSet<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
        for file in files {
            rearm.extend(self.load_file(file, &listed, now));
        }
        for (_, slot) in self.slots.iter_mut().filter(|(p, _)| listed.contains(*p)) {
            slot.missing = false;
        }
        let gone: Vec<PathBuf> = self
            .slots
            .keys()
            .filter(|p| !listed.contains(*p))
            .cloned()
            .collect();
        let mut stopped = false;
        for path in gone {
            let Some(slot) = self.slots.get_mut(&path) else {
                continue;
            };
            // `git pull` replaces a changed file by unlinking it and writing a new one: a
            // scan between the two must not close the rule's alerts and reopen them at the
            // next. A file is gone when two scans in a row miss it.
            if !slot.missing && slot.rule.is_some() {
                slot.missing = true;
                debug!(file = %path.display(), "rule file missing; its rule stops if the next scan misses it too");
                continue;
            }
            if let Some(mut slot) = self.slots.remove(&path)
                && let Some(rule) = slot.rule.take()
            {
                let settings = rule.settings();
                if let Some(heir) = self.heir_of(&settings.name, &listed) {
                    info!(file = %path.display(), heir = %heir.display(), "rule file removed; the file that was refused for its rule name takes its alerts over");
                    self.heirs.insert(settings.name.clone(), slot.state);
                    stopped = true;
                    continue;
                }
                info!(file = %path.display(), "rule file removed; its rule stops");
                // Close what receivers heard of, and forget the rule's state file.
                let why = format!("the rule was removed ({} deleted)", path.display());
                let events = slot.state.retire(settings, now, &why);
                self.route(events);
                self.forget_state(&settings.name);
                stopped = true;
            }
        }
        if stopped {
            // A file refused because another took its rule name may load now: read again.
            for slot in self.slots.values_mut().filter(|s| s.broken.is_some()) {
                slot.text.clear();
            }
        }
        self.sync_rules();
        if !rearm.is_empty() {
            info!(
                instances = rearm.len(),
                "restored alerts still firing: their actions resume (the attempt budget is kept)"
            );
            self.engine.resume(&rearm);
        }
        // The first scan after a start: a file that does not load has no earlier version to
        // run any more (that was only in memory). If its wk_rules alert was firing before the
        // restart, the last thing receivers read was "the last good version keeps running".
        let retell: Vec<String> = if self.scanned_once {
            Vec::new()
        } else {
            let settings = self.meta_settings();
            let unrun: BTreeSet<String> = (self.slots.iter())
                .filter(|(_, s)| s.rule.is_none() && s.broken.is_some())
                .filter_map(|(p, _)| Some(p.file_name()?.to_string_lossy().into_owned()))
                .collect();
            (self.meta.firing_events(&settings, now).into_iter())
                .filter_map(|e| e.tags.get("file").cloned())
                .filter(|f| unrun.contains(f))
                .collect()
        };
        self.scanned_once = true;
        self.report_broken(now);
        if !retell.is_empty() {
            let settings = self.meta_settings();
            let events: Vec<AlertEvent> = (self.meta.firing_events(&settings, now).into_iter())
                .filter(|e| e.tags.get("file").is_some_and(|f| retell.contains(f)))
                .collect();
            self.route(events);
        }
        self.sync_silences(now);
        self.publish(None);
    }

    /// Re-reads the silences made at run time (`wk-alerter silence`, `silences.json` in the
    /// state dir) and, when a silence has ended (expired, or expired by hand), sends once
    /// each alert it had muted that still fires, as Alertmanager does.
    fn sync_silences(&mut self, now: i64) {
        let dir = &self.config.settings.state_dir;
        match crate::notify::silence_store::router_silences(dir) {
            Ok(silences) => self.router.set_run_silences(silences),
            Err(e) => warn!("cannot read the silences made at run time (kept as they were): {e}"),
        }
        let active = self.router.active_silences(now);
        let ended = self.active_silences.iter().any(|s| !active.contains(s));
        self.active_silences = active;
        if !ended {
            return;
        }
        let due: Vec<AlertEvent> = self
            .slots
            .values()
            .filter_map(|slot| Some((slot.rule.as_ref()?, &slot.state)))
            .flat_map(|(rule, state)| state.firing_events(rule.settings(), now))
            .filter(|e| self.router.silenced(&e.rule, &e.id))
            .collect();
        if !due.is_empty() {
            info!(
                alerts = due.len(),
                "a silence ended: alerts it muted that still fire are sent once"
            );
            self.router.dispatch(due);
        }
    }

    /// Tells the router and the action engine which rules run.
    fn sync_rules(&mut self) {
        let settings: Vec<RuleSettings> = self
            .slots
            .values()
            .filter_map(|s| s.rule.as_ref().map(|r| r.settings().clone()))
            .collect();
        self.router.set_rules(settings.iter());
        self.engine.set_rules(self.slots.values().filter_map(|s| {
            s.rule.as_ref().map(|r| RuleEntry {
                settings: r.settings().clone(),
                rule: Some(r.clone() as Arc<dyn crate::actions::engine::Recheck>),
            })
        }));
    }

    /// Loads one rule file if it changed. Returns the restored instances still firing when a
    /// rule is first loaded (after a restart): the actions engine must hear of them, since no
    /// new event will say they fire.
    fn load_file(
        &mut self,
        file: ScannedFile,
        listed: &BTreeSet<PathBuf>,
        now: i64,
    ) -> Vec<AlertEvent> {
        let mut rearm = Vec::new();
        let path = file.path.as_path();
        let (text, compiled) = match file.content {
            Ok(Some(changed)) => changed,
            Ok(None) => {
                // Unchanged since a scan found it broken: not a file caught half-written.
                if let Some(slot) = self.slots.get_mut(path)
                    && let Some(msg) = slot.unconfirmed.take()
                {
                    slot.mark_broken(msg);
                }
                return rearm;
            }
            Err(msg) => {
                // Like a file that does not load (an older version keeps running): reported
                // through wk_rules once a second scan cannot read it either. Its text is
                // forgotten, so that once readable it loads whatever it holds.
                let slot = self
                    .slots
                    .entry(file.path.clone())
                    .or_insert_with(Slot::new);
                slot.text.clear();
                if slot.broken.as_ref() != Some(&msg) {
                    if slot.unconfirmed.as_ref() == Some(&msg) || !self.scanned_once {
                        slot.unconfirmed = None;
                        slot.mark_broken(msg);
                    } else {
                        slot.unconfirmed = Some(msg);
                    }
                }
                return rearm;
            }
        };
        let loaded = compiled.map_err(|e| e.to_string()).and_then(|rule| {
            let (l, c) = rule.settings().notify_pos;
            self.router
                .validate_names(&rule.settings().notify)
                .map_err(|e| format!("{}:{l}:{c}: {e}", path.display()))?;
            self.config
                .actions
                .validate_rule(rule.settings())
                .map_err(|((l, c), e)| format!("{}:{l}:{c}: {e}", path.display()))?;
            // Alerts, state files and silences are keyed by the rule's name.
            let name = &rule.settings().name;
            if let Some(other) = self.other_slot_named(name, path, true, listed) {
                let (l, c) = rule.settings().name_pos;
                return Err(format!(
                    "{}:{l}:{c}: rule name {name:?} is already used by {}: alerts and their \
                     state are kept by rule name; give this rule a name of its own",
                    path.display(),
                    other.display()
                ));
            }
            Ok(rule)
        });
        let slot = self
            .slots
            .entry(file.path.clone())
            .or_insert_with(Slot::new);
        slot.text = text;
        let mut closed = Vec::new();
        // A changed file ends what was said about its last content.
        slot.rolled_back = None;
        match loaded {
            // The running version's text, read again after a config reload: compiled anew
            // (the limits may have changed) and nothing else. Its alerts, schedule and what
            // wk_rules says of it stay as they are.
            Ok(rule)
                if slot.broken.is_none()
                    && slot.version == crate::api::board::version_of(&slot.text)
                    && slot
                        .rule
                        .as_ref()
                        .is_some_and(|r| r.settings().name == rule.settings().name) =>
            {
                debug!(rule = %rule.settings().name, "rule checked against the new config");
                let new = Arc::new(rule);
                let old = slot.rule.replace(new.clone());
                if let (Some(g), Some(o)) = (&slot.good, &old)
                    && Arc::ptr_eq(g, o)
                {
                    slot.good = Some(new);
                }
                slot.unconfirmed = None;
                return rearm;
            }
            Ok(rule) => {
                let name = rule.settings().name.clone();
                let every = rule.settings().every;
                if let Some(old) = slot.rule.clone()
                    && old.settings().name != name
                {
                    // Renamed in its script: a new rule to receivers, whose alert ids and
                    // groups carry the rule's name (an incident opened under the old id would
                    // stay open forever). The old name's alerts are closed, saying so; the
                    // new rule starts from nothing.
                    let was = &old.settings().name;
                    info!(rule = %name, was = %was, "rule reloaded under a new name: a new rule");
                    let why = format!("the rule was renamed to {name}");
                    closed = slot.state.retire(old.settings(), now, &why);
                    slot.state = RuleState::new();
                    self.forget_state(was);
                    // No rollback across a rename: the old name's alerts are closed and its
                    // state is gone, so it would come back empty and page anew. A new
                    // version that fails is reported, as a first version is.
                    let slot = self.slots.get_mut(path).expect("inserted above");
                    slot.good = None;
                    slot.good_version.clear();
                } else if let Some(old) = slot.rule.clone()
                    && old.settings().id_template != rule.settings().id_template
                {
                    // A new `id` template: receivers know the alerts by their old ids, which
                    // nothing would close (recoveries would go out under the new ones). They
                    // are closed now; the alerts open again under their new ids.
                    info!(rule = %name, "rule reloaded with a new id template: its alerts start again");
                    let why = "the rule's alert id changed";
                    closed = slot.state.retire(old.settings(), now, why);
                    // Nor back to the old template if this version fails: its alerts are
                    // closed, they would open again as new.
                    slot.good = None;
                    slot.good_version.clear();
                } else if slot.rule.is_some() {
                    info!(rule = %name, "rule reloaded");
                    slot.regroup_check = true;
                } else if let Some(moved) = self.take_renamed(&name, path, listed) {
                    // The file was renamed (`git mv`), the rule was not: the same alerts.
                    info!(rule = %name, file = %path.display(), "rule file renamed; its alerts carry on");
                    let slot = self.slots.get_mut(path).expect("inserted above");
                    slot.state = moved;
                } else if let Some(state) = self.heirs.remove(&name) {
                    // Its file was refused while another file had the name; that one is gone.
                    info!(rule = %name, file = %path.display(), "rule loaded; the alerts of the removed file carry on");
                    let slot = self.slots.get_mut(path).expect("inserted above");
                    slot.state = state;
                } else {
                    let slot = self.slots.get_mut(path).expect("inserted above");
                    slot.state = RuleState::load(&self.config.settings.state_dir, &name);
                    info!(rule = %name, every = ?every, restored = slot.state.instance_count(), "rule loaded");
                    if !rule.settings().actions.is_empty() {
                        rearm = slot.state.firing_events(rule.settings(), now);
                    }
                }
                let slot = self.slots.get_mut(path).expect("inserted above");
                sync_inhibitors(&self.router, rule.settings(), &slot.state);
                slot.rule = Some(Arc::new(rule));
                slot.version = crate::api::board::version_of(&slot.text);
                slot.loaded_ns = now;
                slot.no_series_yet = Some(0);
                slot.broken = None;
                slot.unconfirmed = None;
                slot.failing = None;
                slot.next_due = next_tick(now, every);
            }
            Err(msg) if self.scanned_once => {
                // Reported when the next scan reads the same text: `git pull` writes files in
                // place, and a scan may read one half-written.
                debug!(file = %path.display(), "does not load; reported if unchanged at the next scan: {msg}");
                slot.unconfirmed = Some(msg);
            }
            Err(msg) => slot.mark_broken(msg),
        }
        self.route(closed);
        rearm
    }

    /// A listed file that does not load (refused, as it names a rule another file had) and
    /// would now load a rule called `name`.
    fn heir_of(&self, name: &str, listed: &BTreeSet<PathBuf>) -> Option<PathBuf> {
        self.slots.iter().find_map(|(p, s)| {
            let refused = s.broken.is_some() || s.unconfirmed.is_some();
            let rule = (refused && s.rule.is_none() && listed.contains(p))
                .then(|| load_rule_source_with(&p.display().to_string(), &s.text, &self.limits))?
                .ok()?;
            (rule.settings().name == name).then(|| p.clone())
        })
    }

    /// The state of a rule whose file left the directory while a file that is listed now
    /// loads a rule of the same name: the file was renamed. Its slot goes without closing
    /// anything.
    fn take_renamed(
        &mut self,
        name: &str,
        path: &Path,
        listed: &BTreeSet<PathBuf>,
    ) -> Option<RuleState> {
        let old = self.other_slot_named(name, path, false, listed)?.clone();
        self.slots.remove(&old).map(|s| s.state)
    }

    /// The file, other than `path`, whose running rule is called `name`, among the files the
    /// scan listed (`listed_now`) or those it did not.
    fn other_slot_named(
        &self,
        name: &str,
        path: &Path,
        listed_now: bool,
        listed: &BTreeSet<PathBuf>,
    ) -> Option<&PathBuf> {
        self.slots.iter().find_map(|(p, s)| {
            let same = s.rule.as_ref()?.settings().name == name;
            (same && p != path && listed.contains(p) == listed_now).then_some(p)
        })
    }

    /// Deletes a rule's saved state (the rule is gone, or goes on under another name).
    fn forget_state(&self, name: &str) {
        match &self.persister {
            Some(p) => p.remove(name),
            None => crate::state::remove_state(&self.config.settings.state_dir, name),
        }
    }

    /// Feeds the `wk_rules` state machine one observation per rule file.
    fn report_broken(&mut self, now: i64) {
        let mut observations: Vec<Observation> = self
            .slots
            .iter()
            .map(|(path, slot)| {
                let file = path
                    .file_name()
                    .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
                let status = match (&slot.broken, &slot.rule, &slot.runaway) {
                    (Some(p), Some(_), _) => {
                        format!("does not load; the last good version keeps running: {p}")
                    }
                    (Some(p), None, _) => format!("does not load (no earlier version runs): {p}"),
                    (None, _, Some(r)) => r.clone(),
                    (None, _, None) => match (&slot.rolled_back, &slot.failing) {
                        (Some(f), _) => format!(
                            "fails at evaluation; rolled back to the last version that \
                             evaluated cleanly: {f}"
                        ),
                        (None, Some(f)) => format!("fails at evaluation: {f}"),
                        (None, None) => slot.ok_status.to_string(),
                    },
                };
                let failing = slot.broken.is_some()
                    || slot.runaway.is_some()
                    || slot.rolled_back.is_some()
                    || slot.failing.is_some();
                let mut o = health_observation(RULES_RULE, "file", file, status, failing, now);
                o.fields.insert(
                    "problem".into(),
                    Value::Str(slot.broken.clone().unwrap_or_default()),
                );
                o
            })
            .collect();
        if let Some(e) = &self.rules_dir_error {
            let dir = format!("{}/", self.config.settings.rules_dir.display());
            let status = match e {
                Some(e) => {
                    format!("(the directory) cannot be read; the rules loaded keep running: {e}")
                }
                None => "(the directory) can be read again".into(),
            };
            observations.push(health_observation(
                RULES_RULE,
                "file",
                dir,
                status,
                e.is_some(),
                now,
            ));
        }
        let settings = self.meta_settings();
        self.apply_health(RULES_RULE, &settings, observations, now);
    }

    /// Saves every rule state evaluated since its last save (shutdown: what was left for the
    /// next checkpoint).
    fn save_unsaved(&mut self, now: i64) {
        for slot in self.slots.values_mut() {
            let Some(rule) = &slot.rule else { continue };
            if slot.state.unsaved() {
                let name = &rule.settings().name;
                let save = slot.state.snapshot(now, name).map(Some);
                persist(
                    self.persister.as_ref(),
                    &self.config.settings.state_dir,
                    name,
                    save,
                );
            }
        }
        // The built-in rules' states too (their changes went to the journal already).
        for (name, state) in [
            (RULES_RULE, &mut self.meta),
            (SOURCE_RULE, &mut self.source_health),
            (NOTIFIER_RULE, &mut self.notifier_health),
        ] {
            if state.unsaved() {
                let save = state.snapshot(now, name).map(Some);
                persist(
                    self.persister.as_ref(),
                    &self.config.settings.state_dir,
                    name,
                    save,
                );
            }
        }
    }

    /// Waits until every state handed to the writer is on disk.
    pub fn flush_state(&self) {
        if let Some(p) = &self.persister {
            p.flush();
        }
    }

    fn route(&mut self, events: Vec<AlertEvent>) {
        let events = self.host_pages.fold(events);
        // One line per event; the wk_rules alert repeats a load error already logged as an
        // error, so only its recovery is said here.
        for e in events
            .iter()
            .filter(|e| e.rule != RULES_RULE || e.kind == EventKind::Recovery)
        {
            info!(rule = %e.rule, id = %e.id, level = %e.level, kind = ?e.kind, "{}", e.message);
        }
        if let Some(tap) = &self.tap {
            for e in &events {
                let _ = tap.send(e.clone());
            }
        }
        if !events.is_empty() {
            let held = self.engine.handle(&events);
            self.router.dispatch_except(events, &held);
        }
    }

    /// Starts the evaluations that are due; results come back on `tx`.
    ///
    /// Each rule has its own budget: its evaluation runs on a thread of its own (at most one
    /// per rule, no slots shared with other rules) for at most the time limit, so a runaway
    /// rule delays nobody but itself.
    fn start_due(&mut self, now: i64, tx: &mpsc::UnboundedSender<Evaluated>) {
        // The wall clock stepped back (NTP correcting a clock that ran ahead, `date -s`):
        // ticks scheduled in the old future would stop every rule for as long as the step,
        // while the heartbeat (on the monotonic clock) kept saying all is well.
        if now < self.last_now.saturating_sub(CLOCK_STEP_BACK) {
            warn!(
                by = %crate::template::format_duration(Duration::from_nanos(
                    (self.last_now - now) as u64
                )),
                "the system clock stepped back; rules are rescheduled from the new time"
            );
            for slot in self.slots.values_mut() {
                if let Some(rule) = &slot.rule {
                    slot.next_due = next_tick(now, rule.settings().every);
                }
                slot.state.clock_stepped_back(now);
            }
        }
        self.last_now = now;
        let limit = self.limits.timeout;
        for (path, slot) in self.slots.iter_mut() {
            let Some(rule) = slot.rule.clone() else {
                continue;
            };
            let every = rule.settings().every;
            // Evaluated a little after the tick, as of the tick: agents collect on the tick
            // and write right after, so the tick's points are in by then. With
            // `evaluation_spread`, rules that share a tick start at offsets of their own,
            // so that they do not all query the database at once.
            let delay = (self.config.settings)
                .start_after(every, &rule.settings().name)
                .as_nanos() as i64;
            if slot.running || now < slot.next_due + delay {
                continue;
            }
            // Evaluate as of the scheduled tick, not the moment the evaluation starts:
            // `pending` and `repeat` compare these times, and microseconds of jitter would make
            // them fire one `every` late. A scheduler late by whole intervals evaluates the
            // latest tick that has passed.
            let e = every.as_nanos().max(1) as i64;
            let due = slot.next_due.max((now - delay).div_euclid(e) * e);
            if due > slot.next_due {
                warn!(rule = %rule.settings().name, "evaluation is late by more than one interval; skipped ticks");
            }
            slot.next_due = due + e;
            slot.running = true;
            let (source, tx, path) = (self.source.clone(), tx.clone(), path.clone());
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let evaluated = rule.clone();
                let mut handle =
                    tokio::task::spawn_blocking(move || evaluated.evaluate(&source, due));
                // The script stops itself at the deadline; this bounds what it cannot stop (a
                // query in flight), with a little grace for the script's own report.
                let grace = Duration::from_millis(100);
                let (result, outcome) = match tokio::time::timeout(limit + grace, &mut handle).await
                {
                    Ok(joined) => (
                        joined.unwrap_or_else(|e| {
                            CycleResult::Failed(EvalFailure::new(
                                FailureKind::Script,
                                format!("{}: rule evaluation crashed: {e}", path.display()),
                            ))
                        }),
                        Outcome::Finished,
                    ),
                    Err(_) => (
                        CycleResult::Failed(EvalFailure::new(
                            FailureKind::Timeout,
                            format!(
                                "{}: stopped waiting at the {} time limit (a query still in \
                                 flight)",
                                path.display(),
                                crate::template::format_duration(limit)
                            ),
                        )),
                        Outcome::Overran,
                    ),
                };
                let overran = outcome == Outcome::Overran;
                let _ = tx.send(Evaluated {
                    path: path.clone(),
                    rule: rule.clone(),
                    result,
                    now: due,
                    outcome,
                    elapsed: started.elapsed(),
                });
                if overran {
                    let _ = handle.await;
                    let _ = tx.send(Evaluated {
                        path,
                        rule,
                        result: CycleResult::Observed(Vec::new()),
                        now: due,
                        outcome: Outcome::Ended,
                        elapsed: started.elapsed(),
                    });
                }
            });
        }
    }

    /// Takes one evaluation's result: state machine, events, and the status page.
    fn finish(&mut self, done: Evaluated) {
        let path = done.path.clone();
        if let Some(slot) = self.slots.get_mut(&path)
            && done.outcome != Outcome::Ended
        {
            slot.last_eval_ns = done.now;
            slot.last_elapsed = done.elapsed;
            slot.last_error = match &done.result {
                CycleResult::Failed(f) => Some(f.message.clone()),
                CycleResult::Observed(_) => None,
            };
        }
        self.apply_result(done);
        self.publish(Some(&path));
    }

    fn apply_result(&mut self, done: Evaluated) {
        let limit = self.limits.timeout;
        let clock_now = self.clock.now_ns();
        let Some(slot) = self.slots.get_mut(&done.path) else {
            return;
        };
        if done.outcome != Outcome::Overran {
            slot.running = false;
        }
        if done.outcome == Outcome::Ended {
            return;
        }
        let Some(rule) = slot.rule.clone() else {
            return;
        };
        let settings = rule.settings();
        let current = Arc::ptr_eq(&rule, &done.rule);
        self.counts
            .entry(settings.name.clone())
            .or_default()
            .evaluations += 1;
        match &done.result {
            CycleResult::Failed(f) => {
                EvaluationFailed {
                    rule: &settings.name,
                    failure: f,
                }
                .emit(&mut self.counts);
                if f.kind == FailureKind::Source {
                    self.source_status(Some(&f.message), clock_now);
                }
                if matches!(f.kind, FailureKind::Script | FailureKind::BadReturn) {
                    // The rule's own fault is not news about the data: the instances keep
                    // their state and wk_rules tells the rule's author.
                    if current {
                        self.rule_failed(&done.path, f, clock_now);
                    }
                    return;
                }
            }
            CycleResult::Observed(obs) => {
                if self.source_failing.is_some() {
                    self.source_status(None, clock_now);
                }
                if let Some(c) = self.counts.get_mut(&settings.name) {
                    c.series = Some(obs.len() as u64);
                }
                let Some(slot) = self.slots.get_mut(&done.path) else {
                    return;
                };
                if current {
                    let told = slot.no_series_suspect().is_some();
                    slot.no_series_yet = match slot.no_series_yet {
                        Some(n) if obs.is_empty() => Some(n + 1),
                        _ => None,
                    };
                    if let Some(n) = slot.no_series_suspect()
                        && !told
                    {
                        info!(rule = %settings.name, "{}", no_series_text(n));
                    }
                    slot.good = Some(rule.clone());
                    slot.good_version = slot.version.clone();
                    if slot.failing.take().is_some() {
                        info!(rule = %settings.name, "evaluates cleanly again");
                        slot.ok_status = "evaluates cleanly again";
                        self.report_broken(clock_now);
                    }
                }
            }
        }
        let in_flight = self.slots.values().filter(|s| s.running).count();
        let spread = self.config.settings.evaluation_spread;
        let Some(slot) = self.slots.get_mut(&done.path) else {
            return;
        };
        // A runaway (it used its whole time limit) is reported through `wk_rules` and waits
        // as long as it ran before its next evaluation, so it uses at most half of a thread.
        let runaway = (done.outcome == Outcome::Overran || done.elapsed >= limit).then(|| {
            let why = match &done.result {
                CycleResult::Failed(f) => f.message.clone(),
                CycleResult::Observed(_) => "it returned after the limit".into(),
            };
            format!(
                "evaluation stopped at its time limit of {} ({why}); other rules keep their schedule",
                crate::template::format_duration(limit)
            )
        });
        if runaway.is_some() {
            let backoff = clock_now.saturating_add(done.elapsed.as_nanos() as i64);
            slot.next_due = slot.next_due.max(next_tick(backoff, settings.every));
        }
        let report = runaway.is_some() != slot.runaway.is_some();
        if report && runaway.is_some() {
            warn!(rule = %settings.name, "evaluation stopped at the time limit; reported as wk_rules");
            // A query that did not come back while many others were in flight: the source
            // is more likely overloaded by them than slow for this one.
            if done.outcome == Outcome::Overran && spread.is_zero() && in_flight > 4 {
                warn!(
                    rule = %settings.name,
                    "{in_flight} evaluations were in flight at once; if rules time out together, the source is overloaded by queries arriving in the same second: set [alerter] evaluation_spread (docs/scaling.md)"
                );
            }
            slot.ok_status = "evaluates within its time limit again";
        }
        slot.runaway = runaway;
        let grace = self.config.settings.source_recovery_grace.as_nanos() as i64;
        slot.state.hold_no_data_until = self.source_back_at.map_or(0, |t| t.saturating_add(grace));
        let mut events = Vec::new();
        if let CycleResult::Observed(obs) = &done.result
            && current
            && slot.regroup_check
            && !obs.is_empty()
        {
            // The first series of a reloaded version: instances of tag sets it does not
            // return (its `group_by` changed) would otherwise go NoData, CRITICAL by default,
            // until `expire_after`, and keep inhibiting what they inhibit.
            slot.regroup_check = false;
            let shapes: BTreeSet<Vec<&String>> =
                obs.iter().map(|o| o.tags.keys().collect()).collect();
            let why = "the rule now groups its series by other tags";
            events = slot.state.retire_where(settings, done.now, why, |tags| {
                !shapes.contains(&tags.keys().collect::<Vec<_>>())
            });
            if !events.is_empty() {
                info!(rule = %settings.name, closed = events.len(), "{why}: alerts of the old grouping closed");
            }
        }
        events.extend(slot.state.apply(settings, &done.result, done.now));
        sync_inhibitors(&self.router, settings, &slot.state);
        debug!(rule = %settings.name, events = events.len(), "evaluated");
        // What changed is appended to the rule's journal at once; the whole state is written
        // at checkpoints (state::STATE_CHECKPOINT): at thousands of instances, rewriting the
        // whole file for every change, or only to move `last_seen`, was the cost.
        save_due(
            self.persister.as_ref(),
            &self.config.settings.state_dir,
            &settings.name,
            &mut slot.state,
            done.now,
        );
        self.route(events);
        if report {
            self.report_broken(clock_now);
        }
    }

    /// A rule failed by its own fault: a version that never evaluated cleanly is rolled back to
    /// the last one that did; either way `wk_rules` names the file, line and column.
    fn rule_failed(&mut self, path: &Path, f: &EvalFailure, now: i64) {
        let Some(slot) = self.slots.get_mut(path) else {
            return;
        };
        let rolled_back = match (&slot.rule, &slot.good) {
            (Some(rule), Some(good)) if !Arc::ptr_eq(rule, good) => {
                error!(
                    rule = %good.settings().name,
                    "{f}: the new version fails; rolled back to the last version that evaluated cleanly"
                );
                slot.rule = Some(good.clone());
                slot.version = slot.good_version.clone();
                slot.rolled_back = Some(f.message.clone());
                slot.ok_status = "loads again";
                true
            }
            _ => {
                slot.failing = Some(f.message.clone());
                false
            }
        };
        if rolled_back {
            self.sync_rules();
        }
        self.report_broken(now);
    }

    /// Swaps in a new config (SIGHUP): notifiers and silences are replaced, the rules
    /// directory is rescanned. The query source is kept (a changed source needs a restart).
    pub fn reload(&mut self, config: Config, now: i64) -> Result<(), String> {
        self.apply_config(config)?;
        self.scan(now);
        Ok(())
    }

    /// Takes a new config, unless a running rule names a notifier it does not define or an
    /// action it refuses: then none of it is taken, and the error names each such rule
    /// (file:line:column). Every rule file is read again by the next scan: one that did not
    /// load may now; the running ones are compiled anew and keep their alerts and state.
    pub fn apply_config(&mut self, config: Config) -> Result<(), String> {
        let known: Vec<&str> = (config.notify.notifiers.iter())
            .map(|n| n.settings.name.as_str())
            .collect();
        let fits = |path: &Path, s: &crate::model::RuleSettings| -> Result<(), String> {
            if let Err(e) = crate::notify::config::check_names(&known, &s.notify) {
                let (l, c) = s.notify_pos;
                return Err(format!("{}:{l}:{c}: {e}", path.display()));
            }
            (config.actions.validate_rule(s))
                .map_err(|((l, c), e)| format!("{}:{l}:{c}: {e}", path.display()))
        };
        let limits = Limits::from_config(&config);
        let mut refused = Vec::new();
        for (path, slot) in &self.slots {
            let Some(rule) = &slot.rule else {
                continue;
            };
            // The running version fits, or what the next scan runs does: the file as it is now
            // when it loads and fits (one push may rename a notifier in the config and in the
            // rules). The file is read only when the running version does not fit.
            let Err(e) = fits(path, rule.settings()) else {
                continue;
            };
            let on_disk = read_rule_text(path).ok().and_then(|text| {
                load_rule_source_with(&path.display().to_string(), &text, &limits).ok()
            });
            if on_disk.is_none_or(|r| fits(path, r.settings()).is_err()) {
                refused.push(e);
            }
        }
        if !refused.is_empty() {
            return Err(format!(
                "running rules do not fit it (change the rules in the same push): {}",
                refused.join("; ")
            ));
        }
        if config.sources != self.config.sources {
            warn!("[[sources.*]] changed: restart the alerter to use the new source");
        }
        self.router.replace(config.notify.clone());
        self.engine.set_config(config.actions.clone());
        self.limits = Limits::from_config(&config);
        if config.heartbeat != self.config.heartbeat {
            self.heartbeat = (config.heartbeat.clone()).map(crate::heartbeat::Heartbeat::new);
            // A new one shows at its first beat, which is at once.
            self.board.update(|b| b.heartbeat = None);
        }
        self.config = config;
        self.config_generation += 1;
        // Read again: a rolled-back version stays rolled back (its failure was its own).
        for slot in self.slots.values_mut().filter(|s| s.rolled_back.is_none()) {
            slot.text.clear();
        }
        Ok(())
    }

    /// Runs until `shutdown` completes. `reload` delivers a new config (SIGHUP), or `None`
    /// for a rescan of the rules only.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
        mut reload: mpsc::UnboundedReceiver<crate::config::Reload>,
    ) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let reload_every = self.config.settings.reload_interval;
        // What the last run did not deliver goes out first; what this one leaves is kept.
        self.router.keep_outbox(
            self.config
                .settings
                .state_dir
                .join(crate::notify::outbox::OUTBOX_FILE),
        );
        self.scan(self.clock.now_ns());
        // After the first scan: a wk_rules alert restored from disk counts from the start.
        self.heartbeat = (self.config.heartbeat.clone()).map(crate::heartbeat::Heartbeat::new);
        // Instances restored from disk that are still firing inhibit from the start.
        let mut next_scan = tokio::time::Instant::now() + reload_every;
        let summary_every = self.config.settings.summary_interval;
        let mut next_summary = (!summary_every.is_zero()).then(|| {
            (
                tokio::time::Instant::now() + summary_every,
                self.clock.now_ns(),
                0,
                0,
            )
        });
        tokio::pin!(shutdown);
        // Rescans read and compile on the blocking pool, one at a time; the result is
        // applied here, between evaluations.
        let (scans_tx, mut scans_rx) = mpsc::unbounded_channel();
        let (mut scanning, mut rescan) = (false, false);
        loop {
            if rescan && !scanning {
                let scanner = self.scanner();
                let scans_tx = scans_tx.clone();
                let generation = self.config_generation;
                tokio::task::spawn_blocking(move || {
                    let _ = scans_tx.send((generation, scanner.read()));
                });
                (scanning, rescan) = (true, false);
            }
            let now = self.clock.now_ns();
            if self
                .heartbeat
                .as_ref()
                .is_some_and(|h| tokio::time::Instant::now() >= h.due())
            {
                let problems = self.heartbeat_problems(now);
                if let Some(h) = &mut self.heartbeat {
                    h.beat(problems);
                    let view = h.view();
                    self.board.update(|b| b.heartbeat = Some(view));
                }
            }
            self.start_due(now, &tx);
            let settings = &self.config.settings;
            let next_due = self
                .slots
                .values()
                .filter_map(|s| Some((s, s.rule.as_ref()?)))
                .filter(|(s, _)| !s.running)
                .map(|(s, r)| {
                    let rs = r.settings();
                    s.next_due + settings.start_after(rs.every, &rs.name).as_nanos() as i64
                })
                .min();
            let wait = next_due.map_or(reload_every, |d| {
                Duration::from_nanos((d - now).max(0) as u64)
            });
            let mut wake = (tokio::time::Instant::now() + wait).min(next_scan);
            if let Some((at, ..)) = next_summary {
                wake = wake.min(at);
            }
            if let Some(h) = &self.heartbeat {
                wake = wake.min(h.due());
            }
            tokio::select! {
                _ = &mut shutdown => break,
                Some(done) = rx.recv() => self.finish(done),
                Some((generation, scanned)) = scans_rx.recv() => {
                    scanning = false;
                    if generation == self.config_generation {
                        self.apply_scan(scanned, self.clock.now_ns());
                    } else {
                        // Compiled with the limits of the config before: read again (the
                        // config cleared every text, so the next scan compiles them all).
                        rescan = true;
                    }
                }
                Some(new) = reload.recv() => match new {
                    Some((cfg, reply)) => {
                        let applied = self.apply_config(*cfg);
                        rescan |= applied.is_ok();
                        let _ = reply.send(applied);
                    }
                    None => rescan = true,
                },
                _ = tokio::time::sleep_until(wake) => {
                    if tokio::time::Instant::now() >= next_scan {
                        rescan = true;
                        next_scan = tokio::time::Instant::now() + reload_every;
                        self.notifier_status(self.clock.now_ns());
                    }
                    if let Some((at, since, evals, fails)) = next_summary
                        && tokio::time::Instant::now() >= at
                    {
                        info!("summary: {}", self.summary_line(since, evals, fails));
                        let c = self.board.get().counts(&self.router, self.clock.now_ns());
                        next_summary = Some((
                            tokio::time::Instant::now() + summary_every,
                            self.clock.now_ns(),
                            c.evaluations,
                            c.failures,
                        ));
                    }
                }
            }
        }
        self.router.shutdown(Duration::from_secs(5)).await;
        self.save_unsaved(self.clock.now_ns());
        self.flush_state();
        info!("alerter stopped");
    }

    /// Evaluates every loaded rule once now and returns the observations (no state, no
    /// notification): `wk-alerter check`.
    pub fn evaluate_once(&self) -> Vec<(String, CycleResult)> {
        let now = self.clock.now_ns();
        self.slots
            .values()
            .filter_map(|s| s.rule.as_ref())
            .map(|r| (r.settings().name.clone(), r.evaluate(&self.source, now)))
            .collect()
    }
}

/// Reads the rules directory and compiles the files whose text changed: file I/O and Rhai
/// compilation, kept off the scheduler task (the service runs it on the blocking pool).
struct Scanner {
    dir: PathBuf,
    /// Each known file's text at its last load.
    known: BTreeMap<PathBuf, String>,
    limits: Limits,
}

/// Every rule file of the directory, or why the directory could not be read.
type Scanned = Result<Vec<ScannedFile>, String>;

struct ScannedFile {
    path: PathBuf,
    /// The new text and its compiled rule; `None` when the text is unchanged.
    content: Result<Option<Changed>, String>,
}

/// A rule file's new text and what compiling it gave.
type Changed = (String, Result<Rule, crate::rules::RuleError>);

impl Scanner {
    fn read(self) -> Scanned {
        let paths = crate::rules::rule_files(&self.dir).map_err(|e| {
            format!(
                "cannot read the rules directory {}: {e}",
                self.dir.display()
            )
        })?;
        Ok(paths
            .into_iter()
            .map(|path| {
                let content = read_rule_text(&path).map(|text| {
                    (self.known.get(&path) != Some(&text)).then(|| {
                        let name = path.display().to_string();
                        let rule = load_rule_source_with(&name, &text, &self.limits);
                        (text, rule)
                    })
                });
                ScannedFile { path, content }
            })
            .collect())
    }
}

/// A rule file's text, or why it cannot be read: `file:line:column` of the first byte that is
/// not UTF-8.
fn read_rule_text(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let good = &e.as_bytes()[..at];
        let line = good.iter().filter(|b| **b == b'\n').count() + 1;
        let start = good.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&good[start..]).chars().count() + 1;
        format!(
            "{}:{line}:{column}: not UTF-8 (byte 0x{:02x}): rule files are read as UTF-8",
            path.display(),
            e.as_bytes()[at]
        )
    })
}

/// Clean evaluations without a series, and time since it loaded, after which a rule is
/// reported (log and status page): the first ones may come before any agent wrote.
const NO_SERIES_WARN_AFTER: u32 = 3;
const NO_SERIES_WARN_AGE: Duration = Duration::from_secs(120);

/// What the log and the status page say of a rule whose `n` clean evaluations since it
/// loaded returned no series.
fn no_series_text(n: u32) -> String {
    format!(
        "no series in its {n} evaluations since it loaded: its queries match nothing (no agent \
         writes what it reads yet, or a measurement, field or tag value is misspelled: \
         `wk-alerter check` prints what they return); a rule without series never fires, nor \
         goes NoData"
    )
}

/// One rule's `wk_alerter` self-metric.
fn rule_metric(rule: &str, c: &EvalCounts, now: i64) -> wk_core::metric::Metric {
    let mut m = wk_core::metric::Metric::new("wk_alerter", now)
        .with_tag("rule", rule)
        .with_field("evaluations", c.evaluations)
        .with_field("evaluation_failures", c.failures.values().sum::<u64>());
    if let Some(n) = c.series {
        m.add_field("series", n);
    }
    for kind in [
        FailureKind::Source,
        FailureKind::Script,
        FailureKind::Timeout,
        FailureKind::BadReturn,
    ] {
        m.add_field(
            format!("evaluation_failures_{}", kind.as_str()),
            c.failures.get(&kind).copied().unwrap_or(0),
        );
    }
    m
}

/// "One dead host = one page": NoData events of instances tagged `host` are folded per host.
/// The first instance to go NoData for a host pages; NoData of other instances (other rules,
/// other series) of the same host while that page is open are held back and logged, as are
/// their repeats and their recoveries (receivers never heard of them). When the paging
/// instance leaves NoData (its recovery, or an alert from data that came back), a held
/// instance still without data takes the page over and is sent then, so a host that stays
/// partly silent is still reported. Not persisted: after a restart, the recovery of an
/// instance that was held may be sent.
#[derive(Debug, Default)]
struct HostPages {
    /// host → the (rule, id) whose NoData event paged for it.
    open: BTreeMap<String, (String, String)>,
    /// (rule, id) → its held NoData event (the latest).
    held: BTreeMap<(String, String), AlertEvent>,
}

impl HostPages {
    fn fold(&mut self, events: Vec<AlertEvent>) -> Vec<AlertEvent> {
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            let key = (e.rule.clone(), e.id.clone());
            let Some(host) = e.tags.get("host").cloned() else {
                out.push(e);
                continue;
            };
            if e.kind == EventKind::NoData {
                match self.open.get(&host) {
                    Some(owner) if *owner != key => {
                        info!(rule = %e.rule, id = %e.id, host = %host, paged_by = %owner.1,
                            "no data: folded into the host's open page");
                        self.held.insert(key, e);
                    }
                    _ => {
                        self.open.insert(host, key);
                        out.push(e);
                    }
                }
                continue;
            }
            if self.held.remove(&key).is_some() && e.kind == EventKind::Recovery {
                // Receivers never heard of its NoData: nothing to recover.
                continue;
            }
            let owns = self.open.get(&host) == Some(&key);
            out.push(e);
            if owns {
                self.open.remove(&host);
                let next = self
                    .held
                    .keys()
                    .find(|k| self.held[*k].tags.get("host") == Some(&host))
                    .cloned();
                if let Some(k) = next
                    && let Some(held) = self.held.remove(&k)
                {
                    self.open.insert(host, k);
                    out.push(held);
                }
            }
        }
        out
    }
}

/// Tells the router which instances of an inhibiting rule are non-OK (events alone do not
/// end an inhibitor whose rule sends no recoveries, nor announce state restored from disk).
/// What a state gave to save (nothing, a snapshot or journal records), or why it could not.
type StateSaveResult = Result<Option<crate::state::StateSave>, crate::state::PersistError>;

/// Saves what changed in a rule's state after an evaluation at `now`
/// ([`RuleState::due_save`]). When the writer could not write the rule's last save, this one
/// is the whole state ([`RuleState::resave`]): what failed is saved again one evaluation
/// later, not at the next checkpoint.
fn save_due(
    persister: Option<&crate::state::Persister>,
    dir: &Path,
    name: &str,
    state: &mut RuleState,
    now: i64,
) {
    if persister.is_some_and(|p| p.failed(name)) {
        state.resave();
    }
    let save = state.due_save(now, name);
    if !persist(persister, dir, name, save) {
        state.resave();
    }
}

/// Saves a rule's state: encoded by the caller, written by the state writer thread (the
/// fsyncs never hold up the scheduler); synchronously if that thread could not start. False
/// when it could not be encoded or (synchronously) written.
fn persist(
    persister: Option<&crate::state::Persister>,
    dir: &Path,
    name: &str,
    save: StateSaveResult,
) -> bool {
    let saved = match (save, persister) {
        (Ok(None), _) => Ok(()),
        (Ok(Some(save)), Some(p)) => {
            p.save(name, save);
            Ok(())
        }
        (Ok(Some(save)), None) => crate::state::write_save(dir, name, &save),
        (Err(e), _) => Err(e),
    };
    if let Err(e) = &saved {
        error!(rule = %name, "cannot save alert state: {e}");
    }
    saved.is_ok()
}

fn sync_inhibitors(router: &Router, settings: &RuleSettings, state: &RuleState) {
    if settings.inhibits.is_empty() {
        return;
    }
    let active = state
        .instances()
        .into_iter()
        .filter(|i| i.level > Level::Ok)
        .map(|i| i.tags);
    router.sync_inhibitors(&settings.name, active);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(rule: &str, host: &str, kind: EventKind) -> AlertEvent {
        AlertEvent {
            rule: rule.into(),
            id: format!("{rule}:host={host}"),
            message: String::new(),
            details: String::new(),
            kind,
            level: if kind == EventKind::Recovery {
                Level::Ok
            } else {
                Level::Critical
            },
            previous_level: Level::Ok,
            tags: [("host".to_string(), host.to_string())].into(),
            fields: crate::model::Fields::new(),
            time: 0,
            point_time: 0,
            duration: Duration::ZERO,
            notify: Vec::new(),
            category: None,
        }
    }

    fn rules(events: &[AlertEvent]) -> Vec<(&str, EventKind)> {
        events.iter().map(|e| (e.rule.as_str(), e.kind)).collect()
    }

    #[test]
    fn host_pages_hold_other_no_data_and_hand_the_page_over() {
        use EventKind::{Alert, NoData, Recovery};
        let mut p = HostPages::default();
        let out = p.fold(vec![ev("cpu", "web1", NoData), ev("mem", "web1", NoData)]);
        assert_eq!(rules(&out), [("cpu", NoData)]);
        // Another host pages on its own; a held instance's repeat stays held.
        let out = p.fold(vec![ev("mem", "web2", NoData), ev("mem", "web1", NoData)]);
        assert_eq!(rules(&out), [("mem", NoData)]);
        assert_eq!(out[0].tags["host"], "web2");
        // cpu's data is back but mem's is not: mem takes the page over.
        let out = p.fold(vec![ev("cpu", "web1", Recovery)]);
        assert_eq!(rules(&out), [("cpu", Recovery), ("mem", NoData)]);
        // mem recovers (sent: receivers heard its NoData); a held one recovers silently.
        let out = p.fold(vec![ev("disk", "web1", NoData)]);
        assert!(out.is_empty());
        let out = p.fold(vec![
            ev("disk", "web1", Recovery),
            ev("mem", "web1", Recovery),
        ]);
        assert_eq!(rules(&out), [("mem", Recovery)]);
        // Non-NoData events are never held.
        let out = p.fold(vec![ev("cpu", "web1", Alert)]);
        assert_eq!(rules(&out), [("cpu", Alert)]);
    }
}

#[cfg(test)]
mod rollback_tests {
    use super::*;
    use crate::source::MemorySource;

    const S: i64 = 1_000_000_000;
    const NOW: i64 = 1_700_000_000 * S;

    const GOOD: &str = "rule(#{ every: \"10s\" });\nfn check() {\n  let s = query(\"cpu\").field(\"busy\").last().group_by(\"host\").run();\n  for x in s { x.crit(x.value > 90.0); }\n  s\n}\n";
    /// Loads, then fails at every evaluation: `()` in arithmetic.
    const BAD: &str = "rule(#{ every: \"10s\" });\nfn check() {\n  let s = query(\"cpu\").field(\"busy\").last().group_by(\"host\").run();\n  let n = ();\n  n + 1;\n  s\n}\n";

    /// Regression: the service built its rule limits from the time limit alone, so
    /// `max_rule_memory_bytes` reached `check` but not the running alerter (nor a reload).
    #[tokio::test]
    async fn the_configured_memory_budget_bounds_running_rules() {
        let mut f = Fixture::with("  max_rule_memory_bytes = \"2MiB\"");
        assert_eq!(f.svc.limits.max_memory_bytes, 2 << 20);
        f.svc.reload(config(&f.conf), NOW).unwrap();
        assert_eq!(f.svc.limits.max_memory_bytes, 2 << 20);
    }

    /// Regression: every SIGHUP (deploy-config.sh sends one at each deploy) reloaded every
    /// rule as if its file had changed: a failing rule's wk_rules alert recovered falsely,
    /// and the regroup check could close alerts of series lacking a `group_by` tag.
    #[tokio::test]
    async fn a_config_reload_leaves_unchanged_rules_as_they_are_but_for_new_limits() {
        let mut f = Fixture::new();
        f.write(BAD, NOW);
        f.evaluate(NOW);
        assert_eq!(f.wk_rules_level(), Level::Critical);
        let before = f.running();
        let loaded = f.svc.slots[&f.path()].loaded_ns;

        let conf = f.conf.replace(
            "[alerter]\n",
            "[alerter]\n  max_rule_memory_bytes = \"3MiB\"\n",
        );
        f.svc.reload(config(&conf), NOW + 5 * S).unwrap();
        let slot = &f.svc.slots[&f.path()];
        assert!(
            !Arc::ptr_eq(&f.running(), &before),
            "compiled with the new limits"
        );
        assert!(slot.failing.is_some(), "the failure stands");
        assert!(!slot.regroup_check);
        assert_eq!(slot.loaded_ns, loaded);
        assert_eq!(f.wk_rules_level(), Level::Critical, "no false recovery");
    }

    /// Regression: a file refused because another file's rule had its name stayed refused
    /// after that file was deleted (`cp cpu.rhai cpu2.rhai; rm cpu.rhai`).
    #[tokio::test]
    async fn a_file_refused_for_a_taken_name_loads_once_the_other_is_gone() {
        let mut f = Fixture::new();
        f.write(GOOD, NOW);
        f.svc.scanned_once = true;
        let copy = f.path().with_file_name("cpu2.rhai");
        let named = GOOD.replace("every: \"10s\"", "every: \"10s\", name: \"cpu\"");
        std::fs::write(&copy, &named).unwrap();
        f.svc.scan(NOW + S);
        f.svc.scan(NOW + 2 * S);
        let broken = f.svc.slots[&copy].broken.clone().unwrap();
        assert!(broken.contains("already used by"), "{broken}");
        f.evaluate(NOW + 2 * S);
        assert_eq!(
            f.svc.slots[&f.path()].state.instance_count(),
            1,
            "web1 fires"
        );
        let received = f.svc.router.stats().received;
        std::fs::remove_file(f.path()).unwrap();
        for i in 3..6 {
            f.svc.scan(NOW + i * S);
        }
        assert!(!f.svc.slots.contains_key(&f.path()));
        assert!(f.svc.slots[&copy].broken.is_none());
        assert!(f.svc.slots[&copy].rule.is_some());
        // Its alerts carried on: nothing closed, nothing to open again (closed, they would be
        // gone with the state file; the one event routed is wk_rules' "loads again").
        let settings = f.svc.slots[&copy].rule.clone().unwrap().settings().clone();
        let firing = f.svc.slots[&copy]
            .state
            .firing_events(&settings, NOW + 6 * S);
        assert_eq!(firing.len(), 1, "web1 still fires");
        assert_eq!(f.svc.router.stats().received, received + 1);
    }

    /// Regression: a new version that renamed the rule and failed at its first evaluation was
    /// rolled back to the old name, whose alerts had been closed and state deleted: it came
    /// back empty and paged anew.
    #[tokio::test]
    async fn a_renamed_version_that_fails_is_not_rolled_back_to_the_old_name() {
        let mut f = Fixture::new();
        f.write(GOOD, NOW);
        f.evaluate(NOW);
        assert_eq!(f.running().settings().name, "cpu");
        f.write(
            &BAD.replace("every: \"10s\"", "every: \"10s\", name: \"cpu2\""),
            NOW + S,
        );
        f.evaluate(NOW + 10 * S);
        assert_eq!(f.running().settings().name, "cpu2", "not rolled back");
        assert!(f.svc.slots[&f.path()].failing.is_some());
        assert_eq!(f.wk_rules_level(), Level::Critical);
    }

    /// Regression: a rule whose query matched nothing (a misspelled measurement) ran
    /// without a word: no series, so no alert and no NoData.
    #[tokio::test]
    async fn a_rule_that_never_returned_a_series_is_pointed_out() {
        let mut f = Fixture::new();
        let view = |f: &Fixture| f.svc.board().get().rules[&f.path()].clone();
        let t0 = NOW - 200 * S;
        f.write(&GOOD.replace("query(\"cpu\")", "query(\"cpuu\")"), t0);
        for i in 0..NO_SERIES_WARN_AFTER as i64 {
            f.evaluate(t0 + i * 10 * S);
        }
        assert_eq!(view(&f).no_series, None, "not within 2 min of the load");
        f.evaluate(t0 + 120 * S);
        let said = view(&f).no_series.unwrap();
        assert!(said.contains("no series in its 4 evaluations"), "{said}");
        assert_eq!(view(&f).series, Some(0));
        let m = f.svc.self_metrics(NOW);
        assert_eq!(
            m[0].field("series"),
            Some(&wk_core::metric::FieldValue::from(0u64))
        );

        // Fixed: the first series ends it.
        f.write(GOOD, NOW);
        f.evaluate(NOW);
        assert_eq!(view(&f).no_series, None);
        assert_eq!(view(&f).series, Some(1));
    }

    /// Regression: a new `id` template kept the alerts, whose recoveries then went out under
    /// the new ids: the incidents receivers opened under the old ones stayed open.
    #[tokio::test]
    async fn a_new_id_template_closes_the_alerts_under_their_old_ids() {
        let mut f = Fixture::new();
        f.write(GOOD, NOW);
        f.evaluate(NOW);
        let firing = f.svc.slots[&f.path()]
            .state
            .firing_events(f.running().settings(), NOW);
        assert_eq!(firing.len(), 1, "web1 is at 95");
        assert_eq!(firing[0].id, "cpu:host=web1");
        let received = f.svc.router.stats().received;
        f.write(
            &GOOD.replace(
                "every: \"10s\"",
                "every: \"10s\", id: \"{{rule}}-{{host}}\"",
            ),
            NOW + S,
        );
        assert_eq!(f.svc.slots[&f.path()].state.instance_count(), 0);
        assert_eq!(
            f.svc.router.stats().received,
            received + 1,
            "one closing event"
        );
        f.evaluate(NOW + 10 * S);
        let firing = f.svc.slots[&f.path()]
            .state
            .firing_events(f.running().settings(), NOW);
        assert_eq!(firing[0].id, "cpu-web1");
        // A next template whose version fails is not rolled back to the closed ids.
        f.write(
            &BAD.replace("every: \"10s\"", "every: \"10s\", id: \"{{host}}\""),
            NOW + 20 * S,
        );
        f.evaluate(NOW + 20 * S);
        assert_eq!(
            f.running().settings().id_template,
            "{{host}}",
            "not rolled back"
        );
    }

    /// Regression: a config that dropped a notifier running rules name was applied at once;
    /// the rules were then reported as not loading, while their events went nowhere.
    #[tokio::test]
    async fn a_config_lacking_a_running_rules_notifier_is_refused_whole() {
        let mut f = Fixture::new();
        let load = config;
        f.conf += "[[notifiers.log]]\n  name = \"ops\"\n";
        f.svc.reload(load(&f.conf), NOW).unwrap();
        f.write(
            &GOOD.replace("every: \"10s\"", "every: \"10s\", notify: [\"ops\"]"),
            NOW,
        );
        assert!(f.svc.slots[&f.path()].broken.is_none());
        let conf = f.conf.replace("name = \"ops\"", "name = \"ops-mail\"");
        let e = f.svc.reload(load(&conf), NOW + S).unwrap_err();
        assert!(e.contains("cpu.rhai:1:") && e.contains("\"ops\""), "{e}");
        assert!(
            f.svc.router.validate_names(&["ops".into()]).is_ok(),
            "the old notifiers stay"
        );
        assert!(f.svc.slots[&f.path()].broken.is_none());
        // The same rename in the config and in the rule file (one push): taken, and the
        // rule runs its new version (it was refused for good: the running version was
        // checked, and the new file against the old notifiers).
        let renamed = GOOD.replace("every: \"10s\"", "every: \"10s\", notify: [\"ops-mail\"]");
        std::fs::write(f.path(), &renamed).unwrap();
        f.svc.reload(load(&conf), NOW + 2 * S).unwrap();
        assert_eq!(f.running().settings().notify, ["ops-mail"]);
        assert!(f.svc.slots[&f.path()].broken.is_none());
    }

    /// Regression: a rule file that could not be read (not UTF-8, no permission) was only
    /// logged, every scan; nothing raised wk_rules.
    #[tokio::test]
    async fn an_unreadable_rule_file_raises_wk_rules_with_its_position() {
        let mut f = Fixture::new();
        f.write(GOOD, NOW);
        f.svc.scanned_once = true;
        let mut text = GOOD.as_bytes().to_vec();
        text.splice(0..0, b"// 30\xb0C\n".iter().copied());
        std::fs::write(f.path(), &text).unwrap();
        f.svc.scan(NOW + S);
        assert_eq!(
            f.wk_rules_level(),
            Level::Ok,
            "a file caught half-written waits a scan"
        );
        f.svc.scan(NOW + 2 * S);
        assert_eq!(f.wk_rules_level(), Level::Critical);
        let broken = f.svc.slots[&f.path()].broken.clone().unwrap();
        assert!(broken.contains("cpu.rhai:1:6: "), "{broken}");
        assert!(
            f.svc.slots[&f.path()].rule.is_some(),
            "the last good version runs"
        );
        f.write(GOOD, NOW + 3 * S);
        assert_eq!(f.wk_rules_level(), Level::Ok);
    }

    /// The config `text` (as the fixture's file, no environment).
    fn config(text: &str) -> Config {
        crate::config::load_str(Path::new("alerter.conf"), text, &|_: &str| None).unwrap()
    }

    struct Fixture {
        dir: tempfile::TempDir,
        svc: Service,
        conf: String,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture::with("")
        }

        /// With `alerter` added to the `[alerter]` table.
        fn with(alerter: &str) -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let rules = dir.path().join("rules");
            std::fs::create_dir(&rules).unwrap();
            let conf = format!(
                "[alerter]\n  rules_dir = {:?}\n  state_dir = {:?}\n{alerter}\n\
                 [stream]\n  listen = \"127.0.0.1:0\"\n  token = \"s3cret-token-for-tests\"\n",
                rules.display().to_string(),
                dir.path().join("state").display().to_string()
            );
            let cfg =
                crate::config::load_str(&dir.path().join("alerter.conf"), &conf, &|_: &str| None)
                    .unwrap();
            let text = format!("cpu,host=web1 busy=95 {NOW}\n");
            let src: Arc<dyn QuerySource> =
                Arc::new(MemorySource::from_line_protocol(&text, 0).unwrap());
            let svc = Service::new(cfg, src);
            Fixture { dir, svc, conf }
        }

        fn path(&self) -> PathBuf {
            self.dir.path().join("rules").join("cpu.rhai")
        }

        fn write(&mut self, text: &str, now: i64) {
            std::fs::write(self.path(), text).unwrap();
            self.svc.scan(now);
        }

        /// One evaluation of the running version, as the scheduler does it.
        fn evaluate(&mut self, now: i64) {
            let path = self.path();
            let rule = self.svc.slots[&path].rule.clone().unwrap();
            let result = rule.evaluate(&self.svc.source, now);
            self.svc.finish(Evaluated {
                path,
                rule,
                result,
                now,
                outcome: Outcome::Finished,
                elapsed: Duration::ZERO,
            });
        }

        fn running(&self) -> Arc<Rule> {
            self.svc.slots[&self.path()].rule.clone().unwrap()
        }

        fn wk_rules_level(&self) -> Level {
            self.svc
                .meta
                .instances()
                .into_iter()
                .find(|i| i.tags.get("file").is_some_and(|f| f == "cpu.rhai"))
                .map_or(Level::Ok, |i| i.level)
        }
    }

    /// Regression: an edit that failed only at run time replaced the working version, and with
    /// the default `error: "keep"` nobody was told.
    #[tokio::test]
    async fn a_new_version_failing_at_run_time_is_rolled_back_and_raises_wk_rules() {
        let mut f = Fixture::new();
        f.write(GOOD, NOW);
        f.evaluate(NOW);
        assert_eq!(f.wk_rules_level(), Level::Ok);
        let good = f.running();

        f.write(BAD, NOW + 10 * S);
        assert!(!Arc::ptr_eq(&f.running(), &good), "the new version runs");
        f.evaluate(NOW + 10 * S);
        assert!(
            Arc::ptr_eq(&f.running(), &good),
            "the failing version was not rolled back"
        );
        assert_eq!(f.wk_rules_level(), Level::Critical);
        let problem = f.svc.slots[&f.path()].rolled_back.clone().unwrap();
        assert!(problem.contains("cpu.rhai:5:5: "), "{problem}");

        // The rolled-back version keeps evaluating; the alert stays until the file changes.
        f.evaluate(NOW + 20 * S);
        assert_eq!(f.wk_rules_level(), Level::Critical);
        f.write(&GOOD.replace("90.0", "91.0"), NOW + 30 * S);
        f.evaluate(NOW + 30 * S);
        assert_eq!(f.wk_rules_level(), Level::Ok);

        let counts = &f.svc.eval_counts()["cpu"];
        assert_eq!(counts.evaluations, 4);
        assert_eq!(counts.failures.get(&FailureKind::Script), Some(&1));
        let m = f.svc.self_metrics(NOW);
        assert_eq!(&*m[0].name, "wk_alerter");
        assert_eq!(
            m[0].field("evaluation_failures_script"),
            Some(&wk_core::metric::FieldValue::from(1u64))
        );
    }

    /// A rule that never evaluated cleanly has nothing to roll back to: it keeps running and
    /// wk_rules says why, until an evaluation succeeds.
    #[tokio::test]
    async fn a_first_version_failing_at_run_time_raises_wk_rules_until_it_evaluates() {
        let mut f = Fixture::new();
        f.write(BAD, NOW);
        f.evaluate(NOW);
        assert_eq!(f.wk_rules_level(), Level::Critical);
        let failing = f.svc.slots[&f.path()].failing.clone().unwrap();
        assert!(failing.contains("cpu.rhai:5:5: "), "{failing}");
        f.write(GOOD, NOW + 10 * S);
        assert_eq!(f.wk_rules_level(), Level::Ok);
    }
}
