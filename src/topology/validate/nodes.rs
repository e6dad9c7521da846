//! AsteriskNodes: every field that reaches a config line, exactly one of `agent`/`managed`, and
//! numbering plans that must not overlap (the older node keeps the numbers).

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::fields::{check_codecs, is_digits, is_name, valid_cidr};
use super::{Report, Reporter, candidates};
use crate::crd::rules::{HOST_FIX, is_host, phone_context_conflict};
use crate::crd::{AsteriskNode, AsteriskNodeSpec, NatSettings, NumberingPlan};
use crate::topology::{Kind, Node, Reason, managed_agent_endpoint};

/// Longest name of a managed node: its StatefulSet `asterisk-<name>` gets pods labelled
/// `controller-revision-hash: asterisk-<name>-<10-character hash>`, and a label value has at most
/// 63 characters.
const MAX_MANAGED_NAME: usize = 63 - "asterisk-".len() - 11;
const _: () = assert!(MAX_MANAGED_NAME == 43, "keep the fix text of the managed name check in step");

/// The valid nodes by name.
pub(in crate::topology) fn nodes(list: &[AsteriskNode], report: &mut Report) -> BTreeMap<String, Node> {
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    for (name, node) in candidates(Kind::AsteriskNode, list, report) {
        let spec = &node.spec;
        let mut r = report.on(Kind::AsteriskNode, &name);
        numbering(&spec.numbering, &mut r);
        listeners(spec, &mut r);
        placement(spec, &mut r);
        let provisioning = spec.provisioning.clone().unwrap_or_default();
        super::devices::check_node(&mut r, &provisioning);
        if !r.clean() {
            continue;
        }
        let plan = &spec.numbering;
        if let Some((other, clash)) = nodes.values().find_map(|o| overlap(&o.numbering, plan).map(|c| (o, c)))
        {
            r.error(
                "spec.numbering.prefixes",
                Reason::OverlappingNumbering,
                format!("numbers {clash} are also owned by node {}", other.name),
                "give each node a disjoint numbering plan (different leading digits or a different length)",
            );
            continue;
        }
        let agent_endpoint = match (&spec.agent, &spec.managed) {
            (Some(a), _) => Some(a.endpoint.clone()),
            (None, Some(_)) => Some(managed_agent_endpoint(r.namespace(), &name)),
            (None, None) => None,
        };
        nodes.insert(
            name.clone(),
            Node {
                name,
                numbering: plan.clone(),
                address: spec.address.clone(),
                agent_endpoint,
                managed: spec.managed.is_some(),
                sip: spec.sip.clone(),
                iax: spec.iax.clone(),
                phone_context: spec.phone_context.clone(),
                codecs: spec.codecs.clone(),
                nat: spec.nat.clone(),
                provisioning,
            },
        );
    }
    nodes
}

/// Extension length, and prefixes that are digits shorter than it.
fn numbering(plan: &NumberingPlan, r: &mut Reporter) {
    if !(2..=15).contains(&plan.length) {
        r.error(
            "spec.numbering.length",
            Reason::InvalidField,
            format!("{} is out of range", plan.length),
            "use an extension length from 2 to 15 digits",
        );
    }
    if plan.prefixes.is_empty() {
        r.error(
            "spec.numbering.prefixes",
            Reason::InvalidField,
            "is empty",
            "list the leading digits of the numbers this node owns, e.g. [\"3\"]",
        );
    }
    for (i, prefix) in plan.prefixes.iter().enumerate() {
        if !is_digits(prefix) || prefix.len() >= usize::from(plan.length) {
            r.error(
                format!("spec.numbering.prefixes[{i}]"),
                Reason::InvalidField,
                format!(
                    "{prefix:?} is not a run of digits shorter than the extension length {}",
                    plan.length
                ),
                "use digits only, fewer than spec.numbering.length of them",
            );
        }
    }
}

/// Address, listeners, phone context, codecs and NAT: values that reach config lines.
fn listeners(spec: &AsteriskNodeSpec, r: &mut Reporter) {
    if let Some(address) = &spec.address {
        r.check(is_host(address), "spec.address", address, HOST_FIX);
    }
    for (field, bind) in [("spec.sip.bind", &spec.sip.bind), ("spec.iax.bind", &spec.iax.bind)] {
        if let Some(bind) = bind {
            r.check(bind.parse::<IpAddr>().is_ok(), field, bind, "use an IP address of this server");
        }
    }
    let context_ok = r.check(
        is_name(&spec.phone_context, 79),
        "spec.phoneContext",
        &spec.phone_context,
        "use 1-79 letters, digits, '_' or '-'",
    );
    if let Some(conflict) = phone_context_conflict(&spec.phone_context).filter(|_| context_ok) {
        r.error(
            "spec.phoneContext",
            Reason::ReservedName,
            conflict,
            "pick another context name (or leave the field out for the default operator-phones)",
        );
    }
    check_codecs(r, "spec.codecs", &spec.codecs);
    if let Some(nat) = &spec.nat {
        nat_settings(nat, r);
    }
}

fn nat_settings(nat: &NatSettings, r: &mut Reporter) {
    if let Some(external) = &nat.external_address {
        r.check(is_host(external), "spec.nat.externalAddress", external, HOST_FIX);
    }
    for (i, net) in nat.local_nets.iter().enumerate() {
        r.check(
            valid_cidr(net),
            format!("spec.nat.localNets[{i}]"),
            net,
            "write an address and prefix length, e.g. 192.168.0.0/16",
        );
    }
}

/// Where the node runs: exactly one of an agent beside an existing Asterisk or a managed pod,
/// whose name must leave room for Kubernetes' labels.
fn placement(spec: &AsteriskNodeSpec, r: &mut Reporter) {
    if spec.agent.is_some() == spec.managed.is_some() {
        r.error(
            "spec.agent",
            Reason::InvalidField,
            if spec.agent.is_some() { "and spec.managed are both set" } else { "and spec.managed are both absent" },
            "set exactly one: spec.agent.endpoint for an agent beside an existing Asterisk, or spec.managed.image",
        );
    }
    let name = r.name().to_owned();
    if spec.managed.is_some() && name.len() > MAX_MANAGED_NAME {
        r.error(
            "metadata.name",
            Reason::InvalidField,
            format!(
                "{} characters is too long for a managed node (its StatefulSet asterisk-{name} must leave room for Kubernetes' revision label)",
                name.len()
            ),
            "use a shorter name (at most 43 characters) for a node with spec.managed",
        );
    }
}

/// Where two numbering plans overlap, as a pattern like `3XXX`.
fn overlap(a: &NumberingPlan, b: &NumberingPlan) -> Option<String> {
    if a.length != b.length {
        return None;
    }
    for pa in &a.prefixes {
        for pb in &b.prefixes {
            if pa.starts_with(pb.as_str()) || pb.starts_with(pa.as_str()) {
                let longer = if pa.len() >= pb.len() { pa } else { pb };
                return Some(format!("{longer}{}", "X".repeat(usize::from(a.length) - longer.len())));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_needs_same_length_and_related_prefixes() {
        let plan =
            |p: &[&str], l| NumberingPlan { prefixes: p.iter().map(|s| s.to_string()).collect(), length: l };
        assert_eq!(overlap(&plan(&["3"], 4), &plan(&["31"], 4)), Some("31XX".into()));
        assert_eq!(overlap(&plan(&["3"], 4), &plan(&["4"], 4)), None);
        assert_eq!(overlap(&plan(&["3"], 4), &plan(&["3"], 5)), None);
    }
}
