//! One webhook attempt: a POST connecting only to the addresses the destination check allowed
//! (so DNS cannot swap in another between check and connection), HTTP/1.1, TLS checked against
//! the web PKI roots for https, all within a timeout. Redirects are followed only when the
//! operator allows it, at most that many, each checked like the first URL.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::{Request, Uri, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::AllowedNets;
use super::destination::{Undeliverable, resolve};

/// What a destination answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// A 429's `Retry-After`, in seconds.
    pub retry_after: Option<Duration>,
    /// Where a redirect not followed pointed.
    pub location: Option<String>,
}

/// Why an attempt got no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The URL (or a redirect's) names a destination webhooks may not go to.
    Forbidden(String),
    /// No connection, or the connection failed.
    Unreachable(String),
    /// No answer within the timeout.
    TimedOut,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Forbidden(why) | Failure::Unreachable(why) => f.write_str(why),
            Failure::TimedOut => f.write_str("no answer within the timeout"),
        }
    }
}

/// How attempts are made.
#[derive(Clone, Debug)]
pub struct PostOptions {
    pub allowed: AllowedNets,
    /// Redirects followed (0: none).
    pub redirects: u8,
    pub timeout: Duration,
}

/// POSTs `body` with `headers` to `url`.
pub async fn post(
    url: &str,
    headers: &[(&'static str, String)],
    body: Bytes,
    options: &PostOptions,
) -> Result<Answer, Failure> {
    let deadline = tokio::time::Instant::now() + options.timeout;
    let mut url = url.to_string();
    let mut hop = 0;
    loop {
        let addrs = resolve(&url, &options.allowed)
            .await
            .map_err(|refusal| match refusal {
                Undeliverable::Unresolved(why) => Failure::Unreachable(why),
                Undeliverable::Internal(why) | Undeliverable::Malformed(why) => {
                    Failure::Forbidden(why)
                }
            })?;
        let uri: Uri = url
            .parse()
            .map_err(|_| Failure::Forbidden(format!("{url} is not a URL")))?;
        let answer = tokio::time::timeout_at(deadline, attempt(&uri, &addrs, headers, &body))
            .await
            .map_err(|_| Failure::TimedOut)??;
        match answer.location.as_deref() {
            Some(location) if hop < options.redirects => {
                url = absolute(&uri, location).ok_or_else(|| {
                    Failure::Forbidden(format!("the redirect to {location} is not a URL"))
                })?;
                hop += 1;
            }
            _ => return Ok(answer),
        }
    }
}

/// A redirect's `Location` made absolute against the URL that answered it.
fn absolute(base: &Uri, location: &str) -> Option<String> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return Some(location.to_string());
    }
    let path = location.strip_prefix('/')?;
    Some(format!(
        "{}://{}/{path}",
        base.scheme_str()?,
        base.authority()?.as_str()
    ))
}

/// One request over a new connection to the first of `addrs` that accepts one.
async fn attempt(
    uri: &Uri,
    addrs: &[SocketAddr],
    headers: &[(&'static str, String)],
    body: &Bytes,
) -> Result<Answer, Failure> {
    let host = uri
        .host()
        .ok_or_else(|| Failure::Forbidden("the URL names no host".into()))?;
    let mut last_error = String::from("no address");
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(connected) => {
                let _ = connected.set_nodelay(true);
                stream = Some(connected);
                break;
            }
            Err(error) => last_error = format!("cannot connect to {addr}: {error}"),
        }
    }
    let stream = stream.ok_or(Failure::Unreachable(last_error))?;
    let mut request = Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(header::HOST, uri.authority().map_or(host, |a| a.as_str()))
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::USER_AGENT,
            concat!("runledger/", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in headers {
        request = request.header(*name, value.as_str());
    }
    let request = request
        .body(Full::new(body.clone()))
        .map_err(|e| Failure::Forbidden(format!("the request cannot be made: {e}")))?;
    let unreachable = |e: &dyn std::fmt::Display| Failure::Unreachable(format!("{host}: {e}"));
    let response = if uri.scheme_str() == Some("https") {
        let name = rustls_pki_types::ServerName::try_from(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        )
        .map_err(|e| Failure::Forbidden(format!("{host} is not a TLS server name: {e}")))?;
        let tls = tokio_rustls::TlsConnector::from(tls_config())
            .connect(name, stream)
            .await
            .map_err(|e| unreachable(&e))?;
        send(TokioIo::new(tls), request).await
    } else {
        send(TokioIo::new(stream), request).await
    }
    .map_err(|e| unreachable(&e))?;
    let status = response.status().as_u16();
    let header_text = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let retry_after = header_text(header::RETRY_AFTER)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let location = (300..400)
        .contains(&status)
        .then(|| header_text(header::LOCATION))
        .flatten();
    // Read (and drop) a bounded body, so the destination sees its answer taken.
    let _ = http_body_util::Limited::new(response.into_body(), 64 << 10)
        .collect()
        .await;
    Ok(Answer {
        status,
        retry_after,
        location,
    })
}

async fn send<IO>(
    io: IO,
    request: Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender.send_request(request).await
}

/// TLS for https webhooks: the web PKI roots, ring.
fn tls_config() -> Arc<tokio_rustls::rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<tokio_rustls::rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = tokio_rustls::rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
            Arc::new(
                tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default versions")
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            )
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_resolve_against_the_url_that_answered() {
        let base: Uri = "https://hooks.example.com:8443/a/b?x=1".parse().unwrap();
        assert_eq!(
            absolute(&base, "/c").as_deref(),
            Some("https://hooks.example.com:8443/c")
        );
        assert_eq!(
            absolute(&base, "http://127.0.0.1/").as_deref(),
            Some("http://127.0.0.1/")
        );
        assert_eq!(absolute(&base, "c"), None);
    }
}
