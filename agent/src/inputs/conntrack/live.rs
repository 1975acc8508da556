//! `conntrack` against this machine's /proc/sys/net/netfilter and /proc/net/stat/nf_conntrack.

use super::gather;
use wk_agent::metric::FieldValue;

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

#[test]
fn conntrack_matches_proc() {
    let Some(max) = read("/proc/sys/net/netfilter/nf_conntrack_max") else {
        wk_core::skip_platform!("the nf_conntrack module is not loaded in this kernel");
    };
    let lines = gather("[[inputs.conntrack]]\n  collect = [\"all\", \"percpu\"]\n");
    let table = lines
        .iter()
        .find(|m| m.tag("cpu").is_none())
        .expect("the table line");
    assert_eq!(
        table.field("ip_conntrack_max"),
        Some(&FieldValue::Float(max.trim().parse().unwrap()))
    );
    assert!(matches!(
        table.field("ip_conntrack_count"),
        Some(FieldValue::Float(_))
    ));
    let rows = read("/proc/net/stat/nf_conntrack")
        .unwrap()
        .lines()
        .filter(|l| l.split_whitespace().count() == 17 && !l.starts_with("entries"))
        .count();
    let cpus: Vec<_> = lines
        .iter()
        .filter_map(|m| m.tag("cpu"))
        .filter(|c| *c != "all")
        .collect();
    assert_eq!(cpus.len(), rows, "one line per CPU row");
    assert!(lines.iter().any(|m| m.tag("cpu") == Some("all")));
    assert!(matches!(
        lines[0].field("searched"),
        Some(FieldValue::Uint(_))
    ));
}
