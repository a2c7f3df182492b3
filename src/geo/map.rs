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

use std::{
    net::IpAddr,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

/// Hash maps keyed by numbers the databases hold: they hash often while compiling, and
/// nothing outside chooses their keys to collide.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;

use maxminddb::{MaxMindDbError, WithinOptions};

use super::{Database, GeoIp, GeoRecord, Located, Location, LookupResult};

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
    let boundaries: Vec<Vec<ipnet::IpNet>> = shared
        .iter()
        .map(|c| {
            c.lock()
                .map(|c| c.boundaries().to_vec())
                .unwrap_or_default()
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
                v4: Subtree::joined_all(v4).trie(),
                v6: parts.next().unwrap_or_default().trie(),
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
        boundaries: &[Vec<ipnet::IpNet>],
    ) -> Result<Walked, MaxMindDbError> {
        let mut classes = Classes::new(geo.databases.len());
        let mut builders: Vec<Builder> = boundaries
            .iter()
            .map(|b| Builder::new(self.family, b))
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

// Classes: what the databases say of a network, before any classifier.
const UNKNOWN: u32 = 0;
const UNDECODABLE: u32 = 1;
const FIRST_KNOWN: u32 = 2;
/// A class or leaf id at or above this is an alias to the IPv4 tree, after `id - ALIAS_BASE`
/// bits.
const ALIAS_BASE: u32 = (1 << 23) - 256;

/// Every distinct location found, and which record gave which.
struct Classes {
    locations: Vec<Location>,
    /// Per database: a record's offset to its class.
    /// (An offset within a file's data section fits in 32 bits: half the table's memory.)
    by_offset: Vec<HashMap<u32, u32>>,
    undecodable: u64,
}

impl Classes {
    fn new(databases: usize) -> Classes {
        Classes {
            locations: Vec::new(),
            by_offset: vec![HashMap::default(); databases],
            undecodable: 0,
        }
    }

    fn located(&self, class: u32) -> Located {
        match class.checked_sub(FIRST_KNOWN) {
            Some(at) => self
                .locations
                .get(at as usize)
                .map_or(Located::Unknown { prefix_len: 0 }, |l| Located::Known(*l)),
            None => Located::Unknown { prefix_len: 0 },
        }
    }

    /// The class of the record at `offset` of database `index`, decoded the first time.
    fn of_record(
        &mut self,
        index: usize,
        db: &Database,
        offset: usize,
        lookup: &maxminddb::LookupResult<'_, Vec<u8>>,
        first: IpAddr,
    ) -> u32 {
        let key = u32::try_from(offset).ok();
        let known = key.and_then(|key| self.by_offset.get(index)?.get(&key));
        if let Some(&class) = known {
            return class;
        }
        let class = match lookup.decode::<GeoRecord>() {
            Ok(record) => match record.unwrap_or_default().into_location(0) {
                Some(location) => {
                    self.locations.push(location);
                    FIRST_KNOWN + self.locations.len() as u32 - 1
                }
                None => UNKNOWN,
            },
            Err(error) => {
                db.warn_once(first, &error);
                self.undecodable += 1;
                UNDECODABLE
            }
        };
        if let (Some(by_offset), Some(key)) = (self.by_offset.get_mut(index), key) {
            by_offset.insert(key, class);
        }
        class
    }
}

/// A network of one database: `start..=end` in the family's numbers.
#[derive(Debug, Clone, Copy)]
struct Piece {
    start: u128,
    end: u128,
    class: u32,
}

/// Lays the databases over each other for one part of a family and calls `emit` with every
/// network of the result, in address order, tiling the part: where several files are given, the
/// first that locates an address decides, as [`GeoIp::locate`] does.
fn overlay(
    geo: &GeoIp,
    part: Part,
    classes: &mut Classes,
    mut emit: impl FnMut(u128, u8, u32, &Classes),
) -> Result<(), MaxMindDbError> {
    let (family, last) = (part.family, part.last());
    let mut cursors = Vec::new();
    for (index, db) in geo.databases.iter().enumerate() {
        if family == Family::V6 && db.reader.metadata().ip_version == 4 {
            continue; // IPv6 addresses skip IPv4-only files.
        }
        cursors.push(Cursor::new(index, db, part, classes)?);
    }
    let mut current: Vec<Piece> = Vec::with_capacity(cursors.len());
    for cursor in &mut cursors {
        current.push(cursor.next(classes)?);
    }
    let mut at = part.start;
    loop {
        let mut end = last;
        let mut class = UNKNOWN;
        let mut undecodable = false;
        for piece in &current {
            end = end.min(piece.end);
            match piece.class {
                UNKNOWN => {}
                UNDECODABLE => undecodable = true,
                found => {
                    class = found;
                    break;
                }
            }
        }
        if class == UNKNOWN && undecodable {
            class = UNDECODABLE;
        }
        // [at, end] lies in one network of every file consulted: emit it as aligned blocks.
        loop {
            let len = block_len(at, end, family.width());
            emit(at, len, class, classes);
            let size = 1u128.checked_shl(u32::from(family.width() - len));
            match size.and_then(|s| at.checked_add(s)) {
                Some(next) if next <= last && next <= end => at = next,
                Some(next) if next <= last => {
                    at = next;
                    break;
                }
                _ => return Ok(()),
            }
        }
        for (piece, cursor) in current.iter_mut().zip(cursors.iter_mut()) {
            while piece.end < at {
                *piece = cursor.next(classes)?;
            }
        }
    }
}

/// The prefix length of the largest aligned block that starts at `at` and ends by `end`.
fn block_len(at: u128, end: u128, width: u8) -> u8 {
    let aligned = if at == 0 {
        u32::from(width)
    } else {
        at.trailing_zeros().min(u32::from(width))
    };
    let fits = match (end - at).checked_add(1) {
        Some(count) => 127 - count.leading_zeros(),
        None => 128,
    };
    width - aligned.min(fits) as u8
}

/// One database's networks of one family, in address order, tiling the space: networks
/// without data are unknown, and the gaps the iterator leaves (IPv6 networks that alias the
/// IPv4 tree) are aliases.
struct Cursor<'g> {
    index: usize,
    db: &'g Database,
    family: Family,
    /// The part's last address.
    last: u128,
    /// What is left to walk, in address order: (first address, prefix length, alias).
    segments: std::vec::IntoIter<(u128, u8, bool)>,
    /// The walk of one segment, and the segment's last address.
    walking: Option<(maxminddb::Within<'g, Vec<u8>>, u128)>,
    /// A network read ahead of a gap.
    pending: Option<Piece>,
    /// What the IPv6 names of the IPv4 tree hold (::/96, and the gaps the walk leaves).
    v4_in_v6: u32,
    /// The first address not yet given out.
    next: u128,
    done: bool,
}

impl<'g> Cursor<'g> {
    fn new(
        index: usize,
        db: &'g Database,
        part: Part,
        classes: &mut Classes,
    ) -> Result<Cursor<'g>, MaxMindDbError> {
        let family = part.family;
        let segments = match family {
            Family::V4 => vec![(part.start, part.len, false)],
            // The IPv4 tree sits at ::/96; walking it again as IPv6 would walk it twice.
            Family::V6 => std::iter::once((0, 96, true))
                .chain((1..=96).rev().map(|len| (1u128 << (128 - len), len, false)))
                .filter(|&(start, _, _)| start >= part.start && start <= part.last())
                .collect(),
        };
        let v4_in_v6 = match family {
            Family::V6 => Cursor::ipv4_tree(index, db, classes)?,
            Family::V4 => UNKNOWN,
        };
        Ok(Cursor {
            index,
            db,
            family,
            last: part.last(),
            segments: segments.into_iter(),
            walking: None,
            pending: None,
            v4_in_v6,
            next: part.start,
            done: false,
        })
    }

    /// What the file's IPv4 tree is for IPv6 addresses: an alias to the IPv4 map when the file
    /// has a tree at ::/96; else the one record (or none) that covers ::/96, which the walk
    /// also leaves out wherever the same record recurs (the iterator takes it for an alias).
    fn ipv4_tree(
        index: usize,
        db: &'g Database,
        classes: &mut Classes,
    ) -> Result<u32, MaxMindDbError> {
        let lookup = db
            .reader
            .lookup(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED))?;
        if lookup.network()?.prefix() > 96 {
            return Ok(ALIAS_BASE);
        }
        Ok(match lookup.offset() {
            Some(offset) => {
                let first = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);
                classes.of_record(index, db, offset, &lookup, first)
            }
            None => UNKNOWN,
        })
    }

    /// The class of the IPv6 network `start`/`len` that stands for the IPv4 tree.
    fn ipv4_class(&self, len: u8) -> u32 {
        match self.v4_in_v6 {
            ALIAS_BASE => ALIAS_BASE + u32::from(len),
            class => class,
        }
    }

    /// The next network; past the last, the last again (the caller stops at the end).
    fn next(&mut self, classes: &mut Classes) -> Result<Piece, MaxMindDbError> {
        loop {
            if self.done {
                let last = self.last;
                return Ok(Piece {
                    start: last,
                    end: last,
                    class: UNKNOWN,
                });
            }
            if let Some(piece) = self.pending {
                if piece.start > self.next {
                    return Ok(self.gap(piece.start - 1));
                }
                self.pending = None;
                return Ok(self.give(piece));
            }
            let Some((within, end)) = &mut self.walking else {
                self.start_segment()?;
                continue;
            };
            let end = *end;
            let Some(item) = within.next() else {
                if self.next <= end {
                    return Ok(self.gap(end));
                }
                self.walking = None;
                continue;
            };
            let lookup = item?;
            let network = lookup.network()?;
            let (start, last) = self.span(network.ip(), network.prefix());
            let (start, last) = (start.max(self.next), last.min(end));
            if last < start {
                continue;
            }
            let class = match lookup.offset() {
                Some(offset) => {
                    let first = self.family.address(start);
                    classes.of_record(self.index, self.db, offset, &lookup, first)
                }
                None => UNKNOWN,
            };
            self.pending = Some(Piece {
                start,
                end: last,
                class,
            });
        }
    }

    /// Starts walking the next segment, or gives out an alias; done after the last.
    fn start_segment(&mut self) -> Result<(), MaxMindDbError> {
        let Some((start, len, alias)) = self.segments.next() else {
            self.done = true;
            return Ok(());
        };
        let last = start | self.family.last().checked_shr(u32::from(len)).unwrap_or(0);
        if alias {
            self.pending = Some(Piece {
                start,
                end: last,
                class: self.ipv4_class(len),
            });
            return Ok(());
        }
        let network = format!("{}/{len}", self.family.address(start))
            .parse()
            .map_err(|_| MaxMindDbError::invalid_input("a network to walk"))?;
        let options = WithinOptions::default().include_networks_without_data();
        self.walking = Some((self.db.reader.within(network, options)?, last));
        Ok(())
    }

    /// A network as numbers of this family: an IPv6 network given for IPv4 (a file without an
    /// IPv4 tree) holds for every IPv4 address.
    fn span(&self, ip: IpAddr, len: u8) -> (u128, u128) {
        match (self.family, ip) {
            (Family::V4, IpAddr::V4(v4)) => {
                let start = u128::from(u32::from(v4));
                let rest = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
                (start, start | u128::from(rest))
            }
            (Family::V4, IpAddr::V6(_)) => (0, u128::from(u32::MAX)),
            (Family::V6, ip) => {
                let start = match ip {
                    IpAddr::V6(v6) => u128::from(v6),
                    IpAddr::V4(v4) => u128::from(u32::from(v4)),
                };
                let rest = u128::MAX.checked_shr(u32::from(len)).unwrap_or(0);
                (start, start | rest)
            }
        }
    }

    /// The networks up to `last` the walk skipped, one aligned block at a time: in IPv6,
    /// aliases of the IPv4 tree.
    fn gap(&mut self, last: u128) -> Piece {
        let len = block_len(self.next, last, self.family.width());
        let rest = self.family.last().checked_shr(u32::from(len)).unwrap_or(0);
        let class = match self.family {
            Family::V6 => self.ipv4_class(len),
            Family::V4 => UNKNOWN,
        };
        self.give(Piece {
            start: self.next,
            end: self.next | rest,
            class,
        })
    }

    fn give(&mut self, piece: Piece) -> Piece {
        match piece.end.checked_add(1) {
            Some(next) if piece.end < self.last => self.next = next,
            _ => self.done = true,
        }
        piece
    }
}

/// A subtree of the merge, complete: one leaf over all of it, or an inner node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sub {
    Leaf {
        /// A leaf id, or an alias.
        id: u32,
        /// False: never merged with an equal sibling (an undecodable record's network stays at
        /// its own length).
        mergeable: bool,
        /// `None` for what no scope may span (aliases, undecodable records).
        decision: Option<u32>,
    },
    Inner {
        at: u32,
        decision: Option<u32>,
    },
}

impl Sub {
    fn decision(self) -> Option<u32> {
        match self {
            Sub::Leaf { decision, .. } | Sub::Inner { decision, .. } => decision,
        }
    }
}

/// Builds one classifier's map from the networks in address order: siblings with equal leaves
/// merge as soon as both are complete, so the tree never holds more than the merged result.
struct Builder {
    family: Family,
    boundaries: Vec<(u128, u128)>,
    /// Leaves already asked of the classifier, by class, for networks in no boundary.
    plain: Vec<Option<Leaf>>,
    /// And by class and the boundaries a network is in.
    bounded: HashMap<(u32, u64), Leaf>,
    /// Complete subtrees not yet joined with their siblings, with their depths.
    stack: Vec<(u8, Sub)>,
    inner: Vec<[Sub; 2]>,
    /// A classifier gave a leaf id of [`MAX_LEAVES`] or more: the map cannot hold its places
    /// apart, and the walk fails rather than merge them.
    beyond_limit: bool,
}

impl Builder {
    fn new(family: Family, boundaries: &[ipnet::IpNet]) -> Builder {
        let boundaries = boundaries
            .iter()
            .filter_map(|net| match (family, net) {
                (Family::V4, ipnet::IpNet::V4(v4)) => {
                    let (a, b) = (u32::from(v4.network()), u32::from(v4.broadcast()));
                    Some((u128::from(a), u128::from(b)))
                }
                (Family::V6, ipnet::IpNet::V6(v6)) => {
                    Some((u128::from(v6.network()), u128::from(v6.broadcast())))
                }
                _ => None,
            })
            .collect();
        Builder {
            family,
            boundaries,
            plain: Vec::new(),
            bounded: HashMap::default(),
            stack: Vec::new(),
            inner: Vec::new(),
            beyond_limit: false,
        }
    }

    /// Adds the network `start`/`len` of class `class`, split where it straddles a boundary.
    fn piece(
        &mut self,
        start: u128,
        len: u8,
        class: u32,
        classes: &Classes,
        classifier: &Mutex<&mut dyn Classifier>,
    ) {
        let end = start | self.family.last().checked_shr(u32::from(len)).unwrap_or(0);
        let straddles = self.boundaries.iter().any(|&(first, last)| {
            let overlaps = first <= end && last >= start;
            overlaps && !(first <= start && last >= end)
        });
        if straddles && len < self.family.width() {
            let half = 1u128 << (self.family.width() - len - 1);
            self.piece(start, len + 1, class, classes, classifier);
            self.piece(start + half, len + 1, class, classes, classifier);
            return;
        }
        let sub = match class {
            UNDECODABLE => Sub::Leaf {
                id: {
                    let unknown = Located::Unknown { prefix_len: len };
                    let first = self.family.address(start);
                    let leaf = ask(classifier, &unknown, LookupResult::Undecodable, first);
                    self.within_limit(leaf.id)
                },
                mergeable: false,
                decision: None,
            },
            alias if alias >= ALIAS_BASE => Sub::Leaf {
                id: alias,
                mergeable: true,
                decision: None,
            },
            class => {
                let leaf = self.leaf(start, end, class, classes, classifier);
                Sub::Leaf {
                    id: self.within_limit(leaf.id),
                    mergeable: true,
                    decision: Some(leaf.decision),
                }
            }
        };
        self.push(len, sub);
    }

    /// `id`, if the map can hold it; else the walk is marked failed.
    fn within_limit(&mut self, id: u32) -> u32 {
        if id < MAX_LEAVES {
            return id;
        }
        self.beyond_limit = true;
        0
    }

    /// The classifier's leaf for a network of `class`, asked once per class and set of
    /// boundaries the network is in.
    fn leaf(
        &mut self,
        start: u128,
        end: u128,
        class: u32,
        classes: &Classes,
        classifier: &Mutex<&mut dyn Classifier>,
    ) -> Leaf {
        let ask = || {
            let located = classes.located(class);
            let lookup = match located {
                Located::Known(_) => LookupResult::Located,
                Located::Unknown { .. } => LookupResult::Unknown,
            };
            ask(classifier, &located, lookup, self.family.address(start))
        };
        let inside = self.boundaries.iter().enumerate();
        let mut inside = inside.filter(|(_, (first, last))| *first <= start && *last >= end);
        let mask = inside.try_fold(0u64, |mask, (i, _)| {
            Some(mask | 1u64.checked_shl(i as u32)?)
        });
        match mask {
            Some(0) => {
                let at = class as usize;
                if let Some(Some(leaf)) = self.plain.get(at) {
                    return *leaf;
                }
                let leaf = ask();
                if self.plain.len() <= at {
                    self.plain.resize(at + 1, None);
                }
                self.plain[at] = Some(leaf);
                leaf
            }
            Some(mask) => *self.bounded.entry((class, mask)).or_insert_with(ask),
            // More than 64 boundaries hold it: asked every time.
            None => ask(),
        }
    }

    fn push(&mut self, depth: u8, sub: Sub) {
        self.stack.push((depth, sub));
        while let [.., (left_depth, left), (right_depth, right)] = self.stack[..] {
            if left_depth != right_depth || right_depth == 0 {
                return;
            }
            self.stack.truncate(self.stack.len() - 2);
            let joined = join(left, right, &mut self.inner);
            self.stack.push((left_depth - 1, joined));
        }
    }

    /// The subtree of everything added, which tiles a network `len` bits long.
    fn finish(self, len: u8) -> Subtree {
        let root = match self.stack[..] {
            [(depth, root)] if depth == len => root,
            // Only when the walk stopped early, which an error already reported.
            _ => Sub::Leaf {
                id: 0,
                mergeable: true,
                decision: None,
            },
        };
        Subtree {
            root,
            inner: self.inner,
        }
    }
}

/// Asks the shared classifier; a classifier that panicked in another thread still answers.
fn ask(
    classifier: &Mutex<&mut dyn Classifier>,
    located: &Located,
    lookup: LookupResult,
    first: IpAddr,
) -> Leaf {
    let mut classifier = classifier.lock().unwrap_or_else(|e| e.into_inner());
    classifier.classify(located, lookup, first)
}

/// Two complete sibling subtrees as their parent: one leaf if they are equal leaves that may
/// merge, else an inner node whose decision is theirs if they share one.
fn join(left: Sub, right: Sub, inner: &mut Vec<[Sub; 2]>) -> Sub {
    match (left, right) {
        (
            Sub::Leaf {
                id: a,
                mergeable: true,
                decision,
            },
            Sub::Leaf {
                id: b,
                mergeable: true,
                ..
            },
        ) if a == b => Sub::Leaf {
            id: a,
            mergeable: true,
            decision,
        },
        _ => {
            let decision = left.decision().filter(|&d| right.decision() == Some(d));
            inner.push([left, right]);
            Sub::Inner {
                at: inner.len() as u32 - 1,
                decision,
            }
        }
    }
}

/// A merged subtree: its root and the inner nodes it refers to.
struct Subtree {
    root: Sub,
    inner: Vec<[Sub; 2]>,
}

impl Default for Subtree {
    fn default() -> Subtree {
        Subtree {
            root: Sub::Leaf {
                id: 0,
                mergeable: true,
                decision: None,
            },
            inner: Vec::new(),
        }
    }
}

impl Subtree {
    /// Consecutive parts of a space, as many as a power of two, as one tree.
    fn joined_all(mut parts: Vec<Subtree>) -> Subtree {
        while parts.len() > 1 {
            let mut pairs = parts.into_iter();
            parts = std::iter::from_fn(|| Some(Subtree::joined(pairs.next()?, pairs.next()?)))
                .collect();
        }
        parts.pop().unwrap_or_default()
    }

    /// The two halves of a space as one tree.
    fn joined(low: Subtree, high: Subtree) -> Subtree {
        let mut inner = low.inner;
        let offset = inner.len() as u32;
        let moved = |sub: Sub| match sub {
            Sub::Inner { at, decision } => Sub::Inner {
                at: at + offset,
                decision,
            },
            leaf => leaf,
        };
        inner.extend(high.inner.iter().map(|pair| pair.map(moved)));
        let root = join(low.root, moved(high.root), &mut inner);
        Subtree { root, inner }
    }

    fn trie(&self) -> Trie {
        let mut trie = Trie {
            entries: vec![0; 1 << ROOT_BITS],
        };
        trie.fill(&self.inner, 0, 0, ROOT_BITS, self.root, 0, 0, None);
        trie
    }
}

/// Bits of the address the first table is indexed by; every table after it takes
/// [`STRIDE`] more (16 entries of 4 bytes: one cache line).
const ROOT_BITS: u8 = 16;
const STRIDE: u8 = 4;
/// An entry with this bit is a leaf: its id in the low 23 bits, its scope above them. Without
/// it, an entry is the index of the next table.
const TERMINAL: u32 = 1 << 31;

/// A multibit trie over addresses as 128-bit numbers (IPv4 in the top 32 bits).
#[derive(Debug, Clone)]
struct Trie {
    entries: Vec<u32>,
}

impl Default for Trie {
    fn default() -> Trie {
        Trie::unknown()
    }
}

impl Trie {
    /// Every address in leaf 0 with scope 0.
    fn unknown() -> Trie {
        Trie {
            entries: vec![TERMINAL; 1 << ROOT_BITS],
        }
    }

    fn walk(&self, bits: u128) -> Hit {
        let mut entry = self.entry((bits >> (128 - ROOT_BITS)) as usize);
        let mut depth = ROOT_BITS;
        while entry & TERMINAL == 0 && depth < 128 {
            let index = (bits << depth) >> (128 - STRIDE);
            entry = self.entry(entry as usize + index as usize);
            depth += STRIDE;
        }
        Hit {
            leaf: entry & ((1 << 23) - 1),
            scope: ((entry >> 23) & 0xFF) as u8,
        }
    }

    fn entry(&self, at: usize) -> u32 {
        // Every index was made by `fill`: the fallback is never taken.
        self.entries.get(at).copied().unwrap_or(TERMINAL)
    }

    /// Writes `sub`, at `depth`, into the table at `base` that holds depths
    /// `table_depth..table_depth + stride`; `path` is the bits from `table_depth` to `depth`.
    /// `uniform_from` is the depth of the highest ancestor whose decision is uniform.
    #[allow(clippy::too_many_arguments)]
    fn fill(
        &mut self,
        inner: &[[Sub; 2]],
        base: usize,
        table_depth: u8,
        stride: u8,
        sub: Sub,
        depth: u8,
        path: usize,
        uniform_from: Option<u8>,
    ) {
        let below = depth - table_depth;
        match sub {
            Sub::Leaf { id, decision, .. } => {
                let scope = match decision {
                    Some(_) => uniform_from.unwrap_or(depth),
                    None => depth,
                };
                let entry = TERMINAL | u32::from(scope) << 23 | id;
                let span = stride - below;
                let first = base + (path << span);
                self.entries[first..first + (1 << span)].fill(entry);
            }
            Sub::Inner { at, decision } if below < stride => {
                let uniform_from = uniform_from.or(decision.map(|_| depth));
                let Some(&[left, right]) = inner.get(at as usize) else {
                    return;
                };
                for (bit, child) in [(0, left), (1, right)] {
                    let path = path << 1 | bit;
                    self.fill(
                        inner,
                        base,
                        table_depth,
                        stride,
                        child,
                        depth + 1,
                        path,
                        uniform_from,
                    );
                }
            }
            Sub::Inner { .. } => {
                let table = self.entries.len();
                self.entries.resize(table + (1 << STRIDE), 0);
                self.entries[base + path] = table as u32;
                self.fill(inner, table, depth, STRIDE, sub, depth, 0, uniform_from);
            }
        }
    }
}

#[cfg(test)]
mod tests {
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
}
