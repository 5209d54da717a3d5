//! Running the two fronts on bound listeners until a shutdown future resolves, then draining:
//! in-flight requests get a grace period, queued writes are always finished before returning.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::{grpc, rest};
use crate::connections::Limited;
use crate::engine::Engine;

/// How long in-flight requests may take to finish once shutdown begins.
const GRACE: Duration = Duration::from_secs(10);
/// Concurrent gRPC calls one HTTP/2 connection may have open; a client past it waits for a
/// call to end (HTTP/2 flow control), so one client cannot pile up unbounded work.
const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// Connections each front holds open by default; see [`crate::connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 1_024;
/// How often expired tokens are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(3_600);

/// Serves gRPC on `grpc_listener` and REST on `http_listener` until `shutdown` resolves, then
/// stops accepting, lets in-flight requests finish (up to a grace period), and finishes every
/// queued write before returning.
pub async fn run(
    engine: Arc<Engine>,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run_with_limit(
        engine,
        grpc_listener,
        http_listener,
        DEFAULT_MAX_CONNECTIONS,
        shutdown,
    )
    .await
}

/// [`run`], with each front holding at most `max_connections` connections open.
pub async fn run_with_limit(
    engine: Arc<Engine>,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    max_connections: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
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

    let routes = grpc::routes(engine.clone()).await;
    let incoming = Limited::new(grpc_listener, max_connections);
    let grpc_server = tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, signal(stopped.clone()));

    let http_listener = Limited::new(http_listener, max_connections);
    let http_server = axum::serve(http_listener, rest::router(engine.clone()))
        .with_graceful_shutdown(signal(stopped.clone()));

    let servers = async { tokio::join!(grpc_server, http_server.into_future()) };
    let grace_over = async {
        signal(stopped).await;
        tokio::time::sleep(GRACE).await;
    };
    let result = tokio::select! {
        (grpc_result, http_result) = servers => {
            grpc_result.map_err(std::io::Error::other).and(http_result)
        }
        () = grace_over => {
            tracing::warn!("requests still in flight after the grace period; closing them");
            Ok(())
        }
    };
    let draining = engine.clone();
    tokio::task::spawn_blocking(move || draining.shutdown())
        .await
        .map_err(std::io::Error::other)?;
    result
}

/// Deletes expired tokens every hour until `stop` resolves.
async fn purge_tokens(engine: Arc<Engine>, stop: impl Future<Output = ()>) {
    let mut every = tokio::time::interval(PURGE_EVERY);
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

/// Resolves on Ctrl-C or SIGTERM.
pub async fn termination() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler can be installed");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
