//! Regressions of hostile probing of the fronts and commands (issue 20's list): each test
//! failed before its fix.

use crate::support::{ChildServer, ORG, get_json, rest_token, run_cli, runtime};

const PIPELINE: &str = "0c000000-0000-4000-8000-000000000001";
const TASK: &str = "0c000000-0000-4000-8000-000000000002";

/// An import line of one finished task run of `task`, executed at `at`.
fn line_at(task_run: u128, task: &str, duration: u32, at: &str) -> String {
    format!(
        r#"{{"task_run_uuid":"{}","pipeline_run_uuid":"{}","pipeline_uuid":"{PIPELINE}","task_uuid":"{task}","task_type":"query","organization_uuid":"{ORG}","is_successful":true,"duration":{duration},"executed_at":"{at}"}}"#,
        uuid::Uuid::from_u128(task_run),
        uuid::Uuid::from_u128(task_run + 1000),
    )
}

/// An import line of one finished task run of [`TASK`] at 2024-01-01 00:00:00.
fn import_line(task_run: u128, duration: u32) -> String {
    line_at(task_run, TASK, duration, "2024-01-01 00:00:00")
}

#[test]
fn import_rejects_a_line_that_is_not_utf8_and_imports_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("runs.ndjson");
    // A byte order mark, a line, a line that is not UTF-8, and a line after it.
    let mut bytes = b"\xef\xbb\xbf".to_vec();
    bytes.extend_from_slice(import_line(1, 10).as_bytes());
    bytes.extend_from_slice(b"\n{\"task_run_uuid\": \"\xff\xfe\"}\n");
    bytes.extend_from_slice(import_line(2, 20).as_bytes());
    bytes.push(b'\n');
    std::fs::write(&file, bytes).unwrap();
    let data = dir.path().join("data");
    let (ok, output) = run_cli(&[
        "import",
        "--data-dir",
        data.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert!(!ok, "a rejected line makes the import fail: {output}");
    assert!(
        output.contains("runs.ndjson:2: the line is not valid UTF-8"),
        "{output}"
    );
    assert!(output.contains("2 imported"), "{output}");
    assert!(
        !output.contains("runs.ndjson:1:"),
        "the byte order mark is dropped: {output}"
    );
    assert!(!output.contains("runs.ndjson:3:"), "{output}");
}

#[test]
fn prune_refuses_a_cut_after_today_or_after_the_newest_run_and_says_what_it_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("runs.ndjson");
    std::fs::write(
        &file,
        format!("{}\n{}\n", import_line(1, 10), import_line(2, 20)),
    )
    .unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let (ok, output) = run_cli(&["import", "--data-dir", data, file.to_str().unwrap()]);
    assert!(ok, "{output}");
    let prune = |before: &str, force: bool| {
        let mut args = vec!["prune", "--data-dir", data, "--before", before];
        if force {
            args.push("--force");
        }
        run_cli(&args)
    };
    let future = (chrono::Utc::now() + chrono::Days::new(3))
        .format("%Y-%m-%d")
        .to_string();
    let (ok, output) = prune(&future, false);
    assert!(!ok && output.contains("is after today"), "{output}");
    // Before today, but after the newest run (2024-01-01): it would delete everything.
    let (ok, output) = prune("2024-06-01", false);
    assert!(
        !ok && output.contains("after the newest stored run"),
        "{output}"
    );
    let (ok, output) = run_cli(&["verify", "--data-dir", data]);
    assert!(
        ok && output.contains(" 2 task runs,"),
        "nothing was deleted: {output}"
    );
    // What a cut deletes is said before it does.
    let (ok, output) = prune("2024-01-01", false);
    assert!(ok && output.contains("0 finished task runs go"), "{output}");
    let (ok, output) = prune("2024-01-02", true);
    assert!(ok && output.contains("2 finished task runs go"), "{output}");
}

#[test]
fn an_approximate_answer_never_names_a_last_run_after_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("runs.ndjson");
    // The task's only run at 18:00 on a day the cut prunes; another task's run after the cut.
    let late = "0c000000-0000-4000-8000-000000000003";
    let lines = [
        line_at(1, TASK, 10, "2024-01-10 18:00:00"),
        line_at(2, late, 10, "2024-03-01 00:00:00"),
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    assert!(run_cli(&["import", "--data-dir", d, file.to_str().unwrap()]).0);
    assert!(run_cli(&["prune", "--data-dir", d, "--before", "2024-02-01"]).0);
    let (ok, output) = run_cli(&["client", "create", "--data-dir", d, "--org", ORG]);
    assert!(ok, "{output}");
    let client: serde_json::Value = serde_json::from_str(output.lines().last().unwrap()).unwrap();
    let server = ChildServer::start(&data);
    let http = reqwest::Client::new();
    runtime().block_on(async {
        let token = rest_token(&http, server.http_addr, &client, None).await;
        let url = format!(
            "http://{}/v1/stats/tasks/{TASK}/stats/2024-01-01/2024-01-10%2012:00:00",
            server.http_addr
        );
        let answer = get_json(&http, url, &token).await;
        // Counted over the whole day (the run at 18:00 is in it, as the answer says), but the
        // last run at or before 12:00 is not that one.
        assert_eq!(answer["approximate"], true, "{answer}");
        assert_eq!(answer["num_of_successes"], 1, "{answer}");
        assert!(answer["last_run_executed_at"].is_null(), "{answer}");
    });
}

#[test]
fn commands_on_a_missing_data_dir_refuse_instead_of_making_an_empty_store() {
    let dir = tempfile::tempdir().unwrap();
    let mistyped = dir.path().join("dtaa");
    let d = mistyped.to_str().unwrap();
    for args in [
        vec!["verify", "--data-dir", d],
        vec!["prune", "--data-dir", d, "--before", "2024-01-01"],
        vec!["info", "--data-dir", d],
    ] {
        let (ok, output) = run_cli(&args);
        assert!(
            !ok && output.contains("there is no database"),
            "{args:?}: {output}"
        );
    }
    assert!(!mistyped.exists(), "nothing was created");
}

#[test]
fn a_backup_goes_into_an_empty_or_new_directory_only() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("runs.ndjson");
    std::fs::write(&file, import_line(1, 10)).unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    assert!(run_cli(&["import", "--data-dir", d, file.to_str().unwrap()]).0);
    // A directory holding another store's key: refused, left as it was.
    let taken = dir.path().join("taken");
    std::fs::create_dir(&taken).unwrap();
    std::fs::write(taken.join("master.key"), "someone else's key").unwrap();
    let (ok, output) = run_cli(&["backup", "--data-dir", d, taken.to_str().unwrap()]);
    assert!(!ok && output.contains("is not empty"), "{output}");
    assert_eq!(std::fs::read_dir(&taken).unwrap().count(), 1);
    // A new one.
    let fresh = dir.path().join("fresh");
    let (ok, output) = run_cli(&["backup", "--data-dir", d, fresh.to_str().unwrap()]);
    assert!(ok, "{output}");
    assert!(fresh.join("runledger.redb").exists());
}

#[test]
fn buckets_past_the_year_9999_are_refused_naming_the_field() {
    runtime().block_on(async {
        let app = crate::support::spawn_app().await;
        let run = runledger::cli::import::parse_line(&line_at(1, TASK, 10, "9999-06-01 00:00:00"))
            .unwrap();
        app.engine
            .import_now(vec![run])
            .unwrap()
            .pop()
            .unwrap()
            .unwrap();
        let http = reqwest::Client::new();
        let get = |path: String| {
            let request = http.get(app.url(&path)).bearer_auth(&app.token).send();
            async move {
                let response = request.await.unwrap();
                let status = response.status().as_u16();
                (status, response.json::<serde_json::Value>().await.unwrap())
            }
        };
        let base = format!("/v1/stats/pipelines/{PIPELINE}/aggregated-stats");
        // Twelve months fit exactly, the last ending at the last second answered.
        let (status, months) = get(format!("{base}/9999-01-01/month/12?fill=zero")).await;
        assert_eq!(status, 200, "{months}");
        assert_eq!(months.as_array().unwrap().len(), 12);
        assert_eq!(months[11]["date_to"], "9999-12-31 23:59:59");
        // Thirteen do not, with or without filling; nor does the week holding 9999-12-31.
        for (path, field) in [
            (format!("{base}/9999-01-01/month/13?fill=zero"), "n:"),
            (format!("{base}/9999-01-01/month/13"), "n:"),
            (format!("{base}/9999-12-30/week/1?fill=zero"), "date_from:"),
        ] {
            let (status, body) = get(path.clone()).await;
            assert_eq!(status, 400, "{path}: {body}");
            assert!(
                body["errors"][0].as_str().unwrap().starts_with(field),
                "{path}: {body}"
            );
        }
        app.stop().await;
    });
}

#[test]
fn calls_to_methods_that_do_not_exist_add_no_metrics_series() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(&dir.path().join("data"));
    runtime().block_on(async {
        let grpc = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap();
        let http = reqwest::Client::new();
        let series = || async {
            let text = http
                .get(format!("http://{}/metrics", server.http_addr))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            text.lines()
                .filter(|line| line.starts_with("runledger_grpc_"))
                .count()
        };
        let call = |method: String| {
            grpc.post(format!(
                "http://{}/runledger.v1.Stats/{method}",
                server.grpc_addr
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(vec![0u8, 0, 0, 0, 0])
            .send()
        };
        call("Warmup".into()).await.unwrap();
        let before = series().await;
        for i in 0..2_000 {
            call(format!("Made_up_{i}")).await.unwrap();
        }
        let after = series().await;
        assert_eq!(after, before, "2,000 unknown methods added metrics series");
        let text = http
            .get(format!("http://{}/metrics", server.http_addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            !text.contains("Made_up"),
            "an unknown method became a label"
        );
        assert!(text.contains(r#"method="other""#));
    });
}

/// Registers pipeline `uuid` named `name` with one task through gRPC.
async fn register(
    app: &crate::support::TestApp,
    uuid: &str,
    name: &str,
    task_name: &str,
) -> Result<(), tonic::Status> {
    use crate::support::{Bearer, grpc_channel};
    use runledger::proto;
    let mut pipelines = proto::pipelines_client::PipelinesClient::with_interceptor(
        grpc_channel(app.grpc_addr).await,
        Bearer::new(&app.token),
    );
    pipelines
        .register_pipeline(proto::RegisterPipelineRequest {
            pipeline_uuid: uuid.into(),
            organization_uuid: String::new(),
            name: name.into(),
            tasks: vec![proto::TaskDefinition {
                task_uuid: uuid::Uuid::new_v4().to_string(),
                task_type: proto::TaskType::Query as i32,
                name: task_name.into(),
                is_initial: true,
            }],
        })
        .await
        .map(|_| ())
}

#[test]
fn names_are_short_single_lines_and_the_overview_cursor_does_not_carry_them() {
    runtime().block_on(async {
        let app = crate::support::spawn_app().await;
        let long = "x".repeat(257);
        for (name, task_name, field) in [
            (long.as_str(), "t", "name:"),
            ("a\0b", "t", "name:"),
            ("line\nforged", "t", "name:"),
            ("fine", long.as_str(), "tasks[0].name:"),
        ] {
            let refused = register(&app, &uuid::Uuid::new_v4().to_string(), name, task_name)
                .await
                .unwrap_err();
            assert_eq!(refused.code(), tonic::Code::InvalidArgument);
            assert!(
                refused.message().starts_with(field),
                "{}",
                refused.message()
            );
        }
        // Three pipelines with names of the longest kind, listed a page of one at a time.
        let mut uuids = Vec::new();
        for letter in ["a", "b", "c"] {
            let uuid = uuid::Uuid::new_v4().to_string();
            register(&app, &uuid, &letter.repeat(256), "t")
                .await
                .unwrap();
            uuids.push(uuid);
        }
        let http = reqwest::Client::new();
        let mut listed = Vec::new();
        let mut path = "/v1/stats/pipelines?limit=1".to_string();
        loop {
            let response = http
                .get(app.url(&path))
                .bearer_auth(&app.token)
                .send()
                .await
                .unwrap();
            let cursor = response
                .headers()
                .get("x-next-cursor")
                .map(|v| v.to_str().unwrap().to_string());
            let page: serde_json::Value = response.json().await.unwrap();
            listed.push(page[0]["pipeline_uuid"].as_str().unwrap().to_string());
            let Some(cursor) = cursor else { break };
            assert!(cursor.len() <= 24, "a cursor of {} bytes", cursor.len());
            path = format!("/v1/stats/pipelines?limit=1&cursor={cursor}");
        }
        assert_eq!(
            listed, uuids,
            "every pipeline once, in the order of their names"
        );
        app.stop().await;
    });
}

#[test]
fn a_log_page_is_capped_in_bytes_and_the_next_pages_hold_the_rest() {
    use crate::support::{Bearer, finished, grpc_channel};
    use runledger::proto;
    runtime().block_on(async {
        let app = crate::support::spawn_app().await;
        let mut ingest = proto::ingest_client::IngestClient::with_interceptor(
            grpc_channel(app.grpc_addr).await,
            Bearer::new(&app.token),
        )
        .max_encoding_message_size(32 << 20);
        // Six runs with 2 MiB outputs each.
        let results = (0..6)
            .map(|i| {
                let mut run = finished(
                    &uuid::Uuid::new_v4().to_string(),
                    &uuid::Uuid::new_v4().to_string(),
                    PIPELINE,
                    TASK,
                    true,
                    10,
                    &format!("2024-01-0{} 00:00:00", i + 1),
                );
                run.output = vec![b'o'; 2 << 20];
                run
            })
            .collect();
        ingest
            .report_task_run_batch(proto::ReportTaskRunsRequest { results })
            .await
            .unwrap();
        let http = reqwest::Client::new();
        let mut seen = 0;
        let mut path = format!("/v1/stats/pipelines/{PIPELINE}/logs/2024-01-01/2024-01-31?limit=100");
        loop {
            let response = http
                .get(app.url(&path))
                .bearer_auth(&app.token)
                .send()
                .await
                .unwrap();
            let cursor = response
                .headers()
                .get("x-next-cursor")
                .map(|v| v.to_str().unwrap().to_string());
            let body = response.bytes().await.unwrap();
            assert!(body.len() < 8 << 20, "a page of {} bytes", body.len());
            let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let entries = page.as_array().unwrap().len();
            assert!((1..=3).contains(&entries), "{entries} entries of 2 MiB in a page");
            seen += entries;
            let Some(cursor) = cursor else { break };
            path = format!(
                "/v1/stats/pipelines/{PIPELINE}/logs/2024-01-01/2024-01-31?limit=100&cursor={cursor}"
            );
        }
        assert_eq!(seen, 6);
        app.stop().await;
    });
}
