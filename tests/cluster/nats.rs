//! NATS servers and runledger nodes for the cluster tests: real `nats-server` processes (one,
//! or a cluster of three with JetStream) on free loopback ports with temp stores, set up with
//! the README's least-privilege users (nodes and commands connect as `node`; `cluster init`,
//! `adopt`, `trim`, `skip` and message deletions as `admin`), and `runledger serve --nats`
//! children.

#![allow(dead_code)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::ChildServer;

/// The `nats-server` binary, or `None` (with the reason printed) outside CI; in CI a missing
/// server fails the test.
pub fn nats_server() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("RUNLEDGER_NATS_SERVER").map(PathBuf::from),
        Some(PathBuf::from("/usr/sbin/nats-server")),
        Some(PathBuf::from("/usr/bin/nats-server")),
    ];
    if let Some(found) = candidates.into_iter().flatten().find(|p| p.is_file()) {
        return Some(found);
    }
    if let Ok(output) = Command::new("which").arg("nats-server").output()
        && output.status.success()
    {
        return Some(PathBuf::from(
            String::from_utf8_lossy(&output.stdout).trim().to_string(),
        ));
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "nats-server is missing: .ci/run installs Debian's nats-server package"
    );
    eprintln!("skipped: nats-server is not installed (apt-get install nats-server)");
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One NATS server process.
pub struct Nats {
    pub name: String,
    pub port: u16,
    /// The monitoring endpoint's port (`/varz`).
    pub monitor: u16,
    config: PathBuf,
    binary: PathBuf,
    child: Option<Child>,
}

/// The users of the README's NATS setup: nodes and their commands, and the operator.
pub const NODE_LOGIN: &str = "node:node-secret";
pub const ADMIN_LOGIN: &str = "admin:admin-secret";

/// The authorization block of the README's NATS setup (see "NATS users and permissions").
const AUTHORIZATION: &str = r#"authorization {
  users = [
    { user: admin, password: admin-secret }
    { user: node, password: node-secret, permissions: {
        publish: { allow: [
          "runledger.data", "runledger.credentials",
          "$JS.API.INFO", "$JS.API.STREAM.INFO.RUNLEDGER", "$JS.API.STREAM.MSG.GET.RUNLEDGER",
          "$JS.API.CONSUMER.CREATE.RUNLEDGER", "$JS.API.CONSUMER.CREATE.RUNLEDGER.>",
          "$JS.API.CONSUMER.MSG.NEXT.RUNLEDGER.>", "$JS.API.CONSUMER.INFO.RUNLEDGER.>",
          "$JS.API.CONSUMER.DELETE.RUNLEDGER.>",
          "runledger.lease.alerts", "$JS.API.STREAM.INFO.RUNLEDGER_LEASE",
          "$JS.API.STREAM.MSG.DELETE.RUNLEDGER_LEASE"
        ] }
        subscribe: { allow: ["_INBOX.>"] }
    } }
  ]
}
"#;

impl Nats {
    /// The URL nodes and their commands use (the `node` user).
    pub fn url(&self) -> String {
        format!("nats://{NODE_LOGIN}@127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.config.with_extension("log"))
            .unwrap();
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.config.with_extension("log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                panic!(
                    "{} did not start within a minute; its log ends:\n{}",
                    self.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `count` NATS servers with JetStream, clustered when more than one, stores under `dir`.
pub fn start_nats(binary: &Path, dir: &Path, count: usize) -> Vec<Nats> {
    let ports: Vec<(u16, u16, u16)> = (0..count)
        .map(|_| (free_port(), free_port(), free_port()))
        .collect();
    let routes: Vec<String> = ports
        .iter()
        .map(|(_, route, _)| format!("nats-route://127.0.0.1:{route}"))
        .collect();
    let mut servers = Vec::new();
    for (index, (port, route, monitor)) in ports.iter().enumerate() {
        let name = format!("n{}", index + 1);
        let store = dir.join(format!("{name}-js"));
        let cluster = if count > 1 {
            format!(
                "cluster {{\n  name: runledger\n  listen: 127.0.0.1:{route}\n  no_advertise: true\n  routes: [{}]\n}}\n",
                routes.join(", ")
            )
        } else {
            String::new()
        };
        let config = dir.join(format!("{name}.conf"));
        let mut file = std::fs::File::create(&config).unwrap();
        write!(
            file,
            "server_name: {name}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor}\nmax_payload: 8MB\njetstream {{\n  store_dir: \"{}\"\n}}\n{cluster}{AUTHORIZATION}",
            store.display()
        )
        .unwrap();
        let mut nats = Nats {
            name,
            port: *port,
            monitor: *monitor,
            config,
            binary: binary.to_path_buf(),
            child: None,
        };
        nats.spawn();
        servers.push(nats);
    }
    servers
}

pub fn urls(servers: &[Nats]) -> String {
    servers.iter().map(Nats::url).collect::<Vec<_>>().join(",")
}

/// The same URLs as the operator (the `admin` user).
pub fn admin(urls: &str) -> String {
    urls.replace(NODE_LOGIN, ADMIN_LOGIN)
}

/// A plain NATS client with the login of the first of `urls`: what anyone holding that
/// user's password can do.
pub async fn raw_client(urls: &str) -> async_nats::Client {
    let first = urls.split(',').next().unwrap();
    let (scheme_login, address) = first.rsplit_once('@').unwrap();
    let (user, password) = scheme_login
        .trim_start_matches("nats://")
        .split_once(':')
        .unwrap();
    async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .connect(format!("nats://{address}"))
        .await
        .unwrap()
}

/// A master key file shared by every node.
pub fn master_key(dir: &Path) -> PathBuf {
    let path = dir.join("master.key");
    let key: [u8; 32] = std::array::from_fn(|i| (i * 7 + 3) as u8);
    use base64::Engine as _;
    std::fs::write(&path, base64::engine::general_purpose::STANDARD.encode(key)).unwrap();
    path
}

/// `runledger ARGS` to completion: (success, stdout, stderr).
pub fn cli(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_runledger"))
        .args(args)
        .env_remove("RUNLEDGER_MASTER_KEY")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `runledger cluster init`: the first client's credentials.
pub fn init(urls: &str, key: &Path) -> serde_json::Value {
    let (ok, out, err) = cli(&[
        "cluster",
        "init",
        "--nats",
        &admin(urls),
        "--master-key-file",
        key.to_str().unwrap(),
    ]);
    assert!(ok, "cluster init failed: {err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("no credentials in {out:?}"))
}

/// A runledger node (or gateway) of the cluster.
pub fn node(data_dir: &Path, urls: &str, key: &Path, gateway: bool) -> ChildServer {
    let mut args = vec!["--nats", urls, "--master-key-file", key.to_str().unwrap()];
    if gateway {
        args.extend(["--role", "gateway"]);
    }
    ChildServer::start_with(data_dir, &args, None)
}

/// The applied sequence a node says on `/healthz`.
pub async fn applied(http: &reqwest::Client, node: SocketAddr) -> u64 {
    let response = http
        .get(format!("http://{node}/healthz"))
        .send()
        .await
        .unwrap();
    response.headers()["x-runledger-applied-seq"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Waits until `node` has applied `seq` (two minutes at most: a debug build catching up while
/// other tests load both cores).
pub async fn await_applied(http: &reqwest::Client, node: SocketAddr, seq: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let response = http
            .get(format!("http://{node}/healthz"))
            .header("x-runledger-min-seq", seq.to_string())
            .send()
            .await;
        if response.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{node} did not apply sequence {seq} within two minutes"
        );
    }
}

/// One NATS server with the stream made: the server, its URL, the master key file and the
/// first client's credentials.
pub struct OneServer {
    pub nats: Vec<Nats>,
    pub urls: String,
    pub key: PathBuf,
    pub client: serde_json::Value,
}

pub fn one_server(binary: &Path, dir: &Path) -> OneServer {
    let nats = start_nats(binary, dir, 1);
    let urls = urls(&nats);
    let key = master_key(dir);
    let client = init(&urls, &key);
    OneServer {
        nats,
        urls,
        key,
        client,
    }
}

/// `runledger backup` of a node's data dir into `destination`: the stream sequence it holds.
pub fn backup(data_dir: &Path, destination: &Path) -> u64 {
    let (ok, out, err) = cli(&[
        "backup",
        "--data-dir",
        data_dir.to_str().unwrap(),
        destination.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    out.trim()
        .strip_prefix("backed up ")
        .and_then(|text| text.rsplit_once("holds the cluster's stream through sequence "))
        .and_then(|(_, seq)| seq.parse().ok())
        .unwrap_or_else(|| panic!("no stream sequence in {out:?}"))
}

/// A data dir made of a backup's database file.
pub fn restore(backup: &Path, data_dir: &Path) {
    std::fs::create_dir_all(data_dir).unwrap();
    std::fs::copy(
        backup.join(runledger::store::DATABASE_FILE),
        data_dir.join(runledger::store::DATABASE_FILE),
    )
    .unwrap();
}

/// Reports `count` finished runs of one task through `node` (the k-th executed on day 1 + k % 28
/// of June 2025, with an output naming the task and k): the sequence the answer names (0 from
/// a single node) and the answer.
pub async fn report(
    node: std::net::SocketAddr,
    token: &str,
    org: &str,
    pipeline: &str,
    task: &str,
    count: u32,
) -> (u64, runledger::proto::ReportTaskRunsResponse) {
    use crate::support::{Bearer, finished, grpc_channel};
    use runledger::proto;
    let mut ingest = proto::ingest_client::IngestClient::with_interceptor(
        grpc_channel(node).await,
        Bearer::new(token),
    );
    let results = (0..count)
        .map(|i| {
            let mut run = finished(
                &uuid::Uuid::new_v4().to_string(),
                &uuid::Uuid::new_v4().to_string(),
                pipeline,
                task,
                i % 4 != 0,
                1_000 + i,
                &format!("2025-06-{:02} 12:00:00", 1 + i % 28),
            );
            run.organization_uuid = org.into();
            run.output = format!("output {task} {i}").into_bytes();
            run
        })
        .collect();
    let response = ingest
        .report_task_run_batch(proto::ReportTaskRunsRequest { results })
        .await
        .unwrap();
    let seq = response
        .metadata()
        .get("x-runledger-seq")
        .map_or(0, |seq| seq.to_str().unwrap().parse().unwrap());
    (seq, response.into_inner())
}

/// One client per organization (`client create --org` with `target`, `--data-dir DIR` or
/// `--nats URLS --master-key-file F`): their credentials, in the order of `orgs`.
pub fn clients(orgs: &[runledger::model::OrgId], target: &[&str]) -> Vec<serde_json::Value> {
    orgs.iter()
        .map(|org| {
            let org = org.to_string();
            let mut args = vec!["client", "create", "--org", &org];
            args.extend_from_slice(target);
            let (ok, out, err) = cli(&args);
            assert!(ok, "{err}");
            serde_json::from_str(out.trim()).unwrap()
        })
        .collect()
}

/// A REST answer: status and body.
pub async fn answer(
    http: &reqwest::Client,
    node: SocketAddr,
    token: &str,
    path: &str,
) -> (u16, String) {
    let response = http
        .get(format!("http://{node}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}
