//! Taking in a write body: gzip, line protocol, the checks on each point, and the window's
//! bounds applied *while* parsing. The body arrives as a stream of chunks (from hyper, through
//! a bounded channel), is decompressed and parsed line by line, and the window is trimmed
//! whenever it goes past its bounds by a slack: one write of a million lines never holds more
//! than the window's bounds plus that slack, plus one line.

use std::io::{BufRead, BufReader, Read};

use bytes::{Buf, Bytes};
use tokio::sync::mpsc;

use crate::source::MemorySource;
use wk_core::lineproto::{self, FieldKey};
use wk_core::metric::FieldValue;

use super::QUOTED_ERRORS;
use super::http::truncate;

/// How a write body is taken in.
#[derive(Debug, Clone, Copy)]
pub struct Intake {
    /// Nanoseconds per timestamp unit (the `precision`).
    pub unit: i64,
    /// The time of points without one.
    pub now: i64,
    /// Points later than this are refused (InfluxDB refuses points outside its retention).
    pub max_time: i64,
    /// The window's start: when the window is over its bounds, older points go first.
    pub window_start: i64,
    /// Longest string field value (bytes).
    pub max_string: usize,
    /// Bounds of the window, applied while parsing (oldest points dropped first).
    pub max_points: usize,
    pub max_bytes: usize,
    /// Largest body after decompression (bytes).
    pub max_body: u64,
}

impl Intake {
    /// No bounds: timestamps in `unit` ns, `now` for points without one.
    pub fn new(unit: i64, now: i64) -> Intake {
        Intake {
            unit,
            now,
            max_time: i64::MAX,
            window_start: i64::MIN,
            max_string: usize::MAX,
            max_points: usize::MAX,
            max_bytes: usize::MAX,
            max_body: u64::MAX,
        }
    }

    /// Longest line accepted: room for a few strings of the longest size, and the rest.
    fn max_line(&self) -> usize {
        self.max_string.saturating_mul(4).saturating_add(64 * 1024)
    }
}

/// What a write body gave.
#[derive(Debug, Default, PartialEq)]
pub struct Ingest {
    /// Points stored.
    pub written: usize,
    /// Lines refused.
    pub bad: usize,
    /// `unable to parse '<line>': <why>` for the first few refused lines.
    pub errors: Vec<String>,
    /// Points refused for a time beyond `max_time`.
    pub future: usize,
}

/// Why a body stopped before its end (what was taken in before stays).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// Over `max_body` (compressed or not): 413.
    TooLarge,
    /// Not gzip, or corrupt: 400.
    Gzip(String),
    /// The body did not arrive in time: 408.
    TimedOut,
    /// The client went away or sent a broken body.
    Aborted(String),
}

/// Parses a line protocol text (tests and recorded data; no decompression).
pub fn ingest(text: &str, intake: &Intake, store: &MemorySource) -> Ingest {
    ingest_reader(text.as_bytes(), false, intake, store).0
}

/// Takes in a body: decompresses it when `gzip`, parses it line by line (good lines are
/// stored even when others are not) and keeps the window within its bounds as it goes (within
/// a slack), and exactly at the end.
///
/// The lines complete in the body's buffer (as it arrived, or as decompressed) are parsed in
/// place and written under one lock (the lock is never held while the body is awaited); a
/// line across two buffers is copied.
pub fn ingest_reader(
    body: impl BufRead,
    gzip: bool,
    intake: &Intake,
    store: &MemorySource,
) -> (Ingest, Option<Stop>) {
    ingest_body(body, gzip, intake, store, true)
}

/// [`ingest_reader`], with the fast path for lines of known series or without (the tests
/// compare the two).
fn ingest_body(
    body: impl BufRead,
    gzip: bool,
    intake: &Intake,
    store: &MemorySource,
    fast: bool,
) -> (Ingest, Option<Stop>) {
    let mut out = Ingest::default();
    let limit = intake.max_body.saturating_add(1);
    let mut whole = Vec::new();
    // Held until the body is parsed: it bounds the memory of bodies decoded whole.
    let slot = gzip.then(|| WHOLE_SLOTS.try_acquire().ok()).flatten();
    let mut r: Box<dyn BufRead + '_> = if gzip {
        match gzip_reader(body, intake, slot.is_some(), &mut whole) {
            Ok(r) => r,
            Err(e) => return (out, Some(stop_of(e, gzip))),
        }
    } else {
        Box::new(body.take(limit))
    };
    let mut taker = Taker {
        intake,
        // Trimming costs O(series): a slack of 1/8 makes it rare, and bounds what it lets pass.
        slack_points: (intake.max_points / 8).max(1024),
        slack_bytes: (intake.max_bytes / 8).max(1 << 20),
        out: &mut out,
        fields: Vec::new(),
        fast,
    };
    let max_line = intake.max_line();
    // A line begun in an earlier read (at most `max_line` bytes of it kept) and whether it fit.
    let mut line = Vec::new();
    let mut carried = false;
    let mut fits = true;
    let mut consumed: u64 = 0;
    let stop = loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) => break Some(stop_of(e, gzip)),
        };
        if buf.is_empty() {
            if carried {
                taker.carried(&line, fits, max_line, store);
            }
            break None;
        }
        let Some(last) = memchr_last(buf) else {
            // No line ends here: all of it continues (or starts) the carried line.
            let n = buf.len();
            consumed += n as u64;
            if consumed > intake.max_body {
                break Some(Stop::TooLarge);
            }
            fits = keep(&mut line, buf, max_line, fits);
            carried = true;
            r.consume(n);
            continue;
        };
        let mut start = 0;
        let mut too_large = false;
        if carried {
            let end = memchr::memchr(b'\n', buf).unwrap_or(last);
            consumed += end as u64 + 1;
            if consumed > intake.max_body {
                break Some(Stop::TooLarge);
            }
            fits = keep(&mut line, &buf[..end], max_line, fits);
            taker.carried(&line, fits, max_line, store);
            line.clear();
            (carried, fits) = (false, true);
            start = end + 1;
        }
        if start <= last {
            let mut w = store.writer();
            let lines = &buf[start..last];
            let mut one = |text: &str, len: usize| {
                consumed += len as u64 + 1;
                if consumed > intake.max_body {
                    return false;
                }
                // As a line across buffers: the bound does not depend on where they end.
                if len > max_line {
                    refuse(
                        taker.out,
                        text,
                        &format!("line longer than {max_line} bytes"),
                    );
                } else {
                    taker.line(text, &mut w);
                }
                true
            };
            // Valid UTF-8 (the rule) is checked once for the whole buffer.
            too_large = !match std::str::from_utf8(lines) {
                // memchr over the buffer: `str::split` sets a search up per line (3 % of the
                // intake's CPU).
                Ok(text) => {
                    let mut from = 0;
                    memchr::memchr_iter(b'\n', lines)
                        .chain([lines.len()])
                        .all(|end| {
                            let l = &text[from..end];
                            from = end + 1;
                            one(l, l.len())
                        })
                }
                Err(_) => lines
                    .split(|&b| b == b'\n')
                    .all(|l| one(&String::from_utf8_lossy(l), l.len())),
            };
        }
        if too_large {
            break Some(Stop::TooLarge);
        }
        r.consume(last + 1);
    };
    let mut w = store.writer();
    let held = w.held();
    if held.points > intake.max_points || held.bytes > intake.max_bytes {
        trim(&mut w, intake);
    }
    (out, stop)
}

/// The decompressed lines of a gzip body. With `may_hold` (a [`WHOLE_SLOTS`] slot), one of up
/// to [`WHOLE_GZIP`] bytes, compressed and decompressed, is decoded whole into `whole`; a
/// larger one, one libdeflate refuses, or any body without a slot is streamed (which stores
/// the same lines and says what is wrong with a body). An error reading the body is returned
/// as it is.
#[inline(never)]
fn gzip_reader<'a>(
    mut body: impl BufRead + 'a,
    intake: &Intake,
    may_hold: bool,
    whole: &'a mut Vec<u8>,
) -> std::io::Result<Box<dyn BufRead + 'a>> {
    let mut gz = Vec::new();
    if may_hold {
        (&mut body)
            .take(WHOLE_GZIP as u64 + 1)
            .read_to_end(&mut gz)?;
        let max = WHOLE_GZIP.min(usize::try_from(intake.max_body).unwrap_or(usize::MAX));
        if gz.len() <= WHOLE_GZIP && gunzip_whole(&gz, whole, max) {
            return Ok(Box::new(&whole[..]));
        }
    }
    // Not held while the body streams.
    *whole = Vec::new();
    Ok(Box::new(BufReader::with_capacity(
        256 * 1024,
        flate2::bufread::MultiGzDecoder::new(Read::chain(std::io::Cursor::new(gz), body))
            .take(intake.max_body.saturating_add(1)),
    )))
}

/// Largest gzip body decoded whole (compressed, and decompressed): an agent's batch of 5,000
/// lines is about 1.2 MB. Bodies are decoded whole for speed (libdeflate, about twice the
/// streaming inflate's), at the cost of holding both forms at once.
const WHOLE_GZIP: usize = 4 << 20;

/// How many bodies may be decoded whole at once (each holds up to twice [`WHOLE_GZIP`]);
/// the others stream, as every gzip body did before: 64 MiB at most, whatever the number of
/// writers.
static WHOLE_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(8);

/// Every gzip member of `gz` decoded into `out`, when they all decode and fit in `max` bytes.
/// False otherwise (and for an empty body): the caller streams the body instead, which gives
/// the same lines and says what is wrong with it.
fn gunzip_whole(gz: &[u8], out: &mut Vec<u8>, max: usize) -> bool {
    use libdeflate_sys as sys;
    /// The decompressor, freed on drop.
    struct Inflater(std::ptr::NonNull<sys::libdeflate_decompressor>);
    impl Drop for Inflater {
        fn drop(&mut self) {
            // SAFETY: allocated by libdeflate_alloc_decompressor, freed once.
            unsafe { sys::libdeflate_free_decompressor(self.0.as_ptr()) }
        }
    }
    if gz.is_empty() {
        return false;
    }
    // SAFETY: a plain allocation; null when out of memory.
    let Some(d) = std::ptr::NonNull::new(unsafe { sys::libdeflate_alloc_decompressor() }) else {
        return false;
    };
    let d = Inflater(d);
    out.clear();
    // Room for what the last member's trailer says it holds (all of a one-member body);
    // more, up to `max`, only when a member needs it.
    let size = gz
        .len()
        .checked_sub(4)
        .and_then(|i| gz.get(i..))
        .map_or(0, |t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]) as usize);
    out.reserve_exact(size.min(max));
    let mut input = gz;
    while !input.is_empty() {
        // At most `max` in all (the buffer may have room for more).
        let left = max - out.len();
        let spare = out.spare_capacity_mut();
        let n = spare.len().min(left);
        let room = &mut spare[..n];
        let (mut used_in, mut made) = (0usize, 0usize);
        // SAFETY: `input` is readable for its length; `room` is writable for its length
        // (uninitialised bytes libdeflate only writes); both pointers outlive the call.
        let r = unsafe {
            sys::libdeflate_gzip_decompress_ex(
                d.0.as_ptr(),
                input.as_ptr().cast(),
                input.len(),
                room.as_mut_ptr().cast(),
                room.len(),
                &mut used_in,
                &mut made,
            )
        };
        if r == sys::libdeflate_result_LIBDEFLATE_INSUFFICIENT_SPACE && n < left {
            // The member again, with all the room `max` allows.
            out.reserve_exact(left);
            continue;
        }
        if r != sys::libdeflate_result_LIBDEFLATE_SUCCESS || used_in == 0 || made > n {
            return false;
        }
        // SAFETY: libdeflate wrote `made` bytes at the start of the spare capacity.
        unsafe { out.set_len(out.len() + made) };
        input = input.get(used_in..).unwrap_or_default();
    }
    true
}

/// The index of the last `\n` in `buf`.
fn memchr_last(buf: &[u8]) -> Option<usize> {
    memchr::memrchr(b'\n', buf)
}

/// Appends `more` to a carried line, keeping at most `max` bytes (the start, to quote it);
/// false once it did not fit.
fn keep(line: &mut Vec<u8>, more: &[u8], max: usize, fits: bool) -> bool {
    if fits && line.len() + more.len() <= max {
        line.extend_from_slice(more);
        return true;
    }
    if fits {
        let room = max.saturating_sub(line.len()).min(more.len());
        line.extend_from_slice(&more[..room]);
    }
    false
}

/// Brings the window within its bounds: by age first, then the oldest points.
fn trim(w: &mut crate::source::memory::Writer<'_>, intake: &Intake) {
    w.prune_before(intake.window_start);
    w.enforce_bounds(intake.max_points, intake.max_bytes);
}

/// Takes lines into the store, with the window's bounds applied as it goes.
struct Taker<'a> {
    intake: &'a Intake,
    slack_points: usize,
    slack_bytes: usize,
    out: &'a mut Ingest,
    /// A line's fields on the fast path (kept for the next line).
    fields: Vec<(u16, FieldValue)>,
    /// Whether lines of known series take the fast path (the tests compare both).
    fast: bool,
}

impl Taker<'_> {
    /// A line that came across reads.
    fn carried(&mut self, line: &[u8], fits: bool, max_line: usize, store: &MemorySource) {
        if fits {
            self.line(&String::from_utf8_lossy(line), &mut store.writer());
        } else {
            refuse(
                self.out,
                &String::from_utf8_lossy(line),
                &format!("line longer than {max_line} bytes"),
            );
        }
    }

    fn line(&mut self, text: &str, w: &mut crate::source::memory::Writer<'_>) {
        let intake = self.intake;
        let fields = self.fast.then_some(&mut self.fields);
        if let Some(held) = take_line(text, intake, w, self.out, fields)
            && (held.points > intake.max_points.saturating_add(self.slack_points)
                || held.bytes > intake.max_bytes.saturating_add(self.slack_bytes))
        {
            trim(w, intake);
        }
    }
}

fn stop_of(e: std::io::Error, gzip: bool) -> Stop {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::FileTooLarge => Stop::TooLarge,
        ErrorKind::TimedOut => Stop::TimedOut,
        ErrorKind::InvalidInput | ErrorKind::InvalidData | ErrorKind::UnexpectedEof if gzip => {
            Stop::Gzip(e.to_string())
        }
        _ => Stop::Aborted(e.to_string()),
    }
}

fn refuse(out: &mut Ingest, line: &str, why: &str) {
    out.bad += 1;
    if out.errors.len() < QUOTED_ERRORS {
        out.errors
            .push(format!("unable to parse '{}': {why}", truncate(line, 200)));
    }
}

/// Parses and stores one line; what the store holds after it when a point was stored.
/// With `fast` (a buffer for the fields), a line whose key bytes name a series the store
/// holds has only its fields parsed ([`fast_line`]).
fn take_line(
    raw: &str,
    intake: &Intake,
    w: &mut crate::source::memory::Writer<'_>,
    out: &mut Ingest,
    fast: Option<&mut Vec<(u16, FieldValue)>>,
) -> Option<crate::source::memory::Held> {
    let line = raw.trim_start();
    if line.trim_end().is_empty() || line.starts_with('#') {
        return None;
    }
    let line = line.trim_end_matches('\r');
    if let Some(fields) = fast
        && let Some(r) = fast_line(line, intake, w, out, fields)
    {
        return r;
    }
    let p = match lineproto::parse_line_ref(line) {
        Ok(p) => p,
        Err(why) => {
            refuse(out, line, &why);
            return None;
        }
    };
    let long = p.fields.iter().find_map(|(k, v)| match v {
        FieldValue::Str(s) if s.len() > intake.max_string => Some((k.as_ref(), s.len())),
        _ => None,
    });
    if let Some((name, len)) = long {
        refuse_long(out, line, name, len, intake);
        return None;
    }
    let time = point_time(p.time, intake, out)?;
    out.written += 1;
    Some(w.push(&p, time))
}

/// The fast path of [`take_line`]: the series found by the bytes of the line's key, and the
/// fields parsed straight into indexes of that series' fields, by the same code as the
/// general parser's ([`lineproto::parse_fields`]). `None` when the line must take the general
/// path: its series is not known by these bytes, or it brings a field new to its series.
fn fast_line(
    line: &str,
    intake: &Intake,
    w: &mut crate::source::memory::Writer<'_>,
    out: &mut Ingest,
    fields: &mut Vec<(u16, FieldValue)>,
) -> Option<Option<crate::source::memory::Held>> {
    let end = lineproto::series_key_end(line);
    let series = w.line_series(&line[..end])?;
    fields.clear();
    let mut new_field = false;
    let mut long = None;
    let parsed = lineproto::parse_fields_expecting(
        line,
        end,
        |i| w.expected_field(series, i),
        |key, value| {
            let i = match key {
                // `expected_field(i)` is field i of the series.
                FieldKey::Expected(i) => u16::try_from(i).ok(),
                FieldKey::Read(name) => w.known_field(series, &name, fields.len()),
            };
            let Some(i) = i else {
                new_field = true;
                return;
            };
            if let FieldValue::Str(s) = &value
                && s.len() > intake.max_string
                && long.is_none()
            {
                long = Some((i, s.len()));
            }
            fields.push((i, value));
        },
    );
    let time = match parsed {
        // The general parser gives the same error (the key parses: its series is held).
        Err(why) => {
            refuse(out, line, &why);
            return Some(None);
        }
        Ok(_) if new_field => return None,
        Ok(time) => time,
    };
    if let Some((i, len)) = long {
        refuse_long(
            out,
            line,
            w.field_name(series, i).unwrap_or(""),
            len,
            intake,
        );
        return Some(None);
    }
    let Some(time) = point_time(time, intake, out) else {
        return Some(None);
    };
    out.written += 1;
    Some(Some(w.push_known(series, fields, time)))
}

fn refuse_long(out: &mut Ingest, line: &str, name: &str, len: usize, intake: &Intake) {
    let why = format!(
        "string field {name:?} is {len} bytes, over max_string_size ({})",
        intake.max_string
    );
    refuse(out, line, &why);
}

/// A point's time in ns (`now` when the line has none); `None`, counted, when it is later
/// than `max_time`.
fn point_time(time: Option<i64>, intake: &Intake, out: &mut Ingest) -> Option<i64> {
    let time = match time {
        None => intake.now,
        Some(t) => t.saturating_mul(intake.unit),
    };
    if time > intake.max_time {
        out.future += 1;
        return None;
    }
    Some(time)
}

/// A body arriving as chunks on a channel, read from a blocking thread (as a buffered reader
/// whose buffer is the chunk: no copy). An `Err` chunk ends it with that error.
pub struct ChannelReader {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    pub fn new(rx: mpsc::Receiver<std::io::Result<Bytes>>) -> ChannelReader {
        ChannelReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.fill_buf()?.read(buf)?;
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => break,
                Some(chunk) => self.current = chunk?,
            }
        }
        Ok(&self.current)
    }

    fn consume(&mut self, n: usize) {
        self.current.advance(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_keeps_good_lines_and_counts_bad_ones() {
        let store = MemorySource::new();
        let text = "m,h=a x=1 1\nbad line\nm,h=a x=2\n\n# comment\nm x=\n";
        let got = ingest(text, &Intake::new(1_000_000_000, 99), &store);
        assert_eq!(got.written, 2);
        assert_eq!(got.bad, 2);
        assert!(
            got.errors[0].starts_with("unable to parse 'bad line': "),
            "{got:?}"
        );
        // Seconds precision: 1 s; the line without a timestamp got "now".
        assert_eq!(store.latest_time(), Some(1_000_000_000));
        assert_eq!(store.len(), 2);
        let store = MemorySource::new();
        let many = "x\n".repeat(25);
        let got = ingest(&many, &Intake::new(1, 0), &store);
        assert_eq!(
            (got.written, got.bad, got.errors.len()),
            (0, 25, QUOTED_ERRORS)
        );
    }

    #[test]
    fn long_strings_and_lines_are_refused_without_being_held() {
        let store = MemorySource::new();
        let intake = Intake {
            max_string: 100,
            ..Intake::new(1, 0)
        };
        let ok = format!("m s=\"{}\" 1\n", "a".repeat(100));
        let long = format!("m s=\"{}\" 2\n", "a".repeat(101));
        let huge = format!("m s=\"{}\" 3\n", "a".repeat(1 << 20));
        let got = ingest(&format!("{ok}{long}{huge}m v=1 4\n"), &intake, &store);
        assert_eq!((got.written, got.bad), (2, 2), "{got:?}");
        assert!(
            got.errors[0].contains("over max_string_size (100)"),
            "{got:?}"
        );
        assert!(got.errors[1].contains("line longer than"), "{got:?}");
    }

    #[test]
    fn bounds_hold_while_parsing() {
        let store = MemorySource::new();
        let intake = Intake {
            max_points: 2_000,
            ..Intake::new(1, 0)
        };
        let body: String = (0..100_000)
            .map(|i| format!("m,h=h{i} v=1 {i}\n"))
            .collect();
        // Watch the store from the parser's side: at every read of the body.
        struct Watch<'a> {
            body: &'a [u8],
            store: &'a MemorySource,
            peak: usize,
        }
        impl Read for Watch<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                self.peak = self.peak.max(self.store.len());
                let n = buf.len().min(4096);
                self.body.read(&mut buf[..n])
            }
        }
        let mut watch = Watch {
            body: body.as_bytes(),
            store: &store,
            peak: 0,
        };
        let (got, stop) = ingest_reader(BufReader::new(&mut watch), false, &intake, &store);
        assert_eq!(stop, None);
        assert!(watch.peak <= 2_000 + 1_024 + 250, "{}", watch.peak);
        assert_eq!(got.written, 100_000);
        assert_eq!(store.len(), 2_000);
        assert_eq!(store.latest_time(), Some(99_999));
        assert_eq!(store.dropped(), 98_000);
        // The gzip and size limits.
        let store = MemorySource::new();
        let small = Intake {
            max_body: 10,
            ..Intake::new(1, 0)
        };
        let (got, stop) = ingest_reader(&b"m v=1 1\nm v=2 2\n"[..], false, &small, &store);
        assert_eq!((got.written, stop), (1, Some(Stop::TooLarge)));
        let (_, stop) = ingest_reader(&b"not gzip"[..], true, &Intake::new(1, 0), &store);
        assert!(matches!(stop, Some(Stop::Gzip(_))), "{stop:?}");
    }

    fn gz(b: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_bodies_are_decoded_whole_or_streamed_with_the_same_result() {
        let lines = |n: usize| -> String {
            (0..n)
                .map(|i| format!("m,h=h{} v={}.5,w={i}i {}\n", i % 7, i % 1000, i + 1))
                .collect()
        };
        // Whole: one member, and several concatenated (as `cat a.gz b.gz` makes).
        let (a, b) = (lines(3_000), lines(500));
        let mut two = gz(a.as_bytes());
        two.extend(gz(b.as_bytes()));
        let mut out = Vec::new();
        assert!(gunzip_whole(&gz(a.as_bytes()), &mut out, WHOLE_GZIP));
        assert_eq!(out, a.as_bytes());
        assert!(gunzip_whole(&two, &mut out, WHOLE_GZIP));
        assert_eq!(out, format!("{a}{b}").as_bytes());
        // Not whole: larger than the bound, damaged, trailing bytes, empty.
        assert!(!gunzip_whole(&two, &mut out, a.len()));
        let mut bad = two.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x5a;
        assert!(!gunzip_whole(&bad, &mut out, WHOLE_GZIP));
        let mut trailing = gz(a.as_bytes());
        trailing.extend(b"junk");
        assert!(!gunzip_whole(&trailing, &mut out, WHOLE_GZIP));
        assert!(!gunzip_whole(b"", &mut out, WHOLE_GZIP));
        // Through the intake: the same points as the plain body, decoded whole, and streamed
        // for a body over the bound (about 6 MB of lines).
        let big = lines(200_000);
        assert!(big.len() > WHOLE_GZIP);
        for text in [format!("{a}{b}"), big] {
            let body = if text.len() > WHOLE_GZIP {
                gz(text.as_bytes())
            } else {
                let (x, y) = text.split_at(a.len());
                let mut v = gz(x.as_bytes());
                v.extend(gz(y.as_bytes()));
                v
            };
            let intake = Intake {
                max_points: usize::MAX,
                max_bytes: usize::MAX,
                ..Intake::new(1, 0)
            };
            let (plain, gzipped) = (MemorySource::new(), MemorySource::new());
            let (p, stop) = ingest_reader(text.as_bytes(), false, &intake, &plain);
            assert_eq!(stop, None);
            let (g, stop) = ingest_reader(&body[..], true, &intake, &gzipped);
            assert_eq!(stop, None);
            assert_eq!(p, g);
            assert_eq!(plain.len(), gzipped.len());
            assert_eq!(plain.series_count(), gzipped.series_count());
            assert_eq!(plain.latest_time(), gzipped.latest_time());
            assert_eq!(plain.bytes(), gzipped.bytes());
        }
        // Without a slot a body streams, with the same result.
        let (text, body) = (format!("{a}{b}"), two.clone());
        let intake = Intake::new(1, 0);
        let (plain, streamed) = (MemorySource::new(), MemorySource::new());
        let (p, _) = ingest_reader(text.as_bytes(), false, &intake, &plain);
        let mut held = Vec::new();
        let r = gzip_reader(&body[..], &intake, false, &mut held).unwrap();
        let (g, stop) = ingest_reader(r, false, &intake, &streamed);
        assert!(held.is_empty(), "not decoded whole");
        assert_eq!((p.written, stop), (g.written, None));
        assert_eq!(plain.len(), streamed.len());
        // A damaged body still says what is wrong (the streamed decoder's message).
        let (_, stop) = ingest_reader(&bad[..], true, &Intake::new(1, 0), &MemorySource::new());
        assert!(matches!(stop, Some(Stop::Gzip(_))), "{stop:?}");
        // Over max_body once decompressed: the lines that fit, then 413, as before.
        let small = Intake {
            max_body: 1_000,
            ..Intake::new(1, 0)
        };
        let (got, stop) = ingest_reader(&two[..], true, &small, &MemorySource::new());
        assert_eq!(stop, Some(Stop::TooLarge));
        assert!(got.written > 0 && got.written < 100, "{}", got.written);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn gzip(b: &[u8]) -> Vec<u8> {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(b).unwrap();
            e.finish().unwrap()
        }

        fn bounded() -> Intake {
            Intake {
                max_string: 16,
                max_points: 20,
                max_bytes: 4_000,
                max_body: 2_000,
                max_time: 1_000_000,
                ..Intake::new(1, 5)
            }
        }

        /// Line-protocol-ish bytes: the punctuation that steers the parser, and anything.
        fn body() -> impl Strategy<Value = Vec<u8>> {
            let token = prop_oneof![
                Just(b"m,h=a v=1 1\n".to_vec()),
                Just(b"s=\"0123456789abcdefXYZ\"".to_vec()),
                Just(b"\n".to_vec()),
                Just(b" 99999999999\n".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..12),
                "[ ,=\\\\\"a-z0-9#\r\n.-]{0,20}".prop_map(String::into_bytes),
            ];
            proptest::collection::vec(token, 0..60).prop_map(|v| v.concat())
        }

        fn check(store: &MemorySource, got: &Ingest, intake: &Intake) {
            assert!(store.len() <= intake.max_points);
            assert!(store.bytes() <= intake.max_bytes);
            assert!(got.errors.len() <= got.bad.min(QUOTED_ERRORS));
            assert!(store.latest_time().is_none_or(|t| t <= intake.max_time));
        }

        /// A few series (so that lines repeat their keys) written in every way the reader
        /// tells apart: tags out of order or twice, escapes, new and repeated fields, every
        /// type, strings too long, bad values, timestamps missing, late, equal or bad.
        fn line() -> impl Strategy<Value = String> {
            let key = prop::sample::select(vec![
                "cpu,cpu=cpu0,host=a",
                "cpu,cpu=cpu1,host=a",
                "cpu,host=a,cpu=cpu0",
                "cpu,cpu=cpu0,host=a,host=b",
                "mem,host=a",
                "mem,host=a\\ b",
                "m\\,x,k\\=y=v\\ w",
                "disk,path=/a=b,host=a",
                "mem",
                " mem,host=a",
                "mem,host=",
                "mem,host",
                "#mem",
            ]);
            let value = prop_oneof![
                (-5.0f64..5.0).prop_map(|f| f.to_string()),
                (-3i64..3).prop_map(|i| format!("{i}i")),
                (0u64..3).prop_map(|u| format!("{u}u")),
                prop::sample::select(vec![
                    "t",
                    "false",
                    "\"ok\"",
                    "\"a \\\" b\"",
                    "\"0123456789abcdefXYZ\"",
                    "1x",
                    "",
                    "\"open",
                    "-",
                    "inf",
                ])
                .prop_map(str::to_owned),
            ];
            let field = (
                prop::sample::select(vec!["a", "ab", "b", "c", "used", "x\\ y", "d\\=e"]),
                value,
            );
            let fields = proptest::collection::vec(field, 0..5);
            let time = prop_oneof![
                Just(String::new()),
                (0i64..40).prop_map(|t| format!(" {t}")),
                Just(" 2000000".to_owned()),
                Just(" 7x".to_owned()),
            ];
            let tail = prop::sample::select(vec!["", "\r", " "]);
            (key, fields, time, tail).prop_map(|(k, f, t, tail)| {
                let f: Vec<String> = f.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{k} {}{t}{tail}", f.join(","))
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Lines of series already held skip the key parse and match field names by
            /// position: what is stored and what is refused (with its message) is the same
            /// as through the general parser, in whatever precision.
            #[test]
            fn the_fast_path_stores_what_the_general_parser_does(
                lines in proptest::collection::vec(line(), 1..80),
                unit in prop::sample::select(vec![1i64, 1_000, 1_000_000_000]),
            ) {
                let body = lines.join("\n");
                // The point bound trims (and drops whole series) along the way.
                let intake = Intake {
                    max_string: 16,
                    max_points: 30,
                    max_time: 35 * unit,
                    ..Intake::new(unit, 5)
                };
                let (fast, general) = (MemorySource::new(), MemorySource::new());
                let a = ingest_body(body.as_bytes(), false, &intake, &fast, true);
                let b = ingest_body(body.as_bytes(), false, &intake, &general, false);
                prop_assert_eq!(a, b);
                prop_assert_eq!(fast.dump(), general.dump());
                prop_assert_eq!(fast.bytes(), general.bytes());
            }

            /// Arbitrary bytes, plain or claimed gzip: no panic, the bounds hold.
            #[test]
            fn arbitrary_bodies_never_panic_nor_pass_the_bounds(b in body(), gz in any::<bool>()) {
                let store = MemorySource::new();
                let intake = bounded();
                let (got, _) = ingest_reader(&b[..], gz, &intake, &store);
                check(&store, &got, &intake);
            }

            /// Gzip is transparent: the same body compressed gives the same result (within
            /// the size limit), and corrupting the compressed bytes never panics.
            #[test]
            fn gzip_is_transparent_and_corruption_is_harmless(b in body(), flip in any::<prop::sample::Index>()) {
                let intake = Intake { max_body: u64::MAX, ..bounded() };
                let (plain_store, gz_store) = (MemorySource::new(), MemorySource::new());
                let (plain, stop) = ingest_reader(&b[..], false, &intake, &plain_store);
                prop_assert_eq!(stop, None);
                let z = gzip(&b);
                let (unz, stop) = ingest_reader(&z[..], true, &intake, &gz_store);
                prop_assert_eq!(stop, None);
                prop_assert_eq!(&plain, &unz);
                prop_assert_eq!(plain_store.len(), gz_store.len());
                let mut bad = z.clone();
                let i = flip.index(bad.len());
                bad[i] ^= 0x5a;
                let store = MemorySource::new();
                let (got, _) = ingest_reader(&bad[..], true, &intake, &store);
                check(&store, &got, &intake);
            }
        }
    }
}
