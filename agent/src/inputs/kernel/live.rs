//! `kernel` against /proc itself: boot_time must equal /proc/stat `btime` exactly, and the
//! monotonic counters must lie between two readings taken around our gather.

use super::gather;
use super::{assert_between, int};

fn stat(key: &str) -> i64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap();
    text.lines()
        .find_map(|l| {
            let mut c = l.split_whitespace();
            (c.next() == Some(key)).then(|| c.next().unwrap().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no {key} in /proc/stat"))
}

#[test]
fn kernel_matches_proc_stat() {
    let keys = [
        ("ctxt", "context_switches"),
        ("intr", "interrupts"),
        ("processes", "processes_forked"),
    ];
    let before: Vec<i64> = keys.iter().map(|(k, _)| stat(k)).collect();
    let lines = gather("[[inputs.kernel]]\n");
    let after: Vec<i64> = keys.iter().map(|(k, _)| stat(k)).collect();
    assert_eq!(lines.len(), 1);
    let m = &lines[0];
    assert_eq!(int(m, "boot_time"), stat("btime"));
    for (i, (_, field)) in keys.iter().enumerate() {
        assert_between(field, int(m, field), before[i], after[i]);
    }
    let entropy = int(m, "entropy_avail");
    assert!((0..=4096).contains(&entropy), "entropy_avail {entropy}");
}

#[test]
fn pressure_lines_when_psi_is_available() {
    if !std::path::Path::new("/proc/pressure/io").exists() {
        wk_core::skip!("no /proc/pressure: this kernel has no PSI");
    }
    let lines = gather("[[inputs.kernel]]\n  collect = [\"psi\"]\n");
    let pressure: Vec<_> = lines.iter().filter(|m| m.name == "pressure").collect();
    // cpu/some, memory/some+full, io/some+full, each a counter line and a gauge line.
    assert_eq!(pressure.len(), 10);
    assert!(
        !pressure
            .iter()
            .any(|m| m.tag("resource") == Some("cpu") && m.tag("type") == Some("full"))
    );
}
