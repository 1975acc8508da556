//! The `actions: [...]` rule setting: one map per action, `action` naming it (or `"do"`, quoted: `do` is a Rhai keyword), its arguments
//! (strings that may take `{{tags}}` from the alert, checked against their type when the
//! rule loads if literal, and again after rendering before every run) and its guard rails.
//!
//! ```rhai
//! rule(#{
//!     notify: ["ops"],
//!     actions: [#{ action: "restart_process", pattern: "http.server 8080",
//!                  start: ["python3", "-m", "http.server", "8080"], port: 8080,
//!                  on: "CRITICAL", after: "20s", max_attempts: 3, window: "1h",
//!                  cooldown: "1m", settle: "5s", timeout: "30s", dry_run: false }],
//! });
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use rhai::{Dynamic, Map};
use wk_core::values::parse_duration;

use super::args::{ArgSpec, Args, RawArg, check_value};
pub use crate::model::{ActionRule, Verify};
use crate::model::{AlertEvent, Level, Pos};
use crate::state::{Template, TemplateData};

/// Keys every action map accepts besides the action's own arguments.
pub const GUARD_KEYS: &[&str] = &[
    "action",
    "on",
    "after",
    "max_attempts",
    "window",
    "cooldown",
    "settle",
    "timeout",
    "dry_run",
    "verify",
];

/// An error in one action map: where, what.
pub type ActionError = (Pos, String);

/// A script value's type as messages name it ("a string", "an integer"). Shared with the
/// rule's own settings (`rules::settings`, which depends on this module).
pub(crate) fn type_of(v: &Dynamic) -> &'static str {
    match v.type_name() {
        "string" | "ImmutableString" => "a string",
        "i64" => "an integer",
        "f64" => "a float",
        "bool" => "a boolean",
        "array" => "an array",
        "map" => "a map",
        t => t,
    }
}

/// A duration string (`"30s"`); `like` is the example the error shows.
pub(crate) fn duration_like(v: &Dynamic, like: &str) -> Result<Duration, String> {
    let s = v
        .clone()
        .into_string()
        .map_err(|_| format!("expected a duration string like {like}, got {}", type_of(v)))?;
    parse_duration(&s).map_err(|e| e.to_string())
}

fn dur(v: &Dynamic) -> Result<Duration, String> {
    duration_like(v, "\"30s\"")
}

fn raw(v: &Dynamic) -> Result<RawArg, String> {
    if let Ok(i) = v.as_int() {
        return Ok(RawArg::One(i.to_string()));
    }
    if let Ok(a) = v.clone().into_array() {
        return a
            .iter()
            .enumerate()
            .map(|(i, e)| {
                if let Ok(n) = e.as_int() {
                    return Ok(n.to_string());
                }
                e.clone()
                    .into_string()
                    .map_err(|_| format!("element {i}: expected a string, got {}", type_of(e)))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(RawArg::List);
    }
    v.clone().into_string().map(RawArg::One).map_err(|_| {
        format!(
            "expected a string, an integer or a list, got {}",
            type_of(v)
        )
    })
}

/// Reads `actions: [...]`. `positions` holds, per element, each key's (key, value) position
/// (from the script text; empty when the value is not a literal), `at` the value's position.
pub fn parse_list(
    v: &Dynamic,
    positions: &[BTreeMap<String, (Pos, Pos)>],
    at: Pos,
) -> Result<Vec<ActionRule>, ActionError> {
    let arr = v.clone().into_array().map_err(|_| {
        (
            at,
            format!(
                "rule(): actions: expected [#{{action: \"restart_service\", unit: \"nginx\"}}, ...], got {}",
                type_of(v)
            ),
        )
    })?;
    let mut out = Vec::new();
    for (i, e) in arr.iter().enumerate() {
        let empty = BTreeMap::new();
        let keys = positions.get(i).unwrap_or(&empty);
        let start = keys.values().map(|p| p.0).min().unwrap_or(at);
        let map = e.read_lock::<Map>().ok_or_else(|| {
            (
                start,
                format!("rule(): actions[{i}]: expected a map like #{{action: \"restart_service\", unit: \"nginx\"}}, got {}", type_of(e)),
            )
        })?;
        out.push(parse_one(&map, keys, start, i)?);
    }
    Ok(out)
}

fn parse_one(
    map: &Map,
    keys: &BTreeMap<String, (Pos, Pos)>,
    start: Pos,
    i: usize,
) -> Result<ActionRule, ActionError> {
    let vpos = |k: &str| keys.get(k).map_or(start, |p| p.1);
    let kpos = |k: &str| keys.get(k).map_or(start, |p| p.0);
    let err = |k: &str, m: String| (vpos(k), format!("rule(): actions[{i}]: {k}: {m}"));
    let mut a = ActionRule {
        pos: start,
        ..ActionRule::default()
    };
    // `do` is a Rhai keyword (it must be quoted, `"do": ...`), so `action` is the usual key.
    let key = if map.contains_key("action") {
        "action"
    } else {
        "do"
    };
    let Some(name) = map.get(key) else {
        return Err((
            start,
            format!(
                "rule(): actions[{i}]: `do` is missing: the action to run, one of {}",
                names()
            ),
        ));
    };
    a.action = name
        .clone()
        .into_string()
        .map_err(|_| err(key, format!("expected a string, got {}", type_of(name))))?;
    let Some(spec) = super::find(&a.action) else {
        let hint = wk_core::suggest::closest_in(super::REGISTRY.iter().map(|s| s.name), &a.action)
            .map(|s| format!(" (did you mean {s:?}?)"))
            .unwrap_or_default();
        return Err(err(
            key,
            format!(
                "unknown action {:?}{hint}; known actions: {}",
                a.action,
                names()
            ),
        ));
    };
    let mut sorted: Vec<&str> = map.keys().map(|k| k.as_str()).collect();
    sorted.sort_by_key(|k| kpos(k));
    for k in sorted {
        let Some(v) = map.get(k) else { continue };
        match k {
            "do" | "action" => {}
            "on" => {
                let s = v
                    .clone()
                    .into_string()
                    .map_err(|_| err(k, "expected a level".into()))?;
                a.on = Level::parse(&s)
                    .filter(|l| *l > Level::Ok)
                    .ok_or_else(|| err(k, format!("{s:?} is not INFO, WARNING or CRITICAL")))?;
            }
            "after" => a.after = dur(v).map_err(|m| err(k, m))?,
            "window" => {
                a.window = dur(v).map_err(|m| err(k, m))?;
                if a.window.is_zero() || a.window > super::guard::KEPT {
                    return Err(err(
                        k,
                        format!(
                            "must be longer than 0s and at most {} (the attempts kept)",
                            crate::template::format_duration(super::guard::KEPT)
                        ),
                    ));
                }
            }
            "cooldown" => a.cooldown = dur(v).map_err(|m| err(k, m))?,
            "settle" => a.settle = dur(v).map_err(|m| err(k, m))?,
            "timeout" => {
                a.timeout = dur(v).map_err(|m| err(k, m))?;
                if a.timeout.is_zero() {
                    return Err(err(k, "must be longer than 0s".into()));
                }
            }
            "max_attempts" => {
                let n = v
                    .as_int()
                    .map_err(|_| err(k, format!("expected an integer, got {}", type_of(v))))?;
                if !(1..=1000).contains(&n) {
                    return Err(err(k, format!("{n} is out of range 1..=1000")));
                }
                a.max_attempts = n as u32;
            }
            "dry_run" => {
                a.dry_run = v
                    .as_bool()
                    .map_err(|_| err(k, format!("expected true or false, got {}", type_of(v))))?
            }
            "verify" => {
                let s = v.clone().into_string().unwrap_or_default();
                a.verify = match s.as_str() {
                    "auto" => Verify::Auto,
                    "probe" => Verify::Probe,
                    "query" => Verify::Query,
                    "both" => Verify::Both,
                    _ => {
                        return Err(err(
                            k,
                            format!("{s:?} is not \"auto\", \"probe\", \"query\" or \"both\""),
                        ));
                    }
                };
            }
            other => {
                let Some(arg) = spec.args.iter().find(|s| s.name == other) else {
                    let known: Vec<&str> = spec.args.iter().map(|s| s.name).collect();
                    return Err((
                        kpos(other),
                        format!(
                            "rule(): actions[{i}]: {} has no argument {other:?}; its arguments: {}; guard options: {}",
                            a.action,
                            known.join(", "),
                            GUARD_KEYS[1..].join(", ")
                        ),
                    ));
                };
                let r = raw(v).map_err(|m| err(other, m))?;
                check_literal(arg, &r).map_err(|m| err(other, m))?;
                a.arg_pos.insert(other.to_owned(), vpos(other));
                a.args.insert(other.to_owned(), r);
            }
        }
    }
    for arg in spec.args.iter().filter(|s| s.required) {
        if !a.args.contains_key(arg.name) {
            return Err((
                start,
                format!(
                    "rule(): actions[{i}]: {} needs `{}` ({})",
                    a.action,
                    arg.name,
                    arg.kind.describe()
                ),
            ));
        }
    }
    if !spec.one_of.is_empty() && !spec.one_of.iter().any(|k| a.args.contains_key(*k)) {
        return Err((
            start,
            format!(
                "rule(): actions[{i}]: {} needs one of {}",
                a.action,
                spec.one_of.join(", ")
            ),
        ));
    }
    if let Some((arg, others)) = spec.templated_needs
        && a.args.get(arg).is_some_and(RawArg::is_templated)
        && !others
            .iter()
            .any(|k| a.args.get(*k).is_some_and(|v| !v.is_templated()))
    {
        return Err((
            a.arg_pos.get(arg).copied().unwrap_or(start),
            format!(
                "rule(): actions[{i}]: {} takes `{arg}` from the alert, so it needs {} written in the rule, not taken from the alert: a point can name any {arg} on the host (`name: \"nginx\"`)",
                a.action,
                others
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        ));
    }
    Ok(a)
}

/// A literal value must fit its type now; a templated one must parse as a template (it is
/// checked after rendering, before every run). Program lists never take tags.
fn check_literal(spec: &ArgSpec, v: &RawArg) -> Result<(), String> {
    if v.is_templated() {
        if spec.kind == super::ArgKind::Argv {
            return Err(
                "a program to start is written in the rule; it cannot take {{...}} from the alert"
                    .into(),
            );
        }
        let parts: Vec<&String> = match v {
            RawArg::One(s) => vec![s],
            RawArg::List(l) => l.iter().collect(),
        };
        for p in parts {
            Template::parse(p).map_err(|e| format!("{p:?}: {e}"))?;
        }
        if spec.kind == super::ArgKind::Pattern
            && let RawArg::One(p) = v
        {
            // The expression around the (escaped, literal) tag values must compile now.
            super::args::check_pattern(&placeholders(p)).map_err(|e| format!("{p:?}: {e}"))?;
        }
        return Ok(());
    }
    check_value(spec, v)
}

/// Renders a `pattern`: the rule's text is a regular expression; each `{{…}}` value from the
/// alert (untrusted) must be a plain command-line word ([`super::args::check_pattern_value`])
/// and goes in escaped, so it matches literally (a tag `.*` cannot match every process), and
/// as whole words: where the value begins or ends with a letter or digit that the rule's
/// text does not continue, a word boundary is added, so a tag `s` or `py` cannot match
/// inside every command line that has the letters.
fn render_pattern(text: &str, data: &TemplateData<'_>) -> Result<String, String> {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let Some(j) = rest[i..].find("}}") else {
            break;
        };
        let piece = &rest[i..i + j + 2];
        let value = Template::parse(piece)
            .map_err(|e| format!("{piece:?}: {e}"))?
            .render(data);
        super::args::check_pattern_value(&value)?;
        rest = &rest[i + j + 2..];
        // A value alone at an end of the pattern is a whole command-line word (or a path's
        // last part): `usr` does not match `/usr/sbin/sshd`, `sshd` does.
        let before = if out.is_empty() {
            r"(?:^|[\s/])"
        } else if !word(out.chars().last()) && word(value.chars().next()) {
            r"\b"
        } else {
            ""
        };
        let after = if rest.is_empty() {
            r"(?:\s|$)"
        } else if !word(rest.chars().next()) && word(value.chars().last()) {
            r"\b"
        } else {
            ""
        };
        out.push_str(before);
        out.push_str(&regex::escape(&value));
        out.push_str(after);
    }
    out.push_str(rest);
    Ok(out)
}

/// `text` with each `{{…}}` replaced by a plain letter (a rendered value is escaped, so it is
/// a literal in the expression).
fn placeholders(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        match rest[i..].find("}}") {
            Some(j) => {
                out.push('x');
                rest = &rest[i + j + 2..];
            }
            None => {
                rest = &rest[i..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

fn names() -> String {
    super::REGISTRY
        .iter()
        .map(|s| s.name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl ActionRule {
    /// Renders the arguments for `event` and checks each against its type: a value from the
    /// alert's tags that does not fit is refused here and never reaches a command.
    pub fn render(&self, event: &AlertEvent) -> Result<Args, String> {
        let spec =
            super::find(&self.action).ok_or_else(|| format!("unknown action {:?}", self.action))?;
        let mut data = TemplateData::new(&event.rule, &event.tags, &event.fields);
        data.level = event.level;
        data.time_ns = event.time;
        let render_with = |s: &str, data: &TemplateData<'_>| -> String {
            if !s.contains("{{") {
                return s.to_owned();
            }
            Template::parse(s).map_or_else(|_| s.to_owned(), |t| t.render(data))
        };
        let mut out = Args::default();
        for (name, v) in &self.args {
            let Some(arg) = spec.args.iter().find(|a| a.name == name) else {
                continue;
            };
            let rendered = match v {
                RawArg::One(s) if arg.kind == super::ArgKind::Pattern => RawArg::One(
                    render_pattern(s, &data)
                        .map_err(|m| format!("{}: {name}: refused: {m}", self.action))?,
                ),
                RawArg::One(s) => RawArg::One(render_with(s, &data)),
                RawArg::List(l) => RawArg::List(l.iter().map(|s| render_with(s, &data)).collect()),
            };
            check_value(arg, &rendered)
                .map_err(|m| format!("{}: {name}: refused: {m}", self.action))?;
            match rendered {
                RawArg::One(s) => {
                    out.one.insert(name.clone(), s);
                }
                RawArg::List(l) => {
                    out.lists.insert(name.clone(), l);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(tag: &str) -> AlertEvent {
        AlertEvent {
            rule: "r".into(),
            id: "r:x".into(),
            level: Level::Critical,
            tags: [("svc".to_owned(), tag.to_owned())].into(),
            ..Default::default()
        }
    }

    /// The rule's text is a regular expression; a tag value inside it is a checked literal.
    #[test]
    fn tag_values_in_a_pattern_are_checked_literals() {
        let mut a = ActionRule {
            action: "restart_process".into(),
            ..ActionRule::default()
        };
        a.args.insert(
            "pattern".into(),
            RawArg::One(r"^\S*app --name {{tags.svc}}( |$)".into()),
        );
        let args = a.render(&event("web.1")).unwrap();
        let re = regex::Regex::new(args.get("pattern").unwrap()).unwrap();
        assert!(re.is_match("/opt/app --name web.1 --port 80"));
        assert!(!re.is_match("/opt/app --name webX1"), "the dot is literal");
        // A value is matched as whole words: a short tag cannot match inside every command
        // line, while the rule's own text may continue a word.
        a.args
            .insert("pattern".into(), RawArg::One("{{tags.svc}}".into()));
        let re = |a: &ActionRule, v: &str| {
            regex::Regex::new(a.render(&event(v)).unwrap().get("pattern").unwrap()).unwrap()
        };
        assert!(!re(&a, "s").is_match("/usr/sbin/sshd -D"));
        assert!(!re(&a, "usr").is_match("/usr/sbin/sshd -D"), "a path part");
        assert!(a.render(&event("/")).is_err(), "no letter or digit");
        assert!(re(&a, "sshd").is_match("/usr/sbin/sshd -D"));
        assert!(!re(&a, "web").is_match("/opt/webapp"));
        assert!(re(&a, "/opt/web").is_match("/opt/web --port 1"));
        a.args
            .insert("pattern".into(), RawArg::One("^worker{{tags.svc}} ".into()));
        assert!(
            re(&a, "3").is_match("worker3 --x"),
            "the rule's text continues the word"
        );
        assert!(!re(&a, "3").is_match("worker31 --x"));
        for bad in [".*", "$(id)", "a|b", "--all", "x\ny", "(", ""] {
            let e = a.render(&event(bad)).unwrap_err();
            assert!(e.contains("refused"), "{bad:?}: {e}");
        }
    }
}
