//! The resolver: checks every resource, keeps the valid ones, computes routes and mirrors.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::{
    BlfKey, Kind, Mirror, Node, ObjectRef, PhoneLine, Reason, Resolution, ResourceSet, Topology,
    TrunkCredential, TrunkLink, ValidationError, auth_method, device, name_of, phone_secret_ref,
    provisioning_secret_ref, routing, trunk_secret_ref,
};
use crate::crd::{
    AsteriskNode, AuthMethod, BlfSubscription, NumberingPlan, Phone, SecretKeyRef, Trunk, TrunkProtocol,
};
use crate::secret::SecretValue;

/// Collects errors for one resolve run.
struct Errors<'a> {
    namespace: &'a str,
    list: Vec<ValidationError>,
}

impl Errors<'_> {
    fn push(
        &mut self,
        kind: Kind,
        name: &str,
        field: impl Into<String>,
        reason: Reason,
        problem: String,
        fix: &str,
    ) {
        self.list.push(ValidationError {
            object: ObjectRef::new(kind, self.namespace, name),
            field: field.into(),
            reason,
            problem,
            fix: fix.to_owned(),
        });
    }
}

/// Sort key that keeps the oldest resource when two conflict: creation time, then name.
fn age_key(meta: &kube::api::ObjectMeta) -> (bool, Option<String>, String) {
    let created = meta.creation_timestamp.as_ref().map(|t| t.0.to_string());
    (created.is_none(), created, name_of(meta))
}

pub(super) fn resolve(set: &ResourceSet) -> Resolution {
    let mut errors = Errors { namespace: &set.namespace, list: Vec::new() };
    let nodes = resolve_nodes(&set.nodes, &mut errors);
    let trunks = resolve_trunks(&set.trunks, &nodes, set, &mut errors);
    let phones = resolve_phones(&set.phones, &nodes, set, &mut errors);
    check_reachability(&nodes, &trunks, &mut errors);
    let (mirrors, blf_keys) = resolve_blf(&set.blf_subscriptions, &nodes, &phones, &mut errors);
    let routes = routing::routes(&nodes, &trunks);
    let mut list = errors.list;
    list.sort();
    list.dedup();
    Resolution {
        topology: Topology {
            namespace: set.namespace.clone(),
            nodes,
            trunks,
            phones,
            routes,
            mirrors,
            blf_keys,
        },
        errors: list,
    }
}

/// Kubernetes object names double as Asterisk section names and custom device names, so they
/// must be DNS-1123 labels (what the API server enforces for most kinds anyway).
fn check_name(kind: Kind, name: &str, errors: &mut Errors) -> bool {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        errors.push(
            kind,
            name,
            "metadata.name",
            Reason::InvalidField,
            format!("{name:?} is not a DNS-1123 label"),
            "use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit",
        );
    }
    ok
}

fn duplicate_names<'a>(
    kind: Kind,
    names: impl Iterator<Item = String>,
    errors: &mut Errors<'a>,
) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut dups = BTreeSet::new();
    for name in names {
        if !seen.insert(name.clone()) && dups.insert(name.clone()) {
            errors.push(
                kind,
                &name,
                "metadata.name",
                Reason::InvalidField,
                "is defined more than once".to_owned(),
                "give each resource of a kind its own name, or delete the copy",
            );
        }
    }
    dups
}

/// The resources of one kind worth resolving, oldest first (so the oldest keeps what two
/// claim): names that are valid and defined once, each with its resource.
fn candidates<'a, K: kube::Resource>(kind: Kind, list: &'a [K], errors: &mut Errors) -> Vec<(String, &'a K)> {
    let mut sorted: Vec<&K> = list.iter().collect();
    sorted.sort_by_cached_key(|r| age_key(r.meta()));
    let dups = duplicate_names(kind, sorted.iter().map(|r| name_of(r.meta())), errors);
    sorted
        .into_iter()
        .map(|r| (name_of(r.meta()), r))
        .filter(|(name, _)| !dups.contains(name) && check_name(kind, name, errors))
        .collect()
}

/// Values that end up inside config lines must not be able to break out of them. The CRD schema
/// states the same rules; manifests read offline bypass it, so the resolver checks again.
pub(super) fn is_host(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b))
}

fn is_name(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn is_codec(s: &str) -> bool {
    (2..=16).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Pushes an `InvalidField` error when `ok` is false; returns `ok`.
fn check_field(
    errors: &mut Errors,
    kind: Kind,
    name: &str,
    field: String,
    value: &str,
    ok: bool,
    fix: &str,
) -> bool {
    if !ok {
        errors.push(kind, name, field, Reason::InvalidField, format!("{value:?} is not allowed here"), fix);
    }
    ok
}

fn check_codecs(errors: &mut Errors, kind: Kind, name: &str, field: &str, codecs: &[String]) -> bool {
    let mut ok = true;
    for (i, codec) in codecs.iter().enumerate() {
        ok &= check_field(
            errors,
            kind,
            name,
            format!("{field}[{i}]"),
            codec,
            is_codec(codec),
            "use Asterisk codec names: 2-16 lowercase letters, digits or '_' (ulaw, alaw, g722, opus, …)",
        );
    }
    ok
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Longest name of a managed node: its StatefulSet `asterisk-<name>` gets pods labelled
/// `controller-revision-hash: asterisk-<name>-<10-character hash>`, and a label value has at most
/// 63 characters.
const MAX_MANAGED_NAME: usize = 63 - "asterisk-".len() - 11;
const _: () = assert!(MAX_MANAGED_NAME == 43, "keep the fix text of the managed name check in step");

fn resolve_nodes(list: &[AsteriskNode], errors: &mut Errors) -> BTreeMap<String, Node> {
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    for (name, node) in candidates(Kind::AsteriskNode, list, errors) {
        let spec = &node.spec;
        let mut ok = true;
        let plan = &spec.numbering;
        if !(2..=15).contains(&plan.length) {
            ok = false;
            errors.push(
                Kind::AsteriskNode,
                &name,
                "spec.numbering.length",
                Reason::InvalidField,
                format!("{} is out of range", plan.length),
                "use an extension length from 2 to 15 digits",
            );
        }
        if plan.prefixes.is_empty() {
            ok = false;
            errors.push(
                Kind::AsteriskNode,
                &name,
                "spec.numbering.prefixes",
                Reason::InvalidField,
                "is empty".to_owned(),
                "list the leading digits of the numbers this node owns, e.g. [\"3\"]",
            );
        }
        for (i, prefix) in plan.prefixes.iter().enumerate() {
            if !is_digits(prefix) || prefix.len() >= usize::from(plan.length) {
                ok = false;
                errors.push(
                    Kind::AsteriskNode,
                    &name,
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
        let host_fix = "use a host name or an IP address (letters, digits, '.', '-', ':')";
        let kind = Kind::AsteriskNode;
        if let Some(address) = &spec.address {
            ok &=
                check_field(errors, kind, &name, "spec.address".into(), address, is_host(address), host_fix);
        }
        for (field, bind) in [("spec.sip.bind", &spec.sip.bind), ("spec.iax.bind", &spec.iax.bind)] {
            if let Some(bind) = bind {
                ok &= check_field(
                    errors,
                    kind,
                    &name,
                    field.into(),
                    bind,
                    bind.parse::<IpAddr>().is_ok(),
                    "use an IP address of this server",
                );
            }
        }
        ok &= check_field(
            errors,
            kind,
            &name,
            "spec.phoneContext".into(),
            &spec.phone_context,
            is_name(&spec.phone_context, 79),
            "use 1-79 letters, digits, '_' or '-'",
        );
        ok &= check_codecs(errors, kind, &name, "spec.codecs", &spec.codecs);
        if let Some(nat) = &spec.nat {
            if let Some(external) = &nat.external_address {
                ok &= check_field(
                    errors,
                    kind,
                    &name,
                    "spec.nat.externalAddress".into(),
                    external,
                    is_host(external),
                    host_fix,
                );
            }
            for (i, net) in nat.local_nets.iter().enumerate() {
                ok &= check_field(
                    errors,
                    kind,
                    &name,
                    format!("spec.nat.localNets[{i}]"),
                    net,
                    valid_cidr(net),
                    "write an address and prefix length, e.g. 192.168.0.0/16",
                );
            }
        }
        let provisioning = spec.provisioning.clone().unwrap_or_default();
        let settings_errors = device::check_node(errors.namespace, &name, &provisioning);
        ok &= settings_errors.is_empty();
        errors.list.extend(settings_errors);
        if spec.agent.is_some() == spec.managed.is_some() {
            ok = false;
            errors.push(
                Kind::AsteriskNode,
                &name,
                "spec.agent",
                Reason::InvalidField,
                if spec.agent.is_some() { "and spec.managed are both set" } else { "and spec.managed are both absent" }
                    .to_owned(),
                "set exactly one: spec.agent.endpoint for an agent beside an existing Asterisk, or spec.managed.image",
            );
        }
        if spec.managed.is_some() && name.len() > MAX_MANAGED_NAME {
            ok = false;
            errors.push(
                Kind::AsteriskNode,
                &name,
                "metadata.name",
                Reason::InvalidField,
                format!(
                    "{} characters is too long for a managed node (its StatefulSet asterisk-{name} must leave room for Kubernetes' revision label)",
                    name.len()
                ),
                "use a shorter name (at most 43 characters) for a node with spec.managed",
            );
        }
        if !ok {
            continue;
        }
        if let Some((other, clash)) = nodes.values().find_map(|o| overlap(&o.numbering, plan).map(|c| (o, c)))
        {
            errors.push(
                Kind::AsteriskNode,
                &name,
                "spec.numbering.prefixes",
                Reason::OverlappingNumbering,
                format!("numbers {clash} are also owned by node {}", other.name),
                "give each node a disjoint numbering plan (different leading digits or a different length)",
            );
            continue;
        }
        nodes.insert(
            name.clone(),
            Node {
                name: name.clone(),
                numbering: plan.clone(),
                address: spec.address.clone(),
                agent_endpoint: match (&spec.agent, &spec.managed) {
                    (Some(a), _) => Some(a.endpoint.clone()),
                    (None, Some(_)) => Some(super::managed_agent_endpoint(errors.namespace, &name)),
                    (None, None) => None,
                },
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

/// Characters that Asterisk config lines or IAX2 `register =>` lines cannot carry in a secret.
fn secret_is_config_safe(value: &str) -> bool {
    value
        .chars()
        .all(|c| c.is_ascii_graphic() && !matches!(c, ';' | ':' | '@' | '"' | '\\' | '#' | ',' | '[' | ']'))
}

const MIN_SECRET_LEN: usize = 12;

/// Looks up a secret value; pushes an error naming `field` when it is missing or unusable.
fn secret_value(
    set: &ResourceSet,
    kind: Kind,
    name: &str,
    field: &str,
    reference: &SecretKeyRef,
    key: &str,
    errors: &mut Errors,
) -> Option<SecretValue> {
    let Some(value) = set.secrets.get(&reference.name).and_then(|s| s.get(key)) else {
        let problem = if set.secrets.contains_key(&reference.name) {
            format!("Secret {:?} has no key {key:?}", reference.name)
        } else {
            format!("Secret {:?} does not exist", reference.name)
        };
        errors.push(
            kind,
            name,
            field,
            Reason::MissingSecret,
            problem,
            "create the Secret with that key, or remove the reference to have one generated",
        );
        return None;
    };
    if key == super::RSA_PRIVATE_KEY || key == super::RSA_PUBLIC_KEY {
        if !value.expose().contains("-----BEGIN") {
            errors.push(
                kind,
                name,
                field,
                Reason::UnusableSecret,
                format!("Secret {:?} key {key:?} is not a PEM key", reference.name),
                "store the key pair made by `astgenkey -n` (PEM) under rsa.key and rsa.pub",
            );
            return None;
        }
        return Some(value.clone());
    }
    if value.expose().len() < MIN_SECRET_LEN || !secret_is_config_safe(value.expose()) {
        errors.push(
            kind,
            name,
            field,
            Reason::UnusableSecret,
            format!(
                "Secret {:?} key {key:?} is shorter than {MIN_SECRET_LEN} characters or holds spaces or one of ; : @ \" \\ # , [ ]",
                reference.name
            ),
            "use a longer secret of letters, digits and simple punctuation, or delete the Secret to have one generated",
        );
        return None;
    }
    Some(value.clone())
}

fn resolve_trunks(
    list: &[Trunk],
    nodes: &BTreeMap<String, Node>,
    set: &ResourceSet,
    errors: &mut Errors,
) -> BTreeMap<String, TrunkLink> {
    let mut trunks = BTreeMap::new();
    for (name, trunk) in candidates(Kind::Trunk, list, errors) {
        let spec = &trunk.spec;
        let mut ok = true;
        if spec.ends.len() != 2 {
            errors.push(
                Kind::Trunk,
                &name,
                "spec.ends",
                Reason::InvalidField,
                format!("lists {} nodes", spec.ends.len()),
                "list exactly the two AsteriskNode names this trunk connects",
            );
            continue;
        }
        for (i, end) in spec.ends.iter().enumerate() {
            if !nodes.contains_key(end) {
                ok = false;
                errors.push(
                    Kind::Trunk,
                    &name,
                    format!("spec.ends[{i}]"),
                    Reason::MissingNode,
                    format!("AsteriskNode {end:?} does not exist or is invalid"),
                    "name an existing, valid AsteriskNode in the same namespace",
                );
            }
        }
        if spec.ends[0] == spec.ends[1] {
            ok = false;
            errors.push(
                Kind::Trunk,
                &name,
                "spec.ends",
                Reason::SelfTrunk,
                format!("both ends are {:?}", spec.ends[0]),
                "connect two different nodes; a node reaches its own phones without a trunk",
            );
        }
        if !ok {
            continue;
        }
        let mut ends = [spec.ends[0].clone(), spec.ends[1].clone()];
        ends.sort();
        let dynamic: Vec<&String> = ends.iter().filter(|e| nodes[*e].address.is_none()).collect();
        if dynamic.len() == 2 {
            errors.push(
                Kind::Trunk,
                &name,
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
            errors.push(
                Kind::Trunk,
                &name,
                "spec.auth.method",
                Reason::AuthMismatch,
                format!("{} does not work with protocol {}", method.as_str(), spec.protocol.as_str()),
                "use digest for pjsip trunks; md5 (recommended), rsa or plaintext for iax2 trunks",
            );
            continue;
        }
        for (i, cidr) in spec.permit.iter().enumerate() {
            if !valid_cidr(cidr) {
                ok = false;
                errors.push(
                    Kind::Trunk,
                    &name,
                    format!("spec.permit[{i}]"),
                    Reason::InvalidField,
                    format!("{cidr:?} is not a network in CIDR form"),
                    "write an address and prefix length, e.g. 192.0.2.0/24",
                );
            }
        }
        if let Some(codecs) = &spec.codecs {
            ok &= check_codecs(errors, Kind::Trunk, &name, "spec.codecs", codecs);
        }
        let reference = trunk_secret_ref(trunk);
        let field = "spec.auth.secretRef";
        let secret = |key: &str, errors: &mut Errors| {
            secret_value(set, Kind::Trunk, &name, field, &reference, key, errors)
        };
        let credential = match method {
            AuthMethod::Md5 => secret(&reference.key, errors).map(TrunkCredential::Md5),
            AuthMethod::Plaintext => secret(&reference.key, errors).map(TrunkCredential::Plaintext),
            AuthMethod::Digest => secret(&reference.key, errors).map(TrunkCredential::Digest),
            AuthMethod::Rsa => {
                let private_key = secret(super::RSA_PRIVATE_KEY, errors);
                let public_key = secret(super::RSA_PUBLIC_KEY, errors);
                private_key
                    .zip(public_key)
                    .map(|(private_key, public_key)| TrunkCredential::Rsa { private_key, public_key })
            }
        };
        let Some(credential) = credential else { continue };
        if !ok {
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

pub(super) fn valid_cidr(cidr: &str) -> bool {
    let Some((addr, len)) = cidr.split_once('/') else { return false };
    let Ok(addr) = addr.parse::<IpAddr>() else { return false };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    len.parse::<u8>().is_ok_and(|l| l <= max)
}

fn resolve_phones(
    list: &[Phone],
    nodes: &BTreeMap<String, Node>,
    set: &ResourceSet,
    errors: &mut Errors,
) -> BTreeMap<String, PhoneLine> {
    let mut phones = BTreeMap::new();
    let mut by_extension: BTreeMap<String, String> = BTreeMap::new();
    let mut by_mac = BTreeMap::new();
    for (name, phone) in candidates(Kind::Phone, list, errors) {
        let spec = &phone.spec;
        let Some(node) = nodes.get(&spec.node) else {
            errors.push(
                Kind::Phone,
                &name,
                "spec.node",
                Reason::MissingNode,
                format!("AsteriskNode {:?} does not exist or is invalid", spec.node),
                "name an existing, valid AsteriskNode in the same namespace",
            );
            continue;
        };
        if !is_digits(&spec.extension) {
            errors.push(
                Kind::Phone,
                &name,
                "spec.extension",
                Reason::InvalidField,
                format!("{:?} is not all digits", spec.extension),
                "use digits only, e.g. \"3001\"",
            );
            continue;
        }
        if !node.owns(&spec.extension) {
            errors.push(
                Kind::Phone,
                &name,
                "spec.extension",
                Reason::OutsideNumbering,
                format!(
                    "{} is outside node {}'s numbering plan ({})",
                    spec.extension,
                    node.name,
                    plan_patterns(&node.numbering).join(", ")
                ),
                "pick an extension of that plan, or home the phone on the node that owns this number",
            );
            continue;
        }
        let mut ok = true;
        if let Some(display) = &spec.display_name {
            let fine = !display.is_empty()
                && display.chars().count() <= 64
                && !display.chars().any(|c| c.is_control() || matches!(c, '"' | '<' | '>' | '\\' | ';'));
            ok &= check_field(
                errors,
                Kind::Phone,
                &name,
                "spec.displayName".into(),
                display,
                fine,
                "use at most 64 characters without quotes, <, >, backslash or ;",
            );
        }
        if let Some(mailbox) = &spec.voicemail {
            let (number, context) =
                mailbox.split_once('@').map_or((mailbox.as_str(), None), |(n, c)| (n, Some(c)));
            let fine = is_digits(number) && number.len() <= 15 && context.is_none_or(|c| is_name(c, 79));
            ok &= check_field(
                errors,
                Kind::Phone,
                &name,
                "spec.voicemail".into(),
                mailbox,
                fine,
                "write a mailbox number, optionally @context",
            );
        }
        if let Some(codecs) = &spec.codecs {
            ok &= check_codecs(errors, Kind::Phone, &name, "spec.codecs", codecs);
        }
        if !ok {
            continue;
        }
        if let Some(other) = by_extension.get(&spec.extension) {
            errors.push(
                Kind::Phone,
                &name,
                "spec.extension",
                Reason::DuplicateExtension,
                format!("{} is already the extension of phone {other}", spec.extension),
                "give every phone its own extension",
            );
            continue;
        }
        let reference = phone_secret_ref(phone);
        let Some(password) =
            secret_value(set, Kind::Phone, &name, "spec.secretRef", &reference, &reference.key, errors)
        else {
            continue;
        };
        let device = match spec.device.as_ref().map(|d| device::check(errors.namespace, &name, d, node)) {
            None => None,
            Some(Err(problems)) => {
                errors.list.extend(problems);
                continue;
            }
            Some(Ok(checked)) => {
                let r = provisioning_secret_ref(phone);
                let Some(pw) = secret_value(set, Kind::Phone, &name, "spec.device", &r, &r.key, errors)
                else {
                    continue;
                };
                if let Some(e) = device::claim_mac(&mut by_mac, errors.namespace, &name, checked.mac) {
                    errors.list.push(e);
                    continue;
                }
                Some(checked.with_password(pw))
            }
        };
        by_extension.insert(spec.extension.clone(), name.clone());
        phones.insert(
            name.clone(),
            PhoneLine {
                name,
                node: node.name.clone(),
                extension: spec.extension.clone(),
                display_name: spec.display_name.clone(),
                password,
                nat: spec.nat,
                codecs: spec.codecs.clone().unwrap_or_else(|| node.codecs.clone()),
                voicemail: spec.voicemail.clone(),
                max_contacts: spec.max_contacts,
                device,
            },
        );
    }
    phones
}

/// A numbering plan as dialplan-style patterns, e.g. `3XXX`.
pub(crate) fn plan_patterns(plan: &NumberingPlan) -> Vec<String> {
    plan.prefixes
        .iter()
        .map(|p| format!("{p}{}", "X".repeat(usize::from(plan.length).saturating_sub(p.len()))))
        .collect()
}

/// Every node must reach every other over trunks. Nodes outside the largest connected group get
/// an error; they still render (their own phones keep working), but calls to them fail.
fn check_reachability(
    nodes: &BTreeMap<String, Node>,
    trunks: &BTreeMap<String, TrunkLink>,
    errors: &mut Errors,
) {
    let groups = routing::components(nodes, trunks);
    let Some(main) =
        groups.iter().max_by(|a, b| a.len().cmp(&b.len()).then_with(|| b.first().cmp(&a.first())))
    else {
        return;
    };
    for group in groups.iter().filter(|g| *g != main) {
        for name in group {
            errors.push(
                Kind::AsteriskNode,
                name,
                "spec",
                Reason::Unreachable,
                format!("no chain of valid trunks connects {name} to node {}", main[0]),
                "add a Trunk from this node to any node of the rest of the fleet (or fix the invalid one)",
            );
        }
    }
}

fn resolve_blf(
    list: &[BlfSubscription],
    nodes: &BTreeMap<String, Node>,
    phones: &BTreeMap<String, PhoneLine>,
    errors: &mut Errors,
) -> (BTreeSet<Mirror>, BTreeMap<String, Vec<BlfKey>>) {
    let by_extension: BTreeMap<&str, &PhoneLine> =
        phones.values().map(|p| (p.extension.as_str(), p)).collect();
    let mut mirrors = BTreeSet::new();
    let mut keys: BTreeMap<String, Vec<BlfKey>> = BTreeMap::new();
    for (name, sub) in candidates(Kind::BlfSubscription, list, errors) {
        let watcher = &sub.spec.watcher;
        let watcher_node = match (&watcher.phone, &watcher.node) {
            (Some(phone), None) => match phones.get(phone) {
                Some(p) => p.node.clone(),
                None => {
                    errors.push(
                        Kind::BlfSubscription,
                        &name,
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
                    errors.push(
                        Kind::BlfSubscription,
                        &name,
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
                errors.push(
                    Kind::BlfSubscription,
                    &name,
                    "spec.watcher",
                    Reason::InvalidField,
                    "must name exactly one of phone or node".to_owned(),
                    "set either spec.watcher.phone or spec.watcher.node",
                );
                continue;
            }
        };
        let mut ok = true;
        let mut resolved = Vec::new();
        for (i, target) in sub.spec.targets.iter().enumerate() {
            match by_extension.get(target.extension.as_str()) {
                Some(owner) => resolved.push((target, owner.node.clone())),
                None => {
                    ok = false;
                    errors.push(
                        Kind::BlfSubscription,
                        &name,
                        format!("spec.targets[{i}].extension"),
                        Reason::UnknownTarget,
                        format!("no valid Phone of the fleet has extension {:?}", target.extension),
                        "watch an extension that a Phone has, or create that Phone first",
                    );
                }
            }
        }
        if !ok {
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

    #[test]
    fn cidr_forms() {
        assert!(valid_cidr("192.0.2.0/24"));
        assert!(valid_cidr("2001:db8::/32"));
        assert!(!valid_cidr("192.0.2.0/33"));
        assert!(!valid_cidr("192.0.2.0"));
        assert!(!valid_cidr("example.com/24"));
    }

    #[test]
    fn config_unsafe_secrets_are_refused() {
        assert!(secret_is_config_safe("Abc123-_.!%&"));
        for bad in ["a;b", "a b", "a:b", "a@b", "a\"b", "a\\b", "a#b", "a,b", "a[b", "a\nb"] {
            assert!(!secret_is_config_safe(bad), "{bad:?}");
        }
    }
}
