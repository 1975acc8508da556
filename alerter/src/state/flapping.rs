//! Kapacitor's flap detection (spec §1.5), computed exactly as Kapacitor's `percentChange`
//! (alert.go) so that a rule ported from Kapacitor starts and stops flapping on the same
//! point: a ring of the last `history` levels, starting all OK; a weighted fraction of
//! adjacent entries that differ, l-1 pairs with weights 0.8, 0.8 + 0.4/(l-1), ... divided by
//! l-1; enter flapping above `high`, leave below `low`.
//!
//! Kapacitor's loop starts at its newest slot and walks the ring, so the pairs it weighs are
//! not quite the chronological ones its docs describe: the lightest weight (0.8) goes to the
//! newest change, the next (0.8 + step) to the wrap-around pair "oldest vs newest", then the
//! chronological pairs from the oldest upwards with rising weights; the pair just before the
//! newest one is never counted. We keep that arithmetic (a cleaner formula entered flapping one
//! point earlier than Kapacitor on its own `TestStream_AlertFlapping` data).

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
    /// updates `flapping` with the (low, high) thresholds. Returns whether the history or
    /// `flapping` changed (a full ring of one level that records that level again is the same).
    pub fn push(&mut self, level: Level, len: usize, low: f64, high: f64) -> bool {
        let len = len.max(MIN_HISTORY);
        let same = self.history.len() == len && self.history.iter().all(|l| *l == level);
        let was = self.flapping;
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
        !same || self.flapping != was
    }

    /// Flap detection switched off: forget the history and stop flapping.
    pub fn disable(&mut self) {
        self.history.clear();
        self.flapping = false;
    }
}

/// Kapacitor's weighted fraction (0..=1) of history entries that differ from the one before
/// them, over `history` oldest first (see the module docs for which pairs count).
pub fn percent_change(history: &VecDeque<Level>) -> f64 {
    let l = history.len();
    if l < 2 {
        return 0.0;
    }
    let step = 0.4 / (l - 1) as f64;
    let mut weight = 0.8;
    let mut changes = 0.0;
    for i in 0..l - 1 {
        // Kapacitor's slot `newest + i` and the slot before it, as chronological indexes:
        // i = 0 is (newest, second newest), i = 1 wraps to (oldest, newest).
        let current = (i + l - 1) % l;
        let previous = (i + l - 2) % l;
        if history[current] != history[previous] {
            changes += weight;
        }
        weight += step;
    }
    changes / (l - 1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use Level::{Critical as C, Ok as O};

    fn ring(levels: &[Level]) -> VecDeque<Level> {
        levels.iter().copied().collect()
    }

    #[test]
    fn weights_follow_kapacitors_ring_walk() {
        // 6 entries, 5 weights 0.8 0.88 0.96 1.04 1.12 for the pairs (newest, second newest),
        // (oldest, newest), (0,1), (1,2), (2,3); the pair (3,4) is never counted.
        let p = |l: &[Level]| percent_change(&ring(l));
        assert!((p(&[O, O, O, O, O, C]) - (0.8 + 0.88) / 5.0).abs() < 1e-12);
        assert!((p(&[O, C, C, C, C, C]) - (0.88 + 0.96) / 5.0).abs() < 1e-12);
        assert!((p(&[O, O, O, O, C, C]) - 0.88 / 5.0).abs() < 1e-12);
        assert!((p(&[O, O, O, C, O, O]) - 1.12 / 5.0).abs() < 1e-12);
        assert_eq!(p(&[C, C, C]), 0.0);
        assert!((p(&[O, C]) - 0.8).abs() < 1e-12);
    }

    /// Kapacitor's TestStream_AlertFlapping levels (info < 95, warn < 94, crit < 93 over its
    /// recorded values), history 21, flapping(0.25, 0.5): Kapacitor sends 9 events, i.e. it
    /// enters flapping at the 11th point. The chronological formula entered at the 10th.
    #[test]
    fn enters_on_the_same_point_as_kapacitor() {
        use Level::Warning as W;
        let levels = [O, C, O, W, C, O, C, O, W, O, C, O];
        let mut f = FlapState::default();
        let flapping: Vec<bool> = levels
            .iter()
            .map(|&l| {
                f.push(l, 21, 0.25, 0.5);
                f.flapping
            })
            .collect();
        assert_eq!(flapping.iter().position(|&x| x), Some(10), "{flapping:?}");
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
        assert_eq!(first, 4, "{seen:?}");
        assert!(
            left < seen.len() && !seen[left..].iter().any(|&x| x),
            "{seen:?}"
        );
        assert_eq!(f.history.len(), 10);
    }
}
