//! `controller --manifests DIR`: the reconcile fed from YAML files instead of the API server,
//! for a fleet without a cluster. Every interval it re-reads the manifests, resolves and
//! renders, lets the [`FleetReconciler`] push what changed, and writes every resource's status
//! to a file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde::Serialize;

use super::agent_policy::AgentPolicy;
use super::conditions::{ConditionUpdate, set_condition};
use super::file_credentials;
use super::fleet::{FleetReconciler, ReconcileReport};
use super::metrics::ControllerMetrics;
use super::notices::LoggedErrors;
use super::status::ResourceStatus;
use crate::manifest::DocumentError;
use crate::offline::{self, OfflineError};
use crate::topology::ObjectRef;

/// Running the controller on manifests failed.
#[derive(Debug, thiserror::Error)]
pub enum ManifestsError {
    /// The manifests could not be read or rendered.
    #[error(transparent)]
    Load(#[from] OfflineError),
    /// The status file could not be written.
    #[error("writing status file {path}: {source}")]
    StatusFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// Settings of the `--manifests` mode.
#[derive(Clone, Debug)]
pub struct ManifestsOptions {
    /// Manifest files or folders.
    pub inputs: Vec<PathBuf>,
    /// Where every resource's status is written (YAML).
    pub status_file: PathBuf,
    /// Where generated secrets and each node's agent credentials are kept between runs (0600).
    pub secrets_file: PathBuf,
    /// Where and how agents may be reached (each with its node's own credentials).
    pub agents: AgentPolicy,
}

/// The `--manifests` controller.
pub struct ManifestsController {
    opts: ManifestsOptions,
    fleet: FleetReconciler,
    /// Documents the last reconcile could not read, with their `Valid` condition (kept between
    /// reconciles so its transition time only moves when the error does).
    documents: Vec<(DocumentError, Vec<Condition>)>,
}

/// One entry of the status file.
#[derive(Serialize)]
struct StatusEntry<'a> {
    kind: &'static str,
    namespace: &'a str,
    name: &'a str,
    status: &'a ResourceStatus,
}

/// An entry of the status file for a document that could not be read: where it is, and a
/// `Valid=False` condition saying which field and how to fix it. The API server would have
/// refused such a document; here it is left out and the rest of the fleet is reconciled.
#[derive(Serialize)]
struct DocumentEntry<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    namespace: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    file: &'a str,
    document: usize,
    status: DocumentStatus<'a>,
}

#[derive(Serialize)]
struct DocumentStatus<'a> {
    conditions: &'a [Condition],
}

#[derive(Serialize)]
#[serde(untagged)]
enum Entry<'a> {
    Resource(StatusEntry<'a>),
    Document(DocumentEntry<'a>),
}

impl ManifestsController {
    /// A controller with nothing pushed yet.
    pub fn new(opts: ManifestsOptions) -> Self {
        let fleet = FleetReconciler::new(opts.agents.clone());
        Self { opts, fleet, documents: Vec::new() }
    }

    /// Documents the last reconcile left out, with the reason.
    pub fn document_errors(&self) -> impl Iterator<Item = &DocumentError> {
        self.documents.iter().map(|(e, _)| e)
    }

    /// The statuses computed by the last reconcile.
    pub fn statuses(&self) -> &BTreeMap<ObjectRef, ResourceStatus> {
        self.fleet.statuses()
    }

    /// Reads, resolves, renders, pushes what changed, writes the status file when it changed.
    pub async fn reconcile(&mut self) -> Result<ReconcileReport, ManifestsError> {
        let loaded = offline::load_fleets(&self.opts.inputs, &self.opts.secrets_file)?;
        offline::keep_generated_secrets(&self.opts.secrets_file, &loaded.generated)?;
        self.fleet.set_targets(file_credentials::targets(&self.opts.secrets_file, &loaded.fleets));
        let mut report = self.fleet.reconcile(&loaded.fleets).await;
        let documents_changed = self.set_document_errors(loaded.document_errors);
        report.errors.splice(0..0, self.documents.iter().map(|(e, _)| e.to_string()));
        report.status_changed |= documents_changed;
        if report.status_changed || !self.opts.status_file.exists() {
            self.write_status()?;
        }
        Ok(report)
    }

    /// Keeps each unreadable document's condition, its transition time unchanged while the
    /// same document stays broken. Returns whether anything changed.
    fn set_document_errors(&mut self, errors: Vec<DocumentError>) -> bool {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let key = |e: &DocumentError| (e.source_name.clone(), e.index);
        let mut previous: BTreeMap<_, _> =
            std::mem::take(&mut self.documents).into_iter().map(|(e, c)| (key(&e), (e, c))).collect();
        let mut changed = previous.len() != errors.len();
        for error in errors {
            let (old, mut conditions) = match previous.remove(&key(&error)) {
                Some((old, conditions)) => (Some(old), conditions),
                None => (None, Vec::new()),
            };
            // The resolver's reason for a field that breaks a rule the CRD schema states.
            let update =
                ConditionUpdate::failed(crate::topology::Reason::InvalidField, error.condition_message());
            changed |= set_condition(&mut conditions, update, None, &now) || old.as_ref() != Some(&error);
            self.documents.push((error, conditions));
        }
        changed
    }

    fn write_status(&self) -> Result<(), ManifestsError> {
        let resources = self.statuses().iter().map(|(o, status)| {
            Entry::Resource(StatusEntry {
                kind: o.kind.as_str(),
                namespace: &o.namespace,
                name: &o.name,
                status,
            })
        });
        let documents = self.documents.iter().map(|(e, conditions)| {
            Entry::Document(DocumentEntry {
                kind: e.kind.as_deref(),
                namespace: &e.namespace,
                name: e.name.as_deref(),
                file: &e.source_name,
                document: e.index,
                status: DocumentStatus { conditions },
            })
        });
        let entries: Vec<Entry> = resources.chain(documents).collect();
        let text = serde_saphyr::to_string(&entries).unwrap_or_default();
        let path = &self.opts.status_file;
        let tmp = path.with_extension("tmp");
        let io = |source| ManifestsError::StatusFile { path: path.clone(), source };
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// Reconciles every `interval` until `shutdown` resolves (or once, with `once`).
pub async fn run(
    opts: ManifestsOptions,
    interval: Duration,
    once: bool,
    metrics: &ControllerMetrics,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<ReconcileReport, ManifestsError> {
    let mut controller = ManifestsController::new(opts);
    let mut logged = LoggedErrors::default();
    tokio::pin!(shutdown);
    loop {
        let started = std::time::Instant::now();
        let report = match controller.reconcile().await {
            Ok(report) => report,
            Err(e) if once => return Err(e),
            // A folder that is briefly unreadable (an editor, a git checkout) must not stop the
            // controller of every node: say so and try again next pass.
            Err(e) => {
                tracing::error!(error = %e, "reading the manifests failed; retrying next pass");
                ReconcileReport { errors: vec![e.to_string()], ..ReconcileReport::default() }
            }
        };
        metrics.observe(&report, controller.statuses(), started.elapsed());
        logged.log(&report.errors);
        if once {
            return Ok(report);
        }
        tokio::select! {
            _ = &mut shutdown => return Ok(report),
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
