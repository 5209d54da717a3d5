//! The sequential workload: a few dense pipelines, runs spread evenly over a time span in time
//! order, sequential UUIDs. Convenient (every insert is an append, any run can be computed from
//! its number) and therefore flattering: kept for comparison (`runledger generate --sequential`)
//! and for tests that want any run by number, never as a headline figure.

use uuid::Uuid;

use super::splitmix;
use crate::model::{
    OrgId, PipelineId, PipelineRunId, RunState, TaskId, TaskRun, TaskRunId, TaskType,
};
use crate::time::{MICROS_PER_SECOND, Timestamp};

/// The shape of a workload.
#[derive(Clone, Copy, Debug)]
pub struct Sequential {
    /// Task runs in all.
    pub task_runs: u64,
    /// Pipelines the runs are spread over (round robin).
    pub pipelines: u64,
    /// Tasks per pipeline: each pipeline run has this many task runs.
    pub tasks_per_pipeline: u64,
    /// The first second of the span.
    pub start: i64,
    /// The span's length in seconds.
    pub seconds: i64,
    /// Makes the UUIDs of two workloads differ.
    pub seed: u64,
}

impl Sequential {
    /// `task_runs` runs of one pipeline with four tasks, over the three years 2022 to 2024.
    pub fn three_years(task_runs: u64) -> Sequential {
        Sequential {
            task_runs,
            pipelines: 1,
            tasks_per_pipeline: 4,
            start: 1_640_995_200, // 2022-01-01 00:00:00
            seconds: 1_096 * 86_400,
            seed: 1,
        }
    }

    pub fn organization(&self) -> OrgId {
        OrgId(self.uuid(0x0000, 0))
    }

    pub fn pipeline(&self, index: u64) -> PipelineId {
        PipelineId(self.uuid(0x1000, index))
    }

    pub fn task(&self, pipeline: u64, task: u64) -> TaskId {
        TaskId(self.uuid(0x2000, pipeline * self.tasks_per_pipeline + task))
    }

    /// The `n`th task run (0-based), in time order.
    pub fn task_run(&self, n: u64) -> TaskRun {
        let pipeline_run = n / self.tasks_per_pipeline;
        let task = n % self.tasks_per_pipeline;
        let pipeline = pipeline_run % self.pipelines;
        // Spread evenly over the span, in microseconds.
        let span = self.seconds as u128 * MICROS_PER_SECOND as u128;
        let offset = (u128::from(n) * span / u128::from(self.task_runs.max(1))) as i64;
        let mix = splitmix(self.seed ^ n);
        TaskRun {
            task_run: TaskRunId(self.uuid(0x4000, n)),
            pipeline_run: PipelineRunId(self.uuid(0x3000, pipeline_run)),
            pipeline: self.pipeline(pipeline),
            task: self.task(pipeline, task),
            organization: Some(self.organization()),
            task_type: TaskType::ALL[(task % TaskType::ALL.len() as u64) as usize],
            state: RunState::Finished,
            is_successful: mix % 100 >= 3,
            duration_ms: 20 + (mix >> 8) as u32 % 5_000,
            executed_at: Timestamp::from_micros(self.start * MICROS_PER_SECOND + offset),
            output: Vec::new(),
            errors: Vec::new(),
            metric_value: None,
            is_initial_task: task == 0,
            is_final_task: task + 1 == self.tasks_per_pipeline,
        }
    }

    /// Every task run, in time order.
    pub fn task_runs(&self) -> impl Iterator<Item = TaskRun> + '_ {
        (0..self.task_runs).map(|n| self.task_run(n))
    }

    fn uuid(&self, space: u16, n: u64) -> Uuid {
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&(self.seed as u32).to_be_bytes());
        bytes[4..6].copy_from_slice(&space.to_be_bytes());
        bytes[6] = 0x40;
        bytes[8] = 0x80;
        bytes[10..].copy_from_slice(&n.to_be_bytes()[2..]);
        Uuid::from_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_in_time_order_within_the_span_and_parse_back() {
        let workload = Sequential::three_years(1_000);
        let runs: Vec<TaskRun> = workload.task_runs().collect();
        assert!(
            runs.windows(2)
                .all(|w| w[0].executed_at <= w[1].executed_at)
        );
        let last = runs.last().unwrap().executed_at.unwrap().second();
        assert!(last < workload.start + workload.seconds);
        let line = super::super::to_json_line(&runs[7]);
        assert_eq!(crate::cli::import::parse_line(&line).unwrap(), runs[7]);
    }
}
