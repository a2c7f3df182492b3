//! What a client's network tells a service's decision, before health: the rule that matches,
//! the nearest allowed regions, and (only counted) the continent. Compiled from the GeoIP
//! databases once per distinct [`Geography`] into a network map ([`Places`]), so the query
//! path finds a client's place with one trie walk, and computed from one location the same way
//! for `explain` and the tests: both go through [`Geography::place`].
//!
//! Nothing here depends on health, so a health change never changes a place or its scope.

use std::{net::IpAddr, sync::Arc};

/// Places and decisions are hashed once per distinct record and part while compiling; their
/// fields come from our own configuration and the databases, not from clients.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;

use crate::{
    config::Matcher,
    geo::{self, Continent, GeoIp, Hit, Leaf, Located, LookupResult, NetworkMap},
};

/// How many of a place's nearest allowed regions it keeps. Past them, the remaining regions
/// follow by their distance from the nearest one (see `Decisive::nearest`).
pub const NEAREST_KEPT: usize = 4;

/// What a service's places depend on: its regions' positions (for the nearest policy) and
/// its rules. Services with equal geographies share one compiled map.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Geography {
    /// The regions' unit vectors as bits, by position; empty when no order is by distance.
    directions: Vec<[u64; 3]>,
    rules: Vec<RuleTest>,
}

/// A rule as a place sees it: what it matches and the regions it allows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RuleTest {
    matcher: MatcherKey,
    /// Positions of the allowed regions; `None`: every region.
    allowed: Option<Vec<u16>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct MatcherKey {
    continents: Vec<Continent>,
    countries: Vec<geo::CountryCode>,
    networks: Vec<ipnet::IpNet>,
    unlocated: bool,
}

/// A client's place: what its network tells the decision, and what is only counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Place {
    /// All the decision reads of the place.
    pub decisive: Decisive,
    /// Only counted (the answer shares): never part of the decision, never narrows a scope.
    pub continent: Option<Continent>,
    /// What the GeoIP lookup found, for `geoip_lookups_total`.
    pub lookup: LookupResult,
}

/// What a place's decision depends on, and all it reads of the place: the rule that matched
/// and the regions nearest first. Places with equal ones decide alike in every state of health,
/// so it is the key their decisions are numbered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decisive {
    /// The first rule that matches, by position.
    pub rule: Option<u16>,
    nearest: [u16; NEAREST_KEPT],
    nearest_len: u8,
}

impl Decisive {
    /// The allowed regions nearest first, at most [`NEAREST_KEPT`]; empty when the order is
    /// the list's (the service does not order by distance, or the client has no coordinates
    /// and more regions are allowed than this holds). The regions after them are ordered by
    /// their distance from the first of them.
    pub fn nearest(&self) -> &[u16] {
        &self.nearest[..usize::from(self.nearest_len)]
    }
}

impl Place {
    /// The place of a client no database knows, where no rule matches.
    pub const UNKNOWN: Place = Place {
        decisive: Decisive {
            rule: None,
            nearest: [0; NEAREST_KEPT],
            nearest_len: 0,
        },
        continent: None,
        lookup: LookupResult::Unknown,
    };
}

impl Geography {
    /// `directions` by region position (only used when `by_distance`), and the rules in
    /// order with the positions of the regions each allows.
    pub fn new<'r>(
        directions: impl Iterator<Item = [f64; 3]>,
        by_distance: bool,
        rules: impl Iterator<Item = (&'r Matcher, Option<Vec<u16>>)>,
    ) -> Geography {
        let directions = match by_distance {
            true => directions.map(|d| d.map(f64::to_bits)).collect(),
            false => Vec::new(),
        };
        let rules = rules
            .map(|(matcher, allowed)| RuleTest {
                matcher: MatcherKey {
                    continents: matcher.continents.clone(),
                    countries: matcher.countries.clone(),
                    networks: matcher.networks.clone(),
                    unlocated: matcher.unlocated,
                },
                allowed,
            })
            .collect();
        Geography { directions, rules }
    }

    /// The networks of the rules: a place is the same all over a network the map keeps.
    fn networks(&self) -> Vec<ipnet::IpNet> {
        let networks = self.rules.iter().flat_map(|r| &r.matcher.networks);
        networks.copied().collect()
    }

    /// The place of a client at `ip`, located as `located` says.
    pub fn place(&self, located: &Located, ip: IpAddr, lookup: LookupResult) -> Place {
        let rule = self
            .rules
            .iter()
            .position(|rule| rule.matcher.matches(located, ip));
        let allowed = rule
            .and_then(|r| self.rules.get(r))
            .and_then(|r| r.allowed.as_deref());
        let candidates: Vec<u16> = match allowed {
            Some(allowed) => allowed.to_vec(),
            None => (0..self.directions.len() as u16).collect(),
        };
        let order: Vec<u16> = match located.direction() {
            _ if self.directions.is_empty() => Vec::new(),
            Some(v) => {
                let mut keyed: Vec<(f64, u16)> = candidates
                    .iter()
                    .map(|&r| (self.closeness(r, v), r))
                    .collect();
                keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                keyed.into_iter().map(|(_, r)| r).collect()
            }
            // Without coordinates the list's order applies: when it holds all the allowed
            // regions, the client decides as a located one whose nearest are the first
            // listed, so the two share a decision (and a scope).
            None if candidates.len() <= NEAREST_KEPT => candidates,
            None => Vec::new(),
        };
        let mut decisive = Decisive {
            rule: rule.map(|r| r as u16),
            nearest: [0; NEAREST_KEPT],
            nearest_len: 0,
        };
        for (slot, region) in decisive.nearest.iter_mut().zip(order) {
            *slot = region;
            decisive.nearest_len += 1;
        }
        Place {
            decisive,
            continent: located.continent(),
            lookup,
        }
    }

    /// Minus the cosine of the angle between region `r` and the point `v`: smaller is nearer.
    fn closeness(&self, r: u16, v: [f64; 3]) -> f64 {
        let d = self
            .directions
            .get(usize::from(r))
            .map_or([0.0; 3], |d| d.map(f64::from_bits));
        -(d[0] * v[0] + d[1] * v[1] + d[2] * v[2])
    }
}

impl MatcherKey {
    /// Each list given must match (as [`crate::config::Matcher`] says); the unlocated rule
    /// matches exactly the clients without a location.
    fn matches(&self, located: &Located, ip: IpAddr) -> bool {
        let location = match located {
            Located::Known(location) => Some(location),
            Located::Unknown { .. } => None,
        };
        if self.unlocated {
            return location.is_none();
        }
        let continent = self.continents.is_empty()
            || location
                .and_then(|l| l.continent)
                .is_some_and(|c| self.continents.contains(&c));
        let country = self.countries.is_empty()
            || location
                .and_then(|l| l.country)
                .is_some_and(|c| self.countries.contains(&c));
        let ip = ip.to_canonical();
        let network = self.networks.is_empty() || self.networks.iter().any(|n| n.contains(&ip));
        continent && country && network
    }
}

/// A geography compiled against the GeoIP databases: every network's place. The default, with
/// no databases, places every client nowhere.
#[derive(Debug, Default)]
pub struct Places {
    map: NetworkMap,
    places: Vec<Place>,
}

impl Places {
    /// The place of `ip` with its position in [`Places::all`], and the scope it holds for.
    pub fn find(&self, ip: IpAddr) -> (Option<u32>, Place, u8) {
        let Hit { leaf, scope } = self.map.lookup(ip);
        match self.places.get(leaf as usize) {
            Some(place) => (Some(leaf), *place, scope),
            // A map compiled without databases has no places: everyone is nowhere.
            None => (None, Place::UNKNOWN, 0),
        }
    }

    /// Every place of the map, by position.
    pub fn all(&self) -> &[Place] {
        &self.places
    }

    /// Places held and bytes of map, for the log.
    pub fn size(&self) -> (usize, usize) {
        (self.places.len(), self.map.size())
    }
}

/// Compiles `geographies` against `geo`, walking the databases once for all of them.
pub fn compile(
    geo: &GeoIp,
    geographies: &[Arc<Geography>],
) -> Result<(Vec<Places>, geo::Compiled), maxminddb::MaxMindDbError> {
    let mut classifiers: Vec<PlaceClassifier> = geographies
        .iter()
        .map(|g| PlaceClassifier::new(g))
        .collect();
    let dyns: Vec<&mut dyn geo::Classifier> = classifiers
        .iter_mut()
        .map(|c| c as &mut dyn geo::Classifier)
        .collect();
    let (maps, compiled) = geo::compile(geo, dyns)?;
    let places = maps
        .into_iter()
        .zip(classifiers)
        .map(|(map, classifier)| Places {
            map,
            places: classifier.places,
        })
        .collect();
    Ok((places, compiled))
}

/// Gives each distinct place a leaf id and each distinct decision its own number.
struct PlaceClassifier<'g> {
    geography: &'g Geography,
    networks: Vec<ipnet::IpNet>,
    places: Vec<Place>,
    leaves: HashMap<Place, u32>,
    decisions: HashMap<Decisive, u32>,
}

impl<'g> PlaceClassifier<'g> {
    fn new(geography: &'g Geography) -> PlaceClassifier<'g> {
        PlaceClassifier {
            geography,
            networks: geography.networks(),
            places: Vec::new(),
            leaves: HashMap::default(),
            decisions: HashMap::default(),
        }
    }
}

impl geo::Classifier for PlaceClassifier<'_> {
    fn boundaries(&self) -> &[ipnet::IpNet] {
        &self.networks
    }

    fn classify(&mut self, located: &Located, lookup: LookupResult, first: IpAddr) -> Leaf {
        let place = self.geography.place(located, first, lookup);
        let next = self.decisions.len() as u32;
        let decision = *self.decisions.entry(place.decisive).or_insert(next);
        let id = match self.leaves.get(&place) {
            Some(&id) => id,
            None => {
                // The map refuses ids from MAX_LEAVES on: places are never merged.
                let id = u32::try_from(self.places.len()).unwrap_or(u32::MAX);
                self.places.push(place);
                self.leaves.insert(place, id);
                id
            }
        };
        Leaf { id, decision }
    }
}
