//! The metric model shared by inputs, filters and outputs.
//!
//! A field's type is fixed in code by the input that emits it (Telegraf's schema) and pinned by
//! the golden fixture tests; the serializer decides only how a type is spelled on the wire.

use std::borrow::Cow;

/// A name that is usually a static string (measurement, tag or field key) but may be built at
/// run time (nstat counter names, interface names as tag values).
pub type Name = Cow<'static, str>;

/// One field value with its InfluxDB type.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Float(f64),
    Int(i64),
    /// Written `…i` (clamped to i64::MAX) unless the output enables `influx_uint_support`.
    Uint(u64),
    Bool(bool),
    Str(String),
}

/// `From` each Rust type to the field type it is written as (its variant above).
macro_rules! field_value_from {
    ($($t:ty => $variant:ident),* $(,)?) => {
        $(impl From<$t> for FieldValue {
            fn from(v: $t) -> Self {
                FieldValue::$variant(v.into())
            }
        })*
    };
}

field_value_from!(f64 => Float, i64 => Int, u64 => Uint, bool => Bool, String => Str, &str => Str);

/// One point: measurement, tags kept sorted by key, fields in emission order, time in ns.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: Name,
    tags: Vec<(Name, String)>,
    pub fields: Vec<(Name, FieldValue)>,
    /// Nanoseconds since the Unix epoch.
    pub time: i64,
}

impl Metric {
    /// A metric with no tags and no fields.
    pub fn new(name: impl Into<Name>, time: i64) -> Self {
        Metric {
            name: name.into(),
            tags: Vec::new(),
            fields: Vec::new(),
            time,
        }
    }

    /// Sets a tag, replacing an existing value; empty keys or values are ignored as in Telegraf.
    pub fn set_tag(&mut self, key: impl Into<Name>, value: impl Into<String>) {
        let key = key.into();
        let value = value.into();
        if key.is_empty() || value.is_empty() {
            return;
        }
        match self
            .tags
            .binary_search_by(|(k, _)| k.as_ref().cmp(key.as_ref()))
        {
            Ok(i) => self.tags[i].1 = value,
            Err(i) => self.tags.insert(i, (key, value)),
        }
    }

    /// Adds a tag only if the key is not present yet (how `[inputs.x.tags]` and global tags
    /// lose against plugin tags).
    pub fn add_tag_if_absent(&mut self, key: &str, value: &str) {
        if self.tag(key).is_none() {
            self.set_tag(key.to_owned(), value.to_owned());
        }
    }

    /// The tags, sorted by key.
    pub fn tags(&self) -> &[(Name, String)] {
        &self.tags
    }

    /// A tag's value.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .map(|i| self.tags[i].1.as_str())
    }

    /// Keeps the tags for which `keep(key)` is true.
    pub fn retain_tags(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.tags.retain(|(k, _)| keep(k));
    }

    /// Appends a field (no de-duplication: inputs emit each key once).
    pub fn add_field(&mut self, key: impl Into<Name>, value: impl Into<FieldValue>) {
        self.fields.push((key.into(), value.into()));
    }

    /// A field's value.
    pub fn field(&self, key: &str) -> Option<&FieldValue> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Builder form of [`Metric::set_tag`].
    pub fn with_tag(mut self, key: impl Into<Name>, value: impl Into<String>) -> Self {
        self.set_tag(key, value);
        self
    }

    /// Builder form of [`Metric::add_field`].
    pub fn with_field(mut self, key: impl Into<Name>, value: impl Into<FieldValue>) -> Self {
        self.add_field(key, value);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_stay_sorted_and_empty_values_are_dropped() {
        let m = Metric::new("m", 0)
            .with_tag("z", "1")
            .with_tag("a", "2")
            .with_tag("m", "")
            .with_tag("b", "3");
        let keys: Vec<&str> = m.tags().iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, ["a", "b", "z"]);
    }

    #[test]
    fn add_tag_if_absent_keeps_the_plugin_value() {
        let mut m = Metric::new("m", 0).with_tag("host", "plugin");
        m.add_tag_if_absent("host", "global");
        m.add_tag_if_absent("dc", "eu");
        assert_eq!(m.tag("host"), Some("plugin"));
        assert_eq!(m.tag("dc"), Some("eu"));
    }
}
