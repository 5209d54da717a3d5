//! The REST gateway end to end: the token endpoint, every documented path of both editions
//! (`workflows` and `pipelines`, dates and date-times) checked field by field, paging, running
//! pipelines with an executor, bad input of every kind, tokens, tenants and encrypted outputs.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::{Method, StatusCode};
use runledger::auth::Scopes;
use runledger::engine::TokenLifetimes;
use runledger::proto::{self, EntityKind};
use serde_json::{Value, json};

use crate::helpers::{
    ChildServer, TestApp, finished, run_cli, spawn_app, spawn_app_with, token_for,
};

const PIPELINE: &str = "11111111-1111-4111-8111-111111111111";
const TASK_A: &str = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa";
const TASK_B: &str = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb";
const RUN_1: &str = "00000000-0000-4000-8000-000000000001";
const RUN_2: &str = "00000000-0000-4000-8000-000000000002";
/// The nearest-rank median of the pipeline's runs (120 and 400 ms) as its bin (119..=121)
/// represents it; any value within 1% of 120 would meet the contract.
const PIPELINE_P50: u64 = 120;
const IDLE_TASK: &str = "cccccccc-cccc-4ccc-8ccc-cccccccccccc";

/// Two pipeline runs across a month boundary and a leap day (see the gRPC tests), plus a
/// registered task without runs.
async fn seeded() -> TestApp {
    let app = spawn_app().await;
    app.pipelines()
        .await
        .register_pipeline(proto::RegisterPipelineRequest {
            pipeline_uuid: PIPELINE.into(),
            organization_uuid: String::new(),
            name: "nightly".into(),
            tasks: vec![proto::TaskDefinition {
                task_uuid: IDLE_TASK.into(),
                task_type: proto::TaskType::Filter as i32,
                name: "idle".into(),
                is_initial: false,
            }],
        })
        .await
        .unwrap();
    let results = vec![
        finished(
            "10000000-0000-4000-8000-00000000000a",
            RUN_1,
            PIPELINE,
            TASK_A,
            true,
            100,
            "2024-01-31T23:59:59.5Z",
        ),
        finished(
            "10000000-0000-4000-8000-00000000000b",
            RUN_1,
            PIPELINE,
            TASK_B,
            false,
            300,
            "2024-02-01 00:00:10",
        ),
        finished(
            "20000000-0000-4000-8000-00000000000a",
            RUN_2,
            PIPELINE,
            TASK_A,
            true,
            50,
            "2024-02-29 12:00:00",
        ),
        finished(
            "20000000-0000-4000-8000-00000000000b",
            RUN_2,
            PIPELINE,
            TASK_B,
            true,
            70,
            "2024-02-29 12:00:01",
        ),
    ];
    app.ingest()
        .await
        .report_task_run_batch(proto::ReportTaskRunsRequest { results })
        .await
        .unwrap();
    app
}

/// A request with a bearer token; returns status, headers and the JSON body (Null if none).
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut request = reqwest::Client::new().request(method, app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let text = response.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

/// A reference answer with the percentile fields added: `[p50, p90, p95, p99, max]`, or none
/// (all `null`) for an answer without runs.
fn with_percentiles(mut answer: Value, percentiles: Option<[u64; 5]>) -> Value {
    let names = [
        "duration_p50",
        "duration_p90",
        "duration_p95",
        "duration_p99",
        "max_duration",
    ];
    let object = answer.as_object_mut().unwrap();
    for (at, name) in names.into_iter().enumerate() {
        object.insert(name.into(), json!(percentiles.map(|p| p[at])));
    }
    answer
}

async fn get_ok(app: &TestApp, path: &str) -> Value {
    let (status, _, body) = call(app, Method::GET, path, Some(&app.token)).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

#[tokio::test]
async fn stats_of_both_editions_field_by_field() {
    let app = seeded().await;
    // Durations 100 and 50 ms: nearest-rank p50 is 50, the others the max.
    let task_a = with_percentiles(
        json!({
            "num_of_successes": 2, "num_of_failures": 0, "average_duration": 75,
            "is_last_run_successful": true, "last_run_executed_at": "2024-02-29 12:00:00", "last_run_duration": 50
        }),
        Some([50, 100, 100, 100, 100]),
    );
    assert_eq!(
        get_ok(
            &app,
            &format!("/v1/stats/tasks/{TASK_A}/stats/2024-01-01/2024-12-31")
        )
        .await,
        task_a
    );
    assert_eq!(
        get_ok(
            &app,
            &format!("/v1/stats/tasks/{TASK_A}/stats/2024-01-01/2024-12-31/")
        )
        .await,
        task_a
    );

    // Pipeline runs once each: run 1 failed (400 ms), run 2 succeeded (120 ms).
    let pipeline = with_percentiles(
        json!({
            "num_of_successes": 1, "num_of_failures": 1, "average_duration": 260,
            "is_last_run_successful": true, "last_run_executed_at": "2024-02-29 12:00:01", "last_run_duration": 120
        }),
        Some([PIPELINE_P50, 400, 400, 400, 400]),
    );
    for path in [
        format!("/v1/stats/pipelines/{PIPELINE}/stats/2024-01-01%2000:00:00/2024-12-31%2023:59:59"),
        format!("/v1/stats/workflows/{PIPELINE}/stats/2024-01-01/2024-12-31"),
        format!("/v1/stats/pipelines/{PIPELINE}/stats/2024-01-01T00:00:00/2024-12-31T23:59:59/"),
    ] {
        assert_eq!(get_ok(&app, &path).await, pipeline, "{path}");
    }
    // Second precision, inclusive: run 1 executed at 00:00:10.
    let before = get_ok(
        &app,
        &format!("/v1/stats/pipelines/{PIPELINE}/stats/2024-01-01/2024-02-01%2000:00:09"),
    )
    .await;
    assert_eq!(
        before,
        with_percentiles(
            json!({
                "num_of_successes": 0, "num_of_failures": 0, "average_duration": 0,
                "is_last_run_successful": false, "last_run_executed_at": null, "last_run_duration": 0
            }),
            None
        )
    );
    let at = get_ok(
        &app,
        &format!(
            "/v1/stats/workflows/{PIPELINE}/stats/2024-02-01%2000:00:10/2024-02-01%2000:00:10"
        ),
    )
    .await;
    assert_eq!(
        (
            at["num_of_failures"].as_u64(),
            at["last_run_duration"].as_u64()
        ),
        (Some(1), Some(400))
    );
    // The last run may lie before `from`.
    let later = get_ok(
        &app,
        &format!("/v1/stats/tasks/{TASK_B}/stats/2024-06-01/2024-06-30"),
    )
    .await;
    assert_eq!(
        (
            later["num_of_successes"].as_u64(),
            later["last_run_executed_at"].as_str()
        ),
        (Some(0), Some("2024-02-29 12:00:01"))
    );

    let months = json!([with_percentiles(
        json!({
            "date_from": "2024-02-01 00:00:00", "date_to": "2024-02-29 23:59:59",
            "num_of_successes": 1, "num_of_failures": 1, "average_duration": 260
        }),
        Some([PIPELINE_P50, 400, 400, 400, 400])
    )]);
    assert_eq!(
        get_ok(
            &app,
            &format!("/v1/stats/pipelines/{PIPELINE}/aggregated-stats/2024-01-15/month/3")
        )
        .await,
        months
    );
    assert_eq!(
        get_ok(
            &app,
            &format!(
                "/v1/stats/workflows/{PIPELINE}/aggregated-stats/2024-01-15%2008:00:00/month/3/"
            )
        )
        .await,
        months
    );
    // Filled: exactly three months, the empty ones with zeros.
    let empty = |from: &str, to: &str| {
        with_percentiles(
            json!({"date_from": from, "date_to": to, "num_of_successes": 0, "num_of_failures": 0, "average_duration": 0}),
            None,
        )
    };
    assert_eq!(
        get_ok(
            &app,
            &format!(
                "/v1/stats/pipelines/{PIPELINE}/aggregated-stats/2024-01-15/month/3?fill=zero"
            )
        )
        .await,
        json!([
            empty("2024-01-01 00:00:00", "2024-01-31 23:59:59"),
            months[0],
            empty("2024-03-01 00:00:00", "2024-03-31 23:59:59")
        ])
    );
    let weeks = get_ok(
        &app,
        &format!("/v1/stats/tasks/{TASK_A}/aggregated-stats/2024-01-29/week/5"),
    )
    .await;
    assert_eq!(
        weeks,
        json!([
            with_percentiles(
                json!({"date_from": "2024-01-29 00:00:00", "date_to": "2024-02-04 23:59:59", "num_of_successes": 1, "num_of_failures": 0, "average_duration": 100}),
                Some([100; 5])
            ),
            with_percentiles(
                json!({"date_from": "2024-02-26 00:00:00", "date_to": "2024-03-03 23:59:59", "num_of_successes": 1, "num_of_failures": 0, "average_duration": 50}),
                Some([50; 5])
            )
        ])
    );
    assert_eq!(
        get_ok(
            &app,
            &format!("/v1/stats/tasks/{TASK_A}/aggregated-stats/2023-01-01/year/1")
        )
        .await,
        json!([])
    );
    let quarter = get_ok(
        &app,
        &format!("/v1/stats/tasks/{TASK_B}/aggregated-stats/2024-03-31/quarter/1"),
    )
    .await;
    assert_eq!(quarter[0]["date_to"], "2024-03-31 23:59:59");

    assert_eq!(
        get_ok(&app, &format!("/v1/stats/tasks/{TASK_B}/last-run/stats")).await,
        json!({"is_successful": true, "executed_at": "2024-02-29 12:00:01", "duration": 70})
    );
    assert_eq!(
        get_ok(
            &app,
            &format!("/v1/stats/workflows/{PIPELINE}/last-run/stats/")
        )
        .await,
        json!({"is_successful": true, "executed_at": "2024-02-29 12:00:01", "duration": 120})
    );
    let (status, _, body) = call(
        &app,
        Method::GET,
        &format!("/v1/stats/tasks/{IDLE_TASK}/last-run/stats"),
        Some(&app.token),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .contains("has no finished run"),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn logs_are_paged_newest_first_with_decryptable_outputs() {
    let app = seeded().await;
    let path =
        format!("/v1/stats/pipelines/{PIPELINE}/logs/2024-01-01%2000:00:00/2024-12-31%2023:59:59");
    let all = get_ok(&app, &path).await;
    let entries = all.as_array().unwrap();
    assert_eq!(entries.len(), 4);
    let first = &entries[0];
    assert_eq!(first["workflow_run_uuid"], RUN_2);
    assert_eq!(first["pipeline_run_uuid"], RUN_2);
    assert_eq!(
        first["task_run_uuid"],
        "20000000-0000-4000-8000-00000000000b"
    );
    assert_eq!(first["task_uuid"], TASK_B);
    assert_eq!(first["task_type"], "query");
    assert_eq!(first["is_successful"], true);
    assert_eq!(first["duration"], 70);
    assert_eq!(first["metric_value"], 2.5);
    assert_eq!(first["executed_at"], "2024-02-29T12:00:01Z");
    assert_eq!(entries[3]["executed_at"], "2024-01-31T23:59:59.500Z");
    // The output is the sealed envelope; the organization's key opens it.
    let key = app
        .client
        .output_key
        .clone()
        .expect("the first client of its organization shows the key");
    let opened =
        runledger::crypto::decrypt_base64(&key, first["output"].as_str().unwrap()).unwrap();
    assert_eq!(opened, b"rows=3");

    let (status, headers, page) = call(
        &app,
        Method::GET,
        &format!("{path}?limit=3"),
        Some(&app.token),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page.as_array().unwrap()[..], entries[..3]);
    let link = headers["link"].to_str().unwrap().to_string();
    assert!(
        link.ends_with("; rel=\"next\"")
            && link.contains(headers["x-next-cursor"].to_str().unwrap()),
        "{link}"
    );
    let next = link.trim_start_matches('<').split('>').next().unwrap();
    let (_, headers, rest) = call(&app, Method::GET, next, Some(&app.token)).await;
    assert_eq!(rest.as_array().unwrap()[..], entries[3..]);
    assert!(headers.get("link").is_none() && headers.get("x-next-cursor").is_none());
    app.stop().await;
}

#[tokio::test]
async fn the_token_endpoint_grants_refreshes_and_refuses() {
    let app = spawn_app().await;
    let (id, secret) = (
        app.client.client_id.clone(),
        app.client.client_secret.clone(),
    );
    let http = reqwest::Client::new();
    let url = app.url("/v1/oauth/token");

    let response = http
        .get(format!(
            "{url}?client_id={id}&client_secret={secret}&grant_type=client_credentials"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let grant: Value = response.json().await.unwrap();
    assert_eq!(grant["token_type"], "Bearer");
    assert_eq!(grant["expires_in"], 86_400);
    assert_eq!(grant["scope"], "pipelines:run stats:read runs:write");
    assert!(grant["access_token"].as_str().unwrap().starts_with("rla_"));

    // A form body, an alias scope echoed as asked, and a trailing slash.
    let narrowed: Value = http
        .post(format!("{url}/"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &secret),
            ("scope", "workflows:run"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(narrowed["scope"], "workflows:run");
    // A narrowed token cannot read stats.
    let (status, _, body) = call(
        &app,
        Method::GET,
        &format!("/v1/stats/tasks/{TASK_A}/last-run/stats"),
        narrowed["access_token"].as_str(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .contains("lacks the stats:read scope")
    );

    // POST with the parameters in the query string, and HTTP Basic client authentication.
    let posted = http
        .post(format!(
            "{url}?grant_type=client_credentials&client_id={id}&client_secret={secret}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    let basic = http
        .post(&url)
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 200);

    // A refresh token works once, with the client's credentials, and keeps the scopes.
    let refresh = |token: String| {
        let (http, url, id, secret) = (http.clone(), url.clone(), id.clone(), secret.clone());
        async move {
            http.post(&url)
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &token),
                    ("client_id", &id),
                    ("client_secret", &secret),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    let refresh_token = narrowed["refresh_token"].as_str().unwrap().to_string();
    let renewed = refresh(refresh_token.clone()).await;
    assert_eq!(renewed.status(), 200);
    let renewed: Value = renewed.json().await.unwrap();
    assert_eq!(renewed["scope"], "workflows:run");
    assert_ne!(renewed["refresh_token"], narrowed["refresh_token"]);
    let reused = refresh(refresh_token).await;
    assert_eq!(reused.status(), 400);
    assert_eq!(
        reused.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );

    let errors: Vec<(String, u16, &str)> = vec![
        (
            format!("{url}?client_id={id}&client_secret={secret}"),
            400,
            "invalid_request",
        ),
        (
            format!("{url}?grant_type=password&client_id={id}&client_secret={secret}"),
            400,
            "unsupported_grant_type",
        ),
        (
            format!("{url}?grant_type=client_credentials&client_id={id}&client_secret=rls_wrong"),
            401,
            "invalid_client",
        ),
        (
            format!(
                "{url}?grant_type=client_credentials&client_id=rlc_nobody&client_secret={secret}"
            ),
            401,
            "invalid_client",
        ),
        (
            format!(
                "{url}?grant_type=client_credentials&client_id={id}&client_secret={secret}&scope=admin"
            ),
            400,
            "invalid_scope",
        ),
        (
            format!(
                "{url}?grant_type=client_credentials&grant_type=client_credentials&client_id={id}&client_secret={secret}"
            ),
            400,
            "invalid_request",
        ),
        (
            format!("{url}?grant_type=refresh_token&client_id={id}&client_secret={secret}"),
            400,
            "invalid_request",
        ),
        (
            format!(
                "{url}?grant_type=refresh_token&refresh_token=rlr_made_up&client_id={id}&client_secret={secret}"
            ),
            400,
            "invalid_grant",
        ),
    ];
    for (request, status, error) in errors {
        let response = http.get(&request).send().await.unwrap();
        assert_eq!(response.status(), status, "{request}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], error, "{request}: {body}");
        assert!(!body["error_description"].as_str().unwrap().is_empty());
    }

    // A client limited to stats:read may not be granted more.
    let reader = app
        .engine
        .create_client(
            Some(app.client.organization),
            [runledger::auth::Scope::StatsRead].into_iter().collect(),
        )
        .unwrap();
    let refused = http
        .get(format!(
            "{url}?grant_type=client_credentials&client_id={}&client_secret={}&scope=runs:write",
            reader.client_id, reader.client_secret
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(
        refused.json::<Value>().await.unwrap()["error"],
        "invalid_scope"
    );
    assert!(
        reader.output_key.is_none(),
        "only an organization's first client shows its key"
    );
    app.stop().await;
}

#[tokio::test]
async fn running_a_pipeline_hands_pending_task_runs_to_an_executor() {
    let app = spawn_app().await;
    let pipeline = "22222222-2222-4222-8222-222222222222";
    let (first, second, last) = (
        "d1000000-0000-4000-8000-000000000001",
        "d2000000-0000-4000-8000-000000000002",
        "d3000000-0000-4000-8000-000000000003",
    );
    let task = |uuid: &str, is_initial: bool| proto::TaskDefinition {
        task_uuid: uuid.into(),
        task_type: proto::TaskType::ApiCall as i32,
        name: String::new(),
        is_initial,
    };
    app.pipelines()
        .await
        .register_pipeline(proto::RegisterPipelineRequest {
            pipeline_uuid: pipeline.into(),
            organization_uuid: String::new(),
            name: "sync".into(),
            tasks: vec![task(first, true), task(second, true), task(last, false)],
        })
        .await
        .unwrap();
    let mut executor = app
        .ingest()
        .await
        .watch_pending_task_runs(proto::WatchPendingTaskRunsRequest {})
        .await
        .unwrap()
        .into_inner();

    let (status, _, started) = call(
        &app,
        Method::POST,
        &format!("/v1/pipelines/{pipeline}/runs/"),
        Some(&app.token),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let started = started.as_array().unwrap().clone();
    assert_eq!(started.len(), 2);
    let run_uuid = started[0]["workflow_run_uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let mut tasks: Vec<&str> = started
        .iter()
        .map(|t| t["task_uuid"].as_str().unwrap())
        .collect();
    tasks.sort();
    assert_eq!(tasks, [first, second]);
    for task_run in &started {
        assert!(task_run["id"].is_u64());
        assert_eq!(task_run["state"], "pending");
        assert_eq!(task_run["pipeline_run_uuid"], run_uuid.as_str());
        assert_eq!(task_run["workflow_run_uuid"], run_uuid.as_str());
        assert_eq!(
            (
                task_run["is_successful"].clone(),
                task_run["output"].clone(),
                task_run["errors"].clone()
            ),
            (json!(false), Value::Null, Value::Null)
        );
        let created = task_run["created_at"].as_str().unwrap();
        assert!(
            runledger::time::parse_path_datetime(created, runledger::time::RangeEnd::Start).is_ok(),
            "{created}"
        );
        assert_eq!(task_run["updated_at"], task_run["created_at"]);
    }

    // The executor receives both and reports them; they then count in the stats.
    let mut results = Vec::new();
    for _ in 0..2 {
        let pending = executor.message().await.unwrap().unwrap();
        assert!(
            started
                .iter()
                .any(|t| t["task_run_uuid"] == pending.task_run_uuid.as_str()
                    && t["id"] == pending.id)
        );
        assert_eq!(pending.pipeline_run_uuid, run_uuid);
        let mut result = finished(
            &pending.task_run_uuid,
            &pending.pipeline_run_uuid,
            &pending.pipeline_uuid,
            &pending.task_uuid,
            true,
            40,
            "2024-05-01 10:00:00",
        );
        result.organization_uuid.clear();
        results.push(result);
    }
    let reported = app
        .ingest()
        .await
        .report_task_run_batch(proto::ReportTaskRunsRequest { results })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (reported.inserted, reported.replaced),
        (0, 2),
        "the pending runs are replaced by their results"
    );
    let stats = get_ok(
        &app,
        &format!("/v1/stats/pipelines/{pipeline}/stats/2024-05-01/2024-05-01"),
    )
    .await;
    assert_eq!(
        (
            stats["num_of_successes"].as_u64(),
            stats["average_duration"].as_u64()
        ),
        (Some(1), Some(80))
    );

    // The older edition's path works too, without the trailing slash.
    let (status, _, again) = call(
        &app,
        Method::POST,
        &format!("/v1/workflows/{pipeline}/runs"),
        Some(&app.token),
    )
    .await;
    assert_eq!(
        (status, again.as_array().map(Vec::len)),
        (StatusCode::CREATED, Some(2))
    );

    // A pipeline without initial tasks cannot be run.
    let (status, _, body) = call(
        &app,
        Method::POST,
        &format!("/v1/pipelines/{PIPELINE}/runs/"),
        Some(&app.token),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let no_initial = "33333333-3333-4333-8333-333333333333";
    app.pipelines()
        .await
        .register_pipeline(proto::RegisterPipelineRequest {
            pipeline_uuid: no_initial.into(),
            organization_uuid: String::new(),
            name: String::new(),
            tasks: vec![task("d4000000-0000-4000-8000-000000000004", false)],
        })
        .await
        .unwrap();
    let (status, _, body) = call(
        &app,
        Method::POST,
        &format!("/v1/pipelines/{no_initial}/runs/"),
        Some(&app.token),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .contains("no initial task"),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_input_gets_the_contracts_status_and_a_json_error_naming_the_problem() {
    let app = seeded().await;
    // Another organization's client: the first pipeline does not exist for it.
    let stranger = app.engine.create_client(None, Scopes::all()).unwrap();
    let stranger_token = token_for(&app.engine, &stranger, None).await;
    let stats_only = token_for(&app.engine, &app.client, Some("stats:read")).await;
    let run_only = token_for(&app.engine, &app.client, Some("pipelines:run")).await;
    let good = app.token.clone();
    let unknown = "99999999-9999-4999-8999-999999999999";
    let stats =
        |uuid: &str, from: &str, to: &str| format!("/v1/stats/tasks/{uuid}/stats/{from}/{to}");
    let aggregated = |rest: &str| format!("/v1/stats/pipelines/{PIPELINE}/aggregated-stats/{rest}");
    let logs =
        |query: &str| format!("/v1/stats/pipelines/{PIPELINE}/logs/2024-01-01/2024-12-31?{query}");
    let cases: Vec<(Method, String, Option<&str>, u16, String)> = vec![
        (
            Method::GET,
            stats("not-a-uuid", "2024-01-01", "2024-01-02"),
            Some(&good),
            400,
            "uuid: `not-a-uuid` is not a UUID".to_string(),
        ),
        (
            Method::GET,
            stats(TASK_A, "2024-02-30", "2024-03-01"),
            Some(&good),
            400,
            "from: `2024-02-30` is not a valid date: 2024-02 has 29 days".to_string(),
        ),
        (
            Method::GET,
            stats(TASK_A, "2024-01-01", "2024-13-01"),
            Some(&good),
            400,
            "to: `2024-13-01` is not a valid date".to_string(),
        ),
        (
            Method::GET,
            stats(TASK_A, "2024-01-01%2025:00:00", "2024-01-02"),
            Some(&good),
            400,
            "from: `2024-01-01 25:00:00` has a time of day out of range".to_string(),
        ),
        (
            Method::GET,
            stats(TASK_A, "yesterday", "today"),
            Some(&good),
            400,
            "from: `yesterday` is not a date".to_string(),
        ),
        (
            Method::GET,
            stats(TASK_A, "2024-03-01", "2024-02-01"),
            Some(&good),
            400,
            "from: must not be after to".to_string(),
        ),
        (
            Method::GET,
            aggregated("2024-01-01/fortnight/3"),
            Some(&good),
            400,
            "period: must be one of day, week, month, quarter, year".to_string(),
        ),
        (
            Method::GET,
            aggregated("2024-01-01/month/0"),
            Some(&good),
            400,
            "n: must be between 1 and 1000, got 0".to_string(),
        ),
        (
            Method::GET,
            aggregated("2024-01-01/month/3?fill=gaps"),
            Some(&good),
            400,
            "fill: `gaps` is not a fill; the only one is zero".to_string(),
        ),
        (
            Method::GET,
            aggregated("2024-01-01/month/100000"),
            Some(&good),
            400,
            "n: must be between 1 and 1000, got 100000".to_string(),
        ),
        (
            Method::GET,
            aggregated("2024-01-01/month/twelve"),
            Some(&good),
            400,
            "n: `twelve` is not a whole number".to_string(),
        ),
        (
            Method::GET,
            aggregated("2024-02-30/month/3"),
            Some(&good),
            400,
            "date_from: `2024-02-30` is not a valid date".to_string(),
        ),
        (
            Method::GET,
            logs("limit=0"),
            Some(&good),
            400,
            "limit: must be between 1 and 1000, got 0".to_string(),
        ),
        (
            Method::GET,
            logs("limit=5000"),
            Some(&good),
            400,
            "limit: must be between 1 and 1000".to_string(),
        ),
        (
            Method::GET,
            logs("limit=-1"),
            Some(&good),
            400,
            "limit: `-1` is not a whole number".to_string(),
        ),
        (
            Method::GET,
            logs("cursor=garbage"),
            Some(&good),
            400,
            "cursor: `garbage` is not a cursor this server issued".to_string(),
        ),
        (
            Method::GET,
            format!("/v1/stats/users/{TASK_A}/stats/2024-01-01/2024-01-02"),
            Some(&good),
            404,
            "the kinds are tasks, pipelines and workflows".to_string(),
        ),
        (
            Method::GET,
            format!("/v1/stats/tasks/{TASK_A}/logs/2024-01-01/2024-01-02"),
            Some(&good),
            404,
            "logs are kept per pipeline".to_string(),
        ),
        (
            Method::GET,
            stats(unknown, "2024-01-01", "2024-01-02"),
            Some(&good),
            404,
            format!("task {unknown} not found"),
        ),
        (
            Method::GET,
            format!("/v1/stats/pipelines/{PIPELINE}/last-run/stats"),
            Some(&stranger_token),
            404,
            format!("pipeline {PIPELINE} not found"),
        ),
        (
            Method::GET,
            stats(TASK_A, "2024-01-01", "2024-01-02"),
            Some(&stranger_token),
            404,
            format!("task {TASK_A} not found"),
        ),
        (
            Method::POST,
            format!("/v1/pipelines/{PIPELINE}/runs/"),
            Some(&stranger_token),
            404,
            format!("pipeline {PIPELINE} not found"),
        ),
        (
            Method::POST,
            format!("/v1/pipelines/{unknown}/runs/"),
            Some(&good),
            404,
            format!("pipeline {unknown} not found"),
        ),
        (
            Method::POST,
            "/v1/pipelines/not-a-uuid/runs/".into(),
            Some(&good),
            400,
            "uuid: `not-a-uuid` is not a UUID".to_string(),
        ),
        (
            Method::GET,
            stats(TASK_A, "2024-01-01", "2024-01-02"),
            None,
            401,
            "no credentials".to_string(),
        ),
        (
            Method::GET,
            stats(TASK_A, "2024-01-01", "2024-01-02"),
            Some("rla_forged"),
            401,
            "the access token is not valid".to_string(),
        ),
        (
            Method::POST,
            format!("/v1/pipelines/{PIPELINE}/runs/"),
            Some(&stats_only),
            403,
            "lacks the pipelines:run scope".to_string(),
        ),
        (
            Method::GET,
            stats(TASK_A, "2024-01-01", "2024-01-02"),
            Some(&run_only),
            403,
            "lacks the stats:read scope".to_string(),
        ),
        (
            Method::DELETE,
            stats(TASK_A, "2024-01-01", "2024-01-02"),
            Some(&good),
            405,
            "DELETE is not allowed".to_string(),
        ),
        (
            Method::GET,
            format!("/v1/pipelines/{PIPELINE}/runs/"),
            Some(&good),
            405,
            "GET is not allowed".to_string(),
        ),
        (
            Method::PUT,
            "/v1/oauth/token".into(),
            None,
            405,
            "PUT is not allowed".to_string(),
        ),
        (
            Method::GET,
            "/v1/nothing/here".into(),
            Some(&good),
            404,
            "no route for GET /v1/nothing/here".to_string(),
        ),
        (
            Method::GET,
            "/v2/stats".into(),
            None,
            404,
            "no route".to_string(),
        ),
    ];
    for (method, path, token, status, message) in cases {
        let (got, headers, body) = call(&app, method.clone(), &path, token).await;
        assert_eq!(got.as_u16(), status, "{method} {path}: {body}");
        assert_eq!(body["code"], status, "{method} {path}: {body}");
        let detail = body["errors"][0].as_str().unwrap_or_default();
        assert!(
            detail.contains(&message),
            "{method} {path}: {detail:?} lacks {message:?}"
        );
        if status == 401 {
            assert!(headers.contains_key("www-authenticate"));
        }
    }

    // A header that is not Bearer, and an oversized body.
    let response = reqwest::Client::new()
        .get(app.url(&stats(TASK_A, "2024-01-01", "2024-01-02")))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = reqwest::Client::new()
        .post(app.url(&format!("/v1/pipelines/{PIPELINE}/runs/")))
        .bearer_auth(&good)
        .body(vec![b'x'; 100 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .contains("limited to 65536 bytes"),
        "{body}"
    );

    // Another organization's pipeline reads exactly like a missing one.
    let (_, _, theirs) = call(
        &app,
        Method::GET,
        &format!("/v1/stats/pipelines/{PIPELINE}/last-run/stats"),
        Some(&stranger_token),
    )
    .await;
    let (_, _, missing) = call(
        &app,
        Method::GET,
        &format!("/v1/stats/pipelines/{unknown}/last-run/stats"),
        Some(&stranger_token),
    )
    .await;
    assert_eq!(
        theirs.to_string().replace(PIPELINE, unknown),
        missing.to_string()
    );

    // The server still serves, and still right.
    assert_eq!(
        get_ok(&app, &stats(TASK_A, "2024-01-01", "2024-12-31")).await["num_of_successes"],
        2
    );
    app.stop().await;
}

#[tokio::test]
async fn expired_and_revoked_tokens_are_refused() {
    let expired = spawn_app_with(
        tempfile::tempdir().unwrap(),
        TokenLifetimes {
            access_secs: 0,
            refresh_secs: 0,
        },
    )
    .await;
    let (status, _, body) = call(
        &expired,
        Method::GET,
        &format!("/v1/stats/tasks/{TASK_A}/last-run/stats"),
        Some(&expired.token),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["errors"][0].as_str().unwrap().contains("expired"),
        "{body}"
    );
    expired.stop().await;

    let app = seeded().await;
    let path = format!("/v1/stats/tasks/{TASK_A}/last-run/stats");
    assert_eq!(
        call(&app, Method::GET, &path, Some(&app.token)).await.0,
        StatusCode::OK
    );
    app.engine.revoke_client(&app.client.client_id).unwrap();
    let (status, _, body) = call(&app, Method::GET, &path, Some(&app.token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let refused = app
        .engine
        .issue_token(runledger::engine::TokenRequest {
            grant_type: Some("client_credentials".into()),
            client_id: Some(app.client.client_id.clone()),
            client_secret: Some(app.client.client_secret.clone()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("invalid_client"), "{refused}");
    // gRPC sees the same revocation.
    let status = app
        .stats()
        .await
        .get_last_run_stats(proto::GetLastRunStatsRequest {
            entity: crate::helpers::entity(EntityKind::Task, TASK_A),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    app.stop().await;
}

/// A small check of a JSON value against an OpenAPI 3.0 schema: types, required properties,
/// nullability, enums and array items, following `$ref`s (and `allOf`) into the document.
fn check_schema(document: &Value, schema: &Value, value: &Value, at: &str) {
    if let Some(all) = schema["allOf"].as_array() {
        if value.is_null() {
            assert_eq!(schema["nullable"], true, "{at} is null but not nullable");
            return;
        }
        for schema in all {
            check_schema(document, schema, value, at);
        }
        return;
    }
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return check_schema(
            document,
            &document["components"]["schemas"][name],
            value,
            at,
        );
    }
    if value.is_null() {
        assert_eq!(schema["nullable"], true, "{at} is null but not nullable");
        return;
    }
    match schema["type"].as_str() {
        Some("object") => {
            assert!(value.is_object(), "{at} is not an object: {value}");
            for field in schema["required"].as_array().into_iter().flatten() {
                let field = field.as_str().unwrap();
                assert!(value.get(field).is_some(), "{at} lacks {field}");
            }
            for (name, property) in schema["properties"].as_object().into_iter().flatten() {
                if let Some(field) = value.get(name) {
                    check_schema(document, property, field, &format!("{at}.{name}"));
                }
            }
            if let Some(properties) = schema["properties"].as_object() {
                for name in value.as_object().unwrap().keys() {
                    assert!(
                        properties.contains_key(name),
                        "{at}.{name} is not documented"
                    );
                }
            }
        }
        Some("array") => {
            for (index, item) in value
                .as_array()
                .unwrap_or_else(|| panic!("{at} is not an array"))
                .iter()
                .enumerate()
            {
                check_schema(document, &schema["items"], item, &format!("{at}[{index}]"));
            }
        }
        Some("string") => assert!(value.is_string(), "{at} is not a string"),
        Some("integer") => assert!(value.is_u64() || value.is_i64(), "{at} is not an integer"),
        Some("number") => assert!(value.is_number(), "{at} is not a number"),
        Some("boolean") => assert!(value.is_boolean(), "{at} is not a boolean"),
        _ => {}
    }
    if let Some(allowed) = schema["enum"].as_array() {
        assert!(
            allowed.contains(value),
            "{at} = {value} is not one of {allowed:?}"
        );
    }
}

#[tokio::test]
async fn the_openapi_document_describes_what_is_served() {
    let app = seeded().await;
    let document = get_ok(&app, "/v1/openapi.json").await;
    assert_eq!(document["openapi"], "3.0.3");
    let paths = document["paths"].as_object().unwrap();
    let mut documented: Vec<&str> = paths.keys().map(String::as_str).collect();
    documented.sort();
    assert_eq!(
        documented,
        [
            "/v1/oauth/token",
            "/v1/openapi.json",
            "/v1/pipelines/{uuid}/runs/",
            "/v1/stats/pipelines",
            "/v1/stats/pipelines/{uuid}/logs/{from}/{to}",
            "/v1/stats/{kind}/{uuid}/aggregated-stats/{date_from}/{period}/{n}",
            "/v1/stats/{kind}/{uuid}/last-run/stats",
            "/v1/stats/{kind}/{uuid}/stats/{from}/{to}",
            "/v1/workflows/{uuid}/runs/",
        ]
    );
    app.pipelines()
        .await
        .register_pipeline(proto::RegisterPipelineRequest {
            pipeline_uuid: PIPELINE.into(),
            organization_uuid: String::new(),
            name: String::new(),
            tasks: vec![proto::TaskDefinition {
                task_uuid: TASK_A.into(),
                task_type: proto::TaskType::Query as i32,
                name: String::new(),
                is_initial: true,
            }],
        })
        .await
        .unwrap();
    let credentials = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}",
        app.client.client_id, app.client.client_secret
    );
    let mut checked = 0;
    for (template, operations) in paths {
        for (method, operation) in operations.as_object().unwrap() {
            let kinds: &[&str] = if template.contains("{kind}") {
                &["tasks", "pipelines", "workflows"]
            } else {
                &["pipelines"]
            };
            for kind in kinds {
                let uuid = if *kind == "tasks" { TASK_A } else { PIPELINE };
                let mut path = template
                    .replace("{kind}", kind)
                    .replace("{uuid}", uuid)
                    .replace("{from}", "2024-01-01")
                    .replace("{to}", "2024-12-31%2023:59:59")
                    .replace("{date_from}", "2024-01-01")
                    .replace("{period}", "month")
                    .replace("{n}", "12");
                if path == "/v1/oauth/token" {
                    path = format!("{path}?{credentials}");
                }
                let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let (status, _, body) = call(&app, method.clone(), &path, Some(&app.token)).await;
                let response = &operation["responses"][status.as_str()];
                assert!(
                    response.is_object(),
                    "{method} {path} answered {status}, which is not documented"
                );
                assert!(status.is_success(), "{method} {path}: {status} {body}");
                check_schema(
                    &document,
                    &response["content"]["application/json"]["schema"],
                    &body,
                    &format!("{method} {path}"),
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 14, "{checked} operations checked");
    // Each operation lists only the statuses it can answer (reads are never queued or
    // throttled: no 429; GETs read no body: no 413).
    let statuses = |path: &str, method: &str| -> Vec<String> {
        paths[path][method]["responses"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    let read = ["200", "400", "401", "403", "404", "503"];
    for path in [
        "/v1/stats/pipelines/{uuid}/logs/{from}/{to}",
        "/v1/stats/{kind}/{uuid}/aggregated-stats/{date_from}/{period}/{n}",
        "/v1/stats/{kind}/{uuid}/last-run/stats",
        "/v1/stats/{kind}/{uuid}/stats/{from}/{to}",
    ] {
        assert_eq!(statuses(path, "get"), read, "{path}");
    }
    let run = [
        "201", "400", "401", "403", "404", "409", "413", "429", "503",
    ];
    assert_eq!(statuses("/v1/pipelines/{uuid}/runs/", "post"), run);
    let token = ["200", "400", "401", "413", "429", "503"];
    assert_eq!(statuses("/v1/oauth/token", "get"), token);
    assert_eq!(statuses("/v1/openapi.json", "get"), ["200"]);
    assert_eq!(
        statuses("/v1/stats/pipelines", "get"),
        ["200", "400", "401", "403", "503"]
    );
    // Error bodies match the documented error schema too.
    let (status, _, error) = call(
        &app,
        Method::GET,
        &format!("/v1/stats/tasks/{TASK_A}/stats/2024-02-30/2024-03-01"),
        Some(&app.token),
    )
    .await;
    assert_eq!(status, 400);
    check_schema(
        &document,
        &json!({"$ref": "#/components/schemas/Error"}),
        &error,
        "error",
    );
    app.stop().await;
}

/// The contract's envelope, opened with nothing but a generic XChaCha20-Poly1305.
fn open_envelope(key_base64: &str, value_base64: &str) -> Vec<u8> {
    use chacha20poly1305::aead::{Aead, KeyInit};
    let key: [u8; 32] = STANDARD.decode(key_base64).unwrap().try_into().unwrap();
    let sealed = STANDARD.decode(value_base64).unwrap();
    let (nonce, ciphertext_and_tag) = sealed.split_at(24);
    let nonce: [u8; 24] = nonce.try_into().unwrap();
    chacha20poly1305::XChaCha20Poly1305::new(&key.into())
        .decrypt(&nonce.into(), ciphertext_and_tag)
        .unwrap()
}

#[test]
fn a_logged_output_decrypts_with_the_key_from_client_create() {
    let dir = tempfile::tempdir().unwrap();
    // A data dir only its owner may enter, as runledger makes the ones it creates.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let org = "44444444-4444-4444-8444-444444444444";
    let (ok, output) = run_cli(&[
        "client",
        "create",
        "--data-dir",
        data_dir,
        "--org",
        org,
        "--scopes",
        "stats:read,runs:write",
    ]);
    assert!(ok, "{output}");
    // Standard output holds the credentials; warnings (a loose temp dir) go to standard error.
    let credentials = crate::helpers::printed_json(&output);
    assert_eq!(credentials["organization_uuid"], org);
    assert_eq!(credentials["scopes"], "stats:read runs:write");
    let key = credentials["output_key"]
        .as_str()
        .expect("the organization's first client shows its key")
        .to_string();
    let (ok, second) = run_cli(&["client", "create", "--data-dir", data_dir, "--org", org]);
    assert!(ok && !second.contains("output_key"), "{second}");
    let (ok, shown) = run_cli(&["key", "--data-dir", data_dir, "--org", org]);
    assert!(ok && shown.trim() == key, "{shown}");

    let server = ChildServer::start(dir.path());
    assert!(
        server.first_client.is_none(),
        "a data dir with clients gets no first-start client"
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let logged = runtime.block_on(async {
        let http = reqwest::Client::new();
        let grant: Value = http
            .post(format!("http://{}/v1/oauth/token", server.http_addr))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", credentials["client_id"].as_str().unwrap()),
                (
                    "client_secret",
                    credentials["client_secret"].as_str().unwrap(),
                ),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = grant["access_token"].as_str().unwrap().to_string();
        let mut ingest = proto::ingest_client::IngestClient::with_interceptor(
            crate::helpers::grpc_channel(server.grpc_addr).await,
            crate::helpers::Bearer::new(&token),
        );
        let mut result = finished(
            "50000000-0000-4000-8000-000000000001",
            RUN_1,
            PIPELINE,
            TASK_A,
            true,
            9,
            "2024-04-01 08:00:00",
        );
        result.organization_uuid = org.into();
        result.output = br#"{"amount": 299.76, "currency": "EUR"}"#.to_vec();
        ingest
            .report_task_run_batch(proto::ReportTaskRunsRequest {
                results: vec![result],
            })
            .await
            .unwrap();
        let logs: Value = http
            .get(format!(
                "http://{}/v1/stats/pipelines/{PIPELINE}/logs/2024-04-01/2024-04-01",
                server.http_addr
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        logs[0]["output"].as_str().unwrap().to_string()
    });
    server.kill();
    assert_eq!(
        open_envelope(&key, &logged),
        br#"{"amount": 299.76, "currency": "EUR"}"#
    );
    let (ok, plaintext) = run_cli(&["decrypt", "--key", &key, &logged]);
    assert!(ok);
    assert_eq!(plaintext, r#"{"amount": 299.76, "currency": "EUR"}"#);
    // The key file is private to its owner.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("master.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test]
async fn unknown_routes_are_json_404s() {
    let app = spawn_app().await;
    let response = reqwest::get(app.url("/v1/nowhere")).await.unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], 404);
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .contains("no route for GET /v1/nowhere")
    );
    assert_eq!(
        reqwest::get(app.url("/healthz")).await.unwrap().status(),
        200
    );
    app.stop().await;
}

#[test]
fn a_fresh_server_prints_credentials_that_work() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path());
    let credentials = server
        .first_client
        .clone()
        .expect("the first start prints credentials");
    assert_eq!(credentials["scopes"], "pipelines:run stats:read runs:write");
    assert!(credentials["output_key"].is_string());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status = runtime.block_on(async {
        let url = format!(
            "http://{}/v1/oauth/token?grant_type=client_credentials&client_id={}&client_secret={}",
            server.http_addr,
            credentials["client_id"].as_str().unwrap(),
            credentials["client_secret"].as_str().unwrap()
        );
        let grant: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        reqwest::Client::new()
            .get(format!(
                "http://{}/v1/stats/pipelines/{PIPELINE}/last-run/stats",
                server.http_addr
            ))
            .bearer_auth(grant["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 404, "authenticated, and no such pipeline yet");
    server.kill();
}

#[tokio::test]
async fn the_token_endpoint_slows_down_failures_but_never_the_right_secret() {
    let app = spawn_app().await;
    let other = app
        .engine
        .create_client(Some(app.client.organization), Scopes::all())
        .unwrap();
    let http = reqwest::Client::new();
    let url = app.url("/v1/oauth/token");
    let attempt = |id: String, secret: String| {
        let request = http.post(&url).form(&[
            ("grant_type", "client_credentials".to_string()),
            ("client_id", id),
            ("client_secret", secret),
        ]);
        async move { request.send().await.unwrap() }
    };
    let id = app.client.client_id.clone();
    for n in 0..10 {
        let response = attempt(id.clone(), format!("wrong-{n}")).await;
        assert_eq!(response.status(), 401, "attempt {n}");
    }
    // Past the burst, failures are refused with a hint...
    let response = attempt(id.clone(), "wrong-again".into()).await;
    assert_eq!(response.status(), 429);
    let wait: u32 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=6).contains(&wait), "{wait}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "slow_down", "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("too many failed attempts"),
        "{body}"
    );
    // ...but whoever knows only the client id cannot lock the client out: the right secret
    // still gets a token, at once and again.
    for _ in 0..2 {
        let response = attempt(id.clone(), app.client.client_secret.clone()).await;
        assert_eq!(response.status(), 200);
    }
    // Another client of the same organization is not held back.
    let response = attempt(other.client_id.clone(), other.client_secret.clone()).await;
    assert_eq!(response.status(), 200);
    // One peer failing with ever new client ids is slowed down too (per-address throttle).
    let mut statuses = Vec::new();
    for n in 0..40 {
        statuses.push(
            attempt(format!("rlc_made_up_{n}"), "x".into())
                .await
                .status(),
        );
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // Tokens already issued keep working.
    let path = format!("/v1/stats/tasks/{TASK_A}/last-run/stats");
    assert_ne!(
        call(&app, Method::GET, &path, Some(&app.token)).await.0,
        StatusCode::UNAUTHORIZED
    );
    app.stop().await;
}

#[tokio::test]
async fn the_overview_lists_every_pipeline_by_name_with_its_windows_paged() {
    let app = seeded().await;
    let alpha = "a1a1a1a1-0000-4000-8000-000000000001";
    let unnamed = "f0f0f0f0-0000-4000-8000-000000000002";
    let task = "a1a1a1a1-0000-4000-8000-0000000000aa";
    let other_task = "f0f0f0f0-0000-4000-8000-0000000000bb";
    let ago = |seconds: i64| {
        (chrono::Utc::now() - chrono::TimeDelta::seconds(seconds))
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    let register = |name: &str| proto::RegisterPipelineRequest {
        pipeline_uuid: alpha.into(),
        organization_uuid: String::new(),
        name: name.into(),
        tasks: Vec::new(),
    };
    app.pipelines()
        .await
        .register_pipeline(register("alpha"))
        .await
        .unwrap();
    // One task run per pipeline run, so pipeline-run durations are the task runs'.
    let (hour, day) = (3_600, 86_400);
    let runs = [
        (1, true, 10, 2 * hour),
        (2, false, 30, 3 * day),
        (3, true, 50, 20 * day),
        (4, true, 70, 40 * day),
    ];
    let latest = ago(2 * hour);
    let mut results: Vec<proto::TaskRunResult> = runs
        .iter()
        .map(|&(n, ok, duration, seconds)| {
            let at = if n == 1 { latest.clone() } else { ago(seconds) };
            finished(
                &format!("a1a1a1a1-0000-4000-8000-1000000000{n:02}"),
                &format!("a1a1a1a1-0000-4000-8000-2000000000{n:02}"),
                alpha,
                task,
                ok,
                duration,
                &at,
            )
        })
        .collect();
    let last_unnamed = ago(hour);
    results.push(finished(
        "f0f0f0f0-0000-4000-8000-100000000001",
        "f0f0f0f0-0000-4000-8000-200000000001",
        unnamed,
        other_task,
        true,
        5,
        &last_unnamed,
    ));
    app.ingest()
        .await
        .report_task_run_batch(proto::ReportTaskRunsRequest { results })
        .await
        .unwrap();

    let window = |s: u64, f: u64, average: u64, p: Option<(u64, u64)>| {
        json!({
            "num_of_successes": s, "num_of_failures": f, "average_duration": average,
            "duration_p50": p.map(|p| p.0), "duration_p95": p.map(|p| p.1)
        })
    };
    let empty = window(0, 0, 0, None);
    let alpha_entry = |name: &str| {
        json!({
            "pipeline_uuid": alpha, "name": name,
            "last_run": {"is_successful": true, "executed_at": latest, "duration": 10},
            "last_24h": window(1, 0, 10, Some((10, 10))),
            "last_7d": window(1, 1, 20, Some((10, 30))),
            "last_30d": window(2, 1, 30, Some((30, 50)))
        })
    };
    let nightly = json!({
        "pipeline_uuid": PIPELINE, "name": "nightly",
        "last_run": {"is_successful": true, "executed_at": "2024-02-29 12:00:01", "duration": 120},
        "last_24h": empty, "last_7d": empty, "last_30d": empty
    });
    let unnamed_entry = json!({
        "pipeline_uuid": unnamed, "name": null,
        "last_run": {"is_successful": true, "executed_at": last_unnamed, "duration": 5},
        "last_24h": window(1, 0, 5, Some((5, 5))),
        "last_7d": window(1, 0, 5, Some((5, 5))),
        "last_30d": window(1, 0, 5, Some((5, 5)))
    });

    // Named pipelines by name, the unnamed one last; two pages of two.
    let (status, headers, first) = call(
        &app,
        Method::GET,
        "/v1/stats/pipelines?limit=2",
        Some(&app.token),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first, json!([alpha_entry("alpha"), nightly]));
    let cursor = headers["x-next-cursor"].to_str().unwrap().to_string();
    assert_eq!(
        headers["link"].to_str().unwrap(),
        format!("</v1/stats/pipelines?limit=2&cursor={cursor}>; rel=\"next\"")
    );
    let (status, headers, second) = call(
        &app,
        Method::GET,
        &format!("/v1/stats/pipelines?limit=2&cursor={cursor}"),
        Some(&app.token),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(second, json!([unnamed_entry]));
    assert!(headers.get("x-next-cursor").is_none() && headers.get("link").is_none());

    // A rename moves the pipeline in the order; the default page holds all three.
    app.pipelines()
        .await
        .register_pipeline(register("zulu"))
        .await
        .unwrap();
    assert_eq!(
        get_ok(&app, "/v1/stats/pipelines").await,
        json!([nightly, alpha_entry("zulu"), unnamed_entry])
    );

    // Bad paging input names the parameter.
    for (query, parameter) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("cursor=not-a-cursor", "cursor"),
    ] {
        let (status, _, body) = call(
            &app,
            Method::GET,
            &format!("/v1/stats/pipelines?{query}"),
            Some(&app.token),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .contains(parameter)
                || body.to_string().contains(parameter),
            "{query}: {body}"
        );
    }
    let (status, _, _) = call(&app, Method::GET, "/v1/stats/pipelines", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test]
async fn after_pruning_finer_edges_before_the_cut_are_answered_at_whole_days_and_old_reports_are_refused()
 {
    let app = seeded().await;
    // Runs: 2024-01-31 23:59:59.5 (A), 2024-02-01 00:00:10 (B), 2024-02-29 12:00:00/01 (A, B).
    let cut = runledger::time::parse_instant("2024-02-15 00:00:00")
        .unwrap()
        .second();
    let pruned = app.engine.prune(cut).await.unwrap();
    assert_eq!((pruned.task_runs, pruned.pipeline_runs), (2, 1));

    // Day-aligned edges: exact, no flag; the pruned runs still count.
    let exact = get_ok(
        &app,
        &format!("/v1/stats/pipelines/{PIPELINE}/stats/2024-01-01/2024-12-31"),
    )
    .await;
    assert_eq!(
        (&exact["num_of_successes"], &exact["num_of_failures"]),
        (&json!(1), &json!(1))
    );
    assert!(exact.get("approximate").is_none(), "{exact}");
    // An edge before the cut inside a day: that whole day counts, and the answer says so.
    // (Exactly, 2024-02-01 00:00:11 onwards would leave out run 1, executed at 00:00:10.)
    let widened = get_ok(
        &app,
        &format!("/v1/stats/pipelines/{PIPELINE}/stats/2024-02-01%2000:00:11/2024-12-31"),
    )
    .await;
    assert_eq!(
        (
            &widened["num_of_failures"],
            &widened["approximate"],
            &widened["max_duration"]
        ),
        (&json!(1), &json!(true), &json!(400))
    );
    // After the cut, second precision is exact as ever.
    let after = get_ok(
        &app,
        &format!(
            "/v1/stats/pipelines/{PIPELINE}/stats/2024-02-29%2012:00:01/2024-02-29%2012:00:01"
        ),
    )
    .await;
    assert_eq!(after["num_of_successes"], 1);
    assert!(after.get("approximate").is_none(), "{after}");
    // Days and months keep their answers; logs before the cut are empty.
    let months = get_ok(
        &app,
        &format!("/v1/stats/pipelines/{PIPELINE}/aggregated-stats/2024-01-15/month/3"),
    )
    .await;
    assert_eq!(months[0]["num_of_failures"], 1);
    let logs = get_ok(
        &app,
        &format!("/v1/stats/pipelines/{PIPELINE}/logs/2024-01-01/2024-02-14"),
    )
    .await;
    assert_eq!(logs, json!([]));

    // A report before the cut is refused over gRPC, naming the field; nothing applied.
    let refused = app
        .ingest()
        .await
        .report_task_run_batch(proto::ReportTaskRunsRequest {
            results: vec![finished(
                "30000000-0000-4000-8000-00000000000a",
                "00000000-0000-4000-8000-000000000003",
                PIPELINE,
                TASK_A,
                true,
                10,
                "2024-02-14 23:59:59",
            )],
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("executed_at") && refused.message().contains("retention cut"),
        "{}",
        refused.message()
    );
    let days = get_ok(
        &app,
        &format!("/v1/stats/tasks/{TASK_A}/aggregated-stats/2024-02-14/day/1"),
    )
    .await;
    assert_eq!(days, json!([]));
    app.stop().await;
}
