//! A BLF subscription's `Mirrored` condition and per-target status, from the mirrors the
//! watcher node's agent reports (its device-state mesh).

use std::collections::BTreeMap;

use super::{NodeOutcome, last_report};
use crate::controller::conditions::{ConditionUpdate, MirroredReason};
use crate::crd::{BlfSubscription, BlfTargetStatus};
use crate::topology::Topology;

/// The subscription's target statuses and `Mirrored` condition; `watcher` is its watcher's node
/// (`None`: the subscription is invalid).
pub(super) fn mirroring(
    sub: &BlfSubscription,
    watcher: Option<&str>,
    valid: bool,
    topology: &Topology,
    outcomes: &BTreeMap<String, NodeOutcome>,
) -> (Vec<BlfTargetStatus>, ConditionUpdate) {
    let Some(watcher) = watcher.filter(|_| valid) else {
        let c = ConditionUpdate::failed(
            MirroredReason::NotMirrored,
            "the subscription is invalid (see Valid), so nothing is mirrored for it",
        );
        return (Vec::new(), c);
    };
    let owner_of = |ext: &str| topology.phones.values().find(|p| p.extension == ext).map(|p| p.node.clone());
    let report = last_report(outcomes, watcher);
    let mut targets = Vec::new();
    let mut remote = 0;
    let mut not_live = Vec::new();
    for target in &sub.spec.targets {
        let owner = owner_of(&target.extension);
        let mut status = BlfTargetStatus {
            extension: target.extension.clone(),
            node: owner.clone(),
            ..BlfTargetStatus::default()
        };
        if let Some(owner) = owner.as_deref().filter(|o| *o != watcher) {
            remote += 1;
            let view = report
                .as_ref()
                .ok()
                .and_then(|r| r.mirrors.iter().find(|m| m.owner == owner && m.extension == target.extension));
            match view {
                Some(m) => {
                    status.state = Some(m.state.clone());
                    status.mirrored = Some(m.live);
                    status.last_change = (m.changed_unix > 0)
                        .then(|| k8s_openapi::jiff::Timestamp::from_second(m.changed_unix).ok())
                        .flatten()
                        .map(|t| t.to_string());
                    if !m.live {
                        not_live.push(format!("{} ({owner} not heard from)", target.extension));
                    }
                }
                None => {
                    status.mirrored = Some(false);
                    not_live.push(format!("{} (not mirrored on {watcher} yet)", target.extension));
                }
            }
        }
        targets.push(status);
    }
    let condition = match (&report, remote) {
        (_, 0) => ConditionUpdate::ok(
            MirroredReason::Live,
            format!("every target lives on {watcher}: its hints need no mirror"),
        ),
        (Err(why), _) => ConditionUpdate::failed(
            MirroredReason::Unknown,
            format!("{watcher}'s agent has not reported its mirrors ({why})"),
        ),
        (Ok(r), _) if !r.mesh => ConditionUpdate::failed(
            MirroredReason::Unknown,
            format!(
                "{watcher}'s agent runs no device-state mesh (agent --mesh-listen), so remote targets show UNAVAILABLE"
            ),
        ),
        (Ok(_), _) if !not_live.is_empty() => ConditionUpdate::failed(
            MirroredReason::OwnerUnreachable,
            format!("lamps show UNAVAILABLE for: {}", not_live.join(", ")),
        ),
        (Ok(_), n) => ConditionUpdate::ok(
            MirroredReason::Live,
            format!("{n} remote target(s) mirrored live on {watcher}"),
        ),
    };
    (targets, condition)
}
