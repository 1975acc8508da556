//! Value syntaxes of telegraf.conf: Go durations, sizes and `${VAR}` substitution.

use std::time::Duration;

/// A value that does not parse; the message names the text and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("{0}")]
    Duration(String),
    #[error("{0}")]
    Size(String),
    /// `${VAR:?message}` on an unset variable, or a malformed `${…}`.
    #[error("{0}")]
    Env(String),
}

/// Parses a Go duration (`"10s"`, `"1m30s"`, `"500ms"`, `"1.5h"`, `"2d"`; `""` = 0), as Telegraf
/// does with its `d` (days) extension: Go's `time.ParseDuration` arithmetic exactly (integer
/// nanoseconds, a fraction truncated to the nanosecond, more than 2^63-1 ns is an error).
/// Negative durations are refused: no option takes one.
pub fn parse_duration(s: &str) -> Result<Duration, ValueError> {
    duration(s).map_err(ValueError::Duration)
}

fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() || s == "0" || s == "+0" {
        return Ok(Duration::ZERO);
    }
    if s.starts_with('-') {
        return Err(format!(
            "invalid duration {s:?}: negative durations are not allowed"
        ));
    }
    let bad = || {
        format!(
            "invalid duration {s:?}: expected a number and a unit like \"10s\", \"1m30s\", \"500ms\""
        )
    };
    let too_big = || format!("invalid duration {s:?}: too large");
    // Telegraf first reads the text as a number of seconds ("10", "1.5"), as for a TOML
    // number.
    if let Ok(secs) = s.parse::<u64>() {
        return secs
            .checked_mul(1_000_000_000)
            .filter(|ns| *ns <= i64::MAX as u64)
            .map(Duration::from_nanos)
            .ok_or_else(too_big);
    }
    if s.bytes()
        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'e' || b == b'E' || b == b'+')
        && let Ok(secs) = s.parse::<f64>()
    {
        return Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|d| d.as_nanos() <= i64::MAX as u128)
            .ok_or_else(too_big);
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let int_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
                a.split_at(n)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad());
        }
        let mut v: u64 = 0;
        for d in int_part.bytes() {
            v = v
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(d - b'0')))
                .ok_or_else(too_big)?;
        }
        // Go keeps fraction digits while they fit and ignores the rest.
        let (mut f, mut scale) = (0u64, 1f64);
        let mut overflow = false;
        for d in frac_part.bytes() {
            if overflow {
                continue;
            }
            match f
                .checked_mul(10)
                .and_then(|f| f.checked_add(u64::from(d - b'0')))
            {
                Some(nf) if nf < 1 << 63 => {
                    f = nf;
                    scale *= 10.0;
                }
                _ => overflow = true,
            }
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, tail) = after.split_at(unit_len);
        rest = tail;
        let unit_ns: u64 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            "" => {
                return Err(format!(
                    "invalid duration {s:?}: missing unit (write \"{s}s\" for seconds)"
                ));
            }
            _ => {
                return Err(format!(
                    "invalid duration {s:?}: unknown unit {unit:?} (use ns, us, ms, s, m, h or d)"
                ));
            }
        };
        let mut ns = v.checked_mul(unit_ns).ok_or_else(too_big)?;
        if f > 0 {
            // As Go: float64(f) * (float64(unit) / scale), truncated.
            ns = ns
                .checked_add((f as f64 * (unit_ns as f64 / scale)) as u64)
                .ok_or_else(too_big)?;
        }
        total = total.checked_add(ns).ok_or_else(too_big)?;
        if total > i64::MAX as u64 {
            return Err(too_big());
        }
    }
    Ok(Duration::from_nanos(total))
}

/// Parses a size: an integer number of bytes or a string such as `"32MiB"`, `"5MB"`, `"512B"`.
pub fn parse_size(s: &str) -> Result<u64, ValueError> {
    size(s).map_err(ValueError::Size)
}

fn size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected a number and a unit like \"32MiB\""))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "ki" | "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mi" | "mib" => 1048576.0,
        "g" | "gb" => 1e9,
        "gi" | "gib" => 1073741824.0,
        "t" | "tb" => 1e12,
        "ti" | "tib" => 1099511627776.0,
        _ => return Err(format!("invalid size {s:?}: unknown unit {unit:?}")),
    };
    Ok((num * scale) as u64)
}

/// Replaces `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?msg}`, `${VAR?msg}`,
/// `${VAR:+alt}`, `${VAR+alt}` and `$$` as Telegraf (compose-go templates) does. An unset
/// variable without a default is left verbatim; `${VAR:?msg}` on an unset variable is an error.
pub fn substitute_env(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ValueError> {
    substitute(s, lookup).map_err(ValueError::Env)
}

fn substitute(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    if !s.contains('$') {
        return Ok(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = closing_brace(body) else {
                out.push_str(&rest[pos..]);
                return Ok(out);
            };
            let expr = &body[..end];
            let raw = &rest[pos..pos + 2 + end + 1];
            out.push_str(&expand_braced(expr, raw, lookup)?);
            rest = &body[end + 1..];
        } else {
            let len = name_len(after);
            if len == 0 {
                out.push('$');
                rest = after;
            } else {
                let name = &after[..len];
                match lookup(name) {
                    Some(v) => out.push_str(&v),
                    None => out.push_str(&rest[pos..pos + 1 + len]),
                }
                rest = &after[len..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The index in `body` (the text after `${`) of the `}` that closes it: braces are matched by
/// depth, each nested `${` opening one more, as compose-go's `getFirstBraceClosingIndex`, so
/// `${DB:-${ENV}_metrics}` ends at its last brace, not at the first.
fn closing_brace(body: &str) -> Option<usize> {
    let bytes = body.as_bytes();
    let mut depth = 1usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn name_len(s: &str) -> usize {
    let mut chars = s.char_indices();
    match chars.next() {
        Some((_, c)) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return 0,
    }
    chars
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
        .map_or(s.len(), |(i, _)| i)
}

fn expand_braced(
    expr: &str,
    raw: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let len = name_len(expr);
    if len == 0 {
        return Ok(raw.to_owned());
    }
    let (name, op) = expr.split_at(len);
    let value = lookup(name);
    let set_nonempty = value.as_deref().is_some_and(|v| !v.is_empty());
    let (colon, op) = match op.strip_prefix(':') {
        Some(o) => (true, o),
        None => (false, op),
    };
    let present = if colon { set_nonempty } else { value.is_some() };
    Ok(match op.chars().next() {
        None if !colon => match value {
            Some(v) => v,
            None => raw.to_owned(),
        },
        Some('-') => {
            if present {
                value.unwrap_or_default()
            } else {
                substitute(&op[1..], lookup)?
            }
        }
        Some('?') => {
            if present {
                value.unwrap_or_default()
            } else {
                let msg = &op[1..];
                return Err(if msg.is_empty() {
                    format!("environment variable {name} is required but not set")
                } else {
                    format!("environment variable {name}: {msg}")
                });
            }
        }
        Some('+') => {
            if present {
                substitute(&op[1..], lookup)?
            } else {
                String::new()
            }
        }
        _ => raw.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("web1".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172800)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration(""), Ok(Duration::ZERO));
        // A bare number is seconds, as in Telegraf's config.Duration.
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1e2"), Ok(Duration::from_secs(100)));
        assert!(
            parse_duration("1h5")
                .unwrap_err()
                .to_string()
                .contains("missing unit")
        );
        assert!(
            parse_duration("10x")
                .unwrap_err()
                .to_string()
                .contains("unknown unit")
        );
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn durations_are_exact_like_go() {
        for (s, ns) in [
            ("0.1s", 100_000_000u64),
            ("1.1s", 1_100_000_000),
            ("0.3s", 300_000_000),
            ("2.675s", 2_675_000_000),
            ("1h0.001s", 3_600_001_000_000),
            ("1.000000001s", 1_000_000_001),
            ("0.0000000019s", 1),
            ("1.5us", 1_500),
            ("2562047h", 2_562_047 * 3_600_000_000_000),
            (".5s", 500_000_000),
            ("5.s", 5_000_000_000),
            ("+1m", 60_000_000_000),
            ("1h2m3s4ms5us6ns", 3_723_004_005_006),
        ] {
            assert_eq!(parse_duration(s), Ok(Duration::from_nanos(ns)), "{s}");
        }
        for bad in [
            ".",
            "1.2.3s",
            "2562048h",
            "9223372036854775808ns",
            "1s.",
            "s1",
            "1e3s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("32MiB"), Ok(32 << 20));
        assert_eq!(parse_size("5MB"), Ok(5_000_000));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("1XB").is_err());
    }

    #[test]
    fn env_substitution_matches_compose_go() {
        let s = |x: &str| substitute_env(x, &env);
        assert_eq!(s("${HOST}-$HOST"), Ok("web1-web1".into()));
        assert_eq!(s("${NOPE}"), Ok("${NOPE}".into()));
        assert_eq!(s("$NOPE/x"), Ok("$NOPE/x".into()));
        assert_eq!(s("${NOPE:-dflt}"), Ok("dflt".into()));
        assert_eq!(s("${EMPTY:-dflt}"), Ok("dflt".into()));
        assert_eq!(s("${EMPTY-dflt}"), Ok("".into()));
        assert_eq!(s("${HOST:+yes}${NOPE:+no}"), Ok("yes".into()));
        assert_eq!(s("cost $$5"), Ok("cost $5".into()));
        assert_eq!(s("${1}"), Ok("${1}".into()));
        assert_eq!(
            s("${NOPE:?set NOPE}"),
            Err(ValueError::Env(
                "environment variable NOPE: set NOPE".into()
            ))
        );
        assert_eq!(s("unterminated ${HOST"), Ok("unterminated ${HOST".into()));
    }

    /// `${DB:-${ENV}_metrics}` took the first `}` as its end and silently gave
    /// `${ENV_metrics}`: braces nest, as in compose-go.
    #[test]
    fn nested_defaults_match_braces_by_depth() {
        let s = |x: &str| substitute_env(x, &env);
        assert_eq!(s("${DB:-${HOST}_metrics}"), Ok("web1_metrics".into()));
        assert_eq!(s("${DB:-${NOPE:-${HOST}}}/x"), Ok("web1/x".into()));
        assert_eq!(s("${HOST:+[${HOST}]}-${DB-a}"), Ok("[web1]-a".into()));
        assert_eq!(s("${HOST:-${NOPE}}"), Ok("web1".into()));
        // Only `${` opens: a lone `{` in a default is text.
        assert_eq!(s("${DB:-{a}b}"), Ok("{ab}".into()));
        assert_eq!(s("${DB:-${HOST}"), Ok("${DB:-${HOST}".into()));
    }

    proptest::proptest! {
        #[test]
        fn value_parsers_never_panic(s in "\\PC{0,24}", t in "[0-9.+-]{0,8}[a-zµ]{0,3}[0-9.]{0,4}[a-z]{0,2}") {
            let _ = parse_duration(&s);
            let _ = parse_size(&s);
            let _ = parse_duration(&t);
            let _ = parse_size(&t);
            let _ = substitute_env(&s, &env);
        }

        #[test]
        fn text_without_dollar_is_unchanged(s in "[^$]{0,40}") {
            proptest::prop_assert_eq!(substitute_env(&s, &env), Ok(s.clone()));
        }

        #[test]
        fn durations_add_up(h in 0u64..1000, m in 0u64..1000, sec in 0u64..1000, ms in 0u64..1000) {
            let text = format!("{h}h{m}m{sec}s{ms}ms");
            let want = Duration::from_millis(((h * 60 + m) * 60 + sec) * 1000 + ms);
            let got = parse_duration(&text).unwrap();
            proptest::prop_assert_eq!(got, want, "{}", text);
        }
    }
}
