//! Rollups: per entity, per level, per calendar bucket, the tally of the runs executed in it.
//!
//! A run contributes its tally to one bucket at every level; a retracted run subtracts it again
//! (tallies are a group, see [`Tally`]). Writes gather contributions in [`RollupDeltas`] and apply
//! each touched bucket once per transaction. Reads cover a second-precision range with at most
//! eleven contiguous runs of buckets ([`cover`]): partial minutes at the edges from the second
//! level, partial hours from the minute level, and so on up to whole years.

use std::collections::HashMap;

use redb::{ReadableTable, Table};
use uuid::Uuid;

use super::records::{
    AGG_LEN, LastRunRecord, PipelineRunAgg, RECORD_PIPELINE_RUN, RunRecord, corrupt, decode_tally,
    encode_tally,
};
use super::tables::{
    EntityId, ROLLUP_KEY_LEN, RUN_KEY_LEN, rollup_key, rollup_key_bucket, run_key_bounds,
    split_run_key,
};
use crate::error::Result;
use crate::model::{EntityKind, Tally, TimeRange};
use crate::time::{Level, MICROS_PER_SECOND, Timestamp};

/// The read side of the `rollups` table.
pub trait RollupTable: ReadableTable<&'static [u8; ROLLUP_KEY_LEN], &'static [u8]> {}
impl<T: ReadableTable<&'static [u8; ROLLUP_KEY_LEN], &'static [u8]>> RollupTable for T {}

/// The read side of the `run_log` table.
pub trait RunLogTable: ReadableTable<&'static [u8; RUN_KEY_LEN], &'static [u8]> {}
impl<T: ReadableTable<&'static [u8; RUN_KEY_LEN], &'static [u8]>> RunLogTable for T {}

/// The read side of the `pipeline_runs` table.
pub trait PipelineRunTable: ReadableTable<&'static [u8; 16], &'static [u8; AGG_LEN]> {}
impl<T: ReadableTable<&'static [u8; 16], &'static [u8; AGG_LEN]>> PipelineRunTable for T {}

/// Contributions gathered during a write transaction, keyed by rollup key.
#[derive(Default)]
pub struct RollupDeltas {
    deltas: HashMap<[u8; ROLLUP_KEY_LEN], Tally>,
}

impl RollupDeltas {
    /// Adds a run's tally to the buckets containing `at`, at every level.
    pub fn add(&mut self, entity: EntityId, at: Timestamp, tally: Tally) {
        self.apply(entity, at, |delta| delta + tally);
    }

    /// Takes a run's tally back out of the buckets containing `at`.
    pub fn retract(&mut self, entity: EntityId, at: Timestamp, tally: Tally) {
        self.apply(entity, at, |delta| delta - tally);
    }

    fn apply(&mut self, entity: EntityId, at: Timestamp, change: impl Fn(Tally) -> Tally) {
        let second = at.second();
        for level in Level::ALL {
            let key = rollup_key(entity, level, level.bucket_start(second));
            let delta = self.deltas.entry(key).or_default();
            *delta = change(*delta);
        }
    }

    /// Writes every changed bucket, in key order; a bucket whose tally reaches zero is removed,
    /// so the table only holds buckets with runs.
    pub fn flush(
        self,
        rollups: &mut Table<'_, &'static [u8; ROLLUP_KEY_LEN], &'static [u8]>,
    ) -> Result<()> {
        let mut changes: Vec<_> = self
            .deltas
            .into_iter()
            .filter(|(_, delta)| !delta.is_empty())
            .collect();
        changes.sort_unstable_by_key(|(key, _)| *key);
        let mut bytes = Vec::with_capacity(30);
        for (key, delta) in changes {
            let stored = match rollups.get(&key)? {
                Some(value) => decode_tally(value.value())?,
                None => Tally::default(),
            };
            let updated = stored + delta;
            if updated.is_empty() {
                rollups.remove(&key)?;
            } else {
                bytes.clear();
                encode_tally(&updated, &mut bytes);
                rollups.insert(&key, bytes.as_slice())?;
            }
        }
        Ok(())
    }
}

/// Covers the seconds `[from, to_exclusive)` with runs of whole buckets, calling `visit(level,
/// first_bucket_start, end_exclusive)` for each (at most eleven, each of at most ~60 buckets).
pub fn cover(
    from: i64,
    to_exclusive: i64,
    mut visit: impl FnMut(Level, i64, i64) -> Result<()>,
) -> Result<()> {
    let (mut low, mut high) = (from, to_exclusive);
    for pair in Level::RANGE_CHAIN.windows(2) {
        let (level, parent) = (pair[0], pair[1]);
        if low >= high {
            return Ok(());
        }
        let parent_start = parent.bucket_start(low);
        let low_up = if parent_start == low {
            low
        } else {
            parent.next_bucket(parent_start)
        };
        let high_down = parent.bucket_start(high);
        if low_up >= high_down {
            return visit(level, low, high);
        }
        if low < low_up {
            visit(level, low, low_up)?;
        }
        if high_down < high {
            visit(level, high_down, high)?;
        }
        (low, high) = (low_up, high_down);
    }
    if low < high {
        visit(Level::Year, low, high)?;
    }
    Ok(())
}

/// The tally of an entity's runs in a range, from the rollups alone.
pub fn range_tally(
    rollups: &impl RollupTable,
    entity: EntityId,
    range: TimeRange,
) -> Result<Tally> {
    let mut total = Tally::default();
    cover(range.from(), range.to() + 1, |level, start, end| {
        let low = rollup_key(entity, level, start);
        let high = rollup_key(entity, level, end);
        for entry in rollups.range::<&[u8; ROLLUP_KEY_LEN]>(&low..&high)? {
            let (_, value) = entry?;
            total = total + decode_tally(value.value())?;
        }
        Ok(())
    })?;
    Ok(total)
}

/// The entity a last-run question is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Series {
    pub id: EntityId,
    pub kind: EntityKind,
    /// The pipeline whose `run_log` holds the entity's runs.
    pub pipeline: EntityId,
}

/// The latest run of an entity executed at or before the second `to` (inclusive), found without
/// scanning history: the latest non-empty second bucket names the second, and only the runs of
/// that one second are read.
pub fn last_run_at_or_before(
    rollups: &impl RollupTable,
    run_log: &impl RunLogTable,
    pipeline_runs: &impl PipelineRunTable,
    series: Series,
    to: i64,
) -> Result<Option<LastRunRecord>> {
    let low = rollup_key(series.id, Level::Second, i64::MIN);
    let high = rollup_key(series.id, Level::Second, to.saturating_add(1));
    let second = match rollups
        .range::<&[u8; ROLLUP_KEY_LEN]>(&low..&high)?
        .next_back()
    {
        Some(entry) => rollup_key_bucket(entry?.0.value()),
        None => return Ok(None),
    };
    let (first, end) = run_key_bounds(
        series.pipeline,
        second * MICROS_PER_SECOND,
        (second + 1) * MICROS_PER_SECOND,
    );
    let mut best: Option<LastRunRecord> = None;
    match series.kind {
        EntityKind::Task => {
            // Newest first: the first run of this task is the latest (ties broken by UUID,
            // which is the key's last part).
            for entry in run_log.range::<&[u8; RUN_KEY_LEN]>(&first..&end)?.rev() {
                let (key, value) = entry?;
                let record = RunRecord::decode(value.value())?;
                if record.task == series.id {
                    let (_, micros, task_run) = split_run_key(key.value());
                    best = Some(LastRunRecord {
                        executed_at: timestamp(micros)?,
                        run: Uuid::from_bytes(task_run),
                        is_successful: record.is_successful,
                        duration_ms: u64::from(record.duration_ms),
                    });
                    break;
                }
            }
        }
        EntityKind::Pipeline => {
            // A pipeline run executed in this second has its latest task run in this second.
            let mut seen: Vec<[u8; 16]> = Vec::new();
            for entry in run_log.range::<&[u8; RUN_KEY_LEN]>(&first..&end)? {
                let (_, value) = entry?;
                let pipeline_run: [u8; 16] = value
                    .value()
                    .get(RECORD_PIPELINE_RUN)
                    .and_then(|bytes| bytes.try_into().ok())
                    .ok_or_else(|| corrupt("task run"))?;
                if seen.contains(&pipeline_run) {
                    continue;
                }
                seen.push(pipeline_run);
                let Some(agg) = pipeline_runs.get(&pipeline_run)? else {
                    return Err(corrupt("pipeline run"));
                };
                let agg = PipelineRunAgg::decode(agg.value());
                if agg.latest_micros.div_euclid(MICROS_PER_SECOND) != second {
                    continue;
                }
                let candidate = LastRunRecord {
                    executed_at: timestamp(agg.latest_micros)?,
                    run: Uuid::from_bytes(pipeline_run),
                    is_successful: agg.failed == 0,
                    duration_ms: agg.duration_ms,
                };
                if best.is_none_or(|b| candidate.order_key() > b.order_key()) {
                    best = Some(candidate);
                }
            }
        }
    }
    match best {
        Some(best) => Ok(Some(best)),
        // The rollup says a run was executed in this second; the log must agree.
        None => Err(corrupt("rollup")),
    }
}

fn timestamp(micros: i64) -> Result<Timestamp> {
    Timestamp::from_micros(micros).ok_or_else(|| corrupt("task run"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{MAX_SECOND, MIN_SECOND, parse_instant};
    use proptest::prelude::*;

    fn pieces(from: i64, to_exclusive: i64) -> Vec<(Level, i64, i64)> {
        let mut out = Vec::new();
        cover(from, to_exclusive, |level, start, end| {
            out.push((level, start, end));
            Ok(())
        })
        .unwrap();
        out
    }

    /// Every second of the range lies in exactly one visited bucket, and no other second does.
    fn assert_exact_cover(from: i64, to_exclusive: i64) {
        let pieces = pieces(from, to_exclusive);
        assert!(pieces.len() <= 11, "{} pieces", pieces.len());
        let mut spans: Vec<(i64, i64)> = pieces
            .iter()
            .map(|&(level, start, end)| {
                assert_eq!(
                    level.bucket_start(start),
                    start,
                    "{level:?} misaligned start"
                );
                assert_eq!(level.bucket_start(end), end, "{level:?} misaligned end");
                (start, end)
            })
            .collect();
        spans.sort();
        let mut at = from;
        for (start, end) in spans {
            assert_eq!(start, at, "gap or overlap at {at}");
            assert!(start < end);
            at = end;
        }
        assert_eq!(at, to_exclusive);
    }

    #[test]
    fn covers_awkward_ranges_exactly() {
        let s = |text: &str| parse_instant(text).unwrap().second();
        assert_exact_cover(s("2021-03-04 05:06:07"), s("2024-02-29 23:59:59") + 1);
        assert_exact_cover(s("2024-02-29 00:00:00"), s("2024-03-01 00:00:00"));
        assert_exact_cover(s("2023-12-31 23:59:59"), s("2024-01-01 00:00:01"));
        assert_exact_cover(MIN_SECOND, MAX_SECOND + 1);
        assert_eq!(pieces(5, 5), vec![]);
        let long = pieces(s("2021-03-04 05:06:07"), s("2024-02-29 23:59:59") + 1);
        let scanned: i64 = long
            .iter()
            .map(|&(level, start, end)| {
                let mut count = 0;
                let mut at = start;
                while at < end {
                    at = level.next_bucket(at);
                    count += 1;
                }
                count
            })
            .sum();
        assert!(scanned < 400, "{scanned} buckets for a three-year range");
    }

    proptest! {
        #[test]
        fn cover_is_exact(from in MIN_SECOND..MAX_SECOND, length in 0i64..200_000_000) {
            let to_exclusive = (from + length).min(MAX_SECOND + 1);
            assert_exact_cover(from, to_exclusive);
        }
    }
}
