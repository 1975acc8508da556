//! Small maps keyed by name, kept as one sorted `Vec`: a series' tags ([`Tags`], what with the
//! rule's name identifies an alert instance) and an observation's or instance's fields
//! ([`Fields`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Names and values, sorted by name, each name once: one allocation for the whole map (a
/// `BTreeMap` allocates a ~500-byte node even for one entry) and comparisons that walk two
/// slices. Orders, compares and serializes exactly as the `BTreeMap<String, V>` it replaces
/// (pairs in key order; JSON an object).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SortedMap<V>(Vec<(String, V)>);

/// A series' tags.
pub type Tags = SortedMap<String>;

/// The values of an observation, an instance or an event, by field name.
pub type Fields = SortedMap<super::Value>;

impl<V> Default for SortedMap<V> {
    fn default() -> Self {
        SortedMap(Vec::new())
    }
}

impl<V> SortedMap<V> {
    pub const fn new() -> Self {
        SortedMap(Vec::new())
    }

    /// An empty map with room for `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        SortedMap(Vec::with_capacity(n))
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.find(key).ok().map(|i| &self.0[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.find(key).ok().map(|i| &mut self.0[i].1)
    }

    /// Sets `key` to `value`; the value it had, if any.
    pub fn insert(&mut self, key: String, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (key, value));
                None
            }
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        self.find(key).ok().map(|i| self.0.remove(i).1)
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&String, &mut V) -> bool) {
        self.0.retain_mut(|(k, v)| keep(k, v));
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The pairs in key order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&String, &V)> + ExactSizeIterator {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().map(|(_, v)| v)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.0.iter_mut().map(|(_, v)| v)
    }

    /// The pairs as given, sorted by key; a repeated key keeps its last value (as inserting
    /// them into a map would).
    fn from_pairs(mut pairs: Vec<(String, V)>) -> Self {
        if !pairs.is_sorted_by(|a, b| a.0 < b.0) {
            // Stable: equal keys stay in the order given; of a run of them the kept (first)
            // slot takes each later one's pair, so the last value is what remains.
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            pairs.dedup_by(|later, kept| {
                let same = later.0 == kept.0;
                if same {
                    std::mem::swap(later, kept);
                }
                same
            });
        }
        SortedMap(pairs)
    }
}

impl<V> FromIterator<(String, V)> for SortedMap<V> {
    fn from_iter<I: IntoIterator<Item = (String, V)>>(iter: I) -> Self {
        SortedMap::from_pairs(iter.into_iter().collect())
    }
}

impl<V, const N: usize> From<[(String, V); N]> for SortedMap<V> {
    fn from(pairs: [(String, V); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl<V> From<BTreeMap<String, V>> for SortedMap<V> {
    fn from(m: BTreeMap<String, V>) -> Self {
        SortedMap(m.into_iter().collect())
    }
}

/// `tags["host"]`: the value; panics when the key is missing, as a map's index does.
impl<V: fmt::Debug> std::ops::Index<&str> for SortedMap<V> {
    type Output = V;
    fn index(&self, key: &str) -> &V {
        self.get(key)
            .unwrap_or_else(|| panic!("no {key:?} in {self:?}"))
    }
}

impl<V> Extend<(String, V)> for SortedMap<V> {
    fn extend<I: IntoIterator<Item = (String, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl<V> IntoIterator for SortedMap<V> {
    type Item = (String, V);
    type IntoIter = std::vec::IntoIter<(String, V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a, V> IntoIterator for &'a SortedMap<V> {
    type Item = (&'a String, &'a V);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, V)>,
        fn(&'a (String, V)) -> (&'a String, &'a V),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl<V: Serialize> Serialize for SortedMap<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for SortedMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Pairs<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Pairs<V> {
            type Value = SortedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SortedMap<V>, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(2).min(64));
                while let Some(pair) = map.next_entry()? {
                    pairs.push(pair);
                }
                Ok(SortedMap::from_pairs(pairs))
            }
        }
        d.deserialize_map(Pairs(std::marker::PhantomData))
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
            prop_assert_eq!(ta.into_iter().collect::<BTreeMap<_, _>>(), ma);
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
