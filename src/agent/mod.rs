//! The agent: one per Asterisk server, beside it (sidecar or systemd service). It holds the only
//! AMI session, applies bundles (write, reload only what changed, verify, roll back), and serves
//! `/healthz`, `/readyz` and `/metrics`.
//!
//! * [`plan`] — pure: bundle + files on disk → writes and modules; parsers for what to verify.
//! * [`apply`] — the apply procedure: journal, write, reload, verify, roll back.
//! * [`journal`] — the apply journal that survives a killed agent.
//! * [`config_files`] — the operator's files on disk (unreadable is an error, never "absent").
//! * [`node`] — polling and status around one AMI [`Session`](crate::ami::Session).
//! * [`metrics`] — the Prometheus registry.
//! * [`server`] — gRPC `Agent` service (token / mTLS) and the HTTP endpoints.
//! * [`client`] — connecting to an agent (the controller and `push`).
//! * [`provisioning`] — the desk phones' files in the gRPC messages (served by `crate::provision`).
//! * [`cli`] — the `agent` and `push` commands.

pub mod apply;
pub mod cli;
pub mod client;
pub mod config_files;
pub mod error;
pub mod journal;
pub mod metrics;
pub mod node;
pub mod plan;
pub mod provisioning;
pub mod server;
pub mod sip_probe;

/// Generated gRPC types and the tonic client/server of `proto/agent.proto`.
pub mod proto {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("asterisk_operator.agent.v1");
}

pub use client::{AgentAccess, AgentClient, ClientOptions, connect};
pub use error::AgentError;
pub use node::{Fault, Node, NodeConfig, bundle_from_proto, bundle_to_proto};

/// Largest gRPC message the agent and its clients accept (tonic's default is 4 MiB: a bundle of
/// ≈7,000 phones). 64 MiB carries ≈100,000 phones; a node that size is far past what one
/// Asterisk serves, so the limit only stops a runaway message.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
pub use server::{AgentOptions, MeshOptions, RunningAgent, ServerTls, start};
