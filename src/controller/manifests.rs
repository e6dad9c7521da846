//! `controller --manifests DIR`: the reconcile fed from YAML files instead of the API server,
//! for a fleet without a cluster. Every interval it re-reads the manifests, resolves and
//! renders, pushes each node whose bundle changed to its agent (all nodes at once, each with
//! its own backoff, so one broken node never stalls the others), and writes every resource's
//! status to a file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;
use tokio::task::JoinSet;

use super::status::{NodeOutcome, ResourceStatus, fleet_status};
use crate::agent::client::{ClientOptions, connect};
use crate::agent::node::bundle_to_proto;
use crate::agent::proto::StatusRequest;
use crate::offline::{self, OfflineError};
use crate::render::Bundle;
use crate::secret::SecretValue;
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

/// How to reach the agents (the same for every node).
#[derive(Clone, Debug, Default)]
pub struct AgentAccess {
    /// Shared bearer token.
    pub token: Option<SecretValue>,
    /// CA that signed the agents' certificates.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate for mTLS.
    pub tls_cert: Option<PathBuf>,
    /// Client key for mTLS.
    pub tls_key: Option<PathBuf>,
    /// Per-call timeout.
    pub timeout: Option<Duration>,
}

/// Settings of the `--manifests` mode.
#[derive(Clone, Debug)]
pub struct ManifestsOptions {
    /// Manifest files or folders.
    pub inputs: Vec<PathBuf>,
    /// Where every resource's status is written (YAML).
    pub status_file: PathBuf,
    /// Where generated secrets are kept between runs (0600).
    pub secrets_file: PathBuf,
    /// How the agents are reached.
    pub agents: AgentAccess,
}

/// Per-node push bookkeeping.
#[derive(Clone, Debug)]
struct NodePush {
    outcome: NodeOutcome,
    /// Hash of the bundle the outcome is about.
    hash: String,
    failures: u32,
    next_try: Instant,
}

/// What one reconcile did.
#[derive(Clone, Debug, Default)]
pub struct ReconcileReport {
    /// Nodes whose bundle was pushed, with whether the agent applied it.
    pub pushed: BTreeMap<String, bool>,
    /// Validation errors, as messages.
    pub errors: Vec<String>,
    /// The status file was rewritten.
    pub status_written: bool,
}

/// The `--manifests` controller: state carried between reconciles.
pub struct ManifestsController {
    opts: ManifestsOptions,
    pushes: BTreeMap<(String, String), NodePush>,
    statuses: BTreeMap<ObjectRef, ResourceStatus>,
}

/// One line of the status file.
#[derive(Serialize)]
struct StatusEntry<'a> {
    kind: &'static str,
    namespace: &'a str,
    name: &'a str,
    status: &'a ResourceStatus,
}

const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl ManifestsController {
    /// A controller with nothing pushed yet.
    pub fn new(opts: ManifestsOptions) -> Self {
        Self { opts, pushes: BTreeMap::new(), statuses: BTreeMap::new() }
    }

    /// The statuses computed by the last reconcile.
    pub fn statuses(&self) -> &BTreeMap<ObjectRef, ResourceStatus> {
        &self.statuses
    }

    /// Reads, resolves, renders, pushes what changed, writes status.
    pub async fn reconcile(&mut self) -> Result<ReconcileReport, ManifestsError> {
        let loaded = offline::load_fleets(&self.opts.inputs, &self.opts.secrets_file)?;
        offline::keep_generated_secrets(&self.opts.secrets_file, &loaded.generated)?;
        let mut report = ReconcileReport::default();
        let now = Instant::now();
        let mut tasks = JoinSet::new();
        for (namespace, fleet) in &loaded.fleets {
            report.errors.extend(fleet.resolution.errors.iter().map(ToString::to_string));
            for (node, bundle) in &fleet.bundles {
                let key = (namespace.clone(), node.clone());
                let due = match self.pushes.get(&key) {
                    None => true,
                    Some(p) if p.hash != bundle.hash => true,
                    Some(p) => {
                        !matches!(&p.outcome, NodeOutcome::Applied { result, .. } if result.ok)
                            && p.next_try <= now
                    }
                };
                if !due {
                    continue;
                }
                let endpoint =
                    fleet.resolution.topology.nodes.get(node).and_then(|n| n.agent_endpoint.clone());
                let access = self.opts.agents.clone();
                let bundle = bundle.clone();
                tasks.spawn(async move {
                    let outcome = match endpoint {
                        None => NodeOutcome::NoAgent(
                            "the node has no spec.agent.endpoint; --manifests mode pushes only to agents it can reach".into(),
                        ),
                        Some(url) => push(&url, &access, &bundle).await,
                    };
                    (key, bundle.hash, outcome)
                });
            }
        }
        while let Some(joined) = tasks.join_next().await {
            let Ok((key, hash, outcome)) = joined else { continue };
            let ok = matches!(&outcome, NodeOutcome::Applied { result, .. } if result.ok);
            report.pushed.insert(format!("{}/{}", key.0, key.1), ok);
            let failures = if ok { 0 } else { self.pushes.get(&key).map_or(0, |p| p.failures) + 1 };
            let backoff = Duration::from_secs(1u64 << failures.min(6)).min(MAX_BACKOFF);
            match &outcome {
                NodeOutcome::Applied { result, .. } if result.ok => {
                    tracing::info!(node = %key.1, hash = %short(&hash), unchanged = result.unchanged, "bundle applied")
                }
                other => {
                    tracing::warn!(node = %key.1, outcome = ?short_outcome(other), retry_in = ?backoff, "bundle not applied")
                }
            }
            self.pushes.insert(key, NodePush { outcome, hash, failures, next_try: Instant::now() + backoff });
        }

        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let mut statuses = BTreeMap::new();
        for (namespace, fleet) in &loaded.fleets {
            let outcomes: BTreeMap<String, NodeOutcome> = self
                .pushes
                .iter()
                .filter(|((ns, _), _)| ns == namespace)
                .map(|((_, node), p)| (node.clone(), p.outcome.clone()))
                .collect();
            statuses.extend(fleet_status(
                &fleet.resources,
                &fleet.resolution,
                &fleet.bundles,
                &outcomes,
                &self.statuses,
                &now,
            ));
        }
        // Forget nodes that are gone from the manifests.
        self.pushes
            .retain(|(ns, node), _| loaded.fleets.get(ns).is_some_and(|f| f.bundles.contains_key(node)));
        if statuses != self.statuses || !self.opts.status_file.exists() {
            self.write_status(&statuses)?;
            report.status_written = true;
        }
        self.statuses = statuses;
        Ok(report)
    }

    fn write_status(&self, statuses: &BTreeMap<ObjectRef, ResourceStatus>) -> Result<(), ManifestsError> {
        let entries: Vec<StatusEntry> = statuses
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

fn short(hash: &str) -> &str {
    &hash[..12.min(hash.len())]
}

fn short_outcome(outcome: &NodeOutcome) -> String {
    match outcome {
        NodeOutcome::Applied { result, .. } => {
            result.error.as_ref().map(|e| format!("{}: {}", e.file, e.message)).unwrap_or_default()
        }
        NodeOutcome::Unreachable(why) | NodeOutcome::NoAgent(why) => why.clone(),
    }
}

/// Pushes one bundle and asks for the node's status.
async fn push(url: &str, access: &AgentAccess, bundle: &Bundle) -> NodeOutcome {
    let mut opts = ClientOptions::new(url);
    opts.token = access.token.clone();
    opts.tls_ca = access.tls_ca.clone();
    opts.tls_cert = access.tls_cert.clone();
    opts.tls_key = access.tls_key.clone();
    if let Some(t) = access.timeout {
        opts.timeout = t;
    }
    let mut client = match connect(&opts).await {
        Ok(c) => c,
        Err(e) => return NodeOutcome::Unreachable(e.to_string()),
    };
    let result = match client.apply(bundle_to_proto(bundle)).await {
        Ok(r) => r.into_inner(),
        Err(status) => return NodeOutcome::Unreachable(format!("Apply: {}", status.message())),
    };
    let status = client.status(StatusRequest {}).await.ok().map(|s| Box::new(s.into_inner()));
    NodeOutcome::Applied { result, status }
}

/// Reconciles every `interval` until `shutdown` resolves (or once, with `once`).
pub async fn run(
    opts: ManifestsOptions,
    interval: Duration,
    once: bool,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<ReconcileReport, ManifestsError> {
    let mut controller = ManifestsController::new(opts);
    tokio::pin!(shutdown);
    loop {
        let report = controller.reconcile().await?;
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
