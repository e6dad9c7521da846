//! The `render` command: manifests in, one folder of config files per node out. The same
//! resolve and render code the controller runs, with secrets generated locally.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::manifest::{self, DocumentError, ManifestError, Manifests};
use crate::render::{self, Bundle, BundleError};
use crate::secret::SecretValue;
use crate::topology::{self, Resolution, ValidationError};

/// The example fleet compiled into the binary: what `render` uses when given no manifests.
pub const EMBEDDED_EXAMPLE: (&str, &str) =
    ("<embedded examples/two-offices.yaml>", include_str!("../examples/two-offices.yaml"));

/// Name of the file that keeps generated secrets between runs, inside the output folder.
pub const SECRETS_FILE: &str = "secrets.yaml";

/// Rendering manifests to folders failed.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// The manifests could not be read.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A bundle could not be written.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The secrets file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Nothing to render.
    #[error("the manifests hold no AsteriskNode, Trunk, Phone or BlfSubscription")]
    Empty,
}

/// What one `render` run did, per namespace.
#[derive(Debug, Default)]
pub struct RenderReport {
    /// Namespace → resolution and rendered bundles.
    pub fleets: BTreeMap<String, FleetReport>,
    /// Documents of other kinds that were skipped.
    pub ignored: Vec<String>,
    /// Documents left out because they could not be read (each named with its file, number,
    /// field and fix).
    pub document_errors: Vec<DocumentError>,
    /// `namespace/secret/key` of every secret generated in this run.
    pub generated_secrets: Vec<String>,
}

/// One namespace's result.
#[derive(Debug)]
pub struct FleetReport {
    /// The resolved topology and its errors.
    pub resolution: Resolution,
    /// Bundles by node.
    pub bundles: BTreeMap<String, Bundle>,
    /// Where they were written.
    pub dir: PathBuf,
}

impl RenderReport {
    /// Every validation error of every namespace.
    pub fn errors(&self) -> impl Iterator<Item = &ValidationError> {
        self.fleets.values().flat_map(|f| f.resolution.errors.iter())
    }

    /// Every problem for people: unreadable documents first, then invalid resources.
    pub fn problems(&self) -> Vec<String> {
        let documents = self.document_errors.iter().map(ToString::to_string);
        documents.chain(self.errors().map(ToString::to_string)).collect()
    }

    /// A summary for people: nodes, phones, trunks, routes, BLF mirrors and hashes.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for (namespace, fleet) in &self.fleets {
            let t = &fleet.resolution.topology;
            let _ = writeln!(
                out,
                "namespace {namespace}: {} nodes, {} phones, {} trunks, {} routes, {} BLF mirrors -> {}",
                t.nodes.len(),
                t.phones.len(),
                t.trunks.len(),
                t.routes.values().map(Vec::len).sum::<usize>(),
                t.mirrors.len(),
                fleet.dir.display()
            );
            for (name, bundle) in &fleet.bundles {
                let phones = t.phones.values().filter(|p| &p.node == name).count();
                let trunks = t.trunks.values().filter(|tr| tr.touches(name)).count();
                let routes: Vec<String> = t.routes[name]
                    .iter()
                    .map(|r| {
                        format!(
                            "{}->{}",
                            r.patterns.join("|"),
                            r.hops.iter().map(|h| h.trunk.as_str()).collect::<Vec<_>>().join(",")
                        )
                    })
                    .collect();
                let mirrors = t.mirrors.iter().filter(|m| &m.watcher == name).count();
                let _ = writeln!(
                    out,
                    "  {name:<16} {phones:>5} phones {trunks:>3} trunks {mirrors:>4} mirrors  hash {}  routes: {}",
                    bundle.short_hash(),
                    if routes.is_empty() { "-".to_owned() } else { routes.join(" ") }
                );
            }
        }
        if !self.generated_secrets.is_empty() {
            let _ = writeln!(
                out,
                "generated {} secrets (kept in {SECRETS_FILE}): {}",
                self.generated_secrets.len(),
                self.generated_secrets.join(", ")
            );
        }
        if !self.ignored.is_empty() {
            let _ = writeln!(
                out,
                "ignored {} documents of other kinds: {}",
                self.ignored.len(),
                self.ignored.join(", ")
            );
        }
        out
    }
}

/// Fleets read from manifests, resolved and rendered, not yet written anywhere.
#[derive(Debug, Default)]
pub struct LoadedFleets {
    /// Namespace → its resources (with generated secrets filled in), resolution and bundles.
    pub fleets: BTreeMap<String, LoadedFleet>,
    /// Secrets generated in this load: namespace → Secret → key → value. Persist them with
    /// [`keep_generated_secrets`] so the next load reuses them.
    pub generated: BTreeMap<String, BTreeMap<String, BTreeMap<String, SecretValue>>>,
    /// Documents of other kinds that were skipped.
    pub ignored: Vec<String>,
    /// Documents left out because they could not be read.
    pub document_errors: Vec<DocumentError>,
}

/// One namespace's fleet.
#[derive(Debug)]
pub struct LoadedFleet {
    /// The resources, with generated secrets filled in.
    pub resources: topology::ResourceSet,
    /// The resolved topology and its errors.
    pub resolution: Resolution,
    /// Bundles by node.
    pub bundles: BTreeMap<String, Bundle>,
}

/// Reads the manifests under `inputs` (or the embedded example when `inputs` is empty) plus the
/// secrets kept in `kept_secrets` by earlier runs, generates the secrets still missing, and
/// resolves and renders every namespace. The `render` command and the controller's
/// `--manifests` mode both start here.
pub fn load_fleets(inputs: &[PathBuf], kept_secrets: &Path) -> Result<LoadedFleets, OfflineError> {
    let mut manifests = Manifests::default();
    if kept_secrets.is_file() {
        manifests.add_path(kept_secrets)?;
    }
    if inputs.is_empty() {
        manifests.add_yaml(EMBEDDED_EXAMPLE.0, EMBEDDED_EXAMPLE.1)?;
    }
    for input in inputs {
        manifests.add_path(input)?;
    }
    let has_resources = |s: &topology::ResourceSet| {
        !(s.nodes.is_empty() && s.trunks.is_empty() && s.phones.is_empty() && s.blf_subscriptions.is_empty())
    };
    manifests.namespaces.retain(|_, s| has_resources(s));
    if manifests.namespaces.is_empty() && manifests.errors.is_empty() {
        return Err(OfflineError::Empty);
    }
    let mut loaded = LoadedFleets {
        ignored: manifests.ignored,
        document_errors: manifests.errors,
        ..LoadedFleets::default()
    };
    for (namespace, mut set) in manifests.namespaces {
        for missing in topology::missing_secrets(&set) {
            let value = SecretValue::generate();
            set.secrets.entry(missing.name.clone()).or_default().insert(missing.key.clone(), value.clone());
            loaded
                .generated
                .entry(namespace.clone())
                .or_default()
                .entry(missing.name)
                .or_default()
                .insert(missing.key, value);
        }
        let resolution = topology::resolve(&set);
        let bundles = render::render_all(&resolution.topology);
        loaded.fleets.insert(namespace, LoadedFleet { resources: set, resolution, bundles });
    }
    Ok(loaded)
}

/// Reads the manifests (or the embedded example when `inputs` is empty), generates missing
/// secrets (kept in `<out>/secrets.yaml` and read back next time), resolves each namespace
/// and writes `<out>/<node>/` (`<out>/<namespace>/<node>/` when there are several namespaces).
/// With `strict`, nothing is written when any resource is invalid.
pub fn render_manifests(inputs: &[PathBuf], out: &Path, strict: bool) -> Result<RenderReport, OfflineError> {
    let kept = out.join(SECRETS_FILE);
    let loaded = load_fleets(inputs, &kept)?;
    let several = loaded.fleets.len() > 1;
    let mut report = RenderReport {
        ignored: loaded.ignored,
        document_errors: loaded.document_errors,
        ..RenderReport::default()
    };
    for (namespace, secrets) in &loaded.generated {
        for (name, keys) in secrets {
            report.generated_secrets.extend(keys.keys().map(|key| format!("{namespace}/{name}/{key}")));
        }
    }
    for (namespace, fleet) in loaded.fleets {
        let dir = if several { out.join(&namespace) } else { out.to_owned() };
        report
            .fleets
            .insert(namespace, FleetReport { resolution: fleet.resolution, bundles: fleet.bundles, dir });
    }
    if strict && !report.problems().is_empty() {
        return Ok(report);
    }
    for fleet in report.fleets.values() {
        for (node, bundle) in &fleet.bundles {
            bundle.write_to(&fleet.dir.join(node))?;
        }
    }
    keep_generated_secrets(&kept, &loaded.generated)?;
    Ok(report)
}

/// Appends newly generated secrets to the kept-secrets file (created 0600); nothing to do when
/// none were generated.
pub fn keep_generated_secrets(
    path: &Path,
    generated: &BTreeMap<String, BTreeMap<String, BTreeMap<String, SecretValue>>>,
) -> Result<(), OfflineError> {
    if generated.is_empty() {
        return Ok(());
    }
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| OfflineError::Io { path: path.to_owned(), source };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).map_err(io)?;
    for (namespace, secrets) in generated {
        file.write_all(manifest::secrets_yaml(namespace, secrets).as_bytes()).map_err(io)?;
    }
    Ok(())
}
