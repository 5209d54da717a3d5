//! `runledger upgrade` on a database written by the first release (format 2, the fixture in
//! `tests/fixtures/format2`, made by its `make.sh`) and on the same database as the format-4
//! release upgraded it (`tests/fixtures/format4`): `serve` refuses the old file naming the
//! command; the upgraded one verifies, answers every recorded REST question as the old server
//! did (outputs decrypted; percentiles are additions), keeps clients, revocations, the executors'
//! queue and the REST ids; both paths end in equal tables; an interrupted upgrade leaves the old
//! file in place.

use std::path::{Path, PathBuf};

use runledger::proto::{self, ingest_client::IngestClient};
use serde_json::Value;

use crate::support::{Bearer, ChildServer, grpc_channel, grpc_token, run_cli, runtime};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/format2");
/// The format-2 fixture as `runledger upgrade` of format 4 left it (same keys and answers).
const FIXTURE_4: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/format4");
/// The run the fixture left waiting for an executor (REST id 2); id 1 was taken up.
const QUEUED_RUN: &str = "bd8eb104-079b-4b44-a1c4-9ba1ec9d7d81";
const PIPELINE: &str = "c5915596-83eb-42d2-b785-0b11d4fa3900";

/// A data dir holding a copy of the fixture (of format 2 or 4), owner-only as the server wants
/// it.
fn fixture_copy(parent: &Path, format: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = parent.join("data");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let database = if format == 4 { FIXTURE_4 } else { FIXTURE };
    for (from, file) in [(database, "runledger.redb"), (FIXTURE, "master.key")] {
        std::fs::copy(Path::new(from).join(file), dir.join(file)).unwrap();
        std::fs::set_permissions(dir.join(file), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    dir
}

/// The digest line `info --digest` prints: `digest <64 hex digits>`.
fn digest(data_dir: &str) -> String {
    let (ok, output) = run_cli(&["info", "--data-dir", data_dir, "--digest"]);
    let line = output.lines().next().unwrap_or_default();
    let hex = line.strip_prefix("digest ").unwrap_or_default();
    assert!(
        ok && hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()),
        "{output}"
    );
    hex.to_string()
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(Path::new(FIXTURE).join(name)).unwrap()).unwrap()
}

#[test]
fn a_format_2_database_upgrades_and_answers_as_before() {
    let temp = tempfile::tempdir().unwrap();
    let dir = fixture_copy(temp.path(), 2);
    let data_dir = dir.to_str().unwrap();

    let (ok, output) = run_cli(&[
        "serve",
        "--data-dir",
        data_dir,
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
    ]);
    assert!(!ok);
    assert!(
        output.contains(&format!("runledger upgrade --data-dir {data_dir}")),
        "serve names the command: {output}"
    );

    let (ok, output) = run_cli(&["upgrade", "--data-dir", data_dir]);
    assert!(ok, "{output}");
    assert!(
        output.contains("from format 2 to format 5")
            && output.contains("3969 finished and 2 unfinished task runs"),
        "{output}"
    );
    assert!(dir.join("runledger.format2.redb").exists());
    let (ok, output) = run_cli(&["verify", "--data-dir", data_dir]);
    assert!(ok && output.contains("rollups agree"), "{output}");
    let (ok, output) = run_cli(&["upgrade", "--data-dir", data_dir]);
    assert!(!ok && output.contains("already format 5"), "{output}");
    digest(data_dir);
    answers_as_before(&dir);
}

#[test]
fn a_format_4_database_gets_its_rollups_rebuilt_into_the_same_tables_as_from_format_2() {
    let temp = tempfile::tempdir().unwrap();
    let dir = fixture_copy(temp.path(), 4);
    let data_dir = dir.to_str().unwrap();
    let (ok, output) = run_cli(&["upgrade", "--data-dir", data_dir]);
    assert!(ok, "{output}");
    assert!(
        output.contains("from format 4 to format 5")
            && output.contains("rebuilt the rollups of")
            && output.contains("3969 finished task runs"),
        "{output}"
    );
    assert!(dir.join("runledger.format4.redb").exists());
    let (ok, output) = run_cli(&["verify", "--data-dir", data_dir]);
    assert!(ok && output.contains("rollups agree"), "{output}");

    let other = tempfile::tempdir().unwrap();
    let from_2 = fixture_copy(other.path(), 2);
    let (ok, output) = run_cli(&["upgrade", "--data-dir", from_2.to_str().unwrap()]);
    assert!(ok, "{output}");
    assert_eq!(digest(data_dir), digest(from_2.to_str().unwrap()));
    answers_as_before(&dir);
}

/// Serves the upgraded database and checks every recorded answer, the revoked client, the
/// executors' queue and the REST ids.
fn answers_as_before(dir: &Path) {
    let server = ChildServer::start(dir);
    let runtime = runtime();
    let http = reqwest::Client::new();
    let client = fixture_json("client.json");
    let token = runtime.block_on(grpc_token(server.grpc_addr, &client));

    let answers = fixture_json("answers.json");
    let answers = answers.as_array().unwrap();
    assert!(answers.len() > 100);
    for answer in answers {
        let path = answer["path"].as_str().unwrap();
        let body: Value = runtime.block_on(async {
            let response = http
                .get(format!("http://{}{path}", server.http_addr))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{path}");
            response.json().await.unwrap()
        });
        assert_same_seed_fields(&body, &answer["body"], path);
    }

    // The revoked client stays revoked.
    let revoked = fixture_json("revoked_client.json");
    let status = runtime.block_on(async {
        http.post(format!("http://{}/v1/oauth/token", server.http_addr))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", revoked["client_id"].as_str().unwrap()),
                ("client_secret", revoked["client_secret"].as_str().unwrap()),
            ])
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 401);

    // The run left in the queue reaches an executor with its id; new runs continue the ids.
    runtime.block_on(async {
        let mut executor = IngestClient::with_interceptor(
            grpc_channel(server.grpc_addr).await,
            Bearer::new(&token),
        )
        .watch_pending_task_runs(proto::WatchPendingTaskRunsRequest {})
        .await
        .unwrap()
        .into_inner();
        let pending = executor.message().await.unwrap().unwrap();
        assert_eq!(
            (pending.id, pending.task_run_uuid.as_str()),
            (2, QUEUED_RUN)
        );
        let started: Value = http
            .post(format!(
                "http://{}/v1/pipelines/{PIPELINE}/runs",
                server.http_addr
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(started[0]["id"], 3, "{started}");
    });
    assert!(server.stop());
}

#[test]
fn an_interrupted_upgrade_leaves_the_old_file_and_a_rerun_completes() {
    let temp = tempfile::tempdir().unwrap();
    let dir = fixture_copy(temp.path(), 2);
    let data_dir = dir.to_str().unwrap();
    let original = std::fs::read(dir.join("runledger.redb")).unwrap();
    // What an upgrade killed before its rename leaves: a half-built file and a stale link.
    std::fs::create_dir(dir.join("upgrade.partial")).unwrap();
    std::fs::write(dir.join("upgrade.partial/runledger.redb"), b"half written").unwrap();
    std::fs::hard_link(
        dir.join("runledger.redb"),
        dir.join("runledger.format2.redb"),
    )
    .unwrap();
    assert_eq!(std::fs::read(dir.join("runledger.redb")).unwrap(), original);

    let (ok, output) = run_cli(&["upgrade", "--data-dir", data_dir]);
    assert!(ok, "{output}");
    assert!(!dir.join("upgrade.partial").exists());
    assert_eq!(
        std::fs::read(dir.join("runledger.format2.redb")).unwrap(),
        original,
        "the old file is kept as it was"
    );
    let (ok, output) = run_cli(&["verify", "--data-dir", data_dir]);
    assert!(ok, "{output}");
}

/// Every field of the recorded answer is in the new one with the same value (new fields, like
/// percentiles, are additions).
fn assert_same_seed_fields(body: &Value, recorded: &Value, path: &str) {
    match (body, recorded) {
        (Value::Object(new), Value::Object(old)) => {
            for (name, value) in old {
                let found = new.get(name).unwrap_or(&Value::Null);
                assert_same_seed_fields(found, value, &format!("{path}.{name}"));
            }
        }
        (Value::Array(new), Value::Array(old)) => {
            assert_eq!(new.len(), old.len(), "{path}");
            for (at, (new, old)) in new.iter().zip(old).enumerate() {
                assert_same_seed_fields(new, old, &format!("{path}[{at}]"));
            }
        }
        _ => assert_eq!(body, recorded, "{path}"),
    }
}
