//! The float coder of format 2: a value that is a ratio is stored as that ratio, a value that
//! is not as Gorilla's XOR. What the agents write is mostly percentages of counter deltas
//! (`usage_user = 100 × Δuser / Δtotal` over /proc/stat ticks): ratios of small integers
//! with a denominator that changes little from one point to the next. Such a value costs its
//! numerator's change and, for the float rounding of the agent's arithmetic, a couple of bits
//! (the agent model below) or the rounding as a residual in ulps; Gorilla's XOR costs the
//! ~50 mantissa bits the rounding makes random (docs/performance-alerter.md, "Stream window").
//!
//! Per value, after the chunk's first (its 64 bits):
//!
//! ```text
//! 0                          the previous value again
//! 10  ratio                  a ratio with the column's denominator ("home")
//! 110 Δden ratio             a ratio with home + Δden (Δden beyond ±8 makes it the home)
//! 111 xor                    Gorilla: 0 + the bits in the previous window | 1 + lead(5) sig(6) bits
//! ratio = Δn mode            n = the previous value's numerator at this denominator + Δn
//! mode  = 0 k1 k2            the agent model on the grids in use
//!       | 10 e1(8) e2(8) k1 k2   ... on new grids
//!       | 11 residual        100 n / den, plus the residual in ulps: 0 + w bits | 1 + w(6) + w bits
//! ```
//!
//! Every path decodes to exactly the bits appended (the encoder checks the agent model's
//! result before it uses it, and a residual is exact by construction), so NaN payloads, ±inf
//! and -0.0 round trip; what is not a ratio costs Gorilla's bits plus two.

use super::{BitReader, BitWriter, Corrupt};

/// Signed values in buckets: `0` for zero, then `1…10` + the bucket's bits, the last
/// (all ones) with 64 bits.
fn put_signed(w: &mut BitWriter, v: i64, buckets: &[u32]) {
    if v == 0 {
        w.write(0, 1);
        return;
    }
    for (i, &b) in buckets.iter().enumerate() {
        if fits(v, b) {
            // i + 1 ones, a zero, then the value.
            w.write((1u64 << (i + 2)) - 2, i as u32 + 2);
            w.write(v as u64, b);
            return;
        }
    }
    let n = buckets.len() as u32 + 1;
    w.write((1u64 << n) - 1, n);
    w.write(v as u64, 64);
}

fn signed_cost(v: i64, buckets: &[u32]) -> u32 {
    if v == 0 {
        return 1;
    }
    for (i, &b) in buckets.iter().enumerate() {
        if fits(v, b) {
            return i as u32 + 2 + b;
        }
    }
    buckets.len() as u32 + 1 + 64
}

fn get_signed(r: &mut BitReader<'_>, buckets: &[u32]) -> Result<i64, Corrupt> {
    if !r.bit()? {
        return Ok(0);
    }
    for &b in buckets {
        if !r.bit()? {
            return Ok(super::sign_extend(r.read(b)?, b));
        }
    }
    Ok(r.read(64)? as i64)
}

fn fits(v: i64, bits: u32) -> bool {
    bits >= 64 || super::fits(v, bits)
}

/// Buckets of a numerator's change (a percentage of ~1,000 ticks moves by tens).
const DN: [u32; 4] = [5, 9, 16, 32];
/// Of a denominator's change (ticks per interval: ±1 or 2; a new denominator: its size).
const DDEN: [u32; 3] = [4, 12, 24];
/// Of the agent model's grid steps (mostly -2..2).
const K: [u32; 3] = [2, 5, 12];
/// Grid searches per column and chunk (each costs up to a few hundred divisions).
const GRID_SEARCHES: u8 = 4;
/// Denominators up to this are looked for (a 64 GiB host's memory in pages is 2^24).
const MAX_DEN: i64 = 1 << 24;
/// Numerators up to this (100 × n stays exact in a float).
const MAX_N: f64 = (1u64 << 44) as f64;
/// A ratio is worth it when the value is within this many ulps of it.
const TOLERANCE: u64 = 1 << 24;

/// `x` to the nearest integer (ties to even) for |x| < 2^51, else `x`: two adds, where
/// `f64::round` is a call into libm; encoder and decoder round alike.
#[inline]
fn round(x: f64) -> f64 {
    const C: f64 = 6_755_399_441_055_744.0; // 1.5 × 2^52: the sum's ulp is 1
    let r = (x + C) - C;
    if x.abs() < 2_251_799_813_685_248.0 {
        r
    } else {
        x
    }
}

/// [`round`] without its guard, for the encoder's candidates that a range check and the
/// bit-exact check then vet: for |x| ≥ 2^51 it gives some value ≥ 2^50 in magnitude, never
/// a small one.
#[inline(always)]
fn round_fast(x: f64) -> f64 {
    const C: f64 = 6_755_399_441_055_744.0;
    (x + C) - C
}

/// `x < max`, false for NaN (what the checks before a cast rely on).
#[inline(always)]
fn below(x: f64, max: f64) -> bool {
    x < max
}

/// 2^e (e within the normal exponents; clamped).
fn pow2(e: i32) -> f64 {
    f64::from_bits(((1023 + e.clamp(-1022, 1023)) as u64) << 52)
}

/// The ratio's float: the correctly rounded `100 n / den`.
fn ratio(n: i64, den: i64) -> f64 {
    (n as f64 * 100.0) / den as f64
}

/// The numerator of the previous value at `den` (what the change is coded against).
fn predict(prev: f64, den: i64) -> i64 {
    // NaN gives 0 and infinities saturate: any value will do, both sides compute the same.
    round(prev * den as f64 * 0.01) as i64
}

/// `v` as `100 n / den` plus a residual in ulps, when the residual is small.
fn fit_ratio(v: f64, den: i64) -> Option<(i64, i64)> {
    let n = round(v * den as f64 * 0.01);
    if !below(n.abs(), MAX_N) {
        return None;
    }
    let n = n as i64;
    let r = (v.to_bits() as i64).wrapping_sub(ratio(n, den).to_bits() as i64);
    (r.unsigned_abs() < TOLERANCE).then_some((n, r))
}

/// The grids of the agent model: a part's ticks in seconds (`ticks / 100.0`, a float near
/// 2^(e1+52) and so a multiple of 2^e1) and the total's (a multiple of 2^e2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Grid {
    e1: i8,
    e2: i8,
}

impl Grid {
    fn new(e1: i8, e2: i8) -> Grid {
        Grid { e1, e2 }
    }

    /// `ticks / 100` in steps of 2^e, to the nearest step (the same on both sides).
    fn steps(ticks: i64, e: i8) -> f64 {
        round(ticks as f64 * (pow2(-i32::from(e)) * 0.01))
    }

    /// The agent's `100.0 * Δpart / Δtotal`: Δpart `n` ticks, as seconds on its grid and
    /// `k1` steps off the nearest; Δtotal `den` ticks, `k2` steps off.
    fn value(&self, n: i64, den: i64, k1: i64, k2: i64) -> f64 {
        let d = (Grid::steps(n, self.e1) + k1 as f64) * pow2(self.e1.into());
        let t = (Grid::steps(den, self.e2) + k2 as f64) * pow2(self.e2.into());
        100.0 * d / t
    }

    /// The steps that give exactly `v`, if any (the part's error is within a step; the
    /// total's step is read off `v`).
    fn fit(&self, v: f64, n: i64, den: i64) -> Option<(i64, i64)> {
        let base_t = Grid::steps(den, self.e2);
        let base_d = Grid::steps(n, self.e1);
        if !(base_t.abs() < MAX_N && base_d.abs() < MAX_N) {
            return None;
        }
        let (p1, inv_p2) = (pow2(self.e1.into()), pow2(-i32::from(self.e2)));
        for k1 in [0i64, 1, -1] {
            let d = (base_d + k1 as f64) * p1;
            if d == 0.0 {
                continue;
            }
            let kt = round(100.0 * d / v * inv_p2);
            if !below(kt.abs(), MAX_N) {
                continue;
            }
            let k2 = (kt - base_t) as i64;
            for k2 in [k2, k2 + 1, k2 - 1] {
                if self.value(n, den, k1, k2).to_bits() == v.to_bits() {
                    return Some((k1, k2));
                }
            }
        }
        None
    }

    /// A grid that gives `v` from `n / den` and the `recent` values from theirs. Beside
    /// `near` (the grid that stopped fitting) when there is one: finer totals first (a grid
    /// coarser than the agent's fits values by chance, a finer one always, for a bit more per
    /// value), then the part's grid a step either way (a counter that crossed a power of
    /// two). Else around the size of the rounding (`r` ulps from the plain ratio), coarsest
    /// first.
    fn search(
        v: f64,
        (n, den, r): (i64, i64, i64),
        recent: &[(f64, i64, i64)],
        near: Option<Grid>,
    ) -> Option<(Grid, (i64, i64))> {
        if r == 0 || !v.is_normal() {
            return None;
        }
        let try_grid = |e1: i32, e2: i32| {
            let g = Grid::new(i8::try_from(e1).ok()?, i8::try_from(e2).ok()?);
            let k = g.fit(v, n, den)?;
            recent
                .iter()
                .all(|&(v, n, den)| g.fit(v, n, den).is_some())
                .then_some((g, k))
        };
        if let Some(g) = near {
            let (e1, e2) = (i32::from(g.e1), i32::from(g.e2));
            return [(0, -1), (0, -2), (1, 0), (-1, 0), (1, -1), (-1, -1), (1, 1)]
                .into_iter()
                .find_map(|(a, b)| try_grid(e1 + a, e2 + b));
        }
        // The part's error (a step of its grid) shows in v scaled by 100 / Δtotal seconds.
        let ulp = pow2(((v.to_bits() >> 52) & 0x7ff) as i32 - 1075);
        let step = r.unsigned_abs() as f64 * ulp * den as f64 / 1e4;
        let guess = (step.log2().floor() as i32).clamp(-1000, 1000);
        (guess - 3..=guess + 2)
            .rev()
            .flat_map(|e1| (e1..=e1 + 5).rev().map(move |e2| (e1, e2)))
            .find_map(|(e1, e2)| try_grid(e1, e2))
    }
}

/// The denominator (≤ [`MAX_DEN`]) of the simplest fraction near `v / 100`: the first
/// continued-fraction convergent within the tolerance.
fn find_den(v: f64) -> Option<i64> {
    let x0 = (v * 0.01).abs();
    if !(x0 > 0.0 && x0 < MAX_N) {
        return None;
    }
    // Denominators of the convergents: k(i) = a(i) k(i-1) + k(i-2), from k(-2) = 1, k(-1) = 0.
    let (mut k0, mut k1) = (1i64, 0i64);
    let mut x = x0;
    for _ in 0..40 {
        let a = x.floor();
        if !below(a, MAX_DEN as f64) {
            return None;
        }
        let k = (a as i64).checked_mul(k1)?.checked_add(k0)?;
        if k > MAX_DEN {
            return None;
        }
        (k0, k1) = (k1, k);
        if fit_ratio(v, k).is_some() {
            return Some(k);
        }
        let f = x - a;
        if f == 0.0 {
            return None;
        }
        x = 1.0 / f;
    }
    None
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The denominator to code with when `v` is `p / q` in lowest terms and `base` did not fit:
/// their common multiple when `base` was a divisor of the column's denominator (ticks per
/// interval: 4,000 from 800 and 500), the multiple of `q` nearest `base` when that is close
/// (999 from 333 beside 1,000), else `q`.
fn grow(base: i64, q: i64) -> i64 {
    if base <= 0 {
        return q;
    }
    let lcm = (base / gcd(base, q)).saturating_mul(q);
    if lcm <= base.saturating_mul(16) && lcm <= MAX_DEN {
        return lcm;
    }
    let near = ((base as f64 / q as f64).round() as i64).max(1) * q;
    if (near - base).abs() <= 8 { near } else { q }
}

/// What the encoder remembers of a column between chunks (the decoder needs none of it:
/// the chunk's bits say everything).
#[derive(Debug, Clone, Copy)]
pub struct Hint {
    den: i64,
    grid: Option<Grid>,
    /// Changed values in a row not coded as ratios (then only cheap looks until the next
    /// chunk: any float is near some fraction with a large denominator, so a column of
    /// measurements would otherwise pay a continued-fraction search per value).
    misses: u8,
    /// The continued-fraction search done in this chunk.
    searched_den: bool,
    /// Grid searches left in this chunk.
    grid_searches: u8,
    /// Chunks still to code with Gorilla only ([`PLAIN_CHUNKS`]).
    plain: u8,
    /// The last values coded as ratios with a rounding, (value, numerator, denominator):
    /// a grid found must fit them too.
    recent: [(f64, i64, i64); 2],
    recent_len: u8,
}

impl Default for Hint {
    fn default() -> Hint {
        Hint {
            den: 0,
            grid: None,
            misses: 0,
            searched_den: false,
            grid_searches: GRID_SEARCHES,
            plain: 0,
            recent: [(0.0, 0, 0); 2],
            recent_len: 0,
        }
    }
}

impl Hint {
    fn remember(&mut self, v: f64, n: i64, den: i64) {
        self.recent[1] = self.recent[0];
        self.recent[0] = (v, n, den);
        self.recent_len = (self.recent_len + 1).min(2);
    }
}

impl Hint {
    /// A new chunk: the searches may run again.
    pub(super) fn next_chunk(&mut self) {
        self.searched_den = false;
        self.grid_searches = GRID_SEARCHES;
        self.misses = 0;
    }
}

/// The state of a format-2 float column (the same on both sides).
#[derive(Debug, Clone, Copy)]
pub(super) struct Floats {
    n: u32,
    prev: u64,
    /// The denominator ratios are coded against (0: none yet in this chunk).
    home: i64,
    grid: Option<Grid>,
    /// The residual width in use (0: none yet).
    width: u32,
    /// Gorilla's window (`lead` 0xff: none yet).
    lead: u8,
    trail: u8,
}

impl Default for Floats {
    fn default() -> Floats {
        Floats {
            n: 0,
            prev: 0,
            home: 0,
            grid: None,
            width: 0,
            lead: 0xff,
            trail: 0,
        }
    }
}

/// How a ratio's value is coded.
enum Mode {
    Agent(Grid, i64, i64),
    Residual(i64),
}

impl Floats {
    fn new_home(&mut self, den: i64) {
        if self.home == 0 || (den - self.home).abs() > 8 {
            self.home = den;
        }
    }

    /// Bits of the XOR path for `x` (≠ 0), and whether it reuses the window.
    fn xor_cost(&self, x: u64) -> (u32, bool) {
        let lead = x.leading_zeros().min(31);
        let trail = x.trailing_zeros();
        if self.lead != 0xff && lead >= u32::from(self.lead) && trail >= u32::from(self.trail) {
            (1 + 64 - u32::from(self.lead) - u32::from(self.trail), true)
        } else {
            (1 + 11 + 64 - lead - trail, false)
        }
    }

    fn residual_cost(&self, r: i64) -> (u32, u32) {
        let need = 65 - (r ^ (r >> 63)).leading_zeros();
        let need = need.min(64);
        if self.width != 0 && need <= self.width && need + 2 >= self.width {
            (1 + self.width, self.width)
        } else {
            (1 + 6 + need, need)
        }
    }

    /// The ratio that codes `v` best: (denominator, numerator, residual), looked for at
    /// the home denominator, beside it, then by continued fractions.
    fn find_ratio(&self, v: f64, hint: &mut Hint) -> Option<(i64, i64, i64)> {
        let base = if self.home != 0 { self.home } else { hint.den };
        if base != 0 {
            if let Some((n, r)) = fit_ratio(v, base) {
                return Some((base, n, r));
            }
            if hint.misses < 2 {
                for k in [1i64, -1, 2, -2, 3, -3, 4, -4] {
                    let den = base + k;
                    if den > 0
                        && let Some((n, r)) = fit_ratio(v, den)
                    {
                        return Some((den, n, r));
                    }
                }
            }
        }
        if hint.misses >= 2 && hint.searched_den {
            return None;
        }
        hint.searched_den = true;
        let den = grow(base, find_den(v)?);
        fit_ratio(v, den).map(|(n, r)| (den, n, r))
    }

    /// Writes a changed value the fast path did not take; true when coded as a ratio.
    fn put_changed(&mut self, w: &mut BitWriter, v: f64, hint: &mut Hint) -> bool {
        let x = v.to_bits() ^ self.prev;
        let (xor_bits, _) = self.xor_cost(x);
        let xor_bits = xor_bits + 3;
        let found = if v.is_finite() {
            self.find_ratio(v, hint)
        } else {
            None
        };
        // (bits, bits the chunk pays once: the first denominator and grids, den, n, mode)
        let mut best: Option<(u32, u32, i64, i64, Mode)> = None;
        if let Some((den, n, r)) = found {
            let (head, setup) = if self.home != 0 && den == self.home {
                (2, 0)
            } else {
                let d = signed_cost(den - self.home, &DDEN);
                (3 + d, if self.home == 0 { d } else { 0 })
            };
            let pred = predict(f64::from_bits(self.prev), den);
            let head = head + signed_cost(n.wrapping_sub(pred), &DN);
            let (res_bits, _) = self.residual_cost(r);
            best = Some((head + 2 + res_bits, setup, den, n, Mode::Residual(r)));
            let mut agent = None;
            if r != 0 {
                let known = self.grid.or(hint.grid);
                if let Some(g) = known
                    && let Some((k1, k2)) = g.fit(v, n, den)
                {
                    agent = Some((g, k1, k2));
                }
                if agent.is_none() && hint.grid_searches > 0 && hint.recent_len == 2 {
                    hint.grid_searches -= 1;
                    agent = Grid::search(v, (n, den, r), &hint.recent, known)
                        .map(|(g, (k1, k2))| (g, k1, k2));
                }
                hint.remember(v, n, den);
            }
            if let Some((g, k1, k2)) = agent {
                let (mode, grid_setup) = match self.grid {
                    Some(h) if h == g => (1, 0),
                    Some(_) => (2 + 16, 0),
                    None => (2 + 16, 16),
                };
                let cost = head + mode + k1_cost(k1) + signed_cost(k2, &K);
                if best.as_ref().is_none_or(|b| cost < b.0) {
                    best = Some((cost, setup + grid_setup, den, n, Mode::Agent(g, k1, k2)));
                }
            }
        }
        // What a chunk pays once is left out of the comparison: it buys the cheap values after.
        let best = best.filter(|b| b.0 - b.1 < xor_bits);
        hint.misses = if best.is_some() {
            0
        } else {
            hint.misses.saturating_add(1)
        };
        match best {
            Some((_, _, den, n, mode)) => {
                self.put_ratio(w, den, n, mode, hint);
                // The next chunk starts from the home (not from a neighbour of it).
                hint.den = self.home;
                true
            }
            None => {
                w.write(0b111, 3);
                super::put_xor(w, x, &mut self.lead, &mut self.trail);
                false
            }
        }
    }

    /// Writes a ratio (the denominator, the numerator's change and the mode).
    fn put_ratio(&mut self, w: &mut BitWriter, den: i64, n: i64, mode: Mode, hint: &mut Hint) {
        if self.home != 0 && den == self.home {
            w.write(0b10, 2);
        } else {
            w.write(0b110, 3);
            put_signed(w, den - self.home, &DDEN);
            self.new_home(den);
        }
        let pred = predict(f64::from_bits(self.prev), den);
        put_signed(w, n.wrapping_sub(pred), &DN);
        match mode {
            Mode::Agent(g, k1, k2) => {
                if self.grid == Some(g) {
                    w.write(0, 1);
                } else {
                    w.write(0b10, 2);
                    w.write(g.e1 as u8 as u64, 8);
                    w.write(g.e2 as u8 as u64, 8);
                    self.grid = Some(g);
                    hint.grid = Some(g);
                }
                match k1 {
                    0 => w.write(0, 1),
                    1 => w.write(0b10, 2),
                    _ => w.write(0b11, 2),
                }
                put_signed(w, k2, &K);
            }
            Mode::Residual(r) => {
                w.write(0b11, 2);
                let (_, width) = self.residual_cost(r);
                if width == self.width {
                    w.write(0, 1);
                } else {
                    w.write(1, 1);
                    w.write(u64::from(width % 64), 6);
                    self.width = width;
                }
                w.write(r as u64, width);
            }
        }
    }

    pub(super) fn get(&mut self, r: &mut BitReader<'_>) -> Result<f64, Corrupt> {
        if self.n == 0 {
            self.prev = r.read(64)?;
        } else if r.bit()? {
            self.prev = self.get_changed(r)?;
        }
        self.n += 1;
        Ok(f64::from_bits(self.prev))
    }

    fn get_changed(&mut self, r: &mut BitReader<'_>) -> Result<u64, Corrupt> {
        let den = if !r.bit()? {
            self.home
        } else if !r.bit()? {
            let den = self.home.wrapping_add(get_signed(r, &DDEN)?);
            if den <= 0 {
                return Err(Corrupt);
            }
            self.new_home(den);
            den
        } else {
            // Gorilla.
            return Ok(self.prev ^ super::get_xor(r, &mut self.lead, &mut self.trail)?);
        };
        if den <= 0 {
            return Err(Corrupt);
        }
        let n = predict(f64::from_bits(self.prev), den).wrapping_add(get_signed(r, &DN)?);
        if !r.bit()? {
            let g = self.grid.ok_or(Corrupt)?;
            return Ok(self.agent(r, g, n, den)?.to_bits());
        }
        if !r.bit()? {
            let g = Grid::new(r.read(8)? as u8 as i8, r.read(8)? as u8 as i8);
            self.grid = Some(g);
            return Ok(self.agent(r, g, n, den)?.to_bits());
        }
        if r.bit()? {
            self.width = match r.read(6)? as u32 {
                0 => 64,
                w => w,
            };
        } else if self.width == 0 {
            return Err(Corrupt);
        }
        let res = super::sign_extend(r.read(self.width)?, self.width);
        Ok(ratio(n, den).to_bits().wrapping_add(res as u64))
    }

    fn agent(&self, r: &mut BitReader<'_>, g: Grid, n: i64, den: i64) -> Result<f64, Corrupt> {
        let k1 = if !r.bit()? {
            0
        } else if !r.bit()? {
            1
        } else {
            -1
        };
        let k2 = get_signed(r, &K)?;
        Ok(g.value(n, den, k1, k2))
    }
}

fn k1_cost(k1: i64) -> u32 {
    if k1 == 0 { 1 } else { 2 }
}

/// What the agent model gives for a value: (denominator, numerator, k1, k2).
type Fit = (i64, i64, i64, i64);

/// The agent model at one denominator on fixed grids, its constants computed once a chunk.
#[derive(Clone, Copy)]
struct Model {
    den: i64,
    g: Grid,
    /// den / 100; 2^-e1 / 100; 2^e1; 2^-e2; 2^e2; 2^-e2 / 100; the total's nearest steps.
    c: f64,
    s1: f64,
    p1: f64,
    s2: f64,
    p2: f64,
    s2c: f64,
    bt: f64,
}

impl Model {
    fn new(den: i64, g: Grid) -> Model {
        let (e1, e2) = (i32::from(g.e1), i32::from(g.e2));
        Model {
            den,
            g,
            c: den as f64 * 0.01,
            s1: pow2(-e1) * 0.01,
            p1: pow2(e1),
            s2: pow2(-e2),
            p2: pow2(e2),
            s2c: pow2(-e2) * 0.01,
            bt: Grid::steps(den, g.e2),
        }
    }

    /// The numerator and grid steps that give exactly `v`, with the total (seconds) they
    /// imply, and how far the best candidate for the total's steps was from a whole number
    /// (tiny when the model holds; then only the last division checks it). Selects, not
    /// branches: a chunk's values go through this in a loop of their own, where one value's
    /// divisions overlap the next one's.
    #[inline]
    fn fit(&self, v: f64) -> (Option<(Fit, f64)>, f64) {
        let nf = round_fast(v * self.c);
        let base = round(nf * self.s1);
        // The total's steps for the part `base + k1` steps: x(k1) = 100 (base + k1) 2^e1 / v
        // / 2^e2; the right k1 (0 three times in four, at random) makes it a whole number.
        let q = 100.0 * self.p1 / v * self.s2;
        let err = |k1: f64| {
            let x = (base + k1) * q;
            (x - round_fast(x)).abs()
        };
        let (mut k1, mut best) = (0.0, err(0.0));
        let (ep, em) = (err(1.0), err(-1.0));
        if ep < best {
            (k1, best) = (1.0, ep);
        }
        if em < best {
            (k1, best) = (-1.0, em);
        }
        let d = (base + k1) * self.p1;
        let kt = round_fast((base + k1) * q);
        let t = kt * self.p2;
        let exact = (100.0 * d / t).to_bits() == v.to_bits();
        if !(exact && d != 0.0 && nf.abs() < MAX_N) {
            return (None, best);
        }
        let (n, k2) = (nf as i64, (kt - self.bt) as i64);
        debug_assert_eq!(
            self.g.value(n, self.den, k1 as i64, k2).to_bits(),
            v.to_bits()
        );
        (Some(((self.den, n, k1 as i64, k2), t)), best)
    }

    /// [`Model::fit`] when the total is known (`t` seconds over `den` ticks: what another
    /// field of the same row fitted, for the fields of a point share the agent's Δtotal).
    /// One division, no search: the part's steps are read off `v t / 100`.
    #[inline]
    fn fit_at(&self, v: f64, den: i64, t: f64) -> Option<Fit> {
        let den_f = den as f64;
        let nf = round_fast(v * (den_f * 0.01));
        // The part's steps as the decoder reads them off n.
        let base = round(nf * self.s1);
        // The total on this column's grid (another column may have a finer one).
        let kt = t * self.s2;
        let sd = round_fast(v * t * self.s1);
        let k1 = sd - base;
        // NaN fails every comparison: it is never taken for a ratio here.
        if !(kt == round_fast(kt) && kt.abs() < MAX_N && k1.abs() <= 1.0 && nf.abs() < MAX_N) {
            return None;
        }
        let d = sd * self.p1;
        if d == 0.0 || (100.0 * d / (kt * self.p2)).to_bits() != v.to_bits() {
            return None;
        }
        // Grid::steps(den, e2), as the decoder computes it.
        let k2 = (kt - round(den_f * self.s2c)) as i64;
        let (n, k1) = (nf as i64, k1 as i64);
        debug_assert_eq!(self.g.value(n, den, k1, k2).to_bits(), v.to_bits());
        Some((den, n, k1, k2))
    }
}

/// Codes of a signed value in buckets, by the bits it needs (index 0: the value 0): the
/// bucket's prefix, its length and the payload bits (payload 0xff: past the buckets).
const fn codes(buckets: &[u32]) -> [(u64, u32, u32); 65] {
    let mut t = [(0u64, 0u32, 0xffu32); 65];
    t[0] = (0, 1, 0);
    let mut need = 1;
    while need <= 64 {
        let mut i = 0;
        while i < buckets.len() {
            if need <= buckets[i] as usize {
                t[need] = ((1u64 << (i + 2)) - 2, i as u32 + 2, buckets[i]);
                break;
            }
            i += 1;
        }
        need += 1;
    }
    t
}

const DN_CODES: [(u64, u32, u32); 65] = codes(&[5, 9, 16]);
const K_CODES: [(u64, u32, u32); 65] = codes(&K);
const DDEN_CODES: [(u64, u32, u32); 65] = codes(&[4]);

/// [`put_signed`]'s code of `v` as one value and its length (length past 64: not here).
#[inline(always)]
fn code(v: i64, table: &[(u64, u32, u32); 65]) -> (u64, u32) {
    let need = if v == 0 {
        0
    } else {
        65 - (v ^ (v >> 63)).leading_zeros() as usize
    };
    let (prefix, len, bits) = table[need.min(64)];
    if bits == 0xff {
        return (0, 99);
    }
    let mask = (1u64 << bits) - 1;
    ((prefix << bits) | (v as u64 & mask), len + bits)
}

/// The code of a value the agent model fits (`dden` from the home denominator, `dn` the
/// numerator's change, `k1`, `k2`) and its length; a length past 64 when a code is long.
/// `'10'` home | `'110'` + Δden (within ±8: the home stays); Δn; `'0'` these grids; k1
/// (`'0'`, `'10'` +1, `'11'` -1); k2.
#[inline(always)]
fn fast_code(dden: i64, dn: i64, k1: i64, k2: i64) -> (u64, u32) {
    let (dn_code, dn_len) = code(dn, &DN_CODES);
    let (k2_code, k2_len) = code(k2, &K_CODES);
    let (head, head_len) = if dden == 0 {
        (0b10, 2)
    } else {
        let (c, l) = code(dden, &DDEN_CODES);
        ((0b110 << l.min(60)) | c, 3 + l)
    };
    let (k1_code, k1_len) = match k1 {
        0 => (0b00, 2),
        1 => (0b010, 3),
        _ => (0b011, 3),
    };
    let len = head_len + dn_len + k1_len + k2_len;
    if len > 64 {
        return (0, len);
    }
    let code = (((head << dn_len | dn_code) << k1_len | k1_code) << k2_len) | k2_code;
    (code, len)
}

impl Floats {
    /// Writes a value the agent model fits (on the grids in use) in one go. False when a
    /// code is long or Gorilla would be cheaper.
    #[inline(always)]
    fn put_code(&mut self, w: &mut BitWriter, v: f64, (code, len): (u64, u32)) -> bool {
        if len > 64 || (len > 24 && len >= self.xor_cost(v.to_bits() ^ self.prev).0 + 3) {
            return false;
        }
        w.write(code, len);
        true
    }
}

/// The Δtotal of each row of a chunk (its ticks and seconds, ticks 0: not known yet), as the
/// first float column coded found it: the fields of an agent's point share it, so the next
/// columns check a value with one division instead of searching.
pub(super) type Totals = [(i64, f64); super::CHUNK_ROWS];

/// Chunks a column is coded with Gorilla only after one where the agent model and ratios
/// coded under an eighth of the changed values (a measurement, not a ratio): they then
/// cost Gorilla's CPU. Every this many chunks the model is tried again.
pub(super) const PLAIN_CHUNKS: u8 = 8;

/// Codes a chunk's float column (its values in row order) into `w`: format 2 (true), or
/// Gorilla's XOR (format 1, false) for a column where ratios did not pay in the chunk
/// before. `totals` (when every row has a value) carries the rows' Δtotal from column to
/// column. The agent model at the column's denominator and grids so far is tried on every
/// value first, and the codes made, in a loop of their own: there the values do not depend
/// on one another, so the divisions of one overlap those of the next. What it does not fit
/// goes through the searches.
pub(super) fn encode(
    values: &[f64],
    hint: &mut Hint,
    mut totals: Option<&mut Totals>,
    w: &mut BitWriter,
) -> bool {
    if hint.plain > 0 {
        hint.plain -= 1;
        let mut x = super::Xor::default();
        for &v in values {
            x.put(w, v);
        }
        return false;
    }
    hint.next_chunk();
    let n = values.len().min(super::CHUNK_ROWS);
    let mut fast = [(0i64, 0i64, 0i64, 0i64); super::CHUNK_ROWS];
    // The codes when the home is the column's denominator so far (length 0: no fit).
    let mut codes = [(0u64, 0u32); super::CHUNK_ROWS];
    let mut at_home = 0;
    let known = match hint.grid {
        Some(g) if hint.den > 0 => {
            let home = Model::new(hint.den, g);
            for i in 1..n {
                let v = values[i];
                // A value repeated costs a bit in pass 2 (the constant zeros of idle cpu
                // fields: half the values of a cpu point).
                if v.to_bits() == values[i - 1].to_bits() {
                    continue;
                }
                let row = totals.as_deref().map_or((0, 0.0), |t| t[i]);
                let mut fit = if row.0 != 0 {
                    home.fit_at(v, row.0, row.1).filter(|f| f.3.abs() < 1 << 11)
                } else {
                    None
                };
                if fit.is_none() {
                    let (f, err) = home.fit(v);
                    // The total a tick more or less (the ratio's denominator): either far
                    // from a whole number of steps, or a whole number far away (a step is
                    // 2^e2 s, a tick 10 ms).
                    let far = f.is_some_and(|(f, _)| f.3.abs() >= 1 << 11);
                    let mut f = f.filter(|_| !far);
                    if f.is_none() && (far || err > 1e-3) {
                        f = [1, -1, 2, -2].into_iter().find_map(|j| {
                            Model::new(hint.den + j, g)
                                .fit(v)
                                .0
                                .filter(|(f, _)| f.3.abs() < 1 << 11)
                        });
                    }
                    if let (Some((f, t)), Some(totals)) = (f, totals.as_deref_mut()) {
                        totals[i] = (f.0, t);
                    }
                    fit = f.map(|(f, _)| f);
                }
                if let Some(f @ (den, num, k1, k2)) = fit {
                    let dn = num.wrapping_sub(predict(values[i - 1], den));
                    fast[i] = f;
                    codes[i] = fast_code(den - hint.den, dn, k1, k2);
                    at_home += usize::from(den == hint.den);
                }
            }
            Some((hint.den, g))
        }
        _ => None,
    };
    let mut st = Floats::default();
    // Changed values, and those coded as ratios.
    let (mut changed, mut ratios) = (0usize, 0usize);
    for (i, &v) in values.iter().enumerate() {
        let bits = v.to_bits();
        if st.n == 0 {
            w.write(bits, 64);
        } else if bits == st.prev {
            w.write(0, 1);
        } else {
            changed += 1;
            let ratio =
                (i < n && codes[i].1 != 0 && st.put_known(w, v, known, fast[i], codes[i], hint))
                    || st.put_changed(w, v, hint);
            ratios += usize::from(ratio);
        }
        st.prev = bits;
        st.n += 1;
    }
    // The next chunk starts from the denominator most of this one's values had.
    if at_home * 2 < n {
        hint.den = st.home;
    } else if let Some((den, _)) = known {
        hint.den = den;
    }
    if changed >= 8 && ratios * 8 < changed {
        hint.plain = PLAIN_CHUNKS - 1;
    }
    true
}

impl Floats {
    /// A value the agent model fits at the column's denominator so far (`known`) or beside
    /// it: its code made in advance when the home is that denominator; else made now, or the
    /// ratio written in full (the chunk's first, which sets the home and grids).
    #[inline]
    fn put_known(
        &mut self,
        w: &mut BitWriter,
        v: f64,
        known: Option<(i64, Grid)>,
        fit: Fit,
        code: (u64, u32),
        hint: &mut Hint,
    ) -> bool {
        let Some((den, g)) = known else {
            return false;
        };
        if self.grid == Some(g) && self.home == den {
            return self.put_code(w, v, code);
        }
        let (fden, n, k1, k2) = fit;
        if self.grid == Some(g) && self.home != 0 {
            let dn = n.wrapping_sub(predict(f64::from_bits(self.prev), fden));
            return self.put_code(w, v, fast_code(fden - self.home, dn, k1, k2));
        }
        if self.home == 0 {
            self.put_ratio(w, fden, n, Mode::Agent(g, k1, k2), hint);
            return true;
        }
        false
    }
}
