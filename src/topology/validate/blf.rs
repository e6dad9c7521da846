//! BlfSubscriptions (a watcher and extensions that valid phones have; the mirrors and BLF keys
//! they make), and nodes that no chain of trunks connects to the rest of the fleet.

use std::collections::{BTreeMap, BTreeSet};

use super::{Report, candidates};
use crate::crd::BlfSubscription;
use crate::topology::{BlfKey, Kind, Mirror, Node, PhoneLine, Reason};

/// The mirrors every watcher node keeps, and each phone's BLF keys, of the valid subscriptions.
pub(in crate::topology) fn blf_subscriptions(
    list: &[BlfSubscription],
    nodes: &BTreeMap<String, Node>,
    phones: &BTreeMap<String, PhoneLine>,
    report: &mut Report,
) -> (BTreeSet<Mirror>, BTreeMap<String, Vec<BlfKey>>) {
    let by_extension: BTreeMap<&str, &PhoneLine> =
        phones.values().map(|p| (p.extension.as_str(), p)).collect();
    let mut mirrors = BTreeSet::new();
    let mut keys: BTreeMap<String, Vec<BlfKey>> = BTreeMap::new();
    for (name, sub) in candidates(Kind::BlfSubscription, list, report) {
        let mut r = report.on(Kind::BlfSubscription, &name);
        let watcher = &sub.spec.watcher;
        let watcher_node = match (&watcher.phone, &watcher.node) {
            (Some(phone), None) => match phones.get(phone) {
                Some(p) => p.node.clone(),
                None => {
                    r.error(
                        "spec.watcher.phone",
                        Reason::MissingPhone,
                        format!("Phone {phone:?} does not exist or is invalid"),
                        "name an existing, valid Phone in the same namespace",
                    );
                    continue;
                }
            },
            (None, Some(node)) => {
                if !nodes.contains_key(node) {
                    r.error(
                        "spec.watcher.node",
                        Reason::MissingNode,
                        format!("AsteriskNode {node:?} does not exist or is invalid"),
                        "name an existing, valid AsteriskNode in the same namespace",
                    );
                    continue;
                }
                node.clone()
            }
            _ => {
                r.error(
                    "spec.watcher",
                    Reason::InvalidField,
                    "must name exactly one of phone or node",
                    "set either spec.watcher.phone or spec.watcher.node",
                );
                continue;
            }
        };
        let mut resolved = Vec::new();
        for (i, target) in sub.spec.targets.iter().enumerate() {
            match by_extension.get(target.extension.as_str()) {
                Some(owner) => resolved.push((target, owner.node.clone())),
                None => r.error(
                    format!("spec.targets[{i}].extension"),
                    Reason::UnknownTarget,
                    format!("no valid Phone of the fleet has extension {:?}", target.extension),
                    "watch an extension that a Phone has, or create that Phone first",
                ),
            }
        }
        if !r.clean() {
            continue;
        }
        for (target, owner) in &resolved {
            if *owner != watcher_node {
                mirrors.insert(Mirror {
                    watcher: watcher_node.clone(),
                    owner: owner.clone(),
                    extension: target.extension.clone(),
                });
            }
            if let Some(phone) = &watcher.phone {
                keys.entry(phone.clone()).or_default().push(BlfKey {
                    extension: target.extension.clone(),
                    label: target.label.clone().unwrap_or_else(|| target.extension.clone()),
                });
            }
        }
    }
    (mirrors, keys)
}

/// Every node must reach every other over trunks. Nodes outside the largest of the connected
/// `groups` get an error; they still render (their own phones keep working), but calls to them
/// fail.
pub(in crate::topology) fn reachability(groups: &[Vec<String>], report: &mut Report) {
    let Some(main) =
        groups.iter().max_by(|a, b| a.len().cmp(&b.len()).then_with(|| b.first().cmp(&a.first())))
    else {
        return;
    };
    for group in groups.iter().filter(|g| *g != main) {
        for name in group {
            report.on(Kind::AsteriskNode, name).error(
                "spec",
                Reason::Unreachable,
                format!("no chain of valid trunks connects {name} to node {}", main[0]),
                "add a Trunk from this node to any node of the rest of the fleet (or fix the invalid one)",
            );
        }
    }
}
