//! The order a chunk of an import is written in: grouped by organization, pipeline and task,
//! each task's runs in time order, so that the writer's B-tree descents and record updates
//! follow each other closely whatever order the file is in (a file in task-run UUID order, as
//! the platform's export is, is random in time). Only writes whose outcome cannot depend on
//! their order are moved: the reports of one task run keep their order (the last wins), and a
//! chunk where the order decides an outcome (a task or a pipeline run reported with two
//! pipelines, a UUID used as a pipeline and as a task) is written as the file has it.

use rustc_hash::{FxHashMap, FxHashSet};

use crate::model::{OrgId, PipelineId, PipelineRunId, TaskId, TaskRun, TaskRunId};
use crate::store::WriteOp;
use crate::time::Timestamp;

/// Where a run goes in the write order.
type Key = (Option<OrgId>, PipelineId, TaskId, Option<Timestamp>);

/// Reorders `lines` (a line's number and its prepared write, or why it has none) into the
/// write order, when that changes no outcome; lines without a write go first.
pub fn arrange<E>(lines: &mut Vec<(u64, Result<WriteOp, E>)>) {
    if let Some(keys) = keys(lines) {
        // Sorted by key, then by position: equal keys (the reports of one task run) keep the
        // file's order. The lines themselves are large: they move once, into their place.
        let mut order: Vec<(Option<Key>, u32)> = keys.into_iter().zip(0u32..).collect();
        order.sort_unstable();
        let mut slots: Vec<Option<(u64, Result<WriteOp, E>)>> = lines.drain(..).map(Some).collect();
        lines.extend(
            order
                .into_iter()
                .map(|(_, at)| slots[at as usize].take().expect("each line is placed once")),
        );
    }
}

/// The run of a prepared import write.
fn run_of<E>(line: &(u64, Result<WriteOp, E>)) -> Option<&TaskRun> {
    match &line.1 {
        Ok(WriteOp::Report { runs, .. }) if runs.len() == 1 => runs.first(),
        _ => None,
    }
}

/// Each line's key, or `None` when some outcome could depend on the order.
fn keys<E>(lines: &[(u64, Result<WriteOp, E>)]) -> Option<Vec<Option<Key>>> {
    let mut task_runs: FxHashMap<(Option<OrgId>, TaskRunId), (Key, PipelineRunId)> =
        FxHashMap::default();
    let mut tasks: FxHashMap<(Option<OrgId>, TaskId), PipelineId> = FxHashMap::default();
    let mut pipeline_runs: FxHashMap<(Option<OrgId>, PipelineRunId), PipelineId> =
        FxHashMap::default();
    let mut pipelines: FxHashSet<(Option<OrgId>, uuid::Uuid)> = FxHashSet::default();
    let mut keys = Vec::with_capacity(lines.len());
    for line in lines {
        let Some(run) = run_of(line) else {
            if line.1.is_ok() {
                return None; // not a one-run import write: leave the chunk as it is
            }
            keys.push(None);
            continue;
        };
        let org = run.organization;
        let own: Key = (org, run.pipeline, run.task, run.executed_at);
        let (key, pipeline_run) = *task_runs
            .entry((org, run.task_run))
            .or_insert((own, run.pipeline_run));
        let same = |a: Key, b: Key| a.0 == b.0 && a.1 == b.1 && a.2 == b.2;
        if !same(key, own) || pipeline_run != run.pipeline_run {
            return None;
        }
        if *tasks.entry((org, run.task)).or_insert(run.pipeline) != run.pipeline
            || *pipeline_runs
                .entry((org, run.pipeline_run))
                .or_insert(run.pipeline)
                != run.pipeline
        {
            return None;
        }
        pipelines.insert((org, run.pipeline.0));
        keys.push(Some(key));
    }
    let crossed = tasks
        .keys()
        .any(|(org, task)| pipelines.contains(&(*org, task.0)));
    (!crossed).then_some(keys)
}
