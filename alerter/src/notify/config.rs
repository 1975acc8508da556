//! Reading the notification part of the alerter config: `[[notifiers.<kind>]]` tables and
//! `[[silences]]`, with file:line:column diagnostics through `wk_core::options::Options`.
//!
//! The alerter's config loader owns the whole file and calls [`load`] with the parsed
//! document; [`load_str`] does the same for a document on its own (tests, `check`).

use std::fmt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use toml::de::{DeTable, DeValue};
use wk_core::diag::{ConfigError, Diag, Diagnostics, Severity, Source};
use wk_core::options::{EnvLookup, Options};

use super::running::RunningNotifier;
use super::silence::Silence;
use super::{REGISTRY, find};

/// The validated notification config.
#[derive(Debug, Default, Clone)]
pub struct NotifyPlan {
    pub notifiers: Vec<RunningNotifier>,
    pub silences: Vec<Silence>,
}

impl NotifyPlan {
    /// The notifier names, in config order.
    pub fn names(&self) -> Vec<&str> {
        self.notifiers
            .iter()
            .map(|n| n.settings.name.as_str())
            .collect()
    }

    /// Checks the names a rule lists in `notify: [...]`: every one must be a configured
    /// notifier (a typo would otherwise drop that rule's notifications silently).
    pub fn validate_names(&self, names: &[String]) -> Result<(), UnknownNotifiers> {
        check_names(&self.names(), names)
    }
}

/// Every name in `names` must be one of `known` (what both the plan and the running router
/// check).
pub fn check_names(known: &[&str], names: &[String]) -> Result<(), UnknownNotifiers> {
    let unknown: Vec<String> = names
        .iter()
        .filter(|n| !known.contains(&n.as_str()))
        .cloned()
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(UnknownNotifiers {
            unknown,
            known: known.iter().map(|s| (*s).to_owned()).collect(),
        })
    }
}

/// A rule names notifiers that are not configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownNotifiers {
    pub unknown: Vec<String>,
    pub known: Vec<String>,
}

impl fmt::Display for UnknownNotifiers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quoted = |v: &[String]| {
            v.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        write!(
            f,
            "unknown notifier{} {}",
            if self.unknown.len() == 1 { "" } else { "s" },
            quoted(&self.unknown)
        )?;
        if self.known.is_empty() {
            write!(f, ": no [[notifiers.*]] are configured")
        } else {
            write!(f, ": configured notifiers are {}", quoted(&self.known))
        }
    }
}

impl std::error::Error for UnknownNotifiers {}

/// Reads `notifiers` and `silences` from a parsed config document; other top-level keys are
/// left to the caller. Problems go to `diags`.
pub fn load(
    src: &Source,
    doc: &DeTable<'_>,
    diags: &mut Diagnostics,
    env: EnvLookup<'_>,
) -> NotifyPlan {
    let mut plan = NotifyPlan::default();
    if let Some(section) = doc.get("notifiers") {
        match section.get_ref() {
            DeValue::Table(kinds) => {
                for (kind, instances) in kinds.iter() {
                    notifier_tables(
                        src,
                        kind.get_ref(),
                        kind.span().start,
                        instances,
                        diags,
                        env,
                        &mut plan,
                    );
                }
            }
            _ => diags.push(src.diag(
                Severity::Error,
                section.span().start,
                "[notifiers] must be a table of [[notifiers.<kind>]] tables",
            )),
        }
    }
    if let Some(section) = doc.get("silences") {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let before = diags.items.len();
        for (i, (t, off)) in tables_of(section).into_iter().enumerate() {
            let mut o = Options::new(src, format!("silences.{i}"), t, off, diags, env);
            if let Some(s) = Silence::read(&mut o, t, now) {
                plan.silences.push(s);
            }
            o.finish();
        }
        if !matches!(section.get_ref(), DeValue::Array(_) | DeValue::Table(_)) {
            diags.push(src.diag(
                Severity::Error,
                section.span().start,
                "silences must be [[silences]] tables",
            ));
        }
        reword_unknown_options(diags, before);
    }
    plan
}

/// The tables of `[[x]]` or `[x]`, with their offsets; none for any other value.
pub(crate) fn tables_of<'a, 'i>(
    v: &'a toml::Spanned<DeValue<'i>>,
) -> Vec<(&'a DeTable<'i>, usize)> {
    wk_core::options::tables_of(v).unwrap_or_default()
}

fn notifier_tables(
    src: &Source,
    kind: &str,
    offset: usize,
    instances: &toml::Spanned<DeValue<'_>>,
    diags: &mut Diagnostics,
    env: EnvLookup<'_>,
    plan: &mut NotifyPlan,
) {
    let Some(spec) = find(kind) else {
        let kinds: Vec<&str> = REGISTRY.iter().map(|s| s.name).collect();
        let msg = format!(
            "[notifiers.{kind}]: no such notifier kind; known kinds are {}",
            kinds.join(", ")
        );
        diags.push(src.diag(Severity::Error, offset, msg));
        return;
    };
    let before = diags.items.len();
    let tables = tables_of(instances);
    if tables.is_empty() {
        diags.push(src.diag(
            Severity::Error,
            offset,
            format!("[notifiers.{kind}] must be a table ([[notifiers.{kind}]])"),
        ));
    }
    for (t, off) in tables {
        let mut o = Options::new(src, format!("notifiers.{kind}"), t, off, diags, env);
        let rn = RunningNotifier::build(spec, &mut o);
        let name = &rn.settings.name;
        if !name.is_empty() && plan.notifiers.iter().any(|n| &n.settings.name == name) {
            o.error_at(
                "name",
                format!("{name:?} is already the name of another notifier; names must be unique"),
            );
        }
        o.finish();
        plan.notifiers.push(rn);
    }
    reword_unknown_options(diags, before);
}

/// `Options::finish` words an unknown key for Telegraf plugins; notifiers are ours.
fn reword_unknown_options(diags: &mut Diagnostics, from: usize) {
    for d in diags.items.iter_mut().skip(from) {
        if d.message.contains("Telegraf has no such option here") {
            d.message = d
                .message
                .replace("Telegraf has no such option here", "no such option");
        }
    }
}

/// Loads a config document on its own: its `notifiers` and `silences` (other keys are
/// ignored). Returns the plan and the warnings, or every error.
pub fn load_str(
    path: impl AsRef<Path>,
    text: &str,
    env: EnvLookup<'_>,
) -> Result<(NotifyPlan, Vec<Diag>), ConfigError> {
    let src = Source::new(path, text.to_owned());
    let mut diags = Diagnostics::default();
    let plan = match DeTable::parse(&src.text) {
        Ok(doc) => load(&src, doc.get_ref(), &mut diags, env),
        Err(e) => {
            diags.push(src.toml_error(&e));
            NotifyPlan::default()
        }
    };
    if diags.has_errors() {
        return Err(ConfigError {
            errors: diags.errors().cloned().collect(),
        });
    }
    Ok((plan, diags.warnings().cloned().collect()))
}
