//! Clocks, in the nanoseconds since the epoch every timestamp of the alerter uses.
//!
//! The scheduler reads time through a [`Clock`], so a test can drive it with tokio's paused
//! time ([`TokioClock`]) instead of waiting on the wall clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Where the scheduler reads the time.
pub trait Clock: Send + Sync {
    /// Nanoseconds since the epoch, now.
    fn now_ns(&self) -> i64;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&self) -> i64 {
        now_ns()
    }
}

/// Epoch time that follows tokio's clock from a fixed origin: under `tokio::time::pause()` it
/// moves only when the runtime's time does (auto-advance or `advance`), exactly.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin_ns: i64,
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `origin_ns` now (tokio's now) and advancing with tokio's time.
    pub fn starting_at(origin_ns: i64) -> TokioClock {
        TokioClock {
            origin_ns,
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now_ns(&self) -> i64 {
        let elapsed = tokio::time::Instant::now().duration_since(self.origin);
        self.origin_ns
            .saturating_add(i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX))
    }
}
