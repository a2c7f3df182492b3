//! The hickory `RequestHandler`: checks a request (opcode, question count, class, EDNS version,
//! ECS), finds the client's address, asks [`resolve`] for the answer and writes it with the
//! right EDNS, ECS scope and truncation.

use std::{net::IpAddr, sync::Arc};

use arc_swap::ArcSwap;
use hickory_server::{
    net::{runtime::Time, xfer::Protocol},
    proto::{
        op::{Edns, Header, Metadata, OpCode, ResponseCode},
        rr::{
            DNSClass, RecordType,
            rdata::opt::{ClientSubnet, EdnsCode, EdnsOption},
        },
        serialize::binary::BinEncoder,
    },
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::{MessageResponse, MessageResponseBuilder},
};

use prometheus_client::metrics::counter::Counter;

use super::answer::{AddressSource, Answer, ClientAddress, resolve};
use crate::{geo::GeoIp, metrics::Metrics, routing::RoutingTable};

/// The UDP payload size regiondns offers and accepts at most (DNS flag day 2020).
pub const DEFAULT_MAX_UDP_PAYLOAD: u16 = 1232;
/// Header (12) and OPT record with the largest ECS option (11 + 4 + 4 + 16).
const FIXED_OVERHEAD: usize = 12 + 35;

pub struct Handler {
    table: Arc<ArcSwap<RoutingTable>>,
    geo: Arc<GeoIp>,
    max_udp_payload: u16,
    errors: ErrorCounters,
}

/// Responses to requests that reach no zone.
struct ErrorCounters {
    refused: Counter,
    formerr: Counter,
    notimp: Counter,
    badvers: Counter,
    servfail: Counter,
}

impl ErrorCounters {
    fn for_rcode(&self, rcode: ResponseCode) -> &Counter {
        match rcode {
            ResponseCode::FormErr => &self.formerr,
            ResponseCode::NotImp => &self.notimp,
            ResponseCode::BADVERS => &self.badvers,
            ResponseCode::ServFail => &self.servfail,
            _ => &self.refused,
        }
    }
}

impl Handler {
    pub fn new(
        table: Arc<ArcSwap<RoutingTable>>,
        geo: Arc<GeoIp>,
        metrics: &Metrics,
        max_udp_payload: u16,
    ) -> Handler {
        let counter = |rcode| metrics.query_counter("", "", "", rcode);
        Handler {
            table,
            geo,
            max_udp_payload: max_udp_payload.max(512),
            errors: ErrorCounters {
                refused: counter("REFUSED"),
                formerr: counter("FORMERR"),
                notimp: counter("NOTIMP"),
                badvers: counter("BADVERS"),
                servfail: counter("SERVFAIL"),
            },
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let edns = request.edns.as_ref().map(|query_edns| {
            let mut edns = Edns::new();
            edns.set_max_payload(query_edns.max_payload().clamp(512, self.max_udp_payload));
            edns
        });
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());

        let subnet = match check_request(request) {
            Ok(subnet) => subnet,
            Err(rcode) => {
                self.errors.for_rcode(rcode).inc();
                let response = builder.error_msg(&request.metadata, rcode);
                return send(&mut response_handle, response, request).await;
            }
        };
        let client = match subnet {
            Some(subnet) if subnet.source_prefix() > 0 => ClientAddress {
                ip: subnet.addr(),
                source: AddressSource::Ecs,
            },
            _ => ClientAddress {
                ip: request.src().ip(),
                source: AddressSource::Packet,
            },
        };

        // One Arc per query: a snapshot cannot be replaced under a query being answered.
        let table = self.table.load_full();
        let query = &request.queries.queries()[0];
        let answer = resolve(&table, &self.geo, query.name(), query.query_type(), client);
        match answer.counters {
            [None, _] => {
                self.errors.for_rcode(answer.rcode).inc();
            }
            counters => counters.iter().flatten().for_each(|c| {
                c.inc();
            }),
        };

        let edns = edns.map(|mut edns| {
            if let Some(mut subnet) = subnet {
                let scope = if subnet.source_prefix() > 0 {
                    answer.scope
                } else {
                    0
                };
                subnet.set_scope_prefix(scope);
                edns.options_mut().insert(EdnsOption::Subnet(subnet));
            }
            if let Some(reason) = answer.extended_error {
                edns.options_mut().insert(extended_error(reason));
            }
            edns
        });
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = answer.rcode;
        metadata.authoritative = answer.authoritative;

        let limit = match request.protocol() {
            Protocol::Udp => edns.as_ref().map_or(512, |e| usize::from(e.max_payload())),
            _ => usize::from(u16::MAX),
        };
        // An EDE option adds its code, length, INFO-CODE and text to the OPT record.
        let extended_error = answer.extended_error.map_or(0, |text| 6 + text.len());
        let upper_bound = FIXED_OVERHEAD
            + extended_error
            + request.queries.as_bytes().len()
            + answer.records_wire_len();
        if upper_bound > limit && !fits(request, edns.as_ref(), metadata, &answer, limit) {
            // RFC 2181 9: rather than a partial RRset, an empty answer with TC; the client
            // retries over TCP. The OPT record stays (RFC 6891 7).
            metadata.truncation = true;
            let response = builder.build_no_records(metadata);
            return send(&mut response_handle, response, request).await;
        }
        let response = build(builder, metadata, &answer);
        send(&mut response_handle, response, request).await
    }
}

/// An Extended DNS Error (RFC 8914): INFO-CODE 0 (Other Error) with the reason as EXTRA-TEXT.
fn extended_error(reason: &str) -> EdnsOption {
    const EDE: u16 = 15;
    let mut data = Vec::with_capacity(2 + reason.len());
    data.extend_from_slice(&0u16.to_be_bytes());
    data.extend_from_slice(reason.as_bytes());
    EdnsOption::Unknown(EDE, data)
}

/// Validates what the handler relies on; returns the query's ECS option, if any, or the rcode
/// of the error response.
fn check_request(request: &Request) -> Result<Option<ClientSubnet>, ResponseCode> {
    if request.metadata.op_code != OpCode::Query {
        return Err(ResponseCode::NotImp);
    }
    if request.queries.queries().len() != 1 {
        return Err(ResponseCode::FormErr);
    }
    let subnet = match request.edns.as_ref() {
        Some(edns) if edns.version() > 0 => return Err(ResponseCode::BADVERS),
        Some(edns) => match edns.option(EdnsCode::Subnet) {
            Some(EdnsOption::Subnet(subnet)) if valid_subnet(subnet) => Some(*subnet),
            Some(EdnsOption::Subnet(_)) => return Err(ResponseCode::FormErr),
            _ => None,
        },
        None => None,
    };
    let query = &request.queries.queries()[0];
    if query.query_class() != DNSClass::IN {
        return Err(ResponseCode::Refused);
    }
    if matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR) {
        return Err(ResponseCode::Refused);
    }
    Ok(subnet)
}

/// RFC 7871 6: the prefix fits the family and no address bit is set beyond it.
pub fn valid_subnet(subnet: &ClientSubnet) -> bool {
    let prefix = u32::from(subnet.source_prefix());
    match subnet.addr() {
        IpAddr::V4(v4) => prefix <= 32 && u32::from(v4).checked_shl(prefix).unwrap_or(0) == 0,
        IpAddr::V6(v6) => prefix <= 128 && u128::from(v6).checked_shl(prefix).unwrap_or(0) == 0,
    }
}

/// Exact check, for the rare answer whose upper bound exceeds the limit: encode it once.
fn fits(
    request: &Request,
    edns: Option<&Edns>,
    metadata: Metadata,
    answer: &Answer<'_>,
    limit: usize,
) -> bool {
    let response = build(
        MessageResponseBuilder::new(&request.queries, edns),
        metadata,
        answer,
    );
    let mut buffer = Vec::with_capacity(limit);
    let mut encoder = BinEncoder::new(&mut buffer);
    encoder.set_max_size(u16::try_from(limit).unwrap_or(u16::MAX));
    response
        .destructive_emit(&mut encoder)
        .is_ok_and(|info| !info.truncation)
}

fn build<'q, 'a>(
    builder: MessageResponseBuilder<'q>,
    metadata: Metadata,
    answer: &'a Answer<'a>,
) -> MessageResponse<
    'q,
    'a,
    impl Iterator<Item = &'a hickory_server::proto::rr::Record> + Send + 'a,
    impl Iterator<Item = &'a hickory_server::proto::rr::Record> + Send + 'a,
    impl Iterator<Item = &'a hickory_server::proto::rr::Record> + Send + 'a,
    impl Iterator<Item = &'a hickory_server::proto::rr::Record> + Send + 'a,
> {
    let answers = answer.answer_records();
    let authorities = answer.authority.into_iter().flat_map(|s| s.records());
    let additionals = answer.additional.iter().flat_map(|s| s.records());
    builder.build(
        metadata,
        answers,
        authorities,
        std::iter::empty(),
        additionals,
    )
}

async fn send<'a, R: ResponseHandler>(
    response_handle: &mut R,
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a hickory_server::proto::rr::Record> + Send + 'a,
        impl Iterator<Item = &'a hickory_server::proto::rr::Record> + Send + 'a,
        impl Iterator<Item = &'a hickory_server::proto::rr::Record> + Send + 'a,
        impl Iterator<Item = &'a hickory_server::proto::rr::Record> + Send + 'a,
    >,
    request: &Request,
) -> ResponseInfo {
    match response_handle.send_response(response).await {
        Ok(info) => info,
        Err(error) => {
            tracing::debug!(%error, src = %request.src(), "failed to send a response");
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            Header {
                metadata,
                counts: Default::default(),
            }
            .into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(addr: &str, source_prefix: u8) -> ClientSubnet {
        ClientSubnet::new(addr.parse().expect("address"), source_prefix, 0)
    }

    #[test]
    fn client_subnets_with_no_bits_beyond_the_prefix_are_valid() {
        assert!(valid_subnet(&subnet("192.0.2.0", 24)));
        assert!(valid_subnet(&subnet("192.0.2.77", 32)));
        assert!(valid_subnet(&subnet("0.0.0.0", 0)));
        assert!(valid_subnet(&subnet("2001:db8::", 32)));
        assert!(valid_subnet(&subnet("2001:db8:1:2::", 64)));
        assert!(valid_subnet(&subnet("::", 0)));
    }

    #[test]
    fn address_bits_beyond_the_source_prefix_are_invalid() {
        assert!(!valid_subnet(&subnet("192.0.2.1", 24)));
        assert!(!valid_subnet(&subnet("192.0.2.0", 16)));
        assert!(!valid_subnet(&subnet("1.0.0.0", 0)));
        assert!(!valid_subnet(&subnet("2001:db8::1", 64)));
    }

    #[test]
    fn prefixes_longer_than_the_family_are_invalid() {
        assert!(!valid_subnet(&subnet("192.0.2.0", 33)));
        assert!(!valid_subnet(&subnet("2001:db8::", 129)));
    }
}
