//! Guard rails, as plain data with the clock as an argument (so they are tested without
//! waiting): per target (the host it runs on + action + its canonical target, see
//! [`super::Action::target`]) the attempt times within the
//! window, the end of the last attempt (cooldown), whether people were paged for a spent
//! budget, and the action in flight. Saved to `<state_dir>/actions.state.json` after every
//! change, so a restart keeps the budget; an action still in flight when the alerter stopped
//! is reported as interrupted at the next start and counts as an attempt (never retried
//! blindly).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// File name under `state_dir`.
pub const FILE: &str = "actions.state.json";

/// How long attempts are remembered: the longest `window` a rule may give.
pub const KEPT: Duration = Duration::from_secs(7 * 24 * 3600);

/// An action that was running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    pub rule: String,
    pub alert_id: String,
    pub action: String,
    pub args: String,
    pub host: String,
    pub started_ns: i64,
    /// The rule's notifiers, to report the interruption even if the rule is gone.
    pub notify: Vec<String>,
    pub tags: crate::model::Tags,
}

/// One target's record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Start times (ns) of the attempts of the last [`KEPT`] (in order, save after a clock
    /// stepped back across a restart: counted, never searched).
    pub attempts: Vec<i64>,
    /// When the last attempt ended (ns; 0 = never).
    pub last_end_ns: i64,
    /// People were told the budget is spent, until this time (the spent budget's window
    /// freeing up): once per spent window, whichever rule on the target spent it.
    #[serde(default)]
    pub paged_until_ns: i64,
    /// Written for an older alerter reading this file after a downgrade (which needs it).
    #[serde(default)]
    pub paged: bool,
    pub in_flight: Option<InFlight>,
}

/// What the guard rails say about a new attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run it: this is attempt `attempt` of the window.
    Go { attempt: u32 },
    /// Another action on this target is running.
    Busy,
    /// Too soon after the last attempt; allowed again at `until_ns`.
    Cooldown { until_ns: i64 },
    /// `max_attempts` used within the window. `page` is true the first time (tell people);
    /// one more attempt is allowed again at `frees_ns`, when the oldest counted one leaves
    /// the window.
    Exhausted {
        page: bool,
        attempts: u32,
        frees_ns: i64,
    },
}

/// The guard-rail state of every target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guard {
    pub version: u32,
    pub targets: BTreeMap<String, Target>,
}

fn ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl Guard {
    /// Decides whether an attempt on `key` may start at `now`; does not record it.
    pub fn decide(
        &mut self,
        key: &str,
        now: i64,
        max_attempts: u32,
        window: Duration,
        cooldown: Duration,
    ) -> Decision {
        let t = self.targets.entry(key.to_owned()).or_default();
        // Counted within this window, kept for the longest: two rules acting on one target
        // with different windows each count their own (a 1 h window must not erase the
        // attempts a 24 h one still counts).
        t.attempts.retain(|&a| now - a < ns(KEPT));
        if t.in_flight.is_some() {
            return Decision::Busy;
        }
        let mut recent: Vec<i64> = t
            .attempts
            .iter()
            .copied()
            .filter(|&a| now - a < ns(window))
            .collect();
        let attempts = recent.len() as u32;
        if attempts >= max_attempts {
            recent.sort_unstable();
            // The one whose leaving brings the count under the budget (later than now: it is
            // within the window).
            let oldest = recent[recent.len() - max_attempts as usize];
            let frees_ns = oldest.saturating_add(ns(window)).max(now + 1);
            let page = now >= t.paged_until_ns;
            if page {
                t.paged_until_ns = frees_ns;
                t.paged = true;
            }
            return Decision::Exhausted {
                page,
                attempts,
                frees_ns,
            };
        }
        if t.last_end_ns > 0 && now < t.last_end_ns.saturating_add(ns(cooldown)) {
            return Decision::Cooldown {
                until_ns: t.last_end_ns + ns(cooldown),
            };
        }
        Decision::Go {
            attempt: attempts + 1,
        }
    }

    /// Records the start of an attempt.
    pub fn begin(&mut self, key: &str, now: i64, f: InFlight) {
        let t = self.targets.entry(key.to_owned()).or_default();
        t.attempts.push(now);
        t.in_flight = Some(f);
    }

    /// Takes back the attempt begun at `started` (it found nothing to do): no budget spent,
    /// no cooldown started.
    pub fn cancel(&mut self, key: &str, started: i64) {
        if let Some(t) = self.targets.get_mut(key) {
            t.in_flight = None;
            if let Some(i) = t.attempts.iter().rposition(|&a| a == started) {
                t.attempts.remove(i);
            }
        }
    }

    /// Records the end of an attempt.
    pub fn end(&mut self, key: &str, now: i64) {
        if let Some(t) = self.targets.get_mut(key) {
            t.in_flight = None;
            t.last_end_ns = now;
        }
    }

    /// Takes the actions that were in flight (after a load: interrupted by a restart).
    pub fn take_interrupted(&mut self, now: i64) -> Vec<InFlight> {
        let mut out = Vec::new();
        for t in self.targets.values_mut() {
            if let Some(f) = t.in_flight.take() {
                t.last_end_ns = now;
                out.push(f);
            }
        }
        out
    }

    /// Forgets targets with no attempt in the window and nothing in flight (bounded size).
    pub fn prune(&mut self, now: i64, window: Duration) {
        self.targets.retain(|_, t| {
            t.in_flight.is_some() || t.attempts.iter().any(|&a| now - a < ns(window))
        });
    }

    /// The state file under `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(FILE)
    }

    /// Loads the state (empty when absent; an unreadable file is logged and ignored).
    pub fn load(dir: &Path) -> Guard {
        let path = Guard::path(dir);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::error!(file = %path.display(), "action state unreadable, starting empty: {e}");
                Guard::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Guard::default(),
            Err(e) => {
                tracing::error!(file = %path.display(), "cannot read action state: {e}");
                Guard::default()
            }
        }
    }

    /// Saves atomically.
    pub fn save(&self, dir: &Path) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let json = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        crate::state::write_atomic(&Guard::path(dir), &json)
            .map_err(|(p, e)| format!("{}: {e}", p.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn fl() -> InFlight {
        InFlight {
            rule: "r".into(),
            alert_id: "r:h".into(),
            action: "restart_process".into(),
            args: "pattern=x".into(),
            host: "h".into(),
            started_ns: 0,
            notify: vec![],
            tags: Default::default(),
        }
    }

    /// An attempt that found nothing to do is taken back: the budget is whole again.
    #[test]
    fn a_cancelled_attempt_spends_nothing() {
        let mut g = Guard::default();
        let hour = std::time::Duration::from_secs(3600);
        let m = std::time::Duration::from_secs(60);
        assert!(matches!(
            g.decide("t", 0, 1, hour, m),
            Decision::Go { attempt: 1 }
        ));
        g.begin("t", 0, fl());
        g.cancel("t", 0);
        assert!(matches!(
            g.decide("t", S, 1, hour, m),
            Decision::Go { attempt: 1 }
        ));
    }

    #[test]
    fn budget_cooldown_busy_and_page_once() {
        let (w, c) = (Duration::from_secs(600), Duration::from_secs(60));
        let mut g = Guard::default();
        let k = "h|restart_process|pattern=x";
        assert_eq!(g.decide(k, 0, 2, w, c), Decision::Go { attempt: 1 });
        g.begin(k, 0, fl());
        assert_eq!(g.decide(k, S, 2, w, c), Decision::Busy);
        g.end(k, 10 * S);
        assert!(
            matches!(g.decide(k, 20 * S, 2, w, c), Decision::Cooldown { until_ns } if until_ns == 70 * S)
        );
        assert_eq!(g.decide(k, 70 * S, 2, w, c), Decision::Go { attempt: 2 });
        g.begin(k, 70 * S, fl());
        g.end(k, 80 * S);
        assert_eq!(
            g.decide(k, 200 * S, 2, w, c),
            Decision::Exhausted {
                page: true,
                attempts: 2,
                frees_ns: 600 * S
            }
        );
        assert_eq!(
            g.decide(k, 300 * S, 2, w, c),
            Decision::Exhausted {
                page: false,
                attempts: 2,
                frees_ns: 600 * S
            }
        );
        // The first attempt leaves the window: one more is allowed, and a later exhaustion
        // pages again.
        assert_eq!(g.decide(k, 601 * S, 2, w, c), Decision::Go { attempt: 2 });
    }

    /// Two rules on one target, with their own windows: the shorter one's decision does not
    /// erase the attempts the longer one still counts.
    #[test]
    fn each_window_counts_its_own_attempts() {
        let (k, h, c) = (
            "local|restart_service|nginx.service",
            3600 * S,
            Duration::ZERO,
        );
        let mut g = Guard::default();
        for at in [0, 2 * h] {
            g.begin(k, at, fl());
            g.end(k, at + S);
        }
        let hour = Duration::from_secs(3600);
        assert_eq!(g.decide(k, 3 * h, 1, hour, c), Decision::Go { attempt: 1 });
        assert!(matches!(
            g.decide(k, 3 * h, 2, 24 * hour, c),
            Decision::Exhausted { attempts: 2, .. }
        ));
    }

    /// Attempts out of order (a wall clock behind the saved ones at a restart) are counted,
    /// and the window frees when the right one leaves it.
    #[test]
    fn attempts_out_of_order_are_counted() {
        let (k, h) = ("k", 3600 * S);
        let mut g = Guard::default();
        g.targets.insert(
            k.into(),
            Target {
                attempts: vec![5 * h, 2 * h, 4 * h],
                ..Target::default()
            },
        );
        let d = g.decide(
            k,
            5 * h + S,
            2,
            Duration::from_secs(2 * 3600),
            Duration::ZERO,
        );
        assert_eq!(
            d,
            Decision::Exhausted {
                page: true,
                attempts: 2,
                frees_ns: 6 * h
            }
        );
    }

    /// A spent budget pages once until its window frees, whichever rule decides meanwhile: a
    /// rule with a longer budget on the same target does not make the next one page again.
    #[test]
    fn a_spent_budget_pages_once_across_rules() {
        let (k, h) = ("k", 3600 * S);
        let hour = Duration::from_secs(3600);
        let mut g = Guard::default();
        g.begin(k, 0, fl());
        g.end(k, S);
        assert!(matches!(
            g.decide(k, h / 2, 1, hour, Duration::ZERO),
            Decision::Exhausted { page: true, .. }
        ));
        assert_eq!(
            g.decide(k, h / 2, 5, hour, Duration::ZERO),
            Decision::Go { attempt: 2 }
        );
        assert!(matches!(
            g.decide(k, h / 2 + S, 1, hour, Duration::ZERO),
            Decision::Exhausted { page: false, .. }
        ));
    }

    #[test]
    fn state_survives_a_restart_and_in_flight_is_reported_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = Guard::default();
        g.begin("k", 5 * S, fl());
        g.save(dir.path()).unwrap();
        let mut back = Guard::load(dir.path());
        assert_eq!(back, g);
        let lost = back.take_interrupted(9 * S);
        assert_eq!(lost.len(), 1);
        assert_eq!(
            back.targets["k"].attempts,
            vec![5 * S],
            "the interrupted attempt counts"
        );
        assert!(back.targets["k"].in_flight.is_none());
    }
}
