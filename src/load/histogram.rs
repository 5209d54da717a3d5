//! Latency histograms of the load tool: `hdrhistogram` at 3 significant digits (0.1%
//! precision) over 1 µs to an hour, constant memory however long a load runs, mergeable across
//! workers.

use std::time::Duration;

/// Latencies recorded in microseconds.
#[derive(Clone, Debug)]
pub struct Histogram(hdrhistogram::Histogram<u64>);

/// The longest latency recorded as itself; longer ones are recorded as this.
const LONGEST_MICROS: u64 = 3_600_000_000;

impl Default for Histogram {
    fn default() -> Self {
        Histogram(
            hdrhistogram::Histogram::new_with_bounds(1, LONGEST_MICROS, 3)
                .expect("the bounds are valid"),
        )
    }
}

impl Histogram {
    pub fn record(&mut self, latency: Duration) {
        let micros = (latency.as_micros() as u64).clamp(1, LONGEST_MICROS);
        self.0.saturating_record(micros);
    }

    pub fn merge(&mut self, other: &Histogram) {
        self.0
            .add(&other.0)
            .expect("histograms of the same bounds always merge");
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    pub fn max(&self) -> Duration {
        Duration::from_micros(self.0.max())
    }

    /// The latency at `quantile` (0 to 1); zero when nothing was recorded.
    pub fn quantile(&self, quantile: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_micros(self.0.value_at_quantile(quantile))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut h = Histogram::default();
        for micros in 1..=1000u64 {
            h.record(Duration::from_micros(micros));
        }
        let p50 = h.quantile(0.5).as_micros() as f64;
        let p99 = h.quantile(0.99).as_micros() as f64;
        assert!((499.0..=501.0).contains(&p50), "p50 {p50}");
        assert!((989.0..=991.0).contains(&p99), "p99 {p99}");
        assert_eq!(h.max(), Duration::from_micros(1000));
        let mut other = Histogram::default();
        other.record(Duration::from_secs(2));
        h.merge(&other);
        assert_eq!(h.count(), 1001);
        assert_eq!(h.max().as_millis(), 2000);
        assert_eq!(Histogram::default().quantile(0.99), Duration::ZERO);
    }
}
