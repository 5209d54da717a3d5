//! Logs over REST: paging newest first, and outputs that decrypt with the organization's key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::{Method, StatusCode};
use runledger::proto;
use serde_json::Value;

use crate::support::{ChildServer, finished, run_cli};

use super::*;

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
    let credentials = crate::support::printed_json(&output);
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
            crate::support::grpc_channel(server.grpc_addr).await,
            crate::support::Bearer::new(&token),
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
