//! OpenLineage ingest end to end over REST (`POST /api/v1/lineage`): an Airflow-shaped DAG run
//! (the DAG's own events without a parent, its tasks' with parent and root facets) read back as
//! one pipeline run through stats, last run, logs and the overview; malformed events refused
//! with the field named, changing nothing.

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{ChildServer, TestApp, get_json, printed_json, run_cli, spawn_app, token_for};

const SCHEMA: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
const DAG_RUN: &str = "0190a4c6-0000-7000-8000-00000000d001";
const LOAD_RUN: &str = "0190a4c6-0000-7000-8000-00000000a001";
const CHECK_RUN: &str = "0190a4c6-0000-7000-8000-00000000b001";

/// The uuid5 a job's name gives, as `CONTRACT.md` defines it.
pub fn job_uuid(kind: &str, namespace: &str, name: &str) -> String {
    Uuid::new_v5(
        &Uuid::NAMESPACE_URL,
        format!("openlineage:{kind}:{namespace}/{name}").as_bytes(),
    )
    .to_string()
}

/// A RunEvent of `job` in namespace `airflow`; a task's names the DAG run as parent and root.
pub fn event(kind: &str, time: &str, run: &str, job: &str, parent: Option<&str>) -> Value {
    let mut facets = json!({});
    if let Some(parent) = parent {
        let of =
            json!({"run": {"runId": parent}, "job": {"namespace": "airflow", "name": "etl_daily"}});
        let mut facet = of.clone();
        facet["root"] = of;
        facets["parent"] = facet;
    }
    json!({
        "eventType": kind,
        "eventTime": time,
        "producer": "https://github.com/apache/airflow/tree/providers-openlineage/2.0.0",
        "schemaURL": SCHEMA,
        "run": {"runId": run, "facets": facets},
        "job": {"namespace": "airflow", "name": job, "facets": {"jobType": {"jobType": "TASK", "integration": "AIRFLOW", "processingType": "BATCH"}}},
        "inputs": [],
        "outputs": [],
    })
}

async fn post(app: &TestApp, path: &str, token: &str, body: Vec<u8>) -> (StatusCode, String) {
    let response = reqwest::Client::new()
        .post(app.url(path))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.text().await.unwrap())
}

async fn emit(app: &TestApp, event: &Value) {
    let (status, body) = post(
        app,
        "/api/v1/lineage",
        &app.token,
        serde_json::to_vec(event).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body, "", "201 carries an empty body");
}

fn dag_history() -> Vec<Value> {
    let mut load_done = event(
        "COMPLETE",
        "2024-02-29T23:59:30.000Z",
        LOAD_RUN,
        "etl_daily.load",
        Some(DAG_RUN),
    );
    load_done["outputs"] = json!([{"namespace": "postgres://warehouse", "name": "public.sales"}]);
    let mut check_failed = event(
        "FAIL",
        "2024-03-01T00:00:40.000Z",
        CHECK_RUN,
        "etl_daily.check",
        Some(DAG_RUN),
    );
    check_failed["run"]["facets"]["errorMessage"] =
        json!({"message": "row count 0", "programmingLanguage": "python"});
    vec![
        event("START", "2024-02-29T23:58:00Z", DAG_RUN, "etl_daily", None),
        event(
            "START",
            "2024-02-29T23:58:30.000Z",
            LOAD_RUN,
            "etl_daily.load",
            Some(DAG_RUN),
        ),
        load_done.clone(),
        event(
            "START",
            "2024-03-01T00:00:00.000+00:00",
            CHECK_RUN,
            "etl_daily.check",
            Some(DAG_RUN),
        ),
        check_failed,
        event("FAIL", "2024-03-01T00:00:45Z", DAG_RUN, "etl_daily", None),
        // Delivered twice: changes nothing.
        load_done,
    ]
}

#[tokio::test]
async fn an_airflow_dag_run_sent_as_openlineage_events_is_one_failed_pipeline_run() {
    let app = spawn_app().await;
    for event in dag_history() {
        emit(&app, &event).await;
    }
    let http = reqwest::Client::new();
    let pipeline = job_uuid("pipeline", "airflow", "etl_daily");
    let stats = get_json(
        &http,
        app.url(&format!(
            "/v1/stats/pipelines/{pipeline}/stats/2024-02-01/2024-03-31"
        )),
        &app.token,
    )
    .await;
    // One pipeline run: the load took 60 s, the check 40 s and failed; the DAG's own events add
    // no task run.
    assert_eq!(stats["num_of_successes"], 0, "{stats}");
    assert_eq!(stats["num_of_failures"], 1, "{stats}");
    assert_eq!(stats["average_duration"], 100_000, "{stats}");
    assert_eq!(stats["last_run_executed_at"], "2024-03-01 00:00:40");
    let load = job_uuid("task", "airflow", "etl_daily.load");
    let task = get_json(
        &http,
        app.url(&format!("/v1/stats/tasks/{load}/last-run/stats")),
        &app.token,
    )
    .await;
    assert_eq!(
        task,
        json!({"is_successful": true, "executed_at": "2024-02-29 23:59:30", "duration": 60_000})
    );
    let logs = get_json(
        &http,
        app.url(&format!(
            "/v1/stats/pipelines/{pipeline}/logs/2024-02-01/2024-03-31"
        )),
        &app.token,
    )
    .await;
    let logs = logs.as_array().unwrap();
    assert_eq!(logs.len(), 2, "{logs:?}");
    assert_eq!(logs[0]["task_run_uuid"], CHECK_RUN);
    assert_eq!(logs[0]["is_successful"], false);
    assert_eq!(logs[1]["task_run_uuid"], LOAD_RUN);
    assert_eq!(logs[1]["pipeline_run_uuid"], DAG_RUN);
    let output = app
        .engine
        .organization_key(app.client.organization)
        .unwrap();
    let plain =
        runledger::crypto::decrypt_base64(&output, logs[1]["output"].as_str().unwrap()).unwrap();
    assert_eq!(plain, br#"["postgres://warehouse/public.sales"]"#);
    let overview = get_json(&http, app.url("/v1/stats/pipelines"), &app.token).await;
    assert_eq!(overview[0]["pipeline_uuid"], pipeline);
    assert_eq!(overview[0]["name"], "etl_daily", "{overview}");
    assert_eq!(overview.as_array().unwrap().len(), 1);
    // The same events again, in reverse: nothing changes.
    let before = stats;
    for event in dag_history().iter().rev() {
        emit(&app, event).await;
    }
    let again = get_json(
        &http,
        app.url(&format!(
            "/v1/stats/pipelines/{pipeline}/stats/2024-02-01/2024-03-31"
        )),
        &app.token,
    )
    .await;
    assert_eq!(again, before);
}

#[tokio::test]
async fn malformed_events_are_refused_naming_the_field_and_change_nothing() {
    let app = spawn_app().await;
    let good = event(
        "COMPLETE",
        "2024-05-01T10:00:00Z",
        LOAD_RUN,
        "etl_daily.load",
        None,
    );
    let with = |path: &[&str], value: Value| {
        let mut event = good.clone();
        let mut slot = &mut event;
        for key in &path[..path.len() - 1] {
            slot = &mut slot[*key];
        }
        match value {
            Value::Null => {
                slot.as_object_mut().unwrap().remove(path[path.len() - 1]);
            }
            value => slot[path[path.len() - 1]] = value,
        }
        serde_json::to_vec(&event).unwrap()
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (with(&["run"], Value::Null), "run"),
        (with(&["job"], Value::Null), "job"),
        (with(&["eventTime"], json!("01/05/2024")), "eventTime"),
        (with(&["run", "runId"], json!("run-42")), "run.runId"),
        (with(&["eventType"], json!("DONE")), "eventType"),
        (
            with(
                &["schemaURL"],
                json!("https://openlineage.io/spec/1-0-0/OpenLineage.json"),
            ),
            "schemaURL",
        ),
        (b"not json".to_vec(), "body"),
    ];
    for (body, field) in cases {
        let (status, text) = post(&app, "/api/v1/lineage", &app.token, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {text}");
        let body: Value = serde_json::from_str(&text).unwrap();
        assert!(
            body["errors"][0]
                .as_str()
                .unwrap()
                .starts_with(&format!("{field}: ")),
            "{field}: {body}"
        );
    }
    let mut huge = good.clone();
    huge["run"]["facets"]["big"] = json!("x".repeat(2 << 20));
    let (status, text) = post(
        &app,
        "/v1/lineage",
        &app.token,
        serde_json::to_vec(&huge).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    // Under 1 MiB is fine, unknown facets and all.
    let mut large = good.clone();
    large["run"]["facets"]["big"] = json!("x".repeat(900 << 10));
    let read_only = token_for(&app.engine, &app.client, Some("stats:read")).await;
    let (status, _) = post(
        &app,
        "/v1/lineage",
        &read_only,
        serde_json::to_vec(&large).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "runs:write is needed");
    let (status, _) = post(
        &app,
        "/v1/lineage",
        "nope",
        serde_json::to_vec(&large).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let http = reqwest::Client::new();
    let overview = get_json(&http, app.url("/v1/stats/pipelines"), &app.token).await;
    assert_eq!(overview, json!([]), "nothing refused was applied");
    emit(&app, &large).await;
    let overview = get_json(&http, app.url("/v1/stats/pipelines"), &app.token).await;
    assert_eq!(overview[0]["name"], "etl_daily.load", "{overview}");
}

#[tokio::test]
async fn started_runs_are_listed_as_running_until_they_finish() {
    let app = spawn_app().await;
    let http = reqwest::Client::new();
    let pipeline = job_uuid("pipeline", "airflow", "etl_daily");
    let running = |app: &TestApp| {
        let url = app.url(&format!("/v1/stats/pipelines/{pipeline}/running"));
        let http = http.clone();
        let token = app.token.clone();
        async move { get_json(&http, url, &token).await }
    };
    // The DAG run alone looks like a one-task pipeline's run, running.
    emit(
        &app,
        &event("START", "2024-06-01T02:00:00Z", DAG_RUN, "etl_daily", None),
    )
    .await;
    let listed = running(&app).await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["task_run_uuid"], DAG_RUN);
    assert_eq!(listed[0]["started_at"], "2024-06-01T02:00:00Z");
    // Its tasks show it is their pipeline run: it leaves the list, they enter it.
    for (run, job, at) in [
        (LOAD_RUN, "etl_daily.load", "2024-06-01T02:00:05.250Z"),
        (CHECK_RUN, "etl_daily.check", "2024-06-01T02:01:00Z"),
    ] {
        emit(&app, &event("START", at, run, job, Some(DAG_RUN))).await;
    }
    let listed = running(&app).await;
    let runs: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["task_run_uuid"].as_str().unwrap())
        .collect();
    assert_eq!(runs, [CHECK_RUN, LOAD_RUN], "newest start first: {listed}");
    assert_eq!(listed[1]["started_at"], "2024-06-01T02:00:05.250Z");
    assert_eq!(listed[1]["pipeline_run_uuid"], DAG_RUN);
    assert_eq!(
        listed[1]["task_uuid"],
        job_uuid("task", "airflow", "etl_daily.load")
    );
    // Paged like logs.
    let first = http
        .get(app.url(&format!("/v1/stats/pipelines/{pipeline}/running?limit=1")))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    let cursor = first.headers()["x-next-cursor"]
        .to_str()
        .unwrap()
        .to_string();
    let second = get_json(
        &http,
        app.url(&format!(
            "/v1/stats/pipelines/{pipeline}/running?limit=1&cursor={cursor}"
        )),
        &app.token,
    )
    .await;
    assert_eq!(second[0]["task_run_uuid"], LOAD_RUN);
    emit(
        &app,
        &event(
            "COMPLETE",
            "2024-06-01T02:03:00Z",
            LOAD_RUN,
            "etl_daily.load",
            Some(DAG_RUN),
        ),
    )
    .await;
    let listed = running(&app).await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["task_run_uuid"], CHECK_RUN);
    let other = Uuid::new_v4();
    let unknown = get_json(
        &http,
        app.url(&format!("/v1/stats/pipelines/{other}/running")),
        &app.token,
    )
    .await;
    assert_eq!(unknown["code"], 404, "{unknown}");
}

#[test]
fn an_api_key_works_on_both_fronts_until_revoked_and_is_stored_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let org = crate::support::ORG;
    let (ok, printed) = run_cli(&[
        "key",
        "create",
        "--data-dir",
        data_arg,
        "--org",
        org,
        "--scopes",
        "runs:write,stats:read",
        "--name",
        "airflow-prod",
    ]);
    assert!(ok, "{printed}");
    let created = printed_json(&printed);
    let api_key = created["api_key"].as_str().unwrap().to_string();
    let key_id = created["key_id"].as_str().unwrap().to_string();
    assert_eq!(created["organization_uuid"], org);
    assert_eq!(created["scopes"], "stats:read runs:write", "{created}");
    assert!(
        created["output_key"].is_string(),
        "a new organization's key is shown"
    );
    let server = ChildServer::start(&data);
    let runtime = crate::support::runtime();
    runtime.block_on(async {
        let http = reqwest::Client::new();
        let url = |path: &str| format!("http://{}{path}", server.http_addr);
        let body = serde_json::to_vec(&event(
            "COMPLETE",
            "2024-05-01T10:00:00Z",
            LOAD_RUN,
            "etl_daily.load",
            None,
        ))
        .unwrap();
        let post = |token: String| {
            http.post(url("/api/v1/lineage"))
                .bearer_auth(token)
                .body(body.clone())
                .send()
        };
        assert_eq!(
            post(api_key.clone()).await.unwrap().status(),
            StatusCode::CREATED
        );
        let pipeline = job_uuid("pipeline", "airflow", "etl_daily.load");
        let last = get_json(
            &http,
            url(&format!("/v1/stats/pipelines/{pipeline}/last-run/stats")),
            &api_key,
        )
        .await;
        assert_eq!(last["executed_at"], "2024-05-01 10:00:00", "{last}");
        let mut stats = runledger::proto::stats_client::StatsClient::with_interceptor(
            crate::support::grpc_channel(server.grpc_addr).await,
            crate::support::Bearer::new(&api_key),
        );
        let request = runledger::proto::GetLastRunStatsRequest {
            entity: crate::support::entity(runledger::proto::EntityKind::Pipeline, &pipeline),
        };
        assert!(stats.get_last_run_stats(request.clone()).await.is_ok());
        let (ok, printed) = run_cli(&["key", "revoke", "--data-dir", data_arg, &key_id]);
        assert!(ok, "{printed}");
        assert_eq!(
            post(api_key.clone()).await.unwrap().status(),
            StatusCode::UNAUTHORIZED,
            "revoked at once on REST"
        );
        let refused = stats.get_last_run_stats(request).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "and on gRPC");
        let metrics = http
            .get(url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("runledger_api_keys{state=\"revoked\"} 1"),
            "{metrics}"
        );
        assert!(!metrics.contains(&key_id), "counts only");
    });
    assert!(server.stop());
    let file = std::fs::read(data.join("runledger.redb")).unwrap();
    assert!(
        !file
            .windows(api_key.len())
            .any(|window| window == api_key.as_bytes()),
        "the key is stored hashed"
    );
    let (ok, printed) = run_cli(&["key", "revoke", "--data-dir", data_arg, "rlc_0000"]);
    assert!(!ok && printed.contains("not an API key id"), "{printed}");
}

/// The real `openlineage-python` client (its HTTP transport, `oauth2` auth against our token
/// endpoint and `api_key` auth with a key of `key create`) emits three Airflow DAG runs (see
/// `tests/lineage/emit_airflow.py`); every answer is what those runs say.
#[tokio::test]
async fn the_openlineage_python_client_reports_airflow_dag_runs() {
    let Some(python) = crate::support::python_with("openlineage.client") else {
        return;
    };
    let app = spawn_app().await;
    let (key, _) = app
        .engine
        .create_api_key(
            app.client.organization,
            [runledger::auth::Scope::RunsWrite].into_iter().collect(),
            "airflow",
        )
        .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lineage/emit_airflow.py");
    let mut command = std::process::Command::new(python);
    command
        .arg(script)
        .arg(format!("http://{}", app.http_addr))
        .arg(&app.client.client_id)
        .arg(&app.client.client_secret)
        .arg(&key.api_key);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let http = reqwest::Client::new();
    let get = |path: String| get_json(&http, app.url(&path), &app.token);
    let pipeline = job_uuid("pipeline", "airflow", "etl_daily");
    let extract = job_uuid("task", "airflow", "etl_daily.extract");
    let load = job_uuid("task", "airflow", "etl_daily.load");
    // DAG runs of 90, 30 (failed: the load) and 60 seconds.
    let stats = get(format!(
        "/v1/stats/pipelines/{pipeline}/stats/2024-03-01/2024-03-31"
    ))
    .await;
    assert_eq!(
        (
            &stats["num_of_successes"],
            &stats["num_of_failures"],
            &stats["average_duration"]
        ),
        (&json!(2), &json!(1), &json!(60_000)),
        "{stats}"
    );
    assert_eq!(stats["is_last_run_successful"], true);
    assert_eq!(stats["last_run_executed_at"], "2024-03-12 02:01:02");
    assert_eq!(stats["last_run_duration"], 60_000);
    let days = get(format!(
        "/v1/stats/workflows/{pipeline}/aggregated-stats/2024-03-10/day/3"
    ))
    .await;
    let per_day: Vec<(u64, u64, u64)> = days
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["num_of_successes"].as_u64().unwrap(),
                d["num_of_failures"].as_u64().unwrap(),
                d["average_duration"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        per_day,
        [(1, 0, 90_000), (0, 1, 30_000), (1, 0, 60_000)],
        "{days}"
    );
    let extract_stats = get(format!(
        "/v1/stats/tasks/{extract}/stats/2024-03-01/2024-03-31"
    ))
    .await;
    assert_eq!(
        extract_stats["num_of_successes"], 3,
        "a repeated COMPLETE counts once"
    );
    assert_eq!(extract_stats["average_duration"], 30_000);
    let load_stats = get(format!(
        "/v1/stats/tasks/{load}/stats/2024-03-01/2024-03-31"
    ))
    .await;
    assert_eq!(
        (
            &load_stats["num_of_successes"],
            &load_stats["num_of_failures"]
        ),
        (&json!(2), &json!(1))
    );
    assert_eq!(load_stats["average_duration"], 30_000);
    let last = get(format!("/v1/stats/pipelines/{pipeline}/last-run/stats")).await;
    assert_eq!(
        last,
        json!({"is_successful": true, "executed_at": "2024-03-12 02:01:02", "duration": 60_000})
    );
    let logs = get(format!(
        "/v1/stats/pipelines/{pipeline}/logs/2024-03-01/2024-03-31"
    ))
    .await;
    let logs = logs.as_array().unwrap();
    assert_eq!(logs.len(), 6, "{logs:?}");
    let failed: Vec<&Value> = logs
        .iter()
        .filter(|l| l["is_successful"] == false)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["task_uuid"], load);
    assert_eq!(failed[0]["executed_at"], "2024-03-11T02:00:32Z");
    let output_key = app
        .engine
        .organization_key(app.client.organization)
        .unwrap();
    let output =
        runledger::crypto::decrypt_base64(&output_key, failed[0]["output"].as_str().unwrap())
            .unwrap();
    assert_eq!(
        output,
        br#"["postgres://warehouse:5432/public.etl_daily.load"]"#
    );
    let overview = get("/v1/stats/pipelines".into()).await;
    assert_eq!(overview.as_array().unwrap().len(), 1, "{overview}");
    assert_eq!(overview[0]["name"], "etl_daily");
    let running = get(format!("/v1/stats/pipelines/{pipeline}/running")).await;
    assert_eq!(running, json!([]), "every run finished");
}

/// Overload is a 503 with Retry-After (OpenLineage clients retry server errors, not 429), and
/// a refused event changes nothing: what was answered 201 is exactly what is counted.
#[test]
fn an_overloaded_server_answers_503_with_retry_after_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--write-queue", "1", "--queue-wait-ms", "0"];
    let server = ChildServer::start_with(&dir.path().join("data"), &args, None);
    let credentials = server.first_client.clone().unwrap();
    crate::support::runtime().block_on(async {
        let http = reqwest::Client::new();
        let token = crate::support::rest_token(&http, server.http_addr, &credentials, None).await;
        let mut sends = tokio::task::JoinSet::new();
        // Under the 256 connections a peer may hold.
        for n in 0..200u128 {
            let (http, token) = (http.clone(), token.clone());
            let url = format!("http://{}/api/v1/lineage", server.http_addr);
            let run = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + n).to_string();
            let body = event("COMPLETE", "2024-05-01T10:00:00Z", &run, "burst", None);
            sends.spawn(async move {
                let response = http
                    .post(url)
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let retry_after = response.headers().get("retry-after").cloned();
                (response.status(), retry_after)
            });
        }
        let (mut created, mut unavailable) = (0u64, 0u64);
        while let Some(sent) = sends.join_next().await {
            match sent.unwrap() {
                (StatusCode::CREATED, _) => created += 1,
                (StatusCode::SERVICE_UNAVAILABLE, retry_after) => {
                    assert!(retry_after.is_some(), "503 carries Retry-After");
                    unavailable += 1;
                }
                (other, _) => panic!("answered {other}"),
            }
        }
        assert!(unavailable > 0, "a queue of one write refused nothing");
        assert!(created > 0);
        let pipeline = job_uuid("pipeline", "airflow", "burst");
        let stats = get_json(
            &http,
            format!(
                "http://{}/v1/stats/pipelines/{pipeline}/stats/2024-05-01/2024-05-01",
                server.http_addr
            ),
            &token,
        )
        .await;
        assert_eq!(stats["num_of_successes"], created, "{stats}");
    });
    assert!(server.stop());
}
