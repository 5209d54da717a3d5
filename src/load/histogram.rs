//! A fixed-size latency histogram with about 1% precision: constant memory however long a load
//! runs, mergeable across workers.

use std::time::Duration;

/// Sub-buckets per power of two: values are kept to 7 significant bits.
const SUB_BITS: u32 = 7;
const SUB: usize = 1 << SUB_BITS;
/// Powers of two of nanoseconds covered (2^40 ns is about 18 minutes).
const POWERS: usize = 40;

/// Counts of latencies, in nanoseconds.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; (POWERS + 1) * SUB],
            count: 0,
            max: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.counts[index(nanos)] += 1;
        self.count += 1;
        self.max = self.max.max(nanos);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max)
    }

    /// The latency at or below which `quantile` (0 to 1) of the recorded ones fall, to the
    /// histogram's precision (the upper edge of the bucket holding it, capped by the maximum).
    pub fn quantile(&self, quantile: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((quantile * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Duration::from_nanos(upper_edge(i).min(self.max));
            }
        }
        self.max()
    }
}

fn index(nanos: u64) -> usize {
    if nanos < SUB as u64 {
        return nanos as usize;
    }
    let power = 63 - nanos.leading_zeros(); // >= SUB_BITS
    let shift = power - SUB_BITS + 1;
    let bucket = (power - SUB_BITS + 1) as usize;
    (bucket * SUB + (nanos >> shift) as usize - SUB / 2).min((POWERS + 1) * SUB - 1)
}

/// The largest value that maps to bucket `i`.
fn upper_edge(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let bucket = i / SUB;
    let sub = (i % SUB + SUB / 2) as u64;
    let shift = bucket as u32;
    ((sub + 1) << shift) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_lands_in_a_bucket_whose_edge_is_within_one_percent_above_it() {
        let mut value = 1u64;
        while value < 1 << 39 {
            for v in [value, value + 1, value * 3 / 2] {
                let edge = upper_edge(index(v));
                assert!(edge >= v, "{v} -> edge {edge}");
                assert!(
                    (edge - v) as f64 <= v as f64 / 60.0 + 1.0,
                    "{v} -> edge {edge}"
                );
            }
            value = value * 2 + 1;
        }
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut h = Histogram::default();
        for micros in 1..=1000u64 {
            h.record(Duration::from_micros(micros));
        }
        let p50 = h.quantile(0.5).as_micros() as f64;
        let p99 = h.quantile(0.99).as_micros() as f64;
        assert!((495.0..=510.0).contains(&p50), "p50 {p50}");
        assert!((985.0..=1000.0).contains(&p99), "p99 {p99}");
        assert_eq!(h.max(), Duration::from_micros(1000));
        let mut other = Histogram::default();
        other.record(Duration::from_secs(2));
        h.merge(&other);
        assert_eq!(h.count(), 1001);
        assert_eq!(h.max(), Duration::from_secs(2));
    }
}
