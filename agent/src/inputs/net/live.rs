//! `net` on this host: the selected interfaces are those `ip -o link` shows UP and not
//! LOOPBACK, and every counter lies between two reads of /sys/class/net/<if>/statistics taken
//! around the gather (counters only grow).

use super::gather;
use std::collections::BTreeSet;
use std::process::Command;

use super::{assert_between, uint};
use wk_agent::metric::FieldValue;

/// (field, statistics files whose sum is the /proc/net/dev column).
const STATS: &[(&str, &[&str])] = &[
    ("bytes_recv", &["rx_bytes"]),
    ("packets_recv", &["rx_packets"]),
    ("err_in", &["rx_errors"]),
    ("drop_in", &["rx_dropped", "rx_missed_errors"]),
    ("bytes_sent", &["tx_bytes"]),
    ("packets_sent", &["tx_packets"]),
    ("err_out", &["tx_errors"]),
    ("drop_out", &["tx_dropped"]),
];

fn stats(iface: &str) -> Vec<u64> {
    STATS
        .iter()
        .map(|(_, files)| {
            files
                .iter()
                .map(|f| {
                    let p = format!("/sys/class/net/{iface}/statistics/{f}");
                    std::fs::read_to_string(&p)
                        .unwrap_or_else(|e| panic!("{p}: {e}"))
                        .trim()
                        .parse::<u64>()
                        .unwrap()
                })
                .sum()
        })
        .collect()
}

#[test]
fn net_matches_ip_link_and_sys_statistics() {
    // `ip -o link`: "2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu ..."; names may carry
    // "@peer".
    let ip = Command::new("ip").args(["-o", "link"]).output();
    let Ok(ip) = ip else {
        wk_core::skip!("`ip` not found (Debian package iproute2)");
    };
    let text = String::from_utf8(ip.stdout).unwrap();
    let mut want = BTreeSet::new();
    for line in text.lines() {
        let mut parts = line.split(": ");
        let (_, Some(name), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let name = name.split('@').next().unwrap().to_owned();
        let flags = rest.split('>').next().unwrap().trim_start_matches('<');
        let flags: Vec<&str> = flags.split(',').collect();
        if flags.contains(&"UP") && !flags.contains(&"LOOPBACK") {
            want.insert(name);
        }
    }

    let before: Vec<(String, Vec<u64>)> = want.iter().map(|i| (i.clone(), stats(i))).collect();
    let metrics = gather("[[inputs.net]]\n");
    let got: BTreeSet<String> = metrics
        .iter()
        .map(|m| m.tag("interface").unwrap().to_owned())
        .collect();
    assert_eq!(got, want, "interfaces up and not loopback");
    for (iface, lo) in before {
        let hi = stats(&iface);
        let m = metrics
            .iter()
            .find(|m| m.tag("interface") == Some(&iface))
            .unwrap();
        for (i, (field, _)) in STATS.iter().enumerate() {
            assert_between(&format!("{iface} {field}"), uint(m, field), lo[i], hi[i]);
        }
        let speed = std::fs::read_to_string(format!("/sys/class/net/{iface}/speed"))
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .filter(|v| *v >= 0)
            .unwrap_or(-1);
        assert_eq!(m.field("speed"), Some(&FieldValue::Int(speed)), "{iface}");
    }

    // With a glob, the loopback is reported too.
    let lo = gather("[[inputs.net]]\n  interfaces = [\"l?\"]\n");
    assert_eq!(lo.len(), 1);
    assert_eq!(lo[0].tag("interface"), Some("lo"));
}
