//! The wrapper around every notifier: the options all kinds share, read once here rather than
//! in each notifier (Telegraf's `models/running_*.go`).

use std::sync::Arc;
use std::time::Duration;

use wk_core::options::Options;

use super::group::Grouping;
use super::{Notifier, NotifierSpec};
use crate::model::{AlertEvent, EventKind, Level};

/// Options every `[[notifiers.<kind>]]` table accepts.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifierSettings {
    /// What rules name in `notify: [...]`; unique across all notifiers.
    pub name: String,
    /// The notifier kind (registry key).
    pub kind: String,
    /// One attempt may take this long before it is cancelled (and retried).
    pub timeout: Duration,
    /// Attempts after the first for retryable failures.
    pub retries: u32,
    /// Delay before the first retry; doubles per retry (with jitter) up to `backoff_max`.
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// A message whose `retries` are spent on retryable failures is kept and tried again
    /// about every `backoff_max` for this long after its first attempt (zero: given up then).
    pub give_up_after: Duration,
    /// Whether recovery (back to OK) events are sent.
    pub send_recoveries: bool,
    /// Events below this level are not sent (see [`NotifierSettings::wants`]).
    pub min_level: Level,
    /// Events waiting for this notifier; when full the oldest is dropped (and counted).
    pub queue_size: usize,
    /// `group_by` / `group_wait` / `group_interval`: `None` sends every event on its own.
    pub group: Option<Grouping>,
}

impl NotifierSettings {
    /// The defaults: timeout 10s, 3 retries, backoff 1s doubling up to 1m, then tried again
    /// every minute for up to 24h, recoveries on, every level, a queue of 1000 events.
    pub fn new(name: impl Into<String>, kind: impl Into<String>) -> Self {
        NotifierSettings {
            name: name.into(),
            kind: kind.into(),
            timeout: Duration::from_secs(10),
            retries: 3,
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            give_up_after: Duration::from_secs(24 * 3600),
            send_recoveries: true,
            min_level: Level::Ok,
            queue_size: 1000,
            group: None,
        }
    }

    /// Reads the shared options; `kind` is the table's notifier kind.
    pub fn read(opts: &mut Options<'_, '_>, kind: &str) -> Self {
        let mut s = NotifierSettings::new("", kind);
        match opts.opt_string("name") {
            Some(n) if !n.trim().is_empty() => s.name = n,
            Some(_) => opts.error_at("name", "must not be empty"),
            None => opts.error_at(
                "name",
                "is required: rules refer to a notifier by its name in `notify: [...]`",
            ),
        }
        s.timeout = opts.duration("timeout", s.timeout);
        if s.timeout.is_zero() {
            opts.error_at("timeout", "must be greater than 0");
        }
        s.retries = opts.int("retries", i64::from(s.retries), 0, 100) as u32;
        s.backoff = opts.duration("backoff", s.backoff);
        s.backoff_max = opts.duration("backoff_max", s.backoff_max.max(s.backoff));
        if s.backoff_max < s.backoff {
            opts.error_at("backoff_max", "must not be smaller than backoff");
        }
        s.give_up_after = opts.duration("give_up_after", s.give_up_after);
        s.send_recoveries = opts.bool("send_recoveries", s.send_recoveries);
        if let Some(l) = opts.opt_string("min_level") {
            match Level::parse(&l) {
                Some(l) => s.min_level = l,
                None => opts.error_at(
                    "min_level",
                    format!("invalid level {l:?}: expected OK, INFO, WARNING or CRITICAL"),
                ),
            }
        }
        s.queue_size = opts.int("queue_size", s.queue_size as i64, 1, 1_000_000) as usize;
        s.group = Grouping::read(opts);
        s
    }

    /// Whether this notifier wants `event`.
    ///
    /// - A recovery is sent when `send_recoveries` is on and the level it recovers from was
    ///   at least `min_level` (the receiver saw the alert, so it should see the end of it).
    /// - Any other event is sent when its level is at least `min_level`, or when it lowers the
    ///   level from `min_level` or above to below it (the receiver must learn the alert it saw
    ///   is no longer at its level).
    pub fn wants(&self, event: &AlertEvent) -> bool {
        if event.kind == EventKind::Recovery {
            return self.send_recoveries && event.previous_level >= self.min_level;
        }
        event.level >= self.min_level || event.previous_level >= self.min_level
    }

    /// The delay before retry number `retry` (0-based): `backoff * 2^retry` capped at
    /// `backoff_max`, of which a random half is taken away ("equal jitter"), so that retries
    /// of many alerts do not hit a recovering endpoint at once.
    pub fn backoff_delay(&self, retry: u32) -> Duration {
        let full = self
            .backoff
            .checked_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX))
            .unwrap_or(self.backoff_max)
            .min(self.backoff_max);
        full / 2 + full.mul_f64(0.5 * fastrand::f64())
    }
}

/// A built notifier with its shared settings.
#[derive(Clone)]
pub struct RunningNotifier {
    pub settings: NotifierSettings,
    pub notifier: Arc<dyn Notifier>,
}

impl std::fmt::Debug for RunningNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningNotifier")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl RunningNotifier {
    /// Wraps a notifier built in code (tests, or notifiers not read from config).
    pub fn new(settings: NotifierSettings, notifier: impl Notifier + 'static) -> Self {
        RunningNotifier {
            settings,
            notifier: Arc::new(notifier),
        }
    }

    /// Reads the shared options, then lets `spec` read its own.
    pub fn build(spec: &NotifierSpec, opts: &mut Options<'_, '_>) -> Self {
        let settings = NotifierSettings::read(opts, spec.name);
        let notifier = (spec.build)(opts);
        RunningNotifier {
            settings,
            notifier: Arc::from(notifier),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let mut s = NotifierSettings::new("n", "log");
        s.backoff = Duration::from_secs(1);
        s.backoff_max = Duration::from_secs(5);
        for _ in 0..50 {
            let d0 = s.backoff_delay(0);
            assert!(d0 >= Duration::from_millis(500) && d0 <= Duration::from_secs(1));
            let d2 = s.backoff_delay(2);
            assert!(d2 >= Duration::from_secs(2) && d2 <= Duration::from_secs(4));
            let d9 = s.backoff_delay(9);
            assert!(d9 >= Duration::from_millis(2500) && d9 <= Duration::from_secs(5));
            let d99 = s.backoff_delay(99);
            assert!(d99 <= Duration::from_secs(5));
        }
    }

    #[test]
    fn min_level_keeps_de_escalations_and_matching_recoveries() {
        let mut s = NotifierSettings::new("n", "log");
        s.min_level = Level::Critical;
        let ev = |kind, level, previous_level| AlertEvent {
            rule: "r".into(),
            id: "r:x".into(),
            kind,
            level,
            previous_level,
            ..Default::default()
        };
        assert!(!s.wants(&ev(EventKind::Alert, Level::Warning, Level::Ok)));
        assert!(s.wants(&ev(EventKind::Alert, Level::Critical, Level::Warning)));
        assert!(s.wants(&ev(EventKind::Alert, Level::Warning, Level::Critical)));
        assert!(!s.wants(&ev(EventKind::Recovery, Level::Ok, Level::Warning)));
        assert!(s.wants(&ev(EventKind::Recovery, Level::Ok, Level::Critical)));
        s.send_recoveries = false;
        assert!(!s.wants(&ev(EventKind::Recovery, Level::Ok, Level::Critical)));
    }
}
