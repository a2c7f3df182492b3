//! The databases walked and overlaid: each network of every file read once, its record given
//! a class (a distinct location, unknown, or undecodable), the files consulted in order so
//! that each stretch of addresses gets the first file's answer, as aligned blocks.

use std::net::IpAddr;

use maxminddb::MaxMindDbError;

use super::{Family, HashMap, Part};
use crate::geo::{Database, GeoIp, GeoRecord, Located, Location};
use maxminddb::WithinOptions;

// Classes: what the databases say of a network, before any classifier.
pub(super) const UNKNOWN: u32 = 0;
pub(super) const UNDECODABLE: u32 = 1;
pub(super) const FIRST_KNOWN: u32 = 2;
/// A class or leaf id at or above this is an alias to the IPv4 tree, after `id - ALIAS_BASE`
/// bits.
pub(super) const ALIAS_BASE: u32 = (1 << 23) - 256;

/// Every distinct location found, and which record gave which.
pub(super) struct Classes {
    pub(super) locations: Vec<Location>,
    /// Per database: a record's offset to its class.
    /// (An offset within a file's data section fits in 32 bits: half the table's memory.)
    pub(super) by_offset: Vec<HashMap<u32, u32>>,
    pub(super) undecodable: u64,
}

impl Classes {
    pub(super) fn new(databases: usize) -> Classes {
        Classes {
            locations: Vec::new(),
            by_offset: vec![HashMap::default(); databases],
            undecodable: 0,
        }
    }

    pub(super) fn located(&self, class: u32) -> Located {
        match class.checked_sub(FIRST_KNOWN) {
            Some(at) => self
                .locations
                .get(at as usize)
                .map_or(Located::Unknown { prefix_len: 0 }, |l| Located::Known(*l)),
            None => Located::Unknown { prefix_len: 0 },
        }
    }

    /// The class of the record at `offset` of database `index`, decoded the first time.
    pub(super) fn of_record(
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
pub(super) struct Piece {
    pub(super) start: u128,
    pub(super) end: u128,
    pub(super) class: u32,
}

/// Lays the databases over each other for one part of a family and calls `emit` with every
/// network of the result, in address order, tiling the part: where several files are given, the
/// first that locates an address decides, as [`GeoIp::locate`] does.
pub(super) fn overlay(
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
pub(super) fn block_len(at: u128, end: u128, width: u8) -> u8 {
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
pub(super) struct Cursor<'g> {
    pub(super) index: usize,
    pub(super) db: &'g Database,
    pub(super) family: Family,
    /// The part's last address.
    pub(super) last: u128,
    /// What is left to walk, in address order: (first address, prefix length, alias).
    pub(super) segments: std::vec::IntoIter<(u128, u8, bool)>,
    /// The walk of one segment, and the segment's last address.
    pub(super) walking: Option<(maxminddb::Within<'g, Vec<u8>>, u128)>,
    /// A network read ahead of a gap.
    pub(super) pending: Option<Piece>,
    /// What the IPv6 names of the IPv4 tree hold (::/96, and the gaps the walk leaves).
    pub(super) v4_in_v6: u32,
    /// The first address not yet given out.
    pub(super) next: u128,
    pub(super) done: bool,
}

impl<'g> Cursor<'g> {
    pub(super) fn new(
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
    pub(super) fn ipv4_tree(
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
    pub(super) fn ipv4_class(&self, len: u8) -> u32 {
        match self.v4_in_v6 {
            ALIAS_BASE => ALIAS_BASE + u32::from(len),
            class => class,
        }
    }

    /// The next network; past the last, the last again (the caller stops at the end).
    pub(super) fn next(&mut self, classes: &mut Classes) -> Result<Piece, MaxMindDbError> {
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
    pub(super) fn start_segment(&mut self) -> Result<(), MaxMindDbError> {
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
    pub(super) fn span(&self, ip: IpAddr, len: u8) -> (u128, u128) {
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
    pub(super) fn gap(&mut self, last: u128) -> Piece {
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

    pub(super) fn give(&mut self, piece: Piece) -> Piece {
        match piece.end.checked_add(1) {
            Some(next) if piece.end < self.last => self.next = next,
            _ => self.done = true,
        }
        piece
    }
}
