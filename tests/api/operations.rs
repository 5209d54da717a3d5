//! Operating a running server: `runledger backup` copies it consistently while reports stream in,
//! the copy restores (serves the same runs, decrypts outputs), and `client revoke` takes effect
//! on the running server at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use runledger::proto::{self, ingest_client::IngestClient};
use tokio::sync::watch;

use crate::crash::{PIPELINE, batch};
use crate::support::{
    Bearer, ChildServer, grpc_channel, grpc_token, logged_entries, logged_task_runs, run_cli,
    runtime,
};

#[test]
fn a_backup_of_a_busy_server_is_consistent_and_restores() {
    let dir = tempfile::tempdir().unwrap();
    let backups = tempfile::tempdir().unwrap();
    let destination = backups.path().join("nightly");
    let runtime = runtime();
    let server = ChildServer::start(dir.path());
    let credentials = server.first_client.clone().unwrap();
    let token = runtime.block_on(grpc_token(server.grpc_addr, &credentials));

    // Two writers report batches of 30 task runs until told to stop, counting acknowledgements.
    let (acked_tx, mut acked_rx) = watch::channel(0u64);
    let acked_tx = Arc::new(acked_tx);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2u64)
        .map(|writer| {
            let (acked, stop, token, addr) = (
                acked_tx.clone(),
                stop.clone(),
                token.clone(),
                server.grpc_addr,
            );
            runtime.spawn(async move {
                let mut client =
                    IngestClient::with_interceptor(grpc_channel(addr).await, Bearer::new(&token));
                let mut round = 0;
                while !stop.load(Ordering::Relaxed) {
                    let results = batch((round * 2 + writer) * 30);
                    client
                        .report_task_run_batch(proto::ReportTaskRunsRequest { results })
                        .await
                        .expect("reports keep working during a backup");
                    acked.send_modify(|n| *n += 1);
                    round += 1;
                }
            })
        })
        .collect();

    runtime.block_on(acked_rx.wait_for(|n| *n >= 10)).unwrap();
    let acked_before = *acked_rx.borrow();
    let data_dir = dir.path().to_str().unwrap();
    let (ok, output) = run_cli(&[
        "backup",
        "--data-dir",
        data_dir,
        destination.to_str().unwrap(),
    ]);
    assert!(ok && output.contains("backed up"), "{output}");
    let acked_after = *acked_rx.borrow();
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        runtime.block_on(writer).unwrap();
    }

    // Never over an existing backup.
    let (ok, output) = run_cli(&[
        "backup",
        "--data-dir",
        data_dir,
        destination.to_str().unwrap(),
    ]);
    assert!(!ok && output.contains("is not empty"), "{output}");

    // Revoking on the running server stops the token at once.
    let client_id = credentials["client_id"].as_str().unwrap();
    let (ok, output) = run_cli(&["client", "revoke", "--data-dir", data_dir, client_id]);
    assert!(ok && output.contains("revoked"), "{output}");
    let refused = runtime.block_on(async {
        let mut stats = proto::stats_client::StatsClient::with_interceptor(
            grpc_channel(server.grpc_addr).await,
            Bearer::new(&token),
        );
        stats
            .get_last_run_stats(proto::GetLastRunStatsRequest {
                entity: crate::support::entity(proto::EntityKind::Pipeline, PIPELINE),
            })
            .await
            .unwrap_err()
    });
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    server.kill();

    // The copy agrees with itself and holds whole batches: every one acknowledged before the
    // backup began, none that was not yet sent when it ended.
    let (ok, output) = run_cli(&["verify", "--data-dir", destination.to_str().unwrap()]);
    assert!(ok && output.contains("rollups agree"), "{output}");
    assert!(destination.join("master.key").exists());
    // Served read-only, the copy answers reads with the tokens it holds and refuses writes.
    let read_only = ChildServer::start_with(&destination, &["--read-only"], None);
    let (held, refusal) = runtime.block_on(async {
        let held = logged_task_runs(read_only.grpc_addr, &token, PIPELINE).await;
        let mut ingest = IngestClient::with_interceptor(
            grpc_channel(read_only.grpc_addr).await,
            Bearer::new(&token),
        );
        let refusal = ingest
            .report_task_run_batch(proto::ReportTaskRunsRequest {
                results: batch(1 << 30),
            })
            .await
            .unwrap_err();
        let token_status = reqwest::Client::new()
            .post(format!("http://{}/v1/oauth/token", read_only.http_addr))
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
            .status();
        assert_eq!(token_status, reqwest::StatusCode::SERVICE_UNAVAILABLE);
        (held, refusal)
    });
    assert!(read_only.stop());
    assert_eq!(refusal.code(), tonic::Code::Unavailable, "{refusal:?}");
    assert!(refusal.message().contains("read-only"), "{refusal:?}");

    let restored = ChildServer::start(&destination);
    let token = runtime.block_on(grpc_token(restored.grpc_addr, &credentials));
    let present = runtime.block_on(logged_task_runs(restored.grpc_addr, &token, PIPELINE));
    let sealed = runtime.block_on(first_output(restored.grpc_addr, &token));
    restored.kill();
    assert_eq!(present, held);
    assert_eq!(present.len() % 30, 0, "a batch is half in the backup");
    let batches = present.len() as u64 / 30;
    assert!(
        (acked_before..=acked_after + 2).contains(&batches),
        "{batches} batches in the backup; {acked_before} acknowledged before it, {acked_after} after"
    );
    // Outputs are sealed with the organization's key, which the copied master key opens.
    let org = credentials["organization_uuid"].as_str().unwrap();
    let destination = destination.to_str().unwrap();
    let (ok, key) = run_cli(&["key", "--data-dir", destination, "--org", org]);
    assert!(ok, "{key}");
    let (ok, output) = run_cli(&["decrypt", "--key", key.trim(), &sealed]);
    assert!(ok && output.trim() == "rows=3", "{output}");
}

/// The first logged output of [`PIPELINE`], base64, as the logs return it (sealed).
async fn first_output(addr: std::net::SocketAddr, token: &str) -> String {
    use base64::Engine as _;
    let entries = logged_entries(addr, token, PIPELINE, 1).await;
    let entry = entries.first().expect("a logged run");
    base64::engine::general_purpose::STANDARD.encode(&entry.output)
}

#[test]
fn a_full_disk_refuses_writes_clearly_and_reads_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    let server = ChildServer::start(dir.path());
    let credentials = server.first_client.clone().unwrap();
    let token = runtime.block_on(grpc_token(server.grpc_addr, &credentials));
    assert!(server.stop());

    // The file may grow by 64 KiB more: the disk is as good as full.
    let size = std::fs::metadata(dir.path().join("runledger.redb"))
        .unwrap()
        .len();
    let server = ChildServer::start_with(dir.path(), &[], Some(size / 1024 + 64));
    let (acked, failures, read_after) = runtime.block_on(async {
        let channel = grpc_channel(server.grpc_addr).await;
        let mut ingest = IngestClient::with_interceptor(channel, Bearer::new(&token));
        let mut acked = std::collections::HashSet::new();
        let mut failures = Vec::new();
        let mut round = 0u64;
        while failures.len() < 2 {
            assert!(round < 10_000, "the file limit was never reached");
            let results = batch(round * 30);
            let ids: Vec<String> = results.iter().map(|r| r.task_run_uuid.clone()).collect();
            match ingest
                .report_task_run_batch(proto::ReportTaskRunsRequest { results })
                .await
            {
                Ok(_) => acked.extend(ids),
                Err(status) => failures.push(status),
            }
            round += 1;
        }
        // Reads work right after the refusal and see every acknowledged run.
        let read_after = logged_task_runs(server.grpc_addr, &token, PIPELINE).await;
        (acked, failures, read_after)
    });
    for status in &failures {
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(
            status.message().contains("may not grow") && status.message().contains("not applied"),
            "{status:?}"
        );
    }
    assert!(!acked.is_empty());
    assert_eq!(read_after, acked);
    assert!(
        server.stop(),
        "the server shuts down cleanly after write failures"
    );

    // With room again, nothing acknowledged is lost, nothing refused appears, and writes work.
    let (ok, output) = run_cli(&["verify", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(ok && output.contains("rollups agree"), "{output}");
    let server = ChildServer::start(dir.path());
    runtime.block_on(async {
        assert_eq!(
            logged_task_runs(server.grpc_addr, &token, PIPELINE).await,
            acked
        );
        let mut ingest = IngestClient::with_interceptor(
            grpc_channel(server.grpc_addr).await,
            Bearer::new(&token),
        );
        ingest
            .report_task_run_batch(proto::ReportTaskRunsRequest {
                results: batch(1 << 30),
            })
            .await
            .unwrap();
    });
    server.kill();
}

#[test]
fn prune_on_a_stopped_data_dir_keeps_day_answers_and_verifies() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    let data_dir = data_dir.to_str().unwrap();
    let (ok, output) = run_cli(&["demo", "--data-dir", data_dir]);
    assert!(ok, "{output}");
    let (ok, output) = run_cli(&["prune", "--data-dir", data_dir, "--before", "2025-13-01"]);
    assert!(!ok && output.contains("--before"), "{output}");
    let (ok, output) = run_cli(&[
        "prune",
        "--data-dir",
        data_dir,
        "--before",
        "2025-03-01 12:00:00",
    ]);
    assert!(!ok && output.contains("not a date"), "{output}");
    let year = chrono::Utc::now().format("%Y").to_string();
    let (ok, output) = run_cli(&[
        "prune",
        "--data-dir",
        data_dir,
        "--before",
        &format!("{year}-02-01"),
    ]);
    assert!(ok && output.contains("pruned before"), "{output}");
    let (ok, output) = run_cli(&["verify", "--data-dir", data_dir]);
    assert!(ok && output.contains("rollups agree"), "{output}");
}
