//! Silences (Alertmanager's): a set of matchers and a time window; a matching event inside the
//! window is not sent.
//!
//! ```toml
//! [[silences]]
//!   matchers = { host = "web1", rule = "cpu_*" }   # tag = value or glob; `rule` = rule name
//!   starts = "2026-11-22T22:00:00Z"                 # optional: active from load when absent
//!   ends = "2026-11-23T02:00:00Z"                   # or `expires`; one of them is required
//!   comment = "kernel upgrade on web1 (alice)"
//! ```

use toml::de::{DeTable, DeValue};
use wk_core::glob::Glob;
use wk_core::options::Options;

use super::text::parse_rfc3339;
use crate::model::AlertEvent;
use crate::template::format_rfc3339 as rfc3339;

/// One matcher: a tag (or `rule`) and what its value must be. An absent tag is matched as
/// the empty string (Alertmanager's rule).
#[derive(Debug, Clone)]
pub struct Matcher {
    pub key: String,
    /// The matcher is on the rule's name (a bare `rule`), not on a tag (a tag named `rule`
    /// is written quoted: `"rule"=…`).
    pub on_rule: bool,
    pub pattern: Pattern,
    /// `!=` / `!~`: the value must not match.
    pub negate: bool,
}

/// A glob (`=`: `*` and `?`, the config's `[[silences]]` form) or a regular expression
/// (`=~`, anchored at both ends as in Alertmanager).
#[derive(Debug, Clone)]
pub enum Pattern {
    Glob(Glob),
    Regex(regex::Regex),
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Matcher) -> bool {
        self.to_string() == other.to_string()
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (op, text) = match &self.pattern {
            Pattern::Glob(g) => (if self.negate { "!=" } else { "=" }, g.as_str()),
            Pattern::Regex(r) => {
                let t = r.as_str();
                let t = t
                    .strip_prefix("^(?:")
                    .and_then(|t| t.strip_suffix(")$"))
                    .unwrap_or(t);
                (if self.negate { "!~" } else { "=~" }, t)
            }
        };
        if self.on_rule {
            write!(f, "rule{op}{text}")
        } else {
            write!(f, "{}{op}{text}", tag_key(&self.key))
        }
    }
}

/// The matcher key for the tag `key`: bare when it can be, else a JSON string (`"k8s pod"`,
/// `"rule"` for a tag of that name), which [`Matcher::parse`] takes literally.
pub fn tag_key(key: &str) -> String {
    if matcher_key_ok(key) && key != "rule" {
        key.to_owned()
    } else {
        serde_json::Value::String(key.to_owned()).to_string()
    }
}

/// Matchers written in one line, separated by whitespace outside quoted keys
/// (`"k8s pod"=~x host=web1` is two).
pub fn split_matchers(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut escaped) = (false, false);
    for c in text.chars() {
        if c.is_whitespace() && !quoted {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if quoted && c == '"' && !escaped {
            quoted = false;
        } else if !quoted && c == '"' && cur.is_empty() {
            quoted = true;
        }
        escaped = quoted && c == '\\' && !escaped;
        cur.push(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `value` as a regular expression that matches exactly it: metacharacters escaped, and
/// whitespace and control characters written as `\x{…}` so that the matcher holds none
/// (forms and the command line split and trim on whitespace).
pub fn exact_regex(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c.is_whitespace() || c.is_control() {
            out.push_str(&format!("\\x{{{:x}}}", u32::from(c)));
        } else {
            let mut b = [0u8; 4];
            out.push_str(&regex::escape(c.encode_utf8(&mut b)));
        }
    }
    out
}

/// Why a matcher (`key=glob`, `key!=glob`, `key=~regex`, `key!~regex`) was refused; `text` is
/// the matcher as given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MatcherError {
    #[error("{text:?}: expected key=value, key!=value, key=~regex or key!~regex")]
    Syntax { text: String },
    #[error("{text:?}: {key:?} is not a tag name (quote it as a JSON string: \"k8s pod\"=x)")]
    TagName { text: String, key: String },
    #[error("{text:?}: not a valid regular expression: {detail}")]
    Regex { text: String, detail: String },
    #[error("{text:?}: {detail}")]
    Glob { text: String, detail: String },
    /// A config matcher's glob (`matchers = { key = "glob" }`; the config error names the key).
    #[error("{detail}")]
    ConfigGlob { key: String, detail: String },
}

/// Whether `key` can be a matcher's key: letters, digits and `_.-/:` (tag keys such as
/// `k8s/pod` or `com.example:zone` included; not `=`, `!`, `~` or whitespace).
pub fn matcher_key_ok(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-/:".contains(c))
}

impl Matcher {
    /// A glob equality matcher (the config's `matchers = { key = "glob" }`).
    pub fn glob(key: &str, glob: &str) -> Result<Matcher, MatcherError> {
        Ok(Matcher {
            key: key.to_owned(),
            on_rule: key == "rule",
            pattern: Pattern::Glob(Glob::new(glob).map_err(|e| MatcherError::ConfigGlob {
                key: key.to_owned(),
                detail: e.to_string(),
            })?),
            negate: false,
        })
    }

    /// Parses `key=glob`, `key!=glob`, `key=~regex` or `key!~regex` (Alertmanager's
    /// operators; a bare `rule` names the rule). The key may be a JSON string
    /// (`"k8s pod"=~…`): any tag name, taken literally, never the rule.
    pub fn parse(text: &str) -> Result<Matcher, MatcherError> {
        const OPS: [&str; 4] = ["=~", "!~", "!=", "="];
        let syntax = || MatcherError::Syntax {
            text: text.to_owned(),
        };
        let (key, on_rule, rest) = if let Some(quoted) = text.strip_prefix('"') {
            // The closing quote: the first one a backslash does not escape.
            let mut escaped = false;
            let end = quoted
                .char_indices()
                .find(|&(_, c)| {
                    let close = c == '"' && !escaped;
                    escaped = c == '\\' && !escaped;
                    close
                })
                .map(|(i, _)| i + 2)
                .ok_or_else(syntax)?;
            let key: String = serde_json::from_str(&text[..end]).map_err(|_| syntax())?;
            if key.is_empty() {
                return Err(MatcherError::TagName {
                    text: text.to_owned(),
                    key,
                });
            }
            (key, false, &text[end..])
        } else {
            let at = OPS
                .iter()
                .filter_map(|op| text.find(op))
                .min()
                .ok_or_else(syntax)?;
            let key = text[..at].trim();
            if !matcher_key_ok(key) {
                return Err(MatcherError::TagName {
                    text: text.to_owned(),
                    key: key.to_owned(),
                });
            }
            (key.to_owned(), key == "rule", &text[at..])
        };
        // The longest operator at the key's end (`=~` before `=`).
        let op = OPS
            .iter()
            .find(|op| rest.starts_with(*op))
            .ok_or_else(syntax)?;
        let value = &rest[op.len()..];
        let negate = op.starts_with('!');
        let pattern = if op.ends_with('~') {
            Pattern::Regex(regex::Regex::new(&format!("^(?:{value})$")).map_err(|e| {
                MatcherError::Regex {
                    text: text.to_owned(),
                    detail: e.to_string(),
                }
            })?)
        } else {
            Pattern::Glob(Glob::new(value).map_err(|e| MatcherError::Glob {
                text: text.to_owned(),
                detail: e.to_string(),
            })?)
        };
        Ok(Matcher {
            key,
            on_rule,
            pattern,
            negate,
        })
    }

    fn matches(&self, event: &AlertEvent) -> bool {
        let value = if self.on_rule {
            event.rule.as_str()
        } else {
            event.tags.get(&self.key).map_or("", String::as_str)
        };
        let hit = match &self.pattern {
            Pattern::Glob(g) => g.is_match(value),
            Pattern::Regex(r) => r.is_match(value),
        };
        hit != self.negate
    }
}

/// One silence.
#[derive(Debug, Clone, PartialEq)]
pub struct Silence {
    /// All must match.
    pub matchers: Vec<Matcher>,
    /// Start (ns since the epoch); `None` = already active.
    pub starts: Option<i64>,
    /// End (ns since the epoch, exclusive).
    pub ends: i64,
    pub comment: String,
}

impl Silence {
    /// True when `event` (evaluated at `now`, ns since the epoch) is silenced.
    pub fn silences(&self, event: &AlertEvent, now: i64) -> bool {
        self.is_active(now) && self.matchers.iter().all(|m| m.matches(event))
    }

    /// True when `now` is inside the window.
    pub fn is_active(&self, now: i64) -> bool {
        self.starts.is_none_or(|s| s <= now) && now < self.ends
    }

    /// How the silence is named in logs: its comment, or its matchers.
    pub fn describe(&self) -> String {
        if !self.comment.is_empty() {
            return self.comment.clone();
        }
        let m: Vec<String> = self.matchers.iter().map(Matcher::to_string).collect();
        format!("{{{}}} until {}", m.join(","), rfc3339(self.ends))
    }

    /// Reads one `[[silences]]` table; `raw` is the same table (TOML datetimes are accepted
    /// unquoted as well as in strings). `now` (ns) is only used to warn about a silence that
    /// has already ended. Returns `None` after recording errors.
    pub fn read(opts: &mut Options<'_, '_>, raw: &DeTable<'_>, now: i64) -> Option<Silence> {
        let mut ok = true;
        let mut matchers = Vec::new();
        let had_matchers = raw.get("matchers").is_some();
        for (key, value) in opts.string_table("matchers") {
            match Matcher::glob(&key, &value) {
                Ok(m) => matchers.push(m),
                Err(e) => {
                    opts.error_at("matchers", e);
                    ok = false;
                }
            }
        }
        if matchers.is_empty() && ok {
            let msg = if had_matchers {
                "must have at least one matcher: a silence of everything is not allowed"
            } else {
                "is required: a table such as { host = \"web1\", rule = \"cpu_*\" }"
            };
            opts.error_at("matchers", msg);
            ok = false;
        }
        let starts = time_option(opts, raw, "starts", &mut ok);
        let ends = time_option(opts, raw, "ends", &mut ok);
        let expires = time_option(opts, raw, "expires", &mut ok);
        let ends = match (ends, expires) {
            (Some(_), Some(_)) => {
                opts.error_at("expires", "give either `ends` or `expires`, not both");
                None
            }
            (Some(e), None) | (None, Some(e)) => Some(e),
            (None, None) => {
                if ok {
                    opts.error_at(
                        "ends",
                        "is required (or `expires`): a silence without an end hides alerts forever",
                    );
                }
                None
            }
        };
        let comment = opts.string("comment", "");
        let ends = ends?;
        if let Some(s) = starts
            && s >= ends
        {
            opts.error_at("ends", "must be later than `starts`");
            return None;
        }
        if !ok {
            return None;
        }
        let key = if raw.get("expires").is_some() {
            "expires"
        } else {
            "ends"
        };
        if ends <= now {
            opts.warn_at(key, format!("the silence ended at {}", rfc3339(ends)));
        }
        Some(Silence {
            matchers,
            starts,
            ends,
            comment,
        })
    }
}

fn time_option(
    opts: &mut Options<'_, '_>,
    raw: &DeTable<'_>,
    key: &str,
    ok: &mut bool,
) -> Option<i64> {
    let text = match raw.get(key).map(|v| v.get_ref()) {
        None => return None,
        Some(DeValue::Datetime(dt)) => {
            opts.has(key);
            dt.to_string()
        }
        Some(_) => opts.opt_string(key)?,
    };
    match parse_rfc3339(&text) {
        Ok(t) => Some(t),
        Err(e) => {
            opts.error_at(key, e);
            *ok = false;
            None
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::model::Level;

    fn ev(rule: &str, tags: &[(&str, &str)]) -> AlertEvent {
        AlertEvent {
            rule: rule.into(),
            id: rule.into(),
            level: Level::Critical,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn silence(matchers: &[(&str, &str)], starts: Option<i64>, ends: i64) -> Silence {
        Silence {
            matchers: matchers
                .iter()
                .map(|(k, p)| Matcher::glob(k, p).unwrap())
                .collect(),
            starts,
            ends,
            comment: String::new(),
        }
    }

    #[test]
    fn matchers_all_match_globs_rule_and_absent_tags() {
        let s = silence(&[("host", "web*"), ("rule", "cpu_*")], None, 100);
        assert!(s.silences(&ev("cpu_high", &[("host", "web1")]), 0));
        assert!(!s.silences(&ev("disk", &[("host", "web1")]), 0));
        assert!(!s.silences(&ev("cpu_high", &[("host", "db1")]), 0));
        assert!(!s.silences(&ev("cpu_high", &[]), 0));
        let any = silence(&[("host", "*")], None, 100);
        assert!(
            any.silences(&ev("x", &[]), 0),
            "absent = empty, and * matches it"
        );
    }

    #[test]
    fn alertmanager_operators() {
        let m = |t: &str| Matcher::parse(t).unwrap();
        let e = ev("cpu_high", &[("host", "web12")]);
        assert!(m("host=web1*").matches(&e));
        assert!(m("host=~web[0-9]+").matches(&e));
        assert!(!m("host=~web1").matches(&e), "a regex is anchored");
        assert!(m("host!~db.*").matches(&e));
        assert!(!m("host!=web12").matches(&e));
        assert!(m("rule=~cpu_.*").matches(&e));
        assert!(m("dc!=x").matches(&e), "an absent tag is empty");
        for t in [
            "host=~web[0-9]+",
            "host!=db*",
            "a.b-c=~x|y",
            "host=",
            "host!~",
        ] {
            assert_eq!(m(t).to_string(), t);
        }
        assert!(m("url=~http://x=y").to_string() == "url=~http://x=y");
        for bad in [
            "host", "=web1", "host=~(", "ho st=x", "\"\"=x", "\"a=x", "\"a\"x",
        ] {
            assert!(Matcher::parse(bad).is_err(), "{bad}");
        }
    }

    /// A tag named `rule`, or with a key the bare form refuses (a space, a quote), could not
    /// be matched at all: a quoted key names any tag, literally.
    #[test]
    fn quoted_keys_name_any_tag_and_never_the_rule() {
        let m = |t: &str| Matcher::parse(t).unwrap();
        let e = ev("cpu", &[("rule", "disk"), ("k8s pod", "p1"), ("a\"b", "v")]);
        assert!(m(r#""rule"=disk"#).matches(&e));
        assert!(!m(r#""rule"=cpu"#).matches(&e), "the tag, not the rule");
        assert!(m("rule=cpu").matches(&e), "bare: the rule");
        assert!(m(r#""k8s pod"=~p1"#).matches(&e));
        assert!(m(r#""a\"b"=v"#).matches(&e));
        assert_eq!(m(r#""host"=~~x"#).to_string(), "host=~~x");
        for t in [r#""rule"=~disk"#, r#""k8s pod"!=p*"#, r#""a\"b"=v"#] {
            assert_eq!(m(t).to_string(), t, "round trip");
        }
        assert_eq!(
            split_matchers(r#" "k8s pod"=~a\x{20}b  host=web1 "a\"b c"!=x "#),
            [r#""k8s pod"=~a\x{20}b"#, "host=web1", r#""a\"b c"!=x"#]
        );
        for one in split_matchers(r#""k8s pod"=p1 "a\"b"=v"#) {
            assert!(m(&one).matches(&e), "{one}");
        }
        let exact = m(&format!("host=~{}", exact_regex("~a b\t.*")));
        assert!(exact.matches(&ev("r", &[("host", "~a b\t.*")])));
        assert!(!exact.matches(&ev("r", &[("host", "~a b\txx")])));
    }

    #[test]
    fn window_is_start_inclusive_end_exclusive() {
        let s = silence(&[("host", "a")], Some(10), 20);
        let e = ev("r", &[("host", "a")]);
        assert!(!s.silences(&e, 9));
        assert!(s.silences(&e, 10));
        assert!(s.silences(&e, 19));
        assert!(!s.silences(&e, 20));
    }
}
