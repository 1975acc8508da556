//! Bounded waits on real processes: poll a condition until it holds or a deadline passes.

#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Polls `cond` every 50 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    assert!(
        poll_until(timeout, &mut cond),
        "timed out after {timeout:?} waiting for {what}"
    );
}

/// Polls `cond` every 50 ms until it holds (true) or `timeout` passes (false).
pub fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= timeout {
            return cond();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
