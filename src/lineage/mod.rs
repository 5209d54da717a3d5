//! OpenLineage ingest: run events from any OpenLineage emitter (Airflow, Spark, dbt, Flink, ...)
//! read ([`event`]), resolved to runledger's pipelines, tasks and runs ([`Observed`]), and folded
//! into what runledger knows of each run ([`state`]), in the writer, so that events arriving out
//! of order or twice end in the same task runs as one clean delivery.
//!
//! The mapping (`CONTRACT.md`, "OpenLineage ingest"): a run's pipeline is the job of its
//! `parent.root` facet, else of its `parent`, else its own job; a run with a parent is a task run
//! of its own job in the root's (else the parent's) pipeline run; a run without a parent named as
//! the parent or root of other runs is that pipeline run and adds no task run; a run with neither
//! is a task run of a one-task pipeline. Job UUIDs are derived from their names (uuid5), so a user
//! can compute them.

pub mod event;
pub mod state;

use uuid::Uuid;

pub use event::{EventType, Job, MAX_EVENT_BYTES, Parsed, Refusal, RunEvent, parse};
pub use state::{Derived, LineageRun};

use crate::model::{PipelineId, PipelineRunId, TaskId, TaskType};
use crate::time::Timestamp;

/// The UUID of the pipeline a job names: `uuid5(NAMESPACE_URL, "openlineage:pipeline:" +
/// namespace + "/" + name)`.
pub fn pipeline_uuid(job: &Job) -> PipelineId {
    PipelineId(derived("pipeline", job))
}

/// The UUID of the task a job names: `uuid5(NAMESPACE_URL, "openlineage:task:" + namespace +
/// "/" + name)`.
pub fn task_uuid(job: &Job) -> TaskId {
    TaskId(derived("task", job))
}

fn derived(kind: &str, job: &Job) -> Uuid {
    let name = format!("openlineage:{kind}:{}/{}", job.namespace, job.name);
    Uuid::new_v5(&Uuid::NAMESPACE_URL, name.as_bytes())
}

/// The task type of a job: `query` for a job whose `jobType` facet says QUERY, else
/// `processor`.
pub fn task_type(job_type: Option<&str>) -> TaskType {
    match job_type {
        Some(kind) if kind.eq_ignore_ascii_case("query") => TaskType::Query,
        _ => TaskType::Processor,
    }
}

/// One run event in runledger's terms, as the writer applies it: everything derived (UUIDs,
/// names, the sealed output) is decided before, so every node of a cluster applies the same.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub run: Uuid,
    pub event_type: EventType,
    pub event_time: Timestamp,
    pub pipeline: PipelineId,
    pub pipeline_name: String,
    pub task: TaskId,
    pub task_name: String,
    pub task_type: TaskType,
    /// The root's runId, else the parent's, else the run's own.
    pub pipeline_run: PipelineRunId,
    pub has_parent: bool,
    /// The runs this event names as its parent and root (not the run itself), each with the
    /// pipeline it would be a run of.
    pub parents: Vec<Uuid>,
    pub error: Option<String>,
    /// The output datasets as a JSON array of `namespace/name`, sealed; empty when the event
    /// names none or is not terminal.
    pub output: Vec<u8>,
}

impl Observed {
    /// Resolves an event. `seal` seals the output (plain JSON) under the run's UUID.
    pub fn resolve(event: &RunEvent, seal: impl FnOnce(&[u8]) -> Vec<u8>) -> Observed {
        let (pipeline_job, pipeline_run) = match event.pipeline_run() {
            Some(of) => (&of.job, of.run),
            None => (&event.job, event.run),
        };
        let mut parents = Vec::new();
        for of in [event.parent.as_ref(), event.root.as_ref()]
            .into_iter()
            .flatten()
        {
            if of.run != event.run && !parents.contains(&of.run) {
                parents.push(of.run);
            }
        }
        let output = if event.event_type.is_terminal() && !event.outputs.is_empty() {
            seal(
                serde_json::to_string(&event.outputs)
                    .expect("strings serialize")
                    .as_bytes(),
            )
        } else {
            Vec::new()
        };
        Observed {
            run: event.run,
            event_type: event.event_type,
            event_time: event.event_time,
            pipeline: pipeline_uuid(pipeline_job),
            pipeline_name: pipeline_job.name.clone(),
            task: task_uuid(&event.job),
            task_name: event.job.name.clone(),
            task_type: task_type(event.job_type.as_deref()),
            pipeline_run: PipelineRunId(pipeline_run),
            has_parent: event.parent.is_some(),
            parents,
            error: event
                .error_message
                .clone()
                .filter(|_| event.event_type.is_terminal()),
            output,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_uuids_are_the_documented_uuid5s() {
        let job = Job {
            namespace: "airflow".into(),
            name: "etl_daily".into(),
        };
        // Python: uuid.uuid5(uuid.NAMESPACE_URL, "openlineage:pipeline:airflow/etl_daily")
        assert_eq!(
            pipeline_uuid(&job).0.to_string(),
            "53206efd-1377-5d41-9b92-af79d5a4239e"
        );
        assert_eq!(
            task_uuid(&job).0.to_string(),
            "860b5e65-7fec-53f7-a685-c1616196659c"
        );
        assert_eq!(pipeline_uuid(&job).0.get_version_num(), 5);
        assert_ne!(pipeline_uuid(&job).0, task_uuid(&job).0);
    }
}
