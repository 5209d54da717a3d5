//! When a failed delivery is tried again, and when a destination is left alone: the contract's
//! schedule (about 5 s, 30 s, 2 min, 10 min and 1 h after the first attempt, then every 6 h, up
//! to 3 days; each delay with up to 20% jitter; a longer Retry-After honoured) and a circuit
//! breaker per destination. Pure: times and randomness come from the caller.

use std::time::Duration;

/// Offsets of the retries from the first attempt, in schedule units (seconds in production).
const OFFSETS: [u64; 5] = [5, 30, 120, 600, 3_600];
/// After the last offset, one retry every this many units.
const EVERY: u64 = 6 * 3_600;
/// No retry later than this many units after the transition.
pub const GIVE_UP_AFTER: u64 = 3 * 86_400;

/// The schedule, in units of `unit` (1 s in production; shorter in tests).
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub unit: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            unit: Duration::from_secs(1),
        }
    }
}

impl Schedule {
    fn micros(&self, units: u64) -> i64 {
        i64::try_from(self.unit.as_micros().saturating_mul(u128::from(units))).unwrap_or(i64::MAX)
    }

    /// When attempt number `attempts + 1` may be made, after `attempts` failed ones of a
    /// transition that happened at `first` (microseconds, as is `now`); `jitter` in `[0, 1)`
    /// stretches the delay by up to 20%, and `retry_after` (a 429's) is honoured when longer.
    /// `None`: the 3 days are over, give up.
    pub fn next(
        &self,
        first: i64,
        attempts: u32,
        now: i64,
        jitter: f64,
        retry_after: Option<Duration>,
    ) -> Option<i64> {
        let n = attempts.max(1) as usize;
        let offset = |n: usize| match n {
            0 => 0,
            n if n <= OFFSETS.len() => OFFSETS[n - 1],
            n => OFFSETS[OFFSETS.len() - 1] + EVERY * (n - OFFSETS.len()) as u64,
        };
        let (previous, due) = (offset(n - 1), offset(n));
        let stretch = (self.micros(due - previous) as f64 * 0.2 * jitter.clamp(0.0, 1.0)) as i64;
        let mut at = first
            .saturating_add(self.micros(due))
            .saturating_add(stretch);
        if let Some(wait) = retry_after {
            let wait = i64::try_from(wait.as_micros()).unwrap_or(i64::MAX);
            at = at.max(now.saturating_add(wait));
        }
        (at <= first.saturating_add(self.micros(GIVE_UP_AFTER))).then_some(at.max(now))
    }

    /// Whether a transition at `first` is past retrying at `now`.
    pub fn expired(&self, first: i64, now: i64) -> bool {
        now > first.saturating_add(self.micros(GIVE_UP_AFTER))
    }
}

/// A destination's circuit breaker: after [`Breaker::TRIP_AFTER`] failures in a row it opens
/// and nothing is sent there for a while (30 s, doubling up to 10 min while it keeps failing);
/// then one attempt is let through, whose outcome closes or reopens it.
#[derive(Clone, Debug, Default)]
pub struct Breaker {
    failures: u32,
    /// While open: no attempt before this (microseconds).
    open_until: Option<i64>,
    /// How long it opens next time, in schedule units.
    next_open: u64,
    /// An attempt let through after opening is under way.
    probing: bool,
}

impl Breaker {
    pub const TRIP_AFTER: u32 = 5;
    const FIRST_OPEN: u64 = 30;
    const LONGEST_OPEN: u64 = 600;

    /// Whether an attempt may be made at `now`; `Err` holds when to ask again.
    pub fn admit(&mut self, now: i64) -> Result<(), i64> {
        match self.open_until {
            Some(until) if now < until => Err(until),
            Some(until) if self.probing => Err(until),
            Some(_) => {
                self.probing = true;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// An attempt reached the destination and was answered (whatever the status, short of a
    /// 5xx or 429).
    pub fn succeeded(&mut self) {
        *self = Breaker::default();
    }

    /// An attempt failed (no answer, a timeout, a 5xx or 429) at `now`.
    pub fn failed(&mut self, now: i64, schedule: &Schedule) {
        self.failures += 1;
        let reopen = self.probing || self.open_until.is_none() && self.failures >= Self::TRIP_AFTER;
        if reopen {
            let open = if self.next_open == 0 {
                Self::FIRST_OPEN
            } else {
                self.next_open
            };
            self.open_until = Some(now.saturating_add(schedule.micros(open)));
            self.next_open = (open * 2).min(Self::LONGEST_OPEN);
            self.probing = false;
        }
    }

    pub fn is_open(&self) -> bool {
        self.open_until.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    #[test]
    fn the_schedule_follows_the_contract_and_gives_up_after_three_days() {
        let schedule = Schedule::default();
        let at = |attempts| schedule.next(0, attempts, 0, 0.0, None);
        assert_eq!(at(1), Some(5 * S));
        assert_eq!(at(2), Some(30 * S));
        assert_eq!(at(3), Some(120 * S));
        assert_eq!(at(4), Some(600 * S));
        assert_eq!(at(5), Some(3_600 * S));
        assert_eq!(at(6), Some((3_600 + 6 * 3_600) * S));
        assert_eq!(at(16), Some((3_600 + 11 * 6 * 3_600) * S));
        assert_eq!(at(17), None, "past 3 days");
        // Jitter stretches the delay since the previous offset by at most 20%.
        let stretched = schedule.next(0, 2, 0, 0.999, None).unwrap();
        assert!(
            stretched > 30 * S && stretched < 30 * S + 5 * S,
            "{stretched}"
        );
        // A later now never gets an earlier time.
        assert_eq!(schedule.next(0, 1, 100 * S, 0.0, None), Some(100 * S));
        assert!(schedule.expired(0, 3 * 86_400 * S + 1));
        assert!(!schedule.expired(0, 3 * 86_400 * S));
    }

    #[test]
    fn a_longer_retry_after_is_honoured() {
        let schedule = Schedule::default();
        let wait = Some(Duration::from_secs(60));
        assert_eq!(schedule.next(0, 1, 2 * S, 0.0, wait), Some(62 * S));
        assert_eq!(
            schedule.next(0, 1, 0, 0.0, Some(Duration::from_secs(1))),
            Some(5 * S)
        );
    }

    #[test]
    fn the_breaker_opens_after_failures_in_a_row_and_probes_once() {
        let schedule = Schedule::default();
        let mut breaker = Breaker::default();
        for _ in 0..Breaker::TRIP_AFTER - 1 {
            assert!(breaker.admit(0).is_ok());
            breaker.failed(0, &schedule);
        }
        assert!(!breaker.is_open());
        breaker.failed(0, &schedule);
        assert_eq!(breaker.admit(S), Err(30 * S));
        // Half open: one probe, the others wait.
        assert!(breaker.admit(30 * S).is_ok());
        assert!(breaker.admit(30 * S).is_err());
        breaker.failed(31 * S, &schedule);
        assert_eq!(
            breaker.admit(32 * S),
            Err(91 * S),
            "reopened for twice as long"
        );
        assert!(breaker.admit(91 * S).is_ok());
        breaker.succeeded();
        assert!(!breaker.is_open());
        assert!(breaker.admit(91 * S).is_ok());
    }
}
