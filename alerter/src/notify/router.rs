//! The router: takes the state machine's events and hands each to the notifiers its rule
//! names, after silences and inhibition.
//!
//! Each notifier has its own bounded queue and task, so one slow or dead notifier never
//! delays another and [`Router::dispatch`] never waits: when a queue is full the oldest event
//! is dropped, counted and logged (Kapacitor drops too, but keeps a 5000-event buffer with no
//! timeout behind it; we bound every attempt instead). Each attempt has the notifier's
//! `timeout`; retryable failures are retried `retries` times with doubling, jittered backoff,
//! then the message waits for its receiver (tried again, one waiting message per round, up to
//! `give_up_after`) unless a newer message of its alert or group replaces it (Monit's event
//! queue; Alertmanager resends at the next flush); every outcome is logged and counted. With
//! [`Router::keep_outbox`], what is not delivered yet survives a restart ([`super::outbox`]).
//!
//! Muting, in order: a silenced or inhibited non-recovery event is not sent and its instance
//! is remembered as muted; the recovery of a muted instance is muted as well (the receiver
//! never saw the alert). A recovery of an instance whose alert was delivered is always sent,
//! even inside a silence: it closes what the receiver opened (Kapacitor#1607's open incidents).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::config::{NotifyPlan, UnknownNotifiers};
use super::group::{Groups, Notification};
use super::inhibit::{InhibitList, Inhibitions};
use super::outbox::{self, Pending, Waiting};
use super::running::{NotifierSettings, RunningNotifier};
use super::silence::Silence;
use super::{Notifier, NotifyError};
use crate::model::{AlertEvent, EventKind, RuleSettings};

/// More muted instances than this are forgotten at once (fail open: a later recovery of one
/// of them is sent although its alert was not), so instances that expire without a recovery
/// cannot grow the set without bound.
const MAX_MUTED_INSTANCES: usize = 100_000;

/// Routes events to notifiers. Cheap to clone; must be created inside a tokio runtime.
#[derive(Clone)]
pub struct Router {
    shared: Arc<Shared>,
}

struct Shared {
    workers: RwLock<Arc<BTreeMap<String, Arc<Worker>>>>,
    filter: Mutex<Filter>,
    counters: RouterCounters,
    history: Arc<History>,
    /// A queue changed since the outbox was last written.
    changed: Arc<AtomicBool>,
    /// Where undelivered messages are kept, and the task that writes them.
    outbox: Mutex<Option<(PathBuf, AbortOnDrop<()>)>>,
}

/// The last run's notification history; nothing if there is none or it does not read (a
/// damaged file is set aside: the history is a view, not state to recover).
fn load_history(path: &std::path::Path) -> Vec<Delivery> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(file = %path.display(), "cannot read the notification history: {e}");
            return Vec::new();
        }
    };
    serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        let kept = crate::state::set_aside(path);
        tracing::warn!(file = %path.display(), "the notification history does not read ({e}); it starts empty (the file {kept})");
        Vec::new()
    })
}

/// A file the router keeps written (the outbox, the history), off the runtime: unchanged
/// bytes are not written again, and a failure is said once until a write succeeds.
struct KeptFile {
    path: PathBuf,
    what: &'static str,
    last: Option<Vec<u8>>,
    failing: bool,
}

impl KeptFile {
    fn new(path: PathBuf, what: &'static str) -> KeptFile {
        KeptFile {
            path,
            what,
            last: None,
            failing: false,
        }
    }

    /// Writes `bytes` (removes the file when `empty`); false when that failed (the caller
    /// tries again).
    async fn write(&mut self, bytes: Vec<u8>, empty: bool) -> bool {
        if self.last.as_ref() == Some(&bytes) {
            return true;
        }
        let (to, b) = (self.path.clone(), bytes.clone());
        let written = tokio::task::spawn_blocking(move || outbox::store(&to, &b, empty))
            .await
            .unwrap_or_else(|e| Err((PathBuf::new(), std::io::Error::other(e))));
        let what = self.what;
        match written {
            Ok(()) => {
                if self.failing {
                    tracing::info!(file = %self.path.display(), "the {what} is written again");
                }
                self.failing = false;
                self.last = Some(bytes);
                true
            }
            Err((p, e)) => {
                if !self.failing {
                    tracing::error!(file = %p.display(), "cannot write the {what} (trying again every second): {e}");
                }
                self.failing = true;
                self.last = None;
                false
            }
        }
    }
}

/// How often the outbox is written while the queues change.
const OUTBOX_EVERY: Duration = Duration::from_secs(1);

/// Notifications kept for the status page and `/api/v1/notifications`.
pub const KEEP_NOTIFICATIONS: usize = 200;

/// One notification (an event for one notifier) and what became of it, or one event muted
/// before any notifier saw it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Delivery {
    /// When it was routed (ns since the epoch).
    pub time: i64,
    /// The notifier; empty for an event muted before routing.
    pub notifier: String,
    pub rule: String,
    pub id: String,
    pub level: String,
    pub kind: String,
    /// `queued`, `retrying` (its `retries` spent, tried again until `give_up_after`), `sent`,
    /// `failed`, `dropped` (queue full), `superseded` (a newer message of its alert or group
    /// replaced it while it waited), `silenced`, `inhibited`, or `interrupted` (the alerter
    /// stopped first; the message went on in the outbox, a new entry of the next run).
    pub status: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// The last error, or why it was muted.
    pub error: String,
    /// When it was delivered or given up (ns; 0 while queued).
    pub done: i64,
    #[serde(skip)]
    seq: u64,
}

/// The last [`KEEP_NOTIFICATIONS`] deliveries, updated in place as they progress.
#[derive(Default)]
struct History {
    entries: Mutex<VecDeque<Delivery>>,
    next: AtomicU64,
    /// Changed since last written to [`HISTORY_FILE`].
    dirty: AtomicBool,
}

/// The notification history in the state directory: the status page and
/// `/api/v1/notifications` show what was sent before a restart too.
pub const HISTORY_FILE: &str = "notify-history.json";

impl History {
    /// Takes the last run's entries, older than any of this run: a message still under way
    /// then is `interrupted` (it went on in the outbox, as an entry of this run).
    fn restore(&self, old: Vec<Delivery>) {
        let mut q = lock(&self.entries);
        let room = KEEP_NOTIFICATIONS.saturating_sub(q.len());
        let skip = old.len().saturating_sub(room);
        for mut d in old.into_iter().skip(skip).rev() {
            if matches!(d.status.as_str(), "queued" | "retrying") {
                d.status = "interrupted".into();
            }
            // Never the number of an entry of this run.
            d.seq = u64::MAX;
            q.push_front(d);
        }
    }

    /// The entries as the history file holds them.
    fn encode(&self) -> Vec<u8> {
        let q = lock(&self.entries);
        serde_json::to_vec(&*q).unwrap_or_default()
    }

    /// Records a new entry; returns its number (to update it).
    fn add(&self, e: &AlertEvent, notifier: &str, status: &str, error: String) -> u64 {
        let kind = crate::template::kind_str(e.kind);
        self.add_entry(
            (&e.rule, &e.id, e.level.as_str(), kind),
            notifier,
            status,
            error,
        )
    }

    /// Records a message of a notifier's queue: an event, or a group message.
    fn add_item(&self, item: &Item, notifier: &str) -> u64 {
        match item {
            Item::Event(e, _) => self.add(e, notifier, "queued", String::new()),
            Item::Group(n) => {
                let rules: std::collections::BTreeSet<&str> =
                    n.events().map(|e| e.rule.as_str()).collect();
                let rules: Vec<&str> = rules.into_iter().collect();
                let id = format!("group {} ({})", n.key(), n.status());
                let entry = (
                    &rules.join(",") as &str,
                    &id as &str,
                    n.level().as_str(),
                    "group",
                );
                self.add_entry(entry, notifier, "queued", String::new())
            }
        }
    }

    /// Records (rule, id, level, kind) for `notifier`.
    fn add_entry(
        &self,
        (rule, id, level, kind): (&str, &str, &str, &str),
        notifier: &str,
        status: &str,
        error: String,
    ) -> u64 {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        self.dirty.store(true, Ordering::Relaxed);
        let mut q = lock(&self.entries);
        if q.len() >= KEEP_NOTIFICATIONS {
            q.pop_front();
        }
        q.push_back(Delivery {
            time: now_ns(),
            notifier: notifier.to_owned(),
            rule: rule.to_owned(),
            id: id.to_owned(),
            level: level.to_owned(),
            kind: kind.to_owned(),
            status: status.to_owned(),
            attempts: 0,
            error,
            done: 0,
            seq,
        });
        seq
    }

    /// Marks an entry dropped (its queue was full).
    fn dropped(&self, seq: u64) {
        self.ended(seq, "dropped");
    }

    /// Marks an entry done with `status`.
    fn ended(&self, seq: u64, status: &str) {
        self.update(seq, |d| {
            d.status = status.into();
            d.done = now_ns();
        });
    }

    fn update(&self, seq: u64, f: impl FnOnce(&mut Delivery)) {
        let mut q = lock(&self.entries);
        // Entries are in seq order: the one wanted is near the end.
        if let Some(d) = q.iter_mut().rev().find(|d| d.seq == seq) {
            f(d);
            self.dirty.store(true, Ordering::Relaxed);
        }
    }
}

#[derive(Default)]
struct Filter {
    /// The config's `[[silences]]`.
    silences: Vec<Silence>,
    /// Silences made at run time (`wk-alerter silence add`, the state dir's silences.json).
    run_silences: Vec<Silence>,
    inhibitions: Inhibitions,
    /// Instances (rule, id) whose last non-OK event was muted, and why.
    muted: HashMap<(String, String), Muted>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Muted {
    Silenced,
    Inhibited,
}

#[derive(Default)]
struct RouterCounters {
    received: AtomicU64,
    silenced: AtomicU64,
    inhibited: AtomicU64,
    unknown_notifier: AtomicU64,
}

/// Counters of one notifier (kept across reloads while the name stays).
#[derive(Default)]
struct NotifierCounters {
    queued: AtomicU64,
    filtered: AtomicU64,
    sent: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
    timeouts: AtomicU64,
    dropped: AtomicU64,
    messages: AtomicU64,
    /// Since its last attempt failed, while no attempt has succeeded (the `wk_notifiers`
    /// alert).
    failing: Mutex<Option<Failing>>,
}

/// A notifier that cannot deliver: since when, and the last error.
#[derive(Clone)]
struct Failing {
    since: tokio::time::Instant,
    since_ns: i64,
    error: String,
    /// Carried over a restart ([`Router::resume_failing`]), and no attempt made since: when.
    resumed: Option<tokio::time::Instant>,
}

impl NotifierCounters {
    /// Notes an attempt's outcome: a failure starts (or goes on with) the notifier's
    /// failing spell, a success ends it.
    fn note(&self, result: &Result<(), NotifyError>) {
        let mut f = lock(&self.failing);
        match result {
            Ok(()) => *f = None,
            Err(e) => {
                let error = e.to_string();
                match f.as_mut() {
                    Some(f) => {
                        f.error = error;
                        f.resumed = None;
                    }
                    None => {
                        *f = Some(Failing {
                            since: tokio::time::Instant::now(),
                            since_ns: now_ns(),
                            error,
                            resumed: None,
                        })
                    }
                }
            }
        }
    }
}

/// A snapshot of the router's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Events given to [`Router::dispatch`].
    pub received: u64,
    /// Events not sent because a silence matched (or the recovery of a silenced alert).
    pub silenced: u64,
    /// Events not sent because an inhibitor was active (or the recovery of an inhibited alert).
    pub inhibited: u64,
    /// Routings to a name no notifier has (only possible when rules were not validated).
    pub unknown_notifier: u64,
    pub notifiers: Vec<NotifierStats>,
}

impl RouterStats {
    /// The counters of the notifier named `name`.
    pub fn notifier(&self, name: &str) -> Option<&NotifierStats> {
        self.notifiers.iter().find(|n| n.name == name)
    }
}

/// A snapshot of one notifier's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifierStats {
    pub name: String,
    /// Events put in its queue.
    pub queued: u64,
    /// Events routed to it that its `min_level` / `send_recoveries` refused.
    pub filtered: u64,
    /// Events delivered (each event of a grouped message counts).
    pub sent: u64,
    /// Messages delivered: one per event, or one per group with `group_by`.
    pub messages: u64,
    /// Events given up on (permanent error, retries spent with `give_up_after` zero, or
    /// `give_up_after` passed).
    pub failed: u64,
    /// Attempts retried.
    pub retries: u64,
    /// Attempts that hit the timeout.
    pub timeouts: u64,
    /// Events dropped from a full queue (the oldest first).
    pub dropped: u64,
    /// Messages waiting or in flight now, groups waiting for their `group_wait` or
    /// `group_interval` included.
    pub pending: usize,
    /// Whether its last attempt failed, and none has succeeded since.
    pub failing: Option<NotifierFailing>,
}

/// A notifier's failing spell, as [`NotifierStats`] reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifierFailing {
    /// How long since the first failed attempt of the spell.
    pub for_: Duration,
    /// When that was (ns since the epoch).
    pub since_ns: i64,
    /// The last attempt's error.
    pub error: String,
    /// Carried over a restart with no attempt since: for how long.
    pub untried_for: Option<Duration>,
}

struct Worker {
    history: Arc<History>,
    settings: NotifierSettings,
    notifier: Arc<dyn Notifier>,
    queue: Mutex<Queue>,
    wake: Notify,
    /// Events queued or in flight; 0 = idle.
    pending: watch::Sender<usize>,
    counters: Arc<NotifierCounters>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// The router's flag: a queue changed (the outbox is due to be written).
    changed: Arc<AtomicBool>,
}

#[derive(Default)]
struct Queue {
    /// Messages and their [`History`] entries.
    events: VecDeque<(Item, u64)>,
    /// Events gathered per group (notifiers with `group_by`), not yet messages.
    groups: Groups,
    /// The message being sent (its attempts and retries).
    busy: Option<Item>,
    /// When `busy` is a waiting message: its attempts before this one and its deadline.
    busy_waiting: Option<(u32, tokio::time::Instant)>,
    /// Messages whose `retries` are spent, tried again until `give_up_after`.
    parked: Vec<Parked>,
    closed: bool,
    /// After a reload, the worker of the same name: a send in flight at the reload that then
    /// waits for its receiver waits there.
    successor: Option<Arc<Worker>>,
    /// The last events delivered (at most [`RECENT`]): a predecessor's send handed on after
    /// a newer event of its alert went out here is stale, not news.
    recent: VecDeque<Item>,
}

/// How many delivered events a worker remembers for [`Queue::recent`]: what it can deliver
/// while a predecessor's send is in flight (one `timeout`).
const RECENT: usize = 64;

/// A message waiting for its receiver to come back.
struct Parked {
    item: Item,
    seq: u64,
    /// Attempts made so far.
    attempts: u32,
    /// When it is tried next.
    due: tokio::time::Instant,
    /// When it is given up.
    until: tokio::time::Instant,
}

/// How a message in hand came to be sent.
enum Origin {
    /// From the queue: its `retries` are ahead of it.
    Queued,
    /// Parked: one attempt, then parked again or given up.
    Parked {
        attempts: u32,
        until: tokio::time::Instant,
    },
}

/// One message in a notifier's queue.
#[derive(Clone)]
enum Item {
    /// An event, and whether it is a report or record (see [`Router::dispatch_reports`]).
    Event(Arc<AlertEvent>, bool),
    Group(Arc<Notification>),
}

impl Item {
    /// Whether `self`, newer, makes `older` (not delivered) needless: a later event of the
    /// same alert instance (reports and records never replace or are replaced), or the next
    /// message of the same group (which takes in what the older one alone told:
    /// [`Notification::absorb`]).
    fn supersedes(&self, older: &Item) -> bool {
        match (self, older) {
            (Item::Event(a, false), Item::Event(b, false)) => a.rule == b.rule && a.id == b.id,
            (Item::Group(a), Item::Group(b)) => a.labels == b.labels,
            _ => false,
        }
    }

    /// `self` with what `older`, which it supersedes, alone told.
    fn absorbing(self, older: &Item) -> Item {
        match (self, older) {
            (Item::Group(a), Item::Group(b)) => {
                let mut n = Notification::clone(&a);
                n.absorb(b);
                Item::Group(Arc::new(n))
            }
            (item, _) => item,
        }
    }

    /// The events the message carries.
    fn events(&self) -> usize {
        match self {
            Item::Event(..) => 1,
            Item::Group(n) => n.len(),
        }
    }

    /// What logs name the message by: the alert id, or the group.
    fn label(&self) -> String {
        match self {
            Item::Event(e, _) => e.id.clone(),
            Item::Group(n) => format!("group {} ({})", n.key(), n.status()),
        }
    }

    fn level(&self) -> crate::model::Level {
        match self {
            Item::Event(e, _) => e.level,
            Item::Group(n) => n.level(),
        }
    }
}

/// Aborts the attempt's task when the attempt is given up: on timeout, and when the worker
/// itself is cancelled at shutdown (a plain JoinHandle would leave the send running).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent data (plain pushes and
    // pops), so a poisoned lock is used as is.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

impl Router {
    /// Starts one task per notifier of `plan`.
    pub fn start(plan: NotifyPlan) -> Router {
        let shared = Arc::new(Shared {
            workers: RwLock::new(Arc::new(BTreeMap::new())),
            filter: Mutex::new(Filter::default()),
            counters: RouterCounters::default(),
            history: Arc::default(),
            changed: Arc::default(),
            outbox: Mutex::new(None),
        });
        let router = Router { shared };
        router.replace(plan);
        router
    }

    /// Swaps in a new plan (hot reload): new notifiers start, events still queued for a
    /// notifier whose name stays move to its new queue, old tasks finish their current send
    /// and end. Silences are replaced; inhibitor and muted-instance state is kept.
    pub fn replace(&self, plan: NotifyPlan) {
        let old = self.workers();
        let mut new = BTreeMap::new();
        for rn in plan.notifiers {
            let counters = old
                .get(&rn.settings.name)
                .map(|w| w.counters.clone())
                .unwrap_or_default();
            let worker = Worker::spawn(
                rn,
                counters,
                self.shared.history.clone(),
                self.shared.changed.clone(),
            );
            new.insert(worker.settings.name.clone(), worker);
        }
        for (name, w) in old.iter() {
            let (leftover, parked, groups) = w.close(new.get(name));
            if let Some(nw) = new.get(name) {
                nw.prepend(leftover, parked, groups, &w.settings);
            } else if !leftover.is_empty() || !parked.is_empty() || groups.waiting() > 0 {
                tracing::warn!(
                    notifier = %name,
                    messages = leftover.len() + parked.len() + groups.waiting(),
                    "notifier removed by reload; its queued messages are dropped"
                );
            }
        }
        *self
            .shared
            .workers
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(new);
        lock(&self.shared.filter).silences = plan.silences;
    }

    fn workers(&self) -> Arc<BTreeMap<String, Arc<Worker>>> {
        self.shared
            .workers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Tells the router which rules inhibit what (at load and at every reload).
    pub fn set_rules<'a>(&self, rules: impl IntoIterator<Item = &'a RuleSettings>) {
        lock(&self.shared.filter).inhibitions.set_rules(rules);
    }

    /// Sets one rule's inhibit list (rules not built from [`RuleSettings`], tests).
    pub fn set_inhibits(&self, rule: &str, inhibits: InhibitList) {
        lock(&self.shared.filter)
            .inhibitions
            .set_rule(rule, inhibits);
    }

    /// Replaces the config's silences.
    pub fn set_silences(&self, silences: Vec<Silence>) {
        lock(&self.shared.filter).silences = silences;
    }

    /// Replaces the silences made at run time (`silences.json`).
    pub fn set_run_silences(&self, silences: Vec<Silence>) {
        lock(&self.shared.filter).run_silences = silences;
    }

    /// How many silences are active at `now` (the service compares it from one scan to the
    /// next: one fewer means a silence ended and muted alerts are due again).
    pub fn active_silences(&self, now: i64) -> Vec<String> {
        let f = lock(&self.shared.filter);
        f.silences
            .iter()
            .chain(&f.run_silences)
            .filter(|s| s.is_active(now))
            .map(Silence::describe)
            .collect()
    }

    /// Whether the instance's last non-OK event was muted by a silence.
    pub fn silenced(&self, rule: &str, id: &str) -> bool {
        lock(&self.shared.filter)
            .muted
            .get(&(rule.to_owned(), id.to_owned()))
            == Some(&Muted::Silenced)
    }

    /// Checks the notifier names a rule lists in `notify: [...]`.
    pub fn validate_names(&self, names: &[String]) -> Result<(), UnknownNotifiers> {
        let workers = self.workers();
        let known: Vec<&str> = workers.keys().map(String::as_str).collect();
        super::config::check_names(&known, names)
    }

    /// Learns inhibitor state from events without sending them.
    pub fn observe(&self, events: &[AlertEvent]) {
        let mut f = lock(&self.shared.filter);
        for e in events {
            f.inhibitions.observe(e);
        }
    }

    /// Sets the non-OK instances (their tags) of an inhibiting rule from the state machine:
    /// call it after each evaluation of a rule with `inhibits` (before dispatching that
    /// evaluation's events) and at start after restoring persisted state. It is what ends an
    /// inhibitor whose rule sends no recoveries (`recoveries: false`) or whose instance
    /// expired; rules that inhibit nothing are ignored.
    pub fn sync_inhibitors(
        &self,
        rule: &str,
        non_ok: impl IntoIterator<Item = crate::model::Tags>,
    ) {
        lock(&self.shared.filter).inhibitions.sync(rule, non_ok);
    }

    /// Forgets an instance that expired without a recovery, so it stops inhibiting and its
    /// muted state is dropped.
    pub fn forget(&self, rule: &str, id: &str, tags: &crate::model::Tags) {
        {
            let mut f = lock(&self.shared.filter);
            f.inhibitions.forget(rule, tags);
            f.muted.remove(&(rule.to_owned(), id.to_owned()));
        }
        for w in self.workers().values() {
            w.forget(rule, id);
        }
    }

    /// Why `event` would be muted now (a silence or an active inhibitor), without counting
    /// or remembering anything: recovery actions pause under the same silences and
    /// inhibitions (a host-down alert stops actions on that host).
    pub fn mute_reason(&self, event: &AlertEvent, now: i64) -> Option<String> {
        let f = lock(&self.shared.filter);
        if let Some(s) = f
            .silences
            .iter()
            .chain(&f.run_silences)
            .find(|s| s.silences(event, now))
        {
            return Some(format!("silenced by {}", s.describe()));
        }
        f.inhibitions
            .inhibitor_of(event)
            .map(|(rule, tags)| format!("inhibited by {rule} ({})", crate::template::group(tags)))
    }

    /// Routes events; never waits. Inhibitor state is updated from the whole batch before
    /// any of it is filtered, so an inhibitor and its victims from one cycle behave as if the
    /// inhibitor came first.
    pub fn dispatch(&self, events: Vec<AlertEvent>) {
        self.dispatch_except(events, &[]);
    }

    /// [`dispatch`](Self::dispatch), except the events flagged in `held` (by position): the
    /// action engine says those itself, in its report. They still teach inhibition.
    pub fn dispatch_except(&self, events: Vec<AlertEvent>, held: &[bool]) {
        self.route(events, held, false);
    }

    /// Routes one-shot messages (the action engine's reports) through silences and
    /// inhibition like [`dispatch`](Self::dispatch); a grouped notifier lists them once in
    /// the group's next message rather than as instances that fire until they recover.
    pub fn dispatch_reports(&self, events: Vec<AlertEvent>) {
        self.route(events, &[], true);
    }

    fn route(&self, events: Vec<AlertEvent>, held: &[bool], oneshot: bool) {
        if events.is_empty() {
            return;
        }
        let mut leaving = Vec::new();
        let c = &self.shared.counters;
        let mut deliver = Vec::with_capacity(events.len());
        {
            let mut f = lock(&self.shared.filter);
            for e in &events {
                f.inhibitions.observe(e);
            }
            for (i, e) in events.into_iter().enumerate() {
                if held.get(i).copied().unwrap_or(false) {
                    // The report told its end: a grouped notifier stops listing it.
                    if super::group::resolves(&e) {
                        leaving.push(e);
                    }
                    continue;
                }
                c.received.fetch_add(1, Ordering::Relaxed);
                if f.admit(&e, &self.shared.counters, &self.shared.history) {
                    deliver.push(Arc::new(e));
                } else {
                    leaving.push(e);
                }
            }
        }
        if !leaving.is_empty() {
            // A muted instance leaves its groups: later messages of the group must not
            // list it as firing (Alertmanager leaves silenced alerts out); so does one whose
            // recovery the action engine's report announced.
            let workers = self.workers();
            for e in &leaving {
                for name in &e.notify {
                    if let Some(w) = workers.get(name) {
                        w.forget(&e.rule, &e.id);
                    }
                }
            }
        }
        self.deliver(deliver, oneshot);
    }

    /// Hands `events` to their notifiers without silences or inhibition, and without
    /// teaching the inhibition state anything: records of what the alerter did (the
    /// `[actions] record` notifiers' `wk_actions` events) are data, not pages. A silence
    /// mutes what people are told, never the record, and an action result's level must
    /// not be mistaken for its rule's state.
    pub fn dispatch_unfiltered(&self, events: Vec<AlertEvent>) {
        let c = &self.shared.counters;
        c.received.fetch_add(events.len() as u64, Ordering::Relaxed);
        self.deliver(events.into_iter().map(Arc::new).collect(), true);
    }

    /// `oneshot`: the events are reports or records, not instance state (see
    /// [`dispatch_reports`](Self::dispatch_reports)).
    fn deliver(&self, deliver: Vec<Arc<AlertEvent>>, oneshot: bool) {
        let c = &self.shared.counters;
        let workers = self.workers();
        for e in deliver {
            for (i, name) in e.notify.iter().enumerate() {
                if e.notify[..i].contains(name) {
                    continue; // listed twice: sent once
                }
                let Some(w) = workers.get(name) else {
                    c.unknown_notifier.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        notifier = %name, alert_id = %e.id, rule = %e.rule,
                        "event routed to an unknown notifier; dropped"
                    );
                    continue;
                };
                if w.settings.wants(&e) {
                    w.push(e.clone(), oneshot);
                } else {
                    // For this receiver the instance is over (a recovery it does not take,
                    // or a level below its min_level): its group stops listing it.
                    w.forget(&e.rule, &e.id);
                    w.counters.filtered.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        notifier = %name, alert_id = %e.id, level = %e.level,
                        "below the notifier's min_level or a recovery it does not send"
                    );
                }
            }
        }
    }

    /// Waits until every queue is empty and no send is in flight (tests, shutdown).
    pub async fn flush(&self) {
        for w in self.workers().values() {
            let mut rx = w.pending.subscribe();
            // The sender lives in the worker we hold, so waiting cannot fail.
            let _ = rx.wait_for(|n| *n == 0).await;
        }
    }

    /// What the notifiers have not delivered yet (see [`super::outbox`]).
    pub fn undelivered(&self) -> Vec<Pending> {
        let mut out = Vec::new();
        for w in self.workers().values() {
            w.undelivered(&mut out);
        }
        out
    }

    /// Keeps undelivered messages in the outbox file `path` across restarts: hands what it
    /// holds from the last run to the notifiers of the same name, then writes it about once
    /// a second while the queues change (and at [`Router::shutdown`]).
    pub fn keep_outbox(&self, path: PathBuf) {
        let history_path = path.with_file_name(HISTORY_FILE);
        self.shared.history.restore(load_history(&history_path));
        let left = outbox::load(&path);
        if !left.is_empty() {
            tracing::info!(
                messages = left.len(),
                file = %path.display(),
                "notifications the last run did not deliver are sent again"
            );
            self.redeliver(left);
        }
        self.shared.changed.store(true, Ordering::Relaxed);
        let shared = Arc::downgrade(&self.shared);
        let file = path.clone();
        let task = tokio::spawn(async move {
            let mut out = KeptFile::new(file, "notification outbox");
            let mut history = KeptFile::new(history_path, "notification history");
            loop {
                tokio::time::sleep(OUTBOX_EVERY).await;
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                if shared.history.dirty.swap(false, Ordering::Relaxed)
                    && !history.write(shared.history.encode(), false).await
                {
                    shared.history.dirty.store(true, Ordering::Relaxed);
                }
                if !shared.changed.swap(false, Ordering::Relaxed) {
                    continue;
                }
                let pending = Router {
                    shared: shared.clone(),
                }
                .undelivered();
                if !out
                    .write(outbox::encode(&pending), pending.is_empty())
                    .await
                {
                    shared.changed.store(true, Ordering::Relaxed);
                }
            }
        });
        *lock(&self.shared.outbox) = Some((path, AbortOnDrop(task)));
    }

    /// Hands events the last run did not deliver to their notifiers again (they passed
    /// silences and inhibition then); a notifier no longer configured drops its share.
    fn redeliver(&self, pending: Vec<Pending>) {
        let workers = self.workers();
        for p in pending {
            match workers.get(&p.notifier) {
                // A grouping notifier takes it into its groups again (a new deadline).
                Some(w) if w.settings.wants(&p.event) => match p.waiting {
                    Some(waiting) if w.settings.group.is_none() => {
                        w.push_waiting(Arc::new(p.event), p.oneshot, waiting)
                    }
                    _ => w.push(Arc::new(p.event), p.oneshot),
                },
                Some(_) => {}
                None => tracing::warn!(
                    notifier = %p.notifier, alert_id = %p.event.id,
                    "an undelivered notification's notifier is gone from the config; dropped"
                ),
            }
        }
    }

    /// Stops taking events, gives queued ones up to `grace` to be delivered, then cancels
    /// whatever is left (a cancelled exec kills its process group) and keeps it in the
    /// outbox, if there is one, for the next start.
    pub async fn shutdown(&self, grace: Duration) {
        let outbox = lock(&self.shared.outbox).take();
        let workers = std::mem::take(
            &mut *self
                .shared
                .workers
                .write()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for w in workers.values() {
            lock(&w.queue).closed = true;
            w.wake.notify_one();
        }
        let deadline = tokio::time::Instant::now() + grace;
        for (name, w) in workers.iter() {
            let task = lock(&w.task).take();
            if let Some(mut task) = task
                && tokio::time::timeout_at(deadline, &mut task).await.is_err()
            {
                task.abort();
            }
            // Messages still queued or in flight at the deadline, and those that wait for
            // their receiver (they are not tried again at shutdown: they had their retries).
            let q = lock(&w.queue);
            let left = q.events.len() + usize::from(q.busy.is_some()) + q.parked.len();
            if left > 0 {
                if outbox.is_some() {
                    tracing::warn!(notifier = %name, messages = left, "shutdown: undelivered messages kept in the outbox for the next start");
                } else {
                    tracing::warn!(notifier = %name, messages = left, "shutdown: undelivered messages dropped");
                }
            }
        }
        if let Some((path, saver)) = outbox {
            drop(saver);
            let history = self.shared.history.encode();
            KeptFile::new(path.with_file_name(HISTORY_FILE), "notification history")
                .write(history, false)
                .await;
            let mut pending = Vec::new();
            for w in workers.values() {
                w.undelivered(&mut pending);
            }
            let bytes = outbox::encode(&pending);
            let empty = pending.is_empty();
            let written =
                tokio::task::spawn_blocking(move || outbox::store(&path, &bytes, empty)).await;
            match written {
                Ok(Ok(())) => {}
                Ok(Err((p, e))) => tracing::error!(
                    file = %p.display(), messages = pending.len(),
                    "cannot write the notification outbox; undelivered messages are lost: {e}"
                ),
                Err(e) => tracing::error!("cannot write the notification outbox: {e}"),
            }
        }
    }

    /// The last notifications, oldest first.
    pub fn history(&self) -> Vec<Delivery> {
        lock(&self.shared.history.entries).iter().cloned().collect()
    }

    /// Carries a notifier's failing spell over a restart (the `wk_notifiers` state said it
    /// had not delivered since `since_ns`): its first attempt after the start goes on with
    /// that spell instead of starting a new one, and with no attempt at all it stays down
    /// (the fresh counters read as "delivers again", a false recovery at every restart).
    pub fn resume_failing(&self, name: &str, since_ns: i64, error: String) {
        let Some(w) = self.workers().get(name).cloned() else {
            return;
        };
        let ago = Duration::from_nanos(now_ns().saturating_sub(since_ns).max(0) as u64);
        let now = tokio::time::Instant::now();
        let mut f = lock(&w.counters.failing);
        if f.is_none() {
            *f = Some(Failing {
                since: now.checked_sub(ago).unwrap_or(now),
                since_ns,
                error,
                resumed: Some(now),
            });
        }
    }

    /// The counters.
    pub fn stats(&self) -> RouterStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RouterStats {
            received: get(&c.received),
            silenced: get(&c.silenced),
            inhibited: get(&c.inhibited),
            unknown_notifier: get(&c.unknown_notifier),
            notifiers: self
                .workers()
                .iter()
                .map(|(name, w)| {
                    let n = &w.counters;
                    NotifierStats {
                        name: name.clone(),
                        queued: get(&n.queued),
                        filtered: get(&n.filtered),
                        sent: get(&n.sent),
                        messages: get(&n.messages),
                        failed: get(&n.failed),
                        retries: get(&n.retries),
                        timeouts: get(&n.timeouts),
                        dropped: get(&n.dropped),
                        pending: *w.pending.borrow(),
                        failing: lock(&n.failing).as_ref().map(|f| NotifierFailing {
                            for_: f.since.elapsed(),
                            since_ns: f.since_ns,
                            error: f.error.clone(),
                            untried_for: f.resumed.map(|t| t.elapsed()),
                        }),
                    }
                })
                .collect(),
        }
    }
}

impl Filter {
    /// Whether `e` may be sent; counts and logs when not.
    fn admit(&mut self, e: &AlertEvent, c: &RouterCounters, history: &History) -> bool {
        let key = (e.rule.clone(), e.id.clone());
        if e.kind == EventKind::Recovery {
            let Some(why) = self.muted.remove(&key) else {
                return true;
            };
            let status = match why {
                Muted::Silenced => {
                    c.silenced.fetch_add(1, Ordering::Relaxed);
                    "silenced"
                }
                Muted::Inhibited => {
                    c.inhibited.fetch_add(1, Ordering::Relaxed);
                    "inhibited"
                }
            };
            history.add(e, "", status, "its alert was not sent either".into());
            tracing::debug!(alert_id = %e.id, rule = %e.rule, "recovery muted: its alert was not sent either");
            return false;
        }
        let now = if e.time > 0 { e.time } else { now_ns() };
        let reason = if let Some(s) = self
            .silences
            .iter()
            .chain(&self.run_silences)
            .find(|s| s.silences(e, now))
        {
            c.silenced.fetch_add(1, Ordering::Relaxed);
            Some((Muted::Silenced, format!("silenced by {}", s.describe())))
        } else if let Some((rule, tags)) = self.inhibitions.inhibitor_of(e) {
            c.inhibited.fetch_add(1, Ordering::Relaxed);
            let group = crate::template::group(tags);
            Some((Muted::Inhibited, format!("inhibited by {rule} ({group})")))
        } else {
            None
        };
        match reason {
            Some((why, reason)) => {
                tracing::debug!(alert_id = %e.id, rule = %e.rule, level = %e.level, "{reason}");
                let status = match why {
                    Muted::Silenced => "silenced",
                    Muted::Inhibited => "inhibited",
                };
                history.add(e, "", status, reason);
                if self.muted.len() >= MAX_MUTED_INSTANCES {
                    self.muted.clear();
                }
                self.muted.insert(key, why);
                false
            }
            None => {
                self.muted.remove(&key);
                true
            }
        }
    }
}

impl Worker {
    fn spawn(
        rn: RunningNotifier,
        counters: Arc<NotifierCounters>,
        history: Arc<History>,
        changed: Arc<AtomicBool>,
    ) -> Arc<Worker> {
        let (pending, _) = watch::channel(0);
        let worker = Arc::new(Worker {
            history,
            settings: rn.settings,
            notifier: rn.notifier,
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            pending,
            counters,
            task: Mutex::new(None),
            changed,
        });
        let handle = tokio::spawn(worker.clone().run());
        *lock(&worker.task) = Some(handle);
        worker
    }

    /// Queues `e`, or gathers it into its group when the notifier groups.
    fn push(&self, e: Arc<AlertEvent>, oneshot: bool) {
        let mut q = lock(&self.queue);
        if q.closed {
            return;
        }
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        if let Some(g) = &self.settings.group {
            q.groups.offer(g, e, oneshot, tokio::time::Instant::now());
        } else {
            self.enqueue(&mut q, Item::Event(e, oneshot));
        }
        self.publish(&q);
        drop(q);
        self.wake.notify_one();
    }

    /// Appends a message, dropping the oldest when the queue is full. A parked message it
    /// supersedes goes (a group's next message takes in what the parked one alone told).
    fn enqueue(&self, q: &mut Queue, mut item: Item) {
        while let Some(i) = q.parked.iter().position(|p| item.supersedes(&p.item)) {
            let old = q.parked.remove(i);
            item = item.absorbing(&old.item);
            self.history.ended(old.seq, "superseded");
        }
        if q.events.len() >= self.settings.queue_size
            && let Some((old, seq)) = q.events.pop_front()
        {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            self.history.dropped(seq);
            tracing::warn!(
                notifier = %self.settings.name,
                dropped = %old.label(),
                queue_size = self.settings.queue_size,
                "queue full: oldest message dropped"
            );
        }
        let seq = self.history.add_item(&item, &self.settings.name);
        q.events.push_back((item, seq));
    }

    /// Drops an instance from this notifier's groups, and its event waiting for the receiver
    /// (the instance was muted, expired, or ended by an event this notifier does not take).
    fn forget(&self, rule: &str, id: &str) {
        let mut q = lock(&self.queue);
        if self.settings.group.is_none() && q.parked.is_empty() {
            return;
        }
        q.groups.forget(rule, id);
        q.parked.retain(|p| match &p.item {
            Item::Event(e, false) if e.rule == rule && e.id == id => {
                self.history.ended(p.seq, "superseded");
                false
            }
            _ => true,
        });
        self.publish(&q);
    }

    /// Closes the queue and takes what is still in it: messages, parked ones and groups.
    /// A message in flight that ends up waiting for its receiver goes to `successor`.
    fn close(&self, successor: Option<&Arc<Worker>>) -> (Vec<(Item, u64)>, Vec<Parked>, Groups) {
        let mut q = lock(&self.queue);
        q.closed = true;
        q.successor = successor.cloned();
        let left: Vec<_> = q.events.drain(..).collect();
        let parked = std::mem::take(&mut q.parked);
        let groups = std::mem::take(&mut q.groups);
        self.publish(&q);
        drop(q);
        self.wake.notify_one();
        (left, parked, groups)
    }

    /// Takes over what the previous worker of the same name left: its messages go in front
    /// of the queue; its groups are kept when the grouping is the same, else their waiting
    /// messages are queued now.
    fn prepend(
        &self,
        items: Vec<(Item, u64)>,
        parked: Vec<Parked>,
        mut groups: Groups,
        old: &NotifierSettings,
    ) {
        let mut q = lock(&self.queue);
        for e in items.into_iter().rev() {
            q.events.push_front(e);
        }
        for p in parked {
            // The queue taken over may hold a newer message of the same alert or group.
            if !self.taken_over(&mut q, &p) {
                q.parked.push(p);
            }
        }
        while q.parked.len() > self.settings.queue_size {
            let old = q.parked.remove(0);
            self.drop_parked(&old);
        }
        let same = matches!((&old.group, &self.settings.group), (Some(a), Some(b)) if a.by == b.by);
        if same {
            q.groups.adopt(groups);
        } else {
            for n in groups.take_all(tokio::time::Instant::now()) {
                let item = Item::Group(Arc::new(n));
                let seq = self.history.add_item(&item, &self.settings.name);
                q.events.push_back((item, seq));
            }
        }
        while q.events.len() > self.settings.queue_size {
            if let Some((_, seq)) = q.events.pop_front() {
                self.history.dropped(seq);
            }
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.publish(&q);
        drop(q);
        self.wake.notify_one();
    }

    /// What this notifier has not delivered: the message being sent, the queued ones, and
    /// what its groups gathered since their last message.
    fn undelivered(&self, out: &mut Vec<Pending>) {
        let q = lock(&self.queue);
        let mut add = |event: &Arc<AlertEvent>, oneshot: bool, waiting: Option<Waiting>| {
            out.push(Pending {
                notifier: self.settings.name.clone(),
                oneshot,
                event: AlertEvent::clone(event),
                waiting,
            })
        };
        let (now, wall) = (tokio::time::Instant::now(), now_ns());
        let waiting = |attempts: u32, until: tokio::time::Instant| {
            let left = until.saturating_duration_since(now).as_nanos();
            Some(Waiting {
                attempts,
                give_up_at: wall.saturating_add(i64::try_from(left).unwrap_or(i64::MAX)),
            })
        };
        // A waiting message in flight (a probe of its receiver) keeps its deadline too.
        let busy = (q.busy.iter()).map(|i| (i, q.busy_waiting.and_then(|(a, u)| waiting(a, u))));
        let queued = q.events.iter().map(|(item, _)| (item, None));
        let parked = (q.parked.iter()).map(|p| (&p.item, waiting(p.attempts, p.until)));
        for (item, waiting) in busy.chain(queued).chain(parked) {
            match item {
                Item::Event(e, oneshot) => add(e, *oneshot, waiting),
                Item::Group(n) => {
                    n.firing
                        .iter()
                        .chain(&n.resolved)
                        .for_each(|e| add(e, false, waiting));
                    n.reports.iter().for_each(|e| add(e, true, waiting));
                }
            }
        }
        for (e, oneshot) in q.groups.pending() {
            add(e, oneshot, None);
        }
    }

    /// A message of the last run that waited for its receiver: waits again with the
    /// attempts it had and its deadline, or is given up if that passed meanwhile.
    fn push_waiting(&self, e: Arc<AlertEvent>, oneshot: bool, w: Waiting) {
        let s = &self.settings;
        let left = w.give_up_at.saturating_sub(now_ns());
        if left <= 0 {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                notifier = %s.name, kind = %s.kind, alert_id = %e.id, level = %e.level,
                attempts = w.attempts,
                give_up_after = %crate::template::format_duration(s.give_up_after),
                "notification failed; its receiver did not come back in time (give_up_after passed while the alerter was down), giving up"
            );
            return;
        }
        let mut q = lock(&self.queue);
        if q.closed {
            return;
        }
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        let item = Item::Event(e, oneshot);
        let seq = self.history.add_item(&item, &s.name);
        let now = tokio::time::Instant::now();
        let until = now + Duration::from_nanos(left as u64);
        q.parked.push(Parked {
            item,
            seq,
            attempts: w.attempts,
            due: now,
            until,
        });
        self.publish(&q);
        drop(q);
        self.wake.notify_one();
    }

    /// Publishes how many messages are queued, in flight or waiting in a group.
    fn publish(&self, q: &Queue) {
        let n =
            q.events.len() + usize::from(q.busy.is_some()) + q.parked.len() + q.groups.waiting();
        self.changed.store(true, Ordering::Relaxed);
        self.pending
            .send_if_modified(|p| std::mem::replace(p, n) != n);
    }

    async fn run(self: Arc<Self>) {
        loop {
            let (next, due) = {
                let mut q = lock(&self.queue);
                let now = tokio::time::Instant::now();
                // At shutdown every waiting group goes now rather than being lost.
                let ready = if q.closed {
                    q.groups.take_all(now)
                } else {
                    q.groups.take_due(now)
                };
                for n in ready {
                    self.enqueue(&mut q, Item::Group(Arc::new(n)));
                }
                if !q.closed {
                    self.expire_parked(&mut q, now);
                }
                // A parked message that is due goes first: it is older than what is queued.
                // At shutdown parked messages wait for the outbox (they had their retries).
                let parked = q.parked.iter().position(|p| p.due <= now);
                let next = match parked.filter(|_| !q.closed) {
                    Some(i) => {
                        let p = q.parked.remove(i);
                        let origin = Origin::Parked {
                            attempts: p.attempts,
                            until: p.until,
                        };
                        Some((p.item, p.seq, origin))
                    }
                    None => (q.events.pop_front()).map(|(item, seq)| (item, seq, Origin::Queued)),
                };
                q.busy = next.as_ref().map(|(item, ..)| item.clone());
                q.busy_waiting = match &next {
                    Some((_, _, Origin::Parked { attempts, until })) => Some((*attempts, *until)),
                    _ => None,
                };
                self.publish(&q);
                if next.is_none() && q.closed {
                    return;
                }
                let parked_due = (q.parked.iter())
                    .map(|p| p.due.min(p.until))
                    .min()
                    .filter(|_| !q.closed);
                (
                    next,
                    q.groups.next_due().into_iter().chain(parked_due).min(),
                )
            };
            match (next, due) {
                (Some((item, seq, origin)), _) => self.deliver(&item, seq, origin).await,
                (None, Some(due)) => {
                    tokio::select! {
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep_until(due) => {}
                    }
                }
                (None, None) => self.wake.notified().await,
            }
        }
    }

    /// One attempt in its own task, so that a panicking notifier costs one message, not the
    /// worker; on timeout the task is aborted, which drops the send (an exec kills its
    /// process group then).
    async fn attempt(&self, item: &Item) -> Result<(), NotifyError> {
        let notifier = self.notifier.clone();
        let item = item.clone();
        // A record notifier sends a group's events one by one: each gets the timeout.
        let timeout = match &item {
            Item::Group(n) => self.settings.timeout * super::group_sends(&*notifier, n),
            Item::Event(..) => self.settings.timeout,
        };
        let mut task = AbortOnDrop(tokio::spawn(async move {
            match &item {
                Item::Event(e, _) => notifier.send(e).await,
                Item::Group(n) => notifier.send_group(n).await,
            }
        }));
        let result = match tokio::time::timeout(timeout, &mut task.0).await {
            Ok(Ok(r)) => r,
            Ok(Err(join)) if join.is_panic() => Err(NotifyError::Permanent(
                "the notifier panicked (a bug; please report it)".into(),
            )),
            Ok(Err(join)) => Err(NotifyError::Retryable(format!("attempt cancelled: {join}"))),
            Err(_) => {
                drop(task);
                self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                Err(NotifyError::Retryable(format!(
                    "timed out after {}",
                    crate::template::format_duration(timeout)
                )))
            }
        };
        self.counters.note(&result);
        result
    }

    /// Sends `item`: from the queue with its `retries`, parked with one attempt. A message
    /// whose retries are spent on retryable failures is parked until `give_up_after` after
    /// its first attempt.
    async fn deliver(&self, item: &Item, seq: u64, origin: Origin) {
        let s = &self.settings;
        let now = tokio::time::Instant::now;
        let (before, retries, until) = match origin {
            // A give_up_after too large for the clock: never.
            Origin::Queued => (
                0,
                s.retries,
                (now().checked_add(s.give_up_after))
                    .unwrap_or_else(|| now() + Duration::from_secs(100 * 365 * 86_400)),
            ),
            Origin::Parked { attempts, until } => (attempts, 0, until),
        };
        let mut retry = 0;
        loop {
            let result = self.attempt(item).await;
            let attempts = before + retry + 1;
            let delay = s.backoff_delay(attempts - 1);
            let park = match &result {
                Err(e) => e.is_retryable() && retry >= retries && now() + delay < until,
                Ok(()) => false,
            };
            self.history.update(seq, |d| {
                d.attempts = attempts;
                match &result {
                    Ok(()) => {
                        d.status = "sent".into();
                        d.done = now_ns();
                    }
                    Err(err) => {
                        d.error = err.to_string();
                        if park {
                            d.status = "retrying".into();
                        } else if !(err.is_retryable() && retry < retries) {
                            d.status = "failed".into();
                            d.done = now_ns();
                        }
                    }
                }
            });
            match result {
                Ok(()) => {
                    self.counters
                        .sent
                        .fetch_add(item.events() as u64, Ordering::Relaxed);
                    match &item {
                        Item::Event(..) => {
                            let mut q = lock(&self.queue);
                            if q.recent.len() == RECENT {
                                q.recent.pop_front();
                            }
                            q.recent.push_back(item.clone());
                        }
                        // What records were told: the group's next message leaves it out.
                        Item::Group(n) => lock(&self.queue).groups.delivered(n),
                    }
                    self.counters.messages.fetch_add(1, Ordering::Relaxed);
                    if before > 0 {
                        // A waiting message went through: the receiver is back, and what
                        // waits for it goes now. (Not on the success of a queued message: a
                        // message that fails by its content would be tried after each.)
                        let mut q = lock(&self.queue);
                        let t = now();
                        q.parked.iter_mut().for_each(|p| p.due = p.due.min(t));
                        // Closed by a reload: what waits now waits at the notifier of the
                        // name after it, for the same receiver.
                        let successor = q.successor.clone();
                        drop(q);
                        if let Some(next) = successor {
                            let mut nq = lock(&next.queue);
                            nq.parked.iter_mut().for_each(|p| p.due = p.due.min(t));
                            drop(nq);
                            next.wake.notify_one();
                        }
                        tracing::info!(
                            notifier = %s.name, kind = %s.kind, alert_id = %item.label(),
                            level = %item.level(), events = item.events(), attempts,
                            "notified after its receiver came back"
                        );
                    } else {
                        // Debug: the event itself is logged once by the scheduler; a delivery
                        // is routine (failures are warnings).
                        tracing::debug!(
                            notifier = %s.name, kind = %s.kind, alert_id = %item.label(),
                            level = %item.level(), events = item.events(), attempts,
                            "notified"
                        );
                    }
                    return;
                }
                Err(err) if err.is_retryable() && retry < retries => {
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        notifier = %s.name, alert_id = %item.label(), attempt = attempts,
                        retry_in_ms = delay.as_millis() as u64, error = %err,
                        "notification failed; will retry"
                    );
                    tokio::time::sleep(delay).await;
                    retry += 1;
                }
                Err(err) if park => {
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    if before == 0 {
                        tracing::warn!(
                            notifier = %s.name, alert_id = %item.label(), attempts,
                            retry_in_ms = delay.as_millis() as u64,
                            give_up_after = %crate::template::format_duration(s.give_up_after),
                            error = %err,
                            "notification failed; its retries are spent, it is tried again until given up"
                        );
                    } else {
                        tracing::debug!(
                            notifier = %s.name, alert_id = %item.label(), attempts,
                            retry_in_ms = delay.as_millis() as u64, error = %err,
                            "notification failed again; kept"
                        );
                    }
                    let p = Parked {
                        item: item.clone(),
                        seq,
                        attempts,
                        // At least a second apart, whatever `backoff` says.
                        due: now() + delay.max(Duration::from_secs(1)),
                        until,
                    };
                    self.park(p, true);
                    return;
                }
                Err(err) => {
                    self.counters
                        .failed
                        .fetch_add(item.events() as u64, Ordering::Relaxed);
                    tracing::error!(
                        notifier = %s.name, kind = %s.kind, alert_id = %item.label(),
                        level = %item.level(), events = item.events(), attempts,
                        permanent = !err.is_retryable(), error = %err,
                        "notification failed; giving up"
                    );
                    return;
                }
            }
        }
    }

    /// Keeps a message whose receiver fails, to be tried at `p.due`, unless a newer message
    /// queued or in flight supersedes it (a group's next message takes in what it alone
    /// told). While the receiver fails, the other parked messages wait as long: one message
    /// probes it. `own`: this worker was sending it (not a predecessor's message handed on at
    /// a reload), so it is no longer in flight here.
    fn park(&self, p: Parked, own: bool) {
        let mut q = lock(&self.queue);
        if own {
            q.busy = None;
        }
        if let Some(next) = q.successor.clone() {
            self.publish(&q);
            drop(q);
            next.park(p, false);
            next.wake.notify_one();
            return;
        }
        // Handed on by a predecessor: an event of its alert delivered here since is newer
        // (dispatched after the reload, or queued behind it), and the receiver has it.
        // (Groups are not dropped: a group message sent here may lack what this one told.)
        let stale = !own && q.recent.iter().any(|d| d.supersedes(&p.item));
        if stale {
            self.history.ended(p.seq, "superseded");
        } else if !self.taken_over(&mut q, &p) {
            q.parked.iter_mut().for_each(|o| o.due = o.due.max(p.due));
            if q.parked.len() >= self.settings.queue_size {
                let old = q.parked.remove(0);
                self.drop_parked(&old);
            }
            q.parked.push(p);
        }
        self.publish(&q);
    }

    /// Whether a newer message in flight or queued supersedes `p` (a queued group message
    /// then takes in what `p` alone told; one in flight went out before `p` came). Records
    /// `p` as superseded if so.
    fn taken_over(&self, q: &mut Queue, p: &Parked) -> bool {
        if !q.busy.as_ref().is_some_and(|b| b.supersedes(&p.item)) {
            let Some((newer, _)) = (q.events.iter_mut()).find(|(n, _)| n.supersedes(&p.item))
            else {
                return false;
            };
            *newer = newer.clone().absorbing(&p.item);
        }
        self.history.ended(p.seq, "superseded");
        true
    }

    /// Counts, logs and records a parked message dropped for room.
    fn drop_parked(&self, old: &Parked) {
        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        self.history.dropped(old.seq);
        tracing::warn!(
            notifier = %self.settings.name,
            dropped = %old.item.label(),
            queue_size = self.settings.queue_size,
            "too many messages wait for their receiver: the oldest is dropped"
        );
    }

    /// Gives up the parked messages whose `give_up_after` has passed, tried or not.
    fn expire_parked(&self, q: &mut Queue, now: tokio::time::Instant) {
        let s = &self.settings;
        q.parked.retain(|p| {
            if p.until > now {
                return true;
            }
            self.counters
                .failed
                .fetch_add(p.item.events() as u64, Ordering::Relaxed);
            self.history.ended(p.seq, "failed");
            tracing::error!(
                notifier = %s.name, kind = %s.kind, alert_id = %p.item.label(),
                level = %p.item.level(), events = p.item.events(), attempts = p.attempts,
                give_up_after = %crate::template::format_duration(s.give_up_after),
                "notification failed; its receiver did not come back in time, giving up"
            );
            false
        });
    }
}
