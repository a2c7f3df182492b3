//! What to answer, decided without sockets: from a routing snapshot, the GeoIP databases, the
//! question and the client's address to the sections of a response (CNAME chains followed
//! inside the zone, additional addresses of NS, MX and SRV targets), its ECS scope and, for a
//! refused or fail-closed answer, the Extended DNS Error.
//!
//! Everything here is a pure function of its arguments: no I/O, no lock, no allocation but for
//! records made for one query. It knows nothing of the wire format's bytes; [`crate::dns`]
//! writes the answer.

use std::{net::IpAddr, sync::Arc};

use arrayvec::ArrayVec;

use crate::counter::QueryCounter;
use hickory_proto::rr::{Record, RecordType};

use crate::{
    config::FailClosed,
    geo::LookupResult,
    metrics::AnswerShares,
    routing::{Decision, MAX_ANSWERS, Picks, Place, RoutingTable, ServiceRoutes, ZoneRoutes},
    wire::{ExtendedError, Rcode, name::is_within},
    zone::{Additional, Lookup, RRset, ZoneData},
};

/// Most in-zone CNAMEs followed for one answer; a longer chain is answered as far as this.
const MAX_CNAME_CHAIN: usize = 8;
/// RRsets an answer section can hold: the CNAME chain, then the regions' addresses.
const MAX_ANSWER_SETS: usize = MAX_CNAME_CHAIN + MAX_ANSWERS;
/// RRsets an additional section holds at most; more targets' addresses are left out.
const MAX_ADDITIONAL_SETS: usize = 32;
/// RFC 8914 INFO-CODEs used here.
/// Counters one answer adds to at most: its rcode's or region's, fail-open or load, a load
/// guest, the latency basis, and latency's move.
pub const COUNTERS: usize = 5;

const EDE_OTHER: u16 = 0;
const EDE_NOT_AUTHORITATIVE: u16 = 20;

/// The sections of a response, borrowed from the routing snapshot.
#[derive(Debug)]
pub struct Answer<'t> {
    pub rcode: Rcode,
    pub authoritative: bool,
    /// The CNAMEs followed, then the answer: one RRset per region (several with `answers: N`).
    answer: ArrayVec<&'t RRset, MAX_ANSWER_SETS>,
    pub authority: Option<&'t RRset>,
    /// Glue of a referral, or the addresses of the answer's NS, MX or SRV targets.
    additional: ArrayVec<&'t RRset, MAX_ADDITIONAL_SETS>,
    /// Whether the additional section must be whole (referral glue, RFC 9471) or may be cut.
    pub additional_required: bool,
    /// How many leading bits of the client address the answer depends on (the ECS scope).
    pub scope: u8,
    /// The counters this answer adds one to; none: count it by rcode.
    pub counters: [Option<&'t QueryCounter>; COUNTERS],
    /// The answer-share cell it adds one to: its first region and the client's continent.
    pub share: Option<(&'t Arc<AnswerShares>, usize)>,
    /// The GeoIP lookup the service's decision made, and whether more were made (for the
    /// addresses of targets): an answer given again counts its lookup again.
    pub lookup: Option<LookupResult>,
    pub other_lookups: bool,
    /// Why the answer is refused or fails closed (RFC 8914).
    pub extended_error: Option<ExtendedError<'t>>,
    /// Records made for this query only (the `_explain` TXT lines).
    pub made: Vec<Record>,
    /// For a negative answer, what it denies: a signed zone proves it with an NSEC.
    pub denial: Option<Denial<'t>>,
    /// For an answer of several regions' addresses, which: in a signed zone they are one
    /// RRset, signed for them together.
    pub together: Option<Together<'t>>,
}

/// Several regions' addresses in one answer: the last `sets` answer RRsets.
#[derive(Debug, Clone, Copy)]
pub struct Together<'t> {
    pub service: &'t ServiceRoutes,
    pub picks: Picks,
    pub qtype: RecordType,
    pub sets: usize,
}

/// The zone, name and type a negative answer (or a referral) denies.
#[derive(Debug, Clone, Copy)]
pub struct Denial<'t> {
    pub zone: &'t ZoneData,
    /// The CNAME target or zone cut that does not exist or lacks the type; `None`: the
    /// question's name.
    pub target: Option<&'t [u8]>,
    /// The type denied; `None`: the question's. A referral denies DS at the cut: the child
    /// zone is not signed as far as this zone says (RFC 4035 3.1.4).
    pub rtype: Option<RecordType>,
}

impl<'t> Answer<'t> {
    /// Nothing yet: an authoritative NOERROR with empty sections, for [`resolve_into`].
    pub fn unanswered() -> Answer<'t> {
        Answer::new(Rcode::NoError, true)
    }

    fn new(rcode: Rcode, authoritative: bool) -> Answer<'t> {
        Answer {
            rcode,
            authoritative,
            answer: ArrayVec::new(),
            authority: None,
            additional: ArrayVec::new(),
            additional_required: false,
            scope: 0,
            counters: [None; COUNTERS],
            share: None,
            lookup: None,
            other_lookups: false,
            extended_error: None,
            made: Vec::new(),
            denial: None,
            together: None,
        }
    }

    /// An answer of records made for this query only (the `_explain` TXT lines), holding for
    /// `scope` bits of the client's address.
    pub fn made(records: Vec<Record>, counter: &'t QueryCounter, scope: u8) -> Answer<'t> {
        Answer {
            made: records,
            counters: [Some(counter), None, None, None, None],
            scope,
            ..Answer::new(Rcode::NoError, true)
        }
    }

    /// The answer section's RRsets, in order.
    pub fn answer_sets(&self) -> impl Iterator<Item = &'t RRset> + '_ {
        self.answer.iter().copied()
    }

    /// The answer section's records, in order (decoded for display).
    pub fn answer_records(&self) -> Vec<Record> {
        let sets = self.answer_sets().flat_map(|s| s.records());
        sets.chain(self.made.iter().cloned()).collect()
    }

    /// The additional section's RRsets, in order.
    pub fn additional_sets(&self) -> impl Iterator<Item = &'t RRset> + '_ {
        self.additional.iter().copied()
    }

    /// Adds an RRset to the answer section; beyond its room, it is left out.
    fn push(&mut self, set: &'t RRset) {
        let _ = self.answer.try_push(set);
    }

    /// Adds an RRset to the additional section once; beyond its room, it is left out.
    fn push_additional(&mut self, set: &'t RRset) {
        let seen = self.additional.iter().any(|s| std::ptr::eq(*s, set));
        if !seen && !set.is_empty() {
            let _ = self.additional.try_push(set);
        }
    }

    fn answer_len(&self) -> usize {
        self.answer.len()
    }
}

/// The address a query is answered for, and where it came from.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress {
    pub ip: IpAddr,
    pub source: AddressSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressSource {
    /// The query's EDNS Client Subnet option.
    Ecs,
    /// The address the query came from (the resolver's).
    Packet,
    /// Given by the operator (`regiondns explain --client`).
    Given,
}

impl AddressSource {
    pub fn describe(self) -> &'static str {
        match self {
            AddressSource::Ecs => "from the EDNS Client Subnet",
            AddressSource::Packet => "the resolver's own address",
            AddressSource::Given => "given with --client",
        }
    }
}

/// Answers `qname` (lower case wire form) and `qtype` for `client` (the ECS address, else the
/// source address).
pub fn resolve<'t>(
    table: &'t RoutingTable,
    qname: &[u8],
    qtype: RecordType,
    client: ClientAddress,
) -> Answer<'t> {
    let mut answer = Answer::unanswered();
    resolve_into(&mut answer, table, qname, qtype, client);
    answer
}

/// As [`resolve`], into `chain`, an [`Answer::unanswered`]: the query path keeps its answer
/// where it is made (an answer is large to move).
pub fn resolve_into<'t>(
    chain: &mut Answer<'t>,
    table: &'t RoutingTable,
    qname: &[u8],
    qtype: RecordType,
    client: ClientAddress,
) {
    let Some(zone) = table.zone_for(qname) else {
        (chain.rcode, chain.authoritative) = (Rcode::Refused, false);
        chain.extended_error = Some(ExtendedError {
            code: EDE_NOT_AUTHORITATIVE,
            text: "",
        });
        return;
    };
    // RFC 1034 4.3.2: a CNAME is followed while its target stays in the zone.
    let mut name = qname;
    let mut target = None;
    loop {
        let denial = Some(Denial {
            zone: &zone.data,
            target,
            rtype: None,
        });
        let (lookup, data) = (zone.data.lookup(name, qtype), &zone.data);
        let cname = match lookup {
            Lookup::Cname(rrset) => rrset,
            Lookup::Found(rrset) => {
                // A transferred zone's SOA carries the serial its secondaries were given.
                let rrset = match rrset.record_type() == Some(RecordType::SOA) {
                    true => zone.soa(),
                    false => rrset,
                };
                chain.push(rrset);
                if let Some(additional) = rrset.additional() {
                    add_target_addresses(chain, zone, additional, client);
                }
                return counted(chain, zone);
            }
            Lookup::NoData => {
                chain.authority = Some(zone.negative_soa());
                chain.denial = denial;
                return counted(chain, zone);
            }
            Lookup::NxDomain => {
                chain.rcode = Rcode::NxDomain;
                chain.authority = Some(zone.negative_soa());
                chain.denial = denial;
                return counted(chain, zone);
            }
            Lookup::Referral(delegation) => {
                // Below a zone cut only the first name's answer is a referral (not ours).
                chain.authoritative = chain.answer_len() > 0;
                chain.authority = Some(&delegation.ns);
                delegation
                    .glue
                    .iter()
                    .for_each(|glue| chain.push_additional(glue));
                chain.additional_required = true;
                chain.denial = Some(Denial {
                    zone: data,
                    target: Some(delegation.name.wire()),
                    rtype: Some(RecordType::DS),
                });
                return counted(chain, zone);
            }
            Lookup::Service(id) => {
                let Some(service) = zone.service(id) else {
                    chain.authority = Some(zone.negative_soa());
                    return counted(chain, zone);
                };
                let (client, lookup) = service.client(client.ip);
                chain.lookup = lookup;
                let decision = service.decision_for(&client);
                add_decision(chain, zone, service, decision, qtype, Some(&client.place));
                let nodata = chain
                    .authority
                    .is_some_and(|soa| std::ptr::eq(soa, zone.negative_soa()));
                if nodata && chain.rcode == Rcode::NoError {
                    chain.denial = denial;
                }
                return;
            }
        };
        chain.push(cname);
        let next = cname
            .cname_target()
            .filter(|target| is_within(target, zone.data.origin()))
            .filter(|target| !chain.answer_sets().any(|set| owner_is(set, target)));
        match next {
            Some(next) if chain.answer_len() < MAX_CNAME_CHAIN => {
                name = next;
                target = Some(next);
            }
            _ => return counted(chain, zone),
        }
    }
}

/// The additional section of an NS, MX or SRV answer: its targets' static addresses, and for
/// a target that is a service, the addresses of the regions chosen for this client (the
/// answer's scope then covers that decision too).
fn add_target_addresses<'t>(
    answer: &mut Answer<'t>,
    zone: &'t ZoneRoutes,
    additional: &'t Additional,
    client: ClientAddress,
) {
    for set in &additional.addresses {
        answer.push_additional(set);
    }
    for service in additional
        .services
        .iter()
        .filter_map(|&id| zone.service(id))
    {
        let (located, _) = service.client(client.ip);
        answer.other_lookups = true;
        if let Decision::Regions { picks, scope, .. } = service.decision_for(&located) {
            answer.scope = answer.scope.max(scope);
            for region in picks.iter().filter_map(|i| service.region(i)) {
                answer.push_additional(region.records(RecordType::A));
                answer.push_additional(region.records(RecordType::AAAA));
            }
        }
    }
}

/// A static answer counts toward its zone's responses by rcode.
fn counted<'t>(answer: &mut Answer<'t>, zone: &'t ZoneRoutes) {
    let counter = match answer.rcode {
        Rcode::NxDomain => &zone.counters.nxdomain,
        _ => &zone.counters.noerror,
    };
    answer.counters = [Some(counter), None, None, None, None];
}

fn owner_is(set: &RRset, name: &[u8]) -> bool {
    // Length octets are below 64, so only the letters differ in case.
    set.wire().owner().eq_ignore_ascii_case(name)
}

/// The response for a routing decision: the chosen regions' records, or the fail-closed,
/// SERVFAIL or NODATA answer.
pub fn decision_answer<'t>(
    zone: &'t ZoneRoutes,
    service: &'t ServiceRoutes,
    decision: Decision<'t>,
    qtype: RecordType,
) -> Answer<'t> {
    let mut answer = Answer::new(Rcode::NoError, true);
    add_decision(&mut answer, zone, service, decision, qtype, None);
    answer
}

/// Completes `answer` (empty, or the CNAMEs that led to the service) with a routing decision:
/// its records follow the chain, and its rcode, authority and scope are the response's (RFC
/// 1034 4.3.2, RFC 6604). Built in place: an answer is large to move. The answer counts toward
/// its first region's share of clients from the `place`'s continent, and (`policy: latency`)
/// to what its order rested on.
fn add_decision<'t>(
    answer: &mut Answer<'t>,
    zone: &'t ZoneRoutes,
    service: &'t ServiceRoutes,
    decision: Decision<'t>,
    qtype: RecordType,
    place: Option<&Place>,
) {
    let continent = place.and_then(|p| p.continent);
    let negative_soa = Some(zone.negative_soa());
    let plan = &service.plan;
    match decision {
        Decision::Regions {
            picks,
            fail_open,
            scope,
            weighed,
            explored,
        } => {
            let chained = answer.answer_len();
            let regions = picks.iter().filter_map(|i| service.region(i));
            for set in regions.map(|r| r.records(qtype)).filter(|s| !s.is_empty()) {
                answer.push(set);
            }
            let sets = answer.answer_len() - chained;
            if sets > 1 && matches!(qtype, RecordType::A | RecordType::AAAA) {
                answer.together = Some(Together {
                    service,
                    picks,
                    qtype,
                    sets,
                });
            }
            if sets == 0 {
                answer.authority = negative_soa;
            }
            let first = picks.iter().next();
            // A client weighed for load is never answered in fail-open mode.
            let load = weighed.and_then(|w| {
                let counters = service.region(usize::from(w.region))?.weighed.as_ref()?;
                Some(match w.moved_to {
                    Some(_) => &counters.moved,
                    None => &counters.stuck,
                })
            });
            // The region it was moved to counts a guest: its controller admits fewer of them
            // before it moves any client of its own.
            let guest = weighed
                .and_then(|w| service.region(usize::from(w.moved_to?)))
                .and_then(|to| Some(&to.weighed.as_ref()?.moved_in));
            let first_region = first.and_then(|i| service.region(i));
            let moved_by_latency = first_region
                .filter(|_| !explored && place.is_some_and(|p| p.moved_by_latency))
                .and_then(|r| r.moved_by_latency.as_ref());
            answer.counters = [
                first_region.map(|r| &r.answered),
                fail_open.then_some(&plan.fail_open).or(load),
                guest,
                plan.latency_answers.as_ref().map(|counters| {
                    let basis = place.and_then(|p| p.basis);
                    counters.of(explored, basis)
                }),
                moved_by_latency,
            ];
            answer.share = first.map(|i| (&plan.shares, AnswerShares::cell(i, continent)));
            answer.scope = scope;
        }
        Decision::FailClosed { how, reason, scope } => {
            (answer.rcode, answer.authoritative) = match how {
                FailClosed::Refuse => (Rcode::Refused, false),
                FailClosed::ServFail => (Rcode::ServFail, false),
                FailClosed::NoData => (Rcode::NoError, true),
            };
            if how == FailClosed::NoData {
                answer.authority = negative_soa;
            }
            answer.counters = [Some(&plan.fail_closed), None, None, None, None];
            answer.extended_error = Some(ExtendedError {
                code: EDE_OTHER,
                text: reason,
            });
            answer.scope = scope;
        }
        Decision::ServFail { scope } => {
            (answer.rcode, answer.authoritative) = (Rcode::ServFail, false);
            answer.counters = [Some(&plan.servfail), None, None, None, None];
            answer.scope = scope;
        }
    }
}
