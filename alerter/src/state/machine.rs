//! The per-instance alert state machine of one rule. See the module docs in `state/mod.rs`
//! for the semantics; this file implements them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::flapping::FlapState;
use super::level::determine_level;
use crate::model::{
    AlertEvent, CycleResult, EventKind, Level, Observation, Policy, RuleSettings, Value,
};
use crate::template::{self, DEFAULT_DETAILS, Template, TemplateData, TemplateError};

/// An instance's identity within its rule: the tag set of its series.
use crate::model::Tags;

/// Default id template (also used when a rule's id template is empty or broken).
pub const DEFAULT_ID: &str = "{{rule}}:{{group}}";
/// Default message template.
pub const DEFAULT_MESSAGE: &str = "{{id}} is {{level}}";

const ERROR_DETAILS: &str = "{{message}}\n\nrule: {{rule}}\nid: {{id}}\nkind: {{kind}}\n\
level: {{level}} (previous: {{previous_level}})\nduration: {{duration}}\ntime: {{time}}\n\
error: {{error}}\n";

/// Whether an instance's current non-OK level comes from its data or from missing data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    #[default]
    Normal,
    NoData,
}

/// One alert instance (rule + tag set). Times are ns since the epoch.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Instance {
    pub tags: Tags,
    pub measurement: String,
    #[serde(with = "super::persist::stored_fields")]
    pub fields: crate::model::Fields,
    /// Last level chosen from the conditions (the base of hysteresis).
    pub raw: Level,
    /// Effective level: OK while inactive or pending, else the firing (or NoData) level.
    pub level: Level,
    pub phase: Phase,
    /// Start of the current non-OK episode (pending start, or when data went missing).
    pub since: Option<i64>,
    /// Set while a non-OK raw level waits for `pending`.
    pub pending_since: Option<i64>,
    /// Set while firing with an OK raw level (the keep_firing clock).
    pub cleared_at: Option<i64>,
    /// The state last announced (sent, or a recovery deliberately not sent).
    pub notified_level: Level,
    pub notified_phase: Phase,
    /// When the last event of this instance was sent (repeat clock).
    pub last_sent: Option<i64>,
    /// The level of the last event sent: the next event's `previous_level`. Differs from
    /// `notified_level` after a recovery not sent (`recoveries: false`), as in Kapacitor,
    /// whose previous level is that of the last event its topic received. `None` (state
    /// saved before this field existed): `notified_level`.
    pub sent_level: Option<Level>,
    pub flap: FlapState,
    /// Last time the instance was in a result (its creation time if never).
    pub last_seen: i64,
    /// Time of its latest data point (the evaluation time when the source gives none);
    /// `None` if it never reported. NoData messages name it.
    pub last_point: Option<i64>,
    /// First successful evaluation that lacked it (the NoData clock).
    pub missing_since: Option<i64>,
    /// Last change of (level, phase), for expiry.
    pub changed_at: i64,
    /// The evaluation time of the result it was last in (this cycle's `now` when it is in
    /// the current one); not persisted. Saves comparing whole tag maps to know what was seen.
    #[serde(skip)]
    pub observed_at: Option<i64>,
    /// Changed what a restart needs exactly since the state was last handed over for saving:
    /// the next journal record of the rule ([`RuleState::due_save`]) carries it. Not persisted.
    #[serde(skip)]
    pub dirty: bool,
}

/// What of an instance a restart needs exactly: everything but `last_seen`, `last_point`,
/// `measurement` and `fields`, which change on every evaluation and are saved at checkpoints
/// (see [`RuleState::save_due`]). The flap history is compared apart (it is not `Copy`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Lasting {
    raw: Level,
    level: Level,
    phase: Phase,
    since: Option<i64>,
    pending_since: Option<i64>,
    cleared_at: Option<i64>,
    notified_level: Level,
    notified_phase: Phase,
    last_sent: Option<i64>,
    sent_level: Option<Level>,
    flapping: bool,
    missing_since: Option<i64>,
    changed_at: i64,
}

impl Instance {
    fn lasting(&self) -> Lasting {
        Lasting {
            raw: self.raw,
            level: self.level,
            phase: self.phase,
            since: self.since,
            pending_since: self.pending_since,
            cleared_at: self.cleared_at,
            notified_level: self.notified_level,
            notified_phase: self.notified_phase,
            last_sent: self.last_sent,
            sent_level: self.sent_level,
            flapping: self.flap.flapping,
            missing_since: self.missing_since,
            changed_at: self.changed_at,
        }
    }

    fn new(tags: Tags, now: i64) -> Instance {
        Instance {
            tags,
            last_seen: now,
            changed_at: now,
            dirty: true,
            ..Instance::default()
        }
    }
}

/// The rule-level Error state (a failed evaluation with an `Alert(level)` error policy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ErrorState {
    pub level: Level,
    pub since: i64,
    /// Whether the Error event went out (it waits for `pending` like any alert).
    pub announced: bool,
    pub last_sent: Option<i64>,
    pub message: String,
}

/// A rule's id, message and details templates, parsed.
#[derive(Debug, Clone)]
pub struct Templates {
    pub id: Template,
    pub message: Template,
    pub details: Template,
    error_details: Template,
    sources: [String; 3],
}

/// A template in a rule's settings that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{setting}` template: {source}")]
pub struct TemplateSettingError {
    /// `id`, `message` or `details`.
    pub setting: &'static str,
    #[source]
    pub source: TemplateError,
}

fn parse_or(src: &str, default: &str) -> Result<Template, TemplateError> {
    Template::parse(if src.is_empty() { default } else { src })
}

impl Templates {
    /// Parses the rule's templates (an empty template means the default); the first error
    /// names the setting and the offset.
    pub fn compile(s: &RuleSettings) -> Result<Templates, TemplateSettingError> {
        let e = |setting| move |source| TemplateSettingError { setting, source };
        Ok(Templates {
            id: parse_or(&s.id_template, DEFAULT_ID).map_err(e("id"))?,
            message: parse_or(&s.message_template, DEFAULT_MESSAGE).map_err(e("message"))?,
            details: parse_or(&s.details_template, DEFAULT_DETAILS).map_err(e("details"))?,
            error_details: Template::parse(ERROR_DETAILS)
                .unwrap_or_else(|_| Template::literal(ERROR_DETAILS)),
            sources: Self::sources(s),
        })
    }

    /// As [`Templates::compile`], but a broken template is logged and replaced by its default,
    /// so a rule that slipped through validation still notifies.
    fn compile_lenient(s: &RuleSettings) -> Templates {
        let pick = |setting: &str, src: &str, default: &str| {
            parse_or(src, default).unwrap_or_else(|err| {
                tracing::warn!(rule = %s.name, setting, %err, "bad template, using the default");
                Template::parse(default).unwrap_or_else(|_| Template::literal(default))
            })
        };
        Templates {
            id: pick("id", &s.id_template, DEFAULT_ID),
            message: pick("message", &s.message_template, DEFAULT_MESSAGE),
            details: pick("details", &s.details_template, DEFAULT_DETAILS),
            error_details: pick("details", ERROR_DETAILS, ERROR_DETAILS),
            sources: Self::sources(s),
        }
    }

    fn sources(s: &RuleSettings) -> [String; 3] {
        [
            s.id_template.clone(),
            s.message_template.clone(),
            s.details_template.clone(),
        ]
    }

    fn matches(&self, s: &RuleSettings) -> bool {
        self.sources[0] == s.id_template
            && self.sources[1] == s.message_template
            && self.sources[2] == s.details_template
    }
}

/// Read-only view of one instance, for status pages, `check` output and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceStatus {
    pub tags: Tags,
    /// Effective level (OK while pending).
    pub level: Level,
    /// In the NoData state.
    pub no_data: bool,
    pub pending_since: Option<i64>,
    /// Start of the current non-OK episode.
    pub since: Option<i64>,
    pub flapping: bool,
    /// The level receivers last heard of.
    pub notified_level: Level,
    pub last_seen: i64,
}

/// One instance that is not OK now (see [`RuleState::current`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Current {
    /// The alert as it reads (id, message, level, tags, fields; `kind` NoData or Error when
    /// that is why it is not OK).
    pub event: AlertEvent,
    /// Its level waits for the rule's `pending` time (not sent yet).
    pub pending: bool,
    /// Since when it fires (or is pending).
    pub since: Option<i64>,
    pub flapping: bool,
}

/// The alert event of an instance at `level`, rendered with the rule's templates.
fn alert_of(
    inst: &Instance,
    level: Level,
    settings: &RuleSettings,
    templates: &Templates,
    now_ns: i64,
) -> AlertEvent {
    let duration = inst.since.map_or(Duration::ZERO, |t| dur(t, now_ns));
    let data = TemplateData {
        rule: &settings.name,
        id: None,
        message: None,
        kind: Some(EventKind::Alert),
        level,
        previous_level: inst.notified_level,
        duration,
        time_ns: now_ns,
        measurement: &inst.measurement,
        tags: &inst.tags,
        fields: &inst.fields,
        error: None,
    };
    let id = templates.id.render(&data);
    let message = templates.message.render(&data);
    AlertEvent {
        rule: settings.name.clone(),
        id,
        details: message.clone(),
        message,
        kind: EventKind::Alert,
        level,
        previous_level: inst.notified_level,
        tags: inst.tags.clone(),
        fields: inst.fields.clone(),
        time: now_ns,
        point_time: inst.last_point.unwrap_or(0),
        duration,
        notify: settings.notify.clone(),
        category: settings.category.clone(),
    }
}

/// All alert instances of one rule, and the rule's Error state.
#[derive(Debug, Clone, Default)]
pub struct RuleState {
    pub(crate) instances: BTreeMap<Tags, Instance>,
    pub(crate) error: Option<ErrorState>,
    templates: Option<Templates>,
    /// Until then (ns), series missing from a result do not go NoData: the source has just
    /// come back from an outage and the agents are still re-sending what they buffered.
    pub hold_no_data_until: i64,
    /// An evaluation since the last save changed what a restart needs exactly (see
    /// [`Lasting`]): instances, levels, clocks, notifications, the Error state.
    pub(super) changed: bool,
    /// An evaluation since the last snapshot changed only what is saved at checkpoints.
    pub(super) touched: bool,
    /// When the state was last handed over whole (a snapshot; evaluation time).
    pub(super) saved_at: Option<i64>,
    /// Tag sets of the instances forgotten since the last save (journal records).
    pub(super) removed: Vec<Tags>,
    /// The Error state changed since the last save.
    pub(super) error_dirty: bool,
    /// Where the saved state stands: its snapshot and journal (see `persist.rs`).
    pub(super) journal: super::persist::JournalInfo,
}

/// How often a state whose evaluations changed only `last_seen`, `last_point` and the field
/// values is saved: at 28,000 instances every evaluation moves those, and writing the whole
/// file each time was most of the cost of persistence. A restart may find them up to this
/// old; everything else (levels, pending, NoData clocks, notifications) is saved at once.
pub const STATE_CHECKPOINT: Duration = Duration::from_secs(60);

fn ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn dur(from: i64, to: i64) -> Duration {
    Duration::from_nanos(u64::try_from(to.saturating_sub(from)).unwrap_or(0))
}

/// `dst = src.clone()`, in place when both have the same field names (every evaluation of
/// a steady series): no node or name is allocated again.
fn assign_fields(dst: &mut crate::model::Fields, src: &crate::model::Fields) {
    if dst.len() == src.len() && dst.keys().eq(src.keys()) {
        for (d, s) in dst.values_mut().zip(src.values()) {
            d.clone_from(s);
        }
    } else {
        dst.clone_from(src);
    }
}

fn is_superset(tags: &Tags, subset: &Tags) -> bool {
    tags.len() > subset.len() && subset.iter().all(|(k, v)| tags.get(k) == Some(v))
}

impl RuleState {
    /// The wall clock stepped back to `now_ns` (NTP correcting a clock that ran ahead):
    /// clocks stored in the old future would hold `pending`, `repeat`, NoData, `keep_firing`,
    /// expiry and the next checkpoint for as long as the step. They restart from now.
    pub fn clock_stepped_back(&mut self, now_ns: i64) {
        let clamp = |t: &mut i64| *t = (*t).min(now_ns);
        let clamp_opt = |t: &mut Option<i64>| {
            if let Some(v) = t {
                *v = (*v).min(now_ns);
            }
        };
        for inst in self.instances.values_mut() {
            for t in [
                &mut inst.since,
                &mut inst.pending_since,
                &mut inst.cleared_at,
                &mut inst.last_sent,
                &mut inst.missing_since,
            ] {
                clamp_opt(t);
            }
            clamp(&mut inst.changed_at);
            clamp(&mut inst.last_seen);
            inst.dirty = true;
        }
        if let Some(e) = &mut self.error {
            clamp(&mut e.since);
            clamp_opt(&mut e.last_sent);
            self.error_dirty = true;
        }
        clamp_opt(&mut self.saved_at);
        self.changed = true;
    }

    /// An empty state (no instances).
    pub fn new() -> RuleState {
        RuleState::default()
    }

    /// Whether a checkpoint is due at `now_ns`: evaluations moved what is saved only at
    /// checkpoints, and the last snapshot is [`STATE_CHECKPOINT`] old (or there is none).
    pub(super) fn checkpoint_due(&self, now_ns: i64) -> bool {
        self.touched
            && self
                .saved_at
                .is_none_or(|t| now_ns.saturating_sub(t) >= ns(STATE_CHECKPOINT))
    }

    /// Whether anything was evaluated since the last snapshot (shutdown saves those).
    pub fn unsaved(&self) -> bool {
        self.changed || self.touched
    }

    /// Number of instances held (bounded by `expire_after`).
    pub fn instance_count(&self) -> usize {
        self.instances.len()
    }

    /// Every instance, in tag order.
    pub fn instances(&self) -> Vec<InstanceStatus> {
        self.instances
            .values()
            .map(|i| InstanceStatus {
                tags: i.tags.clone(),
                level: i.level,
                no_data: i.phase == Phase::NoData,
                pending_since: i.pending_since,
                since: i.since,
                flapping: i.flap.flapping,
                notified_level: i.notified_level,
                last_seen: i.last_seen,
            })
            .collect()
    }

    /// The rule's Error state: (level, since) while its evaluations fail under an
    /// `Alert(level)` error policy.
    pub fn error_state(&self) -> Option<(Level, i64)> {
        self.error.as_ref().map(|e| (e.level, e.since))
    }

    /// The instances still firing (restored from disk at start), as the alert events they
    /// were: for the actions engine, which must resume them though no new event will come.
    /// Nothing is sent to people from these.
    pub fn firing_events(&self, settings: &RuleSettings, now_ns: i64) -> Vec<AlertEvent> {
        let templates = Templates::compile_lenient(settings);
        self.instances
            .values()
            .filter(|i| i.level > Level::Ok && i.phase != Phase::NoData)
            .map(|inst| alert_of(inst, inst.level, settings, &templates, now_ns))
            .collect()
    }

    /// The instances that are not OK now — firing, in NoData, or pending (their level waits
    /// for `pending`) — each as the alert event it is (or will be), for the status page.
    pub fn current(&self, settings: &RuleSettings, now_ns: i64) -> Vec<Current> {
        let templates = Templates::compile_lenient(settings);
        let mut out: Vec<Current> = self
            .instances
            .values()
            .filter(|i| i.level > Level::Ok || i.pending_since.is_some())
            .map(|inst| {
                let pending = inst.level == Level::Ok;
                let level = if pending { inst.raw } else { inst.level };
                let mut event = alert_of(inst, level, settings, &templates, now_ns);
                if inst.phase == Phase::NoData {
                    event.kind = EventKind::NoData;
                }
                Current {
                    event,
                    pending,
                    since: if pending {
                        inst.pending_since
                    } else {
                        inst.since
                    },
                    flapping: inst.flap.flapping,
                }
            })
            .collect();
        if let Some(e) = &self.error {
            let mut event = AlertEvent {
                rule: settings.name.clone(),
                id: format!("{}:error", settings.name),
                message: e.message.clone(),
                details: e.message.clone(),
                kind: EventKind::Error,
                level: e.level,
                previous_level: Level::Ok,
                tags: Tags::new(),
                fields: crate::model::Fields::new(),
                time: now_ns,
                point_time: 0,
                duration: dur(e.since, now_ns),
                notify: settings.notify.clone(),
                category: settings.category.clone(),
            };
            event.details.clear();
            out.push(Current {
                event,
                pending: !e.announced,
                since: Some(e.since),
                flapping: false,
            });
        }
        out
    }

    /// The rule is gone (its file was deleted): a recovery for every instance whose receivers
    /// heard of it firing, saying why, so no incident stays open forever (Kapacitor leaves it
    /// open). The state is emptied.
    pub fn retire(&mut self, settings: &RuleSettings, now_ns: i64, why: &str) -> Vec<AlertEvent> {
        // Everything goes: the next save (if any) is a snapshot, not a journal of removals.
        self.journal.base = false;
        self.error = None;
        self.retire_where(settings, now_ns, why, |_| true)
    }

    /// Like [`RuleState::retire`], for the instances whose tags `gone` says are gone.
    pub fn retire_where(
        &mut self,
        settings: &RuleSettings,
        now_ns: i64,
        why: &str,
        gone: impl Fn(&Tags) -> bool,
    ) -> Vec<AlertEvent> {
        let templates = Templates::compile_lenient(settings);
        let no_fields = crate::model::Fields::new();
        let mut out = Vec::new();
        let keys: Vec<Tags> = self.instances.keys().filter(|k| gone(k)).cloned().collect();
        for key in keys {
            let Some(inst) = self.instances.remove(&key) else {
                continue;
            };
            self.removed.push(key);
            self.changed = true;
            let heard = inst.sent_level.unwrap_or(inst.notified_level);
            if heard == Level::Ok {
                continue;
            }
            let duration = inst.since.map_or(Duration::ZERO, |t| dur(t, now_ns));
            let data = TemplateData {
                rule: &settings.name,
                id: None,
                message: None,
                kind: Some(EventKind::Recovery),
                level: Level::Ok,
                previous_level: heard,
                duration,
                time_ns: now_ns,
                measurement: &inst.measurement,
                tags: &inst.tags,
                fields: &no_fields,
                error: None,
            };
            let id = templates.id.render(&data);
            let message = format!("{id} is closed: {why}");
            out.push(AlertEvent {
                rule: settings.name.clone(),
                details: message.clone(),
                id,
                message,
                kind: EventKind::Recovery,
                level: Level::Ok,
                previous_level: heard,
                tags: inst.tags,
                fields: crate::model::Fields::new(),
                time: now_ns,
                point_time: 0,
                duration,
                notify: settings.notify.clone(),
                category: settings.category.clone(),
            });
        }
        out
    }

    /// Feeds one evaluation's result, evaluated at `now_ns`, and returns the events to notify.
    pub fn apply(
        &mut self,
        settings: &RuleSettings,
        result: &CycleResult,
        now_ns: i64,
    ) -> Vec<AlertEvent> {
        let templates = match self.templates.take() {
            Some(t) if t.matches(settings) => t,
            _ => Templates::compile_lenient(settings),
        };
        let mut cycle = Cycle {
            s: settings,
            tpl: &templates,
            now: now_ns,
            out: Vec::new(),
            changed: false,
        };
        let error_before = self.error.clone();
        match result {
            CycleResult::Failed(f) => self.failed(&mut cycle, &f.message),
            CycleResult::Observed(obs) => {
                if let Some(e) = self.error.take() {
                    cycle.error_recovered(&e);
                }
                self.observed(&mut cycle, obs);
            }
        }
        self.error_dirty |= self.error != error_before;
        self.changed |= cycle.changed || self.error != error_before;
        self.touched = true;
        let out = cycle.out;
        self.templates = Some(templates);
        out
    }

    fn failed(&mut self, c: &mut Cycle, msg: &str) {
        match c.s.error {
            Policy::KeepLast => {}
            Policy::Ok | Policy::Alert(Level::Ok) => {
                for inst in self.instances.values_mut() {
                    inst.raw = Level::Ok;
                    inst.pending_since = None;
                    inst.cleared_at = None;
                    let before = inst.lasting();
                    c.settle(inst, Level::Ok, Phase::Normal, c.now, None);
                    let changed = inst.lasting() != before;
                    inst.dirty |= changed;
                    c.changed |= changed;
                }
            }
            Policy::Alert(level) => {
                let e = self.error.get_or_insert_with(|| ErrorState {
                    level,
                    since: c.now,
                    announced: false,
                    last_sent: None,
                    message: String::new(),
                });
                e.message = msg.to_string();
                e.level = level;
                if !e.announced {
                    if c.now.saturating_sub(e.since) >= ns(c.s.pending) {
                        e.announced = true;
                        c.error_event(e, EventKind::Error);
                    }
                } else if c.repeat_due(e.last_sent) {
                    c.error_event(e, EventKind::Error);
                }
            }
        }
    }

    fn observed(&mut self, c: &mut Cycle, obs: &[Observation]) {
        // One observation per tag set, in tag order; if a result repeats a series the last one
        // wins. Sources answer in tag order (InfluxDB's GROUP BY, the memory source), so that
        // is checked in one pass and the map is only built when it is not so.
        let seen: Vec<&Observation> = if obs.windows(2).all(|w| w[0].tags < w[1].tags) {
            obs.iter().collect()
        } else {
            let mut by_tags: BTreeMap<&Tags, &Observation> = BTreeMap::new();
            for o in obs {
                if by_tags.insert(&o.tags, o).is_some() {
                    tracing::debug!(rule = %c.s.name, tags = %template::group(&o.tags), "series repeated in one result; the last one counts");
                }
            }
            by_tags.into_values().collect()
        };
        // One merge walk over the instances (also in tag order): one comparison of tag sets per
        // step instead of a map search per series; tag sets are cloned only for new instances.
        let mut fresh = Vec::new();
        let mut instances = self.instances.iter_mut().peekable();
        for o in &seen {
            loop {
                match instances.peek_mut() {
                    Some((key, inst)) => match (*key).cmp(&o.tags) {
                        std::cmp::Ordering::Less => {
                            instances.next();
                        }
                        std::cmp::Ordering::Equal => {
                            c.observe(inst, o);
                            instances.next();
                            break;
                        }
                        std::cmp::Ordering::Greater => {
                            fresh.push(c.first(o));
                            break;
                        }
                    },
                    None => {
                        fresh.push(c.first(o));
                        break;
                    }
                }
            }
        }
        c.changed |= !fresh.is_empty();
        for inst in fresh {
            self.instances.insert(inst.tags.clone(), inst);
        }
        // Expected tag sets nobody has reported yet get an instance, so they can go NoData.
        for e in &c.s.expected {
            if !self.instances.contains_key(e) && !self.instances.keys().any(|k| is_superset(k, e))
            {
                self.instances
                    .insert(e.clone(), Instance::new(e.clone(), c.now));
                c.changed = true;
            }
        }
        let expected: BTreeSet<&Tags> = c.s.expected.iter().collect();
        let mut covered = Vec::new();
        let hold_no_data = c.now < self.hold_no_data_until;
        for (key, inst) in self.instances.iter_mut() {
            if inst.observed_at == Some(c.now) {
                continue;
            }
            if expected.contains(key) && seen.iter().any(|o| is_superset(&o.tags, key)) {
                // An expected tag set that reports through more specific series exists: it is
                // OK, and once receivers know that, the real series' instances replace it.
                let ok = Observation {
                    tags: key.clone(),
                    ..Observation::default()
                };
                c.observe(inst, &ok);
                if inst.level == Level::Ok && inst.notified_level == Level::Ok {
                    covered.push(key.clone());
                }
                continue;
            }
            if !hold_no_data {
                c.missing(inst);
            }
        }
        for key in covered {
            self.instances.remove(&key);
            self.removed.push(key);
            c.changed = true;
        }
        self.expire(c, &expected);
    }

    /// Forgets instances neither seen nor changed for `expire_after` (0 = never). Expected
    /// tag sets are kept. A forgotten instance receivers think is non-OK gets a recovery
    /// that says it expired (as Grafana resolves stale series), so tickets do not stay open.
    fn expire(&mut self, c: &mut Cycle, expected: &BTreeSet<&Tags>) {
        let after = ns(c.s.expire_after);
        if after == 0 {
            return;
        }
        let now = c.now;
        let gone: Vec<Tags> = self
            .instances
            .iter()
            // An instance in this result has last_seen == now, so it never qualifies.
            .filter(|(k, i)| {
                !expected.contains(k)
                    && now.saturating_sub(i.last_seen) >= after
                    && now.saturating_sub(i.changed_at) >= after
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            c.changed = true;
            let inst = self.instances.remove(&key);
            self.removed.push(key);
            if let Some(mut inst) = inst
                && inst.notified_level != Level::Ok
                && c.s.recoveries
            {
                let note = format!(
                    " (expired: not seen for {})",
                    template::format_duration(dur(inst.last_seen, now))
                );
                let duration = inst.since.map_or(Duration::ZERO, |s| dur(s, now));
                c.emit(
                    &mut inst,
                    EventKind::Recovery,
                    Level::Ok,
                    duration,
                    Some(&note),
                );
            }
        }
    }
}

/// One `apply` call: the settings, templates, clock and the events produced so far.
struct Cycle<'a> {
    s: &'a RuleSettings,
    tpl: &'a Templates,
    now: i64,
    out: Vec<AlertEvent>,
    /// Something a restart needs exactly changed (see [`Lasting`]).
    changed: bool,
}

impl Cycle<'_> {
    /// A new instance for a series seen for the first time.
    fn first(&mut self, obs: &Observation) -> Instance {
        let mut inst = Instance::new(obs.tags.clone(), self.now);
        self.observe(&mut inst, obs);
        inst
    }

    /// The instance's series is in this result.
    fn observe(&mut self, inst: &mut Instance, obs: &Observation) {
        let before = inst.lasting();
        self.observe_inner(inst, obs);
        let changed = inst.lasting() != before;
        inst.dirty |= changed;
        self.changed |= changed;
    }

    fn observe_inner(&mut self, inst: &mut Instance, obs: &Observation) {
        let now = self.now;
        inst.last_seen = now;
        inst.last_point = Some(if obs.time > 0 { obs.time } else { now });
        inst.observed_at = Some(now);
        inst.missing_since = None;
        inst.measurement.clone_from(&obs.measurement);
        assign_fields(&mut inst.fields, &obs.fields);
        inst.raw = determine_level(inst.raw, &obs.levels);
        let raw = inst.raw;
        let mut start = now;
        let level = if inst.phase == Phase::NoData {
            // Data is back: the NoData state ends at once, with whatever the data says
            // (a firing alert is not sent back through pending, nor held by keep_firing).
            inst.pending_since = None;
            inst.cleared_at = None;
            raw
        } else if raw != Level::Ok {
            inst.cleared_at = None;
            if inst.level != Level::Ok {
                // Firing: level changes, up or down, apply at once (Kapacitor).
                raw
            } else {
                // Pending keeps its start across escalations and de-escalations.
                let ps = *inst.pending_since.get_or_insert(now);
                if now.saturating_sub(ps) >= ns(self.s.pending) {
                    inst.pending_since = None;
                    start = ps;
                    raw
                } else {
                    Level::Ok
                }
            }
        } else {
            // Cleared: a pending instance is dropped; a firing one is held for keep_firing.
            inst.pending_since = None;
            if inst.level != Level::Ok {
                let cleared = *inst.cleared_at.get_or_insert(now);
                if now.saturating_sub(cleared) >= ns(self.s.keep_firing) {
                    inst.cleared_at = None;
                    Level::Ok
                } else {
                    inst.level
                }
            } else {
                Level::Ok
            }
        };
        self.settle(inst, level, Phase::Normal, start, None);
    }

    /// The instance's series is not in this (successful) result.
    fn missing(&mut self, inst: &mut Instance) {
        let before = inst.lasting();
        self.missing_inner(inst);
        let changed = inst.lasting() != before;
        inst.dirty |= changed;
        self.changed |= changed;
    }

    fn missing_inner(&mut self, inst: &mut Instance) {
        let since = *inst.missing_since.get_or_insert(self.now);
        // Missing data waits like a condition does: `no_data_after` if set, else `pending`.
        let wait = if self.s.no_data_after.is_zero() {
            self.s.pending
        } else {
            self.s.no_data_after
        };
        if self.now.saturating_sub(since) < ns(wait) {
            return;
        }
        match self.s.no_data {
            Policy::KeepLast => {}
            Policy::Ok | Policy::Alert(Level::Ok) => {
                inst.raw = Level::Ok;
                inst.pending_since = None;
                inst.cleared_at = None;
                self.settle(inst, Level::Ok, Phase::Normal, self.now, None);
            }
            Policy::Alert(level) => {
                inst.pending_since = None;
                inst.cleared_at = None;
                self.settle(inst, level, Phase::NoData, since, None);
            }
        }
    }

    /// Moves the instance to (level, phase) and decides what to notify: a change of the
    /// announced state, the first step into flapping, or a due repeat. `start` is the
    /// episode's start if this makes the instance non-OK.
    fn settle(
        &mut self,
        inst: &mut Instance,
        level: Level,
        phase: Phase,
        start: i64,
        note: Option<&str>,
    ) {
        let now = self.now;
        if (level, phase) != (inst.level, inst.phase) {
            inst.changed_at = now;
            if level != Level::Ok && inst.since.is_none() {
                inst.since = Some(start.min(now));
            }
            inst.level = level;
            inst.phase = phase;
        }
        let was_flapping = inst.flap.flapping;
        match self.s.flapping {
            Some((low, high)) => {
                if inst.flap.push(level, self.s.history, low, high) {
                    inst.dirty = true;
                    self.changed = true;
                }
            }
            None if inst.flap.history.is_empty() && !inst.flap.flapping => {}
            None => {
                inst.flap.disable();
                inst.dirty = true;
                self.changed = true;
            }
        }
        let duration = inst.since.map_or(Duration::ZERO, |s| dur(s, now));
        if inst.flap.flapping {
            if !was_flapping {
                inst.last_sent = Some(now);
                let note = " (flapping: notifications suppressed until it settles)";
                self.emit(inst, EventKind::Flapping, level, duration, Some(note));
                // Receivers heard this level: when it settles, a different state is sent.
                inst.notified_level = level;
                inst.notified_phase = phase;
            }
        } else if (level, phase) != (inst.notified_level, inst.notified_phase) {
            let kind = match (level, phase) {
                (Level::Ok, _) => EventKind::Recovery,
                (_, Phase::NoData) => EventKind::NoData,
                _ => EventKind::Alert,
            };
            if kind != EventKind::Recovery || self.s.recoveries {
                inst.last_sent = Some(now);
                self.emit(inst, kind, level, duration, note);
            }
            inst.notified_level = level;
            inst.notified_phase = phase;
        } else if level != Level::Ok && self.repeat_due(inst.last_sent) {
            inst.last_sent = Some(now);
            let kind = if phase == Phase::NoData {
                EventKind::NoData
            } else {
                EventKind::Alert
            };
            self.emit(inst, kind, level, duration, note);
        }
        if level == Level::Ok && inst.notified_level == Level::Ok {
            inst.since = None;
        }
    }

    fn repeat_due(&self, last_sent: Option<i64>) -> bool {
        self.s
            .repeat
            .is_some_and(|r| last_sent.is_none_or(|t| self.now.saturating_sub(t) >= ns(r)))
    }

    /// Builds and queues one event of an instance; `previous_level` is the level of the last
    /// event sent (what receivers last heard).
    fn emit(
        &mut self,
        inst: &mut Instance,
        kind: EventKind,
        level: Level,
        duration: Duration,
        note: Option<&str>,
    ) {
        self.changed = true;
        inst.dirty = true;
        let s = self.s;
        let previous_level = inst.sent_level.unwrap_or(inst.notified_level);
        inst.sent_level = Some(level);
        // A NoData event carries no values: the last ones are stale and would read as current.
        let no_fields = crate::model::Fields::new();
        let fields = if kind == EventKind::NoData {
            &no_fields
        } else {
            &inst.fields
        };
        let mut data = TemplateData {
            rule: &s.name,
            id: None,
            message: None,
            kind: Some(kind),
            level,
            previous_level,
            duration,
            time_ns: self.now,
            measurement: &inst.measurement,
            tags: &inst.tags,
            fields,
            error: None,
        };
        let id = self.tpl.id.render(&data);
        data.id = Some(&id);
        // A NoData event says since when data is missing (the last point's time), not the
        // rule's usual message, which speaks of values there are none of; a template that
        // handles `{{kind}}` itself is used as written.
        let mut message = if kind == EventKind::NoData && !s.message_template.contains("{{kind") {
            let since = match inst.last_point {
                Some(t) => format!("no data since {}", template::format_rfc3339(t)),
                None => "no data yet (expected, never reported)".to_string(),
            };
            format!("{id} is {level}: {since}")
        } else {
            self.tpl.message.render(&data)
        };
        if let Some(n) = note {
            message.push_str(n);
        }
        data.message = Some(&message);
        let details = self.tpl.details.render(&data);
        self.out.push(AlertEvent {
            rule: s.name.clone(),
            id,
            message,
            details,
            kind,
            level,
            previous_level,
            tags: inst.tags.clone(),
            fields: fields.clone(),
            time: self.now,
            point_time: inst.last_point.unwrap_or(0),
            duration,
            notify: s.notify.clone(),
            category: s.category.clone(),
        });
    }

    /// The rule's Error event (or its repeat).
    fn error_event(&mut self, e: &mut ErrorState, kind: EventKind) {
        e.last_sent = Some(self.now);
        let message = format!("{}: evaluation failed: {}", self.s.name, e.message);
        self.error_like(
            kind,
            e.level,
            Level::Ok,
            dur(e.since, self.now),
            message,
            &e.message,
        );
    }

    /// Evaluation works again after an announced Error.
    fn error_recovered(&mut self, e: &ErrorState) {
        if e.announced && self.s.recoveries {
            let message = format!("{}: evaluation works again", self.s.name);
            self.error_like(
                EventKind::Recovery,
                Level::Ok,
                e.level,
                dur(e.since, self.now),
                message,
                &e.message,
            );
        }
    }

    fn error_like(
        &mut self,
        kind: EventKind,
        level: Level,
        previous: Level,
        duration: Duration,
        message: String,
        error: &str,
    ) {
        self.changed = true;
        let s = self.s;
        let id = format!("{}:error", s.name);
        let tags = Tags::new();
        let mut fields = crate::model::Fields::new();
        fields.insert("error".to_string(), Value::Str(error.to_string()));
        let data = TemplateData {
            rule: &s.name,
            id: Some(&id),
            message: Some(&message),
            kind: Some(kind),
            level,
            previous_level: previous,
            duration,
            time_ns: self.now,
            measurement: "",
            tags: &tags,
            fields: &fields,
            error: Some(error),
        };
        let details = self.tpl.error_details.render(&data);
        self.out.push(AlertEvent {
            rule: s.name.clone(),
            id,
            message,
            details,
            kind,
            level,
            previous_level: previous,
            tags,
            fields,
            time: self.now,
            point_time: 0,
            duration,
            notify: s.notify.clone(),
            category: s.category.clone(),
        });
    }
}

#[cfg(test)]
mod tests;
