//! Running a pipeline over REST: the pending task runs go to an executor.

use reqwest::{Method, StatusCode};
use runledger::proto;
use serde_json::{Value, json};

use crate::support::{finished, spawn_app};

use super::*;

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
