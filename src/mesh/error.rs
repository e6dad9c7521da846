//! Errors of the mesh's edges: its listener, its certificates, a link to an owner.

use std::path::PathBuf;

/// Starting the mesh or keeping a link up failed.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// A certificate or key file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The certificate files do not make a TLS configuration.
    #[error("mesh certificates: {0}")]
    Certificates(String),
    /// The listener could not be bound.
    #[error("binding the mesh listener: {0}")]
    Bind(#[source] std::io::Error),
    /// tonic refused the TLS settings, the URL, or the connection.
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
    /// The owner answered with an error.
    #[error("owner answered: {0}")]
    Status(#[from] tonic::Status),
    /// Nothing from the owner within the heartbeat timeout.
    #[error("nothing from the owner for {0:?}")]
    Silent(std::time::Duration),
    /// The owner ended the stream.
    #[error("the owner ended the stream")]
    Ended,
    /// A different node answered than the one dialled.
    #[error("answered by node {answered:?}, expected {expected:?}")]
    WrongOwner {
        /// Who answered.
        answered: String,
        /// Who was dialled.
        expected: String,
    },
    /// The owner was declared lost while its stream stayed up: resubscribe for a snapshot.
    #[error("the owner was silent past the timeout; resubscribing for a snapshot")]
    Resync,
    /// The subscription stream to the owner closed.
    #[error("the subscription stream closed")]
    Closed,
}
