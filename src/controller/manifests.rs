//! `controller --manifests DIR`: the reconcile fed from YAML files instead of the API server,
//! for a fleet without a cluster. Every interval it re-reads the manifests, resolves and
//! renders, lets the [`FleetReconciler`] push what changed, and writes every resource's status
//! to a file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::agent_policy::AgentPolicy;
use super::file_credentials;
use super::fleet::{FleetReconciler, ReconcileReport};
use super::metrics::ControllerMetrics;
use super::status::ResourceStatus;
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
}

/// One entry of the status file.
#[derive(Serialize)]
struct StatusEntry<'a> {
    kind: &'static str,
    namespace: &'a str,
    name: &'a str,
    status: &'a ResourceStatus,
}

impl ManifestsController {
    /// A controller with nothing pushed yet.
    pub fn new(opts: ManifestsOptions) -> Self {
        let fleet = FleetReconciler::new(opts.agents.clone());
        Self { opts, fleet }
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
        let report = self.fleet.reconcile(&loaded.fleets).await;
        if report.status_changed || !self.opts.status_file.exists() {
            self.write_status()?;
        }
        Ok(report)
    }

    fn write_status(&self) -> Result<(), ManifestsError> {
        let entries: Vec<StatusEntry> = self
            .statuses()
            .iter()
            .map(|(o, status)| StatusEntry {
                kind: o.kind.as_str(),
                namespace: &o.namespace,
                name: &o.name,
                status,
            })
            .collect();
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
    tokio::pin!(shutdown);
    loop {
        let started = std::time::Instant::now();
        let report = controller.reconcile().await?;
        metrics.observe(&report, controller.statuses(), started.elapsed());
        for e in &report.errors {
            tracing::warn!(error = %e, "invalid resource");
        }
        if once {
            return Ok(report);
        }
        tokio::select! {
            _ = &mut shutdown => return Ok(report),
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
