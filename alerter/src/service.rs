//! The running alerter: loads every rule of the rules directory, evaluates each on its own
//! schedule (on tokio's blocking pool, a bounded number at once), feeds the results to the
//! rule's state machine, persists the state and routes the events.
//!
//! Hot reload (the rules directory is a git checkout): the directory is re-read every
//! `reload_interval`; a changed file is recompiled and replaces the running version only if it
//! loads; otherwise the last good version keeps running and the broken file raises an alert of
//! the built-in rule `wk_rules` (recovered when the file is fixed). A deleted file stops its
//! rule.
//!
//! Evaluation failures are typed ([`FailureKind`]): a source failure follows the rule's `error`
//! policy; a failure of the rule itself (script error, time limit, bad return value) raises
//! `wk_rules` naming file:line:column, and a newly loaded version that fails before it has
//! evaluated cleanly once is rolled back to the last version that did. Every evaluation and
//! failure is counted per rule ([`Service::self_metrics`], measurement `wk_alerter`).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, error, info, warn};

use crate::actions::engine::{Engine, RuleEntry};
use crate::clock::now_ns;
use crate::config::Config;
use crate::model::{
    AlertEvent, Condition, CycleResult, EvalFailure, FailureKind, Level, LevelConditions,
    Observation, Policy, RuleSettings, Value,
};
use crate::notify::router::Router;
use crate::rules::{Limits, Rule, load_rule_with};
use crate::source::QuerySource;
use crate::state::RuleState;

/// Name of the built-in rule that reports rule files that do not load.
pub const RULES_RULE: &str = "wk_rules";

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
    /// Why the current content does not load (or was rolled back), if so.
    broken: Option<String>,
    /// The running version's last failure of its own (cleared by a clean evaluation).
    failing: Option<String>,
    state: RuleState,
    next_due: i64,
    running: bool,
}

/// The result of one evaluation, sent back from the blocking pool.
struct Evaluated {
    path: PathBuf,
    /// The version evaluated (a reload may have replaced it meanwhile).
    rule: Arc<Rule>,
    result: CycleResult,
    now: i64,
}

/// Evaluations and failures of one rule since start (Prometheus'
/// rule_evaluations_total / rule_evaluation_failures_total).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvalCounts {
    pub evaluations: u64,
    /// Failures by kind.
    pub failures: BTreeMap<FailureKind, u64>,
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
    meta: RuleState,
    limits: Limits,
    counts: BTreeMap<String, EvalCounts>,
}

impl Service {
    /// A service over `config`, querying `source`. Must be created inside a tokio runtime
    /// (the router starts its notifier tasks).
    pub fn new(config: Config, source: Arc<dyn QuerySource>) -> Service {
        let router = Router::start(config.notify.clone());
        let limits = Limits::from_settings(&config.settings);
        let meta = RuleState::load(&config.settings.state_dir, RULES_RULE);
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
            meta,
            limits,
            counts: BTreeMap::new(),
        }
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
            .map(|(rule, c)| {
                let mut m = wk_core::metric::Metric::new("wk_alerter", now)
                    .with_tag("rule", rule.as_str())
                    .with_field("evaluations", c.evaluations)
                    .with_field("evaluation_failures", c.failures.values().sum::<u64>());
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
            })
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
            message_template: "rule file {{file}}: {{problem}}".into(),
            no_data: Policy::Ok,
            notify: self.config.settings.rule_errors_notify.clone(),
            expire_after: Duration::ZERO,
            ..RuleSettings::default()
        }
    }

    /// Re-reads the rules directory: loads new and changed files, drops deleted ones, and
    /// raises or clears the alert about broken files.
    pub fn scan(&mut self, now: i64) {
        let dir = self.config.settings.rules_dir.clone();
        let mut seen = BTreeSet::new();
        match crate::rules::rule_files(&dir) {
            Ok(paths) => {
                for path in paths {
                    seen.insert(path.clone());
                    self.load_file(&path, now);
                }
            }
            Err(e) => error!("cannot read the rules directory {}: {e}", dir.display()),
        }
        let gone: Vec<PathBuf> = self
            .slots
            .keys()
            .filter(|p| !seen.contains(*p))
            .cloned()
            .collect();
        for path in gone {
            info!(file = %path.display(), "rule file removed; its rule stops");
            self.slots.remove(&path);
        }
        self.sync_rules();
        self.report_broken(now);
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

    fn load_file(&mut self, path: &Path, now: i64) {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                warn!(file = %path.display(), "cannot read rule file: {e}");
                return;
            }
        };
        if self.slots.get(path).is_some_and(|s| s.text == text) {
            return;
        }
        let loaded = load_rule_with(path, &self.limits)
            .map_err(|e| e.to_string())
            .and_then(|rule| {
                self.router
                    .validate_names(&rule.settings().notify)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                self.config
                    .actions
                    .validate_rule(rule.settings())
                    .map_err(|((l, c), e)| format!("{}:{l}:{c}: {e}", path.display()))?;
                Ok(rule)
            });
        let slot = self.slots.entry(path.to_owned()).or_insert_with(|| Slot {
            rule: None,
            good: None,
            text: String::new(),
            broken: None,
            failing: None,
            state: RuleState::new(),
            next_due: 0,
            running: false,
        });
        slot.text = text;
        match loaded {
            Ok(rule) => {
                let name = rule.settings().name.clone();
                let every = rule.settings().every;
                if slot.rule.is_none() {
                    slot.state = RuleState::load(&self.config.settings.state_dir, &name);
                    info!(rule = %name, every = ?every, restored = slot.state.instance_count(), "rule loaded");
                } else {
                    info!(rule = %name, "rule reloaded");
                }
                sync_inhibitors(&self.router, rule.settings(), &slot.state);
                slot.rule = Some(Arc::new(rule));
                slot.broken = None;
                slot.failing = None;
                slot.next_due = next_tick(now, every);
            }
            Err(msg) => {
                if slot.rule.is_some() {
                    error!("{msg} (the last good version keeps running)");
                    slot.broken = Some(format!(
                        "does not load, the last good version keeps running: {msg}"
                    ));
                } else {
                    error!("{msg}");
                    slot.broken = Some(format!("does not load: {msg}"));
                }
            }
        }
    }

    /// Feeds the `wk_rules` state machine one observation per rule file.
    fn report_broken(&mut self, now: i64) {
        let observations = self
            .slots
            .iter()
            .map(|(path, slot)| {
                let file = path
                    .file_name()
                    .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
                let mut o = Observation {
                    measurement: "wk_rules".into(),
                    time: now,
                    ..Default::default()
                };
                o.tags.insert("file".into(), file);
                let problem = slot.broken.clone().or_else(|| slot.failing.clone());
                o.levels = LevelConditions {
                    crit: Some(Condition {
                        matched: problem.is_some(),
                        reset: None,
                    }),
                    ..Default::default()
                };
                o.fields.insert(
                    "problem".into(),
                    Value::Str(problem.unwrap_or_else(|| "loads and evaluates again".into())),
                );
                o
            })
            .collect();
        let settings = self.meta_settings();
        let events = self
            .meta
            .apply(&settings, &CycleResult::Observed(observations), now);
        self.persist(RULES_RULE, &self.meta);
        self.route(events);
    }

    fn persist(&self, name: &str, state: &RuleState) {
        if let Err(e) = state.save(&self.config.settings.state_dir, name) {
            error!(rule = %name, "cannot save alert state: {e}");
        }
    }

    fn route(&self, events: Vec<AlertEvent>) {
        for e in &events {
            info!(rule = %e.rule, id = %e.id, level = %e.level, kind = ?e.kind, "{}", e.message);
        }
        if !events.is_empty() {
            self.engine.handle(&events);
            self.router.dispatch(events);
        }
    }

    /// Starts the evaluations that are due; results come back on `tx`.
    fn start_due(
        &mut self,
        now: i64,
        tx: &mpsc::UnboundedSender<Evaluated>,
        permits: &Arc<Semaphore>,
    ) {
        for (path, slot) in self.slots.iter_mut() {
            let Some(rule) = slot.rule.clone() else {
                continue;
            };
            if slot.running || now < slot.next_due {
                continue;
            }
            let every = rule.settings().every;
            let due = slot.next_due;
            slot.next_due = next_tick(now, every);
            if now - due > every.as_nanos() as i64 {
                warn!(rule = %rule.settings().name, "evaluation is late by more than one interval; skipped ticks");
            }
            slot.running = true;
            let (source, tx, path, permits) = (
                self.source.clone(),
                tx.clone(),
                path.clone(),
                permits.clone(),
            );
            tokio::spawn(async move {
                let Ok(_permit) = permits.acquire_owned().await else {
                    return;
                };
                let eval_now = now_ns();
                let evaluated = rule.clone();
                let joined =
                    tokio::task::spawn_blocking(move || evaluated.evaluate(&source, eval_now))
                        .await;
                let result = joined.unwrap_or_else(|e| {
                    CycleResult::Failed(EvalFailure::new(
                        FailureKind::Script,
                        format!("{}: rule evaluation crashed: {e}", rule.file()),
                    ))
                });
                let _ = tx.send(Evaluated {
                    path,
                    rule,
                    result,
                    now: eval_now,
                });
            });
        }
    }

    fn finish(&mut self, done: Evaluated) {
        let Some(slot) = self.slots.get_mut(&done.path) else {
            return;
        };
        slot.running = false;
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
                if f.is_rule_fault() {
                    // The rule's own fault is not news about the data: the instances keep
                    // their state and wk_rules tells the rule's author.
                    if current {
                        self.rule_failed(&done.path, f, done.now);
                    }
                    return;
                }
            }
            CycleResult::Observed(_) => {
                if current {
                    slot.good = Some(rule.clone());
                    if slot.failing.take().is_some() {
                        info!(rule = %settings.name, "evaluates cleanly again");
                        self.report_broken(done.now);
                    }
                }
            }
        }
        let Some(slot) = self.slots.get_mut(&done.path) else {
            return;
        };
        let events = slot.state.apply(settings, &done.result, done.now);
        sync_inhibitors(&self.router, settings, &slot.state);
        debug!(rule = %settings.name, events = events.len(), "evaluated");
        let state = slot.state.clone();
        self.persist(&settings.name, &state);
        self.route(events);
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
                slot.broken = Some(format!(
                    "fails at evaluation, rolled back to the last version that evaluated \
                     cleanly: {f}"
                ));
                true
            }
            _ => {
                slot.failing = Some(format!("fails at evaluation: {f}"));
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
    pub fn reload(&mut self, config: Config, now: i64) {
        if config.sources != self.config.sources {
            warn!("[[sources.influxdb]] changed: restart the alerter to use the new source");
        }
        self.router.replace(config.notify.clone());
        self.engine.set_config(config.actions.clone());
        self.limits = Limits::from_settings(&config.settings);
        self.config = config;
        // Re-validate every rule against the new notifier names.
        for slot in self.slots.values_mut() {
            slot.text.clear();
        }
        self.scan(now);
    }

    /// Runs until `shutdown` completes. `reload` delivers a new config (SIGHUP), or `None`
    /// for a rescan of the rules only.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
        mut reload: mpsc::UnboundedReceiver<Option<Box<Config>>>,
    ) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let permits = Arc::new(Semaphore::new(self.config.settings.max_concurrent_evals));
        let reload_every = self.config.settings.reload_interval;
        self.scan(now_ns());
        // Instances restored from disk that are still firing inhibit from the start.
        let mut next_scan = tokio::time::Instant::now() + reload_every;
        tokio::pin!(shutdown);
        loop {
            let now = now_ns();
            self.start_due(now, &tx, &permits);
            let next_due = self
                .slots
                .values()
                .filter(|s| !s.running && s.rule.is_some())
                .map(|s| s.next_due)
                .min();
            let wait = next_due.map_or(reload_every, |d| {
                Duration::from_nanos((d - now).max(0) as u64)
            });
            let wake = (tokio::time::Instant::now() + wait).min(next_scan);
            tokio::select! {
                _ = &mut shutdown => break,
                Some(done) = rx.recv() => self.finish(done),
                Some(new) = reload.recv() => match new {
                    Some(cfg) => self.reload(*cfg, now_ns()),
                    None => self.scan(now_ns()),
                },
                _ = tokio::time::sleep_until(wake) => {
                    if tokio::time::Instant::now() >= next_scan {
                        self.scan(now_ns());
                        next_scan = tokio::time::Instant::now() + reload_every;
                    }
                }
            }
        }
        self.router.shutdown(Duration::from_secs(5)).await;
        info!("alerter stopped");
    }

    /// Evaluates every loaded rule once now and returns the observations (no state, no
    /// notification): `wk-alerter check`.
    pub fn evaluate_once(&self) -> Vec<(String, CycleResult)> {
        let now = now_ns();
        self.slots
            .values()
            .filter_map(|s| s.rule.as_ref())
            .map(|r| (r.settings().name.clone(), r.evaluate(&self.source, now)))
            .collect()
    }
}

/// Tells the router which instances of an inhibiting rule are non-OK (events alone do not
/// end an inhibitor whose rule sends no recoveries, nor announce state restored from disk).
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

/// Rule files of a directory that do not load, as `file:line:col: message` lines.
pub fn check_dir(dir: &Path, limits: &Limits) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![format!("{}: cannot read directory", dir.display())];
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
        .collect();
    paths.sort();
    for p in paths {
        if let Err(e) = load_rule_with(&p, limits) {
            out.push(e.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::MemorySource;

    const S: i64 = 1_000_000_000;
    const NOW: i64 = 1_700_000_000 * S;

    const GOOD: &str = "rule(#{ every: \"10s\" });\nfn check() {\n  let s = query(\"cpu\").field(\"busy\").last().group_by(\"host\").run();\n  for x in s { x.crit(x.value > 90.0); }\n  s\n}\n";
    /// Loads, then fails at every evaluation: `()` in arithmetic.
    const BAD: &str = "rule(#{ every: \"10s\" });\nfn check() {\n  let s = query(\"cpu\").field(\"busy\").last().group_by(\"host\").run();\n  let n = ();\n  n + 1;\n  s\n}\n";

    struct Fixture {
        dir: tempfile::TempDir,
        svc: Service,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let rules = dir.path().join("rules");
            std::fs::create_dir(&rules).unwrap();
            let conf = format!(
                "[alerter]\n  rules_dir = {:?}\n  state_dir = {:?}\n\
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
            Fixture { dir, svc }
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
        let problem = f.svc.slots[&f.path()].broken.clone().unwrap();
        assert!(problem.contains("cpu.rhai:5:5: "), "{problem}");
        assert!(problem.contains("rolled back"), "{problem}");

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
