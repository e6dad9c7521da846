//! The controller: resources in, bundles pushed to agents, status written.
//!
//! * [`conditions`] — pure: metav1.Condition updates.
//! * [`status`] — pure: every resource's status from the resolution and the agents' answers.
//! * [`fleet`] — pushes changed bundles to agents (per-node backoff) and computes statuses.
//! * [`kube`] — the same reconcile fed by reflectors on the API server, status via server-side apply.
//! * [`managed`] — pure: the StatefulSet, Service and Secret of a node with `spec.managed`.
//! * [`manifests`] — the `--manifests DIR` mode: the same reconcile fed from YAML files.

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
