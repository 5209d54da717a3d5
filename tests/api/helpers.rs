//! Starting servers for tests (in-process on bound listeners, or as a child process that can be
//! killed) and building the messages the tests send.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use runledger::engine::Engine;
use runledger::proto;
use runledger::proto::ingest_client::IngestClient;
use runledger::proto::pipelines_client::PipelinesClient;
use runledger::proto::stats_client::StatsClient;
use runledger::store::{Store, StoreOptions};
use runledger::time::parse_instant;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// A server running in this process on free ports, with its own data dir.
pub struct TestApp {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub dir: tempfile::TempDir,
    stop: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_in(tempfile::tempdir().unwrap()).await
}

pub async fn spawn_app_in(dir: tempfile::TempDir) -> TestApp {
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let engine = Arc::new(Engine::new(store));
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (grpc_addr, http_addr) = (grpc.local_addr().unwrap(), http.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(runledger::server::run(engine, grpc, http, async {
        let _ = stopped.await;
    }));
    TestApp {
        grpc_addr,
        http_addr,
        dir,
        stop,
        server,
    }
}

impl TestApp {
    pub async fn channel(&self) -> Channel {
        grpc_channel(self.grpc_addr).await
    }

    pub async fn ingest(&self) -> IngestClient<Channel> {
        IngestClient::new(self.channel().await)
    }

    pub async fn stats(&self) -> StatsClient<Channel> {
        StatsClient::new(self.channel().await)
    }

    pub async fn pipelines(&self) -> PipelinesClient<Channel> {
        PipelinesClient::new(self.channel().await)
    }

    /// Shuts the server down cleanly and hands back its data dir.
    pub async fn stop(self) -> tempfile::TempDir {
        let _ = self.stop.send(());
        self.server.await.unwrap().unwrap();
        self.dir
    }
}

pub async fn grpc_channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// The `runledger` binary, started as a child process on free ports.
pub struct ChildServer {
    pub child: Child,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
}

impl ChildServer {
    /// Starts `runledger serve` on `data_dir` and waits for the line saying where it listens.
    pub fn start(data_dir: &Path) -> ChildServer {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("server.log"))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_runledger"))
            .args([
                "serve",
                "--grpc-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(stdout).lines();
        let line = lines
            .next()
            .expect("the server prints where it listens")
            .unwrap();
        let addr = |name: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|part| part.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {line}"))
                .parse()
                .unwrap()
        };
        let (grpc_addr, http_addr) = (addr("grpc="), addr("http="));
        ChildServer {
            child,
            grpc_addr,
            http_addr,
        }
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// Runs `runledger ARGS...` to completion; returns (success, stdout).
pub fn run_cli(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_runledger"))
        .args(args)
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// A timestamp from `Y-m-d`, `Y-m-d H:i:s` or RFC 3339.
pub fn ts(text: &str) -> prost_types::Timestamp {
    let text = if text.len() == 10 {
        format!("{text} 00:00:00")
    } else {
        text.to_string()
    };
    let at = parse_instant(&text).unwrap();
    prost_types::Timestamp {
        seconds: at.second(),
        nanos: (at.subsec_micros() * 1_000) as i32,
    }
}

/// A finished task-run result.
pub fn finished(
    task_run: &str,
    pipeline_run: &str,
    pipeline: &str,
    task: &str,
    ok: bool,
    duration_ms: u32,
    executed_at: &str,
) -> proto::TaskRunResult {
    proto::TaskRunResult {
        task_run_uuid: task_run.into(),
        pipeline_run_uuid: pipeline_run.into(),
        pipeline_uuid: pipeline.into(),
        task_uuid: task.into(),
        task_type: proto::TaskType::Query as i32,
        organization_uuid: ORG.into(),
        state: proto::TaskRunState::Finished as i32,
        is_successful: ok,
        duration_ms,
        executed_at: Some(ts(executed_at)),
        output: b"rows=3".to_vec(),
        errors: Vec::new(),
        metric_value: Some(2.5),
        is_initial_task: true,
        is_final_task: false,
    }
}

pub const ORG: &str = "0b4e7a0e-5a2b-4f5c-9d7e-1a2b3c4d5e6f";

pub fn entity(kind: proto::EntityKind, uuid: &str) -> Option<proto::EntityRef> {
    Some(proto::EntityRef {
        kind: kind as i32,
        uuid: uuid.into(),
    })
}
