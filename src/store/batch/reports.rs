//! Task-run reports in a write transaction: a batch collapses to the last report of each task
//! run, is checked (read-only: a rejection changes nothing), then applied run by run. Applying a
//! report costs a bounded number of lookups whatever is stored: its task run's index entry, its
//! pipeline run's aggregate, and (when it replaces a finished run) that run's log entry.

use rustc_hash::FxHashMap as HashMap;

use redb::ReadableTable;
use uuid::Uuid;

use super::pipeline_runs::pipeline_series;
use super::{Batch, Verdict};
use crate::error::{Error, Result};
use crate::model::{
    EntityKind, OrgId, PipelineId, PipelineRunId, ReportCounts, RunState, TaskRun, TaskRunId,
};
use crate::store::records::{EntityKey, RunRecord, RunRef, TaskRunHome};
use crate::store::rollup::Series;
use crate::store::tables::{RunId, index_key, run_key};
use crate::time::Timestamp;

/// What a batch will create, so that later reports of the same batch agree with earlier ones.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NewEntity {
    Pipeline,
    Task(PipelineId),
}

impl Batch<'_> {
    /// Checks and applies a batch of reports received at `at`.
    pub(super) fn report(
        &mut self,
        runs: &[TaskRun],
        at: Timestamp,
    ) -> Result<Result<ReportCounts>> {
        let (runs, collapsed) = collapse(runs);
        if let Err(rejection) = self.check_report(&runs)? {
            return Ok(Err(rejection));
        }
        let mut counts = ReportCounts {
            replaced: collapsed,
            ..ReportCounts::default()
        };
        for (_, run) in runs {
            counts.add(self.apply_run(run, at, None)?);
        }
        Ok(Ok(counts))
    }

    pub(super) fn check_report(&mut self, runs: &[(usize, &TaskRun)]) -> Result<Verdict> {
        let mut new_entities: HashMap<(OrgId, Uuid), NewEntity> = HashMap::default();
        let mut run_pipelines: HashMap<(OrgId, PipelineRunId), PipelineId> = HashMap::default();
        let cut = self.retention_cut()?;
        for &(index, run) in runs {
            let field = |name: &str| format!("results[{index}].{name}");
            if let Some(cut) = cut
                && let Some(rejection) = self.check_retention(run, cut, &field("executed_at"))?
            {
                return Ok(Err(rejection));
            }
            let Some(org) = run.organization else {
                return Ok(Err(Error::invalid(
                    &field("organization_uuid"),
                    "is required",
                )));
            };
            let org_index = self.find_org_index(org)?;
            let pipeline = match self.entity(org_index, run.pipeline.0)? {
                Some(key) if key.kind != EntityKind::Pipeline => {
                    return Ok(Err(Error::invalid(
                        &field("pipeline_uuid"),
                        format!(
                            "{} is a task of this organization, not a pipeline",
                            run.pipeline
                        ),
                    )));
                }
                Some(key) => Some(key),
                None => {
                    match new_entities
                        .entry((org, run.pipeline.0))
                        .or_insert(NewEntity::Pipeline)
                    {
                        NewEntity::Pipeline => {}
                        NewEntity::Task(_) => {
                            return Ok(Err(Error::invalid(
                                &field("pipeline_uuid"),
                                format!(
                                    "{} is a task_uuid earlier in this batch, not a pipeline",
                                    run.pipeline
                                ),
                            )));
                        }
                    }
                    None
                }
            };
            match self.entity(org_index, run.task.0)? {
                Some(key) if key.kind != EntityKind::Task => {
                    return Ok(Err(Error::invalid(
                        &field("task_uuid"),
                        format!(
                            "{} is a pipeline of this organization, not a task",
                            run.task
                        ),
                    )));
                }
                Some(key) if Some(key.pipeline) != pipeline.map(|p| p.id) => {
                    return Ok(Err(Error::Conflict(format!(
                        "{}: task {} belongs to another pipeline than {}",
                        field("task_uuid"),
                        run.task,
                        run.pipeline
                    ))));
                }
                Some(_) => {}
                None => match new_entities
                    .entry((org, run.task.0))
                    .or_insert(NewEntity::Task(run.pipeline))
                {
                    NewEntity::Pipeline => {
                        return Ok(Err(Error::invalid(
                            &field("task_uuid"),
                            format!(
                                "{} is a pipeline_uuid earlier in this batch, not a task",
                                run.task
                            ),
                        )));
                    }
                    NewEntity::Task(first) if *first != run.pipeline => {
                        return Ok(Err(Error::Conflict(format!(
                            "{}: task {} is reported under two pipelines in one batch",
                            field("task_uuid"),
                            run.task
                        ))));
                    }
                    NewEntity::Task(_) => {}
                },
            }
            if run.finished_at().is_some() {
                let first = *run_pipelines
                    .entry((org, run.pipeline_run))
                    .or_insert(run.pipeline);
                if first != run.pipeline {
                    return Ok(Err(Error::Conflict(format!(
                        "{}: pipeline run {} is reported under two pipelines in one batch",
                        field("pipeline_run_uuid"),
                        run.pipeline_run
                    ))));
                }
                if let Some(org_index) = org_index
                    && let Some(agg) = self.current_agg(org_index, run.pipeline_run)?
                    && Some(agg.pipeline) != pipeline.map(|p| p.id)
                {
                    return Ok(Err(Error::Conflict(format!(
                        "{}: pipeline run {} belongs to another pipeline than {}",
                        field("pipeline_run_uuid"),
                        run.pipeline_run,
                        run.pipeline
                    ))));
                }
            }
        }
        Ok(Ok(()))
    }

    /// Under retention, a run executed before the cut cannot be reported, nor a run stored
    /// before it replaced: its old values may be gone.
    fn check_retention(&mut self, run: &TaskRun, cut: i64, field: &str) -> Result<Option<Error>> {
        let refuse = |second: i64, what: &str| {
            Error::invalid(
                field,
                format!(
                    "{what} {} is before the retention cut {}: runs before it are no longer kept, so none can be added or replaced",
                    crate::time::format_datetime(second),
                    crate::time::format_datetime(cut)
                ),
            )
        };
        if let Some(at) = run.finished_at()
            && at.second() < cut
        {
            return Ok(Some(refuse(at.second(), "executed_at")));
        }
        let Some(org) = run.organization else {
            return Ok(None);
        };
        let Some(org_index) = self.find_org_index(org)? else {
            return Ok(None);
        };
        if let Some((_, TaskRunHome::Finished { executed_at, .. })) =
            self.find_task_run(org_index, &run.task_run)?
            && executed_at.second() < cut
        {
            return Ok(Some(refuse(
                executed_at.second(),
                "the stored run's executed_at",
            )));
        }
        Ok(None)
    }

    /// Applies one checked report. A running task run starts at `started_at` when given, else
    /// when it was first reported running.
    pub(super) fn apply_run(
        &mut self,
        run: &TaskRun,
        at: Timestamp,
        started_at: Option<Timestamp>,
    ) -> Result<ReportCounts> {
        let org = run.organization.expect("checked");
        let (pipeline, _) = self.ensure_pipeline(run.pipeline, org)?;
        self.note_touched(org, pipeline.id, run.pipeline.0);
        let task = self.ensure_task(run.task, &pipeline, run.task_type, run.is_initial_task)?;
        let org_index = pipeline.org_index;
        let finished_at = run.finished_at();
        let pipeline_run = match finished_at {
            Some(_) => RunRef::Id(self.ensure_run_id(org_index, run.pipeline_run)?),
            None => RunRef::Uuid(run.pipeline_run),
        };
        let record = RunRecord {
            task: task.id,
            pipeline_run,
            task_type: run.task_type,
            state: run.state,
            is_successful: run.is_successful,
            is_initial_task: run.is_initial_task,
            is_final_task: run.is_final_task,
            duration_ms: run.duration_ms,
            metric_value: run.metric_value,
            output: run.output.clone(),
            errors: run.errors.clone(),
        };
        let uuid = run.task_run.as_bytes();
        let mut home = match finished_at {
            Some(executed_at) => TaskRunHome::Finished {
                pipeline: pipeline.id,
                executed_at,
            },
            None => TaskRunHome::Unfinished {
                pipeline: pipeline.id,
                executed_at: run.executed_at,
                serial: 0,
                created_at: at,
                updated_at: at,
                started_at: None,
                record: record.clone(),
            },
        };
        let found = self.find_task_run(org_index, &run.task_run)?;
        if let Some((_, old)) = &found
            && old.pipeline() != pipeline.id
        {
            // A task run reported again under another pipeline leaves its old one.
            self.note_moved_from(org, old.pipeline())?;
        }
        if let TaskRunHome::Unfinished {
            started_at: new_start,
            ..
        } = &mut home
            && run.state == RunState::Running
        {
            let old_start = match &found {
                Some((_, TaskRunHome::Unfinished { started_at, .. })) => *started_at,
                _ => None,
            };
            *new_start = Some(started_at.or(old_start).unwrap_or(at));
        }
        let period = found.as_ref().map(|(period, _)| *period);
        let mut counts = ReportCounts::default();
        match found {
            None => counts.inserted = 1,
            Some((_, old)) => {
                let old_log = self.pending_log(org_index, &run.task_run);
                if self.is_unchanged(&old, old_log, &home, &record, uuid)? {
                    counts.unchanged = 1;
                    return Ok(counts);
                }
                if let (
                    TaskRunHome::Unfinished {
                        serial, created_at, ..
                    },
                    TaskRunHome::Unfinished {
                        serial: new_serial,
                        created_at: new_created_at,
                        ..
                    },
                ) = (&old, &mut home)
                {
                    // A pending run keeps the id and creation time it was given.
                    *new_serial = *serial;
                    *new_created_at = *created_at;
                }
                if let TaskRunHome::Unfinished { serial, .. } = old
                    && serial != 0
                    && run.state != RunState::Pending
                {
                    // An executor took it up: it no longer waits in the queue.
                    self.t.pending.remove(serial)?;
                }
                self.retract_run(&old, old_log, uuid)?;
                if let TaskRunHome::Unfinished {
                    pipeline,
                    started_at: Some(start),
                    ..
                } = old
                {
                    self.t
                        .running
                        .remove(&run_key(pipeline, start.micros(), uuid))?;
                }
                counts.replaced = 1;
            }
        }
        let log = match (&home, pipeline_run) {
            (TaskRunHome::Finished { executed_at, .. }, RunRef::Id(id)) => {
                let executed_at = *executed_at;
                self.new_log.push((
                    run_key(pipeline.id, executed_at.micros(), uuid),
                    Some(record.to_bytes()),
                ));
                self.contribute(&task, &record, executed_at, (id, run.pipeline_run))?;
                Some(self.new_log.len() - 1)
            }
            _ => None,
        };
        let running = match home {
            TaskRunHome::Unfinished {
                started_at: Some(start),
                ..
            } => Some(run_key(pipeline.id, start.micros(), uuid)),
            _ => None,
        };
        let period = self.put_home(org_index, &run.task_run, period, home, log);
        if let Some(key) = running {
            self.t
                .running
                .insert(&key, &index_key(period, org_index, uuid))?;
        }
        Ok(counts)
    }

    /// Whether a new report says exactly what is stored (a redelivery).
    fn is_unchanged(
        &self,
        old: &TaskRunHome,
        old_log: Option<usize>,
        new: &TaskRunHome,
        record: &RunRecord,
        uuid: &[u8; 16],
    ) -> Result<bool> {
        Ok(match (old, new) {
            (
                TaskRunHome::Finished {
                    pipeline,
                    executed_at,
                },
                TaskRunHome::Finished {
                    pipeline: new_pipeline,
                    executed_at: new_executed_at,
                },
            ) if pipeline == new_pipeline && executed_at == new_executed_at => {
                let key = run_key(*pipeline, executed_at.micros(), uuid);
                if let Some(pending) = old_log.and_then(|at| self.new_log[at].1.as_ref()) {
                    RunRecord::decode(pending)? == *record
                } else {
                    match self.t.run_log.get(&key)? {
                        Some(stored) => RunRecord::decode(stored.value())? == *record,
                        None => false,
                    }
                }
            }
            (
                TaskRunHome::Unfinished {
                    pipeline,
                    executed_at,
                    started_at,
                    record: old_record,
                    ..
                },
                TaskRunHome::Unfinished {
                    pipeline: new_pipeline,
                    executed_at: new_executed_at,
                    started_at: new_started_at,
                    ..
                },
            ) => {
                pipeline == new_pipeline
                    && executed_at == new_executed_at
                    && started_at == new_started_at
                    && old_record == record
            }
            _ => false,
        })
    }

    /// Takes a stored run's contribution back out, before its replacement goes in.
    fn retract_run(
        &mut self,
        old: &TaskRunHome,
        old_log: Option<usize>,
        uuid: &[u8; 16],
    ) -> Result<()> {
        let TaskRunHome::Finished {
            pipeline,
            executed_at,
        } = *old
        else {
            return Ok(()); // an unfinished run never counted
        };
        let key = run_key(pipeline, executed_at.micros(), uuid);
        let pending = old_log.and_then(|at| self.new_log[at].1.take());
        let record = match pending {
            Some(bytes) => RunRecord::decode(&bytes)?,
            // Taken out of the log with the next write-out: until then the tables stay as they
            // were, for judging to add this transaction's changes to.
            None => match self.t.run_log.get(&key)? {
                Some(bytes) => {
                    self.removed_log.push(key);
                    RunRecord::decode(bytes.value())?
                }
                None => {
                    return Err(Error::Internal(
                        "a finished task run is missing from the run log".into(),
                    ));
                }
            },
        };
        let RunRef::Id(run) = record.pipeline_run else {
            return Err(crate::store::records::corrupt("task run"));
        };
        let series = Series {
            id: record.task,
            kind: EntityKind::Task,
            pipeline,
        };
        let duration = u64::from(record.duration_ms);
        self.deltas
            .task_run(series, executed_at, record.is_successful, duration, true);
        self.last_run_work(series)
            .retract(executed_at, Uuid::from_bytes(*uuid));
        self.remove_member(
            run,
            pipeline,
            executed_at.micros(),
            record.is_successful,
            record.duration_ms,
        )
    }

    /// Adds a finished run's contribution to its task and its pipeline run.
    fn contribute(
        &mut self,
        task: &EntityKey,
        record: &RunRecord,
        executed_at: Timestamp,
        run: (RunId, PipelineRunId),
    ) -> Result<()> {
        let series = Series {
            id: task.id,
            kind: EntityKind::Task,
            pipeline: task.pipeline,
        };
        let duration = u64::from(record.duration_ms);
        self.deltas
            .task_run(series, executed_at, record.is_successful, duration, false);
        // The added run itself is offered as the task's latest at finish, from `new_log`.
        self.last_run_work(series);
        self.last_run_work(pipeline_series(task.pipeline));
        self.add_member(
            run,
            task.pipeline,
            executed_at.micros(),
            record.is_successful,
            record.duration_ms,
        )
    }
}

/// The last report of each task run in a batch, with its index in the batch, in the order of
/// those last reports; and how many earlier reports they replace. Later reports of a task run
/// replace earlier ones anyway, so only the last is applied (and a batch repeating one run
/// thousands of times costs one).
fn collapse(runs: &[TaskRun]) -> (Vec<(usize, &TaskRun)>, u64) {
    if let [only] = runs {
        return (vec![(0, only)], 0);
    }
    let mut last: HashMap<(Option<OrgId>, TaskRunId), usize> =
        HashMap::with_capacity_and_hasher(runs.len(), Default::default());
    for (index, run) in runs.iter().enumerate() {
        last.insert((run.organization, run.task_run), index);
    }
    let kept: Vec<(usize, &TaskRun)> = runs
        .iter()
        .enumerate()
        .filter(|(index, run)| last[&(run.organization, run.task_run)] == *index)
        .collect();
    let collapsed = (runs.len() - kept.len()) as u64;
    (kept, collapsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{TaskId, TaskType};

    fn report(task_run: u128, duration_ms: u32) -> TaskRun {
        TaskRun {
            task_run: TaskRunId(Uuid::from_u128(task_run)),
            pipeline_run: PipelineRunId(Uuid::from_u128(100)),
            pipeline: PipelineId(Uuid::from_u128(200)),
            task: TaskId(Uuid::from_u128(300)),
            organization: Some(OrgId(Uuid::from_u128(1))),
            task_type: TaskType::Query,
            state: RunState::Finished,
            is_successful: true,
            duration_ms,
            executed_at: Timestamp::from_micros(0),
            output: Vec::new(),
            errors: Vec::new(),
            metric_value: None,
            is_initial_task: false,
            is_final_task: false,
        }
    }

    #[test]
    fn a_batch_collapses_to_the_last_report_of_each_task_run() {
        let runs = vec![report(1, 10), report(2, 20), report(1, 11), report(1, 12)];
        let (kept, collapsed) = collapse(&runs);
        let kept: Vec<(usize, u32)> = kept.iter().map(|(i, r)| (*i, r.duration_ms)).collect();
        assert_eq!(kept, vec![(1, 20), (3, 12)]);
        assert_eq!(collapsed, 2);
        let mut other_org = report(1, 13);
        other_org.organization = Some(OrgId(Uuid::from_u128(2)));
        let runs = vec![report(1, 10), other_org];
        assert_eq!(
            collapse(&runs).0.len(),
            2,
            "task runs are namespaced per organization"
        );
    }
}
