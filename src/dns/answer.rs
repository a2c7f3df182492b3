//! What to answer, decided without sockets: from a routing snapshot, the GeoIP databases, the
//! question and the client's address to the sections of a response and its ECS scope.

use std::net::IpAddr;

use hickory_proto::{
    op::ResponseCode,
    rr::{LowerName, RecordType},
};

use crate::{
    geo::GeoIp,
    routing::{RoutingTable, ZoneRoutes},
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
        }
    }

    fn authoritative(answer: Option<&'t RRset>, authority: Option<&'t RRset>) -> Answer<'t> {
        Answer {
            rcode: ResponseCode::NoError,
            authoritative: true,
            answer,
            authority,
            additional: &[],
            scope: 0,
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
    let data = &zone.data;
    match data.lookup(qname, qtype) {
        Lookup::Found(rrset) | Lookup::Cname(rrset) => Answer::authoritative(Some(rrset), None),
        Lookup::NoData => Answer::authoritative(None, Some(data.negative_soa())),
        Lookup::NxDomain => Answer {
            rcode: ResponseCode::NXDomain,
            ..Answer::authoritative(None, Some(data.negative_soa()))
        },
        Lookup::Referral(delegation) => Answer {
            authoritative: false,
            additional: &delegation.glue,
            ..Answer::authoritative(None, Some(&delegation.ns))
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
    let negative = Answer::authoritative(None, Some(zone.data.negative_soa()));
    let Some(service) = zone.service(id) else {
        return negative;
    };
    let (located, scope) = if service.depends_on_location() {
        let located = geo.locate(client);
        (located.coordinates(), located.prefix_len())
    } else {
        (None, 0)
    };
    let Some(region) = service.choose(located) else {
        return negative;
    };
    let records = region.records(qtype);
    let (answer, authority) = if records.is_empty() {
        (None, Some(zone.data.negative_soa()))
    } else {
        (Some(records), None)
    };
    Answer {
        scope,
        ..Answer::authoritative(answer, authority)
    }
}
