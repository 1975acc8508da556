//! A bounded, crash-safe on-disk queue of metrics for `buffer_strategy = "disk"`: an agent
//! restart during a database outage loses nothing.
//!
//! Layout of the buffer directory: segment files `<16-digit id>.seg` of records
//! `[u32 LE payload length][u32 LE CRC-32 of payload][payload = one encoded metric]`, and
//! `ack`: the first record not yet written to the output, kept in two fixed 32-byte slots
//! `[u64 sequence][u64 segment][u64 offset][u32 CRC][4 zero bytes]` written alternately in
//! place, so recording progress never needs a free block: a full disk cannot stop it (the
//! newest slot with a good CRC wins; a torn slot leaves the other). The text file `acked` of
//! earlier versions is read once and replaced. On open every segment is scanned; a record
//! that is torn (short) or fails its CRC ends that segment: the file is truncated there (a
//! crash mid-write), and what follows is counted as lost. Nothing that was acknowledged by an
//! fsync is lost, and a corrupt file never blocks the agent.
//!
//! A full disk degrades to dropping the oldest: when an append fails for lack of space, the
//! oldest segments are deleted (their metrics counted as dropped) until it fits, and appends
//! recover by themselves when space returns. Segments are sized to the file system (1/16 of
//! it, 8 KiB to 4 MiB), so a small one still drops a slice, not everything.
//!
//! Only an index (segment, offset, length) per metric lives in memory; payloads are read back
//! from disk one batch at a time.
//!
//! Metrics leave only from the front, so the ack record always describes the queue: metrics
//! an output keeps while it settles the rest of their batch (a bucket refused for now) are
//! appended to another queue ([`DiskBuffer::push_durable`]) rather than left in place, which
//! would hold every later segment on disk and make a restart replay what was written.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::metric::{FieldValue, Metric};

const MAX_SEGMENT_BYTES: u64 = 4 << 20;
const MIN_SEGMENT_BYTES: u64 = 8 << 10;
const MAX_RECORD: u32 = 16 << 20;
const ACK_FILE: &str = "ack";
const LEGACY_ACK_FILE: &str = "acked";
const ACK_SLOT: u64 = 32;

#[cfg(test)]
thread_local! {
    /// Makes every durable push of this thread fail, as [`DiskBuffer::fail_syncs`] (for the
    /// callers' tests, whose queues are made out of reach).
    pub(crate) static FAIL_DURABLE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Where each buffered metric is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    segment: u64,
    offset: u64,
    len: u32,
}

/// What opening found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Metrics found waiting from a previous run.
    pub restored: usize,
    /// Bytes cut from torn or corrupt segment tails.
    pub truncated_bytes: u64,
}

/// The queue.
pub struct DiskBuffer {
    dir: PathBuf,
    sync: bool,
    limit: usize,
    segment_bytes: u64,
    index: VecDeque<Entry>,
    /// Segment being appended to, and its length.
    head: (u64, File, u64),
    /// The head segment's directory entry is known durable (fsynced since it was made).
    head_entry_synced: bool,
    /// The ack slots, and the sequence number of the last write.
    ack_file: File,
    ack_seq: u64,
    /// Data and directory fsyncs forced by [`DiskBuffer::push_durable`] (for tests).
    #[cfg(test)]
    forced_syncs: (u32, u32),
    /// Makes those fsyncs fail (for tests).
    #[cfg(test)]
    fail_syncs: bool,
}

impl DiskBuffer {
    /// Opens (or creates) the buffer in `dir`, holding at most `limit` metrics.
    pub fn open(dir: &Path, limit: usize, sync: bool) -> io::Result<(DiskBuffer, Recovery)> {
        fs::create_dir_all(dir)?;
        let ack_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(ACK_FILE))?;
        lock(&ack_file, dir)?;
        let (ack_seq, ack_at) = read_ack_slots(&ack_file)?;
        let (ack_seg, ack_off) = match ack_at {
            Some(at) => at,
            None => read_legacy_ack(dir)?,
        };
        // Both slots are allocated now, so later writes only overwrite blocks in place.
        if ack_file.metadata()?.len() < 2 * ACK_SLOT {
            ack_file.set_len(2 * ACK_SLOT)?;
        }
        let mut segments: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
            .collect();
        segments.sort_unstable();
        let mut rec = Recovery::default();
        let mut index = VecDeque::new();
        for &seg in &segments {
            let path = seg_path(dir, seg);
            if seg < ack_seg {
                fs::remove_file(&path)?;
                continue;
            }
            let (entries, good_len, file_len) = scan(&path, seg)?;
            if good_len < file_len {
                OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(good_len)?;
                rec.truncated_bytes += file_len - good_len;
            }
            index.extend(
                entries
                    .into_iter()
                    .filter(|e| seg > ack_seg || e.offset >= ack_off),
            );
        }
        rec.restored = index.len();
        let head_id = segments.last().copied().unwrap_or(0).max(ack_seg) + 1;
        let head = open_segment(dir, head_id)?;
        let mut buf = DiskBuffer {
            dir: dir.to_owned(),
            sync,
            limit: limit.max(1),
            segment_bytes: segment_bytes_for(dir),
            index,
            head,
            head_entry_synced: false,
            ack_file,
            ack_seq,
            #[cfg(test)]
            forced_syncs: (0, 0),
            #[cfg(test)]
            fail_syncs: false,
        };
        buf.write_ack()?;
        let _ = fs::remove_file(dir.join(LEGACY_ACK_FILE));
        Ok((buf, rec))
    }

    /// The directory it lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Metrics waiting.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Appends metrics; when the limit is passed, or the disk is full, the oldest are dropped.
    /// Returns how many were dropped. An error means these metrics could not be stored.
    pub fn push(&mut self, metrics: &[Metric]) -> io::Result<usize> {
        self.push_with(metrics, false)
    }

    /// [`DiskBuffer::push`], fsynced (with the directory when they started a segment) even
    /// without `sync`, for metrics whose originals the caller forgets elsewhere next, and not
    /// bounded by the limit (the caller keeps its queues within it). All or nothing: on any
    /// error (a full disk included: nothing is dropped for them) the queue is as it was, and
    /// the caller keeps the originals.
    pub fn push_durable(&mut self, metrics: &[Metric]) -> io::Result<()> {
        self.push_with(metrics, true).map(|_| ())
    }

    fn push_with(&mut self, metrics: &[Metric], durable: bool) -> io::Result<usize> {
        let mut buf = Vec::with_capacity(metrics.len() * 96);
        let mut records = Vec::with_capacity(metrics.len());
        for m in metrics {
            let payload = encode(m);
            records.push((buf.len() as u64, payload.len() as u32));
            buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            buf.extend_from_slice(&payload);
        }
        let mut dropped = 0;
        let (seg, start) = loop {
            match self.append(&buf) {
                Ok(at) => break at,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && !durable => {
                    let freed = self.drop_oldest_segment()?;
                    if freed == 0 {
                        return Err(e);
                    }
                    dropped += freed;
                }
                Err(e) => return Err(e),
            }
        };
        if durable && let Err(e) = self.sync_copies(!self.head_entry_synced) {
            // Not stored: cut the records off (the file is opened to append), so that a
            // restart does not find them beside the originals.
            let _ = self.head.1.set_len(start);
            self.head.2 = start;
            return Err(e);
        }
        self.index
            .extend(records.into_iter().map(|(rel, len)| Entry {
                segment: seg,
                offset: start + rel,
                len,
            }));
        // Durable copies are not bounded here: their originals, still in a queue, go next.
        let over = match durable {
            true => 0,
            false => self.index.len().saturating_sub(self.limit),
        };
        if over > 0 {
            self.ack(over)?;
        }
        Ok(dropped + over)
    }

    /// Writes `buf` at the end of the head segment (a new one when it is full); returns where.
    fn append(&mut self, buf: &[u8]) -> io::Result<(u64, u64)> {
        if self.head.2 >= self.segment_bytes {
            self.head = open_segment(&self.dir, self.head.0 + 1)?;
            self.head_entry_synced = false;
        }
        let (seg, start) = (self.head.0, self.head.2);
        let written = self.head.1.write_all(buf).and_then(|_| {
            if self.sync {
                self.head.1.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            // Cut a partial record (disk full) so later appends stay readable on recovery.
            let _ = self.head.1.set_len(start);
            return Err(e);
        }
        self.head.2 += buf.len() as u64;
        Ok((seg, start))
    }

    /// Frees space by forgetting the oldest segment's metrics and deleting its file (the head
    /// segment too, starting a new one, when it holds everything). Returns how many metrics
    /// were dropped; 0 when nothing is left to drop.
    fn drop_oldest_segment(&mut self) -> io::Result<usize> {
        let Some(oldest) = self.index.front().map(|e| e.segment) else {
            return Ok(0);
        };
        let n = self
            .index
            .iter()
            .take_while(|e| e.segment == oldest)
            .count();
        if oldest == self.head.0 {
            // Everything waiting is in the head segment: start the next one first, so the
            // file being deleted is no longer written to.
            let _ = self.head.1.set_len(0);
            self.head = open_segment(&self.dir, self.head.0 + 1)?;
            self.head_entry_synced = false;
        }
        self.ack(n)?;
        Ok(n)
    }

    /// The oldest `n` metrics, read back from disk. A record that passed its CRC but does
    /// not decode (written by another version) is removed from the queue and counted in the
    /// second value, so the metrics returned are exactly the queue's first entries.
    pub fn peek(&mut self, n: usize) -> io::Result<(Vec<Metric>, usize)> {
        let mut out = Vec::with_capacity(n.min(self.index.len()));
        let mut bad = 0;
        let mut file: Option<(u64, File)> = None;
        let mut i = 0;
        while out.len() < n && i < self.index.len() {
            let e = self.index[i];
            if file.as_ref().is_none_or(|(s, _)| *s != e.segment) {
                file = Some((e.segment, File::open(seg_path(&self.dir, e.segment))?));
            }
            let Some((_, f)) = file.as_mut() else {
                break;
            };
            f.seek(SeekFrom::Start(e.offset + 8))?;
            let mut payload = vec![0; e.len as usize];
            f.read_exact(&mut payload)?;
            match decode(&payload) {
                Some(m) => {
                    out.push(m);
                    i += 1;
                }
                None => {
                    self.index.remove(i);
                    bad += 1;
                }
            }
        }
        Ok((out, bad))
    }

    /// Forgets the oldest `n` metrics (written, or dropped); deletes segments left empty.
    /// Segments go first: they free space even when recording fails (a stale record only
    /// replays written metrics after a restart, never loses any).
    pub fn ack(&mut self, n: usize) -> io::Result<()> {
        let n = n.min(self.index.len());
        self.index.drain(..n);
        self.forget_files()
    }

    /// Makes the head segment's data durable (unless every append already is) and, when
    /// `new_segment` (made by this push, or by [`DiskBuffer::open`]), its directory entry.
    fn sync_copies(&mut self, new_segment: bool) -> io::Result<()> {
        #[cfg(test)]
        if self.fail_syncs || FAIL_DURABLE.get() {
            return Err(io::Error::other("fsync failed (test)"));
        }
        if !self.sync {
            self.head.1.sync_data()?;
            #[cfg(test)]
            {
                self.forced_syncs.0 += 1;
            }
        }
        if new_segment {
            File::open(&self.dir)?.sync_all()?;
            self.head_entry_synced = true;
            #[cfg(test)]
            {
                self.forced_syncs.1 += 1;
            }
        }
        Ok(())
    }

    /// Deletes the segments before the first metric waiting and records its position.
    fn forget_files(&mut self) -> io::Result<()> {
        let keep_from = self.index.front().map_or(self.head.0, |e| e.segment);
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let id: Option<u64> = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".seg")?.parse().ok());
            if id.is_some_and(|id| id < keep_from) {
                fs::remove_file(entry.path())?;
            }
        }
        self.write_ack()
    }

    /// Records the first unwritten record in the older of the two slots, in place.
    fn write_ack(&mut self) -> io::Result<()> {
        let (seg, off) = self
            .index
            .front()
            .map_or((self.head.0, self.head.2), |e| (e.segment, e.offset));
        let seq = self.ack_seq + 1;
        let mut slot = [0u8; ACK_SLOT as usize];
        slot[0..8].copy_from_slice(&seq.to_le_bytes());
        slot[8..16].copy_from_slice(&seg.to_le_bytes());
        slot[16..24].copy_from_slice(&off.to_le_bytes());
        let crc = crc32fast::hash(&slot[..24]);
        slot[24..28].copy_from_slice(&crc.to_le_bytes());
        self.ack_file.write_all_at(&slot, (seq % 2) * ACK_SLOT)?;
        if self.sync {
            self.ack_file.sync_data()?;
        }
        self.ack_seq = seq;
        Ok(())
    }
}

/// Segment size for the file system holding `dir`: 1/16 of it, within 8 KiB..4 MiB.
fn segment_bytes_for(dir: &Path) -> u64 {
    rustix::fs::statvfs(dir).map_or(MAX_SEGMENT_BYTES, |st| {
        (st.f_blocks.saturating_mul(st.f_frsize) / 16).clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES)
    })
}

/// The newest valid slot of the ack file: (its sequence, (segment, offset))), or (0, None).
fn read_ack_slots(f: &File) -> io::Result<(u64, Option<(u64, u64)>)> {
    let mut best: (u64, Option<(u64, u64)>) = (0, None);
    for i in 0..2 {
        let mut slot = [0u8; ACK_SLOT as usize];
        match f.read_exact_at(&mut slot, i * ACK_SLOT) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => continue,
            Err(e) => return Err(e),
        }
        let word = |r: std::ops::Range<usize>| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&slot[r]);
            u64::from_le_bytes(b)
        };
        let crc = u32::from_le_bytes([slot[24], slot[25], slot[26], slot[27]]);
        let seq = word(0..8);
        if seq > 0 && crc == crc32fast::hash(&slot[..24]) && seq > best.0 {
            best = (seq, Some((word(8..16), word(16..24))));
        }
    }
    Ok(best)
}

fn seg_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016}.seg"))
}

fn open_segment(dir: &Path, id: u64) -> io::Result<(u64, File, u64)> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(seg_path(dir, id))?;
    let len = f.metadata()?.len();
    Ok((id, f, len))
}

/// Takes the buffer for this process: an exclusive `flock` on its ack file, held as long as
/// the buffer is open. Two writers (a `wk-agent --once` beside the daemon, two agents given
/// one directory) would interleave segments and acks and lose or replay metrics. A reload
/// may find the previous output a moment from closing: tried for up to a second.
fn lock(ack_file: &File, dir: &Path) -> io::Result<()> {
    use rustix::fs::{FlockOperation, flock};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match flock(ack_file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::WOULDBLOCK) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "{} is in use by another wk-agent (or another output of this one): give each its own buffer_directory",
                        dir.display()
                    ),
                ));
            }
            // A file system without flock (some CIFS and FUSE mounts): the buffer works as
            // it did before the lock, unguarded.
            Err(e @ (rustix::io::Errno::NOLCK | rustix::io::Errno::OPNOTSUPP)) => {
                tracing::warn!(dir = %dir.display(), "cannot lock the disk buffer ({e}): make sure no other wk-agent uses this buffer_directory");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The text ack file of earlier versions: `"<segment> <offset>\n"`.
fn read_legacy_ack(dir: &Path) -> io::Result<(u64, u64)> {
    match fs::read_to_string(dir.join(LEGACY_ACK_FILE)) {
        Ok(s) => {
            let mut it = s.split_whitespace().map(|p| p.parse::<u64>().ok());
            Ok(match (it.next().flatten(), it.next().flatten()) {
                (Some(seg), Some(off)) => (seg, off),
                // A damaged ack file: replay everything rather than lose anything.
                _ => (0, 0),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((0, 0)),
        Err(e) => Err(e),
    }
}

/// Reads a segment's valid records; returns them, the length of the valid prefix and the
/// file length.
fn scan(path: &Path, seg: u64) -> io::Result<(Vec<Entry>, u64, u64)> {
    let data = fs::read(path)?;
    let mut entries = Vec::new();
    let mut pos = 0usize;
    while pos + 8 <= data.len() {
        let len = u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]);
        let crc = u32::from_le_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]);
        let end = pos + 8 + len as usize;
        if len > MAX_RECORD || end > data.len() || crc32fast::hash(&data[pos + 8..end]) != crc {
            break;
        }
        entries.push(Entry {
            segment: seg,
            offset: pos as u64,
            len,
        });
        pos = end;
    }
    Ok((entries, pos as u64, data.len() as u64))
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Encodes a metric: name, tags, typed fields, time.
pub fn encode(m: &Metric) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    put_str(&mut out, &m.name);
    out.extend_from_slice(&(m.tags().len() as u32).to_le_bytes());
    for (k, v) in m.tags() {
        put_str(&mut out, k);
        put_str(&mut out, v);
    }
    out.extend_from_slice(&(m.fields.len() as u32).to_le_bytes());
    for (k, v) in &m.fields {
        put_str(&mut out, k);
        match v {
            FieldValue::Float(f) => {
                out.push(0);
                out.extend_from_slice(&f.to_le_bytes());
            }
            FieldValue::Int(i) => {
                out.push(1);
                out.extend_from_slice(&i.to_le_bytes());
            }
            FieldValue::Uint(u) => {
                out.push(2);
                out.extend_from_slice(&u.to_le_bytes());
            }
            FieldValue::Bool(b) => out.extend_from_slice(&[3, *b as u8]),
            FieldValue::Str(s) => {
                out.push(4);
                put_str(&mut out, s);
            }
        }
    }
    out.extend_from_slice(&m.time.to_le_bytes());
    out
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

/// Decodes what [`encode`] wrote; None on any inconsistency.
pub fn decode(data: &[u8]) -> Option<Metric> {
    let mut r = Reader(data);
    let mut m = Metric::new(r.str()?, 0);
    for _ in 0..r.u32()? {
        let (k, v) = (r.str()?, r.str()?);
        m.set_tag(k, v);
    }
    for _ in 0..r.u32()? {
        let k = r.str()?;
        let v = match r.take(1)?[0] {
            0 => FieldValue::Float(f64::from_bits(r.u64()?)),
            1 => FieldValue::Int(r.u64()? as i64),
            2 => FieldValue::Uint(r.u64()?),
            3 => FieldValue::Bool(r.take(1)?[0] != 0),
            4 => FieldValue::Str(r.str()?),
            _ => return None,
        };
        m.add_field(k, v);
    }
    m.time = r.u64()? as i64;
    r.0.is_empty().then_some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(i: i64) -> Metric {
        Metric::new("m", i)
            .with_tag("host", "a b")
            .with_field("f", 1.5)
            .with_field("i", i)
            .with_field("u", u64::MAX)
            .with_field("b", true)
            .with_field("s", "x\"y")
    }

    /// Regression (review of 1d28d1f): with `buffer_disk_sync = false`, metrics set aside
    /// could have their originals forgotten while the copies were not yet on disk, so a
    /// power cut could lose them. The copies (and a new segment's directory entry) are synced
    /// first.
    ///
    /// Regression (review of 0c78aa3): the segment `open` makes was taken as synced, so after
    /// a power cut the first copies in it could be missing while the ack moved past their
    /// originals. Its directory entry is synced at its first durable push too.
    #[test]
    fn durable_copies_are_synced_even_without_sync() {
        let dir = tempfile::tempdir().unwrap();
        let (mut b, _) = DiskBuffer::open(dir.path(), 100, false).unwrap();
        b.push(&[metric(1)]).unwrap();
        b.push_durable(&[metric(2)]).unwrap();
        assert_eq!(b.forced_syncs, (1, 1), "the copy and open's segment synced");
        b.push_durable(&[metric(2)]).unwrap();
        assert_eq!(b.forced_syncs, (2, 1), "the copy synced, same segment");
        b.segment_bytes = 1;
        let seg = b.head.0;
        b.push_durable(&[metric(3)]).unwrap();
        assert_ne!(b.head.0, seg, "the copy went to a new segment");
        assert_eq!(b.forced_syncs, (3, 2), "and its directory entry synced");
    }

    /// Regression (review of 8d62f7a): copies whose fsync failed stayed in the queue while
    /// the caller, told they failed, kept (and later sent) the originals too. A failed
    /// durable push leaves the queue as it was, on disk too; so does any append error.
    #[test]
    fn a_failed_durable_push_leaves_the_queue_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let (mut b, _) = DiskBuffer::open(dir.path(), 100, false).unwrap();
        b.push(&[metric(1)]).unwrap();
        b.fail_syncs = true;
        assert!(b.push_durable(&[metric(2)]).is_err());
        assert_eq!(b.len(), 1);
        b.fail_syncs = false;
        b.segment_bytes = 1;
        fs::remove_dir_all(dir.path()).unwrap();
        assert!(
            b.push_durable(&[metric(3)]).is_err(),
            "no directory for a segment"
        );
        assert_eq!(b.len(), 1);
        fs::create_dir(dir.path()).unwrap();
        drop(b);
        let dir = tempfile::tempdir().unwrap();
        let (mut b, _) = DiskBuffer::open(dir.path(), 100, false).unwrap();
        b.push(&[metric(1)]).unwrap();
        b.fail_syncs = true;
        assert!(b.push_durable(&[metric(2)]).is_err());
        b.fail_syncs = false;
        b.push(&[metric(3)]).unwrap();
        drop(b);
        let (mut b, rec) = DiskBuffer::open(dir.path(), 100, false).unwrap();
        assert_eq!(rec.restored, 2);
        let times: Vec<i64> = b.peek(10).unwrap().0.iter().map(|m| m.time).collect();
        assert_eq!(times, [1, 3], "the failed copy is not on disk");
    }

    #[test]
    fn encoding_round_trips_every_type() {
        let m = metric(-7);
        assert_eq!(decode(&encode(&m)), Some(m.clone()));
        let enc = encode(&m);
        assert_eq!(decode(&enc[..enc.len() - 1]), None);
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
    }

    /// One writer per directory: a second open (another agent, `--once` beside the daemon)
    /// is refused with a clear error, and the directory is free again once the first closes.
    #[test]
    fn a_directory_in_use_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = DiskBuffer::open(dir.path(), 10, false).unwrap();
        let e = DiskBuffer::open(dir.path(), 10, false)
            .err()
            .expect("refused");
        assert!(e.to_string().contains("in use by another wk-agent"), "{e}");
        drop(first);
        assert!(DiskBuffer::open(dir.path(), 10, false).is_ok());
    }

    #[test]
    fn survives_reopen_and_only_replays_unacked() {
        let dir = tempfile::tempdir().unwrap();
        let (mut b, rec) = DiskBuffer::open(dir.path(), 100, true).unwrap();
        assert_eq!(rec, Recovery::default());
        b.push(&(0..10).map(metric).collect::<Vec<_>>()).unwrap();
        b.ack(4).unwrap();
        drop(b);
        let (mut b, rec) = DiskBuffer::open(dir.path(), 100, true).unwrap();
        assert_eq!(rec.restored, 6);
        let (got, bad) = b.peek(100).unwrap();
        assert_eq!(bad, 0);
        assert_eq!(
            got.iter().map(|m| m.time).collect::<Vec<_>>(),
            (4..10).collect::<Vec<_>>()
        );
    }

    /// A closed buffer in `dir` holding metrics 0, 1, 2 in one segment; that segment's path.
    fn three_metrics_in_one_segment(dir: &Path) -> PathBuf {
        let (mut b, _) = DiskBuffer::open(dir, 100, false).unwrap();
        b.push(&(0..3).map(metric).collect::<Vec<_>>()).unwrap();
        seg_path(dir, b.head.0)
    }

    #[test]
    fn a_torn_write_is_truncated_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let seg = three_metrics_in_one_segment(dir.path());
        // A crash in the middle of the next record: half a header and some payload.
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let (mut b, rec) = DiskBuffer::open(dir.path(), 100, false).unwrap();
        assert_eq!((rec.restored, rec.truncated_bytes), (3, 6));
        b.push(&[metric(3)]).unwrap();
        let (got, _) = b.peek(10).unwrap();
        assert_eq!(got.iter().map(|m| m.time).collect::<Vec<_>>(), [0, 1, 2, 3]);
    }

    #[test]
    fn a_corrupt_record_ends_its_segment_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let seg = three_metrics_in_one_segment(dir.path());
        let mut data = fs::read(&seg).unwrap();
        let second = 8 + encode(&metric(0)).len() + 10;
        data[second] ^= 0xff;
        fs::write(&seg, &data).unwrap();
        let (mut b, rec) = DiskBuffer::open(dir.path(), 100, false).unwrap();
        assert_eq!(rec.restored, 1);
        assert!(rec.truncated_bytes > 0);
        assert_eq!(b.peek(10).unwrap().0.len(), 1);
    }

    #[test]
    fn the_limit_drops_the_oldest_and_says_how_many() {
        let dir = tempfile::tempdir().unwrap();
        let (mut b, _) = DiskBuffer::open(dir.path(), 5, false).unwrap();
        assert_eq!(b.push(&(0..4).map(metric).collect::<Vec<_>>()).unwrap(), 0);
        assert_eq!(b.push(&(4..8).map(metric).collect::<Vec<_>>()).unwrap(), 3);
        assert_eq!(b.len(), 5);
        assert_eq!(b.peek(1).unwrap().0[0].time, 3);
    }

    #[test]
    fn fully_acked_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..3 {
            let (mut b, _) = DiskBuffer::open(dir.path(), 100, false).unwrap();
            b.push(&[metric(round)]).unwrap();
            let n = b.len();
            b.ack(n).unwrap();
        }
        let segs = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "seg")
            })
            .count();
        assert!(segs <= 1, "{segs} segments left");
    }

    #[test]
    fn the_text_ack_file_of_earlier_versions_is_read_once() {
        let dir = tempfile::tempdir().unwrap();
        let (mut q, _) = DiskBuffer::open(dir.path(), 100, true).unwrap();
        q.push(&[metric(1), metric(2), metric(3)]).unwrap();
        let second = q.index[1];
        drop(q);
        // An older agent left `acked` pointing at the second record, and no slot file.
        fs::remove_file(dir.path().join(ACK_FILE)).unwrap();
        fs::write(
            dir.path().join(LEGACY_ACK_FILE),
            format!("{} {}\n", second.segment, second.offset),
        )
        .unwrap();
        let (mut q, rec) = DiskBuffer::open(dir.path(), 100, true).unwrap();
        assert_eq!(rec.restored, 2);
        assert!(!dir.path().join(LEGACY_ACK_FILE).exists());
        assert_eq!(q.peek(2).unwrap().0, vec![metric(2), metric(3)]);
    }

    #[test]
    fn a_torn_ack_slot_falls_back_to_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let (mut q, _) = DiskBuffer::open(dir.path(), 100, true).unwrap();
        q.push(&[metric(1), metric(2), metric(3)]).unwrap();
        q.ack(1).unwrap(); // slot A: after record 1
        q.ack(1).unwrap(); // slot B: after record 2
        let newest = q.ack_seq % 2;
        drop(q);
        // Tear the newest slot: the older one (one record less acknowledged) is used.
        let f = OpenOptions::new()
            .write(true)
            .open(dir.path().join(ACK_FILE))
            .unwrap();
        f.write_all_at(&[0xff; 4], newest * ACK_SLOT + 10).unwrap();
        let (_, rec) = DiskBuffer::open(dir.path(), 100, true).unwrap();
        assert_eq!(
            rec.restored, 2,
            "replays one written metric rather than lose any"
        );
    }
}
