//! The zone file exactly as written: serde shapes with source positions, no meaning yet.
//! `validate` turns these into the immutable types of the parent module.

use std::fmt;

use indexmap::IndexMap;
use serde::{
    Deserialize, Deserializer,
    de::{self, SeqAccess, Visitor},
};
use serde_saphyr::Spanned;

pub type Text = Spanned<String>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    pub origin: Text,
    pub ttl: Option<Spanned<u32>>,
    pub soa: Spanned<Soa>,
    pub ns: Spanned<Vec<Text>>,
    #[serde(default)]
    pub records: IndexMap<Text, Spanned<Node>>,
    #[serde(default)]
    pub regions: IndexMap<Text, Spanned<Region>>,
    #[serde(default)]
    pub services: IndexMap<Text, Spanned<Service>>,
    #[serde(default)]
    pub explain: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Soa {
    pub primary: Text,
    pub contact: Text,
    pub serial: Option<u32>,
    pub refresh: Option<u32>,
    pub retry: Option<u32>,
    pub expire: Option<u32>,
    pub negative_ttl: Option<Spanned<u32>>,
}

/// The static records of one name, keyed by type as in a zone file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub ttl: Option<u32>,
    #[serde(rename = "A")]
    pub a: Option<Values>,
    #[serde(rename = "AAAA")]
    pub aaaa: Option<Values>,
    #[serde(rename = "CNAME")]
    pub cname: Option<Values>,
    #[serde(rename = "TXT")]
    pub txt: Option<Values>,
    #[serde(rename = "MX")]
    pub mx: Option<Values>,
    #[serde(rename = "SRV")]
    pub srv: Option<Values>,
    #[serde(rename = "CAA")]
    pub caa: Option<Values>,
    #[serde(rename = "PTR")]
    pub ptr: Option<Values>,
    #[serde(rename = "NS")]
    pub ns: Option<Values>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    pub location: Spanned<Location>,
    pub addresses: Spanned<Vec<Text>>,
    pub check: Option<Spanned<Check>>,
    #[serde(default)]
    pub drained: bool,
    pub jurisdiction: Option<Text>,
    pub weight: Option<Spanned<u32>>,
}

/// A region's health check, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub http: Option<Text>,
    pub tcp: Option<Text>,
    pub method: Option<Text>,
    pub body: Option<Text>,
    pub interval: Option<Text>,
    pub timeout: Option<Text>,
    pub expect: Option<Spanned<Vec<u16>>>,
    #[serde(default)]
    pub headers: IndexMap<Text, Text>,
    pub body_contains: Option<Text>,
    pub fall: Option<Spanned<u32>>,
    pub rise: Option<Spanned<u32>>,
    pub slow: Option<Text>,
    pub window: Option<Spanned<u32>>,
    pub max_error_rate: Option<Spanned<f64>>,
    pub max_slow_rate: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub ttl: Option<u32>,
    pub regions: Spanned<Vec<Text>>,
    pub when_all_down: Option<Text>,
    pub policy: Option<Text>,
    pub answers: Option<Spanned<u32>>,
    /// A share: `50%` or `0.5`.
    pub shed: Option<Text>,
    pub canary: Option<Spanned<Canary>>,
    #[serde(default)]
    pub rules: Vec<Spanned<Rule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    pub region: Text,
    pub share: Text,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(rename = "match")]
    pub matcher: Spanned<Match>,
    pub allow: Option<Spanned<Allow>>,
    pub when_none: Option<Text>,
    #[serde(default)]
    pub prefer: Vec<Text>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    #[serde(default)]
    pub continent: Vec<Text>,
    #[serde(default)]
    pub country: Vec<Text>,
    #[serde(default)]
    pub network: Vec<Text>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allow {
    #[serde(default)]
    pub jurisdiction: Vec<Text>,
    #[serde(default)]
    pub regions: Vec<Text>,
}

/// One value or a list of values, each with its position: `A: 192.0.2.1` or `A: [a, b]`.
pub struct Values(pub Vec<Text>);

impl<'de> Deserialize<'de> for Values {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Spanned {
            value,
            referenced,
            defined,
        } = Spanned::<OneOrMany>::deserialize(deserializer)?;
        Ok(Values(match value {
            OneOrMany::One(text) => vec![Spanned::new(text, referenced, defined)],
            OneOrMany::Many(items) => items,
        }))
    }
}

enum OneOrMany {
    One(String),
    Many(Vec<Text>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneOrManyVisitor;

        impl<'de> Visitor<'de> for OneOrManyVisitor {
            type Value = OneOrMany;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value or a list of values")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_owned()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_string()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_string()))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_string()))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Text>()? {
                    items.push(item);
                }
                Ok(OneOrMany::Many(items))
            }
        }

        deserializer.deserialize_any(OneOrManyVisitor)
    }
}
