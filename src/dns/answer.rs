//! What to answer, decided without sockets: from a routing snapshot, the GeoIP databases, the
//! question and the client's address to the sections of a response, its ECS scope and, for a
//! fail-closed answer, the Extended DNS Error text.

use std::net::IpAddr;

use hickory_proto::{
    op::ResponseCode,
    rr::{LowerName, Name, RData, Record, RecordType, rdata::TXT},
};
use prometheus_client::metrics::counter::Counter;

use crate::{
    config::FailClosed,
    explain,
    geo::{GeoIp, Located},
    routing::{Client, Decision, MAX_ANSWERS, RoutingTable, ServiceRoutes, ZoneRoutes},
    zone::{Lookup, RRset, character_strings},
};

/// The first label of the names that explain a service's answer over DNS.
const EXPLAIN_LABEL: &[u8] = b"_explain";

/// The sections of a response, borrowed from the routing snapshot.
#[derive(Debug)]
pub struct Answer<'t> {
    pub rcode: ResponseCode,
    pub authoritative: bool,
    /// One RRset per answering region (several with `answers: N`), best first.
    pub answer: [Option<&'t RRset>; MAX_ANSWERS],
    pub authority: Option<&'t RRset>,
    pub additional: &'t [RRset],
    /// How many leading bits of the client address the answer depends on (the ECS scope).
    pub scope: u8,
    /// The counters this answer adds one to; none: count it by rcode.
    pub counters: [Option<&'t Counter>; 2],
    /// Why the answer fails closed (RFC 8914 EXTRA-TEXT).
    pub extended_error: Option<&'t str>,
    /// Records made for this query only (the `_explain` TXT lines).
    pub made: Vec<Record>,
}

impl<'t> Answer<'t> {
    fn new(rcode: ResponseCode, authoritative: bool) -> Answer<'t> {
        Answer {
            rcode,
            authoritative,
            answer: [None; MAX_ANSWERS],
            authority: None,
            additional: &[],
            scope: 0,
            counters: [None, None],
            extended_error: None,
            made: Vec::new(),
        }
    }

    fn authoritative(
        counter: &'t Counter,
        answer: Option<&'t RRset>,
        authority: Option<&'t RRset>,
    ) -> Answer<'t> {
        let mut sets = [None; MAX_ANSWERS];
        sets[0] = answer;
        Answer {
            answer: sets,
            authority,
            counters: [Some(counter), None],
            ..Answer::new(ResponseCode::NoError, true)
        }
    }

    /// The answer section's records, in order.
    pub fn answer_records(&self) -> impl Iterator<Item = &Record> + Send {
        let sets = self.answer.iter().flatten().flat_map(|s| s.records());
        sets.chain(self.made.iter())
    }

    /// Upper bound of the encoded size of the records (not the header, question or OPT).
    pub fn records_wire_len(&self) -> usize {
        let sets = self.answer.iter().flatten().copied();
        let fixed: usize = sets
            .chain(self.authority)
            .chain(self.additional)
            .map(RRset::wire_len)
            .sum();
        // Made records are few and small; count them generously.
        fixed + self.made.len() * 512
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

/// Answers `qname`/`qtype` for `client` (the ECS address, else the source address).
pub fn resolve<'t>(
    table: &'t RoutingTable,
    geo: &GeoIp,
    qname: &LowerName,
    qtype: RecordType,
    client: ClientAddress,
) -> Answer<'t> {
    let Some(zone) = table.zone_for(qname) else {
        return Answer::new(ResponseCode::Refused, false);
    };
    if zone.explain
        && qtype == RecordType::TXT
        && let Some(answer) = explain_answer(zone, geo, qname, client)
    {
        return answer;
    }
    let (data, noerror) = (&zone.data, &zone.counters.noerror);
    match data.lookup(qname, qtype) {
        Lookup::Found(rrset) | Lookup::Cname(rrset) => {
            Answer::authoritative(noerror, Some(rrset), None)
        }
        Lookup::NoData => Answer::authoritative(noerror, None, Some(data.negative_soa())),
        Lookup::NxDomain => Answer {
            rcode: ResponseCode::NXDomain,
            ..Answer::authoritative(&zone.counters.nxdomain, None, Some(data.negative_soa()))
        },
        Lookup::Referral(delegation) => Answer {
            authoritative: false,
            additional: &delegation.glue,
            ..Answer::authoritative(noerror, None, Some(&delegation.ns))
        },
        Lookup::Service(id) => match zone.service(id) {
            Some(service) => {
                let client = locate(service, geo, client.ip);
                let decision = service.decide(&client, &mut ());
                decision_answer(zone, service, decision, qtype)
            }
            None => Answer::authoritative(noerror, None, Some(data.negative_soa())),
        },
    }
}

/// The client with its location, looked up only when the service's answer can depend on it.
pub fn locate(service: &ServiceRoutes, geo: &GeoIp, ip: IpAddr) -> Client {
    let location = if service.plan.regions.len() > 1 || !service.plan.rules.is_empty() {
        geo.locate(ip)
    } else {
        Located::Unknown { prefix_len: 0 }
    };
    Client { ip, location }
}

/// The response for a routing decision: the chosen regions' records, or the fail-closed,
/// SERVFAIL or NODATA answer.
pub fn decision_answer<'t>(
    zone: &'t ZoneRoutes,
    service: &'t ServiceRoutes,
    decision: Decision<'t>,
    qtype: RecordType,
) -> Answer<'t> {
    let negative_soa = Some(zone.data.negative_soa());
    let plan = &service.plan;
    match decision {
        Decision::Regions {
            picks,
            fail_open,
            scope,
        } => {
            let mut answer = Answer::new(ResponseCode::NoError, true);
            let regions = picks.iter().filter_map(|i| service.region(i));
            let sets = regions.map(|r| r.records(qtype)).filter(|s| !s.is_empty());
            for (slot, set) in answer.answer.iter_mut().zip(sets) {
                *slot = Some(set);
            }
            if answer.answer[0].is_none() {
                answer.authority = negative_soa;
            }
            let first = picks.iter().next().and_then(|i| service.region(i));
            answer.counters = [
                first.map(|r| &r.answered),
                fail_open.then_some(&plan.fail_open),
            ];
            answer.scope = scope;
            answer
        }
        Decision::FailClosed { how, reason, scope } => {
            let mut answer = match how {
                FailClosed::Refuse => Answer::new(ResponseCode::Refused, false),
                FailClosed::ServFail => Answer::new(ResponseCode::ServFail, false),
                FailClosed::NoData => Answer {
                    authority: negative_soa,
                    ..Answer::new(ResponseCode::NoError, true)
                },
            };
            answer.counters = [Some(&plan.fail_closed), None];
            answer.extended_error = Some(reason);
            answer.scope = scope;
            answer
        }
        Decision::ServFail { scope } => Answer {
            counters: [Some(&plan.servfail), None],
            scope,
            ..Answer::new(ResponseCode::ServFail, false)
        },
    }
}

/// `_explain.<service>` TXT: the decision for this client, one TXT record per line.
fn explain_answer<'t>(
    zone: &'t ZoneRoutes,
    geo: &GeoIp,
    qname: &LowerName,
    client: ClientAddress,
) -> Option<Answer<'t>> {
    let name = Name::from(qname);
    let first = name.iter().next()?;
    if !first.eq_ignore_ascii_case(EXPLAIN_LABEL) {
        return None;
    }
    let service_name = LowerName::new(&name.base_name());
    let service = zone.service_named(&service_name)?;
    let lines = explain::service(zone, service, geo, client, RecordType::A);
    let client = client.ip;
    let made = lines
        .iter()
        .map(|line| {
            let text = TXT::new(character_strings(line));
            Record::from_rdata(name.clone(), 0, RData::TXT(text))
        })
        .collect();
    Some(Answer {
        made,
        counters: [Some(&zone.counters.noerror), None],
        // The explanation is about this very address.
        scope: if client.is_ipv4() { 32 } else { 128 },
        ..Answer::new(ResponseCode::NoError, true)
    })
}
