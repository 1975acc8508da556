//! Line protocol as wk-agent writes it, for the stream benches: half `cpu` points (10
//! fields), half `mem` points (5 fields), 600 series (100 hosts × cpu-total, cpu0–3 and mem),
//! one point per series every 10 s from `t0_secs` (rounded to the second as the agent does, one
//! in twenty a second late).
//!
//! - steady: the values of the memory bench before the window was compressed (constant);
//! - agent: cpu percentages with all their digits (random walks; the steal/guest fields 0),
//!   mem bytes moving by pages, `used_percent` computed.

use std::fmt::Write;

use wk_core::testing::Xorshift;

const HOSTS: usize = 100;
const CPUS: [&str; 5] = ["cpu-total", "cpu0", "cpu1", "cpu2", "cpu3"];

/// Writes the points one line at a time.
pub struct AgentLines {
    agent: bool,
    t0_secs: i64,
    rng: Xorshift,
    cpu: Vec<(f64, f64, f64)>,
    used: Vec<i64>,
    i: usize,
    /// Field values written so far.
    pub values: usize,
}

impl AgentLines {
    pub fn new(agent: bool, t0_secs: i64) -> AgentLines {
        AgentLines {
            agent,
            t0_secs,
            rng: Xorshift(0x9e37_79b9_7f4a_7c15),
            cpu: vec![(5.0, 2.0, 0.5); HOSTS * CPUS.len()],
            used: vec![4_000_000_000; HOSTS],
            i: 0,
            values: 0,
        }
    }

    /// Appends the next point's line (with its newline) to `out`.
    pub fn next_line(&mut self, out: &mut String) {
        let series = HOSTS * (CPUS.len() + 1);
        let (agent, rng) = (self.agent, &mut self.rng);
        let round = (self.i / series) as i64;
        let s = self.i % series;
        self.i += 1;
        let late = i64::from(rng.next_u64() % 20 == 0);
        let t = (self.t0_secs + round * 10 + late) * 1_000_000_000;
        let host = s % HOSTS;
        if s < HOSTS * CPUS.len() {
            let c = CPUS[s / HOSTS];
            let (user, system, iowait) = if agent {
                let st = &mut self.cpu[s];
                let walk = |v: f64, r: f64, max: f64| (v + (r - 0.5) * 2.0).clamp(0.0, max);
                st.0 = walk(st.0, rng.unit(), 60.0);
                st.1 = walk(st.1, rng.unit(), 20.0);
                st.2 = walk(st.2, rng.unit(), 5.0);
                *st
            } else {
                (1.5, 2.5, 0.2)
            };
            let idle = if agent {
                100.0 - user - system - iowait
            } else {
                90.1
            };
            let softirq = if agent { rng.unit() * 0.3 } else { 0.1 };
            let _ = writeln!(
                out,
                "cpu,cpu={c},host=web{host} usage_user={user},usage_system={system},usage_idle={idle},usage_nice=0,usage_iowait={iowait},usage_irq=0,usage_softirq={softirq},usage_steal=0,usage_guest=0,usage_guest_nice=0 {t}"
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
                u as f64 * 100.0 / total as f64
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
