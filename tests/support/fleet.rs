//! Example fleets with deterministic secrets, so rendered files can be compared byte for byte.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use asterisk_operator::manifest::Manifests;
use asterisk_operator::secret::SecretValue;
use asterisk_operator::topology::{self, Kind, Reason, Resolution, ResourceSet, ValidationError};

use super::asterisk::fresh_address;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Parses one YAML text into the `default` namespace's resource set.
pub fn parse(yaml: &str) -> ResourceSet {
    let mut manifests = Manifests::default();
    manifests.add_yaml("<test>", yaml).expect("test manifests parse");
    assert!(manifests.errors.is_empty(), "test manifests have errors: {:#?}", manifests.errors);
    let mut set = manifests.namespaces.remove("default").unwrap_or_default();
    set.namespace = "default".into();
    set
}

/// Fills every missing secret with a fixed, config-safe value derived from its name.
pub fn with_test_secrets(mut set: ResourceSet) -> ResourceSet {
    for missing in topology::missing_secrets(&set) {
        let value = SecretValue::new(format!("Test{}{}Secret0", missing.name.replace('-', ""), missing.key));
        set.secrets.entry(missing.name).or_default().insert(missing.key, value);
    }
    set
}

/// Resolves `base` and `extra` (YAML documents) together, with test secrets.
pub fn resolve_with(base: &str, extra: &str) -> Resolution {
    topology::resolve(&with_test_secrets(parse(&format!("{base}\n---\n{extra}"))))
}

/// Asserts exactly one error, on `kind/name` of the default namespace, at `field`, with
/// `reason`, a message that names the field and a fix; returns it.
pub fn single_error(
    res: &Resolution,
    kind: Kind,
    name: &str,
    field: &str,
    reason: Reason,
) -> ValidationError {
    assert_eq!(res.errors.len(), 1, "errors: {:#?}", res.errors);
    let e = res.errors[0].clone();
    assert_eq!((e.object.kind, e.object.name.as_str(), e.object.namespace.as_str()), (kind, name, "default"));
    assert_eq!(e.field, field);
    assert_eq!(e.reason, reason);
    let text = e.to_string();
    assert!(text.starts_with(&format!("{kind} default/{name}: {field}: ")), "{text}");
    assert!(!e.fix.is_empty());
    e
}

/// An example under `examples/`, with test secrets.
pub fn example(name: &str) -> ResourceSet {
    let path = repo().join("examples").join(format!("{name}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    with_test_secrets(parse(&text))
}

/// Reads a file relative to the repository.
pub fn read(path: impl AsRef<Path>) -> String {
    let path = repo().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Points every node of an example at its own loopback address: nodes with an address get it
/// as their address, every node binds its SIP and IAX2 listeners there.
pub fn on_loopback(mut set: ResourceSet) -> (ResourceSet, BTreeMap<String, Ipv4Addr>) {
    let mut addrs = BTreeMap::new();
    for node in &mut set.nodes {
        let addr = fresh_address();
        let spec = &mut node.spec;
        if spec.address.is_some() {
            spec.address = Some(addr.to_string());
        }
        spec.sip.bind = Some(addr.to_string());
        spec.iax.bind = Some(addr.to_string());
        // Test phones and trunks all live on 127/8.
        if let Some(nat) = &mut spec.nat {
            nat.local_nets = vec!["127.0.0.0/8".into()];
        }
        addrs.insert(node.metadata.name.clone().unwrap(), addr);
    }
    for trunk in &mut set.trunks {
        if !trunk.spec.permit.is_empty() {
            trunk.spec.permit = vec!["127.0.0.0/8".into()];
        }
    }
    (set, addrs)
}

/// A synthetic fleet for measurements: `nodes` nodes (a hub with an IAX2 trunk to every branch,
/// a PJSIP fallback to every other one, a few direct branch trunks), `phones` phones spread
/// evenly, and `blf_targets` BLF targets in subscriptions of 10, with test secrets.
pub fn synthetic(nodes: usize, phones: usize, blf_targets: usize) -> ResourceSet {
    use asterisk_operator::crd::*;
    assert!(nodes <= 89, "node i owns the two-digit prefix 10+i");
    let n_nodes = nodes;
    let mut set = ResourceSet { namespace: "default".into(), ..ResourceSet::default() };
    let spec_node = |i: usize| AsteriskNodeSpec {
        numbering: NumberingPlan { prefixes: vec![format!("{}", 10 + i)], length: 6 },
        address: (i % 3 != 2).then(|| format!("192.0.2.{}", i + 1)),
        agent: Some(AgentEndpoint { endpoint: format!("https://node-{i}:7443") }),
        managed: None,
        sip: SipSettings::default(),
        iax: IaxSettings::default(),
        phone_context: "operator-phones".into(),
        codecs: vec!["ulaw".into(), "alaw".into()],
        nat: None,
        provisioning: None,
    };
    for i in 0..n_nodes {
        set.nodes.push(AsteriskNode::new(&format!("node-{i}"), spec_node(i)));
    }
    // A hub (node-0, fixed address) with an IAX2 trunk to every branch and a PJSIP fallback to
    // every other one, plus a few direct branch-to-branch trunks.
    let mut trunk = |name: String, protocol, a: usize, b: usize, priority| {
        let mut t = Trunk::new(
            &name,
            TrunkSpec {
                protocol,
                ends: vec![format!("node-{a}"), format!("node-{b}")],
                priority,
                auth: TrunkAuth::default(),
                trunking: true,
                permit: vec![],
                codecs: None,
                qualify: true,
            },
        );
        t.metadata.namespace = Some("default".into());
        set.trunks.push(t);
    };
    for i in 1..n_nodes {
        trunk(format!("hub-{i}"), TrunkProtocol::Iax2, 0, i, 1);
        if i % 2 == 0 {
            trunk(format!("hub-{i}-sip"), TrunkProtocol::Pjsip, 0, i, 2);
        }
    }
    for i in (1..n_nodes - 1).step_by(4) {
        trunk(format!("direct-{i}"), TrunkProtocol::Iax2, i, i + 1, 1);
    }
    for p in 0..phones {
        let node = p % n_nodes;
        let ext = format!("{}{:04}", 10 + node, p / n_nodes);
        set.phones.push(Phone::new(
            &format!("phone-{p}"),
            PhoneSpec {
                display_name: Some(format!("Phone {p}")),
                ..PhoneSpec::new(&format!("node-{node}"), &ext)
            },
        ));
    }
    // BLF: subscriptions of 10 targets each, watched by phones spread over the nodes.
    for s in 0..blf_targets / 10 {
        let watcher = (s * 7) % phones;
        let targets = (0..10)
            .map(|k| {
                let p = (s * 131 + k * 17 + 1) % phones;
                BlfTarget { extension: format!("{}{:04}", 10 + p % n_nodes, p / n_nodes), label: None }
            })
            .collect();
        set.blf_subscriptions.push(BlfSubscription::new(
            &format!("blf-{s}"),
            BlfSubscriptionSpec {
                watcher: Watcher { phone: Some(format!("phone-{watcher}")), node: None },
                targets,
            },
        ));
    }
    for missing in topology::missing_secrets(&set) {
        set.secrets
            .entry(missing.name)
            .or_default()
            .insert(missing.key, SecretValue::new("BenchSecret0123456789"));
    }
    set
}
