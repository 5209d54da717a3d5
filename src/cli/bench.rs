//! `runledger bench`: the load tool. Drives a running server over loopback and prints
//! throughput and latency percentiles (see [`crate::load`]).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use crate::load::{Front, Outcome, Plan, Query, Stop};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The server's gRPC address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// The server's REST address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// An OAuth client of the server with the scopes stats:read and runs:write.
    #[arg(long, env = "RUNLEDGER_CLIENT_ID")]
    pub client_id: String,
    /// That client's secret.
    #[arg(long, env = "RUNLEDGER_CLIENT_SECRET", hide_env_values = true)]
    pub client_secret: String,
    /// The front the queries go through (`none` for ingest only).
    #[arg(long, value_enum, default_value = "rest")]
    pub queries: Front,
    /// The question the queries ask.
    #[arg(long, value_enum, default_value = "aggregated")]
    pub query: Query,
    /// Concurrent query workers, each with one request in flight.
    #[arg(long, short, default_value_t = 32)]
    pub concurrency: usize,
    /// HTTP/2 connections shared by the gRPC workers.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// Concurrent gRPC report streams (client streams of fresh task runs).
    #[arg(long, default_value_t = 0)]
    pub ingest_streams: usize,
    /// Task runs per stream message.
    #[arg(long, default_value_t = 1_000)]
    pub ingest_batch: usize,
    /// Messages per stream call; each call waits for its acknowledgement.
    #[arg(long, default_value_t = 10)]
    pub stream_messages: usize,
    /// Task runs of the seeded workload reported first (the realistic shape over 2025, the same
    /// runs every time); the queries ask about its busiest pipeline.
    #[arg(long, default_value_t = 100_000)]
    pub seed_runs: u64,
    /// The ingest streams report runs of the pipelines this seed makes (the same ones every
    /// time, each run new), not of new pipelines: to load rules set on them beforehand.
    #[arg(long)]
    pub ingest_catalog: Option<u64>,
    /// `--queries lineage`: run ids as OpenLineage clients make them (v7, time-ordered) or
    /// random (v4).
    #[arg(long, value_enum, default_value = "v7")]
    pub run_ids: crate::load::RunIds,
    /// Threads of the load tool (it shares the machine with the server it loads).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Seconds to run.
    #[arg(long, short, default_value_t = 10.0, conflicts_with = "requests")]
    pub duration: f64,
    /// Stop after this many requests (queries and stream messages) instead.
    #[arg(long, short)]
    pub requests: Option<u64>,
}

pub fn run(args: BenchArgs) -> Result<ExitCode, String> {
    if !(args.duration > 0.0 && args.duration <= 86_400.0) {
        return Err("--duration must be between 0 and 86400 seconds".into());
    }
    if args.ingest_batch == 0 || args.ingest_batch > 10_000 || args.stream_messages == 0 {
        return Err("--ingest-batch must be 1 to 10000 and --stream-messages at least 1".into());
    }
    if args.queries == Front::None && args.ingest_streams == 0 {
        return Err("nothing to do: --queries none and no --ingest-streams".into());
    }
    let stop = match args.requests {
        Some(n) => Stop::Requests(n),
        None => Stop::After(Duration::from_secs_f64(args.duration)),
    };
    let concurrency = if args.queries == Front::None {
        0
    } else {
        args.concurrency.max(1)
    };
    let plan = Plan {
        grpc: args.grpc_addr,
        http: args.http_addr,
        client_id: args.client_id,
        client_secret: args.client_secret,
        front: args.queries,
        query: args.query,
        concurrency,
        connections: args.connections,
        ingest_streams: args.ingest_streams,
        ingest_batch: args.ingest_batch,
        stream_messages: args.stream_messages,
        seed_runs: args.seed_runs,
        ingest_catalog: args.ingest_catalog,
        run_ids: args.run_ids,
        stop,
        threads: args.threads,
    };
    let report = crate::load::run(plan.clone())?;
    let seconds = report.elapsed.as_secs_f64();
    println!(
        "runledger bench: {seconds:.1} s; {concurrency} query workers; {} report streams of {} x {} runs",
        plan.ingest_streams, plan.stream_messages, plan.ingest_batch
    );
    if concurrency > 0 {
        let what = match plan.front {
            Front::Rest => format!("REST {}", plan.query.describe()),
            Front::Lineage => "OpenLineage run events, one per POST /api/v1/lineage".into(),
            _ => format!("gRPC {}", plan.query.describe()),
        };
        print_line(&what, &report.queries, seconds);
    }
    if plan.ingest_streams > 0 {
        print_line("gRPC report streams (calls)", &report.ingest, seconds);
        println!(
            "  task runs acknowledged durable: {} ({:.0}/s)",
            report.ingest.runs,
            report.ingest.runs as f64 / seconds
        );
    }
    let failed = report.queries.failed + report.ingest.failed;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_line(what: &str, outcome: &Outcome, seconds: f64) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let h = &outcome.latency;
    println!("{what}");
    println!(
        "  {} ok, {} failed, {:.0} req/s; latency p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        outcome.ok,
        outcome.failed,
        outcome.ok as f64 / seconds,
        ms(h.quantile(0.50)),
        ms(h.quantile(0.90)),
        ms(h.quantile(0.99)),
        ms(h.max()),
    );
    if let Some(error) = &outcome.first_error {
        println!("  first failure: {error}");
    }
}
