//! Read: the nodes leaving the fleet — deleted AsteriskNodes beside an existing server that
//! still carry the cleanup finalizer — with the credentials to reach their agents one last time,
//! to push them the empty bundle ([`Bundle::retired`](crate::render::Bundle::retired)).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::{Resource, ResourceExt};

use super::names::FINALIZER;
use super::sources::Stores;
use super::workloads::cached;
use crate::controller::credentials::NodeCredentials;
use crate::controller::file_credentials;
use crate::controller::fleet::{AgentTarget, Retiring};
use crate::controller::secret_roles::SecretRole;
use crate::crd::namespace_of;
use crate::topology::managed_workload_name;

/// The retiring nodes by (namespace, node), and how to reach each one's agent.
pub(crate) type Retirements = (BTreeMap<(String, String), Retiring>, BTreeMap<(String, String), AgentTarget>);

/// Every deleted node with an agent endpoint still holding the finalizer; its credentials from
/// its Secret (cached, labelled), or from the secrets file where there is no Secrets API.
pub(crate) fn retiring(
    stores: &Stores,
    secrets: Option<&[Arc<Secret>]>,
    secrets_file: Option<&Path>,
) -> Retirements {
    let mut retiring = BTreeMap::new();
    let mut targets = BTreeMap::new();
    for node in stores.nodes.state() {
        let meta = node.meta();
        let held = meta.finalizers.iter().flatten().any(|f| f == FINALIZER);
        let (Some(_), true, None, Some(agent)) =
            (&meta.deletion_timestamp, held, &node.spec.managed, &node.spec.agent)
        else {
            continue;
        };
        let (ns, name) = (namespace_of(meta), node.name_any());
        let access = match (secrets, secrets_file) {
            (Some(store), _) => cached(store, &ns, &managed_workload_name(&name), SecretRole::Node)
                .ok_or_else(|| {
                    format!(
                        "its Secret {} is gone: its agent cannot be reached",
                        managed_workload_name(&name)
                    )
                })
                .and_then(|s| NodeCredentials::from_secret(&s).map_err(|e| e.to_string()))
                .map(|c| c.agent_access(&ns, &name, false)),
            (None, Some(file)) => file_credentials::access(file, &ns, &name),
            (None, None) => Err("no Secrets API and no secrets file: its credentials are unknown".into()),
        };
        retiring.insert((ns.clone(), name.clone()), Retiring::new(&ns, &name, &agent.endpoint));
        targets.insert((ns, name), AgentTarget { managed: None, access });
    }
    (retiring, targets)
}
