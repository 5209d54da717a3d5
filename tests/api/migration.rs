//! Migration from the reference platform: its ClickHouse `FORMAT JSONEachRow` export of the
//! task-run statistics table (ordered by task-run UUID, so in random time order, outputs as raw
//! bytes) imports as is with `import --format ylem`, and answers as a brute force over the rows.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::support::{
    ChildServer, ORG, get_json, logged_entries, printed_json, rest_token, run_cli, runtime,
};

const EXPORT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/ylem/task_runs.ndjson"
);

/// The export's rows as JSON (an output that is not UTF-8 read lossily: stats do not need it).
fn rows() -> Vec<Value> {
    let bytes = std::fs::read(EXPORT).unwrap();
    String::from_utf8_lossy(&bytes)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// How an entity's rows become the executions its stats count.
type Counting = for<'a> fn(&[&'a Value]) -> Vec<Execution<'a>>;

/// An execution as stats count it: its success, duration and executed_at.
struct Execution<'a> {
    ok: bool,
    duration: u64,
    at: &'a str,
}

/// A task's executions: its task runs.
fn task_runs<'a>(rows: &[&'a Value]) -> Vec<Execution<'a>> {
    rows.iter()
        .map(|r| Execution {
            ok: r["is_successful"] == 1,
            duration: r["duration"].as_u64().unwrap(),
            at: r["executed_at"].as_str().unwrap(),
        })
        .collect()
}

/// A pipeline's executions: its pipeline runs, successful when every task run is, lasting the
/// sum of theirs, executed at the latest of theirs.
fn pipeline_runs<'a>(rows: &[&'a Value]) -> Vec<Execution<'a>> {
    let mut runs: BTreeMap<&str, Execution<'a>> = BTreeMap::new();
    for task_run in task_runs(rows).into_iter().zip(rows) {
        let (one, row) = task_run;
        let run = runs
            .entry(row["pipeline_run_uuid"].as_str().unwrap())
            .or_insert(Execution {
                ok: true,
                duration: 0,
                at: "",
            });
        run.ok &= one.ok;
        run.duration += one.duration;
        run.at = run.at.max(one.at);
    }
    runs.into_values().collect()
}

/// What range stats over `executions` should say, as the contract defines it.
fn expected(executions: &[Execution<'_>]) -> Value {
    let successes = executions.iter().filter(|e| e.ok).count();
    let total: u64 = executions.iter().map(|e| e.duration).sum();
    let last = executions.iter().max_by_key(|e| e.at).unwrap();
    serde_json::json!({
        "num_of_successes": successes,
        "num_of_failures": executions.len() - successes,
        "average_duration": total / executions.len() as u64,
        "is_last_run_successful": last.ok,
        "last_run_executed_at": &last.at[..19],
        "last_run_duration": last.duration,
    })
}

#[test]
fn a_ylem_export_imports_as_is_and_answers_as_its_rows() {
    let rows = rows();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let data = dir.path().to_str().unwrap();
    let (ok, output) = run_cli(&["import", "--data-dir", data, "--format", "ylem", EXPORT]);
    assert!(ok, "{output}");
    assert!(
        output.contains(&format!("{} imported", rows.len())) && output.contains("0 rejected"),
        "{output}"
    );
    // Read as runledger's own lines, every row is refused (and nothing changes).
    let (ok, refused) = run_cli(&["import", "--data-dir", data, EXPORT]);
    assert!(
        !ok && refused.contains(&format!(
            "0 imported, 0 replaced, 0 unchanged, {} rejected",
            rows.len()
        )),
        "{refused}"
    );

    let (ok, output) = run_cli(&["client", "create", "--data-dir", data, "--org", ORG]);
    assert!(ok, "{output}");
    let client = printed_json(&output);
    let (ok, key) = run_cli(&["key", "--data-dir", data, "--org", ORG]);
    assert!(ok, "{key}");
    let key = runledger::crypto::OutputKey::from_base64(key.trim()).unwrap();

    let ours: Vec<&Value> = rows
        .iter()
        .filter(|r| r["organization_uuid"] == ORG)
        .collect();
    assert!(
        ours.len() < rows.len(),
        "the sample has another organization"
    );
    let mut pipelines: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    let mut tasks: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for row in &ours {
        pipelines
            .entry(row["pipeline_uuid"].as_str().unwrap())
            .or_default()
            .push(row);
        tasks
            .entry(row["task_uuid"].as_str().unwrap())
            .or_default()
            .push(row);
    }
    let stranger = rows.iter().find(|r| r["organization_uuid"] != ORG).unwrap()["pipeline_uuid"]
        .as_str()
        .unwrap();

    let server = ChildServer::start(dir.path());
    runtime().block_on(async {
        let http = reqwest::Client::new();
        let token = rest_token(&http, server.http_addr, &client, None).await;
        let stats = |kind: &'static str, uuid: String| {
            let (http, token) = (http.clone(), token.clone());
            async move {
                let url = format!(
                    "http://{}/v1/stats/{kind}/{uuid}/stats/2023-12-01/2024-03-31%2023:59:59",
                    server.http_addr
                );
                get_json(&http, url, &token).await
            }
        };
        let counted: [(_, _, Counting); 2] = [
            ("pipelines", &pipelines, pipeline_runs),
            ("tasks", &tasks, task_runs),
        ];
        for (kind, groups, executions) in counted {
            for (uuid, of) in groups {
                let answer = stats(kind, uuid.to_string()).await;
                for (field, value) in expected(&executions(of)).as_object().unwrap() {
                    assert_eq!(&answer[field], value, "{kind} {uuid} {field}: {answer}");
                }
            }
        }
        // Another organization's pipeline in the same export stays its own.
        let theirs = stats("pipelines", stranger.to_string()).await;
        assert_eq!(theirs["code"], 404, "{theirs}");

        // Every row is in the logs with its output's bytes as exported, its metric only when
        // set and a fatal failure among its errors.
        let mut seen = 0;
        for (pipeline, of) in &pipelines {
            let entries = logged_entries(server.grpc_addr, &token, pipeline, 0).await;
            assert_eq!(entries.len(), of.len(), "{pipeline}");
            for entry in entries {
                let row = of
                    .iter()
                    .find(|r| r["uuid"] == entry.task_run_uuid)
                    .expect("a logged run is a row");
                let output = if entry.output.is_empty() {
                    Vec::new()
                } else {
                    key.open(&entry.output).unwrap()
                };
                if output.starts_with(b"\xff\xfe") {
                    assert_eq!(output, b"\xff\xfe\xc3\xa9\n\"tab\t");
                    seen += 1;
                } else {
                    assert_eq!(output, row["output"].as_str().unwrap().as_bytes());
                }
                let metric = (row["is_metric_value_set"] == 1)
                    .then(|| row["metric_value"].as_f64().unwrap());
                assert_eq!(entry.metric_value, metric, "{row}");
                let fatal = entry.errors.iter().any(|e| e.severity == "fatal");
                assert_eq!(fatal, row["is_fatal_failure"] == 1, "{row}");
            }
        }
        assert_eq!(seen, 1, "the output that is not UTF-8 kept its bytes");
    });
    assert!(server.stop());
}
