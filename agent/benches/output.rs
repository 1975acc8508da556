//! The output path's cost (issue 3): serializing one 10 s collection of a big host (64 CPUs,
//! 20 disks, 20 interfaces), write throughput into a real influxd over loopback with and
//! without gzip, and the memory a buffer of 100k metrics costs.
//!
//! Run: `cargo bench -p wk-agent --bench output` (starts its own influxd; needs the Debian
//! package `influxdb`). Prints a markdown section for docs/performance.md.

#[allow(dead_code)]
#[path = "../tests/outputs/servers.rs"]
mod servers;
mod support;

use std::time::Instant;

use support::thread_cpu_ns;
use wk_agent::config::{self, LoadRequest};
use wk_agent::lineproto::Serializer;
use wk_agent::metric::Metric;
use wk_agent::models::running_output::RunningOutput;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_ascii_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// The fields of each measurement (but the float ones set on their own), as the inputs name
/// them.
const CPU_FIELDS: &str = "usage_user usage_system usage_idle usage_nice usage_iowait usage_irq \
                          usage_softirq usage_steal usage_guest usage_guest_nice";
const DISK_FIELDS: &str = "total free used inodes_total inodes_free inodes_used";
const DISKIO_FIELDS: &str = "reads writes read_bytes write_bytes read_time write_time io_time \
                             weighted_io_time iops_in_progress merged_reads merged_writes";
const NET_FIELDS: &str = "bytes_sent bytes_recv packets_sent packets_recv err_in err_out drop_in \
                          drop_out";

/// One 10 s collection of a host with 64 CPUs, 20 disks and 20 interfaces, shaped like the
/// real inputs' output (same measurements, tag and field counts).
fn big_host(t: i64) -> Vec<Metric> {
    let mut out = Vec::new();
    let tagged = |name: &'static str, k: &'static str, v: String| {
        Metric::new(name, t)
            .with_tag("host", "bighost-01.example.com")
            .with_tag(k, v)
    };
    for c in 0..=64 {
        let id = if c == 64 {
            "cpu-total".to_owned()
        } else {
            format!("cpu{c}")
        };
        let mut m = tagged("cpu", "cpu", id);
        for f in CPU_FIELDS.split_whitespace() {
            m.add_field(f, 12.345678901234 + c as f64);
        }
        out.push(m);
    }
    for d in 0..20 {
        let mut m = tagged("disk", "path", format!("/srv/data{d}"))
            .with_tag("device", format!("sd{d}"))
            .with_tag("fstype", "xfs");
        for f in DISK_FIELDS.split_whitespace() {
            m.add_field(f, 1_000_000_000_000u64 + d);
        }
        m.add_field("used_percent", 47.123456);
        m.add_field("inodes_used_percent", 3.5);
        out.push(m);
        let mut m = tagged("diskio", "name", format!("sd{d}"));
        for f in DISKIO_FIELDS.split_whitespace() {
            m.add_field(f, 123_456_789u64 * (d + 1));
        }
        out.push(m);
    }
    for i in 0..20 {
        let mut m = tagged("net", "interface", format!("eth{i}"));
        for f in NET_FIELDS.split_whitespace() {
            m.add_field(f, 987_654_321_000u64 + i);
        }
        m.add_field("speed", 10000i64);
        out.push(m);
    }
    let mut nstat = tagged("nstat", "name", "netstat".into());
    for i in 0..120 {
        nstat.add_field(format!("TcpExtCounter{i}"), i as i64 * 1000);
    }
    out.push(nstat);
    out
}

fn output(db_url: &str, extra: &str) -> (tempfile::TempDir, RunningOutput) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.conf");
    std::fs::write(
        &path,
        format!("[[inputs.cpu]]\n[[outputs.influxdb]]\n  urls = [\"{db_url}\"]\n  database = \"bench\"\n{extra}\n"),
    )
    .unwrap();
    let plan = config::load(&LoadRequest::new(vec![path])).unwrap_or_else(|e| panic!("{e}"));
    (dir, plan.outputs.into_iter().next().unwrap())
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("output bench: skipped (not run by `cargo bench`)");
        return;
    }
    let mut report = String::from(
        "## Output path (issue 3)\n\nCommand: `cargo bench -p wk-agent --bench output`.\n\n",
    );

    // 1. Serialization of one big collection.
    let collection = big_host(1_700_000_000_000_000_000);
    let fields: usize = collection.iter().map(|m| m.fields.len()).sum();
    let s = Serializer::default();
    let mut buf = Vec::with_capacity(64 << 10);
    let mut samples = Vec::new();
    for _ in 0..2000 {
        buf.clear();
        let t = thread_cpu_ns();
        for m in &collection {
            s.write(&mut buf, m);
        }
        samples.push(thread_cpu_ns() - t);
    }
    samples.sort_unstable();
    let (med, p90) = (samples[samples.len() / 2], samples[samples.len() * 9 / 10]);
    report.push_str(&format!(
        "Serializing one 10 s collection of a host with 64 CPUs, 20 disks and 20 interfaces \
         ({} metrics, {fields} fields, {} bytes of line protocol): median {:.1} µs, p90 {:.1} µs of CPU \
         (target: well under 1 ms).\n\n",
        collection.len(),
        buf.len(),
        med as f64 / 1e3,
        p90 as f64 / 1e3
    ));

    // 2. Memory of a buffer holding 100k metrics (5 fields each, like cpu usage lines).
    let n = 100_000;
    let before = rss_kib();
    let (_d, mut out) = output("http://127.0.0.1:9", "  metric_buffer_limit = 100000");
    let t0 = 1_700_000_000_000_000_000i64;
    for i in 0..n {
        out.add(
            &Metric::new("cpu", t0 + i as i64)
                .with_tag("host", "web-01")
                .with_tag("cpu", "cpu-total")
                .with_field("usage_user", 1.25)
                .with_field("usage_system", 0.5)
                .with_field("usage_idle", 98.25)
                .with_field("usage_iowait", 0.0)
                .with_field("usage_steal", 0.0),
        );
    }
    let after = rss_kib();
    report.push_str(&format!(
        "Buffering 100,000 metrics (2 tags, 5 fields) in memory: RSS {before} KiB → {after} KiB, \
         {:.0} bytes per buffered metric.\n\n",
        (after.saturating_sub(before) * 1024) as f64 / n as f64
    ));
    drop(out);

    // 3. Throughput into a real influxd.
    match servers::Influxd::start() {
        None => report.push_str("Throughput: skipped (influxd not installed).\n"),
        Some(db) => {
            report.push_str("| content_encoding | metrics | batch | wall time | metrics/s |\n|---|---|---|---|---|\n");
            for encoding in ["gzip", "identity"] {
                let (_d, mut out) = output(
                    &db.url(),
                    &format!(
                        "  content_encoding = \"{encoding}\"\n  metric_batch_size = 5000\n  metric_buffer_limit = 200000"
                    ),
                );
                for i in 0..n {
                    out.add(
                        &Metric::new("tput", t0 + i as i64)
                            .with_tag("host", "web-01")
                            .with_tag("enc", encoding)
                            .with_field("usage_user", 1.25 * i as f64)
                            .with_field("usage_system", 0.5)
                            .with_field("usage_idle", 98.25)
                            .with_field("n", i as i64),
                    );
                }
                let start = Instant::now();
                let written = out.flush().expect("write to influxd");
                let secs = start.elapsed().as_secs_f64();
                report.push_str(&format!(
                    "| {encoding} | {written} | 5000 | {:.2} s | {:.0} |\n",
                    secs,
                    written as f64 / secs
                ));
            }
            report.push_str(
                "\nThe server shares the machine's 2 cores with the agent: the figure is the pair's, \
                 and influxd is the limit (one agent sends ~100–300 metrics per 10 s).\n",
            );
        }
    }
    println!("{report}");
}
