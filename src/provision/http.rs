//! Provisioning over HTTP and HTTPS (axum; TLS by rustls, the project's one TLS stack): `GET`
//! or `HEAD` of `/<file name>`, decided by [`access::http`](super::access::http) — allowed
//! networks, or the phone's own Basic credentials — and answered 200, 401 or 404.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;

use super::ProvisionError;
use super::access::{self, Access, FileOwner};
use super::fetch::{Fetch, FetchResult, Protocol};
use super::store::ProvisionStore;

/// The realm of the `WWW-Authenticate` challenge.
const REALM: &str = "Basic realm=\"asterisk-operator provisioning\", charset=\"UTF-8\"";
/// How long a client has for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The address a request came from, on plain and TLS listeners alike.
#[derive(Clone, Copy, Debug)]
pub struct Source(SocketAddr);

impl Connected<IncomingStream<'_, TcpListener>> for Source {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Source(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Source {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        Source(*stream.remote_addr())
    }
}

#[derive(Clone)]
struct Served {
    store: Arc<ProvisionStore>,
    protocol: Protocol,
}

fn router(store: Arc<ProvisionStore>, protocol: Protocol) -> axum::Router {
    axum::Router::new().fallback(fetch).with_state(Served { store, protocol })
}

async fn fetch(
    State(s): State<Served>,
    ConnectInfo(Source(source)): ConnectInfo<Source>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "GET, HEAD")], "read-only\n")
            .into_response();
    }
    // One path segment, as rendered: no folders, no escapes (no rendered name has either).
    let name = uri.path().strip_prefix('/').unwrap_or("");
    let plain = !name.is_empty() && !name.contains('/') && !name.contains('%');
    let served = s.store.served();
    let file = if plain { served.lookup(name) } else { None };
    let credentials =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(access::parse_basic);
    let decision = access::http(
        file.map(|f| FileOwner { phone: f.phone.as_deref() }),
        source.ip(),
        served.networks(),
        credentials.as_ref(),
        |c| served.password_ok(&c.user, c.password.expose()),
    );
    let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok());
    let mut record = Fetch {
        file: name,
        phone: file.and_then(|f| f.phone.as_deref()),
        vendor: file.map_or("unknown", |f| f.vendor),
        source,
        user_agent,
        protocol: s.protocol,
        result: FetchResult::Ok,
    };
    let response = match decision {
        Access::Serve => {
            let file = file.expect("served files exist");
            let kind = if file.name.ends_with(".xml") || file.contents.starts_with(b"<?xml") {
                "application/xml"
            } else {
                "text/plain; charset=utf-8"
            };
            let headers = [
                (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ];
            (StatusCode::OK, headers, file.contents.to_vec()).into_response()
        }
        Access::Unauthorized => {
            record.result = FetchResult::Unauthorized;
            (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, REALM)], "credentials required\n")
                .into_response()
        }
        Access::NotFound | Access::Forbidden => {
            record.result = FetchResult::NotFound;
            (StatusCode::NOT_FOUND, "not found\n").into_response()
        }
    };
    s.store.record(&record);
    response
}

/// Serves plain HTTP on `listener` until `stop`.
pub fn spawn_http(
    listener: TcpListener,
    store: Arc<ProvisionStore>,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let app = router(store, Protocol::Http).into_make_service_with_connect_info::<Source>();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stopped(stop)).await {
            tracing::error!(error = %e, "provisioning HTTP server failed");
        }
    })
}

/// Serves HTTPS on `listener` with `tls` until `stop`.
pub fn spawn_https(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    store: Arc<ProvisionStore>,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let listener = TlsListener::new(listener, TlsAcceptor::from(tls), stop.clone());
    let app = router(store, Protocol::Https).into_make_service_with_connect_info::<Source>();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stopped(stop)).await {
            tracing::error!(error = %e, "provisioning HTTPS server failed");
        }
    })
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    super::until_stopped(&mut stop).await;
}

/// The TLS server configuration from a PEM certificate chain and key.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, ProvisionError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| ProvisionError::Read { path: path.to_owned(), source })
    };
    let bad = |path: &Path, why: String| ProvisionError::Tls(format!("{}: {why}", path.display()));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(cert, "no certificate in the file".into()));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| bad(key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ProvisionError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| bad(cert, e.to_string()))?;
    Ok(Arc::new(config))
}

/// Accepted TLS connections: handshakes run beside the accept loop, so a slow client holds up
/// only itself.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    fn new(listener: TcpListener, acceptor: TlsAcceptor, mut stop: watch::Receiver<bool>) -> TlsListener {
        let local = listener.local_addr().expect("a bound listener has an address");
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "provisioning HTTPS accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    _ = super::until_stopped(&mut stop) => return,
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::info!(source = %peer, error = %e, "provisioning TLS handshake failed")
                        }
                        Err(_) => tracing::info!(source = %peer, "provisioning TLS handshake timed out"),
                    }
                });
            }
        });
        TlsListener { ready, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept loop stopped: so does this listener (graceful shutdown ends serve).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
