//! The line protocol reader: recorded data (`wk-alerter test RULE --data FILE.lp`) and the
//! alerter's stream endpoint (line by line with [`parse_line`]).
//!
//! It unescapes as InfluxDB 1.x does, so the memory source sees the same points InfluxDB would
//! store from the same file: `\,` `\ ` (and `\=` in tag and field keys and tag values) in names,
//! `\"` and `\\` in string fields; any other backslash is kept literally. Note that
//! the serializer writes control characters as `\t` `\n` `\f` `\r`, which InfluxDB (and
//! therefore this reader) keeps as two characters; no agent input emits control characters.

use std::borrow::Cow;

use crate::metric::{FieldValue, Metric};

/// A malformed line, with its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct LineProtocolError {
    pub line: usize,
    pub message: String,
}

/// Parses a whole document; blank lines and `#` comments are skipped, and the `> ` that
/// `wk-agent --test` (and `telegraf --test`) put before each line is dropped, so their output
/// is a recording as it is. Points without a timestamp get `default_time` (ns).
pub fn parse(text: &str, default_time: i64) -> Result<Vec<Metric>, LineProtocolError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        let line = line.strip_prefix("> ").unwrap_or(line);
        if line.trim_end().is_empty() || line.starts_with('#') {
            continue;
        }
        let m = parse_line(line.trim_end_matches('\r'), default_time).map_err(|message| {
            LineProtocolError {
                line: i + 1,
                message,
            }
        })?;
        out.push(m);
    }
    Ok(out)
}

/// One parsed line, borrowing its text wherever no escape had to be undone (the stream
/// receiver's path: no allocation per name, tag or field).
#[derive(Debug, Clone, PartialEq)]
pub struct PointRef<'a> {
    pub name: Cow<'a, str>,
    /// Sorted by key, each key once (the last value given wins, as [`Metric::set_tag`]).
    pub tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// In line order.
    pub fields: Vec<(Cow<'a, str>, FieldValue)>,
    /// `None`: the line has no timestamp.
    pub time: Option<i64>,
}

impl PointRef<'_> {
    /// The point as a [`Metric`] (`default_time` when the line has no timestamp).
    pub fn into_metric(self, default_time: i64) -> Metric {
        let mut m = Metric::new(self.name.into_owned(), self.time.unwrap_or(default_time));
        for (k, v) in self.tags {
            m.set_tag(k.into_owned(), v.into_owned());
        }
        for (k, v) in self.fields {
            m.add_field(k.into_owned(), v);
        }
        m
    }
}

/// Parses one line (without its newline).
pub fn parse_line(line: &str, default_time: i64) -> Result<Metric, String> {
    parse_line_ref(line).map(|p| p.into_metric(default_time))
}

/// Parses one line (without its newline), borrowing from it.
pub fn parse_line_ref(line: &str) -> Result<PointRef<'_>, String> {
    let b = line.as_bytes();
    let mut pos = 0;
    let name = read_token(line, &mut pos, b',', false);
    if name.is_empty() {
        return Err("missing measurement name".into());
    }
    let mut tags: Vec<(Cow<'_, str>, Cow<'_, str>)> = Vec::new();
    // Tags.
    while pos < b.len() && b[pos] == b',' {
        pos += 1;
        let key = read_token(line, &mut pos, b'=', true);
        if pos >= b.len() || b[pos] != b'=' {
            return Err(format!("tag {key:?} has no '='"));
        }
        pos += 1;
        let value = read_token(line, &mut pos, b',', true);
        if key.is_empty() || value.is_empty() {
            return Err("empty tag key or value".into());
        }
        tags.push((key, value));
    }
    if tags.windows(2).any(|w| w[0].0 >= w[1].0) {
        // Sorted, the last of a repeated key kept: reversed, a stable sort puts the last
        // one first among equals, and dedup keeps the first.
        tags.reverse();
        tags.sort_by(|a, b| a.0.cmp(&b.0));
        tags.dedup_by(|a, b| a.0 == b.0);
    }
    // Agents' points carry up to a dozen fields or so.
    let mut fields = Vec::with_capacity(16);
    let time = parse_fields(line, pos, |k, v| fields.push((k, v)))?;
    Ok(PointRef {
        name,
        tags,
        fields,
        time,
    })
}

/// Where a line's series key (its measurement and tags, as written) ends: at the first space
/// no backslash escapes, else at the line's end. [`parse_line_ref`] reads the key from these
/// bytes alone and reads the rest with [`parse_fields`] from there, so two lines whose keys
/// are the same bytes are points of the same series (the stream receiver's fast path).
pub fn series_key_end(line: &str) -> usize {
    let b = line.as_bytes();
    let mut from = 0;
    while let Some(i) = memchr::memchr(b' ', &b[from..]) {
        let at = from + i;
        // A backslash before a space always escapes it: a backslash is never itself the
        // escaped byte of a pair, so the one before the space starts a pair.
        if at == 0 || b[at - 1] != b'\\' {
            return at;
        }
        from = at + 1;
    }
    b.len()
}

/// Parses the rest of a line after its series key (`pos` as [`series_key_end`] gives it):
/// the fields, each handed to `field` in line order, and the timestamp (`None`: none given).
/// On an error some fields may have been handed over already.
pub fn parse_fields<'a>(
    line: &'a str,
    pos: usize,
    mut field: impl FnMut(Cow<'a, str>, FieldValue),
) -> Result<Option<i64>, String> {
    parse_fields_expecting(
        line,
        pos,
        |_| None,
        |key, value| match key {
            FieldKey::Read(k) => field(k, value),
            FieldKey::Expected(_) => {}
        },
    )
}

/// A field's key as [`parse_fields_expecting`] hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldKey<'a> {
    /// The name `expected` gave for this field's place in the line.
    Expected(usize),
    /// Any other key, as read.
    Read(Cow<'a, str>),
}

/// [`parse_fields`] for a reader that knows the field names to expect at each place (those
/// of the series' previous line): `expected(i)` is the name expected as the `i`-th field of
/// the line, given only when it needs no escape (no space, `=` or backslash; not empty). A
/// key that is those bytes followed by `=` is the name the general reader would read there,
/// so it is matched in place and handed over as [`FieldKey::Expected`].
pub fn parse_fields_expecting<'a, 'e>(
    line: &'a str,
    mut pos: usize,
    expected: impl Fn(usize) -> Option<&'e str>,
    mut field: impl FnMut(FieldKey<'a>, FieldValue),
) -> Result<Option<i64>, String> {
    let b = line.as_bytes();
    if pos >= b.len() || b[pos] != b' ' {
        return Err("missing fields".into());
    }
    while pos < b.len() && b[pos] == b' ' {
        pos += 1;
    }
    let mut i = 0;
    loop {
        if let Some(e) = expected(i)
            && b.get(pos + e.len()) == Some(&b'=')
            && b[pos..].starts_with(e.as_bytes())
        {
            debug_assert!(!e.is_empty() && !e.bytes().any(|c| matches!(c, b' ' | b'=' | b'\\')));
            pos += e.len() + 1;
            let value =
                read_field_value(line, &mut pos).map_err(|err| format!("field {e:?}: {err}"))?;
            field(FieldKey::Expected(i), value);
        } else {
            let key = read_token(line, &mut pos, b'=', true);
            if key.is_empty() {
                return Err("empty field key".into());
            }
            if pos >= b.len() || b[pos] != b'=' {
                return Err(format!("field {key:?} has no '='"));
            }
            pos += 1;
            let value =
                read_field_value(line, &mut pos).map_err(|e| format!("field {key:?}: {e}"))?;
            field(FieldKey::Read(key), value);
        }
        i += 1;
        if pos < b.len() && b[pos] == b',' {
            pos += 1;
            continue;
        }
        break;
    }
    while pos < b.len() && b[pos] == b' ' {
        pos += 1;
    }
    if pos >= b.len() {
        return Ok(None);
    }
    let ts = line[pos..].trim_end();
    ts.parse::<i64>()
        .map(Some)
        .map_err(|_| format!("bad timestamp {ts:?} (expected integer nanoseconds)"))
}

/// Reads up to an unescaped space or `stop`, unescaping `\,`, `\ ` and, when `eq_escape`,
/// `\=` (borrowed when nothing was unescaped).
fn read_token<'a>(line: &'a str, pos: &mut usize, stop: u8, eq_escape: bool) -> Cow<'a, str> {
    let b = line.as_bytes();
    let start = *pos;
    // Names and keys are short and seldom escaped: a plain loop first (memchr's setup costs
    // more than it saves on a dozen bytes).
    let mut i = start;
    while let Some(&c) = b.get(i) {
        if c == b' ' || c == stop {
            *pos = i;
            return Cow::Borrowed(&line[start..i]);
        }
        if c == b'\\' {
            return read_escaped(line, pos, stop, eq_escape);
        }
        i += 1;
    }
    *pos = b.len();
    Cow::Borrowed(&line[start..])
}

/// [`read_token`] of a token with a backslash.
fn read_escaped<'a>(line: &'a str, pos: &mut usize, stop: u8, eq_escape: bool) -> Cow<'a, str> {
    let b = line.as_bytes();
    let start = *pos;
    let mut out: Option<String> = None;
    let mut copied = start;
    while let Some(i) = memchr::memchr3(b'\\', b' ', stop, &b[*pos..]) {
        *pos += i;
        if b[*pos] != b'\\' {
            break;
        }
        match b.get(*pos + 1) {
            Some(&n) if n == b',' || n == b' ' || (eq_escape && n == b'=') => {
                let o = out.get_or_insert_with(String::new);
                o.push_str(&line[copied..*pos]);
                o.push(n as char);
                *pos += 2;
                copied = *pos;
            }
            // Any other backslash is kept as it is.
            _ => *pos += 1,
        }
        if *pos >= b.len() {
            break;
        }
    }
    if *pos >= b.len() || !(b[*pos] == b' ' || b[*pos] == stop) {
        *pos = b.len();
    }
    match out {
        None => Cow::Borrowed(&line[start..*pos]),
        Some(mut o) => {
            o.push_str(&line[copied..*pos]);
            Cow::Owned(o)
        }
    }
}

fn read_field_value(line: &str, pos: &mut usize) -> Result<FieldValue, String> {
    let b = line.as_bytes();
    if *pos < b.len() && b[*pos] == b'"' {
        *pos += 1;
        let mut out = String::new();
        let mut copied = *pos;
        while *pos < b.len() {
            match b[*pos] {
                b'\\' if *pos + 1 < b.len() && matches!(b[*pos + 1], b'"' | b'\\') => {
                    out.push_str(&line[copied..*pos]);
                    out.push(b[*pos + 1] as char);
                    *pos += 2;
                    copied = *pos;
                }
                b'"' => {
                    out.push_str(&line[copied..*pos]);
                    *pos += 1;
                    return Ok(FieldValue::Str(out));
                }
                _ => *pos += 1,
            }
        }
        return Err("unterminated string".into());
    }
    let start = *pos;
    // A number is a few bytes long: a plain loop beats memchr's setup.
    *pos = b[start..]
        .iter()
        .position(|&c| c == b',' || c == b' ')
        .map_or(b.len(), |i| start + i);
    let v = &line[start..*pos];
    // The last byte tells the type: `i`, `u`, a digit or '.' (a float), else a boolean word.
    match v.as_bytes().last() {
        None => Err("missing value".into()),
        Some(b'i') => v[..v.len() - 1]
            .parse::<i64>()
            .map(FieldValue::Int)
            .map_err(|_| format!("bad integer {v:?}")),
        Some(b'u') => v[..v.len() - 1]
            .parse::<u64>()
            .map(FieldValue::Uint)
            .map_err(|_| format!("bad unsigned integer {v:?}")),
        // f64::from_str also takes "inf", "infinity" and "NaN", which line protocol does
        // not: a number it takes ends in a digit or '.', those words do not.
        Some(b'0'..=b'9' | b'.') => v.parse::<f64>().map(FieldValue::Float).map_err(|_| {
            if is_numeric(v) {
                format!("bad float {v:?}")
            } else {
                format!("bad value {v:?}")
            }
        }),
        Some(_) => match v {
            "t" | "T" | "true" | "True" | "TRUE" => Ok(FieldValue::Bool(true)),
            "f" | "F" | "false" | "False" | "FALSE" => Ok(FieldValue::Bool(false)),
            _ if v.parse::<f64>().is_err() && is_numeric(v) => Err(format!("bad float {v:?}")),
            _ => Err(format!("bad value {v:?}")),
        },
    }
}

/// Only the bytes of a decimal number (a float that does not parse is a "bad float", not a
/// "bad value").
fn is_numeric(v: &str) -> bool {
    v.bytes()
        .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'+' | b'e' | b'E'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lineproto::Serializer;

    #[test]
    fn parses_types_tags_and_timestamps() {
        let m = parse_line(
            r#"cpu,host=web1,cpu=cpu-total usage_idle=97.5,n=3i,u=7u,ok=t,s="a \"q\" \\ b" 1700000000000000000"#,
            5,
        )
        .unwrap();
        assert_eq!(m.name, "cpu");
        assert_eq!(m.tag("host"), Some("web1"));
        assert_eq!(m.tag("cpu"), Some("cpu-total"));
        assert_eq!(m.field("usage_idle"), Some(&FieldValue::Float(97.5)));
        assert_eq!(m.field("n"), Some(&FieldValue::Int(3)));
        assert_eq!(m.field("u"), Some(&FieldValue::Uint(7)));
        assert_eq!(m.field("ok"), Some(&FieldValue::Bool(true)));
        assert_eq!(m.field("s"), Some(&FieldValue::Str("a \"q\" \\ b".into())));
        assert_eq!(m.time, 1_700_000_000_000_000_000);
        let m = parse_line("mem used=1", 42).unwrap();
        assert_eq!(m.time, 42);
        assert_eq!(m.field("used"), Some(&FieldValue::Float(1.0)));
    }

    #[test]
    fn reads_back_what_the_agent_writes() {
        let m = Metric::new("cpu load,x", 7)
            .with_tag("path", "/mnt/my disk")
            .with_tag("k=v", "a,b=c")
            .with_tag("host", "it's \"q\"")
            .with_field("f x", "say \"hi\" \\o/, ok")
            .with_field("g", false)
            .with_field("i", -3i64)
            .with_field("fl", 0.000092948);
        let text =
            String::from_utf8(Serializer::default().serialize(std::slice::from_ref(&m))).unwrap();
        let back = parse(&text, 0).unwrap();
        assert_eq!(back, vec![m]);
    }

    #[test]
    fn the_test_output_of_the_agent_is_a_recording() {
        // Regression: `wk-agent --test > rec.lp` was refused at its `> ` prefix.
        let text = "> mem,host=a used=1i 5\n> cpu,host=a usage_idle=90 6\n";
        let ms = parse(text, 0).unwrap();
        assert_eq!(ms.len(), 2);
        assert_eq!((ms[0].name.as_ref(), ms[1].time), ("mem", 6));
    }

    #[test]
    fn comments_blank_lines_and_errors_with_line_numbers() {
        let text = "# recorded\n\nm v=1 1\nm v=inf 2\n";
        let err = parse(text, 0).unwrap_err();
        assert_eq!(err.line, 4);
        assert!(err.message.contains("bad value"), "{err}");
        for bad in [
            "m", "m v", "m v=", "m,t v=1", "m v=\"x", "m v=1 x", "m v=1x",
        ] {
            assert!(parse_line(bad, 0).is_err(), "{bad:?} should fail");
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// The value reader as it was before it dispatched on the last byte (the reference
        /// the faster one must agree with).
        fn reference_value(v: &str) -> Result<FieldValue, String> {
            match v {
                "t" | "T" | "true" | "True" | "TRUE" => return Ok(FieldValue::Bool(true)),
                "f" | "F" | "false" | "False" | "FALSE" => return Ok(FieldValue::Bool(false)),
                "" => return Err("missing value".into()),
                _ => {}
            }
            if let Some(i) = v.strip_suffix('i') {
                return i
                    .parse::<i64>()
                    .map(FieldValue::Int)
                    .map_err(|_| format!("bad integer {v:?}"));
            }
            if let Some(u) = v.strip_suffix('u') {
                return u
                    .parse::<u64>()
                    .map(FieldValue::Uint)
                    .map_err(|_| format!("bad unsigned integer {v:?}"));
            }
            match v.parse::<f64>() {
                Ok(f) if matches!(v.as_bytes().last(), Some(b'0'..=b'9' | b'.')) => {
                    Ok(FieldValue::Float(f))
                }
                r => {
                    let numeric = v.bytes().all(|c| {
                        c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'+' | b'e' | b'E')
                    });
                    Err(if r.is_err() && numeric {
                        format!("bad float {v:?}")
                    } else {
                        format!("bad value {v:?}")
                    })
                }
            }
        }

        /// Unquoted field values: numbers of every form, the words, and near misses.
        fn raw_value() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<f64>().prop_map(|f| f.to_string()),
                any::<f64>().prop_map(|f| format!("{f:e}")),
                any::<i64>().prop_map(|i| format!("{i}i")),
                any::<u64>().prop_map(|u| format!("{u}u")),
                any::<u64>().prop_map(|u| format!("{u}i")),
                any::<i64>().prop_map(|i| format!("{i}u")),
                prop::sample::select(vec![
                    "t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE", "tRUE",
                    "yes", "inf", "-inf", "NaN", "infinity", "1.", ".5", "-.5", "+1", "1e5",
                    "1E-5", "1e", "e", "-", "+", ".", "i", "u", "1.5i", "1.5u", "0x10", "1_000",
                    "١", "", "--1", "1..2",
                ])
                .prop_map(str::to_owned),
                "[-+.eE0-9iu]{1,8}",
                "[a-zA-Z0-9.]{1,6}",
            ]
        }

        /// Names, keys and tag values with the bytes that steer the reader.
        fn token() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => "[a-z_]{1,8}",
                1 => prop::sample::select(vec![
                    "a\\ b", "a\\,b", "a\\=b", "a=b", "a\\\\ b", "a\\", "\\", "#x", "a\"b", "é",
                ])
                .prop_map(str::to_owned),
                1 => "[a-z ,=\\\\\"]{0,6}",
            ]
        }

        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => raw_value(),
                1 => "[a-z ,=\\\\\"]{0,8}".prop_map(|s| format!("\"{s}\"")),
                1 => Just("\"a \\\" b \\\\ c\"".to_owned()),
                1 => Just("\"unterminated".to_owned()),
            ]
        }

        /// Lines of line protocol, well formed or nearly.
        fn line() -> impl Strategy<Value = String> {
            let tags = proptest::collection::vec((token(), token()), 0..4);
            let fields = proptest::collection::vec((token(), value()), 0..4);
            let time = prop_oneof![
                Just(String::new()),
                any::<i64>().prop_map(|t| format!(" {t}")),
                Just(" 12x".to_owned()),
                Just("  7  ".to_owned()),
            ];
            (token(), tags, fields, time, "[ ]{1,2}").prop_map(|(name, tags, fields, time, sep)| {
                let mut l = name;
                for (k, v) in tags {
                    l += &format!(",{k}={v}");
                }
                l += &sep;
                let f: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                l += &f.join(",");
                l + &time
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// The value reader agrees with the reference on every value.
            #[test]
            fn values_read_as_the_reference_reads_them(v in raw_value()) {
                let line = format!("m x={v}");
                let mut pos = 4;
                let got = read_field_value(&line, &mut pos);
                let want = reference_value(&v);
                match (&got, &want) {
                    (Ok(FieldValue::Float(a)), Ok(FieldValue::Float(b))) => {
                        prop_assert_eq!(a.to_bits(), b.to_bits());
                    }
                    _ => prop_assert_eq!(got, want),
                }
            }

            /// The stream receiver's fast path reads a line as its key bytes (up to
            /// `series_key_end`) and then `parse_fields` from there: lines whose keys are the
            /// same bytes have the same series, and the fields, time and errors are the
            /// general parser's.
            #[test]
            fn key_bytes_then_fields_read_as_the_whole_line(l in line()) {
                let k = series_key_end(&l);
                let alone = format!("{} f=1", &l[..k]);
                let key_alone = parse_line_ref(&alone);
                let mut fields = Vec::new();
                let rest = parse_fields(&l, k, |k, v| fields.push((k, v)));
                match parse_line_ref(&l) {
                    Ok(p) => {
                        let key = key_alone.expect("the key of a line that parses parses");
                        prop_assert_eq!((&key.name, &key.tags), (&p.name, &p.tags));
                        prop_assert_eq!(rest, Ok(p.time));
                        prop_assert_eq!(fields, p.fields);
                    }
                    // A line whose key parses fails in its fields, with the same error.
                    Err(e) if key_alone.is_ok() => prop_assert_eq!(rest, Err(e)),
                    Err(_) => {}
                }
            }

            /// Expected names matched in place read as the general reader reads them: the
            /// same keys, values, time and errors, whatever names are expected where.
            #[test]
            fn expected_names_read_as_without(l in line(), picks in proptest::collection::vec(0u8..6, 0..6)) {
                let k = series_key_end(&l);
                let mut plain = Vec::new();
                let general = parse_fields(&l, k, |k, v| plain.push((k, v)));
                let keys: Vec<String> = plain.iter().map(|(k, _)| k.to_string()).collect();
                // Per place: the key found there, another place's, a prefix, or a stranger.
                let expected: Vec<String> = picks
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let own = keys.get(i).cloned().unwrap_or_default();
                        match p {
                            0 | 1 => own,
                            2 => keys.get(i + 1).cloned().unwrap_or_default(),
                            3 => own.chars().take(1).collect(),
                            4 => format!("{own}x"),
                            _ => "f".into(),
                        }
                    })
                    .filter(|e| !e.is_empty())
                    .collect();
                let usable = |e: &String| !e.bytes().any(|c| matches!(c, b' ' | b'=' | b'\\'));
                let mut got = Vec::new();
                let fast = parse_fields_expecting(
                    &l,
                    k,
                    |i| expected.get(i).filter(|e| usable(e)).map(String::as_str),
                    |key, v| {
                        let name = match key {
                            FieldKey::Expected(i) => Cow::Owned(expected[i].clone()),
                            FieldKey::Read(k) => k,
                        };
                        got.push((name, v));
                    },
                );
                prop_assert_eq!(fast, general);
                prop_assert_eq!(got, plain);
            }
        }
    }
}
