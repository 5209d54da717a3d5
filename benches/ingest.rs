//! Durable ingest through the engine's group-committing writer, in batches of 1, 100 and
//! 10,000 task runs of the realistic workload (random v4 UUIDs, 2,000 pipelines of 50
//! organizations, arrival order with a late tail, re-reports, outputs on some tasks); every
//! batch is acknowledged only after its transaction is on disk.
//!
//! `cargo bench --bench ingest`

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use runledger::auth::Caller;
use runledger::engine::Engine;
use runledger::store::{Store, StoreOptions};
use runledger::workload::Realistic;

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
        let mut runs = Realistic::new(100_000_000).runs();
        group.throughput(Throughput::Elements(batch));
        if batch == 10_000 {
            group.sample_size(10);
        }
        group.bench_function(BenchmarkId::from_parameter(batch), |b| {
            b.iter_custom(|iterations| {
                let mut spent = Duration::ZERO;
                for _ in 0..iterations {
                    // The workload's next reports, built outside the clock.
                    let batch: Vec<_> = runs.by_ref().take(batch as usize).collect();
                    let started = Instant::now();
                    runtime
                        .block_on(engine.report(&Caller::OPERATOR, batch))
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
