//! How the alerter process uses memory: two settings made once at start, and the one that
//! must be undone in the programs it starts (notifiers, recovery actions).
//!
//! The allocator is mimalloc ([`crate::rules::budget`] counts through it). An evaluation cycle
//! makes and frees hundreds of thousands of small objects (decoded series, tag maps, script
//! values, observations); what the settings below avoid is the kernel zeroing those pages
//! again every cycle (`cargo bench --bench cycle`, docs/performance-alerter.md).

/// mimalloc's `mi_option_purge_delay`: its place in `mi_option_e` (mimalloc.h, v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays with the process before it goes back to the system.
const PURGE_DELAY_MS: std::os::raw::c_long = 30_000;

/// Called first thing in `main` (and by the benches that stand for it):
///
/// - Freed memory stays 30 s before it goes back to the system (mimalloc's default is 1 s).
///   A daemon evaluating every second or two otherwise returns its pages between evaluations
///   and has them faulted in again, zeroed by the kernel: a fifth of a 1,000-host cycle's CPU
///   (5,700 page faults per 8 s; 2 with the delay). An idle alerter still returns what it
///   freed, 30 s later.
/// - No transparent huge pages for this process. mimalloc asks for them on its arenas
///   (`madvise(MADV_HUGEPAGE)`), so a small object on a fresh page costs the kernel zeroing
///   2 MiB, and resident memory grows in 2 MiB steps: the first cycle after a start, which
///   creates every alert instance, cost 330–510 ms of CPU at 1,000 hosts with them and
///   155–186 ms without (4.8 s and 1.3 s at 10,000). The setting is inherited by child processes; [`for_child`] takes it
///   back for the programs we start.
pub fn tune() {
    // SAFETY: mi_option_set stores an integer option; mimalloc reads it at its next purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        // Kernels before 3.15 lack the call; the alerter works the same, with more CPU at
        // its first cycle.
        tracing::debug!("cannot turn transparent huge pages off for this process: {e}");
    }
}

/// Gives a program we start the system's transparent huge page policy back (the flag
/// [`tune`] sets survives fork and exec): a service a recovery action starts must not run
/// with the alerter's memory settings.
pub fn for_child(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec; it only makes one prctl
    // system call (rustix, no allocation, no lock) and ignores its failure.
    unsafe {
        cmd.pre_exec(|| {
            let _ = rustix::thread::disable_transparent_huge_pages(false);
            Ok(())
        });
    }
}

/// mimalloc, called for what Rust asks without detours.
///
/// The `mimalloc` crate hands every request to `mi_malloc_aligned`, and mimalloc 3 serves an
/// aligned request from its fast path only when the size is a power of two: any other size
/// (24, 40, 48… bytes: most strings, vectors and boxes) takes the over-allocating fallback,
/// a larger block and a slow path, and its own size class never gets a free list. Every
/// mimalloc block is a multiple of the word size from a word-aligned start, so a request
/// aligned to at most a word is a plain `mi_malloc`; stricter ones keep the aligned calls.
/// At 1,000 hosts the aligned path was a tenth of the cycle's CPU (perf, `cargo bench
/// --bench cycle`).
pub struct Mimalloc;

/// The alignment every mimalloc block has (blocks are whole words from a word-aligned start).
const WORD: usize = std::mem::size_of::<usize>();

// SAFETY: each call forwards to mimalloc, whose blocks are at least `WORD`-aligned (checked by
// the test below for every size class a cycle uses); stricter alignments go to its aligned
// entry points, which guarantee them. `mi_free` takes blocks from either.
unsafe impl std::alloc::GlobalAlloc for Mimalloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys::{mi_malloc, mi_malloc_aligned};
        // SAFETY: plain C allocation calls; size and alignment come from a valid Layout.
        unsafe {
            if layout.align() <= WORD {
                mi_malloc(layout.size()).cast()
            } else {
                mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys::{mi_zalloc, mi_zalloc_aligned};
        // SAFETY: as in `alloc`.
        unsafe {
            if layout.align() <= WORD {
                mi_zalloc(layout.size()).cast()
            } else {
                mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from one of the calls above (the caller's contract).
        unsafe { libmimalloc_sys::mi_free(ptr.cast()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        use libmimalloc_sys::{mi_realloc, mi_realloc_aligned};
        // SAFETY: as in `dealloc`; the new block keeps the layout's alignment.
        unsafe {
            if layout.align() <= WORD {
                mi_realloc(ptr.cast(), new_size).cast()
            } else {
                mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}

/// Tests that set this process's huge page flag hold this, so none resets it under another.
#[cfg(test)]
pub(crate) fn thp_test_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    /// The option at MI_OPTION_PURGE_DELAY is the purge delay: mimalloc's default for it
    /// (1,000 ms in v3) is what it holds before anything sets it.
    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // SAFETY: mi_option_get only reads an option.
        let v = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(v, 1000);
    }

    /// Blocks come back aligned as asked, for every size up to 64 KiB (all of mimalloc's
    /// small and medium size classes) and alignments from 1 to 4 KiB, through alloc,
    /// alloc_zeroed and realloc (growing and shrinking), and zeroed when asked.
    #[test]
    fn the_allocator_keeps_every_alignment() {
        use std::alloc::{GlobalAlloc, Layout};
        let a = super::Mimalloc;
        let mut held = Vec::new();
        let mut size = 1;
        while size <= 64 << 10 {
            for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: valid layouts; every block is freed with the layout it has.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(
                        !p.is_null() && (p as usize).is_multiple_of(align),
                        "{size} {align}"
                    );
                    let z = a.alloc_zeroed(layout);
                    assert!(
                        !z.is_null() && (z as usize).is_multiple_of(align),
                        "{size} {align}"
                    );
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|b| *b == 0));
                    let bigger = size * 3 / 2 + 1;
                    let r = a.realloc(z, layout, bigger);
                    assert!(
                        !r.is_null() && (r as usize).is_multiple_of(align),
                        "{size} {align}"
                    );
                    let smaller = size.div_ceil(2);
                    let r = a.realloc(r, Layout::from_size_align(bigger, align).unwrap(), smaller);
                    assert!(
                        !r.is_null() && (r as usize).is_multiple_of(align),
                        "{size} {align}"
                    );
                    a.dealloc(r, Layout::from_size_align(smaller, align).unwrap());
                    // Kept until the end, so the next ones come from fresh free lists too.
                    held.push((p, layout));
                }
            }
            size = if size < 256 { size + 1 } else { size * 9 / 8 };
        }
        for (p, layout) in held {
            // SAFETY: allocated above with this layout.
            unsafe { a.dealloc(p, layout) }
        }
    }

    /// A program started through [`super::for_child`] gets transparent huge pages back; one
    /// started without it inherits them off (kernel >= 5.0 shows the flag in /proc).
    #[test]
    fn a_child_does_not_inherit_the_huge_page_setting() {
        let thp_of = |mut cmd: std::process::Command| -> String {
            let out = cmd.arg("/proc/self/status").output().expect("cat runs");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .find(|l| l.starts_with("THP_enabled:"))
                .unwrap_or("no THP_enabled line")
                .to_owned()
        };
        // The flag is the whole test process's.
        let _only = super::thp_test_lock();
        rustix::thread::disable_transparent_huge_pages(true).unwrap();
        let inherited = thp_of(std::process::Command::new("cat"));
        let mut cmd = std::process::Command::new("cat");
        super::for_child(&mut cmd);
        let given_back = thp_of(cmd);
        rustix::thread::disable_transparent_huge_pages(false).unwrap();
        assert_eq!(inherited, "THP_enabled:\t0");
        assert_eq!(given_back, "THP_enabled:\t1");
    }
}
