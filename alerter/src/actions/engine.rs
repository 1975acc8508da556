//! The action engine: consumes alert events beside the notifiers and heals.
//!
//! Per firing alert instance whose rule has `actions`, one task:
//!
//! ```text
//! alert event (level ≥ on) ──> wait until the fault has held `after` (fault = first evaluation
//!   that saw it) ──> still firing? silenced / inhibited (host down)? ──> per action
//!   (diagnoses first, once per episode): render
//!   the arguments from the tags and check their types (refused → reported, never run) →
//!   where (local / ssh / refused) → dry run? → guard rails (busy, cooldown, budget; a spent
//!   budget pages people once and waits for its window to free up) → run (timeout kills the process group) ──> settle
//!   ──> verify (probe and/or the rule's query) ──> ONE report through the rule's notifiers,
//!   the audit log, one `wk_actions` point per result to InfluxDB and one event per result to
//!   the `record` notifiers (the records are never muted by silences or inhibition)
//! ```
//!
//! Not recovered → after the cooldown the task tries again (within the budget). A recovery
//! event ends the task at its next wait (a running action is never cancelled midway).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info, warn};

use super::audit::Audit;
use super::guard::{Decision, Guard, InFlight};
use super::record::Recorder;
use super::rule::{ActionRule, Verify};
use super::{ActionResult, ActionsConfig, Ctx};
use crate::model::{AlertEvent, CycleResult, EventKind, Level, RuleSettings, Value};
use crate::notify::Router;
use crate::source::QuerySource;
use crate::template::format_duration;

/// What verifying by query needs of a rule: one evaluation now (implemented by
/// `crate::rules::Rule`; a trait here so that actions do not depend on the rule engine).
pub trait Recheck: Send + Sync {
    /// Evaluates the rule against `source` at `now_ns`.
    fn evaluate(&self, source: &Arc<dyn QuerySource>, now_ns: i64) -> CycleResult;
}

/// A rule as the engine knows it: its settings (actions, notify) and, to verify by query,
/// the rule itself.
#[derive(Clone)]
pub struct RuleEntry {
    pub settings: RuleSettings,
    pub rule: Option<Arc<dyn Recheck>>,
}

/// The engine. Cheap to clone; create it inside a tokio runtime.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    config: RwLock<ActionsConfig>,
    state_dir: PathBuf,
    router: Router,
    source: Option<Arc<dyn QuerySource>>,
    guard: Mutex<Guard>,
    audit: RwLock<Arc<Audit>>,
    /// `wk_actions` points straight to InfluxDB (never muted).
    recorder: RwLock<Option<Recorder>>,
    rules: RwLock<HashMap<String, RuleEntry>>,
    /// Firing instances with a task: the latest event, `None` once recovered.
    tasks: Mutex<HashMap<(String, String), Firing>>,
    /// What people were told of the instances the engine acts on (see [`Told`]), with the
    /// episode it belongs to: a late report of an episode that ended cannot touch the next.
    told: Mutex<HashMap<(String, String), (u64, Told)>>,
    /// The last episode number given out (one per task).
    episodes: std::sync::atomic::AtomicU64,
    /// The last results (tests, diagnostics), newest last, bounded.
    results: Mutex<Vec<ActionResult>>,
    clock: Clock,
}

/// The latest event of a firing instance, `None` once it recovered.
type Firing = watch::Sender<Option<AlertEvent>>;

/// One incident, one message: while the engine acts on an instance at once, its alert is
/// held back from the notifiers and the action report says it all (what was wrong, what was
/// done, whether it recovered, how long it took); a recovery the report already announced
/// is not sent again.
enum Told {
    /// The engine acts on the instance and holds nothing: its messages go out as they come.
    Plain,
    /// The alert was not sent: the report will carry it. Released as it was if no report
    /// comes out of an attempt (busy target, cooldown, spent budget).
    Held(Box<AlertEvent>),
    /// Held, and the recovery came while an attempt was under way. If the report then says
    /// "not recovered", the recovery follows it (the last word is the data's); if no report
    /// comes, neither was ever news.
    Recovering(Box<AlertEvent>),
    /// A report said "recovered": the state machine's recovery would repeat it.
    Recovered,
    /// The episode is dormant at this level (nothing left to do): its messages go out as
    /// they come, but a higher level wakes it, and its report will carry that alert.
    Dormant(Level),
    /// A rise out of a dormant episode, held for the report as `Held` is. The alert was
    /// announced at its earlier level, so a recovery before the report is news: it goes out
    /// (and the rise with it is dropped).
    Rose(Box<AlertEvent>),
}

/// Wall-clock ns that advances with tokio's clock (so paused-time tests move it too).
struct Clock {
    base_ns: i64,
    base: tokio::time::Instant,
}

impl Clock {
    fn now(&self) -> i64 {
        self.base_ns + self.base.elapsed().as_nanos() as i64
    }
}

/// What a dormant episode would do (see `Engine::dormant_snapshot`): its actions, whether
/// actions are enabled and a dry run, and where its host's actions run.
type DormantView = Option<(Vec<ActionRule>, bool, bool, Result<String, String>)>;

/// How often a dormant episode looks at the rule's actions again (a reload may change them).
const DORMANT_RECHECK: Duration = Duration::from_secs(10);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

fn audit_path(c: &ActionsConfig, state_dir: &std::path::Path) -> PathBuf {
    if c.audit_log.as_os_str().is_empty() {
        state_dir.join("actions.log")
    } else {
        c.audit_log.clone()
    }
}

const KEEP_RESULTS: usize = 200;

fn recorder(c: &ActionsConfig) -> Option<Recorder> {
    let t = c.record_target.clone()?;
    Recorder::new(t)
        .inspect_err(|e| error!("wk_actions will not be recorded in InfluxDB: {e}"))
        .ok()
}

impl Engine {
    /// Loads the guard-rail state from `state_dir`; actions that were in flight when the
    /// alerter stopped are reported as interrupted (they count as an attempt).
    pub fn new(
        config: ActionsConfig,
        state_dir: PathBuf,
        router: Router,
        source: Option<Arc<dyn QuerySource>>,
    ) -> Engine {
        let audit = Audit::new(
            Some(audit_path(&config, &state_dir)),
            config.audit_max_bytes,
            config.audit_keep,
        );
        let guard = Guard::load(&state_dir);
        let recorder = recorder(&config);
        // What the last run did shows on the status page and the API after a restart.
        let results = audit.recent(KEEP_RESULTS);
        let engine = Engine {
            inner: Arc::new(Inner {
                config: RwLock::new(config),
                state_dir,
                router,
                source,
                guard: Mutex::new(guard),
                audit: RwLock::new(Arc::new(audit)),
                recorder: RwLock::new(recorder),
                rules: RwLock::new(HashMap::new()),
                tasks: Mutex::new(HashMap::new()),
                told: Mutex::new(HashMap::new()),
                episodes: std::sync::atomic::AtomicU64::new(0),
                results: Mutex::new(results),
                clock: Clock {
                    base_ns: crate::clock::now_ns(),
                    base: tokio::time::Instant::now(),
                },
            }),
        };
        engine.report_interrupted();
        engine
    }

    /// Swaps in a new `[actions]` config (reload).
    pub fn set_config(&self, config: ActionsConfig) {
        let audit = Audit::new(
            Some(audit_path(&config, &self.inner.state_dir)),
            config.audit_max_bytes,
            config.audit_keep,
        );
        *write(&self.inner.audit) = Arc::new(audit);
        *write(&self.inner.recorder) = recorder(&config);
        *write(&self.inner.config) = config;
    }

    /// Tells the engine the loaded rules (at load and every reload).
    pub fn set_rules(&self, rules: impl IntoIterator<Item = RuleEntry>) {
        let map = rules
            .into_iter()
            .map(|r| (r.settings.name.clone(), r))
            .collect();
        *write(&self.inner.rules) = map;
    }

    /// The last action results, oldest first.
    pub fn results(&self) -> Vec<ActionResult> {
        lock(&self.inner.results).clone()
    }

    /// The guard-rail state (tests).
    pub fn guard(&self) -> Guard {
        lock(&self.inner.guard).clone()
    }

    /// Hands the engine a batch of events (after the state machine, before the router).
    /// Says, per event, whether the engine owns its notification: an alert it acts on at
    /// once (its report will say it), a repeat of it, or a recovery already announced by a
    /// report. The router must not send those.
    pub fn handle(&self, events: &[AlertEvent]) -> Vec<bool> {
        // Disabled actions start nothing (`actions_for` is empty), but running episodes still
        // hear of recoveries: re-enabled before their next attempt, they would act on a
        // fault that is gone.
        events.iter().map(|e| self.handle_one(e, true)).collect()
    }

    /// Resumes the actions of alerts restored firing after a restart (people were told
    /// before the restart: nothing is held back).
    pub fn resume(&self, events: &[AlertEvent]) {
        if self.inner.config.read().map(|c| c.enabled).unwrap_or(true) {
            for e in events {
                self.handle_one(e, false);
            }
        }
    }

    fn handle_one(&self, e: &AlertEvent, hold: bool) -> bool {
        let key = (e.rule.clone(), e.id.clone());
        // Flapping at a level is still the fault (its later events are suppressed: a task
        // that ended on it would never act again).
        let firing =
            matches!(e.kind, EventKind::Alert | EventKind::Flapping) && e.level > Level::Ok;
        let mut tasks = lock(&self.inner.tasks);
        if let Some(tx) = tasks.get(&key) {
            if tx.is_closed() {
                tasks.remove(&key);
            } else {
                tx.send_replace(firing.then(|| e.clone()));
                if !firing {
                    tasks.remove(&key);
                }
                return self.owned(&key, e, firing);
            }
        }
        if !firing {
            return self.owned(&key, e, false);
        }
        let actions = self.actions_for(e);
        if actions.is_empty() {
            lock(&self.inner.told).remove(&key);
            return false;
        }
        let now = self.now();
        let fault_ns = fault_time(e);
        let after = actions.iter().map(|a| a.after).max().unwrap_or_default();
        // Hold the alert only when the engine acts on it now: an `after` wait is the
        // operator asking for time before acting, and people hear of the fault meanwhile.
        let held = hold && fault_ns + after.as_nanos() as i64 <= e.time.max(now);
        let episode = 1 + self
            .inner
            .episodes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let told = if held {
            Told::Held(Box::new(e.clone()))
        } else {
            Told::Plain
        };
        lock(&self.inner.told).insert(key.clone(), (episode, told));
        let (tx, rx) = watch::channel(Some(e.clone()));
        tasks.insert(key, tx);
        let engine = self.clone();
        let ep = Episode {
            number: episode,
            fault_ns,
            detected_ns: now,
        };
        tokio::spawn(async move { engine.instance(rx, actions, ep).await });
        held
    }

    /// What a dormant episode compares to see a reload that matters to it: the rule's actions
    /// at the level it went dormant at, whether actions are on or a dry run, and where its
    /// host's actions run (an ssh entry added for it). Other config changes wake nothing.
    fn dormant_snapshot(&self, e: &AlertEvent, level: Level) -> DormantView {
        let actions = read(&self.inner.rules)
            .get(&e.rule)
            .map_or_else(Vec::new, |r| {
                r.settings
                    .actions
                    .iter()
                    .filter(|a| level >= a.on)
                    .cloned()
                    .collect()
            });
        let cfg = read(&self.inner.config);
        let host = cfg
            .resolve(e.tags.get("host").map(String::as_str))
            .map(|h| h.describe());
        Some((actions, cfg.enabled, cfg.dry_run, host))
    }

    /// Whether the engine hears when `rule`'s alerts end: not with `recoveries = false`
    /// (the state machine sends no recovery then), nor for a rule no longer loaded.
    fn hears_recoveries(&self, rule: &str) -> bool {
        read(&self.inner.rules)
            .get(rule)
            .is_some_and(|r| r.settings.recoveries)
    }

    /// The actions the loaded rule of `e` takes at `e`'s level; none when actions are
    /// disabled or the rule is gone (read again before each attempt: a reload that disables
    /// actions, removes them or turns on a dry run applies to episodes already running).
    fn actions_for(&self, e: &AlertEvent) -> Vec<ActionRule> {
        if !read(&self.inner.config).enabled {
            return Vec::new();
        }
        read(&self.inner.rules)
            .get(&e.rule)
            .map_or_else(Vec::new, |r| {
                r.settings
                    .actions
                    .iter()
                    .filter(|a| e.level >= a.on)
                    .cloned()
                    .collect()
            })
    }

    /// Whether the notification of `e`, for an instance the engine knows, is the engine's.
    fn owned(&self, key: &(String, String), e: &AlertEvent, firing: bool) -> bool {
        let mut told = lock(&self.inner.told);
        let Some((_, now)) = told.get_mut(key) else {
            return false;
        };
        // Flapping is news of its own, whatever was held or announced; and a level change
        // is no repeat: the report speaks of the level it started with.
        let changed = match &*now {
            Told::Held(h) | Told::Rose(h) => h.level != e.level,
            _ => false,
        };
        if firing && (e.kind == EventKind::Flapping || changed) {
            if !matches!(now, Told::Dormant(_)) {
                *now = Told::Plain;
            }
            return false;
        }
        match now {
            Told::Plain => {
                if !firing {
                    told.remove(key);
                }
                false
            }
            // A rise wakes the dormant episode: its report carries the alert. A drop lowers
            // the level a rise is measured from (as the task does).
            Told::Dormant(l) if firing && e.level > *l => {
                *now = Told::Rose(Box::new(e.clone()));
                true
            }
            Told::Dormant(l) if firing => {
                *l = (*l).min(e.level);
                false
            }
            Told::Rose(_) if firing => true,
            Told::Rose(_) => {
                told.remove(key);
                false
            }
            Told::Dormant(_) => {
                if !firing {
                    told.remove(key);
                }
                false
            }
            // A repeat while the report is being prepared: the report says it.
            Told::Held(_) if firing => true,
            // Recovered before any report: never announced, so its recovery is not either,
            // unless a report comes after all (see `Told::Recovering`). Data that stops is
            // news of its own (NoData) and goes out.
            Told::Held(_) if e.kind == EventKind::Recovery => {
                *now = Told::Recovering(Box::new(e.clone()));
                true
            }
            Told::Held(_) => {
                told.remove(key);
                false
            }
            Told::Recovering(_) => !firing,
            // The report said "recovered": the recovery is no news, nor is the series going
            // away (the restarted process has a new pid, the old one's series stops). Still
            // firing (a repeat, a level change) is news, and a new attempt.
            Told::Recovered => {
                told.remove(key);
                !firing
            }
        }
    }

    /// Marks the episode dormant at `level` (see [`Told::Dormant`]), or, with `None`, awake
    /// again (a reload woke it: nothing is held).
    fn mark_dormant(&self, rule: &str, id: &str, episode: u64, level: Option<Level>) {
        let key = (rule.to_owned(), id.to_owned());
        let mut told = lock(&self.inner.told);
        if let Some((n, now)) = told.get_mut(&key)
            && *n == episode
        {
            match (&now, level) {
                (Told::Plain, Some(l)) => *now = Told::Dormant(l),
                (Told::Dormant(_), None) => *now = Told::Plain,
                _ => {}
            }
        }
    }

    /// The alert fires on after a report that said "recovered": held again for the next
    /// report (released as it is if none comes), so that it is told either way and a
    /// recovery during the next attempt is handled as for the first.
    fn hold_again(&self, e: &AlertEvent, episode: u64) {
        let key = (e.rule.clone(), e.id.clone());
        let mut told = lock(&self.inner.told);
        if told.get(&key).is_none_or(|(n, _)| *n == episode) {
            told.insert(key, (episode, Told::Held(Box::new(e.clone()))));
        }
    }

    /// Sends an alert held back for a report that did not come out of an attempt (one that
    /// recovered meanwhile was never news: dropped with its recovery).
    fn release(&self, rule: &str, id: &str, episode: u64) {
        let key = (rule.to_owned(), id.to_owned());
        let held = {
            let mut told = lock(&self.inner.told);
            match told.get(&key) {
                Some((n, Told::Held(_) | Told::Rose(_) | Told::Recovering(_))) if *n == episode => {
                    told.insert(key, (episode, Told::Plain))
                }
                _ => None,
            }
        };
        if let Some((_, Told::Held(e) | Told::Rose(e))) = held {
            info!(rule = %e.rule, id = %e.id, "no action report this time: the alert is sent as it is");
            self.inner.router.dispatch(vec![*e]);
        }
    }

    /// An instance that recovered before any report: nothing about it was told.
    fn forget(&self, rule: &str, id: &str, episode: u64) {
        let key = (rule.to_owned(), id.to_owned());
        let mut told = lock(&self.inner.told);
        if matches!(told.get(&key), Some((n, Told::Recovering(_) | Told::Plain | Told::Dormant(_))) if *n == episode)
        {
            told.remove(&key);
        }
    }

    fn now(&self) -> i64 {
        self.inner.clock.now()
    }

    /// Sleeps until `deadline_ns`, or until the instance's level rises above `above` (when
    /// given; lowered to any lower level seen meanwhile, so that a drop and a rise back is a
    /// rise); false when the instance recovered meanwhile.
    async fn wait(
        &self,
        rx: &mut watch::Receiver<Option<AlertEvent>>,
        deadline_ns: i64,
        above: &mut Option<Level>,
    ) -> bool {
        loop {
            match &*rx.borrow() {
                None => return false,
                Some(e) => match above {
                    Some(l) if e.level > *l => return true,
                    Some(l) if e.level < *l => *l = e.level,
                    _ => {}
                },
            }
            let left = deadline_ns - self.now();
            if left <= 0 {
                return true;
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return false },
                _ = tokio::time::sleep(Duration::from_nanos(left as u64)) => {}
            }
        }
    }

    /// The life of one firing instance.
    async fn instance(
        self,
        mut rx: watch::Receiver<Option<AlertEvent>>,
        mut actions: Vec<ActionRule>,
        ep: Episode,
    ) {
        let Some(first) = rx.borrow().clone() else {
            return;
        };
        let after = actions.iter().map(|a| a.after).max().unwrap_or_default();
        let mut due = ep.fault_ns + after.as_nanos() as i64;
        // Actions done with for this episode (by index in `actions`): diagnoses, dry runs,
        // refusals, nothing to do. Only repairs that ran are tried again, and those that had
        // nothing to do look again after an attempt in which another repair ran (a squatter
        // may have taken the port meanwhile; not at every try while the others wait).
        let mut finished = std::collections::HashSet::new();
        let mut nothing = std::collections::HashSet::new();
        // Repairs verified as recovered while another repair of the attempt waits: not run
        // again for it.
        let mut verified_ok = std::collections::HashSet::new();
        // The last attempt's repairs were verified as recovered: the task watches for the
        // alert to end (the level then, and when the repairs started).
        let mut watching: Option<(Level, i64)> = None;
        // Nothing more to do at this level (diagnoses done; repairs refused, with nothing to
        // do, or verified while the rule's data no longer shows the fault): the episode lasts
        // until the alert ends or its level rises, so that a repeat of the alert is not a new
        // episode that runs everything again. Only for rules whose recoveries the engine
        // hears (`recoveries = false` sends none: such an episode ends as before).
        let mut dormant: Option<Level> = None;
        // What the episode would do when it went dormant, and at which level
        // (`dormant_snapshot`): a reload that changes it is looked at.
        let mut dormant_view: (Level, DormantView) = (Level::Ok, None);
        // "Watching on" was logged for this episode.
        let mut told_quiet = false;
        loop {
            let mut above = watching.map(|(l, _)| l).or(dormant);
            let woke = self.wait(&mut rx, due, &mut above).await;
            if let (Some(w), Some(l)) = (watching.as_mut(), above) {
                w.0 = l;
            }
            if dormant.is_some() {
                dormant = above;
            }
            if !woke {
                if watching.is_none() && dormant.is_none() {
                    info!(rule = %first.rule, id = %first.id, "alert recovered before acting; nothing done");
                }
                self.forget(&first.rule, &first.id, ep.number);
                return;
            }
            let Some(event) = rx.borrow().clone() else {
                self.forget(&first.rule, &first.id, ep.number);
                return;
            };
            if let Some(level) = dormant {
                if !self.hears_recoveries(&event.rule) {
                    // Reloaded with `recoveries = false`: its end would never be heard. A
                    // rise held for a report goes out as it is.
                    self.release(&event.rule, &event.id, ep.number);
                    self.forget(&first.rule, &first.id, ep.number);
                    return;
                }
                if event.level <= level
                    && self.dormant_snapshot(&event, dormant_view.0) == dormant_view.1
                {
                    // Looked at again now and then: a reload may change or remove the
                    // rule's actions, or turn them off.
                    due = self.now() + DORMANT_RECHECK.as_nanos() as i64;
                    continue;
                }
                // A higher level, or new actions: acted on as at the start of the episode
                // (its diagnoses report the state at the new level). No actions any more:
                // the episode stops below.
                dormant = None;
                self.mark_dormant(&event.rule, &event.id, ep.number, None);
                finished.clear();
                nothing.clear();
                verified_ok.clear();
            }
            if let Some((level, since)) = watching.take() {
                // The alert still fires after repairs verified as recovered. A rule may
                // keep an alert up for reasons of its own (keep_firing, reset conditions,
                // recoveries = false, a source outage): act again only on fresh evidence,
                // the level rising or the rule's query seeing the fault in data from after
                // the repairs.
                let fresh = event.level > level
                    || self.query_recovered(&event, &actions, since).await.0 == Some(false);
                if !fresh && !self.hears_recoveries(&event.rule) {
                    info!(rule = %event.rule, id = %event.id, "the alert still fires after its repairs were verified, but the rule's data does not show the fault: the episode ends");
                    return;
                }
                if !fresh {
                    // Watched on: the data may show the fault again later, and a repeat of
                    // the alert is no evidence.
                    if !told_quiet {
                        info!(rule = %event.rule, id = %event.id, "the alert still fires after its repairs were verified, but the rule's data does not show the fault: not acting, watching on");
                        told_quiet = true;
                    }
                    watching = Some((level, since));
                    due = self.now() + self.watch_for(&event, &actions);
                    continue;
                }
                warn!(rule = %event.rule, id = %event.id, "the alert still fires after its repairs were verified: acting again");
                // Not announced since the report said "recovered": the next report (or the
                // alert itself, if none comes) carries it.
                self.hold_again(&event, ep.number);
                verified_ok.clear();
            }
            let now_actions = self.actions_for(&event);
            if now_actions.is_empty() {
                info!(rule = %event.rule, id = %event.id, "actions disabled or removed by a reload; this episode stops");
                self.release(&event.rule, &event.id, ep.number);
                return;
            }
            if now_actions != actions {
                actions = now_actions;
                finished.clear();
                nothing.clear();
                verified_ok.clear();
            }
            let now = self.now();
            if let Some(why) = self.inner.router.mute_reason(&event, now) {
                info!(rule = %event.rule, id = %event.id, "actions paused: {why}");
                self.release(&event.rule, &event.id, ep.number);
                due = now
                    + actions
                        .iter()
                        .map(|a| a.cooldown)
                        .min()
                        .unwrap_or_default()
                        .max(Duration::from_secs(10))
                        .as_nanos() as i64;
                continue;
            }
            let next = self
                .attempt(
                    &event,
                    &actions,
                    &ep,
                    &mut finished,
                    &mut nothing,
                    &mut verified_ok,
                )
                .await;
            self.release(&event.rule, &event.id, ep.number);
            match next {
                Next::RetryAt(t) => due = t,
                Next::Watch(t, since) => {
                    due = t;
                    watching = Some((event.level, since));
                }
                Next::Done
                    if read(&self.inner.config).enabled && self.hears_recoveries(&event.rule) =>
                {
                    dormant = Some(event.level);
                    dormant_view = (event.level, self.dormant_snapshot(&event, event.level));
                    self.mark_dormant(&event.rule, &event.id, ep.number, Some(event.level));
                    due = self.now() + DORMANT_RECHECK.as_nanos() as i64;
                }
                Next::Done => return,
            }
        }
    }

    /// Runs the instance's actions once, verifies, reports. Says whether to try again.
    async fn attempt(
        &self,
        event: &AlertEvent,
        actions: &[ActionRule],
        ep: &Episode,
        finished: &mut std::collections::HashSet<usize>,
        nothing: &mut std::collections::HashSet<usize>,
        verified_ok: &mut std::collections::HashSet<usize>,
    ) -> Next {
        let (fault_ns, detected_ns, episode) = (ep.fault_ns, ep.detected_ns, ep.number);
        let cfg = read(&self.inner.config).clone();
        let host_tag = event.tags.get("host").cloned().unwrap_or_default();
        let mut ran: Vec<(usize, usize, Box<dyn super::Action>, Ctx)> = Vec::new();
        let mut results: Vec<ActionResult> = Vec::new();
        let mut retry_at: Option<i64> = None;
        // The earliest time a repair that waits may run: the attempt resumes then (a repair
        // that ran and needs another go is decided again then, and waits its own cooldown).
        let mut wait_at: Option<i64> = None;
        let mut pages = Vec::new();
        let mut stop = false;
        let mut repairs = false;
        // A repair of this attempt waits (its cooldown, or another action on its target):
        // the attempt is not over, whatever the others' verdicts.
        let mut waiting = false;
        // Every repair that ran was verified as recovered (and none waits).
        let mut verified = false;
        // A repair's budget is spent: nothing more until its window frees up (the earliest
        // such time of the attempt's spent repairs).
        let mut exhausted: Option<i64> = None;
        // Diagnoses first, whatever the rule's order: they report the state the repairs are
        // about to change (top processes before a restart kills the culprit).
        let mut order: Vec<(usize, &ActionRule)> = actions.iter().enumerate().collect();
        order.sort_by_key(|(_, a)| !super::find(&a.action).is_some_and(|s| s.diagnosis));
        for (idx, a) in order {
            if finished.contains(&idx) || verified_ok.contains(&idx) {
                continue;
            }
            if !read(&self.inner.config).enabled {
                info!(rule = %event.rule, id = %event.id, "actions disabled by a reload; the attempt stops");
                stop = true;
                break;
            }
            let now = self.now();
            let mut r = ActionResult {
                rule: event.rule.clone(),
                alert_id: event.id.clone(),
                action: a.action.clone(),
                host: host_tag.clone(),
                max_attempts: a.max_attempts,
                fault_ns,
                detected_ns,
                started_ns: now,
                ..Default::default()
            };
            // Arguments that do not fit their types, or a host with no way to reach it:
            // refused, and the rest of the attempt with it.
            let prepared = a.render(event).and_then(|args| {
                r.args = args.summary();
                let host = cfg.resolve(event.tags.get("host").map(String::as_str))?;
                Ok((args, host))
            });
            let (args, host) = match prepared {
                Ok(p) => p,
                Err(m) => {
                    warn!(rule = %event.rule, id = %event.id, "{m}");
                    r.status = "refused".into();
                    r.stderr = m;
                    results.push(r);
                    finished.insert(idx);
                    continue;
                }
            };
            r.ran_on = host.describe();
            let Some(spec) = super::find(&a.action) else {
                continue;
            };
            repairs |= !spec.diagnosis;
            let action = (spec.build)(&args);
            let ctx = Ctx {
                host: host.clone(),
                proc_root: cfg.proc_root.clone(),
                passwd: cfg.passwd.clone(),
                scripts_dir: cfg.scripts_dir.clone(),
                timeout: a.timeout,
                grace: cfg.grace,
                max_output: cfg.max_output_bytes,
                launch: cfg.launch,
            };
            if let Some(why) = action.refuse(&ctx) {
                warn!(rule = %event.rule, id = %event.id, action = %a.action, "{why}");
                r.status = "refused".into();
                r.stderr = why;
                results.push(r);
                finished.insert(idx);
                continue;
            }
            if a.dry_run || cfg.dry_run {
                r.status = "dry_run".into();
                r.did = format!(
                    "would run on {}: {}",
                    host.describe(),
                    action.plan().join("; ")
                );
                info!(rule = %event.rule, id = %event.id, action = %a.action, "dry run: {}", r.did);
                r.finished_ns = now;
                results.push(r);
                finished.insert(idx);
                continue;
            }
            if spec.diagnosis {
                // A report, not a repair: once per episode, no budget, nothing to verify.
                finished.insert(idx);
                info!(rule = %event.rule, id = %event.id, action = %a.action, args = %r.args,
                      on = %r.ran_on, "running diagnosis");
                let done = action.run(&ctx).await;
                r.status = "diagnosed".into();
                r.attempt = 1;
                r.before = done.before;
                r.did = done.did;
                r.exit_status = done.exit_status;
                r.stderr = done.stderr;
                r.commands = done.commands;
                r.finished_ns = self.now();
                r.verified_ns = r.finished_ns;
                results.push(r);
                continue;
            }
            // By the host it runs on (a host tag "", the host's name and a `local_hosts`
            // name are one host) and the action's canonical target: two spellings of one
            // thing share one budget, and never run at once.
            let target = format!(
                "{}|{}|{}",
                host.describe(),
                a.action,
                action.target().unwrap_or_else(|| r.args.clone())
            );
            // Decided and begun under one lock: two instances acting on one target (one
            // host, two rules) cannot both be told Go.
            let decision = {
                let mut g = lock(&self.inner.guard);
                let d = g.decide(&target, now, a.max_attempts, a.window, a.cooldown);
                if let Decision::Go { attempt } = d {
                    r.attempt = attempt;
                    self.begin(&mut g, &target, now, event, &r);
                } else if matches!(d, Decision::Exhausted { page: true, .. }) {
                    // Paged: a restart must not page again for this window.
                    self.save(&g);
                }
                d
            };
            match decision {
                Decision::Go { attempt } => {
                    info!(rule = %event.rule, id = %event.id, action = %a.action, args = %r.args,
                          on = %r.ran_on, attempt, "running action");
                    let done = action.run(&ctx).await;
                    let end = self.now();
                    if done.nothing_to_do || done.refused {
                        // It changed nothing: no attempt spent, no cooldown.
                        let mut g = lock(&self.inner.guard);
                        g.cancel(&target, now);
                        self.save(&g);
                    } else {
                        self.end(&target, end);
                    }
                    r.status = "ran".into();
                    r.before = done.before;
                    r.did = done.did;
                    r.exit_status = done.exit_status;
                    r.stderr = done.stderr;
                    r.commands = done.commands;
                    r.finished_ns = end;
                    if done.refused {
                        warn!(rule = %event.rule, id = %event.id, action = %a.action, "{}", r.stderr);
                        r.status = "refused".into();
                        finished.insert(idx);
                        results.push(r);
                        continue;
                    }
                    if !done.ok {
                        warn!(rule = %event.rule, action = %a.action, "action failed: {}", r.stderr);
                    }
                    if done.nothing_to_do {
                        // Nothing changed: nothing to verify, no repair to claim. Looked at
                        // again after an attempt in which another repair ran (a squatter may
                        // take the port after the first look: the demo's second fault raced
                        // it so).
                        r.status = "nothing_to_do".into();
                        finished.insert(idx);
                        nothing.insert(idx);
                        results.push(r);
                        continue;
                    }
                    let next = end + a.cooldown.as_nanos() as i64;
                    retry_at = Some(retry_at.map_or(next, |t| t.max(next)));
                    ran.push((results.len(), idx, action, ctx));
                    results.push(r);
                }
                Decision::Busy => {
                    info!(rule = %event.rule, action = %a.action, "another action on {target} is running; skipped");
                    let at = now + Duration::from_secs(5).as_nanos() as i64;
                    wait_at = Some(wait_at.map_or(at, |t| t.min(at)));
                    waiting = true;
                    r.status = "waiting".into();
                    r.did = "nothing yet: another action on the same target is running; tried again after it".into();
                    results.push(r);
                }
                Decision::Cooldown { until_ns } => {
                    wait_at = Some(wait_at.map_or(until_ns, |t| t.min(until_ns)));
                    waiting = true;
                    r.status = "waiting".into();
                    r.did = format!(
                        "nothing yet: in its cooldown until {} (an attempt on the same target was recent); tried then",
                        crate::template::format_rfc3339(until_ns)
                    );
                    results.push(r);
                }
                Decision::Exhausted {
                    page,
                    attempts,
                    frees_ns,
                } => {
                    stop = true;
                    exhausted = Some(exhausted.map_or(frees_ns, |t| t.min(frees_ns)));
                    if page {
                        r.status = "gave_up".into();
                        r.attempt = attempts;
                        r.did = format!(
                            "{} attempts of {}({}) on {} within {} did not recover it; no more actions until the window frees up — please look",
                            attempts,
                            a.action,
                            r.args,
                            if host_tag.is_empty() {
                                "this host"
                            } else {
                                &host_tag
                            },
                            format_duration(a.window)
                        );
                        error!(rule = %event.rule, id = %event.id, "{}", r.did);
                        pages.push(r);
                    }
                }
            }
        }
        let mut repaired_since = 0;
        if !ran.is_empty() {
            for i in nothing.drain() {
                finished.remove(&i);
            }
            let settle = actions.iter().map(|a| a.settle).max().unwrap_or_default();
            tokio::time::sleep(settle).await;
            let since = ran
                .iter()
                .map(|(i, ..)| results[*i].started_ns)
                .min()
                .unwrap_or_default();
            // The probes first: the query is asked (and waited for) only when an action's
            // verdict needs it.
            let mut probes = Vec::new();
            for (_, idx, action, ctx) in &ran {
                probes.push((*idx, action.probe(ctx).await));
            }
            let needs_query = probes.iter().any(|(idx, p)| match actions[*idx].verify {
                Verify::Query | Verify::Both => true,
                Verify::Auto => p.healthy.is_none(),
                Verify::Probe => false,
            });
            let (query, query_says) = if needs_query {
                self.query_recovered(event, actions, since).await
            } else {
                (None, "")
            };
            let mut all = true;
            for ((i, ..), (idx, probe)) in ran.iter().zip(probes) {
                // By position: two actions of one kind may verify differently.
                let a = &actions[idx];
                let r = &mut results[*i];
                r.after = probe.after;
                if probe.exit_status.is_some() {
                    r.exit_status = probe.exit_status;
                }
                if !probe.stderr.is_empty() {
                    r.stderr = probe.stderr;
                }
                let recovered = match (a.verify, probe.healthy, query) {
                    (Verify::Probe, p, _) => p.unwrap_or(false),
                    (Verify::Query, _, q) => q.unwrap_or(false),
                    (Verify::Both, p, q) => p.unwrap_or(false) && q.unwrap_or(false),
                    (Verify::Auto, Some(p), _) => p,
                    (Verify::Auto, None, q) => q.unwrap_or(false),
                };
                if !query_says.is_empty() {
                    r.after = if r.after.is_empty() {
                        query_says.to_owned()
                    } else {
                        format!("{}; {query_says}", r.after)
                    };
                }
                r.recovered = recovered;
                r.verified_ns = self.now();
                all &= r.recovered;
                if recovered && waiting {
                    // The attempt stays open for a repair that waits: this one is done.
                    verified_ok.insert(idx);
                }
            }
            repaired_since = since;
            if all && !waiting {
                stop = true;
                verified = true;
            }
        }
        // A repair that waits did nothing: not a record, and no report of its own.
        for r in results.iter().filter(|r| r.status != "waiting") {
            self.record(r);
        }
        if results.iter().any(|r| r.status != "waiting") {
            self.report(event, &results, episode);
        }
        for p in &pages {
            self.record(p);
            self.report(event, std::slice::from_ref(p), episode);
        }
        let enabled = read(&self.inner.config).enabled;
        let gave_up = exhausted.is_some() || !enabled;
        if waiting {
            retry_at = wait_at;
        }
        match (stop || !repairs, retry_at) {
            // Watched until the alert ends: the rule's next evaluations, or the cooldown.
            _ if verified && !gave_up => {
                Next::Watch(self.now() + self.watch_for(event, actions), repaired_since)
            }
            (false, Some(t)) => Next::RetryAt(t),
            // A spent budget: tried again once its window lets one more attempt in, if the
            // alert still fires then (people were paged meanwhile).
            _ if enabled && let Some(t) = exhausted => Next::RetryAt(t),
            _ => Next::Done,
        }
    }

    /// How long after repairs verified as recovered the alert may go on firing before they
    /// are tried again: two of the rule's evaluations (its data must catch up), at least the
    /// longest cooldown, and 10 s.
    fn watch_for(&self, event: &AlertEvent, actions: &[ActionRule]) -> i64 {
        let every = read(&self.inner.rules)
            .get(&event.rule)
            .map_or(Duration::ZERO, |r| r.settings.every);
        let cooldown = actions.iter().map(|a| a.cooldown).max().unwrap_or_default();
        (2 * every)
            .max(cooldown)
            .max(Duration::from_secs(10))
            .as_nanos() as i64
    }

    fn begin(&self, g: &mut Guard, target: &str, now: i64, event: &AlertEvent, r: &ActionResult) {
        let notify = self.rule_notify(&event.rule).unwrap_or_default();
        g.begin(
            target,
            now,
            InFlight {
                rule: event.rule.clone(),
                alert_id: event.id.clone(),
                action: r.action.clone(),
                args: r.args.clone(),
                host: r.host.clone(),
                started_ns: now,
                notify,
                tags: event.tags.clone(),
            },
        );
        self.save(g);
    }

    fn end(&self, target: &str, now: i64) {
        let mut g = lock(&self.inner.guard);
        g.end(target, now);
        g.prune(now, super::guard::KEPT);
        self.save(&g);
    }

    fn save(&self, g: &Guard) {
        if let Err(e) = g.save(&self.inner.state_dir) {
            error!("cannot save the action state: {e}");
        }
    }

    /// Re-runs the rule: `Some(true)` when the instance's series has data from after the
    /// action (`since_ns`) and is back below every action's `on` level, `Some(false)` when it
    /// still fires; `None` when the rule or a source is not available, when the series is
    /// gone from the answer (an agent down is no recovery) or its last point predates the
    /// action (a `last()` still sees the point that fired). The text says which, for the
    /// report (empty when the query was not asked).
    /// Data written after the action may take a collection interval and a flush to arrive:
    /// without any yet, the query is asked again every `every` of the rule, for up to two of
    /// them.
    async fn query_recovered(
        &self,
        event: &AlertEvent,
        actions: &[ActionRule],
        since_ns: i64,
    ) -> (Option<bool>, &'static str) {
        let every = read(&self.inner.rules)
            .get(&event.rule)
            .map_or(Duration::ZERO, |r| r.settings.every);
        let deadline = self.now() + 2 * every.as_nanos() as i64;
        loop {
            let (verdict, says) = self.query_once(event, actions, since_ns).await;
            if verdict.is_some() || says != NO_DATA_SINCE || self.now() >= deadline {
                return (verdict, says);
            }
            tokio::time::sleep(every.clamp(Duration::from_secs(1), Duration::from_secs(60))).await;
        }
    }

    /// One query of [`Engine::query_recovered`].
    async fn query_once(
        &self,
        event: &AlertEvent,
        actions: &[ActionRule],
        since_ns: i64,
    ) -> (Option<bool>, &'static str) {
        let Some(source) = self.inner.source.clone() else {
            return (None, "");
        };
        let rule = read(&self.inner.rules)
            .get(&event.rule)
            .and_then(|r| r.rule.clone());
        let Some(rule) = rule else {
            return (None, "");
        };
        let on = actions
            .iter()
            .map(|a| a.on)
            .min()
            .unwrap_or(Level::Critical);
        let now = self.now();
        let result =
            tokio::task::spawn_blocking(move || Recheck::evaluate(&*rule, &source, now)).await;
        let Ok(CycleResult::Observed(obs)) = result else {
            return (None, "rule query: failed");
        };
        let Some(o) = obs.iter().find(|o| {
            o.tags.iter().all(|(k, v)| event.tags.get(k) == Some(v)) && !o.tags.is_empty()
                || o.tags == event.tags
        }) else {
            return (None, "rule query: the series is gone (no verdict)");
        };
        // Aggregates are stamped with the evaluation time (0: unknown): fresh either way.
        // Data time against data time where the alert has one (the engine's clock may be off
        // after a clock step or a VM pause): a point newer than the one that fired.
        let stale = match event.point_time {
            0 => o.time < since_ns,
            fired => o.time <= fired,
        };
        if o.time != 0 && stale {
            return (None, NO_DATA_SINCE);
        }
        if crate::state::determine_level(Level::Ok, &o.levels) < on {
            (Some(true), "rule query: recovered")
        } else {
            (Some(false), "rule query: still firing")
        }
    }

    fn record(&self, r: &ActionResult) {
        let audit = read(&self.inner.audit).clone();
        audit.write(r);
        {
            let mut res = lock(&self.inner.results);
            res.push(r.clone());
            let n = res.len();
            if n > KEEP_RESULTS {
                res.drain(..n - KEEP_RESULTS);
            }
        }
        // The records are never muted: silences and inhibition decide what people are
        // told (the report), not what is written down.
        if let Some(rec) = read(&self.inner.recorder).as_ref() {
            rec.write(r, self.now());
        }
        let record = self
            .inner
            .config
            .read()
            .map(|c| c.record.clone())
            .unwrap_or_default();
        if record.is_empty() {
            return;
        }
        let mut tags = crate::model::Tags::new();
        tags.insert("host".to_owned(), r.host.clone());
        tags.insert("action".to_owned(), r.action.clone());
        tags.insert("status".to_owned(), r.status.clone());
        let e = AlertEvent {
            rule: r.rule.clone(),
            id: format!("{}:action:{}", r.alert_id, r.action),
            message: summary_line(r),
            details: String::new(),
            kind: EventKind::Alert,
            level: if r.recovered {
                Level::Ok
            } else {
                Level::Critical
            },
            previous_level: Level::Critical,
            tags,
            fields: r.fields(),
            time: if r.finished_ns > 0 {
                r.finished_ns
            } else {
                self.now()
            },
            point_time: 0,
            duration: Duration::ZERO,
            notify: record,
            category: None,
        };
        self.inner.router.dispatch_unfiltered(vec![e]);
    }

    /// What a report of `episode` changes in what people were told; the recovery that came
    /// during the attempt when it is still news (the report says "not recovered"). A report
    /// of an episode that is over (the instance recovered and fired again while it ran)
    /// touches nothing of the next one's.
    fn reported(
        &self,
        event: &AlertEvent,
        episode: u64,
        recovered: bool,
    ) -> Option<Box<AlertEvent>> {
        let key = (event.rule.clone(), event.id.clone());
        let mut told = lock(&self.inner.told);
        if !matches!(told.get(&key), Some((n, _)) if *n == episode) {
            return None;
        }
        match told.remove(&key) {
            Some((_, Told::Recovering(r))) => (!recovered).then_some(r),
            _ => {
                let now = if recovered {
                    Told::Recovered
                } else {
                    Told::Plain
                };
                told.insert(key, (episode, now));
                None
            }
        }
    }

    /// The notifiers of the loaded rule `rule` (`None`: not loaded now).
    fn rule_notify(&self, rule: &str) -> Option<Vec<String>> {
        self.inner
            .rules
            .read()
            .ok()
            .and_then(|m| m.get(rule).map(|e| e.settings.notify.clone()))
    }

    /// The one message for an attempt, through the rule's notifiers.
    fn report(&self, event: &AlertEvent, results: &[ActionResult], episode: u64) {
        let notify = self
            .rule_notify(&event.rule)
            .unwrap_or_else(|| event.notify.clone());
        let recovered = results
            .iter()
            .filter(|r| r.status == "ran" || r.status == "waiting")
            .all(|r| r.recovered)
            && results.iter().any(|r| r.status == "ran");
        // A recovery that came during the attempt: no news if the report says "recovered",
        // else it follows the report.
        let recovery = self.reported(event, episode, recovered);
        if notify.is_empty() {
            return;
        }
        let mut fields = results
            .first()
            .map(ActionResult::fields)
            .unwrap_or_default();
        fields.insert("recovered".into(), Value::Bool(recovered));
        let e = AlertEvent {
            rule: event.rule.clone(),
            id: format!("{}:actions", event.id),
            message: report_subject(event, results, recovered),
            details: report_text(event, results),
            kind: EventKind::Alert,
            level: if recovered { Level::Ok } else { event.level },
            previous_level: event.level,
            tags: event.tags.clone(),
            fields,
            time: self.now(),
            point_time: 0,
            duration: event.duration,
            notify,
            category: None,
        };
        self.inner.router.dispatch_reports(vec![e]);
        if let Some(r) = recovery {
            info!(rule = %r.rule, id = %r.id, "the alert recovered while its actions ran: the recovery follows the report");
            self.inner.router.dispatch(vec![*r]);
        }
    }

    fn report_interrupted(&self) {
        let now = self.now();
        let lost = {
            let mut g = lock(&self.inner.guard);
            let lost = g.take_interrupted(now);
            if !lost.is_empty() {
                self.save(&g);
            }
            lost
        };
        for f in lost {
            let r = ActionResult {
                rule: f.rule.clone(),
                alert_id: f.alert_id.clone(),
                action: f.action.clone(),
                args: f.args.clone(),
                host: f.host.clone(),
                status: "interrupted".into(),
                did: format!(
                    "{}({}) was running when the alerter stopped (started {}); its outcome is unknown. If the alert still fires after the restart, its actions go on within their budget",
                    f.action,
                    f.args,
                    crate::template::format_rfc3339(f.started_ns)
                ),
                started_ns: f.started_ns,
                finished_ns: now,
                ..Default::default()
            };
            warn!(rule = %f.rule, id = %f.alert_id, "{}", r.did);
            self.record(&r);
            let event = AlertEvent {
                rule: f.rule.clone(),
                id: f.alert_id.clone(),
                message: String::new(),
                details: String::new(),
                kind: EventKind::Alert,
                level: Level::Critical,
                previous_level: Level::Critical,
                tags: f.tags.clone(),
                fields: crate::model::Fields::new(),
                time: now,
                point_time: 0,
                duration: Duration::ZERO,
                notify: f.notify.clone(),
                category: None,
            };
            self.report(&event, std::slice::from_ref(&r), 0);
        }
    }
}

const NO_DATA_SINCE: &str = "rule query: no data since the action (no verdict)";

/// One task's episode: from the alert that started it to its recovery or the end of its
/// actions.
struct Episode {
    number: u64,
    /// The first evaluation that saw the fault.
    fault_ns: i64,
    /// When the engine heard of it.
    detected_ns: i64,
}

enum Next {
    Done,
    RetryAt(i64),
    /// Verified as recovered: wait until then for the alert to end, else act again on fresh
    /// evidence (data from after the repairs, which started at the second time).
    Watch(i64, i64),
}

/// When the fault began, dated by the data: the first failing point's time (the latest
/// point's time less how long the instance has been non-OK), else the evaluation's.
fn fault_time(e: &AlertEvent) -> i64 {
    let base = if e.point_time > 0 {
        e.point_time
    } else {
        e.time
    };
    base - e.duration.as_nanos() as i64
}

fn ms(a: i64, b: i64) -> String {
    format_duration(Duration::from_nanos((b - a).max(0) as u64))
}

/// One line: what happened (the subject of an email).
pub fn summary_line(r: &ActionResult) -> String {
    let host = if r.host.is_empty() { "local" } else { &r.host };
    let outcome = match r.status.as_str() {
        "ran" if r.recovered => "recovered".to_owned(),
        "ran" => "NOT recovered".to_owned(),
        s => s.replace('_', " "),
    };
    format!("{host}: {}({}) {outcome}", r.action, r.args)
}

fn report_subject(event: &AlertEvent, results: &[ActionResult], recovered: bool) -> String {
    let host = event.tags.get("host").map_or("local", String::as_str);
    let what: Vec<String> = results
        .iter()
        .map(|r| format!("{}({})", r.action, r.args))
        .collect();
    let outcome = if recovered {
        "recovered".to_owned()
    } else {
        results
            .iter()
            .filter(|r| r.status != "diagnosed" || results.iter().all(|r| r.status == "diagnosed"))
            .map(|r| match r.status.as_str() {
                "ran" if r.recovered => "recovered",
                "ran" => "not recovered",
                "diagnosed" => "diagnosis",
                "dry_run" => "dry run",
                "nothing_to_do" => "nothing to do",
                "refused" => "refused",
                "gave_up" => "gave up",
                "interrupted" => "interrupted",
                "waiting" => "waits",
                _ => "skipped",
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let outcome = match results
        .iter()
        .filter(|r| r.recovered)
        .map(|r| r.verified_ns)
        .max()
    {
        Some(t) if recovered => format!("{outcome} {} after the fault", ms(results[0].fault_ns, t)),
        _ => outcome,
    };
    // The alert's own message first: the report is the one message about the incident.
    let alert = if event.message.is_empty() {
        format!("[{}] {host}", event.rule)
    } else {
        event.message.clone()
    };
    format!("{alert} — {}: {outcome}", what.join(" + "))
}

/// The report body: host, what was found, what was done, the result, the timeline.
pub fn report_text(event: &AlertEvent, results: &[ActionResult]) -> String {
    let mut s = String::new();
    let host = event.tags.get("host").map_or("this host", String::as_str);
    s.push_str(&format!(
        "alert: {} ({}) on {host}\n",
        event.id, event.level
    ));
    if !event.message.is_empty() {
        s.push_str(&format!("message: {}\n", event.message));
    }
    for r in results {
        s.push_str(&format!(
            "\naction: {}({}) on {} — {}",
            r.action,
            r.args,
            if r.ran_on.is_empty() { "-" } else { &r.ran_on },
            r.status
        ));
        if r.attempt > 0 {
            s.push_str(&format!(", attempt {} of {}", r.attempt, r.max_attempts));
        }
        s.push('\n');
        let error = Some(("error", r.stderr.as_str())).filter(|(_, e)| !e.is_empty());
        for (k, v) in r.findings().chain(error) {
            s.push_str(&format!("  {k}: {v}\n"));
        }
        if let Some(c) = r.exit_status {
            s.push_str(&format!("  exit status: {c}\n"));
        }
        if r.status == "ran" {
            s.push_str(&format!(
                "  result: {}\n",
                if r.recovered {
                    "RECOVERED"
                } else {
                    "NOT RECOVERED"
                }
            ));
            s.push_str(&format!(
                "  timeline: fault → detection {}, → action {}, → verified {}\n",
                ms(r.fault_ns, r.detected_ns),
                ms(r.fault_ns, r.started_ns),
                ms(r.fault_ns, r.verified_ns)
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests;
