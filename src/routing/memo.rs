//! Decisions made before, remembered per thread, for services whose decision depends on the
//! client's place alone.
//!
//! Within one routing snapshot, a service without a subnet hash (weighted order, canary,
//! shedding a degraded region) and without network rules decides the same for every client of
//! a place: the same coordinates, country, continent and GeoIP network length. Resolvers send
//! the same places again and again, so the query path asks [`decided`] before deciding: a
//! hit costs a hash and a comparison, where a decision walks rules, health and the policy's
//! order. Each thread keeps a small direct-mapped table (nothing shared, no lock, bounded).
//! Entries are named by the snapshot's service id, which no other snapshot has, so a new
//! health state is never answered from an entry of the old one.

use std::cell::RefCell;

use super::{
    Picks,
    policy::{Client, Decision},
};
use crate::geo::{Continent, CountryCode, Located};

/// Places remembered per thread (a power of two): about 48 KB.
const SLOTS: usize = 1024;

/// What a place-only decision depends on in a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Place {
    coordinates: Option<[u64; 2]>,
    country: Option<CountryCode>,
    continent: Option<Continent>,
    prefix_len: u8,
}

impl Place {
    fn of(located: &Located) -> Place {
        match located {
            Located::Known(location) => Place {
                coordinates: location
                    .coordinates
                    .map(|c| [c.lat.to_bits(), c.lon.to_bits()]),
                country: location.country,
                continent: location.continent,
                prefix_len: location.prefix_len,
            },
            Located::Unknown { prefix_len } => Place {
                coordinates: None,
                country: None,
                continent: None,
                prefix_len: *prefix_len,
            },
        }
    }
}

/// A decision to answer with regions; the only kind remembered (the others are rare).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remembered {
    pub picks: Picks,
    pub fail_open: bool,
    pub scope: u8,
}

impl Remembered {
    /// The decision, when it is one to remember; else itself back.
    pub fn of(decision: Decision<'_>) -> Result<Remembered, Decision<'_>> {
        match decision {
            Decision::Regions {
                picks,
                fail_open,
                scope,
            } => Ok(Remembered {
                picks,
                fail_open,
                scope,
            }),
            other => Err(other),
        }
    }

    pub fn decision<'t>(self) -> Decision<'t> {
        Decision::Regions {
            picks: self.picks,
            fail_open: self.fail_open,
            scope: self.scope,
        }
    }
}

#[derive(Clone, Copy)]
struct Entry {
    service: u64,
    place: Place,
    decision: Remembered,
}

thread_local! {
    static TABLE: RefCell<Vec<Option<Entry>>> = const { RefCell::new(Vec::new()) };
}

/// The decision of the service snapshot `service` for `client`: remembered, or made by
/// `decide` and remembered unless it is another kind (`Err`).
pub fn decided<E>(
    service: u64,
    client: &Client,
    decide: impl FnOnce() -> Result<Remembered, E>,
) -> Result<Remembered, E> {
    let place = Place::of(&client.location);
    TABLE.with_borrow_mut(|table| {
        if table.is_empty() {
            table.resize(SLOTS, None);
        }
        let slot = &mut table[slot_of(service, &place)];
        if let Some(entry) = slot.filter(|e| e.service == service && e.place == place) {
            return Ok(entry.decision);
        }
        let decision = decide()?;
        *slot = Some(Entry {
            service,
            place,
            decision,
        });
        Ok(decision)
    })
}

fn slot_of(service: u64, place: &Place) -> usize {
    // Places without coordinates are few: they may share slots.
    let [lat, lon] = place.coordinates.unwrap_or_default();
    let words = [lat, lon, u64::from(place.prefix_len)];
    let hash = words.iter().fold(service, |h, &w| {
        (h ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(23)
    });
    (hash as usize) & (SLOTS - 1)
}
