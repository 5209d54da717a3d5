//! Retention under steady ingest: simulated days of runs (random v4 UUIDs, a few hundred mostly
//! sparse pipelines of a long-tailed spread, pipeline runs of a few tasks), each day followed by
//! pruning to the cut `serve --keep-runs-days` would use, for four retention periods. Once the
//! first period is pruned the file stops growing: freed pages are reused. Day answers before
//! the cut stay what they were before pruning, and `verify` stays clean.
//!
//! The default is small enough for every CI run; `RUNLEDGER_SOAK_RUNS_PER_DAY=N` (and
//! `RUNLEDGER_SOAK_DAYS=D`, the retention) make it the long variant whose figures the README
//! gives.

use runledger::auth::Caller;
use runledger::engine::{Engine, cut_for};
use runledger::model::{
    BucketCount, EntityKind, EntityRef, Fill, OrgId, PipelineId, PipelineRunId, RunState, TaskId,
    TaskRun, TaskRunId, TaskType,
};
use runledger::store::{DATABASE_FILE, Store, StoreOptions, verify::verify};
use runledger::time::{MICROS_PER_SECOND, Period, Timestamp, parse_instant};
use runledger::workload::Rng;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Pipeline {
    id: PipelineId,
    tasks: Vec<TaskId>,
    /// Relative share of the day's runs (long-tailed).
    weight: u64,
}

#[test]
fn the_file_stops_growing_under_steady_ingest_with_retention() {
    let runs_per_day = setting("RUNLEDGER_SOAK_RUNS_PER_DAY", 3_000);
    let days = setting("RUNLEDGER_SOAK_DAYS", 3) as u32;
    let periods = 4;
    let mut rng = Rng::new(7);
    let org = OrgId(rng.uuid());
    let pipelines: Vec<Pipeline> = (1..=300u64)
        .map(|rank| Pipeline {
            id: PipelineId(rng.uuid()),
            tasks: (0..1 + rng.below(4)).map(|_| TaskId(rng.uuid())).collect(),
            weight: 1_000_000 / (rank * rank).min(1_000_000) + 1,
        })
        .collect();
    let total_weight: u64 = pipelines.iter().map(|p| p.weight).sum();

    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::new(Store::open(dir.path(), StoreOptions::default()).unwrap()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let caller = Caller::operator_in(org);
    let start = parse_instant("2025-01-01 00:00:00").unwrap().second();
    let file = dir.path().join(DATABASE_FILE);
    let mut sizes = Vec::new();
    let mut day_answers_before = None;
    let (mut prune_time, mut pruned) = (std::time::Duration::ZERO, 0u64);
    let watched = EntityRef {
        kind: EntityKind::Pipeline,
        uuid: pipelines[0].id.0,
    };
    let day_answers = |engine: &Engine| {
        engine
            .aggregated_stats(
                &caller,
                watched,
                Period::Day,
                start,
                BucketCount::new(days * 2).unwrap(),
                Fill::Sparse,
            )
            .unwrap()
    };
    for day in 0..i64::from(days) * periods {
        let midnight = start + day * 86_400;
        let mut batch = Vec::with_capacity(1_000);
        let mut made = 0;
        while made < runs_per_day {
            // A pipeline run: each of the pipeline's tasks once, a few seconds apart.
            let mut pick = rng.below(total_weight);
            let pipeline = pipelines
                .iter()
                .find(|p| {
                    if pick < p.weight {
                        true
                    } else {
                        pick -= p.weight;
                        false
                    }
                })
                .unwrap();
            let run = PipelineRunId(rng.uuid());
            let at = midnight * MICROS_PER_SECOND
                + (rng.below(86_000 * MICROS_PER_SECOND as u64) as i64);
            for (i, task) in pipeline.tasks.iter().enumerate() {
                batch.push(TaskRun {
                    task_run: TaskRunId(rng.uuid()),
                    pipeline_run: run,
                    pipeline: pipeline.id,
                    task: *task,
                    organization: Some(org),
                    task_type: TaskType::Query,
                    state: RunState::Finished,
                    is_successful: rng.below(20) != 0,
                    duration_ms: (50 + rng.below(1_000) * rng.below(1_000)) as u32,
                    executed_at: Timestamp::from_micros(at + i as i64 * 3 * MICROS_PER_SECOND),
                    output: Vec::new(),
                    errors: Vec::new(),
                    metric_value: None,
                    is_initial_task: i == 0,
                    is_final_task: i + 1 == pipeline.tasks.len(),
                });
                made += 1;
            }
            if batch.len() >= 1_000 {
                runtime
                    .block_on(engine.report(&caller, std::mem::take(&mut batch)))
                    .unwrap();
            }
        }
        runtime.block_on(engine.report(&caller, batch)).unwrap();
        // The day is over: prune as `serve --keep-runs-days` would the next morning.
        let now = Timestamp::from_micros((midnight + 86_400) * MICROS_PER_SECOND).unwrap();
        let cut = cut_for(days, now);
        if day + 1 == i64::from(days) * 2 {
            day_answers_before = Some(day_answers(&engine));
        }
        let started = std::time::Instant::now();
        let summary = runtime.block_on(engine.prune(cut)).unwrap();
        prune_time += started.elapsed();
        pruned += summary.task_runs;
        if (day + 1) % i64::from(days) == 0 {
            sizes.push(std::fs::metadata(&file).unwrap().len());
        }
    }
    let report = verify(engine.store()).unwrap();
    assert!(report.is_consistent(), "{:?}", report.differences);
    // The first two periods' day answers did not change when they were pruned.
    assert_eq!(Some(day_answers(&engine)), day_answers_before);
    println!(
        "retention {days} days, {runs_per_day} task runs a day: file size after each period {sizes:?}; {} task runs kept; {pruned} pruned in {prune_time:?} ({:.0} task runs/s)",
        report.task_runs,
        pruned as f64 / prune_time.as_secs_f64().max(1e-9)
    );
    // Growth stops: the last period's file is at most 10% larger than the second's (it holds
    // the same number of days of runs, plus rollups that grow by a few records a day).
    assert!(
        sizes[3] as f64 <= sizes[1] as f64 * 1.10,
        "the file kept growing: {sizes:?}"
    );
}
