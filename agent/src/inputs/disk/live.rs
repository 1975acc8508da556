//! `disk` against `df`: the same set of mounts under the same `ignore_fs`, and the same
//! sizes (exact total; used/avail/inodes within what a busy disk changes between two reads).

use std::collections::BTreeMap;
use std::process::Command;

use super::uint;
use wk_agent::metric::FieldValue;
use wk_agent::models::running_input::GlobalTags;

const IGNORE_FS: &[&str] = &[
    "tmpfs", "devtmpfs", "devfs", "iso9660", "overlay", "aufs", "squashfs",
];

/// Mount point → (fstype, size, used, avail, itotal, iused, iavail), the last entry winning
/// for a mount point listed twice (the visible one), as the agent does.
fn df() -> BTreeMap<String, (String, [u64; 6])> {
    let out = Command::new("df")
        .args([
            "-a",
            "-B1",
            "--output=target,fstype,size,used,avail,itotal,iused,iavail",
        ])
        .output()
        .expect("df runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut map = BTreeMap::new();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert!(cols.len() >= 8, "df line {line:?}");
        let (target, rest) = cols.split_at(cols.len() - 7);
        // Targets with spaces come out as they are; "-" is df's "not available".
        let mut v = [0u64; 6];
        for (slot, c) in v.iter_mut().zip(&rest[1..]) {
            *slot = c.parse().unwrap_or(0);
        }
        map.insert(target.join(" "), (rest[0].to_owned(), v));
    }
    map
}

#[test]
fn disk_matches_df() {
    // The agent reads pid 1's mount table, df its own: compare only when they list the same
    // mount points (an unreadable /proc/1/mountinfo makes the agent fall back to self).
    let points = |p: &str| -> Option<Vec<String>> {
        let text = std::fs::read_to_string(p).ok()?;
        Some(
            text.lines()
                .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
                .collect(),
        )
    };
    let (init, own) = (points("/proc/1/mountinfo"), points("/proc/self/mountinfo"));
    if init.is_some() && init != own {
        wk_core::skip!("pid 1 sees other mounts than this process (another mount namespace)");
    }
    let list: Vec<String> = IGNORE_FS.iter().map(|s| format!("{s:?}")).collect();
    let mut plan = super::plan(&format!(
        "[[inputs.disk]]\n  ignore_fs = [{}]\n",
        list.join(", ")
    ));
    let before = df();
    let outcome = plan.inputs[0].gather(1, &GlobalTags::default());
    let after = df();
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);

    let want: Vec<&String> = after
        .iter()
        .filter(|(_, (fs, v))| v[0] > 0 && fs != "autofs" && !IGNORE_FS.contains(&fs.as_str()))
        .map(|(k, _)| k)
        .collect();
    let mut got: Vec<&str> = outcome
        .metrics
        .iter()
        .map(|m| m.tag("path").unwrap())
        .collect();
    got.sort();
    assert!(!got.is_empty(), "no disk metrics at all");
    assert_eq!(got, want, "mount points differ from df's");

    // A busy disk (other builds share it) moves by some MiB between the reads.
    const SLACK_BYTES: u64 = 256 << 20;
    const SLACK_INODES: u64 = 20_000;
    for m in &outcome.metrics {
        let path = m.tag("path").unwrap();
        let (fs, b) = &before[path];
        let (_, a) = &after[path];
        assert_eq!(m.tag("fstype"), Some(fs.as_str()), "{path}");
        assert_eq!(uint(m, "total"), a[0], "{path}: total");
        let within = |k: &str, i: usize, slack: u64| {
            let v = uint(m, k);
            let (lo, hi) = (b[i].min(a[i]).saturating_sub(slack), b[i].max(a[i]) + slack);
            assert!(
                lo <= v && v <= hi,
                "{path}: {k}={v}, df said {} then {}",
                b[i],
                a[i]
            );
        };
        within("used", 1, SLACK_BYTES);
        within("free", 2, SLACK_BYTES);
        within("inodes_total", 3, 0);
        within("inodes_used", 4, SLACK_INODES);
        within("inodes_free", 5, SLACK_INODES);
        let (used, free) = (uint(m, "used") as f64, uint(m, "free") as f64);
        match m.field("used_percent") {
            Some(FieldValue::Float(p)) => assert!((p - 100.0 * used / (used + free)).abs() < 1e-9),
            other => panic!("used_percent {other:?}"),
        }
    }
}
