//! Silences made at run time (`wk-alerter silence add|list|expire`): one JSON file in the
//! state directory, `silences.json`, written atomically (temp file, fsync, rename). The
//! running alerter re-reads it with the rules (every `reload_interval`), so a silence works
//! whether the alerter runs or not, and survives restarts. Silences that ended more than a
//! week ago are dropped when the file is written. Changes are made under an exclusive lock
//! on `silences.json.lock`, so the command line (alerter down) and an alerter starting up
//! cannot lose each other's silence.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::silence::{Matcher, MatcherError, Silence};
use crate::template::format_rfc3339 as rfc3339;

/// Ended silences are kept this long (for `silence list --all`), then dropped.
const KEEP_ENDED_NS: i64 = 7 * 24 * 3600 * 1_000_000_000;

/// One stored silence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub id: String,
    /// `key=glob`, `key!=glob`, `key=~regex`, `key!~regex`.
    pub matchers: Vec<String>,
    /// ns since the epoch; `None`: active from creation.
    pub starts: Option<i64>,
    pub ends: i64,
    pub comment: String,
    pub created: i64,
    /// Who made it (`$USER@hostname`).
    pub by: String,
}

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    silences: Vec<Stored>,
}

/// Why a silence could not be read, added or expired.
#[derive(Debug, thiserror::Error)]
pub enum SilenceError {
    /// The file (or the state directory, or its lock) could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not the JSON this module writes.
    #[error("{}: {source}", path.display())]
    Damaged {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Matcher(#[from] MatcherError),
    #[error("at least one --match is required: a silence of everything is not allowed")]
    NoMatcher,
    #[error("the silence would end ({0}) before it starts")]
    EndsBeforeStart(String),
    #[error("no silence {id:?} in {}", path.display())]
    NotFound { id: String, path: PathBuf },
    /// Over one of the bounds (each create rewrites the whole file, and the page lists them).
    #[error("{0}")]
    TooBig(String),
}

/// Silences kept at once (active, and ended within the last week); each matcher's and the
/// comment's length.
pub const MAX_SILENCES: usize = 1000;
pub const MAX_MATCHERS: usize = 32;
pub const MAX_TEXT: usize = 1024;

impl SilenceError {
    /// The request was wrong (as opposed to the state directory failing).
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            SilenceError::Matcher(_)
                | SilenceError::NoMatcher
                | SilenceError::EndsBeforeStart(_)
                | SilenceError::TooBig(_)
        )
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SilenceError + '_ {
    move |source| SilenceError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Holds the exclusive lock of `state_dir`'s silences until dropped.
fn lock(state_dir: &Path) -> Result<std::fs::File, SilenceError> {
    std::fs::create_dir_all(state_dir).map_err(io(state_dir))?;
    let p = state_dir.join("silences.json.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(io(&p))?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| io(&p)(e.into()))?;
    Ok(f)
}

/// The file in `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("silences.json")
}

/// The stored silences (none when the file does not exist).
pub fn load(state_dir: &Path) -> Result<Vec<Stored>, SilenceError> {
    let p = path(state_dir);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(&p)(e)),
    };
    let f: File =
        serde_json::from_str(&text).map_err(|source| SilenceError::Damaged { path: p, source })?;
    Ok(f.silences)
}

/// The stored silences as the router applies them (a stored one that no longer parses is
/// logged and left out).
pub fn router_silences(state_dir: &Path) -> Result<Vec<Silence>, SilenceError> {
    Ok(load(state_dir)?
        .iter()
        .filter_map(|s| {
            s.silence()
                .inspect_err(|e| tracing::warn!("silence {} ignored: {e}", s.id))
                .ok()
        })
        .collect())
}

fn save(state_dir: &Path, silences: &[Stored], now: i64) -> Result<(), SilenceError> {
    let keep: Vec<Stored> = silences
        .iter()
        .filter(|s| s.ends > now - KEEP_ENDED_NS)
        .cloned()
        .collect();
    let p = path(state_dir);
    let text = serde_json::to_string_pretty(&File {
        version: 1,
        silences: keep,
    })
    .map_err(|source| SilenceError::Damaged {
        path: p.clone(),
        source,
    })?;
    crate::state::write_atomic(&p, text.as_bytes())
        .map_err(|(path, source)| SilenceError::Io { path, source })
}

impl Stored {
    /// The silence the router applies.
    pub fn silence(&self) -> Result<Silence, MatcherError> {
        let matchers = self
            .matchers
            .iter()
            .map(|m| Matcher::parse(m))
            .collect::<Result<Vec<_>, _>>()?;
        let mut comment = format!("silence {}", self.id);
        if !self.comment.is_empty() {
            comment = format!("{comment} ({}: {})", self.by, self.comment);
        }
        Ok(Silence {
            matchers,
            starts: self.starts,
            ends: self.ends,
            comment,
        })
    }

    /// One line for `silence list`.
    pub fn describe(&self, now: i64) -> String {
        let state = if self.ends <= now {
            format!("ended {}", rfc3339(self.ends))
        } else if self.starts.is_some_and(|s| s > now) {
            format!(
                "from {} until {}",
                rfc3339(self.starts.unwrap_or(0)),
                rfc3339(self.ends)
            )
        } else {
            format!("active until {}", rfc3339(self.ends))
        };
        format!(
            "{}  {}  {state}  by {}: {}",
            self.id,
            self.matchers.join(","),
            self.by,
            self.comment
        )
    }
}

/// Adds a silence; returns it (with its new id).
pub fn add(
    state_dir: &Path,
    matchers: &[String],
    starts: Option<i64>,
    ends: i64,
    comment: &str,
    by: &str,
    now: i64,
) -> Result<Stored, SilenceError> {
    if matchers.is_empty() {
        return Err(SilenceError::NoMatcher);
    }
    if matchers.len() > MAX_MATCHERS {
        return Err(SilenceError::TooBig(format!(
            "{} matchers: at most {MAX_MATCHERS}",
            matchers.len()
        )));
    }
    for (what, text) in (matchers.iter().map(|m| ("a matcher", m.as_str())))
        .chain([("the comment", comment), ("the author", by)])
    {
        if text.len() > MAX_TEXT {
            return Err(SilenceError::TooBig(format!(
                "{what} is {} bytes: at most {MAX_TEXT}",
                text.len()
            )));
        }
    }
    for m in matchers {
        Matcher::parse(m)?;
    }
    if ends <= starts.unwrap_or(now) {
        return Err(SilenceError::EndsBeforeStart(rfc3339(ends)));
    }
    let _lock = lock(state_dir)?;
    let mut all = load(state_dir)?;
    if all.len() >= MAX_SILENCES {
        return Err(SilenceError::TooBig(format!(
            "{} silences are kept already (active, or ended within a week): at most \
             {MAX_SILENCES}; expire some, or widen one",
            all.len()
        )));
    }
    let id = loop {
        let id = format!("{:08x}", fastrand::u32(..));
        if !all.iter().any(|s| s.id == id) {
            break id;
        }
    };
    let s = Stored {
        id,
        matchers: matchers.to_vec(),
        starts,
        ends,
        comment: comment.to_owned(),
        created: now,
        by: by.to_owned(),
    };
    all.push(s.clone());
    save(state_dir, &all, now)?;
    Ok(s)
}

/// Ends the silence `id` now (`wk-alerter silence expire`).
pub fn expire(state_dir: &Path, id: &str, now: i64) -> Result<Stored, SilenceError> {
    let _lock = lock(state_dir)?;
    let mut all = load(state_dir)?;
    let s = all
        .iter_mut()
        .find(|s| s.id == id)
        .ok_or_else(|| SilenceError::NotFound {
            id: id.to_owned(),
            path: path(state_dir),
        })?;
    if s.ends > now {
        s.ends = now;
    }
    let s = s.clone();
    save(state_dir, &all, now)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_list_expire_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_700_000_000_000_000_000;
        let hour = 3_600_000_000_000;
        let m = vec!["host=web1".to_owned(), "rule=~cpu_.*".to_owned()];
        let a = add(dir.path(), &m, None, now + hour, "kernel", "ops@h", now).unwrap();
        let b = add(
            dir.path(),
            &["host=db*".into()],
            None,
            now + hour,
            "",
            "ops@h",
            now,
        )
        .unwrap();
        assert_ne!(a.id, b.id);
        assert_eq!(load(dir.path()).unwrap(), vec![a.clone(), b.clone()]);
        assert!(a.silence().unwrap().is_active(now));
        let e = expire(dir.path(), &a.id, now + 10).unwrap();
        assert!(!e.silence().unwrap().is_active(now + 10));
        assert!(
            e.describe(now + 10).contains("ended"),
            "{}",
            e.describe(now + 10)
        );
        assert!(expire(dir.path(), "nope", now).is_err());
        // A week later the ended one is dropped at the next write.
        add(
            dir.path(),
            &m,
            None,
            now + 9 * 24 * hour,
            "",
            "x",
            now + 8 * 24 * hour,
        )
        .unwrap();
        let ids: Vec<String> = load(dir.path())
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert!(!ids.contains(&a.id) && !ids.contains(&b.id), "{ids:?}");
    }

    #[test]
    fn bad_input_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_000;
        assert!(add(dir.path(), &[], None, now + 10, "", "", now).is_err());
        assert!(add(dir.path(), &["host=~(".into()], None, now + 10, "", "", now).is_err());
        assert!(add(dir.path(), &["host=a".into()], None, now, "", "", now).is_err());
        std::fs::write(path(dir.path()), "not json").unwrap();
        assert!(load(dir.path()).is_err());
    }

    /// Regression: nothing bounded the silences: each create rewrites the whole file and the
    /// page lists them all, so a loop of 64 KiB comments grew both without end.
    #[test]
    fn silences_and_their_texts_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let (now, end) = (1_000, 1_000_000_000_000);
        let m = vec!["host=a".to_owned()];
        let too_big = |r: Result<Stored, SilenceError>| matches!(r, Err(ref e @ SilenceError::TooBig(_)) if e.is_bad_request());
        let long = "x".repeat(MAX_TEXT + 1);
        assert!(too_big(add(dir.path(), &m, None, end, &long, "", now)));
        assert!(too_big(add(
            dir.path(),
            &[format!("host={long}")],
            None,
            end,
            "",
            "",
            now
        )));
        let many = vec!["host=a".to_owned(); MAX_MATCHERS + 1];
        assert!(too_big(add(dir.path(), &many, None, end, "", "", now)));
        let kept: Vec<Stored> = (0..MAX_SILENCES)
            .map(|i| Stored {
                id: format!("{i:08x}"),
                matchers: m.clone(),
                starts: None,
                ends: end,
                comment: String::new(),
                created: now,
                by: String::new(),
            })
            .collect();
        save(dir.path(), &kept, now).unwrap();
        assert!(too_big(add(dir.path(), &m, None, end, "", "", now)));
        expire(dir.path(), "00000000", now).unwrap();
        assert!(
            too_big(add(dir.path(), &m, None, end, "", "", now)),
            "ended, still kept"
        );
    }

    /// A change waits for the lock another writer (the command line, another alerter) holds,
    /// then reads the file that writer left: no silence is lost to a race.
    #[test]
    fn changes_wait_for_the_lock_and_keep_the_other_writers_silence() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_700_000_000_000_000_000;
        let hour = 3_600_000_000_000;
        let held = lock(dir.path()).unwrap();
        let d = dir.path().to_owned();
        let waiter = std::thread::spawn(move || {
            add(
                &d,
                &["host=b".into()],
                None,
                now + hour,
                "second",
                "ops",
                now,
            )
            .map(|s| s.id)
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(!waiter.is_finished(), "add did not wait for the lock");
        // The holder writes its own silence while the other waits.
        let first = Stored {
            id: "00000001".into(),
            matchers: vec!["host=a".into()],
            starts: None,
            ends: now + hour,
            comment: "first".into(),
            created: now,
            by: "cli".into(),
        };
        save(dir.path(), &[first], now).unwrap();
        drop(held);
        waiter.join().unwrap().unwrap();
        let ids: Vec<String> = load(dir.path())
            .unwrap()
            .into_iter()
            .map(|s| s.comment)
            .collect();
        assert_eq!(ids, ["first", "second"]);
        assert!(matches!(
            expire(dir.path(), "nope", now),
            Err(SilenceError::NotFound { .. })
        ));
    }
}
