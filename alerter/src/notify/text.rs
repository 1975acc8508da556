//! Small text helpers the notifiers share: field values, HTML and Slack escaping, cutting to
//! a length, and parsing RFC 3339 times (silences). Templates, durations and time formatting
//! are the state module's (`crate::template`): one engine for the whole alerter.

use crate::model::Value;

/// A field value as text; `precision` formats numbers with that many decimals.
pub fn fmt_value(v: &Value, precision: Option<usize>) -> String {
    match (v, precision) {
        (Value::Float(f), Some(p)) => format!("{f:.p$}"),
        (Value::Float(f), None) => crate::template::format_number(*f),
        (Value::Int(i), Some(p)) if p > 0 => format!("{:.p$}", *i as f64),
        (Value::Int(i), _) => i.to_string(),
        (Value::Bool(b), _) => b.to_string(),
        (Value::Str(s), _) => s.clone(),
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Escapes the three characters Slack treats as control sequences (`<!channel>`, links), so
/// tag values from hosts cannot ping a channel or forge a link.
pub fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Cuts `s` to at most `max` characters, marking the cut with `…`.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Parses an RFC 3339 time (`2026-11-22T10:00:00Z`, `...+02:00`, fractional seconds, `t`/`z`
/// or a space accepted) into nanoseconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    let bad = || format!("invalid time {s:?}: expected RFC 3339 such as 2026-11-22T10:00:00Z");
    let t: jiff::Timestamp = s.trim().parse().map_err(|_| bad())?;
    i64::try_from(t.as_nanosecond()).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::format_rfc3339;

    #[test]
    fn rfc3339_round_trips_and_rejects_garbage() {
        for s in [
            "1970-01-01T00:00:00Z",
            "2000-02-29T23:59:59Z",
            "1969-12-31T23:59:59Z",
        ] {
            let ns = parse_rfc3339(s).unwrap();
            assert_eq!(format_rfc3339(ns), s);
        }
        assert_eq!(
            parse_rfc3339("2026-11-22T12:00:00+02:00").unwrap(),
            parse_rfc3339("2026-11-22T10:00:00Z").unwrap()
        );
        // ISO 8601's basic offset is accepted too (jiff's parser): lenient, not ambiguous.
        assert_eq!(
            parse_rfc3339("2026-11-22T12:00:00+0200").unwrap(),
            parse_rfc3339("2026-11-22T10:00:00Z").unwrap()
        );
        assert_eq!(
            parse_rfc3339("1970-01-01t00:00:01.5z").unwrap(),
            1_500_000_000
        );
        for bad in [
            "",
            "2026-11-22",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-11-22T10:00:00",
            "2026-11-22T10:00:00Zjunk",
            "2026-11-22T1a:00:00Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn escapes() {
        assert_eq!(
            html_escape("<b a=\"x\">&'"),
            "&lt;b a=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(slack_escape("<!channel> & co"), "&lt;!channel&gt; &amp; co");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }
}
