//! Slowing down failures at the token endpoint. Only failed attempts count: each client id may
//! fail a burst of attempts, and so may each peer address, then one more every few seconds;
//! a failed attempt past either allowance is answered `slow_down` with a retry hint instead of
//! `invalid_client`. Correct credentials are checked first and always succeed, so nobody who
//! knows a client id can lock that client out. (Secrets carry 256 random bits: guessing cannot
//! succeed anyway; the throttle makes misconfigured clients back off and bounds the work a
//! flood of bad attempts costs.) The state is a small in-memory token bucket per key.
//!
//! In cluster mode the same buckets bound what bearer tokens a node does not know cost the
//! cluster's log: each peer address may make the node look the log up for them a burst of
//! times, then once a second; past it the token is refused without a lookup.

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
/// Lookups of the cluster's log for unknown tokens a peer address may cause at once, and
/// seconds for one more after them.
pub const LOOKUP_BURST: f64 = 30.0;
pub const LOOKUP_REFILL_SECS: f64 = 1.0;
/// Keys tracked at most (keys with a full allowance are dropped first).
const MAX_TRACKED: usize = 65_536;

#[derive(Clone, PartialEq, Eq, Hash)]
enum Subject {
    Client(String),
    Peer(IpAddr),
    Lookups(IpAddr),
}

impl Subject {
    fn burst(&self) -> f64 {
        match self {
            Subject::Client(_) => CLIENT_BURST,
            Subject::Peer(_) => PEER_BURST,
            Subject::Lookups(_) => LOOKUP_BURST,
        }
    }

    fn refill_secs(&self) -> f64 {
        match self {
            Subject::Lookups(_) => LOOKUP_REFILL_SECS,
            _ => REFILL_SECS,
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
    fn refilled(self, now: Instant, subject: &Subject) -> f64 {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() / subject.refill_secs();
        (self.allowance + earned).min(subject.burst())
    }
}

impl FailureThrottle {
    /// Counts a failed attempt against `client_id` and `peer`. `Err(seconds to wait)` when
    /// either had no failed attempt left: the caller should be told to slow down.
    pub fn failed(&self, client_id: &str, peer: Option<IpAddr>, now: Instant) -> Result<(), u32> {
        let subjects = [
            Some(Subject::Client(key(client_id))),
            peer.map(Subject::Peer),
        ];
        self.take(subjects.into_iter().flatten(), now)
    }

    /// Counts a lookup of the cluster's log for a token unknown here, asked by `peer`: false
    /// when the peer has none left (the token is refused without one).
    pub fn lookup(&self, peer: Option<IpAddr>, now: Instant) -> bool {
        match peer {
            Some(peer) => self.take([Subject::Lookups(peer)].into_iter(), now).is_ok(),
            None => true,
        }
    }

    /// Takes one from each subject's allowance; `Err(seconds to wait)` when one had none.
    fn take(&self, subjects: impl Iterator<Item = Subject>, now: Instant) -> Result<(), u32> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_TRACKED {
            buckets.retain(|subject, b| b.refilled(now, subject) < subject.burst());
            if buckets.len() >= MAX_TRACKED {
                buckets.clear();
            }
        }
        let mut wait = 0u32;
        for subject in subjects {
            let refill = subject.refill_secs();
            let burst = subject.burst();
            let bucket = buckets.entry(subject.clone()).or_insert(Bucket {
                allowance: burst,
                at: now,
            });
            let allowance = bucket.refilled(now, &subject);
            if allowance < 1.0 {
                wait = wait.max(((1.0 - allowance) * refill).ceil().max(1.0) as u32);
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

    #[test]
    fn lookups_for_unknown_tokens_are_a_burst_then_one_a_second_per_peer() {
        let throttle = FailureThrottle::default();
        let start = Instant::now();
        let peer: IpAddr = "192.0.2.9".parse().unwrap();
        let granted = (0..100)
            .filter(|_| throttle.lookup(Some(peer), start))
            .count();
        assert_eq!(granted, LOOKUP_BURST as usize);
        let later = start + Duration::from_secs_f64(LOOKUP_REFILL_SECS);
        assert!(throttle.lookup(Some(peer), later));
        assert!(!throttle.lookup(Some(peer), later));
        // Another peer, and the token endpoint's failures, are not affected.
        assert!(throttle.lookup(Some("192.0.2.10".parse().unwrap()), start));
        assert_eq!(throttle.failed("c", Some(peer), start), Ok(()));
    }
}
