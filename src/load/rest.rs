//! REST query workers: one keep-alive HTTP/1.1 connection each, one request at a time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use super::{Budget, Outcome, Query, queried_pipeline};

/// The path a query asks.
fn path(query: Query) -> String {
    let pipeline = queried_pipeline();
    match query {
        Query::Aggregated => {
            format!("/v1/stats/pipelines/{pipeline}/aggregated-stats/2025-01-01/month/12")
        }
        Query::Range => format!(
            "/v1/stats/pipelines/{pipeline}/stats/2025-01-03%2005:06:07/2025-12-29%2017:43:21"
        ),
        Query::LastRun => format!("/v1/stats/pipelines/{pipeline}/last-run/stats"),
        Query::Logs => {
            format!("/v1/stats/pipelines/{pipeline}/logs/2025-01-01/2025-12-31?limit=100")
        }
    }
}

/// One keep-alive HTTP/1.1 connection's sending half.
pub(super) type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

pub(super) async fn connect(addr: SocketAddr) -> Result<Sender, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("HTTP handshake with {addr} failed: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

pub async fn query_worker(
    addr: SocketAddr,
    token: String,
    query: Query,
    budget: Arc<Budget>,
) -> Outcome {
    let mut outcome = Outcome::default();
    let uri = path(query);
    let authorization = format!("Bearer {token}");
    let host = addr.to_string();
    let mut sender = None;
    while budget.take() {
        if sender.is_none() {
            match connect(addr).await {
                Ok(connected) => sender = Some(connected),
                Err(e) => {
                    outcome.fail(e);
                    continue;
                }
            }
        }
        let request = hyper::Request::get(uri.as_str())
            .header(hyper::header::HOST, host.as_str())
            .header(hyper::header::AUTHORIZATION, authorization.as_str())
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        let started = Instant::now();
        let result = send(
            sender.as_mut().expect("connected"),
            request,
            hyper::StatusCode::is_success,
        )
        .await;
        match result {
            Ok(()) => {
                outcome.latency.record(started.elapsed());
                outcome.ok += 1;
            }
            Err(e) => {
                sender = None; // reconnect: the connection may be unusable
                outcome.fail(e);
            }
        }
    }
    outcome
}

/// Sends one request and reads its whole answer: `Ok` when `expected` says its status is.
pub(super) async fn send(
    sender: &mut Sender,
    request: hyper::Request<Full<Bytes>>,
    expected: fn(&hyper::StatusCode) -> bool,
) -> Result<(), String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if expected(&status) {
        Ok(())
    } else {
        Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
    }
}
