//! Domain names as the query path compares them: lower case, uncompressed wire form, hashed and
//! compared as bytes. A question's name is already in this form when it is parsed, so looking
//! it up builds nothing; names from the configuration are converted once, when it is loaded.

use std::{borrow::Borrow, hash::BuildHasher};

use hashbrown::HashTable;

use hickory_proto::rr::Name;

/// A name in lower case wire form: the key zones store names under. It borrows as `[u8]`, so a
/// map keyed by it is searched with a question's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NameKey(Box<[u8]>);

impl NameKey {
    pub fn new(name: &Name) -> NameKey {
        let mut bytes = Vec::with_capacity(name.len() + 1);
        for label in name.iter() {
            // hickory's labels are at most 63 octets, so the length fits its octet.
            bytes.push(label.len() as u8);
            bytes.extend(label.iter().map(u8::to_ascii_lowercase));
        }
        bytes.push(0);
        NameKey(bytes.into_boxed_slice())
    }

    /// A key from bytes that are already a lower case wire-form name.
    pub fn from_wire(name: &[u8]) -> NameKey {
        NameKey(name.into())
    }

    pub fn wire(&self) -> &[u8] {
        &self.0
    }
}

impl Borrow<[u8]> for NameKey {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

/// The name one label up, `None` at the root. `name` must be a whole wire-form name.
pub fn parent(name: &[u8]) -> Option<&[u8]> {
    let first = usize::from(*name.first()?);
    (first > 0).then(|| name.get(1 + first..)).flatten()
}

/// Whether `name` is `zone` or below it (label by label, both in lower case wire form).
pub fn is_within(name: &[u8], zone: &[u8]) -> bool {
    let mut rest = name;
    while rest.len() > zone.len() {
        match parent(rest) {
            Some(up) => rest = up,
            None => return false,
        }
    }
    rest == zone
}

/// The first label's text (without its length octet); empty at the root.
pub fn first_label(name: &[u8]) -> &[u8] {
    let len = name.first().map_or(0, |&len| usize::from(len));
    name.get(1..1 + len).unwrap_or_default()
}

/// How many labels `name` has, the root not counted.
pub fn label_count(name: &[u8]) -> usize {
    std::iter::successors(Some(name), |n| parent(n)).count() - 1
}

/// A map from names (lower case wire form) to `V`, every name's bytes in one buffer: a zone of
/// 100,000 names makes a few large allocations rather than 100,000 small ones, which after a
/// parse would pin freed pages. Looking a question's name up hashes its bytes and compares them
/// once, as a `HashMap<NameKey, V>` does.
#[derive(Debug, Clone)]
pub struct NameMap<V> {
    names: Vec<u8>,
    entries: HashTable<(NameSpan, V)>,
    /// Randomly seeded: every query looks a name up here.
    hasher: foldhash::fast::RandomState,
}

/// Where a name's bytes are in [`NameMap::names`].
#[derive(Debug, Clone, Copy)]
struct NameSpan {
    at: u32,
    len: u8,
}

impl NameSpan {
    fn of(self, names: &[u8]) -> &[u8] {
        let at = self.at as usize;
        &names[at..at + usize::from(self.len)]
    }
}

impl<V> Default for NameMap<V> {
    fn default() -> Self {
        NameMap {
            names: Vec::new(),
            entries: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }
}

impl<V> NameMap<V> {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, name: &[u8]) -> Option<&V> {
        let hash = self.hasher.hash_one(name);
        let names = &self.names;
        let found = self.entries.find(hash, |(span, _)| span.of(names) == name);
        found.map(|(_, value)| value)
    }

    pub fn get_mut(&mut self, name: &[u8]) -> Option<&mut V> {
        let hash = self.hasher.hash_one(name);
        let names = &self.names;
        let found = self
            .entries
            .find_mut(hash, |(span, _)| span.of(names) == name);
        found.map(|(_, value)| value)
    }

    pub fn contains(&self, name: &[u8]) -> bool {
        self.get(name).is_some()
    }

    /// The value of `name`, a default one inserted if there was none. `name` is a whole name
    /// (at most 255 octets).
    pub fn get_or_default(&mut self, name: &[u8]) -> &mut V
    where
        V: Default,
    {
        let NameMap {
            names,
            entries,
            hasher,
        } = self;
        let hash = hasher.hash_one(name);
        let entry = entries.entry(
            hash,
            |(span, _)| span.of(names) == name,
            |(span, _)| hasher.hash_one(span.of(names)),
        );
        let entry = entry.or_insert_with(|| {
            let span = NameSpan {
                at: u32::try_from(names.len()).unwrap_or(u32::MAX),
                len: u8::try_from(name.len()).unwrap_or(u8::MAX),
            };
            names.extend_from_slice(name);
            (span, V::default())
        });
        &mut entry.into_mut().1
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &V)> {
        let names = &self.names;
        self.entries
            .iter()
            .map(|(span, value)| (span.of(names), value))
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.entries.iter_mut().map(|(_, value)| value)
    }

    /// Gives back the room kept for names and entries still to come.
    pub fn shrink_to_fit(&mut self) {
        let NameMap {
            names,
            entries,
            hasher,
        } = self;
        names.shrink_to_fit();
        entries.shrink_to_fit(|(span, _)| hasher.hash_one(span.of(names)));
    }
}

impl<V: PartialEq> PartialEq for NameMap<V> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self
                .iter()
                .all(|(name, value)| other.get(name) == Some(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> NameKey {
        NameKey::new(&Name::from_ascii(text).expect("name"))
    }

    #[test]
    fn keys_are_lower_case_wire_form() {
        assert_eq!(
            key("Api.LLM.example.").wire(),
            b"\x03api\x03llm\x07example\x00"
        );
        assert_eq!(key(".").wire(), b"\x00");
    }

    #[test]
    fn parents_strip_one_label_up_to_the_root() {
        let name = key("a.b.");
        assert_eq!(parent(name.wire()), Some(&b"\x01b\x00"[..]));
        assert_eq!(parent(b"\x01b\x00"), Some(&b"\x00"[..]));
        assert_eq!(parent(b"\x00"), None);
        assert_eq!(label_count(name.wire()), 2);
        assert_eq!(label_count(b"\x00"), 0);
    }

    #[test]
    fn within_matches_whole_labels_only() {
        let zone = key("example.");
        assert!(is_within(key("example.").wire(), zone.wire()));
        assert!(is_within(key("a.b.example.").wire(), zone.wire()));
        assert!(!is_within(key("badexample.").wire(), zone.wire()));
        // Ends with the zone's bytes, but not on a label boundary.
        assert!(!is_within(b"\x03a\x07example\x00", zone.wire()));
        assert!(!is_within(key("example.com.").wire(), zone.wire()));
        assert!(is_within(zone.wire(), b"\x00"));
    }

    #[test]
    fn name_maps_find_names_by_their_bytes() {
        let mut map: NameMap<u32> = NameMap::default();
        for i in 0..1000 {
            *map.get_or_default(key(&format!("h{i}.example.")).wire()) += i;
        }
        *map.get_or_default(key("h7.example.").wire()) += 1;
        map.shrink_to_fit();
        assert_eq!(map.len(), 1000);
        assert_eq!(map.get(key("h7.example.").wire()), Some(&8));
        assert_eq!(map.get(key("h999.example.").wire()), Some(&999));
        assert_eq!(map.get(key("h1000.example.").wire()), None);
        assert_eq!(map.get(b"\x00"), None);
        let copy = map.clone();
        assert_eq!(copy, map);
        *map.get_mut(key("h1.example.").wire()).expect("h1") = 0;
        assert_ne!(copy, map);
    }

    #[test]
    fn first_labels() {
        assert_eq!(first_label(key("_explain.api.").wire()), b"_explain");
        assert_eq!(first_label(b"\x00"), b"");
    }
}
