//! Choosing a level from a series' level conditions, exactly as Kapacitor's `determineLevel`
//! (spec §1.1): a matching level at or above the current one wins (highest first); otherwise
//! the current level stays while its reset condition is false (hysteresis); otherwise the
//! highest matching level below the current one, or OK.

use crate::model::{Condition, Level, LevelConditions};

const ORDER: [Level; 3] = [Level::Critical, Level::Warning, Level::Info];

fn condition(levels: &LevelConditions, l: Level) -> Option<Condition> {
    match l {
        Level::Ok => None,
        Level::Info => levels.info,
        Level::Warning => levels.warn,
        Level::Critical => levels.crit,
    }
}

fn matched(levels: &LevelConditions, l: Level) -> bool {
    condition(levels, l).is_some_and(|c| c.matched)
}

/// The new level of a series whose previous level was `current`.
pub fn determine_level(current: Level, levels: &LevelConditions) -> Level {
    if let Some(l) = ORDER
        .into_iter()
        .find(|&l| l >= current && matched(levels, l))
    {
        return l;
    }
    if let Some(Condition {
        reset: Some(false), ..
    }) = condition(levels, current)
    {
        return current;
    }
    ORDER
        .into_iter()
        .find(|&l| l < current && matched(levels, l))
        .unwrap_or(Level::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Thresholds 60/70/80 with resets below 50/60/70, as in Kapacitor's documentation.
    fn conditions(v: f64) -> LevelConditions {
        let c = |threshold: f64, reset: f64| {
            Some(Condition {
                matched: v > threshold,
                reset: Some(v < reset),
            })
        };
        LevelConditions {
            info: c(60.0, 50.0),
            warn: c(70.0, 60.0),
            crit: c(80.0, 70.0),
        }
    }

    #[test]
    fn kapacitor_hysteresis_example() {
        let mut level = Level::Ok;
        let got: Vec<Level> = [61.0, 73.0, 64.0, 85.0, 62.0, 56.0, 47.0]
            .into_iter()
            .map(|v| {
                level = determine_level(level, &conditions(v));
                level
            })
            .collect();
        use Level::*;
        assert_eq!(got, [Info, Warning, Warning, Critical, Info, Info, Ok]);
    }

    #[test]
    fn without_resets_the_highest_match_wins() {
        let lc = LevelConditions {
            info: Some(Condition {
                matched: true,
                reset: None,
            }),
            warn: Some(Condition {
                matched: false,
                reset: None,
            }),
            crit: None,
        };
        assert_eq!(determine_level(Level::Critical, &lc), Level::Info);
        assert_eq!(determine_level(Level::Ok, &lc), Level::Info);
        assert_eq!(
            determine_level(Level::Warning, &LevelConditions::default()),
            Level::Ok
        );
    }
}
