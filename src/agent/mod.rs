//! The agent: one per Asterisk server, beside it (sidecar or systemd service). It holds the only
//! AMI session, applies bundles (write, reload only what changed, verify, roll back), and serves
//! `/healthz`, `/readyz` and `/metrics`.
//!
//! * [`plan`] — pure: bundle + files on disk → writes and modules; parsers for what to verify.
//! * [`node`] — the apply procedure, polling and status around one AMI [`Session`](crate::ami::Session).
//! * [`metrics`] — the Prometheus registry.
//! * [`server`] — gRPC `Agent` service (token / mTLS) and the HTTP endpoints.
//! * [`client`] — connecting to an agent (the controller and `push`).
//! * [`cli`] — the `agent` and `push` commands.

pub mod cli;
pub mod client;
pub mod error;
pub mod metrics;
pub mod node;
pub mod plan;
pub mod server;
pub mod sip_probe;

/// Generated gRPC types and the tonic client/server of `proto/agent.proto`.
pub mod proto {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("asterisk_operator.agent.v1");
}

pub use client::{AgentAccess, AgentClient, ClientOptions, connect};
pub use error::AgentError;
pub use node::{Node, NodeConfig, bundle_from_proto, bundle_to_proto};
pub use server::{AgentOptions, MeshOptions, RunningAgent, ServerTls, start};
