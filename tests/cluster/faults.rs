//! The cluster under faults: three NATS servers (stream replicas 3), three runledger nodes and
//! a write gateway; four writers stream realistic runs (re-reports and late runs included)
//! through every node and the gateway while the stream's leader NATS server and one node are
//! killed with SIGKILL and restarted, and a third node is wiped and rebuilt from another's
//! backup plus the stream. Afterwards every node has applied everything acknowledged, holds
//! every acknowledged run, answers byte for byte alike and as a single node fed what each
//! writer sent, in send order (failed attempts included), and the files have equal digests
//! and verify clean. No call waited longer than a node's bound.
//!
//! `RUNLEDGER_CLUSTER_RUNS` sets the number of reports (CI: 12,000; the run: 100,000).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use runledger::api::wire::to_proto_task_run;
use runledger::model::{OrgId, RunState, TaskRun};
use runledger::proto;
use runledger::proto::ingest_client::IngestClient;
use runledger::workload::{Realistic, to_json_line};
use tonic::transport::Endpoint;

use crate::nats::{self, await_applied, cli, init, node};
use crate::support::rest_token;
use crate::support::{Bearer, ChildServer, logged_entries, runtime};

const BATCH: usize = 100;

/// One acknowledged batch: its stream sequence, when it was sent and acknowledged.
struct Ack {
    seq: u64,
    sent: Instant,
    acked: Instant,
}

#[test]
fn the_cluster_survives_killed_servers_and_a_wiped_node_and_agrees_with_one_node() {
    let Some(binary) = nats::nats_server() else {
        return;
    };
    let total: u64 = std::env::var("RUNLEDGER_CLUSTER_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12_000);
    let dir = tempfile::tempdir().unwrap();
    let mut nats = nats::start_nats(&binary, dir.path(), 3);
    let urls = nats::urls(&nats);
    let key = nats::master_key(dir.path());
    init(&urls, &key);
    let rt = runtime();
    let log = rt
        .block_on(runledger::cluster::Log::connect(
            &urls,
            Duration::from_secs(30),
        ))
        .unwrap();
    assert_eq!(rt.block_on(log.replicas()).unwrap(), 3);

    // The workload: four organizations, one writer each (their runs never meet).
    let shape = Realistic {
        organizations: 4,
        pipelines: 300,
        ..Realistic::new(total)
    };
    let catalog = shape.catalog();
    let mut orgs: Vec<OrgId> = Vec::new();
    for pipeline in &catalog {
        if !orgs.contains(&pipeline.organization) {
            orgs.push(pipeline.organization);
        }
    }
    let mut per_org: Vec<Vec<TaskRun>> = vec![Vec::new(); orgs.len()];
    for run in shape.runs() {
        let index = orgs
            .iter()
            .position(|o| Some(*o) == run.organization)
            .unwrap();
        per_org[index].push(run);
    }
    let clients = nats::clients(
        &orgs,
        &["--nats", &urls, "--master-key-file", key.to_str().unwrap()],
    );

    let data = |name: &str| dir.path().join(name);
    let a = node(&data("a"), &urls, &key, false);
    let mut b = Some(node(&data("b"), &urls, &key, false));
    let mut c = Some(node(&data("c"), &urls, &key, false));
    let gateway = node(&data("g"), &urls, &key, true);
    let http = reqwest::Client::new();
    let tokens: Vec<String> = rt.block_on(async {
        let mut tokens = Vec::new();
        for client in &clients {
            tokens.push(rest_token(&http, a.http_addr, client, None).await);
        }
        let granted = nats::applied(&http, a.http_addr).await;
        for node in [&b, &c] {
            await_applied(&http, node.as_ref().unwrap().http_addr, granted).await;
        }
        tokens
    });

    // Writers send through every node and the gateway, moving on to the next on any failure.
    let targets = Arc::new(RwLock::new(vec![
        a.grpc_addr,
        b.as_ref().unwrap().grpc_addr,
        c.as_ref().unwrap().grpc_addr,
        gateway.grpc_addr,
    ]));
    let acked_runs = Arc::new(AtomicU64::new(0));
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let writers: Vec<_> = per_org
        .iter()
        .zip(&tokens)
        .enumerate()
        .map(|(index, (runs, token))| {
            let batches: Vec<Vec<TaskRun>> = runs.chunks(BATCH).map(<[TaskRun]>::to_vec).collect();
            rt.spawn(write_all(
                index,
                batches,
                token.clone(),
                targets.clone(),
                acked_runs.clone(),
                acks.clone(),
            ))
        })
        .collect();

    // A third of the way: SIGKILL the stream's leader NATS server and node B.
    let wait_for = |share: u64| {
        while acked_runs.load(Ordering::Acquire) < total * share / 3 {
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait_for(1);
    let leader = rt
        .block_on(log.leader())
        .unwrap()
        .expect("a clustered stream has a leader");
    let killed_at = Instant::now();
    let leader_index = nats.iter().position(|n| n.name == leader).unwrap();
    nats[leader_index].kill();
    b.take().unwrap().kill();
    // Two thirds of the way: both come back (B on its old data dir, on new ports).
    wait_for(2);
    nats[leader_index].restart();
    let restarted = node(&data("b"), &urls, &key, false);
    targets.write().unwrap()[1] = restarted.grpc_addr;
    b = Some(restarted);

    let mut acked: Vec<Vec<(u64, Vec<TaskRun>)>> = Vec::new();
    let mut sent: Vec<Vec<Vec<TaskRun>>> = Vec::new();
    for writer in writers {
        let (done, attempts) = rt.block_on(writer).unwrap();
        acked.push(done);
        sent.push(attempts);
    }
    let acks = std::mem::take(&mut *acks.lock().unwrap());
    let last_seq = acks.iter().map(|ack| ack.seq).max().unwrap();
    let recovery = acks
        .iter()
        .filter(|ack| ack.sent > killed_at)
        .map(|ack| ack.acked - killed_at)
        .min()
        .unwrap();
    let latencies = {
        let mut l: Vec<Duration> = acks.iter().map(|ack| ack.acked - ack.sent).collect();
        l.sort();
        l
    };
    println!(
        "{} batches acknowledged through sequence {last_seq}; from the leader's kill to the next acknowledged write: {recovery:?}; batch ack p50 {:?} p99 {:?}",
        acks.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
    );

    // Wipe C and rebuild it from A's backup plus the stream's tail.
    assert!(c.take().unwrap().stop());
    let backup = data("backup-of-a");
    assert!(nats::backup(&data("a"), &backup) > 0);
    std::fs::remove_dir_all(data("c")).unwrap();
    nats::restore(&backup, &data("c"));
    let c = node(&data("c"), &urls, &key, false);
    let b = b.unwrap();
    let nodes = [&a, &b, &c];
    rt.block_on(async {
        for node in nodes {
            await_applied(&http, node.http_addr, last_seq).await;
        }
    });

    // The single node fed what each writer sent, in send order (a batch whose call failed and
    // was made again is there twice).
    let reference_dir = data("reference");
    let file = dir.path().join("sent.ndjson");
    let mut lines = String::new();
    for run in sent.iter().flatten().flatten() {
        lines.push_str(&to_json_line(run));
        lines.push('\n');
    }
    let mut final_state: HashMap<uuid::Uuid, (RunState, uuid::Uuid)> = HashMap::new();
    for (_, batch) in acked.iter().flatten() {
        for run in batch {
            final_state.insert(run.task_run.0, (run.state, run.pipeline.0));
        }
    }
    std::fs::write(&file, lines).unwrap();
    let (ok, _, err) = cli(&[
        "import",
        "--data-dir",
        reference_dir.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let reference_clients = nats::clients(&orgs, &["--data-dir", reference_dir.to_str().unwrap()]);
    let reference = ChildServer::start(&reference_dir);

    rt.block_on(async {
        let mut compared = 0;
        for (index, org) in orgs.iter().enumerate() {
            let reference_token =
                rest_token(&http, reference.http_addr, &reference_clients[index], None).await;
            let token = &tokens[index];
            for pipeline in catalog.iter().filter(|p| p.organization == *org) {
                let mut questions = vec![("pipelines", pipeline.id.0)];
                questions.extend(pipeline.tasks.iter().map(|t| ("tasks", t.id.0)));
                for (kind, uuid) in questions {
                    for path in [
                        format!("/v1/stats/{kind}/{uuid}/stats/2025-01-01/2026-01-31"),
                        format!(
                            "/v1/stats/{kind}/{uuid}/stats/2025-03-03 10:00:00/2025-09-17 17:30:00"
                        ),
                        format!(
                            "/v1/stats/{kind}/{uuid}/aggregated-stats/2025-01-01/month/13?fill=zero"
                        ),
                        format!("/v1/stats/{kind}/{uuid}/aggregated-stats/2025-06-01/week/10"),
                        format!("/v1/stats/{kind}/{uuid}/last-run/stats"),
                    ] {
                        let expected =
                            nats::answer(&http, reference.http_addr, &reference_token, &path).await;
                        for node in nodes {
                            let got = nats::answer(&http, node.http_addr, token, &path).await;
                            assert_eq!(got, expected, "{path} on {}", node.http_addr);
                        }
                        compared += 1;
                    }
                }
                // Logs: alike on every node, and as the single node's but for the sealed
                // outputs (each sealed with its own organization key and nonce).
                let id = pipeline.id.to_string();
                let logs = logged_entries(a.grpc_addr, token, &id, 0).await;
                for node in [&b, &c] {
                    assert_eq!(logged_entries(node.grpc_addr, token, &id, 0).await, logs);
                }
                let strip = |entries: Vec<proto::LogEntry>| -> Vec<proto::LogEntry> {
                    entries
                        .into_iter()
                        .map(|mut e| {
                            e.output.clear();
                            e
                        })
                        .collect()
                };
                let expected =
                    strip(logged_entries(reference.grpc_addr, &reference_token, &id, 0).await);
                assert_eq!(strip(logs.clone()), expected, "logs of {id}");
                // Every acknowledged run that ended finished is there.
                let logged: HashSet<String> =
                    logs.iter().map(|e| e.task_run_uuid.clone()).collect();
                for (run, (state, of)) in &final_state {
                    if *of == pipeline.id.0 && *state == RunState::Finished {
                        assert!(
                            logged.contains(&run.to_string()),
                            "acknowledged run {run} is missing"
                        );
                    }
                }
            }
        }
        println!("compared {compared} answers across 3 nodes and the single node");
    });

    // Equal files: stop every node cleanly, then digests and verify.
    drop(reference);
    let mut digests = HashSet::new();
    for (name, server) in [("a", a), ("b", b), ("c", c)] {
        assert!(server.stop());
        digests.insert(crate::support::digest(&data(name)));
        let (ok, out, err) = cli(&["verify", "--data-dir", data(name).to_str().unwrap()]);
        assert!(ok, "verify of node {name}: {out}{err}");
    }
    assert_eq!(digests.len(), 1, "{digests:?}");
    assert!(gateway.stop());
    drop(nats);
}

/// One writer: every batch in order, each until acknowledged (at least once), moving to the
/// next target after a failure (after its Retry-After, when it says one). What was
/// acknowledged, and every batch sent, in send order.
async fn write_all(
    index: usize,
    batches: Vec<Vec<TaskRun>>,
    token: String,
    targets: Arc<RwLock<Vec<SocketAddr>>>,
    acked_runs: Arc<AtomicU64>,
    acks: Arc<Mutex<Vec<Ack>>>,
) -> (Vec<(u64, Vec<TaskRun>)>, Vec<Vec<TaskRun>>) {
    let mut done = Vec::new();
    let mut sent = Vec::new();
    let mut turn = index;
    let mut channels: HashMap<SocketAddr, IngestClient<_>> = HashMap::new();
    for batch in batches {
        let request = proto::ReportTaskRunsRequest {
            results: batch.iter().map(to_proto_task_run).collect(),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let target = {
                let targets = targets.read().unwrap();
                targets[turn % targets.len()]
            };
            let at = Instant::now();
            sent.push(batch.clone());
            let outcome = send(&mut channels, target, &token, request.clone()).await;
            assert!(
                at.elapsed() < CALL_BOUND,
                "writer {index}: a call took {:?}",
                at.elapsed()
            );
            match outcome {
                Ok(seq) => {
                    acks.lock().unwrap().push(Ack {
                        seq,
                        sent: at,
                        acked: Instant::now(),
                    });
                    acked_runs.fetch_add(batch.len() as u64, Ordering::AcqRel);
                    done.push((seq, batch));
                    turn += 1;
                    break;
                }
                Err((error, retry_after)) => {
                    channels.remove(&target);
                    assert!(Instant::now() < deadline, "writer {index}: {error}");
                    turn += 1;
                    tokio::time::sleep(retry_after.unwrap_or(Duration::from_millis(20))).await;
                }
            }
        }
    }
    (done, sent)
}

/// A node's bound for a write: 5 s to be stored, at most 10 s more until it applied it; plus
/// what a debug build on a loaded machine adds.
const CALL_BOUND: Duration = Duration::from_secs(17);

type Client = IngestClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
>;

/// One call: its stream sequence, or the error and the Retry-After it carried.
async fn send(
    channels: &mut HashMap<SocketAddr, Client>,
    target: SocketAddr,
    token: &str,
    request: proto::ReportTaskRunsRequest,
) -> Result<u64, (String, Option<Duration>)> {
    let client = match channels.entry(target) {
        std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
        std::collections::hash_map::Entry::Vacant(entry) => {
            let channel = Endpoint::from_shared(format!("http://{target}"))
                .unwrap()
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(30))
                .connect()
                .await
                .map_err(|e| (e.to_string(), None))?;
            entry.insert(IngestClient::with_interceptor(channel, Bearer::new(token)))
        }
    };
    let response = client
        .report_task_run_batch(request)
        .await
        .map_err(|status| {
            let retry_after = status
                .metadata()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .map(Duration::from_secs);
            (status.to_string(), retry_after)
        })?;
    response
        .metadata()
        .get("x-runledger-seq")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ("no x-runledger-seq".to_string(), None))
}
