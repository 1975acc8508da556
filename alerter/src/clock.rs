//! The wall clock, in the nanoseconds since the epoch every timestamp of the alerter uses.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}
