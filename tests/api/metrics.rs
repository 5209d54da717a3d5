//! `/metrics`: the Prometheus text exposition parses, and its counters move by exactly the
//! requests made (a server in a process of its own, so nothing else records); who may scrape.

use std::collections::HashMap;
use std::net::SocketAddr;

use runledger::proto;
use runledger::proto::ingest_client::IngestClient;

use crate::support::{Bearer, ChildServer, finished, grpc_channel, rest_token, runtime};

/// Every sample of an exposition, `name{labels}` (labels sorted) to value; panics on a line
/// that is not Prometheus text format.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    let mut typed = HashMap::new();
    for line in text.lines().filter(|line| !line.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("HELP"), Some(name), Some(_)) => assert!(valid_name(name), "{line}"),
                (Some("TYPE"), Some(name), Some(kind)) => {
                    assert!(valid_name(name), "{line}");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                        "{line}"
                    );
                    typed.insert(name.to_string(), kind.to_string());
                }
                _ => panic!("a comment that is neither HELP nor TYPE: {line}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other.parse().unwrap_or_else(|_| panic!("value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                let mut pairs: Vec<String> = split_labels(labels)
                    .into_iter()
                    .inspect(|pair| {
                        let (key, value) = pair.split_once('=').unwrap_or_else(|| panic!("{line}"));
                        assert!(valid_name(key), "{line}");
                        assert!(value.starts_with('"') && value.ends_with('"'), "{line}");
                    })
                    .collect();
                pairs.sort();
                (name, pairs.join(","))
            }
            None => (series, String::new()),
        };
        assert!(valid_name(name), "{line}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|base| typed.contains_key(*base))
            .unwrap_or(name);
        assert!(typed.contains_key(family), "{name} has no TYPE line");
        samples.insert(format!("{name}{{{labels}}}"), value);
    }
    samples
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `a="x",b="y,z"` into its pairs (commas inside quotes stay).
fn split_labels(labels: &str) -> Vec<String> {
    let (mut pairs, mut current, mut quoted, mut escaped) =
        (Vec::new(), String::new(), false, false);
    for c in labels.chars() {
        match c {
            ',' if !quoted => pairs.push(std::mem::take(&mut current)),
            '"' if !escaped => {
                quoted = !quoted;
                current.push(c);
            }
            _ => current.push(c),
        }
        escaped = c == '\\' && !escaped;
    }
    if !current.is_empty() {
        pairs.push(current);
    }
    pairs
}

async fn scrape(http: &reqwest::Client, server: SocketAddr) -> HashMap<String, f64> {
    let response = http
        .get(format!("http://{server}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    parse(&response.text().await.unwrap())
}

fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, series: &str) -> f64 {
    after.get(series).copied().unwrap_or(0.0) - before.get(series).copied().unwrap_or(0.0)
}

#[test]
fn counters_move_by_exactly_the_requests_made() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(&dir.path().join("data"));
    let credentials = server.first_client.clone().unwrap();
    let org = credentials["organization_uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let http = reqwest::Client::new();
    runtime().block_on(async {
        let before = scrape(&http, server.http_addr).await;
        let token_url = |secret: &str| {
            format!(
                "http://{}/v1/oauth/token?grant_type=client_credentials&client_id={}&client_secret={secret}",
                server.http_addr,
                credentials["client_id"].as_str().unwrap()
            )
        };
        let token = rest_token(&http, server.http_addr, &credentials, None).await;
        let refused = http.post(token_url("rls_wrong")).send().await.unwrap();
        assert_eq!(refused.status(), 401);

        // One gRPC batch of 5 runs, then REST: 3 answered, 2 without a token.
        let (pipeline, task) = (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());
        let mut ingest =
            IngestClient::with_interceptor(grpc_channel(server.grpc_addr).await, Bearer::new(&token));
        let results = (0..5)
            .map(|i| {
                let mut run = finished(
                    &uuid::Uuid::new_v4().to_string(),
                    &uuid::Uuid::new_v4().to_string(),
                    &pipeline,
                    &task,
                    true,
                    100 + i,
                    "2025-06-01 12:00:00",
                );
                run.organization_uuid = org.clone();
                run
            })
            .collect();
        ingest
            .report_task_run_batch(proto::ReportTaskRunsRequest { results })
            .await
            .unwrap();
        let stats = format!(
            "http://{}/v1/stats/pipelines/{pipeline}/stats/2025-01-01/2025-12-31",
            server.http_addr
        );
        for _ in 0..3 {
            let answer = http.get(&stats).bearer_auth(&token).send().await.unwrap();
            assert_eq!(answer.status(), 200);
        }
        for _ in 0..2 {
            assert_eq!(http.get(&stats).send().await.unwrap().status(), 401);
        }
        let after = scrape(&http, server.http_addr).await;

        let route = r#"route="/v1/stats/{kind}/{uuid}/stats/{from}/{to}""#;
        let requests = |status: &str| {
            format!(r#"runledger_http_requests_total{{method="GET",{route},status="{status}"}}"#)
        };
        assert_eq!(delta(&before, &after, &requests("2xx")), 3.0);
        assert_eq!(delta(&before, &after, &requests("4xx")), 2.0);
        assert_eq!(
            delta(
                &before,
                &after,
                &format!("runledger_http_request_duration_seconds_count{{{route}}}")
            ),
            5.0
        );
        let tokens = |outcome: &str| format!(r#"runledger_token_requests_total{{outcome="{outcome}"}}"#);
        assert_eq!(delta(&before, &after, &tokens("granted")), 1.0);
        assert_eq!(delta(&before, &after, &tokens("refused")), 1.0);
        assert_eq!(
            delta(
                &before,
                &after,
                r#"runledger_grpc_requests_total{code="OK",method="/runledger.v1.Ingest/ReportTaskRunBatch"}"#
            ),
            1.0
        );
        assert_eq!(delta(&before, &after, "runledger_task_runs_applied_total{}"), 5.0);
        assert_eq!(
            delta(&before, &after, r#"runledger_writes_acknowledged_total{kind="report"}"#),
            1.0
        );
        assert_eq!(
            delta(&before, &after, r#"runledger_writes_acknowledged_total{kind="issue_tokens"}"#),
            1.0
        );
        assert!(after["runledger_database_file_bytes{}"] > 0.0);
        assert!(after[r#"runledger_open_connections{front="rest"}"#] >= 1.0);
        assert_eq!(after["runledger_write_queue_depth{}"], 0.0);
        assert!(delta(&before, &after, "runledger_commits_total{}") >= 2.0);
    });
}

#[test]
fn metrics_need_the_token_when_one_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start_with(
        &dir.path().join("data"),
        &["--metrics-token", "scrape-secret"],
        None,
    );
    let http = reqwest::Client::new();
    runtime().block_on(async {
        let url = format!("http://{}/metrics", server.http_addr);
        let bare = http.get(&url).send().await.unwrap();
        assert_eq!(bare.status(), 401);
        let wrong = http.get(&url).bearer_auth("nope").send().await.unwrap();
        assert_eq!(wrong.status(), 401);
        assert!(wrong.text().await.unwrap().contains("--metrics-token"));
        let right = http
            .get(&url)
            .bearer_auth("scrape-secret")
            .send()
            .await
            .unwrap();
        assert_eq!(right.status(), 200);
        parse(&right.text().await.unwrap());
    });
}

#[test]
fn metrics_are_closed_off_loopback_without_a_token() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = runledger::store::Store::open(dir.path(), Default::default()).unwrap();
        let engine = std::sync::Arc::new(runledger::engine::Engine::new(store).unwrap());
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
        let port = http.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(runledger::server::run_fronts(
            engine,
            grpc,
            http,
            runledger::server::Fronts::default(),
            async {
                let _ = stopped.await;
            },
        ));
        let answer = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .unwrap();
        assert_eq!(answer.status(), 403);
        assert!(answer.text().await.unwrap().contains("--metrics-token"));
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    });
}
