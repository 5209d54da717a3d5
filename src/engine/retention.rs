//! Retention: pruning runs older than a cut in small steps through the writer, so that reads
//! and writes keep flowing between them (each step is a transaction of its own).

use super::{Engine, unexpected};
use crate::error::Result;
use crate::store::{PruneProgress, WriteOp, WriteOutcome};
use crate::time::{Level, Timestamp};

/// Task runs deleted per step (per transaction).
pub const PRUNE_STEP: usize = 20_000;

/// What pruning to a cut did, summed over its steps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneSummary {
    pub cut: i64,
    pub steps: u64,
    pub task_runs: u64,
    pub pipeline_runs: u64,
    pub months_materialized: u64,
    pub records: u64,
}

impl PruneSummary {
    pub fn add(&mut self, step: &PruneProgress) {
        self.cut = step.cut;
        self.steps += 1;
        self.task_runs += step.task_runs;
        self.pipeline_runs += step.pipeline_runs;
        self.months_materialized += step.months_materialized;
        self.records += step.records;
    }
}

/// The cut that keeps `days` whole days before today (UTC) and today: the midnight `days` days
/// before today's.
pub fn cut_for(days: u32, now: Timestamp) -> i64 {
    Level::Day.bucket_start(now.second()) - i64::from(days) * 86_400
}

impl Engine {
    /// Prunes everything executed before `before` (a UTC midnight), step by step.
    pub async fn prune(&self, before: i64) -> Result<PruneSummary> {
        let mut summary = PruneSummary::default();
        loop {
            let op = WriteOp::Prune {
                before,
                limit: PRUNE_STEP,
            };
            match self.write(op).await? {
                WriteOutcome::Pruned(step) => {
                    summary.add(&step);
                    if step.done {
                        return Ok(summary);
                    }
                }
                other => return Err(unexpected(other)),
            }
        }
    }
}
