//! What a node answers while NATS servers die: three servers (stream replicas 3) and two nodes.
//! With one server gone, token requests and reads keep being answered and writes resume after
//! the stream's election; with two gone (no quorum) reads are still served from the node's
//! file at once, writes and token grants get 503 with Retry-After within their bound, and
//! `/healthz` says the quorum is lost; once the servers are back, writes succeed again. No
//! request waits longer than its bound. A thousand unknown bearer tokens at once cost the log a
//! handful of lookups, and `x-runledger-min-seq` holds no unauthenticated request.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::nats::{self, await_applied, node};
use crate::support::{rest_token, runtime};

const PIPELINE: &str = "7b000000-0000-4000-8000-000000000001";
const TASK: &str = "7b000000-0000-4000-8000-000000000002";

/// A write's or grant's bound on a node (5 s to be stored, then at most 10 s until this node
/// applied it) plus what a debug build on a loaded machine adds.
const WRITE_BOUND: Duration = Duration::from_secs(17);
/// A read's bound.
const READ_BOUND: Duration = Duration::from_secs(1);

/// Messages the NATS server received so far (its `/varz`).
async fn in_msgs(http: &reqwest::Client, nats: &nats::Nats) -> u64 {
    let varz: serde_json::Value = http
        .get(format!("http://127.0.0.1:{}/varz", nats.monitor))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    varz["in_msgs"].as_u64().unwrap()
}

/// A token request's status and how long it took.
async fn token_status(
    http: &reqwest::Client,
    node: SocketAddr,
    client: &serde_json::Value,
) -> (u16, Duration) {
    let started = Instant::now();
    let response = http
        .post(format!("http://{node}/v1/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client["client_id"].as_str().unwrap()),
            ("client_secret", client["client_secret"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), started.elapsed())
}

/// A report's outcome (the status code) and how long it took.
async fn write(
    node: SocketAddr,
    token: &str,
    org: &str,
) -> (tonic::Code, Duration, Option<String>) {
    use crate::support::{Bearer, finished, grpc_channel};
    use runledger::proto;
    let started = Instant::now();
    let mut ingest = proto::ingest_client::IngestClient::with_interceptor(
        grpc_channel(node).await,
        Bearer::new(token),
    );
    let mut run = finished(
        &uuid::Uuid::new_v4().to_string(),
        &uuid::Uuid::new_v4().to_string(),
        PIPELINE,
        TASK,
        true,
        1_000,
        "2025-06-01 12:00:00",
    );
    run.organization_uuid = org.into();
    let outcome = ingest
        .report_task_run_batch(proto::ReportTaskRunsRequest { results: vec![run] })
        .await;
    let elapsed = started.elapsed();
    match outcome {
        Ok(_) => (tonic::Code::Ok, elapsed, None),
        Err(status) => {
            let retry = status
                .metadata()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            (status.code(), elapsed, retry)
        }
    }
}

/// A read's status and how long it took.
async fn read(http: &reqwest::Client, node: SocketAddr, token: &str) -> (u16, Duration) {
    let started = Instant::now();
    let response = http
        .get(format!(
            "http://{node}/v1/stats/pipelines/{PIPELINE}/stats/2025-01-01/2025-12-31"
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), started.elapsed())
}

/// `/healthz` as JSON, once it says `quorum` is `wanted` (a minute at most).
async fn quorum_becomes(
    http: &reqwest::Client,
    node: SocketAddr,
    wanted: bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let health: serde_json::Value = http
            .get(format!("http://{node}/healthz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if health["quorum"] == wanted {
            return health;
        }
        assert!(
            Instant::now() < deadline,
            "quorum never became {wanted}: {health}"
        );
    }
}

#[test]
fn a_node_answers_within_its_bounds_while_nats_servers_die() {
    let Some(binary) = nats::nats_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut nats = nats::start_nats(&binary, dir.path(), 3);
    let urls = nats::urls(&nats);
    let key = nats::master_key(dir.path());
    let client = nats::init(&urls, &key);
    let org = client["organization_uuid"].as_str().unwrap().to_string();
    let a = node(&dir.path().join("a"), &urls, &key, false);
    let b = node(&dir.path().join("b"), &urls, &key, false);
    let http = reqwest::Client::new();
    let rt = runtime();
    let token = rt.block_on(async {
        let token = rest_token(&http, a.http_addr, &client, None).await;
        assert_eq!(write(a.grpc_addr, &token, &org).await.0, tonic::Code::Ok);
        let seq = nats::applied(&http, a.http_addr).await;
        await_applied(&http, b.http_addr, seq).await;
        token
    });

    // Unknown tokens, many at once, while everything is up: a handful of lookups of the log.
    rt.block_on(async {
        let before: u64 = {
            let mut sum = 0;
            for server in &nats {
                sum += in_msgs(&http, server).await;
            }
            sum
        };
        // Ten waves of a hundred at once (the connections one address may hold are capped).
        for wave in 0..10 {
            let mut requests = tokio::task::JoinSet::new();
            for i in 0..100 {
                let (http, node) = (http.clone(), a.http_addr);
                let token = format!("rla_unknown{wave}x{i}");
                requests.spawn(async move { read(&http, node, &token).await });
            }
            while let Some(done) = requests.join_next().await {
                let (status, took) = done.unwrap();
                assert_eq!(status, 401);
                assert!(took < Duration::from_secs(3), "{took:?}");
            }
        }
        let mut after = 0;
        for server in &nats {
            after += in_msgs(&http, server).await;
        }
        // Lookups, the quorum probes and the consumers' heartbeats of two nodes meanwhile.
        println!(
            "1,000 unknown tokens at once: {} messages to the NATS servers",
            after - before
        );
        assert!(
            after - before < 150,
            "{} messages for 1,000 unknown tokens",
            after - before
        );

        // x-runledger-min-seq holds no unauthenticated request, and no token request.
        let started = Instant::now();
        let response = http
            .get(format!("http://{}/v1/stats/pipelines", a.http_addr))
            .header("x-runledger-min-seq", "999999")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        let (status, _) = {
            let response = http
                .post(format!("http://{}/v1/oauth/token", a.http_addr))
                .header("x-runledger-min-seq", "999999")
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", client["client_id"].as_str().unwrap()),
                    ("client_secret", client["client_secret"].as_str().unwrap()),
                ])
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), ())
        };
        assert_eq!(status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    });

    // One server gone (the stream's leader): answers go on, within their bounds.
    let log = rt
        .block_on(runledger::cluster::Log::connect(
            &urls,
            Duration::from_secs(10),
        ))
        .unwrap();
    let leader = rt.block_on(log.leader()).unwrap().expect("a leader");
    let first = nats.iter().position(|n| n.name == leader).unwrap();
    nats[first].kill();
    rt.block_on(async {
        for node in [&a, &b] {
            let (status, took) = read(&http, node.http_addr, &token).await;
            assert_eq!(status, 200);
            assert!(took < READ_BOUND, "read took {took:?}");
        }
        // Token grants and writes: each answered within its bound, and granted again once
        // the stream has its new leader.
        let deadline = Instant::now() + Duration::from_secs(60);
        let killed = Instant::now();
        loop {
            let (status, took) = token_status(&http, b.http_addr, &client).await;
            assert!(took < WRITE_BOUND, "a token request took {took:?}");
            let (code, wrote, _) = write(b.grpc_addr, &token, &org).await;
            assert!(wrote < WRITE_BOUND, "a write took {wrote:?}");
            println!(
                "leader killed: token request {status} in {took:?}, write {code:?} in {wrote:?}"
            );
            if status == 200 && code == tonic::Code::Ok {
                println!(
                    "granting and writing again {:?} after the leader's kill",
                    killed.elapsed()
                );
                break;
            }
            assert!([200, 503].contains(&status), "{status}");
            assert!(
                Instant::now() < deadline,
                "no grant or write after the election"
            );
        }
    });

    rt.block_on(async {
        // With two of three, the quorum holds.
        let health = quorum_becomes(&http, b.http_addr, true).await;
        assert_eq!(health["status"], "ok", "{health}");
    });

    // Two servers gone: no quorum.
    let second = (0..3).find(|i| *i != first).unwrap();
    nats[second].kill();
    rt.block_on(async {
        let lost = Instant::now();
        let health = quorum_becomes(&http, a.http_addr, false).await;
        println!(
            "healthz said no quorum {:?} after the second kill",
            lost.elapsed()
        );
        assert_eq!(health["status"], "ok", "{health}");
        for node in [&a, &b] {
            let (status, took) = read(&http, node.http_addr, &token).await;
            assert_eq!(status, 200);
            assert!(took < READ_BOUND, "read took {took:?}");
        }
        let (code, took, retry) = write(a.grpc_addr, &token, &org).await;
        println!("no quorum: write {code:?} in {took:?}, retry-after {retry:?}");
        assert_eq!(code, tonic::Code::Unavailable);
        assert!(took < WRITE_BOUND, "a write took {took:?}");
        assert_eq!(retry.as_deref(), Some("4"));
        let (status, took) = token_status(&http, b.http_addr, &client).await;
        println!("no quorum: token request {status} in {took:?}");
        assert_eq!(status, 503);
        assert!(took < WRITE_BOUND, "a token request took {took:?}");
    });

    // Back: writes succeed again, and both nodes agree.
    nats[first].restart();
    nats[second].restart();
    rt.block_on(async {
        quorum_becomes(&http, a.http_addr, true).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while write(a.grpc_addr, &token, &org).await.0 != tonic::Code::Ok {
            assert!(
                Instant::now() < deadline,
                "no write after the servers came back"
            );
        }
        let seq = nats::applied(&http, a.http_addr).await;
        await_applied(&http, b.http_addr, seq).await;
        let path = format!("/v1/stats/pipelines/{PIPELINE}/stats/2025-01-01/2025-12-31");
        assert_eq!(
            nats::answer(&http, a.http_addr, &token, &path).await,
            nats::answer(&http, b.http_addr, &token, &path).await
        );
    });
}
