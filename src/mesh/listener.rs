//! The mesh listener's TLS: handshakes with whatever certificate and CA the files hold now.
//!
//! A leaf renewal or a CA rotation rewrites the files (the kubelet swaps a Secret volume's
//! contents in place); the listener re-reads them every [`RELOAD_EVERY`] and uses the new
//! configuration for every handshake from then on. Open links keep their session: nothing
//! restarts, neither the agent nor Asterisk. A file set that does not load (a half-written
//! update) keeps the previous configuration, and says so once.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::error::MeshError;
use super::tls::MeshTls;

/// How often the certificate files are compared with what is in use.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// How long a peer has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The listener's TLS state: the configuration in use and what the files held when it was made.
pub(crate) struct ServerCerts {
    files: MeshTls,
    config: RwLock<Arc<ServerConfig>>,
    /// The files' bytes behind `config`, or behind the last failed attempt (so a broken update
    /// is reported once, not every poll).
    seen: Mutex<Vec<u8>>,
    last_refusal: Mutex<Option<String>>,
    reloads: std::sync::atomic::AtomicU64,
}

fn read(p: &std::path::Path) -> Result<Vec<u8>, MeshError> {
    std::fs::read(p).map_err(|source| MeshError::Read { path: p.to_owned(), source })
}

fn tls_error(what: &str, e: impl std::fmt::Display) -> MeshError {
    MeshError::Certificates(format!("{what}: {e}"))
}

/// The three files' bytes, in order (CA, certificate, key).
fn snapshot(files: &MeshTls) -> Result<Vec<u8>, MeshError> {
    let mut out = read(&files.ca)?;
    out.extend(read(&files.cert)?);
    out.extend(read(&files.key)?);
    Ok(out)
}

/// A server configuration from the files: this node's certificate and key, client certificates
/// required and checked against the CA, HTTP/2 offered (gRPC).
fn server_config(files: &MeshTls) -> Result<ServerConfig, MeshError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&read(&files.ca)?) {
        roots.add(ca.map_err(|e| tls_error("mesh CA", e))?).map_err(|e| tls_error("mesh CA", e))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| tls_error("mesh CA", e))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(&files.cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| tls_error("mesh certificate", e))?;
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?).map_err(|e| tls_error("mesh key", e))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("TLS versions", e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| tls_error("mesh certificate and key", e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

impl ServerCerts {
    /// Loads the files (an error when they do not make a configuration).
    pub(crate) fn load(files: &MeshTls) -> Result<ServerCerts, MeshError> {
        let seen = snapshot(files)?;
        let config = server_config(files)?;
        Ok(ServerCerts {
            files: files.clone(),
            config: RwLock::new(Arc::new(config)),
            seen: Mutex::new(seen),
            last_refusal: Mutex::new(None),
            reloads: Default::default(),
        })
    }

    /// Re-reads the files; swaps the configuration when they changed and load.
    fn reload(&self) {
        let Ok(now) = snapshot(&self.files) else { return };
        let mut seen = super::lock(&self.seen);
        if *seen == now {
            return;
        }
        *seen = now;
        match server_config(&self.files) {
            Ok(config) => {
                *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
                self.reloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(cert = %self.files.cert.display(), "mesh: certificates reloaded; new links use them");
            }
            Err(e) => {
                tracing::warn!(error = %e, "mesh: the certificate files changed but do not load; keeping the previous ones");
            }
        }
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.read().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// Why the last refused handshake was refused (e.g. `invalid peer certificate: UnknownIssuer`).
    pub(crate) fn last_refusal(&self) -> Option<String> {
        super::lock(&self.last_refusal).clone()
    }

    /// Configurations loaded since the start (not counting the first).
    pub(crate) fn reloads(&self) -> u64 {
        self.reloads.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Accepts on `listener`, handshakes each connection with the current configuration, and
/// hands the established streams to `out`; polls the files for changes meanwhile. Runs until
/// `out` is closed (the server stopped).
pub(crate) async fn accept(
    listener: TcpListener,
    certs: Arc<ServerCerts>,
    out: mpsc::Sender<Result<TlsStream<TcpStream>, std::io::Error>>,
) {
    let mut poll = tokio::time::interval(RELOAD_EVERY);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = out.closed() => return,
            _ = poll.tick() => certs.reload(),
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "mesh: accept failed");
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = certs.acceptor();
                let (certs, out) = (certs.clone(), out.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = out.send(Ok(stream)).await;
                        }
                        Ok(Err(e)) => refused(&certs, peer, e.to_string()),
                        Err(_) => refused(&certs, peer, format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}")),
                    }
                });
            }
        }
    }
}

fn refused(certs: &ServerCerts, peer: SocketAddr, why: String) {
    tracing::warn!(%peer, reason = %why, "mesh: TLS handshake refused");
    *super::lock(&certs.last_refusal) = Some(why);
}
