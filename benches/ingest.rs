//! Durable ingest through the engine's group-committing writer, in batches of 1, 100 and
//! 10,000 task runs; every batch is acknowledged only after its transaction is on disk.
//!
//! `cargo bench --bench ingest`

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use runledger::auth::Caller;
use runledger::engine::Engine;
use runledger::store::{Store, StoreOptions};
use runledger::workload::Sequential as Workload;

fn ingest(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_time()
        .worker_threads(1)
        .build()
        .unwrap();
    let mut group = c.benchmark_group("ingest_durable");
    for batch in [1u64, 100, 10_000] {
        let dir = tempfile::tempdir().unwrap();
        let engine =
            Engine::new(Store::open(dir.path(), StoreOptions::default()).unwrap()).unwrap();
        let workload = Workload::three_years(100_000_000);
        let mut next = 0u64;
        group.throughput(Throughput::Elements(batch));
        if batch == 10_000 {
            group.sample_size(10);
        }
        group.bench_function(BenchmarkId::from_parameter(batch), |b| {
            b.iter_custom(|iterations| {
                let mut spent = Duration::ZERO;
                for _ in 0..iterations {
                    // Fresh runs every batch: inserts, not replacements. Built outside the clock.
                    let runs: Vec<_> = (next..next + batch).map(|n| workload.task_run(n)).collect();
                    next += batch;
                    let started = Instant::now();
                    runtime
                        .block_on(engine.report(&Caller::OPERATOR, runs))
                        .unwrap();
                    spent += started.elapsed();
                }
                spent
            })
        });
    }
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
