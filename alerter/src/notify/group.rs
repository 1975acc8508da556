//! Notification grouping (Alertmanager's `group_by`, `group_wait`, `group_interval`): the
//! events a grouped notifier receives are gathered per group, and the group is sent as one
//! message — when it is new after `group_wait`, then at most every `group_interval` while it
//! changes — instead of one message per event.
//!
//! A group holds the latest event of each of its instances. A message lists the group's
//! firing instances (all of them, so the receiver always sees the whole incident), the
//! instances resolved since the last message, and the action reports that came in meanwhile
//! (reports and records are one-shot: listed once, never "firing"). An instance that fired
//! and resolved before any message listed it is never told; any other resolution is listed
//! (also one the notifier never saw fire: told before a restart). A group with nothing left
//! after a message is deleted, so the next event starts a new `group_wait`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use wk_core::options::Options;

use crate::model::{AlertEvent, EventKind, Level};

/// A notifier's grouping options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grouping {
    /// Names whose values make the group: `rule` (the rule name) or a tag; empty = one group
    /// for everything; `None` = `["..."]`, a group per instance.
    pub by: Option<Vec<String>>,
    /// How long a new group gathers events before its first message.
    pub wait: Duration,
    /// The least time between two messages of one group.
    pub interval: Duration,
}

impl Grouping {
    /// Alertmanager's defaults.
    pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);

    /// Reads `group_by`, `group_wait` and `group_interval`; `None` (no grouping) without
    /// `group_by`.
    pub fn read(opts: &mut Options<'_, '_>) -> Option<Grouping> {
        if !opts.has("group_by") {
            for key in ["group_wait", "group_interval"] {
                if opts.has(key) {
                    opts.error_at(
                        key,
                        "is only used with `group_by` (which turns grouping on)",
                    );
                }
            }
            return None;
        }
        let names = opts.strings("group_by");
        let by = if names.iter().any(|n| n == "...") {
            if names.len() > 1 {
                opts.error_at(
                    "group_by",
                    "\"...\" (a group per instance) cannot be combined with other names",
                );
            }
            None
        } else {
            if names.iter().any(|n| n.trim().is_empty()) {
                opts.error_at("group_by", "names must not be empty");
            }
            let mut names = names;
            names.sort();
            names.dedup();
            Some(names)
        };
        let wait = opts.duration("group_wait", Self::DEFAULT_WAIT);
        let interval = opts.duration("group_interval", Self::DEFAULT_INTERVAL);
        if interval.is_zero() {
            opts.error_at("group_interval", "must be greater than 0");
        }
        Some(Grouping { by, wait, interval })
    }

    /// The group labels of `e`: each `group_by` name with its value (`rule` is the rule
    /// name, anything else a tag; an absent tag is the empty string).
    pub fn labels(&self, e: &AlertEvent) -> crate::model::Tags {
        match &self.by {
            None => {
                let mut l = e.tags.clone();
                l.insert("rule".into(), e.rule.clone());
                l.insert("id".into(), e.id.clone());
                l
            }
            Some(names) => names
                .iter()
                .map(|n| {
                    let v = if n == "rule" {
                        e.rule.clone()
                    } else {
                        e.tags.get(n).cloned().unwrap_or_default()
                    };
                    (n.clone(), v)
                })
                .collect(),
        }
    }
}

/// One grouped message: what a notifier's [`send_group`](super::Notifier::send_group) gets.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// The group's `group_by` values.
    pub labels: crate::model::Tags,
    /// The group's firing instances, latest event each, by rule and id.
    pub firing: Vec<Arc<AlertEvent>>,
    /// Instances resolved since the last message (their recovery events).
    pub resolved: Vec<Arc<AlertEvent>>,
    /// One-shot events since the last message: action reports, records.
    pub reports: Vec<Arc<AlertEvent>>,
    /// Firing instances listed with the same event as in the group's previous message: a
    /// message to people lists them again, a record or a program is not sent them again.
    pub unchanged: BTreeSet<Instance>,
}

impl Notification {
    /// Every event of the message: firing, then resolved, then reports.
    pub fn events(&self) -> impl Iterator<Item = &Arc<AlertEvent>> {
        self.firing
            .iter()
            .chain(&self.resolved)
            .chain(&self.reports)
    }

    /// What is new since the group's previous message: firing instances that changed, then
    /// the resolved ones, then reports (what notifiers of records and programs are sent).
    pub fn news(&self) -> impl Iterator<Item = &Arc<AlertEvent>> {
        (self.firing.iter())
            .filter(|e| !self.unchanged.contains(&(e.rule.clone(), e.id.clone())))
            .chain(&self.resolved)
            .chain(&self.reports)
    }

    /// How many events the message carries.
    pub fn len(&self) -> usize {
        self.firing.len() + self.resolved.len() + self.reports.len()
    }

    /// True when the message carries nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `FIRING:28 RESOLVED:2` (zero counts left out; `REPORTS:n` when only reports).
    pub fn status(&self) -> String {
        let mut parts = Vec::new();
        if !self.firing.is_empty() {
            parts.push(format!("FIRING:{}", self.firing.len()));
        }
        if !self.resolved.is_empty() {
            parts.push(format!("RESOLVED:{}", self.resolved.len()));
        }
        if parts.is_empty() {
            parts.push(format!("REPORTS:{}", self.reports.len()));
        }
        parts.join(" ")
    }

    /// The group as `k=v,k2=v2` (`all` for a group of everything): for logs and subjects.
    pub fn key(&self) -> String {
        if self.labels.is_empty() {
            "all".into()
        } else {
            crate::template::group(&self.labels)
        }
    }

    /// Takes in what an older message of the same group (one that could not be delivered)
    /// told and this one does not: its resolved instances that this message neither lists as
    /// firing nor as resolved, and its reports, first. Its firing instances are this
    /// message's or were dropped from the group since (muted, expired).
    pub fn absorb(&mut self, older: &Notification) {
        let inst = |e: &Arc<AlertEvent>| (e.rule.clone(), e.id.clone());
        let known: BTreeSet<Instance> =
            self.firing.iter().chain(&self.resolved).map(inst).collect();
        let resolved = older.resolved.iter().filter(|e| !known.contains(&inst(e)));
        self.resolved.splice(0..0, resolved.cloned());
        self.reports.splice(0..0, older.reports.iter().cloned());
        // What the older message would have told as new still is.
        let older_news: BTreeSet<Instance> = (older.firing.iter())
            .map(inst)
            .filter(|i| !older.unchanged.contains(i))
            .collect();
        self.unchanged.retain(|i| !older_news.contains(i));
    }

    /// The highest level among the firing instances (OK when none fires).
    pub fn level(&self) -> Level {
        self.firing
            .iter()
            .map(|e| e.level)
            .max()
            .unwrap_or(Level::Ok)
    }
}

/// Whether `e` ends its instance (a recovery, or any event back at OK).
pub fn resolves(e: &AlertEvent) -> bool {
    e.kind == EventKind::Recovery || e.level == Level::Ok
}

type Instance = (String, String);

#[derive(Debug)]
struct Group {
    labels: crate::model::Tags,
    /// Latest event per instance (firing, or resolved and not yet told).
    instances: BTreeMap<Instance, Arc<AlertEvent>>,
    /// Instances a message listed as firing.
    notified: BTreeSet<Instance>,
    /// The event of each firing instance that a delivered message carried: what records
    /// were told (a message taken but not delivered told nothing).
    delivered: BTreeMap<Instance, Arc<AlertEvent>>,
    reports: Vec<Arc<AlertEvent>>,
    /// Something arrived since the last message.
    changed: bool,
    /// When the next message is due (meaningful while `changed`).
    due: Instant,
    /// When the last message went (None before the first).
    last: Option<Instant>,
}

/// The groups of one notifier.
#[derive(Debug, Default)]
pub(crate) struct Groups {
    groups: BTreeMap<String, Group>,
}

impl Groups {
    /// Takes `e` into its group; `oneshot` for reports and records.
    pub fn offer(&mut self, g: &Grouping, e: Arc<AlertEvent>, oneshot: bool, now: Instant) {
        let labels = g.labels(&e);
        let key = crate::template::group(&labels);
        let inst = (e.rule.clone(), e.id.clone());
        if !oneshot
            && resolves(&e)
            && let Some(group) = self.groups.get_mut(&key)
            && group.instances.contains_key(&inst)
            && !group.notified.contains(&inst)
        {
            // Fired and resolved before any message listed it: never told, nothing to close.
            group.instances.remove(&inst);
            if group.instances.is_empty() && group.reports.is_empty() {
                self.groups.remove(&key);
            }
            return;
        }
        // Any other resolution is listed: of an instance a message told as firing, or of one
        // this notifier does not know (told before a restart or a reload: fail open, as the
        // ungrouped path sends every recovery of an alert it did not mute).
        let group = self.groups.entry(key).or_insert_with(|| Group {
            labels,
            instances: BTreeMap::new(),
            notified: BTreeSet::new(),
            delivered: BTreeMap::new(),
            reports: Vec::new(),
            changed: false,
            due: now + g.wait,
            last: None,
        });
        if oneshot {
            group.reports.push(e);
        } else {
            group.instances.insert(inst, e);
        }
        if !group.changed {
            group.changed = true;
            if let Some(last) = group.last {
                // Alertmanager's group timer ticks every group_interval after a message;
                // a change is sent at the next tick.
                let since = now.saturating_duration_since(last);
                let ticks = since.as_nanos().div_ceil(g.interval.as_nanos()).max(1);
                group.due = last + g.interval * u32::try_from(ticks).unwrap_or(u32::MAX);
            }
        }
    }

    /// `n` was delivered: its firing events are what records were told (see
    /// [`Notification::unchanged`]). A message that fails tells nothing, so the next one of
    /// its group carries its news again.
    pub fn delivered(&mut self, n: &Notification) {
        let Some(g) = self.groups.get_mut(&crate::template::group(&n.labels)) else {
            return;
        };
        for e in &n.firing {
            let inst = (e.rule.clone(), e.id.clone());
            if g.instances.contains_key(&inst) {
                g.delivered.insert(inst, e.clone());
            }
        }
    }

    /// Drops an instance from every group (muted, expired, or an event the notifier does not
    /// want ended it for this receiver).
    pub fn forget(&mut self, rule: &str, id: &str) {
        let inst = (rule.to_owned(), id.to_owned());
        self.groups.retain(|_, g| {
            g.instances.remove(&inst);
            g.notified.remove(&inst);
            g.delivered.remove(&inst);
            !(g.instances.is_empty() && g.reports.is_empty())
        });
    }

    /// When the earliest changed group is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.groups
            .values()
            .filter(|g| g.changed)
            .map(|g| g.due)
            .min()
    }

    /// Groups waiting to be sent.
    pub fn waiting(&self) -> usize {
        self.groups.values().filter(|g| g.changed).count()
    }

    /// The messages due at `now`.
    pub fn take_due(&mut self, now: Instant) -> Vec<Notification> {
        self.take(|g| g.due <= now, now)
    }

    /// Every waiting message now (shutdown, or a reload to a notifier that groups otherwise).
    pub fn take_all(&mut self, now: Instant) -> Vec<Notification> {
        self.take(|_| true, now)
    }

    fn take(&mut self, due: impl Fn(&Group) -> bool, now: Instant) -> Vec<Notification> {
        let mut out = Vec::new();
        self.groups.retain(|_, g| {
            if !g.changed || !due(g) {
                return true;
            }
            let mut n = Notification {
                labels: g.labels.clone(),
                firing: Vec::new(),
                resolved: Vec::new(),
                reports: std::mem::take(&mut g.reports),
                unchanged: BTreeSet::new(),
            };
            g.instances.retain(|inst, e| {
                if resolves(e) {
                    g.notified.remove(inst);
                    g.delivered.remove(inst);
                    n.resolved.push(e.clone());
                    false
                } else {
                    g.notified.insert(inst.clone());
                    if g.delivered.get(inst).is_some_and(|d| Arc::ptr_eq(d, e)) {
                        n.unchanged.insert(inst.clone());
                    }
                    n.firing.push(e.clone());
                    true
                }
            });
            g.changed = false;
            g.last = Some(now);
            if !n.is_empty() {
                out.push(n);
            }
            !g.instances.is_empty()
        });
        out
    }

    /// What the groups gathered and have not sent: every instance of a group waiting for its
    /// next message (a message lists them all), and its reports (`true`: one-shot).
    pub fn pending(&self) -> impl Iterator<Item = (&Arc<AlertEvent>, bool)> {
        self.groups.values().filter(|g| g.changed).flat_map(|g| {
            g.instances
                .values()
                .map(|e| (e, false))
                .chain(g.reports.iter().map(|e| (e, true)))
        })
    }

    /// Moves `other`'s groups in (a reload that keeps the grouping); a group present in both
    /// keeps ours.
    pub fn adopt(&mut self, other: Groups) {
        for (k, g) in other.groups {
            self.groups.entry(k).or_insert(g);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(host: &str, kind: EventKind, level: Level) -> Arc<AlertEvent> {
        Arc::new(AlertEvent {
            rule: "cpu".into(),
            id: format!("cpu:host={host}"),
            kind,
            level,
            tags: [("host".to_owned(), host.to_owned())].into(),
            ..Default::default()
        })
    }

    fn grouping(by: &[&str]) -> Grouping {
        Grouping {
            by: Some(by.iter().map(|s| s.to_string()).collect()),
            wait: Duration::from_secs(30),
            interval: Duration::from_secs(300),
        }
    }

    /// Grouping by rule, with host a's critical alert offered now (`t0`).
    fn one_critical() -> (Grouping, Groups, Instant) {
        let g = grouping(&["rule"]);
        let mut gs = Groups::default();
        let t0 = Instant::now();
        gs.offer(&g, ev("a", EventKind::Alert, Level::Critical), false, t0);
        (g, gs, t0)
    }

    /// Regression: a record notifier (`exec`, `log`, `influxdb`) with `group_by` was sent
    /// every instance of the group at every message: one new host in a 30-host incident ran
    /// the pager 31 times. Only what changed goes to it; a message that was not delivered
    /// leaves its news to the next.
    #[tokio::test(start_paused = true)]
    async fn a_group_message_tells_records_only_what_changed() {
        let (g, mut gs, t0) = one_critical();
        let ids = |n: &Notification| -> Vec<String> { n.news().map(|e| e.id.clone()).collect() };
        let first = gs.take_due(t0 + Duration::from_secs(30));
        assert_eq!(ids(&first[0]), ["cpu:host=a"]);
        gs.delivered(&first[0]);
        gs.offer(&g, ev("b", EventKind::Alert, Level::Critical), false, t0);
        let second = gs.take_all(t0 + Duration::from_secs(60));
        assert_eq!(second[0].firing.len(), 2, "people get the whole group");
        assert_eq!(ids(&second[0]), ["cpu:host=b"]);
        // Not delivered; then a changes: the next message tells both (b was never told),
        // whether it takes the undelivered one in or not.
        gs.offer(&g, ev("a", EventKind::Alert, Level::Warning), false, t0);
        let mut third = gs.take_all(t0 + Duration::from_secs(90));
        assert_eq!(ids(&third[0]), ["cpu:host=a", "cpu:host=b"]);
        third[0].absorb(&second[0]);
        assert_eq!(ids(&third[0]), ["cpu:host=a", "cpu:host=b"]);
        gs.delivered(&third[0]);
        gs.offer(&g, ev("c", EventKind::Alert, Level::Critical), false, t0);
        let fourth = gs.take_all(t0 + Duration::from_secs(120));
        assert_eq!(ids(&fourth[0]), ["cpu:host=c"]);
    }

    #[tokio::test(start_paused = true)]
    async fn resolved_within_group_wait_is_never_told_and_the_group_ends() {
        let (g, mut gs, t0) = one_critical();
        gs.offer(&g, ev("a", EventKind::Recovery, Level::Ok), false, t0);
        assert_eq!(gs.take_due(t0 + Duration::from_secs(30)), vec![]);
        assert!(gs.groups.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_after_a_message_waits_for_the_next_interval_tick() {
        let (g, mut gs, t0) = one_critical();
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(gs.next_due(), Some(t1));
        assert_eq!(gs.take_due(t1).len(), 1);
        assert_eq!(gs.next_due(), None);
        // 7 minutes after the message: the tick at 10 minutes, as Alertmanager's timer.
        gs.offer(
            &g,
            ev("b", EventKind::Alert, Level::Warning),
            false,
            t1 + Duration::from_secs(420),
        );
        assert_eq!(gs.next_due(), Some(t1 + Duration::from_secs(600)));
        let n = gs.take_due(t1 + Duration::from_secs(600));
        assert_eq!((n[0].firing.len(), n[0].status()), (2, "FIRING:2".into()));
        gs.offer(&g, ev("a", EventKind::Recovery, Level::Ok), false, t1);
        let n = gs.take_all(t1);
        assert_eq!(n[0].status(), "FIRING:1 RESOLVED:1");
    }

    #[test]
    fn labels_use_the_rule_name_and_tags() {
        let e = ev("web1", EventKind::Alert, Level::Critical);
        let l = grouping(&["host", "rule", "dc"]).labels(&e);
        assert_eq!(crate::template::group(&l), "dc=,host=web1,rule=cpu");
        assert!(grouping(&[]).labels(&e).is_empty());
    }
}
