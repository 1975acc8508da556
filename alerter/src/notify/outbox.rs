//! The notification outbox: what the notifiers have not delivered yet, kept in
//! `state_dir/notify-outbox.json`, so that a restart (or a crash) does not lose a page or a
//! recovery that was waiting in a queue, a retry or a group.
//!
//! The router writes the file about once a second while its queues change, and at shutdown
//! what is left after the grace period; a start hands what the file holds to the notifiers of
//! the same name again. Delivery is at least once: a message sent in the second before a
//! crash is sent again after it, never dropped.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::model::AlertEvent;

/// The outbox file in the state directory.
pub const OUTBOX_FILE: &str = "notify-outbox.json";

/// The format this build writes (and the newest it reads).
const VERSION: u32 = 1;

/// One event a notifier has not delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub notifier: String,
    /// A report or record (listed once by a grouping notifier), not instance state.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oneshot: bool,
    pub event: AlertEvent,
    /// It waited for its receiver (its retries spent): attempts made, and when it is given
    /// up (ns since the epoch), so that a restart does not give it a new `give_up_after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<Waiting>,
}

/// A message that waits for its receiver (see [`Pending::waiting`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    pub attempts: u32,
    pub give_up_at: i64,
}

#[derive(Serialize, Deserialize)]
struct OutboxFile {
    version: u32,
    pending: Vec<Pending>,
}

/// The file's bytes for `pending`.
pub fn encode(pending: &[Pending]) -> Vec<u8> {
    let file = OutboxFile {
        version: VERSION,
        pending: pending.to_vec(),
    };
    // Plain data (strings, numbers, maps with string keys): serializing cannot fail.
    serde_json::to_vec(&file).unwrap_or_default()
}

/// Writes `bytes` (from [`encode`]) atomically, or removes the file when nothing is pending.
pub fn store(path: &Path, bytes: &[u8], empty: bool) -> Result<(), (PathBuf, io::Error)> {
    if empty {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err((path.to_owned(), e)),
            _ => Ok(()),
        };
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| (dir.to_owned(), e))?;
    }
    crate::state::write_atomic(path, bytes)
}

/// What the last run left undelivered. A missing file is nothing; an unreadable or damaged
/// one is a warning and nothing (a damaged file is kept aside as `….corrupt`).
pub fn load(path: &Path) -> Vec<Pending> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            warn!(file = %path.display(), "cannot read the notification outbox; its messages are not sent: {e}");
            return Vec::new();
        }
    };
    let why = match serde_json::from_slice::<OutboxFile>(&bytes) {
        Ok(f) if f.version <= VERSION => return f.pending,
        Ok(f) => format!(
            "format {} is newer than this build's ({VERSION})",
            f.version
        ),
        Err(e) => e.to_string(),
    };
    let kept = crate::state::set_aside(path);
    warn!(file = %path.display(), "the notification outbox is unusable ({why}); its messages are not sent (the file {kept})");
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(n: usize) -> Vec<Pending> {
        (0..n)
            .map(|i| Pending {
                notifier: format!("n{}", i % 2),
                oneshot: i == 2,
                waiting: (i == 1).then_some(Waiting {
                    attempts: 4,
                    give_up_at: 1_700_000_000_000_000_000,
                }),
                event: AlertEvent {
                    rule: "cpu".into(),
                    id: format!("cpu:host=h{i}"),
                    message: "ünïcode \"quoted\"\n".into(),
                    ..Default::default()
                },
            })
            .collect()
    }

    #[test]
    fn round_trip_and_an_empty_outbox_is_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(OUTBOX_FILE);
        assert!(load(&path).is_empty(), "missing: nothing");
        let p = pending(3);
        store(&path, &encode(&p), false).unwrap();
        assert_eq!(load(&path), p);
        store(&path, &encode(&[]), true).unwrap();
        assert!(!path.exists());
        store(&path, &encode(&[]), true).expect("removing a missing file is fine");
    }

    #[test]
    fn a_damaged_or_newer_file_is_set_aside_with_nothing_sent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(OUTBOX_FILE);
        let aside = dir.path().join(format!("{OUTBOX_FILE}.corrupt"));
        let good = encode(&pending(2));
        for bad in [
            good[..good.len() / 2].to_vec(),
            br#"{"version":99,"pending":[]}"#.to_vec(),
            b"\xff\xfe".to_vec(),
        ] {
            std::fs::write(&path, &bad).unwrap();
            assert!(load(&path).is_empty());
            assert!(!path.exists());
            assert_eq!(std::fs::read(&aside).unwrap(), bad, "kept as evidence");
        }
    }
}
