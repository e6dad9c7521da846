//! The controller: resources in, bundles pushed to agents, status written.
//!
//! * [`conditions`] — pure: metav1.Condition updates and the typed reasons of every type.
//! * [`status`] — pure: every resource's status from the resolution and the agents' reports
//!   (Valid, ConfigApplied, Ready; AgentConnected and Managed on nodes; Routed on trunks;
//!   Mirrored on BLF subscriptions).
//! * [`notices`] — pure: which Events a pass emits (transitions only).
//! * [`fleet`] — pushes changed bundles to agents and reads every agent's status, each node with
//!   its own backoff; computes the statuses.
//! * [`manifests`] — the `--manifests DIR` mode: the same reconcile fed from YAML files.
//! * [`kube`] — the API-server mode, one file per reconcile step.
//! * [`leader`] — Lease election (a pure decision and the lock that applies it).
//! * [`managed`], [`managed_settings`], [`mesh_pki`] — pure: the StatefulSet, Service and Secret
//!   of a node with `spec.managed`, and its mesh certificates.
//! * [`metrics`], [`cli`] — the controller's Prometheus metrics and probes; its command line.

pub mod cli;
pub mod conditions;
pub mod fleet;
pub mod kube;
pub mod leader;
pub mod managed;
pub mod managed_settings;
pub mod manifests;
pub mod mesh_pki;
pub mod metrics;
pub mod notices;
pub mod status;

#[cfg(test)]
mod mock_api;
