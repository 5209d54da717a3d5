//! Slowing down guessing at the token endpoint: each client id may fail a burst of attempts,
//! then one more every few seconds; past that its requests are refused with a retry hint
//! until the allowance refills. The state is a small in-memory token bucket per client id.

use std::sync::Mutex;
use std::time::Instant;

use rustc_hash::FxHashMap;

/// Failed attempts a client id may make at once.
pub const BURST: f64 = 10.0;
/// Seconds for one more attempt to be allowed after the burst.
pub const REFILL_SECS: f64 = 6.0;
/// Client ids tracked at most (ids with a full allowance are dropped first).
const MAX_TRACKED: usize = 65_536;

#[derive(Default)]
pub struct FailureThrottle {
    buckets: Mutex<FxHashMap<String, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    allowance: f64,
    at: Instant,
}

impl Bucket {
    fn refilled(self, now: Instant) -> f64 {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() / REFILL_SECS;
        (self.allowance + earned).min(BURST)
    }
}

impl FailureThrottle {
    /// `Err(seconds to wait)` when `client_id` has no failed attempt left.
    pub fn check(&self, client_id: &str, now: Instant) -> Result<(), u32> {
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        match buckets.get(&key(client_id)) {
            Some(bucket) => {
                let allowance = bucket.refilled(now);
                if allowance >= 1.0 {
                    Ok(())
                } else {
                    Err(((1.0 - allowance) * REFILL_SECS).ceil().max(1.0) as u32)
                }
            }
            None => Ok(()),
        }
    }

    /// Counts a failed attempt against `client_id`.
    pub fn failed(&self, client_id: &str, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(client_id) {
            buckets.retain(|_, b| b.refilled(now) < BURST);
            if buckets.len() >= MAX_TRACKED {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(key(client_id)).or_insert(Bucket {
            allowance: BURST,
            at: now,
        });
        *bucket = Bucket {
            allowance: (bucket.refilled(now) - 1.0).max(0.0),
            at: now,
        };
    }
}

/// Client ids are short; a long one is cut, so that memory stays bounded.
fn key(client_id: &str) -> String {
    client_id.chars().take(128).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_then_one_attempt_per_refill_period() {
        let throttle = FailureThrottle::default();
        let start = Instant::now();
        for _ in 0..BURST as usize {
            assert_eq!(throttle.check("c", start), Ok(()));
            throttle.failed("c", start);
        }
        let wait = throttle.check("c", start).unwrap_err();
        assert_eq!(wait, REFILL_SECS as u32);
        // Other clients are not affected.
        assert_eq!(throttle.check("other", start), Ok(()));
        // After one refill period, one attempt again, and only one.
        let later = start + Duration::from_secs_f64(REFILL_SECS);
        assert_eq!(throttle.check("c", later), Ok(()));
        throttle.failed("c", later);
        assert!(throttle.check("c", later).is_err());
    }
}
