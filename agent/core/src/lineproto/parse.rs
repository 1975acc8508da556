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
    if pos >= b.len() || b[pos] != b' ' {
        return Err("missing fields".into());
    }
    while pos < b.len() && b[pos] == b' ' {
        pos += 1;
    }
    // Fields (agents' points carry up to a dozen or so).
    let mut fields = Vec::with_capacity(16);
    loop {
        let key = read_token(line, &mut pos, b'=', true);
        if key.is_empty() {
            return Err("empty field key".into());
        }
        if pos >= b.len() || b[pos] != b'=' {
            return Err(format!("field {key:?} has no '='"));
        }
        pos += 1;
        let value = read_field_value(line, &mut pos).map_err(|e| format!("field {key:?}: {e}"))?;
        fields.push((key, value));
        if pos < b.len() && b[pos] == b',' {
            pos += 1;
            continue;
        }
        break;
    }
    while pos < b.len() && b[pos] == b' ' {
        pos += 1;
    }
    let mut time = None;
    if pos < b.len() {
        let ts = line[pos..].trim_end();
        time = Some(
            ts.parse::<i64>()
                .map_err(|_| format!("bad timestamp {ts:?} (expected integer nanoseconds)"))?,
        );
    }
    Ok(PointRef {
        name,
        tags,
        fields,
        time,
    })
}

/// Reads up to an unescaped space or `stop`, unescaping `\,`, `\ ` and, when `eq_escape`,
/// `\=` (borrowed when nothing was unescaped).
fn read_token<'a>(line: &'a str, pos: &mut usize, stop: u8, eq_escape: bool) -> Cow<'a, str> {
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
    *pos = memchr::memchr2(b',', b' ', &b[start..]).map_or(b.len(), |i| start + i);
    let v = &line[start..*pos];
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
    // f64::from_str also takes "inf", "infinity" and "NaN", which line protocol does not:
    // a number it takes ends in a digit or '.', those words do not.
    match v.parse::<f64>() {
        Ok(f) if matches!(v.as_bytes().last(), Some(b'0'..=b'9' | b'.')) => {
            Ok(FieldValue::Float(f))
        }
        r => {
            let numeric = v
                .bytes()
                .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'+' | b'e' | b'E'));
            Err(if r.is_err() && numeric {
                format!("bad float {v:?}")
            } else {
                format!("bad value {v:?}")
            })
        }
    }
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
}
