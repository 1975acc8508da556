//! The memory budget of one rule evaluation: a global allocator that counts, per thread, the
//! bytes held, so the engine's progress hook can stop a script as soon as what it allocated
//! exceeds its budget. Rhai's element counts (strings, arrays, maps) are checked only at some
//! operations (not on `m[k] = v`) and bound elements, not bytes; counting at the allocator
//! bounds everything a script grows, before the process runs out of memory (where a failed
//! allocation aborts the whole alerter).
//!
//! Installed in `lib.rs`, so every binary linking the library (the alerter, its tests and
//! benches) counts. Allocation moved between threads skews a thread's count, which is why an
//! evaluation measures the difference from its own start.

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc as System;
use std::cell::Cell;

/// mimalloc, counting bytes held per thread. (glibc's malloc spent ~30 % of an evaluation
/// cycle in `_int_malloc`, `unlink_chunk` and `malloc_consolidate`: the cycle allocates and
/// frees a few hundred thousand small objects between large buffers.)
pub struct CountingAlloc;

thread_local! {
    // `const` with a `Copy` type: no lazy initialisation and no destructor, so touching it
    // from inside the allocator never allocates and works during thread teardown.
    static HELD: Cell<isize> = const { Cell::new(0) };
}

fn add(n: isize) {
    let _ = HELD.try_with(|c| c.set(c.get().wrapping_add(n)));
}

/// mimalloc's `mi_option_purge_delay`: its place in `mi_option_e` (mimalloc.h, v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays with the process before it goes back to the system.
const PURGE_DELAY_MS: std::os::raw::c_long = 30_000;

/// Keeps freed memory 30 s before giving it back to the system (mimalloc's default is 1 s).
/// A daemon evaluating every second or two otherwise returns its pages between evaluations
/// and has them faulted in again, zeroed by the kernel: that was half of wk-alerter's CPU
/// over VictoriaMetrics (`cargo bench --bench vmalert`: 2.8× vmalert's CPU, 1.3× with the
/// pages kept). An idle alerter still returns what it freed, 30 s later.
pub fn keep_freed_memory() {
    // SAFETY: mi_option_set stores an integer option; mimalloc reads it at its next purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
}

/// Bytes allocated minus bytes freed by this thread since it started.
pub fn held_bytes() -> isize {
    HELD.try_with(Cell::get).unwrap_or(0)
}

// SAFETY: every method forwards to mimalloc with the caller's arguments unchanged and only
// adds bookkeeping on a thread-local counter, which neither allocates nor panics.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is (the caller upholds `alloc`'s contract).
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        add(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            add(new_size as isize - layout.size() as isize);
        }
        p
    }
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
}
