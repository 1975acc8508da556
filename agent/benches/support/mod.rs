//! What both benchmarks measure with.

/// CPU time of the calling thread in ns (CLOCK_THREAD_CPUTIME_ID: the scheduler's exact
/// runtime, sum_exec_runtime as /proc/thread-self/schedstat shows it).
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own; the clock id is valid.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
