//! Recomputes every derived record (rollups, pipeline-run aggregates, last runs, the task-run
//! index) from the raw finished task runs in `run_log`, and reports every difference. Works one
//! pipeline at a time on one snapshot, so memory grows with the largest pipeline, not the
//! database.

use std::collections::{BTreeMap, HashMap};

use redb::{ReadOnlyTable, ReadableTable, ReadableTableMetadata};
use uuid::Uuid;

use super::Store;
use super::records::{
    BucketRecord, EntityKey, LastRunRecord, PipelineRunAgg, RunRecord, TaskRunHome,
};
use super::tables::{
    self, EntityId, LAST_RUNS, MEMBER_KEY_LEN, PIPELINE_RUNS, PIPELINE_TASKS, ROLLUP_KEY_LEN,
    ROLLUPS, RUN_LOG, RUN_MEMBERS, SCOPED_KEY_LEN, TASK_RUNS, member_key, member_key_micros,
    rollup_key, rollup_key_bucket, rollup_key_series, scoped_key, split_run_key,
};
use crate::error::Result;
use crate::model::{RunState, Tally};
use crate::time::{Level, Timestamp, format_datetime};

/// At most this many differences are described; the rest are only counted.
const DESCRIBED: usize = 50;

/// What verification found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub pipelines: u64,
    pub task_runs: u64,
    pub pipeline_runs: u64,
    pub run_members: u64,
    pub rollup_entries: u64,
    pub last_runs: u64,
    /// How many differences there are in all.
    pub difference_count: u64,
    /// The first differences, described.
    pub differences: Vec<String>,
}

impl VerifyReport {
    pub fn is_consistent(&self) -> bool {
        self.difference_count == 0
    }

    fn differ(&mut self, description: impl FnOnce() -> String) {
        self.difference_count += 1;
        if self.differences.len() < DESCRIBED {
            self.differences.push(description());
        }
    }
}

type RollupTable = ReadOnlyTable<&'static [u8; ROLLUP_KEY_LEN], &'static [u8]>;

/// The tables a pipeline's recomputation is compared with.
struct Stored<'r> {
    reader: &'r super::Reader<'r>,
    rollups: RollupTable,
    pipeline_runs: ReadOnlyTable<&'static [u8; SCOPED_KEY_LEN], &'static [u8]>,
    run_members: ReadOnlyTable<&'static [u8; MEMBER_KEY_LEN], u32>,
    last_runs: ReadOnlyTable<u32, &'static [u8; super::records::LAST_RUN_LEN]>,
    pipeline_tasks: ReadOnlyTable<&'static [u8; 8], ()>,
}

/// Checks that everything derived agrees with the raw task runs.
pub fn verify(store: &Store) -> Result<VerifyReport> {
    let reader = store.reader()?;
    let run_log = reader.table(RUN_LOG)?;
    let task_runs = reader.table(TASK_RUNS)?;
    let stored = Stored {
        reader: &reader,
        rollups: reader.table(ROLLUPS)?,
        pipeline_runs: reader.table(PIPELINE_RUNS)?,
        run_members: reader.table(RUN_MEMBERS)?,
        last_runs: reader.table(LAST_RUNS)?,
        pipeline_tasks: reader.table(PIPELINE_TASKS)?,
    };
    let mut report = VerifyReport::default();

    let mut current: Option<PipelineWork> = None;
    for entry in run_log.iter()? {
        let (key, value) = entry?;
        let (pipeline, micros, task_run) = split_run_key(key.value());
        if current
            .as_ref()
            .is_none_or(|work| work.pipeline.id != pipeline)
        {
            if let Some(work) = current.take() {
                work.check(&stored, &mut report)?;
            }
            current = Some(PipelineWork::new(reader.entity_by_id(pipeline)?));
        }
        let work = current.as_mut().expect("set above");
        report.task_runs += 1;
        let executed_at =
            Timestamp::from_micros(micros).unwrap_or(Timestamp::from_micros(0).expect("epoch"));
        let record = match RunRecord::decode(value.value()) {
            Ok(record) => record,
            Err(_) => {
                report.differ(|| {
                    format!(
                        "task run {} has an undecodable record",
                        Uuid::from_bytes(task_run)
                    )
                });
                continue;
            }
        };
        if record.state != RunState::Finished {
            report.differ(|| {
                format!(
                    "task run {} is in the run log but not finished",
                    Uuid::from_bytes(task_run)
                )
            });
        }
        let home = task_runs
            .get(&scoped_key(work.pipeline.org_index, &task_run))?
            .map(|bytes| TaskRunHome::decode(bytes.value()))
            .transpose()?;
        if home
            != Some(TaskRunHome::Finished {
                pipeline,
                executed_at,
            })
        {
            report.differ(|| {
                format!(
                    "task run {} is not indexed where the run log has it",
                    Uuid::from_bytes(task_run)
                )
            });
        }
        work.add(&record, executed_at, Uuid::from_bytes(task_run));
    }
    if let Some(work) = current.take() {
        work.check(&stored, &mut report)?;
    }

    // Nothing may exist that no raw run explains.
    let stored_finished = task_runs
        .iter()?
        .filter_map(|entry| entry.ok())
        .filter(|(_, value)| value.value().first() == Some(&0))
        .count() as u64;
    if stored_finished != report.task_runs {
        let (stored, found) = (stored_finished, report.task_runs);
        report.differ(|| {
            format!("the task-run index lists {stored} finished runs, the run log holds {found}")
        });
    }
    let counts = [
        (
            stored.pipeline_runs.len()?,
            report.pipeline_runs,
            "pipeline-run aggregates",
        ),
        (
            stored.run_members.len()?,
            report.run_members,
            "pipeline-run member entries",
        ),
        (
            stored.rollups.len()?,
            report.rollup_entries,
            "rollup entries",
        ),
        (
            stored.last_runs.len()?,
            report.last_runs,
            "last-run records",
        ),
    ];
    for (stored, found, what) in counts {
        if stored != found {
            report.differ(|| format!("{stored} {what} are stored, the run log explains {found}"));
        }
    }
    Ok(report)
}

/// The recomputation for one pipeline.
struct PipelineWork {
    pipeline: EntityKey,
    /// Expected records: the total and the parts by index.
    rollups: BTreeMap<[u8; ROLLUP_KEY_LEN], (Tally, BTreeMap<u16, Tally>)>,
    aggs: HashMap<[u8; 16], PipelineRunAgg>,
    /// Finished task runs per pipeline run and executed_at.
    members: BTreeMap<([u8; 16], i64), u32>,
    last: HashMap<EntityId, LastRunRecord>,
}

impl PipelineWork {
    fn new(pipeline: EntityKey) -> Self {
        PipelineWork {
            pipeline,
            rollups: BTreeMap::new(),
            aggs: HashMap::new(),
            members: BTreeMap::new(),
            last: HashMap::new(),
        }
    }

    fn contribute(&mut self, entity: EntityId, at: Timestamp, tally: Tally, run: Uuid) {
        let second = at.second();
        for level in Level::ALL {
            let start = level.bucket_start(second);
            let (total, parts) = self
                .rollups
                .entry(rollup_key(entity, level, start))
                .or_default();
            *total = *total + tally;
            if let Some(index) = level.part_index(start, second) {
                let part = parts.entry(index).or_default();
                *part = *part + tally;
            }
        }
        let candidate = LastRunRecord {
            executed_at: at,
            run,
            is_successful: tally.successes == 1,
            duration_ms: tally.duration_ms,
        };
        let last = self.last.entry(entity).or_insert(candidate);
        if candidate.order_key() > last.order_key() {
            *last = candidate;
        }
    }

    fn add(&mut self, record: &RunRecord, at: Timestamp, task_run: Uuid) {
        let tally = Tally::of_run(record.is_successful, u64::from(record.duration_ms));
        self.contribute(record.task, at, tally, task_run);
        let micros = at.micros();
        let agg = self
            .aggs
            .entry(*record.pipeline_run.as_bytes())
            .or_insert(PipelineRunAgg {
                pipeline: self.pipeline.id,
                finished: 0,
                failed: 0,
                duration_ms: 0,
                latest_micros: micros,
                members: None,
            });
        agg.finished += 1;
        agg.failed += u32::from(!record.is_successful);
        agg.duration_ms = agg.duration_ms.wrapping_add(u64::from(record.duration_ms));
        agg.latest_micros = agg.latest_micros.max(micros);
        *self
            .members
            .entry((*record.pipeline_run.as_bytes(), micros))
            .or_default() += 1;
    }

    fn check(mut self, stored: &Stored<'_>, report: &mut VerifyReport) -> Result<()> {
        report.pipelines += 1;
        let org = self.pipeline.org_index;
        let aggs = std::mem::take(&mut self.aggs);
        for (pipeline_run, agg) in &aggs {
            report.pipeline_runs += 1;
            let at = Timestamp::from_micros(agg.latest_micros).expect("from a valid timestamp");
            self.contribute(
                self.pipeline.id,
                at,
                agg.tally(),
                Uuid::from_bytes(*pipeline_run),
            );
            let found = stored
                .pipeline_runs
                .get(&scoped_key(org, pipeline_run))?
                .map(|bytes| PipelineRunAgg::decode(bytes.value()))
                .transpose()?;
            let totals = |a: &PipelineRunAgg| {
                (
                    a.pipeline,
                    a.finished,
                    a.failed,
                    a.duration_ms,
                    a.latest_micros,
                )
            };
            if found.as_ref().map(totals) != Some(totals(agg)) {
                report.differ(|| {
                    format!(
                        "pipeline run {}: stored {found:?}, recomputed {agg:?}",
                        Uuid::from_bytes(*pipeline_run)
                    )
                });
            }
            // Its members, in the aggregate or (for a large pipeline run) in the index.
            let expected: Vec<i64> = self
                .members
                .range((*pipeline_run, i64::MIN)..=(*pipeline_run, i64::MAX))
                .flat_map(|((_, micros), count)| std::iter::repeat_n(*micros, *count as usize))
                .collect();
            let (low, high) = (
                member_key(org, pipeline_run, i64::MIN),
                member_key(org, pipeline_run, i64::MAX),
            );
            let (mut indexed, mut entries) = (Vec::new(), 0);
            for entry in stored
                .run_members
                .range::<&[u8; MEMBER_KEY_LEN]>(&low..=&high)?
            {
                let (key, count) = entry?;
                entries += 1;
                let micros = member_key_micros(key.value());
                indexed.extend(std::iter::repeat_n(micros, count.value() as usize));
            }
            let members = match found.and_then(|f| f.members) {
                Some(inline) if indexed.is_empty() => inline.as_slice().to_vec(),
                Some(_) => {
                    report.differ(|| {
                        format!(
                            "pipeline run {} keeps its members inline and in the index",
                            Uuid::from_bytes(*pipeline_run)
                        )
                    });
                    indexed
                }
                None => {
                    report.run_members += entries;
                    indexed
                }
            };
            if members != expected {
                report.differ(|| {
                    format!(
                        "members of pipeline run {}: stored {members:?}, recomputed {expected:?}",
                        Uuid::from_bytes(*pipeline_run)
                    )
                });
            }
        }

        // Every entity of this pipeline: the pipeline and all its tasks, with or without runs.
        let mut entities = vec![self.pipeline.id];
        let low = tables::pipeline_task_key(self.pipeline.id, EntityId(0));
        let high = tables::pipeline_task_key(self.pipeline.id, EntityId(u32::MAX));
        for entry in stored.pipeline_tasks.range::<&[u8; 8]>(&low..=&high)? {
            let (key, _) = entry?;
            entities.push(EntityId(u32::from_be_bytes(
                key.value()[4..].try_into().expect("4 bytes"),
            )));
        }
        for entity in entities {
            let name = stored
                .reader
                .entity_uuid(entity)
                .map(|u| u.to_string())
                .unwrap_or_else(|_| format!("#{}", entity.0));
            let (low, high) = tables::rollup_entity_bounds(entity);
            let mut found: BTreeMap<[u8; ROLLUP_KEY_LEN], BucketRecord> = BTreeMap::new();
            for entry in stored
                .rollups
                .range::<&[u8; ROLLUP_KEY_LEN]>(&low..=&high)?
            {
                let (key, value) = entry?;
                found.insert(*key.value(), BucketRecord::decode(value.value())?);
            }
            let expected: BTreeMap<_, _> = self
                .rollups
                .range(low..=high)
                .map(|(key, (total, parts))| {
                    let parts = parts
                        .iter()
                        .map(|(i, t)| (*i, *t))
                        .filter(|(_, t)| !t.is_empty())
                        .collect();
                    (
                        *key,
                        BucketRecord {
                            total: *total,
                            parts,
                        },
                    )
                })
                .collect();
            report.rollup_entries += expected.len() as u64;
            for key in found
                .keys()
                .chain(expected.keys())
                .collect::<std::collections::BTreeSet<_>>()
            {
                let (s, e) = (found.get(key), expected.get(key));
                if s != e {
                    let (_, level) = rollup_key_series(key);
                    let bucket = format_datetime(rollup_key_bucket(key));
                    report.differ(|| format!(
                        "rollup of {name} at level {level} bucket {bucket}: stored {s:?}, recomputed {e:?}"
                    ));
                }
            }
            let stored_last = stored
                .last_runs
                .get(entity.0)?
                .map(|bytes| LastRunRecord::decode(bytes.value()))
                .transpose()?;
            let expected_last = self.last.get(&entity).copied();
            report.last_runs += u64::from(expected_last.is_some());
            if stored_last != expected_last {
                report.differ(|| {
                    format!(
                        "last run of {name}: stored {stored_last:?}, recomputed {expected_last:?}"
                    )
                });
            }
        }
        Ok(())
    }
}
