//! `cpu` against /proc/stat itself: each `time_*` field of cpu-total must lie between two
//! readings of the `cpu` line taken around our gather (ticks / USER_HZ), and the usage of a
//! second gather must be percentages that add up to 100.

use super::{assert_between, float};

/// The `cpu` line of /proc/stat in seconds: user, nice, system, idle, iowait, irq, softirq,
/// steal, guest, guest_nice.
fn proc_stat_cpu() -> Vec<f64> {
    let hz = rustix::param::clock_ticks_per_second() as f64;
    let text = std::fs::read_to_string("/proc/stat").unwrap();
    let line = text.lines().find(|l| l.starts_with("cpu ")).unwrap();
    line.split_whitespace()
        .skip(1)
        .take(10)
        .map(|v| v.parse::<f64>().unwrap() / hz)
        .collect()
}

const FIELDS: [&str; 10] = [
    "user",
    "nice",
    "system",
    "idle",
    "iowait",
    "irq",
    "softirq",
    "steal",
    "guest",
    "guest_nice",
];

#[test]
fn cpu_times_match_proc_stat_and_usage_adds_up() {
    let mut plan = super::plan("[[inputs.cpu]]\n  percpu = false\n  collect_cpu_time = true\n");
    let global = plan.global_tags.clone();
    let before = proc_stat_cpu();
    let first = plan.inputs[0].gather(1, &global);
    let after = proc_stat_cpu();
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    assert_eq!(first.metrics.len(), 1, "only times at the first gather");
    let m = &first.metrics[0];
    assert_eq!(m.tag("cpu"), Some("cpu-total"));
    for (i, f) in FIELDS.iter().enumerate() {
        let field = format!("time_{f}");
        // Ticks divided by USER_HZ: equal readings may differ in the last bit.
        assert_between(&field, float(m, &field), before[i] - 1e-9, after[i] + 1e-9);
    }

    std::thread::sleep(std::time::Duration::from_millis(200));
    let second = plan.inputs[0].gather(2, &global);
    let usage = second
        .metrics
        .iter()
        .find(|m| m.field("usage_idle").is_some())
        .expect("a usage line at the second gather");
    // /proc/stat counts guest time inside user and nice; the usage fields take it out of
    // those, so the ten of them add up to 100.
    let sum: f64 = FIELDS
        .iter()
        .map(|f| float(usage, &format!("usage_{f}")))
        // A share is a ratio of tick deltas: on an idle machine idle can come out at
        // 100.0000000009 (float rounding), as Telegraf's would.
        .inspect(|v| assert!((-1e-6..=100.0 + 1e-6).contains(v), "{usage:?}"))
        .sum();
    assert!((sum - 100.0).abs() < 1e-6, "usage adds up to {sum}");
}
