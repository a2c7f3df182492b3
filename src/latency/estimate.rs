//! A client network's regions by expected round trip: the pure arithmetic, with no table, map
//! or health in sight. The evidence comes in levels, most specific first (the network's own
//! measurements, then those of its location, nearby, its country); the order leaves the
//! distance order only where a measured gain is clear, so noise never flaps answers.

use arrayvec::ArrayVec;

/// A gain smaller than this is noise, whatever `better_by` says.
pub const MIN_GAIN_MS: f64 = 5.0;

/// How far a region's estimate may be from the best and still be explored.
pub const EXPLORE_WITHIN: f64 = 2.0;

/// What distance alone predicts: light in fibre covers about 100 km of great circle per
/// millisecond of round trip, and paths run about twice the great circle.
pub fn prior_rtt_ms(distance_km: f64) -> f64 {
    5.0 + 2.0 * distance_km / 100.0
}

/// A service's `latency:` settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Share of subnets sent to another candidate, so that its round trip is measured.
    pub explore: f64,
    /// Samples a region needs, at one level, for its estimate to count.
    pub min_samples: u32,
    /// The least relative gain that leaves the distance order.
    pub better_by: f64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            explore: 0.01,
            min_samples: 20,
            better_by: 0.10,
        }
    }
}

/// Round trips measured to one region, summed over networks.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tally {
    /// Sum of each network's figure times its samples.
    pub weighted_ms: f64,
    pub samples: u64,
}

impl Tally {
    pub fn add(&mut self, rtt_ms: f64, samples: u32) {
        self.weighted_ms += rtt_ms * f64::from(samples);
        self.samples += u64::from(samples);
    }

    /// The same samples, their figures negated: a gap from the other side.
    pub fn negated(&self) -> Tally {
        Tally {
            weighted_ms: -self.weighted_ms,
            samples: self.samples,
        }
    }

    pub fn merge(&mut self, other: &Tally) {
        self.weighted_ms += other.weighted_ms;
        self.samples += other.samples;
    }

    pub fn mean_ms(&self) -> Option<f64> {
        (self.samples > 0).then(|| self.weighted_ms / self.samples as f64)
    }
}

/// Where an estimate was borrowed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// The client's own network.
    Network,
    /// Networks GeoIP places at the same location.
    Location,
    /// Networks GeoIP places within a few hundred kilometres.
    Nearby,
    /// Networks of the same country.
    Country,
}

impl Level {
    pub const ALL: [Level; 4] = [
        Level::Network,
        Level::Location,
        Level::Nearby,
        Level::Country,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            Level::Network => "this network",
            Level::Location => "same location",
            Level::Nearby => "nearby",
            Level::Country => "same country",
        }
    }
}

/// What the order rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Basis {
    /// Measurements, at the level they were compared.
    Measured(Level),
    /// Too little measured: the distance order.
    Distance,
}

/// One candidate region, in the distance order, with its evidence per level.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    /// The region's position in its service.
    pub region: u16,
    pub distance_km: f64,
    /// Its round trips, by [`Level`], most specific first.
    pub tallies: [Tally; 4],
    /// Its round trip minus the nearest region's, over the networks measured to both (each
    /// weighed by the fewer samples of the two), by [`Level`]; none for the nearest itself.
    pub paired: [Tally; 4],
}

/// A candidate's expected round trip, and what it rests on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub ms: f64,
    /// The level it was compared with the nearest at.
    pub level: Level,
    /// The samples of that comparison: the region's own, or those paired with the nearest.
    pub samples: u64,
}

/// Regions a service holds at most, as the routing table's orders do.
const MAX: usize = 64;

/// A client network's regions by expected round trip.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    pub order: ArrayVec<u16, MAX>,
    pub basis: Basis,
    /// The region this network's explored subnets go to, when one is worth measuring.
    pub explore: Option<u16>,
    /// Whether measurements put another region before the nearest.
    pub moved: bool,
    /// By candidate (in the order given).
    pub estimates: ArrayVec<Option<Estimate>, MAX>,
}

/// Ranks `candidates` (given nearest first). Each region is compared with the nearest, and its
/// estimate is the nearest's own figure plus the gap between them: first the gap measured on
/// the same networks (which cancels each network's last mile), at the most specific level with
/// `min_samples` of it; else the gap between the two regions' figures at the most specific
/// level where both have `min_samples`. A region goes before the next in distance order only
/// when it is faster by `better_by` and [`MIN_GAIN_MS`].
pub fn rank(candidates: &[Candidate], settings: &Settings) -> Ranked {
    let estimates = estimates(candidates, settings.min_samples);
    let estimate = |c: &Candidate| {
        let at = candidates.iter().position(|x| x.region == c.region)?;
        estimates.get(at).copied().flatten().map(|e| e.ms)
    };
    let mut order: ArrayVec<u16, MAX> = ArrayVec::new();
    let mut left: ArrayVec<&Candidate, MAX> = candidates.iter().take(MAX).collect();
    while let Some(&next) = left.first() {
        let chosen = estimate(next)
            .and_then(|next_ms| {
                let (at, best_ms) = left
                    .iter()
                    .enumerate()
                    .filter_map(|(at, c)| Some((at, estimate(c)?)))
                    .min_by(|a, b| a.1.total_cmp(&b.1))?;
                let gain = next_ms - best_ms;
                (gain >= MIN_GAIN_MS && gain >= settings.better_by * next_ms).then_some(at)
            })
            .unwrap_or(0);
        order.push(left.remove(chosen).region);
    }
    let compared = estimates.iter().skip(1).flatten().map(|e| e.level).min();
    let basis = compared.map_or(Basis::Distance, Basis::Measured);
    let explore = (settings.explore > 0.0)
        .then(|| explored(candidates, &order, &estimates, settings))
        .flatten();
    let moved = candidates.first().map(|c| c.region) != order.first().copied();
    Ranked {
        order,
        basis,
        explore,
        moved,
        estimates,
    }
}

/// By candidate: its estimate in the nearest's frame; `None` where nothing compares it with
/// the nearest.
fn estimates(candidates: &[Candidate], min_samples: u32) -> ArrayVec<Option<Estimate>, MAX> {
    let min = u64::from(min_samples.max(1));
    let enough = |tally: &Tally| (tally.samples >= min).then(|| tally.mean_ms()).flatten();
    let nearest = candidates.first();
    let own = nearest.and_then(|n| {
        Level::ALL.iter().find_map(|&level| {
            let tally = &n.tallies[level as usize];
            let ms = enough(tally)?;
            Some(Estimate {
                ms,
                level,
                samples: tally.samples,
            })
        })
    });
    let compared = |c: &Candidate| {
        let (nearest, own) = (nearest?, own?);
        if c.region == nearest.region {
            return Some(own);
        }
        let paired = Level::ALL.iter().find_map(|&level| {
            let tally = &c.paired[level as usize];
            let ms = own.ms + enough(tally)?;
            Some(Estimate {
                ms,
                level,
                samples: tally.samples,
            })
        });
        let apart = || {
            Level::ALL.iter().find_map(|&level| {
                let (tally, theirs) =
                    (&c.tallies[level as usize], &nearest.tallies[level as usize]);
                let ms = own.ms + enough(tally)? - enough(theirs)?;
                Some(Estimate {
                    ms,
                    level,
                    samples: tally.samples,
                })
            })
        };
        paired.or_else(apart)
    };
    candidates.iter().take(MAX).map(compared).collect()
}

/// Samples beyond this many `min_samples` make a region no less worth measuring than another.
const MEASURED_ENOUGH: u64 = 4;

/// The candidate least measured for this network (by its comparison's samples, counted in
/// `min_samples` up to [`MEASURED_ENOUGH`] of them), among those whose estimate (measured,
/// else by distance) is within [`EXPLORE_WITHIN`] of the best; the fastest of equally measured
/// ones, so that a well-measured network explores its runner-up and not its slowest. Never
/// the first of `order`, which its clients measure already, nor a region measured enough to
/// be clearly slower than it (by `better_by` and [`MIN_GAIN_MS`]): measuring it again could
/// not change the answer, and would cost its clients the difference.
fn explored(
    candidates: &[Candidate],
    order: &[u16],
    estimates: &[Option<Estimate>],
    settings: &Settings,
) -> Option<u16> {
    let first = *order.first()?;
    let min_samples = settings.min_samples;
    let figures: ArrayVec<(u16, f64, u64), MAX> = candidates
        .iter()
        .zip(estimates)
        .map(|(c, e)| {
            let known = c
                .tallies
                .iter()
                .find(|t| t.samples > 0)
                .map_or(0, |t| t.samples);
            let ms = e.map_or_else(|| prior_rtt_ms(c.distance_km), |e| e.ms);
            let samples = e.map_or(known, |e| e.samples);
            (c.region, ms, samples / u64::from(min_samples.max(1)))
        })
        .collect();
    let best = figures.iter().map(|f| f.1).min_by(f64::total_cmp)?;
    let first_ms = figures.iter().find(|f| f.0 == first)?.1;
    let undecided = |ms: f64| ms - first_ms < MIN_GAIN_MS.max(settings.better_by * ms);
    figures
        .iter()
        .filter(|&&(region, ms, measured)| {
            region != first
                && ms <= EXPLORE_WITHIN * best
                && (measured < MEASURED_ENOUGH || undecided(ms))
        })
        .min_by(|a, b| {
            let (a_measured, b_measured) = (a.2.min(MEASURED_ENOUGH), b.2.min(MEASURED_ENOUGH));
            a_measured.cmp(&b_measured).then(a.1.total_cmp(&b.1))
        })
        .map(|&(region, _, _)| region)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(rtt_ms: f64, samples: u32) -> Tally {
        let mut t = Tally::default();
        t.add(rtt_ms, samples);
        t
    }

    /// Regions 0, 1, 2 at 500, 1000, 3000 km; `measures` per region at one level.
    fn candidates(level: Level, measures: [Option<(f64, u32)>; 3]) -> Vec<Candidate> {
        [500.0, 1000.0, 3000.0]
            .into_iter()
            .zip(measures)
            .enumerate()
            .map(|(region, (distance_km, m))| {
                let mut tallies = [Tally::default(); 4];
                if let Some((rtt, n)) = m {
                    for t in &mut tallies[level as usize..] {
                        t.merge(&tally(rtt, n));
                    }
                }
                Candidate {
                    region: region as u16,
                    distance_km,
                    tallies,
                    paired: [Tally::default(); 4],
                }
            })
            .collect()
    }

    const QUIET: Settings = Settings {
        explore: 0.0,
        min_samples: 20,
        better_by: 0.10,
    };

    #[test]
    fn a_clearly_faster_region_goes_first_and_noise_does_not_move_the_order() {
        let faster = candidates(Level::Network, [Some((60.0, 30)), Some((41.0, 30)), None]);
        let ranked = rank(&faster, &QUIET);
        assert_eq!(ranked.order.as_slice(), [1, 0, 2]);
        assert_eq!(ranked.basis, Basis::Measured(Level::Network));
        // 9% better: under better_by.
        let close = candidates(Level::Network, [Some((60.0, 30)), Some((55.0, 30)), None]);
        assert_eq!(rank(&close, &QUIET).order.as_slice(), [0, 1, 2]);
        // 12% but 4 ms: under the 5 ms floor.
        let small = candidates(Level::Network, [Some((30.0, 30)), Some((26.0, 30)), None]);
        assert_eq!(rank(&small, &QUIET).order.as_slice(), [0, 1, 2]);
    }

    #[test]
    fn too_few_samples_on_either_side_keep_the_distance_order() {
        for measures in [
            [Some((60.0, 19)), Some((30.0, 100)), None],
            [Some((60.0, 100)), Some((30.0, 19)), None],
            [None, Some((30.0, 100)), Some((20.0, 100))],
        ] {
            let ranked = rank(&candidates(Level::Network, measures), &QUIET);
            assert_eq!(ranked.order.as_slice(), [0, 1, 2], "{measures:?}");
            assert_eq!(ranked.basis, Basis::Distance);
        }
    }

    #[test]
    fn a_network_with_too_few_samples_borrows_from_the_first_level_that_has_them() {
        let mut by_country =
            candidates(Level::Country, [Some((90.0, 500)), Some((50.0, 400)), None]);
        // Its own network measured only the nearest region, and too little.
        by_country[0].tallies[0] = tally(80.0, 5);
        let ranked = rank(&by_country, &QUIET);
        assert_eq!(ranked.basis, Basis::Measured(Level::Country));
        assert_eq!(ranked.order.as_slice(), [1, 0, 2]);
        let by_location = candidates(Level::Location, [Some((90.0, 50)), Some((50.0, 40)), None]);
        assert_eq!(
            rank(&by_location, &QUIET).basis,
            Basis::Measured(Level::Location)
        );
    }

    #[test]
    fn each_region_is_compared_at_the_most_specific_level_it_shares_with_the_nearest() {
        // The location measured the nearest and region 1; only the country measured region 2,
        // the fastest.
        let mut mixed = candidates(Level::Location, [Some((60.0, 40)), Some((58.0, 40)), None]);
        mixed[2].tallies[Level::Country as usize] = tally(30.0, 200);
        mixed[0].tallies[Level::Country as usize] = tally(70.0, 400);
        let ranked = rank(&mixed, &QUIET);
        assert_eq!(ranked.order.as_slice(), [2, 0, 1]);
        assert_eq!(ranked.basis, Basis::Measured(Level::Location));
    }

    #[test]
    fn a_gap_measured_on_the_same_networks_goes_before_one_between_different_networks() {
        // Apart, the country's networks say region 1 is 20 ms faster; the networks measured to
        // both say it is 2 ms slower (those measured to region 1 were nearer, not better).
        let mut paired = candidates(Level::Country, [Some((70.0, 400)), Some((50.0, 400)), None]);
        paired[1].paired[Level::Country as usize] = tally(2.0, 60);
        let ranked = rank(&paired, &QUIET);
        assert_eq!(ranked.order.as_slice(), [0, 1, 2]);
        let estimate = ranked.estimates[1].expect("region 1 compared");
        assert_eq!((estimate.ms, estimate.samples), (72.0, 60));
        // Too few paired samples: the gap apart decides.
        paired[1].paired[Level::Country as usize] = tally(2.0, 19);
        assert_eq!(rank(&paired, &QUIET).order.as_slice(), [1, 0, 2]);
    }

    #[test]
    fn a_well_measured_network_explores_its_runner_up() {
        let explore = Settings {
            explore: 0.05,
            ..QUIET
        };
        // Regions 1 and 2 both measured many times over, region 2 too close to the first to be
        // sure of: it is explored.
        let mut measured = candidates(
            Level::Network,
            [Some((60.0, 500)), Some((90.0, 500)), Some((64.0, 500))],
        );
        assert_eq!(rank(&measured, &explore).explore, Some(2));
        // Both measured enough to be clearly slower: nothing is worth its clients' time.
        measured[2].tallies = [tally(75.0, 500); 4];
        assert_eq!(rank(&measured, &explore).explore, None);
        // Region 1 measured less: it is explored, slower as it is.
        measured[1].tallies = [tally(90.0, 30); 4];
        assert_eq!(rank(&measured, &explore).explore, Some(1));
    }

    #[test]
    fn exploration_goes_to_the_least_measured_region_within_twice_the_best() {
        let explore = Settings {
            explore: 0.05,
            ..QUIET
        };
        // Region 2 (3000 km, prior 65 ms) is within 2x of region 0's 60 ms, and never measured.
        let some = candidates(Level::Network, [Some((60.0, 30)), Some((58.0, 30)), None]);
        assert_eq!(rank(&some, &explore).explore, Some(2));
        // Nothing measured: priors 15, 25, 65 ms; region 2 is beyond twice the best.
        let none = candidates(Level::Network, [None, None, None]);
        assert_eq!(rank(&none, &explore).explore, Some(1));
        assert_eq!(rank(&none, &QUIET).explore, None, "explore 0: none");
    }

    #[test]
    fn the_prior_grows_with_distance() {
        assert!(prior_rtt_ms(0.0) < prior_rtt_ms(1000.0));
        assert_eq!(prior_rtt_ms(1000.0), 25.0);
    }
}
