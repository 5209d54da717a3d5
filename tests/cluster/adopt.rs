//! A single node's data dir made the start of a cluster (`runledger cluster adopt`): nodes
//! started from copies of it answer with its history, keep its organizations' output keys, its
//! clients and its tokens, and apply what is written afterwards alike; a node that is not a
//! copy of it refuses to start.

use std::path::Path;

use crate::nats::{self, cli, node};
use crate::support::{ChildServer, refused_serve, rest_token, runtime};

const PIPELINE: &str = "7a000000-0000-4000-8000-000000000001";
const OLD_TASK: &str = "7a000000-0000-4000-8000-000000000002";
const NEW_TASK: &str = "7a000000-0000-4000-8000-000000000003";

/// `runledger serve` as a cluster node that must refuse to start: its standard error.
fn refused_start(data_dir: &Path, urls: &str, key: &Path) -> String {
    let args = ["--nats", urls, "--master-key-file", key.to_str().unwrap()];
    refused_serve(
        data_dir,
        &args,
        "a node that is not a copy of the adopted store started",
    )
}

#[test]
fn a_single_nodes_store_becomes_a_cluster_with_its_history_keys_clients_and_tokens() {
    let Some(binary) = nats::nats_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let single = dir.path().join("single");
    let http = reqwest::Client::new();

    // A single node with history: its first client's runs, with outputs, and a token.
    let server = ChildServer::start(&single);
    let client = server.first_client.clone().expect("a first client");
    let org = client["organization_uuid"].as_str().unwrap().to_string();
    let key = client["output_key"].as_str().unwrap().to_string();
    let (old_token, stats_before) = runtime().block_on(async {
        let token = rest_token(&http, server.http_addr, &client, None).await;
        nats::report(server.grpc_addr, &token, &org, PIPELINE, OLD_TASK, 30).await;
        let stats = stats_of(&http, server.http_addr, &token, OLD_TASK, None).await;
        (token, stats)
    });
    assert_eq!(stats_before["num_of_successes"], 22);
    assert!(server.stop());

    // Adopted into a new cluster, twice (a rerun finishes an interrupted adoption, changing
    // nothing): the data dir's own master key file is the default.
    let nats = nats::start_nats(&binary, dir.path(), 1);
    let urls = nats::urls(&nats);
    let adopt = || {
        let (ok, out, err) = cli(&[
            "cluster",
            "adopt",
            "--nats",
            &nats::admin(&urls),
            "--data-dir",
            single.to_str().unwrap(),
        ]);
        assert!(ok, "cluster adopt failed: {err}");
        serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()
    };
    let first = adopt();
    let again = adopt();
    assert_eq!(first["baseline"], again["baseline"]);
    assert_eq!(
        first["credentials_published"], 2,
        "one organization, one client"
    );
    assert_eq!(
        again["last_seq"], first["last_seq"],
        "the rerun stored nothing twice"
    );
    let master = single.join("master.key");
    let (ok, info, err) = cli(&["info", "--data-dir", single.to_str().unwrap()]);
    assert!(ok, "{err}");
    let adopted = first["baseline"].as_str().unwrap();
    assert!(
        info.contains(&format!(
            "through sequence 0; it continues the single-node store adopted as {adopted}"
        )),
        "{info}"
    );
    let (ok, status, err) = cli(&["cluster", "status", "--nats", &urls]);
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(status.trim()).unwrap();
    assert_eq!(status["adopted"], first["baseline"]);

    // Nodes start from copies of the adopted data dir; an empty one and a single node's store
    // that was not adopted are refused, saying why.
    let a_dir = dir.path().join("a");
    let b_dir = dir.path().join("b");
    for (name, node_dir) in [("a-backup", &a_dir), ("b-backup", &b_dir)] {
        let backup = dir.path().join(name);
        let (ok, _, err) = cli(&[
            "backup",
            "--data-dir",
            single.to_str().unwrap(),
            backup.to_str().unwrap(),
        ]);
        assert!(ok, "{err}");
        nats::restore(&backup, node_dir);
    }
    let empty = refused_start(&dir.path().join("empty"), &urls, &master);
    assert!(empty.contains("not a copy of it"), "{empty}");
    let a = node(&a_dir, &urls, &master, false);
    let b = node(&b_dir, &urls, &master, false);
    let gateway = node(&dir.path().join("gateway"), &urls, &master, true);

    runtime().block_on(async {
        // The single node's token and history, on both nodes.
        for addr in [a.http_addr, b.http_addr] {
            let stats = stats_of(&http, addr, &old_token, OLD_TASK, None).await;
            assert_eq!(stats, stats_before, "{addr}");
        }
        // Its client signs in anywhere, the gateway included (it learned the client from the
        // stream), and writes through it.
        let token = rest_token(&http, gateway.http_addr, &client, None).await;
        let (seq, _) = nats::report(gateway.grpc_addr, &token, &org, PIPELINE, NEW_TASK, 10).await;
        assert!(seq > 0);
        let on_a = stats_of(&http, a.http_addr, &token, NEW_TASK, Some(seq)).await;
        let on_b = stats_of(&http, b.http_addr, &token, NEW_TASK, Some(seq)).await;
        assert_eq!(on_a, on_b);
        assert_eq!(on_a["num_of_successes"], 7);
        // Old and new outputs open with the organization's key from the single node.
        let logs_path =
            format!("/v1/stats/pipelines/{PIPELINE}/logs/2025-06-01/2025-06-30?limit=100");
        let logs = get(&http, b.http_addr, &token, &logs_path, None).await;
        let entries = logs.as_array().unwrap();
        assert_eq!(entries.len(), 40);
        for entry in entries {
            let task = entry["task_uuid"].as_str().unwrap();
            let plain = runledger::crypto::decrypt_base64(&key, entry["output"].as_str().unwrap())
                .unwrap_or_else(|e| panic!("an output of {task} does not open: {e}"));
            assert!(
                String::from_utf8(plain)
                    .unwrap()
                    .starts_with(&format!("output {task} "))
            );
        }
    });

    // A second single node's store (under the same master key) cannot join this stream, nor
    // can it be adopted into it.
    let other = dir.path().join("other");
    let same_master = std::fs::read_to_string(&master).unwrap();
    let env = [("RUNLEDGER_MASTER_KEY", same_master.trim())];
    assert!(ChildServer::start_full(&other, &[], None, &env).stop());
    let refused = refused_start(&other, &urls, &master);
    assert!(refused.contains("not a copy of it"), "{refused}");
    let (ok, _, err) = cli(&[
        "cluster",
        "adopt",
        "--nats",
        &nats::admin(&urls),
        "--data-dir",
        other.to_str().unwrap(),
        "--master-key-file",
        master.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("exists already"), "{err}");
    drop(gateway);
}

/// A task's range stats over June 2025 on `addr`, after sequence `min_seq` when given.
async fn stats_of(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    token: &str,
    task: &str,
    min_seq: Option<u64>,
) -> serde_json::Value {
    let path = format!("/v1/stats/tasks/{task}/stats/2025-06-01/2025-06-30");
    get(http, addr, token, &path, min_seq).await
}

/// A REST answer of `addr` (200 expected), after sequence `min_seq` when given.
async fn get(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    token: &str,
    path: &str,
    min_seq: Option<u64>,
) -> serde_json::Value {
    let mut request = http.get(format!("http://{addr}{path}")).bearer_auth(token);
    if let Some(seq) = min_seq {
        request = request.header("x-runledger-min-seq", seq.to_string());
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}
