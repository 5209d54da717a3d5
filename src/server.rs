//! Running the two fronts on bound listeners until a shutdown future resolves, then draining:
//! in-flight requests get a grace period, queued writes are always finished before returning.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::observed::{MetricsAccess, Observed, metrics_router};
use crate::api::sequences::Sequences;
use crate::api::{grpc, rest};
use crate::connections::Limited;
use crate::engine::Engine;
use crate::front::{ConnectionLimits, Protocols};

/// How long in-flight requests may take to finish once shutdown begins.
const GRACE: Duration = Duration::from_secs(10);
/// How often expired tokens are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(3_600);
/// How often runs past the retention are pruned (the cut moves once a day).
const RETAIN_EVERY: Duration = Duration::from_secs(3_600);

/// Serves gRPC on `grpc_listener` and REST on `http_listener` until `shutdown` resolves, then
/// stops accepting, lets in-flight requests finish (up to a grace period), and finishes every
/// queued write before returning.
pub async fn run(
    engine: Arc<Engine>,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run_with(
        engine,
        grpc_listener,
        http_listener,
        ConnectionLimits::default(),
        shutdown,
    )
    .await
}

/// [`run`], with the given connection limits and timeouts on both fronts.
pub async fn run_with(
    engine: Arc<Engine>,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let fronts = Fronts {
        limits,
        metrics_token: None,
        tls: None,
    };
    run_fronts(engine, grpc_listener, http_listener, fronts, shutdown).await
}

/// How both fronts are served.
#[derive(Clone, Debug, Default)]
pub struct Fronts {
    pub limits: ConnectionLimits,
    /// The bearer token `/metrics` asks for (without it, `/metrics` is open on a loopback
    /// bind only).
    pub metrics_token: Option<String>,
    /// TLS on both fronts (only TLS when set).
    pub tls: Option<Arc<crate::tls::Tls>>,
}

/// [`run`], with every option of the fronts.
pub async fn run_fronts(
    engine: Arc<Engine>,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    fronts: Fronts,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (limits, tls) = (fronts.limits, fronts.tls);
    let access = MetricsAccess {
        token: fronts.metrics_token,
        loopback: http_listener.local_addr()?.ip().is_loopback(),
    };
    let (stop, stopped) = watch::channel(false);
    let closing = engine.clone();
    tokio::spawn(async move {
        shutdown.await;
        closing.close_streams();
        let _ = stop.send(true);
    });
    let signal = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };

    tokio::spawn(purge_tokens(engine.clone(), signal(stopped.clone())));
    tokio::spawn(crate::engine::run_courier(engine.clone(), stopped.clone()));
    tokio::spawn(crate::engine::run_clock(engine.clone(), stopped.clone()));
    if let Some(days) = engine.keep_runs_days() {
        tokio::spawn(retain(engine.clone(), days, signal(stopped.clone())));
    }

    let listener =
        |tcp, front| Limited::new(tcp, front, limits.max_connections, limits.max_per_peer);
    let routes = Observed::new(grpc::routes(engine.clone()).await.prepare());
    let router = rest::router(engine.clone()).merge(metrics_router(engine.clone(), access));
    let (grpc, http) = (
        listener(grpc_listener, "grpc"),
        listener(http_listener, "rest"),
    );
    let (grpc_server, http_server) = match engine.cluster() {
        None => (
            serving(grpc, routes, Protocols::Http2, limits, &tls, &stopped),
            serving(http, router, Protocols::Http1And2, limits, &tls, &stopped),
        ),
        Some(cluster) => {
            tokio::spawn(crate::cluster::apply::run(
                engine.clone(),
                cluster.clone(),
                stopped.clone(),
            ));
            if cluster.role == crate::cluster::Role::Node {
                tokio::spawn(crate::cluster::lease::hold(
                    cluster.log.clone(),
                    engine.delivery_flag(),
                    stopped.clone(),
                ));
            }
            let routes = Sequences::new(routes, engine.clone(), true);
            let router = Sequences::new(router, engine.clone(), false);
            (
                serving(grpc, routes, Protocols::Http2, limits, &tls, &stopped),
                serving(http, router, Protocols::Http1And2, limits, &tls, &stopped),
            )
        }
    };

    let servers = async { tokio::join!(grpc_server, http_server) };
    let grace_over = async {
        signal(stopped).await;
        tokio::time::sleep(GRACE).await;
    };
    tokio::select! {
        _ = servers => {}
        () = grace_over => {
            tracing::warn!("requests still in flight after the grace period; closing them");
        }
    }
    let draining = engine.clone();
    tokio::task::spawn_blocking(move || draining.shutdown())
        .await
        .map_err(std::io::Error::other)
}

type Serving = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// One front served until `stopped` (see [`crate::front::serve`]).
fn serving<S, B>(
    listener: Limited,
    service: S,
    protocols: Protocols,
    limits: ConnectionLimits,
    tls: &Option<Arc<crate::tls::Tls>>,
    stopped: &watch::Receiver<bool>,
) -> Serving
where
    S: crate::front::FrontService<B>,
    B: crate::front::ResponseBody,
{
    Box::pin(crate::front::serve(
        listener,
        service,
        protocols,
        limits,
        tls.clone(),
        stopped.clone(),
    ))
}

/// Deletes expired tokens every hour until `stop` resolves.
async fn purge_tokens(engine: Arc<Engine>, stop: impl Future<Output = ()>) {
    let mut every = maintenance_interval(&engine, PURGE_EVERY);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = every.tick() => match engine.purge_expired_tokens().await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "deleted expired tokens"),
                Err(error) => tracing::warn!(%error, "could not delete expired tokens"),
            },
            () = &mut stop => return,
        }
    }
}

/// Prunes runs older than `days` whole days before today, at start and every hour, until
/// `stop` resolves.
async fn retain(engine: Arc<Engine>, days: u32, stop: impl Future<Output = ()>) {
    let mut every = maintenance_interval(&engine, RETAIN_EVERY);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = every.tick() => {
                let cut = crate::engine::cut_for(days, crate::time::Timestamp::now());
                let started = std::time::Instant::now();
                match engine.prune(cut).await {
                    Ok(done) if done.task_runs == 0 && done.records == 0 => {}
                    Ok(done) => tracing::info!(
                        cut = %crate::time::format_datetime(cut),
                        task_runs = done.task_runs,
                        pipeline_runs = done.pipeline_runs,
                        records = done.records,
                        elapsed = ?started.elapsed(),
                        "pruned runs before the retention cut"
                    ),
                    Err(error) => tracing::warn!(%error, "could not prune old runs"),
                }
            }
            () = &mut stop => return,
        }
    }
}

/// Ticks every `period`: at once on a single node; after a first period on a cluster node, which
/// may be catching up with the log at start (every node publishes these steps, and they are
/// harmless repeated).
fn maintenance_interval(engine: &Engine, period: Duration) -> tokio::time::Interval {
    let first = match engine.cluster() {
        None => tokio::time::Instant::now(),
        Some(_) => tokio::time::Instant::now() + period,
    };
    tokio::time::interval_at(first, period)
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed when this is called (not when
/// first polled), so a signal arriving any time after it is caught. Call it in the runtime.
pub fn termination() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler can be installed");
        let mut interrupt =
            signal(SignalKind::interrupt()).expect("a SIGINT handler can be installed");
        async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
