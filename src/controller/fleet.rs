//! The fleet reconcile shared by both sources (manifests, API server): push every node whose
//! bundle changed to its agent — all at once, each node with its own backoff, so one broken
//! node never stalls the others — and compute every resource's status.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::task::JoinSet;

use super::conditions::{ConditionUpdate, needs_cluster};
use super::status::{NodeOutcome, ResourceStatus, fleet_status};
use crate::agent::client::{AgentAccess, ClientOptions, connect};
use crate::agent::node::bundle_to_proto;
use crate::agent::proto::StatusRequest;
use crate::offline::LoadedFleet;
use crate::render::Bundle;
use crate::topology::ObjectRef;

/// What the API-server mode could do this pass for one managed node (`spec.managed`).
#[derive(Clone, Debug)]
pub struct ManagedTarget {
    /// The node's `Managed` condition.
    pub condition: ConditionUpdate,
    /// How to reach its agent at the node's endpoint; `None`: its pod cannot be reached now
    /// (the condition says why), so nothing is pushed.
    pub access: Option<AgentAccess>,
}

/// Per-node push bookkeeping.
#[derive(Clone, Debug)]
pub(crate) struct NodePush {
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
    /// Some resource's status differs from the previous reconcile's.
    pub status_changed: bool,
    /// Every node's bundle by (namespace, node): the one wanted, and the one its agent last
    /// said it runs (empty when unknown).
    pub bundles: BTreeMap<(String, String), BundleHashes>,
}

/// The bundle a node should run and the one it runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BundleHashes {
    pub desired: String,
    pub applied: String,
}

const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Push bookkeeping and the last statuses, carried between reconciles.
#[derive(Debug, Default)]
pub struct FleetReconciler {
    agents: AgentAccess,
    pushes: BTreeMap<(String, String), NodePush>,
    statuses: BTreeMap<ObjectRef, ResourceStatus>,
    /// Managed nodes by (namespace, node); a managed node without an entry has no cluster to
    /// run in (`--manifests` mode).
    managed: BTreeMap<(String, String), ManagedTarget>,
}

impl FleetReconciler {
    /// Nothing pushed yet.
    pub fn new(agents: AgentAccess) -> Self {
        Self { agents, ..Self::default() }
    }

    /// The statuses computed by the last reconcile.
    pub fn statuses(&self) -> &BTreeMap<ObjectRef, ResourceStatus> {
        &self.statuses
    }

    /// Sets what each managed node's workload allows this pass (the API-server mode calls it
    /// before [`Self::reconcile`]). A node whose pod just became reachable is pushed at once
    /// instead of waiting out the backoff its earlier failures earned.
    pub fn set_managed(&mut self, targets: BTreeMap<(String, String), ManagedTarget>) {
        for (key, target) in &targets {
            let was_ready = self.managed.get(key).is_some_and(|t| t.access.is_some() && t.condition.status);
            if target.access.is_some()
                && target.condition.status
                && !was_ready
                && let Some(p) = self.pushes.get_mut(key)
            {
                p.next_try = Instant::now();
            }
        }
        self.managed = targets;
    }

    /// Has `node`'s agent applied exactly `hash`?
    pub fn applied(&self, namespace: &str, node: &str, hash: &str) -> bool {
        self.pushes.get(&(namespace.to_owned(), node.to_owned())).is_some_and(|p| {
            p.hash == hash && matches!(&p.outcome, NodeOutcome::Applied { result, .. } if result.ok && result.applied_hash == hash)
        })
    }

    /// Pushes what changed (or is due for a retry) and recomputes every status.
    pub async fn reconcile(&mut self, fleets: &BTreeMap<String, LoadedFleet>) -> ReconcileReport {
        let mut report = ReconcileReport::default();
        let now = Instant::now();
        let mut tasks = JoinSet::new();
        for (namespace, fleet) in fleets {
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
                let target = fleet.resolution.topology.nodes.get(node);
                let endpoint = target.and_then(|n| n.agent_endpoint.clone());
                let access = match target.is_some_and(|n| n.managed) {
                    false => Ok(self.agents.clone()),
                    true => match self.managed.get(&key) {
                        Some(ManagedTarget { access: Some(access), .. }) => Ok(access.clone()),
                        Some(ManagedTarget { condition, .. }) => Err(condition.message.clone()),
                        None => Err(needs_cluster().message),
                    },
                };
                let bundle = bundle.clone();
                tasks.spawn(async move {
                    let outcome = match (endpoint, access) {
                        (_, Err(why)) => NodeOutcome::NoAgent(why),
                        (None, _) => NodeOutcome::NoAgent(
                            "the node has no spec.agent.endpoint the controller can push to".into(),
                        ),
                        (Some(url), Ok(access)) => push(&url, &access, &bundle).await,
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
                    tracing::warn!(node = %key.1, outcome = %short_outcome(other), retry_in = ?backoff, "bundle not applied")
                }
            }
            self.pushes.insert(key, NodePush { outcome, hash, failures, next_try: Instant::now() + backoff });
        }
        // Forget nodes that are gone.
        self.pushes.retain(|(ns, node), _| fleets.get(ns).is_some_and(|f| f.bundles.contains_key(node)));
        for (namespace, fleet) in fleets {
            for (node, bundle) in &fleet.bundles {
                let key = (namespace.clone(), node.clone());
                let applied = match self.pushes.get(&key).map(|p| &p.outcome) {
                    Some(NodeOutcome::Applied { status: Some(status), .. }) => status.applied_hash.clone(),
                    Some(NodeOutcome::Applied { result, .. }) => result.applied_hash.clone(),
                    _ => String::new(),
                };
                report.bundles.insert(key, BundleHashes { desired: bundle.hash.clone(), applied });
            }
        }

        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let mut statuses = BTreeMap::new();
        for (namespace, fleet) in fleets {
            let managed = of_namespace(&self.managed, namespace, |t| t.condition.clone());
            let outcomes = of_namespace(&self.pushes, namespace, |p| p.outcome.clone());
            statuses.extend(fleet_status(
                &fleet.resources,
                &fleet.resolution,
                &fleet.bundles,
                &outcomes,
                &managed,
                &self.statuses,
                &now,
            ));
        }
        report.status_changed = statuses != self.statuses;
        self.statuses = statuses;
        report
    }
}

/// The entries of `map` in `namespace`, by node, through `f`.
fn of_namespace<V, T>(
    map: &BTreeMap<(String, String), V>,
    namespace: &str,
    f: impl Fn(&V) -> T,
) -> BTreeMap<String, T> {
    map.iter().filter(|((ns, _), _)| ns == namespace).map(|((_, node), v)| (node.clone(), f(v))).collect()
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
    let opts = ClientOptions::with_access(url, access.clone());
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
