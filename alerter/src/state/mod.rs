//! The alert state machine: [`RuleState::apply`] turns one evaluation of a rule
//! ([`CycleResult`](crate::model::CycleResult)) at a given time into the events to notify.
//! Pure and deterministic: the clock is an argument (`now_ns`), the only I/O is
//! [`RuleState::save`]/[`RuleState::load`] (a snapshot and a journal per rule, `persist.rs`).
//!
//! One instance per tag set of the rule's series. Per instance and evaluation:
//!
//! - **Level** from the series' conditions as Kapacitor's `determineLevel` (hysteresis with
//!   reset conditions): [`determine_level`].
//! - **Pending** (`pending`, Prometheus' `for`): a non-OK level fires once it has held for `pending` (0 = at once).
//!   Escalating or de-escalating while pending keeps the pending start and fires at the level
//!   current then; clearing while pending drops it silently. Once firing, level changes (up or
//!   down) apply at once and notify (Kapacitor); pending gates only OK → firing.
//! - **keep_firing**: a firing instance whose condition cleared stays at its level this long;
//!   a non-OK level inside that window continues the alert at that level (a lower one is
//!   notified as a level change) and restarts the window at the next clear.
//! - **Notifications** on changes of the announced state (OK→level, level→level, →OK as a
//!   Recovery if `recoveries`), plus a repeat every `repeat` while non-OK and unchanged
//!   (counted from the instance's last event). `previous_level` is the level of the last event
//!   sent (Kapacitor's topic state: after a recovery not sent, the level before it).
//! - **Flapping** (Kapacitor's `percentChange` over the *effective* level, i.e. after
//!   pending and keep_firing, so what those already damp does not count): entering emits one
//!   Flapping event at the current level; every other event, recoveries included, is
//!   suppressed while flapping; leaving emits the current state if it differs from the
//!   Flapping event's (so a recovery swallowed while flapping is sent then).
//! - **NoData**: an instance (seen earlier, restored, or listed in `expected`) missing from a
//!   successful result for `no_data_after`, or for `pending` when that is 0 (counted from the
//!   first evaluation that missed it; silence waits like a condition). Its events carry no
//!   fields and say `<id> is <LEVEL>: no data since <time of the last point>`:
//!   `Alert(level)` → NoData state at that level (event kind NoData, repeats with `repeat`),
//!   `Ok` → recovers, `KeepLast` → nothing. Data coming back ends NoData at once with
//!   whatever the data says (a recovery, or an Alert event), without pending/keep_firing.
//!   An expected tag set may be a subset of the series' tags (`host=web1` for series by host
//!   and path): it is satisfied by any series that contains it.
//! - **Error** (a failed evaluation), per the `error` policy, at rule level: `KeepLast` changes
//!   nothing (no recovery, no NoData, no expiry, the NoData clocks do not run); `Ok` recovers
//!   every instance; `Alert(level)` enters the rule's Error state: one Error event (id
//!   `<rule>:error`, after `pending` like any alert, repeated only with `repeat`), and the
//!   next successful evaluation sends its recovery (if `recoveries`) while the instances
//!   continue from their last state.
//! - **Expiry**: instances neither seen nor changed for `expire_after` (0 = never) are
//!   forgotten, except expected ones; if receivers last heard a non-OK level, a recovery noting
//!   the expiry is sent (as Grafana resolves stale series) so tickets do not stay open.
//!
//! Events carry the rendered id/message/details ([`Template`], docs/rules.md "Templates").

mod flapping;
mod level;
mod machine;
mod persist;

pub use crate::template::{
    DEFAULT_DETAILS, Template, TemplateData, TemplateError, TemplateErrorKind,
};
pub use flapping::{FlapState, percent_change};
pub use level::determine_level;
pub use machine::{
    Current, DEFAULT_ID, DEFAULT_MESSAGE, InstanceStatus, RuleState, STATE_CHECKPOINT,
    TemplateSettingError, Templates,
};
pub use persist::{
    JOURNAL_MIN_BYTES, PersistError, Persister, STATE_VERSION, StateSave, journal_path,
    remove_state, set_aside, state_path, write_atomic, write_save,
};
