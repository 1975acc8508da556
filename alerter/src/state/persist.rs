//! Saving and restoring a rule's state: per rule in the state directory, a snapshot
//! `<rule>.state.json` (the whole state, written atomically: temp file, fsync, rename, fsync of
//! the directory) and a journal `<rule>.state.journal` of what changed since that snapshot.
//!
//! The journal is append-only: one line per record (an instance as it is now, an instance
//! forgotten, the rule's Error state), each line `<crc32 of the JSON, 8 hex digits> <JSON>`,
//! fsynced per batch. Its first line names the rule and the snapshot's generation (a random
//! number drawn for each snapshot), so a journal left from before a snapshot (a crash between
//! the snapshot's rename and the new journal's) is ignored, not replayed on the wrong base. A
//! line that is cut short or whose checksum fails ends the replay there (a crash in the middle
//! of an append): what follows it is ignored with a warning, and the next save is a snapshot.
//!
//! When each is written ([`RuleState::due_save`]): a change a restart needs exactly (a level,
//! a clock, a notification, an instance created or forgotten) appends the changed instances
//! only; a snapshot is written every [`STATE_CHECKPOINT`](super::machine::STATE_CHECKPOINT)
//! while the rule is evaluated (it also carries `last_seen`, `last_point` and the values, which
//! move at every evaluation), when the journal has grown past the snapshot's size (at least
//! [`JOURNAL_MIN_BYTES`]), and as the first save after a start. So the journal stays bounded
//! and a change costs a few lines, not the rule's whole file.
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
use crate::model::Tags;

/// The state file format this build writes (and the newest it reads).
pub const STATE_VERSION: u32 = 1;

/// A journal may grow to the size of its snapshot, and at least to this, before the next
/// save is a snapshot instead.
pub const JOURNAL_MIN_BYTES: usize = 1 << 20;

/// Where a rule's saved state stands (kept with its [`RuleState`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct JournalInfo {
    /// A snapshot of this state was handed over: journal records may follow it.
    pub base: bool,
    /// The last snapshot's generation.
    pub generation: u64,
    /// Its size, and the bytes of journal records handed over since.
    pub snapshot_bytes: usize,
    pub journal_bytes: usize,
}

impl JournalInfo {
    fn full(&self) -> bool {
        self.journal_bytes > self.snapshot_bytes.max(JOURNAL_MIN_BYTES)
    }
}

/// What to write after an evaluation ([`RuleState::due_save`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateSave {
    /// The whole state, and the new journal's first line (it replaces the old journal).
    Snapshot { state: Vec<u8>, journal: Vec<u8> },
    /// Journal records to append.
    Journal(Vec<u8>),
}

impl StateSave {
    /// Bytes to write.
    pub fn len(&self) -> usize {
        match self {
            StateSave::Snapshot { state, journal } => state.len() + journal.len(),
            StateSave::Journal(j) => j.len(),
        }
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

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
    generation: u64,
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
    /// 0 in files written before the journal (no journal can match it).
    #[serde(default)]
    generation: u64,
    #[serde(default)]
    instances: Vec<Instance>,
    #[serde(default)]
    error: Option<ErrorState>,
}

/// The journal's first line.
#[derive(Serialize, Deserialize)]
struct JournalHeader {
    rule: String,
    generation: u64,
}

#[derive(Serialize)]
enum RecordOut<'a> {
    #[serde(rename = "set")]
    Set(&'a Instance),
    #[serde(rename = "remove")]
    Remove(&'a Tags),
    #[serde(rename = "error")]
    Error(Option<&'a ErrorState>),
}

#[derive(Deserialize)]
enum RecordIn {
    #[serde(rename = "set")]
    Set(Instance),
    #[serde(rename = "remove")]
    Remove(Tags),
    #[serde(rename = "error")]
    Error(Option<ErrorState>),
}

/// Appends one journal line: the JSON's crc32, a space, the JSON, a newline.
fn push_line<T: Serialize>(out: &mut Vec<u8>, value: &T) -> Result<(), serde_json::Error> {
    let start = out.len();
    out.extend_from_slice(b"00000000 ");
    serde_json::to_writer(&mut *out, value)?;
    let crc = crc32fast::hash(&out[start + 9..]);
    out[start..start + 8].copy_from_slice(format!("{crc:08x}").as_bytes());
    out.push(b'\n');
    Ok(())
}

/// One journal line's JSON (without the newline), if its checksum holds.
fn checked_line(line: &[u8]) -> Option<&[u8]> {
    let (crc, rest) = (line.get(..8)?, line.get(8..)?);
    let json = rest.strip_prefix(b" ")?;
    let crc = u32::from_str_radix(std::str::from_utf8(crc).ok()?, 16).ok()?;
    (crc32fast::hash(json) == crc).then_some(json)
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

/// Moves a damaged file aside as `….corrupt` (so that the next write does not erase the
/// evidence); says where it went, for the warning.
pub fn set_aside(path: &Path) -> String {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".corrupt");
    match fs::rename(path, &aside) {
        Ok(()) => format!("kept as {}", Path::new(&aside).display()),
        Err(e) => format!("could not be moved aside: {e}"),
    }
}

/// The state file of `rule_name` in `dir`. Characters other than ASCII letters, digits,
/// `-`, `_` and `.` are written as `%XX` so any rule name maps to one plain file name.
pub fn state_path(dir: &Path, rule_name: &str) -> PathBuf {
    dir.join(format!("{}.state.json", file_stem(rule_name)))
}

/// The journal beside [`state_path`]: `<rule>.state.journal`.
pub fn journal_path(dir: &Path, rule_name: &str) -> PathBuf {
    dir.join(format!("{}.state.journal", file_stem(rule_name)))
}

fn file_stem(rule_name: &str) -> String {
    let mut name = String::new();
    for b in rule_name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_') || (b == b'.' && !name.is_empty())
        {
            name.push(char::from(b));
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    name
}

impl RuleState {
    /// Writes a snapshot of this rule's state to `dir` now (creating `dir` if needed), and
    /// starts its journal afresh.
    pub fn save(&mut self, dir: &Path, rule_name: &str) -> Result<(), PersistError> {
        let now = self.saved_at.unwrap_or(0);
        let save = self.snapshot(now, rule_name)?;
        write_save(dir, rule_name, &save)
    }

    /// The state file's content, at the current generation.
    pub fn encode(&self, dir: &Path, rule_name: &str) -> Result<Vec<u8>, PersistError> {
        let file = StateFileOut {
            version: STATE_VERSION,
            rule: rule_name,
            generation: self.journal.generation,
            instances: self.instances.values().collect(),
            error: self.error.as_ref(),
        };
        // Sized after the last snapshot (or ~500 bytes an instance): growing a buffer of
        // megabytes by doubling copies it again and again, into fresh pages each time.
        let guess = self.journal.snapshot_bytes.max(self.instances.len() * 500);
        let mut out = Vec::with_capacity(guess * 9 / 8 + 4096);
        serde_json::to_writer(&mut out, &file).map_err(|source| PersistError::Json {
            path: state_path(dir, rule_name),
            source,
        })?;
        Ok(out)
    }

    /// What to save after an evaluation at `now_ns`, if anything: the changed instances as
    /// journal records, or a snapshot (see the module docs for when). Hands the state over:
    /// the bookkeeping of what is unsaved is reset.
    pub fn due_save(
        &mut self,
        now_ns: i64,
        rule_name: &str,
    ) -> Result<Option<StateSave>, PersistError> {
        let checkpoint = self.checkpoint_due(now_ns);
        if !self.changed && !checkpoint {
            return Ok(None);
        }
        if checkpoint || !self.journal.base || self.journal.full() {
            return self.snapshot(now_ns, rule_name).map(Some);
        }
        let json_err = |source| PersistError::Json {
            path: journal_path(Path::new(""), rule_name),
            source,
        };
        let mut out = Vec::new();
        // Removals first: an instance forgotten and back since the last save is then set.
        for key in self.removed.drain(..) {
            push_line(&mut out, &RecordOut::Remove(&key)).map_err(json_err)?;
        }
        for inst in self.instances.values_mut().filter(|i| i.dirty) {
            inst.dirty = false;
            push_line(&mut out, &RecordOut::Set(inst)).map_err(json_err)?;
        }
        if std::mem::take(&mut self.error_dirty) {
            push_line(&mut out, &RecordOut::Error(self.error.as_ref())).map_err(json_err)?;
        }
        self.changed = false;
        self.journal.journal_bytes += out.len();
        Ok(Some(StateSave::Journal(out)))
    }

    /// The last save handed over was not written (the disk refused it): the next save is a
    /// snapshot of the whole state, at the next evaluation rather than the next checkpoint.
    pub fn resave(&mut self) {
        self.journal.base = false;
        self.changed = true;
    }

    /// The whole state as a new snapshot (a new generation) and its journal's first line;
    /// everything counts as saved at `now_ns`.
    pub fn snapshot(&mut self, now_ns: i64, rule_name: &str) -> Result<StateSave, PersistError> {
        // Random, so that no journal left by an earlier run can match a new snapshot.
        self.journal.generation = fastrand::u64(1..);
        let state = self.encode(Path::new(""), rule_name)?;
        let mut journal = Vec::new();
        let header = JournalHeader {
            rule: rule_name.to_owned(),
            generation: self.journal.generation,
        };
        push_line(&mut journal, &header).map_err(|source| PersistError::Json {
            path: journal_path(Path::new(""), rule_name),
            source,
        })?;
        for inst in self.instances.values_mut() {
            inst.dirty = false;
        }
        self.removed.clear();
        self.error_dirty = false;
        self.changed = false;
        self.touched = false;
        self.saved_at = Some(now_ns);
        self.journal.base = true;
        self.journal.snapshot_bytes = state.len();
        self.journal.journal_bytes = 0;
        Ok(StateSave::Snapshot { state, journal })
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
        state.replay_journal(dir, rule_name, file.generation);
        Ok(Some(state))
    }

    /// Applies the records of the journal that follows the snapshot of `generation`. A
    /// journal of another generation is left out (the snapshot is newer); a damaged line ends
    /// the replay there, with a warning naming it.
    fn replay_journal(&mut self, dir: &Path, rule_name: &str, generation: u64) {
        let path = journal_path(dir, rule_name);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(file = %path.display(), "cannot read the state journal; the state is the snapshot's: {e}");
                return;
            }
        };
        let mut lines = bytes.split_inclusive(|b| *b == b'\n').enumerate();
        let header = lines
            .next()
            .and_then(|(_, l)| checked_line(l.strip_suffix(b"\n")?))
            .and_then(|j| serde_json::from_slice::<JournalHeader>(j).ok());
        match header {
            Some(h) if h.rule == rule_name && h.generation == generation => {}
            Some(h) if h.rule == rule_name => {
                tracing::debug!(file = %path.display(), "the state journal precedes the snapshot; not replayed");
                return;
            }
            _ => {
                tracing::warn!(file = %path.display(), "ignoring a state journal with a damaged or foreign first line");
                return;
            }
        }
        for (i, line) in lines {
            let record = line
                .strip_suffix(b"\n")
                .and_then(checked_line)
                .and_then(|j| serde_json::from_slice::<RecordIn>(j).ok());
            let Some(record) = record else {
                tracing::warn!(
                    file = %path.display(),
                    line = i + 1,
                    "the state journal is damaged from this line on (cut short or a bad checksum); \
                     the state is restored up to the line before"
                );
                return;
            };
            match record {
                RecordIn::Set(inst) => {
                    self.instances.insert(inst.tags.clone(), inst);
                }
                RecordIn::Remove(tags) => {
                    self.instances.remove(&tags);
                }
                RecordIn::Error(e) => self.error = e,
            }
        }
    }

    /// Restores this rule's state from `dir`; a missing file gives an empty state, and an
    /// unreadable, corrupt or newer-format file is logged and ignored (never blocks start).
    /// A file that was read but cannot be used is moved aside as `….corrupt` first: the
    /// rule's next save would overwrite it, and with it what it says fired.
    pub fn load(dir: &Path, rule_name: &str) -> RuleState {
        match RuleState::try_load(dir, rule_name) {
            Ok(Some(s)) => s,
            Ok(None) => RuleState::new(),
            Err(err) => {
                let aside = match err {
                    PersistError::Io { .. } => String::new(),
                    _ => format!(" (the file {})", set_aside(&state_path(dir, rule_name))),
                };
                tracing::warn!(rule = rule_name, %err, "ignoring the saved alert state; the rule starts with no state{aside}");
                RuleState::new()
            }
        }
    }
}

/// Writes a snapshot and its new journal, each atomically (creating `dir` if needed): the
/// journal after the snapshot, so a crash between the two leaves a journal of an older
/// generation, which is not replayed.
fn write_snapshot(
    dir: &Path,
    rule_name: &str,
    state: &[u8],
    journal: &[u8],
) -> Result<(), PersistError> {
    fs::create_dir_all(dir).map_err(|source| PersistError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let io = |(path, source)| PersistError::Io { path, source };
    write_atomic(&state_path(dir, rule_name), state).map_err(io)?;
    write_atomic(&journal_path(dir, rule_name), journal).map_err(io)
}

/// Appends records to an open journal and makes them durable.
fn append(file: &mut File, records: &[u8]) -> io::Result<()> {
    file.write_all(records)?;
    file.sync_data()
}

fn open_journal(dir: &Path, rule_name: &str) -> Result<File, PersistError> {
    let path = journal_path(dir, rule_name);
    fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|source| PersistError::Io { path, source })
}

/// Writes what [`RuleState::due_save`] gave, synchronously (the writer thread keeps its
/// journals open instead).
pub fn write_save(dir: &Path, rule_name: &str, save: &StateSave) -> Result<(), PersistError> {
    match save {
        StateSave::Snapshot { state, journal } => write_snapshot(dir, rule_name, state, journal),
        StateSave::Journal(records) => {
            let mut f = open_journal(dir, rule_name)?;
            append(&mut f, records).map_err(|source| PersistError::Io {
                path: journal_path(dir, rule_name),
                source,
            })
        }
    }
}

/// Saves rule states on a thread of its own, so the fsyncs never hold up the scheduler: the
/// scheduler hands over snapshots and journal records; a snapshot supersedes whatever of its
/// rule was not written yet, records queue behind it, and [`Persister::flush`] waits until
/// everything handed over is on disk (shutdown, tests). The writer keeps each rule's journal
/// open; if a write fails, that rule's records are dropped until its next snapshot, so the
/// files never hold records past a gap, and [`Persister::failed`] tells the scheduler, whose
/// next save of the rule is then that snapshot ([`RuleState::resave`]).
pub struct Persister {
    shared: std::sync::Arc<Pending>,
}

/// What is waiting to be written for one rule.
enum Job {
    Snapshot {
        state: Vec<u8>,
        journal: Vec<u8>,
        records: Vec<u8>,
    },
    Records(Vec<u8>),
    Remove,
}

/// What to write per rule, and what the writer reports back.
#[derive(Default)]
struct Queue {
    jobs: BTreeMap<String, Job>,
    /// A batch is being written.
    busy: bool,
    /// The persister is gone: finish and end.
    closed: bool,
    /// Rules whose last write failed (see [`Persister::failed`]).
    failed: std::collections::BTreeSet<String>,
}

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

    /// Hands over what `rule_name`'s state gave to save.
    pub fn save(&self, rule_name: &str, save: StateSave) {
        let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        let job = match (q.jobs.remove(rule_name), save) {
            (_, StateSave::Snapshot { state, journal }) => Job::Snapshot {
                state,
                journal,
                records: Vec::new(),
            },
            (
                Some(Job::Snapshot {
                    state,
                    journal,
                    mut records,
                }),
                StateSave::Journal(r),
            ) => {
                records.extend_from_slice(&r);
                Job::Snapshot {
                    state,
                    journal,
                    records,
                }
            }
            (Some(Job::Records(mut records)), StateSave::Journal(r)) => {
                records.extend_from_slice(&r);
                Job::Records(records)
            }
            (None | Some(Job::Remove), StateSave::Journal(r)) => Job::Records(r),
        };
        q.jobs.insert(rule_name.to_owned(), job);
        self.shared.wake.notify_one();
    }

    /// Whether a write of `rule_name`'s state failed since this was last asked (the records
    /// since were dropped: the rule's next save must be a snapshot, [`RuleState::resave`]).
    pub fn failed(&self, rule_name: &str) -> bool {
        let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.failed.remove(rule_name)
    }

    /// Removes `rule_name`'s state files (the rule was deleted), after any write handed over.
    pub fn remove(&self, rule_name: &str) {
        let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.jobs.insert(rule_name.to_owned(), Job::Remove);
        self.shared.wake.notify_one();
    }

    /// Waits until every state handed over so far is written (or failed and was logged).
    pub fn flush(&self) {
        let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        while !q.jobs.is_empty() || q.busy {
            q = self.shared.idle.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Removes a rule's state files (missing ones are fine).
pub fn remove_state(dir: &Path, rule_name: &str) {
    for file in [state_path(dir, rule_name), journal_path(dir, rule_name)] {
        if let Err(e) = fs::remove_file(&file)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(file = %file.display(), "cannot remove the state of a removed rule: {e}");
        }
    }
}

impl Drop for Persister {
    /// The writer finishes what was handed over, then ends.
    fn drop(&mut self) {
        let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.closed = true;
        self.shared.wake.notify_one();
    }
}

fn writer(shared: &Pending, dir: &Path) {
    // Each rule's journal, open for appending once its snapshot is written.
    let mut journals: BTreeMap<String, File> = BTreeMap::new();
    let mut failed = Vec::new();
    loop {
        let batch = {
            let mut q = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.failed.extend(failed.drain(..));
            q.busy = false;
            shared.idle.notify_all();
            while q.jobs.is_empty() {
                if q.closed {
                    return;
                }
                q = shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            q.busy = true;
            std::mem::take(&mut q.jobs)
        };
        for (name, job) in batch {
            let records = match job {
                Job::Remove => {
                    journals.remove(&name);
                    remove_state(dir, &name);
                    continue;
                }
                Job::Snapshot {
                    state,
                    journal,
                    records,
                } => {
                    journals.remove(&name);
                    let opened = write_snapshot(dir, &name, &state, &journal)
                        .and_then(|()| open_journal(dir, &name));
                    match opened {
                        Ok(f) => {
                            journals.insert(name.clone(), f);
                        }
                        Err(e) => {
                            tracing::error!(rule = %name, "cannot save alert state (tried again at its next evaluation): {e}");
                            failed.push(name);
                            continue;
                        }
                    }
                    records
                }
                Job::Records(records) => records,
            };
            if records.is_empty() {
                continue;
            }
            let Some(f) = journals.get_mut(&name) else {
                tracing::debug!(rule = %name, "journal records dropped: the last snapshot was not written; the next one will be");
                failed.push(name);
                continue;
            };
            if let Err(e) = append(f, &records) {
                journals.remove(&name);
                tracing::error!(
                    rule = %name,
                    file = %journal_path(dir, &name).display(),
                    "cannot append to the alert state journal; the whole state is saved again at the rule's next evaluation: {e}"
                );
                failed.push(name);
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
        fields: &crate::model::Fields,
        ser: S,
    ) -> Result<S::Ok, S::Error> {
        // Fields are kept in key order: written as they are, no map built to sort them.
        ser.collect_map(fields.iter().map(|(k, v)| {
            let s = match v {
                Value::Float(f) if f.is_finite() => Stored::Float(*f),
                Value::Float(f) => Stored::FloatText(f.to_string()),
                Value::Int(i) => Stored::Int(*i),
                Value::Bool(b) => Stored::Bool(*b),
                Value::Str(s) => Stored::Str(s.clone()),
            };
            (k, s)
        }))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        de: D,
    ) -> Result<crate::model::Fields, D::Error> {
        let stored = crate::model::SortedMap::<Stored>::deserialize(de)?;
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
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .expect("readdir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["r.state.journal", "r.state.json"]);
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

    fn instance(host: &str, level: crate::model::Level, seen: i64) -> Instance {
        let mut inst = Instance::default();
        inst.tags.insert("host".into(), host.into());
        inst.fields
            .insert("value".into(), Value::Float(seen as f64 / 7.0));
        inst.level = level;
        inst.last_seen = seen;
        inst
    }

    /// Every instance, as a restart gets it.
    fn all(st: &RuleState) -> Vec<Instance> {
        st.instances.values().cloned().collect()
    }

    /// Issue 13: a change appends the changed instances to the journal, not the whole state;
    /// a restart (snapshot + journal) gives back exactly the state that was handed over.
    #[test]
    fn a_restart_restores_the_snapshot_plus_the_journal_exactly() {
        use crate::model::Level::{Critical, Ok as Fine, Warning};
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let mut st = RuleState::new();
        for i in 0..100 {
            let inst = instance(&format!("h{i:03}"), Fine, 1);
            st.instances.insert(inst.tags.clone(), inst);
        }
        st.touched = true;
        let first = st.due_save(10, "r").unwrap().expect("due");
        assert!(matches!(first, StateSave::Snapshot { .. }), "first save");
        write_save(d, "r", &first).unwrap();
        let snapshot_len = fs::metadata(state_path(d, "r")).unwrap().len();
        // Three changes: one instance fires, one is forgotten, one is new; and an Error.
        let key = |h: &str| instance(h, Fine, 0).tags;
        let firing = st.instances.get_mut(&key("h007")).unwrap();
        firing.level = Critical;
        firing.since = Some(15);
        firing.dirty = true;
        st.instances.remove(&key("h008"));
        st.removed.push(key("h008"));
        let mut new = instance("h100", Warning, 20);
        new.dirty = true;
        st.instances.insert(new.tags.clone(), new);
        st.error = Some(ErrorState {
            level: Critical,
            since: 20,
            announced: true,
            last_sent: Some(20),
            message: "down".into(),
        });
        st.error_dirty = true;
        st.changed = true;
        let records = st.due_save(20, "r").unwrap().expect("due");
        let StateSave::Journal(bytes) = &records else {
            panic!("a change is journal records, got {records:?}")
        };
        assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), 4);
        assert!(
            (bytes.len() as u64) < snapshot_len / 10,
            "records, not the state"
        );
        write_save(d, "r", &records).unwrap();
        // Then the remove is undone: forgotten and back between two saves.
        let back = instance("h008", Critical, 30);
        st.removed.push(back.tags.clone());
        st.instances.insert(
            back.tags.clone(),
            Instance {
                dirty: true,
                ..back
            },
        );
        st.changed = true;
        write_save(d, "r", &st.due_save(30, "r").unwrap().unwrap()).unwrap();
        let restored = RuleState::try_load(d, "r").unwrap().expect("present");
        let expect: Vec<Instance> = all(&st)
            .into_iter()
            .map(|i| Instance { dirty: false, ..i })
            .collect();
        assert_eq!(all(&restored), expect);
        assert_eq!(restored.error, st.error);
        assert_eq!(restored.instance_count(), 101);
        // After a restart the first save is a snapshot, which starts a new journal.
        let mut restored = restored;
        restored.touched = true;
        let again = restored.due_save(40, "r").unwrap().unwrap();
        assert!(matches!(again, StateSave::Snapshot { .. }));
        write_save(d, "r", &again).unwrap();
        let journal = fs::read(journal_path(d, "r")).unwrap();
        assert_eq!(
            journal.iter().filter(|b| **b == b'\n').count(),
            1,
            "the header only"
        );
        assert_eq!(all(&RuleState::try_load(d, "r").unwrap().unwrap()), expect);
    }

    /// A crash in the middle of an append leaves a line cut short or garbage: the replay
    /// stops there (the records before it count), nothing panics, and a journal of an older
    /// generation (a crash between a snapshot and its journal) is not replayed at all.
    #[test]
    fn a_damaged_journal_tail_is_ignored_and_an_old_journal_is_not_replayed() {
        use crate::model::Level::{Critical, Ok as Fine, Warning};
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let mut st = RuleState::new();
        let a = instance("a", Fine, 1);
        st.instances.insert(a.tags.clone(), a.clone());
        st.save(d, "r").unwrap();
        let change = |st: &mut RuleState, level| {
            let i = st.instances.get_mut(&a.tags).unwrap();
            i.level = level;
            i.dirty = true;
            st.changed = true;
            let StateSave::Journal(r) = st.due_save(5, "r").unwrap().unwrap() else {
                panic!("records expected")
            };
            write_save(d, "r", &StateSave::Journal(r.clone())).unwrap();
            r
        };
        change(&mut st, Warning);
        let second = change(&mut st, Critical);
        let level =
            |d: &Path| RuleState::try_load(d, "r").unwrap().unwrap().instances[&a.tags].level;
        assert_eq!(level(d), Critical);
        let path = journal_path(d, "r");
        let whole = fs::read(&path).unwrap();
        let cut = whole.len() - second.len();
        // Cut anywhere inside the last record, or one byte of it changed: the level before.
        for keep in [cut + 1, cut + 9, whole.len() - 1] {
            fs::write(&path, &whole[..keep]).unwrap();
            assert_eq!(level(d), Warning, "cut at {keep}");
        }
        let mut flipped = whole.clone();
        flipped[cut + 20] ^= 0x01;
        fs::write(&path, &flipped).unwrap();
        assert_eq!(level(d), Warning, "a bad checksum");
        // Garbage after a good journal, and a damaged first line.
        let mut garbage = whole.clone();
        garbage.extend_from_slice(b"\0\0\0{not json\n");
        fs::write(&path, &garbage).unwrap();
        assert_eq!(level(d), Critical);
        fs::write(&path, b"12345678 {\"rule\":\"r\"").unwrap();
        assert_eq!(level(d), Fine, "the snapshot alone");
        // A newer snapshot with the old journal beside it: the journal is not replayed.
        fs::write(&path, &whole).unwrap();
        let old_journal = whole;
        st.instances.get_mut(&a.tags).unwrap().level = Fine;
        st.save(d, "r").unwrap();
        fs::write(&path, &old_journal).unwrap();
        assert_eq!(level(d), Fine);
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
        // Set aside, so that the rule's first save does not erase it.
        let aside = dir.path().join("r.state.json.corrupt");
        assert!(!p.exists());
        assert!(fs::read(&aside).expect("aside").ends_with(b"\"instan"));
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
            let save = if i % 10 == 0 {
                s.snapshot(i, "r").unwrap()
            } else {
                s.error_dirty = true;
                s.changed = true;
                s.due_save(i, "r").unwrap().unwrap()
            };
            p.save("r", save);
        }
        p.flush();
        let back = RuleState::try_load(dir.path(), "r").unwrap().unwrap();
        assert_eq!(back.error.unwrap().message, "m49");
        drop(p);
    }
    fn error(message: &str) -> Option<super::super::machine::ErrorState> {
        Some(super::super::machine::ErrorState {
            level: crate::model::Level::Critical,
            since: 1,
            announced: false,
            last_sent: None,
            message: message.into(),
        })
    }

    /// A save the disk refuses is reported back, once, and the rule's next save is then the
    /// whole state, the changes made since included, instead of records nothing can follow
    /// until the next checkpoint.
    #[test]
    fn a_failed_write_is_reported_and_the_next_save_is_the_whole_state() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        // A file where the directory should be: every write fails, root or not.
        fs::write(&state_dir, b"in the way").unwrap();
        let p = Persister::start(state_dir.clone()).unwrap();
        let mut s = RuleState::new();
        s.error = error("first");
        p.save("r", s.snapshot(1, "r").unwrap());
        p.flush();
        assert!(p.failed("r"), "the failed snapshot is reported");
        assert!(!p.failed("r"), "once");
        assert!(!p.failed("other"));
        // Records after a snapshot that was not written are dropped, and reported too.
        s.error = error("second");
        s.error_dirty = true;
        s.changed = true;
        let records = s.due_save(2, "r").unwrap().unwrap();
        assert!(matches!(records, StateSave::Journal(_)));
        p.save("r", records);
        p.flush();
        assert!(p.failed("r"), "dropped records are reported");
        // The disk is back: the next save is a snapshot even with nothing changed since.
        fs::remove_file(&state_dir).unwrap();
        s.resave();
        let save = s.due_save(3, "r").unwrap().expect("a save is due");
        assert!(matches!(save, StateSave::Snapshot { .. }), "{save:?}");
        p.save("r", save);
        p.flush();
        assert!(!p.failed("r"));
        let back = RuleState::try_load(&state_dir, "r").unwrap().unwrap();
        assert_eq!(back.error.unwrap().message, "second");
    }
}
