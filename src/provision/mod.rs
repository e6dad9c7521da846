//! Serving desk phones their provisioning files, in the agent (it runs beside Asterisk, on the
//! phones' network). The files are rendered by `crate::render::provision` and arrive in the
//! node's bundle; here they are kept, served read-only and their fetches recorded.
//!
//! * [`store`] — the served files (in memory, swapped whole; one snapshot file for restarts).
//! * [`access`] — pure: who may fetch what (allowed networks, per-phone credentials).
//! * [`tftp`] — TFTP: packet codec and transfer state machine (pure), and the UDP shell.
//! * [`http`] — HTTP and HTTPS (axum, rustls).
//! * [`fetch`] — fetch records, metrics, and a phone's last fetch as its status shows it.
//!
//! Why the ports, the credentials and the snapshot are what they are: docs/adr/0006.

pub mod access;
pub mod fetch;
pub mod http;
pub mod store;
pub mod tftp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

pub use fetch::{LastFetch, ProvisionMetrics};
pub use store::ProvisionStore;

/// The TFTP port phones and DHCP options 66/150 assume.
pub const TFTP_PORT: u16 = 69;
/// The HTTP port: the one Cisco phones use for configuration over HTTP; free of a web server
/// on port 80 and of Asterisk's own HTTP (8088) and the agent's metrics (9090).
pub const HTTP_PORT: u16 = 6970;
/// The HTTPS port: Cisco's, next to the HTTP one.
pub const HTTPS_PORT: u16 = 6971;

/// Starting the provisioning servers or saving their files failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// A listener could not be bound.
    #[error("binding provisioning {what} on {addr}: {source}")]
    Bind {
        /// `TFTP`, `HTTP` or `HTTPS`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A certificate or key file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The certificate or key is unusable.
    #[error("provisioning TLS: {0}")]
    Tls(String),
    /// The snapshot of the served files could not be written.
    #[error("saving the provisioning files to {path}: {source}")]
    Save {
        /// The snapshot file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// Which provisioning servers the agent runs (none by default: the agent beside an existing
/// server only serves phones when asked to).
#[derive(Clone, Debug, Default)]
pub struct ProvisionOptions {
    /// TFTP listen address.
    pub tftp: Option<SocketAddr>,
    /// HTTP listen address.
    pub http: Option<SocketAddr>,
    /// HTTPS listen address (needs `tls_cert` and `tls_key`).
    pub https: Option<SocketAddr>,
    /// Certificate chain (PEM) of the HTTPS listener.
    pub tls_cert: Option<PathBuf>,
    /// Its key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Largest TFTP block size granted (default: RFC 2348's maximum).
    pub tftp_max_blksize: Option<u16>,
}

/// The provisioning servers of a running agent.
#[derive(Debug, Default)]
pub struct RunningProvision {
    /// Where TFTP listens.
    pub tftp: Option<SocketAddr>,
    /// Where HTTP listens.
    pub http: Option<SocketAddr>,
    /// Where HTTPS listens.
    pub https: Option<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningProvision {
    /// Waits for the servers to stop (after the stop signal); connections still open after
    /// `grace` are cut.
    pub async fn stopped(self, grace: std::time::Duration) {
        for mut task in self.tasks {
            if tokio::time::timeout(grace, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
pub(crate) async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    // The guard wait_for returns is not Send: drop it here, not across the caller's awaits.
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

/// Starts the servers `opts` asks for, serving `store`, until `stop` turns true.
pub async fn start(
    opts: &ProvisionOptions,
    store: Arc<ProvisionStore>,
    stop: watch::Receiver<bool>,
) -> Result<RunningProvision, ProvisionError> {
    let mut running = RunningProvision::default();
    let tcp = |what: &'static str, addr: SocketAddr| async move {
        let bind = |source| ProvisionError::Bind { what, addr, source };
        let socket =
            if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() };
        let socket = socket.map_err(bind)?;
        socket.set_reuseaddr(true).map_err(bind)?;
        socket.bind(addr).map_err(bind)?;
        // Room for every phone of a building connecting at once (capped by net.core.somaxconn).
        let listener = socket.listen(4096).map_err(bind)?;
        let local = listener.local_addr().map_err(bind)?;
        Ok::<_, ProvisionError>((listener, local))
    };
    if let Some(addr) = opts.https {
        let (Some(cert), Some(key)) = (&opts.tls_cert, &opts.tls_key) else {
            return Err(ProvisionError::Tls("HTTPS needs a certificate and a key".into()));
        };
        let tls = http::tls_config(cert, key)?;
        let (listener, local) = tcp("HTTPS", addr).await?;
        running.tasks.push(http::spawn_https(listener, tls, store.clone(), stop.clone()));
        running.https = Some(local);
    }
    if let Some(addr) = opts.http {
        let (listener, local) = tcp("HTTP", addr).await?;
        running.tasks.push(http::spawn_http(listener, store.clone(), stop.clone()));
        running.http = Some(local);
    }
    if let Some(addr) = opts.tftp {
        let mut limits = tftp::transfer::Limits::default();
        if let Some(max) = opts.tftp_max_blksize {
            limits.max_blksize = max.clamp(tftp::packet::MIN_BLKSIZE, tftp::packet::MAX_BLKSIZE);
        }
        let server = tftp::start(addr, store, limits, stop).await?;
        running.tftp = Some(server.addr);
        running.tasks.push(server.task);
    }
    tracing::info!(tftp = ?running.tftp, http = ?running.http, https = ?running.https, "provisioning servers started");
    Ok(running)
}
