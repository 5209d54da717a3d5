//! `runledger demo`: fills a data dir with a realistic sample so a new user sees real numbers at
//! once: three organizations, six pipelines on different schedules, a year of runs ending now,
//! with failures (and a few bad weeks), drifting durations, outputs and metrics. The UUIDs are
//! fixed, so the README's examples name real pipelines.

use std::process::ExitCode;
use std::time::Instant;

use uuid::Uuid;

use super::DataDir;
use crate::auth::Caller;
use crate::model::{
    OrgId, PipelineDefinition, PipelineId, PipelineRunId, RunState, TaskDefinition, TaskId,
    TaskRun, TaskRunId, TaskType,
};
use crate::time::{MICROS_PER_SECOND, Timestamp};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub data_dir: DataDir,
}

/// A pipeline of the sample.
struct Sample {
    org: u128,
    name: &'static str,
    /// Seconds between runs.
    every: i64,
    /// Only on weekdays.
    weekdays_only: bool,
    /// Task types in order, with their typical duration in milliseconds.
    tasks: &'static [(TaskType, u32)],
    /// Chance that a task fails, in thousandths.
    failure_per_mille: u64,
}

const SAMPLES: [Sample; 6] = [
    Sample {
        org: 1,
        name: "nightly-sales-etl",
        every: 86_400,
        weekdays_only: false,
        tasks: &[
            (TaskType::Query, 42_000),
            (TaskType::Transformer, 9_000),
            (TaskType::Aggregator, 4_000),
            (TaskType::Notification, 300),
        ],
        failure_per_mille: 15,
    },
    Sample {
        org: 1,
        name: "hourly-inventory-sync",
        every: 3_600,
        weekdays_only: false,
        tasks: &[
            (TaskType::ApiCall, 1_800),
            (TaskType::Filter, 120),
            (TaskType::Merge, 450),
        ],
        failure_per_mille: 25,
    },
    Sample {
        org: 1,
        name: "fraud-scoring",
        every: 900,
        weekdays_only: false,
        tasks: &[
            (TaskType::Query, 700),
            (TaskType::Code, 350),
            (TaskType::Condition, 15),
            (TaskType::Gpt, 2_600),
        ],
        failure_per_mille: 8,
    },
    Sample {
        org: 2,
        name: "shipment-tracker",
        every: 1_800,
        weekdays_only: false,
        tasks: &[
            (TaskType::ExternalTrigger, 50),
            (TaskType::ApiCall, 2_400),
            (TaskType::Transformer, 600),
        ],
        failure_per_mille: 30,
    },
    Sample {
        org: 2,
        name: "weekly-report",
        every: 7 * 86_400,
        weekdays_only: false,
        tasks: &[
            (TaskType::Query, 120_000),
            (TaskType::Aggregator, 30_000),
            (TaskType::Gpt, 18_000),
            (TaskType::Notification, 400),
        ],
        failure_per_mille: 40,
    },
    Sample {
        org: 3,
        name: "tps-reports",
        every: 600,
        weekdays_only: true,
        tasks: &[
            (TaskType::Processor, 900),
            (TaskType::ForEach, 2_000),
            (TaskType::RunPipeline, 1_100),
        ],
        failure_per_mille: 12,
    },
];

/// The fixed UUID of the demo's organization `org`.
pub fn organization_uuid(org: u128) -> Uuid {
    fixed_uuid(0x0000, org)
}

/// The fixed UUID of the demo's pipeline number `index` (0 = nightly-sales-etl).
pub fn pipeline_uuid(index: usize) -> Uuid {
    fixed_uuid(0x1000, index as u128)
}

/// The fixed UUID of task `task` of pipeline `index`.
pub fn task_uuid(index: usize, task: usize) -> Uuid {
    fixed_uuid(0x2000 + index as u128, task as u128)
}

/// `deadbeef-SSSS-4000-8000-NNNNNNNNNNNN`: a valid version-4 UUID naming number `n` of a space.
fn fixed_uuid(space: u128, n: u128) -> Uuid {
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&0xdead_beef_u32.to_be_bytes());
    bytes[4..6].copy_from_slice(&(space as u16).to_be_bytes());
    bytes[6] = 0x40;
    bytes[8] = 0x80;
    bytes[10..].copy_from_slice(&(n as u64).to_be_bytes()[2..]);
    Uuid::from_bytes(bytes)
}

pub fn run(args: DemoArgs) -> Result<ExitCode, String> {
    let engine = args.data_dir.engine()?;
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| e.to_string())?;
    let end = Timestamp::now().second() / 3_600 * 3_600;
    let mut total = 0u64;
    for (index, sample) in SAMPLES.iter().enumerate() {
        runtime
            .block_on(engine.register_pipeline(&Caller::OPERATOR, definition(index, sample)))
            .map_err(|e| format!("cannot register {}: {e}", sample.name))?;
        let runs = generate(index, sample, end);
        total += runs.len() as u64;
        for chunk in runs.chunks(50_000) {
            for outcome in engine
                .import_now(chunk.to_vec())
                .map_err(|e| e.to_string())?
            {
                outcome.map_err(|e| format!("demo run rejected: {e}"))?;
            }
        }
        println!(
            "{:<22} pipeline {}  (organization {})",
            sample.name,
            pipeline_uuid(index),
            organization_uuid(sample.org)
        );
    }
    super::client::first_client(&engine, Some(OrgId(organization_uuid(1))))?;
    println!(
        "demo: {total} task runs of 6 pipelines over the last 365 days written to {} in {:.1} s",
        engine.store().path().display(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn definition(index: usize, sample: &Sample) -> PipelineDefinition {
    PipelineDefinition {
        pipeline: PipelineId(pipeline_uuid(index)),
        organization: Some(OrgId(organization_uuid(sample.org))),
        name: sample.name.to_string(),
        tasks: sample
            .tasks
            .iter()
            .enumerate()
            .map(|(task, (task_type, _))| TaskDefinition {
                task: TaskId(task_uuid(index, task)),
                task_type: *task_type,
                name: format!("{}-{}", task_type.as_str(), task + 1),
                is_initial: task == 0,
            })
            .collect(),
    }
}

/// A year of runs of one pipeline ending at `end`: each run executes its tasks in order and
/// stops at the first failure.
fn generate(index: usize, sample: &Sample, end: i64) -> Vec<TaskRun> {
    // Deterministic: the demo is the same every time.
    let mut rng = crate::workload::Rng::new(index as u64 + 1);
    let start = end - 365 * 86_400;
    let org = OrgId(organization_uuid(sample.org));
    let mut runs = Vec::new();
    let mut at = start - start.rem_euclid(sample.every) + sample.every;
    let mut number = 0u128;
    while at < end {
        let day = at.div_euclid(86_400);
        let weekday = (day + 3).rem_euclid(7); // Monday = 0
        if sample.weekdays_only && weekday >= 5 {
            at += sample.every;
            continue;
        }
        number += 1;
        // Durations drift up over the year; one week in ten is a bad week.
        let progress = (at - start) as f64 / (end - start) as f64;
        let bad_week = rng.next_u64() % 10 == 0 && (day / 7) % 10 == index as i64 % 10;
        let pipeline_run = PipelineRunId(fixed_uuid(0x3000 + index as u128, number));
        let mut clock = at * MICROS_PER_SECOND;
        for (task, (task_type, typical)) in sample.tasks.iter().enumerate() {
            let jitter = 0.6 + (rng.next_u64() % 800) as f64 / 1_000.0;
            let duration = (f64::from(*typical) * jitter * (1.0 + 0.3 * progress)) as u32;
            clock += i64::from(duration) * 1_000;
            let failure = if bad_week {
                sample.failure_per_mille * 6
            } else {
                sample.failure_per_mille
            };
            let ok = rng.next_u64() % 1_000 >= failure;
            let output = match task_type {
                TaskType::Query => format!(r#"{{"rows":{}}}"#, rng.next_u64() % 5_000).into_bytes(),
                TaskType::Notification => b"sent".to_vec(),
                _ => Vec::new(),
            };
            runs.push(TaskRun {
                task_run: TaskRunId(fixed_uuid(
                    0x4000 + index as u128,
                    number * 16 + task as u128,
                )),
                pipeline_run,
                pipeline: PipelineId(pipeline_uuid(index)),
                task: TaskId(task_uuid(index, task)),
                organization: Some(org),
                task_type: *task_type,
                state: RunState::Finished,
                is_successful: ok,
                duration_ms: duration,
                executed_at: Timestamp::from_micros(clock),
                output,
                errors: Vec::new(),
                metric_value: (*task_type == TaskType::Aggregator)
                    .then(|| (rng.next_u64() % 100_000) as f64 / 100.0),
                is_initial_task: task == 0,
                is_final_task: task + 1 == sample.tasks.len(),
            });
            if !ok {
                break;
            }
        }
        at += sample.every;
    }
    runs
}
