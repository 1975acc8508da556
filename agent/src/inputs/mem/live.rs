//! `mem` against `free -b`, read before and after our gather: each value must be exact
//! (total) or lie between the two oracle readings (what the kernel changed meanwhile).

use super::gather_one as gather;
use super::uint;
use wk_agent::metric::{FieldValue, Metric};

fn between(name: &str, v: u64, a: u64, b: u64) -> Result<(), String> {
    let (lo, hi) = (a.min(b), a.max(b));
    if lo <= v && v <= hi {
        Ok(())
    } else {
        Err(format!("{name}: {v} not within free -b's {lo}..={hi}"))
    }
}

/// One comparison; Err when a moving value left the bracket of the two oracle reads.
fn compare(m: &Metric, before: &[u64], after: &[u64]) -> Result<(), String> {
    between("free", uint(m, "free"), before[2], after[2])?;
    between("shared", uint(m, "shared"), before[3], after[3])?;
    between(
        "buffered+cached",
        uint(m, "buffered") + uint(m, "cached"),
        before[4],
        after[4],
    )?;
    between("available", uint(m, "available"), before[5], after[5])?;
    // procps ≥ 4.0.1 and Telegraf ≥ 1.36 agree: used = total − available.
    between(
        "used",
        uint(m, "used"),
        before[0] - before[5],
        after[0] - after[5],
    )
}

#[test]
fn mem_matches_free() {
    // Memory can move up and down between the reads on a busy machine (other builds run
    // here), leaving the bracket; a few attempts absorb that, a wrong value fails them all.
    let mut last = String::new();
    let mut found = None;
    for _ in 0..5 {
        let before = super::free_b("Mem:");
        let got = gather("[[inputs.mem]]\n");
        let after = super::free_b("Mem:");
        assert_eq!(uint(&got, "total"), before[0], "total must be exact");
        assert_eq!(before[0], after[0]);
        match compare(&got, &before, &after) {
            Ok(()) => {
                found = Some(got);
                break;
            }
            Err(e) => last = e,
        }
    }
    let Some(m) = found else { panic!("{last}") };
    let total = uint(&m, "total") as f64;
    let Some(FieldValue::Float(p)) = m.field("used_percent") else {
        panic!("used_percent missing")
    };
    assert!((p - 100.0 * uint(&m, "used") as f64 / total).abs() < 1e-9);
}
