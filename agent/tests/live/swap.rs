//! `swap` against `free -b` (the `Swap:` row, which comes from the same meminfo keys as
//! sysinfo(2)) and /proc/vmstat, each read before and after our gather.

use std::process::Command;

use wk_agent::metric::{FieldValue, Metric};
use wk_agent::models::running_input::GlobalTags;

fn gather(conf: &str) -> Vec<Metric> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("telegraf.conf");
    std::fs::write(&path, conf).unwrap();
    let mut plan = super::load(vec![path]);
    let out = plan.inputs[0].gather(0, &GlobalTags::default());
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    out.metrics
}

/// `free -b` → [total, used, free] of the `Swap:` row.
fn free_swap() -> Vec<u64> {
    let out = Command::new("free").arg("-b").output().expect("free -b");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text.lines().find(|l| l.starts_with("Swap:")).unwrap();
    line.split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect()
}

fn vmstat(key: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/vmstat").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

fn uint(m: &Metric, key: &str) -> u64 {
    match m.field(key) {
        Some(FieldValue::Uint(v)) => *v,
        other => panic!("{key}: {other:?}"),
    }
}

fn between(name: &str, v: u64, a: u64, b: u64) {
    let (lo, hi) = (a.min(b), a.max(b));
    assert!(lo <= v && v <= hi, "{name}: {v} not within {lo}..={hi}");
}

#[test]
fn swap_matches_free_and_vmstat() {
    let before = free_swap();
    let (in0, out0) = (vmstat("pswpin"), vmstat("pswpout"));
    let lines = gather("[[inputs.swap]]\n");
    let (in1, out1) = (vmstat("pswpin"), vmstat("pswpout"));
    let after = free_swap();
    assert_eq!(lines.len(), 2, "gauge and counter lines");
    let (space, traffic) = (&lines[0], &lines[1]);
    assert_eq!(uint(space, "total"), before[0]);
    between("used", uint(space, "used"), before[1], after[1]);
    between("free", uint(space, "free"), before[2], after[2]);
    assert_eq!(
        uint(space, "used") + uint(space, "free"),
        uint(space, "total")
    );
    between("in", uint(traffic, "in"), in0 * 4096, in1 * 4096);
    between("out", uint(traffic, "out"), out0 * 4096, out1 * 4096);
}
