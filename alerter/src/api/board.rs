//! What the status page and the API show, published by the scheduler ([`crate::service`])
//! after each evaluation and rescan: the rules (file, version, last evaluation, problems) and
//! the alerts that are not OK. Readers take a copy; nothing here waits on the scheduler.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{OnceLock, PoisonError, RwLock};

use serde::Serialize;

use crate::notify::Router;
use crate::state::Current;

/// The shared snapshot.
#[derive(Default)]
pub struct Board {
    data: RwLock<BoardData>,
    /// The status page's URL, once the listener is bound.
    url: OnceLock<String>,
}

/// One snapshot.
#[derive(Debug, Clone, Default)]
pub struct BoardData {
    /// When the alerter started (ns).
    pub started: i64,
    /// `stream http://…` or the InfluxDB URL.
    pub source: String,
    /// One entry per rule file.
    pub rules: BTreeMap<PathBuf, RuleView>,
    /// Alerts of the built-in rules (`wk_rules`: files that do not load; `wk_source`,
    /// `wk_notifiers`).
    pub builtin: Vec<Current>,
    /// The scheduler's counters (`wk_alerter`, one per rule), by rule name.
    pub self_metrics: BTreeMap<String, wk_core::metric::Metric>,
    /// `[heartbeat]`, when configured: as of its last beat.
    pub heartbeat: Option<crate::heartbeat::HeartbeatView>,
}

/// One rule file as the scheduler runs it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RuleView {
    /// File name within the rules directory.
    pub file: String,
    /// The rule's name (empty when no version of the file ever loaded).
    pub name: String,
    /// `every`, e.g. `10s`.
    pub every: String,
    /// When the running version was loaded (ns; 0 when none runs).
    pub loaded_ns: i64,
    /// SHA-256 (first 12 hex digits) of the version that runs.
    pub version: String,
    /// SHA-256 (first 12 hex digits) of the file as it is now.
    pub file_version: String,
    /// The file on disk is newer than the version that runs and failed to load (or failed
    /// at its first evaluations and was rolled back): why.
    pub newer_file_failed: Option<String>,
    /// Time of the last evaluation (as of its tick, ns; 0 before the first).
    pub last_evaluation_ns: i64,
    /// How long the last evaluation took (ms).
    pub last_duration_ms: f64,
    /// The last evaluation's failure, while it fails.
    pub last_error: Option<String>,
    /// Series the last clean evaluation returned (null before the first).
    pub series: Option<u64>,
    /// The running version has returned no series in any of its first evaluations: why that
    /// is suspect (null once one returned a series).
    pub no_series: Option<String>,
    pub evaluations: u64,
    pub failures: u64,
    /// Its alerts that are not OK (firing, pending, NoData, Error).
    #[serde(skip)]
    pub alerts: Vec<Current>,
}

/// Counts for the page's header and the periodic log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub rules: usize,
    /// Rule files that do not load or fail at evaluation.
    pub broken: usize,
    pub firing: usize,
    pub pending: usize,
    pub silenced: usize,
    pub inhibited: usize,
    pub evaluations: u64,
    pub failures: u64,
}

/// Why an alert is muted now: `Some(("silenced"|"inhibited", reason))`.
pub fn muted(router: &Router, c: &Current, now: i64) -> Option<(&'static str, String)> {
    let reason = router.mute_reason(&c.event, now)?;
    let kind = if reason.starts_with("silenced") {
        "silenced"
    } else {
        "inhibited"
    };
    Some((kind, reason))
}

impl Board {
    /// A copy of the snapshot.
    pub fn get(&self) -> BoardData {
        self.data
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Changes the snapshot.
    pub fn update(&self, f: impl FnOnce(&mut BoardData)) {
        f(&mut self.data.write().unwrap_or_else(PoisonError::into_inner));
    }

    /// Sets the status page's URL (once).
    pub fn set_url(&self, url: String) {
        let _ = self.url.set(url);
    }

    /// The status page's URL, when it is served.
    pub fn url(&self) -> Option<&str> {
        self.url.get().map(String::as_str)
    }
}

impl BoardData {
    /// Every alert that is not OK, rules in file order then the built-in ones.
    pub fn alerts(&self) -> impl Iterator<Item = &Current> {
        self.rules
            .values()
            .flat_map(|r| r.alerts.iter())
            .chain(&self.builtin)
    }

    /// The counts, muting judged by `router` at `now`.
    pub fn counts(&self, router: &Router, now: i64) -> Counts {
        let mut c = Counts {
            rules: self.rules.len(),
            ..Counts::default()
        };
        for r in self.rules.values() {
            c.evaluations += r.evaluations;
            c.failures += r.failures;
            if r.newer_file_failed.is_some() || r.last_error.is_some() || r.name.is_empty() {
                c.broken += 1;
            }
        }
        for a in self.alerts() {
            if a.pending {
                c.pending += 1;
                continue;
            }
            c.firing += 1;
            match muted(router, a, now) {
                Some(("silenced", _)) => c.silenced += 1,
                Some(_) => c.inhibited += 1,
                None => {}
            }
        }
        c
    }
}

/// The first 12 hex digits of the SHA-256 of `text`: a rule version as the page names it.
pub fn version_of(text: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(text.as_bytes());
    hex::encode(&d[..6])
}
