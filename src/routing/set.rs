//! Sets of a service's regions, by position in its list: a fixed array of bits, copied and
//! combined on the query path without allocating.

use crate::config::MAX_SERVICE_REGIONS;

const WORDS: usize = MAX_SERVICE_REGIONS.div_ceil(64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegionSet([u64; WORDS]);

impl RegionSet {
    /// The first `count` positions.
    pub fn first(count: usize) -> RegionSet {
        let mut set = RegionSet::default();
        for (at, word) in set.0.iter_mut().enumerate() {
            let bits = count.saturating_sub(at * 64).min(64);
            *word = if bits == 64 {
                u64::MAX
            } else {
                (1 << bits) - 1
            };
        }
        set
    }

    pub fn insert(&mut self, region: usize) {
        if let Some(word) = self.0.get_mut(region / 64) {
            *word |= 1 << (region % 64);
        }
    }

    pub fn contains(&self, region: usize) -> bool {
        self.0
            .get(region / 64)
            .is_some_and(|word| word & (1 << (region % 64)) != 0)
    }

    pub fn and(mut self, other: RegionSet) -> RegionSet {
        self.0.iter_mut().zip(other.0).for_each(|(a, b)| *a &= b);
        self
    }

    pub fn or(mut self, other: RegionSet) -> RegionSet {
        self.0.iter_mut().zip(other.0).for_each(|(a, b)| *a |= b);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&word| word == 0)
    }

    pub fn len(&self) -> usize {
        self.0.iter().map(|word| word.count_ones() as usize).sum()
    }

    /// Positions in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(at, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                (rest != 0).then(|| {
                    let bit = rest.trailing_zeros() as usize;
                    rest &= rest - 1;
                    at * 64 + bit
                })
            })
        })
    }
}

impl FromIterator<usize> for RegionSet {
    fn from_iter<I: IntoIterator<Item = usize>>(regions: I) -> RegionSet {
        let mut set = RegionSet::default();
        regions.into_iter().for_each(|r| set.insert(r));
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_hold_positions_across_words() {
        let set: RegionSet = [0, 63, 64, 1000].into_iter().collect();
        assert!(set.contains(63) && set.contains(64) && set.contains(1000));
        assert!(!set.contains(1) && !set.contains(MAX_SERVICE_REGIONS + 5));
        assert_eq!(set.iter().collect::<Vec<_>>(), [0, 63, 64, 1000]);
        assert_eq!(set.len(), 4);
        let first = RegionSet::first(65);
        assert_eq!(set.and(first).iter().collect::<Vec<_>>(), [0, 63, 64]);
        assert_eq!(set.or(first).len(), 66);
        assert!(RegionSet::default().is_empty() && !first.is_empty());
    }
}
