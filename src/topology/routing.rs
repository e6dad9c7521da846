//! Routes over the trunk graph: for every node, how to reach every other node's numbers.
//!
//! A call for node M leaves node N only over trunks to a neighbour that is one hop closer to M
//! (breadth-first distance over valid trunks). Every hop strictly shortens the distance, so a
//! route can never loop, whatever the trunks' priorities.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{Node, TrunkLink};
use crate::crd::TrunkProtocol;

/// How a node reaches another node's numbering plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The node that owns the numbers.
    pub destination: String,
    /// Its numbering plan as dialplan patterns without the leading `_`, e.g. `4XXX`.
    pub patterns: Vec<String>,
    /// Ways out, tried in this order: lower trunk priority first; Congestion after the last.
    pub hops: Vec<Hop>,
    /// Trunk hops to the destination along the shortest path (1 = direct trunk).
    pub distance: u32,
}

/// One way out of a node: a trunk and the neighbour it leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    /// Trunk name (the peer/endpoint name on this node).
    pub trunk: String,
    /// Its protocol.
    pub protocol: TrunkProtocol,
    /// The neighbour at its other end.
    pub next: String,
    /// The trunk's priority.
    pub priority: u8,
}

fn adjacency(
    nodes: &BTreeMap<String, Node>,
    trunks: &BTreeMap<String, TrunkLink>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut adj: BTreeMap<String, BTreeSet<String>> =
        nodes.keys().map(|n| (n.clone(), BTreeSet::new())).collect();
    for t in trunks.values() {
        let [a, b] = &t.ends;
        if nodes.contains_key(a) && nodes.contains_key(b) {
            adj.entry(a.clone()).or_default().insert(b.clone());
            adj.entry(b.clone()).or_default().insert(a.clone());
        }
    }
    adj
}

fn distances_to(target: &str, adj: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<String, u32> {
    let mut dist = BTreeMap::from([(target.to_owned(), 0u32)]);
    let mut queue = VecDeque::from([target.to_owned()]);
    while let Some(n) = queue.pop_front() {
        let d = dist[&n];
        for m in adj.get(&n).into_iter().flatten() {
            if !dist.contains_key(m) {
                dist.insert(m.clone(), d + 1);
                queue.push_back(m.clone());
            }
        }
    }
    dist
}

/// Connected groups of nodes, each sorted, in order of their first node.
pub(super) fn components(
    nodes: &BTreeMap<String, Node>,
    trunks: &BTreeMap<String, TrunkLink>,
) -> Vec<Vec<String>> {
    let adj = adjacency(nodes, trunks);
    let mut seen = BTreeSet::new();
    let mut groups = Vec::new();
    for n in nodes.keys() {
        if seen.contains(n) {
            continue;
        }
        let group: Vec<String> = distances_to(n, &adj).into_keys().collect();
        seen.extend(group.iter().cloned());
        groups.push(group);
    }
    groups
}

/// Routes of every node to every other node it can reach.
pub(super) fn routes(
    nodes: &BTreeMap<String, Node>,
    trunks: &BTreeMap<String, TrunkLink>,
) -> BTreeMap<String, Vec<Route>> {
    let adj = adjacency(nodes, trunks);
    let mut routes: BTreeMap<String, Vec<Route>> = nodes.keys().map(|n| (n.clone(), Vec::new())).collect();
    for (dest, dest_node) in nodes {
        let dist = distances_to(dest, &adj);
        let patterns = super::plan_patterns(&dest_node.numbering);
        for (from, list) in routes.iter_mut() {
            let Some(&d) = dist.get(from) else { continue };
            if d == 0 {
                continue;
            }
            let mut hops: Vec<Hop> = trunks
                .values()
                .filter(|t| t.touches(from))
                .filter(|t| dist.get(t.remote_of(from)) == Some(&(d - 1)))
                .map(|t| Hop {
                    trunk: t.name.clone(),
                    protocol: t.protocol,
                    next: t.remote_of(from).to_owned(),
                    priority: t.priority,
                })
                .collect();
            hops.sort_by(|a, b| a.priority.cmp(&b.priority).then_with(|| a.trunk.cmp(&b.trunk)));
            list.push(Route { destination: dest.clone(), patterns: patterns.clone(), hops, distance: d });
        }
    }
    routes
}
