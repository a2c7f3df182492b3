//! Ranges that nest or are apart (IP networks), kept in order of their start with the wider
//! first: for each, the innermost range holding it. Those holding a range are then one chain,
//! so the innermost range holding a point is found by a binary search and a walk outward.
//!
//! It knows nothing of addresses: its owners (the GeoIP map's boundaries, the latency table)
//! keep the ranges and say which holds which.

/// By position in an ordered list of nesting ranges: the innermost range holding each.
#[derive(Debug, Clone, Default)]
pub struct Nesting {
    parents: Vec<Option<u32>>,
}

impl Nesting {
    /// The holders of `ranges`, ordered by start with a wider range before those inside it;
    /// `holds(outer, inner)` says whether `outer` holds all of `inner`.
    pub fn new<T>(ranges: &[T], holds: impl Fn(&T, &T) -> bool) -> Nesting {
        let mut parents = Vec::with_capacity(ranges.len());
        let mut open: Vec<u32> = Vec::new();
        for (at, range) in ranges.iter().enumerate() {
            while let Some(&top) = open.last() {
                if holds(&ranges[top as usize], range) {
                    break;
                }
                open.pop();
            }
            parents.push(open.last().copied());
            open.push(at as u32);
        }
        Nesting { parents }
    }

    /// The innermost range for which `holds(position)` is true, given `upto`, how many ranges
    /// start at or before what is sought: the last of them holds it, or one of those holding
    /// that one does.
    pub fn innermost(&self, upto: usize, holds: impl Fn(usize) -> bool) -> Option<usize> {
        let mut at = upto.checked_sub(1);
        while let Some(i) = at {
            if holds(i) {
                return Some(i);
            }
            at = self.parents.get(i).copied().flatten().map(|p| p as usize);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inclusive ranges, ordered by start, wider first.
    const RANGES: [(u32, u32); 6] = [(0, 99), (0, 9), (5, 9), (20, 29), (40, 49), (120, 130)];

    fn nesting() -> Nesting {
        Nesting::new(&RANGES, |outer, inner| outer.1 >= inner.1)
    }

    fn innermost_holding(point: u32) -> Option<(u32, u32)> {
        let upto = RANGES.partition_point(|r| r.0 <= point);
        let found = nesting().innermost(upto, |i| RANGES[i].1 >= point);
        found.map(|i| RANGES[i])
    }

    #[test]
    fn each_range_names_the_innermost_holding_it() {
        let parents: Vec<Option<u32>> = nesting().parents;
        assert_eq!(
            parents,
            [None, Some(0), Some(1), Some(0), Some(0), None],
            "a sibling is not a holder; a range past the first is held by nothing"
        );
    }

    #[test]
    fn a_point_is_found_in_the_innermost_range_or_none() {
        assert_eq!(innermost_holding(7), Some((5, 9)));
        assert_eq!(innermost_holding(3), Some((0, 9)));
        assert_eq!(
            innermost_holding(35),
            Some((0, 99)),
            "past a sibling, its holder"
        );
        assert_eq!(innermost_holding(110), None, "between the top ranges");
        assert_eq!(innermost_holding(125), Some((120, 130)));
        assert_eq!(innermost_holding(131), None);
    }
}
