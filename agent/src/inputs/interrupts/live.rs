//! `interrupts` against this machine's /proc/interrupts and /proc/softirqs, read before and
//! after our gather.

use super::{assert_between, gather};
use wk_agent::metric::FieldValue;

/// The per-CPU counts of `irq` in a file (`NET_RX`, `0`, …).
fn counts(file: &str, irq: &str) -> Vec<i64> {
    let text = std::fs::read_to_string(file).unwrap();
    let ncpu = text.lines().next().unwrap().split_whitespace().count();
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&format!("{irq}:")))
        .unwrap();
    line.split_whitespace()
        .skip(1)
        .take(ncpu)
        .map(|v| v.parse().unwrap())
        .collect()
}

fn int(m: &wk_agent::metric::Metric, k: &str) -> i64 {
    match m.field(k) {
        Some(FieldValue::Int(v)) => *v,
        other => panic!("{k}: {other:?}"),
    }
}

#[test]
fn interrupts_match_proc() {
    let before = counts("/proc/softirqs", "TIMER");
    let lines = gather("[[inputs.interrupts]]\n");
    let after = counts("/proc/softirqs", "TIMER");
    let hard = lines.iter().filter(|m| m.name == "interrupts").count();
    let listed = std::fs::read_to_string("/proc/interrupts")
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.ends_with(':'))
        })
        .count();
    assert!(hard > 0 && hard <= listed, "{hard} of {listed}");
    for m in &lines {
        let cpus: i64 = (0..before.len())
            .filter_map(|i| match m.field(&format!("CPU{i}")) {
                Some(FieldValue::Int(v)) => Some(*v),
                _ => None,
            })
            .sum();
        assert_eq!(int(m, "total"), cpus, "{m:?}");
    }
    let timer = lines
        .iter()
        .find(|m| m.name == "soft_interrupts" && m.tag("irq") == Some("TIMER"))
        .unwrap();
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert_between(&format!("CPU{i}"), int(timer, &format!("CPU{i}")), *b, *a);
    }
    // cpu_as_tag: one line per CPU with a `count`.
    let tagged = gather("[[inputs.interrupts]]\n  cpu_as_tag = true\n");
    let timer: Vec<_> = tagged
        .iter()
        .filter(|m| m.name == "soft_interrupts" && m.tag("irq") == Some("TIMER"))
        .collect();
    assert_eq!(timer.len(), before.len());
    assert!(
        timer
            .iter()
            .all(|m| m.tag("cpu").is_some() && m.field("count").is_some())
    );
}
