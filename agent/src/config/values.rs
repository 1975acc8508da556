//! Value syntaxes of telegraf.conf: Go durations, sizes and `${VAR}` substitution.

use std::time::Duration;

/// Parses a Go duration (`"10s"`, `"1m30s"`, `"500ms"`, `"1.5h"`, `"2d"`; `""` = 0), as Telegraf
/// does with its `d` (days) extension. Negative durations are refused: no option takes one.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() || s == "0" {
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
    let mut rest = s.trim_start_matches('+');
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(bad());
        }
        let num: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
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
        total += num * scale;
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// Parses a size: an integer number of bytes or a string such as `"32MiB"`, `"5MB"`, `"512B"`.
pub fn parse_size(s: &str) -> Result<u64, String> {
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
pub fn substitute_env(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
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
            let Some(end) = body.find('}') else {
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
                substitute_env(&op[1..], lookup)?
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
                substitute_env(&op[1..], lookup)?
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
        assert!(parse_duration("10").unwrap_err().contains("missing unit"));
        assert!(parse_duration("10x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("s").is_err());
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
            Err("environment variable NOPE: set NOPE".into())
        );
        assert_eq!(s("unterminated ${HOST"), Ok("unterminated ${HOST".into()));
    }
}
