//! Bench datasets: a three-year workload of N task runs of one pipeline, built once into
//! `target/bench-data/` (one folder per size and file format) and reused by later runs (delete
//! the folder to rebuild).

#![allow(dead_code)]

use std::path::PathBuf;

use runledger::engine::Engine;
use runledger::store::{Store, StoreOptions};
use runledger::workload::Sequential as Workload;

/// The sizes benchmarked: 10k and 1M always, 10M with `RUNLEDGER_BENCH_10M=1`.
pub fn sizes() -> Vec<u64> {
    let mut sizes = vec![10_000, 1_000_000];
    if std::env::var("RUNLEDGER_BENCH_10M").is_ok_and(|v| v == "1") {
        sizes.push(10_000_000);
    }
    if let Ok(only) = std::env::var("RUNLEDGER_BENCH_SIZES") {
        sizes = only
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect();
    }
    sizes
}

/// The engine over the dataset of `size` runs, building it first if needed.
pub fn dataset(size: u64) -> (Engine, Workload) {
    let workload = Workload::three_years(size);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/bench-data")
        .join(format!(
            "three-years-{size}-format-{}",
            runledger::store::tables::FORMAT_VERSION
        ));
    let complete = dir.join("complete");
    if !complete.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        eprintln!(
            "building the {size}-run dataset in {} (once)",
            dir.display()
        );
        let engine = Engine::new(Store::open(&dir, StoreOptions::default()).unwrap()).unwrap();
        let started = std::time::Instant::now();
        let mut batch = Vec::with_capacity(50_000);
        for run in workload.task_runs() {
            batch.push(run);
            if batch.len() == 50_000 {
                for outcome in engine.import_now(std::mem::take(&mut batch)).unwrap() {
                    outcome.unwrap();
                }
            }
        }
        for outcome in engine.import_now(batch).unwrap() {
            outcome.unwrap();
        }
        eprintln!("built in {:.1} s", started.elapsed().as_secs_f64());
        drop(engine);
        std::fs::write(&complete, b"").unwrap();
    }
    let engine = Engine::new(Store::open(&dir, StoreOptions::default()).unwrap()).unwrap();
    (engine, workload)
}
