//! The audit log: one JSON line per action result (run, dry run, refused, skipped,
//! interrupted), appended to a file that is rotated by size (`file` → `file.1` → … →
//! `file.<keep>`, the oldest dropped).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::ActionResult;

/// The audit log writer.
#[derive(Debug)]
pub struct Audit {
    path: Option<PathBuf>,
    max_bytes: u64,
    keep: u32,
    lock: Mutex<()>,
}

impl Audit {
    /// A log at `path` (`None`: nothing written), rotated past `max_bytes`, keeping `keep`
    /// old files.
    pub fn new(path: Option<PathBuf>, max_bytes: u64, keep: u32) -> Audit {
        Audit {
            path,
            max_bytes,
            keep: keep.max(1),
            lock: Mutex::new(()),
        }
    }

    /// Appends one result; failures are logged, never fatal.
    pub fn write(&self, r: &ActionResult) {
        let Some(path) = &self.path else { return };
        let _g = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut line = match serde_json::to_vec(r) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cannot encode the action result: {e}");
                return;
            }
        };
        line.push(b'\n');
        if let Err(e) = self.append(path, &line) {
            tracing::error!(file = %path.display(), "cannot write the action audit log: {e}");
        }
    }

    /// The last `n` results written, oldest first: from the file and its rotated ones, newest
    /// file first (a start shows what the last run did). Lines that do not decode (a line
    /// cut by a crash, another build's) are skipped and counted in one warning.
    pub fn recent(&self, n: usize) -> Vec<ActionResult> {
        let Some(path) = &self.path else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut skipped = 0;
        let files = std::iter::once(path.clone())
            .chain((1..=self.keep).map(|k| PathBuf::from(format!("{}.{k}", path.display()))));
        'files: for file in files {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    tracing::warn!(file = %file.display(), "cannot read the action audit log: {e}");
                    continue;
                }
            };
            for line in text.lines().rev().filter(|l| !l.trim().is_empty()) {
                if out.len() == n {
                    break 'files;
                }
                match serde_json::from_str(line) {
                    Ok(r) => out.push(r),
                    Err(_) => skipped += 1,
                }
            }
        }
        if skipped > 0 {
            tracing::warn!(file = %path.display(), lines = skipped, "action audit log lines that do not decode were skipped");
        }
        out.reverse();
        out
    }

    fn append(&self, path: &Path, line: &[u8]) -> std::io::Result<()> {
        if let Ok(m) = std::fs::metadata(path)
            && m.len() + line.len() as u64 > self.max_bytes
            && m.len() > 0
        {
            let numbered = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
            for n in (1..self.keep).rev() {
                let _ = std::fs::rename(numbered(n), numbered(n + 1));
            }
            std::fs::rename(path, numbered(1))?;
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        f.write_all(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("actions.log");
        let a = Audit::new(Some(p.clone()), 600, 2);
        let r = ActionResult {
            action: "free_port".into(),
            ..Default::default()
        };
        for _ in 0..10 {
            a.write(&r);
        }
        let cur = std::fs::read_to_string(&p).unwrap();
        assert!(
            cur.lines()
                .all(|l| serde_json::from_str::<ActionResult>(l).is_ok())
        );
        assert!(std::fs::metadata(&p).unwrap().len() <= 600);
        assert!(dir.path().join("actions.log.1").exists());
        assert!(dir.path().join("actions.log.2").exists());
        assert!(!dir.path().join("actions.log.3").exists());
    }

    /// The last results come back oldest first across the rotated files; a damaged line is
    /// skipped, not the end of the history.
    #[test]
    fn recent_reads_back_across_rotations_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("actions.log");
        let a = Audit::new(Some(p.clone()), 900, 3);
        assert!(a.recent(5).is_empty(), "no file: nothing");
        let result = |i: u32| ActionResult {
            action: "free_port".into(),
            attempt: i,
            ..Default::default()
        };
        for i in 0..12 {
            a.write(&result(i));
            if i == 10 {
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(&p)
                    .unwrap()
                    .write_all(b"{\"cut by a crash\n")
                    .unwrap();
            }
        }
        assert!(dir.path().join("actions.log.2").exists(), "rotated twice");
        let attempts = |v: Vec<ActionResult>| v.iter().map(|r| r.attempt).collect::<Vec<_>>();
        assert_eq!(attempts(a.recent(5)), [7, 8, 9, 10, 11]);
        let all = attempts(a.recent(100));
        assert_eq!(all.last(), Some(&11));
        assert!(all.windows(2).all(|w| w[0] + 1 == w[1]), "{all:?}");
        assert!(Audit::new(None, 900, 3).recent(5).is_empty());
    }
}
