//! Stats queries on the realistic datasets of 10k and 1M (and, with `RUNLEDGER_BENCH_10M=1`,
//! 10M) reports over 2025 (see `support.rs`), for the busiest pipeline (dense) and the median
//! one (sparse), each beside a naive scan of the raw runs that computes the same answer, so the
//! speed-up of the rollups shows in the same report.
//!
//! `cargo bench --bench queries`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use runledger::engine::Engine;
use runledger::model::{BucketCount, Fill, Tally, TimeRange};
use runledger::time::{Period, parse_instant};

mod support;

use support::Subject;

fn second(text: &str) -> i64 {
    parse_instant(text).unwrap().second()
}

/// The first task's tally in a range by reading every raw run of its pipeline in the range.
fn naive_task_tally(engine: &Engine, subject: &Subject, range: TimeRange) -> Tally {
    let task = subject.spec.tasks[0].id;
    let mut tally = Tally::default();
    let mut after = None;
    loop {
        let page = engine
            .logs(&subject.caller, subject.spec.id, range, after, 1_000)
            .unwrap();
        for entry in &page.entries {
            if entry.task == task {
                tally = tally + Tally::of_run(entry.is_successful, u64::from(entry.duration_ms));
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return tally,
        }
    }
}

fn queries(c: &mut Criterion) {
    // Edges at odd seconds, so that both ends need finer than a day.
    let range =
        TimeRange::new(second("2025-01-03 05:06:07"), second("2025-12-29 17:43:21")).unwrap();
    for size in support::sizes() {
        let (engine, workload) = support::dataset(size);
        for subject in support::subjects(&workload) {
            let label = |what: &str| BenchmarkId::new(format!("{}_{what}", subject.label), size);
            let (caller, task, pipeline) = (&subject.caller, subject.task(), subject.pipeline());

            // The rollups and the scan must agree before their speeds are compared.
            let from_rollups = engine.stats(caller, task, range).unwrap().tally;
            assert_eq!(from_rollups, naive_task_tally(&engine, &subject, range));
            assert!(from_rollups.runs() > 0, "{} has runs", subject.label);

            let mut group = c.benchmark_group("range_stats");
            group.bench_function(label("task"), |b| {
                b.iter(|| engine.stats(caller, black_box(task), range).unwrap())
            });
            group.bench_function(label("pipeline"), |b| {
                b.iter(|| engine.stats(caller, black_box(pipeline), range).unwrap())
            });
            if size <= 1_000_000 || std::env::var("RUNLEDGER_BENCH_NAIVE").is_ok() {
                group.sample_size(10);
                group.bench_function(label("task_naive_scan"), |b| {
                    b.iter(|| naive_task_tally(&engine, &subject, black_box(range)))
                });
            }
            group.finish();

            let mut group = c.benchmark_group("aggregated_stats");
            let months = BucketCount::new(12).unwrap();
            let days = BucketCount::new(365).unwrap();
            let year = second("2025-01-01 00:00:00");
            group.bench_function(label("pipeline_month_x12"), |b| {
                b.iter(|| {
                    engine
                        .aggregated_stats(
                            caller,
                            black_box(pipeline),
                            Period::Month,
                            year,
                            months,
                            Fill::Sparse,
                        )
                        .unwrap()
                })
            });
            group.bench_function(label("pipeline_day_x365"), |b| {
                b.iter(|| {
                    engine
                        .aggregated_stats(
                            caller,
                            black_box(pipeline),
                            Period::Day,
                            year,
                            days,
                            Fill::Sparse,
                        )
                        .unwrap()
                })
            });
            group.finish();

            let mut group = c.benchmark_group("last_run");
            group.bench_function(label("pipeline"), |b| {
                b.iter(|| engine.last_run(caller, black_box(pipeline)).unwrap())
            });
            group.finish();

            let mut group = c.benchmark_group("logs_page_100");
            group.bench_function(label("pipeline"), |b| {
                b.iter(|| {
                    engine
                        .logs(caller, subject.spec.id, black_box(range), None, 100)
                        .unwrap()
                })
            });
            group.finish();
        }
    }
}

criterion_group!(benches, queries);
criterion_main!(benches);
