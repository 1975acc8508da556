//! Inhibition (Kapacitor's `.inhibit(category, tags...)`): while an instance of an inhibiting
//! rule is non-OK, events of rules in the inhibited category whose listed tags have the same
//! values are muted — e.g. "host down" mutes the CPU alerts of that host only.
//!
//! The state is learnt from the events that pass through the router: an alert, no-data, error
//! or flapping event at a non-OK level makes its instance an active inhibitor, a recovery (or
//! an OK level) ends it. Rules are known by name from [`Inhibitions::set_rules`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::model::{AlertEvent, EventKind, Level, RuleSettings};

/// What one rule inhibits: (category, tags that must be equal).
pub type InhibitList = Vec<(String, Vec<String>)>;

/// An instance's tags (with its rule, its identity: the state machine keys instances so).
use crate::model::Tags;

/// Inhibitor rules and the inhibiting instances that are currently non-OK.
#[derive(Debug, Default, Clone)]
pub struct Inhibitions {
    rules: HashMap<String, InhibitList>,
    /// rule → tags of its non-OK instances.
    active: BTreeMap<String, BTreeSet<Tags>>,
}

impl Inhibitions {
    /// Replaces the rule list (at load and reload). Active inhibitors of rules that are gone
    /// or no longer inhibit anything are dropped.
    pub fn set_rules<'a>(&mut self, rules: impl IntoIterator<Item = &'a RuleSettings>) {
        self.rules = rules
            .into_iter()
            .filter(|r| !r.inhibits.is_empty())
            .map(|r| (r.name.clone(), r.inhibits.clone()))
            .collect();
        let rules = &self.rules;
        self.active.retain(|rule, _| rules.contains_key(rule));
    }

    /// Sets one rule's inhibit list directly (tests, or rules not built from settings).
    pub fn set_rule(&mut self, rule: &str, inhibits: InhibitList) {
        if inhibits.is_empty() {
            self.rules.remove(rule);
            self.active.remove(rule);
        } else {
            self.rules.insert(rule.to_owned(), inhibits);
        }
    }

    /// Learns from one event: does its instance start or stop inhibiting?
    pub fn observe(&mut self, event: &AlertEvent) {
        if !self.rules.contains_key(&event.rule) {
            return;
        }
        let non_ok = event.kind != EventKind::Recovery && event.level > Level::Ok;
        if non_ok {
            self.active
                .entry(event.rule.clone())
                .or_default()
                .insert(event.tags.clone());
        } else if let Some(set) = self.active.get_mut(&event.rule) {
            set.remove(&event.tags);
        }
    }

    /// Replaces what is known of `rule`'s non-OK instances with the state machine's own view
    /// (after each evaluation, and at start from persisted state). Events alone cannot tell
    /// when a rule with `recoveries: false` recovers.
    pub fn sync(&mut self, rule: &str, non_ok: impl IntoIterator<Item = Tags>) {
        if !self.rules.contains_key(rule) {
            return;
        }
        let set: BTreeSet<Tags> = non_ok.into_iter().collect();
        if set.is_empty() {
            self.active.remove(rule);
        } else {
            self.active.insert(rule.to_owned(), set);
        }
    }

    /// Forgets an instance (it expired without a recovery event).
    pub fn forget(&mut self, rule: &str, tags: &Tags) {
        if let Some(set) = self.active.get_mut(rule) {
            set.remove(tags);
        }
    }

    /// The inhibiting instance (rule, tags) that mutes `event`, if any. An instance never
    /// inhibits itself; a tag absent on both sides counts as equal (empty).
    pub fn inhibitor_of(&self, event: &AlertEvent) -> Option<(&str, &Tags)> {
        let category = event.category.as_deref()?;
        for (rule, instances) in &self.active {
            let Some(list) = self.rules.get(rule) else {
                continue;
            };
            for tags in instances {
                if *rule == event.rule && *tags == event.tags {
                    continue;
                }
                let hit = list.iter().any(|(cat, equal)| {
                    cat == category
                        && equal.iter().all(|t| {
                            tags.get(t).map_or("", String::as_str)
                                == event.tags.get(t).map_or("", String::as_str)
                        })
                });
                if hit {
                    return Some((rule, tags));
                }
            }
        }
        None
    }

    /// How many inhibiting instances are active.
    pub fn active_count(&self) -> usize {
        self.active.values().map(BTreeSet::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(rule: &str, host: &str, kind: EventKind, level: Level, cat: &str) -> AlertEvent {
        AlertEvent {
            rule: rule.into(),
            id: format!("{rule}:{host}"),
            kind,
            level,
            tags: [("host".to_owned(), host.to_owned())].into(),
            category: Some(cat.into()),
            ..Default::default()
        }
    }

    #[test]
    fn active_while_non_ok_on_equal_tags_and_never_itself() {
        let mut i = Inhibitions::default();
        i.set_rule("down", vec![("system".into(), vec!["host".into()])]);
        let cpu_a = ev("cpu", "a", EventKind::Alert, Level::Warning, "system");
        let cpu_b = ev("cpu", "b", EventKind::Alert, Level::Warning, "system");
        let net_a = ev("net", "a", EventKind::Alert, Level::Warning, "network");
        let down_a = ev("down", "a", EventKind::NoData, Level::Critical, "system");
        assert!(i.inhibitor_of(&cpu_a).is_none());
        i.observe(&down_a);
        assert_eq!(i.inhibitor_of(&cpu_a), Some(("down", &down_a.tags)));
        assert!(i.inhibitor_of(&cpu_b).is_none(), "other host");
        assert!(i.inhibitor_of(&net_a).is_none(), "other category");
        assert!(i.inhibitor_of(&down_a).is_none(), "not itself");
        i.observe(&ev("down", "a", EventKind::Recovery, Level::Ok, "system"));
        assert!(i.inhibitor_of(&cpu_a).is_none());
        i.observe(&down_a);
        i.forget("down", &down_a.tags);
        assert_eq!(i.active_count(), 0);
        // The state machine's view replaces what events said (recoveries: false sends none).
        i.observe(&down_a);
        i.sync("down", [cpu_b.tags.clone()]);
        assert!(i.inhibitor_of(&cpu_a).is_none());
        assert!(i.inhibitor_of(&net_a).is_none());
        assert_eq!(i.active_count(), 1);
        i.sync("cpu", [cpu_a.tags.clone()]);
        assert_eq!(
            i.active_count(),
            1,
            "rules that inhibit nothing are not tracked"
        );
    }
}
