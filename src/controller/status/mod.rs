//! Status of every resource, computed from values: the resolution, the bundles, and what each
//! node's agent answered. The same function serves `--manifests` mode and the kube controller.
//!
//! Every kind gets Valid, ConfigApplied and Ready here; nodes also AgentConnected (and Managed);
//! trunks also Routed (`trunk`); BLF subscriptions also Mirrored (`blf`).

mod blf;
mod trunk;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Resource;
use serde::Serialize;

use super::conditions::{
    AgentReason, AppliedReason, ConditionUpdate, ReadyReason, needs_cluster, set_condition, types,
};
use crate::agent::proto::{ApplyResult, NodeStatus};
use crate::crd::{AsteriskNodeStatus, BlfSubscriptionStatus, PhoneStatus, TrunkStatus};
use crate::render::Bundle;
use crate::topology::{Kind, ObjectRef, Resolution, ResourceSet};

/// What happened when the controller last pushed a node's bundle.
#[derive(Clone, Debug)]
pub enum NodeOutcome {
    /// The agent answered the Apply (successfully or not) and then its Status.
    Applied {
        /// The agent's ApplyResult.
        result: ApplyResult,
        /// The agent's Status right after, when it answered.
        status: Option<Box<NodeStatus>>,
    },
    /// The agent could not be reached or refused the call.
    Unreachable(String),
    /// The node has no agent endpoint the controller can push to.
    NoAgent(String),
}

/// The status of one resource, ready to write (status subresource or status file).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ResourceStatus {
    /// An AsteriskNode's status.
    Node(AsteriskNodeStatus),
    /// A Trunk's status.
    Trunk(TrunkStatus),
    /// A Phone's status.
    Phone(PhoneStatus),
    /// A BlfSubscription's status.
    Blf(BlfSubscriptionStatus),
}

impl ResourceStatus {
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        match self {
            Self::Node(s) => &mut s.conditions,
            Self::Trunk(s) => &mut s.conditions,
            Self::Phone(s) => &mut s.conditions,
            Self::Blf(s) => &mut s.conditions,
        }
    }

    /// The resource's conditions.
    pub fn conditions(&self) -> &[Condition] {
        match self {
            Self::Node(s) => &s.conditions,
            Self::Trunk(s) => &s.conditions,
            Self::Phone(s) => &s.conditions,
            Self::Blf(s) => &s.conditions,
        }
    }
}

/// What `node`'s agent last reported (its Status), or why there is no report.
fn last_report<'a>(
    outcomes: &'a BTreeMap<String, NodeOutcome>,
    node: &str,
) -> Result<&'a NodeStatus, String> {
    match outcomes.get(node) {
        None => Err("not contacted yet".into()),
        Some(NodeOutcome::Applied { status: Some(s), .. }) => Ok(s),
        Some(NodeOutcome::Applied { status: None, .. }) => Err("its Status call failed".into()),
        Some(NodeOutcome::Unreachable(why) | NodeOutcome::NoAgent(why)) => Err(why.clone()),
    }
}

/// Whether a node's current bundle is in force, and why not.
fn applied(
    outcome: Option<&NodeOutcome>,
    bundle: Option<&Bundle>,
    managed: bool,
) -> Result<(), (AppliedReason, String)> {
    let Some(bundle) = bundle else {
        return Err((
            AppliedReason::NotRendered,
            "the node is invalid, so nothing was rendered for it".into(),
        ));
    };
    match outcome {
        None => Err((AppliedReason::Pending, "not pushed yet".into())),
        Some(NodeOutcome::NoAgent(why)) => Err((AppliedReason::NoAgent, why.clone())),
        Some(NodeOutcome::Unreachable(why)) => Err((AppliedReason::AgentUnreachable, why.clone())),
        Some(NodeOutcome::Applied { result, .. }) if result.ok && result.applied_hash == bundle.hash => {
            Ok(())
        }
        Some(NodeOutcome::Applied { result, .. }) if result.ok => {
            Err((AppliedReason::Superseded, "a newer bundle is being applied".into()))
        }
        Some(NodeOutcome::Applied { result, .. })
            if !result.restart_required.is_empty() && result.applied_hash == bundle.hash =>
        {
            // Not True: Asterisk does not run all of the bundle until it restarts. The agent says
            // what waits; the condition clears at the first push after the restart.
            let managed = match managed {
                true => format!(" (a managed node: delete its pod, asterisk-{}-0)", bundle.node),
                false => String::new(),
            };
            Err((AppliedReason::RestartRequired, format!("{}{managed}", result.restart_required)))
        }
        Some(NodeOutcome::Applied { result, .. }) => {
            let e = result.error.clone().unwrap_or_default();
            let file = if e.file.is_empty() { String::new() } else { format!("{}: ", e.file) };
            let rolled =
                if result.rolled_back { " (rolled back; the previous configuration stays)" } else { "" };
            Err((AppliedReason::ApplyFailed, format!("{file}{}{rolled}", e.message)))
        }
    }
}

/// Computes the status of every resource of `set`, starting from `previous` so transition
/// times only move on real transitions. `managed` holds the `Managed` condition of each node
/// with `spec.managed` whose workload the API-server mode handled; a managed node without one
/// gets [`needs_cluster`].
pub fn fleet_status(
    set: &ResourceSet,
    resolution: &Resolution,
    bundles: &BTreeMap<String, Bundle>,
    outcomes: &BTreeMap<String, NodeOutcome>,
    managed: &BTreeMap<String, ConditionUpdate>,
    previous: &BTreeMap<ObjectRef, ResourceStatus>,
    now: &Time,
) -> BTreeMap<ObjectRef, ResourceStatus> {
    let topo = &resolution.topology;
    let mut out = BTreeMap::new();
    let put = |object: &ObjectRef, generation: Option<i64>, status: ResourceStatus, config| {
        with_conditions(object, generation, status, config, resolution, previous, now)
    };
    let ns = &set.namespace;
    let node_applied = |node: &str| {
        let managed = topo.nodes.get(node).is_some_and(|n| n.managed);
        applied(outcomes.get(node), bundles.get(node), managed)
    };

    for node in &set.nodes {
        let name = node.meta().name.clone().unwrap_or_default();
        let mut status = AsteriskNodeStatus {
            phones: Some(topo.phones.values().filter(|p| p.node == name).count() as u32),
            ..AsteriskNodeStatus::default()
        };
        let mut agent = ConditionUpdate::failed(AgentReason::Pending, "not contacted yet");
        match outcomes.get(&name) {
            Some(NodeOutcome::Applied { result, status: node_status }) => {
                agent = ConditionUpdate::ok(AgentReason::Connected, "the agent answered");
                status.applied_bundle_hash = Some(result.applied_hash.clone()).filter(|h| !h.is_empty());
                if let Some(s) = node_status {
                    status.asterisk_version = Some(s.asterisk_version.clone()).filter(|v| !v.is_empty());
                    status.started_at = (s.asterisk_started_unix > 0)
                        .then(|| k8s_openapi::jiff::Timestamp::from_second(s.asterisk_started_unix).ok())
                        .flatten()
                        .map(|t| t.to_string());
                    status.endpoints = Some(s.endpoints);
                    status.registered = Some(s.endpoints_registered);
                    status.channels = Some(s.active_channels);
                    status.last_reload = (s.last_reload_unix > 0)
                        .then(|| k8s_openapi::jiff::Timestamp::from_second(s.last_reload_unix).ok())
                        .flatten()
                        .map(|t| t.to_string());
                }
            }
            Some(NodeOutcome::Unreachable(why)) => {
                agent = ConditionUpdate::failed(AgentReason::Unreachable, why.clone())
            }
            Some(NodeOutcome::NoAgent(why)) => {
                agent = ConditionUpdate::failed(AgentReason::NoAgent, why.clone())
            }
            None => {}
        }
        let object = ObjectRef::new(Kind::AsteriskNode, ns, &name);
        let generation = node.meta().generation;
        let mut status = put(&object, generation, ResourceStatus::Node(status), node_applied(&name));
        set_condition(status.conditions_mut(), agent, generation, now);
        if node.spec.managed.is_some() {
            let workload = managed.get(&name).cloned().unwrap_or_else(needs_cluster);
            set_condition(status.conditions_mut(), workload, generation, now);
        } else {
            // No longer managed (switched to spec.agent): its old condition says nothing now.
            status.conditions_mut().retain(|c| c.type_ != types::MANAGED);
        }
        out.insert(object, status);
    }
    for trunk in &set.trunks {
        let name = trunk.meta().name.clone().unwrap_or_default();
        let config = trunk.spec.ends.iter().map(|e| node_applied(e)).find(Result::is_err).unwrap_or(Ok(()));
        let object = ObjectRef::new(Kind::Trunk, ns, &name);
        let (fields, routed) = trunk::routing(&name, topo, outcomes);
        let generation = trunk.meta().generation;
        let mut status = put(&object, generation, ResourceStatus::Trunk(fields), config);
        set_condition(status.conditions_mut(), routed, generation, now);
        out.insert(object, status);
    }
    for phone in &set.phones {
        let name = phone.meta().name.clone().unwrap_or_default();
        let object = ObjectRef::new(Kind::Phone, ns, &name);
        let config = node_applied(&phone.spec.node);
        let fetched = match outcomes.get(&phone.spec.node) {
            Some(NodeOutcome::Applied { status: Some(s), .. }) => {
                crate::agent::provisioning::phone_status(&s.provisioning_fetches, &name)
            }
            _ => None,
        };
        let phone_status = PhoneStatus { provisioning: fetched, ..PhoneStatus::default() };
        let status = put(&object, phone.meta().generation, ResourceStatus::Phone(phone_status), config);
        out.insert(object, status);
    }
    for sub in &set.blf_subscriptions {
        let name = sub.meta().name.clone().unwrap_or_default();
        let watcher_node = match (&sub.spec.watcher.phone, &sub.spec.watcher.node) {
            (Some(p), _) => topo.phones.get(p).map(|p| p.node.clone()),
            (None, Some(n)) => Some(n.clone()),
            _ => None,
        };
        let config = match &watcher_node {
            Some(node) => node_applied(node),
            None => Err((AppliedReason::NotRendered, "the watcher is invalid".into())),
        };
        let object = ObjectRef::new(Kind::BlfSubscription, ns, &name);
        let valid = resolution.errors_for(&object).next().is_none();
        let (targets, mirrored) = blf::mirroring(sub, watcher_node.as_deref(), valid, topo, outcomes);
        let generation = sub.meta().generation;
        let fields = BlfSubscriptionStatus { targets, ..BlfSubscriptionStatus::default() };
        let mut status = put(&object, generation, ResourceStatus::Blf(fields), config);
        set_condition(status.conditions_mut(), mirrored, generation, now);
        out.insert(object, status);
    }
    out
}

/// Sets Valid, ConfigApplied and Ready on `status`, starting from the previous conditions.
fn with_conditions(
    object: &ObjectRef,
    generation: Option<i64>,
    mut status: ResourceStatus,
    config: Result<(), (AppliedReason, String)>,
    resolution: &Resolution,
    previous: &BTreeMap<ObjectRef, ResourceStatus>,
    now: &Time,
) -> ResourceStatus {
    let errors: Vec<_> = resolution.errors_for(object).collect();
    let valid = ConditionUpdate::valid(&errors);
    let is_valid = valid.status;
    if let Some(old) = previous.get(object) {
        *status.conditions_mut() = old.conditions().to_vec();
    }
    let conditions = status.conditions_mut();
    set_condition(conditions, valid, generation, now);
    let applied = match (&config, is_valid) {
        (_, false) => ConditionUpdate::failed(AppliedReason::Invalid, "not applied: the resource is invalid"),
        (Ok(()), true) => ConditionUpdate::ok(AppliedReason::Applied, "in force on its nodes"),
        (Err((reason, message)), true) => ConditionUpdate::failed(*reason, message.clone()),
    };
    set_condition(conditions, applied, generation, now);
    let ready = if is_valid && config.is_ok() {
        ConditionUpdate::ok(ReadyReason::Ready, "valid and in force")
    } else {
        ConditionUpdate::failed(ReadyReason::NotReady, "see the Valid and ConfigApplied conditions")
    };
    set_condition(conditions, ready, generation, now);
    status
}

#[cfg(test)]
pub(crate) mod tests {
    //! Routed and Mirrored from what the agents report, for every case the real-Asterisk tests
    //! cannot easily bring about (an end that reports its peer down, a watcher without the mesh).

    use super::*;
    use crate::agent::proto::{MirrorState, TrunkState};
    use crate::controller::conditions::types;
    use crate::manifest::Manifests;
    use crate::secret::SecretValue;
    use crate::topology::{self, ResourceSet};

    /// The embedded two-offices example with test secrets.
    pub(crate) fn two_offices() -> ResourceSet {
        let mut manifests = Manifests::default();
        manifests.add_yaml(crate::offline::EMBEDDED_EXAMPLE.0, crate::offline::EMBEDDED_EXAMPLE.1).unwrap();
        let mut set = manifests.namespaces.remove("default").unwrap();
        for missing in topology::missing_secrets(&set) {
            set.secrets
                .entry(missing.name)
                .or_default()
                .insert(missing.key, SecretValue::new("TestSecret0123456"));
        }
        set
    }

    fn reported(trunks: &[(&str, bool)], mirrors: &[(&str, bool)], mesh: bool) -> NodeOutcome {
        NodeOutcome::Applied {
            result: ApplyResult { ok: true, ..Default::default() },
            status: Some(Box::new(NodeStatus {
                trunk_states: trunks
                    .iter()
                    .map(|(name, reachable)| TrunkState {
                        name: (*name).into(),
                        protocol: "iax2".into(),
                        reachable: *reachable,
                        rtt_seconds: 0.002,
                    })
                    .collect(),
                mirrors: mirrors
                    .iter()
                    .map(|(ext, live)| MirrorState {
                        owner: "office-b".into(),
                        extension: (*ext).into(),
                        state: if *live { "INUSE" } else { "UNAVAILABLE" }.into(),
                        live: *live,
                        changed_unix: 1_700_000_000,
                    })
                    .collect(),
                mesh,
                ..Default::default()
            })),
        }
    }

    fn condition(
        set: &ResourceSet,
        outcomes: &BTreeMap<String, NodeOutcome>,
        kind: Kind,
        name: &str,
        type_: &str,
    ) -> (String, String) {
        let resolution = topology::resolve(set);
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let statuses = fleet_status(
            set,
            &resolution,
            &BTreeMap::new(),
            outcomes,
            &BTreeMap::new(),
            &BTreeMap::new(),
            &now,
        );
        let c = statuses[&ObjectRef::new(kind, "default", name)]
            .conditions()
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap()
            .clone();
        (c.reason, c.message)
    }

    #[test]
    fn config_applied_says_why_a_bundle_is_not_in_force() {
        let set = two_offices();
        let bundles = crate::render::render_all(&topology::resolve(&set).topology);
        let bundle = &bundles["office-a"];
        let result = |ok: bool, hash: &str, restart: &str, error: &str| NodeOutcome::Applied {
            result: ApplyResult {
                ok,
                applied_hash: hash.into(),
                restart_required: restart.into(),
                error: (!error.is_empty()).then(|| crate::agent::proto::ApplyError {
                    file: "pjsip.conf".into(),
                    message: error.into(),
                }),
                rolled_back: !error.is_empty(),
                ..Default::default()
            },
            status: None,
        };
        let h = bundle.hash.as_str();
        let waits = "transport operator-transport: bind 192.0.2.10:5060 -> 192.0.2.10:5070: restart Asterisk";
        let cases = [
            ("applied", Some(result(true, h, "", "")), false, None, ""),
            (
                "older bundle applied",
                Some(result(true, "old", "", "")),
                false,
                Some(AppliedReason::Superseded),
                "",
            ),
            (
                "rejected",
                Some(result(false, "", "", "bad")),
                false,
                Some(AppliedReason::ApplyFailed),
                "pjsip.conf: bad (rolled back",
            ),
            (
                "waits for a restart",
                Some(result(false, h, waits, "")),
                false,
                Some(AppliedReason::RestartRequired),
                waits,
            ),
            (
                "managed: its pod",
                Some(result(false, h, waits, "")),
                true,
                Some(AppliedReason::RestartRequired),
                "delete its pod, asterisk-office-a-0",
            ),
            ("not pushed", None, false, Some(AppliedReason::Pending), "not pushed yet"),
        ];
        for (name, outcome, managed, want, text) in cases {
            match applied(outcome.as_ref(), Some(bundle), managed) {
                Ok(()) => assert_eq!(want, None, "{name}"),
                Err((reason, message)) => {
                    assert_eq!(Some(reason), want, "{name}: {message}");
                    assert!(message.contains(text), "{name}: {message}");
                }
            }
        }
    }

    #[test]
    fn a_trunk_is_routed_only_when_both_ends_report_the_other_reachable() {
        let set = two_offices();
        let ends = |a: Option<NodeOutcome>, b: Option<NodeOutcome>| {
            let mut m = BTreeMap::new();
            m.extend(a.map(|o| ("office-a".to_owned(), o)));
            m.extend(b.map(|o| ("office-b".to_owned(), o)));
            m
        };
        let up = || reported(&[("a-b-iax", true)], &[], true);
        let down = || reported(&[("a-b-iax", false)], &[], true);
        let cases = [
            ("both up", ends(Some(up()), Some(up())), "Up", "both ends reach each other"),
            ("office-b down", ends(Some(up()), Some(down())), "Down", "office-b does not reach office-a"),
            ("office-b silent", ends(Some(up()), None), "Unknown", "office-b's agent has not reported it"),
            (
                "office-b unreachable",
                ends(Some(up()), Some(NodeOutcome::Unreachable("connection refused".into()))),
                "Unknown",
                "connection refused",
            ),
            (
                "not listed",
                ends(Some(up()), Some(reported(&[], &[], true))),
                "Unknown",
                "office-b does not list it",
            ),
        ];
        for (name, outcomes, reason, text) in cases {
            let (r, message) = condition(&set, &outcomes, Kind::Trunk, "a-b-iax", types::ROUTED);
            assert_eq!(r, reason, "{name}: {message}");
            assert!(message.contains(text), "{name}: {message}");
        }
    }

    #[test]
    fn a_subscription_is_mirrored_when_every_remote_target_is_live() {
        let set = two_offices();
        let watcher = |o: NodeOutcome| BTreeMap::from([("office-a".to_owned(), o)]);
        let cases = [
            ("all live", watcher(reported(&[], &[("4001", true), ("4002", true)], true)), "Live", "2 remote"),
            (
                "4002's owner lost",
                watcher(reported(&[], &[("4001", true), ("4002", false)], true)),
                "OwnerUnreachable",
                "4002 (office-b not heard from)",
            ),
            (
                "not mirrored yet",
                watcher(reported(&[], &[("4001", true)], true)),
                "OwnerUnreachable",
                "4002 (not mirrored on office-a yet)",
            ),
            ("no mesh", watcher(reported(&[], &[], false)), "Unknown", "runs no device-state mesh"),
            ("watcher silent", BTreeMap::new(), "Unknown", "office-a's agent has not reported its mirrors"),
        ];
        for (name, outcomes, reason, text) in cases {
            let (r, message) =
                condition(&set, &outcomes, Kind::BlfSubscription, "reception-watches-sales", types::MIRRORED);
            assert_eq!(r, reason, "{name}: {message}");
            assert!(message.contains(text), "{name}: {message}");
        }
    }
}
