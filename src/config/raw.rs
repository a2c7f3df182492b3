//! The zone file exactly as written: serde shapes with source positions, no meaning yet.
//! `validate` turns these into the immutable types of the parent module.
//!
//! The same types generate the zone file's JSON Schema (`regiondns schema`): every key's doc
//! comment is its description, so the schema cannot drift from what the server reads.

use std::{collections::BTreeMap, fmt};

use schemars::JsonSchema;
use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{self, MapAccess, SeqAccess, Visitor},
};
use serde_saphyr::Spanned;

pub type Text = At<String>;

/// Where a value is written: its line and column, from 1.
#[derive(Clone, Copy, Debug)]
pub struct Position {
    pub line: u32,
    pub column: u32,
}

/// A value and where it is written. The parser's `Spanned` keeps two full locations (96 bytes)
/// beside every value; a large zone holds tens of thousands of them, and its parse time and
/// memory went to moving those, so only the position messages need is kept.
pub struct At<T> {
    pub value: T,
    pub at: Position,
}

impl<T> At<T> {
    fn from_spanned(spanned: Spanned<T>) -> At<T> {
        let location = spanned.referenced;
        At {
            value: spanned.value,
            at: Position {
                line: u32::try_from(location.line()).unwrap_or(u32::MAX),
                column: u32::try_from(location.column()).unwrap_or(u32::MAX),
            },
        }
    }
}

/// A mapping's entries in the order written. The parser refuses a key written twice, and
/// validation compares names as DNS does (`WWW` is `www`), so the keys need no index.
pub struct Entries<V>(Vec<(Text, V)>);

impl<V> Entries<V> {
    pub fn keys(&self) -> impl Iterator<Item = &Text> {
        self.0.iter().map(|(key, _)| key)
    }

    pub fn get(&self, index: usize) -> Option<&(Text, V)> {
        self.0.get(index)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<V> Default for Entries<V> {
    fn default() -> Self {
        Entries(Vec::new())
    }
}

impl<'a, V> IntoIterator for &'a Entries<V> {
    type Item = &'a (Text, V);
    type IntoIter = std::slice::Iter<'a, (Text, V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Entries<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<V>(std::marker::PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for EntriesVisitor<V> {
            type Value = Entries<V>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<V>, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }

        deserializer.deserialize_map(EntriesVisitor(std::marker::PhantomData))
    }
}

/// Written as the value alone: the schema states defaults (`[]`, `{}`) by serialising them.
impl<T: Serialize> Serialize for At<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(serializer)
    }
}

/// Written as a mapping, for the schema's defaults.
impl<V: Serialize> Serialize for Entries<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(key, value)| (key, value)))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for At<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Spanned::<T>::deserialize(deserializer).map(At::from_spanned)
    }
}

/// A regiondns zone file: one DNS zone, its regions and the services answered from them.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    /// The zone's name, e.g. `llm.example.com.` (the trailing dot may be left out).
    #[schemars(with = "String")]
    pub origin: Text,
    /// TTL in seconds of the SOA, the apex NS and static records without their own (default 3600).
    #[schemars(with = "Option<u32>")]
    pub ttl: Option<At<u32>>,
    /// The zone's SOA record.
    #[schemars(with = "Soa")]
    pub soa: At<Soa>,
    /// The apex name servers; those inside the zone need A or AAAA records under `records`.
    #[schemars(with = "Vec<String>")]
    pub ns: At<Vec<Text>>,
    /// Static records by name: relative to the origin, `@` for the apex.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Node>")]
    pub records: Entries<At<Node>>,
    /// The places services are answered from, by name.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Region>")]
    pub regions: Entries<At<Region>>,
    /// Names answered with the addresses of the region chosen for each client, by name
    /// relative to the origin.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Service>")]
    pub services: Entries<At<Service>>,
    /// Answer `_explain.<service>` TXT queries with how the client's answer is chosen (default
    /// false: it discloses configuration).
    #[serde(default)]
    pub explain: bool,
    /// Sign the zone's answers with DNSSEC (default: the zone is not signed).
    #[schemars(with = "Option<Dnssec>")]
    pub dnssec: Option<At<Dnssec>>,
    /// Receivers of the zone's failover events (state changes, drains, reloads): each gets
    /// every event as a JSON POST signed with HMAC-SHA256.
    #[serde(default)]
    #[schemars(with = "Vec<EventHook>")]
    pub events: Vec<At<EventHook>>,
    /// Zone transfers (AXFR, IXFR) to secondary servers, and the NOTIFYs that tell them of a
    /// change (default: no transfers).
    #[schemars(with = "Option<Transfer>")]
    pub transfer: Option<At<Transfer>>,
}

/// Who may transfer the zone, with which key, and whom to notify.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    /// The networks secondaries transfer from, e.g. `192.0.2.53/32` or `2001:db8::/48`.
    #[schemars(with = "Vec<String>")]
    pub to: At<Vec<Text>>,
    /// The TSIG key (a name in the `--tsig-keys` file) every transfer and NOTIFY is signed
    /// with (default: unsigned, by address alone).
    #[schemars(with = "Option<String>")]
    pub tsig: Option<Text>,
    /// Secondaries told of every change, `ADDR` or `ADDR:PORT` (`[V6]:PORT`; port 53 by
    /// default).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub notify: Vec<Text>,
}

/// A receiver of failover events.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventHook {
    /// Where events are POSTed: an http or https URL.
    #[schemars(with = "String")]
    pub url: Text,
    /// The HMAC-SHA256 key of the `X-Regiondns-Signature` header, usually `${VAR}` from the
    /// environment (at least 16 characters).
    #[schemars(with = "String")]
    pub secret: Text,
}

/// DNSSEC signing of the zone.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dnssec {
    /// The key file, made by `regiondns dnssec keygen` (relative to the zone file's directory;
    /// only its owner may read it).
    #[schemars(with = "String")]
    pub key: Text,
    /// How long a signature is valid from when it is made (default 14d).
    #[schemars(with = "Option<String>")]
    pub validity: Option<Text>,
    /// How long before a signature expires it is made again (default 7d; less than validity).
    #[schemars(with = "Option<String>")]
    pub refresh: Option<Text>,
    /// More key files whose DNSKEY is published beside the signing key's without signing
    /// anything: the incoming key before a roll, or the outgoing one after it.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub publish: Vec<Text>,
}

/// The SOA record.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Soa {
    /// The primary name server (MNAME); relative names are below the origin.
    #[schemars(with = "String")]
    pub primary: Text,
    /// The zone's contact (RNAME), as a mailbox name or an e-mail address.
    #[schemars(with = "String")]
    pub contact: Text,
    /// The serial (default: the file's modification time in seconds).
    pub serial: Option<u32>,
    /// SOA refresh in seconds (default 3600).
    pub refresh: Option<u32>,
    /// SOA retry in seconds (default 600).
    pub retry: Option<u32>,
    /// SOA expire in seconds (default 1209600).
    pub expire: Option<u32>,
    /// SOA minimum: negative answers are cached min(ttl, negative_ttl) seconds (default 60).
    #[schemars(with = "Option<u32>")]
    pub negative_ttl: Option<At<u32>>,
}

/// The static records of one name, keyed by type as in a zone file. Each value is one string or
/// a list of strings in zone-file presentation format.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// TTL in seconds of this name's records (default: the zone's ttl).
    #[schemars(with = "Option<u32>")]
    pub ttl: Option<At<u32>>,
    /// IPv4 addresses.
    #[serde(rename = "A")]
    #[schemars(with = "Option<OneOrMany>")]
    pub a: Option<Values>,
    /// IPv6 addresses.
    #[serde(rename = "AAAA")]
    #[schemars(with = "Option<OneOrMany>")]
    pub aaaa: Option<Values>,
    /// The canonical name; a CNAME stands alone.
    #[serde(rename = "CNAME")]
    #[schemars(with = "Option<OneOrMany>")]
    pub cname: Option<Values>,
    /// Texts: each string is one record.
    #[serde(rename = "TXT")]
    #[schemars(with = "Option<OneOrMany>")]
    pub txt: Option<Values>,
    /// `preference exchange`, e.g. `10 mail.example.com.`
    #[serde(rename = "MX")]
    #[schemars(with = "Option<OneOrMany>")]
    pub mx: Option<Values>,
    /// `priority weight port target`, e.g. `10 5 443 api.example.com.`
    #[serde(rename = "SRV")]
    #[schemars(with = "Option<OneOrMany>")]
    pub srv: Option<Values>,
    /// `flags tag value`, e.g. `0 issue "letsencrypt.org"`
    #[serde(rename = "CAA")]
    #[schemars(with = "Option<OneOrMany>")]
    pub caa: Option<Values>,
    /// Pointer targets.
    #[serde(rename = "PTR")]
    #[schemars(with = "Option<OneOrMany>")]
    pub ptr: Option<Values>,
    /// Name servers of a delegation below the zone (glue goes under their own names).
    #[serde(rename = "NS")]
    #[schemars(with = "Option<OneOrMany>")]
    pub ns: Option<Values>,
}

/// A place services are answered from.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// Where the region is, to find the nearest region to a client.
    #[schemars(with = "Location")]
    pub location: At<Location>,
    /// The region's addresses: A answers from the IPv4 ones, AAAA from the IPv6 ones.
    #[schemars(with = "Vec<String>")]
    pub addresses: At<Vec<Text>>,
    /// A health check; without one the region is always up.
    #[schemars(with = "Option<Check>")]
    pub check: Option<At<Check>>,
    /// Taken out of service by the operator (also settable through the admin API).
    #[serde(default)]
    pub drained: bool,
    /// The legal area the region belongs to (e.g. `eu`), for sovereignty rules.
    #[schemars(with = "Option<String>")]
    pub jurisdiction: Option<Text>,
    /// Relative share under `policy: weighted` (default 100; 0: only when no other can serve).
    #[schemars(with = "Option<u32>")]
    pub weight: Option<At<u32>>,
}

/// A region's health check: exactly one of `http` or `tcp`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// URL to request (http:// or https://); `${VAR}` is read from the environment.
    #[schemars(with = "Option<String>")]
    pub http: Option<Text>,
    /// `host:port` to connect to over TCP.
    #[schemars(with = "Option<String>")]
    pub tcp: Option<Text>,
    /// HTTP method: GET (default), HEAD, POST or PUT.
    #[schemars(with = "Option<String>")]
    pub method: Option<Text>,
    /// Request body, e.g. a one-token inference call; `${VAR}` is read from the environment.
    #[schemars(with = "Option<String>")]
    pub body: Option<Text>,
    /// Time between probes, e.g. `2s` (default 5s, at least 100ms).
    #[schemars(with = "Option<String>")]
    pub interval: Option<Text>,
    /// Time a probe may take, e.g. `1s` (default 2s, at most the interval).
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Text>,
    /// HTTP status codes that count as success (default: any 2xx).
    #[schemars(with = "Option<Vec<u16>>")]
    pub expect: Option<At<Vec<u16>>>,
    /// Request headers; `${VAR}` in a value is read from the environment.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub headers: Entries<Text>,
    /// Text the response body (read up to 64 KiB) must contain.
    #[schemars(with = "Option<String>")]
    pub body_contains: Option<Text>,
    /// Consecutive failures before the region is down (default 3).
    #[schemars(with = "Option<u32>")]
    pub fall: Option<At<u32>>,
    /// Consecutive successes before it is up again (default 2).
    #[schemars(with = "Option<u32>")]
    pub rise: Option<At<u32>>,
    /// A success slower than this counts as slow, e.g. `800ms` (default: never).
    #[schemars(with = "Option<String>")]
    pub slow: Option<Text>,
    /// Probes in the sliding window of the two rates (default 20).
    #[schemars(with = "Option<u32>")]
    pub window: Option<At<u32>>,
    /// Where the response says how loaded the region is: `{ header: X-Load }` or
    /// `{ json: /utilization }` (a JSON pointer into the body); a fraction of capacity
    /// (`0.92`) or a percentage (`92%`). Smoothed over `window`; http checks only.
    #[schemars(with = "Option<LoadReport>")]
    pub load: Option<At<LoadReport>>,
    /// Failures per window above this take the region down (default 0.5).
    #[schemars(with = "Option<f64>")]
    pub max_error_rate: Option<At<f64>>,
    /// Slow probes per window above this make the region degraded (default 0.5).
    #[schemars(with = "Option<f64>")]
    pub max_slow_rate: Option<At<f64>>,
}

/// Where a probe's response carries the region's load: exactly one of `header` or `json`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadReport {
    /// A response header, e.g. `X-Load`.
    #[schemars(with = "Option<String>")]
    pub header: Option<Text>,
    /// A JSON pointer into the response body, e.g. `/utilization`.
    #[schemars(with = "Option<String>")]
    pub json: Option<Text>,
}

/// Decimal degrees.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Location {
    /// Latitude, -90 to 90.
    pub lat: f64,
    /// Longitude, -180 to 180.
    pub lon: f64,
}

/// A name answered with the addresses of the region chosen for each client.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// TTL in seconds of its answers (default 30).
    #[schemars(with = "Option<u32>")]
    pub ttl: Option<At<u32>>,
    /// The candidate regions, in order: clients whose location is unknown get the first.
    #[schemars(with = "Vec<String>")]
    pub regions: At<Vec<Text>>,
    /// When every region is down: `nearest` (default: answer as if all were up) or `servfail`.
    #[schemars(with = "Option<String>")]
    pub when_all_down: Option<Text>,
    /// How eligible regions are ordered: `nearest` (default), `priority` (list order),
    /// `weighted` (by weight, stable per client subnet) or `latency` (by the round trips the
    /// latency table measured, else by distance).
    #[schemars(with = "Option<String>")]
    pub policy: Option<Text>,
    /// How many regions' addresses an answer carries, best first (1 to 8, default 1).
    #[schemars(with = "Option<u32>")]
    pub answers: Option<At<u32>>,
    /// Share of a degraded region's clients sent to the next region: `50%` or `0.5` (default
    /// 100%).
    #[schemars(with = "Option<Share>")]
    pub shed: Option<Text>,
    /// A region that takes a share of client subnets while it is up.
    #[schemars(with = "Option<Canary>")]
    pub canary: Option<At<Canary>>,
    /// The load a region should stay at or below, `80%` or `0.8`: above it, the region keeps
    /// about target / load of its clients and the rest go to their next region with headroom.
    /// Needs regions whose check reports `load`.
    #[schemars(with = "Option<Share>")]
    pub load_target: Option<Text>,
    /// How far the share of a region's clients moved for load may change per probe interval
    /// (default 10%).
    #[schemars(with = "Option<Share>")]
    pub load_step: Option<Text>,
    /// Rules matched on the client, first match wins.
    #[serde(default)]
    #[schemars(with = "Vec<Rule>")]
    pub rules: Vec<At<Rule>>,
    /// What a client with no usable location gets when no rule matched it (no GeoIP record,
    /// or one that cannot be read): `restricted` (default: only the regions every rule with
    /// `allow` allows, else the rules' `when_none`), `any` (every region of the service), or
    /// `refuse`, `servfail` or `nodata`.
    #[schemars(with = "Option<String>")]
    pub unlocated: Option<Text>,
    /// How `policy: latency` weighs measurements.
    #[schemars(with = "Option<Latency>")]
    pub latency: Option<At<Latency>>,
    /// What a secondary receives for the name, which cannot choose per client: `all` (default:
    /// the addresses of every region that is up), a region's name (its addresses), or `omit`
    /// (the name is left out). A service with rules that allow only some regions takes `omit`
    /// or a region every such rule allows.
    #[schemars(with = "Option<String>")]
    pub secondary: Option<Text>,
}

/// The settings of `policy: latency`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    /// Share of client subnets sent to another candidate region so that its round trip gets
    /// measured: `1%` (default) or `0.01`; `0` turns exploration off.
    #[schemars(with = "Option<Share>")]
    pub explore: Option<Text>,
    /// Samples a region needs (at one level: the network, its location, nearby, its country)
    /// for its measurement to count (default 20).
    #[schemars(with = "Option<u32>")]
    pub min_samples: Option<At<u32>>,
    /// The least gain that leaves the distance order: `10%` (default), and never under 5 ms.
    #[schemars(with = "Option<Share>")]
    pub better_by: Option<Text>,
}

/// A canary region and its share of client subnets.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    /// One of the service's regions.
    #[schemars(with = "String")]
    pub region: Text,
    /// Its share: `5%` or `0.05`.
    #[schemars(with = "Share")]
    pub share: Text,
}

/// A routing rule for the clients it matches.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Which clients the rule applies to.
    #[serde(rename = "match")]
    #[schemars(with = "Match")]
    pub matcher: At<Match>,
    /// The only regions matched clients may be sent to (sovereignty).
    #[schemars(with = "Option<Allow>")]
    pub allow: Option<At<Allow>>,
    /// With `allow`, the answer when no allowed region can serve: `refuse` (default),
    /// `servfail` or `nodata`.
    #[schemars(with = "Option<String>")]
    pub when_none: Option<Text>,
    /// Regions tried in this order before the policy's order.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub prefer: Vec<Text>,
}

/// Clients matched: every list given must match one of its entries.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Continent codes: AF, AN, AS, EU, NA, OC, SA.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub continent: Vec<Text>,
    /// ISO 3166 two-letter country codes.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub country: Vec<Text>,
    /// Networks in CIDR notation, e.g. `10.0.0.0/8`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub network: Vec<Text>,
}

/// Exactly one of `jurisdiction` or `regions`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Allow {
    /// Regions whose `jurisdiction` is one of these.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub jurisdiction: Vec<Text>,
    /// These regions.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub regions: Vec<Text>,
}

/// One value or a list of values.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)] // describes the YAML for the schema; `Values` reads it
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// A share: a percentage such as `5%`, or a fraction such as `0.05`.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)] // describes the YAML for the schema; validation reads it as text
enum Share {
    Percent(String),
    Fraction(f64),
}

/// The JSON Schema of a zone file.
pub fn schema() -> schemars::Schema {
    schemars::schema_for!(Zone)
}

/// One value or a list of values, each with its position: `A: 192.0.2.1` or `A: [a, b]`.
pub struct Values(pub Vec<Text>);

impl<'de> Deserialize<'de> for Values {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let At { value, at } = At::<ReadOneOrMany>::deserialize(deserializer)?;
        Ok(Values(match value {
            ReadOneOrMany::One(text) => vec![At { value: text, at }],
            ReadOneOrMany::Many(items) => items,
        }))
    }
}

enum ReadOneOrMany {
    One(String),
    Many(Vec<Text>),
}

impl<'de> Deserialize<'de> for ReadOneOrMany {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneOrManyVisitor;

        impl<'de> Visitor<'de> for OneOrManyVisitor {
            type Value = ReadOneOrMany;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value or a list of values")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ReadOneOrMany, E> {
                Ok(ReadOneOrMany::One(v.to_owned()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ReadOneOrMany, E> {
                Ok(ReadOneOrMany::One(v.to_string()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ReadOneOrMany, E> {
                Ok(ReadOneOrMany::One(v.to_string()))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ReadOneOrMany, E> {
                Ok(ReadOneOrMany::One(v.to_string()))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ReadOneOrMany, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Text>()? {
                    items.push(item);
                }
                Ok(ReadOneOrMany::Many(items))
            }
        }

        deserializer.deserialize_any(OneOrManyVisitor)
    }
}
