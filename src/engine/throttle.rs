//! Slowing down failures at the token endpoint. Only failed attempts count: each client id may
//! fail a burst of attempts, and so may each peer address, then one more every few seconds;
//! a failed attempt past either allowance is answered `slow_down` with a retry hint instead of
//! `invalid_client`. Correct credentials are checked first and always succeed, so nobody who
//! knows a client id can lock that client out. (Secrets carry 256 random bits: guessing cannot
//! succeed anyway; the throttle makes misconfigured clients back off and bounds the work a
//! flood of bad attempts costs.) The state is a small in-memory token bucket per key.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use rustc_hash::FxHashMap;

/// Failed attempts a client id may make at once.
pub const CLIENT_BURST: f64 = 10.0;
/// Failed attempts a peer address may make at once (it may host several clients).
pub const PEER_BURST: f64 = 30.0;
/// Seconds for one more failed attempt to be allowed after a burst.
pub const REFILL_SECS: f64 = 6.0;
/// Keys tracked at most (keys with a full allowance are dropped first).
const MAX_TRACKED: usize = 65_536;

#[derive(Clone, PartialEq, Eq, Hash)]
enum Subject {
    Client(String),
    Peer(IpAddr),
}

impl Subject {
    fn burst(&self) -> f64 {
        match self {
            Subject::Client(_) => CLIENT_BURST,
            Subject::Peer(_) => PEER_BURST,
        }
    }
}

#[derive(Default)]
pub struct FailureThrottle {
    buckets: Mutex<FxHashMap<Subject, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    allowance: f64,
    at: Instant,
}

impl Bucket {
    fn refilled(self, now: Instant, burst: f64) -> f64 {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() / REFILL_SECS;
        (self.allowance + earned).min(burst)
    }
}

impl FailureThrottle {
    /// Counts a failed attempt against `client_id` and `peer`. `Err(seconds to wait)` when
    /// either had no failed attempt left: the caller should be told to slow down.
    pub fn failed(&self, client_id: &str, peer: Option<IpAddr>, now: Instant) -> Result<(), u32> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_TRACKED {
            buckets.retain(|subject, b| b.refilled(now, subject.burst()) < subject.burst());
            if buckets.len() >= MAX_TRACKED {
                buckets.clear();
            }
        }
        let subjects = [
            Some(Subject::Client(key(client_id))),
            peer.map(Subject::Peer),
        ];
        let mut wait = 0u32;
        for subject in subjects.into_iter().flatten() {
            let burst = subject.burst();
            let bucket = buckets.entry(subject).or_insert(Bucket {
                allowance: burst,
                at: now,
            });
            let allowance = bucket.refilled(now, burst);
            if allowance < 1.0 {
                wait = wait.max(((1.0 - allowance) * REFILL_SECS).ceil().max(1.0) as u32);
            }
            *bucket = Bucket {
                allowance: (allowance - 1.0).max(0.0),
                at: now,
            };
        }
        if wait == 0 { Ok(()) } else { Err(wait) }
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
    fn failures_beyond_a_burst_slow_down_per_client_and_per_peer() {
        let throttle = FailureThrottle::default();
        let start = Instant::now();
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..CLIENT_BURST as usize {
            assert_eq!(throttle.failed("c", Some(peer), start), Ok(()));
        }
        assert_eq!(
            throttle.failed("c", Some(peer), start),
            Err(REFILL_SECS as u32)
        );
        // Another client from another peer is not affected.
        let elsewhere: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(throttle.failed("other", Some(elsewhere), start), Ok(()));
        // After one refill period, one failure is allowed again, and only one.
        let later = start + Duration::from_secs_f64(REFILL_SECS);
        assert_eq!(throttle.failed("c", Some(elsewhere), later), Ok(()));
        assert!(throttle.failed("c", Some(elsewhere), later).is_err());

        // One peer failing with many client ids runs out too.
        let attacker: IpAddr = "198.51.100.7".parse().unwrap();
        let outcomes: Vec<bool> = (0..PEER_BURST as usize + 1)
            .map(|i| {
                throttle
                    .failed(&format!("id{i}"), Some(attacker), start)
                    .is_ok()
            })
            .collect();
        assert!(outcomes[..PEER_BURST as usize].iter().all(|ok| *ok));
        assert!(!outcomes[PEER_BURST as usize]);
    }
}
