//! Alert deliveries end to end: a run that fires an alert, a local receiver scripted to answer
//! 500, time out, 429 and 200 (then 410), the signatures checked by Python's own `hmac`, the
//! retries' id and spacing, 410 disabling the webhook, and redirects never leading to an
//! address the server may not reach.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use runledger::alerts::retry::Schedule;
use runledger::engine::{DeliveryOptions, Engine};
use runledger::proto;

use crate::support::receiver::{self, Received, Reply, failed_rule, python_verifies, receiver};
use crate::support::{ORG, TestApp, finished, get_json, spawn_configured};

/// A server delivering to loopback on a schedule of 20 ms units, attempts timing out after
/// 500 ms.
async fn delivering_app(redirects: u8) -> TestApp {
    spawn_configured(
        tempfile::tempdir().unwrap(),
        move |engine: Engine| {
            engine
                .with_webhook_allow("127.0.0.1/32".parse().unwrap())
                .with_deliveries(DeliveryOptions {
                    schedule: Schedule {
                        unit: Duration::from_millis(20),
                    },
                    timeout: Duration::from_millis(500),
                    redirects,
                    ..DeliveryOptions::default()
                })
        },
        Default::default(),
    )
    .await
}

const PIPELINE: &str = "6a1f4b7e-1d2c-4e3f-8a9b-0c1d2e3f4a5b";
const TASK: &str = "7b2e5c8f-2e3d-4f40-9bac-1d2e3f4a5b6c";

async fn create_rule(app: &TestApp, url: &str) -> String {
    let http = reqwest::Client::new();
    receiver::create_rule(
        &http,
        app.http_addr,
        &app.token,
        &failed_rule(PIPELINE, url),
    )
    .await
}

/// Reports one finished pipeline run of [`PIPELINE`] (one task run).
async fn report(app: &TestApp, n: u32, ok: bool) {
    let run = format!("00000000-0000-4000-8000-{n:012}");
    let task_run = format!("00000000-0000-4000-9000-{n:012}");
    let at = format!("2025-03-0{} 02:00:00", n.min(9));
    let mut ingest = app.ingest().await;
    ingest
        .report_task_run_batch(proto::ReportTaskRunsRequest {
            results: vec![finished(&task_run, &run, PIPELINE, TASK, ok, 1_000, &at)],
        })
        .await
        .unwrap();
}

async fn next(received: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    tokio::time::timeout(Duration::from_secs(20), received.recv())
        .await
        .expect("a delivery within 20 s")
        .expect("the receiver runs")
}

/// Waits until the outbox holds `depth` entries.
async fn outbox_reaches(engine: &Engine, depth: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while engine.outbox_depth().unwrap() != depth {
        assert!(Instant::now() < deadline, "the outbox never held {depth}");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_failure_is_delivered_through_500_timeout_and_429_with_one_id_and_410_disables() {
    let (url, mut received) = receiver(vec![
        Reply::Status(500),
        Reply::Hang,
        Reply::TooMany { retry_after: 3 },
        Reply::Status(200),
        // The resolution: 410 Gone disables the webhook.
        Reply::Status(410),
    ])
    .await;
    let app = delivering_app(0).await;
    let rule = create_rule(&app, &url).await;
    // The schedule counts from the transition, which is after this instant (not from the
    // first attempt, which a busy machine may make late).
    let reported = Instant::now();
    report(&app, 1, false).await;

    let attempts = [
        next(&mut received).await,
        next(&mut received).await,
        next(&mut received).await,
        next(&mut received).await,
    ];
    for attempt in &attempts[1..] {
        assert_eq!(
            attempt.id, attempts[0].id,
            "every retry carries the same id"
        );
        assert_eq!(attempt.body, attempts[0].body);
    }
    let unit = Duration::from_millis(20);
    // Retries at about 5, 30 and 120 units after the transition; the 429's Retry-After
    // (3 s) is longer than the schedule's next delay, so it is honoured.
    assert!(attempts[1].at - reported >= unit * 5);
    assert!(attempts[2].at - reported >= unit * 30);
    assert!(attempts[3].at - attempts[2].at >= Duration::from_secs(3));
    let body: Value = serde_json::from_slice(&attempts[0].body).unwrap();
    assert_eq!(body["type"], "alert.firing");
    assert_eq!(body["data"]["rule_uuid"], rule.as_str());
    assert_eq!(body["data"]["kind"], "failed");
    assert_eq!(body["data"]["pipeline_uuid"], PIPELINE);
    assert_eq!(
        body["data"]["pipeline_run_uuid"],
        "00000000-0000-4000-8000-000000000001"
    );
    outbox_reaches(&app.engine, 0).await;
    // The time from commit to first attempt was measured.
    let metrics = crate::support::metrics_text(&reqwest::Client::new(), app.http_addr).await;
    let measured: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("runledger_alert_first_attempt_seconds_count "))
        .unwrap_or_else(|| panic!("no first-attempt histogram in {metrics}"))
        .parse()
        .unwrap();
    assert!(measured >= 1);

    // Listed as firing.
    let http = reqwest::Client::new();
    let alerts: Value = get_json(&http, app.url("/v1/alerts"), &app.token).await;
    assert_eq!(alerts.as_array().unwrap().len(), 1, "{alerts}");
    assert_eq!(alerts[0]["state"], "firing");
    assert_eq!(alerts[0]["alert_id"], body["data"]["alert_id"]);
    assert_eq!(alerts[0]["resolved_at"], Value::Null);
    // The same over gRPC.
    let mut grpc = proto::alerts_client::AlertsClient::with_interceptor(
        app.channel().await,
        crate::support::Bearer::new(&app.token),
    );
    let listed = grpc
        .list_alerts(proto::ListAlertsRequest {
            state: "firing".into(),
            pipeline_uuid: PIPELINE.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.alerts.len(), 1);
    assert_eq!(
        listed.alerts[0].alert_id,
        alerts[0]["alert_id"].as_str().unwrap()
    );
    assert_eq!(listed.alerts[0].kind, "failed");
    assert!(listed.alerts[0].resolved_at.is_none());
    assert!(listed.next_cursor.is_empty());
    let refused = grpc
        .list_alerts(proto::ListAlertsRequest {
            state: "burning".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("state"), "{}", refused.message());
    for (query, field) in [
        ("state=burning", "state"),
        ("cursor=x", "cursor"),
        ("pipeline_uuid=x", "pipeline_uuid"),
    ] {
        let response = http
            .get(app.url(&format!("/v1/alerts?{query}")))
            .bearer_auth(&app.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{query}");
        assert!(response.text().await.unwrap().contains(field), "{query}");
    }

    // A success resolves it: delivered once, answered 410, which disables the webhook.
    report(&app, 2, true).await;
    let resolved = next(&mut received).await;
    let resolved_body: Value = serde_json::from_slice(&resolved.body).unwrap();
    assert_eq!(resolved_body["type"], "alert.resolved");
    assert_eq!(resolved_body["data"]["alert_id"], body["data"]["alert_id"]);
    assert_ne!(
        resolved.id, attempts[0].id,
        "each transition has its own id"
    );
    outbox_reaches(&app.engine, 0).await;
    let shown: Value = get_json(
        &http,
        app.url(&format!("/v1/alerts/rules/{rule}")),
        &app.token,
    )
    .await;
    assert!(shown["webhook"]["disabled_at"].is_string(), "{shown}");

    // Disabled: a new failure fires an alert that is recorded but not sent.
    report(&app, 3, false).await;
    let alerts: Value = get_json(&http, app.url("/v1/alerts?state=firing"), &app.token).await;
    assert_eq!(alerts.as_array().unwrap().len(), 1, "{alerts}");
    assert_eq!(app.engine.outbox_depth().unwrap(), 0);
    assert!(
        received.try_recv().is_err(),
        "nothing sent to a disabled webhook"
    );

    let mut all = attempts.to_vec();
    all.push(resolved);
    python_verifies(&all);
    let _ = ORG;
}

#[tokio::test]
async fn redirects_are_not_followed_by_default_and_never_to_an_address_not_allowed() {
    // By default a redirect ends the delivery, refused.
    let (target, mut target_received) = receiver(vec![]).await;
    let (url, mut received) = receiver(vec![Reply::Redirect(target.clone())]).await;
    let app = delivering_app(0).await;
    create_rule(&app, &url).await;
    report(&app, 1, false).await;
    next(&mut received).await;
    outbox_reaches(&app.engine, 0).await;
    assert!(
        target_received.try_recv().is_err(),
        "the redirect was followed"
    );

    // Allowed to follow one, a redirect to a loopback address outside --webhook-allow-net
    // (127.0.0.1/32) is refused after resolution, and retried later.
    let (url, mut received) =
        receiver(vec![Reply::Redirect("http://127.0.0.2:9/elsewhere".into())]).await;
    let app = delivering_app(1).await;
    create_rule(&app, &url).await;
    report(&app, 1, false).await;
    next(&mut received).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let error = loop {
        let outbox = app.engine.store().reader().unwrap().outbox(10).unwrap();
        if let Some(error) = outbox.first().and_then(|(_, e)| e.last_error.clone()) {
            break error;
        }
        assert!(Instant::now() < deadline, "no failed attempt recorded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(error.contains("127.0.0.2"), "{error}");
    assert!(error.contains("--webhook-allow-net"), "{error}");
}

#[tokio::test]
async fn missing_and_stuck_fire_by_an_injected_clock_and_resolve_when_runs_come() {
    let (url, mut received) = receiver(vec![]).await;
    let app = spawn_configured(
        tempfile::tempdir().unwrap(),
        |engine: Engine| {
            engine
                .with_webhook_allow("127.0.0.1/32".parse().unwrap())
                .with_deliveries(DeliveryOptions {
                    // The test is the clock.
                    tick_every: Duration::from_secs(86_400),
                    ..DeliveryOptions::default()
                })
        },
        Default::default(),
    )
    .await;
    let http = reqwest::Client::new();
    for (kind, params) in [
        ("missing", json!({"every": "90m"})),
        ("stuck", json!({"running_for": "2h"})),
    ] {
        let mut rule = failed_rule(PIPELINE, &url);
        rule["kind"] = json!(kind);
        rule["params"] = params;
        receiver::create_rule(&http, app.http_addr, &app.token, &rule).await;
    }
    let t0 = runledger::time::Timestamp::now();
    let at = |minutes: i64| {
        runledger::time::Timestamp::from_micros(t0.micros() + minutes * 60_000_000).unwrap()
    };
    let text = |t: runledger::time::Timestamp| runledger::time::format_datetime(t.second());
    let mut ingest = app.ingest().await;
    let run = |n: u32, state: proto::TaskRunState, executed_at: Option<String>| {
        let mut result = finished(
            &format!("00000000-0000-4000-9000-{n:012}"),
            &format!("00000000-0000-4000-8000-{n:012}"),
            PIPELINE,
            TASK,
            true,
            10,
            "2025-01-01 00:00:00",
        );
        result.state = state as i32;
        result.executed_at = executed_at.map(|t| crate::support::ts(&t));
        proto::ReportTaskRunsRequest {
            results: vec![result],
        }
    };
    ingest
        .report_task_run_batch(run(1, proto::TaskRunState::Finished, Some(text(at(0)))))
        .await
        .unwrap();
    // A task run of the next pipeline run starts now (about t0) and does not finish.
    ingest
        .report_task_run_batch(run(2, proto::TaskRunState::Running, None))
        .await
        .unwrap();
    let firing = |alerts: &Value| {
        let mut kinds: Vec<String> = alerts
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["state"] == "firing")
            .map(|a| a["kind"].as_str().unwrap().to_string())
            .collect();
        kinds.sort();
        kinds
    };
    let alerts = || async { get_json(&http, app.url("/v1/alerts"), &app.token).await };

    app.engine.alert_tick(at(89)).await.unwrap();
    assert!(firing(&alerts().await).is_empty());
    app.engine.alert_tick(at(91)).await.unwrap();
    assert_eq!(firing(&alerts().await), ["missing"]);
    app.engine.alert_tick(at(121)).await.unwrap();
    assert_eq!(firing(&alerts().await), ["missing", "stuck"]);
    // Ticking again changes nothing: one alert each, not one per tick.
    app.engine.alert_tick(at(150)).await.unwrap();
    assert_eq!(alerts().await.as_array().unwrap().len(), 2);
    let mut sent = vec![next(&mut received).await, next(&mut received).await];

    // The running task run finishes (executed at t0 + 2h02): both resolve.
    ingest
        .report_task_run_batch(run(2, proto::TaskRunState::Finished, Some(text(at(122)))))
        .await
        .unwrap();
    let listed = alerts().await;
    assert!(firing(&listed).is_empty(), "{listed}");
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["resolved_at"].is_string())
    );
    sent.push(next(&mut received).await);
    sent.push(next(&mut received).await);
    let mut kinds: Vec<(String, String)> = sent
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            (
                body["type"].as_str().unwrap().into(),
                body["data"]["kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("alert.firing".into(), "missing".into()),
            ("alert.firing".into(), "stuck".into()),
            ("alert.resolved".into(), "missing".into()),
            ("alert.resolved".into(), "stuck".into()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_firing_alert_killed_before_its_delivery_is_delivered_after_restart() {
    use crate::support::{Bearer, ChildServer, grpc_channel, rest_token};
    // The first attempt hangs: the server is killed while it is under way.
    let (url, mut received) = receiver(vec![Reply::Hang]).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["--webhook-allow-net", "127.0.0.1/32"];
    let start = |data: std::path::PathBuf| {
        tokio::task::spawn_blocking(move || ChildServer::start_with(&data, &args, None))
    };
    let server = start(data.clone()).await.unwrap();
    let credentials = server.first_client.clone().unwrap();
    let http = reqwest::Client::new();
    let token = rest_token(&http, server.http_addr, &credentials, None).await;
    receiver::create_rule(
        &http,
        server.http_addr,
        &token,
        &failed_rule(PIPELINE, &url),
    )
    .await;
    let mut ingest = proto::ingest_client::IngestClient::with_interceptor(
        grpc_channel(server.grpc_addr).await,
        Bearer::new(&token),
    );
    let mut failed = finished(
        "00000000-0000-4000-9000-000000000001",
        "00000000-0000-4000-8000-000000000001",
        PIPELINE,
        TASK,
        false,
        10,
        "2025-03-01 02:00:00",
    );
    failed.organization_uuid.clear();
    ingest
        .report_task_run_batch(proto::ReportTaskRunsRequest {
            results: vec![failed],
        })
        .await
        .unwrap();
    let before = next(&mut received).await;
    tokio::task::spawn_blocking(move || server.kill())
        .await
        .unwrap();

    let server = start(data).await.unwrap();
    let after = next(&mut received).await;
    assert_eq!(after.id, before.id, "the same delivery, sent again");
    assert_eq!(after.body, before.body);
    let alerts: Value = get_json(
        &http,
        format!("http://{}/v1/alerts", server.http_addr),
        &token,
    )
    .await;
    assert_eq!(
        alerts.as_array().unwrap().len(),
        1,
        "exactly one alert: {alerts}"
    );
    assert_eq!(alerts[0]["state"], "firing");
    python_verifies(&[before, after]);
    tokio::task::spawn_blocking(move || assert!(server.stop()))
        .await
        .unwrap();
}
