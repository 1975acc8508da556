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
}
