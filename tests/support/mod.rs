//! Starting servers for tests (in-process on bound listeners, or as a child process that can be
//! killed), authenticating to them, and building the messages the tests send.

#![allow(dead_code)]

pub mod receiver;

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use runledger::auth::Scopes;
use runledger::engine::{Engine, NewClient, TokenLifetimes, TokenRequest};
use runledger::front::ConnectionLimits;
use runledger::model::OrgId;
use runledger::proto;
use runledger::proto::ingest_client::IngestClient;
use runledger::proto::pipelines_client::PipelinesClient;
use runledger::proto::stats_client::StatsClient;
use runledger::store::{Store, StoreOptions};
use runledger::time::parse_instant;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub const ORG: &str = "0b4e7a0e-5a2b-4f5c-9d7e-1a2b3c4d5e6f";

/// A server running in this process on free ports, with its own data dir and a client of
/// organization [`ORG`] holding every scope.
pub struct TestApp {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub engine: Arc<Engine>,
    pub client: NewClient,
    /// An access token of `client` with every scope.
    pub token: String,
    stop: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(tempfile::tempdir().unwrap(), TokenLifetimes::default()).await
}

pub async fn spawn_app_with(dir: tempfile::TempDir, lifetimes: TokenLifetimes) -> TestApp {
    spawn_configured(
        dir,
        |engine| engine.with_token_lifetimes(lifetimes),
        ConnectionLimits::default(),
    )
    .await
}

/// A server whose engine `configure` adjusts, with the given connection limits.
pub async fn spawn_configured(
    dir: tempfile::TempDir,
    configure: impl FnOnce(Engine) -> Engine,
    limits: ConnectionLimits,
) -> TestApp {
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let engine = Arc::new(configure(Engine::new(store).unwrap()));
    let client = engine
        .create_client(Some(OrgId(ORG.parse().unwrap())), Scopes::all())
        .unwrap();
    let token = token_for(&engine, &client, None).await;
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (grpc_addr, http_addr) = (grpc.local_addr().unwrap(), http.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(runledger::server::run_with(
        engine.clone(),
        grpc,
        http,
        limits,
        async {
            let _ = stopped.await;
        },
    ));
    TestApp {
        grpc_addr,
        http_addr,
        dir,
        engine,
        client,
        token,
        stop,
        server,
    }
}

/// An access token for `client`, optionally narrowed to `scope`.
pub async fn token_for(engine: &Engine, client: &NewClient, scope: Option<&str>) -> String {
    engine
        .issue_token(TokenRequest {
            grant_type: Some("client_credentials".into()),
            client_id: Some(client.client_id.clone()),
            client_secret: Some(client.client_secret.clone()),
            scope: scope.map(str::to_string),
            refresh_token: None,
            peer: None,
        })
        .await
        .unwrap()
        .access_token
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Bearer {
    pub fn new(token: &str) -> Bearer {
        Bearer(format!("Bearer {token}").parse().unwrap())
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

pub type Authed = InterceptedService<Channel, Bearer>;

impl TestApp {
    pub async fn channel(&self) -> Channel {
        grpc_channel(self.grpc_addr).await
    }

    pub async fn ingest(&self) -> IngestClient<Authed> {
        self.ingest_as(&self.token).await
    }

    pub async fn ingest_as(&self, token: &str) -> IngestClient<Authed> {
        IngestClient::with_interceptor(self.channel().await, Bearer::new(token))
    }

    pub async fn stats(&self) -> StatsClient<Authed> {
        self.stats_as(&self.token).await
    }

    pub async fn stats_as(&self, token: &str) -> StatsClient<Authed> {
        StatsClient::with_interceptor(self.channel().await, Bearer::new(token))
    }

    pub async fn pipelines(&self) -> PipelinesClient<Authed> {
        PipelinesClient::with_interceptor(self.channel().await, Bearer::new(&self.token))
    }

    /// `http://ADDR` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http_addr)
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
    /// The credentials printed on the data dir's first start.
    pub first_client: Option<serde_json::Value>,
}

impl ChildServer {
    /// Starts `runledger serve` on `data_dir` and waits for the line saying where it listens.
    pub fn start(data_dir: &Path) -> ChildServer {
        ChildServer::start_with(data_dir, &[], None)
    }

    /// Starts `runledger serve ARGS...`, with the data file unable to grow past `max_file_kib`
    /// when given (a full disk, as the server sees it: writes fail with EFBIG).
    pub fn start_with(data_dir: &Path, args: &[&str], max_file_kib: Option<u64>) -> ChildServer {
        ChildServer::start_full(data_dir, args, max_file_kib, &[])
    }

    /// [`ChildServer::start_with`], with environment variables set for the server.
    pub fn start_full(
        data_dir: &Path,
        args: &[&str],
        max_file_kib: Option<u64>,
        env: &[(&str, &str)],
    ) -> ChildServer {
        // Beside the data dir, which the server creates itself (owner-only).
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.with_extension("server.log"))
            .unwrap();
        let mut command = match max_file_kib {
            None => Command::new(env!("CARGO_BIN_EXE_runledger")),
            Some(kib) => {
                let mut bash = Command::new("bash");
                bash.args([
                    "-c",
                    &format!("trap '' XFSZ; ulimit -f {kib}; exec \"$0\" \"$@\""),
                    env!("CARGO_BIN_EXE_runledger"),
                ]);
                bash
            }
        };
        let mut child = serve_args(&mut command, data_dir, args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut first_client = None;
        let mut serving = None;
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if line.starts_with('{') {
                first_client = Some(serde_json::from_str(&line).unwrap());
            }
            if line.starts_with("runledger serving") {
                serving = Some(line);
                break;
            }
        }
        let line = serving.expect("the server prints where it listens");
        let addr = |name: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|part| part.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {line}"))
                .parse()
                .unwrap()
        };
        ChildServer {
            grpc_addr: addr("grpc="),
            http_addr: addr("http="),
            child,
            first_client,
        }
    }

    /// SIGTERM, and waits for the server to drain and exit; true when it exited cleanly.
    pub fn stop(mut self) -> bool {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        self.child.wait().unwrap().success()
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// `serve` on free loopback ports and `data_dir`, then `args`.
fn serve_args<'a>(command: &'a mut Command, data_dir: &Path, args: &[&str]) -> &'a mut Command {
    command
        .args(["serve", "--grpc-addr", "127.0.0.1:0"])
        .args(["--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(args)
}

/// Runs `runledger serve ARGS...` on `data_dir` (without `RUNLEDGER_MASTER_KEY`), which must
/// refuse to start: its standard error. Panics with `started` if it is still running after 60 s.
pub fn refused_serve(data_dir: &Path, args: &[&str], started: &str) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_runledger"));
    let mut serve = serve_args(&mut command, data_dir, args)
        .env_remove("RUNLEDGER_MASTER_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while serve.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = serve.kill();
            panic!("{started}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let output = serve.wait_with_output().unwrap();
    assert!(!output.status.success());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A test that fails midway leaves no server behind.
impl Drop for ChildServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A client-credentials token request for `credentials` (as `client create` prints them).
pub fn token_request(credentials: &serde_json::Value) -> proto::IssueTokenRequest {
    proto::IssueTokenRequest {
        grant_type: "client_credentials".into(),
        client_id: credentials["client_id"].as_str().unwrap().into(),
        client_secret: credentials["client_secret"].as_str().unwrap().into(),
        scope: String::new(),
        refresh_token: String::new(),
    }
}

/// An access token for `credentials` over REST (`scope` narrows it).
pub async fn rest_token(
    http: &reqwest::Client,
    server: SocketAddr,
    credentials: &serde_json::Value,
    scope: Option<&str>,
) -> String {
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("client_id", credentials["client_id"].as_str().unwrap()),
        (
            "client_secret",
            credentials["client_secret"].as_str().unwrap(),
        ),
    ];
    form.extend(scope.map(|scope| ("scope", scope)));
    let response = http
        .post(format!("http://{server}/v1/oauth/token"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let body: serde_json::Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

/// An access token from a server's gRPC Auth service.
pub async fn grpc_token(addr: SocketAddr, credentials: &serde_json::Value) -> String {
    let mut auth = proto::auth_client::AuthClient::new(grpc_channel(addr).await);
    auth.issue_token(token_request(credentials))
        .await
        .unwrap()
        .into_inner()
        .access_token
}

/// The newest `limit` log entries (0: all) a server holds for `pipeline`, over all time.
pub async fn logged_entries(
    addr: SocketAddr,
    token: &str,
    pipeline: &str,
    limit: u32,
) -> Vec<proto::LogEntry> {
    let mut stats = StatsClient::with_interceptor(grpc_channel(addr).await, Bearer::new(token));
    let mut stream = stats
        .stream_logs(proto::StreamLogsRequest {
            pipeline_uuid: pipeline.into(),
            from: Some(ts("2000-01-01 00:00:00")),
            to: Some(ts("2100-01-01 00:00:00")),
            limit,
            cursor: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut entries = Vec::new();
    while let Some(entry) = stream.message().await.unwrap() {
        entries.push(entry);
    }
    entries
}

/// The task-run UUIDs a server's logs hold for `pipeline`, over all time.
pub async fn logged_task_runs(
    addr: SocketAddr,
    token: &str,
    pipeline: &str,
) -> std::collections::HashSet<String> {
    logged_entries(addr, token, pipeline, 0)
        .await
        .into_iter()
        .map(|entry| entry.task_run_uuid)
        .collect()
}

/// A runtime for tests that drive a child server.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The digest of every table of a stopped server's data dir (`runledger info --digest`).
pub fn digest(data_dir: &Path) -> String {
    let (ok, output) = run_cli(&["info", "--data-dir", data_dir.to_str().unwrap(), "--digest"]);
    assert!(ok, "{output}");
    output
        .lines()
        .find_map(|line| line.strip_prefix("digest "))
        .expect(&output)
        .to_string()
}

/// Runs `runledger ARGS...` to completion; returns (success, stdout and stderr).
pub fn run_cli(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_runledger"))
        .args(args)
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// The JSON object a command printed on a line of its own (credentials, a key), among
/// whatever else it wrote.
pub fn printed_json(output: &str) -> serde_json::Value {
    output
        .lines()
        .find_map(|line| serde_json::from_str(line).ok())
        .expect(output)
}

/// The JSON body of a GET of `url` with a bearer `token`, whatever its status.
pub async fn get_json(http: &reqwest::Client, url: String, token: &str) -> serde_json::Value {
    http.get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A server's `/metrics` text (from loopback, which needs no token).
pub async fn metrics_text(http: &reqwest::Client, http_addr: std::net::SocketAddr) -> String {
    http.get(format!("http://{http_addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
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

/// A finished task-run result of organization [`ORG`].
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

pub fn entity(kind: proto::EntityKind, uuid: &str) -> Option<proto::EntityRef> {
    Some(proto::EntityRef {
        kind: kind as i32,
        uuid: uuid.into(),
    })
}

/// A Python that can import `module`: `RUNLEDGER_PYTHON`, else the project's venv
/// (`target/venv`, where `.ci/run` installs the ecosystem's clients). `None` (with the reason
/// printed) outside CI; in CI a missing one fails the test.
pub fn python_with(module: &str) -> Option<std::path::PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/venv/bin/python");
    let candidates = [
        std::env::var_os("RUNLEDGER_PYTHON").map(std::path::PathBuf::from),
        Some(venv),
    ];
    for python in candidates.into_iter().flatten() {
        let imports = Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|output| output.status.success());
        if imports {
            return Some(python);
        }
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "no Python with {module}: .ci/run installs it into target/venv"
    );
    eprintln!("skipped: no Python with {module} (set RUNLEDGER_PYTHON or run .ci/run once)");
    None
}
