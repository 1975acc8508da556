//! Saving and restoring a rule's state: one JSON file per rule in the state directory,
//! `<rule>.state.json`, written atomically (temp file, fsync, rename, fsync of the directory).
//!
//! What survives a restart: every instance's levels (raw for hysteresis, effective, announced),
//! the episode start, pending start, keep_firing clock, last notification time, flap history,
//! NoData state and clocks, last seen, and the rule's Error state. So a still-firing alert does
//! not re-notify, one that cleared during the downtime sends its recovery once, pending and
//! repeat continue. A file that cannot be read or parsed, or that a newer alerter wrote, is
//! logged and ignored: the rule starts empty rather than not at all.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::machine::{ErrorState, Instance, RuleState};

/// The state file format this build writes (and the newest it reads).
pub const STATE_VERSION: u32 = 1;

/// A failure to save or load a rule's state file.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not a valid state file: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path}: written by a newer alerter (state format {found}, this build reads up to {supported})"
    )]
    NewerVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{path}: holds the state of rule {found:?}, not {expected:?}")]
    OtherRule {
        path: PathBuf,
        found: String,
        expected: String,
    },
}

#[derive(Serialize)]
struct StateFileOut<'a> {
    version: u32,
    rule: &'a str,
    instances: Vec<&'a Instance>,
    error: Option<&'a ErrorState>,
}

#[derive(Deserialize)]
struct Header {
    version: u32,
}

#[derive(Deserialize)]
struct StateFileIn {
    rule: String,
    #[serde(default)]
    instances: Vec<Instance>,
    #[serde(default)]
    error: Option<ErrorState>,
}

/// Writes `bytes` to `path` atomically: a temp file beside it, fsync, rename, fsync of the
/// directory (which must exist). The error names the path that failed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), (PathBuf, io::Error)> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp"));
    let write = || -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err((tmp, e));
    }
    fs::rename(&tmp, path).map_err(|e| (path.to_owned(), e))?;
    // The rename is durable only once the directory entry is.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| (dir.to_owned(), e))
}

/// The state file of `rule_name` in `dir`. Characters other than ASCII letters, digits,
/// `-`, `_` and `.` are written as `%XX` so any rule name maps to one plain file name.
pub fn state_path(dir: &Path, rule_name: &str) -> PathBuf {
    let mut name = String::new();
    for b in rule_name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_') || (b == b'.' && !name.is_empty())
        {
            name.push(char::from(b));
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    dir.join(format!("{name}.state.json"))
}

impl RuleState {
    /// Writes this rule's state to `dir` atomically (creating `dir` if needed).
    pub fn save(&self, dir: &Path, rule_name: &str) -> Result<(), PersistError> {
        let json = self.encode(dir, rule_name)?;
        write_state(dir, rule_name, &json)
    }

    /// The state file's content.
    pub fn encode(&self, dir: &Path, rule_name: &str) -> Result<Vec<u8>, PersistError> {
        let file = StateFileOut {
            version: STATE_VERSION,
            rule: rule_name,
            instances: self.instances.values().collect(),
            error: self.error.as_ref(),
        };
        serde_json::to_vec_pretty(&file).map_err(|source| PersistError::Json {
            path: state_path(dir, rule_name),
            source,
        })
    }

    /// Reads this rule's state from `dir`: `Ok(None)` when there is no state file.
    pub fn try_load(dir: &Path, rule_name: &str) -> Result<Option<RuleState>, PersistError> {
        let path = state_path(dir, rule_name);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(PersistError::Io { path, source }),
        };
        let json_err = |source| PersistError::Json {
            path: path.clone(),
            source,
        };
        let header: Header = serde_json::from_slice(&bytes).map_err(json_err)?;
        if header.version > STATE_VERSION {
            return Err(PersistError::NewerVersion {
                path,
                found: header.version,
                supported: STATE_VERSION,
            });
        }
        let file: StateFileIn = serde_json::from_slice(&bytes).map_err(json_err)?;
        if file.rule != rule_name {
            return Err(PersistError::OtherRule {
                path,
                found: file.rule,
                expected: rule_name.to_string(),
            });
        }
        let mut state = RuleState::new();
        for inst in file.instances {
            state.instances.insert(inst.tags.clone(), inst);
        }
        state.error = file.error;
        Ok(Some(state))
    }

    /// Restores this rule's state from `dir`; a missing file gives an empty state, and an
    /// unreadable, corrupt or newer-format file is logged and ignored (never blocks start).
    pub fn load(dir: &Path, rule_name: &str) -> RuleState {
        match RuleState::try_load(dir, rule_name) {
            Ok(Some(s)) => s,
            Ok(None) => RuleState::new(),
            Err(err) => {
                tracing::warn!(rule = rule_name, %err, "ignoring the saved alert state; the rule starts with no state");
                RuleState::new()
            }
        }
    }
}

/// Writes encoded state atomically (creating `dir` if needed).
fn write_state(dir: &Path, rule_name: &str, json: &[u8]) -> Result<(), PersistError> {
    fs::create_dir_all(dir).map_err(|source| PersistError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    write_atomic(&state_path(dir, rule_name), json)
        .map_err(|(path, source)| PersistError::Io { path, source })
}

/// Saves rule states on a thread of its own, so the fsyncs never hold up the scheduler: the
/// scheduler hands over the encoded state; the latest one per rule wins (an older one not yet
/// written is dropped), an unchanged one is not written again, and [`Persister::flush`]
/// waits until everything handed over is on disk (shutdown, tests).
pub struct Persister {
    shared: std::sync::Arc<Pending>,
}

/// (states to write — `None`: remove the file —, a batch is being written, the persister
/// is gone).
type Queue = (BTreeMap<String, Option<Vec<u8>>>, bool, bool);

#[derive(Default)]
struct Pending {
    queue: std::sync::Mutex<Queue>,
    wake: std::sync::Condvar,
    idle: std::sync::Condvar,
}

impl Persister {
    /// Starts the writer thread for the state files in `dir`.
    pub fn start(dir: PathBuf) -> io::Result<Persister> {
        let shared = std::sync::Arc::new(Pending::default());
        let s = shared.clone();
        std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || writer(&s, &dir))?;
        Ok(Persister { shared })
    }

    /// Hands over `rule_name`'s encoded state.
    pub fn save(&self, rule_name: &str, json: Vec<u8>) {
        let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.0.insert(rule_name.to_owned(), Some(json));
        self.shared.wake.notify_one();
    }

    /// Removes `rule_name`'s state file (the rule was deleted), after any write handed over.
    pub fn remove(&self, rule_name: &str) {
        let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.0.insert(rule_name.to_owned(), None);
        self.shared.wake.notify_one();
    }

    /// Waits until every state handed over so far is written (or failed and was logged).
    pub fn flush(&self) {
        let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        while !q.0.is_empty() || q.1 {
            q = self.shared.idle.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Removes a rule's state file (a missing one is fine).
pub fn remove_state(dir: &Path, rule_name: &str) {
    let file = state_path(dir, rule_name);
    if let Err(e) = fs::remove_file(&file)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(file = %file.display(), "cannot remove the state of a removed rule: {e}");
    }
}

impl Drop for Persister {
    /// The writer finishes what was handed over, then ends.
    fn drop(&mut self) {
        let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.2 = true;
        self.shared.wake.notify_one();
    }
}

fn writer(shared: &Pending, dir: &Path) {
    let mut written: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    loop {
        let batch = {
            let mut q = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.1 = false;
            shared.idle.notify_all();
            while q.0.is_empty() {
                if q.2 {
                    return;
                }
                q = shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            q.1 = true;
            std::mem::take(&mut q.0)
        };
        for (name, json) in batch {
            let Some(json) = json else {
                written.remove(&name);
                remove_state(dir, &name);
                continue;
            };
            if written.get(&name) == Some(&json) {
                continue;
            }
            match write_state(dir, &name, &json) {
                Ok(()) => {
                    written.insert(name, json);
                }
                Err(e) => tracing::error!(rule = %name, "cannot save alert state: {e}"),
            }
        }
    }
}

/// Field values in state files, tagged so an integer stays an integer and NaN/inf (which JSON
/// cannot hold as numbers) survive.
pub(crate) mod stored_fields {
    use super::*;
    use crate::model::Value;

    #[derive(Serialize, Deserialize)]
    enum Stored {
        #[serde(rename = "f")]
        Float(f64),
        /// A non-finite float, as Rust prints it: `NaN`, `inf`, `-inf`.
        #[serde(rename = "fx")]
        FloatText(String),
        #[serde(rename = "i")]
        Int(i64),
        #[serde(rename = "b")]
        Bool(bool),
        #[serde(rename = "s")]
        Str(String),
    }

    pub fn serialize<S: serde::Serializer>(
        fields: &BTreeMap<String, Value>,
        ser: S,
    ) -> Result<S::Ok, S::Error> {
        let stored: BTreeMap<&String, Stored> = fields
            .iter()
            .map(|(k, v)| {
                let s = match v {
                    Value::Float(f) if f.is_finite() => Stored::Float(*f),
                    Value::Float(f) => Stored::FloatText(f.to_string()),
                    Value::Int(i) => Stored::Int(*i),
                    Value::Bool(b) => Stored::Bool(*b),
                    Value::Str(s) => Stored::Str(s.clone()),
                };
                (k, s)
            })
            .collect();
        stored.serialize(ser)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        de: D,
    ) -> Result<BTreeMap<String, Value>, D::Error> {
        let stored = BTreeMap::<String, Stored>::deserialize(de)?;
        Ok(stored
            .into_iter()
            .map(|(k, s)| {
                let v = match s {
                    Stored::Float(f) => Value::Float(f),
                    Stored::FloatText(t) => Value::Float(t.parse().unwrap_or(f64::NAN)),
                    Stored::Int(i) => Value::Int(i),
                    Stored::Bool(b) => Value::Bool(b),
                    Stored::Str(s) => Value::Str(s),
                };
                (k, v)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Value;

    #[test]
    fn rule_names_map_to_plain_file_names() {
        let d = Path::new("/s");
        assert_eq!(
            state_path(d, "cpu_high"),
            Path::new("/s/cpu_high.state.json")
        );
        assert_eq!(state_path(d, "a/b c"), Path::new("/s/a%2Fb%20c.state.json"));
        assert_eq!(state_path(d, ".."), Path::new("/s/%2E..state.json"));
    }

    #[test]
    fn save_load_round_trip_keeps_every_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut st = RuleState::new();
        let mut inst = Instance::default();
        inst.tags.insert("host".into(), "web1".into());
        inst.fields.insert("value".into(), Value::Float(91.5));
        inst.fields.insert("n".into(), Value::Int(3));
        inst.fields
            .insert("nan".into(), Value::Float(f64::INFINITY));
        inst.level = crate::model::Level::Critical;
        inst.since = Some(5);
        inst.flap.history.push_back(crate::model::Level::Warning);
        st.instances.insert(inst.tags.clone(), inst.clone());
        st.save(dir.path(), "r").expect("save");
        let back = RuleState::try_load(dir.path(), "r")
            .expect("load")
            .expect("present");
        assert_eq!(back.instances.get(&inst.tags), Some(&inst));
        // No temp file left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("readdir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("r.state.json")]);
    }

    #[test]
    fn save_replaces_the_old_file_and_reports_io_errors_with_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("state");
        let mut st = RuleState::new();
        st.save(&sub, "r").expect("save creates the directory");
        let mut inst = Instance::default();
        inst.tags.insert("host".into(), "a".into());
        st.instances.insert(inst.tags.clone(), inst);
        st.save(&sub, "r").expect("save again");
        assert_eq!(RuleState::load(&sub, "r").instance_count(), 1);
        let file = dir.path().join("plain-file");
        fs::write(&file, b"x").expect("write");
        let err = st.save(&file, "r").unwrap_err();
        assert!(err.to_string().contains("plain-file"), "{err}");
    }

    #[test]
    fn corrupt_newer_or_foreign_files_are_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = state_path(dir.path(), "r");
        assert!(
            RuleState::try_load(dir.path(), "r")
                .expect("no file")
                .is_none()
        );
        fs::write(&p, b"{\"version\": 1, \"rule\": \"r\", \"instan").expect("write");
        assert!(matches!(
            RuleState::try_load(dir.path(), "r"),
            Err(PersistError::Json { .. })
        ));
        assert_eq!(RuleState::load(dir.path(), "r").instance_count(), 0);
        fs::write(&p, b"{\"version\": 99, \"something\": \"else\"}").expect("write");
        let err = RuleState::try_load(dir.path(), "r").unwrap_err();
        assert!(err.to_string().contains("state format 99"), "{err}");
        assert_eq!(RuleState::load(dir.path(), "r").instance_count(), 0);
        fs::write(&p, b"{\"version\": 1, \"rule\": \"other\"}").expect("write");
        assert!(matches!(
            RuleState::try_load(dir.path(), "r"),
            Err(PersistError::OtherRule { .. })
        ));
        // A directory where the file should be: unreadable, still no panic.
        fs::remove_file(&p).expect("rm");
        fs::create_dir(&p).expect("mkdir");
        assert_eq!(RuleState::load(dir.path(), "r").instance_count(), 0);
    }
}

#[cfg(test)]
mod writer_tests {
    use super::*;

    /// The writer thread writes the latest state handed over per rule; flush waits for it.
    #[test]
    fn the_latest_state_per_rule_is_written_and_flush_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = Persister::start(dir.path().to_owned()).unwrap();
        let mut s = RuleState::new();
        for i in 0..50 {
            s.error = Some(super::super::machine::ErrorState {
                level: crate::model::Level::Critical,
                since: i,
                announced: false,
                last_sent: None,
                message: format!("m{i}"),
            });
            p.save("r", s.encode(dir.path(), "r").unwrap());
        }
        p.flush();
        let back = RuleState::try_load(dir.path(), "r").unwrap().unwrap();
        assert_eq!(back.error.unwrap().message, "m49");
        drop(p);
    }
}
