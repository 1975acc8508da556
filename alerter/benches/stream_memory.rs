//! Resident memory per point held by the stream window, at 10 million points (docs/alerter.md
//! and docs/performance-alerter.md quote the figures). Run:
//! `cargo bench -p wk-alerter --bench stream_memory` (`WK_BENCH_POINTS=…` for another count).
//!
//! Two mixes of `benches/common/agent_lines.rs`, each measured in a process of its own (so
//! that one's freed memory does not hide the other's): `steady` (the constant values this
//! bench used before the window was compressed) and `agent` (values as the agent writes them).
//! The points go through the receiver's intake in bodies of 5,000 lines. Each child makes the
//! alerter's memory settings first (`wk_alerter::memory::tune`, as `wk-alerter run` does);
//! `WK_BENCH_MEMORY_DEFAULT=1` leaves mimalloc's defaults. Each mix's window is then turned
//! over once, saved as a snapshot file and loaded in another fresh process (a restart).
//!
//! `WK_BENCH_PEER=influxd` adds the peer (needs `influxd`: `apt-get install -y influxdb`; the
//! bench fails without it): the same points of each mix written to a real influxd 1.x over
//! HTTP `/write` in bodies of 5,000 lines, then left until its TSM engine has compacted the
//! shard fully (cold-compaction delays shortened to 1 s; no WAL left, the TSM files unchanged
//! for 10 s). Reported: the TSM bytes on disk per point, influxd's resident memory, and the
//! window's bytes per point as a ratio to influxd's on-disk bytes.

#[path = "common/agent_lines.rs"]
mod agent_lines;
// Its thread_cpu only (other_process_cpu serves stream_ingest).
#[allow(dead_code)]
#[path = "common/cpu.rs"]
mod cpu;
#[path = "../tests/common/influxd.rs"]
mod influxd;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wk_alerter::source::MemorySource;
use wk_alerter::stream::{Intake, ingest};

/// The first point's time (seconds), the same on both sides.
const T0_SECS: i64 = 1_700_000_000;
const BATCH: usize = 5_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--mix") {
        measure(&args[i + 1], Path::new(&args[i + 2]));
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--restore") {
        restore(Path::new(&args[i + 1]));
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        println!("stream_memory: skipped (not run by `cargo bench`)");
        return;
    }
    let peer = match std::env::var("WK_BENCH_PEER").as_deref() {
        Err(_) | Ok("") => false,
        Ok("influxd") => true,
        Ok(other) => panic!("WK_BENCH_PEER={other}: the peer this bench knows is `influxd`"),
    };
    let n = points();
    let exe = std::env::current_exe().expect("own path");
    let mut rows = Vec::new();
    for mix in ["steady", "agent"] {
        let snap = std::env::temp_dir().join(format!(
            "wk-stream-memory-{}-{mix}.snap",
            std::process::id()
        ));
        let child = |args: &[&std::ffi::OsStr]| {
            let out = Command::new(&exe)
                .args(args)
                .stderr(Stdio::inherit())
                .output()
                .expect("run the bench's child");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            print!("{text}");
            assert!(out.status.success(), "{mix}: {}", out.status);
            text
        };
        let text = child(&["--mix".as_ref(), mix.as_ref(), snap.as_os_str()]);
        child(&["--restore".as_ref(), snap.as_os_str()]);
        let _ = std::fs::remove_file(&snap);
        let ours = Ours::parse(&text).expect("the child's figures");
        if peer {
            let theirs = influxd_peer(mix, n);
            rows.push((mix, ours, theirs));
        }
    }
    if peer {
        println!();
        println!(
            "| values | window RSS B/point | window accounted B/point | influxd TSM on disk B/point | influxd RSS after compaction (peak) | ratio window RSS / TSM | ratio accounted / TSM |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- |");
        for (mix, o, p) in &rows {
            let tsm = p.tsm_bytes as f64 / n as f64;
            println!(
                "| {mix} | {:.1} | {:.1} | {tsm:.2} | {} MiB ({} MiB) | {:.2} | {:.2} |",
                o.rss_per_point,
                o.accounted_per_point,
                p.rss_kb >> 10,
                p.hwm_kb >> 10,
                o.rss_per_point / tsm,
                o.accounted_per_point / tsm,
            );
        }
        println!("({n} points per mix, the same on both sides)");
    }
}

fn points() -> usize {
    std::env::var("WK_BENCH_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000)
}

fn rss_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    s.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4
}

/// The window's figures, as the child prints them on its `result` line.
struct Ours {
    rss_per_point: f64,
    accounted_per_point: f64,
}

impl Ours {
    fn parse(text: &str) -> Option<Ours> {
        let line = text.lines().find_map(|l| l.strip_prefix("result "))?;
        let mut it = line.split_whitespace().map(|w| w.parse::<f64>().ok());
        Some(Ours {
            rss_per_point: it.next()??,
            accounted_per_point: it.next()??,
        })
    }
}

fn measure(mix: &str, snap: &Path) {
    // The alerter's memory settings, as `wk-alerter run` makes them first (no transparent huge
    // pages: resident memory would grow in 2 MiB steps); `WK_BENCH_MEMORY_DEFAULT=1` leaves
    // mimalloc's defaults, for comparison.
    if std::env::var_os("WK_BENCH_MEMORY_DEFAULT").is_none() {
        wk_alerter::memory::tune();
    }
    let n = points();
    let mut lines = agent_lines::AgentLines::new(mix == "agent", T0_SECS);
    let store = MemorySource::new();
    let intake = Intake::new(1, 0);
    // The bench's own line buffer is made (and touched) before the first reading: it is not
    // the window's.
    let mut batch = String::with_capacity(BATCH * 300);
    batch.extend(std::iter::repeat_n(' ', BATCH * 300));
    batch.clear();
    let before = rss_kb();
    let mut cpu = std::time::Duration::ZERO;
    for i in 0..n {
        lines.next_line(&mut batch);
        if (i + 1) % BATCH == 0 || i + 1 == n {
            let t = cpu::thread_cpu();
            ingest(&batch, &intake, &store);
            cpu += cpu::thread_cpu() - t;
            batch.clear();
        }
    }
    let after = rss_kb();
    let held = store.len();
    assert_eq!(held, n, "every point held");
    let rss = (after - before) * 1024;
    let (rss_pp, acc_pp) = (rss as f64 / held as f64, store.bytes() as f64 / held as f64);
    println!(
        "{mix:>6}: {held} points ({} values, {} series): RSS +{} MiB = {rss_pp:.1} bytes/point, {:.2} bytes/value; accounted {acc_pp:.1} bytes/point (max_bytes counts these)",
        lines.values,
        store.series_count(),
        rss >> 20,
        rss as f64 / lines.values as f64,
    );
    println!(
        "{mix:>6}: ingest (parse + insert, this thread's CPU) {:.0} ns/point",
        cpu.as_nanos() as f64 / n as f64
    );
    println!("result {rss_pp} {acc_pp}");

    // The window turning over: as many points again, the oldest forgotten as the newest come
    // (the age bound of `wk-alerter run`), so that every chunk sealed above is dropped. What
    // stays resident shows whether freed chunks give their memory back (sealed chunks share
    // blocks: chunk::Arena).
    let span = store.latest_time().expect("points held") - T0_SECS * 1_000_000_000;
    for i in 0..n {
        lines.next_line(&mut batch);
        if (i + 1) % BATCH == 0 || i + 1 == n {
            ingest(&batch, &intake, &store);
            batch.clear();
            if let Some(latest) = store.latest_time() {
                store.prune_before(latest - span);
            }
        }
    }
    let held = store.len();
    let per_point = |kb: u64| kb.saturating_sub(before) as f64 * 1024.0 / held as f64;
    let turned = rss_kb();
    // What was freed stays with the process for the allocator's purge delay
    // (`memory::tune`: 30 s) and is handed back at its next purge.
    std::thread::sleep(Duration::from_secs(32));
    // SAFETY: asks mimalloc (this process's allocator) to purge what it may.
    unsafe { libmimalloc_sys::mi_collect(false) };
    let settled = rss_kb();
    println!(
        "{mix:>6}: after the window turned over once ({n} more points, the oldest pruned): {held} points held, RSS {:.1} bytes/point, {:.1} after the allocator's purge delay; accounted {:.1} bytes/point",
        per_point(turned),
        per_point(settled),
        store.bytes() as f64 / held as f64,
    );
    std::fs::write(snap, store.snapshot()).expect("write the window's snapshot");
}

/// The window of a snapshot restored in a fresh process (as `wk-alerter run` does at start):
/// its resident memory per point, and the CPU the load took.
fn restore(snap: &Path) {
    if std::env::var_os("WK_BENCH_MEMORY_DEFAULT").is_none() {
        wk_alerter::memory::tune();
    }
    // The file's bytes are read (and touched) before the first reading: they are not the window's.
    let bytes = std::fs::read(snap).expect("read the snapshot");
    let before = rss_kb();
    let t = cpu::thread_cpu();
    let store = MemorySource::from_snapshot(&bytes).expect("the snapshot loads");
    let cpu = cpu::thread_cpu() - t;
    let after = rss_kb();
    let held = store.len();
    println!(
        "restored from a snapshot of {} MiB in a fresh process: {held} points, RSS {:.1} bytes/point, accounted {:.1}; load {:.2} s CPU ({:.0} ns/point)",
        bytes.len() >> 20,
        (after - before) as f64 * 1024.0 / held as f64,
        store.bytes() as f64 / held as f64,
        cpu.as_secs_f64(),
        cpu.as_nanos() as f64 / held as f64,
    );
}

/// What influxd holds for one mix.
struct Peer {
    tsm_bytes: u64,
    rss_kb: u64,
    hwm_kb: u64,
}

/// The cold-shard delays shortened, so that the TSM engine snapshots its cache and compacts
/// the shard fully a second after the last write (the defaults: 10 min and 4 h).
const COLD: &str = "  cache-snapshot-write-cold-duration = \"1s\"\n  \
                    compact-full-write-cold-duration = \"1s\"";

/// Writes the mix's points to a fresh influxd, waits for the full compaction and measures.
fn influxd_peer(mix: &str, n: usize) -> Peer {
    let db = influxd::Influxd::start_with_data_settings(COLD).unwrap_or_else(|| {
        panic!("WK_BENCH_PEER=influxd: influxd is not installed (apt-get install -y influxdb)")
    });
    // One shard for all the points (shard groups of 52 weeks; the default, 1 week, would
    // split 10 M points of this mix in two and store each series' index twice).
    db.exec("CREATE DATABASE \"bench\" WITH SHARD DURATION 52w");
    let mut lines = agent_lines::AgentLines::new(mix == "agent", T0_SECS);
    let mut batch = String::with_capacity(BATCH * 300);
    let t = Instant::now();
    for i in 0..n {
        lines.next_line(&mut batch);
        if (i + 1) % BATCH == 0 || i + 1 == n {
            db.write("bench", &batch);
            batch.clear();
        }
    }
    let written = t.elapsed();
    let (data, wal) = db.data_dirs();
    let (data, wal) = (data.join("bench"), wal.join("bench"));
    let t = Instant::now();
    let mut last = Vec::new();
    let mut stable_since = Instant::now();
    let files = loop {
        let now = files_under(&data);
        let wal_bytes: u64 = files_under(&wal)
            .iter()
            .filter(|(p, _)| p.ends_with(".wal"))
            .map(|(_, s)| s)
            .sum();
        let busy = wal_bytes > 0 || now.iter().any(|(p, _)| p.ends_with(".tmp"));
        if busy || now != last {
            stable_since = Instant::now();
            last = now;
        } else if stable_since.elapsed() >= Duration::from_secs(10) {
            break last;
        }
        assert!(
            t.elapsed() < Duration::from_secs(1800),
            "influxd did not finish compacting within 30 min: {last:?}, WAL {wal_bytes} bytes"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    let compactions = compactions(&db);
    let tsm: Vec<_> = files.iter().filter(|(p, _)| p.ends_with(".tsm")).collect();
    let tsm_bytes = tsm.iter().map(|(_, s)| s).sum();
    let status = std::fs::read_to_string(format!("/proc/{}/status", db.pid())).unwrap();
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (rss_kb, hwm_kb) = (kb("VmRSS:"), kb("VmHWM:"));
    println!(
        "{mix:>6}: influxd: {n} points written in {:.1} s, compacted {:.1} s later ({compactions}): {} TSM file(s) {:?}, {tsm_bytes} bytes = {:.2} bytes/point; RSS {} MiB (peak {} MiB)",
        written.as_secs_f64(),
        t.elapsed().as_secs_f64(),
        tsm.len(),
        tsm.iter()
            .map(|(p, s)| format!("{p} {s}"))
            .collect::<Vec<_>>(),
        tsm_bytes as f64 / n as f64,
        rss_kb >> 10,
        hwm_kb >> 10,
    );
    Peer {
        tsm_bytes,
        rss_kb,
        hwm_kb,
    }
}

/// Every file below `dir` (path relative to it, size), sorted.
fn files_under(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                todo.push(e.path());
            } else {
                let rel = e
                    .path()
                    .strip_prefix(dir)
                    .unwrap_or(&e.path())
                    .to_path_buf();
                out.push((rel.display().to_string(), meta.len()));
            }
        }
    }
    out.sort();
    out
}

/// The TSM engine's compaction counts for the bench database (`/debug/vars`).
fn compactions(db: &influxd::Influxd) -> String {
    let (status, body) = db.http("GET", "/debug/vars", "").expect("GET /debug/vars");
    assert_eq!(status, 200, "/debug/vars: {body}");
    let vars: serde_json::Value = serde_json::from_str(&body).expect("/debug/vars is JSON");
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for v in vars.as_object().into_iter().flat_map(|o| o.values()) {
        if v["name"] == "tsm1_engine" && v["tags"]["database"] == "bench" {
            for (k, n) in v["values"].as_object().into_iter().flatten() {
                if k.ends_with("Compactions") {
                    *counts.entry(k.clone()).or_default() += n.as_u64().unwrap_or(0);
                }
            }
        }
    }
    counts
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
