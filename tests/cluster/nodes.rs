//! Several nodes on one stream: credentials made or revoked anywhere hold everywhere, and a
//! read carrying the write's sequence never answers from before the write.

use std::time::{Duration, Instant};

use runledger::proto;
use runledger::proto::ingest_client::IngestClient;

use crate::nats::{self, cli, node};
use crate::support::rest_token;
use crate::support::{Bearer, finished, get_json, grpc_channel, runtime};

/// Waits until `node` refuses `token` (401), at most a second (answering 200 until then).
async fn refused_within_a_second(
    http: &reqwest::Client,
    node: std::net::SocketAddr,
    token: &str,
    what: &str,
) {
    let revoked = Instant::now();
    loop {
        let status = http
            .get(format!("http://{node}/v1/stats/pipelines"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status();
        if status == 401 {
            return;
        }
        assert_eq!(status, 200);
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "{what} was still honoured after a second"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

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
        refused_within_a_second(
            &http,
            a.http_addr,
            &on_a,
            "node A, the revoked client's token",
        )
        .await;
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

/// An Airflow-shaped OpenLineage history of `runs` DAG runs (a task failing now and then), in
/// the order an emitter sends it.
fn lineage_history(runs: u128) -> Vec<serde_json::Value> {
    let event = |kind: &str,
                 time: String,
                 run: uuid::Uuid,
                 job: &str,
                 parent: Option<uuid::Uuid>| {
        let mut facets = serde_json::json!({});
        if let Some(parent) = parent {
            let of = serde_json::json!({"run": {"runId": parent}, "job": {"namespace": "airflow", "name": "etl"}});
            facets["parent"] = of.clone();
            facets["parent"]["root"] = of;
        }
        serde_json::json!({
            "eventType": kind, "eventTime": time, "producer": "test",
            "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
            "run": {"runId": run, "facets": facets}, "job": {"namespace": "airflow", "name": job},
        })
    };
    let mut events = Vec::new();
    for day in 0..runs {
        let dag = uuid::Uuid::from_u128(0xda90_0000_0000_7000_8000_0000_0000_0000 + day);
        let at = |minute: u128| format!("2025-03-{:02}T02:{minute:02}:00Z", 1 + day % 28);
        events.push(event("START", at(0), dag, "etl", None));
        for (index, task) in ["etl.extract", "etl.load"].iter().enumerate() {
            let run = uuid::Uuid::from_u128(
                0x7a50_0000_0000_7000_8000_0000_0000_0000 + day * 4 + index as u128,
            );
            let start = 1 + index as u128 * 10;
            events.push(event("START", at(start), run, task, Some(dag)));
            let end = if (day + index as u128) % 5 == 0 {
                "FAIL"
            } else {
                "COMPLETE"
            };
            events.push(event(end, at(start + 3 + day % 4), run, task, Some(dag)));
        }
        events.push(event("COMPLETE", at(30), dag, "etl", None));
    }
    events
}

#[test]
fn openlineage_events_and_api_keys_hold_cluster_wide_as_on_a_single_node() {
    let Some(binary) = nats::nats_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cluster = nats::one_server(&binary, dir.path());
    let (urls, key) = (&cluster.urls, &cluster.key);
    let org = cluster.client["organization_uuid"].as_str().unwrap();
    let a = node(&dir.path().join("a"), urls, key, false);
    let b = node(&dir.path().join("b"), urls, key, false);
    // An API key made through the stream.
    let (ok, out, err) = cli(&[
        "key",
        "create",
        "--nats",
        urls,
        "--master-key-file",
        key.to_str().unwrap(),
        "--org",
        org,
        "--scopes",
        "runs:write,stats:read",
        "--name",
        "airflow",
    ]);
    assert!(ok, "{err}");
    let created: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let api_key = created["api_key"].as_str().unwrap().to_string();
    // The single node fed the same events, in the same order.
    let single = crate::support::ChildServer::start(&dir.path().join("single"));
    let single_client = single.first_client.clone().unwrap();
    let http = reqwest::Client::new();
    let events = lineage_history(12);
    runtime().block_on(async {
        let single_token = rest_token(&http, single.http_addr, &single_client, None).await;
        let mut last_seq = 0u64;
        for event in &events {
            let body = serde_json::to_vec(event).unwrap();
            // The key is honoured on node A at once: A catches up on credentials first.
            let on_a = http
                .post(format!("http://{}/api/v1/lineage", a.http_addr))
                .bearer_auth(&api_key)
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(on_a.status(), 201);
            last_seq = on_a.headers()["x-runledger-seq"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            let on_single = http
                .post(format!("http://{}/api/v1/lineage", single.http_addr))
                .bearer_auth(&single_token)
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(on_single.status(), 201);
        }
        let pipeline = uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_URL,
            b"openlineage:pipeline:airflow/etl",
        );
        let load = uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_URL,
            b"openlineage:task:airflow/etl.load",
        );
        for path in [
            format!("/v1/stats/pipelines/{pipeline}/stats/2025-03-01/2025-03-31"),
            format!("/v1/stats/pipelines/{pipeline}/aggregated-stats/2025-03-01/week/5"),
            format!("/v1/stats/tasks/{load}/stats/2025-03-01/2025-03-31"),
            format!("/v1/stats/pipelines/{pipeline}/last-run/stats"),
            format!("/v1/stats/pipelines/{pipeline}/running"),
        ] {
            let on_b = http
                .get(format!("http://{}{path}", b.http_addr))
                .bearer_auth(&api_key)
                .header("x-runledger-min-seq", last_seq.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(on_b.status(), 200, "{path}");
            let on_b: serde_json::Value = on_b.json().await.unwrap();
            let on_single: serde_json::Value = get_json(
                &http,
                format!("http://{}{path}", single.http_addr),
                &single_token,
            )
            .await;
            assert_eq!(on_b, on_single, "{path}");
        }
        let stats: serde_json::Value = get_json(
            &http,
            format!(
                "http://{}/v1/stats/pipelines/{pipeline}/stats/2025-03-01/2025-03-31",
                b.http_addr
            ),
            &api_key,
        )
        .await;
        assert_eq!(
            stats["num_of_successes"].as_u64().unwrap()
                + stats["num_of_failures"].as_u64().unwrap(),
            12,
            "{stats}"
        );
        // Revoked through the stream: node B refuses the key within a second.
        let (ok, _, err) = cli(&[
            "key",
            "revoke",
            "--nats",
            urls,
            "--master-key-file",
            key.to_str().unwrap(),
            created["key_id"].as_str().unwrap(),
        ]);
        assert!(ok, "{err}");
        refused_within_a_second(&http, b.http_addr, &api_key, "node B, the revoked key").await;
    });
    assert!(single.stop());
}

/// Whether a node delivers alerts now (its `runledger_alert_courier` gauge).
async fn delivers(http: &reqwest::Client, node: std::net::SocketAddr) -> bool {
    let Ok(response) = http.get(format!("http://{node}/metrics")).send().await else {
        return false;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .any(|line| line.trim() == "runledger_alert_courier 1")
}

#[test]
fn an_alert_is_delivered_by_one_node_and_by_another_when_that_one_is_killed() {
    use crate::support::receiver::{Reply, create_rule, failed_rule, python_verifies, receiver};
    let Some(binary) = nats::nats_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cluster = nats::one_server(&binary, dir.path());
    let (urls, key) = (&cluster.urls, &cluster.key);
    let args = [
        "--nats",
        urls.as_str(),
        "--master-key-file",
        key.to_str().unwrap(),
        "--webhook-allow-net",
        "127.0.0.1/32",
    ];
    let mut nodes: Vec<Option<crate::support::ChildServer>> = ["a", "b", "c"]
        .iter()
        .map(|name| {
            Some(crate::support::ChildServer::start_with(
                &dir.path().join(name),
                &args,
                None,
            ))
        })
        .collect();
    let http = reqwest::Client::new();
    let rt = runtime();
    let addr = |nodes: &[Option<crate::support::ChildServer>], i: usize| {
        let node = nodes[i].as_ref().unwrap();
        (node.http_addr, node.grpc_addr)
    };
    rt.block_on(async {
        // The first attempt hangs; the node making it is killed meanwhile.
        let (url, mut received) = receiver(vec![Reply::Hang]).await;
        let token = rest_token(&http, addr(&nodes, 0).0, &cluster.client, None).await;
        let pipeline = "c1000000-0000-4000-8000-000000000000";
        create_rule(
            &http,
            addr(&nodes, 0).0,
            &token,
            &failed_rule(pipeline, &url),
        )
        .await;
        let mut ingest = IngestClient::with_interceptor(
            grpc_channel(addr(&nodes, 1).1).await,
            Bearer::new(&token),
        );
        let mut failed = finished(
            "c1000000-0000-4000-8000-000000000001",
            "c1000000-0000-4000-8000-000000000002",
            pipeline,
            "c1000000-0000-4000-8000-000000000003",
            false,
            10,
            "2025-03-01 02:00:00",
        );
        failed.organization_uuid.clear();
        ingest
            .report_task_run_batch(proto::ReportTaskRunsRequest {
                results: vec![failed.clone()],
            })
            .await
            .unwrap();
        let wait = Duration::from_secs(60);
        let first = tokio::time::timeout(wait, received.recv())
            .await
            .expect("a first attempt")
            .unwrap();
        // Exactly one node holds the lease; kill it.
        let mut holders = Vec::new();
        for i in 0..3 {
            if delivers(&http, addr(&nodes, i).0).await {
                holders.push(i);
            }
        }
        assert_eq!(holders.len(), 1, "one node delivers: {holders:?}");
        nodes[holders[0]].take().unwrap().kill();

        let second = tokio::time::timeout(wait, received.recv())
            .await
            .expect("another node delivers within the lease's life")
            .unwrap();
        assert_eq!(second.id, first.id, "the same delivery, by another node");
        assert_eq!(second.body, first.body);
        python_verifies(&[first, second]);
        // Delivered: the new holder's outbox empties, and nothing more is sent.
        let survivors: Vec<usize> = (0..3).filter(|i| nodes[*i].is_some()).collect();
        let deadline = Instant::now() + wait;
        'emptied: loop {
            for &i in &survivors {
                let metrics = crate::support::metrics_text(&http, addr(&nodes, i).0).await;
                if metrics.contains("runledger_alert_courier 1")
                    && metrics.contains("runledger_alert_outbox_depth 0")
                {
                    break 'emptied;
                }
            }
            assert!(Instant::now() < deadline, "the outbox never emptied");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Both survivors list the same one alert.
        let mut listed = Vec::new();
        for &i in &survivors {
            let alerts: serde_json::Value = get_json(
                &http,
                format!("http://{}/v1/alerts", addr(&nodes, i).0),
                &token,
            )
            .await;
            listed.push(alerts);
        }
        assert_eq!(listed[0].as_array().unwrap().len(), 1, "{}", listed[0]);
        assert_eq!(listed[0], listed[1]);
        assert!(
            received.try_recv().is_err(),
            "delivered more than once after the kill"
        );

        // A single node fed what the writers sent, in that order (the rule, then the report),
        // has the same alert (its rule has its own UUID, and so its alert its own id).
        let (single_url, mut single_received) = receiver(vec![]).await;
        let single = crate::support::ChildServer::start_with(
            &dir.path().join("single"),
            &["--webhook-allow-net", "127.0.0.1/32"],
            None,
        );
        let single_token = rest_token(
            &http,
            single.http_addr,
            &single.first_client.clone().unwrap(),
            None,
        )
        .await;
        create_rule(
            &http,
            single.http_addr,
            &single_token,
            &failed_rule(pipeline, &single_url),
        )
        .await;
        IngestClient::with_interceptor(
            grpc_channel(single.grpc_addr).await,
            Bearer::new(&single_token),
        )
        .report_task_run_batch(proto::ReportTaskRunsRequest {
            results: vec![failed.clone()],
        })
        .await
        .unwrap();
        tokio::time::timeout(wait, single_received.recv())
            .await
            .expect("the single node delivers")
            .unwrap();
        let alone = get_json(
            &http,
            format!("http://{}/v1/alerts", single.http_addr),
            &single_token,
        )
        .await;
        let comparable = |alerts: &serde_json::Value| {
            let mut alert = alerts[0].clone();
            for field in ["alert_id", "rule_uuid", "since"] {
                alert[field] = serde_json::Value::Null;
            }
            alert
        };
        assert_eq!(alone.as_array().unwrap().len(), 1, "{alone}");
        assert_eq!(comparable(&alone), comparable(&listed[0]));
        assert!(single.stop());
    });
    for node in nodes.into_iter().flatten() {
        assert!(node.stop());
    }
}
