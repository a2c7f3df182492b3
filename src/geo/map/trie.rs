//! The trie a lookup walks: a root table of [`ROOT_BITS`] bits (or [`WIDE_ROOT_BITS`] for a
//! large IPv4 map), then tables of [`STRIDE`] bits, each entry a leaf (with its scope) or the
//! next table.

use super::{
    Hit,
    build::{Sub, Subtree},
};

/// Bits of the address the first table is indexed by (256 KB); every table after it takes
/// [`STRIDE`] more (16 entries of 4 bytes: one cache line).
pub(super) const ROOT_BITS: u8 = 16;
/// The root of a large IPv4 map (4 MB): a client /24 is one table below it, two dependent reads
/// in all where a root of [`ROOT_BITS`] needs three. It pays once the tables below the root
/// outgrow the caches, as a latency table's hundreds of thousands of networks make them.
const WIDE_ROOT_BITS: u8 = 20;
/// An IPv4 map larger than this takes the wide root.
const WIDE_ROOT_FROM: usize = 16 << 20;
pub(super) const STRIDE: u8 = 4;
/// An entry with this bit is a leaf: its id in the low 23 bits, its scope above them. Without
/// it, an entry is the index of the next table.
pub(super) const TERMINAL: u32 = 1 << 31;

/// A multibit trie over addresses as 128-bit numbers (IPv4 in the top 32 bits).
#[derive(Debug, Clone)]
pub(super) struct Trie {
    pub(super) entries: Vec<u32>,
    root_bits: u8,
}

impl Default for Trie {
    fn default() -> Trie {
        Trie::unknown()
    }
}

impl Trie {
    /// The IPv4 trie of a complete subtree of the merge: the root of [`WIDE_ROOT_BITS`] when
    /// that of [`ROOT_BITS`] would make it larger than [`WIDE_ROOT_FROM`].
    pub(super) fn ipv4(subtree: &Subtree) -> Trie {
        let narrow = Trie::filled(subtree, ROOT_BITS);
        let trie = if std::mem::size_of_val(narrow.entries.as_slice()) > WIDE_ROOT_FROM {
            Trie::filled(subtree, WIDE_ROOT_BITS)
        } else {
            narrow
        };
        trie.in_huge_pages()
    }

    /// The trie of a complete subtree of the merge.
    pub(super) fn of(subtree: &Subtree) -> Trie {
        Trie::filled(subtree, ROOT_BITS).in_huge_pages()
    }

    fn in_huge_pages(self) -> Trie {
        Trie {
            entries: crate::memory::in_huge_pages(self.entries),
            ..self
        }
    }

    /// The trie of a complete subtree of the merge, its root table indexed by `root_bits`.
    fn filled(subtree: &Subtree, root_bits: u8) -> Trie {
        let mut trie = Trie {
            entries: vec![0; 1 << root_bits],
            root_bits,
        };
        trie.fill(&subtree.inner, 0, 0, root_bits, subtree.root, 0, 0, None);
        trie
    }

    /// Every address in leaf 0 with scope 0.
    pub(super) fn unknown() -> Trie {
        Trie {
            entries: vec![TERMINAL; 1 << ROOT_BITS],
            root_bits: ROOT_BITS,
        }
    }

    pub(super) fn walk(&self, bits: u128) -> Hit {
        let mut entry = self.entry((bits >> (128 - self.root_bits)) as usize);
        let mut depth = self.root_bits;
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

    pub(super) fn entry(&self, at: usize) -> u32 {
        // Every index was made by `fill`: the fallback is never taken.
        self.entries.get(at).copied().unwrap_or(TERMINAL)
    }

    /// Writes `sub`, at `depth`, into the table at `base` that holds depths
    /// `table_depth..table_depth + stride`; `path` is the bits from `table_depth` to `depth`.
    /// `uniform_from` is the depth of the highest ancestor whose decision is uniform.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fill(
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
    use super::*;
    use crate::geo::map::build::join;

    /// A random merged tree over IPv4's 32 bits, leaves at every depth.
    fn random_tree(depth: u8, next: &mut impl FnMut() -> u64, inner: &mut Vec<[Sub; 2]>) -> Sub {
        if depth == 32 || next().is_multiple_of(3) {
            let id = (next() % 8) as u32;
            return Sub::Leaf {
                id,
                mergeable: !next().is_multiple_of(5),
                decision: (id != 7).then_some(id % 4),
            };
        }
        let left = random_tree(depth + 1, next, inner);
        let right = random_tree(depth + 1, next, inner);
        join(left, right, inner)
    }

    #[test]
    fn a_wide_root_finds_what_the_narrow_one_finds() {
        let mut seed = 29u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut inner = Vec::new();
        let root = random_tree(0, &mut next, &mut inner);
        let subtree = Subtree { root, inner };
        let narrow = Trie::filled(&subtree, ROOT_BITS);
        let wide = Trie::filled(&subtree, WIDE_ROOT_BITS);
        assert!(subtree.inner.len() > 1000, "a tree that goes deep");
        for _ in 0..200_000 {
            let bits = u128::from(next() as u32) << 96;
            let (a, b) = (narrow.walk(bits), wide.walk(bits));
            assert_eq!((a.leaf, a.scope), (b.leaf, b.scope), "{:x}", bits >> 96);
        }
    }
}
