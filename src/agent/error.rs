//! Errors of the agent's edges: its configuration, its listeners, and reaching an agent.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Starting an agent or talking to one failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A file (certificate, key, secret, token) could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A secret or token file is missing or empty.
    #[error(transparent)]
    SecretFile(#[from] crate::secret::SecretFileError),
    /// Options that do not go together, or would expose the Apply API unprotected.
    #[error("{0}")]
    Options(String),
    /// A listener could not be bound.
    #[error("binding {what} on {addr}: {source}")]
    Bind {
        /// `gRPC` or `HTTP`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// What went wrong.
        source: std::io::Error,
    },
    /// TLS settings tonic refused.
    #[error("TLS configuration: {0}")]
    Tls(#[source] tonic::transport::Error),
    /// An agent URL that does not parse.
    #[error("bad agent URL {url:?}: {source}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// The agent could not be reached.
    #[error("connecting to agent {url}: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// The agent answered a call with an error (unauthenticated, unavailable, …).
    #[error("agent call failed: {0}")]
    Call(#[from] tonic::Status),
    /// The device-state mesh could not start (its listener, its certificates).
    #[error("mesh listener on {addr}: {source}")]
    Mesh {
        /// The mesh listen address.
        addr: SocketAddr,
        /// What went wrong.
        source: crate::mesh::MeshError,
    },
    /// A bundle folder could not be read.
    #[error(transparent)]
    Bundle(#[from] crate::render::BundleError),
    /// A provisioning server could not start.
    #[error(transparent)]
    Provision(#[from] crate::provision::ProvisionError),
}
