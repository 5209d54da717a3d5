//! Rollup writes. A transaction's contributions come as one delta record per touched bucket
//! ([`super::gather`]), and [`PreparedDeltas::flush`] rewrites each touched record once, pipeline by
//! pipeline, coarsest level first, so that each finer bucket's density is known from its
//! parent's weights before and after the transaction:
//!
//! - dense before and after: the deltas are merged into the records;
//! - dense only after, empty before: the deltas are the records;
//! - dense only after, sparse before: the bucket's records (and those of its dense parts) are
//!   built from the run log, which holds what the transaction wrote;
//! - dense only before: the records of the pipeline and all its tasks there are deleted;
//! - neither: nothing is stored.
//!
//! Year records always take their deltas. Tallies and duration counts form a group (wrapping add
//! and subtract), so add-then-retract is exact in any order. A part's maximum duration is not: a
//! retraction of the part's maximum leaves it unknown, and such parts are recomputed after the
//! merge, finest level first, from the next finer record or (where there is none) the log.

use std::collections::{BTreeMap, HashMap};

use redb::{ReadableTable, Table};

use super::gather::rank;
use super::record::{BucketRecord, Part};
use super::scan::{Entry, entries, pipeline_runs_ending_in};
use super::{Series, kept, parent};
use crate::durations;
use crate::error::Result;
use crate::model::{EntityKind, Tally};
use crate::store::records::PipelineRunAgg;
use crate::store::tables::{
    EntityId, ROLLUP_KEY_LEN, RUN_KEY_LEN, YEAR_KEY_LEN, pipeline_task_key, rollup_key,
    run_key_bounds, split_run_key, year_key,
};
use crate::time::{Level, MICROS_PER_SECOND};

/// The tables a flush writes, and those it reads to build dense buckets.
pub struct FlushTables<'a, 'txn> {
    pub years: &'a mut Table<'txn, &'static [u8; YEAR_KEY_LEN], &'static [u8]>,
    pub rollups: &'a mut Table<'txn, &'static [u8; ROLLUP_KEY_LEN], &'static [u8]>,
    pub run_log: &'a Table<'txn, &'static [u8; RUN_KEY_LEN], &'static [u8]>,
    pub runs: &'a Table<'txn, u64, &'static [u8]>,
    pub pipeline_tasks: &'a Table<'txn, &'static [u8; 8], ()>,
    /// The retention cut, if any: months before it keep their records however sparse.
    pub cut: Option<i64>,
}

/// The contributions of one transaction to one bucket of one series (see [`super::gather`]).
pub(super) struct Delta {
    pub series: Series,
    pub level: Level,
    pub start: i64,
    pub record: BucketRecord,
    /// Durations taken back out, by part index (unsorted; the largest per part counts).
    pub retracted: Vec<(u16, u64)>,
}

/// A transaction's deltas ready to flush: sorted by pipeline, then level (coarsest first), bucket
/// and series.
pub struct PreparedDeltas(Vec<Delta>);

impl PreparedDeltas {
    pub(super) fn new(deltas: Vec<Delta>) -> PreparedDeltas {
        PreparedDeltas(deltas)
    }

    /// Rewrites every touched record (see the module docs).
    pub fn flush(self, tables: &mut FlushTables<'_, '_>) -> Result<()> {
        let deltas = self.0;
        let mut rest = deltas.as_slice();
        while let Some(first) = rest.first() {
            let count = rest
                .iter()
                .take_while(|d| d.series.pipeline == first.series.pipeline)
                .count();
            let (group, tail) = rest.split_at(count);
            rest = tail;
            flush_pipeline(tables, first.series.pipeline, group)?;
        }
        Ok(())
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    #[cfg(test)]
    pub(super) fn records(&self) -> impl Iterator<Item = (Series, &BucketRecord)> {
        self.0.iter().map(|d| (d.series, &d.record))
    }

    /// Every delta, for comparisons in tests.
    #[cfg(test)]
    pub(super) fn debug_text(&self) -> String {
        self.0
            .iter()
            .map(|d| {
                let mut retracted = d.retracted.clone();
                retracted.sort_unstable();
                format!(
                    "{:?} {:?} {} {:?} {:?}\n",
                    d.series, d.level, d.start, d.record, retracted
                )
            })
            .collect()
    }
}

/// A part whose maximum duration must be recomputed after the merge.
struct Fix {
    series: Series,
    level: Level,
    start: i64,
    index: u16,
}

/// A pipeline's records of one bucket before and after the flush (`None`: not stored).
/// A record's part weights (by part index, ascending) when it exists; only a pipeline's are
/// listed (its weights decide its parts' density), a task's record is an empty list.
type Weights = Option<Vec<(u16, u64)>>;
/// A record's weights before and after the flush.
type BeforeAfter = (Weights, Weights);

/// The weights of a pipeline's record.
fn weights(record: Option<&BucketRecord>) -> Weights {
    record.map(|record| record.parts.iter().map(|p| (p.index, p.weight)).collect())
}

/// A record's weights as [`Weights`] lists them for a series of this kind.
fn listed(kind: EntityKind, record: Option<&BucketRecord>) -> Weights {
    match kind {
        EntityKind::Pipeline => weights(record),
        EntityKind::Task => record.map(|_| Vec::new()),
    }
}

/// A part's weight in `weights` (0 without a record or part).
fn weight_of(weights: &Weights, index: u16) -> u64 {
    weights
        .as_ref()
        .and_then(|w| {
            w.binary_search_by_key(&index, |(i, _)| *i)
                .ok()
                .map(|at| w[at].1)
        })
        .unwrap_or(0)
}

/// Flushes one pipeline's deltas (sorted by level, coarsest first, then bucket).
fn flush_pipeline(
    tables: &mut FlushTables<'_, '_>,
    pipeline: EntityId,
    group: &[Delta],
) -> Result<()> {
    let mut pipeline_records: HashMap<(u8, i64), BeforeAfter> = HashMap::new();
    let mut fixes: Vec<Fix> = Vec::new();
    // Seconds `[start, end)` whose records were built from the log in this flush.
    let mut built: Vec<(i64, i64)> = Vec::new();
    let mut rest = group;
    while let Some(first) = rest.first() {
        let count = rest
            .iter()
            .take_while(|d| d.level == first.level && d.start == first.start)
            .count();
        let (bucket, tail) = rest.split_at(count);
        rest = tail;
        let (level, start) = (first.level, first.start);
        if built
            .iter()
            .any(|(from, end)| (*from..*end).contains(&start))
        {
            continue;
        }
        let Some(parent_level) = parent(level) else {
            // Years always take their deltas, the pipeline's first: without a year record
            // before, the pipeline had no runs that year, nor had its tasks (whose records then
            // need no look-up).
            let mut absent = false;
            let (own, tasks): (Vec<&Delta>, Vec<&Delta>) =
                bucket.iter().partition(|d| d.series.id == pipeline);
            for delta in own {
                let before_after = merge_into(tables, delta, false, &mut fixes)?;
                absent = before_after.0.is_none();
                pipeline_records.insert((level.tag(), start), before_after);
            }
            for delta in tasks {
                merge_into(tables, delta, absent, &mut fixes)?;
            }
            continue;
        };
        let parent_start = parent_level.bucket_start(start);
        let index = parent_level
            .part_index(parent_start, start)
            .expect("stored levels have parts");
        let (weight_before, weight_after) = pipeline_records
            .get(&(parent_level.tag(), parent_start))
            .map_or((0, 0), |(before, after)| {
                (weight_of(before, index), weight_of(after, index))
            });
        let kept = |weight| kept(level, start, weight, tables.cut);
        // Empty before, the deltas are the whole bucket (a pipeline run ending in it would have
        // had a task run there): merged into nothing, they are what the log would build.
        let (before, after) = (kept(weight_before), kept(weight_after));
        let before_after = match (before || weight_before == 0, after) {
            (true, true) => {
                let mut pipeline_before_after = (None, None);
                for delta in bucket {
                    // Nothing there before: no record to look up.
                    let absent = weight_before == 0;
                    let before_after = merge_into(tables, delta, absent, &mut fixes)?;
                    if delta.series.id == pipeline {
                        pipeline_before_after = before_after;
                    }
                }
                pipeline_before_after
            }
            (false, true) => {
                let end = level.next_bucket(start);
                built.push((start, end));
                let entries = entries(tables.run_log, pipeline, start, end)?;
                let span = (start * MICROS_PER_SECOND, end * MICROS_PER_SECOND);
                let runs = pipeline_runs_ending_in(tables.runs, &entries, span.0, span.1)?;
                let record = build(tables, pipeline, level, start, &entries, &runs)?;
                (None, weights(Some(&record)))
            }
            (_, false) if before => {
                let before = read(tables, pipeline, level, start)?;
                delete_bucket(tables, pipeline, level, start)?;
                (weights(before.as_ref()), None)
            }
            (_, false) => (None, None),
        };
        pipeline_records.insert((level.tag(), start), before_after);
    }
    fix_maxima(tables, pipeline, fixes)
}

/// Merges a delta into its stored record (`absent`: known to have none); returns the record's
/// weights before and after, and notes the parts whose maximum a retraction may have taken
/// out.
fn merge_into(
    tables: &mut FlushTables<'_, '_>,
    delta: &Delta,
    absent: bool,
    fixes: &mut Vec<Fix>,
) -> Result<BeforeAfter> {
    let before = if absent {
        None
    } else {
        read(tables, delta.series.id, delta.level, delta.start)?
    };
    let max_of = |record: Option<&BucketRecord>, index| {
        record
            .and_then(|r| r.part(index))
            .map_or(0, |p| p.durations.max())
    };
    let weights_before = listed(delta.series.kind, before.as_ref());
    let max_before: Vec<u64> = delta
        .retracted
        .iter()
        .map(|&(index, _)| max_of(before.as_ref(), index))
        .collect();
    let mut after = before.unwrap_or_default();
    after.merge(&delta.record);
    for (&(index, value), max_before) in delta.retracted.iter().zip(max_before) {
        // The max is still present unless every value as large was taken out.
        let max = max_before.max(max_of(Some(&delta.record), index));
        if value < max {
            continue;
        }
        let Ok(at) = after.parts.binary_search_by_key(&index, |p| p.index) else {
            continue; // the part is gone
        };
        let durations = &mut after.parts[at].durations;
        if let Some(&(top, _)) = durations.bins().last() {
            // Until recomputed: a value of the top bin, so the record stays well-formed.
            durations.set_max(durations::bin_start(top));
            fixes.push(Fix {
                series: delta.series,
                level: delta.level,
                start: delta.start,
                index,
            });
        }
    }
    let weights_after = write(tables, &delta.series, delta.level, delta.start, after)?;
    Ok((weights_before, weights_after))
}

/// Recomputes the maximum of each part in `fixes`, finest level first, so that a part's finer
/// record is exact when it is read. Each record is read and written once however many of its
/// parts lost their maximum, and the log is scanned once per record for the parts that have
/// no finer record, so a batch costs what its own size does (not its parts times the
/// record's).
fn fix_maxima(
    tables: &mut FlushTables<'_, '_>,
    pipeline: EntityId,
    mut fixes: Vec<Fix>,
) -> Result<()> {
    fixes.sort_unstable_by_key(|f| {
        (
            std::cmp::Reverse(rank(f.level)),
            f.start,
            f.series.id,
            f.index,
        )
    });
    fixes.dedup_by_key(|f| (f.level, f.start, f.series.id, f.index));
    let same_record =
        |a: &Fix, b: &Fix| a.level == b.level && a.start == b.start && a.series.id == b.series.id;
    for group in fixes.chunk_by(same_record) {
        let (series, level, start) = (group[0].series, group[0].level, group[0].start);
        let Some(mut record) = read(tables, series.id, level, start)? else {
            continue;
        };
        let weights = if series.id == pipeline {
            Some(record.clone())
        } else {
            read(tables, pipeline, level, start)?
        };
        let weight = |index| {
            weights
                .as_ref()
                .and_then(|r| r.part(index).map(|p| p.weight))
                .unwrap_or(0)
        };
        // Parts with a finer record take its maximum; the others are read from the log.
        let mut from_log: Vec<(u16, i64, i64)> = Vec::new();
        let mut maxima: Vec<(u16, u64)> = Vec::with_capacity(group.len());
        for fix in group {
            let (first, end) = level.part_span(start, fix.index);
            match level.part_level() {
                Some(finer) if kept(finer, first, weight(fix.index), tables.cut) => {
                    let max = read(tables, series.id, finer, first)?.map_or(0, |r| {
                        r.parts.iter().map(|p| p.durations.max()).max().unwrap_or(0)
                    });
                    maxima.push((fix.index, max));
                }
                _ => from_log.push((fix.index, first, end)),
            }
        }
        if let (Some(&(_, from, _)), Some(&(_, _, end))) = (from_log.first(), from_log.last()) {
            let entries = entries(tables.run_log, pipeline, from, end)?;
            for &(index, first, end) in &from_log {
                // The log is in time order: the part's entries are one slice of it.
                let low = entries.partition_point(|e| e.second() < first);
                let high = entries.partition_point(|e| e.second() < end);
                let part = &entries[low..high];
                let max = match series.kind {
                    EntityKind::Task => part
                        .iter()
                        .filter(|e| e.outcome.task == series.id)
                        .map(|e| u64::from(e.outcome.duration_ms))
                        .max(),
                    EntityKind::Pipeline => {
                        let span = (first * MICROS_PER_SECOND, end * MICROS_PER_SECOND);
                        pipeline_runs_ending_in(tables.runs, part, span.0, span.1)?
                            .iter()
                            .map(|run| run.duration_ms)
                            .max()
                    }
                };
                maxima.push((index, max.unwrap_or(0)));
            }
        }
        for (index, max) in maxima {
            if let Ok(at) = record.parts.binary_search_by_key(&index, |p| p.index) {
                record.parts[at].durations.set_max(max);
            }
        }
        write(tables, &series, level, start, record)?;
    }
    Ok(())
}

/// A stored record.
fn read(
    tables: &FlushTables<'_, '_>,
    entity: EntityId,
    level: Level,
    start: i64,
) -> Result<Option<BucketRecord>> {
    let bytes = match level {
        Level::Year => tables.years.get(&year_key(entity, start))?,
        _ => tables.rollups.get(&rollup_key(level, start, entity))?,
    };
    bytes
        .map(|bytes| BucketRecord::decode(bytes.value()))
        .transpose()
}

/// Stores a record (removing it when empty); returns its weights as stored (see [`Weights`]).
fn write(
    tables: &mut FlushTables<'_, '_>,
    series: &Series,
    level: Level,
    start: i64,
    record: BucketRecord,
) -> Result<Weights> {
    if record.is_empty() {
        remove(tables, series.id, level, start)?;
        return Ok(None);
    }
    let weighted = series.kind == EntityKind::Pipeline;
    let mut bytes = Vec::with_capacity(32);
    record.encode(weighted, &mut bytes);
    match level {
        Level::Year => tables
            .years
            .insert(&year_key(series.id, start), bytes.as_slice())?,
        _ => tables
            .rollups
            .insert(&rollup_key(level, start, series.id), bytes.as_slice())?,
    };
    Ok(listed(series.kind, Some(&record)))
}

/// Removes a record.
fn remove(
    tables: &mut FlushTables<'_, '_>,
    entity: EntityId,
    level: Level,
    start: i64,
) -> Result<()> {
    match level {
        Level::Year => tables.years.remove(&year_key(entity, start))?,
        _ => tables.rollups.remove(&rollup_key(level, start, entity))?,
    };
    Ok(())
}

/// Deletes the records of a pipeline and all its tasks in one bucket.
fn delete_bucket(
    tables: &mut FlushTables<'_, '_>,
    pipeline: EntityId,
    level: Level,
    start: i64,
) -> Result<()> {
    remove(tables, pipeline, level, start)?;
    let low = pipeline_task_key(pipeline, EntityId(0));
    let high = pipeline_task_key(pipeline, EntityId(u32::MAX));
    let mut tasks = Vec::new();
    for entry in tables.pipeline_tasks.range::<&[u8; 8]>(&low..=&high)? {
        let (key, _) = entry?;
        tasks.push(EntityId(u32::from_be_bytes(
            key.value()[4..].try_into().expect("4 bytes"),
        )));
    }
    for task in tasks {
        remove(tables, task, level, start)?;
    }
    Ok(())
}

/// Builds (and stores) the records of a pipeline's dense bucket and of its tasks from the
/// bucket's log entries and the pipeline runs ending in it, then those of its dense parts;
/// returns the pipeline's record.
fn build(
    tables: &mut FlushTables<'_, '_>,
    pipeline: EntityId,
    level: Level,
    start: i64,
    entries: &[Entry],
    runs: &[PipelineRunAgg],
) -> Result<BucketRecord> {
    let part_of = |second: i64| {
        level
            .part_index(start, second)
            .expect("stored levels have parts")
    };
    let mut records: BTreeMap<EntityId, BTreeMap<u16, Part>> = BTreeMap::new();
    let mut add = |entity: EntityId, index: u16, tally: Tally, weight: u64| {
        let part = records
            .entry(entity)
            .or_default()
            .entry(index)
            .or_insert(Part {
                index,
                ..Part::default()
            });
        part.tally = part.tally + tally;
        part.weight += weight;
        if weight == 0 {
            part.durations.add_value(tally.duration_ms);
        }
    };
    for entry in entries {
        let index = part_of(entry.second());
        add(entry.outcome.task, index, entry.tally(), 0);
        add(pipeline, index, Tally::default(), 1);
    }
    for run in runs {
        let index = part_of(run.latest_micros.div_euclid(MICROS_PER_SECOND));
        add(pipeline, index, run.tally(), 0);
    }
    let mut pipeline_record = BucketRecord::default();
    for (entity, parts) in records {
        let record = BucketRecord {
            total: parts
                .values()
                .fold(Tally::default(), |sum, p| sum + p.tally),
            weight: parts.values().map(|p| p.weight).sum(),
            parts: parts.into_values().filter(|p| !p.is_empty()).collect(),
        };
        let kind = if entity == pipeline {
            EntityKind::Pipeline
        } else {
            EntityKind::Task
        };
        let series = Series {
            id: entity,
            kind,
            pipeline,
        };
        let copy = (entity == pipeline).then(|| record.clone());
        if write(tables, &series, level, start, record)?.is_some()
            && let Some(copy) = copy
        {
            pipeline_record = copy;
        }
    }
    if let Some(finer) = level.part_level() {
        for part in &pipeline_record.parts {
            let (first, end) = level.part_span(start, part.index);
            if !kept(finer, first, part.weight, tables.cut) {
                continue;
            }
            let within = |second: i64| (first..end).contains(&second);
            let entries: Vec<Entry> = entries
                .iter()
                .filter(|e| within(e.second()))
                .copied()
                .collect();
            let runs: Vec<PipelineRunAgg> = runs
                .iter()
                .filter(|r| within(r.latest_micros.div_euclid(MICROS_PER_SECOND)))
                .copied()
                .collect();
            build(tables, pipeline, finer, first, &entries, &runs)?;
        }
    }
    Ok(pipeline_record)
}

/// Builds (from the log) the records of a pipeline's bucket that has none, and of its tasks.
pub fn materialize(
    tables: &mut FlushTables<'_, '_>,
    pipeline: EntityId,
    level: Level,
    start: i64,
) -> Result<()> {
    let end = level.next_bucket(start);
    let entries = entries(tables.run_log, pipeline, start, end)?;
    let span = (start * MICROS_PER_SECOND, end * MICROS_PER_SECOND);
    let runs = pipeline_runs_ending_in(tables.runs, &entries, span.0, span.1)?;
    build(tables, pipeline, level, start, &entries, &runs)?;
    Ok(())
}

/// Builds every rollup record from the run log and the pipeline-run aggregates, into empty
/// rollup tables (what `runledger upgrade` does for a format whose records differ); returns the
/// number of pipeline-years built.
pub fn rebuild(tables: &mut FlushTables<'_, '_>) -> Result<u64> {
    let mut low = [0u8; RUN_KEY_LEN];
    let mut built = 0;
    loop {
        let Some(first) = tables
            .run_log
            .range::<&[u8; RUN_KEY_LEN]>(&low..)?
            .next()
            .transpose()?
        else {
            return Ok(built);
        };
        let (pipeline, micros, _) = split_run_key(first.0.value());
        drop(first);
        let year = Level::Year.bucket_start(micros.div_euclid(MICROS_PER_SECOND));
        let end = Level::Year.next_bucket(year);
        let entries = entries(tables.run_log, pipeline, year, end)?;
        let span = (year * MICROS_PER_SECOND, end * MICROS_PER_SECOND);
        let runs = pipeline_runs_ending_in(tables.runs, &entries, span.0, span.1)?;
        build(tables, pipeline, Level::Year, year, &entries, &runs)?;
        built += 1;
        low = run_key_bounds(pipeline, span.1, span.1).0;
    }
}
