//! Stats queries at 10k, 1M (and, with `RUNLEDGER_BENCH_10M=1`, 10M) runs of one pipeline over
//! three years, each beside a naive scan of the raw runs that computes the same answer, so the
//! speed-up of the rollups shows in the same report.
//!
//! `cargo bench --bench queries`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use runledger::auth::Caller;
use runledger::engine::Engine;
use runledger::model::{BucketCount, EntityKind, EntityRef, Tally, TimeRange};
use runledger::store::tables::{RUN_LOG, run_key_bounds};
use runledger::time::{MICROS_PER_SECOND, Period, parse_instant};
use runledger::workload::Sequential as Workload;

mod support;

fn second(text: &str) -> i64 {
    parse_instant(text).unwrap().second()
}

/// The task's tally in a range by reading every raw run of its pipeline in the range.
fn naive_task_tally(engine: &Engine, workload: &Workload, from: i64, to: i64) -> Tally {
    let reader = engine.store().reader().unwrap();
    let pipeline = reader
        .entity(workload.organization(), workload.pipeline(0).0)
        .unwrap()
        .unwrap();
    let task = reader
        .entity(workload.organization(), workload.task(0, 0).0)
        .unwrap()
        .unwrap();
    let log = reader.table(RUN_LOG).unwrap();
    let (low, high) = run_key_bounds(
        pipeline.id,
        from * MICROS_PER_SECOND,
        (to + 1) * MICROS_PER_SECOND,
    );
    let mut tally = Tally::default();
    for entry in log.range::<&[u8; 28]>(&low..&high).unwrap() {
        let (_, value) = entry.unwrap();
        let bytes = value.value();
        // The record's task id and flags, decoded by hand as a scan would.
        if u32::from_be_bytes(bytes[..4].try_into().unwrap()) == task.id.0 {
            let ok = bytes[21] & 1 != 0;
            let mut duration = 0u64;
            for (shift, byte) in bytes[22..].iter().enumerate() {
                duration |= u64::from(byte & 0x7f) << (7 * shift);
                if byte & 0x80 == 0 {
                    break;
                }
            }
            tally = tally + Tally::of_run(ok, duration);
        }
    }
    tally
}

fn queries(c: &mut Criterion) {
    let from = second("2022-01-03 05:06:07");
    let to = second("2024-12-29 17:43:21");
    let range = TimeRange::new(from, to).unwrap();
    for size in support::sizes() {
        let (engine, workload) = support::dataset(size);
        let caller = Caller::operator_in(workload.organization());
        let task = EntityRef {
            kind: EntityKind::Task,
            uuid: workload.task(0, 0).0,
        };
        let pipeline = EntityRef {
            kind: EntityKind::Pipeline,
            uuid: workload.pipeline(0).0,
        };

        // The rollups and the scan must agree before their speeds are compared.
        let from_rollups = engine.stats(&caller, task, range).unwrap().tally;
        assert_eq!(from_rollups, naive_task_tally(&engine, &workload, from, to));
        assert!(from_rollups.runs() > 0);

        let mut group = c.benchmark_group("range_stats_3y");
        group.bench_function(BenchmarkId::new("task", size), |b| {
            b.iter(|| engine.stats(&caller, black_box(task), range).unwrap())
        });
        group.bench_function(BenchmarkId::new("pipeline", size), |b| {
            b.iter(|| engine.stats(&caller, black_box(pipeline), range).unwrap())
        });
        if size <= 1_000_000 || std::env::var("RUNLEDGER_BENCH_NAIVE").is_ok() {
            group.sample_size(10);
            group.bench_function(BenchmarkId::new("task_naive_scan", size), |b| {
                b.iter(|| naive_task_tally(&engine, &workload, black_box(from), to))
            });
        }
        group.finish();

        let mut group = c.benchmark_group("aggregated_stats");
        let months = BucketCount::new(12).unwrap();
        let days = BucketCount::new(365).unwrap();
        let year = second("2023-01-01 00:00:00");
        group.bench_function(BenchmarkId::new("pipeline_month_x12", size), |b| {
            b.iter(|| {
                engine
                    .aggregated_stats(&caller, black_box(pipeline), Period::Month, year, months)
                    .unwrap()
            })
        });
        group.bench_function(BenchmarkId::new("pipeline_day_x365", size), |b| {
            b.iter(|| {
                engine
                    .aggregated_stats(&caller, black_box(pipeline), Period::Day, year, days)
                    .unwrap()
            })
        });
        group.finish();

        let mut group = c.benchmark_group("last_run");
        group.bench_function(BenchmarkId::new("pipeline", size), |b| {
            b.iter(|| engine.last_run(&caller, black_box(pipeline)).unwrap())
        });
        group.finish();

        let mut group = c.benchmark_group("logs_page_100");
        group.bench_function(BenchmarkId::new("pipeline", size), |b| {
            b.iter(|| {
                engine
                    .logs(&caller, workload.pipeline(0), black_box(range), None, 100)
                    .unwrap()
            })
        });
        group.finish();
    }
}

criterion_group!(benches, queries);
criterion_main!(benches);
