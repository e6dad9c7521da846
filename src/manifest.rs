//! Kubernetes-style YAML manifests (what you would `kubectl apply`) → one [`ResourceSet`] per
//! namespace. Used by `render` and by the controller's `--manifests` mode.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use serde::de::DeserializeOwned;

use crate::crd::{AsteriskNode, BlfSubscription, DEFAULT_NAMESPACE, GROUP, Phone, Trunk, VERSION};
use crate::secret::SecretValue;
use crate::topology::ResourceSet;

/// Reading manifests failed.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A file or folder could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file is not YAML.
    #[error("{source_name}: not valid YAML: {message}")]
    Yaml {
        /// File name (or `<embedded …>`).
        source_name: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A document is not a valid resource of its kind.
    #[error("{source_name}: document {index}: {kind} {name:?}: {source}")]
    Document {
        /// File name.
        source_name: String,
        /// 1-based document number in the file.
        index: usize,
        /// The document's kind.
        kind: String,
        /// The document's name.
        name: String,
        /// Why it does not fit the kind's type.
        source: serde_json::Error,
    },
    /// A `metadata.namespace` that is not a namespace name.
    #[error(
        "{source_name}: document {index}: metadata.namespace {namespace:?} is not a DNS-1123 label; {}",
        crate::crd::rules::DNS_LABEL_FIX
    )]
    Namespace {
        /// File name.
        source_name: String,
        /// 1-based document number.
        index: usize,
        /// The namespace found.
        namespace: String,
    },
    /// One of this operator's kinds with an apiVersion it does not serve.
    #[error("{source_name}: document {index}: {kind} has apiVersion {api_version:?}; use {GROUP}/{VERSION}")]
    ApiVersion {
        /// File name.
        source_name: String,
        /// 1-based document number.
        index: usize,
        /// The kind.
        kind: String,
        /// The apiVersion found.
        api_version: String,
    },
}

/// Resources read from manifests, by namespace, plus what was skipped.
#[derive(Clone, Debug, Default)]
pub struct Manifests {
    /// One resource set per namespace.
    pub namespaces: BTreeMap<String, ResourceSet>,
    /// `kind name` of documents of other kinds, which were ignored.
    pub ignored: Vec<String>,
}

impl Manifests {
    /// The set of `namespace`, created empty when absent.
    pub fn namespace_mut(&mut self, namespace: &str) -> &mut ResourceSet {
        self.namespaces
            .entry(namespace.to_owned())
            .or_insert_with(|| ResourceSet { namespace: namespace.to_owned(), ..ResourceSet::default() })
    }

    /// Adds every document of one YAML text.
    pub fn add_yaml(&mut self, source_name: &str, text: &str) -> Result<(), ManifestError> {
        let docs: Vec<serde_json::Value> =
            serde_saphyr::from_multiple_with_options(text, parse_options()).map_err(|e| {
                ManifestError::Yaml { source_name: source_name.to_owned(), message: e.to_string() }
            })?;
        for (i, doc) in docs.into_iter().enumerate() {
            self.add_document(source_name, i + 1, doc)?;
        }
        Ok(())
    }

    fn add_document(
        &mut self,
        source_name: &str,
        index: usize,
        doc: serde_json::Value,
    ) -> Result<(), ManifestError> {
        if doc.is_null() {
            return Ok(());
        }
        let text = |field: &str| doc.get(field).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        let meta = |field: &str| {
            doc.get("metadata")
                .and_then(|m| m.get(field))
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let (kind, api_version, name) = (text("kind"), text("apiVersion"), meta("name"));
        let namespace =
            Some(meta("namespace")).filter(|n| !n.is_empty()).unwrap_or_else(|| DEFAULT_NAMESPACE.into());
        // It names output folders and goes into the secrets file: a DNS-1123 label, as the API
        // server requires of every namespace.
        if !crate::crd::rules::is_dns_label(&namespace) {
            return Err(ManifestError::Namespace { source_name: source_name.to_owned(), index, namespace });
        }
        let ours = matches!(kind.as_str(), "AsteriskNode" | "Trunk" | "Phone" | "BlfSubscription");
        if ours && api_version != format!("{GROUP}/{VERSION}") {
            return Err(ManifestError::ApiVersion {
                source_name: source_name.to_owned(),
                index,
                kind,
                api_version,
            });
        }
        fn typed<T: DeserializeOwned>(doc: serde_json::Value) -> Result<T, serde_json::Error> {
            serde_json::from_value(doc)
        }
        let wrap = |source| ManifestError::Document {
            source_name: source_name.to_owned(),
            index,
            kind: kind.clone(),
            name: name.clone(),
            source,
        };
        let set = self.namespace_mut(&namespace);
        match kind.as_str() {
            "AsteriskNode" => {
                set.nodes.push(with_namespace(typed::<AsteriskNode>(doc).map_err(wrap)?, &namespace))
            }
            "Trunk" => set.trunks.push(with_namespace(typed::<Trunk>(doc).map_err(wrap)?, &namespace)),
            "Phone" => set.phones.push(with_namespace(typed::<Phone>(doc).map_err(wrap)?, &namespace)),
            "BlfSubscription" => set
                .blf_subscriptions
                .push(with_namespace(typed::<BlfSubscription>(doc).map_err(wrap)?, &namespace)),
            "Secret" if api_version == "v1" => {
                let secret: Secret = typed(doc).map_err(wrap)?;
                let entry = set.secrets.entry(name.clone()).or_default();
                for (key, value) in secret.data.unwrap_or_default() {
                    entry.insert(key, SecretValue::new(String::from_utf8_lossy(&value.0).into_owned()));
                }
                for (key, value) in secret.string_data.unwrap_or_default() {
                    entry.insert(key, SecretValue::new(value));
                }
            }
            _ => self.ignored.push(format!("{kind} {name}")),
        }
        Ok(())
    }

    /// Adds a file, or every `.yaml`/`.yml` file under a folder (sorted, recursively).
    pub fn add_path(&mut self, path: &Path) -> Result<(), ManifestError> {
        let io = |source| ManifestError::Io { path: path.to_owned(), source };
        if path.is_dir() {
            let mut entries: Vec<PathBuf> =
                std::fs::read_dir(path).map_err(io)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
            entries.sort();
            for entry in entries {
                let yaml = entry.extension().is_some_and(|e| e == "yaml" || e == "yml");
                if entry.is_dir() || yaml {
                    self.add_path(&entry)?;
                }
            }
            return Ok(());
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        self.add_yaml(&path.display().to_string(), &text)
    }
}

/// The YAML parser's limits, raised for fleets: one file may hold tens of thousands of Phone
/// documents (the parser's defaults stop at 1,024 documents and 250,000 nodes). Anchor and alias
/// limits stay at the defaults that guard against alias bombs.
fn parse_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_documents = 1_000_000;
    budget.max_nodes = 100_000_000;
    budget.max_events = 400_000_000;
    budget.max_reader_input_bytes = Some(1024 * 1024 * 1024);
    budget.max_total_scalar_bytes = 1024 * 1024 * 1024;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

fn with_namespace<K: kube::Resource>(mut resource: K, namespace: &str) -> K {
    resource.meta_mut().namespace = Some(namespace.to_owned());
    resource
}

/// Renders generated secrets as Secret manifests (`stringData`), to keep them for the next run.
pub fn secrets_yaml(namespace: &str, secrets: &BTreeMap<String, BTreeMap<String, SecretValue>>) -> String {
    let mut out = String::from(
        "# Secrets generated by asterisk-operator render. Keep this file private (mode 0600).\n",
    );
    for (name, keys) in secrets {
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\ntype: Opaque\nstringData:\n"
        ));
        for (key, value) in keys {
            // A JSON string is a YAML double-quoted scalar: newlines (PEM) survive as \n.
            let quoted = serde_json::to_string(value.expose()).expect("a string serializes");
            out.push_str(&format!("  {key}: {quoted}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_may_hold_thousands_of_documents() {
        let mut yaml = String::new();
        for i in 0..5_000 {
            yaml.push_str(&format!(
                "---\napiVersion: asterisk.operator.dev/v1alpha1\nkind: Phone\nmetadata: {{name: p{i}}}\n\
                 spec: {{node: office-a, extension: \"{}\", displayName: Desk {i}}}\n",
                100_000 + i
            ));
        }
        let mut manifests = Manifests::default();
        manifests.add_yaml("big.yaml", &yaml).expect("a big fleet file parses");
        assert_eq!(manifests.namespaces["default"].phones.len(), 5_000);
    }

    #[test]
    fn alias_bombs_are_still_refused() {
        let bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
                    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
                    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n\
                    g: [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n";
        assert!(Manifests::default().add_yaml("bomb.yaml", bomb).is_err());
    }
}
