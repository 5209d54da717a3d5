//! Request metrics on both fronts (see [`crate::metrics`]): REST requests by method, route
//! template and status class; gRPC calls by method and status code; latency histograms; and
//! the `/metrics` scrape endpoint itself.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, Response, StatusCode, header};
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::routing::get;
use tower::ServiceExt;

use crate::auth::bearer_token;
use crate::engine::Engine;
use crate::error::Error;
use crate::front::{FrontService, ResponseBody};
use crate::metrics::{GRPC_REQUESTS, GRPC_SECONDS, HTTP_REQUESTS, HTTP_SECONDS, status_class};

/// REST middleware: counts and times every request by its route template.
pub async fn track_rest(
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response<Body> {
    let route = matched.map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = status_class(response.status().as_u16());
    metrics::counter!(HTTP_REQUESTS, "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(HTTP_SECONDS, "route" => route).record(started.elapsed().as_secs_f64());
    response
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// The gRPC front's routes, counted and timed per call.
#[derive(Clone)]
pub struct Observed<S> {
    inner: S,
}

impl<S> Observed<S> {
    pub fn new(inner: S) -> Observed<S> {
        Observed { inner }
    }
}

impl<S, B> tower::Service<axum::http::Request<Body>> for Observed<S>
where
    S: tower::Service<axum::http::Request<Body>, Response = Response<B>, Error = Infallible>
        + FrontService<B>
        + Sync,
    B: ResponseBody,
{
    type Response = Response<B>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<B>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        let method = grpc_method(request.uri().path());
        Box::pin(async move {
            let started = Instant::now();
            let Ok(response) = inner.oneshot(request).await;
            let code = grpc_code(response.headers());
            metrics::counter!(GRPC_REQUESTS, "method" => method.clone(), "code" => code)
                .increment(1);
            metrics::histogram!(GRPC_SECONDS, "method" => method)
                .record(started.elapsed().as_secs_f64());
            Ok(response)
        })
    }
}

/// The method as a label: a method this server implements (runledger's, health, reflection)
/// by its path, anything else `other`, decided from the path alone before anything else is
/// looked at, so that no request can add a label.
fn grpc_method(path: &str) -> String {
    if served_methods().contains(path) {
        path.to_string()
    } else {
        "other".to_string()
    }
}

/// The paths of every method served: those of the embedded descriptor sets (runledger's API
/// and the health service) and server reflection's.
fn served_methods() -> &'static std::collections::HashSet<String> {
    static METHODS: std::sync::LazyLock<std::collections::HashSet<String>> =
        std::sync::LazyLock::new(|| {
            use prost::Message;
            let mut methods = std::collections::HashSet::new();
            for encoded in [
                crate::proto::FILE_DESCRIPTOR_SET,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
            ] {
                let set = prost_types::FileDescriptorSet::decode(encoded)
                    .expect("the embedded descriptor sets are valid");
                for file in set.file {
                    for service in &file.service {
                        for method in &service.method {
                            methods.insert(format!(
                                "/{}.{}/{}",
                                file.package(),
                                service.name(),
                                method.name()
                            ));
                        }
                    }
                }
            }
            methods.insert("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo".into());
            methods
        });
    &METHODS
}

/// The call's status as its headers say (errors answered at once carry it there); a call whose
/// status comes in the trailers counts as `OK`.
fn grpc_code(headers: &HeaderMap) -> &'static str {
    let code = headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .unwrap_or(0);
    match tonic::Code::from_i32(code) {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
        tonic::Code::Unknown => "UNKNOWN",
    }
}

/// Who may scrape `/metrics`: anyone on a loopback bind without a token; otherwise only
/// bearers of the `--metrics-token`.
#[derive(Clone, Debug)]
pub struct MetricsAccess {
    pub token: Option<String>,
    pub loopback: bool,
}

#[derive(Clone)]
struct Scrape {
    engine: Arc<Engine>,
    access: MetricsAccess,
}

/// The `/metrics` route.
pub fn metrics_router(engine: Arc<Engine>, access: MetricsAccess) -> axum::Router {
    crate::metrics::install();
    axum::Router::new()
        .route("/metrics", get(scrape))
        .with_state(Scrape { engine, access })
}

async fn scrape(State(scrape): State<Scrape>, headers: HeaderMap) -> Response<Body> {
    let allowed = match &scrape.access.token {
        Some(token) => {
            let presented = headers
                .get(header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok());
            match bearer_token(presented) {
                Ok(given) => {
                    use subtle::ConstantTimeEq;
                    bool::from(given.as_bytes().ct_eq(token.as_bytes()))
                }
                Err(error) => return error.into_response(),
            }
        }
        None => scrape.access.loopback,
    };
    if !allowed {
        let error = match scrape.access.token {
            Some(_) => Error::Unauthenticated("/metrics: the bearer token is not the --metrics-token".into()),
            None => Error::PermissionDenied(
                "/metrics is served without credentials only on a loopback address; start the server with --metrics-token to scrape it from elsewhere".into(),
            ),
        };
        return error.into_response();
    }
    let engine = scrape.engine.clone();
    let body = tokio::task::spawn_blocking(move || {
        let scraped = crate::metrics::Scraped {
            database_bytes: std::fs::metadata(engine.store().path())
                .ok()
                .map(|m| m.len()),
            api_keys: engine.api_key_counts().ok(),
        };
        crate::metrics::render(scraped)
    })
    .await
    .unwrap_or_default();
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_methods_served_are_labels() {
        for served in [
            "/runledger.v1.Stats/GetStats",
            "/runledger.v1.Ingest/ReportTaskRuns",
            "/runledger.v1.Auth/IssueToken",
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        ] {
            assert_eq!(super::grpc_method(served), served);
        }
        for other in [
            "/runledger.v1.Stats/Made_up_1",
            "/runledger.v1.Nope/GetStats",
            "/x",
            "",
        ] {
            assert_eq!(super::grpc_method(other), "other");
        }
    }
}
