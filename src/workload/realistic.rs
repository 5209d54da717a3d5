//! The realistic workload: what a pipeline platform with many customers reports.
//!
//! - Organizations own pipelines of one to five tasks. Pipelines' schedules follow a long tail
//!   (Zipf: the pipeline of rank r runs 1/r as often as the busiest), so at ten million runs a
//!   year the busiest runs every minute or two and most run a few times a day or less.
//! - A pipeline run executes its tasks one after another (durations log-normal around each
//!   task's own median); a failed task ends the pipeline run. About 3% of task runs fail.
//! - Task runs are reported when they end, plus a delivery delay: under two seconds for most,
//!   hours for 1%, days for 0.1%. The stream is in arrival order, so mostly in time order with
//!   a late tail. 0.5% of task runs are reported again later with another outcome.
//! - Some tasks (queries, code, GPT, API calls) report outputs, log-normal around 300 bytes.
//! - Every UUID is a random version 4 UUID (from the seed, so a workload can be replayed).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::Rng;
use crate::model::{
    OrgId, PipelineId, PipelineRunId, RunState, TaskId, TaskRun, TaskRunId, TaskType,
};
use crate::time::{MICROS_PER_SECOND, Timestamp};

const MICROS_PER_MS: i64 = 1_000;
const HOUR: i64 = 3_600 * MICROS_PER_SECOND;
const DAY: i64 = 24 * HOUR;

/// The shape of a realistic workload.
#[derive(Clone, Copy, Debug)]
pub struct Realistic {
    /// Reports in all (re-reports included).
    pub task_runs: u64,
    pub organizations: u32,
    pub pipelines: u32,
    /// The first second of the span.
    pub start: i64,
    /// The span the schedules are sized for; the last runs may end a little after it.
    pub days: u32,
    /// Whether some tasks report outputs.
    pub outputs: bool,
    pub seed: u64,
    /// The catalog's own seed when given (the same pipelines with other runs); else `seed`.
    pub catalog_seed: Option<u64>,
}

/// A pipeline of the workload's catalog.
#[derive(Clone, Debug)]
pub struct PipelineSpec {
    pub id: PipelineId,
    pub organization: OrgId,
    pub tasks: Vec<TaskSpec>,
    /// The mean time between two of its runs.
    pub interval_micros: i64,
}

/// A task of a pipeline.
#[derive(Clone, Debug)]
pub struct TaskSpec {
    pub id: TaskId,
    pub task_type: TaskType,
    /// The median duration of its runs.
    pub median_ms: f64,
    /// Whether its runs report an output.
    pub outputs: bool,
}

impl Realistic {
    /// `task_runs` reports from 2,000 pipelines of 50 organizations over 2025.
    pub fn new(task_runs: u64) -> Realistic {
        Realistic {
            task_runs,
            organizations: 50,
            pipelines: 2_000,
            start: 1_735_689_600, // 2025-01-01 00:00:00
            days: 365,
            outputs: true,
            seed: 1,
            catalog_seed: None,
        }
    }

    /// The organizations, pipelines and tasks, the busiest pipeline first.
    pub fn catalog(&self) -> Vec<PipelineSpec> {
        let mut rng = Rng::new(self.catalog_seed.unwrap_or(self.seed) ^ 0xc0ffee);
        let organizations: Vec<OrgId> = (0..self.organizations.max(1))
            .map(|_| OrgId(rng.uuid()))
            .collect();
        let mut pipelines: Vec<PipelineSpec> = (0..self.pipelines.max(1))
            .map(|_| {
                let tasks = (0..1 + rng.below(5))
                    .map(|_| {
                        let task_type =
                            TaskType::ALL[rng.below(TaskType::ALL.len() as u64) as usize];
                        TaskSpec {
                            id: TaskId(rng.uuid()),
                            task_type,
                            median_ms: rng.log_normal(2_000.0, 1.5).clamp(5.0, 3_600_000.0),
                            outputs: matches!(
                                task_type,
                                TaskType::Query
                                    | TaskType::Code
                                    | TaskType::Gpt
                                    | TaskType::ApiCall
                            ),
                        }
                    })
                    .collect();
                PipelineSpec {
                    id: PipelineId(rng.uuid()),
                    organization: organizations[rng.below(organizations.len() as u64) as usize],
                    tasks,
                    interval_micros: 0,
                }
            })
            .collect();
        // Zipf: the pipeline of rank r gets a share of the runs proportional to 1/r.
        let weight = |rank: usize| 1.0 / (rank + 1) as f64;
        let task_runs_per_unit: f64 = pipelines
            .iter()
            .enumerate()
            .map(|(rank, p)| weight(rank) * p.tasks.len() as f64)
            .sum();
        let span = f64::from(self.days.max(1)) * DAY as f64;
        for (rank, pipeline) in pipelines.iter_mut().enumerate() {
            let runs = self.task_runs as f64 * weight(rank) / task_runs_per_unit;
            pipeline.interval_micros = (span / runs.max(1e-9)).min(1e17) as i64;
        }
        pipelines
    }

    /// Every report, in arrival order.
    pub fn runs(&self) -> Runs {
        let catalog = self.catalog();
        let mut rng = Rng::new(self.seed);
        let start = self.start * MICROS_PER_SECOND;
        let upcoming = catalog
            .iter()
            .enumerate()
            .map(|(index, pipeline)| {
                let first = start + (rng.unit() * pipeline.interval_micros as f64) as i64;
                Reverse((first, index))
            })
            .collect();
        Runs {
            shape: *self,
            catalog,
            rng,
            upcoming,
            pending: BinaryHeap::new(),
            serial: 0,
            emitted: 0,
        }
    }
}

/// A report waiting for its arrival time.
struct Arriving {
    at: i64,
    serial: u64,
    run: TaskRun,
}

impl PartialEq for Arriving {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.serial) == (other.at, other.serial)
    }
}
impl Eq for Arriving {}
impl PartialOrd for Arriving {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Arriving {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.serial).cmp(&(other.at, other.serial))
    }
}

/// The reports of a [`Realistic`] workload in arrival order.
pub struct Runs {
    shape: Realistic,
    catalog: Vec<PipelineSpec>,
    rng: Rng,
    /// When each pipeline next starts a run.
    upcoming: BinaryHeap<Reverse<(i64, usize)>>,
    /// Reports made, by arrival.
    pending: BinaryHeap<Reverse<Arriving>>,
    serial: u64,
    emitted: u64,
}

impl Runs {
    fn arrive(&mut self, at: i64, run: TaskRun) {
        self.serial += 1;
        self.pending.push(Reverse(Arriving {
            at,
            serial: self.serial,
            run,
        }));
    }

    /// How long after a task run ends its report arrives.
    fn delivery_delay(&mut self) -> i64 {
        let rng = &mut self.rng;
        if rng.chance(0.001) {
            DAY + (rng.unit() * 6.0 * DAY as f64) as i64
        } else if rng.chance(0.01) {
            HOUR + (rng.unit() * 11.0 * HOUR as f64) as i64
        } else {
            50 * MICROS_PER_MS + (rng.unit() * 1_950.0 * MICROS_PER_MS as f64) as i64
        }
    }

    /// Runs pipeline `index` once from `start`: its task runs, one after another.
    fn run_pipeline(&mut self, index: usize, start: i64) {
        let pipeline = self.catalog[index].clone();
        let pipeline_run = PipelineRunId(self.rng.uuid());
        let mut ended = start;
        let last = pipeline.tasks.len() - 1;
        for (position, task) in pipeline.tasks.iter().enumerate() {
            let duration_ms = self
                .rng
                .log_normal(task.median_ms, 0.5)
                .clamp(1.0, 6.0 * 3_600_000.0) as u32;
            ended += i64::from(duration_ms) * MICROS_PER_MS + self.rng.below(1_000) as i64;
            let is_successful = !self.rng.chance(0.03);
            let output = if self.shape.outputs && task.outputs {
                let size = self.rng.log_normal(300.0, 1.0).clamp(1.0, 16_384.0) as usize;
                let mut bytes = Vec::with_capacity(size + 8);
                while bytes.len() < size {
                    bytes.extend_from_slice(&self.rng.next_u64().to_le_bytes());
                }
                bytes.truncate(size);
                bytes
            } else {
                Vec::new()
            };
            let run = TaskRun {
                task_run: TaskRunId(self.rng.uuid()),
                pipeline_run,
                pipeline: pipeline.id,
                task: task.id,
                organization: Some(pipeline.organization),
                task_type: task.task_type,
                state: RunState::Finished,
                is_successful,
                duration_ms,
                executed_at: Timestamp::from_micros(ended),
                output,
                errors: Vec::new(),
                metric_value: None,
                is_initial_task: position == 0,
                is_final_task: position == last,
            };
            let arrival = ended + self.delivery_delay();
            if self.rng.chance(0.005) {
                // Reported again later, with another outcome.
                let again = TaskRun {
                    is_successful: !run.is_successful,
                    duration_ms: run.duration_ms / 2 + 1,
                    ..run.clone()
                };
                let later =
                    arrival + MICROS_PER_SECOND * 60 + (self.rng.unit() * 6.0 * HOUR as f64) as i64;
                self.arrive(later, again);
            }
            self.arrive(arrival, run);
            if !is_successful {
                break;
            }
        }
        let jitter = 0.8 + 0.4 * self.rng.unit();
        let next = start + (pipeline.interval_micros as f64 * jitter) as i64;
        self.upcoming.push(Reverse((next, index)));
    }
}

impl Iterator for Runs {
    type Item = TaskRun;

    fn next(&mut self) -> Option<TaskRun> {
        if self.emitted == self.shape.task_runs {
            return None;
        }
        loop {
            let next_start = self.upcoming.peek().map(|Reverse((at, _))| *at);
            let next_arrival = self.pending.peek().map(|Reverse(a)| a.at);
            // A pipeline run that starts before the next report arrives may make reports that
            // arrive before it: run it first.
            let run_first = match (next_start, next_arrival) {
                (Some(start), Some(arrival)) => start <= arrival,
                (start, _) => start.is_some(),
            };
            if run_first {
                let Reverse((start, index)) = self.upcoming.pop().expect("peeked");
                if Timestamp::from_micros(start + 10 * DAY).is_some() {
                    self.run_pipeline(index, start);
                }
                // (Past the year 9999 a pipeline stops running.)
            } else if next_arrival.is_some() {
                self.emitted += 1;
                return self.pending.pop().map(|Reverse(a)| a.run);
            } else {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    #[test]
    fn the_stream_has_the_promised_shape() {
        let shape = Realistic::new(200_000);
        let runs: Vec<TaskRun> = shape.runs().collect();
        assert_eq!(runs.len(), 200_000);
        // Deterministic for a seed.
        let again: Vec<TaskRun> = shape.runs().take(1_000).collect();
        assert_eq!(&runs[..1_000], again.as_slice());

        // Random v4 UUIDs.
        assert!(runs.iter().all(|r| r.task_run.0.get_version_num() == 4));
        // Re-reports: about 0.5%, each with another outcome than the report before it.
        let mut seen: HashMap<TaskRunId, &TaskRun> = HashMap::new();
        let mut replaced = 0;
        for run in &runs {
            if let Some(first) = seen.insert(run.task_run, run) {
                replaced += 1;
                assert_ne!(first.is_successful, run.is_successful);
            }
        }
        assert!((400..1_600).contains(&replaced), "{replaced} re-reports");
        // Mostly in time order: few reports arrive after a later-executed one by an hour or more.
        let mut latest = i64::MIN;
        let mut late = 0;
        for run in &runs {
            let at = run.executed_at.unwrap().micros();
            if at + HOUR < latest {
                late += 1;
            }
            latest = latest.max(at);
        }
        assert!((200..6_000).contains(&late), "{late} late reports");
        // A long tail: the busiest pipeline has far more runs than the median one.
        let mut per_pipeline: HashMap<PipelineId, u64> = HashMap::new();
        for run in &runs {
            *per_pipeline.entry(run.pipeline).or_default() += 1;
        }
        let mut counts: Vec<u64> = per_pipeline.values().copied().collect();
        counts.sort_unstable();
        let (median, busiest) = (counts[counts.len() / 2], *counts.last().unwrap());
        assert!(
            busiest > 100 * median.max(1),
            "busiest {busiest}, median {median}"
        );
        assert!(
            per_pipeline.len() > 1_000,
            "{} pipelines ran",
            per_pipeline.len()
        );
        let organizations: HashSet<OrgId> = runs.iter().filter_map(|r| r.organization).collect();
        assert_eq!(organizations.len(), 50);
        // Some outputs, of a few hundred bytes.
        let with_output: Vec<usize> = runs
            .iter()
            .map(|r| r.output.len())
            .filter(|n| *n > 0)
            .collect();
        assert!(
            with_output.len() > runs.len() / 10,
            "{} outputs",
            with_output.len()
        );
        let mean = with_output.iter().sum::<usize>() / with_output.len();
        assert!((150..2_000).contains(&mean), "mean output {mean} bytes");
    }

    #[test]
    fn at_ten_million_a_year_the_busiest_pipeline_runs_every_minute_or_two() {
        let catalog = Realistic::new(10_000_000).catalog();
        let minutes = |p: &PipelineSpec| p.interval_micros as f64 / 60e6;
        assert!(minutes(&catalog[0]) < 3.0, "{}", minutes(&catalog[0]));
        let median = minutes(&catalog[catalog.len() / 2]);
        assert!(
            (60.0..2_880.0).contains(&median),
            "median every {median} minutes"
        );
    }
}
