//! Rule evaluation against a peer (issue 13: "ratios against … Prometheus/vmalert for rule
//! evaluation"): the release `wk-alerter` and Debian's `vmalert` evaluate the same ten example
//! monitoring rules (each twice, as the cycle bench: 20 rules) over the same VictoriaMetrics,
//! filled with the cycle bench's Telegraf-shaped data for N hosts (6 minutes of history, then a
//! new point per series every 10 s, in real time). Both send their alerts to the same HTTP
//! sink (wk-alerter: a webhook notifier; vmalert: `-notifier.url`). After a warm-up, each
//! process's CPU time (all threads, its CPU-time clock) is read over the same window; the
//! figure is CPU per minute and the ratio wk-alerter / vmalert. VictoriaMetrics' own CPU (it
//! answers both) is given for scale. As a check that both do the same work, each one's alert
//! count (firing + pending) is printed at the end; the bench fails if either has none.
//!
//! The vmalert rules are the PromQL/MetricsQL a Prometheus user would write for the same
//! checks (below, [`VMALERT_RULES`]); wk-alerter's VictoriaMetrics source renders its own
//! queries from the same Rhai files the InfluxDB users run.
//!
//! Run: `cargo bench -p wk-alerter --bench vmalert` (needs Debian's `victoria-metrics`, which
//! ships `vmalert`). `WK_BENCH_HOSTS` (default 1000), `WK_BENCH_WARMUP_SECS` (default 60),
//! `WK_BENCH_SECS` (measured window, default 180), `WK_BENCH_SPREAD` (wk-alerter's
//! `evaluation_spread`, default none).

#[path = "../tests/common/mod.rs"]
#[allow(dead_code)]
mod common;
#[path = "common/cpu.rs"]
mod cpu;
#[path = "common/hosts.rs"]
mod hosts;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::servers::VictoriaMetrics;
use cpu::other_process_cpu;
use hosts::{POINTS, step_lines};

type BoxError = Box<dyn std::error::Error>;

const S: i64 = 1_000_000_000;
const INTERVAL: i64 = 10 * S;

/// The ten rules of the cycle bench, as vmalert rules: (name, evaluation interval, for, expr).
const VMALERT_RULES: [(&str, &str, &str, &str); 10] = [
    (
        "cpu_high",
        "10s",
        "1m",
        r#"100 - avg by (host) (avg_over_time(cpu_usage_idle{cpu="cpu-total"}[1m])) > 80"#,
    ),
    (
        "mem_high",
        "30s",
        "5m",
        "avg by (host) (avg_over_time(mem_used_percent[5m])) > 85",
    ),
    (
        "disk_full",
        "1m",
        "2m",
        r#"max by (host, path) (last_over_time(disk_used_percent{fstype!~"tmpfs|devtmpfs|overlay|squashfs"}[5m])) > 85"#,
    ),
    (
        "swap_high",
        "1m",
        "10m",
        "max by (host) (last_over_time(swap_used_percent[5m])) > 50",
    ),
    (
        "load_high",
        "1m",
        "5m",
        "max by (host) (last_over_time(system_load5[2m])) / max by (host) (last_over_time(system_n_cpus[2m])) > 1.5",
    ),
    (
        "host_down",
        "30s",
        "0s",
        "sum by (host) (count_over_time(system_uptime[1m])) < 1",
    ),
    (
        "http_down",
        "30s",
        "1m",
        "max by (host, server) (last_over_time(http_response_result_code[2m])) != 0",
    ),
    (
        "port_closed",
        "30s",
        "1m",
        r#"max by (host, server, port) (last_over_time(net_response_result_code{protocol="tcp"}[2m])) != 0"#,
    ),
    (
        "tcp_retransmits",
        "30s",
        "2m",
        r#"sum by (host) (rate(nstat_TcpRetransSegs{name="snmp"}[2m])) > 50"#,
    ),
    (
        "close_wait",
        "30s",
        "5m",
        "max by (host) (max_over_time(netstat_tcp_close_wait[2m])) > 100",
    ),
];

fn main() {
    if let Err(e) = run() {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An HTTP server that answers 200 to every request and counts them (the notifiers' target).
fn sink(stop: Arc<AtomicBool>, hits: Arc<AtomicU64>) -> Result<u16, BoxError> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let port = l.local_addr()?.port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let Ok(c) = conn else { continue };
            let hits = hits.clone();
            std::thread::spawn(move || serve(c, &hits));
        }
    });
    Ok(port)
}

/// Reads requests (headers, then Content-Length bytes) and answers each with an empty 200.
fn serve(mut c: TcpStream, hits: &AtomicU64) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match c.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < end + 4 + len {
            match c.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..end + 4 + len);
        hits.fetch_add(1, Ordering::Relaxed);
        if c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

/// POSTs line protocol to VictoriaMetrics' InfluxDB endpoint.
fn write(vm: &str, body: String) -> Result<(), BoxError> {
    let status = ureq::post(&format!("{vm}/write?db=telegraf"))
        .send(body)?
        .status();
    if status.as_u16() / 100 != 2 {
        return Err(format!("VictoriaMetrics /write answered {status}").into());
    }
    Ok(())
}

fn get_json(url: &str) -> Result<serde_json::Value, BoxError> {
    let body = ureq::get(url).call()?.body_mut().read_to_string()?;
    Ok(serde_json::from_str(&body)?)
}

fn wait_up(port: u16, what: &str) -> Result<(), BoxError> {
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if t0.elapsed() > Duration::from_secs(30) {
            return Err(format!("{what} did not listen on {port}").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn start_wk_alerter(dir: &Path, vm: &str, sink: u16, port: u16) -> Result<Proc, BoxError> {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules)?;
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/rules");
    for (name, ..) in VMALERT_RULES {
        let text = std::fs::read_to_string(examples.join(format!("{name}.rhai")))?;
        for copy in ["a", "b"] {
            std::fs::write(rules.join(format!("{name}_{copy}.rhai")), &text)?;
        }
    }
    let spread = std::env::var("WK_BENCH_SPREAD")
        .map(|s| format!("  evaluation_spread = {s:?}\n"))
        .unwrap_or_default();
    let conf = dir.join("alerter.conf");
    std::fs::write(
        &conf,
        format!(
            "[alerter]\n  rules_dir = {:?}\n  state_dir = {:?}\n{spread}\
             [http]\n  listen = \"127.0.0.1:{port}\"\n\
             [[sources.victoriametrics]]\n  url = \"{vm}\"\n  database = \"telegraf\"\n\
             [[notifiers.webhook]]\n  name = \"ops-email\"\n  url = \"http://127.0.0.1:{sink}/\"\n",
            rules.display().to_string(),
            dir.join("state").display().to_string(),
        ),
    )?;
    let child = Command::new(env!("CARGO_BIN_EXE_wk-alerter"))
        .arg("--config")
        .arg(&conf)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("wk-alerter.log"))?)
        .spawn()?;
    let p = Proc(child);
    wait_up(port, "wk-alerter")?;
    Ok(p)
}

fn start_vmalert(dir: &Path, vm: &str, sink: u16, port: u16) -> Result<Proc, BoxError> {
    let bin = wk_core::testing::binary("vmalert", "victoria-metrics")
        .ok_or("vmalert is not installed (Debian package victoria-metrics)")?;
    let mut yaml = String::from("groups:\n");
    for every in ["10s", "30s", "1m"] {
        yaml.push_str(&format!(
            "  - name: every_{every}\n    interval: {every}\n    rules:\n"
        ));
        for (name, e, for_, expr) in VMALERT_RULES {
            if e != every {
                continue;
            }
            for copy in ["a", "b"] {
                yaml.push_str(&format!(
                    "      - alert: {name}_{copy}\n        expr: '{expr}'\n        for: {for_}\n"
                ));
            }
        }
    }
    let rules = dir.join("vmalert.yml");
    std::fs::write(&rules, yaml)?;
    let child = Command::new(bin)
        .arg(format!("-rule={}", rules.display()))
        .arg(format!("-datasource.url={vm}"))
        .arg(format!("-notifier.url=http://127.0.0.1:{sink}"))
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg("-loggerLevel=ERROR")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("vmalert.log"))?)
        .spawn()?;
    let p = Proc(child);
    wait_up(port, "vmalert")?;
    Ok(p)
}

/// Alerts per rule name.
type PerRule = std::collections::BTreeMap<String, usize>;

/// wk-alerter's firing and pending alerts (its API), per rule.
fn wk_alerts(port: u16) -> Result<PerRule, BoxError> {
    let v = get_json(&format!("http://127.0.0.1:{port}/api/v1/alerts"))?;
    let mut n = PerRule::new();
    for a in v["alerts"].as_array().into_iter().flatten() {
        if matches!(a["state"].as_str(), Some("firing" | "pending")) {
            *n.entry(a["rule"].as_str().unwrap_or("?").to_owned())
                .or_default() += 1;
        }
    }
    Ok(n)
}

/// vmalert's firing and pending alerts (its Prometheus-compatible API), per rule.
fn vmalert_alerts(port: u16) -> Result<PerRule, BoxError> {
    let v = get_json(&format!("http://127.0.0.1:{port}/api/v1/alerts"))?;
    let mut n = PerRule::new();
    for a in v["data"]["alerts"].as_array().into_iter().flatten() {
        *n.entry(a["name"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    Ok(n)
}

fn run() -> Result<(), BoxError> {
    let hosts = env_num("WK_BENCH_HOSTS", 1000) as usize;
    let warmup = Duration::from_secs(env_num("WK_BENCH_WARMUP_SECS", 60));
    let window = Duration::from_secs(env_num("WK_BENCH_SECS", 180));
    let vm = VictoriaMetrics::start_with(&["-search.latencyOffset=1s"])
        .ok_or("victoria-metrics is not installed (Debian package victoria-metrics)")?;
    let vm_url = vm.url();
    let vm_pid = vm.pid();

    // History: six minutes at 10 s, ending at the last 10 s boundary.
    let last = now_ns() / INTERVAL * INTERVAL;
    for k in (0..POINTS).rev() {
        write(&vm_url, step_lines(hosts, k, last - k * INTERVAL))?;
    }
    println!("loaded {hosts} hosts x {POINTS} points into VictoriaMetrics");

    // Then a point per series every 10 s, in real time (k counts back from the history's end).
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, vm_url) = (stop.clone(), vm_url.clone());
        std::thread::spawn(move || -> Result<(), String> {
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                let t = last - k * INTERVAL;
                if now_ns() >= t {
                    write(&vm_url, step_lines(hosts, k, t)).map_err(|e| e.to_string())?;
                    k -= 1;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Ok(())
        })
    };

    let hits = Arc::new(AtomicU64::new(0));
    let sink_port = sink(stop.clone(), hits.clone())?;
    let dir = tempfile::tempdir()?;
    let [wk_port, vma_port] = wk_core::testing::free_ports();
    let wk = start_wk_alerter(dir.path(), &vm_url, sink_port, wk_port)?;
    let vma = start_vmalert(dir.path(), &vm_url, sink_port, vma_port)?;
    std::thread::sleep(warmup);

    let pids = [wk.0.id(), vma.0.id(), vm_pid];
    let c0 = pids.map(other_process_cpu);
    let t0 = Instant::now();
    std::thread::sleep(window);
    let c1 = pids.map(other_process_cpu);
    let wall = t0.elapsed();
    let (wk_rules, vma_rules) = (wk_alerts(wk_port)?, vmalert_alerts(vma_port)?);
    let (wk_n, vma_n) = (
        wk_rules.values().sum::<usize>(),
        vma_rules.values().sum::<usize>(),
    );
    stop.store(true, Ordering::Relaxed);
    let _ = TcpStream::connect(("127.0.0.1", sink_port));
    writer.join().map_err(|_| "writer panicked")??;

    let per_min = |i: usize| (c1[i] - c0[i]).as_secs_f64() * 1e3 / (wall.as_secs_f64() / 60.0);
    let (wk_ms, vma_ms, vm_ms) = (per_min(0), per_min(1), per_min(2));
    println!(
        "{hosts} hosts, 20 rules (42 evaluations a minute), {:.0} s measured after {:.0} s of warm-up",
        wall.as_secs_f64(),
        warmup.as_secs_f64()
    );
    println!("| process | CPU ms per minute | alerts (firing + pending) at the end |");
    println!("| --- | --- | --- |");
    println!("| wk-alerter (VictoriaMetrics source) | {wk_ms:.0} | {wk_n} |");
    println!("| vmalert | {vma_ms:.0} | {vma_n} |");
    println!("| victoria-metrics (answers both, and the writes) | {vm_ms:.0} | |");
    println!(
        "ratio wk-alerter / vmalert: {:.2}; notifier requests received: {}",
        wk_ms / vma_ms,
        hits.load(Ordering::Relaxed)
    );
    if wk_n == 0 || vma_n == 0 {
        return Err(format!(
            "an alerter saw no alert (wk-alerter {wk_n}, vmalert {vma_n}): logs in {}",
            dir.keep().display()
        )
        .into());
    }
    // Evaluations stopped at the time limit and other trouble: the work is not the same if
    // there are any, even when the counts agree.
    let log = std::fs::read_to_string(dir.path().join("wk-alerter.log")).unwrap_or_default();
    let noted: Vec<&str> = (log.lines())
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    println!(
        "wk-alerter logged {} warnings and errors ({} evaluations stopped at the time limit)",
        noted.len(),
        noted
            .iter()
            .filter(|l| l.contains("evaluation failed") && l.contains("time limit"))
            .count()
    );
    if wk_n != vma_n || !noted.is_empty() {
        // Say where they differ, and keep the logs to find out why.
        println!("per rule, wk-alerter: {wk_rules:?}");
        println!("vmalert: {vma_rules:?}");
        for l in noted.iter().take(10) {
            println!("  {l}");
        }
        println!("logs kept in {}", dir.keep().display());
    }
    Ok(())
}
