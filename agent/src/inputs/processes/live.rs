//! `processes` against a count of the /proc/[0-9]* entries taken before and after our gather.
//! Other tests of this binary start processes (`free`, …) concurrently, so the count may move
//! by a few between the readings.

use super::gather_one as gather;
use super::int;

fn pid_dirs() -> i64 {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .count() as i64
}

#[test]
fn processes_total_matches_proc() {
    // Builds running on this machine start and end processes all the time: allow a few
    // beyond the bracket of the two counts, and retry a few times before calling it wrong.
    const SLACK: i64 = 8;
    let mut attempt = 0;
    let m = loop {
        let before = pid_dirs();
        let m = gather("[[inputs.processes]]\n");
        let after = pid_dirs();
        let total = int(&m, "total");
        let (lo, hi) = (before.min(after) - SLACK, before.max(after) + SLACK);
        if lo <= total && total <= hi {
            break m;
        }
        attempt += 1;
        assert!(attempt < 5, "total {total} not within {lo}..={hi}");
    };
    let total = int(&m, "total");
    let states: i64 = [
        "blocked", "zombies", "stopped", "running", "sleeping", "dead", "paging", "idle",
    ]
    .iter()
    .map(|k| int(&m, k))
    .sum::<i64>()
        + m.field("parked").map_or(0, |_| int(&m, "parked"));
    assert_eq!(states, total, "every process has a known state");
    assert!(int(&m, "total_threads") >= total);
}
