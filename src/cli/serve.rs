//! `runledger serve`: opens the data dir and serves gRPC and REST until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use super::DataDir;
use crate::front::ConnectionLimits;

fn millis(duration: Duration) -> u64 {
    duration.as_millis() as u64
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Read settings from this TOML file (keys are these flags' names); flags and environment
    /// variables beat it.
    #[arg(long, env = "RUNLEDGER_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub data_dir: DataDir,
    /// Where the gRPC API listens.
    #[arg(long, env = "RUNLEDGER_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// Where the REST gateway listens.
    #[arg(long, env = "RUNLEDGER_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// Connections each front (gRPC, REST) holds open; past it new connections are closed.
    #[arg(long, env = "RUNLEDGER_MAX_CONNECTIONS", default_value_t = ConnectionLimits::default().max_connections)]
    pub max_connections: usize,
    /// Connections each front holds open from one IP address; past it that address's new
    /// connections are closed.
    #[arg(long, env = "RUNLEDGER_MAX_CONNECTIONS_PER_PEER", default_value_t = ConnectionLimits::default().max_per_peer)]
    pub max_connections_per_peer: usize,
    /// A new connection must send its first request's headers within this time.
    #[arg(long, env = "RUNLEDGER_HANDSHAKE_TIMEOUT_MS", default_value_t = millis(ConnectionLimits::default().handshake_timeout))]
    pub handshake_timeout_ms: u64,
    /// A connection with no request in flight is closed after this time.
    #[arg(long, env = "RUNLEDGER_IDLE_TIMEOUT_MS", default_value_t = millis(ConnectionLimits::default().idle_timeout))]
    pub idle_timeout_ms: u64,
    /// An HTTP/1 request's headers must arrive within this time.
    #[arg(long, env = "RUNLEDGER_HEADER_READ_TIMEOUT_MS", default_value_t = millis(ConnectionLimits::default().header_read_timeout))]
    pub header_read_timeout_ms: u64,
    /// How often HTTP/2 connections are pinged; a peer that does not answer within
    /// --keepalive-timeout-ms is disconnected.
    #[arg(long, env = "RUNLEDGER_KEEPALIVE_INTERVAL_MS", default_value_t = millis(ConnectionLimits::default().keepalive_interval))]
    pub keepalive_interval_ms: u64,
    #[arg(long, env = "RUNLEDGER_KEEPALIVE_TIMEOUT_MS", default_value_t = millis(ConnectionLimits::default().keepalive_timeout))]
    pub keepalive_timeout_ms: u64,
    /// Once a request's headers are in, its body (a gRPC call's first message, and each later
    /// one once begun) must arrive within this time plus a second per 64 KiB, or the request
    /// fails.
    #[arg(long, env = "RUNLEDGER_BODY_READ_TIMEOUT_MS", default_value_t = millis(ConnectionLimits::default().body_read_timeout))]
    pub body_read_timeout_ms: u64,
    /// Task runs an organization may have waiting for an executor; past it, starting a
    /// pipeline gets 429 / RESOURCE_EXHAUSTED.
    #[arg(long, env = "RUNLEDGER_MAX_PENDING_RUNS", default_value_t = crate::engine::DEFAULT_MAX_PENDING_RUNS)]
    pub max_pending_runs: usize,
    /// Report batches (and other writes) that may wait for the disk; past it, and past
    /// --write-queue-mib, writers wait up to 2 s and then get RESOURCE_EXHAUSTED / 429.
    #[arg(long, env = "RUNLEDGER_WRITE_QUEUE", default_value_t = crate::store::StoreOptions::default().write_queue)]
    pub write_queue: usize,
    /// How long a write waits for room in a full queue before it is refused.
    #[arg(long, env = "RUNLEDGER_QUEUE_WAIT_MS", default_value_t = crate::store::StoreOptions::default().queue_wait.as_millis() as u64)]
    pub queue_wait_ms: u64,
    /// MiB the waiting writes may hold between them.
    #[arg(long, env = "RUNLEDGER_WRITE_QUEUE_MIB", default_value_t = crate::store::StoreOptions::default().write_queue_bytes >> 20)]
    pub write_queue_mib: usize,
    /// MiB of page cache: the pages that ingest touches (the newest UUID-index period, each
    /// pipeline's newest run-log leaf, its rollups) and the hot ones queries read. Filled as
    /// pages are read, so memory grows to it only with use.
    #[arg(long, env = "RUNLEDGER_CACHE_MIB", default_value_t = crate::store::StoreOptions::default().cache_bytes >> 20)]
    pub cache_mib: usize,
    #[command(flatten)]
    pub writer_threads: super::WriterThreads,
    /// Serve reads only (a restored backup, a read-only volume); writes get UNAVAILABLE / 503.
    #[arg(long, env = "RUNLEDGER_READ_ONLY")]
    pub read_only: bool,
    /// Keep task runs, pipeline runs and logs of the last N whole days and today (UTC); older
    /// ones are pruned in the background (at start, then hourly). Day and coarser rollups are
    /// kept for ever; reports older than the cut are refused.
    #[arg(long, env = "RUNLEDGER_KEEP_RUNS_DAYS", value_parser = clap::value_parser!(u32).range(1..=3_650_000))]
    pub keep_runs_days: Option<u32>,
    /// Address ranges webhooks may go to although they are internal (loopback, private,
    /// link-local addresses are refused otherwise), comma-separated CIDRs: `10.0.0.0/8,::1`.
    #[arg(long, env = "RUNLEDGER_WEBHOOK_ALLOW_NET", value_parser = clap::value_parser!(crate::alerts::AllowedNets))]
    pub webhook_allow_net: Option<crate::alerts::AllowedNets>,

    /// Redirects an alert webhook may answer with that are followed (each target checked like
    /// the URL itself); 0, the default, follows none and ends the delivery as refused.
    #[arg(long, env = "RUNLEDGER_WEBHOOK_REDIRECTS", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=5))]
    pub webhook_redirects: u8,
    /// Alert deliveries under way at once to one destination (host and port).
    #[arg(long, env = "RUNLEDGER_WEBHOOK_CONCURRENCY", default_value_t = crate::engine::DeliveryOptions::default().per_destination as u16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub webhook_concurrency: u16,
    /// Cluster mode: NATS server URLs, comma-separated. Writes go through the cluster's
    /// stream (`runledger cluster init` creates it); this node applies it into --data-dir.
    #[arg(long, env = "RUNLEDGER_NATS")]
    pub nats: Option<String>,
    /// Cluster mode: `node` applies the stream and serves reads; `gateway` accepts writes only
    /// and needs no data dir.
    #[arg(
        long,
        env = "RUNLEDGER_ROLE",
        value_enum,
        default_value = "node",
        requires = "nats"
    )]
    pub role: crate::cluster::Role,
    /// Cluster mode: a file holding the master key every node shares (or set
    /// RUNLEDGER_MASTER_KEY).
    #[arg(long, env = "RUNLEDGER_MASTER_KEY_FILE", requires = "nats")]
    pub master_key_file: Option<std::path::PathBuf>,
    /// Cluster mode: how long a request with x-runledger-min-seq waits for this node to apply
    /// that sequence before 503 / UNAVAILABLE.
    #[arg(long, env = "RUNLEDGER_MIN_SEQ_WAIT_MS", default_value_t = millis(crate::cluster::DEFAULT_MIN_SEQ_WAIT))]
    pub min_seq_wait_ms: u64,
    /// The bearer token `GET /metrics` asks for. Without it, `/metrics` is served without
    /// credentials on a loopback --http-addr only.
    #[arg(long, env = "RUNLEDGER_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Serve both fronts over TLS only, with this certificate chain (PEM); reloaded with the
    /// key on SIGHUP.
    #[arg(long, env = "RUNLEDGER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The TLS private key (PEM).
    #[arg(long, env = "RUNLEDGER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Log lines on stderr as text, or as one JSON object per line for log shippers.
    #[arg(long, env = "RUNLEDGER_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: super::LogFormat,
}

pub fn run(args: ServeArgs) -> Result<ExitCode, String> {
    // Before anything is recorded (the first start's client, the cluster's catch-up).
    crate::metrics::install();
    let options = crate::store::StoreOptions {
        read_only: args.read_only,
        write_queue: args.write_queue.max(1),
        write_queue_bytes: args.write_queue_mib.max(1) << 20,
        queue_wait: std::time::Duration::from_millis(args.queue_wait_ms),
        cache_bytes: args.cache_mib.max(1) << 20,
        writer_threads: args.writer_threads.get(),
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::Tls::load(cert, key)?),
        _ => None,
    };
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("cannot start: {e}"))?;
    // A gateway keeps only the credentials it applies, in a scratch directory of its own.
    let scratch = match (&args.nats, args.role) {
        (Some(_), crate::cluster::Role::Gateway) => Some(Scratch::new()?),
        _ => None,
    };
    let data_dir = scratch
        .as_ref()
        .map_or(args.data_dir.data_dir.as_path(), |s| s.0.as_path());
    let store = crate::store::Store::open(data_dir, options).map_err(|e| e.to_string())?;
    let master = match &args.nats {
        Some(nats) => Some(
            super::NatsArgs {
                nats: nats.clone(),
                master_key_file: args.master_key_file.clone(),
            }
            .master()?,
        ),
        None => None,
    };
    let mut engine = crate::engine::Engine::open(store, master.clone())
        .map_err(|e| format!("cannot start: {e}"))?
        .with_max_pending_runs(args.max_pending_runs)
        .with_retention(args.keep_runs_days)
        .with_webhook_allow(args.webhook_allow_net.clone().unwrap_or_default())
        .with_deliveries(crate::engine::DeliveryOptions {
            redirects: args.webhook_redirects,
            per_destination: usize::from(args.webhook_concurrency),
            ..crate::engine::DeliveryOptions::default()
        });
    if let (Some(urls), Some(master)) = (&args.nats, &master) {
        let log = runtime
            .block_on(crate::cluster::Log::connect(urls, Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        // The stream's identity, with the proof that this node holds the cluster's key.
        let (identity, key) = runtime
            .block_on(log.join(master))
            .map_err(|e| format!("cannot start: {e}"))?;
        let start = crate::cluster::StartingPoint::of(engine.store())
            .map_err(|e| format!("cannot start: {e}"))?;
        // A gateway's scratch store starts empty on every start; a node's must fit the stream.
        if args.role == crate::cluster::Role::Node {
            start
                .check(&identity)
                .map_err(|e| format!("cannot start: {e}"))?;
        }
        if start.cluster.is_none() && engine.store().read_only_reason().is_none() {
            engine
                .store()
                .set_cluster_id(identity.cluster)
                .map_err(|e| format!("cannot start: {e}"))?;
        }
        let applied = start.applied;
        let _runtime = runtime.enter();
        let mut cluster = crate::cluster::Cluster::new(log, key, args.role, applied);
        cluster.min_seq_wait = Duration::from_millis(args.min_seq_wait_ms);
        tracing::info!(applied, cluster = %identity.cluster, role = ?args.role, "cluster mode: applying the stream from the next sequence");
        engine = engine.with_cluster(Arc::new(cluster));
    }
    let ms = Duration::from_millis;
    let limits = ConnectionLimits {
        max_connections: args.max_connections.max(1),
        max_per_peer: args.max_connections_per_peer.max(1),
        handshake_timeout: ms(args.handshake_timeout_ms.max(1)),
        idle_timeout: ms(args.idle_timeout_ms.max(1)),
        header_read_timeout: ms(args.header_read_timeout_ms.max(1)),
        keepalive_interval: ms(args.keepalive_interval_ms.max(1)),
        keepalive_timeout: ms(args.keepalive_timeout_ms.max(1)),
        body_read_timeout: ms(args.body_read_timeout_ms.max(1)),
        ..ConnectionLimits::default()
    };
    match engine.store().read_only_reason() {
        // In a cluster, `cluster init` makes the first client.
        None if engine.cluster().is_none() => super::client::first_client(&engine, None)?,
        None => {}
        Some(why) => tracing::warn!(why, "serving read-only: writes are refused"),
    }
    let engine = Arc::new(engine);
    runtime.block_on(async {
        // Caught from here on: a SIGTERM right after the line below still stops cleanly.
        let shutdown = crate::server::termination();
        let grpc = bind(args.grpc_addr, "gRPC").await?;
        let http = bind(args.http_addr, "HTTP").await?;
        let (grpc_addr, http_addr) = (local_addr(&grpc)?, local_addr(&http)?);
        tracing::info!(
            grpc = %grpc_addr,
            http = %http_addr,
            data_dir = %data_dir.display(),
            "runledger is serving"
        );
        // The admin socket is ready before the line below says the server is.
        let admin = admin_channel(&engine, data_dir);
        // One stable line on stdout for scripts (and tests) that start a server on port 0.
        let scheme = if tls.is_some() { " tls" } else { "" };
        println!("runledger serving grpc={grpc_addr} http={http_addr}{scheme}");
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        if let Some(tls) = &tls {
            crate::tls::reload_on_hangup(tls.clone());
        }
        let fronts = crate::server::Fronts {
            limits,
            metrics_token: args.metrics_token.clone(),
            tls,
        };
        let served = crate::server::run_fronts(engine, grpc, http, fronts, shutdown).await;
        if let Some(admin) = admin {
            admin.abort();
            let _ = std::fs::remove_file(crate::admin::socket_path(data_dir));
        }
        served.map_err(|e| format!("server failed: {e}"))?;
        tracing::info!("stopped cleanly; every acknowledged write is on disk");
        Ok(ExitCode::SUCCESS)
    })
}

async fn bind(addr: SocketAddr, what: &str) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for {what} on {addr}: {e}"))
}

fn local_addr(listener: &tokio::net::TcpListener) -> Result<SocketAddr, String> {
    listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))
}

/// Serves the operator's admin socket in the data dir (backups, live revocation); a server
/// without it still serves, with a warning.
fn admin_channel(
    engine: &Arc<crate::engine::Engine>,
    data_dir: &std::path::Path,
) -> Option<tokio::task::JoinHandle<()>> {
    match crate::admin::bind(data_dir) {
        Ok(listener) => Some(tokio::spawn(crate::admin::serve(engine.clone(), listener))),
        Err(error) => {
            tracing::warn!(%error, "no admin socket: `runledger backup` and live `client revoke` will not reach this server");
            None
        }
    }
}

/// A gateway's scratch data dir, removed when the gateway stops.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new() -> Result<Scratch, String> {
        Scratch::remove_stale();
        let path = std::env::temp_dir().join(format!(
            "runledger-gateway-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        crate::private::create_dir(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(Scratch(path))
    }
}

impl Scratch {
    /// Removes the scratch dirs of gateways that were killed (their process is gone).
    fn remove_stale() {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|name| name.strip_prefix("runledger-gateway-"))
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
            if cfg!(target_os = "linux") && !alive {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
