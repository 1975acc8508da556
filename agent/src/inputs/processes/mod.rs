//! `[[inputs.processes]]`: number of processes per state and of threads, from
//! `/proc/[0-9]*/stat`. See README.md for the schema.

use std::io::Read;

use super::{BuildContext, GatherError, Input, InputSpec};
use crate::hostpaths::HostPaths;
use crate::plugin::Accumulator;
use wk_core::options::Options;

/// Registry entry.
pub const SPEC: InputSpec = InputSpec {
    name: "processes",
    description: "Number of processes per state and total threads",
    sample_config: include_str!("sample.conf"),
    build,
    test_twice: false,
};

/// What one `/proc/<pid>/stat` says about its process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidStat {
    /// The state letter (field 3).
    pub state: u8,
    /// `num_threads` (field 20); `None` when it is missing or not a number (Telegraf then
    /// still counts the process but not its threads).
    pub threads: Option<i64>,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may itself
/// contain `)`, spaces or digits, so the fields are counted from the **last** `)`.
/// `Ok(None)`: no `)` at all (Telegraf skips such a file). `Err`: fewer than three fields
/// after the name.
pub fn parse_pid_stat(data: &[u8]) -> Result<Option<PidStat>, String> {
    let Some(close) = data.iter().rposition(|&b| b == b')') else {
        return Ok(None);
    };
    let rest = &data[close + 1..];
    let mut fields = rest
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let state = fields.next().and_then(|f| f.first().copied());
    // fields after the state: ppid (4), pgrp (5), … num_threads is field 20, i.e. the 17th
    // after the state.
    let after: Vec<&[u8]> = fields.take(17).collect();
    let Some(state) = state else {
        return Err("no state after the command name".into());
    };
    if after.len() < 2 {
        return Err(format!(
            "only {} fields after the command name, expected at least 3",
            after.len() + 1
        ));
    }
    let threads = after
        .get(16)
        .and_then(|f| std::str::from_utf8(f).ok())
        .and_then(|s| s.parse().ok());
    Ok(Some(PidStat { state, threads }))
}

/// Counts per state, in Telegraf's field order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub blocked: i64,
    pub zombies: i64,
    pub stopped: i64,
    pub running: i64,
    pub sleeping: i64,
    pub total: i64,
    pub unknown: i64,
    pub dead: i64,
    pub paging: i64,
    pub total_threads: i64,
    pub idle: i64,
    /// `P` (parked) processes; the field is only emitted when there is one.
    pub parked: i64,
}

impl Counts {
    /// Adds one process.
    pub fn add(&mut self, s: PidStat) {
        match s.state {
            b'R' => self.running += 1,
            b'S' => self.sleeping += 1,
            b'D' => self.blocked += 1,
            b'Z' => self.zombies += 1,
            b'X' => self.dead += 1,
            b'T' | b't' => self.stopped += 1,
            b'W' => self.paging += 1,
            b'I' => self.idle += 1,
            b'P' => self.parked += 1,
            // Telegraf logs and does not count it anywhere but in total; `unknown` stays 0.
            other => tracing::debug!("processes: unknown state {:?}", other as char),
        }
        self.total += 1;
        if let Some(t) = s.threads {
            self.total_threads += t;
        }
    }
}

struct Processes {
    paths: HostPaths,
    /// Reused for every stat file: one allocation per gather instead of one per process.
    buf: Vec<u8>,
}

fn build(opts: &mut Options<'_, '_>, ctx: &BuildContext<'_>) -> Box<dyn Input> {
    // BSD only (runs `sudo ps`): Linux always reads /proc. Read it to check its type.
    let _ = opts.bool("use_sudo", false);
    Box::new(Processes {
        paths: ctx.paths.clone(),
        buf: Vec::with_capacity(1024),
    })
}

/// True for the errors of a process that exited while we read it.
fn vanished(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

impl Input for Processes {
    fn gather(&mut self, acc: &mut Accumulator) -> Result<(), GatherError> {
        let proc = &self.paths.proc;
        let dir = std::fs::read_dir(proc).map_err(|e| GatherError::io(proc, e))?;
        let mut counts = Counts::default();
        let mut path = proc.clone();
        for entry in dir {
            let entry = entry.map_err(|e| GatherError::io(proc, e))?;
            let name = entry.file_name();
            if !name
                .as_encoded_bytes()
                .first()
                .is_some_and(u8::is_ascii_digit)
            {
                continue;
            }
            path.push(&name);
            path.push("stat");
            self.buf.clear();
            let read = std::fs::File::open(&path).and_then(|mut f| f.read_to_end(&mut self.buf));
            let result = match read {
                Ok(_) => Ok(()),
                Err(e) if vanished(&e) => Err(None),
                Err(e) => Err(Some(GatherError::io(&path, e))),
            };
            let parsed = match result {
                Ok(()) => {
                    parse_pid_stat(&self.buf).map_err(|m| GatherError::malformed(&path, 1, m))
                }
                Err(None) => Ok(None),
                Err(Some(e)) => Err(e),
            };
            path.pop();
            path.pop();
            if let Some(s) = parsed? {
                counts.add(s);
            }
        }
        let mut m = acc
            .metric("processes")
            .with_field("blocked", counts.blocked)
            .with_field("zombies", counts.zombies)
            .with_field("stopped", counts.stopped)
            .with_field("running", counts.running)
            .with_field("sleeping", counts.sleeping)
            .with_field("total", counts.total)
            .with_field("unknown", counts.unknown)
            .with_field("dead", counts.dead)
            .with_field("paging", counts.paging)
            .with_field("total_threads", counts.total_threads)
            .with_field("idle", counts.idle);
        if counts.parked > 0 {
            m.add_field("parked", counts.parked);
        }
        acc.push(m);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHELL: &[u8] = b"1234 (bash) S 1233 1234 1234 34816 1300 4194304 1000 2000 0 0 5 3 0 0 20 0 1 0 100 10000000 1000 18446744073709551615 1 1 0 0 0 0 65536 3670020 1266777851 0 0 0 17 1 0 0 0 0 0\n";

    #[test]
    fn state_and_threads() {
        let s = parse_pid_stat(SHELL).unwrap().unwrap();
        assert_eq!(s.state, b'S');
        assert_eq!(s.threads, Some(1));
    }

    #[test]
    fn command_names_with_parens_spaces_and_digits() {
        let s = parse_pid_stat(
            b"77 (evil) R 1 2 3 (x) 9) Z 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 42 0 5 1 1\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!((s.state, s.threads), (b'Z', Some(42)));
        let s = parse_pid_stat(b"8 (Web Content) D 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 7 0")
            .unwrap()
            .unwrap();
        assert_eq!((s.state, s.threads), (b'D', Some(7)));
    }

    #[test]
    fn short_and_odd_files() {
        assert_eq!(parse_pid_stat(b"no parenthesis at all").unwrap(), None);
        assert!(parse_pid_stat(b"1 (x) R 1").is_err());
        assert!(parse_pid_stat(b"1 (x)").is_err());
        // Three fields: counted, threads unknown (as Telegraf: counted, thread parse fails).
        let s = parse_pid_stat(b"1 (x) R 0 1").unwrap().unwrap();
        assert_eq!((s.state, s.threads), (b'R', None));
        assert_eq!(parse_pid_stat(b"").unwrap(), None);
    }

    #[test]
    fn counting() {
        let mut c = Counts::default();
        for (state, threads) in [(b'R', 2), (b't', 1), (b'T', 1), (b'P', 1), (b'?', 3)] {
            c.add(PidStat {
                state,
                threads: Some(threads),
            });
        }
        assert_eq!(c.running, 1);
        assert_eq!(c.stopped, 2);
        assert_eq!(c.parked, 1);
        assert_eq!(c.unknown, 0);
        assert_eq!(c.total, 5);
        assert_eq!(c.total_threads, 8);
    }
}
