//! What to answer, decided without sockets: from a routing snapshot, the GeoIP databases, the
//! question and the client's address to the sections of a response and its ECS scope.

use std::net::IpAddr;

use hickory_proto::{
    op::ResponseCode,
    rr::{LowerName, RecordType},
};

use prometheus_client::metrics::counter::Counter;

use crate::{
    geo::GeoIp,
    routing::{Choice, RoutingTable, ZoneRoutes},
    zone::{Lookup, RRset, ServiceId},
};

/// The sections of a response, borrowed from the routing snapshot.
#[derive(Debug)]
pub struct Answer<'t> {
    pub rcode: ResponseCode,
    pub authoritative: bool,
    pub answer: Option<&'t RRset>,
    pub authority: Option<&'t RRset>,
    pub additional: &'t [RRset],
    /// How many leading bits of the client address the answer depends on (the ECS scope).
    pub scope: u8,
    /// The counters this answer adds one to (the response, and a fail-open answer).
    pub counters: [Option<&'t Counter>; 2],
}

impl<'t> Answer<'t> {
    fn refused() -> Answer<'t> {
        Answer {
            rcode: ResponseCode::Refused,
            authoritative: false,
            answer: None,
            authority: None,
            additional: &[],
            scope: 0,
            counters: [None, None],
        }
    }

    fn authoritative(
        counter: &'t Counter,
        answer: Option<&'t RRset>,
        authority: Option<&'t RRset>,
    ) -> Answer<'t> {
        Answer {
            rcode: ResponseCode::NoError,
            authoritative: true,
            answer,
            authority,
            additional: &[],
            scope: 0,
            counters: [Some(counter), None],
        }
    }

    /// Upper bound of the encoded size of the records (not the header, question or OPT).
    pub fn records_wire_len(&self) -> usize {
        let sets = self
            .answer
            .into_iter()
            .chain(self.authority)
            .chain(self.additional);
        sets.map(|s| s.wire_len()).sum()
    }
}

/// Answers `qname`/`qtype` for a client at `client` (the ECS address, else the source address).
pub fn resolve<'t>(
    table: &'t RoutingTable,
    geo: &GeoIp,
    qname: &LowerName,
    qtype: RecordType,
    client: IpAddr,
) -> Answer<'t> {
    let Some(zone) = table.zone_for(qname) else {
        return Answer::refused();
    };
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
        Lookup::Service(id) => service_answer(zone, id, geo, qtype, client),
    }
}

fn service_answer<'t>(
    zone: &'t ZoneRoutes,
    id: ServiceId,
    geo: &GeoIp,
    qtype: RecordType,
    client: IpAddr,
) -> Answer<'t> {
    let negative =
        Answer::authoritative(&zone.counters.noerror, None, Some(zone.data.negative_soa()));
    let Some(service) = zone.service(id) else {
        return negative;
    };
    let (located, scope) = if service.depends_on_location() {
        let located = geo.locate(client);
        (located.coordinates(), located.prefix_len())
    } else {
        (None, 0)
    };
    let (region, fail_open) = match service.choose(located) {
        Choice::Region(region) => (region, None),
        Choice::FailOpen(region) => (region, Some(&service.fail_open)),
        Choice::ServFail => {
            return Answer {
                rcode: ResponseCode::ServFail,
                authoritative: false,
                ..Answer::authoritative(&service.servfail, None, None)
            };
        }
    };
    let records = region.records(qtype);
    let (answer, authority) = if records.is_empty() {
        (None, Some(zone.data.negative_soa()))
    } else {
        (Some(records), None)
    };
    Answer {
        scope,
        counters: [Some(&region.answered), fail_open],
        ..Answer::authoritative(&region.answered, answer, authority)
    }
}
