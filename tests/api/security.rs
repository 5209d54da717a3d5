//! Hardening, as a hostile client and a careless operator would probe it: revocation reaching
//! open streams, tokens racing a revocation, refresh-token reuse, one tenant's writes unable to
//! stall another's, UUIDs that name a pipeline or a task but never both, organizations that
//! never meet, connections that cannot hold the door shut, and the small things (file modes,
//! quoted input, capped scopes and pending runs, the admin socket, malformed HTTP).

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;
use runledger::auth::{Scope, Scopes};
use runledger::engine::{NewClient, TokenLifetimes};
use runledger::proto::{self, EntityKind};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use crate::support::{ORG, TestApp, entity, finished, spawn_app, spawn_app_with, token_for, ts};

const PIPELINE: &str = "11111111-1111-4111-8111-111111111111";
const TASK: &str = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa";

fn batch(results: Vec<proto::TaskRunResult>) -> proto::ReportTaskRunsRequest {
    proto::ReportTaskRunsRequest { results }
}

/// A finished run of [`PIPELINE`]'s [`TASK`] in its own pipeline run.
fn run(n: u128, at: &str) -> proto::TaskRunResult {
    finished(
        &uuid::Uuid::from_u128(0x1000 + n).to_string(),
        &uuid::Uuid::from_u128(0x2000 + n).to_string(),
        PIPELINE,
        TASK,
        true,
        10,
        at,
    )
}

/// A client of the app's organization with `scopes`, and a token of it.
async fn client_with(app: &TestApp, scopes: &[Scope]) -> (NewClient, String) {
    let client = app
        .engine
        .create_client(
            Some(app.client.organization),
            scopes.iter().copied().collect(),
        )
        .unwrap();
    let token = token_for(&app.engine, &client, None).await;
    (client, token)
}

async fn revoke(app: &TestApp, client_id: &str) {
    let engine = app.engine.clone();
    let id = client_id.to_string();
    tokio::task::spawn_blocking(move || engine.revoke_client(&id))
        .await
        .unwrap()
        .unwrap();
}

/// The task runs logged for [`PIPELINE`], as the app's own client sees them (none while the
/// pipeline does not exist yet).
async fn logged(app: &TestApp) -> Vec<String> {
    let request = proto::StreamLogsRequest {
        pipeline_uuid: PIPELINE.into(),
        from: Some(ts("2000-01-01")),
        to: Some(ts("2100-01-01")),
        limit: 0,
        cursor: String::new(),
    };
    let mut entries = Vec::new();
    match app.stats().await.stream_logs(request).await {
        Ok(stream) => {
            let mut stream = stream.into_inner();
            while let Some(entry) = stream.message().await.unwrap() {
                entries.push(entry.task_run_uuid);
            }
        }
        Err(status) => assert_eq!(status.code(), Code::NotFound),
    }
    entries
}

#[tokio::test]
async fn revoking_a_client_ends_its_open_report_and_executor_streams_at_once() {
    let app = spawn_app().await;
    let (writer, token) = client_with(&app, &[Scope::RunsWrite]).await;

    // A report stream: one batch in, then the client is revoked with the stream still open.
    let (send, batches) = mpsc::channel(4);
    let mut ingest = app.ingest_as(&token).await;
    let call =
        tokio::spawn(async move { ingest.report_task_runs(ReceiverStream::new(batches)).await });
    send.send(batch(vec![run(1, "2024-01-01 00:00:00")]))
        .await
        .unwrap();
    // The first batch is durable once the app's own client can read it.
    while logged(&app).await.is_empty() {
        tokio::task::yield_now().await;
    }

    // An executor of the same client holds a pending run.
    register(&app, PIPELINE, &[(TASK, true)]).await;
    let mut executor = app
        .ingest_as(&token)
        .await
        .watch_pending_task_runs(proto::WatchPendingTaskRunsRequest {})
        .await
        .unwrap()
        .into_inner();
    let started = start_run(&app).await;
    let held = executor.message().await.unwrap().unwrap();
    assert_eq!(held.task_run_uuid, started);

    let revoked_at = Instant::now();
    revoke(&app, &writer.client_id).await;
    // The next batch is refused and the stream ended, without the client closing it.
    let _ = send.send(batch(vec![run(2, "2024-01-01 00:00:01")])).await;
    let status = within(call).await.unwrap().unwrap_err();
    let report_latency = revoked_at.elapsed();
    assert_eq!(status.code(), Code::Unauthenticated, "{}", status.message());
    assert!(
        status.message().contains("after 1 accepted batches"),
        "{}",
        status.message()
    );
    // The executor's stream ends too, and the run it held goes to another executor.
    let ended = within(executor.message()).await.unwrap_err();
    let executor_latency = revoked_at.elapsed();
    assert_eq!(ended.code(), Code::Unauthenticated, "{}", ended.message());
    let (_, other) = client_with(&app, &[Scope::RunsWrite]).await;
    let mut next = app
        .ingest_as(&other)
        .await
        .watch_pending_task_runs(proto::WatchPendingTaskRunsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        next.message().await.unwrap().unwrap().task_run_uuid,
        started
    );
    println!(
        "revocation reached the report stream in {report_latency:?}, the executor stream in {executor_latency:?}"
    );
    assert!(report_latency < Duration::from_secs(1) && executor_latency < Duration::from_secs(1));
    // Nothing sent after the revocation was applied.
    assert_eq!(
        logged(&app).await,
        [uuid::Uuid::from_u128(0x1001).to_string()]
    );
    app.stop().await;
}

#[tokio::test]
async fn revoking_a_client_ends_its_open_log_stream() {
    let app = spawn_app().await;
    let results: Vec<_> = (0..3_000).map(|n| run(n, "2024-02-02 02:02:02")).collect();
    app.ingest()
        .await
        .report_task_run_batch(batch(results))
        .await
        .unwrap();
    let (reader, token) = client_with(&app, &[Scope::StatsRead]).await;
    let mut stream = app
        .stats_as(&token)
        .await
        .stream_logs(proto::StreamLogsRequest {
            pipeline_uuid: PIPELINE.into(),
            from: Some(ts("2024-01-01")),
            to: Some(ts("2024-12-31")),
            limit: 0,
            cursor: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
    revoke(&app, &reader.client_id).await;
    let mut read = 1;
    let ended = loop {
        match within(stream.message()).await {
            Ok(Some(_)) => read += 1,
            Ok(None) => panic!("the whole log was streamed to a revoked client"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::Unauthenticated, "{}", ended.message());
    assert!(read < 3_000, "{read} entries read");
    app.stop().await;
}

#[tokio::test]
async fn a_token_that_expires_ends_its_open_stream() {
    let lifetimes = TokenLifetimes {
        access_secs: 1,
        refresh_secs: 60,
    };
    let app = spawn_app_with(tempfile::tempdir().unwrap(), lifetimes).await;
    let (send, batches) = mpsc::channel(4);
    let mut ingest = app.ingest().await;
    let call =
        tokio::spawn(async move { ingest.report_task_runs(ReceiverStream::new(batches)).await });
    send.send(batch(vec![run(1, "2024-01-01 00:00:00")]))
        .await
        .unwrap();
    // Nothing more is sent: the server ends the stream when the token expires.
    let status = within(call).await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status
            .message()
            .contains("expired while the stream was open"),
        "{}",
        status.message()
    );
    drop(send);
    app.stop().await;
}

/// `future`'s output, failing the test (rather than hanging it) after ten seconds.
async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .expect("no answer within 10 s")
}

/// Asserts that a call was refused as INVALID_ARGUMENT naming `field`.
fn assert_invalid<T: std::fmt::Debug>(outcome: Result<T, tonic::Status>, field: &str) {
    let status = outcome.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert!(status.message().contains(field), "{}", status.message());
}

async fn register(app: &TestApp, pipeline: &str, tasks: &[(&str, bool)]) {
    try_register(app, pipeline, tasks).await.unwrap();
}

async fn try_register(
    app: &TestApp,
    pipeline: &str,
    tasks: &[(&str, bool)],
) -> Result<tonic::Response<proto::RegisterPipelineResponse>, tonic::Status> {
    app.pipelines()
        .await
        .register_pipeline(proto::RegisterPipelineRequest {
            pipeline_uuid: pipeline.into(),
            organization_uuid: String::new(),
            name: "p".into(),
            tasks: tasks
                .iter()
                .map(|(task, is_initial)| proto::TaskDefinition {
                    task_uuid: (*task).into(),
                    task_type: proto::TaskType::Query as i32,
                    name: String::new(),
                    is_initial: *is_initial,
                })
                .collect(),
        })
        .await
}

/// Starts a run of [`PIPELINE`] over REST; returns its first task run's UUID.
async fn start_run(app: &TestApp) -> String {
    let response = reqwest::Client::new()
        .post(app.url(&format!("/v1/pipelines/{PIPELINE}/runs")))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    body[0]["task_run_uuid"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_issued_while_a_client_is_revoked_survives_the_revocation() {
    let app = spawn_app().await;
    let (client, _) = client_with(&app, &[Scope::StatsRead]).await;
    let url = app.url("/v1/oauth/token");
    let http = reqwest::Client::new();
    let request = {
        let (http, url, client) = (http.clone(), url.clone(), client.clone());
        move || {
            let request = http.post(&url).form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &client.client_id),
                ("client_secret", &client.client_secret),
            ]);
            async move {
                let response = request.send().await.unwrap();
                let ok = response.status() == StatusCode::OK;
                let body: Value = response.json().await.unwrap();
                ok.then(|| body["access_token"].as_str().unwrap().to_string())
            }
        }
    };
    // Eight clients ask for tokens without pause, before, during and after the revocation.
    let (revoked, done) = tokio::sync::watch::channel(false);
    let mut askers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (request, done) = (request.clone(), done.clone());
        askers.spawn(async move {
            let (mut issued, mut after) = (Vec::new(), 0);
            while after < 5 {
                issued.extend(request().await);
                after += usize::from(*done.borrow());
            }
            issued
        });
    }
    // Revoke once tokens are flowing.
    while request().await.is_none() {}
    revoke(&app, &client.client_id).await;
    revoked.send(true).unwrap();
    let mut issued = Vec::new();
    while let Some(tokens) = askers.join_next().await {
        issued.extend(tokens.unwrap());
    }
    // Every token issued, before or during the revocation, is refused now.
    let mut honoured = 0;
    for token in &issued {
        if status_with(&app, token).await != StatusCode::UNAUTHORIZED {
            honoured += 1;
        }
    }
    assert_eq!(
        honoured,
        0,
        "{honoured} of {} tokens survived the revocation",
        issued.len()
    );
    assert!(
        request().await.is_none(),
        "a revoked client got a new token"
    );
    println!(
        "{} tokens issued around the revocation; all refused",
        issued.len()
    );
    app.stop().await;
}

/// Exchanges a refresh token; returns (status, body).
async fn refresh(app: &TestApp, refresh_token: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(app.url("/v1/oauth/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", &app.client.client_id),
            ("client_secret", &app.client.client_secret),
            ("refresh_token", refresh_token),
        ])
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn status_with(app: &TestApp, token: &str) -> StatusCode {
    reqwest::Client::new()
        .get(app.url(&format!("/v1/stats/tasks/{TASK}/last-run/stats")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn reusing_a_rotated_refresh_token_revokes_every_token_issued_from_it() {
    let app = spawn_app().await;
    let first = app
        .engine
        .issue_token(runledger::engine::TokenRequest {
            grant_type: Some("client_credentials".into()),
            client_id: Some(app.client.client_id.clone()),
            client_secret: Some(app.client.client_secret.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let (status, second) = refresh(&app, &first.refresh_token).await;
    assert_eq!(status, StatusCode::OK);
    let second_access = second["access_token"].as_str().unwrap();
    assert_ne!(
        status_with(&app, second_access).await,
        StatusCode::UNAUTHORIZED
    );

    // The first refresh token comes back: someone else has a copy of it.
    let (status, body) = refresh(&app, &first.refresh_token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("used before"),
        "{body}"
    );
    // Every token of that grant is revoked: both access tokens and the newer refresh token.
    assert_eq!(
        status_with(&app, &first.access_token).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status_with(&app, second_access).await,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = refresh(&app, second["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Other grants of the client are untouched.
    assert_ne!(
        status_with(&app, &app.token).await,
        StatusCode::UNAUTHORIZED
    );
    app.stop().await;
}

#[tokio::test]
async fn http_basic_client_credentials_are_form_decoded() {
    let app = spawn_app().await;
    // RFC 6749 2.3.1: id and secret are form-urlencoded before base64; `_` may be sent as %5F.
    let encode = |text: &str| text.replace('_', "%5F");
    let basic = STANDARD.encode(format!(
        "{}:{}",
        encode(&app.client.client_id),
        encode(&app.client.client_secret)
    ));
    let response = reqwest::Client::new()
        .post(app.url("/v1/oauth/token"))
        .header("authorization", format!("Basic {basic}"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn scopes_are_deduplicated_and_capped() {
    let app = spawn_app().await;
    let ask = |scope: String| {
        let url = app.url("/v1/oauth/token");
        let (id, secret) = (
            app.client.client_id.clone(),
            app.client.client_secret.clone(),
        );
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .form(&[
                    ("grant_type", "client_credentials".to_string()),
                    ("client_id", id),
                    ("client_secret", secret),
                    ("scope", scope),
                ])
                .send()
                .await
                .unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = ask("stats:read workflows:run stats:read workflows:run".into()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["scope"], "stats:read workflows:run");
    let (status, body) = ask("stats:read ".repeat(1_000)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_scope", "{body}");
    assert!(
        body["error_description"].as_str().unwrap().len() < 200,
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_uuid_names_a_pipeline_or_a_task_never_both() {
    let app = spawn_app().await;
    let mut ingest = app.ingest().await;
    let other = "99999999-9999-4999-8999-999999999999";
    let reported = |pipeline: &str, task: &str, n: u128| {
        let mut result = run(n, "2024-03-01 00:00:00");
        result.pipeline_uuid = pipeline.into();
        result.task_uuid = task.into();
        result
    };
    let refusals = [
        (
            vec![reported(PIPELINE, PIPELINE, 1)],
            "results[0].task_uuid",
        ),
        (
            vec![reported(PIPELINE, other, 1), reported(other, TASK, 2)],
            "results[1].pipeline_uuid",
        ),
        (
            vec![reported(other, TASK, 1), reported(PIPELINE, other, 2)],
            "results[1].task_uuid",
        ),
    ];
    for (results, field) in refusals {
        let refused = ingest.report_task_run_batch(batch(results)).await;
        assert_invalid(refused, field);
    }
    // Nothing of the refused batches was applied.
    let mut stats = app.stats().await;
    for (kind, uuid) in [
        (EntityKind::Pipeline, PIPELINE),
        (EntityKind::Pipeline, other),
        (EntityKind::Task, TASK),
    ] {
        let status = stats
            .get_last_run_stats(proto::GetLastRunStatsRequest {
                entity: entity(kind, uuid),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{uuid}");
    }
    // Against what is stored: a task's UUID as a pipeline, and a pipeline's as a task.
    ingest
        .report_task_run_batch(batch(vec![run(1, "2024-03-01 00:00:00")]))
        .await
        .unwrap();
    for (results, field) in [
        (vec![reported(TASK, other, 3)], "results[0].pipeline_uuid"),
        (vec![reported(other, PIPELINE, 4)], "results[0].task_uuid"),
    ] {
        let refused = ingest.report_task_run_batch(batch(results)).await;
        assert_invalid(refused, field);
    }
    // Registration: the pipeline among its own tasks, a task that is a stored pipeline.
    for (pipeline, task, field) in [
        (other, other, "tasks[0].task_uuid"),
        (other, PIPELINE, "tasks[0].task_uuid"),
        (TASK, other, "pipeline_uuid"),
    ] {
        assert_invalid(try_register(&app, pipeline, &[(task, false)]).await, field);
    }
    let report = runledger::store::verify::verify(app.engine.store()).unwrap();
    assert!(report.is_consistent(), "{:?}", report.differences);
    assert_eq!(report.task_runs, 1);
    app.stop().await;
}

#[test]
fn imports_refuse_a_uuid_used_as_both_pipeline_and_task() {
    let dir = tempfile::tempdir().unwrap();
    let line = |task_run: u128, pipeline: &str, task: &str| {
        format!(
            r#"{{"task_run_uuid":"{}","pipeline_run_uuid":"{}","pipeline_uuid":"{pipeline}","task_uuid":"{task}","task_type":"query","organization_uuid":"{ORG}","is_successful":true,"duration":5,"executed_at":"2024-01-01 00:00:00"}}"#,
            uuid::Uuid::from_u128(task_run),
            uuid::Uuid::from_u128(7),
        )
    };
    let other = "99999999-9999-4999-8999-999999999999";
    let file = dir.path().join("runs.ndjson");
    let lines = [
        line(1, PIPELINE, PIPELINE),
        line(2, PIPELINE, TASK),
        line(3, TASK, other),
        line(4, other, PIPELINE),
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    let data = dir.path().join("data");
    let (ok, output) = crate::support::run_cli(&[
        "import",
        "--data-dir",
        data.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert!(!ok, "{output}");
    let rejected = |line: usize, field: &str| {
        output
            .lines()
            .any(|l| l.contains(&format!("runs.ndjson:{line}:")) && l.contains(field))
    };
    assert!(rejected(1, "task_uuid"), "{output}");
    assert!(rejected(3, "pipeline_uuid"), "{output}");
    assert!(rejected(4, "task_uuid"), "{output}");
    assert!(output.contains("1 imported"), "{output}");
    let (ok, output) = crate::support::run_cli(&["verify", "--data-dir", data.to_str().unwrap()]);
    assert!(ok, "{output}");
}

/// A client of a new organization with every scope, and a token of it.
async fn stranger(app: &TestApp) -> (NewClient, String) {
    let client = app.engine.create_client(None, Scopes::all()).unwrap();
    let token = token_for(&app.engine, &client, None).await;
    (client, token)
}

/// `n` reports of one organization's pipeline, all in its own organization.
fn reports_of(
    org: &str,
    pipeline: &str,
    runs: impl IntoIterator<Item = (u128, u128, bool, &'static str)>,
) -> Vec<proto::TaskRunResult> {
    runs.into_iter()
        .map(|(task_run, pipeline_run, ok, at)| {
            let mut result = finished(
                &uuid::Uuid::from_u128(task_run).to_string(),
                &uuid::Uuid::from_u128(pipeline_run).to_string(),
                pipeline,
                TASK,
                ok,
                10,
                at,
            );
            result.organization_uuid = org.into();
            result
        })
        .collect()
}

#[tokio::test]
async fn a_storm_of_re_reports_costs_no_more_than_fresh_runs_and_stalls_no_one() {
    let app = spawn_app().await;
    let (hostile, token) = stranger(&app).await;
    let org = hostile.organization.to_string();
    let hostile_pipeline = "33333333-3333-4333-8333-333333333333";
    let mut theirs = app.ingest_as(&token).await;
    // 2,000 pipeline runs, each spanning the year: a task run on January 1st and one on
    // December 31st, so that every pipeline run's latest task run is a year after its first.
    const RUNS: u128 = 2_000;
    let mut spanning = Vec::new();
    for i in 0..RUNS {
        for (n, at) in [(0, "2024-01-01 00:00:00"), (1, "2024-12-31 00:00:00")] {
            let mut result = reports_of(
                &org,
                hostile_pipeline,
                [(i * 2 + n, 1_000_000 + i, true, at)],
            )
            .remove(0);
            // Each pipeline run i seconds inside the year's edges.
            let shift = if n == 0 { i as i64 } else { -(i as i64) };
            result.executed_at = Some(prost_types::Timestamp {
                seconds: ts(at).seconds + shift,
                nanos: 0,
            });
            spanning.push(result);
        }
    }
    theirs
        .report_task_run_batch(batch(spanning.clone()))
        .await
        .unwrap();

    // The baseline: a batch of 10,000 fresh runs.
    let fresh: Vec<_> = (0..10_000u128)
        .flat_map(|i| {
            reports_of(
                &org,
                hostile_pipeline,
                [(10_000_000 + i, 20_000_000 + i, true, "2024-06-01 00:00:00")],
            )
        })
        .collect();
    let started = Instant::now();
    theirs.report_task_run_batch(batch(fresh)).await.unwrap();
    let fresh_cost = started.elapsed();

    // The storm: 10,000 re-reports of the pipeline runs' latest task runs (each five times,
    // the last time failed), while another organization keeps writing one run at a time.
    let storm: Vec<_> = (0..5)
        .flat_map(|round| {
            spanning
                .iter()
                .skip(1)
                .step_by(2)
                .map(move |result| {
                    let mut result = result.clone();
                    result.is_successful = round < 4;
                    result.duration_ms = 100 + round;
                    result
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(storm.len(), 10_000);
    let (done, mut finished_storm) = tokio::sync::oneshot::channel();
    let storm_task = tokio::spawn(async move {
        let started = Instant::now();
        let counts = theirs
            .report_task_run_batch(batch(storm))
            .await
            .unwrap()
            .into_inner();
        let _ = done.send(());
        (counts, started.elapsed())
    });
    let latencies = writes_meanwhile(&app, &mut finished_storm).await;
    let (counts, storm_cost) = storm_task.await.unwrap();
    assert_eq!((counts.replaced, counts.inserted), (10_000, 0));
    let worst = latencies.iter().max().unwrap();
    println!(
        "10,000 fresh runs: {fresh_cost:?}; storm of 10,000 re-reports of year-long pipeline runs: {storm_cost:?}; the other organization's {} one-run writes meanwhile: worst {worst:?}",
        latencies.len()
    );
    assert!(
        storm_cost < fresh_cost * 3 + Duration::from_millis(200),
        "the storm cost {storm_cost:?}, fresh runs {fresh_cost:?}"
    );
    // The storm's outcome is exact: every spanning pipeline run now failed (its last report).
    let stats = app
        .stats_as(&token)
        .await
        .get_stats(proto::GetStatsRequest {
            entity: entity(EntityKind::Pipeline, hostile_pipeline),
            from: Some(ts("2024-01-01")),
            to: Some(ts("2024-12-31 23:59:59")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (stats.num_of_successes, stats.num_of_failures),
        (10_000, RUNS as u64)
    );
    let report = runledger::store::verify::verify(app.engine.store()).unwrap();
    assert!(report.is_consistent(), "{:?}", report.differences);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn re_reporting_a_dense_hour_with_other_durations_costs_its_size_and_stalls_no_one() {
    let app = spawn_app().await;
    let (hostile, token) = stranger(&app).await;
    let org = hostile.organization.to_string();
    let pipeline = "44444444-4444-4444-8444-444444444444";
    let mut theirs = app.ingest_as(&token).await;
    // A run in every second of one hour (so the hour has a record of 3,600 second parts), with
    // durations that the re-reports lower (each part loses its maximum) and raise again.
    const SECONDS: u128 = 3_600;
    let hour = ts("2024-03-03 03:00:00").seconds;
    let reports = move |duration: &dyn Fn(u128) -> u32| -> Vec<proto::TaskRunResult> {
        (0..SECONDS)
            .map(|i| {
                let mut result = reports_of(
                    &org,
                    pipeline,
                    [(50_000_000 + i, 60_000_000 + i, true, "2024-03-03 03:00:00")],
                )
                .remove(0);
                result.executed_at = Some(prost_types::Timestamp {
                    seconds: hour + i as i64,
                    nanos: 0,
                });
                result.duration_ms = duration(i);
                result
            })
            .collect()
    };
    let started = Instant::now();
    theirs
        .report_task_run_batch(batch(reports(&|i| 100_000 + i as u32)))
        .await
        .unwrap();
    let fresh_cost = started.elapsed();
    let (done, mut finished_storm) = tokio::sync::oneshot::channel();
    let storm = tokio::spawn(async move {
        let mut costs = Vec::new();
        for round in 0..6u32 {
            let batch_of = batch(reports(&|i| {
                if round % 2 == 0 {
                    100 + (i as u32 % 7)
                } else {
                    200_000 + i as u32
                }
            }));
            let started = Instant::now();
            let counts = theirs
                .report_task_run_batch(batch_of)
                .await
                .unwrap()
                .into_inner();
            assert_eq!(counts.replaced, SECONDS as u64);
            costs.push(started.elapsed());
        }
        let _ = done.send(());
        costs
    });
    let mut latencies = writes_meanwhile(&app, &mut finished_storm).await;
    let costs = storm.await.unwrap();
    latencies.sort();
    let worst_batch = costs.iter().max().unwrap();
    println!(
        "3,600 fresh runs in one hour: {fresh_cost:?}; 6 batches re-reporting them with lower, then higher durations: {costs:?}; the other organization's {} one-run writes meanwhile: p50 {:?}, worst {:?}",
        latencies.len(),
        latencies[latencies.len() / 2],
        latencies.last().unwrap()
    );
    assert!(
        *worst_batch < fresh_cost * 3 + Duration::from_millis(300),
        "a re-report batch cost {worst_batch:?}, the fresh one {fresh_cost:?}"
    );
    // Exact: the hour's maximum is the last round's largest, its p50 from the last round.
    let stats = app
        .stats_as(&token)
        .await
        .get_stats(proto::GetStatsRequest {
            entity: entity(EntityKind::Task, TASK),
            from: Some(ts("2024-03-03 03:00:00")),
            to: Some(ts("2024-03-03 03:59:59")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.max_duration_ms, Some(200_000 + 3_599));
    let report = runledger::store::verify::verify(app.engine.store()).unwrap();
    assert!(report.is_consistent(), "{:?}", report.differences);
    app.stop().await;
}

/// The test organization's one-run writes, one after the other, until `storm` ends (at least
/// four): how long each took to be acknowledged.
async fn writes_meanwhile(
    app: &TestApp,
    storm: &mut tokio::sync::oneshot::Receiver<()>,
) -> Vec<Duration> {
    let mut ours = app.ingest().await;
    let mut latencies = Vec::new();
    let mut over = false;
    for n in 0u128.. {
        let started = Instant::now();
        ours.report_task_run_batch(batch(vec![run(n, "2024-05-05 05:05:05")]))
            .await
            .unwrap();
        latencies.push(started.elapsed());
        over |= storm.try_recv().is_ok();
        if over && n >= 3 {
            break;
        }
    }
    latencies
}

/// What one organization sees of a pipeline and its task: range stats, months, last runs and
/// logs, as comparable text.
async fn answers(app: &TestApp, token: &str, pipeline: &str, task: &str) -> Vec<String> {
    let mut stats = app.stats_as(token).await;
    let mut seen = Vec::new();
    for (kind, uuid) in [(EntityKind::Pipeline, pipeline), (EntityKind::Task, task)] {
        let range = stats
            .get_stats(proto::GetStatsRequest {
                entity: entity(kind, uuid),
                from: Some(ts("2000-01-01")),
                to: Some(ts("2100-01-01")),
            })
            .await;
        seen.push(format!("{:?}", range.map(|r| r.into_inner())));
        let months = stats
            .get_aggregated_stats(proto::GetAggregatedStatsRequest {
                entity: entity(kind, uuid),
                date_from: Some(ts("2024-01-01")),
                period: proto::Period::Month as i32,
                n: 12,
                fill: String::new(),
            })
            .await;
        seen.push(format!("{:?}", months.map(|r| r.into_inner())));
        let last = stats
            .get_last_run_stats(proto::GetLastRunStatsRequest {
                entity: entity(kind, uuid),
            })
            .await;
        seen.push(format!("{:?}", last.map(|r| r.into_inner())));
    }
    let logs = crate::support::logged_entries(app.grpc_addr, token, pipeline, 0).await;
    seen.extend(logs.into_iter().map(|e| {
        // The cursor and the sealed output are derived from the rest (and a key).
        let output = e.output.len();
        format!(
            "{:?} output of {output} bytes",
            proto::LogEntry {
                cursor: String::new(),
                output: Vec::new(),
                ..e
            }
        )
    }));
    seen
}

#[tokio::test]
async fn organizations_never_meet_a_foreign_uuid_is_just_a_fresh_one() {
    let app = spawn_app().await;
    let ours = reports_of(
        ORG,
        PIPELINE,
        [
            (1, 100, true, "2024-01-31 23:59:59"),
            (2, 100, false, "2024-02-01 00:00:10"),
        ],
    );
    app.ingest()
        .await
        .report_task_run_batch(batch(ours.clone()))
        .await
        .unwrap();
    register(&app, PIPELINE, &[(TASK, true)]).await;
    let before = answers(&app, &app.token, PIPELINE, TASK).await;

    let (stranger, token) = stranger(&app).await;
    let org = stranger.organization.to_string();
    let fresh_pipeline = "44444444-4444-4444-8444-444444444444";
    let fresh_task = "55555555-5555-4555-8555-555555555555";
    // The same writes, once with every UUID of ours (pipeline, task, pipeline run, task runs)
    // and once with fresh ones, in the stranger's name.
    let fresh = |n: u128| uuid::Uuid::from_u128(0xf000 + n).to_string();
    let uuid = |n: u128| uuid::Uuid::from_u128(n).to_string();
    let names = [
        [
            PIPELINE.to_string(),
            TASK.to_string(),
            uuid(100),
            uuid(1),
            uuid(2),
        ],
        [
            fresh_pipeline.into(),
            fresh_task.into(),
            fresh(100),
            fresh(1),
            fresh(2),
        ],
    ];
    let mut outcomes = Vec::new();
    for [pipeline, task, pipeline_run, first, second] in &names {
        let results: Vec<_> = ours
            .iter()
            .zip([first, second])
            .map(|(result, task_run)| proto::TaskRunResult {
                pipeline_uuid: pipeline.clone(),
                task_uuid: task.clone(),
                pipeline_run_uuid: pipeline_run.clone(),
                task_run_uuid: task_run.clone(),
                organization_uuid: org.clone(),
                ..result.clone()
            })
            .collect();
        let reported = app
            .ingest_as(&token)
            .await
            .report_task_run_batch(batch(results))
            .await
            .map(|r| r.into_inner());
        let mut pipelines = proto::pipelines_client::PipelinesClient::with_interceptor(
            app.channel().await,
            crate::support::Bearer::new(&token),
        );
        let registered = pipelines
            .register_pipeline(proto::RegisterPipelineRequest {
                pipeline_uuid: pipeline.clone(),
                organization_uuid: String::new(),
                name: "theirs".into(),
                tasks: vec![proto::TaskDefinition {
                    task_uuid: task.clone(),
                    task_type: proto::TaskType::Query as i32,
                    name: String::new(),
                    is_initial: true,
                }],
            })
            .await
            .map(|r| r.into_inner());
        let started = reqwest::Client::new()
            .post(app.url(&format!("/v1/pipelines/{pipeline}/runs")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let started_status = started.status();
        let started: Value = started.json().await.unwrap();
        // Their view, with the UUIDs (which differ by construction) as placeholders.
        let seen = answers(&app, &token, pipeline, task).await;
        let anonymous = |text: &str| {
            let mut text = text.to_string();
            for (placeholder, name) in ["P", "T", "R", "U1", "U2"].iter().zip([
                pipeline,
                task,
                pipeline_run,
                first,
                second,
            ]) {
                text = text.replace(name.as_str(), placeholder);
            }
            text
        };
        outcomes.push((
            format!("{reported:?}"),
            format!("{registered:?}"),
            started_status,
            started.as_array().map(Vec::len),
            seen.iter().map(|s| anonymous(s)).collect::<Vec<_>>(),
        ));
    }
    assert_eq!(
        outcomes[0], outcomes[1],
        "a foreign UUID behaves exactly like a fresh one"
    );
    assert!(outcomes[0].0.contains("inserted: 2"), "{}", outcomes[0].0);
    let logged = outcomes[0]
        .4
        .iter()
        .filter(|s| s.starts_with("LogEntry"))
        .count();
    assert_eq!(logged, 2, "{:?}", outcomes[0].4);
    assert_eq!(outcomes[0].2, StatusCode::CREATED);
    // Our answers did not change.
    assert_eq!(answers(&app, &app.token, PIPELINE, TASK).await, before);
    let report = runledger::store::verify::verify(app.engine.store()).unwrap();
    assert!(report.is_consistent(), "{:?}", report.differences);
    app.stop().await;
}

fn short_limits(max: usize, per_peer: usize) -> runledger::front::ConnectionLimits {
    runledger::front::ConnectionLimits {
        max_connections: max,
        max_per_peer: per_peer,
        handshake_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(600),
        header_read_timeout: Duration::from_millis(300),
        body_read_timeout: Duration::from_millis(500),
        ..Default::default()
    }
}

/// Reads until the peer closes the connection; true when it did within `limit`.
async fn closed_by_server(socket: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buffer = [0u8; 4_096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, socket.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn idle_connections_cannot_hold_the_door_shut() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = crate::support::spawn_configured(
        tempfile::tempdir().unwrap(),
        |engine| engine,
        short_limits(3, 3),
    )
    .await;
    for (front, addr) in [("REST", app.http_addr), ("gRPC", app.grpc_addr)] {
        // Three sockets that never say anything take every slot.
        let mut idle = Vec::new();
        for _ in 0..3 {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let started = Instant::now();
        let served = loop {
            let attempt = match front {
                "REST" => reqwest::Client::builder()
                    .pool_max_idle_per_host(0)
                    .build()
                    .unwrap()
                    .get(format!("http://{addr}/healthz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == StatusCode::OK),
                _ => match tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .unwrap()
                    .connect()
                    .await
                {
                    Ok(channel) => tonic_health::pb::health_client::HealthClient::new(channel)
                        .check(tonic_health::pb::HealthCheckRequest::default())
                        .await
                        .is_ok(),
                    Err(_) => false,
                },
            };
            if attempt {
                break started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{front}: never served"
            );
            tokio::task::yield_now().await;
        };
        for socket in &mut idle {
            assert!(
                closed_by_server(socket, Duration::from_secs(5)).await,
                "{front}"
            );
        }
        println!(
            "{front}: a new client was served {served:?} after three idle sockets took every slot"
        );
    }

    // An HTTP/1 keep-alive connection is closed once idle.
    let mut socket = tokio::net::TcpStream::connect(app.http_addr).await.unwrap();
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 512];
    let n = socket.read(&mut answer).await.unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
    assert!(closed_by_server(&mut socket, Duration::from_secs(5)).await);
    // A slow client whose headers never end is cut off.
    let mut slow = tokio::net::TcpStream::connect(app.http_addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    assert!(closed_by_server(&mut slow, Duration::from_secs(5)).await);
    app.stop().await;
}

#[tokio::test]
async fn one_peer_cannot_take_every_connection() {
    let mut limits = short_limits(10, 2);
    limits.handshake_timeout = Duration::from_secs(60);
    let app =
        crate::support::spawn_configured(tempfile::tempdir().unwrap(), |engine| engine, limits)
            .await;
    let from = |ip: &str| {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
        socket.connect(app.http_addr)
    };
    let _first = from("127.0.0.1").await.unwrap();
    let _second = from("127.0.0.1").await.unwrap();
    // A third from the same address is closed on arrival...
    let mut third = from("127.0.0.1").await.unwrap();
    assert!(closed_by_server(&mut third, Duration::from_secs(5)).await);
    // ...while another address is served.
    let mut other = from("127.0.0.2").await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    other.read_to_end(&mut answer).await.unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    app.stop().await;
}

#[tokio::test]
async fn a_malformed_http_request_gets_a_json_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    for request in [
        &b"GET /healthz HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n"[..],
        b"POST /v1/oauth/token HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
    ] {
        let mut socket = tokio::net::TcpStream::connect(app.http_addr).await.unwrap();
        socket.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        socket.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8(answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request"), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["code"], 400);
        assert_eq!(body["message"], "bad request");
        assert!(body["errors"][0].as_str().unwrap().contains("not well-formed"), "{body}");
    }
    app.stop().await;
}

#[tokio::test]
async fn errors_quote_at_most_a_hundred_characters_of_the_input() {
    let app = spawn_app().await;
    let long = "x".repeat(5_000);
    for path in [
        format!("/v1/stats/tasks/{long}/last-run/stats"),
        format!("/v1/stats/tasks/{TASK}/stats/{long}/2024-01-01"),
        format!("/v1/stats/tasks/{TASK}/aggregated-stats/2024-01-01/month/{long}"),
        format!("/v1/stats/pipelines/{PIPELINE}/logs/2024-01-01/2024-01-02?cursor={long}"),
    ] {
        let response = reqwest::Client::new()
            .get(app.url(&path))
            .bearer_auth(&app.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        let body = response.text().await.unwrap();
        assert!(body.len() < 400, "{} bytes: {body}", body.len());
        assert!(body.contains("(5000 bytes)"), "{body}");
    }
    app.stop().await;
}

#[tokio::test]
async fn pending_runs_per_organization_are_capped() {
    let app = crate::support::spawn_configured(
        tempfile::tempdir().unwrap(),
        |engine| engine.with_max_pending_runs(2),
        Default::default(),
    )
    .await;
    register(&app, PIPELINE, &[(TASK, true)]).await;
    start_run(&app).await;
    start_run(&app).await;
    let refused = reqwest::Client::new()
        .post(app.url(&format!("/v1/pipelines/{PIPELINE}/runs")))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .contains("waiting for an executor"),
        "{body}"
    );
    let status = app
        .pipelines()
        .await
        .run_pipeline(proto::RunPipelineRequest {
            pipeline_uuid: PIPELINE.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    // An executor taking them up makes room again.
    let mut executor = app
        .ingest()
        .await
        .watch_pending_task_runs(proto::WatchPendingTaskRunsRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut results = Vec::new();
    for _ in 0..2 {
        let pending = executor.message().await.unwrap().unwrap();
        let mut result = run(0, "2024-01-01 00:00:00");
        result.task_run_uuid = pending.task_run_uuid;
        result.pipeline_run_uuid = pending.pipeline_run_uuid;
        results.push(result);
    }
    app.ingest()
        .await
        .report_task_run_batch(batch(results))
        .await
        .unwrap();
    start_run(&app).await;
    app.stop().await;
}

#[test]
fn the_readme_sample_error_is_the_real_one() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let sample = readme
        .split("**Errors** are JSON `")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .expect("the README shows a sample error");
    let sample: Value = serde_json::from_str(sample).unwrap();
    let runtime = crate::support::runtime();
    let real: Value = runtime.block_on(async {
        let app = spawn_app().await;
        let body = reqwest::Client::new()
            .get(app.url(&format!(
                "/v1/stats/pipelines/{PIPELINE}/aggregated-stats/2024-01-01/fortnight/3"
            )))
            .bearer_auth(&app.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        app.stop().await;
        body
    });
    assert_eq!(sample, real);
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
#[test]
fn the_data_dir_and_every_file_in_it_and_in_backups_are_the_owners_only() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let server = crate::support::ChildServer::start(&data);
    assert_eq!(mode(&data), 0o700);
    for file in ["runledger.redb", "master.key", "admin.sock"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    let backup = root.path().join("backup");
    let (ok, output) = crate::support::run_cli(&[
        "backup",
        "--data-dir",
        data.to_str().unwrap(),
        backup.to_str().unwrap(),
    ]);
    assert!(ok, "{output}");
    assert_eq!(mode(&backup), 0o700);
    for file in ["runledger.redb", "master.key"] {
        assert_eq!(mode(&backup.join(file)), 0o600, "backup {file}");
    }
    assert!(server.stop());
}

/// Sends one line to a data dir's admin socket and returns the answer.
#[cfg(unix)]
fn admin(data: &std::path::Path, line: &str) -> String {
    use std::io::{BufRead, Write};
    let mut socket = std::os::unix::net::UnixStream::connect(data.join("admin.sock")).unwrap();
    socket.write_all(line.as_bytes()).unwrap();
    let mut answer = String::new();
    std::io::BufReader::new(socket)
        .read_line(&mut answer)
        .unwrap();
    answer
}

#[cfg(unix)]
#[test]
fn the_admin_socket_refuses_relative_paths_and_other_users() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let server = crate::support::ChildServer::start(&data);
    let answer = admin(&data, "backup relative/dir\n");
    assert!(
        answer.starts_with("error") && answer.contains("not an absolute path"),
        "{answer}"
    );
    assert!(!data.join("relative").exists());

    // Another user, even with the socket opened up to everyone, is refused by uid. Acting as
    // another user needs root, and a Python that user may run (Debian's).
    let python = std::path::Path::new("/usr/bin/python3");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped the other-user check: it needs root to act as another user");
    } else if !python.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI lacks /usr/bin/python3"
        );
        println!("skipped the other-user check: no /usr/bin/python3");
    } else {
        use std::os::unix::fs::PermissionsExt;
        for (path, mode) in [(root.path(), 0o755), (data.as_path(), 0o755)] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let socket = data.join("admin.sock");
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        let script = format!(
            "import socket; s = socket.socket(socket.AF_UNIX); s.connect({:?}); print(s.recv(1000).decode())",
            socket.to_str().unwrap()
        );
        let output = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(python)
            .args(["-c", &script])
            .output()
            .expect("setpriv (util-linux) and python3 are on the machine");
        let answer = String::from_utf8_lossy(&output.stdout);
        assert!(
            answer.starts_with("error") && answer.contains("uid 65534"),
            "{answer} {output:?}"
        );
    }
    assert!(server.stop());
}

#[test]
fn a_database_with_organizations_does_not_start_without_its_master_key() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let (ok, output) =
        crate::support::run_cli(&["client", "create", "--data-dir", data.to_str().unwrap()]);
    assert!(ok, "{output}");
    std::fs::remove_file(data.join("master.key")).unwrap();
    let stderr =
        crate::support::refused_serve(&data, &[], "the server started without its master key");
    assert!(stderr.contains("master.key is missing"), "{stderr}");
    assert!(
        !data.join("master.key").exists(),
        "no second key was created"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn trickled_bodies_and_silent_streams_are_cut_off_but_open_streams_may_pause() {
    use runledger::proto;
    use tokio::io::AsyncWriteExt;
    let app = crate::support::spawn_configured(
        tempfile::tempdir().unwrap(),
        |engine| engine,
        short_limits(16, 16),
    )
    .await;
    // A REST body trickled a byte at a time: the request fails and the connection closes,
    // well before the 100 bytes it announced could arrive at this pace (20 s).
    let mut slow = tokio::net::TcpStream::connect(app.http_addr).await.unwrap();
    slow.write_all(
        b"POST /v1/oauth/token HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 100\r\n\r\n",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let trickle = async {
        for _ in 0..100 {
            if slow.write_all(b"a").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), trickle).await;
    assert!(closed_by_server(&mut slow, Duration::from_secs(5)).await);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    // A gRPC report stream that never sends its first message ends with an error.
    let mut ingest = proto::ingest_client::IngestClient::with_interceptor(
        crate::support::grpc_channel(app.grpc_addr).await,
        crate::support::Bearer::new(&app.token),
    );
    let started = Instant::now();
    let silent = ingest
        .report_task_runs(tokio_stream::pending::<proto::ReportTaskRunsRequest>())
        .await;
    assert!(silent.is_err(), "{silent:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // One that sends a batch, pauses longer than the timeout, and sends another is served.
    let (send, batches) = tokio::sync::mpsc::channel(2);
    let batch = |n: u32| proto::ReportTaskRunsRequest {
        results: vec![crate::support::finished(
            &uuid::Uuid::from_u128(u128::from(n)).to_string(),
            &uuid::Uuid::from_u128(u128::from(n) + 100).to_string(),
            PIPELINE,
            TASK,
            true,
            5,
            "2024-01-01 00:00:00",
        )],
    };
    let call = tokio::spawn(async move {
        ingest
            .report_task_runs(tokio_stream::wrappers::ReceiverStream::new(batches))
            .await
    });
    send.send(batch(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    send.send(batch(2)).await.unwrap();
    drop(send);
    let counts = call.await.unwrap().unwrap().into_inner();
    assert_eq!((counts.batches, counts.inserted), (2, 2));
    app.stop().await;
}
