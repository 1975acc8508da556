//! Kapacitor's own alert scenarios (its `integrations/streamer_test.go` cases and their
//! recorded points) replayed through `wk-alerter test` (`app::replay`): the events agree with
//! what Kapacitor sends. Kapacitor emits an event for every non-OK point; a rule gets the same
//! with `repeat` equal to `every`. Points lie on the ticks (one per second), as an agent with
//! `round_interval` writes them.

use std::time::Duration;

use wk_alerter::app;
use wk_alerter::model::{EventKind, Level};
use wk_alerter::rules::load_rule_source;

use crate::common::alerter::points;

const SEC: i64 = 1_000_000_000;
/// Kapacitor's recordings start at 1971-01-01T00:00:00Z.
const BASE: i64 = 31_536_000 * SEC;

/// (kind, level, previous level) of each event of `rule` replayed over `values`, one point
/// per second of `cpu,host=serverA value=<v>`.
fn replay(rule: &str, values: &[f64]) -> Vec<(EventKind, Level, Level, i64)> {
    let points = points("cpu,host=serverA value", values, BASE, SEC);
    let rule = load_rule_source("kapacitor.rhai", rule).unwrap();
    app::replay(&rule, &points, Duration::ZERO)
        .into_iter()
        .flat_map(|step| {
            assert!(step.failure.is_none(), "{:?}", step.failure);
            step.events
        })
        .map(|(e, _)| (e.kind, e.level, e.previous_level, (e.time - BASE) / SEC))
        .collect()
}

fn rule(settings: &str, conditions: &str) -> String {
    format!(
        "rule(#{{ every: \"1s\", repeat: \"1s\", {settings} }});\n\
         fn check() {{\n\
           let cpu = query(\"cpu\").field(\"value\").where(\"host\", \"serverA\").range(\"1s\").last().group_by(\"host\").run();\n\
           for s in cpu {{ let v = s.value; {conditions} }}\n\
           cpu\n\
         }}\n"
    )
}

use EventKind::{Alert, Flapping, Recovery};
use Level::{Critical as C, Info as I, Ok as O, Warning as W};

/// TestStream_Alert_WithReset_0: thresholds 40/60/80 with resets 10/20/30. Kapacitor sends 12
/// events; `wk-alerter test` skipped the first point (it lies on a tick) and lost 4 of them.
#[test]
fn with_reset_0_gives_kapacitors_twelve_events() {
    let r = rule(
        "",
        "s.info(v > 40.0, v < 10.0); s.warn(v > 60.0, v < 20.0); s.crit(v > 80.0, v < 30.0);",
    );
    let values = [
        45.0, 40.0, 30.0, 9.0, 45.0, 61.0, 30.0, 19.0, 45.0, 61.0, 81.0, 29.0,
    ];
    let got = replay(&r, &values);
    let want = [
        (Alert, I, O, 0),
        (Alert, I, I, 1),
        (Alert, I, I, 2),
        (Recovery, O, I, 3),
        (Alert, I, O, 4),
        (Alert, W, I, 5),
        (Alert, W, W, 6),
        (Recovery, O, W, 7),
        (Alert, I, O, 8),
        (Alert, W, I, 9),
        (Alert, C, W, 10),
        (Recovery, O, C, 11),
    ];
    assert_eq!(got, want);
}

/// TestStream_Alert_NoRecoveries: thresholds >= 6/7/8, `.noRecoveries()`. Kapacitor sends 6
/// events; the previous level of each is the level of the last event *sent* (a recovery not
/// sent leaves it at the alert's level: INFO after CRITICAL, not after OK).
#[test]
fn no_recoveries_previous_level_is_the_last_sent() {
    let r = rule(
        "recoveries: false",
        "s.info(v >= 6.0); s.warn(v >= 7.0); s.crit(v >= 8.0);",
    );
    let values = [7.0, 2.0, 6.0, 7.0, 7.0, 8.0, 2.0, 6.0, 3.0, 5.0, 4.0, 5.0];
    let want = [
        (Alert, W, O, 0),
        (Alert, I, W, 2),
        (Alert, W, I, 3),
        (Alert, W, W, 4),
        (Alert, C, W, 5),
        (Alert, I, C, 7),
    ];
    assert_eq!(replay(&r, &values), want);
}

/// TestStream_AlertFlapping: info < 95, warn < 94, crit < 93, flapping(0.25, 0.5), history
/// 21. Kapacitor sends 9 events (points 2 to 10) and drops the last ones as flapping; we send
/// the same 9, then one Flapping event where Kapacitor starts dropping.
#[test]
fn flapping_starts_on_kapacitors_point() {
    let r = rule(
        "flapping: [0.25, 0.5], history: 21",
        "s.info(v < 95.0); s.warn(v < 94.0); s.crit(v < 93.0);",
    );
    let values = [
        97.1, 92.6, 95.6, 93.1, 92.6, 95.8, 92.7, 96.0, 93.4, 95.3, 92.4, 95.1,
    ];
    let want = [
        (Alert, C, O, 1),
        (Recovery, O, C, 2),
        (Alert, W, O, 3),
        (Alert, C, W, 4),
        (Recovery, O, C, 5),
        (Alert, C, O, 6),
        (Recovery, O, C, 7),
        (Alert, W, O, 8),
        (Recovery, O, W, 9),
        (Flapping, C, O, 10),
    ];
    assert_eq!(replay(&r, &values), want);
}
