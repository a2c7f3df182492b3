//! The trie a lookup walks: a root table of [`ROOT_BITS`] bits, then tables of [`STRIDE`]
//! bits, each entry a leaf (with its scope) or the next table.

use super::{
    Hit,
    build::{Sub, Subtree},
};

/// Bits of the address the first table is indexed by; every table after it takes
/// [`STRIDE`] more (16 entries of 4 bytes: one cache line).
pub(super) const ROOT_BITS: u8 = 16;
pub(super) const STRIDE: u8 = 4;
/// An entry with this bit is a leaf: its id in the low 23 bits, its scope above them. Without
/// it, an entry is the index of the next table.
pub(super) const TERMINAL: u32 = 1 << 31;

/// A multibit trie over addresses as 128-bit numbers (IPv4 in the top 32 bits).
#[derive(Debug, Clone)]
pub(super) struct Trie {
    pub(super) entries: Vec<u32>,
}

impl Default for Trie {
    fn default() -> Trie {
        Trie::unknown()
    }
}

impl Trie {
    /// The trie of a complete subtree of the merge.
    pub(super) fn of(subtree: &Subtree) -> Trie {
        let mut trie = Trie {
            entries: vec![0; 1 << ROOT_BITS],
        };
        trie.fill(&subtree.inner, 0, 0, ROOT_BITS, subtree.root, 0, 0, None);
        trie
    }

    /// Every address in leaf 0 with scope 0.
    pub(super) fn unknown() -> Trie {
        Trie {
            entries: vec![TERMINAL; 1 << ROOT_BITS],
        }
    }

    pub(super) fn walk(&self, bits: u128) -> Hit {
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
