//! Records decoded before, remembered per thread.
//!
//! Decoding is most of a lookup's cost (a City record carries names in many languages that
//! must be walked past), and records repeat: a City database holds about half a million of
//! them for millions of networks, and a server's clients come from far fewer places. Each
//! thread keeps the records it decoded last in a small direct-mapped table: a hit costs a
//! multiply and a comparison; nothing is shared between threads (no lock, no cache line written
//! by two cores); the table never grows. An entry is named by its database (an id no other
//! database opened by this process has) and the record's offset, so a reloaded file is never
//! answered from an entry of the old one.

use std::cell::RefCell;

use super::{Location, Shape};

/// Entries per thread (a power of two): about 60 KB.
const SLOTS: usize = 1024;

/// A record as regiondns reads it: nothing usable, or a location; and the shape it came in.
#[derive(Debug, Clone, Copy)]
pub(super) struct Decoded {
    pub location: Option<Location>,
    pub shape: Option<Shape>,
}

#[derive(Clone, Copy)]
struct Entry {
    database: u64,
    offset: usize,
    decoded: Decoded,
}

thread_local! {
    static TABLE: RefCell<Vec<Option<Entry>>> = const { RefCell::new(Vec::new()) };
}

/// The record at `offset` of `database`: remembered, or decoded by `decode` and remembered
/// unless it fails.
pub(super) fn decoded<E>(
    database: u64,
    offset: usize,
    decode: impl FnOnce() -> Result<Decoded, E>,
) -> Result<Decoded, E> {
    TABLE.with_borrow_mut(|table| {
        if table.is_empty() {
            table.resize(SLOTS, None);
        }
        let slot = &mut table[slot_of(database, offset)];
        if let Some(entry) = slot.filter(|e| e.database == database && e.offset == offset) {
            return Ok(entry.decoded);
        }
        let decoded = decode()?;
        *slot = Some(Entry {
            database,
            offset,
            decoded,
        });
        Ok(decoded)
    })
}

/// MurmurHash3's 64-bit finaliser: offsets cluster and share low bits (records are aligned
/// alike), and every bit of its result depends on all of theirs.
fn slot_of(database: u64, offset: usize) -> usize {
    let mut key = (offset as u64) ^ database.rotate_left(32);
    key ^= key >> 33;
    key = key.wrapping_mul(0xff51_afd7_ed55_8ccd);
    key ^= key >> 33;
    key = key.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    key ^= key >> 33;
    (key as usize) & (SLOTS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(lat: f64) -> Decoded {
        let coordinates = super::super::Coordinates { lat, lon: 0.0 };
        Decoded {
            location: Some(Location::new(Some(coordinates), None, None, 24)),
            shape: Some(Shape::Flat),
        }
    }

    fn latitude(decoded: Decoded) -> Option<f64> {
        decoded.location?.coordinates.map(|c| c.lat)
    }

    #[test]
    fn a_record_is_decoded_once_per_database_and_offset() {
        let mut calls = 0;
        let mut lookup = |database, offset, lat| {
            decoded::<()>(database, offset, || {
                calls += 1;
                Ok(at(lat))
            })
            .map(latitude)
        };
        assert_eq!(lookup(1, 100, 10.0), Ok(Some(10.0)));
        assert_eq!(lookup(1, 100, 99.0), Ok(Some(10.0)), "remembered");
        assert_eq!(lookup(2, 100, 20.0), Ok(Some(20.0)), "another database");
        assert_eq!(lookup(1, 101, 30.0), Ok(Some(30.0)), "another record");
        assert_eq!(calls, 3);
    }

    #[test]
    fn failures_are_not_remembered() {
        assert_eq!(decoded(7, 5, || Err("broken")).map(latitude), Err("broken"));
        assert_eq!(
            decoded::<()>(7, 5, || Ok(at(1.0))).map(latitude),
            Ok(Some(1.0))
        );
    }

    #[test]
    fn slots_spread_neighbouring_offsets() {
        let used: std::collections::HashSet<usize> =
            (0..SLOTS).map(|i| slot_of(1, 1000 + i * 8)).collect();
        assert!(used.len() > SLOTS / 2, "{} of {SLOTS} slots", used.len());
    }
}
