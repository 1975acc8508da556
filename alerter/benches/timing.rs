//! Live timing of `pending` and `repeat` (issue 10's "done means"): a real influxd and the
//! real wk-alerter, a rule `every: "4s", pending: "8s", repeat: "20s"`, and 10 hosts that turn
//! busy one after the other at random phases of the 4 s schedule. For each host the bench
//! records when the alert and its first two reminders reach the `log` notifier (wall clock,
//! polled every 20 ms) and compares them with the tick arithmetic: the first tick whose
//! evaluation sees the busy point, + 8 s for the alert, + 20 s per reminder, + the evaluation
//! delay (1 s at `every: "4s"`). A bench, not a test: wall-clock figures on a shared machine.
//!
//! `cargo bench -p wk-alerter --bench timing` (about 80 s). Needs influxd (Debian influxdb)
//! and python3-aiosmtpd (the harness's stack).

#[path = "../tests/common/mod.rs"]
mod common;

#[path = "../tests/heal/kit.rs"]
mod heal;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use heal::stack::Stack;

const HOSTS: usize = 10;
const EVERY_NS: i64 = 4_000_000_000;
const PENDING_NS: i64 = 8_000_000_000;
const REPEAT_NS: i64 = 20_000_000_000;
/// The default evaluation delay at `every: "4s"` (a quarter of it).
const DELAY_NS: i64 = 1_000_000_000;

const RULE: &str = r#"
rule(#{ every: "4s", pending: "8s", repeat: "20s", notify: ["log"], no_data: "keep" });
fn check() {
    let cpu = query("cpu").field("busy").range("1h").last().group_by("host").run();
    for s in cpu { s.crit(s.value > 90.0); }
    cpu
}
"#;

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

fn main() {
    let Some(mut st) = Stack::new("", "") else {
        eprintln!("timing bench: servers missing");
        return;
    };
    st.rule("cpu.rhai", RULE);
    st.start_alerter();
    std::thread::sleep(Duration::from_secs(2));
    // Host i turns busy at a random phase; its point is stamped by influxd at write time.
    let mut busy_at = Vec::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ now_ns() as u64;
    for i in 0..HOSTS {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let wait = Duration::from_millis(300 + (seed >> 33) % 1700);
        std::thread::sleep(wait);
        busy_at.push(now_ns());
        st.write(&format!("cpu,host=h{i} busy=95"));
    }
    // arrivals[host] = wall-clock ns at which each alert event of that host was first seen.
    let mut arrivals: Vec<Vec<(i64, i64)>> = vec![Vec::new(); HOSTS];
    let end = now_ns() + PENDING_NS + 2 * REPEAT_NS + 8_000_000_000;
    while now_ns() < end {
        let seen = now_ns();
        for e in st.events() {
            if e["kind"] != "alert" {
                continue;
            }
            let Some(h) = e["tags"]["host"].as_str().and_then(|h| h.strip_prefix('h')) else {
                continue;
            };
            let Ok(h) = h.parse::<usize>() else { continue };
            let t = e["time"].as_i64().unwrap_or(0);
            if !arrivals[h].iter().any(|(et, _)| *et == t) {
                arrivals[h].push((t, seen));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut rows = Vec::new();
    let mut worst: f64 = 0.0;
    let mut exact = 0;
    for (i, a) in arrivals.iter().enumerate() {
        // The first tick whose evaluation (tick + delay, as of the tick) sees the point.
        let first_tick = (busy_at[i] + EVERY_NS - 1).div_euclid(EVERY_NS) * EVERY_NS;
        let want = [0, 1, 2].map(|k| first_tick + PENDING_NS + k * REPEAT_NS);
        let mut cells = Vec::new();
        for (k, w) in want.iter().enumerate() {
            match a.get(k) {
                Some((t, seen)) => {
                    if t == w {
                        exact += 1;
                    }
                    let off = (*seen - (w + DELAY_NS)) as f64 / 1e9;
                    worst = worst.max(off.abs());
                    cells.push(format!(
                        "{:+.2} s{}",
                        off,
                        if t == w { "" } else { " (tick off)" }
                    ));
                }
                None => cells.push("missing".into()),
            }
        }
        rows.push(format!("| h{i} | {} |", cells.join(" | ")));
    }
    println!(
        "pending 8 s / repeat 20 s at every 4 s, {HOSTS} hosts; arrival minus expected (tick + delay):\n"
    );
    println!("| host | alert (8 s) | reminder 1 (28 s) | reminder 2 (48 s) |");
    println!("| --- | --- | --- | --- |");
    for r in rows {
        println!("{r}");
    }
    println!(
        "\nevent times exactly on the expected tick: {exact} of {}; worst arrival offset {worst:.2} s (target ± 0.5 s)",
        HOSTS * 3
    );
}
