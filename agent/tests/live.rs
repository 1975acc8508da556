//! Live-machine tests: each input checked against an outside oracle on this host
//! (`free -b`, `df`, `ss`, `nstat`, /proc itself). Each input's test is
//! `agent/src/inputs/<name>/live.rs`, in its folder; build.rs lists them (`live_tests.rs`).
//! This module holds what they share.

include!(concat!(env!("OUT_DIR"), "/live_tests.rs"));

use wk_agent::config::{self, ConfigError, LoadRequest, Plan};

/// Loads a config text for a live test from a temporary `telegraf.conf`: this machine's real
/// /proc and /sys, `--test` mode, no environment variables.
pub fn try_plan(conf: &str) -> Result<Plan, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("telegraf.conf");
    std::fs::write(&path, conf).unwrap();
    config::load(&LoadRequest {
        test_mode: true,
        ..LoadRequest::new(vec![path])
    })
}

/// [`try_plan`] where a config error fails the test.
pub fn plan(conf: &str) -> Plan {
    try_plan(conf).unwrap_or_else(|e| panic!("{:?}", e.errors))
}

use wk_agent::metric::{FieldValue, Metric};
use wk_agent::models::running_input::GlobalTags;

/// Gathers the first input of a config text once on this machine: its metrics and errors.
pub fn gather_with_errors(conf: &str) -> (Vec<Metric>, Vec<String>) {
    let out = plan(conf).inputs[0].gather(1, &GlobalTags::default());
    let errors = out.errors.iter().map(ToString::to_string).collect();
    (out.metrics, errors)
}

/// [`gather_with_errors`] where any error fails the test.
pub fn gather(conf: &str) -> Vec<Metric> {
    let (metrics, errors) = gather_with_errors(conf);
    assert!(errors.is_empty(), "{errors:?}");
    metrics
}

/// [`gather`] for an input that writes exactly one line.
pub fn gather_one(conf: &str) -> Metric {
    let mut ms = gather(conf);
    assert_eq!(ms.len(), 1, "{ms:?}");
    ms.remove(0)
}

/// Fails the test unless `lo <= v <= hi`: a counter read between two readings of its oracle.
pub fn assert_between<T: PartialOrd + std::fmt::Display>(what: &str, v: T, lo: T, hi: T) {
    assert!(lo <= v && v <= hi, "{what}: {v} not within {lo}..={hi}");
}

/// A uint field, or a panic naming what it was instead.
pub fn uint(m: &Metric, key: &str) -> u64 {
    match m.field(key) {
        Some(FieldValue::Uint(v)) => *v,
        other => panic!("{key}: expected a uint, got {other:?} in {m:?}"),
    }
}

/// An int field, or a panic naming what it was instead.
pub fn int(m: &Metric, key: &str) -> i64 {
    match m.field(key) {
        Some(FieldValue::Int(v)) => *v,
        other => panic!("{key}: expected an int, got {other:?} in {m:?}"),
    }
}

/// A float field, or a panic naming what it was instead.
pub fn float(m: &Metric, key: &str) -> f64 {
    match m.field(key) {
        Some(FieldValue::Float(v)) => *v,
        other => panic!("{key}: expected a float, got {other:?} in {m:?}"),
    }
}

/// `free -b`'s numbers on the row starting with `row` (`"Mem:"`: total, used, free, shared,
/// buff/cache, available; `"Swap:"`: total, used, free).
pub fn free_b(row: &str) -> Vec<u64> {
    let out = std::process::Command::new("free")
        .arg("-b")
        .output()
        .expect("free -b");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text.lines().find(|l| l.starts_with(row)).unwrap();
    line.split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect()
}
