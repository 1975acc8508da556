//! The agent's memory over months: what the C allocator holds free goes back to the system.
//!
//! Each input gathers on a thread of its own, and glibc gives each thread an arena. A gather
//! that allocates much once (`netstat` on a host that briefly held a million sockets, `procstat`
//! during a fork storm) leaves its arena holding the pages after they are freed: glibc returns
//! only a free top of an arena above its trim threshold, never free pages below live data. So
//! the resident size kept the peak of any gather, and crept up as fragmentation moved each
//! arena's high-water mark (docs/performance-agent.md §4). [`release_free_memory`] every
//! [`RELEASE_EVERY`] hands every free page of every arena back (`malloc_trim(0)`).

use std::time::Duration;

/// How often free memory is handed back.
pub const RELEASE_EVERY: Duration = Duration::from_secs(10);

/// Gives the allocator's free pages back to the system (glibc; elsewhere nothing: musl's
/// allocator returns them itself).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the allocator's own locks and only walks its free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Freed memory of a thread's arena goes back: RssAnon after a 64 MiB burst freed in
    /// small pieces (kept by glibc: below the mmap threshold) and trimmed is near before.
    #[test]
    fn a_burst_freed_on_a_thread_is_handed_back() {
        fn rss_anon_kib() -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            status
                .lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
                .unwrap()
        }
        let held = std::thread::spawn(|| {
            // 64 MiB in 4 KiB blocks, all touched, then every one but the last freed: the
            // last keeps the arena's top from being trimmed the ordinary way.
            let mut blocks: Vec<Vec<u8>> = (0..16_384).map(|_| vec![1u8; 4096]).collect();
            let keep = blocks.pop();
            drop(blocks);
            let before_trim = rss_anon_kib();
            release_free_memory();
            let after_trim = rss_anon_kib();
            drop(keep);
            (before_trim, after_trim)
        })
        .join()
        .unwrap();
        let (before_trim, after_trim) = held;
        assert!(
            before_trim >= after_trim + 32 * 1024,
            "RssAnon {before_trim} KiB before the trim, {after_trim} KiB after"
        );
    }
}
