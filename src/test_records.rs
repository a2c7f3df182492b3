//! Records of the zone `example.` for unit tests: its SOA at a serial, and A records in
//! 192.0.2.0/24. Compiled for tests only.

use hickory_proto::rr::{
    Name, RData, Record,
    rdata::{A, SOA},
};

pub fn name(text: &str) -> Name {
    text.parse().expect("a name")
}

/// `example. 3600 SOA ns1.example. h.example. SERIAL 3600 600 86400 30`.
pub fn soa(serial: u32) -> Record {
    let soa = SOA::new(
        name("ns1.example."),
        name("h.example."),
        serial,
        3600,
        600,
        86400,
        30,
    );
    Record::from_rdata(name("example."), 3600, RData::SOA(soa))
}

/// `OWNER 60 A 192.0.2.LAST`.
pub fn a(owner: &str, last: u8) -> Record {
    Record::from_rdata(name(owner), 60, RData::A(A::new(192, 0, 2, last)))
}
