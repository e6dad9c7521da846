//! Example fleets with deterministic secrets, so rendered files can be compared byte for byte.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use asterisk_operator::manifest::Manifests;
use asterisk_operator::secret::SecretValue;
use asterisk_operator::topology::{self, ResourceSet};

use super::asterisk::fresh_address;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Parses one YAML text into the `default` namespace's resource set.
pub fn parse(yaml: &str) -> ResourceSet {
    let mut manifests = Manifests::default();
    manifests.add_yaml("<test>", yaml).expect("test manifests parse");
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
