//! The gRPC API end to end: report streams, every query, health, reflection, and bad input.

use runledger::proto::{self, EntityKind, Period};
use tonic::Code;

use crate::support::{ORG, entity, finished, spawn_app, ts};

const PIPELINE: &str = "11111111-1111-4111-8111-111111111111";
const TASK_A: &str = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa";
const TASK_B: &str = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb";
const RUN_1: &str = "00000000-0000-4000-8000-000000000001";
const RUN_2: &str = "00000000-0000-4000-8000-000000000002";

/// Two pipeline runs across a month boundary and a leap day:
/// run 1: A ok 100 ms at 2024-01-31 23:59:59.5, B failed 300 ms at 2024-02-01 00:00:10;
/// run 2: A ok 50 ms at 2024-02-29 12:00:00, B ok 70 ms at 2024-02-29 12:00:01.
fn results() -> [proto::TaskRunResult; 4] {
    [
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
    ]
}

fn batch(results: &[proto::TaskRunResult]) -> proto::ReportTaskRunsRequest {
    proto::ReportTaskRunsRequest {
        results: results.to_vec(),
    }
}

fn stats_request(kind: EntityKind, uuid: &str, from: &str, to: &str) -> proto::GetStatsRequest {
    proto::GetStatsRequest {
        entity: entity(kind, uuid),
        from: Some(ts(from)),
        to: Some(ts(to)),
    }
}

#[tokio::test]
async fn a_reported_stream_answers_every_query() {
    let app = spawn_app().await;
    let [a1, b1, a2, b2] = results();
    let messages = vec![
        batch(std::slice::from_ref(&a1)),
        batch(&[b1, a2]),
        batch(&[b2]),
        batch(&[a1]),
    ];
    let summary = app
        .ingest()
        .await
        .report_task_runs(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            summary.batches,
            summary.inserted,
            summary.replaced,
            summary.unchanged
        ),
        (4, 4, 0, 1)
    );

    let mut stats = app.stats().await;
    let task_a = stats
        .get_stats(stats_request(
            EntityKind::Task,
            TASK_A,
            "2024-01-01 00:00:00",
            "2024-12-31 23:59:59",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            task_a.num_of_successes,
            task_a.num_of_failures,
            task_a.average_duration_ms
        ),
        (2, 0, 75)
    );
    assert!(task_a.is_last_run_successful);
    assert_eq!(task_a.last_run_executed_at, Some(ts("2024-02-29 12:00:00")));
    assert_eq!(task_a.last_run_duration_ms, 50);
    // Durations 100 and 50: the median is 50, the higher percentiles and the max 100.
    assert_eq!(
        (
            task_a.duration_p50_ms,
            task_a.duration_p90_ms,
            task_a.duration_p95_ms,
            task_a.duration_p99_ms,
            task_a.max_duration_ms
        ),
        (Some(50), Some(100), Some(100), Some(100), Some(100))
    );

    // Pipeline runs count once each: run 1 failed (B failed), 400 ms; run 2 succeeded, 120 ms.
    let pipeline = stats
        .get_stats(stats_request(
            EntityKind::Pipeline,
            PIPELINE,
            "2024-01-01 00:00:00",
            "2024-12-31 23:59:59",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            pipeline.num_of_successes,
            pipeline.num_of_failures,
            pipeline.average_duration_ms
        ),
        (1, 1, 260)
    );
    assert_eq!(
        (pipeline.duration_p50_ms, pipeline.max_duration_ms),
        (Some(120), Some(400))
    );
    assert_eq!(
        pipeline.last_run_executed_at,
        Some(ts("2024-02-29 12:00:01"))
    );
    assert_eq!(pipeline.last_run_duration_ms, 120);

    // Run 1 executed at its latest task run, 00:00:10: a range ending a second earlier misses it.
    let before = stats
        .get_stats(stats_request(
            EntityKind::Pipeline,
            PIPELINE,
            "2024-01-01 00:00:00",
            "2024-02-01 00:00:09",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            before.num_of_successes,
            before.num_of_failures,
            before.average_duration_ms
        ),
        (0, 0, 0)
    );
    assert!(!before.is_last_run_successful);
    assert_eq!(
        (before.last_run_executed_at, before.last_run_duration_ms),
        (None, 0)
    );
    let at = stats
        .get_stats(stats_request(
            EntityKind::Pipeline,
            PIPELINE,
            "2024-02-01 00:00:10",
            "2024-02-01 00:00:10",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((at.num_of_failures, at.last_run_duration_ms), (1, 400));

    // Both pipeline runs executed in February; January is empty and left out.
    let months = stats
        .get_aggregated_stats(proto::GetAggregatedStatsRequest {
            entity: entity(EntityKind::Pipeline, PIPELINE),
            date_from: Some(ts("2024-01-15 08:00:00")),
            period: Period::Month as i32,
            n: 3,
            fill: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .buckets;
    assert_eq!(months.len(), 1);
    // Filled, the three months are all there, the empty ones with zeros.
    let filled = stats
        .get_aggregated_stats(proto::GetAggregatedStatsRequest {
            entity: entity(EntityKind::Pipeline, PIPELINE),
            date_from: Some(ts("2024-01-15 08:00:00")),
            period: Period::Month as i32,
            n: 3,
            fill: "zero".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .buckets;
    let summary: Vec<_> = filled
        .iter()
        .map(|b| {
            (
                b.date_from,
                b.num_of_successes,
                b.num_of_failures,
                b.average_duration_ms,
                b.max_duration_ms,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (Some(ts("2024-01-01 00:00:00")), 0, 0, 0, None),
            (Some(ts("2024-02-01 00:00:00")), 1, 1, 260, Some(400)),
            (Some(ts("2024-03-01 00:00:00")), 0, 0, 0, None),
        ]
    );
    assert_eq!(
        (months[0].date_from, months[0].date_to),
        (
            Some(ts("2024-02-01 00:00:00")),
            Some(ts("2024-02-29 23:59:59"))
        )
    );
    assert_eq!(
        (
            months[0].num_of_successes,
            months[0].num_of_failures,
            months[0].average_duration_ms
        ),
        (1, 1, 260)
    );
    let task_months = stats
        .get_aggregated_stats(proto::GetAggregatedStatsRequest {
            entity: entity(EntityKind::Task, TASK_A),
            date_from: Some(ts("2024-01-01 00:00:00")),
            period: Period::Month as i32,
            n: 2,
            fill: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .buckets;
    let summary: Vec<_> = task_months
        .iter()
        .map(|b| (b.date_from, b.num_of_successes, b.average_duration_ms))
        .collect();
    assert_eq!(
        summary,
        vec![
            (Some(ts("2024-01-01 00:00:00")), 1, 100),
            (Some(ts("2024-02-01 00:00:00")), 1, 50)
        ]
    );

    let last_b = stats
        .get_last_run_stats(proto::GetLastRunStatsRequest {
            entity: entity(EntityKind::Task, TASK_B),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (last_b.is_successful, last_b.executed_at, last_b.duration_ms),
        (true, Some(ts("2024-02-29 12:00:01")), 70)
    );

    // Logs, newest first, then resumed from a cursor.
    let logs_request = |limit: u32, cursor: String| proto::StreamLogsRequest {
        pipeline_uuid: PIPELINE.into(),
        from: Some(ts("2024-01-01 00:00:00")),
        to: Some(ts("2024-12-31 23:59:59")),
        limit,
        cursor,
    };
    let all = collect_logs(&mut stats, logs_request(0, String::new())).await;
    let order: Vec<&str> = all.iter().map(|e| &e.task_run_uuid[..8]).collect();
    assert_eq!(order, ["20000000", "20000000", "10000000", "10000000"]);
    assert_eq!(all[0].task_uuid, TASK_B);
    assert_eq!(all[0].pipeline_run_uuid, RUN_2);
    assert_eq!((all[0].duration_ms, all[0].is_successful), (70, true));
    assert_eq!(all[3].executed_at, Some(ts("2024-01-31T23:59:59.5Z")));
    assert_eq!(all[3].metric_value, Some(2.5));
    let first_two = collect_logs(&mut stats, logs_request(2, String::new())).await;
    let rest = collect_logs(&mut stats, logs_request(0, first_two[1].cursor.clone())).await;
    let resumed: Vec<_> = first_two
        .iter()
        .chain(&rest)
        .map(|e| e.task_run_uuid.clone())
        .collect();
    assert_eq!(
        resumed,
        all.iter()
            .map(|e| e.task_run_uuid.clone())
            .collect::<Vec<_>>()
    );

    // A unary batch with a corrected report replaces the earlier one.
    let mut corrected = results()[1].clone();
    corrected.is_successful = true;
    let replaced = app
        .ingest()
        .await
        .report_task_run_batch(batch(&[corrected]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((replaced.inserted, replaced.replaced), (0, 1));
    let pipeline = stats
        .get_stats(stats_request(
            EntityKind::Pipeline,
            PIPELINE,
            "2024-01-01 00:00:00",
            "2024-12-31 23:59:59",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (pipeline.num_of_successes, pipeline.num_of_failures),
        (2, 0)
    );

    // The overview: the one (unnamed) pipeline, its last run, nothing in the last 30 days (its
    // runs are of 2024), so no percentiles; a bad cursor is INVALID_ARGUMENT naming it.
    let overview = stats
        .list_pipelines(proto::ListPipelinesRequest {
            limit: 0,
            cursor: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(overview.pipelines.len(), 1);
    assert!(overview.next_cursor.is_empty());
    let only = &overview.pipelines[0];
    assert_eq!(
        (only.pipeline_uuid.as_str(), only.name.as_str()),
        (PIPELINE, "")
    );
    assert_eq!(
        only.last_run.as_ref().map(|r| r.executed_at),
        Some(Some(ts("2024-02-29 12:00:01")))
    );
    let month = only.last_30d.as_ref().unwrap();
    assert_eq!(
        (
            month.num_of_successes,
            month.num_of_failures,
            month.duration_p50_ms
        ),
        (0, 0, None)
    );
    let refused = stats
        .list_pipelines(proto::ListPipelinesRequest {
            limit: 10,
            cursor: "###".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("cursor"),
        "{}",
        refused.message()
    );
    app.stop().await;
}

async fn collect_logs(
    stats: &mut proto::stats_client::StatsClient<crate::support::Authed>,
    request: proto::StreamLogsRequest,
) -> Vec<proto::LogEntry> {
    let mut stream = stats.stream_logs(request).await.unwrap().into_inner();
    let mut entries = Vec::new();
    while let Some(entry) = stream.message().await.unwrap() {
        entries.push(entry);
    }
    entries
}

#[tokio::test]
async fn registered_pipelines_and_conflicts() {
    let app = spawn_app().await;
    let mut pipelines = app.pipelines().await;
    let request = proto::RegisterPipelineRequest {
        pipeline_uuid: PIPELINE.into(),
        organization_uuid: ORG.into(),
        name: "nightly".into(),
        tasks: vec![proto::TaskDefinition {
            task_uuid: TASK_A.into(),
            task_type: proto::TaskType::Query as i32,
            name: "extract".into(),
            is_initial: true,
        }],
    };
    let created = pipelines
        .register_pipeline(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            created.created,
            created.tasks_created,
            created.tasks_updated
        ),
        (true, 1, 0)
    );
    let again = pipelines
        .register_pipeline(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (again.created, again.tasks_created, again.tasks_updated),
        (false, 0, 1)
    );

    // A registered task without runs: zero stats, no last run.
    let mut stats = app.stats().await;
    let empty = stats
        .get_stats(stats_request(
            EntityKind::Task,
            TASK_A,
            "2024-01-01",
            "2024-01-02",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            empty.num_of_successes,
            empty.num_of_failures,
            empty.last_run_executed_at
        ),
        (0, 0, None)
    );
    let none = stats
        .get_last_run_stats(proto::GetLastRunStatsRequest {
            entity: entity(EntityKind::Task, TASK_A),
        })
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::NotFound);
    assert!(
        none.message().contains("has no finished run"),
        "{}",
        none.message()
    );

    // Task A belongs to PIPELINE: reporting it under another pipeline is refused.
    let other_pipeline = "22222222-2222-4222-8222-222222222222";
    let wrong = finished(
        "30000000-0000-4000-8000-000000000001",
        RUN_1,
        other_pipeline,
        TASK_A,
        true,
        1,
        "2024-01-01 00:00:00",
    );
    let refused = app
        .ingest()
        .await
        .report_task_run_batch(batch(&[wrong]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("belongs to another pipeline"),
        "{}",
        refused.message()
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_field_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    app.ingest()
        .await
        .report_task_run_batch(batch(&results()))
        .await
        .unwrap();
    let mut stats = app.stats().await;
    let aggregated = |period: i32, n: u32| proto::GetAggregatedStatsRequest {
        entity: entity(EntityKind::Task, TASK_A),
        date_from: Some(ts("2024-01-01 00:00:00")),
        period,
        n,
        fill: String::new(),
    };
    let statuses = vec![
        (
            stats
                .get_stats(stats_request(
                    EntityKind::Task,
                    "not-a-uuid",
                    "2024-01-01",
                    "2024-01-02",
                ))
                .await
                .unwrap_err(),
            "entity.uuid: `not-a-uuid` is not a UUID",
        ),
        (
            stats
                .get_stats(stats_request(
                    EntityKind::Task,
                    TASK_A,
                    "2024-02-01",
                    "2024-01-01",
                ))
                .await
                .unwrap_err(),
            "from: must not be after to",
        ),
        (
            stats
                .get_stats(proto::GetStatsRequest {
                    entity: None,
                    from: None,
                    to: None,
                })
                .await
                .unwrap_err(),
            "entity: is required",
        ),
        (
            stats
                .get_stats(stats_request(
                    EntityKind::Unspecified,
                    TASK_A,
                    "2024-01-01",
                    "2024-01-02",
                ))
                .await
                .unwrap_err(),
            "entity.kind: must be TASK or PIPELINE",
        ),
        (
            stats
                .get_aggregated_stats(aggregated(Period::Unspecified as i32, 3))
                .await
                .unwrap_err(),
            "period: must be one of day, week, month, quarter, year",
        ),
        (
            stats
                .get_aggregated_stats(aggregated(42, 3))
                .await
                .unwrap_err(),
            "period: must be one of",
        ),
        (
            stats
                .get_aggregated_stats(aggregated(Period::Day as i32, 0))
                .await
                .unwrap_err(),
            "n: must be between 1 and 1000, got 0",
        ),
        (
            stats
                .get_aggregated_stats(aggregated(Period::Day as i32, 100_000))
                .await
                .unwrap_err(),
            "n: must be between 1 and 1000",
        ),
        (
            stats
                .get_aggregated_stats(proto::GetAggregatedStatsRequest {
                    fill: "gaps".into(),
                    ..aggregated(Period::Day as i32, 3)
                })
                .await
                .unwrap_err(),
            "fill: `gaps` is not a fill; the only one is zero",
        ),
        (
            stats
                .get_stats(proto::GetStatsRequest {
                    entity: entity(EntityKind::Task, TASK_A),
                    from: Some(prost_types::Timestamp {
                        seconds: i64::MAX,
                        nanos: 0,
                    }),
                    to: Some(ts("2024-01-01 00:00:00")),
                })
                .await
                .unwrap_err(),
            "from: must lie between the years 1 and 9999",
        ),
        (
            stats
                .stream_logs(proto::StreamLogsRequest {
                    pipeline_uuid: PIPELINE.into(),
                    from: Some(ts("2024-01-01 00:00:00")),
                    to: Some(ts("2024-01-02 00:00:00")),
                    limit: 0,
                    cursor: "garbage".into(),
                })
                .await
                .unwrap_err(),
            "cursor: `garbage` is not a cursor this server issued",
        ),
    ];
    for (status, message) in statuses {
        assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
        assert!(
            status.message().contains(message),
            "{:?} lacks {message:?}",
            status.message()
        );
    }

    let mut bad_report = results()[0].clone();
    bad_report.task_type = 99;
    let refused = app
        .ingest()
        .await
        .report_task_runs(tokio_stream::iter([batch(&[bad_report])]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("batch 0: results[0].task_type"),
        "{}",
        refused.message()
    );
    let mut no_time = results()[0].clone();
    no_time.executed_at = None;
    let refused = app
        .ingest()
        .await
        .report_task_run_batch(batch(&[no_time]))
        .await
        .unwrap_err();
    assert!(
        refused
            .message()
            .contains("results[0].executed_at: is required for a finished task run"),
        "{}",
        refused.message()
    );

    let missing = stats
        .get_stats(stats_request(
            EntityKind::Pipeline,
            "99999999-9999-4999-8999-999999999999",
            "2024-01-01",
            "2024-01-02",
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // Still serving, still right.
    let ok = stats
        .get_stats(stats_request(
            EntityKind::Task,
            TASK_A,
            "2024-01-01 00:00:00",
            "2024-12-31 23:59:59",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.num_of_successes, 2);
    app.stop().await;
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };

    let app = spawn_app().await;
    let mut health = HealthClient::new(app.channel().await);
    for service in [
        "",
        "runledger.v1.Stats",
        "runledger.v1.Ingest",
        "runledger.v1.Pipelines",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service}");
    }

    let mut reflection = ServerReflectionClient::new(app.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "runledger.v1.Ingest",
        "runledger.v1.Pipelines",
        "runledger.v1.Stats",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not in {names:?}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn grpc_enforces_tokens_scopes_and_tenants() {
    use crate::support::{Bearer, token_for};
    use runledger::auth::Scopes;
    use runledger::proto::{auth_client::AuthClient, stats_client::StatsClient};

    let app = spawn_app().await;
    app.ingest()
        .await
        .report_task_run_batch(batch(&results()))
        .await
        .unwrap();
    let request = || proto::GetLastRunStatsRequest {
        entity: entity(EntityKind::Task, TASK_A),
    };

    // No token, a forged one: UNAUTHENTICATED.
    let mut anonymous = StatsClient::new(app.channel().await);
    let status = anonymous.get_last_run_stats(request()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("no credentials"),
        "{}",
        status.message()
    );
    let status = app
        .stats_as("rla_forged")
        .await
        .get_last_run_stats(request())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // A token without stats:read, and one without runs:write: PERMISSION_DENIED.
    let writer = token_for(&app.engine, &app.client, Some("runs:write")).await;
    let status = app
        .stats_as(&writer)
        .await
        .get_last_run_stats(request())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let reader = token_for(&app.engine, &app.client, Some("stats:read")).await;
    let status = app
        .ingest_as(&reader)
        .await
        .report_task_run_batch(batch(&results()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("lacks the runs:write scope"),
        "{}",
        status.message()
    );

    // Another organization sees nothing, and cannot write into ours.
    let stranger = app.engine.create_client(None, Scopes::all()).unwrap();
    let theirs = token_for(&app.engine, &stranger, None).await;
    let status = app
        .stats_as(&theirs)
        .await
        .get_last_run_stats(request())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = app
        .ingest_as(&theirs)
        .await
        .report_task_run_batch(batch(&results()))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "{}",
        status.message()
    );
    assert!(
        status
            .message()
            .contains("is not the organization of these credentials"),
        "{}",
        status.message()
    );
    // Reporting our UUIDs without naming an organization writes into theirs: UUIDs are
    // namespaced per organization, so nothing of ours is touched or revealed.
    let mut unnamed = results()[0].clone();
    unnamed.organization_uuid.clear();
    let counts = app
        .ingest_as(&theirs)
        .await
        .report_task_run_batch(batch(&[unnamed]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(counts.inserted, 1);

    // The Auth service issues tokens that work, and refuses bad credentials.
    let mut auth = AuthClient::new(app.channel().await);
    let grant = auth
        .issue_token(proto::IssueTokenRequest {
            grant_type: "client_credentials".into(),
            client_id: app.client.client_id.clone(),
            client_secret: app.client.client_secret.clone(),
            scope: "stats:read".into(),
            refresh_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            grant.scope.as_str(),
            grant.token_type.as_str(),
            grant.expires_in
        ),
        ("stats:read", "Bearer", 86_400)
    );
    let mut stats =
        StatsClient::with_interceptor(app.channel().await, Bearer::new(&grant.access_token));
    assert!(
        stats
            .get_last_run_stats(request())
            .await
            .unwrap()
            .into_inner()
            .is_successful
    );
    let refused = auth
        .issue_token(proto::IssueTokenRequest {
            grant_type: "client_credentials".into(),
            client_id: app.client.client_id.clone(),
            client_secret: "rls_wrong".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(
        refused.message().starts_with("invalid_client"),
        "{}",
        refused.message()
    );
    app.stop().await;
}
