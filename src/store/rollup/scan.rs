//! Reading a series' runs in a stretch of time straight from its pipeline's run log: what
//! answers for buckets too sparse to keep rollup records (fewer than [`super::DENSE`] task
//! runs), and what builds a bucket's records when it becomes dense.
//!
//! A task's runs are its entries; a pipeline's runs are its pipeline runs whose latest task run
//! lies in the stretch (that task run is then in the stretch too, so no pipeline run is missed),
//! read from their aggregates.

use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;

use super::{RollupTable, RunLogTable, RunTable, Series, Source, YearTable};
use crate::error::Result;
use crate::model::{EntityKind, Summary, Tally};
use crate::store::records::{PipelineRunAgg, RunOutcome, RunRecord, RunRef, corrupt};
use crate::store::tables::{RUN_KEY_LEN, RunId, run_key_bounds, split_run_key};
use crate::time::MICROS_PER_SECOND;

/// One finished task run in the log.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub micros: i64,
    pub outcome: RunOutcome,
}

impl Entry {
    pub fn second(&self) -> i64 {
        self.micros.div_euclid(MICROS_PER_SECOND)
    }

    pub fn run(&self) -> Result<RunId> {
        match self.outcome.pipeline_run {
            RunRef::Id(id) => Ok(id),
            RunRef::Uuid(_) => Err(corrupt("task run")),
        }
    }

    pub fn tally(&self) -> Tally {
        Tally::of_run(
            self.outcome.is_successful,
            u64::from(self.outcome.duration_ms),
        )
    }
}

/// The pipeline's log entries executed in the seconds `[from, end)`, oldest first.
pub fn entries(
    run_log: &impl RunLogTable,
    pipeline: crate::store::tables::EntityId,
    from: i64,
    end: i64,
) -> Result<Vec<Entry>> {
    let (low, high) = run_key_bounds(pipeline, from * MICROS_PER_SECOND, end * MICROS_PER_SECOND);
    // A sparse bucket holds fewer than `DENSE` runs.
    let mut entries = Vec::with_capacity(super::DENSE as usize);
    for entry in run_log.range::<&[u8; RUN_KEY_LEN]>(&low..&high)? {
        let (key, value) = entry?;
        entries.push(Entry {
            micros: split_run_key(key.value()).1,
            outcome: RunRecord::decode_outcome(value.value())?,
        });
    }
    Ok(entries)
}

/// A pipeline run's aggregate.
pub fn aggregate(runs: &impl RunTable, run: RunId) -> Result<PipelineRunAgg> {
    let bytes = runs.get(run.0)?.ok_or_else(|| corrupt("pipeline run"))?;
    PipelineRunAgg::decode(bytes.value())
}

/// The pipeline runs of `entries` whose latest task run lies in the microseconds `[from, end)`.
pub fn pipeline_runs_ending_in(
    runs: &impl RunTable,
    entries: &[Entry],
    from: i64,
    end: i64,
) -> Result<Vec<PipelineRunAgg>> {
    let mut seen = HashSet::new();
    let mut found = Vec::new();
    for entry in entries {
        let run = entry.run()?;
        if !seen.insert(run) {
            continue;
        }
        let agg = aggregate(runs, run)?;
        if (from..end).contains(&agg.latest_micros) {
            found.push(agg);
        }
    }
    Ok(found)
}

impl<Y: YearTable, R: RollupTable, L: RunLogTable, P: RunTable> Source<'_, Y, R, L, P> {
    /// The series' runs in the seconds `[from, end)`, by the bucket (of `bucket`) of each run's
    /// second.
    pub fn scan_buckets(
        &self,
        series: &Series,
        from: i64,
        end: i64,
        bucket: impl Fn(i64) -> i64,
    ) -> Result<BTreeMap<i64, Summary>> {
        let entries = entries(self.run_log, series.pipeline, from, end)?;
        let mut buckets: BTreeMap<i64, Summary> = BTreeMap::new();
        match series.kind {
            EntityKind::Task => {
                for entry in entries.iter().filter(|e| e.outcome.task == series.id) {
                    let summary = Summary::of_run(
                        entry.outcome.is_successful,
                        u64::from(entry.outcome.duration_ms),
                    );
                    buckets
                        .entry(bucket(entry.second()))
                        .or_default()
                        .add(&summary);
                }
            }
            EntityKind::Pipeline => {
                let span = (from * MICROS_PER_SECOND, end * MICROS_PER_SECOND);
                for agg in pipeline_runs_ending_in(self.runs, &entries, span.0, span.1)? {
                    let second = agg.latest_micros.div_euclid(MICROS_PER_SECOND);
                    let summary = Summary::of_run(agg.failed == 0, agg.duration_ms);
                    buckets.entry(bucket(second)).or_default().add(&summary);
                }
            }
        }
        Ok(buckets)
    }

    /// Shows `add` the outcome and duration of each of the series' runs in the seconds
    /// `[cut_from, cut_end)` of the sparse bucket `[from, end)`. The bucket's log entries (a few
    /// dozen at most) and the pipeline-run aggregates read are remembered, so that ranges
    /// cutting the same bucket at different seconds (the overview's windows) read them once.
    pub fn cut_runs(
        &self,
        series: &Series,
        (from, end): (i64, i64),
        (cut_from, cut_end): (i64, i64),
        mut add: impl FnMut(bool, u64),
    ) -> Result<()> {
        let key = (series.pipeline, from, end);
        let cached = self.memo.entries.borrow().get(&key).cloned();
        let entries = match cached {
            Some(entries) => entries,
            None => {
                let read = Rc::new(entries(self.run_log, series.pipeline, from, end)?);
                self.memo.entries.borrow_mut().insert(key, read.clone());
                read
            }
        };
        let within = entries
            .iter()
            .filter(|e| (cut_from..cut_end).contains(&e.second()));
        match series.kind {
            EntityKind::Task => {
                for entry in within.filter(|e| e.outcome.task == series.id) {
                    add(
                        entry.outcome.is_successful,
                        u64::from(entry.outcome.duration_ms),
                    );
                }
            }
            EntityKind::Pipeline => {
                // A pipeline run ending in the cut has its latest task run there.
                let span = (cut_from * MICROS_PER_SECOND, cut_end * MICROS_PER_SECOND);
                let mut seen = HashSet::new();
                for entry in within {
                    let run = entry.run()?;
                    if !seen.insert(run) {
                        continue;
                    }
                    let cached = self.memo.aggs.borrow().get(&run).copied();
                    let agg = match cached {
                        Some(agg) => agg,
                        None => {
                            let agg = aggregate(self.runs, run)?;
                            self.memo.aggs.borrow_mut().insert(run, agg);
                            agg
                        }
                    };
                    if (span.0..span.1).contains(&agg.latest_micros) {
                        add(agg.failed == 0, agg.duration_ms);
                    }
                }
            }
        }
        Ok(())
    }

    /// The latest second in `[from, to]` in which the series has a run.
    pub fn scan_latest(&self, series: &Series, from: i64, to: i64) -> Result<Option<i64>> {
        let (low, high) = run_key_bounds(
            series.pipeline,
            from * MICROS_PER_SECOND,
            (to + 1) * MICROS_PER_SECOND,
        );
        for entry in self.run_log.range::<&[u8; RUN_KEY_LEN]>(&low..&high)?.rev() {
            let (key, value) = entry?;
            let entry = Entry {
                micros: split_run_key(key.value()).1,
                outcome: RunRecord::decode_outcome(value.value())?,
            };
            match series.kind {
                EntityKind::Task if entry.outcome.task == series.id => {
                    return Ok(Some(entry.second()));
                }
                EntityKind::Task => {}
                EntityKind::Pipeline => {
                    // Newest entry first: the first pipeline run that ends by `to` ends latest.
                    let agg = aggregate(self.runs, entry.run()?)?;
                    if agg.latest_micros < (to + 1) * MICROS_PER_SECOND {
                        return Ok(Some(agg.latest_micros.div_euclid(MICROS_PER_SECOND)));
                    }
                }
            }
        }
        Ok(None)
    }
}
