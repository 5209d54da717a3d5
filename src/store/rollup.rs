//! Rollups: per entity, per level, per calendar bucket, the tally of the runs executed in it, and
//! for hours, days, months and years the tallies of their parts (see [`Level`]).
//!
//! A run contributes its tally to one bucket at every level (and to one part of it); a retracted
//! run subtracts it again (tallies are a group, see [`Tally`]). Writes gather contributions in
//! [`RollupDeltas`] and rewrite each touched record once per transaction. Reads descend: a
//! second-precision range takes the whole years inside it from one range read, and at each edge
//! one record per level (year, month, day, hour), whose parts give the whole months, days, hours
//! and seconds; so any range costs at most about ten lookups, however dense the runs.

use redb::{ReadableTable, Table};
use rustc_hash::{FxHashMap, FxHashSet};
use uuid::Uuid;

use super::records::{
    BucketRecord, LastRunRecord, PipelineRunAgg, RECORD_PIPELINE_RUN, RunRecord, corrupt,
};
use super::tables::{
    EntityId, OrgIndex, ROLLUP_KEY_LEN, RUN_KEY_LEN, SCOPED_KEY_LEN, rollup_key, rollup_key_bucket,
    run_key_bounds, scoped_key, split_run_key,
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
pub trait PipelineRunTable: ReadableTable<&'static [u8; SCOPED_KEY_LEN], &'static [u8]> {}
impl<T: ReadableTable<&'static [u8; SCOPED_KEY_LEN], &'static [u8]>> PipelineRunTable for T {}

/// For each level, the delta record's position and the part an hour falls in.
type HourSlots = [(usize, Option<u16>); Level::ALL.len()];

/// Contributions gathered during a write transaction, one delta record per touched rollup key.
/// Parts are collected unsorted and combined at [`RollupDeltas::flush`].
#[derive(Default)]
pub struct RollupDeltas {
    records: Vec<([u8; ROLLUP_KEY_LEN], BucketRecord)>,
    index: FxHashMap<[u8; ROLLUP_KEY_LEN], usize>,
    /// Per entity, the hour last contributed to, and its record at every level with the part
    /// the hour falls in (the same for every second of the hour, except at the hour level
    /// itself): consecutive runs of an entity mostly share an hour, and then cost no hashing
    /// and no calendar arithmetic.
    current: FxHashMap<EntityId, (i64, HourSlots)>,
}

impl RollupDeltas {
    /// Adds a run's tally to the buckets containing `at`, at every level.
    pub fn add(&mut self, entity: EntityId, at: Timestamp, tally: Tally) {
        self.apply(entity, at, tally);
    }

    /// Takes a run's tally back out of the buckets containing `at`.
    pub fn retract(&mut self, entity: EntityId, at: Timestamp, tally: Tally) {
        self.apply(entity, at, Tally::default() - tally);
    }

    fn apply(&mut self, entity: EntityId, at: Timestamp, tally: Tally) {
        let second = at.second();
        let hour = Level::Hour.bucket_start(second);
        let slots = match self.current.get(&entity) {
            Some((cached, slots)) if *cached == hour => *slots,
            _ => {
                let mut slots = [(0, None); Level::ALL.len()];
                let starts = Level::bucket_starts(second);
                for ((slot, level), start) in slots.iter_mut().zip(Level::ALL).zip(starts) {
                    let key = rollup_key(entity, level, start);
                    let next = self.records.len();
                    let position = *self.index.entry(key).or_insert(next);
                    if position == next {
                        self.records.push((key, BucketRecord::default()));
                    }
                    *slot = (position, level.part_index(start, second));
                }
                self.current.insert(entity, (hour, slots));
                slots
            }
        };
        for (level, (position, part)) in Level::ALL.into_iter().zip(slots) {
            let delta = &mut self.records[position].1;
            delta.total = delta.total + tally;
            let part = match level {
                Level::Hour => Some((second - hour) as u16),
                _ => part,
            };
            if let Some(part) = part {
                match delta.parts.last_mut() {
                    // Runs mostly arrive in time order: add to the part just touched.
                    Some((last, sum)) if *last == part => *sum = *sum + tally,
                    _ => delta.parts.push((part, tally)),
                }
            }
        }
    }

    /// Rewrites every touched record, in key order; a record whose tally reaches zero is removed,
    /// so the table only holds buckets with runs.
    pub fn flush(
        self,
        rollups: &mut Table<'_, &'static [u8; ROLLUP_KEY_LEN], &'static [u8]>,
    ) -> Result<()> {
        let mut changes = self.records;
        changes.sort_unstable_by_key(|(key, _)| *key);
        let mut bytes = Vec::with_capacity(64);
        // Records that are new go in last, in key order, as packed runs.
        let mut fresh: Vec<([u8; ROLLUP_KEY_LEN], Vec<u8>)> = Vec::new();
        for (key, mut delta) in changes {
            combine_parts(&mut delta.parts);
            if delta.is_empty() {
                continue;
            }
            let stored = match rollups.get(&key)? {
                Some(value) => Some(BucketRecord::decode(value.value())?),
                None => None,
            };
            let exists = stored.is_some();
            let mut record = stored.unwrap_or_default();
            record.merge(&delta);
            if record.total.is_empty() {
                if !record.parts.is_empty() || !exists {
                    return Err(corrupt("rollup"));
                }
                rollups.remove(&key)?;
                continue;
            }
            bytes.clear();
            record.encode(&mut bytes);
            if exists {
                rollups.insert(&key, bytes.as_slice())?;
            } else {
                fresh.push((key, bytes.clone()));
            }
        }
        super::packed::insert_new(
            rollups,
            fresh.iter().map(|(key, value)| (key, value.as_slice())),
        )
    }
}

/// Sorts parts by index and sums those with the same index, dropping empty sums.
fn combine_parts(parts: &mut Vec<(u16, Tally)>) {
    parts.sort_unstable_by_key(|(index, _)| *index);
    let mut combined: Vec<(u16, Tally)> = Vec::with_capacity(parts.len());
    for &(index, tally) in parts.iter() {
        match combined.last_mut() {
            Some(last) if last.0 == index => last.1 = last.1 + tally,
            _ => combined.push((index, tally)),
        }
    }
    combined.retain(|(_, tally)| !tally.is_empty());
    *parts = combined;
}

/// The tally of an entity's runs in a range, from the rollups alone.
pub fn range_tally(
    rollups: &impl RollupTable,
    entity: EntityId,
    range: TimeRange,
) -> Result<Tally> {
    let (from, end) = (range.from(), range.to() + 1);
    let low = rollup_key(entity, Level::Year, Level::Year.bucket_start(from));
    let high = rollup_key(entity, Level::Year, end);
    let mut total = Tally::default();
    for entry in rollups.range::<&[u8; ROLLUP_KEY_LEN]>(&low..&high)? {
        let (key, value) = entry?;
        let start = rollup_key_bucket(key.value());
        let next = Level::Year.next_bucket(start);
        total = total
            + if from <= start && next <= end {
                BucketRecord::decode_total(value.value())?
            } else {
                sum_parts(
                    rollups,
                    entity,
                    Level::Year,
                    start,
                    value.value(),
                    from,
                    end,
                )?
            };
    }
    Ok(total)
}

/// The first and last part of the bucket of `level` at `start` that hold seconds of
/// `[from, end)` (which must overlap the bucket).
fn parts_touched(level: Level, start: i64, from: i64, end: i64) -> (u16, u16) {
    let first = level.part_index(start, from.max(start)).unwrap_or(0);
    let last_second = (end - 1).min(level.next_bucket(start) - 1);
    (
        first,
        level.part_index(start, last_second).unwrap_or(u16::MAX),
    )
}

/// The tally of the seconds `[from, end)` within the bucket of `level` starting at `start`,
/// from that bucket's encoded record: parts between the edges whole, the (at most two) parts
/// cut by an edge from the records of the finer level.
fn sum_parts(
    rollups: &impl RollupTable,
    entity: EntityId,
    level: Level,
    start: i64,
    record: &[u8],
    from: i64,
    end: i64,
) -> Result<Tally> {
    let (first, last) = parts_touched(level, start, from, end);
    let (_, parts) = BucketRecord::decode_lazily(record)?;
    let mut total = Tally::default();
    for part in parts {
        let (index, tally) = part?;
        if index < first {
            continue;
        }
        if index > last {
            break;
        }
        if index > first && index < last {
            total = total + tally;
            continue;
        }
        let (part_first, part_end) = level.part_span(start, index);
        if from <= part_first && part_end <= end {
            total = total + tally;
            continue;
        }
        // A part cut by the range's edge: only levels whose parts are buckets get here, since
        // an hour's parts are single seconds.
        let finer = level.part_level().ok_or_else(|| corrupt("rollup"))?;
        let Some(inner) = rollups.get(&rollup_key(entity, finer, part_first))? else {
            return Err(corrupt("rollup"));
        };
        total = total
            + sum_parts(
                rollups,
                entity,
                finer,
                part_first,
                inner.value(),
                from.max(part_first),
                end.min(part_end),
            )?;
    }
    Ok(total)
}

/// The latest second at or before `to` in which the entity has a run: the newest year record
/// from `to`'s year back, then down its newest parts that are not after `to`.
fn latest_second(rollups: &impl RollupTable, entity: EntityId, to: i64) -> Result<Option<i64>> {
    let low = rollup_key(entity, Level::Year, i64::MIN);
    let high = rollup_key(entity, Level::Year, Level::Year.bucket_start(to));
    for entry in rollups.range::<&[u8; ROLLUP_KEY_LEN]>(&low..=&high)?.rev() {
        let (key, value) = entry?;
        let start = rollup_key_bucket(key.value());
        if let Some(second) = latest_in(rollups, entity, Level::Year, start, value.value(), to)? {
            return Ok(Some(second));
        }
    }
    Ok(None)
}

/// The latest second at or before `to` with a run, within the bucket of `level` at `start`.
fn latest_in(
    rollups: &impl RollupTable,
    entity: EntityId,
    level: Level,
    start: i64,
    record: &[u8],
    to: i64,
) -> Result<Option<i64>> {
    // The part holding `to`, and the latest part before it: the answer is in one of the two.
    let limit = if to < level.next_bucket(start) {
        level.part_index(start, to).unwrap_or(u16::MAX)
    } else {
        u16::MAX
    };
    let (_, parts) = BucketRecord::decode_lazily(record)?;
    let (mut at_limit, mut before) = (None, None);
    for part in parts {
        let (index, _) = part?;
        match index.cmp(&limit) {
            std::cmp::Ordering::Less => before = Some(index),
            std::cmp::Ordering::Equal => at_limit = Some(index),
            std::cmp::Ordering::Greater => break,
        }
    }
    for index in [at_limit, before].into_iter().flatten() {
        let (first, _) = level.part_span(start, index);
        let Some(finer) = level.part_level() else {
            return Ok(Some(first)); // a second of an hour
        };
        let Some(inner) = rollups.get(&rollup_key(entity, finer, first))? else {
            return Err(corrupt("rollup"));
        };
        if let Some(second) = latest_in(rollups, entity, finer, first, inner.value(), to)? {
            return Ok(Some(second));
        }
    }
    Ok(None)
}

/// The entity a last-run question is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Series {
    pub id: EntityId,
    pub kind: EntityKind,
    /// The pipeline whose `run_log` holds the entity's runs.
    pub pipeline: EntityId,
    /// The organization's namespace, where its pipeline runs are stored.
    pub org: OrgIndex,
}

/// The latest run of an entity executed at or before the second `to` (inclusive), found without
/// scanning history: the rollups name the latest second with a run, and only the runs of that
/// one second are read.
pub fn last_run_at_or_before(
    rollups: &impl RollupTable,
    run_log: &impl RunLogTable,
    pipeline_runs: &impl PipelineRunTable,
    series: Series,
    to: i64,
) -> Result<Option<LastRunRecord>> {
    let Some(second) = latest_second(rollups, series.id, to)? else {
        return Ok(None);
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
            let mut seen: FxHashSet<[u8; 16]> = FxHashSet::default();
            for entry in run_log.range::<&[u8; RUN_KEY_LEN]>(&first..&end)? {
                let (_, value) = entry?;
                let pipeline_run: [u8; 16] = value
                    .value()
                    .get(RECORD_PIPELINE_RUN)
                    .and_then(|bytes| bytes.try_into().ok())
                    .ok_or_else(|| corrupt("task run"))?;
                if !seen.insert(pipeline_run) {
                    continue;
                }
                let Some(agg) = pipeline_runs.get(&scoped_key(series.org, &pipeline_run))? else {
                    return Err(corrupt("pipeline run"));
                };
                let agg = PipelineRunAgg::decode(agg.value())?;
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

    #[test]
    fn parts_combine_by_index_and_cancel() {
        let one = Tally::of_run(true, 5);
        let mut parts = vec![(7, one), (3, one), (7, one), (3, Tally::default() - one)];
        combine_parts(&mut parts);
        assert_eq!(parts, vec![(7, one + one)]);
    }
}
