//! `iax_operator.conf`: the node's IAX2 listener, registrations and trunks, plus RSA key files.
//!
//! Each IAX2 trunk is two sections on each end: `[<trunk>]` (type=peer) is how this node calls
//! the other end, and accepts its registration when the other end is dynamic;
//! `[<trunk>-in]` (type=user) is how the other end's calls are accepted, into the trunk's
//! incoming context. Each side's peer names the other side's user (`username=<trunk>-in`).

use std::collections::BTreeMap;

use super::pjsip::host_port;
use super::{ConfigText, KEYS_DIR, incoming_context};
use crate::crd::TrunkProtocol;
use crate::topology::{Node, Topology, TrunkCredential, TrunkLink};

pub(super) fn render(topology: &Topology, node: &Node) -> String {
    let trunks: Vec<&TrunkLink> = topology
        .trunks
        .values()
        .filter(|t| t.protocol == TrunkProtocol::Iax2 && t.touches(&node.name))
        .collect();
    let mut out = ConfigText::new(&node.name);
    // `(+)` adds to the main file's [general] (this file is included at its end), so
    // registrations and the listener live here without a second [general].
    out.comment("Listener and registrations, added to iax.conf's [general].");
    out.extend_section("general").set("bindport", node.iax.port);
    if let Some(bind) = &node.iax.bind {
        out.set("bindaddr", bind);
    }
    for trunk in trunks.iter().filter(|t| t.registrant.as_deref() == Some(node.name.as_str())) {
        let remote = &topology.nodes[trunk.remote_of(&node.name)];
        let server = host_port(
            remote.address.as_deref().expect("a registrant's remote has an address"),
            remote.iax.port,
        );
        let secret = match &trunk.credential {
            TrunkCredential::Rsa { .. } => format!("[{}]", trunk.name),
            TrunkCredential::Md5(s) | TrunkCredential::Plaintext(s) | TrunkCredential::Digest(s) => {
                s.expose().to_owned()
            }
        };
        out.line(format!("register => {}:{secret}@{server}", trunk.name));
    }
    for trunk in trunks {
        let remote = &topology.nodes[trunk.remote_of(&node.name)];
        trunk_sections(&mut out, node, remote, trunk);
    }
    out.finish()
}

fn trunk_sections(out: &mut ConfigText, node: &Node, remote: &Node, trunk: &TrunkLink) {
    let name = &trunk.name;
    let codecs = trunk.codecs.as_ref().unwrap_or(&node.codecs).join(",");
    let trunking = if trunk.trunking { "yes" } else { "no" };
    out.comment(&format!("Trunk {name} to node {} (iax2, priority {})", remote.name, trunk.priority));
    out.section(name).set("type", "peer");
    match &remote.address {
        Some(address) => out.set("host", address).set("port", remote.iax.port),
        None => out.set("host", "dynamic"),
    };
    out.set("username", format!("{name}-in"));
    credential(out, trunk, true);
    out.set("qualify", if trunk.qualify { "yes" } else { "no" })
        .set("trunk", trunking)
        .set("disallow", "all")
        .set("allow", &codecs);
    out.section(&format!("{name}-in")).set("type", "user").set("context", incoming_context(name));
    credential(out, trunk, false);
    out.set("trunk", trunking).set("disallow", "all").set("allow", &codecs);
    if !trunk.permit.is_empty() {
        // Deny both families, then permit: with an IPv4 deny alone, any IPv6 source passes.
        out.set("deny", "0.0.0.0/0.0.0.0").set("deny", "::/0");
        for net in &trunk.permit {
            out.set("permit", net);
        }
    }
}

fn credential(out: &mut ConfigText, trunk: &TrunkLink, peer: bool) {
    out.set("auth", trunk.credential.method().as_str());
    match &trunk.credential {
        TrunkCredential::Md5(s) | TrunkCredential::Plaintext(s) | TrunkCredential::Digest(s) => {
            out.set("secret", s.expose());
        }
        TrunkCredential::Rsa { .. } => {
            // One key pair per trunk, on both ends: inkeys checks the other end, outkey signs.
            out.set("inkeys", &trunk.name);
            if peer {
                out.set("outkey", &trunk.name);
            }
        }
    }
}

/// `keys/<trunk>.key` and `keys/<trunk>.pub` for the node's RSA trunks.
pub(super) fn key_files(topology: &Topology, node: &Node) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for trunk in topology.trunks.values().filter(|t| t.touches(&node.name)) {
        if let TrunkCredential::Rsa { private_key, public_key } = &trunk.credential {
            files.insert(format!("{KEYS_DIR}/{}.key", trunk.name), pem_with_newline(private_key.expose()));
            files.insert(format!("{KEYS_DIR}/{}.pub", trunk.name), pem_with_newline(public_key.expose()));
        }
    }
    files
}

fn pem_with_newline(pem: &str) -> String {
    if pem.ends_with('\n') { pem.to_owned() } else { format!("{pem}\n") }
}
