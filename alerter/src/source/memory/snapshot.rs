//! The window on disk: every series with its chunks as they are held (the open chunk sealed),
//! so a restart in stream mode keeps what the rules look back on. The file is about the size
//! of the window in memory (bounded by `max_bytes` and `max_points`).
//!
//! Format (version 2): `WKWINDOW`, a version byte, the series count, then per series its
//! measurement, tags, field names, forgotten rows of the first chunk and chunks (first and
//! last time, rows, bytes), and a CRC-32 of everything before it. Strings and counts are
//! LEB128-prefixed. A file that fails any check is refused whole: a damaged window is never
//! half trusted. Version 1 (before the float coder of `chunk::floats`: its chunks hold
//! Gorilla-coded floats only) is read as well; a build before version 2 refuses a version-2
//! file by its version ([`SnapshotError::Version`]).

use std::collections::VecDeque;

use super::chunk::{CHUNK_ROWS, Open, Sealed, View, get_varint, put_varint};
use super::{Key, MemorySource, SeriesData, Store};

const MAGIC: &[u8] = b"WKWINDOW";
const VERSION: u8 = 2;
/// The versions this build reads.
const READS: [u8; 2] = [1, 2];

/// Why a snapshot was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a wk-alerter window snapshot")]
    NotSnapshot,
    #[error("snapshot version {0} is not supported (this build reads versions 1 and {VERSION})")]
    Version(u8),
    #[error("snapshot checksum mismatch (the file is damaged or truncated)")]
    Checksum,
    #[error("snapshot is malformed at byte {0}")]
    Malformed(usize),
}

impl MemorySource {
    /// The window as a snapshot file's bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        let store = self.read();
        let mut out = Vec::with_capacity(store.bytes / 2 + 64);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        put_varint(&mut out, store.order.len() as u64);
        for id in store.order.values() {
            let Some(s) = store.slots[*id as usize].as_ref() else {
                continue;
            };
            put_str(&mut out, &s.key.name);
            put_varint(&mut out, s.key.tags.len() as u64);
            for (k, v) in s.key.tags.iter() {
                put_str(&mut out, k);
                put_str(&mut out, v);
            }
            put_varint(&mut out, s.fields.len() as u64);
            for f in &s.fields {
                put_str(&mut out, f);
            }
            put_varint(&mut out, s.skip as u64);
            let open = (s.open.rows() > 0).then(|| s.open.seal());
            put_varint(
                &mut out,
                (s.sealed.len() + usize::from(open.is_some())) as u64,
            );
            for c in s.sealed.iter().chain(open.as_ref()) {
                out.extend_from_slice(&c.first.to_le_bytes());
                out.extend_from_slice(&c.last.to_le_bytes());
                out.push(c.rows);
                put_varint(&mut out, c.data.len() as u64);
                out.extend_from_slice(&c.data);
            }
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// A source holding a snapshot's window; every chunk is decoded and checked first.
    pub fn from_snapshot(bytes: &[u8]) -> Result<MemorySource, SnapshotError> {
        if bytes.len() < MAGIC.len() + 1 + 4 || !bytes.starts_with(MAGIC) {
            return Err(SnapshotError::NotSnapshot);
        }
        if !READS.contains(&bytes[MAGIC.len()]) {
            return Err(SnapshotError::Version(bytes[MAGIC.len()]));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err(SnapshotError::Checksum);
        }
        let mut r = Reader {
            d: body,
            p: MAGIC.len() + 1,
        };
        let mut store = Store::default();
        // Where each sealed chunk's bytes are in `body`.
        let mut places = Vec::new();
        let n = r.count()?;
        for _ in 0..n {
            let at = r.p;
            let name = r.str()?;
            let ntags = r.count()?;
            let mut tags = Vec::with_capacity(ntags);
            for _ in 0..ntags {
                let k = r.str()?;
                let v = r.str()?;
                tags.push((store.strings.get(k), store.strings.get(v)));
            }
            if name.is_empty()
                || tags
                    .iter()
                    .any(|(k, v): &(std::sync::Arc<str>, _)| k.is_empty() || v.is_empty())
                || tags.windows(2).any(|w| w[0].0 >= w[1].0)
            {
                return Err(SnapshotError::Malformed(at));
            }
            let key = Key {
                name: store.strings.get(name),
                tags: tags.into_boxed_slice(),
            };
            if store.index.contains_key(&key) {
                return Err(SnapshotError::Malformed(at));
            }
            let mut s = SeriesData::new(key.clone());
            let nfields = r.count()?;
            for _ in 0..nfields {
                let f = r.str()?;
                if s.fields.iter().any(|g| g.as_ref() == f) || f.is_empty() {
                    return Err(SnapshotError::Malformed(r.p));
                }
                s.field_index(f, usize::MAX, &mut store.strings)
                    .ok_or(SnapshotError::Malformed(r.p))?;
            }
            s.skip = r.count()?;
            let nchunks = r.count()?;
            let mut chunks = VecDeque::with_capacity(nchunks);
            for _ in 0..nchunks {
                let at = r.p;
                let first = r.i64()?;
                let last = r.i64()?;
                let rows = r.byte()?;
                let len = r.count()?;
                let data = r.take(len)?;
                let ok = usize::from(rows) <= CHUNK_ROWS
                    && View::of_sealed(first, last, rows, data)
                        .is_ok_and(|v| v.check(s.fields.len()).is_ok())
                    && chunks.back().is_none_or(|p: &Sealed| p.last < first);
                if !ok {
                    return Err(SnapshotError::Malformed(at));
                }
                // Its bytes are put in place once every series is read (below).
                chunks.push_back(Sealed {
                    first,
                    last,
                    rows,
                    data: bytes::Bytes::new(),
                });
                places.push(Place {
                    first,
                    slot: store.slots.len() as u32,
                    chunk: chunks.len() - 1,
                    start: r.p - len,
                    len,
                });
            }
            if chunks.is_empty() || s.skip >= usize::from(chunks[0].rows) {
                return Err(SnapshotError::Malformed(at));
            }
            s.points = chunks.iter().map(|c| usize::from(c.rows)).sum::<usize>() - s.skip;
            // The last chunk, unless full, is appended to again.
            if chunks
                .back()
                .is_some_and(|c| usize::from(c.rows) < CHUNK_ROWS)
            {
                let c = chunks.pop_back().expect("a last chunk");
                let p = places.pop().expect("its place");
                let open =
                    View::of_sealed(c.first, c.last, c.rows, &body[p.start..p.start + p.len])
                        .ok()
                        .and_then(|v| v.rows(0).ok())
                        .map(|rows| Open::from_rows(&rows));
                s.open = open.ok_or(SnapshotError::Malformed(at))?;
            }
            s.sealed = chunks;
            store.points += s.points;
            let id = store.slots.len() as u32;
            store.slots.push(Some(s));
            store.index.insert(key.clone(), id);
            store.order.insert(key, id);
        }
        if r.p != body.len() {
            return Err(SnapshotError::Malformed(r.p));
        }
        // The chunks go into the store's arena blocks oldest first, as they were sealed, so
        // that a block empties as a whole when the window drops the oldest (chunk::Arena).
        places.sort_by_key(|p| p.first);
        for p in places {
            let Some(s) = store.slots[p.slot as usize].as_mut() else {
                continue;
            };
            let c = &mut s.sealed[p.chunk];
            *c = Sealed::packed(
                c.first,
                c.last,
                c.rows,
                &body[p.start..p.start + p.len],
                &mut store.arena,
            );
        }
        for s in store.slots.iter_mut().flatten() {
            s.fixed += s.sealed.iter().map(Sealed::bytes).sum::<usize>();
            store.bytes += s.bytes();
        }
        Ok(MemorySource {
            store: std::sync::RwLock::new(store),
            dropped: Default::default(),
        })
    }
}

/// Where a sealed chunk read from a snapshot is, and where it goes.
struct Place {
    first: i64,
    slot: u32,
    chunk: usize,
    start: usize,
    len: usize,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    d: &'a [u8],
    p: usize,
}

impl<'a> Reader<'a> {
    fn bad(&self) -> SnapshotError {
        SnapshotError::Malformed(self.p)
    }

    /// A count or length, never more than the bytes left (so nothing huge is allocated).
    fn count(&mut self) -> Result<usize, SnapshotError> {
        let v = get_varint(self.d, &mut self.p).map_err(|_| self.bad())?;
        match usize::try_from(v) {
            Ok(n) if n <= self.d.len() - self.p.min(self.d.len()) => Ok(n),
            _ => Err(self.bad()),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        let b = self.d.get(self.p..self.p + n).ok_or_else(|| self.bad())?;
        self.p += n;
        Ok(b)
    }

    fn byte(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.take(1)?[0])
    }

    fn i64(&mut self) -> Result<i64, SnapshotError> {
        let b: [u8; 8] = self.take(8)?.try_into().map_err(|_| self.bad())?;
        Ok(i64::from_le_bytes(b))
    }

    fn str(&mut self) -> Result<&'a str, SnapshotError> {
        let n = self.count()?;
        let at = self.p;
        std::str::from_utf8(self.take(n)?).map_err(|_| SnapshotError::Malformed(at))
    }
}
