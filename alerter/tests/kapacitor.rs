//! Kapacitor's own alert scenarios (its `integrations/streamer_test.go` cases and their
//! recorded points) replayed through `wk-alerter test` (`app::replay`): the events agree with
//! what Kapacitor sends. Kapacitor emits an event for every non-OK point; a rule gets the same
//! with `repeat` equal to `every`. Points lie on the ticks (one per second), as an agent with
//! `round_interval` writes them.

use std::time::Duration;

use wk_alerter::app;
use wk_alerter::model::{EventKind, Level};
use wk_alerter::rules::load_rule_source;

const SEC: i64 = 1_000_000_000;
/// Kapacitor's recordings start at 1971-01-01T00:00:00Z.
const BASE: i64 = 31_536_000 * SEC;

/// (kind, level, previous level) of each event of `rule` replayed over `values`, one point
/// per second of `cpu,host=serverA value=<v>`.
fn replay(rule: &str, values: &[f64]) -> Vec<(EventKind, Level, Level, i64)> {
    let text: String = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("cpu,host=serverA value={v} {}\n", BASE + i as i64 * SEC))
        .collect();
    let points = wk_core::lineproto::parse(&text, 0).unwrap();
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

use EventKind::{Alert, Recovery};
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
