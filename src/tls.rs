//! TLS for both fronts: a certificate chain and private key from PEM files (rustls with the
//! `ring` provider), with ALPN offering HTTP/2 (and HTTP/1.1 on the REST front). The pair can be
//! reloaded while serving (on SIGHUP): connections accepted afterwards get the new one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

/// The two fronts' TLS configurations, built from one certificate and key.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    configs: RwLock<Configs>,
}

struct Configs {
    rest: Arc<ServerConfig>,
    grpc: Arc<ServerConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Reloads the pair on every SIGHUP, for as long as the process runs; a failed reload keeps
/// the pair in use and says why.
pub fn reload_on_hangup(tls: Arc<Tls>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: the TLS pair will not be reloaded");
            return;
        };
        while hangups.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => {
                    tracing::info!(cert = %tls.cert.display(), "reloaded the TLS certificate and key")
                }
                Err(error) => {
                    tracing::warn!(%error, "could not reload the TLS pair; keeping the one in use")
                }
            }
        }
    });
    #[cfg(not(unix))]
    let _ = tls;
}

/// Which front a connection is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Front {
    Rest,
    Grpc,
}

impl Tls {
    /// Loads the pair; an error names the file and what is wrong with it.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Tls>, String> {
        let configs = configs(cert, key)?;
        Ok(Arc::new(Tls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            configs: RwLock::new(configs),
        }))
    }

    /// Reads the files again; on an error the pair in use stays.
    pub fn reload(&self) -> Result<(), String> {
        let configs = configs(&self.cert, &self.key)?;
        *self.configs.write().unwrap_or_else(|e| e.into_inner()) = configs;
        Ok(())
    }

    /// An acceptor for a new connection on `front`, with the current pair.
    pub fn acceptor(&self, front: Front) -> TlsAcceptor {
        let configs = self.configs.read().unwrap_or_else(|e| e.into_inner());
        TlsAcceptor::from(match front {
            Front::Rest => configs.rest.clone(),
            Front::Grpc => configs.grpc.clone(),
        })
    }
}

fn configs(cert: &Path, key: &Path) -> Result<Configs, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "--tls-cert {}: no certificate in the file",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let build = |alpn: &[&[u8]]| -> Result<Arc<ServerConfig>, String> {
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| format!("the TLS certificate and key do not make a pair: {e}"))?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    };
    Ok(Configs {
        rest: build(&[b"h2", b"http/1.1"])?,
        grpc: build(&[b"h2"])?,
    })
}
