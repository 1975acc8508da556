//! Typed action arguments. Every value — written in the rule or rendered from an alert's tags,
//! which come from monitored hosts and are untrusted — must fit its type before anything
//! runs. A value that fits is only ever one inert argv element (never part of a shell string;
//! over ssh each element is quoted for the remote shell, see `host.rs`).

use std::collections::BTreeMap;

pub use crate::model::RawArg;

/// The type of one argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgKind {
    /// A systemd service: `nginx`, `nginx.service`, `getty@tty1.service`. Other unit types
    /// (`reboot.target`, `home.mount`, `user.slice`…) are refused: a tag value must not be
    /// able to restart a target or unmount a filesystem.
    Unit,
    /// A docker container name or id: `[A-Za-z0-9][A-Za-z0-9_.-]*`.
    Container,
    /// A TCP port, 1–65535, written canonically (digits, no leading zero).
    Port,
    /// A process id, 2 or more (1 is init).
    Pid,
    /// A regular expression (the `regex` crate's syntax) matched against a process's full
    /// command line, as `pgrep -f` and procstat's `pattern` do. Tag values rendered into it
    /// are escaped (they match literally); it may not match the empty string (every process).
    Pattern,
    /// A script's file name in the scripts directory: `[A-Za-z0-9_.-]`, not starting with `.`.
    Script,
    /// A plain word (script arguments, a process name): letters, digits and `_.,:=@+%-`; not
    /// `.` or `..`, and no `/`, so it cannot name a path.
    Word,
    /// A count, 1–100.
    Count,
    /// One of the listed words.
    OneOf(&'static [&'static str]),
    /// A program and its arguments written in the rule (a list; never from tags).
    Argv,
    /// A list of [`ArgKind::Word`]s (each may come from tags).
    Words,
}

impl ArgKind {
    /// What a value of this kind looks like, for messages.
    pub fn describe(self) -> String {
        match self {
            ArgKind::Unit => {
                "a systemd service name (letters, digits, `:_.@-`; no other unit type)".into()
            }
            ArgKind::Container => "a container name ([A-Za-z0-9][A-Za-z0-9_.-]*)".into(),
            ArgKind::Port => "a TCP port (1-65535, no leading zero)".into(),
            ArgKind::Pid => "a process id (an integer > 1)".into(),
            ArgKind::Pattern => {
                "a regular expression over the full command line (e.g. \"^python3 -m http\\\\.server 8080$\")".into()
            }
            ArgKind::Script => "a script file name ([A-Za-z0-9_.-], no leading `.`)".into(),
            ArgKind::Word => "a word (letters, digits, `_.,:=@+%-`; not `.` or `..`)".into(),
            ArgKind::Count => "a count (1-100)".into(),
            ArgKind::OneOf(w) => format!("one of {}", w.join(", ")),
            ArgKind::Argv => {
                "a list: program and arguments, e.g. [\"/usr/bin/app\", \"--serve\"]".into()
            }
            ArgKind::Words => "a list of words".into(),
        }
    }

    /// Whether a list is expected.
    pub fn is_list(self) -> bool {
        matches!(self, ArgKind::Argv | ArgKind::Words)
    }
}

/// One argument an action takes.
#[derive(Debug, Clone, Copy)]
pub struct ArgSpec {
    pub name: &'static str,
    pub kind: ArgKind,
    pub required: bool,
}

impl ArgSpec {
    /// An argument every use of the action must give.
    pub const fn required(name: &'static str, kind: ArgKind) -> ArgSpec {
        ArgSpec {
            name,
            kind,
            required: true,
        }
    }

    /// An argument the action can do without.
    pub const fn optional(name: &'static str, kind: ArgKind) -> ArgSpec {
        ArgSpec {
            name,
            kind,
            required: false,
        }
    }
}

/// Longest accepted value.
const MAX_LEN: usize = 256;

fn chars_ok(s: &str, extra: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
}

/// Why `v` may not reach a command line whatever its kind: too long, control characters, or
/// a leading `-` (an option to the program).
fn unsafe_word(v: &str) -> Option<&'static str> {
    if v.len() > MAX_LEN {
        Some("too long")
    } else if v.chars().any(char::is_control) {
        Some("control characters (newline, tab, NUL…) are not allowed")
    } else if v.starts_with('-') {
        Some("a leading `-` would be read as an option")
    } else {
        None
    }
}

/// Checks one scalar value against its kind. The error says what was refused and why, with
/// the value escaped (it may hold control characters).
pub fn check(kind: ArgKind, v: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{v:?} is not {}: {why}", kind.describe()));
    if v.is_empty() {
        return bad("empty");
    }
    if let Some(why) = unsafe_word(v) {
        return bad(why);
    }
    let ok = match kind {
        ArgKind::Unit => {
            if let Some(kind) = other_unit_type(v) {
                return bad(&format!("a .{kind} unit, not a service"));
            }
            chars_ok(v, ":_.@-")
        }
        ArgKind::Container => {
            chars_ok(v, "_.-") && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        }
        ArgKind::Port => {
            return match number(v) {
                Some(p) if (1..=65535).contains(&p) => Ok(()),
                _ => bad("not a number in 1-65535 without leading zeros"),
            };
        }
        ArgKind::Pid => {
            return match number(v) {
                Some(p) if (2..=i32::MAX as u64).contains(&p) => Ok(()),
                _ => bad("not a number > 1 without leading zeros"),
            };
        }
        ArgKind::Count => {
            return match number(v) {
                Some(n) if (1..=100).contains(&n) => Ok(()),
                _ => bad("not a number in 1-100 without leading zeros"),
            };
        }
        ArgKind::Pattern => {
            return match check_pattern(v) {
                Ok(_) => Ok(()),
                Err(why) => bad(&why),
            };
        }
        ArgKind::Script => chars_ok(v, "_.-") && !v.starts_with('.'),
        ArgKind::Word | ArgKind::Words => chars_ok(v, "_.,:=@+%-") && v != "." && v != "..",
        ArgKind::OneOf(words) => words.contains(&v),
        // A program written in the rule itself (not from tags): any text but control
        // characters; it is never a shell string.
        ArgKind::Argv => true,
    };
    if ok {
        Ok(())
    } else {
        bad("character not allowed")
    }
}

/// A number written canonically: digits only, no sign and no leading zero. `08080` would be
/// port 8080 to the action but another target to the guard rails (their key is the rendered
/// text), with a budget and a cooldown of its own.
fn number(v: &str) -> Option<u64> {
    let canonical = v.bytes().all(|b| b.is_ascii_digit()) && !v.starts_with('0');
    canonical.then(|| v.parse().ok()).flatten()
}

/// The unit type of `v` when it names a unit that is not a service (`systemctl` adds
/// `.service` to a name without a unit type's suffix).
fn other_unit_type(v: &str) -> Option<&str> {
    let (_, suffix) = v.rsplit_once('.')?;
    (suffix != "service" && wk_core::systemd::UNIT_TYPES.contains(&suffix)).then_some(suffix)
}

/// Compiles a `pattern`: a regular expression that must not match the empty string (it would
/// match every process, kernel threads' empty command lines aside).
pub fn check_pattern(v: &str) -> Result<regex::Regex, String> {
    let re = regex::RegexBuilder::new(v)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| match e {
            // The parser's message spans lines (the pattern, a caret, "error: …"): keep
            // the one line a load error can show.
            regex::Error::Syntax(s) => format!(
                "invalid regular expression: {}",
                s.lines()
                    .find_map(|l| l.trim().strip_prefix("error: "))
                    .unwrap_or(s.trim())
            ),
            other => other.to_string(),
        })?;
    if re.is_match("") {
        return Err("it matches the empty string, so every process".into());
    }
    Ok(re)
}

/// A value from the alert inside a `pattern`: a plain command-line word or phrase (letters,
/// digits, space, `_.,:/=@+%-`, no leading `-`), which is then escaped into the expression.
pub fn check_pattern_value(v: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "{v:?} is not allowed in a pattern (letters, digits, space, `_.,:/=@+%-`): {why}"
        ))
    };
    if v.trim().is_empty() {
        return bad("empty");
    }
    if let Some(why) = unsafe_word(v) {
        return bad(why);
    }
    if !chars_ok(v, " _.,:/=@+%-") {
        return bad("character not allowed");
    }
    if !v.chars().any(|c| c.is_ascii_alphanumeric()) {
        // `/` or `.` alone would match nearly every command line.
        return bad("no letter or digit");
    }
    Ok(())
}

/// Validated, rendered arguments of one action run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    pub one: BTreeMap<String, String>,
    pub lists: BTreeMap<String, Vec<String>>,
}

impl Args {
    /// A scalar argument.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.one.get(name).map(String::as_str)
    }

    /// A list argument (empty when absent).
    pub fn list(&self, name: &str) -> &[String] {
        self.lists.get(name).map_or(&[], Vec::as_slice)
    }

    /// `name=value, …` for logs and reports.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self.one.iter().map(|(k, v)| format!("{k}={v}")).collect();
        parts.extend(
            self.lists
                .iter()
                .map(|(k, v)| format!("{k}=[{}]", v.join(" "))),
        );
        parts.join(", ")
    }
}

/// Checks a value against `spec` (literal values at load, rendered ones before a run).
pub fn check_value(spec: &ArgSpec, v: &RawArg) -> Result<(), String> {
    match (spec.kind.is_list(), v) {
        (false, RawArg::One(s)) => check(spec.kind, s),
        (true, RawArg::List(l)) => {
            if spec.kind == ArgKind::Argv && l.is_empty() {
                return Err("must not be empty".into());
            }
            for (i, s) in l.iter().enumerate() {
                if spec.kind == ArgKind::Argv {
                    if s.chars().any(|c| c == '\0') || (i == 0 && s.is_empty()) {
                        return Err(format!("element {i}: {s:?} is not allowed"));
                    }
                } else {
                    check(ArgKind::Word, s).map_err(|m| format!("element {i}: {m}"))?;
                }
            }
            Ok(())
        }
        (false, RawArg::List(_)) => Err(format!("expected {}, got a list", spec.kind.describe())),
        (true, RawArg::One(_)) => Err(format!("expected {}", spec.kind.describe())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injection_payloads_are_refused_by_every_kind() {
        let payloads = [
            "nginx; touch X",
            "$(id)",
            "`id`",
            "a\nb",
            "--help",
            "-rf",
            "a|b",
            "a&&b",
            "x>y",
            "a'b",
            "a\"b",
            "a\\b",
            "",
            "a\0b",
            "*",
        ];
        for kind in [
            ArgKind::Unit,
            ArgKind::Container,
            ArgKind::Port,
            ArgKind::Pid,
            ArgKind::Script,
            ArgKind::Word,
            ArgKind::Count,
        ] {
            for p in payloads {
                assert!(check(kind, p).is_err(), "{kind:?} accepted {p:?}");
            }
        }
    }

    #[test]
    fn ordinary_values_pass() {
        assert!(check(ArgKind::Unit, "getty@tty1.service").is_ok());
        assert!(check(ArgKind::Unit, "nginx").is_ok());
        assert!(
            check(ArgKind::Unit, "my.app").is_ok(),
            "systemctl adds .service"
        );
        for unit in ["reboot.target", "home.mount", "user.slice", "docker.socket"] {
            let e = check(ArgKind::Unit, unit).unwrap_err();
            assert!(e.contains("not a service"), "{unit}: {e}");
        }
        assert!(check(ArgKind::Container, "web_db-1.2").is_ok());
        assert!(check(ArgKind::Port, "8080").is_ok());
        assert!(check(ArgKind::Port, "0").is_err());
        assert!(check(ArgKind::Port, "65536").is_err());
        assert!(check(ArgKind::Port, "+80").is_err());
        assert!(check(ArgKind::Pid, "1").is_err());
        assert!(check(ArgKind::Pid, "4242").is_ok());
        assert!(check(ArgKind::Pattern, "python3 -m http.server 8080").is_ok());
        assert!(
            check(
                ArgKind::Pattern,
                r"^/usr/bin/python3 -m http\.server (80|8080)$"
            )
            .is_ok()
        );
        assert!(check(ArgKind::Script, ".hidden").is_err());
        assert!(check(ArgKind::Script, "../x").is_err());
        assert!(check(ArgKind::Script, "drop_caches.sh").is_ok());
        assert!(check(ArgKind::OneOf(&["cpu", "memory"]), "cpu").is_ok());
        assert!(check(ArgKind::OneOf(&["cpu", "memory"]), "disk").is_err());
    }

    /// A pattern is a regular expression: a bad one, one that matches every command line, an
    /// option-looking one and control characters are refused with the reason.
    #[test]
    fn patterns_are_regular_expressions_checked_before_use() {
        for (p, why) in [
            ("http.server (8080", "invalid regular expression"),
            ("*", "invalid regular expression"),
            (".*", "every process"),
            ("nginx|", "every process"),
            ("-f", "option"),
            ("a\nb", "control characters"),
        ] {
            let e = check(ArgKind::Pattern, p).unwrap_err();
            assert!(e.contains(why), "{p:?}: {e}");
        }
        let re = check_pattern(r"^python3 -m http\.server 80\d\d$").unwrap();
        assert!(re.is_match("python3 -m http.server 8080"));
        assert!(!re.is_match("python3 -m http_server 8080"));
        assert!(!re.is_match("sudo python3 -m http.server 8080"));
    }

    /// Values that meant something else than they look: a container name the doc's pattern
    /// does not allow (`.`, `_x`), a path in a word (`/`, `..`), and numbers with leading
    /// zeros (`08080`: port 8080 to the action, another target with its own budget to the
    /// guard rails).
    #[test]
    fn aliases_paths_and_leading_zeros_are_refused() {
        for (kind, v) in [
            (ArgKind::Container, "."),
            (ArgKind::Container, ".x"),
            (ArgKind::Container, "_x"),
            (ArgKind::Word, "/etc/passwd"),
            (ArgKind::Word, "a/b"),
            (ArgKind::Word, "."),
            (ArgKind::Word, ".."),
            (ArgKind::Words, ".."),
            (ArgKind::Port, "08080"),
            (ArgKind::Port, "00"),
            (ArgKind::Pid, "042"),
            (ArgKind::Count, "05"),
        ] {
            assert!(check(kind, v).is_err(), "{kind:?} accepted {v:?}");
        }
        for (kind, v) in [
            (ArgKind::Container, "x_.-1"),
            (ArgKind::Word, "..a"),
            (ArgKind::Word, "key=value,1:2@h+5%"),
            (ArgKind::Port, "10"),
            (ArgKind::Pid, "2"),
            (ArgKind::Count, "100"),
        ] {
            assert!(check(kind, v).is_ok(), "{kind:?} refused {v:?}");
        }
    }

    #[test]
    fn refusal_messages_escape_the_value() {
        let e = check(ArgKind::Unit, "a\nb; rm").unwrap_err();
        assert!(e.contains("\"a\\nb; rm\""), "{e}");
    }
}
