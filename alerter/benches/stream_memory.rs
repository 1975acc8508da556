//! Resident memory per point held by the stream window, at 10 million points (docs/alerter.md
//! and docs/performance-alerter.md quote the figures). Run:
//! `cargo bench -p wk-alerter --bench stream_memory` (`WK_BENCH_POINTS=…` for another count).
//!
//! Two mixes of `benches/common/agent_lines.rs`, each measured in a process of its own (so
//! that one's freed memory does not hide the other's): `steady` (the constant values this
//! bench used before the window was compressed) and `agent` (values as the agent writes them).
//! The points go through the receiver's intake in bodies of 5,000 lines.

#[path = "common/agent_lines.rs"]
mod agent_lines;

use std::process::Command;

use wk_alerter::source::MemorySource;
use wk_alerter::stream::{Intake, ingest};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--mix") {
        measure(&args[i + 1]);
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        println!("stream_memory: skipped (not run by `cargo bench`)");
        return;
    }
    let exe = std::env::current_exe().expect("own path");
    for mix in ["steady", "agent"] {
        let status = Command::new(&exe)
            .args(["--mix", mix])
            .status()
            .expect("run the bench's child");
        assert!(status.success(), "{mix}: {status}");
    }
}

fn rss_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    s.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4
}

fn measure(mix: &str) {
    let n: usize = std::env::var("WK_BENCH_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let mut lines = agent_lines::AgentLines::new(mix == "agent", 1_700_000_000);
    let store = MemorySource::new();
    let intake = Intake::new(1, 0);
    let before = rss_kb();
    let mut batch = String::with_capacity(5_000 * 300);
    for i in 0..n {
        lines.next_line(&mut batch);
        if (i + 1) % 5_000 == 0 || i + 1 == n {
            ingest(&batch, &intake, &store);
            batch.clear();
        }
    }
    let after = rss_kb();
    let held = store.len();
    assert_eq!(held, n, "every point held");
    let rss = (after - before) * 1024;
    println!(
        "{mix:>6}: {held} points ({} values, {} series): RSS +{} MiB = {:.1} bytes/point, {:.2} bytes/value; accounted {:.1} bytes/point (max_bytes counts these)",
        lines.values,
        store.series_count(),
        rss >> 20,
        rss as f64 / held as f64,
        rss as f64 / lines.values as f64,
        store.bytes() as f64 / held as f64,
    );
}
