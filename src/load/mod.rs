//! The load tool behind `runledger bench`: drives a running server over loopback with stats
//! queries (REST or gRPC), OpenLineage events (REST) and task-run reports (gRPC client
//! streams) at a chosen concurrency,
//! for a fixed time or number of requests, and measures throughput and latency.

mod grpc;
mod histogram;
mod lineage;
pub use lineage::RunIds;
mod rest;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use histogram::Histogram;

use crate::model::PipelineId;
use crate::workload::Realistic;

/// Which front the queries go through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Front {
    Rest,
    Grpc,
    /// No queries: OpenLineage run events POSTed to `/api/v1/lineage` instead, one per
    /// request (DAG runs of 2,000 DAGs of four tasks, ten events a DAG run).
    Lineage,
    /// No queries: ingest only.
    None,
}

/// Which stats question the queries ask, always about the seeded pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Query {
    /// Aggregated stats, month x 12 over the seeded year.
    Aggregated,
    /// Range stats over an arbitrary second-precision range of the seeded year.
    Range,
    /// Last-run stats.
    LastRun,
    /// The newest page of 100 log entries.
    Logs,
}

impl Query {
    pub fn describe(self) -> &'static str {
        match self {
            Query::Aggregated => "aggregated stats, month x 12",
            Query::Range => "range stats, 2025-01-03 05:06:07 to 2025-12-29 17:43:21",
            Query::LastRun => "last-run stats",
            Query::Logs => "logs, newest page of 100",
        }
    }
}

/// When the load stops.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    After(Duration),
    /// After this many requests (queries and ingest messages together).
    Requests(u64),
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub client_id: String,
    pub client_secret: String,
    pub front: Front,
    pub query: Query,
    /// Concurrent query workers (each one request at a time).
    pub concurrency: usize,
    /// HTTP/2 connections the gRPC workers share.
    pub connections: usize,
    /// Concurrent report streams.
    pub ingest_streams: usize,
    /// Task runs per stream message.
    pub ingest_batch: usize,
    /// Messages per stream call before it is closed and its acknowledgement awaited.
    pub stream_messages: usize,
    /// Task runs of the queried pipeline loaded before the measurement (idempotent).
    pub seed_runs: u64,
    /// The ingest streams' pipelines: from this seed (the same every time), else new ones.
    pub ingest_catalog: Option<u64>,
    /// How the lineage workload makes run ids.
    pub run_ids: RunIds,
    pub stop: Stop,
    /// Threads the load tool itself runs on.
    pub threads: usize,
}

/// What one kind of request achieved.
#[derive(Clone, Default)]
pub struct Outcome {
    /// Requests (queries, or stream calls) that succeeded.
    pub ok: u64,
    pub failed: u64,
    /// The first failure, to show.
    pub first_error: Option<String>,
    /// Task runs acknowledged durable (ingest only).
    pub runs: u64,
    pub latency: Histogram,
}

impl Outcome {
    fn merge(&mut self, other: Outcome) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.runs += other.runs;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latency.merge(&other.latency);
    }

    fn fail(&mut self, error: String) {
        self.failed += 1;
        if self.first_error.is_none() {
            self.first_error = Some(error);
        }
    }
}

/// The result of a load run.
pub struct Report {
    pub elapsed: Duration,
    pub queries: Outcome,
    pub ingest: Outcome,
}

/// The shared stop condition: a deadline, or a pool of requests workers draw from.
pub(crate) struct Budget {
    deadline: Option<Instant>,
    remaining: AtomicU64,
}

impl Budget {
    fn new(stop: Stop) -> Budget {
        match stop {
            Stop::After(duration) => Budget {
                deadline: Some(Instant::now() + duration),
                remaining: AtomicU64::new(u64::MAX),
            },
            Stop::Requests(n) => Budget {
                deadline: None,
                remaining: AtomicU64::new(n),
            },
        }
    }

    /// Whether another request may start.
    pub(crate) fn take(&self) -> bool {
        if let Some(deadline) = self.deadline {
            return Instant::now() < deadline;
        }
        self.remaining
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// The workload seeded before queries: the realistic shape (2,000 pipelines with a long-tailed
/// spread of schedules, random v4 UUIDs, no outputs) over 2025, with a fixed seed so that
/// seeding again changes nothing. All of it lands in the load client's organization.
pub fn seeded_workload(runs: u64) -> Realistic {
    Realistic {
        organizations: 1,
        outputs: false,
        seed: 0x5eed,
        ..Realistic::new(runs)
    }
}

/// A fresh stream of task runs for ingest stream `stream`: the realistic shape, sized for ten
/// million reports over the last year (so a stream's pipelines are as dense as in the benchmark
/// datasets), with UUIDs no earlier load used (inserts, not replays); of the pipelines of
/// `catalog` (the same each time) when given, else of new ones.
fn ingest_workload(stream: usize, catalog: Option<u64>) -> Realistic {
    let now = chrono::Utc::now().timestamp();
    let mut seed = [0u8; 8];
    let _ = getrandom::fill(&mut seed);
    Realistic {
        organizations: 1,
        start: now - 365 * 86_400,
        seed: u64::from_le_bytes(seed) ^ stream as u64,
        catalog_seed: catalog.map(|catalog| catalog ^ stream as u64),
        ..Realistic::new(10_000_000)
    }
}

/// The pipeline being queried: the seeded workload's busiest (worked out once).
pub fn queried_pipeline() -> PipelineId {
    static PIPELINE: std::sync::OnceLock<PipelineId> = std::sync::OnceLock::new();
    *PIPELINE.get_or_init(|| seeded_workload(1).catalog()[0].id)
}

/// Seeds, then runs the plan on a runtime of its own.
pub fn run(plan: Plan) -> Result<Report, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start: {e}"))?;
    runtime.block_on(run_async(plan))
}

async fn run_async(plan: Plan) -> Result<Report, String> {
    let channels = grpc::channels(&plan).await?;
    let token = grpc::token(&channels[0], &plan).await?;
    if plan.seed_runs > 0 {
        grpc::seed(&channels[0], &token, seeded_workload(plan.seed_runs)).await?;
    }
    let budget = Arc::new(Budget::new(plan.stop));
    let started = Instant::now();
    let mut queries = Vec::new();
    for worker in 0..plan.concurrency {
        let budget = budget.clone();
        let token = token.clone();
        match plan.front {
            Front::Rest => queries.push(tokio::spawn(rest::query_worker(
                plan.http, token, plan.query, budget,
            ))),
            Front::Grpc => queries.push(tokio::spawn(grpc::query_worker(
                channels[worker % channels.len()].clone(),
                token,
                plan.query,
                budget,
            ))),
            Front::Lineage => queries.push(tokio::spawn(lineage::lineage_worker(
                plan.http,
                token,
                worker as u64,
                plan.run_ids,
                budget,
            ))),
            Front::None => {}
        }
    }
    let mut ingest = Vec::new();
    for stream in 0..plan.ingest_streams {
        ingest.push(tokio::spawn(grpc::ingest_worker(
            channels[stream % channels.len()].clone(),
            token.clone(),
            ingest_workload(stream, plan.ingest_catalog),
            plan.ingest_batch,
            plan.stream_messages,
            budget.clone(),
        )));
    }
    let mut report = Report {
        elapsed: Duration::ZERO,
        queries: Outcome::default(),
        ingest: Outcome::default(),
    };
    for worker in queries {
        report
            .queries
            .merge(worker.await.map_err(|e| e.to_string())?);
    }
    for worker in ingest {
        report
            .ingest
            .merge(worker.await.map_err(|e| e.to_string())?);
    }
    report.elapsed = started.elapsed();
    Ok(report)
}
