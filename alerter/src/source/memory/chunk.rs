//! The compressed form of a series' points: chunks of up to [`CHUNK_ROWS`] rows, one column
//! per (field, type), as Prometheus' `chunkenc` and InfluxDB's TSM store them.
//!
//! - times: delta-of-delta, in buckets of 0, 13, 24, 36 or 64 bits (nanosecond times from an
//!   agent on a fixed interval cost one bit each);
//! - floats ([`floats`], format 2): a ratio of integers (what agents write: percentages of
//!   counter deltas) as its numerator's change and the float rounding of the agent's own
//!   arithmetic; anything else as Gorilla's XOR against the previous value (format 1 stored
//!   every float so, and is still read; a column of measurements, where ratios did not pay,
//!   is coded so again for a few chunks). The open chunk holds a float column's values as they
//!   are and codes them when it is sealed. Bit-exact: NaN payloads, ±inf and -0.0 round trip;
//! - integers (signed and unsigned): delta-of-delta with wrapping arithmetic (counters cost a
//!   bit or a few);
//! - booleans: one bit; strings: one bit when equal to the previous value, else the bytes.
//!
//! A column carries a presence bitmap over the chunk's rows, so fields written only
//! sometimes (or whose type changes) cost nothing in the rows without them. The open chunk
//! appends in place ([`Open`]); a full one is sealed into one byte buffer ([`Sealed`]),
//! packed with the other chunks sealed about then into a shared block ([`Arena`]).
//! Decoding is checked: a corrupt buffer (a damaged snapshot) is an error, never a panic.

pub mod floats;

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use wk_core::metric::FieldValue;

use floats::{Floats, Hint};

/// Rows per chunk (Prometheus' choice: ~120 samples amortise a chunk's header well).
pub const CHUNK_ROWS: usize = 120;
// Row counts are stored in a byte and presence in a u128.
const _: () = assert!(CHUNK_ROWS <= 127);

/// The type of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Float = 0,
    Int = 1,
    Uint = 2,
    Bool = 3,
    Str = 4,
}

impl Kind {
    pub fn of(v: &FieldValue) -> Kind {
        match v {
            FieldValue::Float(_) => Kind::Float,
            FieldValue::Int(_) => Kind::Int,
            FieldValue::Uint(_) => Kind::Uint,
            FieldValue::Bool(_) => Kind::Bool,
            FieldValue::Str(_) => Kind::Str,
        }
    }

    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            0 => Kind::Float,
            1 => Kind::Int,
            2 => Kind::Uint,
            3 => Kind::Bool,
            4 => Kind::Str,
            _ => return None,
        })
    }
}

/// The type byte of a float column with the format-2 coder ([`floats`]); a column typed
/// [`Kind::Float`] (0) is a format-1 one, all Gorilla XOR.
const FLOAT_RATIO: u8 = 5;
/// The type byte of a float column of the open chunk: the values' 64 bits each, coded when
/// the chunk is sealed (all of a column's values at once: the coder's divisions overlap).
const FLOAT_RAW: u8 = 6;

/// A chunk that does not decode (only a damaged snapshot can hold one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupt;

/// Bits appended most significant first. The last bits (fewer than 64) wait in a register
/// and go to the buffer as a whole word: appending to a column never reads its buffer back,
/// which is what cost most when thousands of columns take a value each in turn.
#[derive(Debug, Default, Clone)]
pub struct BitWriter {
    /// The bytes complete so far.
    buf: Vec<u8>,
    /// The `n` bits after them, in the low bits.
    acc: u64,
    n: u32,
}

impl BitWriter {
    /// An empty writer with room for `bytes`.
    fn with_capacity(bytes: usize) -> BitWriter {
        BitWriter {
            buf: Vec::with_capacity(bytes),
            ..BitWriter::default()
        }
    }

    /// Appends the low `n` (≤ 64) bits of `v`.
    #[inline]
    pub fn write(&mut self, v: u64, n: u32) {
        debug_assert!(n <= 64);
        if n == 0 {
            return;
        }
        let v = if n == 64 { v } else { v & ((1u64 << n) - 1) };
        let free = 64 - self.n;
        if n < free {
            self.acc = (self.acc << n) | v;
            self.n += n;
            return;
        }
        // The register fills: a whole word out, the rest of `v` stays (`rest` < 64).
        let rest = n - free;
        let word = if free == 64 {
            v
        } else {
            (self.acc << free) | (v >> rest)
        };
        self.buf.extend_from_slice(&word.to_be_bytes());
        self.acc = if rest == 0 {
            0
        } else {
            v & ((1u64 << rest) - 1)
        };
        self.n = rest;
    }

    #[inline]
    fn bit(&mut self, b: bool) {
        self.write(u64::from(b), 1);
    }

    /// The pending bits as bytes (the last one padded with zeros) and how many.
    fn tail(&self) -> ([u8; 8], usize) {
        if self.n == 0 {
            return ([0; 8], 0);
        }
        (
            (self.acc << (64 - self.n)).to_be_bytes(),
            self.n.div_ceil(8) as usize,
        )
    }

    /// Appends whole bytes (strings): copied when aligned, else bits by the byte.
    fn write_bytes(&mut self, s: &[u8]) {
        if self.n.is_multiple_of(8) {
            let (tail, k) = self.tail();
            self.buf.extend_from_slice(&tail[..k]);
            (self.acc, self.n) = (0, 0);
            self.buf.extend_from_slice(s);
            return;
        }
        for &b in s {
            self.write(u64::from(b), 8);
        }
    }

    /// Bytes written (the last one padded with zeros).
    pub fn byte_len(&self) -> usize {
        self.buf.len() + self.n.div_ceil(8) as usize
    }

    /// Appends the bytes written to `out`.
    pub fn extend_into(&self, out: &mut Vec<u8>) {
        let (tail, k) = self.tail();
        out.extend_from_slice(&self.buf);
        out.extend_from_slice(&tail[..k]);
    }

    /// The bytes written.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.byte_len());
        self.extend_into(&mut v);
        v
    }

    /// The 64-bit words written (a raw float column), in order.
    fn words(&self) -> impl Iterator<Item = u64> + '_ {
        debug_assert_eq!(self.n % 64, 0);
        self.buf
            .chunks_exact(8)
            .map(|b| u64::from_be_bytes(b.try_into().unwrap_or_default()))
    }

    /// Bits written.
    fn len_bits(&self) -> usize {
        self.buf.len() * 8 + self.n as usize
    }

    /// The 8 bits written from bit `at` on (`at + 8` ≤ [`BitWriter::len_bits`]).
    fn byte_at(&self, at: usize) -> u8 {
        let (tail, _) = self.tail();
        let byte = |k: usize| {
            self.buf
                .get(k)
                .copied()
                .unwrap_or_else(|| tail[(k - self.buf.len()).min(7)])
        };
        let (k, off) = (at / 8, at % 8);
        if off == 0 {
            return byte(k);
        }
        (byte(k) << off) | (byte(k + 1) >> (8 - off))
    }

    /// Empties the writer, keeping its buffer.
    fn clear(&mut self) {
        self.buf.clear();
        (self.acc, self.n) = (0, 0);
    }

    /// True when the bytes written from bit `at` on, `len` of them, are `s`.
    fn holds(&self, (at, len): (usize, usize), s: &[u8]) -> bool {
        len == s.len()
            && at + 8 * len <= self.len_bits()
            && s.iter()
                .enumerate()
                .all(|(i, &b)| self.byte_at(at + 8 * i) == b)
    }

    fn shrink(&mut self) {
        self.buf.shrink_to_fit();
    }

    /// Heap bytes held.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

/// Reads what a [`BitWriter`] wrote; reading past the end is [`Corrupt`].
pub struct BitReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub fn new(buf: &'a [u8]) -> BitReader<'a> {
        BitReader { buf, pos: 0 }
    }

    #[inline]
    fn read(&mut self, n: u32) -> Result<u64, Corrupt> {
        let n = n as usize;
        if self.pos + n > self.buf.len() * 8 {
            return Err(Corrupt);
        }
        let mut v = 0u64;
        let mut left = n;
        while left > 0 {
            let byte = self.buf[self.pos / 8];
            let off = self.pos % 8;
            let avail = 8 - off;
            let take = avail.min(left);
            let bits = (byte >> (avail - take)) & (((1u16 << take) - 1) as u8);
            v = (v << take) | u64::from(bits);
            self.pos += take;
            left -= take;
        }
        Ok(v)
    }

    #[inline]
    fn bit(&mut self) -> Result<bool, Corrupt> {
        Ok(self.read(1)? == 1)
    }

    /// `n` whole bytes (borrowed when aligned).
    fn bytes(&mut self, n: usize) -> Result<std::borrow::Cow<'a, [u8]>, Corrupt> {
        if n > (self.buf.len() * 8 - self.pos) / 8 {
            return Err(Corrupt);
        }
        let at = self.pos / 8;
        let off = self.pos % 8;
        self.pos += n * 8;
        if off == 0 {
            return Ok(std::borrow::Cow::Borrowed(&self.buf[at..at + n]));
        }
        Ok(std::borrow::Cow::Owned(
            (0..n)
                .map(|i| (self.buf[at + i] << off) | (self.buf[at + i + 1] >> (8 - off)))
                .collect(),
        ))
    }
}

fn fits(v: i64, bits: u32) -> bool {
    let half = 1i64 << (bits - 1);
    (-half..half).contains(&v)
}

fn sign_extend(v: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((v << shift) as i64) >> shift
}

/// Delta-of-delta buckets: '0' | '10'+13 | '110'+24 | '1110'+36 | '1111'+64 bits.
fn put_dod(w: &mut BitWriter, dod: i64) {
    if dod == 0 {
        w.bit(false);
    } else if fits(dod, 13) {
        w.write(0b10, 2);
        w.write(dod as u64, 13);
    } else if fits(dod, 24) {
        w.write(0b110, 3);
        w.write(dod as u64, 24);
    } else if fits(dod, 36) {
        w.write(0b1110, 4);
        w.write(dod as u64, 36);
    } else {
        w.write(0b1111, 4);
        w.write(dod as u64, 64);
    }
}

fn get_dod(r: &mut BitReader<'_>) -> Result<i64, Corrupt> {
    if !r.bit()? {
        return Ok(0);
    }
    let bits = if !r.bit()? {
        13
    } else if !r.bit()? {
        24
    } else if !r.bit()? {
        36
    } else {
        64
    };
    let v = r.read(bits)?;
    Ok(if bits == 64 {
        v as i64
    } else {
        sign_extend(v, bits)
    })
}

/// The state of a delta-of-delta column (times, integers).
#[derive(Debug, Clone, Copy, Default)]
struct Dod {
    n: u32,
    prev: i64,
    delta: i64,
}

impl Dod {
    fn put(&mut self, w: &mut BitWriter, v: i64) {
        if self.n == 0 {
            w.write(v as u64, 64);
        } else {
            let delta = v.wrapping_sub(self.prev);
            put_dod(w, delta.wrapping_sub(self.delta));
            self.delta = delta;
        }
        self.prev = v;
        self.n += 1;
    }

    fn get(&mut self, r: &mut BitReader<'_>) -> Result<i64, Corrupt> {
        let v = if self.n == 0 {
            r.read(64)? as i64
        } else {
            self.delta = self.delta.wrapping_add(get_dod(r)?);
            self.prev.wrapping_add(self.delta)
        };
        self.prev = v;
        self.n += 1;
        Ok(v)
    }
}

/// The state of a Gorilla XOR float column (format 1: read, and written by the tests).
#[derive(Debug, Clone, Copy)]
struct Xor {
    n: u32,
    prev: u64,
    /// Leading and trailing zeros of the window in use (`lead` 0xff: none yet).
    lead: u8,
    trail: u8,
}

impl Default for Xor {
    fn default() -> Xor {
        Xor {
            n: 0,
            prev: 0,
            lead: 0xff,
            trail: 0,
        }
    }
}

/// Gorilla's code of a changed value's XOR with the previous one (`x` ≠ 0): `0` and the bits
/// inside the window in use (`lead`, `trail`; `lead` 0xff: none yet), or `1`, lead(5), sig(6)
/// and the bits, which makes that the window.
pub(super) fn put_xor(w: &mut BitWriter, x: u64, lead: &mut u8, trail: &mut u8) {
    let (l, t) = (x.leading_zeros().min(31) as u8, x.trailing_zeros() as u8);
    if *lead != 0xff && l >= *lead && t >= *trail {
        w.bit(false);
        let sig = 64 - u32::from(*lead) - u32::from(*trail);
        w.write(x >> *trail, sig);
    } else {
        w.bit(true);
        let sig = 64 - u32::from(l) - u32::from(t);
        w.write(u64::from(l), 5);
        // 64 significant bits are written as 0 (sig is never 0: x != 0).
        w.write(u64::from(sig % 64), 6);
        w.write(x >> t, sig);
        (*lead, *trail) = (l, t);
    }
}

/// Reads what [`put_xor`] wrote: the XOR, the window updated.
pub(super) fn get_xor(
    r: &mut BitReader<'_>,
    lead: &mut u8,
    trail: &mut u8,
) -> Result<u64, Corrupt> {
    if r.bit()? {
        let l = r.read(5)? as u32;
        let sig = match r.read(6)? as u32 {
            0 => 64,
            s => s,
        };
        if l + sig > 64 {
            return Err(Corrupt);
        }
        (*lead, *trail) = (l as u8, (64 - l - sig) as u8);
    } else if *lead == 0xff {
        return Err(Corrupt);
    }
    let sig = 64 - u32::from(*lead) - u32::from(*trail);
    // trail ≤ 63: at least one significant bit.
    Ok(r.read(sig)? << *trail)
}

impl Xor {
    fn put(&mut self, w: &mut BitWriter, v: f64) {
        let bits = v.to_bits();
        if self.n == 0 {
            w.write(bits, 64);
        } else {
            let x = bits ^ self.prev;
            if x == 0 {
                w.bit(false);
            } else {
                w.bit(true);
                put_xor(w, x, &mut self.lead, &mut self.trail);
            }
        }
        self.prev = bits;
        self.n += 1;
    }

    fn get(&mut self, r: &mut BitReader<'_>) -> Result<f64, Corrupt> {
        if self.n == 0 {
            self.prev = r.read(64)?;
        } else if r.bit()? {
            self.prev ^= get_xor(r, &mut self.lead, &mut self.trail)?;
        }
        self.n += 1;
        Ok(f64::from_bits(self.prev))
    }
}

/// Variable-length unsigned integer in the bit stream (7 bits per group, a continuation bit).
fn put_varbits(w: &mut BitWriter, mut v: u64) {
    loop {
        let more = v >= 0x80;
        w.write(((v & 0x7f) << 1) | u64::from(more), 8);
        v >>= 7;
        if !more {
            return;
        }
    }
}

fn get_varbits(r: &mut BitReader<'_>) -> Result<u64, Corrupt> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let g = r.read(8)?;
        v |= (g >> 1) << shift;
        if g & 1 == 0 {
            return Ok(v);
        }
    }
    Err(Corrupt)
}

/// The per-column encoder state.
#[derive(Debug, Clone)]
enum State {
    /// Format 1 (decoded only).
    Float(Xor),
    Floats(Floats),
    /// The open chunk's floats, as they are: 64 bits per value that differs from the one
    /// before it (the last such value here), a bit in [`OpenCol::repeats`] per other one.
    Raw(Option<u64>),
    Int(Dod),
    Bool,
    /// Where the previous string's bytes start in the column (bits) and its length: the
    /// column itself holds it, no copy is kept.
    Str(Option<(usize, usize)>),
}

impl State {
    fn new(kind: Kind) -> State {
        match kind {
            Kind::Float => State::Raw(None),
            Kind::Int | Kind::Uint => State::Int(Dod::default()),
            Kind::Bool => State::Bool,
            Kind::Str => State::Str(None),
        }
    }

    /// The decoder of a column typed `byte` in a sealed chunk.
    fn of_type_byte(b: u8) -> Option<(Kind, State)> {
        Some(match b {
            0 => (Kind::Float, State::Float(Xor::default())),
            FLOAT_RATIO => (Kind::Float, State::Floats(Floats::default())),
            FLOAT_RAW => (Kind::Float, State::Raw(None)),
            b => {
                let kind = Kind::from_u8(b)?;
                (kind, State::new(kind))
            }
        })
    }

    fn put(&mut self, w: &mut BitWriter, v: &FieldValue) {
        match (self, v) {
            (State::Float(s), FieldValue::Float(f)) => s.put(w, *f),
            (State::Raw(_), FieldValue::Float(f)) => w.write(f.to_bits(), 64),
            (State::Int(s), FieldValue::Int(i)) => s.put(w, *i),
            (State::Int(s), FieldValue::Uint(u)) => s.put(w, *u as i64),
            (State::Bool, FieldValue::Bool(b)) => w.bit(*b),
            (State::Str(prev), FieldValue::Str(s)) => {
                if prev.is_some_and(|p| w.holds(p, s.as_bytes())) {
                    w.bit(false);
                } else {
                    w.bit(true);
                    put_varbits(w, s.len() as u64);
                    *prev = Some((w.len_bits(), s.len()));
                    w.write_bytes(s.as_bytes());
                }
            }
            // The caller picks the column by the value's kind.
            _ => debug_assert!(false, "value of another kind than its column"),
        }
    }

    /// `text` holds the previous string value of a string column between calls.
    fn get_into(
        &mut self,
        kind: Kind,
        r: &mut BitReader<'_>,
        text: &mut String,
    ) -> Result<FieldValue, Corrupt> {
        Ok(match self {
            State::Float(s) => FieldValue::Float(s.get(r)?),
            State::Floats(s) => FieldValue::Float(s.get(r)?),
            State::Raw(_) => FieldValue::Float(f64::from_bits(r.read(64)?)),
            State::Int(s) if kind == Kind::Uint => FieldValue::Uint(s.get(r)? as u64),
            State::Int(s) => FieldValue::Int(s.get(r)?),
            State::Bool => FieldValue::Bool(r.bit()?),
            State::Str(prev) => {
                if r.bit()? {
                    let len = usize::try_from(get_varbits(r)?).map_err(|_| Corrupt)?;
                    let bytes = r.bytes(len)?;
                    *text = std::str::from_utf8(&bytes).map_err(|_| Corrupt)?.to_owned();
                    *prev = Some((0, text.len()));
                } else if prev.is_none() {
                    return Err(Corrupt);
                }
                FieldValue::Str(text.clone())
            }
        })
    }
}

/// One column of a chunk as the decoder sees it.
#[derive(Debug, Clone)]
pub struct ColView<'a> {
    /// The field's index in the series' field names.
    pub field: u16,
    pub kind: Kind,
    /// Bit r set: row r has a value.
    pub present: u128,
    /// Borrowed from a sealed chunk, copied from an open one.
    pub bits: Cow<'a, [u8]>,
    /// The column's type byte (the kind, or the coder of a float column).
    coder: u8,
}

impl ColView<'_> {
    /// The values with their row numbers, in row order.
    pub fn decode(&self, rows: usize) -> Result<Vec<(u8, FieldValue)>, Corrupt> {
        let (_, mut st) = State::of_type_byte(self.coder).ok_or(Corrupt)?;
        let mut r = BitReader::new(&self.bits);
        let mut text = String::new();
        let mut out = Vec::with_capacity(self.present.count_ones() as usize);
        for row in 0..rows {
            if self.present & (1u128 << row) != 0 {
                out.push((row as u8, st.get_into(self.kind, &mut r, &mut text)?));
            }
        }
        if rows < 128 && self.present >> rows != 0 {
            return Err(Corrupt);
        }
        Ok(out)
    }
}

/// Decodes a time column of `rows` values.
pub fn decode_times(bits: &[u8], rows: usize) -> Result<Vec<i64>, Corrupt> {
    let mut st = Dod::default();
    let mut r = BitReader::new(bits);
    (0..rows).map(|_| st.get(&mut r)).collect()
}

/// A row: its time and its fields (by index in the series' field names, each at most once).
pub type Row = (i64, Vec<(u16, FieldValue)>);

#[derive(Debug, Clone)]
struct OpenCol {
    field: u16,
    kind: Kind,
    present: u128,
    w: BitWriter,
    st: State,
    /// What the float coder carries from one chunk of the column to the next (a float
    /// column's, from its first seal on: boxed, so that the other columns do not pay for it).
    hint: Option<Box<Hint>>,
    /// A raw float column's rows whose value repeats the one before (not in `w`): the zeros
    /// of idle cpu fields cost a bit, not 8 bytes, until the chunk is sealed.
    repeats: u128,
}

impl OpenCol {
    /// A raw float column's values in row order (repeats written out).
    fn raw_values(&self, out: &mut Vec<f64>) {
        let mut words = self.w.words();
        let mut last = 0.0;
        let mut present = self.present;
        while present != 0 {
            let row = present.trailing_zeros();
            present &= present - 1;
            if self.repeats & (1u128 << row) == 0 {
                // One word per row not repeated (append wrote it).
                last = f64::from_bits(words.next().unwrap_or_default());
            }
            out.push(last);
        }
    }

    /// The column's bits as the decoder reads them: a raw float column's values in full.
    fn bits(&self) -> Vec<u8> {
        match self.st {
            State::Raw(_) => {
                let mut values = Vec::with_capacity(self.present.count_ones() as usize);
                self.raw_values(&mut values);
                values
                    .iter()
                    .flat_map(|v| v.to_bits().to_be_bytes())
                    .collect()
            }
            _ => self.w.to_vec(),
        }
    }

    /// The type byte of the column in a sealed chunk.
    fn coder(&self) -> u8 {
        match self.st {
            State::Floats(_) => FLOAT_RATIO,
            State::Raw(_) => FLOAT_RAW,
            _ => self.kind as u8,
        }
    }
}

/// The chunk being appended to.
#[derive(Debug, Clone, Default)]
pub struct Open {
    rows: usize,
    /// The columns' costs and buffer capacities (kept in step: read at every write).
    cols_bytes: usize,
    times: BitWriter,
    tst: Dod,
    first: i64,
    last: i64,
    cols: Vec<OpenCol>,
}

/// What an open chunk costs besides its buffers, and a column besides its buffer.
const OPEN_COST: usize = 96;
const COL_COST: usize = 128;
/// What a float column's coder hint costs besides (the box and its allocation).
const HINT_COST: usize = std::mem::size_of::<Hint>() + 16;

/// What a column costs besides its buffer.
fn col_cost(kind: Kind) -> usize {
    COL_COST + if kind == Kind::Float { HINT_COST } else { 0 }
}
/// What a sealed chunk costs besides its bytes (the struct in its deque).
pub const SEALED_COST: usize = 56;

/// Where the chunks a window seals live: one after another in shared blocks of
/// [`Arena::BLOCK`] bytes, each given back when the last chunk in it is dropped.
///
/// A chunk of its own allocation is rounded up to the allocator's size class (about 1.7 bytes
/// per point of agent data, 11 % of the window: docs/performance-alerter.md). A chunk larger
/// than an eighth of a block (long strings) keeps a buffer of its own. Chunks are
/// sealed in time order over all series and forgotten in about the same order (the window's
/// age and byte bounds drop the oldest first), so a block empties as a whole. A chunk
/// rewritten by a late point gets an allocation of its own, so that it never keeps a block of
/// newer data alive; a snapshot's chunks are packed oldest first over all series, as if
/// sealed again.
#[derive(Debug, Default)]
pub struct Arena {
    /// The block being filled: its free room, after the chunks handed out.
    block: BytesMut,
    /// Where a chunk is coded before it is copied into the block.
    scratch: Vec<u8>,
}

impl Arena {
    /// Bytes per block.
    pub const BLOCK: usize = 256 << 10;

    /// Largest chunk put in a block; a larger one (strings) keeps the buffer it was coded in.
    const LARGE: usize = Self::BLOCK / 8;

    /// `data` in the block (a new one when it does not fit).
    fn put(&mut self, data: &[u8]) -> Bytes {
        if self.block.capacity() - self.block.len() < data.len() {
            self.block = BytesMut::with_capacity(Self::BLOCK);
        }
        self.block.extend_from_slice(data);
        self.block.split().freeze()
    }
}

impl Open {
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn is_full(&self) -> bool {
        self.rows >= CHUNK_ROWS
    }

    /// First and last time (meaningless when empty).
    pub fn span(&self) -> (i64, i64) {
        (self.first, self.last)
    }

    /// Appends a row later than every row held (the caller checks), not full.
    pub fn append<V: std::borrow::Borrow<FieldValue>>(&mut self, t: i64, fields: &[(u16, V)]) {
        debug_assert!(self.rows == 0 || t > self.last);
        debug_assert!(self.rows < CHUNK_ROWS);
        if self.rows == 0 {
            self.first = t;
        }
        self.last = t;
        self.tst.put(&mut self.times, t);
        let bit = 1u128 << self.rows;
        for (pos, (field, v)) in fields.iter().enumerate() {
            let v = v.borrow();
            let kind = Kind::of(v);
            // Fields usually come in the same order, so column `pos` is the one.
            let i = match self.cols.get(pos) {
                Some(c) if c.field == *field && c.kind == kind => pos,
                _ => match self
                    .cols
                    .iter()
                    .position(|c| c.field == *field && c.kind == kind)
                {
                    Some(i) => i,
                    None => {
                        self.cols.push(OpenCol {
                            field: *field,
                            kind,
                            present: 0,
                            w: BitWriter::default(),
                            st: State::new(kind),
                            hint: None,
                            repeats: 0,
                        });
                        self.cols_bytes += col_cost(kind);
                        self.cols.len() - 1
                    }
                },
            };
            let col = &mut self.cols[i];
            let cap = col.w.capacity();
            col.present |= bit;
            match (&mut col.st, v) {
                (State::Raw(last), FieldValue::Float(f)) => {
                    let b = f.to_bits();
                    if *last == Some(b) {
                        col.repeats |= bit;
                    } else {
                        col.w.write(b, 64);
                        *last = Some(b);
                    }
                }
                (st, v) => st.put(&mut col.w, v),
            }
            self.cols_bytes = self.cols_bytes + col.w.capacity() - cap;
        }
        self.rows += 1;
    }

    /// Empties the chunk for the next rows, keeping its columns' buffers (a series' chunks
    /// are alike: the next one fills them again without growing them).
    pub fn clear(&mut self) {
        self.rows = 0;
        self.times.clear();
        self.tst = Dod::default();
        // Columns the chunk did not use go.
        let before = self.cols.len();
        self.cols.retain(|c| c.present != 0);
        if self.cols.len() != before {
            self.cols_bytes = self
                .cols
                .iter()
                .map(|c| col_cost(c.kind) + c.w.capacity())
                .sum();
        }
        for c in &mut self.cols {
            c.present = 0;
            c.repeats = 0;
            c.w.clear();
            c.st = State::new(c.kind);
        }
    }

    /// The columns with values.
    fn live_cols(&self) -> impl Iterator<Item = &OpenCol> {
        self.cols.iter().filter(|c| c.present != 0)
    }

    /// An open chunk holding `rows` (sorted, distinct times, at most [`CHUNK_ROWS`]).
    pub fn from_rows(rows: &[Row]) -> Open {
        let mut o = Open::default();
        let mut refs = Vec::new();
        for (t, fields) in rows {
            refs.clear();
            refs.extend(fields.iter().map(|(f, v)| (*f, v)));
            o.append(*t, &refs);
        }
        o.shrink();
        o
    }

    /// Gives back the buffers' spare capacity.
    pub fn shrink(&mut self) {
        self.times.shrink();
        for c in &mut self.cols {
            c.w.shrink();
        }
        self.cols_bytes = self
            .cols
            .iter()
            .map(|c| col_cost(c.kind) + c.w.capacity())
            .sum();
    }

    /// Heap bytes held (an estimate of what the allocator gives out).
    pub fn bytes(&self) -> usize {
        OPEN_COST + self.times.capacity() + self.cols_bytes
    }

    /// [`Open::bytes`] without the spare capacity (what a compaction leaves).
    pub fn used_bytes(&self) -> usize {
        OPEN_COST
            + self.times.byte_len()
            + self
                .live_cols()
                .map(|c| col_cost(c.kind) + c.w.byte_len())
                .sum::<usize>()
    }

    /// The chunk as the decoder sees it (its bits copied).
    pub fn view(&self) -> View<'static> {
        View {
            rows: self.rows,
            first: self.first,
            last: self.last,
            times: Cow::Owned(self.times.to_vec()),
            cols: self
                .live_cols()
                .map(|c| ColView {
                    field: c.field,
                    kind: c.kind,
                    present: c.present,
                    bits: Cow::Owned(c.bits()),
                    coder: c.coder(),
                })
                .collect(),
        }
    }

    /// The chunk in its sealed form, in an allocation of its own.
    pub fn seal(&self) -> Sealed {
        let mut data = Vec::new();
        let sealed = self.seal_with(&mut self.hints(), &mut data);
        Sealed {
            data: Bytes::from(data),
            ..sealed
        }
    }

    /// The chunk sealed into `arena` and emptied for the next rows; the float coder's hints
    /// carry on.
    pub fn seal_and_clear(&mut self, arena: &mut Arena) -> Sealed {
        let mut hints = self.hints();
        let mut data = std::mem::take(&mut arena.scratch);
        let sealed = self.seal_with(&mut hints, &mut data);
        let sealed = if data.len() > Arena::LARGE {
            // Its own buffer, without a copy; the scratch starts small again.
            data.shrink_to_fit();
            Sealed {
                data: Bytes::from(data),
                ..sealed
            }
        } else {
            let sealed = Sealed {
                data: arena.put(&data),
                ..sealed
            };
            data.clear();
            arena.scratch = data;
            sealed
        };
        for (c, h) in self.cols.iter_mut().zip(hints) {
            if c.kind == Kind::Float {
                **c.hint.get_or_insert_with(Box::default) = h;
            }
        }
        self.clear();
        sealed
    }

    /// The columns' coder hints (a copy: sealing updates them).
    fn hints(&self) -> Vec<Hint> {
        self.cols
            .iter()
            .map(|c| c.hint.as_deref().copied().unwrap_or_default())
            .collect()
    }

    /// Codes the chunk into `data` (cleared first); the [`Sealed`] returned has no bytes yet.
    fn seal_with(&self, hints: &mut [Hint], data: &mut Vec<u8>) -> Sealed {
        let full = if self.rows >= 128 {
            u128::MAX
        } else {
            (1u128 << self.rows) - 1
        };
        // The raw float columns coded (the others are final as they are), with their type
        // byte: format 2, or Gorilla where ratios did not pay (format 1's coding).
        let mut coded: Vec<Option<(u8, BitWriter)>> = Vec::with_capacity(self.cols.len());
        let mut values = Vec::with_capacity(self.rows);
        let mut totals: floats::Totals = [(0, 0.0); CHUNK_ROWS];
        for (c, hint) in self.cols.iter().zip(hints) {
            coded.push(match c.st {
                State::Raw(_) if c.present != 0 => {
                    values.clear();
                    c.raw_values(&mut values);
                    // A value takes ~2 bytes: one allocation, not a doubling from 8 bytes.
                    let mut w = BitWriter::with_capacity(values.len() * 2 + 16);
                    let every_row = c.present == full;
                    let ratio =
                        floats::encode(&values, hint, every_row.then_some(&mut totals), &mut w);
                    Some((
                        if ratio {
                            FLOAT_RATIO
                        } else {
                            Kind::Float as u8
                        },
                        w,
                    ))
                }
                _ => None,
            });
        }
        let live = || {
            self.cols
                .iter()
                .zip(&coded)
                .filter(|(c, _)| c.present != 0)
                .map(|(c, w)| match w {
                    Some((coder, w)) => (c, *coder, w),
                    None => (c, c.coder(), &c.w),
                })
        };
        let cols = live().count();
        let size = varint_len(self.times.byte_len() as u64)
            + self.times.byte_len()
            + varint_len(cols as u64)
            + live()
                .map(|(c, _, w)| {
                    varint_len(u64::from(c.field))
                        + 2
                        + if c.present == full { 0 } else { 16 }
                        + varint_len(w.byte_len() as u64)
                        + w.byte_len()
                })
                .sum::<usize>();
        data.clear();
        data.reserve_exact(size);
        put_varint(data, self.times.byte_len() as u64);
        self.times.extend_into(data);
        put_varint(data, cols as u64);
        for (c, coder, w) in live() {
            put_varint(data, u64::from(c.field));
            data.push(coder);
            if c.present == full {
                data.push(0);
            } else {
                data.push(1);
                data.extend_from_slice(&c.present.to_le_bytes());
            }
            put_varint(data, w.byte_len() as u64);
            w.extend_into(data);
        }
        debug_assert_eq!(data.len(), size);
        Sealed {
            first: self.first,
            last: self.last,
            rows: self.rows as u8,
            data: Bytes::new(),
        }
    }
}

/// A full chunk, immutable: its columns in one buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct Sealed {
    pub first: i64,
    pub last: i64,
    pub rows: u8,
    /// In an [`Arena`] block or an allocation of its own.
    pub data: Bytes,
}

impl Sealed {
    /// Heap bytes held.
    pub fn bytes(&self) -> usize {
        SEALED_COST + self.data.len()
    }

    /// The chunk's directory read (it is checked, so a damaged chunk is an error).
    pub fn view(&self) -> Result<View<'_>, Corrupt> {
        View::of_sealed(self.first, self.last, self.rows, &self.data)
    }

    /// Put into `arena` (a chunk over [`Arena::LARGE`] keeps an allocation of its own).
    pub fn packed(first: i64, last: i64, rows: u8, data: &[u8], arena: &mut Arena) -> Sealed {
        let data = if data.len() > Arena::LARGE {
            Bytes::copy_from_slice(data)
        } else {
            arena.put(data)
        };
        Sealed {
            first,
            last,
            rows,
            data,
        }
    }
}

impl<'a> View<'a> {
    /// The directory of a sealed chunk's bytes, checked.
    pub fn of_sealed(first: i64, last: i64, rows: u8, d: &'a [u8]) -> Result<View<'a>, Corrupt> {
        let mut p = 0usize;
        let tlen = get_varint(d, &mut p)? as usize;
        let times = d
            .get(p..p.checked_add(tlen).ok_or(Corrupt)?)
            .ok_or(Corrupt)?;
        p += tlen;
        let ncols = get_varint(d, &mut p)? as usize;
        if ncols > d.len() {
            return Err(Corrupt);
        }
        if rows == 0 || usize::from(rows) > CHUNK_ROWS {
            return Err(Corrupt);
        }
        let mut cols = Vec::with_capacity(ncols);
        let full = (1u128 << rows) - 1;
        for _ in 0..ncols {
            let field = u16::try_from(get_varint(d, &mut p)?).map_err(|_| Corrupt)?;
            let coder = *d.get(p).ok_or(Corrupt)?;
            let (kind, _) = State::of_type_byte(coder).ok_or(Corrupt)?;
            let flag = *d.get(p + 1).ok_or(Corrupt)?;
            p += 2;
            let present = match flag {
                0 => full,
                1 => {
                    let b: [u8; 16] = d
                        .get(p..p + 16)
                        .ok_or(Corrupt)?
                        .try_into()
                        .map_err(|_| Corrupt)?;
                    p += 16;
                    u128::from_le_bytes(b)
                }
                _ => return Err(Corrupt),
            };
            let len = get_varint(d, &mut p)? as usize;
            let bits = d
                .get(p..p.checked_add(len).ok_or(Corrupt)?)
                .ok_or(Corrupt)?;
            p += len;
            cols.push(ColView {
                field,
                kind,
                present,
                bits: Cow::Borrowed(bits),
                coder,
            });
        }
        if p != d.len() {
            return Err(Corrupt);
        }
        Ok(View {
            rows: rows as usize,
            first,
            last,
            times: Cow::Borrowed(times),
            cols,
        })
    }
}

/// A chunk (open or sealed) as the decoder sees it.
#[derive(Debug)]
pub struct View<'a> {
    pub rows: usize,
    pub first: i64,
    pub last: i64,
    times: Cow<'a, [u8]>,
    cols: Vec<ColView<'a>>,
}

impl<'a> View<'a> {
    pub fn times(&self) -> Result<Vec<i64>, Corrupt> {
        decode_times(&self.times, self.rows)
    }

    pub fn cols(&self) -> &[ColView<'a>] {
        &self.cols
    }

    /// Every row, decoded (rows before `skip` left out).
    pub fn rows(&self, skip: usize) -> Result<Vec<Row>, Corrupt> {
        let times = self.times()?;
        let mut rows: Vec<Row> = times.into_iter().map(|t| (t, Vec::new())).collect();
        for c in self.cols() {
            for (r, v) in c.decode(self.rows)? {
                rows[r as usize].1.push((c.field, v));
            }
        }
        rows.drain(..skip.min(rows.len()));
        Ok(rows)
    }

    /// Decodes everything and checks the times: strictly increasing, matching the span, and
    /// each field at most once per row (what a snapshot must hold before it is trusted).
    pub fn check(&self, fields: usize) -> Result<(), Corrupt> {
        let times = self.times()?;
        if times.first() != Some(&self.first)
            || times.last() != Some(&self.last)
            || times.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(Corrupt);
        }
        let mut seen = vec![0u128; fields];
        for c in self.cols() {
            let s = seen.get_mut(c.field as usize).ok_or(Corrupt)?;
            if *s & c.present != 0 {
                return Err(Corrupt);
            }
            *s |= c.present;
            c.decode(self.rows)?;
        }
        Ok(())
    }
}

/// Seals `rows` into chunks of at most [`CHUNK_ROWS`].
pub fn seal_rows(rows: &[Row]) -> Vec<Sealed> {
    rows.chunks(CHUNK_ROWS)
        .map(|c| Open::from_rows(c).seal())
        .collect()
}

/// Bytes of [`put_varint`]'s encoding of `v`.
fn varint_len(v: u64) -> usize {
    (64 - v.leading_zeros() as usize).div_ceil(7).max(1)
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

pub fn get_varint(d: &[u8], p: &mut usize) -> Result<u64, Corrupt> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *d.get(*p).ok_or(Corrupt)?;
        *p += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(Corrupt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = FieldValue> {
        prop_oneof![
            any::<f64>().prop_map(FieldValue::Float),
            prop_oneof![
                Just(f64::NAN),
                Just(-f64::NAN),
                Just(f64::from_bits(0x7ff0_0000_0000_0001)),
                Just(f64::INFINITY),
                Just(f64::NEG_INFINITY),
                Just(-0.0),
                Just(0.0),
                Just(f64::MIN_POSITIVE / 2.0),
                (0..1000i32).prop_map(|i| f64::from(i) / 100.0),
            ]
            .prop_map(FieldValue::Float),
            any::<i64>().prop_map(FieldValue::Int),
            (-5i64..5).prop_map(|i| FieldValue::Int(1_000_000 + i)),
            any::<u64>().prop_map(FieldValue::Uint),
            any::<bool>().prop_map(FieldValue::Bool),
            prop_oneof![Just(String::new()), Just("ok".to_owned()), ".{0,40}"]
                .prop_map(FieldValue::Str),
        ]
    }

    /// Bit-exact equality (NaN payloads, -0.0).
    fn same(a: &FieldValue, b: &FieldValue) -> bool {
        match (a, b) {
            (FieldValue::Float(x), FieldValue::Float(y)) => x.to_bits() == y.to_bits(),
            _ => a == b,
        }
    }

    fn rows() -> impl Strategy<Value = Vec<Row>> {
        let times = prop_oneof![
            proptest::collection::btree_set(any::<i64>(), 0..CHUNK_ROWS),
            // Regular with jitter, as an agent writes.
            (
                any::<i32>(),
                proptest::collection::vec(-2_000_000i64..2_000_000, 0..CHUNK_ROWS)
            )
                .prop_map(|(base, jitter)| jitter
                    .iter()
                    .enumerate()
                    .map(|(i, j)| i64::from(base) * 1_000_000_000 + i as i64 * 10_000_000_000 + j)
                    .collect()),
        ];
        let row = proptest::collection::vec((0u16..6, value()), 0..6);
        (times, proptest::collection::vec(row, CHUNK_ROWS)).prop_map(|(ts, fs)| {
            ts.into_iter()
                .zip(fs)
                .map(|(t, mut f)| {
                    f.sort_by_key(|(k, _)| *k);
                    f.dedup_by_key(|(k, _)| *k);
                    (t, f)
                })
                .collect()
        })
    }

    fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
        for r in &mut rows {
            r.1.sort_by_key(|(k, _)| *k);
        }
        rows
    }

    fn assert_same(a: &[Row], b: &[Row]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x.0, y.0);
            assert_eq!(x.1.len(), y.1.len(), "{x:?} {y:?}");
            for (p, q) in x.1.iter().zip(&y.1) {
                assert!(p.0 == q.0 && same(&p.1, &q.1), "{p:?} != {q:?}");
            }
        }
    }

    /// The chunk as format 1 wrote it: every float column Gorilla-coded.
    fn format_1(rows: &[Row]) -> Sealed {
        let mut open = Open::from_rows(rows);
        for c in &mut open.cols {
            if let State::Raw(_) = c.st {
                let view = ColView {
                    field: c.field,
                    kind: c.kind,
                    present: c.present,
                    bits: Cow::Owned(c.bits()),
                    coder: FLOAT_RAW,
                };
                let (mut xor, mut w) = (Xor::default(), BitWriter::default());
                for (_, v) in view.decode(open.rows).unwrap() {
                    let FieldValue::Float(f) = v else {
                        panic!("{v:?} in a float column")
                    };
                    xor.put(&mut w, f);
                }
                (c.w, c.st) = (w, State::Float(xor));
            }
        }
        open.seal()
    }

    /// Percentages as the agent computes them (`100.0 * Δpart / Δtotal` over seconds =
    /// `ticks / 100.0`, the total a sum of floats) from any counters and deltas; in between,
    /// ratios off by a few ulps, exact ratios and the special values.
    fn agent_column() -> impl Strategy<Value = Vec<f64>> {
        let step = (0u64..1_100, 0u64..1_100, 0u8..40, any::<u64>());
        (
            1u64..1 << 46,
            1u64..1 << 46,
            proptest::collection::vec(step, 1..CHUNK_ROWS),
        )
            .prop_map(|(mut a, mut b, steps)| {
                let secs = |a: u64, b: u64| (a as f64 / 100.0, a as f64 / 100.0 + b as f64 / 100.0);
                steps
                    .into_iter()
                    .map(|(da, db, kind, x)| {
                        let (pa, pt) = secs(a, b);
                        (a, b) = (a + da, b + db);
                        let (na, nt) = secs(a, b);
                        let pct = 100.0 * (na - pa) / (nt - pt);
                        match kind {
                            0 => f64::from_bits(0x7ff0_0000_0000_0000 | (x >> 12).max(1)),
                            1 => -0.0,
                            2 => f64::NEG_INFINITY,
                            3 => f64::from_bits(x),
                            4 => (da as f64 * 100.0) / (da + db).max(1) as f64,
                            5 => f64::from_bits(pct.to_bits() ^ (x & 0xfff)),
                            _ => pct,
                        }
                    })
                    .collect()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Format-1 chunks (in version-1 snapshots) decode as they did.
        #[test]
        fn format_1_chunks_decode(rows in rows()) {
            prop_assume!(!rows.is_empty());
            let sealed = format_1(&rows);
            let v = sealed.view().unwrap();
            assert!(v.cols().iter().all(|c| c.kind != Kind::Float || c.coder == 0));
            v.check(6).unwrap();
            assert_same(&sorted(v.rows(0).unwrap()), &rows);
        }

        /// Points as the agent's cpu input writes them (the fields share one Δtotal, which
        /// the coder carries from column to column), a field of noise that goes to Gorilla
        /// after a chunk, and special values anywhere, sealed chunk after chunk as the store
        /// does (the hints carry on): every chunk decodes to what was appended.
        #[test]
        fn agent_points_round_trip_chunk_after_chunk(
            start in proptest::collection::vec(1u64..1 << 40, 4),
            steps in proptest::collection::vec(
                (proptest::collection::vec(0u64..400, 4), 0u8..60, any::<u64>()),
                CHUNK_ROWS..CHUNK_ROWS * 4,
            ),
        ) {
            let mut ticks = start;
            let mut open = Open::default();
            let mut rows: Vec<Row> = Vec::new();
            for (i, (deltas, kind, x)) in steps.into_iter().enumerate() {
                let secs = |t: &[u64]| {
                    let s: Vec<f64> = t.iter().map(|v| *v as f64 / 100.0).collect();
                    let total = s.iter().sum::<f64>();
                    (s, total)
                };
                let (last, last_total) = secs(&ticks);
                ticks.iter_mut().zip(&deltas).for_each(|(t, d)| *t += d);
                let (now, total) = secs(&ticks);
                let mut fields: Vec<(u16, FieldValue)> = (0..4)
                    .map(|k| {
                        let pct = 100.0 * (now[k] - last[k]) / (total - last_total);
                        let v = match (kind, k) {
                            (0, 0) => f64::NAN,
                            (1, 1) => -0.0,
                            (2, 2) => f64::INFINITY,
                            (3, 3) => f64::from_bits(x),
                            (4, _) => f64::from_bits(pct.to_bits() ^ (x & 0xff)),
                            _ => pct,
                        };
                        (k as u16, FieldValue::Float(v))
                    })
                    .collect();
                fields.push((4, FieldValue::Float(f64::from_bits(x >> 2))));
                let t = i as i64 * 10_000_000_000;
                open.append(t, &fields);
                rows.push((t, fields));
                if open.is_full() {
                    let sealed = open.seal_and_clear(&mut Arena::default());
                    let v = sealed.view().unwrap();
                    v.check(5).unwrap();
                    assert_same(&v.rows(0).unwrap(), &rows);
                    rows.clear();
                }
            }
            assert_same(&sorted(open.view().rows(0).unwrap()), &rows);
        }

        /// The agent's percentages and their neighbours round trip bit for bit, in both forms.
        #[test]
        fn percentages_round_trip(values in agent_column()) {
            let rows: Vec<Row> = values
                .iter()
                .enumerate()
                .map(|(i, v)| (i as i64 * 10_000_000_000, vec![(0, FieldValue::Float(*v))]))
                .collect();
            let open = Open::from_rows(&rows);
            assert_same(&open.view().rows(0).unwrap(), &rows);
            let v = open.seal();
            let v = v.view().unwrap();
            v.check(1).unwrap();
            assert_same(&v.rows(0).unwrap(), &rows);
        }

        /// Every value of every type, any times: the open and the sealed form decode to what
        /// was appended, bit for bit, and the sealed form passes its check.
        #[test]
        fn rows_round_trip(rows in rows()) {
            let open = Open::from_rows(&rows);
            let back = sorted(open.view().rows(0).unwrap());
            assert_same(&back, &rows);
            if !rows.is_empty() {
                let sealed = open.seal();
                let v = sealed.view().unwrap();
                v.check(6).unwrap();
                assert_same(&sorted(v.rows(0).unwrap()), &rows);
                assert_same(&sorted(v.rows(3).unwrap()), &rows[3.min(rows.len())..]);
            }
        }

        /// A damaged chunk is an error or decodes to something, never a panic.
        #[test]
        fn corrupt_chunks_never_panic(rows in rows(), at in any::<prop::sample::Index>(), b in any::<u8>(), cut in any::<bool>()) {
            prop_assume!(!rows.is_empty());
            let mut s = Open::from_rows(&rows).seal();
            let mut d = s.data.to_vec();
            let i = at.index(d.len());
            if cut { d.truncate(i) } else { d[i] ^= b.max(1) }
            s.data = Bytes::from(d);
            if let Ok(v) = s.view() {
                let _ = v.check(6);
                let _ = v.rows(0);
            }
        }
    }

    /// The column's bytes for `values` (one row each, 10 s apart), sealed.
    fn column_bytes(values: &[f64]) -> usize {
        let rows: Vec<Row> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (i as i64 * 10_000_000_000, vec![(0, FieldValue::Float(*v))]))
            .collect();
        let sealed = Open::from_rows(&rows).seal();
        let view = sealed.view().unwrap();
        assert_same(&view.rows(0).unwrap(), &rows);
        assert_eq!(view.cols()[0].coder, FLOAT_RATIO);
        view.cols()[0].bits.len()
    }

    /// What format 2 is for: the agent's cpu percentages cost under a third of Gorilla's
    /// bits (~15 bits instead of ~55), exact ratios as little, and what is no ratio hardly
    /// more than Gorilla's.
    #[test]
    fn percentages_cost_a_third_of_gorilla() {
        let mut rng = wk_core::testing::Xorshift(0x5eed);
        // One CPU's idle and user ticks, a host up for months (counters near 2^31); the
        // load walks, a tick more or less in one interval of ten.
        let (mut idle, mut user, mut du) = (2_000_000_000u64, 300_000_000u64, 100u64);
        let (mut pct, mut exact, mut noise) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..CHUNK_ROWS {
            let (pi, pu) = (idle as f64 / 100.0, user as f64 / 100.0);
            du = (du + rng.next_u64() % 21).saturating_sub(10).min(900);
            let total = match rng.next_u64() % 20 {
                0 => 999,
                1 => 1001,
                _ => 1000,
            };
            (idle, user) = (idle + total - du, user + du);
            let (ni, nu) = (idle as f64 / 100.0, user as f64 / 100.0);
            pct.push(100.0 * (nu - pu) / ((nu + ni) - (pu + pi)));
            exact.push(100.0 * du as f64 / total as f64);
            noise.push(rng.unit() * 100.0);
        }
        let gorilla = |v: &[f64]| {
            let (mut x, mut w) = (Xor::default(), BitWriter::default());
            v.iter().for_each(|f| x.put(&mut w, *f));
            w.byte_len()
        };
        let (p, g) = (column_bytes(&pct), gorilla(&pct));
        assert!(p * 3 < g, "agent percentages: {p} bytes, Gorilla {g}");
        let e = column_bytes(&exact);
        assert!(e < CHUNK_ROWS * 2, "exact ratios: {e} bytes");
        let (n, g) = (column_bytes(&noise), gorilla(&noise));
        assert!(
            n <= g + CHUNK_ROWS * 3 / 8,
            "no ratio: {n} bytes, Gorilla {g}"
        );
    }

    /// A column of measurements (no ratio) costs Gorilla's CPU after the first chunk that
    /// showed it: coded as format 1 for [`floats::PLAIN_CHUNKS`] − 1 chunks, then tried with
    /// the model again; a column of ratios beside it stays format 2.
    #[test]
    fn measurements_go_to_gorilla_until_the_model_is_tried_again() {
        let mut rng = wk_core::testing::Xorshift(0x5eed);
        let mut open = Open::default();
        let mut coders = Vec::new();
        for chunk in 0..floats::PLAIN_CHUNKS as usize + 2 {
            let mut rows = Vec::new();
            for i in 0..CHUNK_ROWS {
                let t = (chunk * CHUNK_ROWS + i) as i64 * 10_000_000_000;
                let fields = vec![
                    (0, FieldValue::Float(rng.unit() * 1e3)),
                    (
                        1,
                        FieldValue::Float(100.0 * (rng.next_u64() % 997) as f64 / 997.0),
                    ),
                ];
                open.append(t, &fields);
                rows.push((t, fields));
            }
            let sealed = open.seal_and_clear(&mut Arena::default());
            let v = sealed.view().unwrap();
            assert_same(&v.rows(0).unwrap(), &rows);
            coders.push((v.cols()[0].coder, v.cols()[1].coder));
        }
        let plain = floats::PLAIN_CHUNKS as usize;
        for (i, c) in coders.iter().enumerate() {
            let want = if i == 0 || i == plain { FLOAT_RATIO } else { 0 };
            assert_eq!(*c, (want, FLOAT_RATIO), "chunk {i}: {coders:?}");
        }
    }

    /// The costs the window accounts cover the structs they stand for.
    #[test]
    fn accounted_costs_cover_the_structs() {
        let col = std::mem::size_of::<OpenCol>();
        assert!(
            col <= COL_COST,
            "OpenCol is {col} bytes, COL_COST {COL_COST}"
        );
    }

    #[test]
    fn regular_times_and_steady_values_cost_bits() {
        let rows: Vec<Row> = (0..CHUNK_ROWS as i64)
            .map(|i| {
                (
                    1_700_000_000_000_000_000 + i * 10_000_000_000,
                    vec![
                        (0, FieldValue::Float(50.0)),
                        (1, FieldValue::Int(1_000 + 100 * i)),
                        (2, FieldValue::Bool(true)),
                        (3, FieldValue::Str("ok".into())),
                    ],
                )
            })
            .collect();
        let s = Open::from_rows(&rows).seal();
        // 4 columns of ~120 bits, headers and the first values: well under 1 byte per value.
        assert!(s.data.len() < 150, "{}", s.data.len());
    }
}
