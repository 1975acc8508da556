//! Points held in memory, queried natively with the semantics of the InfluxQL translation
//! (`crate::query`). Used by `wk-alerter test RULE --data FILE.lp` and stream mode (`crate::stream`).
//!
//! Storage mirrors InfluxDB's: a series is (measurement, tag set); a point is (series, time);
//! writing the same point again merges its fields, the newer value winning (InfluxDB keeps the
//! last write per timestamp too).
//!
//! Each series keeps its points compressed ([`chunk`]): chunks of up to 120 rows, a column per
//! field (delta-of-delta times and integers, Gorilla XOR floats), the newest chunk appended in
//! place. Strings of series keys and field names are interned. A point later than the series'
//! last one is appended; an older or equal one (out of order, or more fields for the last
//! time) rewrites the one chunk it falls in. Forgetting old points drops whole chunks; the
//! rows before the cut in the first chunk are skipped until their chunk goes.
//!
//! The bytes held are accounted (the buffers' sizes plus fixed costs per series, field and
//! chunk, calibrated on `benches/stream_memory.rs`), so that the stream window can be bounded
//! by memory and not only by points.

pub mod chunk;
pub mod snapshot;

use std::borrow::Borrow;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use wk_core::lineproto::PointRef;
use wk_core::metric::{FieldValue, Metric};

use super::{QuerySource, Row, Series, SourceError, number};
use crate::model::Value;
use crate::query::{Aggregate, Query};
use chunk::{Arena, Open, Sealed, View};
use wk_core::lineproto::{self, LineProtocolError};

/// An in-memory point store answering rule queries.
#[derive(Debug, Default)]
pub struct MemorySource {
    store: RwLock<Store>,
    /// Points dropped by [`MemorySource::enforce_bounds`] since the start.
    dropped: AtomicU64,
}

/// A series key: measurement and tags sorted by key, the strings interned.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    name: Arc<str>,
    tags: Box<[(Arc<str>, Arc<str>)]>,
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        hash_key(
            &self.name,
            self.tags.iter().map(|(k, v)| (k.as_ref(), v.as_ref())),
            h,
        );
    }
}

fn hash_key<'a, H: Hasher>(name: &str, tags: impl Iterator<Item = (&'a str, &'a str)>, h: &mut H) {
    name.hash(h);
    for (k, v) in tags {
        k.hash(h);
        v.hash(h);
    }
}

/// A series key as a parsed point carries it (looked up without building a [`Key`]).
struct KeyRef<'a, K, V> {
    name: &'a str,
    tags: &'a [(K, V)],
}

impl<K: AsRef<str>, V: AsRef<str>> Hash for KeyRef<'_, K, V> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        hash_key(
            self.name,
            self.tags.iter().map(|(k, v)| (k.as_ref(), v.as_ref())),
            h,
        );
    }
}

impl<K: AsRef<str>, V: AsRef<str>> hashbrown::Equivalent<Key> for KeyRef<'_, K, V> {
    fn equivalent(&self, k: &Key) -> bool {
        self.name == k.name.as_ref()
            && self.tags.len() == k.tags.len()
            && self
                .tags
                .iter()
                .zip(k.tags.iter())
                .all(|((a, b), (c, d))| a.as_ref() == c.as_ref() && b.as_ref() == d.as_ref())
    }
}

/// Interned strings: one copy of each measurement, tag key, tag value and field name.
#[derive(Debug, Default)]
struct Interner(HashSet<Arc<str>>);

impl Interner {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return a.clone();
        }
        let a: Arc<str> = s.into();
        self.0.insert(a.clone());
        a
    }

    /// Forgets `a` when the caller's copy is the last one in use.
    fn release(&mut self, a: &Arc<str>) {
        if Arc::strong_count(a) <= 2 {
            self.0.remove(a.as_ref());
        }
    }
}

#[derive(Debug, Default)]
struct Store {
    /// Series by key, for writes (hash) and for queries (in key order, as results are).
    index: hashbrown::HashMap<Key, u32>,
    order: BTreeMap<Key, u32>,
    slots: Vec<Option<SeriesData>>,
    free: Vec<u32>,
    strings: Interner,
    /// Series by their key as a line writes it (see [`Store::line_series`]): the hash of those
    /// bytes and the series. Only series whose key reads back as itself are here.
    lines: hashbrown::HashTable<(u64, u32)>,
    hasher: hashbrown::DefaultHashBuilder,
    /// Where sealed chunks live.
    arena: Arena,
    /// Points held (kept in step with the series).
    points: usize,
    /// Estimated bytes held (kept in step with the series).
    bytes: usize,
}

/// What a series costs besides its chunks and strings (three map entries, the slot, the key).
const SERIES_COST: usize = 176;
/// What a tag, and a field name, cost besides their strings.
const TAG_COST: usize = 32;
const FIELD_COST: usize = 16;

/// One series' points: sealed chunks oldest first, then the open chunk.
#[derive(Debug)]
struct SeriesData {
    key: Key,
    /// Field names; columns refer to them by index.
    fields: Vec<Arc<str>>,
    /// Bit i set: `fields[i]` is written in a line as it is (no escapes), so the stream
    /// receiver can match it in place ([`Writer::expected_field`]).
    plain_fields: u64,
    sealed: VecDeque<Sealed>,
    open: Open,
    /// Rows forgotten at the start of the first chunk (`sealed[0]`, else `open`); always
    /// fewer than its rows.
    skip: usize,
    /// Rows held (live).
    points: usize,
    /// Bytes of the key, the field names and the sealed chunks.
    fixed: usize,
    /// Where the series stands in [`Store::lines`].
    line: LineKey,
}

/// Whether a series can be found by the bytes of a line's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineKey {
    /// Not looked at yet.
    Unknown,
    /// In [`Store::lines`].
    Indexed,
    /// Its key needs escapes (or is not one a line can give): never found that way.
    Never,
}

impl SeriesData {
    fn new(key: Key) -> SeriesData {
        let fixed = SERIES_COST
            + key.name.len()
            + key
                .tags
                .iter()
                .map(|(k, v)| TAG_COST + k.len() + v.len())
                .sum::<usize>();
        SeriesData {
            key,
            fields: Vec::new(),
            plain_fields: 0,
            sealed: VecDeque::new(),
            open: Open::default(),
            skip: 0,
            points: 0,
            fixed,
            line: LineKey::Unknown,
        }
    }

    fn bytes(&self) -> usize {
        self.fixed + self.open.bytes()
    }

    /// The index of a field name (added when new); `hint` is where it usually is (fields
    /// come in the same order point after point).
    fn field_index(&mut self, name: &str, hint: usize, strings: &mut Interner) -> Option<u16> {
        if self.fields.get(hint).is_some_and(|f| f.as_ref() == name) {
            return u16::try_from(hint).ok();
        }
        if let Some(i) = self.fields.iter().position(|f| f.as_ref() == name) {
            return u16::try_from(i).ok();
        }
        let i = u16::try_from(self.fields.len()).ok()?;
        self.fixed += FIELD_COST + name.len();
        self.fields.push(strings.get(name));
        if i < 64 && !name.is_empty() && !name.bytes().any(|c| matches!(c, b' ' | b'=' | b'\\')) {
            self.plain_fields |= 1 << i;
        }
        Some(i)
    }

    /// The index of a known field name (`hint` as in [`SeriesData::field_index`]).
    fn known_field(&self, name: &str, hint: usize) -> Option<u16> {
        if self.fields.get(hint).is_some_and(|f| f.as_ref() == name) {
            return u16::try_from(hint).ok();
        }
        let i = self.fields.iter().position(|f| f.as_ref() == name)?;
        u16::try_from(i).ok()
    }

    /// Writes one row: appended when later than the last, else merged.
    fn put<V: Borrow<FieldValue>>(&mut self, time: i64, fields: &[(u16, V)], arena: &mut Arena) {
        match self.last_time() {
            Some(last) if time <= last => self.merge(time, fields),
            _ => self.append(time, fields, arena),
        }
    }

    fn last_time(&self) -> Option<i64> {
        if self.open.rows() > 0 {
            Some(self.open.span().1)
        } else {
            self.sealed.back().map(|c| c.last)
        }
    }

    /// The chunks, oldest first (the open one only when it holds rows).
    fn chunks(&self) -> impl Iterator<Item = Result<View<'_>, chunk::Corrupt>> {
        self.sealed
            .iter()
            .map(|c| c.view())
            .chain((self.open.rows() > 0).then(|| Ok(self.open.view())))
    }

    fn first_rows(&self) -> usize {
        self.sealed
            .front()
            .map_or(self.open.rows(), |c| usize::from(c.rows))
    }

    /// The first chunk's bytes, without spare capacity (shared among its rows when some are
    /// dropped for the byte bound).
    fn first_bytes(&self) -> usize {
        self.sealed
            .front()
            .map_or(self.open.used_bytes(), Sealed::bytes)
    }

    fn first_view(&self) -> Option<View<'_>> {
        match self.sealed.front() {
            Some(c) => c.view().ok(),
            None => (self.open.rows() > 0).then(|| self.open.view()),
        }
    }

    /// Forgets the first chunk.
    fn drop_first(&mut self) {
        match self.sealed.pop_front() {
            Some(c) => self.fixed -= c.bytes(),
            None => self.open = Open::default(),
        }
        self.skip = 0;
    }

    /// Appends a row later than every row held.
    fn append<V: Borrow<FieldValue>>(&mut self, t: i64, fields: &[(u16, V)], arena: &mut Arena) {
        self.open.append(t, fields);
        self.points += 1;
        if self.open.is_full() {
            let sealed = self.open.seal_and_clear(arena);
            self.fixed += sealed.bytes();
            // Grown by an eighth, not doubled: a window of long series would otherwise hold
            // up to as many empty slots as chunks (56 bytes each).
            if self.sealed.len() == self.sealed.capacity() {
                self.sealed.reserve_exact(self.sealed.len() / 8 + 4);
            }
            self.sealed.push_back(sealed);
        }
    }

    /// Writes a row at or before the last time: rewrites the chunk it falls in.
    fn merge<V: Borrow<FieldValue>>(&mut self, t: i64, fields: &[(u16, V)]) {
        let n = self.sealed.len();
        let chunks = n + usize::from(self.open.rows() > 0);
        // The last chunk starting at or before t; the first when t is older than all.
        let target = (0..chunks)
            .rev()
            .find(|&i| {
                let first = if i < n {
                    self.sealed[i].first
                } else {
                    self.open.span().0
                };
                first <= t
            })
            .unwrap_or(0);
        let view = if target < n {
            self.sealed[target].view()
        } else {
            Ok(self.open.view())
        };
        let skip = if target == 0 { self.skip } else { 0 };
        // Chunks built here decode; a damaged one (only a snapshot could hold it, and those
        // are checked at load) loses its rows rather than the write.
        let mut rows = view.and_then(|v| v.rows(skip)).unwrap_or_default();
        match rows.binary_search_by_key(&t, |r| r.0) {
            Ok(i) => {
                for (f, v) in fields {
                    match rows[i].1.iter_mut().find(|(k, _)| k == f) {
                        Some(slot) => slot.1 = v.borrow().clone(),
                        None => rows[i].1.push((*f, v.borrow().clone())),
                    }
                }
            }
            Err(i) => rows.insert(
                i,
                (
                    t,
                    fields
                        .iter()
                        .map(|(f, v)| (*f, v.borrow().clone()))
                        .collect(),
                ),
            ),
        }
        let lost = if target < n {
            usize::from(self.sealed[target].rows) - skip
        } else {
            self.open.rows() - skip
        };
        self.points = self.points + rows.len() - lost;
        if target == 0 {
            self.skip = 0;
        }
        if target < n {
            let old = self.sealed.remove(target).map_or(0, |c| c.bytes());
            self.fixed -= old;
            for (k, c) in chunk::seal_rows(&rows).into_iter().enumerate() {
                self.fixed += c.bytes();
                self.sealed.insert(target + k, c);
            }
        } else {
            // At most one row more than a chunk: seal what fills chunks, keep the rest open.
            let whole = rows.len() / chunk::CHUNK_ROWS * chunk::CHUNK_ROWS;
            for c in chunk::seal_rows(&rows[..whole]) {
                self.fixed += c.bytes();
                self.sealed.push_back(c);
            }
            self.open = Open::from_rows(&rows[whole..]);
        }
    }

    /// Rebuilds the first chunk without its forgotten rows (gives their bytes back).
    fn compact_first(&mut self) {
        if self.skip == 0 {
            return;
        }
        let Some(rows) = self.first_view().and_then(|v| v.rows(self.skip).ok()) else {
            return;
        };
        match self.sealed.front_mut() {
            Some(c) => {
                self.fixed -= c.bytes();
                *c = Open::from_rows(&rows).seal();
                self.fixed += c.bytes();
            }
            None => self.open = Open::from_rows(&rows),
        }
        self.skip = 0;
    }
}

/// Points and estimated bytes held after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub points: usize,
    pub bytes: usize,
}

/// What a point's fields are looked up with: a value nobody reads fills the unused slots.
static NO_VALUE: FieldValue = FieldValue::Bool(false);
/// Fields of one point handled without allocating (more go through a vector).
const FIELDS_INLINE: usize = 32;

/// One row's fields by index, each once (a field given twice in a line: the last value
/// wins); no allocation up to [`FIELDS_INLINE`] fields.
struct RowFields<'v> {
    inline: [(u16, &'v FieldValue); FIELDS_INLINE],
    n: usize,
    spill: Vec<(u16, &'v FieldValue)>,
}

impl<'v> RowFields<'v> {
    fn new() -> RowFields<'v> {
        RowFields {
            inline: [(0, &NO_VALUE); FIELDS_INLINE],
            n: 0,
            spill: Vec::new(),
        }
    }

    fn put(&mut self, i: u16, v: &'v FieldValue) {
        let spilled = !self.spill.is_empty();
        let held = if spilled {
            &mut self.spill[..]
        } else {
            &mut self.inline[..self.n]
        };
        if let Some(slot) = held.iter_mut().find(|(f, _)| *f == i) {
            slot.1 = v;
        } else if !spilled && self.n < FIELDS_INLINE {
            self.inline[self.n] = (i, v);
            self.n += 1;
        } else {
            if !spilled {
                self.spill.extend_from_slice(&self.inline[..self.n]);
            }
            self.spill.push((i, v));
        }
    }

    fn get(&self) -> &[(u16, &'v FieldValue)] {
        if self.spill.is_empty() {
            &self.inline[..self.n]
        } else {
            &self.spill
        }
    }
}

/// A key as a line writes it when none of its strings needs an escape (`None` otherwise):
/// the measurement, then `,key=value` per tag in order. The parser reads these bytes back as
/// this key.
fn plain_key(key: &Key) -> Option<Vec<u8>> {
    let plain = |s: &str, tag_key: bool| {
        !s.is_empty()
            && !s
                .bytes()
                .any(|c| matches!(c, b',' | b' ' | b'\\') || (tag_key && c == b'='))
    };
    if !plain(&key.name, false)
        || !key
            .tags
            .iter()
            .all(|(k, v)| plain(k, true) && plain(v, false))
    {
        return None;
    }
    let mut out = key.name.as_bytes().to_vec();
    for (k, v) in key.tags.iter() {
        out.push(b',');
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_bytes());
    }
    Some(out)
}

/// True when `raw` is [`plain_key`] of `key` (without building it).
fn plain_eq(key: &Key, raw: &[u8]) -> bool {
    let Some(mut rest) = raw.strip_prefix(key.name.as_bytes()) else {
        return false;
    };
    for (k, v) in key.tags.iter() {
        let tag = rest
            .strip_prefix(b",")
            .and_then(|r| r.strip_prefix(k.as_bytes()))
            .and_then(|r| r.strip_prefix(b"="))
            .and_then(|r| r.strip_prefix(v.as_bytes()));
        match tag {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest.is_empty()
}

impl Store {
    /// The series of a key (tags sorted by key, each once), made when new.
    fn series_id<K: AsRef<str>, V: AsRef<str>>(&mut self, name: &str, tags: &[(K, V)]) -> u32 {
        if let Some(id) = self.index.get(&KeyRef { name, tags }) {
            return *id;
        }
        let key = Key {
            name: self.strings.get(name),
            tags: tags
                .iter()
                .map(|(k, v)| (self.strings.get(k.as_ref()), self.strings.get(v.as_ref())))
                .collect(),
        };
        let s = SeriesData::new(key.clone());
        self.bytes += s.bytes();
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some(s);
                id
            }
            None => {
                self.slots.push(Some(s));
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(key.clone(), id);
        self.order.insert(key, id);
        id
    }

    /// Writes one point: the series' key (tags sorted by key, each once), fields, time.
    fn push<'f, K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        name: &str,
        tags: &[(K, V)],
        fields: impl Iterator<Item = (&'f str, &'f FieldValue)>,
        time: i64,
    ) {
        let id = self.series_id(name, tags);
        self.index_line(id);
        let Some(s) = self.slots[id as usize].as_mut() else {
            return;
        };
        let mut row = RowFields::new();
        let fixed = s.fixed;
        for (pos, (k, v)) in fields.enumerate() {
            // More than 65,535 field names in one series: the rest are not kept.
            if let Some(i) = s.field_index(k, pos, &mut self.strings) {
                row.put(i, v);
            }
        }
        // New field names cost their bytes.
        self.bytes += s.fixed - fixed;
        self.put_row(id, row.get(), time);
    }

    /// Writes one row of a series, its fields by index.
    fn put_row<V: Borrow<FieldValue>>(&mut self, id: u32, fields: &[(u16, V)], time: i64) {
        let Some(s) = self.slots[id as usize].as_mut() else {
            return;
        };
        let before = (s.points, s.bytes());
        s.put(time, fields, &mut self.arena);
        self.points = self.points + s.points - before.0;
        self.bytes = self.bytes + s.bytes() - before.1;
    }

    /// The series a line names with these key bytes (what comes before
    /// [`lineproto::series_key_end`]), when the series is in [`Store::lines`].
    fn line_series(&self, raw: &[u8]) -> Option<u32> {
        let hash = self.hasher.hash_one(raw);
        let slots = &self.slots;
        self.lines
            .find(hash, |&(h, id)| {
                h == hash
                    && slots[id as usize]
                        .as_ref()
                        .is_some_and(|s| plain_eq(&s.key, raw))
            })
            .map(|&(_, id)| id)
    }

    /// Puts a series in [`Store::lines`] when its key can be written without escapes.
    fn index_line(&mut self, id: u32) {
        let Some(s) = self.slots[id as usize].as_mut() else {
            return;
        };
        if s.line != LineKey::Unknown {
            return;
        }
        let Some(raw) = plain_key(&s.key) else {
            s.line = LineKey::Never;
            return;
        };
        s.line = LineKey::Indexed;
        let hash = self.hasher.hash_one(&raw[..]);
        self.lines.insert_unique(hash, (hash, id), |&(h, _)| h);
    }

    /// Forgets a series (and the strings only it used).
    fn remove(&mut self, id: u32) {
        let Some(s) = self.slots[id as usize].take() else {
            return;
        };
        self.points -= s.points;
        self.bytes -= s.bytes();
        self.index.remove(&s.key);
        self.order.remove(&s.key);
        if s.line == LineKey::Indexed
            && let Some(raw) = plain_key(&s.key)
            && let Ok(e) = self
                .lines
                .find_entry(self.hasher.hash_one(&raw[..]), |&(_, i)| i == id)
        {
            e.remove();
        }
        self.free.push(id);
        let SeriesData { key, fields, .. } = s;
        self.strings.release(&key.name);
        for (k, v) in key.tags.iter() {
            self.strings.release(k);
            self.strings.release(v);
        }
        for f in &fields {
            self.strings.release(f);
        }
    }

    fn ids(&self) -> Vec<u32> {
        (0..self.slots.len() as u32)
            .filter(|&i| self.slots[i as usize].is_some())
            .collect()
    }

    fn prune_before(&mut self, time: i64) -> usize {
        let before = self.points;
        for id in self.ids() {
            let Some(s) = self.slots[id as usize].as_mut() else {
                continue;
            };
            let old = (s.points, s.bytes());
            loop {
                let last = match s.sealed.front() {
                    Some(c) => c.last,
                    None if s.open.rows() > 0 => s.open.span().1,
                    None => break,
                };
                if last >= time {
                    break;
                }
                s.points -= s.first_rows() - s.skip;
                s.drop_first();
            }
            if let Some(v) = s.first_view()
                && v.first < time
            {
                let k = v.times().map_or(0, |ts| ts.partition_point(|t| *t < time));
                if k > s.skip {
                    s.points -= k - s.skip;
                    s.skip = k;
                }
            }
            self.points = self.points + s.points - old.0;
            self.bytes = self.bytes + s.bytes() - old.1;
            if s.points == 0 {
                self.remove(id);
            }
        }
        before - self.points
    }

    fn enforce_bounds(&mut self, max_points: usize, max_bytes: usize) -> usize {
        let mut dropped = 0;
        while self.points > max_points || self.bytes > max_bytes {
            if self.bytes > max_bytes {
                // The open chunks' spare capacity first: it is not the points' to pay for.
                for s in self.slots.iter_mut().flatten() {
                    let old = s.bytes();
                    s.open.shrink();
                    self.bytes = self.bytes + s.bytes() - old;
                }
                if self.points <= max_points && self.bytes <= max_bytes {
                    break;
                }
            }
            // Min-heap of (oldest time, series), with each series' first chunk's times.
            // Ties go to the series first in key order.
            let ranked: Vec<u32> = self.order.values().copied().collect();
            let mut times: HashMap<u32, (Vec<i64>, usize)> = HashMap::new();
            let mut heap = BinaryHeap::new();
            for (rank, &id) in ranked.iter().enumerate() {
                let Some(s) = self.slots[id as usize].as_ref() else {
                    continue;
                };
                let ts = s
                    .first_view()
                    .and_then(|v| v.times().ok())
                    .unwrap_or_default();
                if let Some(t) = ts.get(s.skip) {
                    heap.push(Reverse((*t, rank)));
                }
                times.insert(id, (ts, 0));
            }
            // Bytes of forgotten rows whose chunk is still held (an estimate: the chunk's
            // bytes shared among its rows), given back by the compaction below.
            let mut pending = 0usize;
            let mut touched = Vec::new();
            let progress = dropped;
            while self.points > max_points || self.bytes.saturating_sub(pending) > max_bytes {
                let Some(Reverse((_, rank))) = heap.pop() else {
                    break;
                };
                let id = ranked[rank];
                let Some(s) = self.slots[id as usize].as_mut() else {
                    continue;
                };
                let Some((ts, shares)) = times.get_mut(&id) else {
                    continue;
                };
                let old = s.bytes();
                let share = s.first_bytes() / s.first_rows().max(1);
                s.skip += 1;
                s.points -= 1;
                self.points -= 1;
                dropped += 1;
                if s.skip >= s.first_rows() {
                    s.drop_first();
                    pending = pending.saturating_sub(*shares);
                    *shares = 0;
                    *ts = s
                        .first_view()
                        .and_then(|v| v.times().ok())
                        .unwrap_or_default();
                } else {
                    pending += share;
                    *shares += share;
                    touched.push(id);
                }
                self.bytes = self.bytes + s.bytes() - old;
                if s.points == 0 {
                    self.remove(id);
                    continue;
                }
                if let Some(t) = ts.get(s.skip) {
                    heap.push(Reverse((*t, rank)));
                }
            }
            if dropped == progress || self.bytes <= max_bytes {
                break;
            }
            touched.sort_unstable();
            touched.dedup();
            for id in touched {
                if let Some(s) = self.slots[id as usize].as_mut() {
                    let old = s.bytes();
                    s.compact_first();
                    self.bytes = self.bytes + s.bytes() - old;
                }
            }
        }
        dropped
    }
}

impl MemorySource {
    /// An empty source.
    pub fn new() -> MemorySource {
        MemorySource::default()
    }

    /// A source holding these points.
    pub fn from_metrics<'a>(metrics: impl IntoIterator<Item = &'a Metric>) -> MemorySource {
        let s = MemorySource::new();
        for m in metrics {
            s.push(m);
        }
        s
    }

    /// A source holding the points of a line protocol document (points without a timestamp
    /// get `default_time`).
    pub fn from_line_protocol(
        text: &str,
        default_time: i64,
    ) -> Result<MemorySource, LineProtocolError> {
        Ok(MemorySource::from_metrics(&lineproto::parse(
            text,
            default_time,
        )?))
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Store> {
        self.store.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds (or merges) one point; returns what is held afterwards.
    pub fn push(&self, m: &Metric) -> Held {
        self.writer().push_metric(m)
    }

    /// Writes under one lock, until the [`Writer`] is dropped (queries wait meanwhile).
    pub fn writer(&self) -> Writer<'_> {
        Writer {
            store: self.write(),
            dropped: &self.dropped,
        }
    }

    /// Forgets points older than `time` (ns), and series left empty (the stream window).
    /// Returns how many points were forgotten.
    pub fn prune_before(&self, time: i64) -> usize {
        self.write().prune_before(time)
    }

    /// [`MemorySource::enforce_bounds`] on the point count only.
    pub fn enforce_max_points(&self, max: usize) -> usize {
        self.enforce_bounds(max, usize::MAX)
    }

    /// Drops the oldest points (across all series; at equal times in series order) until at
    /// most `max_points` and `max_bytes` are held, and counts them in
    /// [`MemorySource::dropped`]. Returns how many were dropped now. Cost: O(series × chunk
    /// + dropped × log series), nothing when within bounds.
    pub fn enforce_bounds(&self, max_points: usize, max_bytes: usize) -> usize {
        self.writer().enforce_bounds(max_points, max_bytes)
    }

    /// Estimated bytes held (see the module comment).
    pub fn bytes(&self) -> usize {
        self.read().bytes
    }

    /// Points dropped by [`MemorySource::enforce_bounds`] since the source was made.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// How many series are held.
    pub fn series_count(&self) -> usize {
        self.read().index.len()
    }

    /// How many points are held.
    pub fn len(&self) -> usize {
        self.read().points
    }

    /// True when no point is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The latest point time held, if any (a natural "now" for recorded data).
    pub fn latest_time(&self) -> Option<i64> {
        let store = self.read();
        store
            .slots
            .iter()
            .flatten()
            .filter_map(SeriesData::last_time)
            .max()
    }
}

/// A point as tests list them: measurement, tags, time, fields sorted by name.
#[cfg(test)]
pub(crate) type Dumped = (
    String,
    Vec<(String, String)>,
    i64,
    Vec<(String, FieldValue)>,
);

/// A series found by [`Writer::line_series`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineSeries(u32);

/// The source held for writing (see [`MemorySource::writer`]).
pub struct Writer<'a> {
    store: std::sync::RwLockWriteGuard<'a, Store>,
    dropped: &'a AtomicU64,
}

impl Writer<'_> {
    /// Adds (or merges) one point.
    pub fn push_metric(&mut self, m: &Metric) -> Held {
        let fields = m.fields.iter().map(|(k, v)| (k.as_ref(), v));
        self.store.push(&m.name, m.tags(), fields, m.time);
        self.held()
    }

    /// Adds (or merges) one parsed line at `time`.
    pub fn push(&mut self, p: &PointRef<'_>, time: i64) -> Held {
        let fields = p.fields.iter().map(|(k, v)| (k.as_ref(), v));
        self.store.push(&p.name, &p.tags, fields, time);
        self.held()
    }

    /// The series a line names with the key bytes `key` (the line up to
    /// [`lineproto::series_key_end`]), when it is held and its key needs no escapes: that
    /// line's point can then be written with [`Writer::push_known`] without parsing its key.
    /// Valid until the next write that is not one of these.
    pub fn line_series(&self, key: &str) -> Option<LineSeries> {
        self.store.line_series(key.as_bytes()).map(LineSeries)
    }

    /// The index of a field `series` already has (`hint`: where it usually is, the field's
    /// place in the line); `None` for a new field.
    pub fn known_field(&self, series: LineSeries, name: &str, hint: usize) -> Option<u16> {
        self.store.slots[series.0 as usize]
            .as_ref()?
            .known_field(name, hint)
    }

    /// The name of the `i`-th field of `series` when a line writes it as it is (see
    /// [`lineproto::parse_fields_expecting`]): a line's `i`-th field is most often that one.
    pub fn expected_field(&self, series: LineSeries, i: usize) -> Option<&str> {
        let s = self.store.slots[series.0 as usize].as_ref()?;
        if i >= 64 || s.plain_fields & (1 << i) == 0 {
            return None;
        }
        s.fields.get(i).map(|f| f.as_ref())
    }

    /// The name of field `i` of `series`.
    pub fn field_name(&self, series: LineSeries, i: u16) -> Option<&str> {
        let s = self.store.slots[series.0 as usize].as_ref()?;
        s.fields.get(usize::from(i)).map(|f| f.as_ref())
    }

    /// Adds (or merges) one point of `series` at `time`, its fields by index
    /// ([`Writer::known_field`]).
    pub fn push_known(
        &mut self,
        series: LineSeries,
        fields: &[(u16, FieldValue)],
        time: i64,
    ) -> Held {
        // Fields found where the series' last line had them are each there once.
        if fields
            .iter()
            .enumerate()
            .all(|(p, (i, _))| usize::from(*i) == p)
        {
            self.store.put_row(series.0, fields, time);
        } else {
            let mut row = RowFields::new();
            for (i, v) in fields {
                row.put(*i, v);
            }
            self.store.put_row(series.0, row.get(), time);
        }
        self.held()
    }

    /// What is held now.
    pub fn held(&self) -> Held {
        Held {
            points: self.store.points,
            bytes: self.store.bytes,
        }
    }

    /// [`MemorySource::prune_before`].
    pub fn prune_before(&mut self, time: i64) -> usize {
        self.store.prune_before(time)
    }

    /// [`MemorySource::enforce_bounds`].
    pub fn enforce_bounds(&mut self, max_points: usize, max_bytes: usize) -> usize {
        let dropped = self.store.enforce_bounds(max_points, max_bytes);
        self.dropped.fetch_add(dropped as u64, Ordering::Relaxed);
        dropped
    }
}

#[cfg(test)]
impl MemorySource {
    /// Every point held: (measurement, tags, time, fields sorted by name), in series order.
    pub(crate) fn dump(&self) -> Vec<Dumped> {
        let store = self.read();
        let mut out = Vec::new();
        for id in store.order.values() {
            let s = store.slots[*id as usize].as_ref().unwrap();
            for (c, v) in s.chunks().enumerate() {
                let skip = if c == 0 { s.skip } else { 0 };
                for (t, fields) in v.unwrap().rows(skip).unwrap() {
                    let mut f: Vec<(String, FieldValue)> = fields
                        .into_iter()
                        .map(|(i, v)| (s.fields[usize::from(i)].to_string(), v))
                        .collect();
                    f.sort_by(|a, b| a.0.cmp(&b.0));
                    let tags = s
                        .key
                        .tags
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()));
                    out.push((s.key.name.to_string(), tags.collect(), t, f));
                }
            }
        }
        out
    }
}

fn corrupt(_: chunk::Corrupt) -> SourceError {
    SourceError::Query("stream window: a chunk does not decode".into())
}

impl QuerySource for MemorySource {
    fn query(&self, q: &Query, now_ns: i64) -> Result<Vec<Series>, SourceError> {
        let field = q.validate().map_err(|e| SourceError::Query(e.0))?;
        let (start, end) = q.window(now_ns);
        let mut groups: BTreeMap<Vec<String>, Vec<(i64, FieldValue)>> = BTreeMap::new();
        {
            let store = self.read();
            let from = Key {
                name: q.measurement.as_str().into(),
                tags: Box::new([]),
            };
            for (key, id) in store.order.range(from..) {
                if *key.name != *q.measurement {
                    break;
                }
                let tag = |k: &str| {
                    key.tags
                        .iter()
                        .find(|(tk, _)| tk.as_ref() == k)
                        .map_or("", |(_, v)| v.as_ref())
                };
                if !q.filters.iter().all(|f| f.matches(tag(&f.tag)))
                    || !q.matches.iter().all(|m| m.matches(tag(m.tag())))
                {
                    continue;
                }
                let Some(s) = store.slots[*id as usize].as_ref() else {
                    continue;
                };
                let Some(fi) = s.fields.iter().position(|f| f.as_ref() == field) else {
                    continue;
                };
                let key: Vec<String> = q.group_by.iter().map(|t| tag(t).to_owned()).collect();
                let group = groups.entry(key).or_default();
                let from = group.len();
                for (c, view) in s.chunks().enumerate() {
                    let view = view.map_err(corrupt)?;
                    if view.last <= start || view.first > end {
                        continue;
                    }
                    let skip = if c == 0 { s.skip } else { 0 };
                    let times = view.times().map_err(corrupt)?;
                    let mut cols = 0;
                    for col in view.cols() {
                        if usize::from(col.field) != fi {
                            continue;
                        }
                        cols += 1;
                        for (r, v) in col.decode(view.rows).map_err(corrupt)? {
                            let t = times[usize::from(r)];
                            if usize::from(r) >= skip && t > start && t <= end {
                                group.push((t, v));
                            }
                        }
                    }
                    if cols > 1 {
                        // The field changed type within the chunk: rows back in time order.
                        group[from..].sort_by_key(|(t, _)| *t);
                    }
                }
            }
        }
        let mut out = Vec::new();
        for (key, mut points) in groups {
            if points.is_empty() {
                continue;
            }
            // Stable: points of one time keep series order.
            points.sort_by_key(|(t, _)| *t);
            let rows = reduce(&q.aggregate, field, &points, end)?;
            if rows.is_empty() {
                continue;
            }
            out.push(Series::of_group(q, key, rows));
        }
        out.sort_by(|a, b| a.tags.cmp(&b.tags));
        Ok(out)
    }

    fn influxql(&self, _text: &str, _now_ns: i64) -> Result<Vec<Series>, SourceError> {
        Err(SourceError::Unsupported(
            "influxql() needs an InfluxDB source (this rule runs over recorded or streamed points)"
                .into(),
        ))
    }
}

/// A stored field value as a query result value: an integer field stays an integer (an
/// unsigned one above `i64::MAX` saturates, as Telegraf writes it to InfluxDB 1.x).
fn result_value(v: &FieldValue) -> Value {
    match v {
        FieldValue::Float(f) => Value::Float(*f),
        FieldValue::Int(i) => Value::Int(*i),
        FieldValue::Uint(u) => Value::Int(i64::try_from(*u).unwrap_or(i64::MAX)),
        FieldValue::Bool(b) => Value::Bool(*b),
        FieldValue::Str(s) => Value::Str(s.clone()),
    }
}

fn row(time: i64, v: Value) -> Row {
    Row {
        time,
        values: vec![Some(v)],
    }
}

/// Reduces one group's points (sorted by time) to result rows.
pub(super) fn reduce(
    agg: &Aggregate,
    field: &str,
    points: &[(i64, FieldValue)],
    end: i64,
) -> Result<Vec<Row>, SourceError> {
    let numeric = || -> Result<Vec<(i64, f64)>, SourceError> {
        points
            .iter()
            .map(|(t, v)| {
                number(&result_value(v)).map(|f| (*t, f)).ok_or_else(|| {
                    SourceError::Type(format!(
                        "{}() needs a numeric field; {field:?} holds {}",
                        agg.name(),
                        type_name(v)
                    ))
                })
            })
            .collect()
    };
    // Every point an integer: the selectors and sum keep the type (InfluxDB answers an
    // integer field's max, min, last, percentile and sum with integers).
    let ints = || -> Option<Vec<(i64, i64)>> {
        points
            .iter()
            .map(|(t, v)| match result_value(v) {
                Value::Int(i) => Some((*t, i)),
                _ => None,
            })
            .collect()
    };
    Ok(match agg {
        Aggregate::Raw => points
            .iter()
            .map(|(t, v)| row(*t, result_value(v)))
            .collect(),
        Aggregate::Last => {
            // The latest point; at equal times the greater value, as InfluxDB's last().
            let mut best: Option<&(i64, FieldValue)> = None;
            for p in points {
                let better = match best {
                    None => true,
                    Some(b) => p.0 > b.0 || (p.0 == b.0 && greater(&p.1, &b.1)),
                };
                if better {
                    best = Some(p);
                }
            }
            best.map(|(t, v)| row(*t, result_value(v)))
                .into_iter()
                .collect()
        }
        Aggregate::Count => vec![row(
            end,
            Value::Int(i64::try_from(points.len()).unwrap_or(i64::MAX)),
        )],
        Aggregate::Mean => {
            let p = numeric()?;
            let sum: f64 = p.iter().map(|(_, v)| v).sum();
            vec![row(end, Value::Float(sum / p.len() as f64))]
        }
        Aggregate::Sum => match ints() {
            // Wrapping on overflow, as InfluxDB's integer sum (Go's int64 addition).
            Some(p) => vec![row(
                end,
                Value::Int(p.iter().fold(0i64, |a, (_, v)| a.wrapping_add(*v))),
            )],
            None => {
                let p = numeric()?;
                vec![row(end, Value::Float(p.iter().map(|(_, v)| v).sum()))]
            }
        },
        Aggregate::Max | Aggregate::Min => {
            let want_max = *agg == Aggregate::Max;
            match ints() {
                Some(p) => select_extreme(&p, want_max)
                    .map(|(t, v)| row(t, Value::Int(v)))
                    .into_iter()
                    .collect(),
                None => select_extreme(&numeric()?, want_max)
                    .map(|(t, v)| row(t, Value::Float(v)))
                    .into_iter()
                    .collect(),
            }
        }
        Aggregate::Percentile(pct) => {
            let ints = ints();
            let floats = if ints.is_none() {
                numeric()?
            } else {
                Vec::new()
            };
            // InfluxDB's nearest rank: i = floor(n * p / 100 + 0.5) - 1, no point when outside.
            let n = points.len();
            let i = (n as f64 * pct / 100.0 + 0.5).floor() as i64 - 1;
            if i < 0 || i as usize >= n {
                return Ok(Vec::new());
            }
            let i = i as usize;
            match ints {
                Some(mut p) => {
                    p.sort_by_key(|(_, v)| *v);
                    let (t, v) = p[i];
                    vec![row(t, Value::Int(v))]
                }
                None => {
                    let mut p = floats;
                    p.sort_by(|a, b| a.1.total_cmp(&b.1));
                    let (t, v) = p[i];
                    vec![row(t, Value::Float(v))]
                }
            }
        }
        Aggregate::Derivative { unit, non_negative } => {
            let p = numeric()?;
            let unit_ns = unit.as_nanos() as f64;
            let mut rows = Vec::new();
            let mut prev: Option<(i64, f64)> = None;
            for &(t, v) in &p {
                match prev {
                    // A second point at the same time does not advance the stream: InfluxDB
                    // keeps the first one.
                    Some((pt, _)) if pt == t => continue,
                    Some((pt, pv)) => {
                        let diff = v - pv;
                        if !(*non_negative && diff < 0.0) {
                            rows.push(row(t, Value::Float(diff / ((t - pt) as f64 / unit_ns))));
                        }
                    }
                    None => {}
                }
                prev = Some((t, v));
            }
            rows
        }
    })
}

/// The point with the greatest (`want_max`) or least value; ties go to the earliest point,
/// as InfluxDB's max/min selectors.
fn select_extreme<T: PartialOrd + Copy>(points: &[(i64, T)], want_max: bool) -> Option<(i64, T)> {
    let mut best: Option<(i64, T)> = None;
    for &(t, v) in points {
        let better = match best {
            None => true,
            Some((_, b)) => (want_max && v > b) || (!want_max && v < b),
        };
        if better {
            best = Some((t, v));
        }
    }
    best
}

/// `a > b` for two values of one field (numbers by value, strings bytewise, false < true).
fn greater(a: &FieldValue, b: &FieldValue) -> bool {
    match (a, b) {
        (FieldValue::Int(x), FieldValue::Int(y)) => x > y,
        (FieldValue::Str(x), FieldValue::Str(y)) => x > y,
        (FieldValue::Bool(x), FieldValue::Bool(y)) => x > y,
        _ => match (number(&result_value(a)), number(&result_value(b))) {
            (Some(x), Some(y)) => x > y,
            _ => false,
        },
    }
}

fn type_name(v: &FieldValue) -> &'static str {
    match v {
        FieldValue::Float(_) => "a float",
        FieldValue::Int(_) => "an integer",
        FieldValue::Uint(_) => "an unsigned integer",
        FieldValue::Bool(_) => "a boolean",
        FieldValue::Str(_) => "a string",
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::query::TagFilter;

    const S: i64 = 1_000_000_000;
    const NOW: i64 = 1_700_000_000 * S;

    fn source() -> MemorySource {
        // Two hosts, cpu-total and cpu0, one point every 10 s for the last minute (t = -50..0 s)
        // and one old point (t = -70 s) outside the default 1m range.
        let mut text = String::new();
        for (i, secs) in [-70i64, -50, -40, -30, -20, -10, 0].iter().enumerate() {
            let t = NOW + secs * S;
            let i = i as f64;
            text += &format!("cpu,host=a,cpu=cpu-total idle={} {t}\n", 90.0 - i);
            text += &format!("cpu,host=b,cpu=cpu-total idle={} {t}\n", 50.0 + i * 2.0);
            text += &format!("cpu,host=a,cpu=cpu0 idle=1 {t}\n");
        }
        MemorySource::from_line_protocol(&text, 0).unwrap()
    }

    fn q(agg: Aggregate) -> Query {
        let mut q = Query::new("cpu");
        q.field = Some("idle".into());
        q.aggregate = agg;
        q.filters.push(TagFilter {
            tag: "cpu".into(),
            value: "cpu-total".into(),
            negate: false,
        });
        q.group_by = vec!["host".into()];
        q
    }

    fn values(agg: Aggregate) -> Vec<(String, Vec<(i64, f64)>)> {
        source()
            .query(&q(agg), NOW)
            .unwrap()
            .into_iter()
            .map(|s| {
                let rows = s
                    .rows
                    .iter()
                    .map(|r| {
                        let v = r.values[0].as_ref().and_then(number).unwrap();
                        ((r.time - NOW) / S, v)
                    })
                    .collect();
                (s.tags["host"].clone(), rows)
            })
            .collect()
    }

    #[test]
    fn each_aggregate() {
        // host a: 89 88 87 86 85 84 at -50..0; host b: 52 54 56 58 60 62.
        let a = |agg| values(agg)[0].1.clone();
        let b = |agg| values(agg)[1].1.clone();
        assert_eq!(a(Aggregate::Mean), vec![(0, 86.5)]);
        assert_eq!(b(Aggregate::Mean), vec![(0, 57.0)]);
        assert_eq!(a(Aggregate::Max), vec![(-50, 89.0)]);
        assert_eq!(a(Aggregate::Min), vec![(0, 84.0)]);
        assert_eq!(a(Aggregate::Last), vec![(0, 84.0)]);
        assert_eq!(a(Aggregate::Sum), vec![(0, 519.0)]);
        assert_eq!(a(Aggregate::Count), vec![(0, 6.0)]);
        // n = 6: p50 → floor(3.5) - 1 = 2 → third smallest (86 at -20 s).
        assert_eq!(a(Aggregate::Percentile(50.0)), vec![(-20, 86.0)]);
        assert_eq!(b(Aggregate::Percentile(100.0)), vec![(0, 62.0)]);
        // p1 of 6 points: floor(0.56) - 1 = -1 → no point, hence no series.
        assert!(values(Aggregate::Percentile(1.0)).is_empty());
        assert_eq!(a(Aggregate::Raw).len(), 6);
        assert_eq!(a(Aggregate::Raw)[0], (-50, 89.0));
    }

    #[test]
    fn derivative_and_counter_reset() {
        let text = "net,host=a bytes=100i 10000000000\n\
                    net,host=a bytes=300i 20000000000\n\
                    net,host=a bytes=50i 30000000000\n\
                    net,host=a bytes=250i 40000000000\n\
                    net,host=a bytes=999i 40000000000\n";
        let src = MemorySource::from_line_protocol(text, 0).unwrap();
        let mut q = Query::new("net");
        q.field = Some("bytes".into());
        q.range = Duration::from_secs(60);
        q.aggregate = Aggregate::Derivative {
            unit: Duration::from_secs(1),
            non_negative: false,
        };
        let now = 40 * S;
        let rates = |q: &Query| -> Vec<(i64, f64)> {
            src.query(q, now).unwrap()[0]
                .rows
                .iter()
                .map(|r| (r.time / S, r.values[0].as_ref().and_then(number).unwrap()))
                .collect()
        };
        // The same series and time written twice is one point: the later write (999) wins.
        assert_eq!(rates(&q), vec![(20, 20.0), (30, -25.0), (40, 94.9)]);
        q.aggregate = Aggregate::Derivative {
            unit: Duration::from_secs(10),
            non_negative: true,
        };
        assert_eq!(rates(&q), vec![(20, 200.0), (40, 949.0)]);
        // One point has no rate: no series at all.
        q.range = Duration::from_secs(5);
        assert!(src.query(&q, now).unwrap().is_empty());
    }

    #[test]
    fn where_not_group_by_missing_tags_and_range_bounds() {
        let src = source();
        let mut q = q(Aggregate::Count);
        q.filters = vec![TagFilter {
            tag: "cpu".into(),
            value: "cpu0".into(),
            negate: true,
        }];
        q.group_by = vec!["host".into(), "dc".into()];
        let got = src.query(&q, NOW).unwrap();
        assert_eq!(got.len(), 2);
        // "dc" is absent from every series: grouped as "" and left out of the tags.
        assert_eq!(got[0].tags.len(), 1);
        // Range is (now - 1m, now]: the point at exactly -60 s would be out, -50 s is in.
        q.range = Duration::from_secs(50);
        let got = src.query(&q, NOW).unwrap();
        assert_eq!(
            got[0].rows[0].values[0],
            Some(Value::Int(5)),
            "(-50 s, 0] holds -40..0"
        );
        // No group_by: one series over everything that passed the filter.
        q.group_by.clear();
        q.filters.clear();
        q.range = Duration::from_secs(60);
        let got = src.query(&q, NOW).unwrap();
        assert_eq!(got.len(), 1);
        assert!(got[0].tags.is_empty());
        assert_eq!(got[0].rows[0].values[0], Some(Value::Int(18)));
    }

    /// Issue 10 item 16: an integer field reached rules as a float. The selectors and sum of
    /// integers are integers (as InfluxDB answers them), count always is, mean is a float.
    #[test]
    fn integer_fields_stay_integers() {
        let src = MemorySource::from_line_protocol(
            "net,host=a drops=7i 10\nnet,host=a drops=3i 20\nnet,host=a drops=9i 30\n\
             net,host=a big=18446744073709551615u 30\nnet,host=b drops=1.5 30\n",
            0,
        )
        .unwrap();
        let mut q = Query::new("net");
        q.field = Some("drops".into());
        q.filters.push(TagFilter {
            tag: "host".into(),
            value: "a".into(),
            negate: false,
        });
        let one = |q: &Query| src.query(q, 30).unwrap()[0].rows.clone();
        let value = |q: &Query| one(q).last().unwrap().values[0].clone().unwrap();
        for (agg, want) in [
            (Aggregate::Raw, Value::Int(9)),
            (Aggregate::Last, Value::Int(9)),
            (Aggregate::Max, Value::Int(9)),
            (Aggregate::Min, Value::Int(3)),
            (Aggregate::Sum, Value::Int(19)),
            (Aggregate::Count, Value::Int(3)),
            (Aggregate::Percentile(50.0), Value::Int(7)),
            (Aggregate::Mean, Value::Float(19.0 / 3.0)),
        ] {
            q.aggregate = agg.clone();
            assert_eq!(value(&q), want, "{agg:?}");
        }
        q.aggregate = Aggregate::Derivative {
            unit: Duration::from_nanos(10),
            non_negative: false,
        };
        assert_eq!(value(&q), Value::Float(6.0));
        // Unsigned: an integer, saturating above i64::MAX (as Telegraf writes it to 1.x).
        q.field = Some("big".into());
        q.aggregate = Aggregate::Last;
        assert_eq!(value(&q), Value::Int(i64::MAX));
        // Host b's field is a float: merged with a's integers the group is floats.
        q.field = Some("drops".into());
        q.filters.clear();
        q.aggregate = Aggregate::Max;
        assert_eq!(value(&q), Value::Float(9.0));
        q.aggregate = Aggregate::Count;
        assert_eq!(value(&q), Value::Int(4));
    }

    #[test]
    fn type_errors_and_influxql() {
        let src = MemorySource::from_line_protocol("http,host=a result=\"ok\" 1\n", 0).unwrap();
        let mut q = Query::new("http");
        q.field = Some("result".into());
        q.aggregate = Aggregate::Last;
        let got = src.query(&q, 2).unwrap();
        assert_eq!(got[0].rows[0].values[0], Some(Value::Str("ok".into())));
        q.aggregate = Aggregate::Mean;
        let err = src.query(&q, 2).unwrap_err();
        assert!(err.to_string().contains("holds a string"), "{err}");
        let err = src.influxql("SELECT 1", 0).unwrap_err();
        assert!(
            err.to_string().contains("needs an InfluxDB source"),
            "{err}"
        );
    }

    #[test]
    fn prune_keeps_recent_points() {
        let src = source();
        assert_eq!(src.len(), 21);
        assert_eq!(src.prune_before(NOW - 10 * S), 15);
        assert_eq!(src.len(), 6);
        assert_eq!(src.latest_time(), Some(NOW));
        assert_eq!(src.prune_before(NOW + 1), 6);
        assert!(src.is_empty());
        assert_eq!(src.series_count(), 0);
    }

    #[test]
    fn len_counts_points_not_writes() {
        // A second write of the same series and time merges into one point.
        let src =
            MemorySource::from_line_protocol("m,h=a x=1 5\nm,h=a y=2 5\nm,h=b x=1 5\n", 0).unwrap();
        assert_eq!(src.len(), 2);
        assert_eq!(src.series_count(), 2);
    }

    #[test]
    fn bytes_are_accounted_in_step_and_bound_the_window() {
        let src = MemorySource::new();
        let big = "x".repeat(10_000);
        for t in 0..10 {
            // Distinct strings (a string equal to the previous one costs a bit).
            let s = format!("{t}{}", &big[1..]);
            let m = lineproto::parse_line(&format!("m,h=a s=\"{s}\",v=1 {t}"), 0).unwrap();
            src.push(&m);
        }
        let held = src.bytes();
        // The strings, and the spare capacity of the chunk being appended to.
        assert!(held > 100_000 && held < 140_000, "{held}");
        // Overwriting a field replaces its bytes.
        src.push(&lineproto::parse_line("m,h=a s=\"\" 9", 0).unwrap());
        assert!(src.bytes() < held - 9_900, "{}", src.bytes());
        // The byte bound drops the oldest points first.
        let dropped = src.enforce_bounds(usize::MAX, 30_000);
        assert_eq!(dropped, 7);
        assert!(src.bytes() <= 30_000);
        assert_eq!(src.latest_time(), Some(9));
        assert_eq!(src.prune_before(9), 2);
        src.enforce_bounds(0, 0);
        assert_eq!((src.len(), src.bytes()), (0, 0), "every byte given back");
    }

    #[test]
    fn max_points_drops_the_oldest_across_series() {
        let src = MemorySource::from_line_protocol(
            "m,h=a x=1 10\nm,h=a x=2 40\nm,h=b x=3 20\nm,h=b x=4 30\nn x=5 25\n",
            0,
        )
        .unwrap();
        assert_eq!(src.enforce_max_points(10), 0);
        assert_eq!(src.dropped(), 0);
        // Oldest three: a@10, b@20, n@25 (n's only point: its series goes away).
        assert_eq!(src.enforce_max_points(2), 3);
        assert_eq!(src.len(), 2);
        assert_eq!(src.dropped(), 3);
        assert_eq!(src.series_count(), 2);
        let mut q = Query::new("m");
        q.field = Some("x".into());
        q.aggregate = Aggregate::Raw;
        q.range = Duration::from_secs(1);
        let got = src.query(&q, 100).unwrap();
        let times: Vec<i64> = got[0].rows.iter().map(|r| r.time).collect();
        assert_eq!(times, vec![30, 40]);
        assert_eq!(src.enforce_max_points(0), 2);
        assert!(src.is_empty());
        assert_eq!(src.dropped(), 5);
    }

    /// The store against a plain model (the map of maps this store replaced): any order of
    /// writes (out of order, repeated times, fields added later, types changing), pruning and
    /// the point bound give the same points, and a snapshot gives them back.
    mod model {
        use super::*;
        use proptest::prelude::*;

        type Model = BTreeMap<(String, String), BTreeMap<i64, BTreeMap<String, FieldValue>>>;

        #[derive(Debug, Clone)]
        enum Op {
            Write(usize, i64, Vec<(usize, FieldValue)>),
            Prune(i64),
            MaxPoints(usize),
        }

        fn value() -> impl Strategy<Value = FieldValue> {
            prop_oneof![
                4 => prop_oneof![
                    any::<f64>(),
                    Just(f64::NAN),
                    Just(f64::INFINITY),
                    Just(f64::NEG_INFINITY),
                    Just(-0.0),
                    (0..100i32).prop_map(|i| f64::from(i) / 4.0),
                ]
                .prop_map(FieldValue::Float),
                2 => (0..1000i64).prop_map(FieldValue::Int),
                1 => any::<u64>().prop_map(FieldValue::Uint),
                1 => any::<bool>().prop_map(FieldValue::Bool),
                1 => prop_oneof![Just("a"), Just("bb"), Just("")].prop_map(|s| FieldValue::Str(s.into())),
            ]
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                40 => (0..3usize, 0..300i64, proptest::collection::vec((0..4usize, value()), 1..4))
                    .prop_map(|(s, t, f)| Op::Write(s, t, f)),
                1 => (0..300i64).prop_map(Op::Prune),
                1 => (0..400usize).prop_map(Op::MaxPoints),
            ]
        }

        /// Writes mostly in time order (as agents do), with jumps back.
        fn ops() -> impl Strategy<Value = Vec<Op>> {
            proptest::collection::vec(op(), 1..700).prop_map(|mut ops| {
                let mut clock = 0;
                for op in &mut ops {
                    if let Op::Write(_, t, _) = op
                        && *t % 5 != 0
                    {
                        clock += 1;
                        *t = clock;
                    }
                }
                ops
            })
        }

        const SERIES: [&str; 3] = ["a", "b", "c"];
        const FIELDS: [&str; 4] = ["f", "g", "h", "i"];

        fn apply(model: &mut Model, src: &MemorySource, op: &Op) {
            match op {
                Op::Write(si, t, fields) => {
                    let mut m = Metric::new("m", *t).with_tag("s", SERIES[*si]);
                    let point = model
                        .entry(("m".into(), SERIES[*si].into()))
                        .or_default()
                        .entry(*t)
                        .or_default();
                    for (fi, v) in fields {
                        m.add_field(FIELDS[*fi], v.clone());
                        point.insert(FIELDS[*fi].into(), v.clone());
                    }
                    src.push(&m);
                }
                Op::Prune(t) => {
                    for pts in model.values_mut() {
                        *pts = pts.split_off(t);
                    }
                    src.prune_before(*t);
                }
                Op::MaxPoints(max) => {
                    let mut all: Vec<(i64, (String, String))> = model
                        .iter()
                        .flat_map(|(k, pts)| pts.keys().map(|t| (*t, k.clone())))
                        .collect();
                    all.sort();
                    for (t, k) in all.iter().take(all.len().saturating_sub(*max)) {
                        model.get_mut(k).unwrap().remove(t);
                    }
                    src.enforce_max_points(*max);
                }
            }
            model.retain(|_, pts| !pts.is_empty());
        }

        fn same(v: &FieldValue, w: &FieldValue) -> bool {
            match (v, w) {
                (FieldValue::Float(x), FieldValue::Float(y)) => x.to_bits() == y.to_bits(),
                _ => v == w,
            }
        }

        fn check(model: &Model, src: &MemorySource) {
            type Want = (String, i64, Vec<(String, FieldValue)>);
            let want: Vec<Want> = model
                .iter()
                .flat_map(|((_, s), pts)| {
                    pts.iter().map(move |(t, f)| {
                        (
                            s.clone(),
                            *t,
                            f.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                        )
                    })
                })
                .collect();
            let got = src.dump();
            assert_eq!(got.len(), want.len());
            assert_eq!(src.len(), want.len());
            assert_eq!(src.series_count(), model.len());
            for ((_, tags, t, f), (s, wt, wf)) in got.iter().zip(&want) {
                assert_eq!((&tags[0].1, t), (s, wt));
                assert_eq!(f.len(), wf.len(), "{f:?} {wf:?}");
                for ((k, v), (wk, wv)) in f.iter().zip(wf) {
                    assert!(
                        k == wk && same(v, wv),
                        "{s}@{t}: {k}={v:?}, want {wk}={wv:?}"
                    );
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            #[test]
            fn store_matches_the_model(ops in ops()) {
                let src = MemorySource::new();
                let mut model = Model::new();
                for op in &ops {
                    apply(&mut model, &src, op);
                }
                check(&model, &src);
                let back = MemorySource::from_snapshot(&src.snapshot()).unwrap();
                check(&model, &back);
                // The same, less the spare capacity of the open chunks.
                assert!(back.bytes() <= src.bytes());
                assert_eq!(back.bytes() == 0, src.is_empty());
                // The restored window takes writes as the original does.
                let more = Op::Write(0, 150, vec![(0, FieldValue::Float(1.0))]);
                apply(&mut model.clone(), &src, &more);
                apply(&mut model, &back, &more);
                check(&model, &back);
                src.enforce_bounds(0, 0);
                assert_eq!((src.len(), src.bytes(), src.series_count()), (0, 0, 0));
            }

            /// A damaged snapshot is refused with an error, never a panic.
            #[test]
            fn damaged_snapshots_are_refused(ops in ops(), at in any::<prop::sample::Index>(), b in 1..=255u8, cut in any::<bool>()) {
                let src = MemorySource::new();
                let mut model = Model::new();
                for op in &ops {
                    apply(&mut model, &src, op);
                }
                let mut snap = src.snapshot();
                let i = at.index(snap.len());
                if cut { snap.truncate(i) } else { snap[i] ^= b }
                assert!(MemorySource::from_snapshot(&snap).is_err());
            }
        }

        /// A restored window's sealed chunks are packed into shared blocks oldest first over
        /// all series, as the writes sealed them, so that the window dropping its oldest frees
        /// whole blocks (chunk::Arena); their accounted bytes are the original's.
        #[test]
        fn restored_chunks_are_packed_oldest_first() {
            // Three series whose chunks interleave in time: s=c's first chunk is the oldest.
            let mut lines = String::new();
            for t in 0..5 * chunk::CHUNK_ROWS {
                for (s, lag) in [("a", 2), ("b", 1), ("c", 0)] {
                    lines += &format!("m,s={s} f={t}i {}\n", 1000 * t + 300 * lag);
                }
            }
            let src = MemorySource::from_line_protocol(&lines, 0).unwrap();
            let back = MemorySource::from_snapshot(&src.snapshot()).unwrap();
            let sealed = |src: &MemorySource| -> usize {
                let store = src.read();
                let s = store.slots.iter().flatten();
                s.map(|s| s.fixed).sum()
            };
            assert_eq!(sealed(&back), sealed(&src));
            let store = back.read();
            let mut chunks: Vec<(i64, *const u8)> = (store.slots.iter().flatten())
                .flat_map(|s| s.sealed.iter().map(|c| (c.first, c.data.as_ptr())))
                .collect();
            assert_eq!(chunks.len(), 3 * 5);
            chunks.sort_unstable();
            assert!(
                chunks.windows(2).all(|w| w[0].1 < w[1].1),
                "not in time order in one block: {chunks:?}"
            );
        }

        /// Past the checksum (a file written by a buggy or hostile writer): still no panic.
        #[test]
        fn malformed_snapshot_with_a_good_checksum_is_refused() {
            let src = MemorySource::from_line_protocol("m,s=a f=1 1\nm,s=a f=2 2\n", 0).unwrap();
            let snap = src.snapshot();
            for i in 9..snap.len() - 4 {
                for b in [0x01u8, 0x80, 0xff] {
                    let mut d = snap.clone();
                    d[i] ^= b;
                    d.truncate(d.len() - 4);
                    let crc = crc32fast::hash(&d);
                    d.extend_from_slice(&crc.to_le_bytes());
                    let _ = MemorySource::from_snapshot(&d);
                }
            }
            assert_eq!(
                MemorySource::from_snapshot(b"WKWINDOW\x03xxxx").unwrap_err(),
                snapshot::SnapshotError::Version(3)
            );
        }

        /// A window saved before the float coder of format 2 (a version-1 snapshot, written by
        /// the release build of git 13269f0 from the lines beside it) is still restored, bit
        /// for bit, and saved again as version 2.
        #[test]
        fn version_1_snapshots_are_restored() {
            let v1 = include_bytes!("../../testdata/window/v1.snap");
            let lines = include_str!("../../testdata/window/v1.lp");
            assert_eq!(v1[8], 1);
            let want = MemorySource::from_line_protocol(lines, 0).unwrap().dump();
            let old = MemorySource::from_snapshot(v1).unwrap();
            let snap = old.snapshot();
            assert_eq!(snap[8], 2);
            let again = MemorySource::from_snapshot(&snap).unwrap();
            for src in [&old, &again] {
                let got = src.dump();
                assert_eq!(got.len(), want.len());
                assert_eq!(got.len(), lines.lines().count());
                for (g, w) in got.iter().zip(&want) {
                    assert_eq!((&g.0, &g.1, g.2), (&w.0, &w.1, w.2));
                    assert_eq!(g.3.len(), w.3.len());
                    for ((k, v), (wk, wv)) in g.3.iter().zip(&w.3) {
                        assert!(k == wk && same(v, wv), "{k}={v:?}, want {wk}={wv:?}");
                    }
                }
            }
            // The floats now cost less than format 1 made them cost.
            assert!(snap.len() < v1.len(), "{} >= {}", snap.len(), v1.len());
        }
    }
}
