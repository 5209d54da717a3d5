//! `serve --config FILE`: a TOML file of the flags' settings; flags beat the environment, which
//! beats the file, which beats the defaults. Observed through `--metrics-token`, which decides
//! what `/metrics` asks for.

use crate::support::{ChildServer, run_cli, runtime};

fn metrics_status(server: &ChildServer, token: &str) -> u16 {
    runtime().block_on(async {
        reqwest::Client::new()
            .get(format!("http://{}/metrics", server.http_addr))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
}

#[test]
fn flags_beat_the_environment_which_beats_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("runledger.toml");
    std::fs::write(
        &config,
        "# a serve config\nmetrics-token = \"from-file\"\nmax-pending-runs = 50\nread-only = false\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let data = dir.path().join("data");

    let server = ChildServer::start_with(&data, &["--config", config], None);
    assert_eq!(metrics_status(&server, "from-file"), 200);
    assert_eq!(metrics_status(&server, "from-env"), 401);
    assert!(server.stop());

    let env = [("RUNLEDGER_METRICS_TOKEN", "from-env")];
    let server = ChildServer::start_full(&data, &["--config", config], None, &env);
    assert_eq!(metrics_status(&server, "from-env"), 200);
    assert_eq!(metrics_status(&server, "from-file"), 401);
    assert!(server.stop());

    let args = ["--config", config, "--metrics-token", "from-flag"];
    let server = ChildServer::start_full(&data, &args, None, &env);
    assert_eq!(metrics_status(&server, "from-flag"), 200);
    assert_eq!(metrics_status(&server, "from-env"), 401);
    assert!(server.stop());

    // The config file's path may come from the environment too.
    let server = ChildServer::start_full(&data, &[], None, &[("RUNLEDGER_CONFIG", config)]);
    assert_eq!(metrics_status(&server, "from-file"), 200);
    assert!(server.stop());
}

#[test]
fn a_config_file_with_an_unknown_key_or_a_wrong_type_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    let data = dir.path().join("data");
    for (text, expected) in [
        (
            "grpc-adress = \"127.0.0.1:1\"\n",
            "`grpc-adress` is not a setting of serve",
        ),
        (
            "max-pending-runs = true\n",
            "`max-pending-runs` cannot be boolean",
        ),
        ("read-only = \"yes\"\n", "`read-only` cannot be string"),
        ("max-pending-runs = \"many\"\n", "many"),
        ("this is not toml\n", "is not TOML"),
    ] {
        std::fs::write(&config, text).unwrap();
        let (ok, out) = run_cli(&[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ]);
        assert!(!ok, "{text}");
        assert!(out.contains(expected), "{text}: {out}");
    }
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ChildServer::start_with(&data, &["--log-format", "json"], None);
    assert!(server.stop());
    let log = std::fs::read_to_string(data.with_extension("server.log")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "runledger is serving" && l["level"] == "INFO")
    );
    assert!(
        lines
            .iter()
            .all(|l| l["timestamp"].is_string() && l["target"].is_string())
    );
}
