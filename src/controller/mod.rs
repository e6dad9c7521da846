//! The controller: resources in, bundles pushed to agents, status written.
//!
//! * [`conditions`] — pure: metav1.Condition updates and the typed reasons of every type.
//! * [`status`] — pure: every resource's status from the resolution and the agents' reports
//!   (Valid, ConfigApplied, Ready; AgentConnected and Managed on nodes; Routed on trunks;
//!   Mirrored on BLF subscriptions).
//! * [`notices`] — pure: which Events a pass emits (transitions only).
//! * [`agent_policy`] — pure: where and how the controller may reach a node's agent (TLS with
//!   the node's own credentials; plaintext only on loopback for testing; allowed hosts).
//! * [`fleet`] — pushes changed bundles to agents and reads every agent's status, each node with
//!   its own backoff; computes the statuses.
//! * [`manifests`] — the `--manifests DIR` mode: the same reconcile fed from YAML files.
//! * [`kube`] — the API-server mode, one file per reconcile step.
//! * [`leader`] — Lease election (a pure decision and the lock that applies it).
//! * [`credentials`], [`secret_roles`] — pure: each node's own agent credentials, and the label
//!   that makes a Secret readable by the controller at all.
//! * [`managed`], [`managed_settings`], [`mesh_pki`] — pure: the StatefulSet, Service and Secret
//!   of a node with `spec.managed` (the Secret for every node), and its mesh certificates.
//! * [`metrics`], [`cli`] — the controller's Prometheus metrics and probes; its command line.

pub mod agent_policy;
pub mod cli;
pub mod conditions;
pub mod credentials;
pub mod file_credentials;
pub mod fleet;
pub mod kube;
pub mod leader;
pub mod managed;
pub mod managed_settings;
pub mod manifests;
pub mod mesh_pki;
pub mod metrics;
pub mod notices;
pub mod secret_roles;
pub mod status;

#[cfg(test)]
mod mock_api;
