//! What alert rules add to the cost of ingest, in the writer alone: the realistic workload
//! (random v4 UUIDs, 2,000 mostly sparse pipelines of 50 organizations, arrival order with a
//! late tail, re-reports) applied in commits of four reports of 1,000 task runs each, as the
//! writer groups a busy server's report streams, after 200,000 task runs of history:
//!
//! - `none`: no rules;
//! - `each`: 1,000 rules, one on each of 1,000 pipelines (every other one by rank, busy and
//!   sparse alike): `failed` 1, `failure_rate` over 24 h above 0.2, `slow` 2 x p95 over 7 d,
//!   in turn;
//! - `all`: as `each`, plus in every organization a `failed`, a `failure_rate` and a `slow`
//!   rule on all its pipelines (150 rules that cover every pipeline).
//!
//! `cargo bench --bench alert_rules`; `RUNLEDGER_REPORTS_PER_COMMIT=40 cargo bench --bench
//! alert_rules` for the larger commits of a saturated server (its writer groups up to 50,000
//! task runs).

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use runledger::alerts::{Rule, StoredRule};
use runledger::model::{OrgId, PipelineId, TaskRun};
use runledger::store::{Store, StoreOptions, WriteOp};
use runledger::time::Timestamp;
use runledger::workload::Realistic;
use uuid::Uuid;

/// The server's allocator (see `src/main.rs`), so that the writer costs what it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Task runs in one report, and reports in one commit (unless `RUNLEDGER_REPORTS_PER_COMMIT`
/// says otherwise).
const REPORT: usize = 1_000;
const REPORTS_PER_COMMIT: usize = 4;

fn reports_per_commit() -> usize {
    std::env::var("RUNLEDGER_REPORTS_PER_COMMIT")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(REPORTS_PER_COMMIT)
}
/// Task runs applied before the clock starts.
const HISTORY: usize = 200_000;

fn rule(kind_at: usize, pipeline: Option<PipelineId>) -> Rule {
    let (kind, params) = match kind_at % 3 {
        0 => ("failed", serde_json::json!({"consecutive": 1})),
        1 => (
            "failure_rate",
            serde_json::json!({"window": "24h", "above": 0.2, "min_runs": 3}),
        ),
        _ => (
            "slow",
            serde_json::json!({"factor": 2, "percentile": 95, "window": "7d"}),
        ),
    };
    Rule::parse(&serde_json::json!({
        "name": format!("{kind} rule"),
        "pipeline_uuid": pipeline.map(|p| p.0.to_string()),
        "kind": kind,
        "params": params,
        "webhook": {"url": "https://hooks.example.com/runledger", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
    }))
    .expect("a valid rule")
}

/// The rules of a shape, as writes.
fn rules(shape: &str, workload: &Realistic) -> Vec<WriteOp> {
    let catalog = workload.catalog();
    let mut made: Vec<(OrgId, Rule)> = Vec::new();
    if shape == "none" {
        return Vec::new();
    }
    for (n, pipeline) in catalog.iter().step_by(2).take(1_000).enumerate() {
        made.push((pipeline.organization, rule(n, Some(pipeline.id))));
    }
    if shape == "all" {
        let mut orgs: Vec<OrgId> = catalog.iter().map(|p| p.organization).collect();
        orgs.sort_by_key(|org| org.0);
        orgs.dedup();
        for org in orgs {
            made.extend((0..3).map(|n| (org, rule(n, None))));
        }
    }
    made.into_iter()
        .enumerate()
        .map(|(n, (org, rule))| WriteOp::CreateRule {
            org,
            rule: Uuid::from_u128(n as u128 + 1),
            stored: Box::new(StoredRule {
                rule,
                created_at: 0,
                disabled_at: None,
            }),
        })
        .collect()
}

/// One commit's reports, received at `second`.
fn commit(runs: &mut impl Iterator<Item = TaskRun>, second: &mut i64) -> Vec<WriteOp> {
    (0..reports_per_commit())
        .map(|_| {
            *second += 1;
            WriteOp::Report {
                runs: runs.by_ref().take(REPORT).collect(),
                at: Timestamp::from_second(*second).expect("in range"),
            }
        })
        .collect()
}

fn alert_rules(c: &mut Criterion) {
    let workload = Realistic::new(100_000_000);
    let mut group = c.benchmark_group("ingest_with_alert_rules");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements((REPORT * reports_per_commit()) as u64));
    for shape in ["none", "each", "all"] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        for outcome in store.apply_now(&rules(shape, &workload)).unwrap() {
            outcome.expect("the rule is created");
        }
        let mut runs = workload.runs();
        // The clock of the reports' arrival: the workload's year is 2025.
        let mut second = 1_767_225_600; // 2026-01-01
        for _ in 0..HISTORY / (REPORT * reports_per_commit()) {
            store.apply_now(&commit(&mut runs, &mut second)).unwrap();
        }
        group.bench_function(BenchmarkId::from_parameter(shape), |b| {
            b.iter_custom(|iterations| {
                let mut spent = Duration::ZERO;
                for _ in 0..iterations {
                    let ops = commit(&mut runs, &mut second);
                    let started = Instant::now();
                    for outcome in store.apply_now(&ops).unwrap() {
                        outcome.expect("the report is applied");
                    }
                    spent += started.elapsed();
                }
                spent
            })
        });
    }
    group.finish();
}

criterion_group!(benches, alert_rules);
criterion_main!(benches);
