//! What one writer sends in order is applied in that order on every node, whatever publishes
//! fail and are retried: three NATS servers (stream replicas 3) behind proxies that cut
//! connections at random moments, two nodes, and two writers of a workload in which 5% of the
//! task runs are reported again a little later with another outcome and duration (so any
//! reordering shows as a changed answer): `runledger import --nats` of four organizations'
//! runs, and a gRPC client reporting a fifth's in batches, one call after the other, through
//! node A (whose connections to NATS go through the proxies too), sending a batch again after
//! a failure. Half the file is imported; node B and the stream's leader NATS server are killed
//! with SIGKILL; the other half is imported; both come back. The nodes must answer exactly as a
//! single node fed what each writer sent, in send order (the gRPC writer's failed attempts
//! included), and have equal digests; no call waited longer than its bound.
//!
//! `RUNLEDGER_ORDER_RUNS` sets the number of reports (CI: 120,000).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use runledger::model::{OrgId, TaskRun};
use runledger::workload::{Realistic, Rng, to_json_line};

use crate::chaos::ChaosProxy;
use crate::nats::{self, await_applied, cli, init, node};
use crate::support::{ChildServer, rest_token, runtime};

#[test]
fn each_writers_reports_are_applied_in_send_order_whatever_is_retried() {
    let Some(binary) = nats::nats_server() else {
        return;
    };
    let total: u64 = std::env::var("RUNLEDGER_ORDER_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120_000);
    let dir = tempfile::tempdir().unwrap();
    let mut nats = nats::start_nats(&binary, dir.path(), 3);
    let direct = nats::urls(&nats);
    let key = nats::master_key(dir.path());
    init(&direct, &key);
    // Every writer and node reaches NATS through proxies that cut connections.
    let proxies: Vec<ChaosProxy> = nats
        .iter()
        .enumerate()
        .map(|(i, n)| ChaosProxy::start(n.port, Duration::from_millis(150), 7 + i as u64))
        .collect();
    let flaky = proxies
        .iter()
        .map(ChaosProxy::url)
        .collect::<Vec<_>>()
        .join(",");

    let (runs, orgs, catalog) = re_reported_workload(total);
    // The last organization's runs go through the gRPC writer, the others' through the import.
    let streamed_org = *orgs.last().unwrap();
    let (streamed, runs): (Vec<TaskRun>, Vec<TaskRun>) = runs
        .into_iter()
        .partition(|run| run.organization == Some(streamed_org));
    let half = runs.len() / 2;
    let file = |name: &str, runs: &[TaskRun]| {
        let path = dir.path().join(name);
        let mut text = String::new();
        for run in runs {
            text.push_str(&to_json_line(run));
            text.push('\n');
        }
        std::fs::write(&path, text).unwrap();
        path
    };
    let first = file("first.ndjson", &runs[..half]);
    let second = file("second.ndjson", &runs[half..]);
    let import = |path: &std::path::Path| {
        let (ok, out, err) = cli(&[
            "import",
            "--nats",
            &flaky,
            "--master-key-file",
            key.to_str().unwrap(),
            path.to_str().unwrap(),
        ]);
        assert!(ok, "import --nats failed: {out}{err}");
    };

    let data = |name: &str| dir.path().join(name);
    let a = node(&data("a"), &flaky, &key, false);
    let b = node(&data("b"), &flaky, &key, false);
    let clients = nats::clients(
        &orgs,
        &[
            "--nats",
            &direct,
            "--master-key-file",
            key.to_str().unwrap(),
        ],
    );
    let rt = runtime();
    let http = reqwest::Client::new();
    let log = rt
        .block_on(runledger::cluster::Log::connect(
            &direct,
            Duration::from_secs(30),
        ))
        .unwrap();
    let streamed_token = rt.block_on(async {
        let created = log.state().await.unwrap().last_seq;
        await_applied(&http, a.http_addr, created).await;
        rest_token(&http, a.http_addr, clients.last().unwrap(), None).await
    });
    let writer = rt.spawn(write_in_order(a.grpc_addr, streamed_token, streamed));
    import(&first);
    // SIGKILL of node B and of the stream's leader NATS server, then the second half.
    let leader = rt.block_on(log.leader()).unwrap().expect("a leader");
    let leader_index = nats.iter().position(|n| n.name == leader).unwrap();
    b.kill();
    nats[leader_index].kill();
    import(&second);
    nats[leader_index].restart();
    let b = node(&data("b"), &flaky, &key, false);
    let (sent, calls, slowest) = rt.block_on(writer).unwrap();
    let cuts: u64 = proxies
        .iter()
        .map(|p| p.cuts.load(std::sync::atomic::Ordering::Acquire))
        .sum();
    for proxy in &proxies {
        proxy.set_cutting(false);
    }
    let last = rt.block_on(log.state()).unwrap().last_seq;
    rt.block_on(async {
        for node in [&a, &b] {
            await_applied(&http, node.http_addr, last).await;
        }
    });

    // The single node fed what each writer sent, in send order.
    let streamed = file("streamed.ndjson", &sent);
    let reference_dir = data("reference");
    let (ok, out, err) = cli(&[
        "import",
        "--data-dir",
        reference_dir.to_str().unwrap(),
        first.to_str().unwrap(),
        second.to_str().unwrap(),
        streamed.to_str().unwrap(),
    ]);
    assert!(ok, "{out}{err}");
    let reference_clients = nats::clients(&orgs, &["--data-dir", reference_dir.to_str().unwrap()]);
    let reference = ChildServer::start(&reference_dir);

    let mut differing = Vec::new();
    let mut compared = 0;
    rt.block_on(async {
        for (index, org) in orgs.iter().enumerate() {
            let reference_token =
                rest_token(&http, reference.http_addr, &reference_clients[index], None).await;
            let token = rest_token(&http, a.http_addr, &clients[index], None).await;
            let granted = nats::applied(&http, a.http_addr).await;
            await_applied(&http, b.http_addr, granted).await;
            for pipeline in catalog.iter().filter(|p| p.organization == *org) {
                let mut questions = vec![("pipelines", pipeline.id.0)];
                questions.extend(pipeline.tasks.iter().map(|t| ("tasks", t.id.0)));
                for (kind, uuid) in questions {
                    let path =
                        format!("/v1/stats/{kind}/{uuid}/aggregated-stats/2025-01-01/month/12");
                    let expected =
                        nats::answer(&http, reference.http_addr, &reference_token, &path).await;
                    for node in [&a, &b] {
                        let got = nats::answer(&http, node.http_addr, &token, &path).await;
                        if got != expected {
                            if differing.len() < 4 {
                                println!(
                                    "{path} on {}:\n  got      {}\n  expected {}",
                                    node.http_addr, got.1, expected.1
                                );
                            }
                            differing.push(format!("{path} on {}", node.http_addr));
                        }
                    }
                    compared += 1;
                }
            }
        }
    });
    println!(
        "{total} reports: {} lines imported, {} runs reported over gRPC in {calls} calls (slowest {slowest:?}); {cuts} connections cut, {compared} answers compared on 2 nodes, {} differ",
        runs.len(),
        sent.len(),
        differing.len()
    );
    assert!(
        differing.is_empty(),
        "answers differ from one node fed the file in order: {differing:#?}"
    );

    drop(reference);
    let digests: Vec<String> = [("a", a), ("b", b)]
        .into_iter()
        .map(|(name, server)| {
            assert!(server.stop());
            crate::support::digest(&data(name))
        })
        .collect();
    assert_eq!(digests[0], digests[1]);
    drop(proxies);
    drop(nats);
}

/// A realistic workload of five organizations in which 5% of the task runs are reported again
/// 200 to 3,000 lines later, with the other outcome and another duration: the runs in send
/// order, the organizations and the catalog.
fn re_reported_workload(
    total: u64,
) -> (
    Vec<TaskRun>,
    Vec<OrgId>,
    Vec<runledger::workload::PipelineSpec>,
) {
    let shape = Realistic {
        organizations: 5,
        pipelines: 200,
        outputs: false,
        ..Realistic::new(total)
    };
    let catalog = shape.catalog();
    let mut orgs: Vec<OrgId> = Vec::new();
    for pipeline in &catalog {
        if !orgs.contains(&pipeline.organization) {
            orgs.push(pipeline.organization);
        }
    }
    let mut rng = Rng::new(20);
    let mut runs: Vec<TaskRun> = Vec::new();
    // (line it goes to, the re-report)
    let mut later: std::collections::BTreeMap<usize, Vec<TaskRun>> = Default::default();
    for run in shape.runs() {
        if let Some(due) = later.remove(&runs.len()) {
            runs.extend(due);
        }
        if rng.chance(0.05) {
            let mut again = run.clone();
            again.is_successful = !again.is_successful;
            again.duration_ms = again.duration_ms / 2 + 1 + rng.below(5_000) as u32;
            let at = runs.len() + 200 + rng.below(2_800) as usize;
            later.entry(at).or_default().push(again);
        }
        runs.push(run);
    }
    runs.extend(later.into_values().flatten());
    (runs, orgs, catalog)
}

/// A node's bound for a write: 5 s to be stored in the log, at most 10 s more until the node
/// applied it; plus what a debug build on a loaded machine adds.
const CALL_BOUND: Duration = Duration::from_secs(17);

/// One client reporting `runs` through `node` in batches of 100, one call after the other; a
/// failed call is made again (after its Retry-After, when it says one). Everything it sent, in
/// order (a batch sent twice is there twice), the calls made and the slowest one's time.
async fn write_in_order(
    node: SocketAddr,
    token: String,
    runs: Vec<TaskRun>,
) -> (Vec<TaskRun>, usize, Duration) {
    use crate::support::{Bearer, grpc_channel};
    use runledger::api::wire::to_proto_task_run;
    use runledger::proto;
    let mut ingest = proto::ingest_client::IngestClient::with_interceptor(
        grpc_channel(node).await,
        Bearer::new(&token),
    );
    let (mut sent, mut calls, mut slowest) = (Vec::new(), 0, Duration::ZERO);
    for batch in runs.chunks(100) {
        loop {
            let request = proto::ReportTaskRunsRequest {
                results: batch.iter().map(to_proto_task_run).collect(),
            };
            sent.extend_from_slice(batch);
            calls += 1;
            let started = Instant::now();
            let outcome = ingest.report_task_run_batch(request).await;
            let took = started.elapsed();
            assert!(took < CALL_BOUND, "a report took {took:?}: {outcome:?}");
            slowest = slowest.max(took);
            match outcome {
                Ok(_) => break,
                Err(status) => {
                    let wait = status
                        .metadata()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok()?.parse().ok())
                        .map_or(Duration::from_millis(100), Duration::from_secs);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
    (sent, calls, slowest)
}
