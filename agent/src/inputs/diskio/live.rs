//! `diskio` against /proc/diskstats read just before and just after each gather: every
//! counter lies between the two reads, the device set is the non-idle devices, and the second
//! gather carries io_util.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use super::assert_between;
use wk_agent::inputs::diskio::parse_diskstats;
use wk_agent::metric::FieldValue;
use wk_agent::models::running_input::GlobalTags;

/// Device → (reads, writes, sectors read, sectors written, io_time) of non-idle devices.
fn diskstats() -> BTreeMap<String, [u64; 5]> {
    let text = std::fs::read_to_string("/proc/diskstats").unwrap();
    parse_diskstats(&text)
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_idle())
        .map(|d| {
            (
                d.name.clone(),
                [
                    d.reads,
                    d.writes,
                    d.read_sectors,
                    d.write_sectors,
                    d.io_time,
                ],
            )
        })
        .collect()
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

#[test]
fn diskio_counters_between_two_reads_of_diskstats() {
    let mut plan = super::plan("[[inputs.diskio]]\n");
    let dir = tempfile::tempdir().unwrap();
    // io_time of each device at the first gather, and that gather's time.
    let mut first: BTreeMap<String, u64> = BTreeMap::new();
    let mut first_ns = 0;
    for step in 0..2 {
        if step == 1 {
            // Some I/O so that the deltas are not all zero on an idle machine.
            let f = dir.path().join("io");
            std::fs::write(&f, vec![7u8; 1 << 20]).unwrap();
            std::fs::File::open(&f).unwrap().sync_all().unwrap();
        }
        let before = diskstats();
        let stamp = now_ns();
        let outcome = plan.inputs[0].gather(stamp, &GlobalTags::default());
        let after = diskstats();
        assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
        let got: Vec<&str> = outcome
            .metrics
            .iter()
            .map(|m| m.tag("name").unwrap())
            .collect();
        for name in before.keys() {
            assert!(got.contains(&name.as_str()), "{name} missing from {got:?}");
        }
        assert!(!got.is_empty(), "no diskio metrics");
        for m in &outcome.metrics {
            let name = m.tag("name").unwrap();
            let a = after
                .get(name)
                .unwrap_or_else(|| panic!("{name} not in diskstats"));
            let b = before.get(name).copied().unwrap_or([0; 5]);
            let check = |k: &str, i: usize, scale: u64| {
                let v = match m.field(k) {
                    Some(FieldValue::Uint(v)) => *v,
                    other => panic!("{name} {k}: {other:?}"),
                };
                assert_between(&format!("{name} {k}"), v, b[i] * scale, a[i] * scale);
            };
            check("reads", 0, 1);
            check("writes", 1, 1);
            check("read_bytes", 2, 512);
            check("write_bytes", 3, 512);
            check("io_time", 4, 1);
            let io_time = match m.field("io_time") {
                Some(FieldValue::Uint(v)) => *v,
                other => panic!("{name} io_time: {other:?}"),
            };
            let util = m.field("io_util");
            if step == 0 {
                assert!(util.is_none(), "io_util on the first gather");
                first.insert(name.to_owned(), io_time);
                first_ns = stamp;
            } else if let Some(prev) = first.get(name) {
                // util = 100·Δio_time(ms) / Δwall(ms), Δwall from the gather stamps.
                let want = 100.0 * (io_time - prev) as f64 / ((stamp - first_ns) as f64 / 1e6);
                match util {
                    Some(FieldValue::Float(u)) => {
                        assert!(
                            (u - want).abs() < 1e-6 * want.max(1.0),
                            "{name} util {u} != {want}"
                        )
                    }
                    other => panic!("{name}: io_util {other:?}"),
                }
            }
        }
    }
}
