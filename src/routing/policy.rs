//! Which regions answer one client: rules (sovereignty and preferences), health, the policy's
//! order (nearest, priority, weighted), canary, shed and load (a region over its service's load
//! target keeps only its share of subnets), and the ECS scope the decision holds for.
//!
//! The client comes with its [`Place`] (the matching rule and nearest regions, from the
//! compiled network map or from one location) and the scope over which that place holds;
//! the decision narrows the scope only to the client's /24 or /56 when a subnet hash took part.
//!
//! [`decide`] is a pure function of a service's routes and the client. It reports each step to
//! an [`Explain`] observer: the query path passes `()`, whose methods do nothing and compile
//! away; `regiondns explain` and `_explain` TXT queries pass a collector, so both show exactly
//! what the server does.

use std::net::IpAddr;

use xxhash_rust::xxh3::xxh3_64_with_seed;

use arrayvec::ArrayVec;

use super::{
    RegionLoad, RegionRoute, RulePlan, ServiceRoutes, load_control::Admission, place::Place,
    set::RegionSet,
};
use crate::{
    config::{FailClosed, Policy, WhenAllDown},
    geo::Coordinates,
    region::State,
};

pub use crate::config::MAX_ANSWERS;
use crate::config::MAX_SERVICE_REGIONS as MAX_REGIONS;

// Region positions are kept in `u16`s.
const _: () = assert!(MAX_REGIONS <= u16::MAX as usize);

/// The client as routing sees it.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    /// The ECS address, else the source address.
    pub ip: IpAddr,
    pub place: Place,
    /// The place's position among the service's compiled places, when it was found there.
    pub leaf: Option<u32>,
    /// How many leading bits of `ip` share its place: the scope of a decision by place.
    pub scope: u8,
    /// Where the client is, when it was located one address at a time (for `explain`'s
    /// distances); the compiled map keeps no coordinates.
    pub coordinates: Option<Coordinates>,
}

impl Client {
    /// A client whose place is not looked up: the service answers everyone alike.
    pub fn unlocated(ip: IpAddr) -> Client {
        Client {
            ip,
            place: Place::UNKNOWN,
            leaf: None,
            scope: 0,
            coordinates: None,
        }
    }
}

/// The outcome for one client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision<'t> {
    /// Answer with these regions (indexes into the service's list), best first.
    Regions {
        picks: Picks,
        fail_open: bool,
        scope: u8,
        /// When the client's subnet was weighed for a region's load: that region, and whether
        /// the subnet moved or had to stay.
        weighed: Option<Weighed>,
        /// Its subnet was sent to a region to measure it (`policy: latency`).
        explored: bool,
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

/// A subnet weighed for the load of the region at `region` (its position): moved to another
/// (`moved_to`), or stuck there (no region it may go to admitted it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weighed {
    pub region: u16,
    pub moved_to: Option<u16>,
}

/// Up to [`MAX_ANSWERS`] region indexes, without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Picks {
    regions: [u16; MAX_ANSWERS],
    len: u8,
}

impl Picks {
    fn push(&mut self, region: usize) {
        if usize::from(self.len) < MAX_ANSWERS {
            self.regions[usize::from(self.len)] = region as u16;
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
        self.positions().iter().map(|&r| usize::from(r))
    }

    /// The regions' positions in the service, in order.
    pub fn positions(&self) -> &[u16] {
        &self.regions[..self.len()]
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

pub fn decide<'t, E: Explain>(
    service: &'t ServiceRoutes,
    client: &Client,
    explain: &mut E,
) -> Decision<'t> {
    decide_drawing(service, client, explain, Draws::Subnet).0
}

/// Where load weighing's two draws come from: the client's subnet hash, or fixed values (to
/// decide in advance for every subnet of a place).
#[derive(Debug, Clone, Copy)]
pub(super) enum Draws {
    Subnet,
    Fixed {
        keep: f64,
        spread: f64,
        explore: bool,
    },
}

/// The largest draw below 1: moved, whatever share is kept below all.
pub(super) const MOVED: f64 = 1.0 - f64::EPSILON / 2.0;

/// What a decision hashed the client's subnet for.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Hashed {
    /// Weighted order, canary or shed.
    pub other: bool,
    /// Load weighing, and how it drew.
    pub load: Option<LoadPoint>,
    /// Exploration: its share and seed (`policy: latency`).
    pub explore: Option<(f64, u64)>,
}

/// Where load weighing decided, for one place: the region weighed, the seed of its keep draw
/// and the share it keeps, below which spread draw a moved subnet goes to the first of its
/// destinations, and below which to the second (at or above it, it stays).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct LoadPoint {
    pub seed: u64,
    pub kept: f64,
    pub split: f64,
    pub rest: f64,
}

impl LoadPoint {
    /// Whether a subnet whose keep draw is `keep` stays at the weighed region.
    pub(super) fn keeps(&self, keep: f64) -> bool {
        keep < self.kept
    }

    /// Where a moved subnet whose spread draw is `spread` goes: to the first destination
    /// (0), the second (1), or nowhere (2: it stays).
    pub(super) fn destination(&self, spread: f64) -> usize {
        if spread < self.split {
            0
        } else if spread < self.rest {
            1
        } else {
            2
        }
    }
}

/// [`decide`], drawing for load from `draws`; and what the subnet was hashed for.
pub(super) fn decide_drawing<'t, E: Explain>(
    service: &'t ServiceRoutes,
    client: &Client,
    explain: &mut E,
    draws: Draws,
) -> (Decision<'t>, Hashed) {
    let plan = &service.plan;
    let mut scope = Scope {
        prefix: client.scope,
        ipv4: client.ip.is_ipv4(),
        hashed: Hashed::default(),
    };
    let rule = client
        .place
        .decisive
        .rule
        .and_then(|r| Some((usize::from(r), plan.rules.get(usize::from(r))?)));
    explain.rule(rule);
    let rule = rule.map(|(_, r)| r);
    let allowed = rule
        .and_then(|r| r.allow.as_ref())
        .map_or(service.all, |a| a.regions);

    let usable = allowed.and(service.usable);
    let (candidates, fail_open) = if !usable.is_empty() {
        (usable, false)
    } else if let Some(allow) = rule.and_then(|r| r.allow.as_ref()) {
        report(explain, service, allowed, client, "");
        let closed = Decision::FailClosed {
            how: rule.map_or(FailClosed::Refuse, |r| r.when_none),
            reason: &allow.reason,
            scope: scope.prefix,
        };
        return (closed, scope.hashed);
    } else if plan.when_all_down == WhenAllDown::ServFail {
        report(explain, service, allowed, client, "");
        let servfail = Decision::ServFail {
            scope: scope.prefix,
        };
        return (servfail, scope.hashed);
    } else {
        let down = allowed.and(service.down);
        (if down.is_empty() { allowed } else { down }, true)
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

    if let Some(target) = plan.load {
        explain.step(&|| load_line(service, target.target));
    }
    let mut preferred = Order::new();
    for &region in rule.map_or(&[][..], |r| &r.prefer) {
        if candidates.contains(region) && !preferred.contains(&(region as u16)) {
            preferred.push(region as u16);
        }
    }
    let rest_count = candidates.len() - preferred.len();
    let mut rest = Rest {
        order: Order::new(),
        partial: false,
    };
    rest.fill(service, client, candidates, &preferred, E::LISTENS);
    if rest_count > 1 && plan.policy == Policy::Weighted {
        scope.hashed();
    }
    explain.step(&|| {
        let order = preferred.iter().copied().chain(rest.order.iter().copied());
        format!("policy {:?}: order {}", plan.policy, names(service, order))
    });

    let mut walk = Walk {
        service,
        client,
        fail_open,
        scope: &mut scope,
        explain,
        draws,
    };
    let canary = walk.drawn_canary(candidates);
    let explored = canary
        .is_none()
        .then(|| walk.explored(candidates, &preferred))
        .flatten();
    let first = canary.or(explored);
    let (picks, weighed) = match walk.pick(&preferred, &rest, first) {
        Some(picked) => picked,
        None => {
            // The place's nearest regions are not enough: order them all.
            rest.fill(service, client, candidates, &preferred, true);
            walk.pick(&preferred, &rest, first).unwrap_or_default()
        }
    };
    let decision = Decision::Regions {
        picks,
        fail_open,
        scope: scope.prefix,
        weighed,
        explored: explored.is_some(),
    };
    (decision, scope.hashed)
}

/// Region positions in the order they are considered.
type Order = ArrayVec<u16, MAX_REGIONS>;

/// The candidates that were not preferred, in the policy's order: all of them, or only those
/// among the place's nearest regions (`partial`).
struct Rest {
    order: Order,
    partial: bool,
}

impl Rest {
    /// Fills the order in place (an [`Order`] is large to move); `whole` asks for every
    /// candidate: past the place's nearest regions, the others by their distance from the
    /// first of them.
    fn fill(
        &mut self,
        service: &ServiceRoutes,
        client: &Client,
        candidates: RegionSet,
        preferred: &Order,
        whole: bool,
    ) {
        let plan = &service.plan;
        let wanted = |&r: &usize| candidates.contains(r) && !preferred.contains(&(r as u16));
        let count = plan.regions.len();
        let order = &mut self.order;
        order.clear();
        self.partial = false;
        let nearest = client.place.decisive.nearest();
        match (plan.policy, nearest.first()) {
            (Policy::Nearest | Policy::Latency, Some(&first)) => {
                order.extend(nearest.iter().copied().filter(|&r| wanted(&usize::from(r))));
                let listed = order.len();
                if whole {
                    let beyond = |r: &usize| !nearest.contains(&(*r as u16));
                    order.extend((0..count).filter(wanted).filter(beyond).map(|r| r as u16));
                    let from = plan.regions[usize::from(first)].direction;
                    sort_by_key(&mut order[listed..], |i| {
                        let d = plan.regions[i].direction;
                        -(d[0] * from[0] + d[1] * from[1] + d[2] * from[2])
                    });
                } else {
                    self.partial = nearest.len() < count;
                }
            }
            (Policy::Weighted, _) => {
                order.extend((0..count).filter(wanted).map(|r| r as u16));
                let subnet = subnet_key(client.ip);
                sort_by_key(order, |i| rendezvous(subnet, i, plan.weights[i]));
            }
            _ => order.extend((0..count).filter(wanted).map(|r| r as u16)),
        }
    }
}

/// The last steps of a decision, for one client: the canary's draw, then the picks.
struct Walk<'w, 't, E> {
    service: &'t ServiceRoutes,
    client: &'w Client,
    fail_open: bool,
    scope: &'w mut Scope,
    explain: &'w mut E,
    draws: Draws,
}

impl<E: Explain> Walk<'_, '_, E> {
    /// The canary, when this client's subnet is in its share.
    fn drawn_canary(&mut self, candidates: RegionSet) -> Option<usize> {
        let (service, plan) = (self.service, &self.service.plan);
        let canary = plan
            .canary
            .filter(|c| candidates.contains(c.region) && service.states[c.region] == State::Up)?;
        self.scope.hashed();
        let drawn = fraction(subnet_key(self.client.ip), CANARY_SEED);
        let name = &plan.regions[canary.region].key.region;
        let share = canary.share * 100.0;
        if !self.fail_open && drawn < canary.share {
            let line = || format!("canary {name}: this subnet is in its {share:.1}% share");
            self.explain.step(&line);
            Some(canary.region)
        } else {
            let line = || format!("canary {name}: this subnet is outside its {share:.1}% share");
            self.explain.step(&line);
            None
        }
    }

    /// The region this client's subnet explores (`policy: latency`), when its subnet is in the
    /// explored share. Exploration stays within the rule, health and drains: only a region
    /// that is up and allowed, never over a preferred one or when failing open.
    fn explored(&mut self, candidates: RegionSet, preferred: &Order) -> Option<usize> {
        let (service, plan) = (self.service, &self.service.plan);
        let share = plan.latency.map_or(0.0, |l| l.explore);
        let region = usize::from(self.client.place.decisive.explore?);
        let up = service.states.get(region) == Some(&State::Up);
        if share <= 0.0
            || self.fail_open
            || !preferred.is_empty()
            || !candidates.contains(region)
            || !up
        {
            return None;
        }
        let seed = service.places.explore_seed() ^ EXPLORE_SEED;
        self.scope.hashed_for_explore(share, seed);
        let name = &plan.regions[region].key.region;
        let percent = share * 100.0;
        let drawn = match self.draws {
            Draws::Subnet => explores(self.client.ip, share, seed),
            Draws::Fixed { explore, .. } => explore,
        };
        if drawn {
            let line = || format!("explore {name}: this subnet is in the {percent:.1}% explored");
            self.explain.step(&line);
            Some(region)
        } else {
            let line =
                || format!("explore {name}: this subnet is outside the {percent:.1}% explored");
            self.explain.step(&line);
            None
        }
    }

    /// Walks `first` (the canary, or the region a subnet explores), the preferred regions and
    /// the rest, and picks the service's number of answers; a degraded region sheds its share
    /// of subnets to the ones after it, and a region over its load target moves its share to
    /// the next with headroom. `None` when a partial order ran out before the picks were made.
    fn pick(
        &mut self,
        preferred: &Order,
        rest: &Rest,
        first: Option<usize>,
    ) -> Option<(Picks, Option<Weighed>)> {
        let (service, client, fail_open) = (self.service, self.client, self.fail_open);
        let plan = &service.plan;
        let mut order = first
            .into_iter()
            .chain(preferred.iter().chain(&rest.order).map(|&r| usize::from(r)))
            .enumerate()
            .filter(|&(at, r)| at == 0 || Some(r) != first)
            .map(|(_, r)| r);
        let mut picks = Picks::default();
        let mut shed = Order::new();
        // A client is weighed for load once, at the first region that moves clients; the
        // region it is moved to is not picked again.
        let (mut weighed, mut weighed_once) = (None, false);
        let mut moved_to = None;
        while let Some(region) = order.next() {
            if picks.len() == plan.answers {
                return Some((picks, weighed));
            }
            if Some(region) == moved_to {
                continue;
            }
            if !fail_open && service.states[region] == State::Degraded && plan.shed > 0.0 {
                if plan.shed < 1.0 {
                    self.scope.hashed();
                }
                let name = &plan.regions[region].key.region;
                if fraction(subnet_key(client.ip), region as u64 + 1) < plan.shed {
                    let share = plan.shed * 100.0;
                    self.explain.step(&|| {
                        format!("{name} is degraded: this subnet is in the {share:.0}% it sheds")
                    });
                    shed.push(region as u16);
                    continue;
                }
                let share = (1.0 - plan.shed) * 100.0;
                self.explain.step(&|| {
                    format!("{name} is degraded: this subnet is in the {share:.0}% it keeps")
                });
            }
            let moves = service.loads.get(region).is_some_and(|l| l.kept < 1.0);
            if !fail_open && !weighed_once && moves {
                weighed_once = true;
                let weighing = |moved_to: Option<usize>| {
                    Some(Weighed {
                        region: region as u16,
                        moved_to: moved_to.map(|to| to as u16),
                    })
                };
                match self.weigh_load(region, order.clone(), rest.partial) {
                    Weighing::Kept => {}
                    Weighing::Stuck => weighed = weighing(None),
                    Weighing::Moved(to) => {
                        weighed = weighing(Some(to));
                        shed.push(region as u16);
                        picks.push(to);
                        moved_to = Some(to);
                        continue;
                    }
                    Weighing::LookFurther => return None,
                }
            }
            picks.push(region);
        }
        if picks.len() < plan.answers && rest.partial {
            return None;
        }
        // Shed clients stay where they are when no other region can take them.
        for &region in &shed {
            if picks.len() < plan.answers {
                picks.push(usize::from(region));
            }
        }
        Some((picks, weighed))
    }
}

/// Where load sends one client of a region that moves clients.
enum Weighing {
    Kept,
    Stuck,
    Moved(usize),
    /// The place's nearest regions do not show where it would go: order them all.
    LookFurther,
}

/// Moved clients go to at most this many of the next regions that admit them, the nearest
/// first, up to the share each admits.
const SPREAD: usize = 2;
const SPREAD_SEED: u64 = 0x7370_7265_6164; // "spread"

impl<E: Explain> Walk<'_, '_, E> {
    /// Whether this client's subnet stays at `region`, which keeps only part of its clients for
    /// load, or moves to one of the next regions of `ahead` with headroom (the subnets with the
    /// highest hash move, so the same ones every time).
    fn weigh_load(
        &mut self,
        region: usize,
        ahead: impl Iterator<Item = usize>,
        partial: bool,
    ) -> Weighing {
        let (service, plan) = (self.service, &self.service.plan);
        let Some(load) = service.loads.get(region) else {
            return Weighing::Kept;
        };
        self.scope.hashed_for_load();
        let seed = plan.regions[region].load_seed;
        let subnet = subnet_key(self.client.ip);
        let (keep_draw, spread_draw) = match self.draws {
            Draws::Subnet => (fraction(subnet, seed), None),
            Draws::Fixed { keep, spread, .. } => (keep, Some(spread)),
        };
        let mut point = LoadPoint {
            seed,
            kept: load.kept,
            split: 1.0,
            rest: 1.0,
        };
        self.scope.hashed.load = Some(point);
        let name = &plan.regions[region].key.region;
        let target = plan.load.map_or(0.0, |t| t.target);
        let figures = || {
            format!(
                "{name} load {} (target {:.0}%): keeps {:.0}% of its clients",
                percent(load.load),
                target * 100.0,
                load.kept * 100.0
            )
        };
        if point.keeps(keep_draw) {
            self.explain
                .step(&|| format!("{}; this client's subnet is kept", figures()));
            return Weighing::Kept;
        }
        let Some(open) = admitting(service, region, ahead, partial) else {
            return Weighing::LookFurther;
        };
        let share = |at: usize| open.get(at).map_or(0.0, |&(_, share)| share);
        point.split = share(0);
        point.rest = point.split + (1.0 - point.split) * share(1);
        self.scope.hashed.load = Some(point);
        let spread = spread_draw.unwrap_or_else(|| fraction(subnet, SPREAD_SEED));
        let Some(&(to, _)) = open.get(point.destination(spread)) else {
            let why = if open.is_empty() {
                "no region it may go to admits clients"
            } else {
                "the regions it may go to admit no more"
            };
            self.explain.step(&|| {
                format!(
                    "{}; this client's subnet would move, but {why}: it stays",
                    figures()
                )
            });
            return Weighing::Stuck;
        };
        let destination = &plan.regions[to].key.region;
        self.explain.step(&|| {
            let admitted = match service.loads.get(to).map(RegionLoad::admission) {
                Some(Admission::Reported(share)) if share < 1.0 => {
                    format!(
                        " (it admits {:.0}% of the clients moved to it)",
                        share * 100.0
                    )
                }
                Some(Admission::Unreported) => " (it reports no load)".to_owned(),
                _ => String::new(),
            };
            format!(
                "{}; this client's subnet is moved to {destination}{admitted}",
                figures()
            )
        });
        Weighing::Moved(to)
    }
}

/// The regions of `ahead` (the client's order after `region`) that take clients `region`
/// moves for load, at most [`SPREAD`], each with the share it takes: the nearest that report
/// their load and admit some, then those that report none (they take all that reaches them).
/// `None` when the order is partial and may hide a nearer one that reports.
fn admitting(
    service: &ServiceRoutes,
    region: usize,
    ahead: impl Iterator<Item = usize>,
    partial: bool,
) -> Option<ArrayVec<(usize, f64), SPREAD>> {
    let mut reporting: ArrayVec<(usize, f64), SPREAD> = ArrayVec::new();
    let mut silent: ArrayVec<(usize, f64), SPREAD> = ArrayVec::new();
    let up = ahead.filter(|&r| r != region && service.states[r] == State::Up);
    for r in up {
        match service.loads.get(r).map(RegionLoad::admission) {
            Some(Admission::Reported(share)) => reporting.push((r, share)),
            Some(Admission::Unreported) if !silent.is_full() => silent.push((r, 1.0)),
            _ => {}
        }
        if reporting.is_full() {
            return Some(reporting);
        }
    }
    if partial {
        return None;
    }
    for taker in silent {
        if reporting.try_push(taker).is_err() {
            break;
        }
    }
    Some(reporting)
}

/// "load target 80%: eu-west 92% (keeps 87%), eu-north 40%, us-east unknown".
fn load_line(service: &ServiceRoutes, target: f64) -> String {
    let regions = service.plan.regions.iter().zip(service.loads.iter());
    let figures: Vec<String> = regions
        .map(|(region, load)| {
            let name = &region.key.region;
            if load.kept < 1.0 {
                let kept = load.kept * 100.0;
                format!("{name} {} (keeps {kept:.0}%)", percent(load.load))
            } else {
                format!("{name} {}", percent(load.load))
            }
        })
        .collect();
    format!("load target {:.0}%: {}", target * 100.0, figures.join(", "))
}

/// `92%`, or `unknown`.
fn percent(load: Option<f64>) -> String {
    load.map_or("unknown".to_owned(), |l| format!("{:.0}%", l * 100.0))
}

/// Tells the observer every region's state, distance and verdict.
fn report<E: Explain>(
    explain: &mut E,
    service: &ServiceRoutes,
    allowed: RegionSet,
    client: &Client,
    note: &str,
) {
    if !E::LISTENS {
        return;
    }
    let at = client.coordinates;
    for (i, region) in service.plan.regions.iter().enumerate() {
        let state = service.states[i];
        let verdict = match (allowed.contains(i), state) {
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

/// The ECS scope: the place's network, or the client's subnet once a hash decided.
struct Scope {
    prefix: u8,
    ipv4: bool,
    hashed: Hashed,
}

impl Scope {
    /// The decision used the subnet hash: it holds for the /24 (IPv4) or /56 (IPv6).
    fn hashed(&mut self) {
        self.hashed.other = true;
        self.narrowed_to_subnet();
    }

    /// As [`Scope::hashed`], for exploration, with its share and seed.
    fn hashed_for_explore(&mut self, share: f64, seed: u64) {
        self.hashed.explore = Some((share, seed));
        self.narrowed_to_subnet();
    }

    /// As [`Scope::hashed`], for load weighing.
    fn hashed_for_load(&mut self) {
        self.narrowed_to_subnet();
    }

    fn narrowed_to_subnet(&mut self) {
        self.prefix = subnet_scope(self.prefix, self.ipv4);
    }
}

/// `prefix`, narrowed to the client's subnet once a subnet hash decided (load weighing
/// included): a decision made in advance for a place narrows its scope the same way.
pub(super) fn subnet_scope(prefix: u8, ipv4: bool) -> u8 {
    prefix.max(subnet_prefix(ipv4))
}

/// The prefix of the client's subnet that hashing decides for: /24 or /56.
fn subnet_prefix(ipv4: bool) -> u8 {
    if ipv4 { 24 } else { 56 }
}

/// Load weighing's draws for the subnet of `ip`, with the weighed region's `seed`: the keep
/// draw, and the spread draw when a moved subnet needs it.
pub(super) fn load_draws(ip: IpAddr, seed: u64) -> (f64, impl Fn() -> f64) {
    let subnet = subnet_key(ip);
    (fraction(subnet, seed), move || {
        fraction(subnet, SPREAD_SEED)
    })
}

/// Whether the subnet of `ip` is in the explored `share` (drawn with `seed`).
pub(super) fn explores(ip: IpAddr, share: f64, seed: u64) -> bool {
    fraction(subnet_key(ip), seed) < share
}

const CANARY_SEED: u64 = 0x6361_6e61_7279; // "canary"
const EXPLORE_SEED: u64 = 0x6578_706c_6f72; // "explor"

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

/// Stable sort of region positions by `key`, computed once per region, without allocating.
fn sort_by_key(order: &mut [u16], key: impl Fn(usize) -> f64) {
    let mut keyed: ArrayVec<(f64, u16), MAX_REGIONS> = ArrayVec::new();
    keyed.extend(order.iter().map(|&r| (key(usize::from(r)), r)));
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
    // By reference: moving an ArrayVec copies its whole capacity.
    for (slot, (_, region)) in order.iter_mut().zip(&keyed) {
        *slot = *region;
    }
}

fn names(service: &ServiceRoutes, order: impl Iterator<Item = u16>) -> String {
    let names: Vec<&str> = order
        .map(|i| service.plan.regions[usize::from(i)].key.region.as_str())
        .collect();
    names.join(", ")
}
