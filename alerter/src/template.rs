//! Message templates: `{{name}}` placeholders over an alert's rule, id, level, tags and fields
//! (docs/rules.md, "Templates"). A template is parsed once into literal and placeholder parts;
//! rendering never fails (an unknown name renders as `<no value>`).
//!
//! Name lookup: `tags.X` and `fields.X` address a tag or a field explicitly; otherwise the
//! built-in names win (`id rule level previous_level kind duration time group tags fields
//! measurement message error`), then a tag, then a field. `{{value:.N}}` formats a number with
//! N decimals (an integer field too); on a non-number the spec is ignored.

use std::fmt::{self, Write as _};
use std::time::Duration;

use crate::model::{EventKind, Level, Value};

/// What an unknown name renders as (Go's text/template does the same).
pub const NO_VALUE: &str = "<no value>";

/// The details template used when a rule sets none: a readable multi-line summary.
pub const DEFAULT_DETAILS: &str = "{{message}}\n\nrule: {{rule}}\nid: {{id}}\nkind: {{kind}}\n\
level: {{level}} (previous: {{previous_level}})\nduration: {{duration}}\ntime: {{time}}\n\
tags: {{tags}}\nfields: {{fields}}\n";

/// A parse error, with the byte offset into the template text where the bad placeholder starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template error at offset {offset}: {kind}")]
pub struct TemplateError {
    /// Byte offset of the offending `{{` in the template text.
    pub offset: usize,
    pub kind: TemplateErrorKind,
}

/// Why a template did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateErrorKind {
    #[error("unclosed `{{{{` (no matching `}}}}`)")]
    Unclosed,
    #[error("empty placeholder `{{{{}}}}`")]
    EmptyName,
    #[error("bad character {0:?} in placeholder name")]
    BadName(char),
    #[error("bad format `{0}` (expected `:.N`, e.g. `{{{{value:.1}}}}`)")]
    BadFormat(String),
}

impl TemplateError {
    /// 1-based (line, column) of the error inside the template text, for callers that map a
    /// template back to a file position (column counted in characters).
    pub fn line_col(&self, src: &str) -> (usize, usize) {
        let upto = src.get(..self.offset).unwrap_or(src);
        let line = upto.matches('\n').count() + 1;
        let col = upto.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }
}

/// A parsed template: render it as often as needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Var { name: Name, decimals: Option<usize> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Name {
    Tag(String),
    Field(String),
    /// A built-in, else a tag, else a field.
    Plain(String),
}

/// Everything a template can refer to. `id` and `message` are `None` while they are being
/// rendered themselves (the id template cannot use `{{id}}`).
#[derive(Debug, Clone, Copy)]
pub struct TemplateData<'a> {
    pub rule: &'a str,
    pub id: Option<&'a str>,
    pub message: Option<&'a str>,
    pub kind: Option<EventKind>,
    pub level: Level,
    pub previous_level: Level,
    /// How long the instance has been non-OK.
    pub duration: Duration,
    /// The event's time, ns since the epoch.
    pub time_ns: i64,
    pub measurement: &'a str,
    pub tags: &'a crate::model::Tags,
    pub fields: &'a crate::model::Fields,
    /// The evaluation error, for Error events.
    pub error: Option<&'a str>,
}

impl<'a> TemplateData<'a> {
    /// Data for a rule's instance with everything but rule, tags and fields at its zero value.
    pub fn new(
        rule: &'a str,
        tags: &'a crate::model::Tags,
        fields: &'a crate::model::Fields,
    ) -> Self {
        TemplateData {
            rule,
            id: None,
            message: None,
            kind: None,
            level: Level::Ok,
            previous_level: Level::Ok,
            duration: Duration::ZERO,
            time_ns: 0,
            measurement: "",
            tags,
            fields,
            error: None,
        }
    }
}

impl Template {
    /// Parses `src`; errors name the byte offset of the bad placeholder.
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = src;
        let mut base = 0;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Lit(rest[..open].to_string()));
            }
            let offset = base + open;
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or(TemplateError {
                offset,
                kind: TemplateErrorKind::Unclosed,
            })?;
            let inner = &after[..close];
            parts.push(parse_placeholder(inner, offset)?);
            let consumed = open + 2 + close + 2;
            rest = &rest[consumed..];
            base += consumed;
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// A template that renders `text` as is (no placeholders).
    pub fn literal(text: &str) -> Template {
        Template {
            parts: vec![Part::Lit(text.to_string())],
        }
    }

    /// Renders the template; never fails.
    pub fn render(&self, data: &TemplateData) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Var { name, decimals } => render_var(&mut out, name, *decimals, data),
            }
        }
        out
    }
}

fn parse_placeholder(inner: &str, offset: usize) -> Result<Part, TemplateError> {
    let err = |kind| TemplateError { offset, kind };
    if inner.contains('{') {
        // A second `{{` before the first one closed.
        return Err(err(TemplateErrorKind::Unclosed));
    }
    let (name, spec) = match inner.split_once(':') {
        Some((n, s)) => (n.trim(), Some(s.trim())),
        None => (inner.trim(), None),
    };
    if name.is_empty() {
        return Err(err(TemplateErrorKind::EmptyName));
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '}' | ':') || c.is_whitespace())
    {
        return Err(err(TemplateErrorKind::BadName(c)));
    }
    let decimals = match spec {
        None => None,
        Some(s) => {
            let digits = s.strip_prefix('.').unwrap_or("");
            match digits.parse::<usize>() {
                Ok(n) if n <= 17 && !digits.starts_with('+') => Some(n),
                _ => return Err(err(TemplateErrorKind::BadFormat(s.to_string()))),
            }
        }
    };
    let name = if let Some(t) = name.strip_prefix("tags.") {
        Name::Tag(t.to_string())
    } else if let Some(f) = name.strip_prefix("fields.") {
        Name::Field(f.to_string())
    } else {
        Name::Plain(name.to_string())
    };
    Ok(Part::Var { name, decimals })
}

fn render_var(out: &mut String, name: &Name, decimals: Option<usize>, d: &TemplateData) {
    match name {
        Name::Tag(t) => push_opt(out, d.tags.get(t).map(String::as_str)),
        Name::Field(f) => push_field(out, d.fields.get(f), decimals),
        Name::Plain(n) => {
            if !render_builtin(out, n, d) {
                if let Some(t) = d.tags.get(n) {
                    out.push_str(t);
                } else {
                    push_field(out, d.fields.get(n), decimals);
                }
            }
        }
    }
}

/// Writes a built-in name's value; false when `name` is not a built-in.
fn render_builtin(out: &mut String, name: &str, d: &TemplateData) -> bool {
    match name {
        "rule" => out.push_str(d.rule),
        "id" => push_opt(out, d.id),
        "message" => push_opt(out, d.message),
        "error" => push_opt(out, d.error),
        "kind" => push_opt(out, d.kind.map(kind_str)),
        "level" => out.push_str(d.level.as_str()),
        "previous_level" => out.push_str(d.previous_level.as_str()),
        "duration" => out.push_str(&format_duration(d.duration)),
        "time" => out.push_str(&format_rfc3339(d.time_ns)),
        "group" => out.push_str(&group(d.tags)),
        "tags" => out.push_str(&group(d.tags)),
        "fields" => out.push_str(&fields_summary(d.fields)),
        "measurement" => out.push_str(d.measurement),
        _ => return false,
    }
    true
}

fn push_opt(out: &mut String, v: Option<&str>) {
    out.push_str(v.unwrap_or(NO_VALUE));
}

fn push_field(out: &mut String, v: Option<&Value>, decimals: Option<usize>) {
    match v {
        None => out.push_str(NO_VALUE),
        Some(v) => write_value(out, v, decimals),
    }
}

fn write_value(out: &mut String, v: &Value, decimals: Option<usize>) {
    // Writing into a String cannot fail.
    let _ = match (v, decimals) {
        (Value::Float(f), Some(n)) => write!(out, "{f:.n$}"),
        (Value::Int(i), Some(n)) => write!(out, "{:.n$}", *i as f64),
        (Value::Float(f), None) => write!(out, "{}", format_number(*f)),
        (Value::Int(i), None) => write!(out, "{i}"),
        (Value::Bool(b), _) => write!(out, "{b}"),
        (Value::Str(s), _) => write!(out, "{s}"),
    };
}

/// The event kind as templates and logs spell it (the serde name).
pub fn kind_str(k: EventKind) -> &'static str {
    match k {
        EventKind::Alert => "alert",
        EventKind::Recovery => "recovery",
        EventKind::NoData => "no_data",
        EventKind::Error => "error",
        EventKind::Flapping => "flapping",
    }
}

/// Kapacitor's `Group`: `k=v,k2=v2` of the tags in key order, or `nil` without tags.
pub fn group(tags: &crate::model::Tags) -> String {
    key_values(tags.iter(), "nil", ",", |s, v| s.push_str(v))
}

fn fields_summary(fields: &crate::model::Fields) -> String {
    key_values(fields.iter(), "none", ", ", |s, v| write_value(s, v, None))
}

/// `k=v` of each entry in key order, joined by `sep`; `empty` when there is none.
fn key_values<'a, V: 'a>(
    pairs: impl ExactSizeIterator<Item = (&'a String, &'a V)>,
    empty: &str,
    sep: &str,
    mut value: impl FnMut(&mut String, &V),
) -> String {
    if pairs.len() == 0 {
        return empty.into();
    }
    let mut s = String::new();
    for (i, (k, v)) in pairs.enumerate() {
        if i > 0 {
            s.push_str(sep);
        }
        s.push_str(k);
        s.push('=');
        value(&mut s, v);
    }
    s
}

/// A count with its noun: `1 rule`, `2 rules` (nouns that take an `s`).
pub fn count(n: u64, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// A duration as people read it, Go's `time.Duration` shape at a sensible precision: whole
/// seconds from a minute up (`1m44s`, not `1m43.999641905s`; `1h0m0s`), tenths of a second
/// below (`8s`, `1.5s`), whole milliseconds below a second (`750ms`), then `µs`, `ns`.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    let round = |unit: u128| (nanos + unit / 2) / unit;
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if round(1_000) < 1_000 {
        return format!("{}µs", round(1_000));
    }
    if round(1_000_000) < 1_000 {
        return format!("{}ms", round(1_000_000));
    }
    if round(100_000_000) < 600 {
        return format!("{}s", frac(round(100_000_000), 10));
    }
    let secs = round(1_000_000_000);
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    let _ = write!(out, "{m}m{s}s");
    out
}

/// A float at a sensible precision: six significant digits (as C's `%g`) without an exponent,
/// trailing zeros dropped, so arithmetic noise does not show (`90`, not
/// `90.00000000000021`; `93.456`; `0.000123457`; `1234568`).
pub fn format_number(f: f64) -> String {
    if !f.is_finite() {
        return f.to_string();
    }
    if f == 0.0 {
        return "0".into();
    }
    let magnitude = f.abs().log10().floor() as i32;
    let decimals = (5 - magnitude).clamp(0, 15) as usize;
    let text = format!("{f:.decimals$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    if text == "-0" {
        "0".into()
    } else {
        text.to_string()
    }
}

/// `n / unit` as a decimal without trailing zeros.
fn frac(n: u128, unit: u128) -> String {
    let (whole, rest) = (n / unit, n % unit);
    if rest == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{rest:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// RFC 3339 in UTC with second precision, e.g. `2026-11-22T04:12:33Z`.
pub fn format_rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    jiff::Timestamp::from_second(secs).map_or_else(
        |_| format!("@{secs}s"),
        |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

impl fmt::Display for Template {
    /// The template's source form (normalised placeholders).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.parts {
            match p {
                Part::Lit(s) => f.write_str(s)?,
                Part::Var { name, decimals } => {
                    let n = match name {
                        Name::Tag(t) => format!("tags.{t}"),
                        Name::Field(x) => format!("fields.{x}"),
                        Name::Plain(x) => x.clone(),
                    };
                    match decimals {
                        Some(d) => write!(f, "{{{{{n}:.{d}}}}}")?,
                        None => write!(f, "{{{{{n}}}}}")?,
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> crate::model::Tags {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn render(src: &str, d: &TemplateData) -> String {
        Template::parse(src).expect("template parses").render(d)
    }

    /// Each `(template, expected)` renders as expected over `d`.
    fn renders_all(d: &TemplateData, cases: &[(&str, &str)]) {
        for (src, want) in cases {
            assert_eq!(render(src, d), *want, "{src}");
        }
    }

    #[test]
    fn counts_take_their_plural() {
        assert_eq!(count(0, "rule"), "0 rules");
        assert_eq!(count(1, "rule"), "1 rule");
        assert_eq!(count(2, "action"), "2 actions");
    }

    #[test]
    fn placeholders_resolve_builtins_tags_and_fields() {
        let t = tags(&[("host", "web1"), ("cpu", "cpu-total")]);
        let mut f = crate::model::Fields::new();
        f.insert("value".to_string(), Value::Float(93.456));
        f.insert("count".to_string(), Value::Int(7));
        let mut d = TemplateData::new("cpu_high", &t, &f);
        d.id = Some("cpu_high:cpu=cpu-total,host=web1");
        d.level = Level::Critical;
        d.previous_level = Level::Warning;
        d.duration = Duration::from_secs(330);
        d.time_ns = 1_795_000_000_123_000_000;
        d.kind = Some(EventKind::Alert);
        renders_all(
            &d,
            &[
                (
                    "{{host}}: CPU {{value:.1}}% busy is {{level}}",
                    "web1: CPU 93.5% busy is CRITICAL",
                ),
                (
                    "{{tags.cpu}} {{fields.count:.2}} {{ count }}",
                    "cpu-total 7.00 7",
                ),
                ("{{rule}}:{{group}}", "cpu_high:cpu=cpu-total,host=web1"),
                (
                    "{{duration}} {{previous_level}} {{kind}}",
                    "5m30s WARNING alert",
                ),
                ("{{time}}", "2026-11-18T11:06:40Z"),
                ("{{nope}} {{message}}", "<no value> <no value>"),
                ("no placeholders }} here", "no placeholders }} here"),
            ],
        );
    }

    #[test]
    fn builtins_win_over_tags_and_tags_over_fields() {
        let t = tags(&[("level", "tag-level"), ("x", "tag-x")]);
        let mut f = crate::model::Fields::new();
        f.insert("x".to_string(), Value::Str("field-x".into()));
        f.insert("s".to_string(), Value::Str("text".into()));
        f.insert("b".to_string(), Value::Bool(true));
        let d = TemplateData::new("r", &t, &f);
        renders_all(
            &d,
            &[
                (
                    "{{level}} {{tags.level}} {{x}} {{fields.x}}",
                    "OK tag-level tag-x field-x",
                ),
                (
                    "{{s:.2}} {{b:.1}} {{id}} {{tags.nope}}",
                    "text true <no value> <no value>",
                ),
                (
                    "{{fields}} / {{tags}}",
                    "b=true, s=text, x=field-x / level=tag-level,x=tag-x",
                ),
            ],
        );
    }

    #[test]
    fn group_without_tags_is_nil() {
        let (t, f) = (crate::model::Tags::new(), crate::model::Fields::new());
        let d = TemplateData::new("r", &t, &f);
        assert_eq!(render("{{rule}}:{{group}}", &d), "r:nil");
    }

    #[test]
    fn syntax_errors_carry_the_offset() {
        let e = Template::parse("abc {{host").unwrap_err();
        assert_eq!((e.offset, e.kind.clone()), (4, TemplateErrorKind::Unclosed));
        assert_eq!(
            e.to_string(),
            "template error at offset 4: unclosed `{{` (no matching `}}`)"
        );
        let e = Template::parse("{{a}} {{b {{c}}").unwrap_err();
        assert_eq!((e.offset, e.kind), (6, TemplateErrorKind::Unclosed));
        let e = Template::parse("x\n  {{ }}").unwrap_err();
        assert_eq!(
            (e.offset, e.kind.clone()),
            (4, TemplateErrorKind::EmptyName)
        );
        assert_eq!(e.line_col("x\n  {{ }}"), (2, 3));
        let e = Template::parse("{{value:%2f}}").unwrap_err();
        assert_eq!(e.kind, TemplateErrorKind::BadFormat("%2f".into()));
        assert!(Template::parse("{{a b}}").is_err());
    }

    #[test]
    fn display_round_trips() {
        let src = "{{ host }} {{tags.a}}/{{fields.v:.2}}!";
        let t = Template::parse(src).unwrap();
        assert_eq!(t.to_string(), "{{host}} {{tags.a}}/{{fields.v:.2}}!");
        assert_eq!(Template::parse(&t.to_string()).unwrap(), t);
    }

    #[test]
    fn durations_read_like_go_at_a_human_precision() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(250), "250ns"),
            (Duration::from_nanos(1_499), "1µs"),
            (Duration::from_micros(1500), "2ms"),
            (Duration::from_millis(750), "750ms"),
            (Duration::from_micros(999_600), "1s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(8_000), "8s"),
            (Duration::from_millis(59_960), "1m0s"),
            (Duration::from_secs(330), "5m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_secs(90_061), "25h1m1s"),
        ];
        for (d, want) in cases {
            assert_eq!(format_duration(d), want, "{d:?}");
        }
    }

    /// Regression: `{{duration}}` printed `1m43.999641905s`.
    #[test]
    fn a_duration_off_by_nanoseconds_reads_as_whole_seconds() {
        assert_eq!(
            format_duration(Duration::from_nanos(103_999_641_905)),
            "1m44s"
        );
    }

    /// Regression: details printed `value=90.00000000000021`.
    #[test]
    fn numbers_print_at_a_sensible_precision() {
        let cases = [
            (90.00000000000021, "90"),
            (93.456, "93.456"),
            (-12.5, "-12.5"),
            (0.1 + 0.2, "0.3"),
            (1.0 / 3.0, "0.333333"),
            (0.000123456789, "0.000123457"),
            (1_234_567.89, "1234568"),
            (99.9999999, "100"),
            (0.0, "0"),
            (-0.0000000001, "-0.0000000001"),
            (f64::NAN, "NaN"),
        ];
        for (f, want) in cases {
            assert_eq!(format_number(f), want, "{f:?}");
        }
        let (t, mut f) = (crate::model::Tags::new(), crate::model::Fields::new());
        f.insert("value".to_string(), Value::Float(90.00000000000021));
        let d = TemplateData::new("r", &t, &f);
        assert_eq!(
            render("{{value}} {{fields}} {{value:.3}}", &d),
            "90 value=90 90.000"
        );
    }

    #[test]
    fn rfc3339_utc() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn default_details_is_a_summary() {
        let t = tags(&[("host", "a")]);
        let mut f = crate::model::Fields::new();
        f.insert("value".to_string(), Value::Float(1.5));
        let mut d = TemplateData::new("r", &t, &f);
        d.id = Some("r:host=a");
        d.message = Some("r:host=a is OK");
        d.kind = Some(EventKind::Recovery);
        let s = render(DEFAULT_DETAILS, &d);
        assert!(
            s.starts_with("r:host=a is OK\n\nrule: r\nid: r:host=a\nkind: recovery\n"),
            "{s}"
        );
        assert!(s.contains("tags: host=a\nfields: value=1.5\n"), "{s}");
    }
}
