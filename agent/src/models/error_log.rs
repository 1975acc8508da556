//! Gather errors without the flood: an input that fails the same way every 10 s logs it once,
//! then at most once per window with how often it repeated; what this host simply does not
//! have (PSI, KSM) is said once at debug level.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::plugin::GatherError;

/// How often a repeated error is logged again.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(300);

/// Distinct messages remembered per input; beyond this the oldest are forgotten (errors whose
/// text changes each time must not grow memory without end).
const MAX_REMEMBERED: usize = 256;

/// What to do with one error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// First time seen (or first since it was forgotten): log at error level.
    First,
    /// Seen before and the window passed: log at error level with the count since last logged.
    Repeated(u64),
    /// Not on this host, first time: log at debug level.
    Unsupported,
    /// Say nothing now (counted for the next `Repeated`).
    Quiet,
}

/// One input's memory of the errors it logged.
#[derive(Debug)]
pub struct ErrorLog {
    window: Duration,
    seen: HashMap<String, Seen>,
}

#[derive(Debug)]
struct Seen {
    logged_at: Instant,
    last_seen: Instant,
    suppressed: u64,
}

impl Default for ErrorLog {
    fn default() -> Self {
        ErrorLog::new(REPEAT_WINDOW)
    }
}

impl ErrorLog {
    /// Logs a repeated error again at most once per `window`.
    pub fn new(window: Duration) -> Self {
        ErrorLog {
            window,
            seen: HashMap::new(),
        }
    }

    /// Decides how to log `error`, seen at `now`.
    pub fn check(&mut self, error: &GatherError, now: Instant) -> Verdict {
        let key = error.to_string();
        if let Some(s) = self.seen.get_mut(&key) {
            s.last_seen = now;
            if error.is_unsupported() {
                return Verdict::Quiet;
            }
            if now.duration_since(s.logged_at) >= self.window {
                let n = s.suppressed;
                s.logged_at = now;
                s.suppressed = 0;
                return if n == 0 {
                    Verdict::First
                } else {
                    Verdict::Repeated(n)
                };
            }
            s.suppressed += 1;
            return Verdict::Quiet;
        }
        if self.seen.len() >= MAX_REMEMBERED
            && let Some(oldest) = self
                .seen
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| k.clone())
        {
            self.seen.remove(&oldest);
        }
        self.seen.insert(
            key,
            Seen {
                logged_at: now,
                last_seen: now,
                suppressed: 0,
            },
        );
        if error.is_unsupported() {
            Verdict::Unsupported
        } else {
            Verdict::First
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `e` again every 10 s after `t0`, `n - 1` times: quiet each time.
    fn assert_quiet(log: &mut ErrorLog, e: &GatherError, t0: Instant, n: u64) {
        for i in 1..n {
            let at = t0 + Duration::from_secs(10 * i);
            assert_eq!(log.check(e, at), Verdict::Quiet, "repeat {i}");
        }
    }

    #[test]
    fn a_repeated_error_is_logged_once_per_window_with_its_count() {
        let mut log = ErrorLog::new(Duration::from_secs(300));
        let t0 = Instant::now();
        let e = GatherError::Other("connection refused".into());
        assert_eq!(log.check(&e, t0), Verdict::First);
        assert_quiet(&mut log, &e, t0, 30);
        assert_eq!(
            log.check(&e, t0 + Duration::from_secs(300)),
            Verdict::Repeated(29)
        );
        // Another error is not hidden by the first.
        let other = GatherError::Other("timeout".into());
        assert_eq!(
            log.check(&other, t0 + Duration::from_secs(301)),
            Verdict::First
        );
    }

    #[test]
    fn missing_kernel_features_are_said_once_at_debug() {
        // A kernel without PSI logged an error every 10 s forever.
        let mut log = ErrorLog::default();
        let t0 = Instant::now();
        let e = GatherError::Unsupported("/proc/pressure/cpu: No such file or directory".into());
        assert_eq!(log.check(&e, t0), Verdict::Unsupported);
        assert_quiet(&mut log, &e, t0, 100);
    }

    #[test]
    fn errors_with_changing_text_do_not_grow_memory() {
        let mut log = ErrorLog::default();
        let t0 = Instant::now();
        for i in 0..10_000u64 {
            let e = GatherError::Other(format!("value {i} out of range"));
            log.check(&e, t0 + Duration::from_millis(i));
        }
        assert!(log.seen.len() <= MAX_REMEMBERED);
    }
}
