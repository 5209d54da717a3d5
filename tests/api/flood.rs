//! Overload against the real server: a flood of large report batches from many streams is
//! refused past the write queue with RESOURCE_EXHAUSTED and a retry hint, reads keep being served
//! meanwhile, the server's memory stays bounded, and connections past the cap are closed.
//!
//! `RUNLEDGER_FLOOD_REFUSALS=N` floods until N refusals (default 10).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use runledger::proto::{self, ingest_client::IngestClient, stats_client::StatsClient};
use tokio::io::AsyncReadExt;

use crate::crash::{PIPELINE, batch};
use crate::support::{Bearer, ChildServer, entity, grpc_channel, grpc_token, runtime, ts};

/// Writers flooding at once, over this many connections.
const WRITERS: u64 = 16;
const CONNECTIONS: usize = 4;

/// A batch of `30 * n` task runs with 2 KiB outputs (about 65 KiB per 30 runs).
fn heavy_batch(first: u64, n: u64) -> Vec<proto::TaskRunResult> {
    (0..n)
        .flat_map(|i| batch(first + i * 30))
        .map(|mut result| {
            result.output = vec![b'x'; 2_048];
            result
        })
        .collect()
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_flood_of_writes_is_refused_with_a_hint_while_reads_stay_served_in_bounded_memory() {
    let refusals_wanted: u64 = std::env::var("RUNLEDGER_FLOOD_REFUSALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--write-queue",
        "2",
        "--write-queue-mib",
        "1",
        "--queue-wait-ms",
        "0",
        "--max-connections",
        "16",
    ];
    let server = ChildServer::start_with(dir.path(), &args, None);
    let pid = server.child.id();
    let runtime = runtime();
    let token = runtime.block_on(grpc_token(
        server.grpc_addr,
        server.first_client.as_ref().unwrap(),
    ));

    let (acked, refused, reads) = runtime.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let (acked, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut channels = Vec::new();
        for _ in 0..CONNECTIONS {
            channels.push(grpc_channel(server.grpc_addr).await);
        }
        // One batch first, so the pipeline exists for the readers.
        IngestClient::with_interceptor(channels[0].clone(), Bearer::new(&token))
            .report_task_run_batch(proto::ReportTaskRunsRequest {
                results: batch(1 << 28),
            })
            .await
            .unwrap();
        let mut writers = tokio::task::JoinSet::new();
        for writer in 0..WRITERS {
            let mut ingest = IngestClient::with_interceptor(
                channels[writer as usize % CONNECTIONS].clone(),
                Bearer::new(&token),
            );
            let (stop, acked, refused) = (stop.clone(), acked.clone(), refused.clone());
            writers.spawn(async move {
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let first = (round * WRITERS + writer) * 30 * 16;
                    let request = proto::ReportTaskRunsRequest {
                        results: heavy_batch(first, 16),
                    };
                    match ingest.report_task_run_batch(request).await {
                        Ok(_) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(status) => {
                            assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                            assert!(
                                status.message().contains("write queue is full"),
                                "{status:?}"
                            );
                            assert!(status.metadata().get("retry-after").is_some());
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    round += 1;
                }
            });
        }
        // Reads are answered throughout, and only ever see whole batches arrive.
        let mut stats = StatsClient::with_interceptor(channels[0].clone(), Bearer::new(&token));
        let (mut reads, mut seen) = (0u64, 0u64);
        while refused.load(Ordering::Relaxed) < refusals_wanted {
            let answer = stats
                .get_stats(proto::GetStatsRequest {
                    entity: entity(proto::EntityKind::Pipeline, PIPELINE),
                    from: Some(ts("2000-01-01 00:00:00")),
                    to: Some(ts("2100-01-01 00:00:00")),
                })
                .await
                .expect("reads are served during the flood");
            let answer = answer.into_inner();
            let runs = answer.num_of_successes + answer.num_of_failures;
            assert!(
                runs >= seen,
                "the pipeline-run count went back: {runs} < {seen}"
            );
            seen = runs;
            reads += 1;
        }
        stop.store(true, Ordering::Relaxed);
        while let Some(done) = writers.join_next().await {
            done.unwrap();
        }
        (
            acked.load(Ordering::Relaxed),
            refused.load(Ordering::Relaxed),
            reads,
        )
    });
    let peak_mib = peak_rss_kib(pid) / 1024;
    println!(
        "flood: {acked} batches of 480 runs acknowledged, {refused} refused, {reads} reads served, peak RSS {peak_mib} MiB"
    );
    assert!(acked > 0 && reads > 0);
    // A batch (~1.1 MiB) fills the 1 MiB queue by itself, so writes that overlap are refused.
    // The queue, the batches being decoded, the page cache and the runtime: the bound
    // does not grow with the number of writers or batches.
    assert!(peak_mib < 768, "peak RSS {peak_mib} MiB");

    // Connections past the cap are closed on arrival; the ones within it stay open.
    runtime.block_on(async {
        let mut held = Vec::new();
        for _ in 0..16 {
            held.push(
                tokio::net::TcpStream::connect(server.http_addr)
                    .await
                    .unwrap(),
            );
        }
        let mut extra = tokio::net::TcpStream::connect(server.http_addr)
            .await
            .unwrap();
        let mut byte = [0u8; 1];
        let closed = extra.read(&mut byte).await;
        assert!(
            matches!(closed, Ok(0) | Err(_)),
            "a connection past the cap was served: {closed:?}"
        );
        drop(held);
    });
    server.kill();
}
