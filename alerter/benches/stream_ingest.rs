//! Stream ingest, side by side with influxd 1.x: the same line protocol batches (5,000 lines
//! each, as the agent's influxdb output sends them), plain and gzip, POSTed over HTTP/1.1
//! keep-alive to `/write` of a wk-alerter in stream mode (a child process, release build) and of
//! a real influxd (Debian `influxdb`). Measured: each server's CPU time (all its threads, from
//! its CPU-time clock) while it takes the batches, as points per CPU-second and as a ratio.
//!
//! Run: `cargo bench -p wk-alerter --bench stream_ingest` (needs `influxd`: `apt-get install -y
//! influxdb`); `WK_BENCH_POINTS` (default 1,000,000 per encoding and round) changes the size,
//! `WK_BENCH_ROUNDS` (default 3) the rounds: each round sends a new set of batches (later
//! times, so that neither server rewrites points) plain and gzip to both servers, and the
//! table gives each figure's median over the rounds (on a shared machine one round can be
//! slowed by the neighbours). The points are the `agent` mix of `benches/common/agent_lines.rs`
//! (docs/performance-alerter.md). `WK_BENCH_ALERTER=path` measures another wk-alerter binary
//! (an earlier build, for an A/B of a change) in place of this build's.

#[path = "../tests/common/influxd.rs"]
mod influxd;

#[path = "common/agent_lines.rs"]
mod agent_lines;
#[path = "common/cpu.rs"]
mod cpu;

use cpu::other_process_cpu;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-token-0123456789";
const BATCH: usize = 5_000;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("stream_ingest: skipped (not run by `cargo bench`)");
        return;
    }
    let n: usize = env_or("WK_BENCH_POINTS", 1_000_000);
    let rounds: usize = env_or("WK_BENCH_ROUNDS", 3).max(1);
    let Some(influxd) = influxd::Influxd::start() else {
        println!("stream_ingest: influxd missing (apt-get install -y influxdb)");
        return;
    };
    influxd.create_database("bench");
    let alerter = Alerter::start();

    // A set of batches per round and encoding, each later than the one before.
    let now_secs = wk_alerter::clock::now_ns() / 1_000_000_000;
    let span = (n / 600 + 1) as i64 * 10 + 30;
    let sets = 2 * rounds as i64;
    // (encoding, influxd CPU, wk-alerter CPU) per round.
    let mut results: Vec<(&str, Duration, Duration)> = Vec::new();
    for round in 0..rounds {
        for (k, enc) in ["plain", "gzip"].into_iter().enumerate() {
            let gz = enc == "gzip";
            let t0 = now_secs - (sets - (2 * round + k) as i64) * span;
            let set = batches(n, t0, gz);
            let mb = set.iter().map(Vec::len).sum::<usize>() as f64 / 1e6;
            println!("round {round} {enc}: {n} points in batches of {BATCH} ({mb:.1} MB)");
            let i = send(
                influxd.port,
                influxd.pid(),
                "/write?db=bench&precision=ns",
                &set,
                gz,
            );
            let a = send(
                alerter.port,
                alerter.child.id(),
                "/write?db=bench",
                &set,
                gz,
            );
            println!(
                "  CPU s: influxd {:.2}, wk-alerter {:.2} ({:.0} points/CPU-s)",
                i.as_secs_f64(),
                a.as_secs_f64(),
                n as f64 / a.as_secs_f64()
            );
            results.push((enc, i, a));
        }
    }
    println!();
    println!(
        "| body | influxd CPU s | influxd points/CPU-s | wk-alerter CPU s | wk-alerter points/CPU-s | CPU ratio (wk-alerter / influxd) |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for enc in ["plain", "gzip"] {
        let of = |f: fn(&(&str, Duration, Duration)) -> f64| {
            median(results.iter().filter(|r| r.0 == enc).map(f).collect())
        };
        let (i, a) = (of(|r| r.1.as_secs_f64()), of(|r| r.2.as_secs_f64()));
        let ratio = of(|r| r.2.as_secs_f64() / r.1.as_secs_f64());
        println!(
            "| {enc} | {i:.2} | {:.0} | {a:.2} | {:.0} | {ratio:.3} |",
            n as f64 / i,
            n as f64 / a,
        );
    }
    println!("(medians over {rounds} rounds of {n} points per encoding)");
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn batches(n: usize, t0_secs: i64, gzip: bool) -> Vec<Vec<u8>> {
    let mut lines = agent_lines::AgentLines::new(true, t0_secs);
    let mut out = Vec::new();
    let mut text = String::new();
    for i in 0..n {
        lines.next_line(&mut text);
        if (i + 1) % BATCH == 0 || i + 1 == n {
            let body = if gzip {
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(text.as_bytes()).unwrap();
                e.finish().unwrap()
            } else {
                text.clone().into_bytes()
            };
            out.push(body);
            text.clear();
        }
    }
    out
}

/// POSTs every batch on one keep-alive connection; the server's CPU time meanwhile.
fn send(port: u16, pid: u32, target: &str, set: &[Vec<u8>], gzip: bool) -> Duration {
    let conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_nodelay(true).unwrap();
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    let cpu0 = other_process_cpu(pid);
    let t0 = Instant::now();
    for body in set {
        let enc = if gzip {
            "Content-Encoding: gzip\r\n"
        } else {
            ""
        };
        write!(
            w,
            "POST {target} HTTP/1.1\r\nHost: bench\r\nAuthorization: Token {TOKEN}\r\n{enc}\
             Content-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        w.write_all(body).unwrap();
        let (status, answer) = read_answer(&mut r);
        assert_eq!(status, 204, "{target}: {answer}");
    }
    let cpu = other_process_cpu(pid) - cpu0;
    eprintln!(
        "  port {port}: {} batches in {:.2} s wall",
        set.len(),
        t0.elapsed().as_secs_f64()
    );
    cpu
}

fn read_answer(r: &mut BufReader<TcpStream>) -> (u16, String) {
    let mut status = 0;
    let mut len = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some(rest) = l.strip_prefix("HTTP/1.1 ") {
            status = rest[..3].parse().unwrap_or(0);
        }
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The release wk-alerter in stream mode, in a temp dir.
struct Alerter {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Alerter {
    fn start() -> Alerter {
        let dir = tempfile::tempdir().unwrap();
        let port = influxd::free_port();
        let rules = dir.path().join("rules");
        std::fs::create_dir(&rules).unwrap();
        let conf = dir.path().join("alerter.conf");
        std::fs::write(
            &conf,
            format!(
                "[alerter]\n  rules_dir = {:?}\n  state_dir = {:?}\n\
                 [stream]\n  listen = \"127.0.0.1:{port}\"\n  token = \"{TOKEN}\"\n  window = \"8760h\"\n  \
                 max_points = 100000000\n  max_bytes = \"16GiB\"\n  snapshot_interval = \"0s\"\n",
                rules.display().to_string(),
                dir.path().join("state").display().to_string()
            ),
        )
        .unwrap();
        let bin = std::env::var_os("WK_BENCH_ALERTER")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_wk-alerter").into());
        println!("wk-alerter: {}", std::path::Path::new(&bin).display());
        let child = Command::new(bin)
            .arg("--config")
            .arg(&conf)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start wk-alerter");
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(30), "wk-alerter not up");
            std::thread::sleep(Duration::from_millis(20));
        }
        Alerter {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Alerter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
