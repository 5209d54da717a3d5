//! Durability: reports acknowledged before a SIGKILL are all there after a restart, no batch is
//! half-applied, and `runledger verify` finds rollups and runs in agreement.
//!
//! `RUNLEDGER_CRASH_CYCLES=N` kills and restarts N times (default 3).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use runledger::proto::{self, ingest_client::IngestClient};
use tokio::sync::Notify;

use crate::support::{
    Bearer, ChildServer, digest, finished, grpc_channel, grpc_token, logged_task_runs, run_cli,
};

pub const PIPELINE: &str = "c0000000-0000-4000-8000-000000000000";
const TASKS: [&str; 3] = [
    "c0000000-0000-4000-8000-00000000000a",
    "c0000000-0000-4000-8000-00000000000b",
    "c0000000-0000-4000-8000-00000000000c",
];
const WRITERS: usize = 4;
const BATCH: usize = 30;

fn uuid(n: u64) -> String {
    uuid::Uuid::from_u64_pair(0x5eed_0000_0000_4000, 0x8000_0000_0000_0000 | n).to_string()
}

/// One batch of results: pipeline runs of three task runs each.
pub fn batch(first: u64) -> Vec<proto::TaskRunResult> {
    (0..BATCH as u64)
        .map(|i| {
            let n = first + i;
            let second = 1_700_000_000 + n as i64;
            let at = chrono::DateTime::from_timestamp(second, 0)
                .unwrap()
                .to_rfc3339();
            let mut result = finished(
                &uuid(n),
                &uuid((1 << 40) | (n / 3)),
                PIPELINE,
                TASKS[(n % 3) as usize],
                n % 7 != 0,
                (n % 1000) as u32,
                &at,
            );
            result.organization_uuid.clear(); // the caller's organization
            result
        })
        .collect()
}

#[test]
fn acknowledged_reports_survive_sigkill() {
    let cycles: u64 = std::env::var("RUNLEDGER_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_time()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let acked: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let attempted: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let mut next_id = 0u64;
    let mut token = String::new();

    for cycle in 0..cycles {
        let server = ChildServer::start(dir.path());
        if cycle == 0 {
            // The first start prints credentials; the token it gets must outlive every kill.
            let credentials = server
                .first_client
                .clone()
                .expect("first start prints credentials");
            token = runtime.block_on(grpc_token(server.grpc_addr, &credentials));
        }
        if cycle == 0 {
            let (ok, output) = run_cli(&["verify", "--data-dir", dir.path().to_str().unwrap()]);
            assert!(
                !ok && output.contains("in use by another runledger process"),
                "{output}"
            );
        }
        let kill_after = 3 + ((seed ^ cycle).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % 40;
        let start = next_id;
        next_id += 1 << 20;
        runtime.block_on(async {
            let channel = grpc_channel(server.grpc_addr).await;
            let enough = Arc::new(Notify::new());
            let acked_this_cycle = Arc::new(Mutex::new(0u64));
            let mut writers = Vec::new();
            for writer in 0..WRITERS as u64 {
                let mut client =
                    IngestClient::with_interceptor(channel.clone(), Bearer::new(&token));
                let (acked, attempted, enough, count) = (
                    acked.clone(),
                    attempted.clone(),
                    enough.clone(),
                    acked_this_cycle.clone(),
                );
                writers.push(tokio::spawn(async move {
                    for round in 0.. {
                        let first = start + (round * WRITERS as u64 + writer) * BATCH as u64;
                        let results = batch(first);
                        let ids: Vec<String> =
                            results.iter().map(|r| r.task_run_uuid.clone()).collect();
                        attempted.lock().unwrap().push(ids.clone());
                        match client
                            .report_task_run_batch(proto::ReportTaskRunsRequest { results })
                            .await
                        {
                            Ok(_) => {
                                acked.lock().unwrap().push(ids);
                                let mut count = count.lock().unwrap();
                                *count += 1;
                                if *count == kill_after {
                                    enough.notify_one();
                                }
                            }
                            Err(status) => {
                                // The server is gone, or refused before the kill: a failure.
                                if *count.lock().unwrap() < kill_after {
                                    panic!("writer failed before the kill: {status}");
                                }
                                return;
                            }
                        }
                    }
                }));
            }
            // Kill after enough acknowledgements; stop at once if a writer failed instead.
            let mut writers = tokio::task::JoinSet::from_iter(writers);
            tokio::select! {
                () = enough.notified() => {}
                Some(done) = writers.join_next() => done.unwrap().unwrap(),
            }
            server.kill();
            while let Some(done) = writers.join_next().await {
                done.unwrap().unwrap();
            }
        });
    }

    // Restart and look at everything.
    let server = ChildServer::start(dir.path());
    let present = runtime.block_on(logged_task_runs(server.grpc_addr, &token, PIPELINE));
    server.kill();

    let acked = acked.lock().unwrap();
    let attempted = attempted.lock().unwrap();
    assert!(
        acked.len() as u64 >= 3 * cycles,
        "seed {seed}: too few acknowledged batches"
    );
    for ids in acked.iter() {
        for id in ids {
            assert!(
                present.contains(id),
                "seed {seed}: acknowledged {id} is missing"
            );
        }
    }
    let sent: HashSet<&String> = attempted.iter().flatten().collect();
    for ids in attempted.iter() {
        let found = ids.iter().filter(|id| present.contains(*id)).count();
        assert!(
            found == 0 || found == ids.len(),
            "seed {seed}: a batch is half-applied ({found} of {})",
            ids.len()
        );
    }
    assert!(
        present.iter().all(|id| sent.contains(id)),
        "seed {seed}: runs nobody sent"
    );

    println!(
        "seed {seed}: {cycles} kills, {} batches acknowledged, {} attempted, {} task runs found",
        acked.len(),
        attempted.len(),
        present.len()
    );
    let (ok, output) = run_cli(&["verify", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(
        ok && output.contains("rollups agree with the raw runs"),
        "seed {seed}: {output}"
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// An import is one transaction: killed at any moment (reading, sorting, writing, committing or
/// repacking), it leaves the store as it was or holding the whole file, never part of it.
#[test]
fn a_killed_import_leaves_the_store_as_it_was_or_with_all_of_it() {
    let cycles: u64 = std::env::var("RUNLEDGER_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    // No outputs: no organization keys made outside the import, so the tables are the same
    // each time the same file is imported.
    for (file, runs, days) in [("first", "3000", "30"), ("second", "40000", "400")] {
        let (ok, output) = run_cli(&[
            "generate",
            "--runs",
            runs,
            "--days",
            days,
            "--no-outputs",
            "--organizations",
            "3",
            "--pipelines",
            "40",
            "-o",
            &path(file),
        ]);
        assert!(ok, "{output}");
    }
    let base = dir.path().join("base");
    std::fs::create_dir(&base).unwrap();
    let (ok, output) = run_cli(&[
        "import",
        "--data-dir",
        base.to_str().unwrap(),
        &path("first"),
    ]);
    assert!(ok, "{output}");
    let before = digest(&base);
    // The whole second file imported, and how long that takes.
    let whole = dir.path().join("whole");
    copy_dir(&base, &whole);
    let started = std::time::Instant::now();
    // Written out a few thousand runs at a time: a kill may come between two write-outs.
    let import = |data: &std::path::Path| {
        [
            "import".to_string(),
            "--chunk-runs".into(),
            "4000".into(),
            "--data-dir".into(),
            data.to_str().unwrap().into(),
            path("second"),
        ]
    };
    let (ok, output) = run_cli(&import(&whole).each_ref().map(String::as_str));
    let took = started.elapsed();
    assert!(ok, "{output}");
    let after = digest(&whole);
    assert_ne!(before, after);
    let (mut kept, mut complete) = (0, 0);
    for cycle in 0..cycles {
        let data = dir.path().join(format!("killed-{cycle}"));
        copy_dir(&base, &data);
        // The moment of the kill, anywhere in the import's run.
        let at = took.mul_f64(
            ((seed ^ cycle).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64,
        );
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_runledger"))
            .args(import(&data))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(at); // not a synchronization: the kill may land anywhere
        let _ = child.kill();
        child.wait().unwrap();
        let now = digest(&data);
        assert!(
            now == before || now == after,
            "seed {seed}, cycle {cycle}: killed after {at:?} of {took:?}, the store holds part of the import"
        );
        if now == before {
            kept += 1;
        } else {
            complete += 1;
        }
        let (ok, output) = run_cli(&["verify", "--data-dir", data.to_str().unwrap()]);
        assert!(
            ok && output.contains("rollups agree with the raw runs"),
            "seed {seed}, cycle {cycle}: {output}"
        );
        assert!(
            !data.join("import.sort").exists() || now == before,
            "seed {seed}, cycle {cycle}: sorted parts left behind after a complete import"
        );
    }
    println!(
        "seed {seed}: {cycles} kills within {took:?}: {kept} left the store as it was, {complete} found it complete"
    );
}
