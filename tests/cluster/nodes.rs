//! Several nodes on one stream: credentials made or revoked anywhere hold everywhere, and a
//! read carrying the write's sequence never answers from before the write.

use std::time::{Duration, Instant};

use runledger::proto;
use runledger::proto::ingest_client::IngestClient;

use crate::nats::{self, cli, node};
use crate::support::rest_token;
use crate::support::{Bearer, finished, grpc_channel, runtime};

#[test]
fn credentials_made_or_revoked_on_one_node_hold_on_every_node() {
    let Some(binary) = nats::nats_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cluster = nats::one_server(&binary, dir.path());
    let (urls, key) = (&cluster.urls, &cluster.key);
    let a = node(&dir.path().join("a"), urls, key, false);
    let c = node(&dir.path().join("c"), urls, key, false);

    // Created cluster-wide (the CLI publishes to the stream), used on node C at once.
    let (ok, out, err) = cli(&[
        "client",
        "create",
        "--nats",
        urls,
        "--master-key-file",
        key.to_str().unwrap(),
        "--scopes",
        "stats:read,runs:write",
    ]);
    assert!(ok, "{err}");
    let client: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let http = reqwest::Client::new();
    runtime().block_on(async {
        let on_c = rest_token(&http, c.http_addr, &client, None).await;
        let on_a = rest_token(&http, a.http_addr, &client, None).await;
        // A token granted on C works on A once A has applied the grant (the grant's sequence).
        let overview = |node: std::net::SocketAddr, token: &str, min_seq: Option<u64>| {
            let mut request = http
                .get(format!("http://{node}/v1/stats/pipelines"))
                .bearer_auth(token);
            if let Some(seq) = min_seq {
                request = request.header("x-runledger-min-seq", seq.to_string());
            }
            request.send()
        };
        // A token granted on C is honoured on A at once: A catches up on credentials first.
        let fresh = rest_token(&http, c.http_addr, &client, None).await;
        assert_eq!(
            overview(a.http_addr, &fresh, None).await.unwrap().status(),
            200
        );
        let seq = nats::applied(&http, c.http_addr).await;
        assert_eq!(
            overview(a.http_addr, &on_c, Some(seq))
                .await
                .unwrap()
                .status(),
            200
        );
        assert_eq!(
            overview(c.http_addr, &on_a, None).await.unwrap().status(),
            200
        );

        // Revoked through node C's admin socket: node A refuses the token within a second.
        let (ok, _, err) = cli(&[
            "client",
            "revoke",
            "--data-dir",
            dir.path().join("c").to_str().unwrap(),
            client["client_id"].as_str().unwrap(),
        ]);
        assert!(ok, "{err}");
        let revoked = Instant::now();
        loop {
            let status = overview(a.http_addr, &on_a, None).await.unwrap().status();
            if status == 401 {
                break;
            }
            assert_eq!(status, 200);
            assert!(
                revoked.elapsed() < Duration::from_secs(1),
                "node A still honoured the revoked client's token after a second"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // And a new grant is refused everywhere.
        let refused = http
            .post(format!("http://{}/v1/oauth/token", c.http_addr))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client["client_id"].as_str().unwrap()),
                ("client_secret", client["client_secret"].as_str().unwrap()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401);
    });
}

#[test]
fn a_read_with_the_writes_sequence_sees_the_write_on_another_node() {
    let Some(binary) = nats::nats_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cluster = nats::one_server(&binary, dir.path());
    let (urls, key, client) = (&cluster.urls, &cluster.key, &cluster.client);
    let a = node(&dir.path().join("a"), urls, key, false);
    let b = node(&dir.path().join("b"), urls, key, false);
    let http = reqwest::Client::new();
    runtime().block_on(async {
        let token = rest_token(&http, a.http_addr, client, None).await;
        let org = client["organization_uuid"].as_str().unwrap();
        let mut ingest =
            IngestClient::with_interceptor(grpc_channel(a.grpc_addr).await, Bearer::new(&token));
        let pipeline = uuid::Uuid::new_v4().to_string();
        let task = uuid::Uuid::new_v4().to_string();
        for round in 1..=40u64 {
            let mut run = finished(
                &uuid::Uuid::new_v4().to_string(),
                &uuid::Uuid::new_v4().to_string(),
                &pipeline,
                &task,
                round % 3 != 0,
                100 + round as u32,
                "2025-06-01 12:00:00",
            );
            run.organization_uuid = org.into();
            let response = ingest
                .report_task_run_batch(proto::ReportTaskRunsRequest { results: vec![run] })
                .await
                .unwrap();
            let seq: u64 = response
                .metadata()
                .get("x-runledger-seq")
                .expect("a write answer carries its sequence")
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(response.get_ref().inserted, 1);
            // On node B, right away, with the write's sequence: never the answer from before.
            let stats = http
                .get(format!(
                    "http://{}/v1/stats/tasks/{task}/stats/2025-01-01/2025-12-31",
                    b.http_addr
                ))
                .bearer_auth(&token)
                .header("x-runledger-min-seq", seq.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(stats.status(), 200, "round {round}");
            let applied: u64 = stats.headers()["x-runledger-applied-seq"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(applied >= seq);
            let body: serde_json::Value = stats.json().await.unwrap();
            let counted = body["num_of_successes"].as_u64().unwrap()
                + body["num_of_failures"].as_u64().unwrap();
            assert_eq!(counted, round, "round {round}: {body}");
        }
        // A sequence the node will not reach in time: 503 with Retry-After, not a stale answer.
        let ahead = http
            .get(format!(
                "http://{}/v1/stats/tasks/{task}/stats/2025-01-01/2025-12-31",
                b.http_addr
            ))
            .bearer_auth(&token)
            .header("x-runledger-min-seq", "1000000")
            .send()
            .await
            .unwrap();
        assert_eq!(ahead.status(), 503);
        assert_eq!(ahead.headers()["retry-after"], "1");
        let malformed = http
            .get(format!("http://{}/healthz", b.http_addr))
            .header("x-runledger-min-seq", "soon")
            .send()
            .await
            .unwrap();
        assert_eq!(malformed.status(), 400);
        assert!(
            malformed
                .text()
                .await
                .unwrap()
                .contains("x-runledger-min-seq")
        );
    });
}

#[test]
fn trimming_keeps_what_nodes_and_the_backup_need_and_a_gateway_only_writes() {
    let Some(binary) = nats::nats_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cluster = nats::one_server(&binary, dir.path());
    let (urls, key, client) = (&cluster.urls, &cluster.key, &cluster.client);
    let org = client["organization_uuid"].as_str().unwrap().to_string();
    let data = |name: &str| dir.path().join(name);
    let a = node(&data("a"), urls, key, false);
    let b = node(&data("b"), urls, key, false);
    let gateway = node(&data("g"), urls, key, true);
    let http = reqwest::Client::new();
    let (pipeline, task) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let stats_path = format!("/v1/stats/tasks/{task}/stats/2025-01-01/2025-12-31");
    runtime().block_on(async {
        let token = rest_token(&http, a.http_addr, client, None).await;
        nats::report(a.grpc_addr, &token, &org, &pipeline, &task, 50).await;

        // A gateway takes writes (acknowledged by the log, counts unknown) and refuses reads.
        nats::await_applied(&http, b.http_addr, nats::applied(&http, a.http_addr).await).await;
        let (seq, counts) =
            nats::report(gateway.grpc_addr, &token, &org, &pipeline, &task, 30).await;
        assert_eq!((counts.batches, counts.inserted), (1, 0));
        let refused = http
            .get(format!("http://{}{stats_path}", gateway.http_addr))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 503);
        assert!(refused.text().await.unwrap().contains("gateway"));
        nats::await_applied(&http, a.http_addr, seq).await;

        // A backup of A, then more writes: trimming keeps everything after the backup.
        let backup = data("backup");
        let held = nats::backup(&data("a"), &backup);
        assert!(held >= seq);
        let (last, _) = nats::report(a.grpc_addr, &token, &org, &pipeline, &task, 20).await;
        nats::await_applied(&http, b.http_addr, last).await;
        let (ok, out, err) = cli(&[
            "cluster",
            "trim",
            "--nats",
            &nats::admin(urls),
            "--node",
            &format!("http://{}", a.http_addr),
            "--node",
            &format!("http://{}", b.http_addr),
            "--backup",
            backup.to_str().unwrap(),
        ]);
        assert!(ok, "{err}");
        assert!(
            out.contains(&format!("below sequence {}", held + 1)),
            "{out}"
        );
        let (ok, out, _) = cli(&["cluster", "status", "--nats", urls]);
        assert!(ok);
        let status: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(status["first_seq"], held + 1);
        assert_eq!(
            status["adopted"],
            serde_json::Value::Null,
            "made by cluster init"
        );

        // A node restored from the backup catches up from the stream's tail...
        nats::restore(&backup, &data("c"));
        let c = node(&data("c"), urls, key, false);
        nats::await_applied(&http, c.http_addr, last).await;
        let answer = |node: std::net::SocketAddr| {
            let request = http
                .get(format!("http://{node}{stats_path}"))
                .bearer_auth(&token)
                .send();
            async move { request.await.unwrap().text().await.unwrap() }
        };
        let on_a = answer(a.http_addr).await;
        assert!(on_a.contains("\"num_of_successes\":74"), "{on_a}");
        assert_eq!(answer(c.http_addr).await, on_a);

        // ...while an empty node cannot: what it would need first was trimmed.
        let d = node(&data("d"), urls, key, false);
        let behind = http
            .get(format!("http://{}/healthz", d.http_addr))
            .header("x-runledger-min-seq", "1")
            .send()
            .await
            .unwrap();
        assert_eq!(behind.status(), 503);
        assert_eq!(behind.headers()["x-runledger-applied-seq"], "0");
        drop(d);
        let log = std::fs::read_to_string(data("d").with_extension("server.log")).unwrap();
        assert!(
            log.contains("no longer holds sequences 1 to")
                && log.contains("runledger cluster skip"),
            "the node says why it cannot catch up: {log}"
        );
        // Stopped cleanly, a gateway leaves no scratch directory behind.
        let scratch = |pid: u32| {
            std::fs::read_dir(std::env::temp_dir())
                .unwrap()
                .flatten()
                .any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!("runledger-gateway-{pid}-"))
                })
        };
        let pid = gateway.child.id();
        assert!(scratch(pid));
        assert!(gateway.stop());
        assert!(!scratch(pid));
    });
}
