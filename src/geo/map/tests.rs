use mmdb_writer::IpVersion;
use serde_json::{Value, json};

use super::*;

/// Opens one `.mmdb` file per entry, in order (the files are read whole: their directory
/// may go).
fn geoip(files: &[(IpVersion, &[(&str, Value)])]) -> GeoIp {
    crate::geo::tests::geoip(files).1
}

fn at(country: &str, continent: &str, lat: f64, lon: f64) -> Value {
    json!({"country": {"iso_code": country}, "continent": {"code": continent},
        "location": {"latitude": lat, "longitude": lon}})
}

/// Leaves by country (and unknown), decisions by hemisphere: east or west of Greenwich.
#[derive(Default)]
struct ByCountry {
    leaves: Vec<Option<String>>,
    boundaries: Vec<ipnet::IpNet>,
}

impl ByCountry {
    fn leaf_of(&self, hit: Hit) -> Option<String> {
        self.leaves.get(hit.leaf as usize).cloned().flatten()
    }
}

impl Classifier for ByCountry {
    fn boundaries(&self) -> &[ipnet::IpNet] {
        &self.boundaries
    }

    fn classify(&mut self, located: &Located, _: LookupResult, first: IpAddr) -> Leaf {
        let inside = self.boundaries.iter().any(|n| n.contains(&first));
        let country = match located {
            Located::Known(l) => l.country.map(|c| c.to_string()),
            Located::Unknown { .. } => None,
        }
        .map(|c| if inside { format!("{c}+") } else { c });
        let decision = match located.coordinates() {
            Some(c) if c.lon >= 0.0 => 1,
            Some(_) => 2,
            None => 0,
        } + if inside { 10 } else { 0 };
        let id = match self.leaves.iter().position(|l| *l == country) {
            Some(id) => id,
            None => {
                self.leaves.push(country);
                self.leaves.len() - 1
            }
        };
        Leaf {
            id: id as u32,
            decision,
        }
    }
}

fn compiled(geo: &GeoIp, classifier: &mut ByCountry) -> (NetworkMap, Compiled) {
    let (mut maps, compiled) = compile(geo, vec![classifier]).expect("compiled");
    (maps.remove(0), compiled)
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// Gives every network a leaf id past what a map holds.
struct BeyondTheLimit;

impl Classifier for BeyondTheLimit {
    fn boundaries(&self) -> &[ipnet::IpNet] {
        &[]
    }

    fn classify(&mut self, _: &Located, _: LookupResult, _: IpAddr) -> Leaf {
        Leaf {
            id: MAX_LEAVES,
            decision: 0,
        }
    }
}

#[test]
fn a_leaf_id_the_map_cannot_hold_fails_the_compilation_instead_of_merging_places() {
    let geo = geoip(&[(
        IpVersion::V6,
        &[("192.0.2.0/24", at("FR", "EU", 48.9, 2.4))],
    )]);
    let error = compile(&geo, vec![&mut BeyondTheLimit]).expect_err("refused");
    assert!(error.to_string().contains("distinct places"), "{error}");
}

#[test]
fn siblings_of_one_decision_share_the_widest_scope_and_keep_their_own_leaves() {
    let geo = geoip(&[(
        IpVersion::V6,
        &[
            ("192.0.2.0/26", at("FR", "EU", 48.9, 2.4)),
            ("192.0.2.64/26", at("FR", "EU", 43.3, 5.4)),
            ("192.0.2.128/25", at("MA", "AF", 33.6, -7.6)),
            ("198.51.100.0/25", at("DE", "EU", 52.5, 13.4)),
            ("198.51.100.128/25", at("JP", "AS", 35.7, 139.7)),
        ],
    )]);
    let mut by_country = ByCountry::default();
    let (map, _) = compiled(&geo, &mut by_country);
    let paris = map.lookup(ip("192.0.2.1"));
    assert_eq!(by_country.leaf_of(paris).as_deref(), Some("FR"));
    assert_eq!(
        paris.scope, 25,
        "Paris and Marseille merge: one leaf, one decision"
    );
    assert_eq!(map.lookup(ip("192.0.2.100")), paris, "the same leaf");
    let casablanca = map.lookup(ip("192.0.2.200"));
    assert_eq!(by_country.leaf_of(casablanca).as_deref(), Some("MA"));
    assert_eq!(casablanca.scope, 25, "west of Greenwich: another decision");
    let berlin = map.lookup(ip("198.51.100.1"));
    let tokyo = map.lookup(ip("198.51.100.200"));
    assert_eq!(by_country.leaf_of(berlin).as_deref(), Some("DE"));
    assert_eq!(by_country.leaf_of(tokyo).as_deref(), Some("JP"));
    assert_eq!(
        (berlin.scope, tokyo.scope),
        (24, 24),
        "two leaves of one decision: the scope spans both"
    );
    let nowhere = map.lookup(ip("203.0.113.1"));
    assert_eq!(by_country.leaf_of(nowhere), None);
    assert!(
        nowhere.scope < 24,
        "an empty subtree is wide: /{}",
        nowhere.scope
    );
}

#[test]
fn undecodable_records_are_counted_and_unknown_at_their_own_length() {
    let geo = geoip(&[(
        IpVersion::V4,
        &[
            ("192.0.2.0/25", json!({"country_code": 49})),
            ("198.51.100.0/25", json!({"country_code": 49})),
            ("198.51.100.128/25", json!({"country_code": "DE"})),
        ],
    )]);
    let mut by_country = ByCountry::default();
    let (map, compiled) = compiled(&geo, &mut by_country);
    assert_eq!(compiled.undecodable, 1, "one record, counted once");
    for address in ["192.0.2.1", "198.51.100.1"] {
        let hit = map.lookup(ip(address));
        assert_eq!(by_country.leaf_of(hit), None, "unknown");
        assert_eq!(hit.scope, 25, "{address}: at its own length, never /0");
    }
    let beside = map.lookup(ip("192.0.2.129"));
    assert_eq!(by_country.leaf_of(beside), None, "no data: unknown too");
    assert_eq!(beside.scope, 25, "not merged with the undecodable network");
    assert_eq!(
        by_country
            .leaf_of(map.lookup(ip("198.51.100.200")))
            .as_deref(),
        Some("DE")
    );
}

#[test]
fn ipv6_names_for_the_ipv4_tree_find_its_leaves() {
    let geo = geoip(&[(
        IpVersion::V6,
        &[
            ("192.0.2.0/24", at("FR", "EU", 48.9, 2.4)),
            ("2001:db8::/32", at("JP", "AS", 35.7, 139.7)),
        ],
    )]);
    let mut by_country = ByCountry::default();
    let (map, _) = compiled(&geo, &mut by_country);
    let v4 = map.lookup(ip("192.0.2.1"));
    assert_eq!(by_country.leaf_of(v4).as_deref(), Some("FR"));
    for (alias, offset) in [
        ("::ffff:192.0.2.1", 0),
        ("::192.0.2.1", 96),
        ("2002:c000:201::1", 16),
        ("2001:0:c000:201::1", 32),
    ] {
        let hit = map.lookup(ip(alias));
        assert_eq!(hit.leaf, v4.leaf, "{alias}");
        assert_eq!(hit.scope, offset + v4.scope, "{alias}");
        assert_eq!(hit, geo_hit(&geo, &by_country, &map, alias), "{alias}");
    }
    let japan = map.lookup(ip("2001:db8:1::1"));
    assert_eq!(by_country.leaf_of(japan).as_deref(), Some("JP"));
}

/// The map's hit for `address`, checked against the database's own lookup.
fn geo_hit(geo: &GeoIp, by_country: &ByCountry, map: &NetworkMap, address: &str) -> Hit {
    let located = geo.locate(ip(address));
    let country = match located {
        Located::Known(l) => l.country.map(|c| c.to_string()),
        Located::Unknown { .. } => None,
    };
    let hit = map.lookup(ip(address));
    assert_eq!(by_country.leaf_of(hit), country, "{address}");
    hit
}

#[test]
fn the_first_file_that_locates_an_address_decides() {
    let geo = geoip(&[
        (
            IpVersion::V4,
            &[
                ("192.0.2.0/25", at("FR", "EU", 48.9, 2.4)),
                ("198.51.100.0/24", json!({"city": "nowhere"})),
            ],
        ),
        (
            IpVersion::V6,
            &[
                ("192.0.2.0/24", at("US", "NA", 40.7, -74.0)),
                ("198.51.100.0/23", at("BR", "SA", -23.5, -46.6)),
                ("2001:db8::/32", at("JP", "AS", 35.7, 139.7)),
            ],
        ),
    ]);
    let mut by_country = ByCountry::default();
    let (map, _) = compiled(&geo, &mut by_country);
    let country = |s: &str| by_country.leaf_of(map.lookup(ip(s)));
    assert_eq!(country("192.0.2.1").as_deref(), Some("FR"), "first file");
    assert_eq!(
        country("192.0.2.200").as_deref(),
        Some("US"),
        "the second where the first has nothing"
    );
    assert_eq!(
        country("198.51.100.7").as_deref(),
        Some("BR"),
        "a record without a place"
    );
    assert_eq!(country("198.51.101.7").as_deref(), Some("BR"));
    assert_eq!(
        country("2001:db8::1").as_deref(),
        Some("JP"),
        "IPv6 skips the IPv4 file"
    );
}

#[test]
fn a_boundary_splits_the_networks_it_cuts() {
    let geo = geoip(&[(IpVersion::V6, &[("10.0.0.0/8", at("DE", "EU", 52.5, 13.4))])]);
    let mut by_country = ByCountry {
        boundaries: vec!["10.1.0.0/16".parse().expect("network")],
        ..ByCountry::default()
    };
    let (map, _) = compiled(&geo, &mut by_country);
    let inside = map.lookup(ip("10.1.2.3"));
    assert_eq!(by_country.leaf_of(inside).as_deref(), Some("DE+"));
    assert_eq!(inside.scope, 16);
    let outside = map.lookup(ip("10.2.0.1"));
    assert_eq!(by_country.leaf_of(outside).as_deref(), Some("DE"));
    assert_eq!(outside.scope, 15, "the widest network beside the boundary");
}

#[test]
fn every_address_finds_the_leaf_of_its_own_record() {
    let mut networks = Vec::new();
    let places = [
        ("FR", "EU", 48.9, 2.4),
        ("US", "NA", 40.7, -74.0),
        ("JP", "AS", 35.7, 139.7),
        ("BR", "SA", -23.5, -46.6),
    ];
    let mut seed = 7u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut taken = std::collections::HashSet::new();
    for _ in 0..300 {
        let (len, bits) = (8 + next() % 17, next() as u32);
        let net = ipnet::Ipv4Net::new(bits.into(), len as u8)
            .expect("net")
            .trunc();
        if taken
            .iter()
            .any(|t: &ipnet::Ipv4Net| t.contains(&net) || net.contains(t))
        {
            continue;
        }
        taken.insert(net);
        let (c, k, lat, lon) = places[(next() % 4) as usize];
        networks.push((net.to_string(), at(c, k, lat, lon)));
    }
    let v6: Vec<(String, Value)> = (0..100u32)
        .map(|i| (format!("2001:db8:{i:x}::/48"), at("JP", "AS", 35.7, 139.7)))
        .collect();
    let all: Vec<(&str, Value)> = networks
        .iter()
        .chain(&v6)
        .map(|(n, v)| (n.as_str(), v.clone()))
        .collect();
    let geo = geoip(&[(IpVersion::V6, &all)]);
    let mut by_country = ByCountry::default();
    let (map, _) = compiled(&geo, &mut by_country);
    for i in 0..20_000u32 {
        let address = match i % 4 {
            0 | 1 => IpAddr::V4((next() as u32).into()),
            2 => IpAddr::V6((0x2001_0db8_u128 << 96 | u128::from(next() as u16) << 80).into()),
            _ => IpAddr::V6(u128::from(next()).rotate_left(64).into()),
        };
        geo_hit(&geo, &by_country, &map, &address.to_string());
    }
}
