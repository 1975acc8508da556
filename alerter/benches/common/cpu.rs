//! CPU clocks for the benches: this process, this thread, another process (all threads).

use std::time::Duration;

fn clock(id: libc::clockid_t) -> Option<Duration> {
    // SAFETY: a zeroed timespec is a valid value; clock_gettime only writes it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::clock_gettime(id, &mut ts) } != 0 {
        return None;
    }
    Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// CPU of this process, all threads (CLOCK_PROCESS_CPUTIME_ID: ns, brought up to date when
/// read, unlike /proc/self/schedstat, which lags by up to a scheduler tick for running threads).
#[allow(dead_code)]
pub fn process_cpu() -> Duration {
    clock(libc::CLOCK_PROCESS_CPUTIME_ID).unwrap_or_default()
}

/// CPU of the calling thread (CLOCK_THREAD_CPUTIME_ID).
#[allow(dead_code)]
pub fn thread_cpu() -> Duration {
    clock(libc::CLOCK_THREAD_CPUTIME_ID).unwrap_or_default()
}

/// CPU of another process, all threads: its CPU-time clock (clock_getcpuclockid), else the
/// sum of its threads' /proc/<pid>/task/*/schedstat.
pub fn other_process_cpu(pid: u32) -> Duration {
    let mut id: libc::clockid_t = 0;
    // SAFETY: clock_getcpuclockid only writes `id`.
    if unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut id) } == 0
        && let Some(d) = clock(id)
    {
        return d;
    }
    let mut total = 0u64;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                total += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Duration::from_nanos(total)
}
