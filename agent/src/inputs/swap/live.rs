//! `swap` against `free -b` (the `Swap:` row, which comes from the same meminfo keys as
//! sysinfo(2)) and /proc/vmstat, each read before and after our gather.

use super::gather;
use super::uint;

fn vmstat(key: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/vmstat").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

fn between(name: &str, v: u64, a: u64, b: u64) {
    let (lo, hi) = (a.min(b), a.max(b));
    assert!(lo <= v && v <= hi, "{name}: {v} not within {lo}..={hi}");
}

#[test]
fn swap_matches_free_and_vmstat() {
    let before = super::free_b("Swap:");
    let (in0, out0) = (vmstat("pswpin"), vmstat("pswpout"));
    let lines = gather("[[inputs.swap]]\n");
    let (in1, out1) = (vmstat("pswpin"), vmstat("pswpout"));
    let after = super::free_b("Swap:");
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
