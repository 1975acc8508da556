//! "Did you mean": the closest known name to a misspelled one.

/// The candidate closest to `name` within a small edit distance (ties go to the candidate
/// that sorts first); None when nothing is close.
pub fn closest_in<'n>(candidates: impl Iterator<Item = &'n str>, name: &str) -> Option<&'n str> {
    let lower = name.to_lowercase();
    candidates
        .filter(|n| *n != name)
        .map(|n| (edit_distance(&n.to_lowercase(), &lower), n))
        .filter(|(d, n)| *d <= 2.max(n.len() / 4))
        .min()
        .map(|(_, n)| n)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_names_are_suggested_and_far_ones_are_not() {
        let names = ["interval", "timeout", "every"];
        assert_eq!(
            closest_in(names.iter().copied(), "intervall"),
            Some("interval")
        );
        assert_eq!(closest_in(names.iter().copied(), "EVERY"), Some("every"));
        assert_eq!(closest_in(names.iter().copied(), "zzzzzzzz"), None);
    }
}
