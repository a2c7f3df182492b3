//! The merge: blocks of one family's walk turned into complete subtrees, sibling leaves that
//! are equal (and may merge) joined into their parent, so that every network is as wide as its
//! leaf allows; the decision a subtree holds gives the scope of a lookup.

use std::net::IpAddr;

use super::{
    Classifier, Family, HashMap, Leaf, MAX_LEAVES,
    overlay::{ALIAS_BASE, Classes, UNDECODABLE},
};
use crate::geo::{Located, LookupResult};
use crate::nesting::Nesting;
use std::sync::Mutex;

/// A subtree of the merge, complete: one leaf over all of it, or an inner node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sub {
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
    pub(super) fn decision(self) -> Option<u32> {
        match self {
            Sub::Leaf { decision, .. } | Sub::Inner { decision, .. } => decision,
        }
    }
}

/// A classifier's boundaries of one family, as ranges of numbers sorted by start (a network
/// before the networks inside it), with their [`Nesting`]. Millions of boundaries (a latency
/// table's networks) are searched, never scanned.
#[derive(Debug, Default)]
pub(super) struct Boundaries {
    ranges: Vec<(u128, u128)>,
    nesting: Nesting,
}

impl Boundaries {
    pub(super) fn new(family: Family, networks: &[ipnet::IpNet]) -> Boundaries {
        let mut ranges: Vec<(u128, u128)> = networks
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
        ranges.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        ranges.dedup();
        let nesting = Nesting::new(&ranges, |outer, inner| outer.1 >= inner.1);
        Boundaries { ranges, nesting }
    }

    /// Whether a boundary lies inside `start..=end` without being all of it.
    fn cut(&self, start: u128, end: u128) -> bool {
        let from = self.ranges.partition_point(|&(first, _)| first < start);
        self.ranges[from..]
            .iter()
            .take_while(|&&(first, _)| first <= end)
            .any(|&(first, last)| first > start || last < end)
    }

    /// The innermost boundary holding all of `start..=end`.
    fn innermost(&self, start: u128, end: u128) -> Option<u32> {
        let upto = self.ranges.partition_point(|&(first, _)| first <= start);
        let at = self.nesting.innermost(upto, |i| self.ranges[i].1 >= end)?;
        Some(at as u32)
    }
}

/// Builds one classifier's map from the networks in address order: siblings with equal leaves
/// merge as soon as both are complete, so the tree never holds more than the merged result.
pub(super) struct Builder<'b> {
    pub(super) family: Family,
    pub(super) boundaries: &'b Boundaries,
    /// Leaves already asked of the classifier, by class, for networks in no boundary.
    pub(super) plain: Vec<Option<Leaf>>,
    /// And by class and the innermost boundary a network is in.
    pub(super) bounded: HashMap<(u32, u32), Leaf>,
    /// Complete subtrees not yet joined with their siblings, with their depths.
    pub(super) stack: Vec<(u8, Sub)>,
    pub(super) inner: Vec<[Sub; 2]>,
    /// A classifier gave a leaf id of [`MAX_LEAVES`] or more: the map cannot hold its places
    /// apart, and the walk fails rather than merge them.
    pub(super) beyond_limit: bool,
}

impl<'b> Builder<'b> {
    pub(super) fn new(family: Family, boundaries: &'b Boundaries) -> Builder<'b> {
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
    pub(super) fn piece(
        &mut self,
        start: u128,
        len: u8,
        class: u32,
        classes: &Classes,
        classifier: &Mutex<&mut dyn Classifier>,
    ) {
        let end = start | self.family.last().checked_shr(u32::from(len)).unwrap_or(0);
        if len < self.family.width() && self.boundaries.cut(start, end) {
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
    pub(super) fn within_limit(&mut self, id: u32) -> u32 {
        if id < MAX_LEAVES {
            return id;
        }
        self.beyond_limit = true;
        0
    }

    /// The classifier's leaf for a network of `class`, asked once per class and set of
    /// boundaries the network is in.
    pub(super) fn leaf(
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
        match self.boundaries.innermost(start, end) {
            None => {
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
            Some(boundary) => *self.bounded.entry((class, boundary)).or_insert_with(ask),
        }
    }

    pub(super) fn push(&mut self, depth: u8, sub: Sub) {
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
    pub(super) fn finish(self, len: u8) -> Subtree {
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
pub(super) fn ask(
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
pub(super) fn join(left: Sub, right: Sub, inner: &mut Vec<[Sub; 2]>) -> Sub {
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
pub(super) struct Subtree {
    pub(super) root: Sub,
    pub(super) inner: Vec<[Sub; 2]>,
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
    pub(super) fn joined_all(mut parts: Vec<Subtree>) -> Subtree {
        while parts.len() > 1 {
            let mut pairs = parts.into_iter();
            parts = std::iter::from_fn(|| Some(Subtree::joined(pairs.next()?, pairs.next()?)))
                .collect();
        }
        parts.pop().unwrap_or_default()
    }

    /// The two halves of a space as one tree.
    pub(super) fn joined(low: Subtree, high: Subtree) -> Subtree {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<ipnet::IpNet> {
        list.iter().map(|n| n.parse().expect("network")).collect()
    }

    fn range(net: &str) -> (u128, u128) {
        let net: ipnet::Ipv4Net = net.parse().expect("network");
        let (a, b) = (u32::from(net.network()), u32::from(net.broadcast()));
        (u128::from(a), u128::from(b))
    }

    #[test]
    fn nested_boundaries_cut_what_holds_them_and_name_the_innermost() {
        let boundaries = Boundaries::new(
            Family::V4,
            &nets(&[
                "10.0.0.0/8",
                "10.1.0.0/16",
                "10.1.2.0/24",
                "10.3.0.0/16",
                "10.1.2.0/24",
                "::/0",
            ]),
        );
        assert_eq!(boundaries.ranges.len(), 4, "deduplicated, IPv4 only");
        let cut = |net| {
            let (a, b) = range(net);
            boundaries.cut(a, b)
        };
        assert!(cut("0.0.0.0/0") && cut("10.0.0.0/8") && cut("10.1.0.0/16"));
        assert!(cut("10.0.0.0/14"), "holds 10.1/16 and 10.3/16");
        assert!(!cut("10.1.2.0/24") && !cut("10.1.2.128/25") && !cut("10.2.0.0/16"));
        let innermost = |net| {
            let (a, b) = range(net);
            boundaries
                .innermost(a, b)
                .map(|i| boundaries.ranges[i as usize])
        };
        assert_eq!(innermost("10.1.2.128/25"), Some(range("10.1.2.0/24")));
        assert_eq!(innermost("10.1.3.0/24"), Some(range("10.1.0.0/16")));
        assert_eq!(
            innermost("10.2.0.0/16"),
            Some(range("10.0.0.0/8")),
            "past a sibling"
        );
        assert_eq!(innermost("10.4.0.0/24"), Some(range("10.0.0.0/8")));
        assert_eq!(innermost("11.0.0.0/8"), None);
    }
}
