//! The standard functions that allocate a size the script names (`pad`, `blob`), checked
//! against the evaluation's memory budget *before* they allocate.
//!
//! Why not Rhai's own size limits: with any of `max_string_size`, `max_array_size` or
//! `max_map_size` set, Rhai re-measures the whole value after every mutating call (rhai 1.27
//! `eval/data_check.rs`), which makes `a.push(x)` in a loop quadratic (80,000 pushes took
//! 2 s). The budget counted at the allocator (`budget.rs`) bounds everything a script grows
//! step by step; what it cannot do is refuse one huge allocation (a failed allocation aborts
//! the process). Only these functions allocate an amount taken from an argument, so they are
//! replaced here (the engine's own functions are found before the standard package's) by
//! versions that refuse a request larger than what is left of the budget.

use rhai::{Array, Blob, Dynamic, Engine, EvalAltResult, INT, ImmutableString, Position};

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

/// The bytes an evaluation may still allocate; `None` outside an evaluation (no budget).
pub type Remaining = fn() -> Option<usize>;

pub fn register(engine: &mut Engine, remaining: Remaining) {
    engine.register_fn(
        "pad",
        move |array: &mut Array, len: INT, item: Dynamic| -> RhaiResult<()> {
            let Some(grow) = growth(len, array.len()) else {
                return Ok(());
            };
            let each = std::mem::size_of::<Dynamic>().saturating_add(deep_bytes(&item));
            check(remaining, grow.saturating_mul(each), "array")?;
            array.resize(array.len() + grow, item);
            Ok(())
        },
    );
    engine.register_fn(
        "pad",
        move |blob: &mut Blob, len: INT, value: INT| -> RhaiResult<()> {
            let Some(grow) = growth(len, blob.len()) else {
                return Ok(());
            };
            check(remaining, grow, "BLOB")?;
            blob.resize(blob.len() + grow, byte(value));
            Ok(())
        },
    );
    engine.register_fn(
        "pad",
        move |s: &mut ImmutableString, len: INT, ch: char| -> RhaiResult<()> {
            let Some(grow) = growth(len, s.chars().count()) else {
                return Ok(());
            };
            check(remaining, grow.saturating_mul(ch.len_utf8()), "string")?;
            s.make_mut().extend(std::iter::repeat_n(ch, grow));
            Ok(())
        },
    );
    engine.register_fn(
        "pad",
        move |s: &mut ImmutableString, len: INT, padding: &str| -> RhaiResult<()> {
            let Some(grow) = growth(len, s.chars().count()) else {
                return Ok(());
            };
            if padding.is_empty() {
                return Ok(());
            }
            // At most 4 bytes per character.
            check(remaining, grow.saturating_mul(4), "string")?;
            s.make_mut().extend(padding.chars().cycle().take(grow));
            Ok(())
        },
    );
    let new_blob = move |len: INT, value: INT| -> RhaiResult<Blob> {
        let n = usize::try_from(len).unwrap_or(0);
        check(remaining, n, "BLOB")?;
        Ok(vec![byte(value); n])
    };
    engine.register_fn("blob", move |len: INT| new_blob(len, 0));
    engine.register_fn("blob", new_blob);
}

/// How many elements padding to `len` adds to `current`; `None` when it adds none.
fn growth(len: INT, current: usize) -> Option<usize> {
    let len = usize::try_from(len).unwrap_or(0);
    (len > current).then(|| len - current)
}

/// Rhai's blob byte: the low 8 bits.
fn byte(value: INT) -> u8 {
    (value & 0xff) as u8
}

fn check(remaining: Remaining, bytes: usize, what: &str) -> RhaiResult<()> {
    match remaining() {
        Some(left) if bytes > left => Err(EvalAltResult::ErrorDataTooLarge(
            format!("{what} of {bytes} bytes (more than the memory budget has left) is"),
            Position::NONE,
        )
        .into()),
        _ => Ok(()),
    }
}

/// The bytes a clone of `v` allocates (strings are shared, not copied).
fn deep_bytes(v: &Dynamic) -> usize {
    const SLOT: usize = std::mem::size_of::<Dynamic>();
    if let Some(a) = v.read_lock::<Array>() {
        return a.iter().map(|x| SLOT + deep_bytes(x)).sum();
    }
    if let Some(m) = v.read_lock::<rhai::Map>() {
        // Key and value slots: a rough per-entry figure is enough to refuse the huge cases.
        return m.values().map(|x| 2 * SLOT + deep_bytes(x)).sum();
    }
    if let Some(b) = v.read_lock::<Blob>() {
        return b.len();
    }
    0
}
