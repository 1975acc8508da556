//! Resident memory per point held by the stream window, for a typical agent mix (docs/alerter.md
//! and docs/security.md quote the figure). Run: `cargo bench -p wk-alerter --bench stream_memory`.

use wk_alerter::source::MemorySource;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("stream_memory: skipped (not run by `cargo bench`)");
        return;
    }
    memory_per_point();
}

fn memory_per_point() {
    fn rss_kb() -> u64 {
        let s = std::fs::read_to_string("/proc/self/statm").unwrap();
        s.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4
    }
    let store = MemorySource::new();
    let before = rss_kb();
    let n = 100_000i64;
    // Half cpu (10 fields), half mem-like (5 fields), 50 series.
    for i in 0..n {
        let line = if i % 2 == 0 {
            format!(
                "cpu,cpu=cpu{},host=web1 usage_user=1.5,usage_system=2.5,usage_idle=90.1,usage_nice=0,usage_iowait=0.2,usage_irq=0,usage_softirq=0.1,usage_steal=0,usage_guest=0,usage_guest_nice=0 {}",
                i % 25,
                i * 1_000_000
            )
        } else {
            format!(
                "mem,host=web{} total=8000000000i,used=4000000000i,free=2000000000i,available=3500000000i,used_percent=50.1 {}",
                i % 25,
                i * 1_000_000
            )
        };
        wk_alerter::stream::ingest(&line, &wk_alerter::stream::Intake::new(1, 0), &store);
    }
    let after = rss_kb();
    println!(
        "{} points: {} KiB, {} bytes/point; accounted {} bytes/point (max_bytes counts these)",
        store.len(),
        after - before,
        (after - before) * 1024 / store.len() as u64,
        store.bytes() / store.len()
    );
}
