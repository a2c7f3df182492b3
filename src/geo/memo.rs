//! Lookups and records seen before, remembered per thread.
//!
//! A lookup walks the database's tree (one node per bit of the network) and decodes the record
//! it finds (a City record carries names in many languages that must be walked past). Both
//! repeat: a resolver sends the same client subnets again and again, and a City database holds
//! about half a million records for millions of networks. Each thread keeps, in two small
//! direct-mapped tables, the networks it looked up last with what they gave, and the records
//! it decoded last. A hit costs a hash and a comparison; nothing is shared between threads (no
//! lock, no cache line written by two cores); the tables never grow. Entries are named by the
//! database (or set of databases) they came from, by an id nothing else opened by this process
//! has, so a reloaded file is never answered from an entry of the old one.

use std::{cell::RefCell, net::IpAddr};

use super::{Location, Outcome, Shape};

/// Entries per table and thread (a power of two): about 60 KB of records, 90 KB of networks.
const SLOTS: usize = 1024;
/// Networks are filed under the address's first 24 (IPv4) or 48 (IPv6) bits: the longest
/// prefixes ECS carries by default (RFC 7871 11.1).
const FILED_V4: u32 = 24;
const FILED_V6: u32 = 48;

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

#[derive(Clone, Copy)]
struct NetworkEntry {
    geo: u64,
    v4: bool,
    /// The address's leading `prefix_len` bits: the network the outcome holds for.
    network: u128,
    prefix_len: u8,
    outcome: Outcome,
}

thread_local! {
    static NETWORKS: RefCell<Vec<Option<NetworkEntry>>> = const { RefCell::new(Vec::new()) };
}

/// What the databases `geo` say of `ip` (canonical): remembered for the network the answer
/// holds over, or looked up by `lookup` and remembered.
pub(super) fn outcome(geo: u64, ip: IpAddr, lookup: impl FnOnce() -> Outcome) -> Outcome {
    let (bits, width, filed) = match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32, FILED_V4),
        IpAddr::V6(v6) => (u128::from(v6), 128, FILED_V6),
    };
    let v4 = ip.is_ipv4();
    NETWORKS.with_borrow_mut(|table| {
        if table.is_empty() {
            table.resize(SLOTS, None);
        }
        let slot = &mut table[slot_of(geo, (bits >> (width - filed)) as usize)];
        if let Some(entry) = slot.filter(|e| {
            e.geo == geo && e.v4 == v4 && leading(bits, width, e.prefix_len) == e.network
        }) {
            return entry.outcome;
        }
        let outcome = lookup();
        let prefix_len = outcome.located.prefix_len().min(width as u8);
        *slot = Some(NetworkEntry {
            geo,
            v4,
            network: leading(bits, width, prefix_len),
            prefix_len,
            outcome,
        });
        outcome
    })
}

/// The first `prefix_len` of the `width` bits of `bits`, the rest zero.
fn leading(bits: u128, width: u32, prefix_len: u8) -> u128 {
    match width.checked_sub(u32::from(prefix_len)) {
        Some(rest) if prefix_len > 0 => bits & (u128::MAX << rest),
        _ => 0,
    }
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

    fn unknown(prefix_len: u8) -> Outcome {
        Outcome {
            located: super::super::Located::Unknown { prefix_len },
            undecodable: false,
            shape: None,
        }
    }

    #[test]
    fn a_network_is_looked_up_once_and_holds_only_within_its_prefix() {
        let mut lookups = 0;
        let mut locate = |geo, ip: &str, prefix_len| {
            let ip: IpAddr = ip.parse().expect("ip");
            outcome(geo, ip, || {
                lookups += 1;
                unknown(prefix_len)
            })
            .located
            .prefix_len()
        };
        assert_eq!(locate(1, "192.0.2.1", 26), 26);
        assert_eq!(locate(1, "192.0.2.63", 99), 26, "same /26");
        assert_eq!(locate(1, "192.0.2.64", 27), 27, "same /24, another /26");
        assert_eq!(locate(2, "192.0.2.64", 20), 20, "another database");
        assert_eq!(locate(1, "2001:db8::1", 32), 32);
        assert_eq!(locate(1, "2001:db8::2", 99), 32);
        assert_eq!(lookups, 4);
    }

    #[test]
    fn leading_bits() {
        assert_eq!(leading(0xC000_0201, 32, 24), 0xC000_0200);
        assert_eq!(leading(0xC000_0201, 32, 0), 0);
        assert_eq!(leading(0xC000_0201, 32, 32), 0xC000_0201);
        assert_eq!(leading(u128::MAX, 128, 128), u128::MAX);
        assert_eq!(leading(u128::MAX, 128, 1), 1 << 127);
    }

    #[test]
    fn slots_spread_neighbouring_offsets() {
        let used: std::collections::HashSet<usize> =
            (0..SLOTS).map(|i| slot_of(1, 1000 + i * 8)).collect();
        assert!(used.len() > SLOTS / 2, "{} of {SLOTS} slots", used.len());
    }
}
