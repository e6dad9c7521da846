//! Topology → per-node [`Bundle`] (pure, deterministic, content-hashed).
//!
//! The owned files are included from the node's main configs, one line each, so a server keeps
//! its hand-written parts:
//!
//! | main file         | line                                 | owned file                   |
//! |-------------------|--------------------------------------|------------------------------|
//! | `pjsip.conf`      | `#tryinclude pjsip_operator.conf`      | transport, phones, trunks    |
//! | `iax.conf`        | `#tryinclude iax_operator.conf` (end)  | `[general](+)` binds and registrations, trunks |
//! | `extensions.conf` | `#tryinclude extensions_operator.conf` | contexts, hints, routes      |

mod bundle;
mod extensions;
mod iax;
mod mesh;
mod pjsip;
pub mod provision;

pub use bundle::{Bundle, BundleError, MESH_PLAN_FILE};
pub use mesh::{MeshExport, MeshImport, MeshPlan, MeshSource};
pub use provision::{
    PROVISIONING_DIR, PROVISIONING_INDEX_FILE, Provisioning, ProvisioningIndex, ServedFile,
    credential_verifier,
};

use crate::topology::Topology;

/// File name of the owned PJSIP part.
pub const PJSIP_FILE: &str = "pjsip_operator.conf";
/// File name of the owned IAX2 part.
pub const IAX_FILE: &str = "iax_operator.conf";
/// File name of the owned dialplan part.
pub const EXTENSIONS_FILE: &str = "extensions_operator.conf";
/// Folder of RSA key files (IAX2 `auth=rsa`), relative to the bundle; goes to Asterisk's astkeydir.
pub const KEYS_DIR: &str = "keys";

/// Context holding the node's own extensions and their hints.
pub const LOCAL_CONTEXT: &str = "operator-local";
/// Context holding the routes to other nodes and the mirrored hints of remote extensions.
pub const ROUTES_CONTEXT: &str = "operator-routes";
/// Name of the node's PJSIP transport section.
pub const TRANSPORT: &str = "operator-transport";

/// Incoming context of a trunk.
pub fn incoming_context(trunk: &str) -> String {
    format!("operator-from-{trunk}")
}

/// The custom device state that mirrors `extension` of node `owner` on a watching node.
/// `-` separates them (no `@`, which Asterisk reads as a context separator in hints).
pub fn mirror_device(owner: &str, extension: &str) -> String {
    format!("Custom:{owner}-{extension}")
}

/// Text of an Asterisk `.conf` file, built section by section.
struct ConfigText(String, bool);

impl ConfigText {
    /// A new file for `node`, with the do-not-edit header.
    fn new(node: &str) -> Self {
        Self(
            format!(
                "; Rendered by asterisk-operator for node {node}. Do not edit: the next apply overwrites it.\n\
                 ; Keep hand-written configuration in the main file that #tryincludes this one.\n"
            ),
            false,
        )
    }

    /// A blank line, then `; text`.
    fn comment(&mut self, text: &str) -> &mut Self {
        self.0.push_str("\n; ");
        self.0.push_str(text);
        self.0.push('\n');
        self.1 = true;
        self
    }

    /// A blank line between sections, except right under a comment.
    fn separate(&mut self) {
        if !std::mem::take(&mut self.1) {
            self.0.push('\n');
        }
    }

    /// Starts `[name]`.
    fn section(&mut self, name: &str) -> &mut Self {
        self.separate();
        self.0.push('[');
        self.0.push_str(name);
        self.0.push_str("]\n");
        self
    }

    /// Starts `[name](+)`: adds to a category the main file defines.
    fn extend_section(&mut self, name: &str) -> &mut Self {
        self.separate();
        self.0.push('[');
        self.0.push_str(name);
        self.0.push_str("](+)\n");
        self
    }

    /// `key=value`.
    fn set(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Self {
        use std::fmt::Write;
        let _ = writeln!(self.0, "{key}={value}");
        self
    }

    /// A raw line, e.g. `exten => …` or `register => …`.
    fn line(&mut self, line: impl std::fmt::Display) -> &mut Self {
        use std::fmt::Write;
        let _ = writeln!(self.0, "{line}");
        self
    }

    fn finish(self) -> String {
        self.0
    }
}

/// Renders the bundle of `node`. `None` when the topology has no such (valid) node.
pub fn render(topology: &Topology, node: &str) -> Option<Bundle> {
    let n = topology.nodes.get(node)?;
    let mut files = std::collections::BTreeMap::new();
    files.insert(PJSIP_FILE.to_owned(), pjsip::render(topology, n));
    files.insert(IAX_FILE.to_owned(), iax::render(topology, n));
    files.insert(EXTENSIONS_FILE.to_owned(), extensions::render(topology, n));
    files.extend(iax::key_files(topology, n));
    Some(
        Bundle::new(node, files, mesh::plan(topology, n))
            .in_namespace(&topology.namespace)
            .with_provisioning(provision::render(topology, n)),
    )
}

/// Renders every node of the topology, by node name.
pub fn render_all(topology: &Topology) -> std::collections::BTreeMap<String, Bundle> {
    topology.nodes.keys().filter_map(|n| render(topology, n).map(|b| (n.clone(), b))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::rules::{OPERATOR_PREFIX, phone_context_conflict, trunk_name_conflict};

    #[test]
    fn the_operators_own_names_are_the_reserved_ones() {
        for name in [LOCAL_CONTEXT, ROUTES_CONTEXT, &incoming_context("a-b")] {
            assert!(phone_context_conflict(name).is_some(), "{name} is not reserved as a context");
        }
        assert!(TRANSPORT.starts_with(OPERATOR_PREFIX) && trunk_name_conflict(TRANSPORT).is_some());
    }
}
