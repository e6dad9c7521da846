//! A node's bundle: file name → contents, the mesh plan, and a content hash.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::MeshPlan;

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
    /// Hex SHA-256 over files and mesh plan; equal hashes mean nothing to apply.
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
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("namespace", &self.namespace)
            .field("node", &self.node)
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .field("hash", &self.short_hash())
            .finish_non_exhaustive()
    }
}

impl Bundle {
    /// Builds a bundle for `node` of the default namespace and computes its hash.
    pub fn new(node: &str, files: BTreeMap<String, String>, mesh: MeshPlan) -> Self {
        let hash = content_hash(&files, &mesh);
        let namespace = crate::crd::DEFAULT_NAMESPACE.to_owned();
        Self { namespace, node: node.to_owned(), files, mesh, hash }
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

    /// The first 12 hex digits of the hash, for people.
    pub fn short_hash(&self) -> &str {
        &self.hash[..12.min(self.hash.len())]
    }

    /// Writes the files and `mesh.json` into `dir` (created if needed), mode 0600: the files
    /// hold secrets.
    pub fn write_to(&self, dir: &Path) -> Result<(), BundleError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| BundleError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mesh = serde_json::to_string_pretty(&self.mesh).expect("mesh plan serializes") + "\n";
        for (name, contents) in
            self.files.iter().map(|(n, c)| (n.as_str(), c)).chain([(MESH_PLAN_FILE, &mesh)])
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
                } else {
                    files.insert(rel, text);
                }
            }
        }
        let mesh = mesh.unwrap_or_else(|| MeshPlan { node: node.to_owned(), ..MeshPlan::default() });
        Ok(Self::new(node, files, mesh))
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

/// SHA-256 over every file (name and contents, length-prefixed) and the canonical mesh plan.
fn content_hash(files: &BTreeMap<String, String>, mesh: &MeshPlan) -> String {
    let mut h = Sha256::new();
    let mesh = serde_json::to_string(mesh).expect("mesh plan serializes");
    for (name, contents) in
        files.iter().map(|(n, c)| (n.as_str(), c.as_str())).chain([(MESH_PLAN_FILE, mesh.as_str())])
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

    #[test]
    fn debug_names_the_files_but_never_shows_them() {
        let files =
            BTreeMap::from([("pjsip_operator.conf".to_owned(), "password=Hunter2Hunter2".to_owned())]);
        let bundle = Bundle::new("office-a", files, MeshPlan::default()).in_namespace("pbx");
        let text = format!("{bundle:?}");
        assert!(text.contains("pjsip_operator.conf") && text.contains("pbx"), "{text}");
        assert!(!text.contains("Hunter2"), "{text}");
    }
}
