//! Typed, key-tracking access to one TOML table of a config file.
//!
//! A plugin reads its options through [`Options`]; each getter records the key as used and,
//! on a bad value, records an error naming file, line and column and returns the default, so
//! one load reports every problem. [`Options::finish`] then turns each key nobody read into
//! an error (a typo: Telegraf's "configuration specified the fields [...], but they were not
//! used") unless the plugin declared it as a Telegraf option we accept but do not implement
//! (a warning).

use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diag::{Diagnostics, Severity, Source};
use crate::values::{parse_duration, parse_size, substitute_env};

/// Looks up an environment variable; a value so tests can pin it.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// One table being read.
pub struct Options<'a, 'i> {
    src: &'a Source,
    /// Where the table is, for messages: "inputs.cpu", "agent".
    pub section: String,
    table: &'a DeTable<'i>,
    table_offset: usize,
    used: Vec<bool>,
    /// Every key a getter asked for, present or not: the options this table may have, for
    /// "did you mean" on an unknown key.
    asked: Vec<String>,
    diags: &'a mut Diagnostics,
    env: EnvLookup<'a>,
}

impl<'a, 'i> Options<'a, 'i> {
    /// Starts reading `table`, found at byte `table_offset` of `src`.
    pub fn new(
        src: &'a Source,
        section: impl Into<String>,
        table: &'a DeTable<'i>,
        table_offset: usize,
        diags: &'a mut Diagnostics,
        env: EnvLookup<'a>,
    ) -> Self {
        let used = vec![false; table.len()];
        Options {
            src,
            section: section.into(),
            table,
            table_offset,
            used,
            asked: Vec::new(),
            diags,
            env,
        }
    }

    fn lookup(&mut self, key: &str) -> Option<&'a Spanned<DeValue<'i>>> {
        if !self.asked.iter().any(|k| k == key) {
            self.asked.push(key.to_owned());
        }
        let table: &'a DeTable<'i> = self.table;
        let (i, (_, v)) = table
            .iter()
            .enumerate()
            .find(|(_, (k, _))| k.get_ref() == key)?;
        self.used[i] = true;
        Some(v)
    }

    /// True when the table has the key (marks it used).
    pub fn has(&mut self, key: &str) -> bool {
        self.lookup(key).is_some()
    }

    /// Records an error at the value of `key` (or at the table when it is absent).
    pub fn error_at(&mut self, key: &str, message: impl std::fmt::Display) {
        self.diag_at(Severity::Error, key, message);
    }

    /// Records a warning at the value of `key` (or at the table when it is absent).
    pub fn warn_at(&mut self, key: &str, message: impl std::fmt::Display) {
        self.diag_at(Severity::Warning, key, message);
    }

    fn diag_at(&mut self, severity: Severity, key: &str, message: impl std::fmt::Display) {
        let offset = self
            .table
            .get(key)
            .map_or(self.table_offset, |v| v.span().start);
        let msg = format!("[{}] {key}: {message}", self.section);
        self.diags.push(self.src.diag(severity, offset, msg));
    }

    fn type_error(&mut self, key: &str, want: &str, got: &DeValue<'_>) {
        self.error_at(key, format!("expected {want}, found {}", type_name(got)));
    }

    /// Substitutes `${VAR}` in a string value, recording an error for `${VAR:?msg}`.
    fn expand(&mut self, key: &str, s: &str) -> String {
        let offset = self
            .table
            .get(key)
            .map_or(self.table_offset, |v| v.span().start);
        let section = self.section.clone();
        self.substitute_in(&section, key, offset, s)
            .unwrap_or_else(|| s.to_owned())
    }

    /// `${VAR}` substitution for `key` of `section` at `offset`: an error (and None) for
    /// `${VAR:?msg}` on an unset variable and for a secret-store reference `@{store:key}`, a
    /// warning for an unset variable left verbatim.
    fn substitute_in(
        &mut self,
        section: &str,
        key: &str,
        offset: usize,
        s: &str,
    ) -> Option<String> {
        let missing = std::cell::RefCell::new(Vec::new());
        let env = self.env;
        let lookup = |name: &str| {
            let v = env(name);
            if v.is_none() {
                missing.borrow_mut().push(name.to_owned());
            }
            v
        };
        match substitute_env(s, &lookup) {
            Ok(v) => {
                if let Some(reference) = secret_store_reference(&v) {
                    // Passed on as is, the reference became the password and every write was
                    // refused (401); Telegraf refuses to start when it cannot resolve one.
                    let msg = format!(
                        "{reference} is a Telegraf secret-store reference, and wk-agent has no secret stores: use an environment variable (\"${{VAR}}\") or, where the option has one, a file (password_file, token_file)"
                    );
                    self.error_in(section, key, offset, msg);
                    return None;
                }
                let mut names = missing.into_inner();
                names.dedup();
                names.retain(|name| {
                    v.contains(&format!("${{{name}}}")) || v.contains(&format!("${name}"))
                });
                if names.is_empty() {
                    return Some(v);
                }
                if is_secret(section, key) || has_url_credentials(&v) {
                    // `password = "Pa$sw0rd"`: the "variable" is part of the secret, so it is
                    // not named (Telegraf keeps the text too, and says nothing).
                    let msg = format!(
                        "[{section}] {key}: `$` followed by a name reads as an environment variable, and it is not set; the text is used verbatim (value not shown: it is a secret; write `$$` for a literal `$`)"
                    );
                    self.diags
                        .push(self.src.diag(Severity::Warning, offset, msg));
                    return Some(v);
                }
                for name in names {
                    let msg = format!(
                        "[{section}] {key}: environment variable {name} is not set; the text is used verbatim"
                    );
                    self.diags
                        .push(self.src.diag(Severity::Warning, offset, msg));
                }
                Some(v)
            }
            Err(e) => {
                self.error_in(section, key, offset, e);
                None
            }
        }
    }

    /// A boolean option.
    pub fn bool(&mut self, key: &str, default: bool) -> bool {
        match self.lookup(key).map(|v| v.get_ref()) {
            None => default,
            Some(DeValue::Boolean(b)) => *b,
            Some(DeValue::String(s)) => {
                let s = self.expand(key, s);
                match s.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        self.error_at(key, format!("expected true or false, found {s:?}"));
                        default
                    }
                }
            }
            Some(other) => {
                self.type_error(key, "a boolean", other);
                default
            }
        }
    }

    /// A string option (with `${VAR}` substitution).
    pub fn string(&mut self, key: &str, default: &str) -> String {
        self.opt_string(key).unwrap_or_else(|| default.to_owned())
    }

    /// A string option that may be absent.
    pub fn opt_string(&mut self, key: &str) -> Option<String> {
        match self.lookup(key).map(|v| v.get_ref()) {
            None => None,
            Some(DeValue::String(s)) => Some(self.expand(key, s)),
            Some(other) => {
                self.type_error(key, "a string", other);
                None
            }
        }
    }

    /// A secret given inline in `key` (usually `"${ENV_VAR}"`) or as the path of a file in
    /// `file_key` (so that configs kept in git hold no secrets); `None` when neither is set.
    /// Both set is an error at `file_key`, and `None`. Reading the file is the caller's:
    /// when (now or at each use) and how its newline is trimmed.
    pub fn secret_source(&mut self, key: &str, file_key: &str) -> Option<SecretSource> {
        match (self.opt_string(key), self.opt_string(file_key)) {
            (Some(_), Some(_)) => {
                self.error_at(
                    file_key,
                    format!("give either `{key}` or `{file_key}`, not both"),
                );
                None
            }
            (Some(v), None) => Some(SecretSource::Inline(v)),
            (None, Some(path)) => Some(SecretSource::File(path)),
            (None, None) => None,
        }
    }

    /// A string that must be one of `allowed`.
    pub fn choice(&mut self, key: &str, default: &str, allowed: &[&str]) -> String {
        let v = self.string(key, default);
        if allowed.contains(&v.as_str()) {
            v
        } else {
            self.error_at(
                key,
                format!(
                    "invalid value {v:?}: expected one of {}",
                    allowed.join(", ")
                ),
            );
            default.to_owned()
        }
    }

    /// A list of strings; a single string is accepted as a one-item list.
    pub fn strings(&mut self, key: &str) -> Vec<String> {
        self.opt_strings(key).unwrap_or_default()
    }

    /// A list of strings that may be absent.
    pub fn opt_strings(&mut self, key: &str) -> Option<Vec<String>> {
        let v = self.lookup(key)?;
        match v.get_ref() {
            DeValue::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items.iter() {
                    match item.get_ref() {
                        DeValue::String(s) => out.push(self.expand(key, s)),
                        other => {
                            self.type_error(key, "a list of strings", other);
                            return None;
                        }
                    }
                }
                Some(out)
            }
            DeValue::String(s) => Some(vec![self.expand(key, s)]),
            other => {
                self.type_error(key, "a list of strings", other);
                None
            }
        }
    }

    /// An integer option, checked against `min..=max`.
    pub fn int(&mut self, key: &str, default: i64, min: i64, max: i64) -> i64 {
        let v = match self.lookup(key).map(|v| v.get_ref()) {
            None => return default,
            Some(DeValue::Integer(i)) => {
                i64::from_str_radix(i.as_str().replace('_', "").as_str(), i.radix()).ok()
            }
            Some(DeValue::String(s)) => {
                let s = self.expand(key, s);
                s.trim().parse::<i64>().ok()
            }
            Some(other) => {
                self.type_error(key, "an integer", other);
                return default;
            }
        };
        match v {
            Some(v) if (min..=max).contains(&v) => v,
            Some(v) => {
                self.error_at(key, format!("{v} is out of range {min}..={max}"));
                default
            }
            None => {
                self.error_at(key, "expected an integer");
                default
            }
        }
    }

    /// A duration: `"10s"`-style string, integer seconds or float seconds.
    pub fn duration(&mut self, key: &str, default: Duration) -> Duration {
        self.opt_duration(key).unwrap_or(default)
    }

    /// A period option (an interval): absent, or at least `min` — an error otherwise, since
    /// `"1ns"` would spin the loop it paces.
    pub fn opt_period(&mut self, key: &str, min: Duration) -> Option<Duration> {
        let d = self.opt_duration(key)?;
        if d < min {
            self.error_at(key, format!("{d:?} is too short: must be at least {min:?}"));
        }
        Some(d)
    }

    /// A duration option that may be absent.
    pub fn opt_duration(&mut self, key: &str) -> Option<Duration> {
        match self.lookup(key)?.get_ref() {
            DeValue::String(s) => {
                let s = self.expand(key, s);
                match parse_duration(&s) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        self.error_at(key, e);
                        None
                    }
                }
            }
            DeValue::Integer(i) => {
                match u64::from_str_radix(&i.as_str().replace('_', ""), i.radix()) {
                    // The same bounds as the text form (a huge interval became 0 ns
                    // further on, and a division by it panicked).
                    Ok(secs) => match parse_duration(&secs.to_string()) {
                        Ok(d) => Some(d),
                        Err(e) => {
                            self.error_at(key, e);
                            None
                        }
                    },
                    Err(_) => {
                        self.error_at(
                            key,
                            format!(
                                "invalid duration {}: must be a non-negative number of seconds",
                                i.as_str()
                            ),
                        );
                        None
                    }
                }
            }
            DeValue::Float(f) => match f
                .as_str()
                .parse::<f64>()
                .ok()
                .and_then(|f| Duration::try_from_secs_f64(f).ok())
                .filter(|d| d.as_nanos() <= i64::MAX as u128)
            {
                Some(d) => Some(d),
                None => {
                    self.error_at(key, format!("invalid duration {}", f.as_str()));
                    None
                }
            },
            other => {
                let other = other.clone();
                self.type_error(key, "a duration such as \"10s\"", &other);
                None
            }
        }
    }

    /// A size in bytes: an integer or a string like `"32MiB"`.
    pub fn size(&mut self, key: &str, default: u64) -> u64 {
        match self.lookup(key).map(|v| v.get_ref()) {
            None => default,
            Some(DeValue::Integer(i)) => {
                match u64::from_str_radix(&i.as_str().replace('_', ""), i.radix()) {
                    Ok(v) => v,
                    Err(_) => {
                        self.error_at(key, "expected a non-negative size");
                        default
                    }
                }
            }
            Some(DeValue::String(s)) => {
                let s = self.expand(key, s);
                // Telegraf's config.Size leaves the value alone for "".
                if s.is_empty() {
                    return default;
                }
                parse_size(&s).unwrap_or_else(|e| {
                    self.error_at(key, e);
                    default
                })
            }
            Some(other) => {
                self.type_error(key, "a size such as \"32MiB\"", other);
                default
            }
        }
    }

    /// The sub-table `key` (`[inputs.x.tags]`) and its section name for messages; `None`
    /// when absent or (an error) not a table.
    fn sub_table(&mut self, key: &str) -> Option<(String, &'a DeTable<'i>)> {
        let v = self.lookup(key)?;
        let DeValue::Table(t) = v.get_ref() else {
            self.type_error(key, "a table", v.get_ref());
            return None;
        };
        Some((format!("{}.{key}", self.section), t))
    }

    /// A table of string values (`[inputs.x.tags]`), in file order.
    pub fn string_table(&mut self, key: &str) -> Vec<(String, String)> {
        match self.sub_table(key) {
            Some((section, t)) => self.strings_of(&section, t),
            None => Vec::new(),
        }
    }

    /// Every entry of this table as a string (`[global_tags]`), in file order; each entry is
    /// marked used.
    pub fn all_strings(&mut self) -> Vec<(String, String)> {
        self.used.iter_mut().for_each(|u| *u = true);
        let section = self.section.clone();
        self.strings_of(&section, self.table)
    }

    fn strings_of(&mut self, section: &str, t: &DeTable<'_>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (k, v) in t.iter() {
            match v.get_ref() {
                DeValue::String(s) => {
                    if let Some(s) = self.substitute_in(section, k.get_ref(), v.span().start, s) {
                        out.push((k.get_ref().to_string(), s));
                    }
                }
                other => {
                    let msg = format!("expected a string, found {}", type_name(other));
                    self.error_in(section, k.get_ref(), v.span().start, msg);
                }
            }
        }
        out
    }

    /// An error about `key` of the sub-table `section`, at `offset`.
    fn error_in(&mut self, section: &str, key: &str, offset: usize, msg: impl std::fmt::Display) {
        let msg = format!("[{section}] {key}: {msg}");
        self.diags.push(self.src.diag(Severity::Error, offset, msg));
    }

    /// A table whose values are lists of strings (`[inputs.x.tagpass]`), in file order.
    pub fn strings_table(&mut self, key: &str) -> Vec<(String, Vec<String>)> {
        let Some((section, t)) = self.sub_table(key) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, v) in t.iter() {
            let k = k.get_ref();
            let items: Vec<&Spanned<DeValue<'_>>> = match v.get_ref() {
                DeValue::Array(a) => a.iter().collect(),
                DeValue::String(_) => vec![v],
                other => {
                    let msg = format!("expected a list of strings, found {}", type_name(other));
                    self.error_in(&section, k, v.span().start, msg);
                    continue;
                }
            };
            let mut list = Vec::with_capacity(items.len());
            for item in items {
                match item.get_ref() {
                    DeValue::String(s) => match substitute_env(s, self.env) {
                        Ok(s) => list.push(s),
                        Err(e) => self.error_in(&section, k, item.span().start, e),
                    },
                    other => {
                        let msg = format!(
                            "expected a list of strings, found {} in the list",
                            type_name(other)
                        );
                        self.error_in(&section, k, item.span().start, msg);
                    }
                }
            }
            out.push((k.to_string(), list));
        }
        out
    }

    /// Marks Telegraf options we accept but do not implement: present ones get a warning.
    pub fn unsupported(&mut self, keys: &[&str]) {
        for key in keys {
            if self.has(key) {
                self.warn_at(
                    key,
                    "is a Telegraf option wk-agent does not implement; ignored",
                );
            }
        }
    }

    /// Marks Telegraf options we do not implement but whose default behaviour is ours: each
    /// present key is read with its type checked (a wrong type is an error, as in Telegraf),
    /// and only a value that asks for something else gets the "not implemented" warning. So
    /// Telegraf's own default config (`logfile = ""`, `buffer_strategy = "memory"`, …) loads
    /// without noise.
    pub fn unsupported_unless(&mut self, keys: &[(&str, Harmless)]) {
        for (key, harmless) in keys {
            if !self.has(key) {
                continue;
            }
            let ok = match harmless {
                Harmless::Str(values) => self
                    .opt_string(key)
                    .is_none_or(|v| values.contains(&v.as_str())),
                Harmless::Bool(b) => self.bool(key, *b) == *b,
                Harmless::Int(i) => self.int(key, *i, i64::MIN, i64::MAX) == *i,
                Harmless::ZeroDuration => self.duration(key, Duration::ZERO).is_zero(),
                Harmless::ZeroSize => self.size(key, 0) == 0,
            };
            if !ok {
                self.warn_at(
                    key,
                    "is a Telegraf option wk-agent does not implement; ignored",
                );
            }
        }
    }

    /// Marks options accepted for compatibility that have no effect here, without a warning.
    pub fn accepted(&mut self, keys: &[&str]) {
        for key in keys {
            self.has(key);
        }
    }

    /// Ends reading: every key nobody read is an error naming its line.
    pub fn finish(self) {
        for (i, (k, _)) in self.table.iter().enumerate() {
            if !self.used[i] {
                let key = k.get_ref();
                let mut msg = format!(
                    "[{}] unknown option {key:?}: Telegraf has no such option here",
                    self.section,
                );
                match crate::suggest::closest_in(self.asked.iter().map(String::as_str), key) {
                    Some(s) => msg.push_str(&format!("; did you mean {s:?}?")),
                    None => msg.push_str(" (a typo?)"),
                }
                self.diags
                    .push(self.src.diag(Severity::Error, k.span().start, msg));
            }
        }
    }
}

/// The values of an unimplemented option that mean what wk-agent does anyway.
#[derive(Debug, Clone, Copy)]
pub enum Harmless {
    /// A string, one of these.
    Str(&'static [&'static str]),
    Bool(bool),
    Int(i64),
    ZeroDuration,
    ZeroSize,
}

/// The tables of `[[x]]` (an array of tables; other items are skipped) or `[x]` (one table),
/// each with its offset; `None` when `v` is neither.
pub fn tables_of<'a, 'i>(v: &'a Spanned<DeValue<'i>>) -> Option<Vec<(&'a DeTable<'i>, usize)>> {
    match v.get_ref() {
        DeValue::Array(a) => Some(
            a.iter()
                .filter_map(|item| match item.get_ref() {
                    DeValue::Table(t) => Some((t, item.span().start)),
                    _ => None,
                })
                .collect(),
        ),
        DeValue::Table(t) => Some(vec![(t, v.span().start)]),
        _ => None,
    }
}

/// Where a secret option's value is: [`Options::secret_source`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// The option's value, `${VAR}` substituted.
    Inline(String),
    /// The path of the file that holds it.
    File(String),
}

/// The first Telegraf secret-store reference in `s`: `@{store:key}`, both names of letters,
/// digits and `_` (Telegraf's pattern `@\{(\w+:\w+)\}`).
pub fn secret_store_reference(s: &str) -> Option<&str> {
    let word = |t: &str| {
        t.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(t.len())
    };
    let mut from = 0;
    while let Some(i) = s[from..].find("@{") {
        let start = from + i;
        let rest = &s[start + 2..];
        let store = word(rest);
        if store > 0 && rest[store..].starts_with(':') {
            let after = &rest[store + 1..];
            let key = word(after);
            if key > 0 && after[key..].starts_with('}') {
                return Some(&s[start..start + 2 + store + 1 + key + 1]);
            }
        }
        from = start + 2;
    }
    None
}

/// True for options whose value must never appear in a log: passwords, tokens and other
/// credentials, and the values of HTTP header tables (they carry `Authorization`).
pub fn is_secret(section: &str, key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    section.ends_with(".http_headers")
        || section.ends_with(".headers")
        || matches!(key.as_str(), "password" | "token")
        || ["_password", "_token", "_secret", "_pwd"]
            .iter()
            .any(|s| key.ends_with(s))
}

/// True for a value holding a URL with credentials (`http://user:Pa$sw0rd@host`): a `$` in
/// it must not be named in a log as a variable either.
fn has_url_credentials(v: &str) -> bool {
    v.split("://").skip(1).any(|rest| {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        authority.contains('@')
    })
}

/// TOML's name for a value's type, for messages.
pub fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}
