//! The catalog zone (RFC 9432, schema version 2): a zone, named by `--catalog`, that lists every
//! zone with `transfer`, so that secondaries (Knot, BIND, NSD) add and remove member zones by
//! themselves. It is made from the zone configurations whenever they are read, as one more
//! zone: served, transferred and notified like the others. A pure function of those
//! configurations; it reads no file and sends nothing.

use std::{path::PathBuf, sync::Arc};

use hickory_proto::{
    rr::{
        Name, RData,
        rdata::{PTR, TXT},
    },
    serialize::binary::BinEncodable,
};

use crate::{
    config::{Transfer, ZoneConfig},
    zone::{RecordSet, Soa, ZoneData, ZoneSource},
};

/// RFC 9432 4.2.1: the schema this catalog follows.
const SCHEMA_VERSION: &str = "2";

/// `zones` and, when `catalog` names one, the catalog of those with `transfer`. The catalog is
/// given to the members' secondaries: every network in their `to`, every `notify` target,
/// with the key they all name. Members naming different keys, or a zone file holding the
/// catalog's name, are an error. With no member there is no catalog to serve.
pub fn served(
    mut zones: Vec<ZoneConfig>,
    catalog: Option<&Name>,
) -> Result<Vec<ZoneConfig>, String> {
    let Some(name) = catalog else {
        return Ok(zones);
    };
    if let Some(clash) = zones.iter().find(|z| z.origin == *name) {
        return Err(format!(
            "--catalog {name}: {} serves a zone of that name",
            clash.source.display()
        ));
    }
    if let Some(catalog) = catalog_zone(name, &zones)? {
        zones.push(catalog);
    }
    Ok(zones)
}

/// The catalog zone of the transferred `zones`, `None` when no zone is transferred.
fn catalog_zone(name: &Name, zones: &[ZoneConfig]) -> Result<Option<ZoneConfig>, String> {
    let members: Vec<(&ZoneConfig, &Transfer)> = zones
        .iter()
        .filter_map(|z| Some((z, z.transfer.as_ref()?)))
        .collect();
    let Some(((_, first), _)) = members.split_first() else {
        return Ok(None);
    };
    if let Some((other, transfer)) = members.iter().find(|(_, t)| t.tsig != first.tsig) {
        let key = |t: &Transfer| t.tsig.as_ref().map_or("none".into(), Name::to_string);
        return Err(format!(
            "--catalog {name}: the transferred zones name different TSIG keys ({} names {}, \
             {} names {}); the catalog goes to one set of secondaries, with one key",
            members[0].0.origin,
            key(first),
            other.origin,
            key(transfer)
        ));
    }
    let mut transfer = Transfer {
        to: Vec::new(),
        tsig: first.tsig.clone(),
        notify: Vec::new(),
    };
    for (_, t) in &members {
        for network in &t.to {
            if !transfer.to.contains(network) {
                transfer.to.push(*network);
            }
        }
        for target in &t.notify {
            if !transfer.notify.contains(target) {
                transfer.notify.push(*target);
            }
        }
    }
    let origins: Vec<&Name> = members.iter().map(|(z, _)| &z.origin).collect();
    let floor = members.iter().map(|(z, _)| z.soa.serial).max().unwrap_or(1);
    Ok(Some(zone_config(name, &origins, floor, transfer)?))
}

/// The catalog as a zone: the SOA and `NS invalid.` of RFC 9432 4.1, its version, and a PTR
/// per member under `zones`, each owned by a label derived from the member's name alone, so
/// that every instance of a fleet, and every restart, names a member alike.
fn zone_config(
    name: &Name,
    members: &[&Name],
    serial: u32,
    transfer: Transfer,
) -> Result<ZoneConfig, String> {
    let invalid = Name::root()
        .prepend_label("invalid")
        .map_err(|e| e.to_string())?;
    let soa = Soa {
        primary: invalid.clone(),
        contact: invalid.clone(),
        serial,
        refresh: 60,
        retry: 10,
        expire: 2_147_483_646,
        negative_ttl: 0,
    };
    let under = |label: &str, parent: &Name| {
        parent
            .prepend_label(label)
            .map_err(|e| format!("--catalog {name}: {e}"))
    };
    let version = TXT::new(vec![SCHEMA_VERSION.to_owned()]);
    let mut records = vec![record_set(under("version", name)?, RData::TXT(version))];
    let zones = under("zones", name)?;
    for member in members {
        let owner = under(&member_label(member), &zones)?;
        records.push(record_set(owner, RData::PTR(PTR((*member).clone()))));
    }
    let text: Vec<String> = members.iter().map(|m| m.to_string()).collect();
    let digest = xxhash_rust::xxh3::xxh3_64(format!("{name} {}", text.join(" ")).as_bytes());
    let nameservers = [invalid];
    let data = ZoneData::build(ZoneSource {
        origin: name,
        ttl: 0,
        soa: &soa,
        nameservers: &nameservers,
        records,
        services: Vec::new(),
        signer: None,
    });
    Ok(ZoneConfig {
        source: PathBuf::from(format!("--catalog {name}")),
        origin: name.clone(),
        ttl: 0,
        soa,
        nameservers: nameservers.to_vec(),
        data: Arc::new(data),
        regions: Vec::new(),
        services: Vec::new(),
        explain: false,
        dnssec: None,
        events: Vec::new(),
        transfer: Some(transfer),
        digest,
    })
}

fn record_set(name: Name, rdata: RData) -> RecordSet {
    RecordSet {
        name,
        record_type: rdata.record_type(),
        ttl: 0,
        rdata: vec![rdata],
    }
}

/// A member's unique label (RFC 9432 4.1): the hex of the first 10 bytes of the SHA-256 of its
/// name in lower-case wire form.
fn member_label(member: &Name) -> String {
    let wire = member.to_lowercase().to_bytes().unwrap_or_default();
    let digest = ring::digest::digest(&ring::digest::SHA256, &wire);
    digest.as_ref()[..10]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use hickory_proto::rr::RecordType;

    use super::*;
    use crate::{config, zone::Lookup};

    fn zone(origin: &str, transfer: &str) -> ZoneConfig {
        let text = format!(
            "origin: {origin}\nsoa: {{ primary: ns1.{origin}, contact: h.{origin}, serial: 7 }}\n\
             ns: [ns1.{origin}]\nrecords:\n  ns1: {{ A: [192.0.2.1] }}\n{transfer}"
        );
        config::parse(Path::new("t.yaml"), &text, 1).expect("a valid zone")
    }

    fn name(text: &str) -> Name {
        text.parse().expect("a name")
    }

    fn transferred(origin: &str, key: &str, to: &str, notify: &str) -> ZoneConfig {
        let transfer = format!("transfer: {{ to: [{to}], tsig: {key}, notify: [\"{notify}\"] }}\n");
        zone(origin, &transfer)
    }

    #[test]
    fn the_catalog_lists_every_transferred_zone_and_goes_to_all_their_secondaries() {
        let zones = vec![
            transferred("a.example.", "k.", "192.0.2.0/24", "192.0.2.53:53"),
            zone("b.example.", ""),
            transferred("c.example.", "k.", "198.51.100.0/24", "192.0.2.53:53"),
        ];
        let catalog = name("catalog.invalid.");
        let served = served(zones, Some(&catalog)).expect("a catalog");
        assert_eq!(served.len(), 4);
        let made = &served[3];
        assert_eq!(made.origin, catalog);
        let transfer = made.transfer.as_ref().expect("transferred");
        assert_eq!(transfer.tsig, Some(name("k.")));
        assert_eq!(transfer.to.len(), 2);
        assert_eq!(transfer.notify.len(), 1);
        assert_eq!(made.soa.serial, 7, "the members' serial is its floor");
        let version = made
            .data
            .lookup(&wire("version.catalog.invalid."), RecordType::TXT);
        let Lookup::Found(version) = version else {
            panic!("a version: {version:?}")
        };
        let two = RData::TXT(TXT::new(vec!["2".into()]));
        assert_eq!(version.records()[0].data, two);
        let members: Vec<String> = made
            .data
            .rrsets()
            .filter(|s| s.record_type() == Some(RecordType::PTR))
            .flat_map(|s| s.records())
            .map(|r| format!("{} {}", r.name, r.data))
            .collect();
        let label = |m: &str| member_label(&name(m));
        assert_eq!(members.len(), 2, "{members:?}");
        for member in ["a.example.", "c.example."] {
            let line = format!("{}.zones.catalog.invalid. {member}", label(member));
            assert!(members.contains(&line), "{line} in {members:?}");
        }
        assert_eq!(
            label("A.Example."),
            label("a.example."),
            "a name's label ignores case"
        );
        assert_ne!(label("a.example."), label("c.example."));
    }

    fn wire(text: &str) -> Vec<u8> {
        name(text).to_lowercase().to_bytes().expect("wire")
    }

    #[test]
    fn members_with_different_keys_or_a_zone_of_the_catalogs_name_are_refused() {
        let catalog = name("catalog.invalid.");
        let zones = vec![
            transferred("a.example.", "k.", "192.0.2.0/24", "192.0.2.53:53"),
            transferred("c.example.", "other.", "192.0.2.0/24", "192.0.2.53:53"),
        ];
        let error = served(zones, Some(&catalog)).expect_err("two keys");
        assert!(
            error.contains("a.example. names k., c.example. names other."),
            "{error}"
        );
        let clash = vec![zone("catalog.invalid.", "")];
        let error = served(clash, Some(&catalog)).expect_err("a clash");
        assert_eq!(
            error,
            "--catalog catalog.invalid.: t.yaml serves a zone of that name"
        );
        let untransferred = served(vec![zone("b.example.", "")], Some(&catalog));
        assert_eq!(
            untransferred.map(|z| z.len()),
            Ok(1),
            "no member, no catalog"
        );
    }
}
