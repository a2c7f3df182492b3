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

use super::evidence::Evidence;
use crate::{
    config::Matcher,
    geo::{self, Continent, GeoIp, Hit, Leaf, Located, LookupResult, NetworkMap},
    latency::estimate::{self, Basis, Candidate, Settings, Tally},
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
    /// For `policy: latency`: orders by measured round trips (distance where unmeasured).
    latency: Option<LatencyRanking>,
}

/// What a latency order depends on, besides the table: the settings and the regions' names
/// (as the table names them).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LatencyRanking {
    /// `explore` and `better_by` as bits, then `min_samples`.
    settings: [u64; 3],
    regions: Vec<String>,
}

impl LatencyRanking {
    fn settings(&self) -> Settings {
        Settings {
            explore: f64::from_bits(self.settings[0]),
            better_by: f64::from_bits(self.settings[1]),
            min_samples: self.settings[2] as u32,
        }
    }
}

/// A latency table's evidence as one geography reads it: its regions by the table's positions.
pub struct LatencyInput<'e> {
    evidence: &'e Evidence,
    /// By region position: the table's position of the region, if it measured it.
    regions: Vec<Option<usize>>,
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
    /// For `policy: latency`: what the order rests on (only counted).
    pub basis: Option<Basis>,
    /// For `policy: latency`: measurements put another region before the nearest (only
    /// counted).
    pub moved_by_latency: bool,
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
    /// For `policy: latency`: the region this place's explored subnets go to.
    pub explore: Option<u16>,
}

impl Decisive {
    fn new(rule: Option<usize>, order: &[u16], explore: Option<u16>) -> Decisive {
        let mut decisive = Decisive {
            rule: rule.map(|r| r as u16),
            nearest: [0; NEAREST_KEPT],
            nearest_len: 0,
            explore,
        };
        for (slot, &region) in decisive.nearest.iter_mut().zip(order) {
            *slot = region;
            decisive.nearest_len += 1;
        }
        decisive
    }

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
            explore: None,
        },
        continent: None,
        basis: None,
        moved_by_latency: false,
        lookup: LookupResult::Unknown,
    };
}

impl Geography {
    /// `directions` by region position (only used when `by_distance`), and the rules in
    /// order with the positions of the regions each allows.
    /// `latency`: the settings and the regions' names, for `policy: latency`.
    pub fn new<'r>(
        directions: impl Iterator<Item = [f64; 3]>,
        by_distance: bool,
        rules: impl Iterator<Item = (&'r Matcher, Option<Vec<u16>>)>,
        latency: Option<(Settings, Vec<String>)>,
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
        let latency = latency.map(|(settings, regions)| LatencyRanking {
            settings: [
                settings.explore.to_bits(),
                settings.better_by.to_bits(),
                u64::from(settings.min_samples),
            ],
            regions,
        });
        Geography {
            directions,
            rules,
            latency,
        }
    }

    /// Whether its places follow a latency table.
    pub fn follows_latency(&self) -> bool {
        self.latency.is_some()
    }

    /// `evidence` as this geography reads it; `None` unless it follows latency.
    pub fn latency_input<'e>(&self, evidence: &'e Evidence) -> Option<LatencyInput<'e>> {
        let latency = self.latency.as_ref()?;
        let table = &evidence.table.regions;
        let regions = latency
            .regions
            .iter()
            .map(|name| table.iter().position(|t| t == name))
            .collect();
        Some(LatencyInput { evidence, regions })
    }

    /// The networks of the rules: a place is the same all over a network the map keeps.
    fn networks(&self) -> Vec<ipnet::IpNet> {
        let networks = self.rules.iter().flat_map(|r| &r.matcher.networks);
        networks.copied().collect()
    }

    /// The place of a client at `ip`, located as `located` says; a latency geography reads
    /// `measured` (without it, nothing is measured).
    pub fn place(
        &self,
        located: &Located,
        ip: IpAddr,
        lookup: LookupResult,
        measured: Option<&LatencyInput<'_>>,
    ) -> Place {
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
        if let Some(latency) = &self.latency {
            return self.latency_place(latency, located, ip, lookup, rule, &candidates, measured);
        }
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
        Place {
            decisive: Decisive::new(rule, &order, None),
            continent: located.continent(),
            basis: None,
            moved_by_latency: false,
            lookup,
        }
    }

    /// A latency geography's place: the candidates nearest first, with what was measured of
    /// each, ranked ([`estimate::rank`]).
    #[allow(clippy::too_many_arguments)]
    fn latency_place(
        &self,
        latency: &LatencyRanking,
        located: &Located,
        ip: IpAddr,
        lookup: LookupResult,
        rule: Option<usize>,
        candidates: &[u16],
        measured: Option<&LatencyInput<'_>>,
    ) -> Place {
        let candidates = self.measured_candidates(located, ip, candidates, measured);
        let ranked = estimate::rank(&candidates, &latency.settings());
        Place {
            decisive: Decisive::new(rule, &ranked.order, ranked.explore),
            continent: located.continent(),
            basis: Some(ranked.basis),
            moved_by_latency: ranked.moved,
            lookup,
        }
    }

    /// `candidates` nearest first, each with what `measured` says of it for the client.
    fn measured_candidates(
        &self,
        located: &Located,
        ip: IpAddr,
        candidates: &[u16],
        measured: Option<&LatencyInput<'_>>,
    ) -> Vec<Candidate> {
        let in_table =
            |region: u16| measured.and_then(|m| Some((m, (*m.regions.get(usize::from(region))?)?)));
        let tallies = |region: u16| {
            in_table(region).map_or([Tally::default(); 4], |(m, at)| {
                m.evidence.tallies(ip, located, at)
            })
        };
        let mut candidates: Vec<Candidate> = candidates
            .iter()
            .map(|&region| Candidate {
                region,
                distance_km: located
                    .direction()
                    .map_or(0.0, |v| angle_km(-self.closeness(region, v))),
                tallies: tallies(region),
                paired: [Tally::default(); 4],
            })
            .collect();
        candidates.sort_by(|a, b| {
            a.distance_km
                .total_cmp(&b.distance_km)
                .then(a.region.cmp(&b.region))
        });
        let nearest = candidates.first().and_then(|n| in_table(n.region));
        for candidate in candidates.iter_mut().skip(1) {
            if let (Some((m, nearest)), Some((_, at))) = (nearest, in_table(candidate.region)) {
                candidate.paired = m.evidence.gaps(ip, located, at as u16, nearest as u16);
            }
        }
        candidates
    }

    /// For `explain`: a latency geography's candidates for the client, nearest first, and
    /// their ranking; `None` for other geographies.
    pub fn latency_ranking(
        &self,
        located: &Located,
        ip: IpAddr,
        measured: Option<&LatencyInput<'_>>,
    ) -> Option<(Vec<Candidate>, estimate::Ranked)> {
        let latency = self.latency.as_ref()?;
        let rule = self
            .rules
            .iter()
            .position(|r| r.matcher.matches(located, ip));
        let allowed = rule.and_then(|r| self.rules.get(r)?.allowed.clone());
        let everyone = || (0..self.directions.len() as u16).collect();
        let candidates =
            self.measured_candidates(located, ip, &allowed.unwrap_or_else(everyone), measured);
        let ranked = estimate::rank(&candidates, &latency.settings());
        Some((candidates, ranked))
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

/// The great-circle distance of an angle given by its cosine.
fn angle_km(cosine: f64) -> f64 {
    const EARTH_RADIUS_KM: f64 = 6371.0;
    EARTH_RADIUS_KM * cosine.clamp(-1.0, 1.0).acos()
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
    /// The latency table it was compiled with, for a latency geography.
    evidence: Option<Arc<Evidence>>,
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

    /// The address the map classifies `ip` by (an IPv6 address the databases store in their
    /// IPv4 tree is its IPv4 address there).
    pub fn mapped_address(&self, ip: IpAddr) -> IpAddr {
        self.map.mapped_address(ip)
    }

    /// Seeds the draw of explored subnets: the table's, so that each table explores others.
    pub fn explore_seed(&self) -> u64 {
        self.evidence.as_ref().map_or(0, |e| e.seed)
    }

    /// The latency table's evidence as `geography` reads it, for a place found afresh.
    pub fn measured<'p>(&'p self, geography: &Geography) -> Option<LatencyInput<'p>> {
        geography.latency_input(self.evidence.as_deref()?)
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
/// A latency geography's networks are split at the table's, so that each is measured alike.
pub fn compile(
    geo: &GeoIp,
    geographies: &[Arc<Geography>],
    evidence: Option<&Arc<Evidence>>,
) -> Result<(Vec<Places>, geo::Compiled), maxminddb::MaxMindDbError> {
    let mut classifiers: Vec<PlaceClassifier> = geographies
        .iter()
        .map(|g| PlaceClassifier::new(g, evidence.map(|e| &**e)))
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
            evidence: classifier.measured.and(evidence).cloned(),
        })
        .collect();
    Ok((places, compiled))
}

/// Gives each distinct place a leaf id and each distinct decision its own number.
struct PlaceClassifier<'g> {
    geography: &'g Geography,
    measured: Option<LatencyInput<'g>>,
    networks: Vec<ipnet::IpNet>,
    places: Vec<Place>,
    leaves: HashMap<Place, u32>,
    decisions: HashMap<Decisive, u32>,
}

impl<'g> PlaceClassifier<'g> {
    fn new(geography: &'g Geography, evidence: Option<&'g Evidence>) -> PlaceClassifier<'g> {
        let measured = evidence.and_then(|e| geography.latency_input(e));
        let mut networks = geography.networks();
        if let Some(measured) = &measured {
            networks.extend(measured.evidence.table.networks().map(|(net, _)| net));
        }
        PlaceClassifier {
            geography,
            measured,
            networks,
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
        let place = self
            .geography
            .place(located, first, lookup, self.measured.as_ref());
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
