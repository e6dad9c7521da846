//! A trunk's `Routed` condition and its `up`/`ends`/`routes` fields, from what each end's agent
//! reports about its peer and the routes the topology sends over the trunk.

use std::collections::BTreeMap;

use super::{NodeOutcome, last_report};
use crate::controller::conditions::{ConditionUpdate, RoutedReason};
use crate::crd::{TrunkEndStatus, TrunkRouteStatus, TrunkStatus};
use crate::topology::Topology;

/// The trunk's status fields and `Routed` condition.
pub(super) fn routing(
    name: &str,
    topology: &Topology,
    outcomes: &BTreeMap<String, NodeOutcome>,
) -> (TrunkStatus, ConditionUpdate) {
    let Some(trunk) = topology.trunks.get(name) else {
        let c = ConditionUpdate::failed(
            RoutedReason::NotRouted,
            "the trunk is invalid (see Valid), so no route uses it",
        );
        return (TrunkStatus::default(), c);
    };
    let routes = routes_over(name, topology);
    let mut ends = Vec::new();
    let mut unknown = Vec::new();
    let mut down = Vec::new();
    for end in &trunk.ends {
        let remote = trunk.remote_of(end);
        let reachable = match last_report(outcomes, end) {
            Err(why) => {
                unknown.push(format!("{end}'s agent has not reported it ({why})"));
                None
            }
            Ok(report) => match report.trunk_states.iter().find(|t| t.name == name) {
                None => {
                    unknown.push(format!("{end} does not list it yet"));
                    None
                }
                Some(t) => {
                    if !t.reachable {
                        down.push(format!("{end} does not reach {remote}"));
                    }
                    Some(t.reachable)
                }
            },
        };
        ends.push(TrunkEndStatus { node: end.clone(), reachable });
    }
    let up = down.is_empty() && unknown.is_empty();
    let status = TrunkStatus { up: Some(up), ends, routes: routes.clone(), ..TrunkStatus::default() };
    let used = match routes.len() {
        0 => "no route uses it".to_owned(),
        n => format!("{n} route(s) use it: {}", describe(&routes)),
    };
    let condition = if !down.is_empty() {
        ConditionUpdate::failed(
            RoutedReason::Down,
            format!("{}; calls take the next way out", down.join("; ")),
        )
    } else if !trunk.qualify {
        ConditionUpdate::failed(
            RoutedReason::Unknown,
            "spec.qualify is false, so neither end checks the other; set qualify: true to know whether it is up",
        )
    } else if !unknown.is_empty() {
        ConditionUpdate::failed(RoutedReason::Unknown, unknown.join("; "))
    } else {
        ConditionUpdate::ok(RoutedReason::Up, format!("both ends reach each other; {used}"))
    };
    (status, condition)
}

/// Every route that lists the trunk among its ways out.
fn routes_over(name: &str, topology: &Topology) -> Vec<TrunkRouteStatus> {
    let mut out = Vec::new();
    for (from, routes) in &topology.routes {
        for route in routes {
            if let Some(i) = route.hops.iter().position(|h| h.trunk == name) {
                out.push(TrunkRouteStatus {
                    from: from.clone(),
                    destination: route.destination.clone(),
                    patterns: route.patterns.clone(),
                    choice: i as u32 + 1,
                });
            }
        }
    }
    out
}

fn describe(routes: &[TrunkRouteStatus]) -> String {
    routes
        .iter()
        .map(|r| format!("{} → {} ({}) choice {}", r.from, r.destination, r.patterns.join(", "), r.choice))
        .collect::<Vec<_>>()
        .join(", ")
}
