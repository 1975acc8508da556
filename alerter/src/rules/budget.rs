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

use crate::memory::Mimalloc as System;
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
