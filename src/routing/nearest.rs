//! The regions of a service nearest to a point, for services too large to sort per query.
//!
//! Sorting a thousand regions by distance for every query would cost more than everything else
//! a query does. The order depends only on the service's regions and the client's coordinates,
//! not on health, so the [`KEPT`] nearest are computed once per place and remembered per thread
//! in a small direct-mapped table (nothing shared, no lock, bounded). The caller walks them,
//! skipping what health or rules exclude, and sorts the whole service only when they run out.

use std::cell::RefCell;

use arrayvec::ArrayVec;

use super::ServicePlan;
use crate::config::MAX_SERVICE_REGIONS;

/// How many nearest regions are remembered per place.
pub const KEPT: usize = 16;
/// Places remembered per thread (a power of two): about 90 KB.
const SLOTS: usize = 1024;

pub type Nearest = ArrayVec<u16, KEPT>;

#[derive(Clone)]
struct Entry {
    plan: u64,
    direction: [u64; 3],
    nearest: Nearest,
}

thread_local! {
    static TABLE: RefCell<Vec<Option<Entry>>> = const { RefCell::new(Vec::new()) };
}

/// The [`KEPT`] regions of `plan` nearest to the point `direction` (a unit vector), nearest
/// first; of equally near ones, the first in the service's list.
pub fn nearest(plan: &ServicePlan, direction: [f64; 3]) -> Nearest {
    let bits = direction.map(f64::to_bits);
    TABLE.with_borrow_mut(|table| {
        if table.is_empty() {
            table.resize(SLOTS, None);
        }
        let slot = &mut table[slot_of(plan.id, bits)];
        if let Some(entry) = slot
            .as_ref()
            .filter(|e| e.plan == plan.id && e.direction == bits)
        {
            return entry.nearest.clone();
        }
        let nearest = compute(plan, direction);
        *slot = Some(Entry {
            plan: plan.id,
            direction: bits,
            nearest: nearest.clone(),
        });
        nearest
    })
}

/// Selects the nearest without sorting the rest: linear in the service's size.
fn compute(plan: &ServicePlan, v: [f64; 3]) -> Nearest {
    let mut keyed: ArrayVec<(f64, u16), MAX_SERVICE_REGIONS> = ArrayVec::new();
    keyed.extend(plan.regions.iter().enumerate().map(|(i, region)| {
        let d = region.direction;
        (-(d[0] * v[0] + d[1] * v[1] + d[2] * v[2]), i as u16)
    }));
    let order = |a: &(f64, u16), b: &(f64, u16)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
    if keyed.len() > KEPT {
        keyed.select_nth_unstable_by(KEPT - 1, order);
        keyed.truncate(KEPT);
    }
    keyed.sort_unstable_by(order);
    // By reference: moving an ArrayVec copies its whole capacity.
    keyed.iter().map(|&(_, i)| i).collect()
}

fn slot_of(plan: u64, direction: [u64; 3]) -> usize {
    let hash = direction.iter().fold(plan, |h, &w| {
        (h ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(23)
    });
    (hash as usize) & (SLOTS - 1)
}
