//! The line protocol reader: recorded data (`wk-alerter test RULE --data FILE.lp`) and the
//! alerter's stream endpoint (line by line with [`parse_line`]).
//!
//! It unescapes as InfluxDB 1.x does, so the memory source sees the same points InfluxDB would
//! store from the same file: `\,` `\ ` (and `\=` in tag and field keys and tag values) in names,
//! `\"` and `\\` in string fields; any other backslash is kept literally. Note that
//! the serializer writes control characters as `\t` `\n` `\f` `\r`, which InfluxDB (and
//! therefore this reader) keeps as two characters; no agent input emits control characters.

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

/// Parses one line (without its newline).
pub fn parse_line(line: &str, default_time: i64) -> Result<Metric, String> {
    let b = line.as_bytes();
    let mut pos = 0;
    let name = read_token(line, &mut pos, b",", false);
    if name.is_empty() {
        return Err("missing measurement name".into());
    }
    let mut metric = Metric::new(name, default_time);
    // Tags.
    while pos < b.len() && b[pos] == b',' {
        pos += 1;
        let key = read_token(line, &mut pos, b"=", true);
        if pos >= b.len() || b[pos] != b'=' {
            return Err(format!("tag {key:?} has no '='"));
        }
        pos += 1;
        let value = read_token(line, &mut pos, b",", true);
        if key.is_empty() || value.is_empty() {
            return Err("empty tag key or value".into());
        }
        metric.set_tag(key, value);
    }
    if pos >= b.len() || b[pos] != b' ' {
        return Err("missing fields".into());
    }
    while pos < b.len() && b[pos] == b' ' {
        pos += 1;
    }
    // Fields.
    loop {
        let key = read_token(line, &mut pos, b"=", true);
        if key.is_empty() {
            return Err("empty field key".into());
        }
        if pos >= b.len() || b[pos] != b'=' {
            return Err(format!("field {key:?} has no '='"));
        }
        pos += 1;
        let value = read_field_value(line, &mut pos).map_err(|e| format!("field {key:?}: {e}"))?;
        metric.add_field(key, value);
        if pos < b.len() && b[pos] == b',' {
            pos += 1;
            continue;
        }
        break;
    }
    while pos < b.len() && b[pos] == b' ' {
        pos += 1;
    }
    if pos < b.len() {
        let ts = line[pos..].trim_end();
        metric.time = ts
            .parse::<i64>()
            .map_err(|_| format!("bad timestamp {ts:?} (expected integer nanoseconds)"))?;
    }
    Ok(metric)
}

/// Reads up to an unescaped space or one of `stops`, unescaping `\,`, `\ ` and, when
/// `eq_escape`, `\=`.
fn read_token(line: &str, pos: &mut usize, stops: &[u8], eq_escape: bool) -> String {
    let b = line.as_bytes();
    let start = *pos;
    let mut out = String::new();
    let mut copied = start;
    while *pos < b.len() {
        let c = b[*pos];
        if c == b'\\' && *pos + 1 < b.len() {
            let n = b[*pos + 1];
            if n == b',' || n == b' ' || (eq_escape && n == b'=') {
                out.push_str(&line[copied..*pos]);
                out.push(n as char);
                *pos += 2;
                copied = *pos;
                continue;
            }
            *pos += 1;
            continue;
        }
        if c == b' ' || stops.contains(&c) {
            break;
        }
        *pos += 1;
    }
    out.push_str(&line[copied..*pos]);
    out
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
    while *pos < b.len() && b[*pos] != b',' && b[*pos] != b' ' {
        *pos += 1;
    }
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
    // f64::from_str also takes "inf" and "NaN", which line protocol does not.
    if !v
        .bytes()
        .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'+' | b'e' | b'E'))
    {
        return Err(format!("bad value {v:?}"));
    }
    v.parse::<f64>()
        .map(FieldValue::Float)
        .map_err(|_| format!("bad float {v:?}"))
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
