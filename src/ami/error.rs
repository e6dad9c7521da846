//! The AMI module's one error type.

use std::time::Duration;

use super::codec::{DecodeError, EncodeError};

#[derive(Debug, thiserror::Error)]
pub enum AmiError {
    #[error("cannot connect to AMI at {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// Login refused. Asterisk closes the connection after this; retrying at once will not help.
    #[error("AMI login as {user:?} refused by Asterisk: {message}")]
    AuthFailed { user: String, message: String },
    /// Asterisk answered `Response: Error` (for `Command`, the error text comes from `Output:`).
    #[error("AMI action {action} failed: {message}")]
    Action { action: String, message: String },
    #[error("AMI action {action}: no answer within {after:?}")]
    Timeout { action: String, after: Duration },
    #[error("AMI action {action}: connection lost before the answer ({reason})")]
    Disconnected { action: String, reason: String },
    #[error("AMI action {action}: not connected to Asterisk ({reason})")]
    NotConnected { action: String, reason: String },
    #[error("AMI session closed")]
    Closed,
    #[error("AMI action {action}: unexpected answer: {detail}")]
    Protocol { action: String, detail: String },
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("AMI I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Usage(String),
}

impl AmiError {
    /// Whether retrying the same call later may succeed (connection trouble), as opposed to an
    /// answer from Asterisk.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            AmiError::Connect { .. }
                | AmiError::Timeout { .. }
                | AmiError::Disconnected { .. }
                | AmiError::NotConnected { .. }
                | AmiError::Io(_)
        )
    }
}
