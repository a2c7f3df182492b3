//! The GeoIP databases compiled into network maps, as gdnsd compiles its own: every network
//! of the databases is walked once, IPv4 and IPv6, each is given a leaf by a [`Classifier`]
//! (routing's facts for the clients there), sibling networks with equal leaves are merged and a
//! network covered by an equal supernet dropped, so that every network is as wide as it can be.
//! A query is then one walk of a small trie: no record decoded, nothing hashed.
//!
//! A leaf also names its decision: leaves that differ only in what is counted (a continent for
//! the answer shares) keep their own leaves but share a decision, and the scope a lookup gives
//! is the widest network over which the decision holds, so counting never narrows an answer's
//! ECS scope. This module knows nothing of regions or rules: the classifier does; it owns the
//! walk of the databases, the merge and the trie. It runs off the query path, at start and at
//! every reload, and never fails a query: a lookup always finds a leaf.
//!
//! Here: the walk in parts over the cores and the lookup. [`overlay`] reads the files, one
//! network at a time, into classes; [`build`] merges them into subtrees; [`trie`] is what a
//! lookup walks.

use std::{
    net::IpAddr,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

mod build;
mod overlay;
mod trie;

#[cfg(test)]
mod tests;

use build::{Boundaries, Builder, Subtree};
use overlay::{ALIAS_BASE, Classes, overlay};
use trie::Trie;

/// Hash maps keyed by numbers the databases hold: they hash often while compiling, and
/// nothing outside chooses their keys to collide.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;

use maxminddb::MaxMindDbError;

use super::{GeoIp, Located, LookupResult};

/// What a classifier makes of the clients of one network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leaf {
    /// Given back by [`NetworkMap::lookup`]; below [`MAX_LEAVES`].
    pub id: u32,
    /// Leaves of equal decisions answer alike: the scope spans them all.
    pub decision: u32,
}

/// Leaf ids a map holds at most.
pub const MAX_LEAVES: u32 = ALIAS_BASE;

/// Turns what the databases say of a network into a leaf. Shared by the threads of a walk.
pub trait Classifier: Send {
    /// Networks whose inside and outside may classify differently (a rule's networks): no
    /// network the classifier is asked about straddles one.
    fn boundaries(&self) -> &[ipnet::IpNet];
    /// The leaf of the network starting at `first`, located as `located` says (`lookup`
    /// tells how: an undecodable record is unknown).
    fn classify(&mut self, located: &Located, lookup: LookupResult, first: IpAddr) -> Leaf;
}

/// What a lookup in a [`NetworkMap`] finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub leaf: u32,
    /// How many leading bits of the address the leaf's decision holds for: the ECS scope.
    pub scope: u8,
}

/// Networks to leaves, for IPv4 and IPv6. The default maps everything to leaf 0.
#[derive(Debug, Clone, Default)]
pub struct NetworkMap {
    v4: Trie,
    v6: Trie,
}

/// Figures of one compilation, for the log and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compiled {
    /// Networks of the databases walked (after overlaying several files).
    pub networks: u64,
    /// Records that could not be decoded: their networks are unknown, at their own length.
    pub undecodable: u64,
}

/// Walks every database of `geo` once and builds one map per classifier. The walk is split
/// in parts (IPv6, then IPv4 in eighths) that the available cores take in turn; the
/// classifiers are shared behind a lock, asked once per distinct record and part.
pub fn compile(
    geo: &GeoIp,
    classifiers: Vec<&mut dyn Classifier>,
) -> Result<(Vec<NetworkMap>, Compiled), MaxMindDbError> {
    let shared: Vec<Mutex<&mut dyn Classifier>> = classifiers.into_iter().map(Mutex::new).collect();
    let boundaries: Vec<[Boundaries; 2]> = shared
        .iter()
        .map(|c| {
            let c = c.lock().unwrap_or_else(|e| e.into_inner());
            let networks = c.boundaries();
            [Family::V4, Family::V6].map(|family| Boundaries::new(family, networks))
        })
        .collect();
    // IPv4 holds most networks, unevenly: eighths keep every core busy to the end.
    let eighths =
        (0..IPV4_PARTS).map(|i| Part::new(Family::V4, i << (32 - IPV4_SPLIT), IPV4_SPLIT));
    let parts: Vec<Part> = std::iter::once(Part::new(Family::V6, 0, 0))
        .chain(eighths)
        .collect();
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(parts.len()));
    let walk = || {
        let mut done = Vec::new();
        while let Some(part) = parts.get(next.fetch_add(1, Ordering::Relaxed)) {
            done.push((*part, part.walk(geo, &shared, &boundaries)));
        }
        done
    };
    let mut walked: Vec<(Part, Result<Walked, MaxMindDbError>)> = std::thread::scope(|scope| {
        let running: Vec<_> = (0..workers).map(|_| scope.spawn(walk)).collect();
        running
            .into_iter()
            .flat_map(|worker| worker.join().unwrap_or_default())
            .collect()
    });
    if walked.len() != parts.len() {
        return Err(MaxMindDbError::invalid_input(
            "a walk of the GeoIP databases died",
        ));
    }
    walked.sort_by_key(|(part, _)| (part.family == Family::V6, part.start));
    let mut compiled = Compiled::default();
    let mut subtrees = Vec::new();
    for (_, result) in walked {
        let walked = result?;
        compiled.networks += walked.networks;
        compiled.undecodable += walked.undecodable;
        subtrees.push(walked.subtrees);
    }
    let maps = (0..shared.len())
        .map(|i| {
            let mut parts = subtrees.iter_mut().map(|part| std::mem::take(&mut part[i]));
            let v4: Vec<Subtree> = parts.by_ref().take(IPV4_PARTS as usize).collect();
            NetworkMap {
                v4: Trie::ipv4(&Subtree::joined_all(v4)),
                v6: Trie::of(&parts.next().unwrap_or_default()),
            }
        })
        .collect();
    Ok((maps, compiled))
}

/// IPv4 is walked in 2^IPV4_SPLIT parts.
const IPV4_SPLIT: u8 = 3;
const IPV4_PARTS: u128 = 1 << IPV4_SPLIT;

/// A part of one family's space, walked on its own: the network `start`/`len`.
#[derive(Debug, Clone, Copy)]
struct Part {
    family: Family,
    start: u128,
    len: u8,
}

/// What the walk of a part made: one subtree per classifier.
#[derive(Default)]
struct Walked {
    subtrees: Vec<Subtree>,
    networks: u64,
    undecodable: u64,
}

impl Part {
    fn new(family: Family, start: u128, len: u8) -> Part {
        Part { family, start, len }
    }

    fn last(&self) -> u128 {
        self.start
            | self
                .family
                .last()
                .checked_shr(u32::from(self.len))
                .unwrap_or(0)
    }

    fn walk(
        &self,
        geo: &GeoIp,
        classifiers: &[Mutex<&mut dyn Classifier>],
        boundaries: &[[Boundaries; 2]],
    ) -> Result<Walked, MaxMindDbError> {
        let mut classes = Classes::new(geo.databases.len());
        let mut builders: Vec<Builder> = boundaries
            .iter()
            .map(|b| Builder::new(self.family, &b[usize::from(self.family == Family::V6)]))
            .collect();
        let mut networks = 0;
        overlay(geo, *self, &mut classes, |start, len, class, classes| {
            networks += 1;
            for (builder, classifier) in builders.iter_mut().zip(classifiers) {
                builder.piece(start, len, class, classes, classifier);
            }
        })?;
        if builders.iter().any(|b| b.beyond_limit) {
            return Err(MaxMindDbError::invalid_input(format!(
                "a service's rules and regions make more than {MAX_LEAVES} distinct places, more \
                 than the network map holds apart: fewer regions or rules per service"
            )));
        }
        Ok(Walked {
            subtrees: builders.into_iter().map(|b| b.finish(self.len)).collect(),
            networks,
            undecodable: classes.undecodable,
        })
    }
}

impl NetworkMap {
    /// The leaf of `ip` (IPv4-mapped IPv6 is IPv4) and the scope it holds for.
    pub fn lookup(&self, ip: IpAddr) -> Hit {
        match ip.to_canonical() {
            IpAddr::V4(v4) => self.v4.walk(u128::from(u32::from(v4)) << 96),
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let hit = self.v6.walk(bits);
                match hit.leaf.checked_sub(ALIAS_BASE) {
                    // An IPv6 network that the database stores as its IPv4 tree (::/96,
                    // 6to4, Teredo): the 32 bits after it are looked up as IPv4.
                    Some(at) if at < 128 => {
                        let inner = self.v4.walk(bits.checked_shl(at).unwrap_or(0));
                        Hit {
                            leaf: inner.leaf,
                            scope: hit.scope.max(at as u8 + inner.scope),
                        }
                    }
                    _ => hit,
                }
            }
        }
    }

    /// The address a lookup of `ip` classifies by: the IPv4 address embedded in an IPv6
    /// network the database stores as its IPv4 tree (::/96, 6to4, Teredo), else `ip`.
    pub fn mapped_address(&self, ip: IpAddr) -> IpAddr {
        let IpAddr::V6(v6) = ip.to_canonical() else {
            return ip.to_canonical();
        };
        let bits = u128::from(v6);
        match self.v6.walk(bits).leaf.checked_sub(ALIAS_BASE) {
            Some(at) if at < 128 => {
                let v4 = (bits.checked_shl(at).unwrap_or(0) >> 96) as u32;
                IpAddr::V4(v4.into())
            }
            _ => IpAddr::V6(v6),
        }
    }

    /// Bytes held, for the log.
    pub fn size(&self) -> usize {
        (self.v4.entries.len() + self.v6.entries.len()) * std::mem::size_of::<u32>()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn width(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// The last address, as a number of `width` bits.
    fn last(self) -> u128 {
        match self {
            Family::V4 => u128::from(u32::MAX),
            Family::V6 => u128::MAX,
        }
    }

    fn address(self, bits: u128) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4((bits as u32).into()),
            Family::V6 => IpAddr::V6(bits.into()),
        }
    }
}
