//! Small text helpers the notifiers share: `{{placeholder}}` rendering over an event (email
//! subjects), HTML and Slack escaping, durations and RFC 3339 times.
//!
//! The placeholders are those of docs/rules.md (`id`, `rule`, `level`, `previous_level`,
//! `message`, `details`, `kind`, `duration`, `time`, `group`, `category`, `tags.x`, `fields.x`,
//! a bare tag or field name, `{{value:.1}}` number formatting, `<no value>` when unknown).
//! The state machine's template engine renders the rule's own templates; this one only fills
//! notifier-side strings from an already rendered event.

use std::fmt::Write as _;
use std::time::Duration;

use crate::model::{AlertEvent, EventKind, Value};

/// What an unknown placeholder renders as (Go templates' spelling, as Kapacitor shows it).
pub const NO_VALUE: &str = "<no value>";

/// Renders `template`'s `{{name}}` / `{{name:.N}}` placeholders from `event`. Text outside
/// placeholders is copied unchanged; an unterminated `{{` is copied as is.
pub fn render(template: &str, event: &AlertEvent) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = after[..end].trim();
        let (name, precision) = match inner.split_once(':') {
            Some((n, f)) => (
                n.trim(),
                f.trim()
                    .strip_prefix('.')
                    .and_then(|p| p.parse::<usize>().ok()),
            ),
            None => (inner, None),
        };
        out.push_str(&lookup(event, name, precision).unwrap_or_else(|| NO_VALUE.to_owned()));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

fn lookup(event: &AlertEvent, name: &str, precision: Option<usize>) -> Option<String> {
    let s = match name {
        "id" => event.id.clone(),
        "rule" => event.rule.clone(),
        "level" => event.level.as_str().to_owned(),
        "previous_level" => event.previous_level.as_str().to_owned(),
        "message" => event.message.clone(),
        "details" => event.details.clone(),
        "kind" => kind_str(event.kind).to_owned(),
        "duration" => fmt_duration(event.duration),
        "time" => rfc3339(event.time),
        "group" => group(event),
        "category" => event.category.clone()?,
        _ => {
            if let Some(tag) = name.strip_prefix("tags.") {
                event.tags.get(tag)?.clone()
            } else if let Some(field) = name.strip_prefix("fields.") {
                fmt_value(event.fields.get(field)?, precision)
            } else if let Some(tag) = event.tags.get(name) {
                tag.clone()
            } else {
                fmt_value(event.fields.get(name)?, precision)
            }
        }
    };
    Some(s)
}

/// The event kind as serialized: `alert`, `recovery`, `no_data`, `error`, `flapping`.
pub fn kind_str(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Alert => "alert",
        EventKind::Recovery => "recovery",
        EventKind::NoData => "no_data",
        EventKind::Error => "error",
        EventKind::Flapping => "flapping",
    }
}

/// The series' tags as `k=v,k=v` (sorted by key).
pub fn group(event: &AlertEvent) -> String {
    let mut s = String::new();
    for (i, (k, v)) in event.tags.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{k}={v}");
    }
    s
}

/// A field value as text; `precision` formats numbers with that many decimals.
pub fn fmt_value(v: &Value, precision: Option<usize>) -> String {
    match (v, precision) {
        (Value::Float(f), Some(p)) => format!("{f:.p$}"),
        (Value::Float(f), None) => format!("{f}"),
        (Value::Int(i), Some(p)) if p > 0 => format!("{:.p$}", *i as f64),
        (Value::Int(i), _) => i.to_string(),
        (Value::Bool(b), _) => b.to_string(),
        (Value::Str(s), _) => s.clone(),
    }
}

/// A duration as Go prints it, to the second (`1h2m3s`, `45s`, `0s`); below a second in ms.
pub fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        let ms = d.subsec_millis();
        return if ms == 0 {
            "0s".into()
        } else {
            format!("{ms}ms")
        };
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    if h > 0 || m > 0 {
        let _ = write!(out, "{m}m");
    }
    let _ = write!(out, "{s}s");
    out
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

/// Nanoseconds since the epoch as RFC 3339 UTC (`2026-11-22T04:11:43Z`, milliseconds shown
/// when not zero).
pub fn rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    let mut s = format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    if nanos >= 1_000_000 {
        let _ = write!(s, ".{:03}", nanos / 1_000_000);
    }
    s.push('Z');
    s
}

/// Parses an RFC 3339 time (`2026-11-22T10:00:00Z`, `...+02:00`, fractional seconds, `t`/`z`
/// or a space accepted) into nanoseconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    let bad = || format!("invalid time {s:?}: expected RFC 3339 such as 2026-11-22T10:00:00Z");
    let b = s.trim().as_bytes();
    if b.len() < 20 {
        return Err(bad());
    }
    let num = |from: usize, len: usize| -> Result<i64, String> {
        let part = b.get(from..from + len).ok_or_else(bad)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        std::str::from_utf8(part)
            .ok()
            .and_then(|p| p.parse().ok())
            .ok_or_else(bad)
    };
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return Err(bad());
    }
    if b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (h, mi, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60
    {
        return Err(bad());
    }
    let mut i = 19;
    let mut frac_ns = 0i64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(bad());
        }
        let digits = &b[start..i.min(start + 9)];
        let mut v = 0i64;
        for &c in digits {
            v = v * 10 + i64::from(c - b'0');
        }
        frac_ns = v * 10i64.pow(9 - digits.len() as u32);
    }
    let offset_secs = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if oh > 23 || om > 59 {
                return Err(bad());
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return Err(bad()),
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec.min(59) - offset_secs;
    Ok(secs * 1_000_000_000 + frac_ns)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

// Howard Hinnant's civil calendar algorithms (public domain).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Level;

    fn event() -> AlertEvent {
        AlertEvent {
            rule: "cpu_high".into(),
            id: "cpu_high:host=web1".into(),
            message: "web1: CPU 93.2% busy is CRITICAL".into(),
            details: "d".into(),
            kind: EventKind::Alert,
            level: Level::Critical,
            previous_level: Level::Warning,
            tags: [("host".to_owned(), "web1".to_owned())].into(),
            fields: [("value".to_owned(), Value::Float(93.25))].into(),
            time: 1_795_000_000_000_000_000,
            duration: Duration::from_secs(3725),
            notify: vec![],
            category: None,
        }
    }

    #[test]
    fn renders_placeholders_formats_and_unknowns() {
        let e = event();
        assert_eq!(
            render(
                "[{{level}}] {{ host }} {{value:.1}} {{fields.value}} {{tags.host}}",
                &e
            ),
            "[CRITICAL] web1 93.2 93.25 web1"
        );
        assert_eq!(
            render("{{duration}} {{nope}} {{category}} {{kind}} {{group}}", &e),
            "1h2m5s <no value> <no value> alert host=web1"
        );
        assert_eq!(render("a {{unterminated", &e), "a {{unterminated");
        assert_eq!(render("{{time}}", &e), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn rfc3339_round_trips_and_rejects_garbage() {
        for s in [
            "1970-01-01T00:00:00Z",
            "2000-02-29T23:59:59Z",
            "2026-11-22T04:11:43.250Z",
            "1969-12-31T23:59:59Z",
        ] {
            let ns = parse_rfc3339(s).unwrap();
            assert_eq!(rfc3339(ns), s);
        }
        assert_eq!(
            parse_rfc3339("2026-11-22T12:00:00+02:00").unwrap(),
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
            "2026-11-22T10:00:00+0200",
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
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_duration(Duration::from_secs(61)), "1m1s");
    }
}
