//! A series' tag set: what, with the rule's name, identifies an alert instance.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Tag keys and values, sorted by key, each key once: one allocation for the set (a
/// `BTreeMap` allocates a ~500-byte node even for one tag) and comparisons that walk two
/// slices. Orders, compares and serializes exactly as the `BTreeMap<String, String>` it
/// replaces (pairs in key order; JSON an object).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tags(Vec<(String, String)>);

impl Tags {
    pub const fn new() -> Tags {
        Tags(Vec::new())
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    pub fn get(&self, key: &str) -> Option<&String> {
        self.find(key).ok().map(|i| &self.0[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// Sets `key` to `value`; the value it had, if any.
    pub fn insert(&mut self, key: String, value: String) -> Option<String> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (key, value));
                None
            }
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.find(key).ok().map(|i| self.0.remove(i).1)
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&String, &mut String) -> bool) {
        self.0.retain_mut(|(k, v)| keep(k, v));
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The pairs in key order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&String, &String)> + ExactSizeIterator {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(_, v)| v)
    }

    /// The pairs as given, sorted by key; a repeated key keeps its last value (as inserting
    /// them into a map would).
    fn from_pairs(mut pairs: Vec<(String, String)>) -> Tags {
        if !pairs.is_sorted_by(|a, b| a.0 < b.0) {
            // Stable: equal keys stay in the order given, so the last one is the last kept.
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            let mut out: Vec<(String, String)> = Vec::with_capacity(pairs.len());
            for p in pairs {
                match out.last_mut() {
                    Some(last) if last.0 == p.0 => *last = p,
                    _ => out.push(p),
                }
            }
            pairs = out;
        }
        Tags(pairs)
    }
}

impl FromIterator<(String, String)> for Tags {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Tags {
        Tags::from_pairs(iter.into_iter().collect())
    }
}

impl<const N: usize> From<[(String, String); N]> for Tags {
    fn from(pairs: [(String, String); N]) -> Tags {
        pairs.into_iter().collect()
    }
}

impl From<BTreeMap<String, String>> for Tags {
    fn from(m: BTreeMap<String, String>) -> Tags {
        Tags(m.into_iter().collect())
    }
}

impl From<Tags> for BTreeMap<String, String> {
    fn from(t: Tags) -> BTreeMap<String, String> {
        t.0.into_iter().collect()
    }
}

/// `tags["host"]`: the value; panics when the key is missing, as a map's index does.
impl std::ops::Index<&str> for Tags {
    type Output = String;
    fn index(&self, key: &str) -> &String {
        self.get(key)
            .unwrap_or_else(|| panic!("no tag {key:?} in {self:?}"))
    }
}

impl Extend<(String, String)> for Tags {
    fn extend<I: IntoIterator<Item = (String, String)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl IntoIterator for Tags {
    type Item = (String, String);
    type IntoIter = std::vec::IntoIter<(String, String)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Tags {
    type Item = (&'a String, &'a String);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, String)>,
        fn(&'a (String, String)) -> (&'a String, &'a String),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl Serialize for Tags {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Tags {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Tags, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Tags;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of tag keys to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tags, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(2).min(64));
                while let Some(pair) = map.next_entry()? {
                    pairs.push(pair);
                }
                Ok(Tags::from_pairs(pairs))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn map(pairs: &[(String, String)]) -> BTreeMap<String, String> {
        pairs.iter().cloned().collect()
    }

    proptest! {
        /// Built, compared, changed and serialized like the map it replaces, whatever the
        /// order and repeats of the pairs.
        #[test]
        fn behaves_as_the_map(
            a in prop::collection::vec(("[a-c]{0,2}", "[x-z]{0,2}"), 0..6),
            b in prop::collection::vec(("[a-c]{0,2}", "[x-z]{0,2}"), 0..6),
            key in "[a-c]{0,2}",
        ) {
            let (ta, tb): (Tags, Tags) = (a.iter().cloned().collect(), b.iter().cloned().collect());
            let (ma, mb) = (map(&a), map(&b));
            prop_assert_eq!(ta.cmp(&tb), ma.cmp(&mb));
            prop_assert_eq!(ta == tb, ma == mb);
            prop_assert_eq!(ta.get(&key), ma.get(&key));
            prop_assert_eq!(ta.len(), ma.len());
            prop_assert!(ta.iter().eq(ma.iter()));
            let json = serde_json::to_string(&ta).unwrap();
            prop_assert_eq!(&json, &serde_json::to_string(&ma).unwrap());
            prop_assert_eq!(serde_json::from_str::<Tags>(&json).unwrap(), ta.clone());
            let (mut ta, mut ma) = (ta, ma);
            prop_assert_eq!(ta.insert(key.clone(), "v".into()), ma.insert(key.clone(), "v".into()));
            ta.retain(|k, _| k != "a");
            ma.retain(|k, _| k != "a");
            prop_assert_eq!(ta.remove("b"), ma.remove("b"));
            prop_assert_eq!(BTreeMap::from(ta), ma);
        }
    }

    /// A JSON object with a repeated key keeps the last value, as a map would.
    #[test]
    fn a_repeated_key_keeps_the_last_value() {
        let t: Tags = serde_json::from_str(r#"{"host":"a","cpu":"0","host":"b"}"#).unwrap();
        assert_eq!(t.get("host").map(String::as_str), Some("b"));
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"cpu":"0","host":"b"}"#
        );
    }
}
