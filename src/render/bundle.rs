//! A node's bundle: file name → contents, the mesh plan, and a content hash.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::MeshPlan;
use super::provision::{PROVISIONING_DIR, PROVISIONING_INDEX_FILE, Provisioning, ProvisioningIndex};

/// Name of the mesh plan inside a written bundle folder.
pub const MESH_PLAN_FILE: &str = "mesh.json";

/// Everything one node needs: its owned config files and mesh settings.
///
/// Its `Debug` shows the node, the file names and the hash, never the contents: the files hold
/// SIP and trunk secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The namespace of the node (its fleet): with `node`, who the bundle is for. The agent
    /// refuses a bundle for another namespace or node. Not part of the hash (it names, it is not
    /// content).
    pub namespace: String,
    /// The node it is for.
    pub node: String,
    /// Relative file name → contents (config files and RSA keys).
    pub files: BTreeMap<String, String>,
    /// Which remote extensions this node mirrors and which of its own it exports.
    pub mesh: MeshPlan,
    /// The desk phones' provisioning files: served by the agent, never written where Asterisk
    /// reads its configuration.
    pub provisioning: Provisioning,
    /// Hex SHA-256 over files, mesh plan and provisioning files; equal hashes mean nothing to apply.
    pub hash: String,
}

/// Reading or writing a bundle folder failed.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// File system error, with the path.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// `mesh.json` is not a mesh plan.
    #[error("{path}: not a mesh plan: {source}")]
    MeshPlan {
        /// The file.
        path: PathBuf,
        /// Why it does not parse.
        source: serde_json::Error,
    },
    /// A bundle file name that would escape the bundle folder.
    #[error("bundle file name {0:?} is not a plain relative path")]
    BadFileName(String),
    /// `provisioning.json` is not a provisioning index.
    #[error("{path}: not a provisioning index: {source}")]
    ProvisioningIndex {
        /// The file.
        path: PathBuf,
        /// Why it does not parse.
        source: serde_json::Error,
    },
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("namespace", &self.namespace)
            .field("node", &self.node)
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .field("provisioning", &self.provisioning)
            .field("hash", &self.short_hash())
            .finish_non_exhaustive()
    }
}

impl Bundle {
    /// Builds a bundle for `node` of the default namespace and computes its hash.
    pub fn new(node: &str, files: BTreeMap<String, String>, mesh: MeshPlan) -> Self {
        let provisioning = Provisioning::default();
        let hash = content_hash(&files, &mesh, &provisioning);
        let namespace = crate::crd::DEFAULT_NAMESPACE.to_owned();
        Self { namespace, node: node.to_owned(), files, mesh, provisioning, hash }
    }

    /// What a node is left with when it leaves the fleet (its AsteriskNode deleted): no files,
    /// no mesh. Applying it removes every file the operator wrote there, and with them the
    /// phones' and trunks' credentials.
    pub fn retired(namespace: &str, node: &str) -> Self {
        let mesh = MeshPlan { node: node.to_owned(), ..MeshPlan::default() };
        Self::new(node, BTreeMap::new(), mesh).in_namespace(namespace)
    }

    /// The same bundle for a node of `namespace`.
    pub fn in_namespace(mut self, namespace: &str) -> Self {
        namespace.clone_into(&mut self.namespace);
        self
    }

    /// The same bundle carrying `provisioning` (and hashed with it).
    pub fn with_provisioning(self, provisioning: Provisioning) -> Self {
        let hash = content_hash(&self.files, &self.mesh, &provisioning);
        Self { provisioning, hash, ..self }
    }

    /// The first 12 hex digits of the hash, for people.
    pub fn short_hash(&self) -> &str {
        &self.hash[..12.min(self.hash.len())]
    }

    /// Writes the files and `mesh.json` into `dir` (created if needed), and the provisioning
    /// files under `provisioning/` with their index `provisioning.json`; mode 0600: the files
    /// hold secrets.
    pub fn write_to(&self, dir: &Path) -> Result<(), BundleError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| BundleError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mesh = serde_json::to_string_pretty(&self.mesh).expect("mesh plan serializes") + "\n";
        let mut extra = vec![(MESH_PLAN_FILE.to_owned(), mesh)];
        if !self.provisioning.is_empty() {
            let index =
                serde_json::to_string_pretty(&self.provisioning.index).expect("index serializes") + "\n";
            extra.push((PROVISIONING_INDEX_FILE.to_owned(), index));
            for (name, contents) in &self.provisioning.files {
                extra.push((format!("{PROVISIONING_DIR}/{}", checked_name(name)?), contents.clone()));
            }
        }
        for (name, contents) in
            self.files.iter().map(|(n, c)| (n.as_str(), c)).chain(extra.iter().map(|(n, c)| (n.as_str(), c)))
        {
            let path = dir.join(checked_name(name)?);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            write_private(&path, contents.as_bytes()).map_err(io(&path))?;
        }
        Ok(())
    }

    /// Reads a bundle folder written by [`Bundle::write_to`] (what `push` sends).
    pub fn read_from(node: &str, dir: &Path) -> Result<Self, BundleError> {
        let mut files = BTreeMap::new();
        let mut mesh = None;
        let mut provisioning = Provisioning::default();
        let mut stack = vec![dir.to_owned()];
        while let Some(folder) = stack.pop() {
            let entries = std::fs::read_dir(&folder)
                .map_err(|source| BundleError::Io { path: folder.clone(), source })?;
            for entry in entries {
                let path = entry.map_err(|source| BundleError::Io { path: folder.clone(), source })?.path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let text = std::fs::read_to_string(&path)
                    .map_err(|source| BundleError::Io { path: path.clone(), source })?;
                let rel = path.strip_prefix(dir).unwrap_or(&path).to_string_lossy().replace('\\', "/");
                if rel == MESH_PLAN_FILE {
                    mesh = Some(
                        serde_json::from_str(&text)
                            .map_err(|source| BundleError::MeshPlan { path: path.clone(), source })?,
                    );
                } else if rel == PROVISIONING_INDEX_FILE {
                    provisioning.index = serde_json::from_str::<ProvisioningIndex>(&text)
                        .map_err(|source| BundleError::ProvisioningIndex { path: path.clone(), source })?;
                } else if let Some(name) =
                    rel.strip_prefix(PROVISIONING_DIR).and_then(|r| r.strip_prefix('/'))
                {
                    provisioning.files.insert(name.to_owned(), text);
                } else {
                    files.insert(rel, text);
                }
            }
        }
        let mesh = mesh.unwrap_or_else(|| MeshPlan { node: node.to_owned(), ..MeshPlan::default() });
        Ok(Self::new(node, files, mesh).with_provisioning(provisioning))
    }
}

fn checked_name(name: &str) -> Result<&str, BundleError> {
    let ok = !name.is_empty()
        && !name.starts_with('/')
        && name.split('/').all(|part| !part.is_empty() && part != "." && part != "..");
    if ok { Ok(name) } else { Err(BundleError::BadFileName(name.to_owned())) }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path)?.write_all(bytes)
}

/// SHA-256 over every file (name and contents, length-prefixed), the canonical mesh plan and,
/// when there are any, the provisioning files and their index (so a bundle without desk phones
/// hashes as it always did).
fn content_hash(files: &BTreeMap<String, String>, mesh: &MeshPlan, provisioning: &Provisioning) -> String {
    let mut h = Sha256::new();
    let mesh = serde_json::to_string(mesh).expect("mesh plan serializes");
    let mut extra = vec![(MESH_PLAN_FILE.to_owned(), mesh)];
    if !provisioning.is_empty() {
        let index = serde_json::to_string(&provisioning.index).expect("index serializes");
        extra.push((PROVISIONING_INDEX_FILE.to_owned(), index));
        extra.extend(provisioning.files.iter().map(|(n, c)| (format!("{PROVISIONING_DIR}/{n}"), c.clone())));
    }
    for (name, contents) in files
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_str()))
        .chain(extra.iter().map(|(n, c)| (n.as_str(), c.as_str())))
    {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((contents.len() as u64).to_le_bytes());
        h.update(contents.as_bytes());
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::DeviceVendor;
    use crate::render::ServedFile;

    #[test]
    fn debug_names_the_files_but_never_shows_them() {
        let files =
            BTreeMap::from([("pjsip_operator.conf".to_owned(), "password=Hunter2Hunter2".to_owned())]);
        let bundle = Bundle::new("office-a", files, MeshPlan::default()).in_namespace("pbx");
        let text = format!("{bundle:?}");
        assert!(text.contains("pjsip_operator.conf") && text.contains("pbx"), "{text}");
        assert!(!text.contains("Hunter2"), "{text}");
    }

    #[test]
    fn a_written_folder_reads_back_as_the_same_bundle_provisioning_included() {
        let mut provisioning = Provisioning::default();
        provisioning.files.insert("001a2b3c4d5e.cfg".into(), "#!version:1.0.0.1\n".into());
        provisioning.index.files.insert(
            "001a2b3c4d5e.cfg".into(),
            ServedFile { phone: Some("p".into()), vendor: DeviceVendor::Yealink },
        );
        let files = BTreeMap::from([("pjsip_operator.conf".to_owned(), "[x]\n".to_owned())]);
        let bundle = Bundle::new("a", files, MeshPlan { node: "a".into(), ..MeshPlan::default() })
            .with_provisioning(provisioning);
        let dir = std::env::temp_dir().join(format!("ao-bundle-{}", std::process::id()));
        bundle.write_to(&dir).unwrap();
        assert!(dir.join("provisioning/001a2b3c4d5e.cfg").is_file());
        assert_eq!(Bundle::read_from("a", &dir).unwrap(), bundle);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
