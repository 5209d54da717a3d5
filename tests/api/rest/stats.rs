//! Stats over REST: range, aggregated and last-run answers of both editions field by field,
//! the overview, and answers after pruning.

use reqwest::{Method, StatusCode};
use runledger::proto;
use serde_json::json;

use crate::support::finished;

use super::*;

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
