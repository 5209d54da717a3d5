//! Bench datasets: the realistic workload (random v4 UUIDs, 2,000 pipelines of 50 organizations
//! with a long-tailed spread of schedules, arrival in time order with a late tail, re-reports;
//! no outputs) of N reports over 2025, built once into `target/bench-data/` (one folder per size
//! and file format) and reused by later runs (delete the folder to rebuild). Queries are asked of
//! the busiest pipeline (dense) and of the median one (sparse).

#![allow(dead_code)]

use std::path::PathBuf;

use runledger::auth::Caller;
use runledger::engine::Engine;
use runledger::model::{EntityKind, EntityRef};
use runledger::store::{Store, StoreOptions};
use runledger::workload::{PipelineSpec, Realistic};

/// The sizes benchmarked: 10k and 1M always, 10M with `RUNLEDGER_BENCH_10M=1`, or exactly
/// those of `RUNLEDGER_BENCH_SIZES=a,b`.
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

/// The workload of a dataset of `size` reports.
pub fn workload(size: u64) -> Realistic {
    Realistic {
        outputs: false,
        ..Realistic::new(size)
    }
}

/// A pipeline of the dataset, with what it takes to ask about it.
pub struct Subject {
    pub label: &'static str,
    pub spec: PipelineSpec,
    pub caller: Caller,
}

impl Subject {
    pub fn pipeline(&self) -> EntityRef {
        EntityRef {
            kind: EntityKind::Pipeline,
            uuid: self.spec.id.0,
        }
    }

    pub fn task(&self) -> EntityRef {
        EntityRef {
            kind: EntityKind::Task,
            uuid: self.spec.tasks[0].id.0,
        }
    }
}

/// The busiest pipeline and the median one.
pub fn subjects(workload: &Realistic) -> [Subject; 2] {
    let catalog = workload.catalog();
    let subject = |label, spec: &PipelineSpec| Subject {
        label,
        caller: Caller::operator_in(spec.organization),
        spec: spec.clone(),
    };
    [
        subject("dense", &catalog[0]),
        subject("sparse", &catalog[catalog.len() / 2]),
    ]
}

/// The engine over the dataset of `size` reports, building it first if needed.
pub fn dataset(size: u64) -> (Engine, Realistic) {
    let name = format!("realistic-{size}");
    dataset_of(workload(size), &name)
}

/// The dataset of `size` reports whose 2,000 pipelines belong to `organizations`
/// organizations (2: 1,000 pipelines each), for questions about a whole organization.
pub fn dataset_with_organizations(size: u64, organizations: u32) -> (Engine, Realistic) {
    let workload = Realistic {
        organizations,
        ..workload(size)
    };
    let name = format!("realistic-{size}-{organizations}-organizations");
    dataset_of(workload, &name)
}

fn dataset_of(workload: Realistic, name: &str) -> (Engine, Realistic) {
    let size = workload.task_runs;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/bench-data")
        .join(format!(
            "{name}-format-{}",
            runledger::store::tables::FORMAT_VERSION
        ));
    let complete = dir.join("complete");
    let options = StoreOptions {
        cache_bytes: 256 << 20,
        ..StoreOptions::default()
    };
    if !complete.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        eprintln!(
            "building the {size}-run dataset in {} (once)",
            dir.display()
        );
        let engine = Engine::new(Store::open(&dir, options).unwrap()).unwrap();
        let started = std::time::Instant::now();
        let mut batch = Vec::with_capacity(200_000);
        for run in workload.runs() {
            batch.push(run);
            if batch.len() == 200_000 {
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
    let engine = Engine::new(Store::open(&dir, options).unwrap()).unwrap();
    (engine, workload)
}
