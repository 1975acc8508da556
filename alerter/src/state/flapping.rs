//! Kapacitor's flap detection (spec §1.5): a ring of the last `history` levels, starting all
//! OK; the weighted fraction of adjacent positions that differ, weights rising linearly from
//! 0.8 (oldest pair) to 1.2 (newest pair); enter flapping above `high`, leave below `low`.
//!
//! Kapacitor's loop (`percentChange` in alert.go) walks the ring from its newest slot, so its
//! weights do not quite rise with age and one pair (oldest vs newest) wraps around; we
//! implement what its docs describe instead: the l-1 chronological pairs, weights exactly
//! 0.8 → 1.2, divided by l-1 (weights average 1.0, so "every step changed" is 1.0).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::model::Level;

/// Kapacitor's minimum history length.
pub const MIN_HISTORY: usize = 2;

/// The level history of one instance and whether it is currently flapping.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FlapState {
    /// Oldest first.
    pub history: VecDeque<Level>,
    pub flapping: bool,
}

impl FlapState {
    /// Records `level`, resizing the ring to `len` (padding with OK at the old end), then
    /// updates `flapping` with the (low, high) thresholds.
    pub fn push(&mut self, level: Level, len: usize, low: f64, high: f64) {
        let len = len.max(MIN_HISTORY);
        while self.history.len() < len {
            self.history.push_front(Level::Ok);
        }
        self.history.push_back(level);
        while self.history.len() > len {
            self.history.pop_front();
        }
        let p = percent_change(&self.history);
        if self.flapping && p < low {
            self.flapping = false;
        } else if !self.flapping && p > high {
            self.flapping = true;
        }
    }

    /// Flap detection switched off: forget the history and stop flapping.
    pub fn disable(&mut self) {
        self.history.clear();
        self.flapping = false;
    }
}

/// Weighted fraction (0..=1) of adjacent history entries that differ, oldest first.
pub fn percent_change(history: &VecDeque<Level>) -> f64 {
    let pairs = history.len().saturating_sub(1);
    if pairs == 0 {
        return 0.0;
    }
    let step = if pairs > 1 {
        0.4 / (pairs - 1) as f64
    } else {
        0.0
    };
    let first = if pairs > 1 { 0.8 } else { 1.0 };
    let mut changes = 0.0;
    for (i, (older, newer)) in history.iter().zip(history.iter().skip(1)).enumerate() {
        if older != newer {
            changes += first + step * i as f64;
        }
    }
    changes / pairs as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use Level::{Critical as C, Ok as O};

    fn ring(levels: &[Level]) -> VecDeque<Level> {
        levels.iter().copied().collect()
    }

    #[test]
    fn weights_rise_from_oldest_to_newest() {
        // 6 entries, 5 pairs, weights 0.8 0.9 1.0 1.1 1.2.
        assert!((percent_change(&ring(&[O, C, C, C, C, C])) - 0.8 / 5.0).abs() < 1e-12);
        assert!((percent_change(&ring(&[O, O, O, O, O, C])) - 1.2 / 5.0).abs() < 1e-12);
        assert!((percent_change(&ring(&[O, C, O, C, O, C])) - 1.0).abs() < 1e-12);
        assert_eq!(percent_change(&ring(&[C, C, C])), 0.0);
        assert_eq!(percent_change(&ring(&[O, C])), 1.0);
    }

    #[test]
    fn enters_above_high_and_leaves_below_low() {
        let mut f = FlapState::default();
        let mut seen = Vec::new();
        for l in [
            C, O, C, O, C, O, C, O, O, O, O, O, O, O, O, O, O, O, O, O, O,
        ] {
            f.push(l, 10, 0.25, 0.55);
            seen.push(f.flapping);
        }
        let first = seen.iter().position(|&x| x).expect("enters flapping");
        let left = seen.iter().rposition(|&x| x).expect("flapping seen") + 1;
        // Fifth push: 5 changes weighted 1.0..1.2 over 9 pairs = 0.61 > 0.55; the fourth is 0.5.
        assert_eq!(first, 4, "{seen:?}");
        assert!(
            left < seen.len() && !seen[left..].iter().any(|&x| x),
            "{seen:?}"
        );
        assert_eq!(f.history.len(), 10);
    }
}
