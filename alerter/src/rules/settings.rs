//! `rule(#{ ... })`: validating the settings map into [`RuleSettings`], with errors that name
//! the line and column of the offending key or value.
//!
//! Rhai hands the map to the native `rule` function without source positions, so the keys'
//! positions are recovered by scanning the script text from the call's position (a small
//! scanner that knows Rhai's strings and comments). When the map is not a literal (e.g.
//! `rule(settings)`), errors point at the call.

use std::collections::BTreeMap;
use std::time::Duration;

use rhai::{Dynamic, Map};

use crate::actions::rule::{duration_like, type_of};
use crate::model::{Level, Policy, RuleSettings};

/// A line and column (1-based, in characters, as Rhai counts them).
pub use crate::model::Pos;

/// One settings error: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    pub pos: Pos,
    pub message: String,
}

/// Every key `rule()` accepts (docs/rules.md, "Settings"); `"for"` is also accepted, as
/// [`PENDING_ALIAS`].
pub const KEYS: &[&str] = &[
    "name",
    "every",
    "pending",
    "keep_firing",
    "repeat",
    "flapping",
    "history",
    "no_data",
    "no_data_after",
    "expect",
    "error",
    "expire_after",
    "recoveries",
    "id",
    "message",
    "details",
    "notify",
    "category",
    "inhibits",
    "actions",
];

/// The old name of `pending` (Prometheus' `for:`), still accepted. It is a Rhai keyword, so
/// it has to be written quoted, which is why `pending` took over.
pub const PENDING_ALIAS: &str = "for";

/// Builds the settings from the map given to `rule()`. `default_name` is the file name without
/// `.rhai`; `source` and `call` (the position of `rule`) locate keys for messages.
pub fn build(
    map: &Map,
    default_name: &str,
    source: &str,
    call: Pos,
) -> Result<RuleSettings, SettingsError> {
    let positions = key_positions(source, call);
    let key_pos = |k: &str| positions.get(k).map_or(call, |p| p.0);
    let value_pos = |k: &str| positions.get(k).map_or(call, |p| p.1);
    let mut s = RuleSettings {
        name: default_name.to_owned(),
        ..RuleSettings::default()
    };
    // Report problems in source order, so the first error shown is the first in the file.
    let mut keys: Vec<&str> = map.keys().map(|k| k.as_str()).collect();
    keys.sort_by_key(|k| key_pos(k));
    // Which of `pending` / `"for"` set the pending time, so that giving both is an error.
    let mut pending_from: Option<&str> = None;
    for key in keys {
        let Some(v) = map.get(key) else { continue };
        let bad = |message: String| SettingsError {
            pos: value_pos(key),
            message: format!("rule(): {key}: {message}"),
        };
        match key {
            "name" => {
                s.name = non_empty_string(v).map_err(bad)?;
                s.name_pos = value_pos(key);
            }
            "every" => {
                s.every = duration(v).map_err(bad)?;
                // "1ns" ran ~145 queries a second against the database.
                if s.every < MIN_EVERY {
                    return Err(bad(format!(
                        "{:?} is too short: must be at least {MIN_EVERY:?}",
                        s.every
                    )));
                }
            }
            "pending" | PENDING_ALIAS => {
                if let Some(first) = pending_from {
                    return Err(SettingsError {
                        pos: key_pos(key),
                        message: format!(
                            "rule(): {key:?} and {first:?} are the same setting \
                             (\"{PENDING_ALIAS}\" is the old name of \"pending\"): give it once"
                        ),
                    });
                }
                pending_from = Some(key);
                s.pending = duration(v).map_err(bad)?;
            }
            "keep_firing" => s.keep_firing = duration(v).map_err(bad)?,
            "repeat" => {
                let d = duration(v).map_err(bad)?;
                if d.is_zero() {
                    return Err(bad(
                        "must be longer than 0s (leave repeat out to notify state changes only)"
                            .into(),
                    ));
                }
                s.repeat = Some(d);
            }
            "flapping" => s.flapping = Some(flapping(v).map_err(bad)?),
            "history" => {
                let n = v
                    .as_int()
                    .map_err(|_| bad(format!("expected an integer, got {}", type_of(v))))?;
                if !(2..=1000).contains(&n) {
                    return Err(bad(format!("{n} is out of range 2..=1000")));
                }
                s.history = n as usize;
            }
            "no_data" => s.no_data = policy(v).map_err(bad)?,
            "no_data_after" => s.no_data_after = duration(v).map_err(bad)?,
            "expect" => s.expected = expect(v).map_err(bad)?,
            "error" => s.error = policy(v).map_err(bad)?,
            "expire_after" => s.expire_after = duration(v).map_err(bad)?,
            "recoveries" => {
                s.recoveries = v
                    .as_bool()
                    .map_err(|_| bad(format!("expected true or false, got {}", type_of(v))))?;
            }
            "id" => s.id_template = template(v).map_err(bad)?,
            "message" => s.message_template = template(v).map_err(bad)?,
            "details" => s.details_template = template(v).map_err(bad)?,
            "notify" => {
                s.notify = strings(v).map_err(bad)?;
                s.notify_pos = value_pos(key);
            }
            "category" => s.category = Some(non_empty_string(v).map_err(bad)?),
            "inhibits" => s.inhibits = inhibits(v).map_err(bad)?,
            "actions" => {
                let at = value_pos(key);
                let elements = array_map_positions(source, at);
                s.actions = crate::actions::rule::parse_list(v, &elements, at)
                    .map_err(|(pos, message)| SettingsError { pos, message })?;
            }
            other => {
                let hint = suggest(other)
                    .map(|k| format!(" (did you mean {k:?}?)"))
                    .unwrap_or_default();
                return Err(SettingsError {
                    pos: key_pos(other),
                    message: format!(
                        "rule(): unknown setting {other:?}{hint}; known settings: {}",
                        KEYS.join(", ")
                    ),
                });
            }
        }
    }
    Ok(s)
}

/// Why a rule may not be called `name`: the built-in rules' names, and names whose state file
/// would be another component's.
pub fn reserved(name: &str) -> Option<&'static str> {
    match name {
        "wk_rules" | "wk_source" | "wk_notifiers" | "wk_actions" | "wk_test" => {
            Some("is a built-in alert's")
        }
        // state_dir/actions.state.json is the recovery actions' attempt budget.
        "actions" => Some("would share its state file with the recovery actions'"),
        _ => None,
    }
}

fn string(v: &Dynamic) -> Result<String, String> {
    v.clone()
        .into_string()
        .map_err(|_| format!("expected a string, got {}", type_of(v)))
}

fn non_empty_string(v: &Dynamic) -> Result<String, String> {
    let s = string(v)?;
    if s.trim().is_empty() {
        return Err("must not be empty".into());
    }
    Ok(s)
}

/// The shortest `every` accepted.
pub const MIN_EVERY: Duration = Duration::from_secs(1);

fn duration(v: &Dynamic) -> Result<Duration, String> {
    duration_like(v, "\"10s\" or \"5m\"")
}

fn template(v: &Dynamic) -> Result<String, String> {
    let s = string(v)?;
    // Go's text/template (Kapacitor's) is the habit of everyone coming from Kapacitor: it
    // would otherwise render as `<no value>` at send time.
    let mut rest = s.as_str();
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let inner = after.split("}}").next().unwrap_or("").trim();
        let first = inner.split_whitespace().next().unwrap_or("");
        if inner.starts_with('.')
            || ["if", "range", "index", "printf", "end", "else", "with"].contains(&first)
        {
            let hint = inner
                .strip_prefix('.')
                .filter(|n| n.chars().all(|c| c.is_alphanumeric() || c == '_'))
                .map(|n| format!("write {{{{{}}}}}", n.to_ascii_lowercase()))
                .unwrap_or_else(|| "write {{host}}, {{tags.host}}, {{level}} ...".to_owned());
            return Err(format!(
                "{{{{{inner}}}}} is Go template syntax, which rule templates do not have: {hint} \
                 (docs/rules.md, \"Templates\")"
            ));
        }
        rest = after;
    }
    crate::template::Template::parse(&s).map_err(|e| {
        let at = s.get(e.offset..).unwrap_or("");
        let shown: String = at.chars().take(24).collect();
        format!("{} at {shown:?}", e.kind)
    })?;
    Ok(s)
}

fn strings(v: &Dynamic) -> Result<Vec<String>, String> {
    let arr = v
        .clone()
        .into_array()
        .map_err(|_| format!("expected an array of strings, got {}", type_of(v)))?;
    arr.iter()
        .enumerate()
        .map(|(i, e)| non_empty_string(e).map_err(|m| format!("element {i}: {m}")))
        .collect()
}

fn policy(v: &Dynamic) -> Result<Policy, String> {
    let s = string(v)?;
    match s.to_ascii_lowercase().as_str() {
        "keep" => Ok(Policy::KeepLast),
        "ok" => Ok(Policy::Ok),
        other => match Level::parse(other) {
            Some(l) if l != Level::Ok => Ok(Policy::Alert(l)),
            _ => Err(format!(
                "{s:?} is not one of \"info\", \"warning\", \"critical\", \"ok\", \"keep\""
            )),
        },
    }
}

fn number(v: &Dynamic) -> Option<f64> {
    v.as_float()
        .ok()
        .or_else(|| v.as_int().ok().map(|i| i as f64))
}

fn flapping(v: &Dynamic) -> Result<(f64, f64), String> {
    let err = || "expected [low, high] with 0 <= low < high <= 1, e.g. [0.25, 0.5]".to_owned();
    let arr = v.clone().into_array().map_err(|_| err())?;
    if arr.len() != 2 {
        return Err(err());
    }
    let (Some(low), Some(high)) = (number(&arr[0]), number(&arr[1])) else {
        return Err(err());
    };
    if !(0.0..=1.0).contains(&low) || !(0.0..=1.0).contains(&high) || low >= high {
        return Err(err());
    }
    Ok((low, high))
}

fn tag_map(v: &Dynamic) -> Result<crate::model::Tags, String> {
    let map = v.read_lock::<Map>().ok_or_else(|| {
        format!(
            "expected a tag map like #{{host: \"web1\"}}, got {}",
            type_of(v)
        )
    })?;
    if map.is_empty() {
        return Err("an empty tag map matches nothing".into());
    }
    map.iter()
        .map(|(k, v)| {
            non_empty_string(v)
                .map(|s| (k.to_string(), s))
                .map_err(|m| format!("tag {k:?}: {m}"))
        })
        .collect()
}

fn expect(v: &Dynamic) -> Result<Vec<crate::model::Tags>, String> {
    let arr = v.clone().into_array().map_err(|_| {
        format!(
            "expected an array of tag maps like [#{{host: \"web1\"}}], got {}",
            type_of(v)
        )
    })?;
    arr.iter()
        .enumerate()
        .map(|(i, e)| tag_map(e).map_err(|m| format!("element {i}: {m}")))
        .collect()
}

fn inhibits(v: &Dynamic) -> Result<Vec<(String, Vec<String>)>, String> {
    let shape = "expected [#{category: \"system\", tags: [\"host\"]}, ...]";
    let arr = v
        .clone()
        .into_array()
        .map_err(|_| format!("{shape}, got {}", type_of(v)))?;
    let mut out = Vec::new();
    for (i, e) in arr.iter().enumerate() {
        let map = e
            .read_lock::<Map>()
            .ok_or_else(|| format!("element {i}: {shape}"))?;
        let mut category = None;
        let mut tags = Vec::new();
        for (k, v) in map.iter() {
            match k.as_str() {
                "category" => {
                    category = Some(
                        non_empty_string(v).map_err(|m| format!("element {i}: category: {m}"))?,
                    )
                }
                "tags" => tags = strings(v).map_err(|m| format!("element {i}: tags: {m}"))?,
                other => {
                    return Err(format!(
                        "element {i}: unknown key {other:?} (use category and tags)"
                    ));
                }
            }
        }
        let category = category.ok_or_else(|| format!("element {i}: category is missing"))?;
        out.push((category, tags));
    }
    Ok(out)
}

fn suggest(key: &str) -> Option<&'static str> {
    wk_core::suggest::closest_in(KEYS.iter().copied(), key)
}

/// A cursor over the script text that tracks Rhai positions.
struct Cursor<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
    col: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor over `source` at `pos`; `None` when the source ends before it.
    fn at(source: &'a str, pos: Pos) -> Option<Cursor<'a>> {
        let mut c = Cursor {
            chars: source.chars().peekable(),
            line: 1,
            col: 1,
        };
        while c.pos() < pos {
            c.bump()?;
        }
        Some(c)
    }

    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    fn pos(&self) -> Pos {
        (self.line, self.col)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn peek2(&self) -> Option<char> {
        let mut it = self.chars.clone();
        it.next();
        it.next()
    }

    /// Skips whitespace and comments (`//`, nestable `/* */`).
    fn skip_trivia(&mut self) {
        loop {
            match (self.peek(), self.peek2()) {
                (Some(c), _) if c.is_whitespace() => {
                    self.bump();
                }
                (Some('/'), Some('/')) => {
                    while let Some(c) = self.peek() {
                        if c == '\n' {
                            break;
                        }
                        self.bump();
                    }
                }
                (Some('/'), Some('*')) => {
                    self.bump();
                    self.bump();
                    let mut depth = 1;
                    while depth > 0 {
                        match (self.bump(), self.peek()) {
                            (None, _) => return,
                            (Some('/'), Some('*')) => {
                                self.bump();
                                depth += 1;
                            }
                            (Some('*'), Some('/')) => {
                                self.bump();
                                depth -= 1;
                            }
                            _ => {}
                        }
                    }
                }
                _ => return,
            }
        }
    }

    /// Skips a quoted literal starting at the current quote character; returns its content.
    fn string(&mut self) -> String {
        let Some(q) = self.bump() else {
            return String::new();
        };
        let mut out = String::new();
        while let Some(c) = self.bump() {
            if c == q {
                break;
            }
            if c == '\\' && q != '`' {
                if let Some(n) = self.bump() {
                    out.push(n);
                }
                continue;
            }
            out.push(c);
        }
        out
    }
}

/// For the map literal of the `rule(` call at `call`: each key's position and its value's.
fn key_positions(source: &str, call: Pos) -> BTreeMap<String, (Pos, Pos)> {
    let out = BTreeMap::new();
    let Some(mut c) = Cursor::at(source, call) else {
        return out;
    };
    // `rule` `(` `#{`
    while let Some(ch) = c.peek() {
        if ch.is_alphanumeric() || ch == '_' {
            c.bump();
        } else {
            break;
        }
    }
    c.skip_trivia();
    if c.bump() != Some('(') {
        return out;
    }
    c.skip_trivia();
    if c.bump() != Some('#') || c.bump() != Some('{') {
        return out;
    }
    scan_map(&mut c)
}

/// The keys of a map literal whose `#{` was just consumed, up to (not past) its `}`.
fn scan_map(c: &mut Cursor<'_>) -> BTreeMap<String, (Pos, Pos)> {
    let mut out = BTreeMap::new();
    loop {
        c.skip_trivia();
        let key_pos = c.pos();
        let key = match c.peek() {
            Some('"') => c.string(),
            Some(ch) if ch.is_alphabetic() || ch == '_' => {
                let mut k = String::new();
                while let Some(ch) = c.peek() {
                    if ch.is_alphanumeric() || ch == '_' {
                        k.push(ch);
                        c.bump();
                    } else {
                        break;
                    }
                }
                k
            }
            _ => return out,
        };
        c.skip_trivia();
        if c.bump() != Some(':') {
            return out;
        }
        c.skip_trivia();
        out.insert(key, (key_pos, c.pos()));
        // Skip the value up to the `,` or `}` that ends it at this depth.
        let mut depth = 0usize;
        loop {
            c.skip_trivia();
            match c.peek() {
                None => return out,
                Some('"' | '\'' | '`') => {
                    c.string();
                }
                Some('(' | '[' | '{') => {
                    depth += 1;
                    c.bump();
                }
                Some(')' | ']' | '}') if depth > 0 => {
                    depth -= 1;
                    c.bump();
                }
                Some('}') => return out,
                Some(',') if depth == 0 => {
                    c.bump();
                    break;
                }
                Some(_) => {
                    c.bump();
                }
            }
        }
    }
}

/// For an array literal of map literals at `at` (`[#{...}, #{...}]`): each map's key
/// positions, so that errors inside `actions: [...]` point at the element's key or value.
fn array_map_positions(source: &str, at: Pos) -> Vec<BTreeMap<String, (Pos, Pos)>> {
    let mut out = Vec::new();
    let Some(mut c) = Cursor::at(source, at) else {
        return out;
    };
    c.skip_trivia();
    if c.bump() != Some('[') {
        return out;
    }
    loop {
        c.skip_trivia();
        if c.peek() != Some('#') {
            return out;
        }
        c.bump();
        if c.bump() != Some('{') {
            return out;
        }
        out.push(scan_map(&mut c));
        if c.bump() != Some('}') {
            return out;
        }
        c.skip_trivia();
        if c.bump() != Some(',') {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_positions_follow_strings_comments_and_nesting() {
        let src = "// header\nrule(#{\n  every: \"10s\", /* a, b: */ \"for\": \"1m\",\n  notify: [\"a,}\", `x`],\n  inhibits: [#{category: \"c\", tags: [\"host\"]}],\n  name: 'n'\n});\n";
        let got = key_positions(src, (2, 1));
        assert_eq!(got["every"], ((3, 3), (3, 10)));
        assert_eq!(got["for"], ((3, 29), (3, 36)));
        assert_eq!(got["notify"], ((4, 3), (4, 11)));
        assert_eq!(got["inhibits"], ((5, 3), (5, 13)));
        assert_eq!(got["name"], ((6, 3), (6, 9)));
        assert_eq!(
            got.len(),
            5,
            "keys of nested maps are not settings: {got:?}"
        );
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("evrey"), Some("every"));
        assert_eq!(suggest("notfiy"), Some("notify"));
        assert_eq!(suggest("zzzzzz"), None);
    }
}
