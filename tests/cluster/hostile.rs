//! What someone who can publish to NATS, or an operator's mistake, can do to a cluster: forged,
//! tampered, replayed, garbage and broken messages are skipped alike on every node and stop no
//! one; a sequence deleted from the stream stalls a node (as `/healthz` says) until the
//! operator passes over it; a wrong master key publishes nothing and starts nothing; a node of
//! another cluster is refused.

use std::time::{Duration, Instant};

use runledger::cluster::envelope::{Kind, Origin, Sealed, StreamKey, WriterId};
use runledger::cluster::{Log, codec, log};
use runledger::crypto::MasterKey;
use runledger::model::{OrgId, RunState, TaskRun};
use runledger::store::WriteOp;

use crate::nats::{self, await_applied, cli, node};
use crate::support::{refused_serve, rest_token, runtime};

const PIPELINE: &str = "7a000000-0000-4000-8000-000000000001";
const TASK: &str = "7a000000-0000-4000-8000-000000000002";

/// A JetStream context of a plain NATS client with the login in `urls`: what anyone holding
/// that user's password can do (the `node` user may publish on the stream's subjects).
async fn raw(urls: &str) -> async_nats::jetstream::Context {
    async_nats::jetstream::new(nats::raw_client(urls).await)
}

/// Publishes `payload` on `subject` as it is; its stream sequence.
async fn publish(
    js: &async_nats::jetstream::Context,
    subject: &'static str,
    payload: Vec<u8>,
) -> u64 {
    js.publish(subject, payload.into())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence
}

/// The cluster's message key, as a node holding `master_key_file` derives it.
async fn stream_key(urls: &str, master_key_file: &std::path::Path) -> StreamKey {
    let master = MasterKey::given(Some(master_key_file)).unwrap().unwrap();
    let log = Log::connect(urls, Duration::from_secs(10)).await.unwrap();
    log.join(&master).await.unwrap().1
}

/// A node's counter `runledger_cluster_messages_skipped_total{reason=...}`.
async fn skipped(http: &reqwest::Client, node: std::net::SocketAddr, reason: &str) -> u64 {
    let text = http
        .get(format!("http://{node}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("runledger_cluster_messages_skipped_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |count| count.trim().parse().unwrap())
}

/// The pipeline's range stats on `node`.
async fn counted(http: &reqwest::Client, node: std::net::SocketAddr, token: &str) -> String {
    nats::answer(
        http,
        node,
        token,
        &format!("/v1/stats/pipelines/{PIPELINE}/stats/2025-01-01/2025-12-31"),
    )
    .await
    .1
}

#[test]
fn forged_tampered_replayed_and_broken_messages_change_nothing_and_stop_no_one() {
    let Some(binary) = nats::nats_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cluster = nats::one_server(&binary, dir.path());
    let (urls, key) = (&cluster.urls, &cluster.key);
    let a = node(&dir.path().join("a"), urls, key, false);
    let b = node(&dir.path().join("b"), urls, key, false);
    let http = reqwest::Client::new();
    let org = cluster.client["organization_uuid"].as_str().unwrap();
    runtime().block_on(async {
        let token = rest_token(&http, a.http_addr, &cluster.client, None).await;
        let (first, _) = nats::report(a.grpc_addr, &token, org, PIPELINE, TASK, 8).await;
        let js = raw(urls).await;
        let stream = js.get_stream(log::STREAM).await.unwrap();
        let authentic = stream
            .get_raw_message(first)
            .await
            .unwrap()
            .payload
            .to_vec();

        // A client of a new organization, as the issue forged it: the operations alone.
        let (forged_id, forged_secret, create) = runledger::engine::new_client(
            OrgId(uuid::Uuid::new_v4()),
            runledger::auth::Scopes::all(),
        );
        let bare = codec::encode(std::slice::from_ref(&create)).unwrap();
        publish(&js, log::CREDENTIALS_SUBJECT, bare).await;
        // The same, framed under another master key.
        let identity = Log::connect(urls, Duration::from_secs(10))
            .await
            .unwrap()
            .identity()
            .await
            .unwrap()
            .unwrap();
        let wrong = MasterKey::from_base64(&base64_of([9; 32])).unwrap();
        let wrong_key = StreamKey::new(&wrong, identity.cluster);
        let body = codec::encode(std::slice::from_ref(&create)).unwrap();
        let framed = wrong_key.seal(log::CREDENTIALS_SUBJECT, &sealed(1, &body));
        publish(&js, log::CREDENTIALS_SUBJECT, framed).await;
        // Eight bytes of garbage, an authentic message with a byte changed, and one replayed.
        publish(&js, log::DATA_SUBJECT, b"garbage!".to_vec()).await;
        let mut tampered = authentic.clone();
        let middle = tampered.len() / 2;
        tampered[middle] ^= 0x40;
        publish(&js, log::DATA_SUBJECT, tampered).await;
        publish(&js, log::DATA_SUBJECT, authentic).await;
        // Authentic, but a report naming no organization (a writer's bug).
        let key_of_cluster = stream_key(urls, key).await;
        let orphan = WriteOp::Report {
            runs: vec![run_without_organization()],
            at: runledger::time::Timestamp::now(),
        };
        let body = codec::encode(&[orphan]).unwrap();
        let broken = key_of_cluster.seal(log::DATA_SUBJECT, &sealed(1, &body));
        let last_bad = publish(&js, log::DATA_SUBJECT, broken).await;

        // Nobody stopped: a report through B after all of it is applied on both nodes.
        let (second, _) = nats::report(b.grpc_addr, &token, org, PIPELINE, TASK, 8).await;
        assert!(second > last_bad);
        for node in [&a, &b] {
            await_applied(&http, node.http_addr, second).await;
        }
        let on_a = counted(&http, a.http_addr, &token).await;
        assert!(
            on_a.contains("\"num_of_successes\":12,\"num_of_failures\":4"),
            "{on_a}"
        );
        assert_eq!(counted(&http, b.http_addr, &token).await, on_a);
        // The forged client exists nowhere.
        let forged = serde_json::json!({"client_id": forged_id, "client_secret": forged_secret});
        for node in [&a, &b] {
            let response = http
                .post(format!("http://{}/v1/oauth/token", node.http_addr))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", forged["client_id"].as_str().unwrap()),
                    ("client_secret", forged["client_secret"].as_str().unwrap()),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 401);
        }
        for node in [&a, &b] {
            // The bare and the wrongly keyed ones, and the tampered one.
            assert_eq!(skipped(&http, node.http_addr, "unauthentic").await, 3);
            // The garbage and the report without an organization.
            assert_eq!(skipped(&http, node.http_addr, "malformed").await, 2);
            assert!(skipped(&http, node.http_addr, "duplicate").await >= 1);
        }
    });
    let digests: Vec<String> = [("a", a), ("b", b)]
        .into_iter()
        .map(|(name, server)| {
            assert!(server.stop());
            crate::support::digest(&dir.path().join(name))
        })
        .collect();
    assert_eq!(digests[0], digests[1]);
}

#[test]
fn a_missing_sequence_stalls_a_node_until_the_operator_passes_over_it() {
    let Some(binary) = nats::nats_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cluster = nats::one_server(&binary, dir.path());
    let (urls, key) = (&cluster.urls, &cluster.key);
    let a = node(&dir.path().join("a"), urls, key, false);
    let b = node(&dir.path().join("b"), urls, key, false);
    let http = reqwest::Client::new();
    let org = cluster.client["organization_uuid"].as_str().unwrap();
    let rt = runtime();
    let token = rt.block_on(async {
        let token = rest_token(&http, a.http_addr, &cluster.client, None).await;
        let (seq, _) = nats::report(a.grpc_addr, &token, org, PIPELINE, TASK, 4).await;
        await_applied(&http, b.http_addr, seq).await;
        token
    });
    assert!(b.stop());
    let last = rt.block_on(async {
        let (lost, _) = nats::report(a.grpc_addr, &token, org, PIPELINE, TASK, 4).await;
        let (last, _) = nats::report(a.grpc_addr, &token, org, PIPELINE, TASK, 4).await;
        // The operator deletes one (the node user may not).
        let stream = raw(&nats::admin(urls))
            .await
            .get_stream(log::STREAM)
            .await
            .unwrap();
        assert!(stream.delete_message(lost).await.unwrap());
        last
    });
    let lost = last - 1;
    let b = node(&dir.path().join("b"), urls, key, false);
    rt.block_on(async {
        // B says it is stuck, where, and what to do.
        let deadline = Instant::now() + Duration::from_secs(60);
        let health = loop {
            let response = http
                .get(format!("http://{}/healthz", b.http_addr))
                .send()
                .await
                .unwrap();
            if response.status() == 503 {
                break response.json::<serde_json::Value>().await.unwrap();
            }
            assert!(Instant::now() < deadline, "B never said it was stalled");
        };
        assert_eq!(health["status"], "stalled", "{health}");
        let why = health["stalled"].as_str().unwrap();
        assert!(
            why.contains(&format!("sequence {lost}"))
                && why.contains(&format!("cluster skip {lost}")),
            "{why}"
        );
        assert_eq!(health["quorum"], true);

        // The operator passes over it: B goes on, without the lost report's runs.
        let (ok, out, err) = cli(&[
            "cluster",
            "skip",
            "--nats",
            &nats::admin(urls),
            "--master-key-file",
            key.to_str().unwrap(),
            &lost.to_string(),
        ]);
        assert!(ok, "{out}{err}");
        await_applied(&http, b.http_addr, last + 1).await;
        let health: serde_json::Value = http
            .get(format!("http://{}/healthz", b.http_addr))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(health["status"], "ok", "{health}");
        assert!(health["stalled"].is_null());
        let on_a = counted(&http, a.http_addr, &token).await;
        let on_b = counted(&http, b.http_addr, &token).await;
        assert!(
            on_a.contains("\"num_of_successes\":9,\"num_of_failures\":3"),
            "{on_a}"
        );
        assert!(
            on_b.contains("\"num_of_successes\":6,\"num_of_failures\":2"),
            "{on_b}"
        );
        assert_eq!(skipped(&http, b.http_addr, "passed_over").await, 1);
        assert_eq!(skipped(&http, a.http_addr, "passed_over").await, 0);
    });
    // Nothing to pass over past the stream's end, nor a malformed range.
    for bad in ["999999", "5..2", "x"] {
        let (ok, _, err) = cli(&[
            "cluster",
            "skip",
            "--nats",
            &nats::admin(urls),
            "--master-key-file",
            key.to_str().unwrap(),
            bad,
        ]);
        assert!(!ok && !err.is_empty(), "{bad}");
    }
}

#[test]
fn a_wrong_master_key_or_another_clusters_node_is_refused_before_anything_is_written() {
    let Some(binary) = nats::nats_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cluster = nats::one_server(&binary, dir.path());
    let (urls, key) = (&cluster.urls, &cluster.key);
    let wrong = dir.path().join("wrong.key");
    std::fs::write(&wrong, base64_of([5; 32])).unwrap();
    let rt = runtime();
    let log = rt
        .block_on(Log::connect(urls, Duration::from_secs(10)))
        .unwrap();
    let before = rt.block_on(log.state()).unwrap().last_seq;
    let runs = dir.path().join("runs.ndjson");
    std::fs::write(
        &runs,
        runledger::workload::to_json_line(&run_of(OrgId(uuid::Uuid::new_v4()))),
    )
    .unwrap();
    for args in [
        vec!["client", "create"],
        vec!["import", runs.to_str().unwrap()],
    ] {
        let mut args = args;
        args.extend(["--nats", urls, "--master-key-file", wrong.to_str().unwrap()]);
        let (ok, _, err) = cli(&args);
        assert!(
            !ok && err.contains("not the one cluster"),
            "{args:?}: {err}"
        );
    }
    let refused = refused_serve(
        &dir.path().join("x"),
        &["--nats", urls, "--master-key-file", wrong.to_str().unwrap()],
        "a node with a wrong master key started",
    );
    assert!(refused.contains("not the one cluster"), "{refused}");
    assert_eq!(
        rt.block_on(log.state()).unwrap().last_seq,
        before,
        "nothing was published"
    );

    // A node of this cluster, then its data dir against another cluster made with the same
    // master key: refused, and this cluster's messages replayed there are refused too.
    let a_dir = dir.path().join("a");
    let a = node(&a_dir, urls, key, false);
    let http = reqwest::Client::new();
    let org = cluster.client["organization_uuid"].as_str().unwrap();
    let report_seq = rt.block_on(async {
        let token = rest_token(&http, a.http_addr, &cluster.client, None).await;
        nats::report(a.grpc_addr, &token, org, PIPELINE, TASK, 4)
            .await
            .0
    });
    assert!(a.stop());
    let other_dir = dir.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let other = nats::start_nats(&binary, &other_dir, 1);
    let other_urls = nats::urls(&other);
    let other_client = nats::init(&other_urls, key);
    let refused = refused_serve(
        &a_dir,
        &[
            "--nats",
            &other_urls,
            "--master-key-file",
            key.to_str().unwrap(),
        ],
        "another cluster's node started",
    );
    assert!(refused.contains("belongs to cluster"), "{refused}");
    let fresh = node(&dir.path().join("fresh"), &other_urls, key, false);
    rt.block_on(async {
        let stream = raw(urls).await.get_stream(log::STREAM).await.unwrap();
        let message = stream
            .get_raw_message(report_seq)
            .await
            .unwrap()
            .payload
            .to_vec();
        let replayed = publish(&raw(&other_urls).await, log::DATA_SUBJECT, message).await;
        await_applied(&http, fresh.http_addr, replayed).await;
        assert_eq!(skipped(&http, fresh.http_addr, "unauthentic").await, 1);
        let token = rest_token(&http, fresh.http_addr, &other_client, None).await;
        let answer = counted(&http, fresh.http_addr, &token).await;
        assert!(answer.contains("not found"), "{answer}");
    });
}

fn sealed(number: u64, body: &[u8]) -> Sealed<'_> {
    Sealed {
        origin: Origin {
            writer: WriterId::random(),
            number,
        },
        confirmed: 0,
        kind: Kind::Operations,
        deadline: None,
        body,
    }
}

fn base64_of(bytes: [u8; 32]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn run_of(org: OrgId) -> TaskRun {
    TaskRun {
        task_run: runledger::model::TaskRunId(uuid::Uuid::new_v4()),
        pipeline_run: runledger::model::PipelineRunId(uuid::Uuid::new_v4()),
        pipeline: runledger::model::PipelineId(PIPELINE.parse().unwrap()),
        task: runledger::model::TaskId(TASK.parse().unwrap()),
        organization: Some(org),
        task_type: runledger::model::TaskType::Query,
        state: RunState::Finished,
        is_successful: true,
        duration_ms: 10,
        executed_at: runledger::time::Timestamp::from_micros(1_750_000_000_000_000),
        output: Vec::new(),
        errors: Vec::new(),
        metric_value: None,
        is_initial_task: true,
        is_final_task: true,
    }
}

fn run_without_organization() -> TaskRun {
    TaskRun {
        organization: None,
        ..run_of(OrgId(uuid::Uuid::nil()))
    }
}
