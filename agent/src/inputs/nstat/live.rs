//! `nstat` on this host against iproute2's `nstat -az` (absolute values, zeros included, no
//! history written): the same counter names, and every value between two `nstat` reads taken
//! around the gather (the kernel counters only grow). `nstat` leaves out the seven gauges of
//! /proc/net/snmp, which are checked against the file itself.

use super::gather;
use std::collections::BTreeMap;
use std::process::Command;

use wk_agent::metric::{FieldValue, Metric};

/// `nstat -az -s` with a throw-away history file; None when nstat is not installed.
fn nstat() -> Option<BTreeMap<String, i64>> {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("nstat")
        .args(["-a", "-z", "-s"])
        .env("NSTAT_HISTORY", dir.path().join("history"))
        .output()
        .ok()?;
    assert!(out.status.success(), "nstat failed: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    Some(
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let mut c = l.split_ascii_whitespace();
                let k = c.next().unwrap().to_owned();
                let v: u64 = c.next().unwrap().parse().unwrap();
                (k, v as i64)
            })
            .collect(),
    )
}

const GAUGES: &[&str] = &[
    "IpForwarding",
    "IpDefaultTTL",
    "TcpRtoAlgorithm",
    "TcpRtoMin",
    "TcpRtoMax",
    "TcpMaxConn",
    "TcpCurrEstab",
];

fn fields(metrics: &[Metric]) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for m in metrics {
        for (k, v) in &m.fields {
            let FieldValue::Int(v) = v else {
                panic!("{k} is not an int: {v:?}")
            };
            assert!(out.insert(k.to_string(), *v).is_none(), "{k} twice");
        }
    }
    out
}

#[test]
fn nstat_matches_iproute2_nstat() {
    let Some(before) = nstat() else {
        wk_core::skip!("`nstat` not found (Debian package iproute2)");
    };
    let metrics = gather("[[inputs.nstat]]\n  dump_zeros = true\n");
    let after = nstat().unwrap();
    let names: Vec<_> = metrics.iter().map(|m| m.tag("name").unwrap()).collect();
    assert_eq!(names, ["netstat", "snmp", "snmp6"]);
    let ours = fields(&metrics);

    let mut counters = ours.clone();
    counters.retain(|k, _| !GAUGES.contains(&k.as_str()));
    // nstat may add counters from files we do not read (e.g. /proc/net/sctp/snmp).
    let theirs: Vec<&String> = after.keys().filter(|k| !k.starts_with("Sctp")).collect();
    assert_eq!(counters.keys().collect::<Vec<_>>(), theirs, "counter names");
    for (k, v) in &counters {
        let (lo, hi) = (before[k], after[k]);
        assert!(lo <= *v && *v <= hi, "{k}: {v} not in [{lo}, {hi}]");
    }

    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap();
    let lines: Vec<&str> = snmp.lines().collect();
    for pair in lines.chunks(2) {
        let prefix = pair[0].split(':').next().unwrap();
        let names = pair[0].split_ascii_whitespace().skip(1);
        let values = pair[1].split_ascii_whitespace().skip(1);
        for (n, v) in names.zip(values) {
            let k = format!("{prefix}{n}");
            if GAUGES.contains(&k.as_str()) && k != "TcpCurrEstab" {
                assert_eq!(ours[&k], v.parse::<i64>().unwrap(), "{k}");
            }
        }
    }
    assert!(ours.contains_key("TcpCurrEstab"));

    // Without dump_zeros no field is zero, and the non-zero ones are all there.
    let nz = fields(&gather("[[inputs.nstat]]\n"));
    assert!(nz.values().all(|v| *v != 0));
    let later = nstat().unwrap();
    for (k, v) in &counters {
        if *v != 0 {
            assert!(nz.contains_key(k), "{k} missing without dump_zeros");
        } else if later[k] == 0 {
            assert!(!nz.contains_key(k), "{k} is zero but present");
        }
    }
}
