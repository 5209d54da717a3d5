//! Retention: deleting task runs executed before a cut (a UTC midnight), with their index
//! entries, the pipeline runs that ended before it, and the day and hour rollup records before
//! it, in steps of bounded size, each its own transaction (see [`WriteOp::is_exclusive`]).
//!
//! The first step records the cut (it only ever moves forward) and makes sure every month
//! before it has records for the pipeline and its tasks, however sparse the pipeline was there
//! (a sparse month's days were answered from the log, which is about to go): from then on, day,
//! week, month, quarter and year answers before the cut come from records that pruning never
//! changes. Reports of runs executed before the cut are refused from the moment it is recorded.
//!
//! [`WriteOp::is_exclusive`]: super::WriteOp::is_exclusive

use redb::ReadableTable;
use rustc_hash::FxHashSet;

use super::Batch;
use crate::error::{Error, Result};
use crate::model::TaskRunId;
use crate::store::kept;
use crate::store::records::{EntityDetail, PipelineRunAgg, RunRecord, RunRef};
use crate::store::rollup::BucketRecord;
use crate::store::rollup::{self, FlushTables};
use crate::store::tables::{
    EntityId, MEMBER_KEY_LEN, OrgIndex, ROLLUP_KEY_LEN, RUN_KEY_LEN, RunId, index_key, member_key,
    meta, rollup_key, run_key, split_run_key, year_key_start,
};
use crate::time::{Level, MAX_SECOND, MICROS_PER_SECOND, MIN_SECOND};

/// What one step of pruning did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneProgress {
    /// The cut in force (seconds, a UTC midnight).
    pub cut: i64,
    pub task_runs: u64,
    pub pipeline_runs: u64,
    /// Month records made for sparse months (first step of a new cut only).
    pub months_materialized: u64,
    /// Day and hour records deleted.
    pub records: u64,
    /// Nothing before the cut is left.
    pub done: bool,
}

impl Batch<'_> {
    /// The retention cut in force, if any.
    pub(super) fn retention_cut(&self) -> Result<Option<i64>> {
        if let Some(cut) = self.cut.get() {
            return Ok(cut);
        }
        let cut = read_cut(&self.t.meta, meta::RETENTION_CUT)?;
        self.cut.set(Some(cut));
        Ok(cut)
    }

    /// One step of pruning to the cut `before` (a UTC midnight): at most `limit` task runs.
    pub(super) fn prune(&mut self, before: i64, limit: usize) -> Result<Result<PruneProgress>> {
        // Pruning reads and deletes runs in the run log: none may wait to be taken out.
        if !self.removed_log.is_empty() {
            self.write_pending(true)?;
        }
        if before != Level::Day.bucket_start(before) || !(MIN_SECOND..=MAX_SECOND).contains(&before)
        {
            return Ok(Err(Error::invalid(
                "before",
                "must be a UTC midnight between the years 1 and 9999",
            )));
        }
        let cut = self.retention_cut()?.map_or(before, |cut| cut.max(before));
        self.t
            .meta
            .insert(meta::RETENTION_CUT, cut.to_le_bytes().as_slice())?;
        self.cut.set(Some(Some(cut)));
        let mut progress = PruneProgress {
            cut,
            ..PruneProgress::default()
        };
        let materialized = read_cut(&self.t.meta, meta::MATERIALIZED_BEFORE)?;
        if materialized.is_none_or(|m| m < cut) {
            self.check_kept()?;
            progress.months_materialized = self.materialize_months(cut)?;
            self.t
                .meta
                .insert(meta::MATERIALIZED_BEFORE, cut.to_le_bytes().as_slice())?;
            progress.records = self.delete_fine_records(cut)?;
            let digest = kept::digest(&self.t.year_rollups, &self.t.rollups, cut)?;
            self.t
                .meta
                .insert(meta::KEPT_DIGEST, kept::encode(cut, &digest).as_slice())?;
        }
        let (task_runs, pipeline_runs, done) = self.delete_runs(cut, limit)?;
        progress.task_runs = task_runs;
        progress.pipeline_runs = pipeline_runs;
        progress.done = done;
        Ok(Ok(progress))
    }

    /// Before a new cut: what the last one kept must be as it was.
    fn check_kept(&self) -> Result<()> {
        let recorded = self
            .t
            .meta
            .get(meta::KEPT_DIGEST)?
            .and_then(|bytes| kept::decode(bytes.value()));
        if let Some((cut, digest)) = recorded
            && kept::digest(&self.t.year_rollups, &self.t.rollups, cut)? != digest
        {
            return Err(Error::Internal(format!(
                "the rollups kept before the retention cut {} changed since it was made",
                crate::time::format_datetime(cut)
            )));
        }
        Ok(())
    }

    /// Builds, from the log, the month records of every pipeline month before the cut that has
    /// none (the pipeline was sparse there), and of its tasks.
    fn materialize_months(&mut self, cut: i64) -> Result<u64> {
        let mut missing: Vec<(EntityId, i64)> = Vec::new();
        for entry in self.t.year_rollups.iter()? {
            let (key, value) = entry?;
            let year = year_key_start(key.value());
            if year >= cut {
                continue;
            }
            let entity = EntityId(u32::from_be_bytes(key.value()[..4].try_into().expect("4")));
            let (_, parts) = BucketRecord::decode_lazily(value.value())?;
            if !parts.is_weighted() {
                continue; // a task's record: its pipeline's decides
            }
            for part in parts {
                let part = part?;
                let (month, _) = Level::Year.part_span(year, part.index);
                if month < cut && part.weight > 0 && part.weight < rollup::DENSE {
                    missing.push((entity, month));
                }
            }
        }
        let count = missing.len() as u64;
        let mut tables = FlushTables {
            years: &mut self.t.year_rollups,
            rollups: &mut self.t.rollups,
            run_log: &self.t.run_log,
            runs: &self.t.pipeline_runs,
            pipeline_tasks: &self.t.pipeline_tasks,
            cut: Some(cut),
        };
        for (pipeline, month) in missing {
            rollup::materialize(&mut tables, pipeline, Level::Month, month)?;
        }
        Ok(count)
    }

    /// Deletes the day and hour records of buckets before the cut.
    fn delete_fine_records(&mut self, cut: i64) -> Result<u64> {
        let mut deleted = 0;
        for level in [Level::Day, Level::Hour] {
            let low = rollup_key(level, MIN_SECOND, EntityId(0));
            let high = rollup_key(level, cut, EntityId(0));
            let keys: Vec<[u8; ROLLUP_KEY_LEN]> = self
                .t
                .rollups
                .range::<&[u8; ROLLUP_KEY_LEN]>(&low..&high)?
                .map(|entry| entry.map(|(key, _)| *key.value()))
                .collect::<std::result::Result<_, _>>()?;
            for key in keys {
                self.t.rollups.remove(&key)?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Deletes up to `limit` task runs executed before the cut, pipeline by pipeline from where
    /// the last step stopped, with their index entries and the pipeline runs that ended before
    /// the cut. Returns the task runs and pipeline runs deleted, and whether none is left.
    fn delete_runs(&mut self, cut: i64, limit: usize) -> Result<(u64, u64, bool)> {
        let cut_micros = cut * MICROS_PER_SECOND;
        let mut pipeline = EntityId(
            self.t
                .meta
                .get(meta::PRUNE_NEXT_PIPELINE)?
                .and_then(|v| v.value().try_into().ok().map(u32::from_le_bytes))
                .unwrap_or(0),
        );
        let (mut task_runs, mut touched) = (0u64, FxHashSet::default());
        let done = loop {
            let low = run_key(pipeline, MIN_SECOND * MICROS_PER_SECOND, &[0; 16]);
            let first = self
                .t
                .run_log
                .range::<&[u8; RUN_KEY_LEN]>(&low..)?
                .next()
                .transpose()?
                .map(|(key, _)| *key.value());
            let Some(first) = first else {
                break true;
            };
            let (found, micros, _) = split_run_key(&first);
            pipeline = found;
            if micros >= cut_micros {
                match pipeline.0.checked_add(1) {
                    Some(next) => {
                        pipeline = EntityId(next);
                        continue;
                    }
                    None => break true,
                }
            }
            if task_runs as usize >= limit {
                break false;
            }
            let org = self.org_of(pipeline)?;
            let high = run_key(pipeline, cut_micros, &[0; 16]);
            let entries: Vec<([u8; RUN_KEY_LEN], RunRef)> = self
                .t
                .run_log
                .range::<&[u8; RUN_KEY_LEN]>(&first..&high)?
                .take(limit - task_runs as usize)
                .map(|entry| {
                    let (key, value) = entry?;
                    Ok((
                        *key.value(),
                        RunRecord::decode_outcome(value.value())?.pipeline_run,
                    ))
                })
                .collect::<Result<_>>()?;
            for (key, run) in entries {
                self.t.run_log.remove(&key)?;
                let (_, _, task_run) = split_run_key(&key);
                let task_run = TaskRunId(uuid::Uuid::from_bytes(task_run));
                if let Some((period, _)) = self.find_task_run(org, &task_run)? {
                    self.t
                        .task_index
                        .remove(&index_key(period, org, task_run.as_bytes()))?;
                }
                if let RunRef::Id(run) = run {
                    touched.insert((run, org));
                }
                task_runs += 1;
            }
        };
        let next = if done { 0 } else { pipeline.0 };
        self.t
            .meta
            .insert(meta::PRUNE_NEXT_PIPELINE, next.to_le_bytes().as_slice())?;
        let mut touched: Vec<(RunId, OrgIndex)> = touched.into_iter().collect();
        touched.sort_unstable();
        let mut pipeline_runs = 0;
        for (run, org) in touched {
            let Some(agg) = self.stored_agg(run)? else {
                continue;
            };
            if agg.latest_micros >= cut_micros {
                continue; // it ends after the cut: kept, with what it summed before it
            }
            self.delete_pipeline_run(run, org, &agg)?;
            pipeline_runs += 1;
        }
        Ok((task_runs, pipeline_runs, done))
    }

    fn delete_pipeline_run(
        &mut self,
        run: RunId,
        org: OrgIndex,
        agg: &PipelineRunAgg,
    ) -> Result<()> {
        self.t.pipeline_runs.remove(run.0)?;
        self.note_stored_agg(run, None);
        // Pruning is a transaction of its own: nothing of the index is pending.
        let uuid = agg.uuid.as_bytes();
        let filters = self.filters;
        for period in self
            .pipeline_index
            .candidates(&filters.pipeline_runs, org, uuid, true)
        {
            if self
                .t
                .pipeline_index
                .remove(&index_key(period, org, uuid))?
                .is_some()
            {
                break;
            }
        }
        if agg.members.is_none() {
            let low = member_key(run, i64::MIN);
            let high = member_key(run, i64::MAX);
            let keys: Vec<[u8; MEMBER_KEY_LEN]> = self
                .t
                .run_members
                .range::<&[u8; MEMBER_KEY_LEN]>(&low..=&high)?
                .map(|entry| entry.map(|(key, _)| *key.value()))
                .collect::<std::result::Result<_, _>>()?;
            for key in keys {
                self.t.run_members.remove(&key)?;
            }
        }
        Ok(())
    }

    /// The namespace of a pipeline's UUIDs.
    fn org_of(&self, pipeline: EntityId) -> Result<OrgIndex> {
        let bytes =
            self.t.entities.get(pipeline.0)?.ok_or_else(|| {
                Error::Internal(format!("pipeline {} has no details", pipeline.0))
            })?;
        Ok(EntityDetail::decode(bytes.value())?.org_index)
    }
}

/// A cut stored in `meta`: a little-endian i64 second.
pub(in crate::store) fn read_cut(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &str,
) -> Result<Option<i64>> {
    Ok(table
        .get(name)?
        .and_then(|v| v.value().try_into().ok().map(i64::from_le_bytes)))
}
