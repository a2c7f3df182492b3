//! Domain names as the query path compares them: lower case, uncompressed wire form, hashed and
//! compared as bytes. A question's name is already in this form when it is parsed, so looking
//! it up builds nothing; names from the configuration are converted once, when it is loaded.

use std::borrow::Borrow;

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
    fn first_labels() {
        assert_eq!(first_label(key("_explain.api.").wire()), b"_explain");
        assert_eq!(first_label(b"\x00"), b"");
    }
}
