//! Line protocol as wk-agent writes it, for the stream benches: half `cpu` points (10
//! fields), half `mem` points (5 fields), 600 series (100 hosts × cpu-total, cpu0–3 and mem),
//! one point per series every 10 s from `t0_secs` (rounded to the second as the agent does, one
//! in twenty a second late).
//!
//! - steady: the values of the memory bench before the window was compressed (constant);
//! - agent: the values computed as the agent's `cpu` and `mem` inputs compute them. Each CPU's
//!   /proc/stat jiffies (USER_HZ 100) advance by ~1,000 per 10 s (one in twenty intervals a
//!   jiffy more or less), split between user, system, iowait, softirq, the odd irq and idle
//!   by random walks of the load; cpu-total is their sum. The percentages are the agent's own
//!   arithmetic on those counters (seconds as `ticks / 100.0`, Telegraf's total, `100 × Δ /
//!   Δtotal`), so they carry its float rounding. mem: used bytes move by pages, free and
//!   available follow, `used_percent` as the agent computes it.

use std::fmt::Write;

use wk_core::testing::Xorshift as Rng;

const HOSTS: usize = 100;
const CPUS: [&str; 5] = ["cpu-total", "cpu0", "cpu1", "cpu2", "cpu3"];

/// One CPU's jiffies as /proc/stat counts them: user, nice, system, idle, iowait, irq,
/// softirq, steal, guest, guest_nice.
type Ticks = [u64; 10];

/// The agent's `CpuTimes` (seconds) of some jiffies, and Telegraf's total.
fn seconds(t: &Ticks) -> ([f64; 10], f64) {
    let s = t.map(|v| v as f64 / 100.0);
    // user + system + nice + iowait + irq + softirq + steal + idle, in the agent's order.
    let total = s[0] + s[2] + s[1] + s[4] + s[5] + s[6] + s[7] + s[3];
    (s, total)
}

/// Writes the points one line at a time.
pub struct AgentLines {
    agent: bool,
    t0_secs: i64,
    rng: Rng,
    /// Load levels (user, system, iowait %) per host and CPU.
    load: Vec<(f64, f64, f64)>,
    /// Jiffies per host and CPU (index as in `CPUS`): this interval's and the previous.
    ticks: Vec<Ticks>,
    last: Vec<Ticks>,
    used: Vec<i64>,
    i: usize,
    /// Field values written so far.
    pub values: usize,
}

impl AgentLines {
    pub fn new(agent: bool, t0_secs: i64) -> AgentLines {
        // Machines up for a while: counters in the millions (a generator of their own, so
        // that the steady mix's times stay as they were).
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let ticks: Vec<Ticks> = (0..HOSTS * CPUS.len())
            .map(|_| {
                let mut t = [0u64; 10];
                for (k, v) in t.iter_mut().enumerate().take(8) {
                    if k != 1 && k != 7 {
                        *v = 1_000_000 + rng.next_u64() % 50_000_000;
                    }
                }
                t
            })
            .collect();
        AgentLines {
            agent,
            t0_secs,
            rng: Rng(0x9e37_79b9_7f4a_7c15),
            load: vec![(5.0, 2.0, 0.5); HOSTS * CPUS.len()],
            last: ticks.clone(),
            ticks,
            used: vec![4_000_000_000; HOSTS],
            i: 0,
            values: 0,
        }
    }

    /// Advances every CPU's jiffies by one 10 s interval; cpu-total by their sum.
    fn tick(&mut self) {
        self.last.clone_from(&self.ticks);
        let rng = &mut self.rng;
        for host in 0..HOSTS {
            let mut sum = [0u64; 10];
            for c in 1..CPUS.len() {
                let s = c * HOSTS + host;
                let l = &mut self.load[s];
                let walk = |v: f64, r: f64, max: f64| (v + (r - 0.5) * 2.0).clamp(0.0, max);
                l.0 = walk(l.0, rng.unit(), 60.0);
                l.1 = walk(l.1, rng.unit(), 20.0);
                l.2 = walk(l.2, rng.unit(), 5.0);
                let jiffies = match rng.next_u64() % 40 {
                    0 => 999,
                    1 => 1001,
                    _ => 1000,
                };
                let share = |pct: f64, r: f64| (pct * 10.0 + r * 3.0).round() as u64;
                let user = share(l.0, rng.unit());
                let system = share(l.1, rng.unit());
                let iowait = share(l.2, rng.unit());
                let softirq = rng.next_u64() % 4;
                let irq = u64::from(rng.next_u64().is_multiple_of(10));
                let idle = jiffies - user - system - iowait - softirq - irq;
                let t = &mut self.ticks[s];
                for (k, d) in [
                    (0, user),
                    (2, system),
                    (3, idle),
                    (4, iowait),
                    (5, irq),
                    (6, softirq),
                ] {
                    t[k] += d;
                }
                for (a, b) in sum.iter_mut().zip(t.iter()) {
                    *a += b;
                }
            }
            self.ticks[host] = sum;
        }
    }

    /// Appends the next point's line (with its newline) to `out`.
    pub fn next_line(&mut self, out: &mut String) {
        let series = HOSTS * (CPUS.len() + 1);
        let round = (self.i / series) as i64;
        let s = self.i % series;
        self.i += 1;
        if self.agent && s == 0 {
            self.tick();
        }
        let (agent, rng) = (self.agent, &mut self.rng);
        let late = i64::from(rng.next_u64() % 20 == 0);
        let t = (self.t0_secs + round * 10 + late) * 1_000_000_000;
        let host = s % HOSTS;
        if s < HOSTS * CPUS.len() {
            let c = CPUS[s / HOSTS];
            let v = if agent {
                // The agent's cpu input, usage fields.
                let (now, total) = seconds(&self.ticks[s]);
                let (last, last_total) = seconds(&self.last[s]);
                let total_delta = total - last_total;
                let pct = |d: f64| 100.0 * d / total_delta;
                let d = |k: usize| now[k] - last[k];
                [
                    pct(d(0) - d(8)),
                    pct(d(2)),
                    pct(d(3)),
                    pct(d(1) - d(9)),
                    pct(d(4)),
                    pct(d(5)),
                    pct(d(6)),
                    pct(d(7)),
                    pct(d(8)),
                    pct(d(9)),
                ]
            } else {
                [1.5, 2.5, 90.1, 0.0, 0.2, 0.0, 0.1, 0.0, 0.0, 0.0]
            };
            let _ = writeln!(
                out,
                "cpu,cpu={c},host=web{host} usage_user={},usage_system={},usage_idle={},usage_nice={},usage_iowait={},usage_irq={},usage_softirq={},usage_steal={},usage_guest={},usage_guest_nice={} {t}",
                v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9]
            );
            self.values += 10;
        } else {
            let total = 8_000_000_000i64;
            let u = if agent {
                let used = &mut self.used[host];
                *used += (rng.next_u64() % 2001) as i64 * 4096 - 1000 * 4096;
                *used = (*used).clamp(1 << 30, 7 << 30);
                *used
            } else {
                4_000_000_000
            };
            let free = if agent {
                total - u - 1_500_000_000
            } else {
                2_000_000_000
            };
            let available = if agent { total - u } else { 3_500_000_000 };
            let pct = if agent {
                // The agent's mem input: 100.0 * v as f64 / total as f64.
                100.0 * u as f64 / total as f64
            } else {
                50.1
            };
            let _ = writeln!(
                out,
                "mem,host=web{host} total={total}i,used={u}i,free={free}i,available={available}i,used_percent={pct} {t}"
            );
            self.values += 5;
        }
    }
}
