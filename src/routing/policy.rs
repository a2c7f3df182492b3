//! Which regions answer one client: rules (sovereignty and preferences), health, the policy's
//! order (nearest, priority, weighted), canary and shed, and the ECS scope the decision holds for.
//!
//! [`decide`] is a pure function of a service's routes and the client. It reports each step to
//! an [`Explain`] observer: the query path passes `()`, whose methods do nothing and compile
//! away; `regiondns explain` and `_explain` TXT queries pass a collector, so both show exactly
//! what the server does.

use std::net::IpAddr;

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::{RegionRoute, RulePlan, ServiceRoutes};
use crate::{
    config::{FailClosed, Matcher, Policy, WhenAllDown},
    geo::Located,
    region::State,
};

pub use crate::config::MAX_ANSWERS;
use crate::config::MAX_SERVICE_REGIONS as MAX_REGIONS;

// A service's regions are kept in a `u32` bit set.
const _: () = assert!(MAX_REGIONS <= Set::BITS as usize);

/// The client as routing sees it.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    /// The ECS address, else the source address.
    pub ip: IpAddr,
    pub location: Located,
}

/// The outcome for one client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision<'t> {
    /// Answer with these regions (indexes into the service's list), best first.
    Regions {
        picks: Picks,
        fail_open: bool,
        scope: u8,
    },
    /// A rule allows no region that can serve: fail closed, saying why.
    FailClosed {
        how: FailClosed,
        reason: &'t str,
        scope: u8,
    },
    /// Every region is down and the service says `when_all_down: servfail`.
    ServFail { scope: u8 },
}

/// Up to [`MAX_ANSWERS`] region indexes, without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Picks {
    regions: [u8; MAX_ANSWERS],
    len: u8,
}

impl Picks {
    fn push(&mut self, region: usize) {
        if usize::from(self.len) < MAX_ANSWERS {
            self.regions[usize::from(self.len)] = region as u8;
            self.len += 1;
        }
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.regions[..self.len()].iter().map(|&r| usize::from(r))
    }
}

/// What `decide` tells an observer, step by step.
pub trait Explain {
    /// Whether anything is reported at all: the query path's `()` is not, so what only a
    /// report needs (a haversine per region) is never computed for it.
    const LISTENS: bool = true;
    fn rule(&mut self, _matched: Option<(usize, &RulePlan)>) {}
    fn candidate(
        &mut self,
        _region: &RegionRoute,
        _state: State,
        _distance: Option<f64>,
        _verdict: &str,
    ) {
    }
    fn step(&mut self, _text: &dyn Fn() -> String) {}
}

/// The query path's observer: every method does nothing.
impl Explain for () {
    const LISTENS: bool = false;
}

/// A set of region indexes.
type Set = u32;

fn has(set: Set, region: usize) -> bool {
    set & (1 << region) != 0
}

pub fn decide<'t, E: Explain>(
    service: &'t ServiceRoutes,
    client: &Client,
    explain: &mut E,
) -> Decision<'t> {
    let plan = &service.plan;
    let count = plan.regions.len().min(MAX_REGIONS);
    let all: Set = if count == MAX_REGIONS {
        Set::MAX
    } else {
        (1 << count) - 1
    };
    let mut scope = Scope::new(client.ip);

    let rule = plan
        .rules
        .iter()
        .enumerate()
        .find(|(_, rule)| matches(&rule.matcher, client, &mut scope));
    explain.rule(rule);
    let rule = rule.map(|(_, r)| r);
    let allowed = rule
        .and_then(|r| r.allow.as_ref())
        .map_or(all, |a| a.regions);

    let in_state = |wanted: State| -> Set {
        (0..count)
            .filter(|&i| service.states[i] == wanted)
            .fold(0, |set, i| set | 1 << i)
    };
    let usable = allowed & (in_state(State::Up) | in_state(State::Degraded));
    let (candidates, fail_open) = if usable != 0 {
        (usable, false)
    } else if let Some(allow) = rule.and_then(|r| r.allow.as_ref()) {
        report(explain, service, allowed, client, "");
        return Decision::FailClosed {
            how: rule.map_or(FailClosed::Refuse, |r| r.when_none),
            reason: &allow.reason,
            scope: scope.prefix,
        };
    } else if plan.when_all_down == WhenAllDown::ServFail {
        report(explain, service, allowed, client, "");
        return Decision::ServFail {
            scope: scope.prefix,
        };
    } else {
        let down = allowed & in_state(State::Down);
        (if down != 0 { down } else { allowed }, true)
    };
    report(
        explain,
        service,
        allowed,
        client,
        if fail_open {
            "fail open: every region is down"
        } else {
            ""
        },
    );

    let mut order = Order::default();
    for &preferred in rule.map_or(&[][..], |r| &r.prefer) {
        if has(candidates, preferred) && !order.contains(preferred) {
            order.push(preferred);
        }
    }
    let rest = (0..count).filter(|&i| has(candidates, i) && !order.contains(i));
    let mut rest_order = Order::default();
    rest.for_each(|i| rest_order.push(i));
    match plan.policy {
        Policy::Priority => {}
        Policy::Nearest => {
            if let Some(v) = client.location.direction() {
                // Nearest first: the largest cosine of the central angle.
                rest_order.sort_by_key(|i| {
                    let d = plan.regions[i].direction;
                    -(d[0] * v[0] + d[1] * v[1] + d[2] * v[2])
                });
            }
            if rest_order.len > 1 {
                scope.located(&client.location);
            }
        }
        Policy::Weighted => {
            let subnet = subnet_key(client.ip);
            rest_order.sort_by_key(|i| rendezvous(subnet, i, plan.weights[i]));
            if rest_order.len > 1 {
                scope.hashed();
            }
        }
    }
    rest_order.iter().for_each(|i| order.push(i));
    explain.step(&|| format!("policy {:?}: order {}", plan.policy, order.names(service)));

    if let Some(canary) = plan
        .canary
        .filter(|c| has(candidates, c.region) && service.states[c.region] == State::Up)
    {
        scope.hashed();
        let drawn = fraction(subnet_key(client.ip), CANARY_SEED);
        if !fail_open && drawn < canary.share {
            order.move_to_front(canary.region);
            explain.step(&|| {
                format!(
                    "canary {}: this subnet is in its {:.1}% share",
                    plan.regions[canary.region].key.region,
                    canary.share * 100.0
                )
            });
        } else {
            explain.step(&|| {
                format!(
                    "canary {}: this subnet is outside its {:.1}% share",
                    plan.regions[canary.region].key.region,
                    canary.share * 100.0
                )
            });
        }
    }

    let mut picks = Picks::default();
    let mut shed = Order::default();
    for region in order.iter() {
        if picks.len() == plan.answers {
            break;
        }
        if !fail_open && service.states[region] == State::Degraded && plan.shed > 0.0 {
            if plan.shed < 1.0 {
                scope.hashed();
            }
            if fraction(subnet_key(client.ip), region as u64 + 1) < plan.shed {
                explain.step(&|| {
                    format!(
                        "{} is degraded: this subnet is in the {:.0}% it sheds",
                        plan.regions[region].key.region,
                        plan.shed * 100.0
                    )
                });
                shed.push(region);
                continue;
            }
            explain.step(&|| {
                format!(
                    "{} is degraded: this subnet is in the {:.0}% it keeps",
                    plan.regions[region].key.region,
                    (1.0 - plan.shed) * 100.0
                )
            });
        }
        picks.push(region);
    }
    // Shed clients stay where they are when no other region can take them.
    for region in shed.iter() {
        if picks.len() < plan.answers {
            picks.push(region);
        }
    }
    Decision::Regions {
        picks,
        fail_open,
        scope: scope.prefix,
    }
}

/// Tells the observer every region's state, distance and verdict.
fn report<E: Explain>(
    explain: &mut E,
    service: &ServiceRoutes,
    allowed: Set,
    client: &Client,
    note: &str,
) {
    if !E::LISTENS {
        return;
    }
    let at = client.location.coordinates();
    for (i, region) in service.plan.regions.iter().enumerate().take(MAX_REGIONS) {
        let state = service.states[i];
        let verdict = match (has(allowed, i), state) {
            (false, _) => "not allowed by the rule",
            (true, State::Up) => "eligible",
            (true, State::Degraded) => "eligible (degraded: used after up regions)",
            (true, State::Down) if !note.is_empty() => note,
            (true, State::Down) => "not eligible: down",
            (true, State::Drained) => "not eligible: drained",
        };
        explain.candidate(
            region,
            state,
            at.map(|c| c.distance_km(region.location)),
            verdict,
        );
    }
}

/// Whether a rule applies to the client; records what the answer then depends on.
fn matches(matcher: &Matcher, client: &Client, scope: &mut Scope) -> bool {
    let location = match client.location {
        Located::Known(location) => Some(location),
        Located::Unknown { .. } => None,
    };
    if !matcher.continents.is_empty() || !matcher.countries.is_empty() {
        scope.located(&client.location);
    }
    for network in &matcher.networks {
        scope.network(network);
    }
    let continent = matcher.continents.is_empty()
        || location
            .and_then(|l| l.continent)
            .is_some_and(|c| matcher.continents.contains(&c));
    let country = matcher.countries.is_empty()
        || location
            .and_then(|l| l.country)
            .is_some_and(|c| matcher.countries.contains(&c));
    let network =
        matcher.networks.is_empty() || matcher.networks.iter().any(|n| n.contains(&client.ip));
    continent && country && network
}

/// The ECS scope: the longest prefix any input of the decision depended on.
struct Scope {
    prefix: u8,
    ipv4: bool,
}

impl Scope {
    fn new(ip: IpAddr) -> Scope {
        Scope {
            prefix: 0,
            ipv4: ip.is_ipv4(),
        }
    }

    fn at_least(&mut self, prefix: u8) {
        self.prefix = self.prefix.max(prefix);
    }

    /// The decision used the GeoIP answer, which holds for its network.
    fn located(&mut self, location: &Located) {
        self.at_least(location.prefix_len());
    }

    /// The decision used the subnet hash: it holds for the /24 (IPv4) or /56 (IPv6).
    fn hashed(&mut self) {
        self.at_least(if self.ipv4 { 24 } else { 56 });
    }

    /// A network rule was tested: a block as long as the network's prefix is wholly inside or
    /// wholly outside it, so the outcome holds for that block.
    fn network(&mut self, network: &ipnet::IpNet) {
        if network.network().is_ipv4() == self.ipv4 {
            self.at_least(network.prefix_len());
        }
    }
}

const CANARY_SEED: u64 = 0x6361_6e61_7279; // "canary"

/// The client's /24 (IPv4) or /56 (IPv6): one resolver's clients share one choice.
fn subnet_key(ip: IpAddr) -> [u8; 8] {
    let mut key = [0u8; 8];
    match ip {
        IpAddr::V4(v4) => {
            key[0] = 4;
            key[1..4].copy_from_slice(&v4.octets()[..3]);
        }
        IpAddr::V6(v6) => {
            key[0] = 6;
            key[1..8].copy_from_slice(&v6.octets()[..7]);
        }
    }
    key
}

/// A stable number in [0, 1) for a subnet and a seed.
fn fraction(subnet: [u8; 8], seed: u64) -> f64 {
    (xxh3_64_with_seed(&subnet, seed) >> 11) as f64 / (1u64 << 53) as f64
}

/// Weighted rendezvous hashing: the lowest score wins, with probability proportional to the
/// weight; a region's loss moves only its own subnets. Weight 0 sorts last.
fn rendezvous(subnet: [u8; 8], region: usize, weight: u32) -> f64 {
    if weight == 0 {
        return f64::INFINITY;
    }
    let uniform = fraction(subnet, region as u64 + 1_000) + f64::EPSILON;
    -uniform.ln() / f64::from(weight)
}

/// Region indexes in order, without allocating.
#[derive(Default)]
struct Order {
    regions: [u8; MAX_REGIONS],
    len: usize,
}

impl Order {
    fn push(&mut self, region: usize) {
        if self.len < MAX_REGIONS {
            self.regions[self.len] = region as u8;
            self.len += 1;
        }
    }

    fn contains(&self, region: usize) -> bool {
        self.iter().any(|r| r == region)
    }

    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.regions[..self.len].iter().map(|&r| usize::from(r))
    }

    /// Stable sort by `key`, computed once per region.
    fn sort_by_key(&mut self, key: impl Fn(usize) -> f64) {
        let mut keys = [0.0; MAX_REGIONS];
        for (k, &r) in keys.iter_mut().zip(&self.regions[..self.len]) {
            *k = key(usize::from(r));
        }
        let mut pairs = [(0.0, 0u8); MAX_REGIONS];
        for (i, pair) in pairs[..self.len].iter_mut().enumerate() {
            *pair = (keys[i], self.regions[i]);
        }
        pairs[..self.len].sort_by(|a, b| a.0.total_cmp(&b.0));
        for (slot, pair) in self.regions[..self.len].iter_mut().zip(&pairs) {
            *slot = pair.1;
        }
    }

    fn move_to_front(&mut self, region: usize) {
        if let Some(at) = self.regions[..self.len]
            .iter()
            .position(|&r| usize::from(r) == region)
        {
            self.regions[..=at].rotate_right(1);
        }
    }

    fn names(&self, service: &ServiceRoutes) -> String {
        let names: Vec<&str> = self
            .iter()
            .map(|i| service.plan.regions[i].key.region.as_str())
            .collect();
        names.join(", ")
    }
}
