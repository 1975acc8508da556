//! A bounded, crash-safe on-disk queue of metrics for `buffer_strategy = "disk"`: an agent
//! restart during a database outage loses nothing.
//!
//! Layout of the buffer directory: segment files `<16-digit id>.seg` of records
//! `[u32 LE payload length][u32 LE CRC-32 of payload][payload = one encoded metric]`, and
//! `acked`: `"<segment id> <offset>\n"`, the first record not yet written to the output,
//! replaced atomically (write + rename). On open every segment is scanned; a record that is
//! torn (short) or fails its CRC ends that segment: the file is truncated there (a crash
//! mid-write), and what follows is counted as lost. Nothing that was acknowledged by an fsync
//! is lost, and a corrupt file never blocks the agent.
//!
//! Only an index (segment, offset, length) per metric lives in memory; payloads are read back
//! from disk one batch at a time.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::metric::{FieldValue, Metric};

const SEGMENT_BYTES: u64 = 4 << 20;
const MAX_RECORD: u32 = 16 << 20;

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
    index: VecDeque<Entry>,
    /// Segment being appended to, and its length.
    head: (u64, File, u64),
}

impl DiskBuffer {
    /// Opens (or creates) the buffer in `dir`, holding at most `limit` metrics.
    pub fn open(dir: &Path, limit: usize, sync: bool) -> io::Result<(DiskBuffer, Recovery)> {
        fs::create_dir_all(dir)?;
        let (ack_seg, ack_off) = read_ack(dir)?;
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
        let buf = DiskBuffer {
            dir: dir.to_owned(),
            sync,
            limit: limit.max(1),
            index,
            head,
        };
        buf.write_ack()?;
        Ok((buf, rec))
    }

    /// Metrics waiting.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Appends metrics; when the limit is passed the oldest are dropped. Returns how many
    /// were dropped.
    pub fn push(&mut self, metrics: &[Metric]) -> io::Result<usize> {
        let mut buf = Vec::with_capacity(metrics.len() * 96);
        let mut entries = Vec::with_capacity(metrics.len());
        if self.head.2 >= SEGMENT_BYTES {
            self.head = open_segment(&self.dir, self.head.0 + 1)?;
        }
        let (seg, start) = (self.head.0, self.head.2);
        for m in metrics {
            let payload = encode(m);
            let offset = start + buf.len() as u64;
            buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32(&payload).to_le_bytes());
            buf.extend_from_slice(&payload);
            entries.push(Entry {
                segment: seg,
                offset,
                len: payload.len() as u32,
            });
        }
        let written = self.head.1.write_all(&buf).and_then(|_| {
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
        self.index.extend(entries);
        let over = self.index.len().saturating_sub(self.limit);
        if over > 0 {
            self.ack(over)?;
        }
        Ok(over)
    }

    /// The oldest `n` metrics, read back from disk (unreadable records are skipped and
    /// counted in the second value).
    pub fn peek(&self, n: usize) -> io::Result<(Vec<Metric>, usize)> {
        let mut out = Vec::with_capacity(n.min(self.index.len()));
        let mut bad = 0;
        let mut file: Option<(u64, File)> = None;
        for e in self.index.iter().take(n) {
            if file.as_ref().is_none_or(|(s, _)| *s != e.segment) {
                file = Some((e.segment, File::open(seg_path(&self.dir, e.segment))?));
            }
            let Some((_, f)) = file.as_mut() else {
                continue;
            };
            f.seek(SeekFrom::Start(e.offset + 8))?;
            let mut payload = vec![0; e.len as usize];
            f.read_exact(&mut payload)?;
            match decode(&payload) {
                Some(m) => out.push(m),
                None => bad += 1,
            }
        }
        Ok((out, bad))
    }

    /// Forgets the oldest `n` metrics (written, or dropped); deletes segments left empty.
    pub fn ack(&mut self, n: usize) -> io::Result<()> {
        let n = n.min(self.index.len());
        self.index.drain(..n);
        self.write_ack()?;
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
        Ok(())
    }

    fn write_ack(&self) -> io::Result<()> {
        let (seg, off) = self
            .index
            .front()
            .map_or((self.head.0, self.head.2), |e| (e.segment, e.offset));
        let tmp = self.dir.join("acked.tmp");
        let mut f = File::create(&tmp)?;
        writeln!(f, "{seg} {off}")?;
        if self.sync {
            f.sync_data()?;
        }
        fs::rename(&tmp, self.dir.join("acked"))
    }
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

fn read_ack(dir: &Path) -> io::Result<(u64, u64)> {
    match fs::read_to_string(dir.join("acked")) {
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
        if len > MAX_RECORD || end > data.len() || crc32(&data[pos + 8..end]) != crc {
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

/// CRC-32 (IEEE 802.3), bitwise: records are small and this is not the hot path.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
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

    #[test]
    fn encoding_round_trips_every_type() {
        let m = metric(-7);
        assert_eq!(decode(&encode(&m)), Some(m.clone()));
        let enc = encode(&m);
        assert_eq!(decode(&enc[..enc.len() - 1]), None);
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn survives_reopen_and_only_replays_unacked() {
        let dir = tempfile::tempdir().unwrap();
        let (mut b, rec) = DiskBuffer::open(dir.path(), 100, true).unwrap();
        assert_eq!(rec, Recovery::default());
        b.push(&(0..10).map(metric).collect::<Vec<_>>()).unwrap();
        b.ack(4).unwrap();
        drop(b);
        let (b, rec) = DiskBuffer::open(dir.path(), 100, true).unwrap();
        assert_eq!(rec.restored, 6);
        let (got, bad) = b.peek(100).unwrap();
        assert_eq!(bad, 0);
        assert_eq!(
            got.iter().map(|m| m.time).collect::<Vec<_>>(),
            (4..10).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_torn_write_is_truncated_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut b, _) = DiskBuffer::open(dir.path(), 100, false).unwrap();
        b.push(&(0..3).map(metric).collect::<Vec<_>>()).unwrap();
        let seg = seg_path(dir.path(), b.head.0);
        drop(b);
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
        let (mut b, _) = DiskBuffer::open(dir.path(), 100, false).unwrap();
        b.push(&(0..3).map(metric).collect::<Vec<_>>()).unwrap();
        let seg = seg_path(dir.path(), b.head.0);
        drop(b);
        let mut data = fs::read(&seg).unwrap();
        let second = 8 + encode(&metric(0)).len() + 10;
        data[second] ^= 0xff;
        fs::write(&seg, &data).unwrap();
        let (b, rec) = DiskBuffer::open(dir.path(), 100, false).unwrap();
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
}
