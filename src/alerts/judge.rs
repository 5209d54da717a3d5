//! Whether a rule's condition holds for one pipeline, decided from what the store read for it
//! (its latest pipeline runs, a window's tally and percentiles, its last finished run, its
//! oldest running task run) and, for the rules the clock decides, the time.
//!
//! Windows are in whole seconds of the runs' own executed_at (not of the wall clock), so the
//! same runs always give the same answer:
//! - `failure_rate`: the seconds `(T - window, T]`, T the second of the latest pipeline run;
//! - `slow`: the seconds `[T - window, T)` before the latest pipeline run's second T.

use serde_json::{Value, json};
use uuid::Uuid;

use super::{Schedule, Span};
use crate::durations::Percentiles;
use crate::model::Tally;
use crate::time::{MICROS_PER_SECOND, Timestamp};

/// A condition that holds: the pipeline run behind it (if one is) and what was observed.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub pipeline_run: Option<Uuid>,
    pub observed: Value,
}

/// A finished pipeline run, newest first in a pipeline's [`RecentRun`] list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecentRun {
    pub uuid: Uuid,
    /// Its executed_at (its latest task run's), microseconds.
    pub micros: i64,
    pub failed: bool,
    pub duration_ms: u64,
}

impl RecentRun {
    fn second(&self) -> i64 {
        self.micros.div_euclid(MICROS_PER_SECOND)
    }
}

/// `failed`: the latest `consecutive` pipeline runs (newest first in `recent`) all failed.
pub fn failed(consecutive: u32, recent: &[RecentRun]) -> Option<Verdict> {
    let n = consecutive as usize;
    let latest = recent.first()?;
    (recent.len() >= n && recent[..n].iter().all(|run| run.failed)).then(|| Verdict {
        pipeline_run: Some(latest.uuid),
        observed: json!({"consecutive_failed": n, "executed_at": rfc3339(latest.micros)}),
    })
}

/// The inclusive seconds of a `failure_rate` window ending with `latest`.
pub fn rate_window(latest: &RecentRun, window: &Span) -> (i64, i64) {
    let to = latest.second();
    (to - window.seconds + 1, to)
}

/// `failure_rate`: of the `tally` of the window, more than `above` failed, with at least
/// `min_runs` runs.
pub fn failure_rate(
    above: f64,
    min_runs: u32,
    window: &Span,
    tally: Tally,
    latest: &RecentRun,
) -> Option<Verdict> {
    let runs = tally.successes + tally.failures;
    if runs == 0 || runs < u64::from(min_runs) {
        return None;
    }
    let rate = tally.failures as f64 / runs as f64;
    (rate > above).then(|| Verdict {
        pipeline_run: Some(latest.uuid),
        observed: json!({
            "runs": runs,
            "failed": tally.failures,
            "failure_rate": rate,
            "above": above,
            "window": window.text,
        }),
    })
}

/// The inclusive seconds of a `slow` window before `latest`, if it has any.
pub fn slow_window(latest: &RecentRun, window: &Span) -> (i64, i64) {
    let second = latest.second();
    (second - window.seconds, second - 1)
}

/// `slow`: the latest pipeline run took more than `factor` times the window's `percentile`
/// (`None` percentiles: the window had no runs, and nothing to compare with).
pub fn slow(
    factor: f64,
    percentile: u8,
    window: &Span,
    percentiles: Option<Percentiles>,
    latest: &RecentRun,
) -> Option<Verdict> {
    let percentiles = percentiles?;
    let reference = match percentile {
        50 => percentiles.p50,
        90 => percentiles.p90,
        95 => percentiles.p95,
        _ => percentiles.p99,
    };
    let threshold = reference as f64 * factor;
    (latest.duration_ms as f64 > threshold).then(|| Verdict {
        pipeline_run: Some(latest.uuid),
        observed: json!({
            "duration_ms": latest.duration_ms,
            "percentile": percentile,
            "percentile_ms": reference,
            "factor": factor,
            "window": window.text,
        }),
    })
}

/// `missing`: no finished run in time. `last` is the latest finished run's executed_at
/// (microseconds); without one the pipeline is judged from `judged_from` (the rule's
/// creation), or not at all when that is `None`.
pub fn missing(
    schedule: &Schedule,
    last: Option<i64>,
    judged_from: Option<i64>,
    now: i64,
) -> Option<Verdict> {
    let baseline = last.or(judged_from)?;
    let (expected_by, due) = match schedule {
        Schedule::Every(every) => {
            let due = baseline.checked_add(every.seconds * MICROS_PER_SECOND)?;
            (due, due)
        }
        Schedule::Cron { pattern, grace } => {
            // The latest scheduled time whose grace is over: a run must have finished since.
            let cron: croner::Cron = pattern.parse().ok()?;
            let graced = now - grace.seconds * MICROS_PER_SECOND;
            let at = chrono::DateTime::from_timestamp_micros(graced)?;
            let scheduled = cron.find_previous_occurrence(&at, true).ok()?;
            let scheduled = scheduled.timestamp_micros();
            if scheduled < judged_from.unwrap_or(i64::MIN) || last.is_some_and(|l| l >= scheduled) {
                return None;
            }
            (scheduled, scheduled + grace.seconds * MICROS_PER_SECOND)
        }
    };
    if let Schedule::Every(_) = schedule
        && now <= due
    {
        return None;
    }
    Some(Verdict {
        pipeline_run: None,
        observed: json!({
            "last_finished_at": last.map(rfc3339),
            "expected_by": rfc3339(expected_by),
            "due": rfc3339(due),
        }),
    })
}

/// `stuck`: the oldest task run reported running (its start and UUID) started more than
/// `running_for` before `now`.
pub fn stuck(running_for: &Span, oldest: Option<(i64, Uuid)>, now: i64) -> Option<Verdict> {
    let (started, task_run) = oldest?;
    (now - started > running_for.seconds * MICROS_PER_SECOND).then(|| Verdict {
        pipeline_run: None,
        observed: json!({
            "task_run_uuid": task_run,
            "running_since": rfc3339(started),
            "running_for": running_for.text,
        }),
    })
}

/// A time as the webhook bodies write it.
pub fn rfc3339(micros: i64) -> String {
    Timestamp::from_micros(micros)
        .map(crate::time::format_rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(text: &str) -> Span {
        Span::parse(text, 1, 400 * 86_400).unwrap()
    }

    fn run(second: i64, failed: bool, duration_ms: u64) -> RecentRun {
        RecentRun {
            uuid: Uuid::from_u128(second as u128),
            micros: second * MICROS_PER_SECOND + 1,
            failed,
            duration_ms,
        }
    }

    #[test]
    fn failed_needs_the_latest_n_failed() {
        let recent = [run(3, true, 1), run(2, true, 1), run(1, false, 1)];
        assert!(failed(1, &recent).is_some());
        assert!(failed(2, &recent).is_some());
        assert!(failed(3, &recent).is_none());
        assert!(failed(1, &recent[2..]).is_none());
        assert!(failed(1, &[]).is_none());
    }

    #[test]
    fn failure_rate_needs_min_runs_and_more_than_the_threshold() {
        let latest = run(100, true, 1);
        let tally = |successes, failures| Tally {
            successes,
            failures,
            duration_ms: 0,
        };
        let w = span("1h");
        assert!(
            failure_rate(0.5, 1, &w, tally(1, 1), &latest).is_none(),
            "equal is not above"
        );
        assert!(failure_rate(0.5, 1, &w, tally(1, 2), &latest).is_some());
        assert!(failure_rate(0.5, 4, &w, tally(1, 2), &latest).is_none());
        assert_eq!(rate_window(&latest, &w), (100 - 3_600 + 1, 100));
    }

    #[test]
    fn slow_compares_with_the_chosen_percentile() {
        let p = Percentiles {
            p50: 10,
            p90: 20,
            p95: 30,
            p99: 40,
            max: 50,
        };
        let w = span("7d");
        assert!(slow(2.0, 95, &w, Some(p), &run(9, false, 60)).is_none());
        assert!(slow(2.0, 95, &w, Some(p), &run(9, false, 61)).is_some());
        assert!(slow(2.0, 50, &w, Some(p), &run(9, false, 21)).is_some());
        assert!(slow(2.0, 95, &w, None, &run(9, false, 1_000)).is_none());
        assert_eq!(slow_window(&run(9, false, 0), &w), (9 - 7 * 86_400, 8));
    }

    #[test]
    fn missing_every_counts_from_the_last_run_or_the_rule() {
        let every = Schedule::Every(span("90m"));
        let s = MICROS_PER_SECOND;
        assert!(missing(&every, Some(0), None, 5_400 * s).is_none());
        assert!(missing(&every, Some(0), None, 5_400 * s + 1).is_some());
        assert!(missing(&every, None, None, i64::MAX / 2).is_none());
        assert!(missing(&every, None, Some(0), 5_401 * s).is_some());
    }

    #[test]
    fn missing_cron_expects_a_run_since_the_last_schedule_past_its_grace() {
        let daily = Schedule::Cron {
            pattern: "0 2 * * *".into(),
            grace: span("30m"),
        };
        let s = MICROS_PER_SECOND;
        let day = 86_400 * s;
        let two = 2 * 3_600 * s;
        let created = Some(day);
        // 02:29 on day 1: the grace of 02:00 is not over yet.
        assert!(missing(&daily, None, created, day + two + 29 * 60 * s).is_none());
        // 02:31: nothing since 02:00.
        let verdict = missing(&daily, None, created, day + two + 31 * 60 * s);
        assert!(verdict.is_some());
        // A run at 02:10 satisfies it until the next day's 02:30.
        let run = Some(day + two + 10 * 60 * s);
        assert!(missing(&daily, run, created, day + two + 31 * 60 * s).is_none());
        assert!(missing(&daily, run, created, 2 * day + two + 31 * 60 * s).is_some());
        // A schedule before the rule existed is not held against the pipeline.
        assert!(missing(&daily, None, Some(day + two + s), day + two + 31 * 60 * s).is_none());
    }

    #[test]
    fn stuck_after_running_for() {
        let s = MICROS_PER_SECOND;
        let oldest = Some((0, Uuid::from_u128(1)));
        assert!(stuck(&span("2h"), oldest, 7_200 * s).is_none());
        assert!(stuck(&span("2h"), oldest, 7_200 * s + 1).is_some());
        assert!(stuck(&span("2h"), None, i64::MAX).is_none());
    }
}
