//! The per-node mesh plan: which remote extensions a node mirrors, from whom, and which of its
//! own extensions other nodes watch.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{LOCAL_CONTEXT, mirror_device};
use crate::topology::{Node, Topology};

/// A node's part in the device-state mesh.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshPlan {
    /// The node this plan is for.
    pub node: String,
    /// Owners to subscribe to, sorted by node name.
    pub sources: Vec<MeshSource>,
    /// Own extensions that other nodes watch (filter at the sender), sorted.
    pub exports: Vec<MeshExport>,
}

/// One owning node and what this node mirrors from it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshSource {
    /// The owning node.
    pub node: String,
    /// Its agent's endpoint, when known from the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Extensions to mirror, sorted.
    pub imports: Vec<MeshImport>,
}

/// One mirrored extension.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshImport {
    /// The extension on the owning node.
    pub extension: String,
    /// The local custom device state its hint uses (`Custom:<owner>-<extension>`).
    pub device: String,
}

/// One exported extension.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshExport {
    /// The extension.
    pub extension: String,
    /// The context of its hint on this node.
    pub context: String,
    /// Nodes that watch it, sorted.
    pub watchers: Vec<String>,
}

pub(super) fn plan(topology: &Topology, node: &Node) -> MeshPlan {
    let mut sources: BTreeMap<&str, MeshSource> = BTreeMap::new();
    let mut exports: BTreeMap<&str, MeshExport> = BTreeMap::new();
    for m in &topology.mirrors {
        if m.watcher == node.name {
            let source = sources.entry(&m.owner).or_insert_with(|| MeshSource {
                node: m.owner.clone(),
                endpoint: topology.nodes.get(&m.owner).and_then(|o| o.agent_endpoint.clone()),
                imports: Vec::new(),
            });
            source.imports.push(MeshImport {
                extension: m.extension.clone(),
                device: mirror_device(&m.owner, &m.extension),
            });
        }
        if m.owner == node.name {
            let export = exports.entry(&m.extension).or_insert_with(|| MeshExport {
                extension: m.extension.clone(),
                context: LOCAL_CONTEXT.to_owned(),
                watchers: Vec::new(),
            });
            export.watchers.push(m.watcher.clone());
        }
    }
    // `mirrors` is a sorted set, so imports and watchers arrive sorted already.
    MeshPlan {
        node: node.name.clone(),
        sources: sources.into_values().collect(),
        exports: exports.into_values().collect(),
    }
}
