//! Trunks: two existing, different ends (at least one with a fixed address), an auth method
//! that fits the protocol, networks in CIDR form, and the credential from its Secret.

use std::collections::BTreeMap;

use super::fields::{check_codecs, secret_value, valid_cidr};
use super::{Report, candidates};
use crate::crd::rules::trunk_name_conflict;
use crate::crd::{AuthMethod, Trunk, TrunkProtocol};
use crate::topology::{
    Kind, Node, RSA_PRIVATE_KEY, RSA_PUBLIC_KEY, Reason, ResourceSet, TrunkCredential, TrunkLink,
    auth_method, trunk_secret_ref,
};

/// The valid trunks by name.
pub(in crate::topology) fn trunks(
    list: &[Trunk],
    nodes: &BTreeMap<String, Node>,
    set: &ResourceSet,
    report: &mut Report,
) -> BTreeMap<String, TrunkLink> {
    let mut trunks = BTreeMap::new();
    for (name, trunk) in candidates(Kind::Trunk, list, report) {
        let spec = &trunk.spec;
        let mut r = report.on(Kind::Trunk, &name);
        if let Some(conflict) = trunk_name_conflict(&name) {
            r.error(
                "metadata.name",
                Reason::ReservedName,
                conflict,
                "rename the trunk: start with a letter, avoid general, the operator- prefix and the -in, -auth, -identify and -registration endings",
            );
            continue;
        }
        if spec.ends.len() != 2 {
            r.error(
                "spec.ends",
                Reason::InvalidField,
                format!("lists {} nodes", spec.ends.len()),
                "list exactly the two AsteriskNode names this trunk connects",
            );
            continue;
        }
        for (i, end) in spec.ends.iter().enumerate() {
            if !nodes.contains_key(end) {
                r.error(
                    format!("spec.ends[{i}]"),
                    Reason::MissingNode,
                    format!("AsteriskNode {end:?} does not exist or is invalid"),
                    "name an existing, valid AsteriskNode in the same namespace",
                );
            }
        }
        if spec.ends[0] == spec.ends[1] {
            r.error(
                "spec.ends",
                Reason::SelfTrunk,
                format!("both ends are {:?}", spec.ends[0]),
                "connect two different nodes; a node reaches its own phones without a trunk",
            );
        }
        if !r.clean() {
            continue;
        }
        let mut ends = [spec.ends[0].clone(), spec.ends[1].clone()];
        ends.sort();
        let dynamic: Vec<&String> = ends.iter().filter(|e| nodes[*e].address.is_none()).collect();
        if dynamic.len() == 2 {
            r.error(
                "spec.ends",
                Reason::BothEndsDynamic,
                format!(
                    "neither {} nor {} has spec.address, so neither can reach the other",
                    ends[0], ends[1]
                ),
                "give one of the two nodes a fixed spec.address; the other registers to it",
            );
            continue;
        }
        let method = auth_method(trunk);
        let fits = matches!(
            (spec.protocol, method),
            (TrunkProtocol::Pjsip, AuthMethod::Digest)
                | (TrunkProtocol::Iax2, AuthMethod::Md5 | AuthMethod::Rsa | AuthMethod::Plaintext)
        );
        if !fits {
            r.error(
                "spec.auth.method",
                Reason::AuthMismatch,
                format!("{} does not work with protocol {}", method.as_str(), spec.protocol.as_str()),
                "use digest for pjsip trunks; md5 (recommended), rsa or plaintext for iax2 trunks",
            );
            continue;
        }
        for (i, cidr) in spec.permit.iter().enumerate() {
            if !valid_cidr(cidr) {
                r.error(
                    format!("spec.permit[{i}]"),
                    Reason::InvalidField,
                    format!("{cidr:?} is not a network in CIDR form"),
                    "write an address and prefix length, e.g. 192.0.2.0/24",
                );
            }
        }
        if let Some(codecs) = &spec.codecs {
            check_codecs(&mut r, "spec.codecs", codecs);
        }
        let reference = trunk_secret_ref(trunk);
        let field = "spec.auth.secretRef";
        let credential = match method {
            AuthMethod::Md5 => {
                secret_value(set, &mut r, field, &reference, &reference.key).map(TrunkCredential::Md5)
            }
            AuthMethod::Plaintext => {
                secret_value(set, &mut r, field, &reference, &reference.key).map(TrunkCredential::Plaintext)
            }
            AuthMethod::Digest => {
                secret_value(set, &mut r, field, &reference, &reference.key).map(TrunkCredential::Digest)
            }
            AuthMethod::Rsa => {
                let private_key = secret_value(set, &mut r, field, &reference, RSA_PRIVATE_KEY);
                let public_key = secret_value(set, &mut r, field, &reference, RSA_PUBLIC_KEY);
                private_key
                    .zip(public_key)
                    .map(|(private_key, public_key)| TrunkCredential::Rsa { private_key, public_key })
            }
        };
        let Some(credential) = credential else { continue };
        if !r.clean() {
            continue;
        }
        trunks.insert(
            name.clone(),
            TrunkLink {
                name,
                protocol: spec.protocol,
                registrant: dynamic.first().map(|e| (*e).clone()),
                ends,
                priority: spec.priority,
                credential,
                trunking: spec.trunking,
                permit: spec.permit.clone(),
                codecs: spec.codecs.clone(),
                qualify: spec.qualify,
            },
        );
    }
    trunks
}
