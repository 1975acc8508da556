//! Telegraf's metric filters (spec/telegraf.md §2.3): selectors (`namepass`, `namedrop`,
//! `tagpass`, `tagdrop`) decide whether a metric goes on; modifiers (`fieldinclude`,
//! `fieldexclude`, `taginclude`, `tagexclude`) trim what it carries.

use crate::glob::GlobSet;
use crate::metric::Metric;
use wk_core::options::Options;

/// The filters of one plugin instance.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    namepass: GlobSet,
    namedrop: GlobSet,
    fieldinclude: GlobSet,
    fieldexclude: GlobSet,
    tagpass: Vec<(String, GlobSet)>,
    tagdrop: Vec<(String, GlobSet)>,
    taginclude: GlobSet,
    tagexclude: GlobSet,
}

impl Filter {
    /// Reads every filter key (with the deprecated spellings Telegraf still accepts).
    pub fn from_options(opts: &mut Options<'_, '_>) -> Filter {
        let name_sep: Vec<char> = opts.string("namepass_separator", "").chars().collect();
        let drop_sep: Vec<char> = opts.string("namedrop_separator", "").chars().collect();
        let globs = |opts: &mut Options<'_, '_>, keys: &[&str], seps: &[char]| {
            let mut all = Vec::new();
            for key in keys {
                let pats = opts.strings(key);
                if let Err(e) = GlobSet::with_separators(&pats, seps) {
                    opts.error_at(key, e);
                }
                all.extend(pats);
            }
            GlobSet::with_separators(&all, seps).unwrap_or_default()
        };
        let namepass = globs(opts, &["namepass"], &name_sep);
        let namedrop = globs(opts, &["namedrop"], &drop_sep);
        let fieldinclude = globs(opts, &["fieldinclude", "fieldpass", "pass"], &[]);
        let fieldexclude = globs(opts, &["fieldexclude", "fielddrop", "drop"], &[]);
        let taginclude = globs(opts, &["taginclude"], &[]);
        let tagexclude = globs(opts, &["tagexclude"], &[]);
        let tag_table = |opts: &mut Options<'_, '_>, key: &str| {
            let mut out = Vec::new();
            for (tag, pats) in opts.strings_table(key) {
                match GlobSet::new(&pats) {
                    Ok(g) => out.push((tag, g)),
                    Err(e) => opts.error_at(key, format!("{tag}: {e}")),
                }
            }
            out
        };
        let tagpass = tag_table(opts, "tagpass");
        let tagdrop = tag_table(opts, "tagdrop");
        Filter {
            namepass,
            namedrop,
            fieldinclude,
            fieldexclude,
            tagpass,
            tagdrop,
            taginclude,
            tagexclude,
        }
    }

    /// True when no filter is set (the common case, skipped cheaply).
    pub fn is_empty(&self) -> bool {
        self.namepass.is_empty()
            && self.namedrop.is_empty()
            && self.fieldinclude.is_empty()
            && self.fieldexclude.is_empty()
            && self.tagpass.is_empty()
            && self.tagdrop.is_empty()
            && self.taginclude.is_empty()
            && self.tagexclude.is_empty()
    }

    /// The selectors: namepass AND NOT namedrop, tagpass (any listed tag matches) AND NOT
    /// tagdrop.
    pub fn select(&self, m: &Metric) -> bool {
        if !self.namepass.is_empty() && !self.namepass.is_match(&m.name) {
            return false;
        }
        if !self.namedrop.is_empty() && self.namedrop.is_match(&m.name) {
            return false;
        }
        let tag_hit = |filters: &[(String, GlobSet)]| {
            filters
                .iter()
                .any(|(k, g)| m.tag(k).is_some_and(|v| g.is_match(v)))
        };
        if !self.tagpass.is_empty() && !tag_hit(&self.tagpass) {
            return false;
        }
        if !self.tagdrop.is_empty() && tag_hit(&self.tagdrop) {
            return false;
        }
        true
    }

    /// The modifiers; returns false when no field is left (the metric is then discarded).
    pub fn modify(&self, m: &mut Metric) -> bool {
        if !self.fieldinclude.is_empty() {
            m.fields.retain(|(k, _)| self.fieldinclude.is_match(k));
        }
        if !self.fieldexclude.is_empty() {
            m.fields.retain(|(k, _)| !self.fieldexclude.is_match(k));
        }
        if !self.taginclude.is_empty() {
            m.retain_tags(|k| self.taginclude.is_match(k));
        }
        if !self.tagexclude.is_empty() {
            m.retain_tags(|k| !self.tagexclude.is_match(k));
        }
        !m.fields.is_empty()
    }
}
