//! `serve --tls-cert --tls-key`: both fronts speak TLS only (HTTP/2 by ALPN), clients that
//! verify the certificate get their answers, plain-text connections get nothing, and SIGHUP
//! reloads the pair.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runledger::proto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::support::{ChildServer, runtime, token_request};

/// A self-signed pair for `localhost` written to `dir`; the certificate's PEM.
fn self_signed(dir: &Path) -> String {
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let pem = pair.cert.pem();
    std::fs::write(dir.join("cert.pem"), &pem).unwrap();
    std::fs::write(dir.join("key.pem"), pair.signing_key.serialize_pem()).unwrap();
    pem
}

fn connector(trusted: &str, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(trusted.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

/// An HTTP/1.1 request over TLS, verifying the server's certificate against `trusted`; the
/// response's text and the certificate the server showed.
async fn https(
    addr: std::net::SocketAddr,
    trusted: &str,
    request: &str,
) -> Result<(String, Vec<u8>), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector(trusted, &[b"http/1.1"])
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let shown = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    Ok((String::from_utf8_lossy(&response).into_owned(), shown))
}

#[test]
fn both_fronts_speak_tls_only_and_reload_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = self_signed(dir.path());
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let server = ChildServer::start_with(
        &dir.path().join("data"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        None,
    );
    let credentials = server.first_client.clone().unwrap();
    runtime().block_on(async {
        // REST over TLS, the certificate verified: a token (the client secret crosses encrypted).
        let body = format!(
            "grant_type=client_credentials&client_id={}&client_secret={}",
            credentials["client_id"].as_str().unwrap(),
            credentials["client_secret"].as_str().unwrap()
        );
        let request = format!(
            "POST /v1/oauth/token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let (response, first_shown) = https(server.http_addr, &trusted, &request).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains("access_token"));

        // ALPN: the REST front offers HTTP/2.
        let tcp = tokio::net::TcpStream::connect(server.http_addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector(&trusted, &[b"h2", b"http/1.1"]).connect(name, tcp).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

        // gRPC over TLS with tonic, the certificate verified.
        let channel = Endpoint::from_shared(format!("https://{}", server.grpc_addr))
            .unwrap()
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&trusted))
                    .domain_name("localhost"),
            )
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut auth = proto::auth_client::AuthClient::new(channel);
        let granted = auth.issue_token(token_request(&credentials)).await.unwrap();
        assert!(!granted.into_inner().access_token.is_empty());

        // Verification is on: a client that does not trust this certificate is refused.
        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let error = https(server.http_addr, &other.cert.pem(), "GET /healthz HTTP/1.1\r\n\r\n")
            .await
            .unwrap_err();
        assert!(error.contains("certificate"), "{error}");

        // Plain text gets no answer on either front.
        for addr in [server.http_addr, server.grpc_addr] {
            let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
            plain
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
            assert!(!String::from_utf8_lossy(&answer).contains("HTTP/1.1"), "{answer:?}");
        }
        let plain_grpc = Endpoint::from_shared(format!("http://{}", server.grpc_addr))
            .unwrap()
            .connect()
            .await;
        if let Ok(channel) = plain_grpc {
            let mut auth = proto::auth_client::AuthClient::new(channel);
            assert!(auth.issue_token(proto::IssueTokenRequest::default()).await.is_err());
        }

        // SIGHUP: a new pair in the same files serves the next connections.
        let renewed = self_signed(dir.path());
        let pid = server.child.id().to_string();
        assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok((response, shown)) = https(server.http_addr, &renewed, "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await {
                assert!(response.starts_with("HTTP/1.1 200"), "{response}");
                assert_ne!(shown, first_shown);
                break;
            }
            assert!(Instant::now() < deadline, "the new certificate was not served after SIGHUP");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert!(server.stop());
}
