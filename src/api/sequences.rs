//! Cluster mode's sequence headers, on both fronts alike: a request carrying
//! `x-runledger-min-seq: S` waits (bounded) until the node has applied stream sequence S, or is
//! answered 503 / UNAVAILABLE with Retry-After; every answer carries the node's
//! `x-runledger-applied-seq`, and a write's answer its `x-runledger-seq`. For gRPC these are
//! response metadata (headers).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response};
use axum::response::IntoResponse;
use tower::ServiceExt;

use crate::engine::Engine;
use crate::error::Error;
use crate::front::{FrontService, ResponseBody};

pub const MIN_SEQ: &str = "x-runledger-min-seq";
pub const APPLIED_SEQ: &str = "x-runledger-applied-seq";
pub const SEQ: &str = "x-runledger-seq";

/// A front's service with the sequence headers.
#[derive(Clone)]
pub struct Sequences<S> {
    inner: S,
    engine: Arc<Engine>,
    grpc: bool,
}

impl<S> Sequences<S> {
    /// Wraps `inner`, a gRPC front's routes when `grpc` (errors become gRPC statuses).
    pub fn new(inner: S, engine: Arc<Engine>, grpc: bool) -> Sequences<S> {
        Sequences {
            inner,
            engine,
            grpc,
        }
    }
}

impl<S, B> tower::Service<Request<Body>> for Sequences<S>
where
    S: tower::Service<Request<Body>, Response = Response<B>, Error = Infallible>
        + FrontService<B>
        + Sync,
    B: ResponseBody,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let (inner, engine, grpc) = (self.inner.clone(), self.engine.clone(), self.grpc);
        Box::pin(async move {
            let peer = request
                .extensions()
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| info.0.ip());
            let authenticated = catch_up_for_bearer(&engine, request.headers(), peer).await;
            if let Some(value) = request.headers().get(MIN_SEQ) {
                let wanted = value
                    .to_str()
                    .ok()
                    .and_then(|text| text.trim().parse::<u64>().ok())
                    .ok_or_else(|| {
                        Error::invalid(MIN_SEQ, "must be a stream sequence (a whole number)")
                    });
                let path = request.uri().path();
                let ready = match wanted {
                    Err(error) => Err(error),
                    // A token request never waits: it is not a read.
                    Ok(_) if is_token_request(path) => Ok(()),
                    // Only an authenticated caller, or the operator's probe, may hold a request
                    // open waiting; others get their 401 at once.
                    Ok(seq) if authenticated || path == "/healthz" => {
                        engine.wait_applied(seq).await
                    }
                    Ok(_) => Ok(()),
                };
                if let Err(error) = ready {
                    return Ok(with_applied(error_response(error, grpc), &engine, 0));
                }
            }
            let (response, written) = crate::cluster::noting_writes(inner.oneshot(request)).await;
            let Ok(response) = response;
            Ok(with_applied(response.map(Body::new), &engine, written))
        })
    }
}

/// Whether a path asks for a token (REST or gRPC).
fn is_token_request(path: &str) -> bool {
    path.trim_end_matches('/') == "/v1/oauth/token" || path == "/runledger.v1.Auth/IssueToken"
}

/// A bearer token this node does not know may have been granted through another node a moment
/// ago: before the request is authenticated, catch up with the log's newest credentials (about
/// a second at most; nothing to wait for when the node is up to date), unless `peer` used up
/// its lookups. Whether the request carries a token this node honours.
async fn catch_up_for_bearer(
    engine: &Engine,
    headers: &axum::http::HeaderMap,
    peer: Option<std::net::IpAddr>,
) -> bool {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let Ok(token) = crate::auth::bearer_token(bearer) else {
        return false;
    };
    match (engine.authenticate(token), engine.cluster()) {
        (Ok(_), _) => true,
        (Err(Error::Unauthenticated(_)), Some(cluster)) if engine.may_look_up(peer) => {
            cluster.catch_up_credentials().await && engine.authenticate(token).is_ok()
        }
        _ => false,
    }
}

fn error_response(error: Error, grpc: bool) -> Response<Body> {
    if grpc {
        tonic::Status::from(error).into_http::<Body>()
    } else {
        error.into_response()
    }
}

fn with_applied(mut response: Response<Body>, engine: &Engine, written: u64) -> Response<Body> {
    let headers = response.headers_mut();
    if let Some(applied) = engine.applied_seq() {
        headers.insert(APPLIED_SEQ, HeaderValue::from(applied));
    }
    if written > 0 {
        headers.insert(SEQ, HeaderValue::from(written));
    }
    response
}
