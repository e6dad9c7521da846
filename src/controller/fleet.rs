//! The fleet reconcile shared by both sources (manifests, API server): push every node whose
//! bundle changed to its agent — all at once, each node with its own backoff, so one broken
//! node never stalls the others — ask every other node's agent for its status (trunks up,
//! mirrors live, and whether it still runs the bundle: one it does not is pushed again), and
//! compute every resource's status.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::task::JoinSet;

use super::agent_policy::{self, AgentPolicy};
use super::conditions::{ConditionUpdate, needs_cluster};
use super::leader::Gate;
use super::status::{NodeOutcome, ResourceStatus, fleet_status};
use crate::agent::client::{AgentAccess, ClientOptions, connect};
use crate::agent::node::bundle_to_proto;
use crate::agent::proto::{NodeStatus, StatusRequest};
use crate::offline::LoadedFleet;
use crate::render::Bundle;
use crate::topology::ObjectRef;

/// How the controller may reach one node's agent this pass: its own credentials (from its
/// Secret, or the secrets file), and for a managed node its workload's `Managed` condition.
#[derive(Clone, Debug)]
pub struct AgentTarget {
    /// A managed node's `Managed` condition (`None` for a node beside an existing server).
    pub managed: Option<ConditionUpdate>,
    /// What to present to the agent and how to recognise it; `Err`: why it cannot be reached
    /// now, so nothing is pushed.
    pub access: Result<AgentAccess, String>,
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
    policy: AgentPolicy,
    pushes: BTreeMap<(String, String), NodePush>,
    statuses: BTreeMap<ObjectRef, ResourceStatus>,
    /// How each node's agent may be reached, by (namespace, node); a managed node without an
    /// entry has no cluster to run in (`--manifests` mode).
    targets: BTreeMap<(String, String), AgentTarget>,
    /// Whether this replica may push now (the leader Lease); always open by default.
    gate: Gate,
    /// Nodes leaving the fleet (their AsteriskNode deleted), by (namespace, node): each is
    /// pushed the empty bundle until its agent applied it.
    retiring: BTreeMap<(String, String), Retiring>,
}

/// A node leaving the fleet: where its agent is, and the bundle that empties it.
#[derive(Clone, Debug)]
pub struct Retiring {
    /// Its `spec.agent.endpoint`.
    pub endpoint: String,
    /// [`Bundle::retired`] for it.
    pub bundle: Bundle,
}

impl Retiring {
    /// Node `node` of `namespace`, whose agent is at `endpoint`.
    pub fn new(namespace: &str, node: &str, endpoint: &str) -> Self {
        Self { endpoint: endpoint.to_owned(), bundle: Bundle::retired(namespace, node) }
    }
}

impl FleetReconciler {
    /// Nothing pushed yet; agents are reached as `policy` allows.
    pub fn new(policy: AgentPolicy) -> Self {
        Self { policy, ..Self::default() }
    }

    /// Pushes only while `gate` is open: checked as each bundle is sent, however long the pass.
    pub fn with_gate(self, gate: Gate) -> Self {
        Self { gate, ..self }
    }

    /// The statuses computed by the last reconcile.
    pub fn statuses(&self) -> &BTreeMap<ObjectRef, ResourceStatus> {
        &self.statuses
    }

    /// Sets how each node's agent may be reached this pass (its credentials; a managed node's
    /// workload). A node whose agent just became reachable is pushed at once instead of waiting
    /// out the backoff its earlier failures earned.
    pub fn set_targets(&mut self, targets: BTreeMap<(String, String), AgentTarget>) {
        let ready = |t: &AgentTarget| t.access.is_ok() && t.managed.as_ref().is_none_or(|c| c.status);
        for (key, target) in &targets {
            let was_ready = self.targets.get(key).is_some_and(ready);
            if ready(target)
                && !was_ready
                && let Some(p) = self.pushes.get_mut(key)
            {
                p.next_try = Instant::now();
            }
        }
        self.targets = targets;
    }

    /// Sets the nodes leaving the fleet this pass (their agents' credentials come with
    /// [`Self::set_targets`]).
    pub fn set_retiring(&mut self, retiring: BTreeMap<(String, String), Retiring>) {
        self.retiring = retiring;
    }

    /// Has retiring node `node`'s agent applied the empty bundle (so nothing of the operator's is
    /// left on its Asterisk)?
    pub fn retired(&self, namespace: &str, node: &str) -> bool {
        let key = (namespace.to_owned(), node.to_owned());
        self.retiring.get(&key).is_some_and(|r| self.applied(namespace, node, &r.bundle.hash))
    }

    /// What the last visit to a node said, in short (for messages about a node not retired
    /// yet).
    pub fn last_outcome(&self, namespace: &str, node: &str) -> Option<String> {
        self.pushes.get(&(namespace.to_owned(), node.to_owned())).map(|p| short_outcome(&p.outcome))
    }

    /// Has `node`'s agent applied exactly `hash`?
    pub fn applied(&self, namespace: &str, node: &str, hash: &str) -> bool {
        self.pushes.get(&(namespace.to_owned(), node.to_owned())).is_some_and(|p| {
            p.hash == hash && matches!(&p.outcome, NodeOutcome::Applied { result, .. } if result.ok && result.applied_hash == hash)
        })
    }

    /// Pushes what changed (or is due for a retry), refreshes the other nodes' status, and
    /// recomputes every status.
    pub async fn reconcile(&mut self, fleets: &BTreeMap<String, LoadedFleet>) -> ReconcileReport {
        let mut report = ReconcileReport::default();
        let now = Instant::now();
        let mut tasks = JoinSet::new();
        // Every node to visit: the fleets' nodes with their bundles, and the retiring nodes
        // with the empty bundle that removes the operator's files.
        let mut nodes: Vec<NodeVisit<'_>> = Vec::new();
        for (namespace, fleet) in fleets {
            report.errors.extend(fleet.resolution.errors.iter().map(ToString::to_string));
            for (node, bundle) in &fleet.bundles {
                let target = fleet.resolution.topology.nodes.get(node);
                let endpoint = target.and_then(|n| n.agent_endpoint.clone());
                nodes.push((
                    (namespace.clone(), node.clone()),
                    bundle,
                    endpoint,
                    target.is_some_and(|n| n.managed),
                ));
            }
        }
        for (key, retiring) in &self.retiring {
            nodes.push((key.clone(), &retiring.bundle, Some(retiring.endpoint.clone()), false));
        }
        for (key, bundle, endpoint, managed) in nodes {
            let Some(visit) = visit(self.pushes.get(&key), &bundle.hash, now) else { continue };
            let credentials = match self.targets.get(&key) {
                Some(t) => t.access.clone(),
                None if managed => Err(needs_cluster().message),
                None => Err("the node's credentials are not available yet".into()),
            };
            let access = match &endpoint {
                Some(url) => agent_policy::reach(&self.policy, &key.0, url, managed, credentials),
                None => Err("the node has no spec.agent.endpoint the controller can push to".into()),
            };
            if visit == Visit::Refresh && access.is_err() {
                // The workload says no agent can be reached this pass; keep what is known.
                continue;
            }
            let (bundle, gate) = (bundle.clone(), self.gate.clone());
            tasks.spawn(async move {
                let contact = match (endpoint, access) {
                    (Some(url), Ok(access)) => contact(&url, &access, &bundle, visit, &gate).await,
                    (_, Err(why)) => Contact::Pushed(NodeOutcome::NoAgent(why)),
                    (None, Ok(_)) => unreachable!("an access needs an endpoint"),
                };
                (key, bundle.hash, contact)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let Ok((key, hash, contact)) = joined else { continue };
            let (outcome, pushed) = match contact {
                Contact::Refreshed(status) => {
                    if let Some(NodeOutcome::Applied { status: last, .. }) =
                        self.pushes.get_mut(&key).map(|p| &mut p.outcome)
                    {
                        *last = Some(status);
                    }
                    continue;
                }
                Contact::Lost(why) => (NodeOutcome::Unreachable(why), false),
                Contact::Pushed(outcome) => (outcome, true),
            };
            let ok = matches!(&outcome, NodeOutcome::Applied { result, .. } if result.ok);
            if pushed {
                report.pushed.insert(format!("{}/{}", key.0, key.1), ok);
            }
            let failures = if ok { 0 } else { self.pushes.get(&key).map_or(0, |p| p.failures) + 1 };
            let backoff = Duration::from_secs(1u64 << failures.min(6)).min(MAX_BACKOFF);
            // A managed pod that is not ready is pushed to all the same (its agent turns ready
            // only after its first apply), but an agent that does not answer yet is expected
            // there, not a transport fault: said so, at INFO.
            let starting = self.targets.get(&key).and_then(|t| t.managed.as_ref()).filter(|c| !c.status);
            let outcome = match (outcome, starting) {
                (NodeOutcome::Unreachable(why), Some(c)) => NodeOutcome::Unreachable(format!(
                    "the node's pod is not ready ({}); its agent: {why}",
                    c.message
                )),
                (outcome, _) => outcome,
            };
            let same_as_before = match (&outcome, self.pushes.get(&key).map(|p| &p.outcome)) {
                (NodeOutcome::NoAgent(now), Some(NodeOutcome::NoAgent(before))) => now == before,
                _ => false,
            };
            match &outcome {
                NodeOutcome::Applied { result, .. } if result.ok => {
                    tracing::info!(node = %key.1, hash = %short(&hash), unchanged = result.unchanged, "bundle applied")
                }
                // Nothing was attempted (no agent to reach yet): said once per change.
                NodeOutcome::NoAgent(why) if same_as_before => {
                    tracing::debug!(node = %key.1, reason = %why, "bundle not pushed")
                }
                NodeOutcome::NoAgent(why) => {
                    tracing::info!(node = %key.1, reason = %why, "bundle not pushed")
                }
                NodeOutcome::Unreachable(why) if starting.is_some() => {
                    tracing::info!(node = %key.1, reason = %why, retry_in = ?backoff, "the node's pod is starting")
                }
                other if pushed => {
                    tracing::warn!(node = %key.1, outcome = %short_outcome(other), retry_in = ?backoff, "bundle not applied")
                }
                other => {
                    tracing::warn!(node = %key.1, error = %short_outcome(other), retry_in = ?backoff, "agent stopped answering")
                }
            }
            self.pushes.insert(key, NodePush { outcome, hash, failures, next_try: Instant::now() + backoff });
        }
        // Forget nodes that are gone.
        self.pushes.retain(|key, _| {
            self.retiring.contains_key(key)
                || fleets.get(&key.0).is_some_and(|f| f.bundles.contains_key(&key.1))
        });
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
            let managed: BTreeMap<String, ConditionUpdate> =
                of_namespace(&self.targets, namespace, |t| t.managed.clone())
                    .into_iter()
                    .filter_map(|(node, c)| c.map(|c| (node, c)))
                    .collect();
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

/// What a pass does with one node's agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Visit {
    /// Push the bundle (new, changed, or due for a retry) and read the node's status.
    Push,
    /// The agent applied this bundle: read its status (and push again if it no longer runs it).
    Refresh,
}

/// Decides what this pass does with a node, from what happened at the last visit (`None`:
/// wait, its retry is not due yet).
fn visit(last: Option<&NodePush>, hash: &str, now: Instant) -> Option<Visit> {
    match last {
        None => Some(Visit::Push),
        Some(p) if p.hash != hash => Some(Visit::Push),
        Some(p) if matches!(&p.outcome, NodeOutcome::Applied { result, .. } if result.ok) => {
            Some(Visit::Refresh)
        }
        Some(p) if p.next_try <= now => Some(Visit::Push),
        Some(_) => None,
    }
}

/// A node to visit this pass: (namespace, node), its bundle, its agent endpoint, managed.
type NodeVisit<'a> = ((String, String), &'a Bundle, Option<String>, bool);

/// What came of a visit.
enum Contact {
    /// The bundle was pushed (or could not be): the new outcome.
    Pushed(NodeOutcome),
    /// The agent still runs the bundle: its status now.
    Refreshed(Box<NodeStatus>),
    /// The agent no longer answers.
    Lost(String),
}

/// Visits one node's agent: pushes the bundle, or reads the status and pushes again when the
/// agent no longer runs the bundle (restored from a backup, another controller, a hand edit of
/// its state).
async fn contact(url: &str, access: &AgentAccess, bundle: &Bundle, visit: Visit, gate: &Gate) -> Contact {
    let opts = ClientOptions::with_access(url, access.clone());
    let mut client = match connect(&opts).await {
        Ok(c) => c,
        Err(e) if visit == Visit::Refresh => return Contact::Lost(e.to_string()),
        Err(e) => return Contact::Pushed(NodeOutcome::Unreachable(e.to_string())),
    };
    if visit == Visit::Refresh {
        match client.status(StatusRequest {}).await {
            Ok(s) if s.get_ref().applied_hash == bundle.hash => {
                return Contact::Refreshed(Box::new(s.into_inner()));
            }
            Ok(s) => tracing::warn!(
                node = %bundle.node,
                runs = %short(&s.get_ref().applied_hash),
                wanted = %bundle.short_hash(),
                "the agent no longer runs the bundle it applied; pushing it again"
            ),
            Err(status) => return Contact::Lost(format!("Status: {}", status.message())),
        }
    }
    if !gate.may_act() {
        // Leadership lapsed while this pass ran: another replica may be pushing already.
        return Contact::Pushed(NodeOutcome::Unreachable(
            "not pushed: this replica is no longer the leader".into(),
        ));
    }
    let result = match client.apply(bundle_to_proto(bundle)).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            return Contact::Pushed(NodeOutcome::Unreachable(format!("Apply: {}", status.message())));
        }
    };
    let status = client.status(StatusRequest {}).await.ok().map(|s| Box::new(s.into_inner()));
    Contact::Pushed(NodeOutcome::Applied { result, status })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::proto::ApplyResult;

    fn last(hash: &str, outcome: NodeOutcome, retry_in: i64) -> NodePush {
        let now = Instant::now();
        let next_try = if retry_in >= 0 {
            now + Duration::from_secs(retry_in as u64)
        } else {
            now - Duration::from_secs(retry_in.unsigned_abs())
        };
        NodePush { outcome, hash: hash.into(), failures: 1, next_try }
    }

    #[test]
    fn each_node_is_pushed_refreshed_or_left_to_its_backoff() {
        let applied = |ok| NodeOutcome::Applied {
            result: ApplyResult { ok, applied_hash: "h1".into(), ..Default::default() },
            status: None,
        };
        let now = Instant::now();
        let cases = [
            ("never visited", None, Some(Visit::Push)),
            ("bundle changed", Some(last("h0", applied(true), 30)), Some(Visit::Push)),
            ("applied: read its status", Some(last("h1", applied(true), 30)), Some(Visit::Refresh)),
            ("apply failed, retry not due", Some(last("h1", applied(false), 30)), None),
            ("apply failed, retry due", Some(last("h1", applied(false), -1)), Some(Visit::Push)),
            ("unreachable, retry not due", Some(last("h1", NodeOutcome::Unreachable("x".into()), 30)), None),
            (
                "unreachable, retry due",
                Some(last("h1", NodeOutcome::Unreachable("x".into()), -1)),
                Some(Visit::Push),
            ),
        ];
        for (name, last, want) in cases {
            assert_eq!(visit(last.as_ref(), "h1", now), want, "{name}");
        }
    }
}
