//! The types every part of the alerter shares: what a rule says it is (settings), what one
//! evaluation of a rule observed (observations), and what the state machine emits (events).
//!
//! Pipeline: `rules` (Rhai) → [`CycleResult`] → `state` (per-instance state machine) →
//! [`AlertEvent`] → `notify` (routing, silences, inhibition, notifiers; later recovery actions).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod sorted;
pub use sorted::{Fields, SortedMap, Tags};

/// Alert levels, ordered as Kapacitor's: OK < INFO < WARNING < CRITICAL.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    #[default]
    Ok,
    Info,
    Warning,
    Critical,
}

impl Level {
    /// The level's name as operators write it: OK, INFO, WARNING, CRITICAL.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Critical => "CRITICAL",
        }
    }

    /// Parses OK / INFO / WARNING (or WARN) / CRITICAL (or CRIT), case-insensitively.
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s.to_ascii_uppercase().as_str() {
            "OK" => Level::Ok,
            "INFO" => Level::Info,
            "WARNING" | "WARN" => Level::Warning,
            "CRITICAL" | "CRIT" => Level::Critical,
            _ => return None,
        })
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One level's condition for one series in one evaluation: did it match, and (for
/// hysteresis) is its reset condition true. `reset = None` means no reset condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Condition {
    pub matched: bool,
    pub reset: Option<bool>,
}

/// The level conditions a rule set on one series; a level the rule did not test is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LevelConditions {
    pub info: Option<Condition>,
    pub warn: Option<Condition>,
    pub crit: Option<Condition>,
}

/// A field value carried to templates and events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Float(f64),
    Int(i64),
    Bool(bool),
    Str(String),
}

/// What one evaluation of a rule said about one series (one alert instance).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Observation {
    /// The series' tags: with the rule name they identify the alert instance.
    pub tags: Tags,
    /// The measurement the values came from.
    pub measurement: String,
    /// Values for templates and events; by convention `value` is the one compared.
    pub fields: Fields,
    /// Time of the data point (ns since the epoch); 0 when unknown.
    pub time: i64,
    pub levels: LevelConditions,
}

/// The outcome of one scheduled evaluation of a rule.
#[derive(Debug, Clone, PartialEq)]
pub enum CycleResult {
    /// The rule ran: one observation per series it returned.
    Observed(Vec<Observation>),
    /// The query or the script failed; see [`EvalFailure`].
    Failed(EvalFailure),
}

/// Why an evaluation failed: whose fault it is decides who hears about it. A source error
/// follows the rule's `error` policy; the other kinds are the rule's own fault and raise the
/// `wk_rules` alert naming the file, line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureKind {
    /// The data source failed (unreachable, timed out, refused the query).
    Source,
    /// The script raised an error (unknown method, `()` in arithmetic, a type mismatch, a
    /// limit on data size or call depth).
    Script,
    /// The script ran past its time limit or operation budget.
    Timeout,
    /// `check()` returned something other than series.
    BadReturn,
}

impl FailureKind {
    /// The kind as logs and the `wk_alerter` self-metric spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Source => "source",
            FailureKind::Script => "script",
            FailureKind::Timeout => "timeout",
            FailureKind::BadReturn => "bad_return",
        }
    }
}

/// One failed evaluation: its kind and `file:line:column: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalFailure {
    pub kind: FailureKind,
    /// The full message, starting with `file:line:column: ` when the rule file is known.
    pub message: String,
}

impl EvalFailure {
    /// A failure of `kind` with `message`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> EvalFailure {
        EvalFailure {
            kind,
            message: message.into(),
        }
    }

    /// Whether the rule itself is at fault (everything but a source error).
    pub fn is_rule_fault(&self) -> bool {
        self.kind != FailureKind::Source
    }
}

impl fmt::Display for EvalFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A bare message is a source error (what the state machine's tests and callers outside the
/// script engine report).
impl From<&str> for EvalFailure {
    fn from(m: &str) -> EvalFailure {
        EvalFailure::new(FailureKind::Source, m)
    }
}

impl From<String> for EvalFailure {
    fn from(m: String) -> EvalFailure {
        EvalFailure::new(FailureKind::Source, m)
    }
}

/// What to do with an instance that has no data, or when the evaluation fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Policy {
    /// Go to the explicit NoData / Error state and notify at this level.
    Alert(Level),
    /// Treat as OK (recovers a firing alert).
    Ok,
    /// Keep the last state, notify nothing.
    KeepLast,
}

/// A rule's settings, declared at the top of its script and fixed at load.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSettings {
    /// The rule's name: the file name without `.rhai` unless the script sets one.
    pub name: String,
    /// Where `name` is set in the script; when it is the file's name, the `rule()` call (or
    /// 1:1 without one). `(0, 0)` only in settings not loaded from a file.
    pub name_pos: Pos,
    /// How often the rule is evaluated.
    pub every: Duration,
    /// Pending duration (`pending`, or its old name `"for"`): a level must hold this long before it fires.
    pub pending: Duration,
    /// Keep firing this long after the condition stopped being true.
    pub keep_firing: Duration,
    /// Re-notify an unchanged non-OK state this often; `None` = state changes only.
    pub repeat: Option<Duration>,
    /// Flap detection thresholds (low, high) in 0..1; `None` = off.
    pub flapping: Option<(f64, f64)>,
    /// Length of the level history used by flap detection (Kapacitor default 21).
    pub history: usize,
    /// A series absent from a result for this long is NoData (0 = at the first missing cycle).
    pub no_data_after: Duration,
    pub no_data: Policy,
    pub error: Policy,
    /// Instances not seen (no data, no state change) for this long are forgotten.
    pub expire_after: Duration,
    /// Whether an OK event is sent when an alert recovers.
    pub recoveries: bool,
    /// Series that must exist (tag sets such as `host=web3`), so that a host already silent
    /// when the alerter starts still goes NoData.
    pub expected: Vec<Tags>,
    /// Templates: id, message, details (see docs/rules.md).
    pub id_template: String,
    pub message_template: String,
    pub details_template: String,
    /// Notifier names this rule sends to.
    pub notify: Vec<String>,
    /// Where `notify` is written in the rule file (line, column; (0, 0) when unknown), for
    /// "unknown notifier" errors.
    pub notify_pos: Pos,
    /// Category for inhibition (`inhibits` of other rules match it).
    pub category: Option<String>,
    /// While this rule's instance is non-OK, it mutes instances of rules with these categories
    /// that share the listed tag values: (category, tags).
    pub inhibits: Vec<(String, Vec<String>)>,
    /// Recovery actions run when an instance fires (`actions: [...]`, docs/rules.md).
    pub actions: Vec<ActionRule>,
}

impl Default for RuleSettings {
    fn default() -> Self {
        RuleSettings {
            name: String::new(),
            every: Duration::from_secs(10),
            pending: Duration::ZERO,
            keep_firing: Duration::ZERO,
            repeat: None,
            flapping: None,
            history: 21,
            no_data_after: Duration::ZERO,
            no_data: Policy::Alert(Level::Critical),
            error: Policy::KeepLast,
            expire_after: Duration::from_secs(24 * 3600),
            recoveries: true,
            expected: Vec::new(),
            id_template: "{{rule}}:{{group}}".into(),
            message_template: "{{id}} is {{level}}".into(),
            details_template: String::new(),
            notify: Vec::new(),
            notify_pos: (0, 0),
            name_pos: (0, 0),
            category: None,
            inhibits: Vec::new(),
            actions: Vec::new(),
        }
    }
}

/// Why an event was emitted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The instance fired, changed level, or repeats (repeat interval).
    #[default]
    Alert,
    /// The instance went back to OK.
    Recovery,
    /// The instance's series stopped reporting.
    NoData,
    /// The rule's evaluation failed.
    Error,
    /// The instance started flapping (further events are suppressed until it stops).
    Flapping,
}

/// One notification-worthy change of one alert instance. `Default` is an empty `Alert` event
/// at level OK, for building events field by field (`..Default::default()`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    pub rule: String,
    /// Rendered id template: the instance's identity for humans and dedup.
    pub id: String,
    pub message: String,
    pub details: String,
    pub kind: EventKind,
    pub level: Level,
    pub previous_level: Level,
    pub tags: Tags,
    pub fields: Fields,
    /// When the evaluation that produced this event ran (ns since the epoch).
    pub time: i64,
    /// Time of the latest data point behind the event (ns; 0 when there is none): with
    /// `time` and `duration` it dates the fault by the data, not by the evaluation.
    #[serde(default)]
    pub point_time: i64,
    /// How long the instance has been non-OK (for a recovery: how long it was).
    pub duration: Duration,
    /// Notifier names the rule routes this event to.
    pub notify: Vec<String>,
    pub category: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_order_and_parse() {
        assert!(
            Level::Ok < Level::Info
                && Level::Info < Level::Warning
                && Level::Warning < Level::Critical
        );
        assert_eq!(Level::parse("crit"), Some(Level::Critical));
        assert_eq!(Level::parse("Warning"), Some(Level::Warning));
        assert_eq!(Level::parse("bad"), None);
        assert_eq!(
            serde_json::to_string(&Level::Warning).unwrap(),
            "\"WARNING\""
        );
    }
}

/// A place in a rule file: (line, column), 1-based.
pub type Pos = (usize, usize);

// The `actions: [...]` rule setting as data (parsed and checked by `crate::actions::rule`, run
// by `crate::actions::engine`): here, so that rule settings need not know the actions.

/// A raw argument value from the rule: a string (maybe with `{{tag}}` placeholders) or a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawArg {
    One(String),
    List(Vec<String>),
}

impl RawArg {
    /// Whether the value takes anything from the alert (`{{...}}`).
    pub fn is_templated(&self) -> bool {
        match self {
            RawArg::One(s) => s.contains("{{"),
            RawArg::List(l) => l.iter().any(|s| s.contains("{{")),
        }
    }
}

/// How an action's success is checked after the settle time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// The action's own probe when it has one, else the rule's query.
    Auto,
    /// The action's probe (process, port, unit state).
    Probe,
    /// Re-run the rule: the instance must be below `on`.
    Query,
    /// Both must say recovered.
    Both,
}

/// One element of `actions: [...]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionRule {
    /// `do`: the registry name.
    pub action: String,
    pub args: BTreeMap<String, RawArg>,
    /// Acts on alert events at this level or above (default CRITICAL).
    pub on: Level,
    /// The condition must have held this long (from the first evaluation that saw it).
    pub after: Duration,
    /// At most this many attempts per target within `window`; then people are paged once.
    pub max_attempts: u32,
    pub window: Duration,
    /// Wait between two attempts on one target.
    pub cooldown: Duration,
    /// Wait after the action before verifying.
    pub settle: Duration,
    /// Longest one command may run (its process group is killed then).
    pub timeout: Duration,
    pub dry_run: bool,
    pub verify: Verify,
    /// Where the map starts, and each key's value, for load errors.
    pub pos: Pos,
    pub arg_pos: BTreeMap<String, Pos>,
}

impl Default for ActionRule {
    fn default() -> Self {
        ActionRule {
            action: String::new(),
            args: BTreeMap::new(),
            on: Level::Critical,
            after: Duration::ZERO,
            max_attempts: 3,
            window: Duration::from_secs(3600),
            cooldown: Duration::from_secs(60),
            settle: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            dry_run: false,
            verify: Verify::Auto,
            pos: (0, 0),
            arg_pos: BTreeMap::new(),
        }
    }
}
