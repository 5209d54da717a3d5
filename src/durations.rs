//! Duration distributions: a histogram whose bins are narrow enough that any value in a bin is
//! within 1% of the bin's representative, with counts that add and subtract (so a re-reported
//! run is taken back out exactly), plus the exact maximum.
//!
//! Bins are fixed for all time (stored records hold bin numbers): bin 0 is `{0}`, and a bin
//! starting at `lo` has the representative `r = lo + lo / 100` and ends at `r * 100 / 99`, the
//! widest end for which every value of the bin is within 1% of `r`. Below 100 every bin holds
//! one value; above, each is about 2% wider than the last, so all of `u64` takes 2,100 bins.

use std::sync::OnceLock;

/// A bin's number.
pub type Bin = u16;

/// The first value of every bin, ascending.
fn starts() -> &'static [u64] {
    static STARTS: OnceLock<Vec<u64>> = OnceLock::new();
    STARTS.get_or_init(|| {
        let mut starts = Vec::with_capacity(2_200);
        let mut lo: u128 = 0;
        while lo <= u128::from(u64::MAX) {
            starts.push(lo as u64);
            let representative = lo + lo / 100;
            lo = representative * 100 / 99 + 1;
        }
        starts
    })
}

/// The bin holding `value`.
pub fn bin_of(value: u64) -> Bin {
    (starts().partition_point(|start| *start <= value) - 1) as Bin
}

/// The smallest value of a bin.
pub fn bin_start(bin: Bin) -> u64 {
    starts()[usize::from(bin)]
}

/// The value standing for a bin: within 1% of every value in it.
pub fn representative(bin: Bin) -> u64 {
    let lo = starts()[usize::from(bin)];
    lo.saturating_add(lo / 100)
}

/// The durations of a set of runs: how many fell in each bin, and the largest.
///
/// Counts wrap, so a distribution with a retraction (a count of `u64::MAX` standing for -1) is a
/// delta that, added to a distribution holding that value, removes it. `max` is exact only for
/// distributions of actual runs; the store recomputes it where a retraction may have removed it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Durations {
    /// Non-zero counts by bin, in bin order.
    bins: Vec<(Bin, u64)>,
    max: u64,
}

/// Duration percentiles (nearest rank, within 1%) and the exact maximum of a non-empty set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p95: u64,
    pub p99: u64,
    pub max: u64,
}

impl Durations {
    /// One run of this duration.
    pub fn of(value: u64) -> Durations {
        Durations {
            bins: vec![(bin_of(value), 1)],
            max: value,
        }
    }

    /// The removal of one run of this duration (its max stays 0: see [`Durations`]).
    pub fn retraction_of(value: u64) -> Durations {
        Durations {
            bins: vec![(bin_of(value), u64::MAX)],
            max: 0,
        }
    }

    /// A distribution from its parts as stored: bins in ascending order with non-zero counts.
    pub fn from_parts(bins: Vec<(Bin, u64)>, max: u64) -> Durations {
        debug_assert!(bins.windows(2).all(|w| w[0].0 < w[1].0));
        Durations { bins, max }
    }

    /// Adds `count` (wrapping: `u64::MAX` takes one away) to a bin.
    pub fn add_count(&mut self, bin: Bin, count: u64) {
        match self.bins.binary_search_by_key(&bin, |(b, _)| *b) {
            Ok(at) => {
                let sum = self.bins[at].1.wrapping_add(count);
                if sum == 0 {
                    self.bins.remove(at);
                } else {
                    self.bins[at].1 = sum;
                }
            }
            Err(at) if count != 0 => self.bins.insert(at, (bin, count)),
            Err(_) => {}
        }
    }

    /// Raises the max to at least `value`.
    pub fn raise_max(&mut self, value: u64) {
        self.max = self.max.max(value);
    }

    /// Counts one run of this duration.
    pub fn add_value(&mut self, value: u64) {
        self.add_count(bin_of(value), 1);
        self.raise_max(value);
    }

    pub fn bins(&self) -> &[(Bin, u64)] {
        &self.bins
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn set_max(&mut self, max: u64) {
        self.max = max;
    }

    pub fn is_empty(&self) -> bool {
        self.bins.is_empty()
    }

    /// How many runs (the sum of the counts).
    pub fn count(&self) -> u64 {
        self.bins
            .iter()
            .fold(0u64, |sum, (_, count)| sum.wrapping_add(*count))
    }

    /// Adds another distribution (or a retraction): counts add, zero counts go, and the max is
    /// the larger of the two (a delta whose counts cancel keeps the max of what it added).
    pub fn add(&mut self, other: &Durations) {
        self.max = self.max.max(other.max);
        if other.bins.is_empty() {
            return;
        }
        if self.bins.is_empty() {
            self.bins.extend(other.bins.iter().filter(|(_, c)| *c != 0));
            return;
        }
        if let [(bin, count)] = other.bins[..] {
            self.add_count(bin, count);
            return;
        }
        let mut merged = Vec::with_capacity(self.bins.len() + other.bins.len());
        let (mut mine, mut theirs) = (self.bins.iter().peekable(), other.bins.iter().peekable());
        loop {
            let next = match (mine.peek(), theirs.peek()) {
                (Some(a), Some(b)) if a.0 == b.0 => {
                    let sum = (a.0, a.1.wrapping_add(b.1));
                    mine.next();
                    theirs.next();
                    sum
                }
                (Some(a), Some(b)) if a.0 < b.0 => *mine.next().expect("peeked"),
                (_, Some(_)) => *theirs.next().expect("peeked"),
                (Some(_), None) => *mine.next().expect("peeked"),
                (None, None) => break,
            };
            if next.1 != 0 {
                merged.push(next);
            }
        }
        self.bins = merged;
    }

    /// The percentiles, or `None` without runs.
    pub fn percentiles(&self) -> Option<Percentiles> {
        percentiles(self.bins.iter().copied(), self.count(), self.max)
    }

    /// The sum of several distributions (a part's maximum is exact, so the sum's is too).
    pub fn sum<'a>(all: impl Iterator<Item = &'a Durations> + Clone) -> Durations {
        let entries: usize = all.clone().map(|d| d.bins.len()).sum();
        if entries <= 64 {
            let mut bins: Vec<(Bin, u64)> =
                all.clone().flat_map(|d| d.bins.iter().copied()).collect();
            bins.sort_unstable_by_key(|(bin, _)| *bin);
            let mut combined: Vec<(Bin, u64)> = Vec::with_capacity(bins.len());
            for (bin, count) in bins {
                match combined.last_mut() {
                    Some(last) if last.0 == bin => last.1 = last.1.wrapping_add(count),
                    _ => combined.push((bin, count)),
                }
            }
            combined.retain(|(_, count)| *count != 0);
            let max = all.map(|d| d.max).max().unwrap_or(0);
            return Durations {
                bins: combined,
                max,
            };
        }
        // A histogram per thread, cleared after each sum (a fresh one zeroes 16 KB).
        thread_local! {
            static HISTOGRAM: std::cell::RefCell<Histogram> = std::cell::RefCell::default();
        }
        HISTOGRAM.with_borrow_mut(|histogram| {
            for durations in all {
                histogram.add_durations(durations);
            }
            histogram.take_durations()
        })
    }
}

/// The nearest-rank percentiles of `count` runs whose bins and counts come in bin order.
fn percentiles(
    bins: impl Iterator<Item = (Bin, u64)>,
    count: u64,
    max: u64,
) -> Option<Percentiles> {
    let mut scan = PercentileScan::new(count, max)?;
    for (bin, in_bin) in bins {
        if scan.bin(bin, in_bin) {
            break;
        }
    }
    Some(scan.finish())
}

/// Nearest-rank percentiles (the ceil(p/100 * N)-th smallest) of `N` runs with a known maximum,
/// worked out as their bins go by in bin order, so that an encoded distribution needs no
/// decoding first.
pub struct PercentileScan {
    ranks: [u128; 4],
    answers: [u64; 4],
    seen: u128,
    next: usize,
    max: u64,
    top: Bin,
}

impl PercentileScan {
    /// `None` without runs.
    pub fn new(count: u64, max: u64) -> Option<PercentileScan> {
        (count > 0).then(|| PercentileScan {
            ranks: [50u128, 90, 95, 99].map(|p| (p * u128::from(count)).div_ceil(100)),
            answers: [max; 4],
            seen: 0,
            next: 0,
            max,
            top: bin_of(max),
        })
    }

    /// Counts the next bin's runs; true once every percentile is known.
    pub fn bin(&mut self, bin: Bin, in_bin: u64) -> bool {
        self.seen += u128::from(in_bin);
        while self.next < 4 && self.seen >= self.ranks[self.next] {
            self.answers[self.next] = if bin == self.top && in_bin == 1 {
                self.max // the only run of the top bin is the max
            } else {
                // The max is exact and in the top bin, so never worse than the representative.
                representative(bin).min(self.max)
            };
            self.next += 1;
        }
        self.next == 4
    }

    pub fn finish(self) -> Percentiles {
        let [p50, p90, p95, p99] = self.answers;
        Percentiles {
            p50,
            p90,
            p95,
            p99,
            max: self.max,
        }
    }
}

/// A distribution being summed: a count per bin (wrapping, so parts can also be taken out),
/// for answers that add many parts' distributions.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    max: u64,
    /// The bins touched so far lie in `low..high` (reads scan only those).
    low: usize,
    high: usize,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; starts().len()],
            max: 0,
            low: usize::MAX,
            high: 0,
        }
    }
}

impl Histogram {
    pub fn add(&mut self, bin: Bin, count: u64) {
        let at = usize::from(bin);
        self.low = self.low.min(at);
        self.high = self.high.max(at + 1);
        let slot = &mut self.counts[at];
        *slot = slot.wrapping_add(count);
    }

    pub fn raise_max(&mut self, value: u64) {
        self.max = self.max.max(value);
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// Takes out one run of this duration (the max stays: the caller knows whether it still
    /// holds).
    pub fn remove_value(&mut self, value: u64) {
        self.add(bin_of(value), 1u64.wrapping_neg());
    }

    /// Counts one run of this duration.
    pub fn add_value(&mut self, value: u64) {
        self.add(bin_of(value), 1);
        self.raise_max(value);
    }

    pub fn add_durations(&mut self, durations: &Durations) {
        for &(bin, count) in &durations.bins {
            self.add(bin, count);
        }
        self.raise_max(durations.max);
    }

    fn touched(&self) -> &[u64] {
        self.counts.get(self.low..self.high).unwrap_or_default()
    }

    fn non_empty(&self) -> impl Iterator<Item = (Bin, u64)> + '_ {
        let low = self.low.min(self.high);
        self.touched()
            .iter()
            .enumerate()
            .filter(|(_, count)| **count != 0)
            .map(move |(at, count)| ((low + at) as Bin, *count))
    }

    pub fn percentiles(&self) -> Option<Percentiles> {
        let count = self
            .touched()
            .iter()
            .fold(0u64, |sum, c| sum.wrapping_add(*c));
        percentiles(self.non_empty(), count, self.max)
    }

    /// The distribution summed so far, leaving the histogram empty for another sum.
    pub fn take_durations(&mut self) -> Durations {
        let durations = Durations {
            bins: self.non_empty().collect(),
            max: self.max,
        };
        self.clear();
        durations
    }

    /// Empties the histogram, clearing only the bins touched.
    fn clear(&mut self) {
        let low = self.low.min(self.high);
        self.counts[low..self.high].fill(0);
        (self.max, self.low, self.high) = (0, usize::MAX, 0);
    }

    /// The percentiles of the distribution summed so far, leaving the histogram empty for
    /// another sum (only the bins touched are cleared, so reusing one costs far less than a
    /// fresh one).
    pub fn take_percentiles(&mut self) -> Option<Percentiles> {
        let percentiles = self.percentiles();
        self.clear();
        percentiles
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relative_error(answer: u64, exact: u64) -> f64 {
        (answer as f64 - exact as f64).abs() / exact as f64
    }

    #[test]
    fn every_bin_is_within_one_percent_of_its_representative() {
        let starts = starts();
        assert_eq!(starts[0], 0);
        assert!(starts.len() < usize::from(Bin::MAX));
        for (bin, window) in starts.windows(2).enumerate() {
            let (lo, hi) = (window[0], window[1] - 1);
            let r = representative(bin as Bin);
            assert!((lo..=hi).contains(&r));
            // Exactly, in integers: r - lo <= 1% of lo and hi - r <= 1% of hi.
            let (lo128, hi128, r128) = (u128::from(lo), u128::from(hi), u128::from(r));
            assert!((r128 - lo128) * 100 <= lo128, "bin {bin} [{lo}, {hi}]");
            assert!((hi128 - r128) * 100 <= hi128, "bin {bin} [{lo}, {hi}]");
            assert_eq!(bin_of(lo), bin as Bin);
            assert_eq!(bin_of(hi), bin as Bin);
        }
        assert_eq!(bin_of(0), 0);
        assert_eq!(representative(0), 0);
        let last = bin_of(u64::MAX);
        assert_eq!(usize::from(last), starts.len() - 1);
        assert!(relative_error(representative(last), u64::MAX) <= 0.01);
        assert!(
            relative_error(
                representative(bin_of(u64::from(u32::MAX))),
                u64::from(u32::MAX)
            ) <= 0.01
        );
    }

    #[test]
    fn percentiles_are_nearest_rank_within_one_percent_and_max_is_exact() {
        let values: Vec<u64> = (0..1000u64).map(|i| i * i * 37 % 100_003).collect();
        let mut sorted = values.clone();
        sorted.sort_unstable();
        let mut durations = Durations::default();
        for v in &values {
            durations.add(&Durations::of(*v));
        }
        let p = durations.percentiles().expect("runs");
        for (answer, q) in [(p.p50, 50), (p.p90, 90), (p.p95, 95), (p.p99, 99)] {
            let exact = sorted[(q * sorted.len()).div_ceil(100) - 1];
            assert!(
                relative_error(answer, exact) <= 0.01,
                "p{q}: {answer} vs {exact}"
            );
        }
        assert_eq!(p.max, *sorted.last().expect("values"));
    }

    #[test]
    fn retraction_removes_exactly_and_zero_is_exact() {
        let mut durations = Durations::default();
        for v in [0, 0, 5, u64::from(u32::MAX)] {
            durations.add(&Durations::of(v));
        }
        durations.add(&Durations::retraction_of(u64::from(u32::MAX)));
        durations.add(&Durations::retraction_of(5));
        assert_eq!(durations.count(), 2);
        assert_eq!(durations.bins(), &[(0, 2)]);
        durations.set_max(0);
        let p = durations.percentiles().expect("runs");
        assert_eq!((p.p50, p.p99, p.max), (0, 0, 0));
        durations.add(&Durations::retraction_of(0));
        durations.add(&Durations::retraction_of(0));
        assert!(durations.is_empty());
        assert_eq!(durations.percentiles(), None);
    }

    #[test]
    fn a_taken_histogram_starts_the_next_sum_empty() {
        let mut reused = Histogram::default();
        for v in [3, 70_000, 9] {
            reused.add_value(v);
        }
        let first = reused.take_percentiles().expect("three runs");
        assert_eq!((first.p50, first.max), (9, 70_000));
        reused.add_value(12);
        let mut fresh = Histogram::default();
        fresh.add_value(12);
        assert_eq!(reused.percentiles(), fresh.percentiles());
        assert_eq!(reused.take_percentiles(), fresh.percentiles());
        assert_eq!(reused.take_percentiles(), None);
    }
}
