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
}

/// One document that could not be taken in: not YAML, not of its kind's shape, or an
/// apiVersion this operator does not serve. The document is left out, like a resource the
/// resolver finds invalid; the rest of the manifests are read on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: document {index}: {}{field}{problem}; {fix}", self.object(), field = if self.field.is_empty() { String::new() } else { format!("{}: ", self.field) })]
pub struct DocumentError {
    /// File name (or `<embedded …>`).
    pub source_name: String,
    /// 1-based document number in the file.
    pub index: usize,
    /// The document's kind, when readable.
    pub kind: Option<String>,
    /// Its namespace (the default when it names none).
    pub namespace: String,
    /// Its name, when readable.
    pub name: Option<String>,
    /// Field path inside the document, e.g. `spec.nat` (empty when the document is not YAML).
    pub field: String,
    /// What is wrong.
    pub problem: String,
    /// What to do about it.
    pub fix: String,
}

impl DocumentError {
    /// `Kind namespace/name: ` as far as readable.
    fn object(&self) -> String {
        match (&self.kind, &self.name) {
            (Some(k), Some(n)) => format!("{k} {}/{n}: ", self.namespace),
            (Some(k), None) => format!("{k}: "),
            _ => String::new(),
        }
    }

    /// The message for a status condition: where, field, problem and fix.
    pub fn condition_message(&self) -> String {
        let field = if self.field.is_empty() { String::new() } else { format!("{}: ", self.field) };
        format!("{} document {}: {field}{}; {}", self.source_name, self.index, self.problem, self.fix)
    }
}

/// Resources read from manifests, by namespace, plus what was skipped.
#[derive(Clone, Debug, Default)]
pub struct Manifests {
    /// One resource set per namespace.
    pub namespaces: BTreeMap<String, ResourceSet>,
    /// `kind name` of documents of other kinds, which were ignored.
    pub ignored: Vec<String>,
    /// Documents left out because they could not be read as what they claim to be.
    pub errors: Vec<DocumentError>,
}

impl Manifests {
    /// The set of `namespace`, created empty when absent.
    pub fn namespace_mut(&mut self, namespace: &str) -> &mut ResourceSet {
        self.namespaces
            .entry(namespace.to_owned())
            .or_insert_with(|| ResourceSet { namespace: namespace.to_owned(), ..ResourceSet::default() })
    }

    /// Adds every document of one YAML text. A document that is not YAML or does not fit its
    /// kind is recorded in [`Manifests::errors`] and left out; the others are added.
    pub fn add_yaml(&mut self, source_name: &str, text: &str) -> Result<(), ManifestError> {
        for (index, chunk) in documents(text) {
            match serde_saphyr::from_str_with_options::<serde_json::Value>(chunk, parse_options()) {
                Ok(doc) => self.add_document(source_name, index, doc),
                Err(e) => self.errors.push(DocumentError {
                    source_name: source_name.to_owned(),
                    index,
                    kind: None,
                    namespace: DEFAULT_NAMESPACE.to_owned(),
                    name: None,
                    field: String::new(),
                    problem: format!("not valid YAML: {e}"),
                    fix: "fix the YAML at the line and column given (lines count from the document's start)"
                        .into(),
                }),
            }
        }
        Ok(())
    }

    fn add_document(&mut self, source_name: &str, index: usize, doc: serde_json::Value) {
        if doc.is_null() {
            return;
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
        let error = |field: &str, problem: String, fix: String| DocumentError {
            source_name: source_name.to_owned(),
            index,
            kind: Some(kind.clone()),
            namespace: namespace.clone(),
            name: Some(name.clone()).filter(|n| !n.is_empty()),
            field: field.to_owned(),
            problem,
            fix,
        };
        // The namespace names output folders and goes into the secrets file: a DNS-1123 label,
        // as the API server requires of every namespace.
        if !crate::crd::rules::is_dns_label(&namespace) {
            let e = error(
                "metadata.namespace",
                format!("{namespace:?} is not a DNS-1123 label"),
                crate::crd::rules::DNS_LABEL_FIX.to_owned(),
            );
            self.errors.push(e);
            return;
        }
        let ours = matches!(kind.as_str(), "AsteriskNode" | "Trunk" | "Phone" | "BlfSubscription");
        if ours && api_version != format!("{GROUP}/{VERSION}") {
            let e = error(
                "apiVersion",
                format!("{api_version:?} is not served by this operator"),
                format!("use {GROUP}/{VERSION}"),
            );
            self.errors.push(e);
            return;
        }
        fn typed<T: DeserializeOwned>(doc: serde_json::Value) -> Result<T, (String, String)> {
            serde_path_to_error::deserialize(doc).map_err(|e| (e.path().to_string(), e.inner().to_string()))
        }
        let schema_error = |(field, message): (String, String)| {
            let field = if field == "." { String::new() } else { field };
            let (problem, fix) = schema_fix(&kind, &field, &message);
            error(&field, problem, fix)
        };
        let set = self.namespace_mut(&namespace);
        let added = match kind.as_str() {
            "AsteriskNode" => {
                typed::<AsteriskNode>(doc).map(|r| set.nodes.push(with_namespace(r, &namespace)))
            }
            "Trunk" => typed::<Trunk>(doc).map(|r| set.trunks.push(with_namespace(r, &namespace))),
            "Phone" => typed::<Phone>(doc).map(|r| set.phones.push(with_namespace(r, &namespace))),
            "BlfSubscription" => typed::<BlfSubscription>(doc)
                .map(|r| set.blf_subscriptions.push(with_namespace(r, &namespace))),
            "Secret" if api_version == "v1" => typed::<Secret>(doc).map(|secret| {
                let entry = set.secrets.entry(name.clone()).or_default();
                for (key, value) in secret.data.unwrap_or_default() {
                    entry.insert(key, SecretValue::new(String::from_utf8_lossy(&value.0).into_owned()));
                }
                for (key, value) in secret.string_data.unwrap_or_default() {
                    entry.insert(key, SecretValue::new(value));
                }
            }),
            _ => {
                self.ignored.push(format!("{kind} {name}"));
                Ok(())
            }
        };
        if let Err(e) = added {
            let e = schema_error(e);
            self.errors.push(e);
        }
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

/// The documents of a YAML stream with their 1-based numbers: split at the `---` lines (a
/// document marker at the start of a line ends any document, block scalars included), so one
/// broken document costs only itself. Text before the first marker is a document only when it
/// holds something besides comments.
fn documents(text: &str) -> Vec<(usize, &str)> {
    let mut starts = vec![0];
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let marker = line
            .strip_prefix("---")
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']));
        if marker && at > 0 {
            starts.push(at);
        }
        at += line.len();
    }
    let mut out = Vec::new();
    for (i, &start) in starts.iter().enumerate() {
        let chunk = &text[start..starts.get(i + 1).copied().unwrap_or(text.len())];
        let explicit = chunk.starts_with("---");
        let content = chunk.lines().any(|l| {
            let l = l.trim();
            !l.is_empty() && !l.starts_with('#') && l != "---" && l != "..."
        });
        if explicit || content {
            out.push((out.len() + 1, chunk));
        }
    }
    out
}

/// What is wrong with a field and how to fix it, from serde's message about it.
fn schema_fix(kind: &str, field: &str, message: &str) -> (String, String) {
    let explain = if field.is_empty() {
        format!("`kubectl explain {}`", kind.to_ascii_lowercase())
    } else {
        format!("`kubectl explain {}.{field}`", kind.to_ascii_lowercase())
    };
    let fix = if let Some(expected) = message.split_once(", expected ").map(|(_, e)| e) {
        if message.starts_with("unknown variant") {
            format!("use {expected} (see {explain})")
        } else if message.starts_with("unknown field") {
            format!("remove it or correct its spelling: expected {expected} (see {explain})")
        } else {
            format!("give {expected} (see {explain})")
        }
    } else if let Some(missing) = message.strip_prefix("missing field ") {
        format!("add {missing} (see {explain})")
    } else {
        format!("correct the value (see {explain})")
    };
    (message.to_owned(), fix)
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
        let mut manifests = Manifests::default();
        manifests.add_yaml("bomb.yaml", bomb).unwrap();
        assert_eq!(manifests.errors.len(), 1, "{:?}", manifests.errors);
        assert!(manifests.namespaces.is_empty());
    }

    const PHONE: &str = "apiVersion: asterisk.operator.dev/v1alpha1\nkind: Phone\nmetadata: {name: desk}\nspec: {node: office-a, extension: \"3001\"}\n";

    #[test]
    fn a_mistyped_document_is_reported_with_its_field_and_the_rest_is_read() {
        let text = format!(
            "# fleet\n{PHONE}---\napiVersion: asterisk.operator.dev/v1alpha1\nkind: Phone\nmetadata: {{name: bad, namespace: pbx}}\n\
             spec: {{node: office-a, extension: \"3002\", nat: maybe}}\n---\n{}---\n\
             apiVersion: asterisk.operator.dev/v1alpha1\nkind: AsteriskNode\nmetadata: {{name: node-x}}\n\
             spec: {{numbering: {{prefixes: [\"3\"], length: 4}}, sip: {{transport: carrier-pigeon}}}}\n---\n\
             key: [unclosed\n---\napiVersion: asterisk.operator.dev/v1\nkind: Trunk\nmetadata: {{name: t}}\n",
            PHONE.replace("desk", "desk-2").replace("3001", "3003")
        );
        let mut m = Manifests::default();
        m.add_yaml("fleet.yaml", &text).unwrap();
        let phones: Vec<_> =
            m.namespaces["default"].phones.iter().map(|p| p.metadata.name.clone().unwrap()).collect();
        assert_eq!(phones, ["desk", "desk-2"]);
        let e: Vec<String> = m.errors.iter().map(ToString::to_string).collect();
        assert_eq!(e.len(), 4, "{e:#?}");
        assert_eq!(
            e[0],
            "fleet.yaml: document 2: Phone pbx/bad: spec.nat: invalid type: string \"maybe\", expected a boolean; \
             give a boolean (see `kubectl explain phone.spec.nat`)"
        );
        assert!(e[1].starts_with("fleet.yaml: document 4: AsteriskNode default/node-x: spec.sip.transport: unknown variant `carrier-pigeon`"), "{}", e[1]);
        assert!(e[1].contains("use `udp` or `tcp`"), "{}", e[1]);
        assert!(e[2].starts_with("fleet.yaml: document 5: not valid YAML"), "{}", e[2]);
        assert!(
            e[3].contains("document 6: Trunk default/t: apiVersion:")
                && e[3].contains("use asterisk.operator.dev/v1alpha1"),
            "{}",
            e[3]
        );
        assert_eq!(m.errors[0].condition_message().split(": ").next(), Some("fleet.yaml document 2"));
    }

    #[test]
    fn documents_are_numbered_like_the_parser_numbers_them() {
        let d = |t: &str| documents(t).into_iter().map(|(i, c)| (i, c.trim().to_owned())).collect::<Vec<_>>();
        assert_eq!(d("a: 1\n---\nb: 2\n"), [(1, "a: 1".into()), (2, "---\nb: 2".into())]);
        assert_eq!(d("# c\n---\nb: 2\n"), [(1, "---\nb: 2".into())]);
        assert_eq!(d("x: |\n  ---\n---x: 1\n"), [(1, "x: |\n  ---\n---x: 1".into())]);
    }
}
