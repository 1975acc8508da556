//! State machine tests. The clock is simulated: every `apply` gets its time explicitly.

use super::*;
use crate::model::{Condition, LevelConditions};
use EventKind::{Alert, Error as Err, Flapping, NoData, Recovery};
use Level::{Critical as C, Info as I, Ok as O, Warning as W};

const SEC: i64 = 1_000_000_000;
/// An arbitrary start of the simulated clock.
const T0: i64 = 1_800_000_000 * SEC;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn tags(pairs: &[(&str, &str)]) -> Tags {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A series of host `host` whose conditions put it at `level` (no resets).
fn obs(host: &str, level: Level) -> Observation {
    let c = |l: Level| {
        Some(Condition {
            matched: level == l,
            reset: None,
        })
    };
    let mut fields = crate::model::Fields::new();
    fields.insert("value".to_string(), Value::Float(42.25));
    Observation {
        tags: tags(&[("host", host)]),
        measurement: "cpu".into(),
        fields,
        time: 0,
        levels: LevelConditions {
            info: c(I),
            warn: c(W),
            crit: c(C),
        },
    }
}

fn seen(list: &[Observation]) -> CycleResult {
    CycleResult::Observed(list.to_vec())
}

fn base() -> RuleSettings {
    RuleSettings {
        name: "cpu".into(),
        every: secs(10),
        ..RuleSettings::default()
    }
}

/// A rule's state driven by a simulated clock in seconds after T0.
struct Sim {
    st: RuleState,
    s: RuleSettings,
}

impl Sim {
    fn new(s: RuleSettings) -> Sim {
        Sim {
            st: RuleState::new(),
            s,
        }
    }

    fn at(&mut self, t: i64, r: CycleResult) -> Vec<AlertEvent> {
        self.st.apply(&self.s, &r, T0 + t * SEC)
    }

    /// One host's series at `level` at second `t`: the (kind, level) of the events.
    fn one(&mut self, t: i64, level: Level) -> Vec<(EventKind, Level)> {
        kl(&self.at(t, seen(&[obs("web1", level)])))
    }
}

fn kl(events: &[AlertEvent]) -> Vec<(EventKind, Level)> {
    events.iter().map(|e| (e.kind, e.level)).collect()
}

#[test]
fn notifies_state_changes_only() {
    let mut sim = Sim::new(base());
    assert_eq!(sim.one(0, O), []);
    let ev = sim.at(10, seen(&[obs("web1", C)]));
    assert_eq!(kl(&ev), [(Alert, C)]);
    let e = &ev[0];
    assert_eq!(e.id, "cpu:host=web1");
    assert_eq!(e.message, "cpu:host=web1 is CRITICAL");
    assert_eq!(
        (e.previous_level, e.duration, e.time),
        (O, Duration::ZERO, T0 + 10 * SEC)
    );
    assert_eq!(e.tags, tags(&[("host", "web1")]));
    assert_eq!(e.fields.get("value"), Some(&Value::Float(42.25)));
    assert!(
        e.details
            .contains("kind: alert\nlevel: CRITICAL (previous: OK)"),
        "{}",
        e.details
    );
    assert_eq!(sim.one(20, C), []);
    assert_eq!(sim.one(30, C), []);
    // De-escalation while firing applies at once and notifies (Kapacitor).
    let ev = sim.at(40, seen(&[obs("web1", W)]));
    assert_eq!(kl(&ev), [(Alert, W)]);
    assert_eq!((ev[0].previous_level, ev[0].duration), (C, secs(30)));
    let ev = sim.at(50, seen(&[obs("web1", O)]));
    assert_eq!(kl(&ev), [(Recovery, O)]);
    assert_eq!((ev[0].previous_level, ev[0].duration), (W, secs(40)));
    assert_eq!(sim.one(60, O), []);
}

#[test]
fn events_carry_settings_and_rendered_templates() {
    let mut s = base();
    s.message_template = "{{host}}: CPU {{value:.1}}% is {{level}} for {{duration}}".into();
    s.details_template = "{{message}} / {{previous_level}}".into();
    s.id_template = "{{rule}}/{{tags.host}}".into();
    s.notify = vec!["ops-email".into()];
    s.category = Some("system".into());
    let mut sim = Sim::new(s);
    sim.at(0, seen(&[obs("web1", W)]));
    let ev = sim.at(330, seen(&[obs("web1", C)]));
    let e = &ev[0];
    assert_eq!(e.id, "cpu/web1");
    assert_eq!(e.message, "web1: CPU 42.2% is CRITICAL for 5m30s");
    assert_eq!(e.details, "web1: CPU 42.2% is CRITICAL for 5m30s / WARNING");
    assert_eq!(
        (e.notify.clone(), e.category.clone()),
        (vec!["ops-email".to_string()], Some("system".to_string()))
    );
}

#[test]
fn a_broken_template_falls_back_to_the_default() {
    let mut s = base();
    s.message_template = "{{host".into();
    let err = Templates::compile(&s).unwrap_err();
    assert_eq!((err.setting, err.source.offset), ("message", 0));
    let mut sim = Sim::new(s);
    let ev = sim.at(0, seen(&[obs("web1", C)]));
    assert_eq!(ev[0].message, "cpu:host=web1 is CRITICAL");
}

/// Kapacitor's documented example run through the state machine: 60/70/80 with resets
/// below 50/60/70 turn 61 73 64 85 62 56 47 into INFO WARNING WARNING CRITICAL INFO INFO OK,
/// so only the changes notify.
#[test]
fn hysteresis_example_notifies_its_changes() {
    let mut sim = Sim::new(base());
    let series = |v: f64| {
        let c = |t: f64, r: f64| {
            Some(Condition {
                matched: v > t,
                reset: Some(v < r),
            })
        };
        let mut o = obs("web1", O);
        o.levels = LevelConditions {
            info: c(60.0, 50.0),
            warn: c(70.0, 60.0),
            crit: c(80.0, 70.0),
        };
        o
    };
    let mut got = Vec::new();
    for (i, v) in [61.0, 73.0, 64.0, 85.0, 62.0, 56.0, 47.0]
        .into_iter()
        .enumerate()
    {
        got.push(kl(&sim.at(i as i64 * 10, seen(&[series(v)]))));
    }
    let want: Vec<Vec<(EventKind, Level)>> = vec![
        vec![(Alert, I)],
        vec![(Alert, W)],
        vec![],
        vec![(Alert, C)],
        vec![(Alert, I)],
        vec![],
        vec![(Recovery, O)],
    ];
    assert_eq!(got, want);
}

/// A pending start stored before the wall clock stepped back an hour would have held the
/// alert for that hour; after `clock_stepped_back` it fires one `pending` after the step.
#[test]
fn a_clock_set_back_does_not_stretch_pending() {
    let mut s = base();
    s.pending = secs(30);
    let mut sim = Sim::new(s);
    assert_eq!(sim.one(3600, C), []);
    sim.st.clock_stepped_back(T0);
    assert_eq!(sim.one(0, C), []);
    assert_eq!(sim.one(20, C), []);
    assert_eq!(sim.one(30, C), [(Alert, C)], "one pending after the step");
}

#[test]
fn pending_then_clear_never_notifies() {
    let mut s = base();
    s.pending = secs(30);
    let mut sim = Sim::new(s);
    for t in [0, 10, 20] {
        assert_eq!(sim.one(t, C), [], "t={t}");
    }
    assert_eq!(sim.st.instances()[0].pending_since, Some(T0));
    assert_eq!(sim.one(30, O), []);
    assert_eq!(sim.one(40, O), []);
    assert_eq!(sim.st.instances()[0].pending_since, None);
    // A fresh pending period after the clear.
    for t in [50, 60, 70] {
        assert_eq!(sim.one(t, C), [], "t={t}");
    }
    let ev = sim.at(80, seen(&[obs("web1", C)]));
    assert_eq!(kl(&ev), [(Alert, C)]);
    assert_eq!(
        ev[0].duration,
        secs(30),
        "duration counts from the pending start"
    );
}

#[test]
fn escalation_while_pending_keeps_the_pending_start() {
    let mut s = base();
    s.pending = secs(30);
    let mut sim = Sim::new(s);
    assert_eq!(sim.one(0, W), []);
    assert_eq!(sim.one(10, C), []);
    assert_eq!(sim.one(20, W), []);
    // Fires 30 s after the first non-OK level, at the level current then.
    assert_eq!(sim.one(30, C), [(Alert, C)]);
    // Once firing, a de-escalation applies at once.
    assert_eq!(sim.one(40, W), [(Alert, W)]);
}

#[test]
fn keep_firing_holds_the_alert_after_it_cleared() {
    let mut s = base();
    s.keep_firing = secs(30);
    let mut sim = Sim::new(s);
    assert_eq!(sim.one(0, C), [(Alert, C)]);
    assert_eq!(sim.one(10, O), []);
    assert_eq!(sim.one(20, O), []);
    // Bad again inside the window: the alert simply continues, the window restarts.
    assert_eq!(sim.one(30, C), []);
    assert_eq!(sim.one(40, O), []);
    assert_eq!(sim.one(50, O), []);
    assert_eq!(sim.one(60, O), []);
    let ev = sim.at(70, seen(&[obs("web1", O)]));
    assert_eq!(kl(&ev), [(Recovery, O)]);
    assert_eq!(ev[0].duration, secs(70));
}

#[test]
fn keep_firing_window_then_a_lower_level_changes_the_level() {
    let mut s = base();
    s.keep_firing = secs(30);
    let mut sim = Sim::new(s);
    assert_eq!(sim.one(0, C), [(Alert, C)]);
    assert_eq!(sim.one(10, O), [], "held at CRITICAL");
    assert_eq!(sim.one(20, W), [(Alert, W)]);
    assert_eq!(sim.one(30, O), []);
    assert_eq!(sim.one(60, O), [(Recovery, O)]);
}

#[test]
fn repeat_renotifies_an_unchanged_alert() {
    let mut s = base();
    s.repeat = Some(secs(60));
    let mut sim = Sim::new(s);
    let mut at = Vec::new();
    for t in (0..=130).step_by(10) {
        for (k, l) in sim.one(t, C) {
            at.push((t, k, l));
        }
    }
    assert_eq!(at, [(0, Alert, C), (60, Alert, C), (120, Alert, C)]);
    // A level change resets the repeat clock.
    assert_eq!(sim.one(140, W), [(Alert, W)]);
    assert_eq!(sim.one(190, W), []);
    assert_eq!(sim.one(200, W), [(Alert, W)]);
    assert_eq!(sim.one(210, O), [(Recovery, O)]);
    assert_eq!(sim.one(300, O), [], "OK is never repeated");
}

/// docs/kapacitor-to-rhai.md §7: `repeat` equal to `every` is Kapacitor without
/// `.stateChangesOnly()`: an event at every evaluation while non-OK, none while pending,
/// none for OK.
#[test]
fn repeat_equal_to_every_reminds_at_every_evaluation_once_firing() {
    let mut s = base();
    s.repeat = Some(secs(10));
    s.pending = secs(20);
    let mut sim = Sim::new(s);
    let got: Vec<_> = [
        (0, C),
        (10, C),
        (20, C),
        (30, C),
        (40, W),
        (50, W),
        (60, O),
        (70, O),
    ]
    .into_iter()
    .flat_map(|(t, l)| sim.one(t, l).into_iter().map(move |e| (t, e)))
    .collect();
    assert_eq!(
        got,
        [
            (20, (Alert, C)),
            (30, (Alert, C)),
            (40, (Alert, W)),
            (50, (Alert, W)),
            (60, (Recovery, O)),
        ]
    );
}

#[test]
fn no_recoveries_tracks_state_silently() {
    let mut s = base();
    s.recoveries = false;
    let mut sim = Sim::new(s);
    assert_eq!(sim.one(0, C), [(Alert, C)]);
    assert_eq!(sim.one(10, O), []);
    assert_eq!(sim.one(20, C), [(Alert, C)]);
}

#[test]
fn flapping_suppresses_until_it_settles() {
    let mut s = base();
    s.flapping = Some((0.25, 0.45));
    s.history = 10;
    let mut sim = Sim::new(s);
    // Kapacitor's weighted change fractions: 0.18, 0.09, 0.31, 0.34, 0.55 → flapping at the 5th.
    assert_eq!(sim.one(0, C), [(Alert, C)]);
    assert_eq!(sim.one(10, O), [(Recovery, O)]);
    assert_eq!(sim.one(20, C), [(Alert, C)]);
    assert_eq!(sim.one(30, O), [(Recovery, O)]);
    let ev = sim.at(40, seen(&[obs("web1", C)]));
    assert_eq!(kl(&ev), [(Flapping, C)]);
    assert_eq!(ev[0].previous_level, O);
    assert!(
        ev[0]
            .message
            .ends_with("(flapping: notifications suppressed until it settles)"),
        "{}",
        ev[0].message
    );
    // Everything is suppressed while flapping, recoveries included.
    let mut t = 50;
    for l in [O, C, O, C, O, C] {
        assert_eq!(sim.one(t, l), [], "t={t}");
        t += 10;
    }
    assert!(sim.st.instances()[0].flapping);
    // Steady OK: the fraction decays below 0.25 and the swallowed recovery goes out once.
    let mut after = Vec::new();
    for _ in 0..20 {
        for (k, l) in sim.one(t, O) {
            after.push((t, k, l));
        }
        t += 10;
    }
    assert!(!sim.st.instances()[0].flapping);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!((after[0].1, after[0].2), (Recovery, O));
}

#[test]
fn leaving_flapping_sends_the_changed_state() {
    let mut s = base();
    s.flapping = Some((0.25, 0.5));
    s.history = 10;
    let mut sim = Sim::new(s);
    let mut t = 0;
    let mut got = Vec::new();
    // Flap until flapping, ending on OK announced... then settle at CRITICAL.
    while !sim.st.instances().first().is_some_and(|i| i.flapping) {
        got.extend(sim.one(t, if (t / 10) % 2 == 0 { C } else { O }));
        t += 10;
    }
    let announced = sim.st.instances()[0].notified_level;
    let mut after = Vec::new();
    for _ in 0..20 {
        after.extend(sim.one(t, W));
        t += 10;
    }
    assert_ne!(announced, W);
    assert_eq!(after, [(Alert, W)], "one event when flapping ends");
}

#[test]
fn flapping_ignores_what_pending_already_damps() {
    let mut s = base();
    s.flapping = Some((0.25, 0.5));
    s.history = 10;
    s.pending = secs(30);
    let mut sim = Sim::new(s);
    for i in 0..30 {
        assert_eq!(sim.one(i * 10, if i % 2 == 0 { C } else { O }), []);
    }
    assert!(!sim.st.instances()[0].flapping);
}

#[test]
fn no_data_for_an_expected_host_never_seen() {
    let mut s = base();
    s.expected = vec![tags(&[("host", "web3")])];
    s.no_data_after = secs(30);
    let mut sim = Sim::new(s);
    let web3 = tags(&[("host", "web3")]);
    for t in [0, 10, 20] {
        assert_eq!(kl(&sim.at(t, seen(&[obs("web1", O)]))), [], "t={t}");
    }
    let ev = sim.at(30, seen(&[obs("web1", O)]));
    assert_eq!(kl(&ev), [(NoData, C)]);
    assert_eq!(
        (ev[0].tags.clone(), ev[0].id.as_str()),
        (web3.clone(), "cpu:host=web3")
    );
    assert_eq!(ev[0].duration, secs(30));
    assert_eq!(kl(&sim.at(40, seen(&[obs("web1", O)]))), []);
    // It reports at last: normal evaluation, a recovery.
    let ev = sim.at(50, seen(&[obs("web1", O), obs("web3", O)]));
    assert_eq!(kl(&ev), [(Recovery, O)]);
    assert_eq!(ev[0].tags, web3);
}

#[test]
fn no_data_policies() {
    // Alert(level): NoData at that level, then data back (bad) → an Alert event.
    let mut s = base();
    s.no_data = Policy::Alert(W);
    let mut sim = Sim::new(s.clone());
    assert_eq!(sim.one(0, O), []);
    assert_eq!(kl(&sim.at(10, seen(&[]))), [(NoData, W)]);
    assert_eq!(kl(&sim.at(20, seen(&[]))), []);
    assert!(sim.st.instances()[0].no_data);
    assert_eq!(sim.one(30, C), [(Alert, C)]);
    // ... or back OK → a recovery.
    assert_eq!(kl(&sim.at(40, seen(&[]))), [(NoData, W)]);
    assert_eq!(sim.one(50, O), [(Recovery, O)]);

    // Ok: a firing instance whose series vanished recovers.
    s.no_data = Policy::Ok;
    let mut sim = Sim::new(s.clone());
    assert_eq!(sim.one(0, C), [(Alert, C)]);
    assert_eq!(kl(&sim.at(10, seen(&[]))), [(Recovery, O)]);

    // KeepLast: nothing while missing; coming back OK recovers.
    s.no_data = Policy::KeepLast;
    let mut sim = Sim::new(s);
    assert_eq!(sim.one(0, C), [(Alert, C)]);
    for t in [10, 20, 30] {
        assert_eq!(kl(&sim.at(t, seen(&[]))), []);
    }
    assert_eq!(sim.one(40, O), [(Recovery, O)]);
}

#[test]
fn no_data_repeats_only_with_repeat() {
    let mut s = base();
    s.repeat = Some(secs(30));
    let mut sim = Sim::new(s);
    sim.one(0, O);
    let mut got = Vec::new();
    for t in (10..=70).step_by(10) {
        for (k, l) in kl(&sim.at(t, seen(&[]))) {
            got.push((t, k, l));
        }
    }
    assert_eq!(got, [(10, NoData, C), (40, NoData, C), (70, NoData, C)]);
}

#[test]
fn expected_subset_is_satisfied_by_more_specific_series() {
    let mut s = base();
    s.expected = vec![tags(&[("host", "web1")])];
    let with_path = |path: &str, l: Level| {
        let mut o = obs("web1", l);
        o.tags.insert("path".into(), path.into());
        o
    };
    // Reporting from the start: no extra instance, no NoData.
    let mut sim = Sim::new(s.clone());
    assert_eq!(
        kl(&sim.at(0, seen(&[with_path("/", O), with_path("/var", O)]))),
        []
    );
    assert_eq!(sim.st.instance_count(), 2);
    // Silent at start: the expected tag set goes NoData, then recovers and gives way.
    let mut sim = Sim::new(s);
    assert_eq!(kl(&sim.at(0, seen(&[]))), [(NoData, C)]);
    let ev = sim.at(10, seen(&[with_path("/", O)]));
    assert_eq!(kl(&ev), [(Recovery, O)]);
    assert_eq!(ev[0].tags, tags(&[("host", "web1")]));
    assert_eq!(sim.st.instance_count(), 1);
}

#[test]
fn error_keep_last_changes_nothing() {
    let mut s = base();
    s.no_data_after = secs(30);
    let mut sim = Sim::new(s);
    assert_eq!(sim.one(0, C), [(Alert, C)]);
    for t in (10..=200).step_by(10) {
        assert_eq!(
            kl(&sim.at(
                t,
                CycleResult::Failed("influxdb: connection refused".into())
            )),
            []
        );
    }
    // Evaluation works again: the alert simply continues (no recovery, no re-alert)...
    assert_eq!(sim.one(210, C), []);
    // ...and a series missing after the outage is not NoData at once (its clock starts now).
    assert_eq!(kl(&sim.at(220, seen(&[]))), []);
    assert_eq!(kl(&sim.at(240, seen(&[]))), []);
    assert_eq!(kl(&sim.at(250, seen(&[]))), [(NoData, C)]);
}

#[test]
fn error_alert_sends_one_event_and_its_recovery() {
    let mut s = base();
    s.error = Policy::Alert(C);
    let mut sim = Sim::new(s);
    assert_eq!(sim.one(0, W), [(Alert, W)]);
    let mut errs = Vec::new();
    for t in (10..=60).step_by(10) {
        errs.extend(sim.at(t, CycleResult::Failed("query timed out".into())));
    }
    assert_eq!(kl(&errs), [(Err, C)]);
    let e = &errs[0];
    assert_eq!(
        (e.id.as_str(), e.message.as_str()),
        ("cpu:error", "cpu: evaluation failed: query timed out")
    );
    assert!(
        e.details.contains("error: query timed out"),
        "{}",
        e.details
    );
    assert_eq!(sim.st.error_state(), Some((C, T0 + 10 * SEC)));
    // Back: the Error state recovers, the instance continues where it was (still WARNING).
    let ev = sim.at(70, seen(&[obs("web1", W)]));
    assert_eq!(kl(&ev), [(Recovery, O)]);
    assert_eq!(
        (ev[0].id.as_str(), ev[0].previous_level, ev[0].duration),
        ("cpu:error", C, secs(60))
    );
    assert_eq!(sim.st.error_state(), None);
    assert_eq!(sim.one(80, O), [(Recovery, O)]);
}

#[test]
fn error_alert_repeats_with_repeat_and_waits_for_pending() {
    let mut s = base();
    s.error = Policy::Alert(W);
    s.repeat = Some(secs(60));
    s.pending = secs(20);
    let mut sim = Sim::new(s);
    let mut got = Vec::new();
    for t in (0..=140).step_by(10) {
        for (k, l) in kl(&sim.at(t, CycleResult::Failed("x".into()))) {
            got.push((t, k, l));
        }
    }
    assert_eq!(got, [(20, Err, W), (80, Err, W), (140, Err, W)]);
    // A failure shorter than pending is forgotten silently.
    let mut sim2 = Sim::new(sim.s.clone());
    assert_eq!(kl(&sim2.at(0, CycleResult::Failed("x".into()))), []);
    assert_eq!(kl(&sim2.at(10, seen(&[]))), []);
}

#[test]
fn error_ok_recovers_and_evaluation_resumes() {
    let mut s = base();
    s.error = Policy::Ok;
    let mut sim = Sim::new(s);
    assert_eq!(sim.one(0, C), [(Alert, C)]);
    assert_eq!(
        kl(&sim.at(10, CycleResult::Failed("x".into()))),
        [(Recovery, O)]
    );
    assert_eq!(kl(&sim.at(20, CycleResult::Failed("x".into()))), []);
    assert_eq!(sim.one(30, C), [(Alert, C)]);
}

#[test]
fn restart_mid_alert_neither_renotifies_nor_loses_the_recovery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = base();
    s.repeat = Some(secs(3600));
    let mut sim = Sim::new(s.clone());
    assert_eq!(sim.one(0, C), [(Alert, C)]);
    assert_eq!(sim.one(10, C), []);
    sim.st.save(dir.path(), "cpu").expect("save");

    // Restart: the same firing observation → no event.
    let mut again = Sim {
        st: RuleState::load(dir.path(), "cpu"),
        s: s.clone(),
    };
    assert_eq!(again.one(120, C), []);
    // It cleared: exactly one recovery, with the duration counted from before the restart.
    let ev = again.at(130, seen(&[obs("web1", O)]));
    assert_eq!(kl(&ev), [(Recovery, O)]);
    assert_eq!((ev[0].duration, ev[0].previous_level), (secs(130), C));
    assert_eq!(again.one(140, O), []);

    // A restart during pending keeps the pending start.
    let mut p = s.clone();
    p.pending = secs(60);
    let mut sim = Sim::new(p.clone());
    assert_eq!(sim.one(0, C), []);
    sim.st.save(dir.path(), "cpu").expect("save");
    let mut again = Sim {
        st: RuleState::load(dir.path(), "cpu"),
        s: p,
    };
    assert_eq!(again.one(50, C), []);
    assert_eq!(again.one(60, C), [(Alert, C)]);
}

#[test]
fn restart_restores_no_data_error_and_flapping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = base();
    s.error = Policy::Alert(C);
    s.flapping = Some((0.25, 0.5));
    s.history = 8;
    let mut sim = Sim::new(s.clone());
    let mut t = 0;
    while !sim.st.instances().first().is_some_and(|i| i.flapping) {
        sim.one(t, if (t / 10) % 2 == 0 { C } else { O });
        t += 10;
    }
    sim.at(t, seen(&[obs("web1", O), obs("web2", O)]));
    // web2 is not flapping: its NoData is notified while web1 is still suppressed.
    let ev = sim.at(t + 10, seen(&[obs("web1", O)]));
    assert_eq!(
        (kl(&ev), ev[0].tags.clone()),
        (vec![(NoData, C)], tags(&[("host", "web2")]))
    );
    sim.at(t + 20, CycleResult::Failed("down".into()));
    let before: Vec<InstanceStatus> = sim.st.instances();
    sim.st.save(dir.path(), "cpu").expect("save");
    let back = RuleState::load(dir.path(), "cpu");
    assert_eq!(back.instances(), before);
    assert_eq!(back.error_state(), sim.st.error_state());
    assert!(back.instances().iter().any(|i| i.flapping));
    assert!(back.instances().iter().any(|i| i.no_data));
}

#[test]
fn expiry_bounds_the_instance_count() {
    let mut s = base();
    s.expire_after = secs(60);
    s.no_data = Policy::KeepLast;
    let mut sim = Sim::new(s);
    let mut max = 0;
    for i in 0..200 {
        // A new short-lived host every cycle (containers).
        let host = format!("c{i}");
        let ev = sim.at(i * 10, seen(&[obs(&host, O)]));
        assert_eq!(kl(&ev), []);
        max = max.max(sim.st.instance_count());
    }
    // Seen within the last 60 s: the current host and the five before it.
    assert!(max <= 7, "instances grew to {max}");
    assert_eq!(sim.st.instance_count(), 6);
}

#[test]
fn expiring_a_no_data_alert_closes_it() {
    let mut s = base();
    s.expire_after = secs(60);
    let mut sim = Sim::new(s);
    assert_eq!(sim.one(0, O), []);
    assert_eq!(kl(&sim.at(10, seen(&[]))), [(NoData, C)]);
    let mut got = Vec::new();
    for t in (20..=80).step_by(10) {
        for e in sim.at(t, seen(&[])) {
            got.push((t, e.kind, e.level, e.message));
        }
    }
    assert_eq!(
        got,
        [(
            70,
            Recovery,
            O,
            "cpu:host=web1 is OK (expired: not seen for 1m10s)".to_string()
        )]
    );
    assert_eq!(sim.st.instance_count(), 0);
}

#[test]
fn expected_instances_never_expire() {
    let mut s = base();
    s.expire_after = secs(60);
    s.expected = vec![tags(&[("host", "web9")])];
    let mut sim = Sim::new(s);
    let mut got = Vec::new();
    for t in (0..=600).step_by(10) {
        got.extend(kl(&sim.at(t, seen(&[]))));
    }
    assert_eq!(
        got,
        [(NoData, C)],
        "one NoData, never expired and re-alerted"
    );
    assert_eq!(sim.st.instance_count(), 1);
}

#[test]
fn same_inputs_same_outputs() {
    let run = || {
        let mut s = base();
        s.flapping = Some((0.25, 0.5));
        s.pending = secs(10);
        s.repeat = Some(secs(30));
        let mut sim = Sim::new(s);
        let mut all = Vec::new();
        for i in 0..50i64 {
            let l = [O, C, W, C, O, O, I][(i * 7 % 11) as usize % 7];
            let hosts: Vec<Observation> = (0..3)
                .filter(|h| (i + h) % 5 != 0)
                .map(|h| obs(&format!("h{h}"), l))
                .collect();
            all.extend(sim.at(i * 10, seen(&hosts)));
        }
        all
    };
    let a = run();
    assert!(!a.is_empty());
    assert_eq!(a, run());
}

/// Regression: NoData fired at the first missing evaluation even with `for`.
#[test]
fn no_data_honours_for_unless_no_data_after_is_set() {
    let mut s = base();
    s.pending = secs(30);
    let mut sim = Sim::new(s.clone());
    assert_eq!(sim.one(0, O), []);
    for t in [10, 20, 30] {
        assert_eq!(kl(&sim.at(t, seen(&[]))), [], "t={t}");
    }
    let ev = sim.at(40, seen(&[]));
    assert_eq!(kl(&ev), [(NoData, C)]);
    assert_eq!(ev[0].duration, secs(30));
    // Its own no_data_after wins over `for`.
    s.no_data_after = secs(10);
    let mut sim = Sim::new(s);
    assert_eq!(sim.one(0, O), []);
    assert_eq!(kl(&sim.at(10, seen(&[]))), []);
    assert_eq!(kl(&sim.at(20, seen(&[]))), [(NoData, C)]);
}

/// Regression: a NoData event rendered the rule's message with the last values ("CPU idle
/// 97.3% is CRITICAL") and "no data since" named the last evaluation, not the last point.
#[test]
fn no_data_names_the_last_point_and_shows_no_stale_value() {
    let mut s = base();
    s.message_template = "CPU idle {{value:.1}}% is {{level}}".into();
    let mut sim = Sim::new(s);
    let mut o = obs("web1", O);
    o.time = T0 - 5 * SEC;
    assert_eq!(kl(&sim.at(0, seen(&[o]))), []);
    let ev = sim.at(10, seen(&[]));
    assert_eq!(kl(&ev), [(NoData, C)]);
    let since = template::format_rfc3339(T0 - 5 * SEC);
    assert_eq!(
        ev[0].message,
        format!("cpu:host=web1 is CRITICAL: no data since {since}")
    );
    assert!(ev[0].fields.is_empty(), "{:?}", ev[0].fields);
    assert!(!ev[0].details.contains("42.2"), "{}", ev[0].details);
    // An expected series that never reported says so.
    let mut s = base();
    s.expected = vec![tags(&[("host", "web3")])];
    let mut sim = Sim::new(s);
    let ev = sim.at(0, seen(&[]));
    assert_eq!(kl(&ev), [(NoData, C)]);
    assert_eq!(
        ev[0].message,
        "cpu:host=web3 is CRITICAL: no data yet (expected, never reported)"
    );
}

/// After a restart the actions engine hears of instances still firing from these (no new
/// event comes for an unchanged alert), with the id and level receivers know.
#[test]
fn firing_events_name_what_still_fires() {
    let mut sim = Sim::new(base());
    sim.at(10, seen(&[obs("web1", C), obs("web2", O)]));
    let ev = sim.st.firing_events(&sim.s, T0 + 40 * SEC);
    assert_eq!(ev.len(), 1);
    assert_eq!(
        (ev[0].id.as_str(), ev[0].level, ev[0].kind),
        ("cpu:host=web1", C, Alert)
    );
    assert_eq!(ev[0].duration, secs(30));
    sim.at(50, seen(&[obs("web1", O), obs("web2", O)]));
    assert!(sim.st.firing_events(&sim.s, T0 + 60 * SEC).is_empty());
}

/// The status page's view: a pending instance shows the level it waits to fire at, then the
/// firing one; an OK instance is not listed.
#[test]
fn current_lists_pending_then_firing_and_not_ok_instances() {
    let mut s = base();
    s.pending = secs(20);
    s.message_template = "{{host}} at {{value}}".into();
    let mut sim = Sim::new(s);
    sim.at(0, seen(&[obs("web1", C), obs("web2", O)]));
    let c = sim.st.current(&sim.s, T0);
    assert_eq!(c.len(), 1, "{c:?}");
    assert!(c[0].pending);
    assert_eq!((c[0].event.level, c[0].since), (C, Some(T0)));
    assert_eq!(c[0].event.message, "web1 at 42.25");
    sim.at(20, seen(&[obs("web1", C), obs("web2", O)]));
    let c = sim.st.current(&sim.s, T0 + 20 * SEC);
    assert!(
        !c[0].pending && c[0].event.kind == Alert && c[0].event.level == C,
        "{c:?}"
    );
    sim.at(30, seen(&[obs("web1", O), obs("web2", O)]));
    assert!(sim.st.current(&sim.s, T0 + 30 * SEC).is_empty());
}

/// Issue 13: results in tag order are merged with the instances in one walk; a result out of
/// order or repeating a series gives the same instances, events and event order (the last
/// repeat wins), as the map built for it before.
#[test]
fn results_out_of_tag_order_or_repeated_give_the_same_events() {
    let ordered = [obs("a", C), obs("b", O), obs("c", W), obs("d", C)];
    let shuffled = [
        obs("d", O),
        obs("c", W),
        obs("a", C),
        obs("d", C),
        obs("b", O),
    ];
    let mut one = Sim::new(base());
    let mut two = Sim::new(base());
    let order = |ev: &[AlertEvent]| -> Vec<(String, Level)> {
        ev.iter()
            .map(|e| (e.tags["host"].clone(), e.level))
            .collect()
    };
    let a = one.at(0, seen(&ordered));
    let b = two.at(0, seen(&shuffled));
    assert_eq!(a, b);
    assert_eq!(
        order(&a),
        [("a".into(), C), ("c".into(), W), ("d".into(), C)]
    );
    // New series between known ones, and known ones missing: same on both paths.
    let next = [obs("aa", C), obs("c", O), obs("e", W)];
    let mut rev = next.clone();
    rev.reverse();
    let a = one.at(10, seen(&next));
    let b = two.at(10, seen(&rev));
    assert_eq!(a, b);
    // Observed series first, in tag order, then the missing ones going NoData (pending 0).
    assert_eq!(
        order(&a),
        [
            ("aa".into(), C),
            ("c".into(), O),
            ("e".into(), W),
            ("a".into(), C),
            ("b".into(), C),
            ("d".into(), C)
        ]
    );
    assert_eq!(one.st.instances(), two.st.instances());
    assert_eq!(one.st.instance_count(), 6);
}

/// Issue 13: a state whose evaluations only move `last_seen`, `last_point` and the values is
/// saved at checkpoints (a snapshot); any change a restart needs exactly is saved at once, as
/// journal records of the changed instances only.
#[test]
fn saving_is_due_on_lasting_changes_and_at_checkpoints() {
    use crate::state::StateSave;
    #[derive(Debug, PartialEq)]
    enum Due {
        No,
        Snapshot,
        Records(usize),
    }
    use Due::*;
    let mut s = base();
    s.pending = secs(30);
    let mut sim = Sim::new(s);
    let due = |sim: &mut Sim, t: i64| match sim.st.due_save(T0 + t * SEC, "cpu").unwrap() {
        None => No,
        Some(StateSave::Snapshot { .. }) => Snapshot,
        Some(StateSave::Journal(j)) => Records(j.iter().filter(|b| **b == b'\n').count()),
    };
    assert_eq!(due(&mut sim, 0), No, "nothing evaluated yet");
    sim.at(0, seen(&[obs("web1", O), obs("web2", O)]));
    assert_eq!(due(&mut sim, 0), Snapshot, "new instances, no snapshot yet");
    sim.at(10, seen(&[obs("web1", O), obs("web2", O)]));
    assert_eq!(due(&mut sim, 10), No, "only last_seen moved");
    sim.at(20, seen(&[obs("web1", C), obs("web2", O)]));
    assert_eq!(due(&mut sim, 20), Records(1), "pending started: web1 only");
    sim.at(30, seen(&[obs("web1", C), obs("web2", O)]));
    assert_eq!(due(&mut sim, 30), No, "still pending, the same start");
    sim.at(50, seen(&[obs("web1", C), obs("web2", O)]));
    assert_eq!(due(&mut sim, 50), Records(1), "fired: an event");
    sim.at(55, seen(&[obs("web1", C), obs("web2", O)]));
    assert_eq!(due(&mut sim, 55), No, "unchanged");
    sim.at(60, seen(&[obs("web1", C), obs("web2", O)]));
    assert_eq!(
        due(&mut sim, 60),
        Snapshot,
        "a checkpoint 60 s after the last snapshot"
    );
    assert!(!sim.st.unsaved());
    sim.at(70, seen(&[obs("web1", C), obs("web2", O)]));
    assert!(
        sim.st.unsaved(),
        "shutdown saves what waits for a checkpoint"
    );
    assert_eq!(due(&mut sim, 70), No);
    // Missing data starts the NoData clock: saved at once.
    sim.at(80, seen(&[obs("web1", C)]));
    assert_eq!(due(&mut sim, 80), Records(1));
    // A failed evaluation entering the Error state is saved at once.
    let mut e = base();
    e.error = Policy::Alert(C);
    let mut sim = Sim::new(e);
    sim.one(0, O);
    assert_eq!(due(&mut sim, 0), Snapshot);
    sim.at(10, CycleResult::Failed("down".into()));
    assert_eq!(due(&mut sim, 10), Records(1), "the Error state");
}
