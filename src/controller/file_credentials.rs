//! Node credentials kept in the secrets file, where there is no Secrets API to keep them:
//! `--manifests` mode, and a server that serves no Secrets. Each node's Secret `asterisk-<node>`
//! (agent token, the agent's certificate the controller pins, AMI secret) is read from the file;
//! a node without one gets one generated and appended (the file is 0600).

use std::collections::BTreeMap;
use std::path::Path;

use super::credentials::NodeCredentials;
use super::fleet::AgentTarget;
use crate::agent::client::AgentAccess;
use crate::manifest::Manifests;
use crate::offline::{self, LoadedFleet};
use crate::secret::SecretValue;
use crate::topology::managed_workload_name;

/// How to reach the agent of node `node` with the credentials the file keeps for it (none are
/// generated: a node leaving the fleet is reached with what its agent was given, or not at all).
pub fn access(file: &Path, namespace: &str, node: &str) -> Result<AgentAccess, String> {
    let mut kept = Manifests::default();
    kept.add_path(file).map_err(|e| format!("cannot read the secrets file: {e}"))?;
    let name = managed_workload_name(node);
    let values = kept
        .namespaces
        .get(namespace)
        .and_then(|set| set.secrets.get(&name))
        .ok_or_else(|| format!("the secrets file has no credentials for node {namespace}/{node}"))?;
    let credentials = NodeCredentials::from_values(namespace, &name, values).map_err(|e| e.to_string())?;
    Ok(credentials.agent_access(namespace, node, false))
}

/// A target for every valid node of `fleets` not run by the operator (`spec.agent`).
pub fn targets(
    file: &Path,
    fleets: &BTreeMap<String, LoadedFleet>,
) -> BTreeMap<(String, String), AgentTarget> {
    let mut kept = Manifests::default();
    if file.is_file()
        && let Err(e) = kept.add_path(file)
    {
        tracing::error!(error = %e, "cannot read the secrets file; no agent can be reached");
        return BTreeMap::new();
    }
    let mut generated: BTreeMap<String, BTreeMap<String, BTreeMap<String, SecretValue>>> = BTreeMap::new();
    let mut targets = BTreeMap::new();
    for (namespace, fleet) in fleets {
        for node in fleet.resolution.topology.nodes.values().filter(|n| !n.managed) {
            let name = managed_workload_name(&node.name);
            let stored = kept.namespaces.get(namespace).and_then(|set| set.secrets.get(&name));
            let credentials = match stored {
                Some(values) => {
                    NodeCredentials::from_values(namespace, &name, values).map_err(|e| e.to_string())
                }
                None => match NodeCredentials::generate(namespace, &node.name, false) {
                    Ok(c) => {
                        generated.entry(namespace.clone()).or_default().insert(name, c.values());
                        tracing::info!(%namespace, node = %node.name, "generated the node's agent credentials into the secrets file");
                        Ok(c)
                    }
                    Err(e) => Err(e.to_string()),
                },
            };
            let access = credentials.map(|c| c.agent_access(namespace, &node.name, false));
            targets.insert((namespace.clone(), node.name.clone()), AgentTarget { managed: None, access });
        }
    }
    if let Err(e) = offline::keep_generated_secrets(file, &generated) {
        tracing::error!(error = %e, "cannot keep the generated node credentials");
    }
    targets
}
