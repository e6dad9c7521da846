//! `pjsip_operator.conf`: the node's transport, its phones and its PJSIP trunks.

use super::{ConfigText, TRANSPORT, incoming_context};
use crate::crd::{SipTransport, TrunkProtocol};
use crate::topology::{Node, PhoneLine, Topology, TrunkCredential, TrunkLink};

/// How often phones and trunk peers are qualified (OPTIONS), in seconds.
const QUALIFY_SECONDS: u32 = 30;

pub(super) fn render(topology: &Topology, node: &Node) -> String {
    let mut out = ConfigText::new(&node.name);
    transport(&mut out, node);
    for phone in topology.phones_of(&node.name) {
        phone_sections(&mut out, node, phone);
    }
    for trunk in
        topology.trunks.values().filter(|t| t.protocol == TrunkProtocol::Pjsip && t.touches(&node.name))
    {
        let remote = &topology.nodes[trunk.remote_of(&node.name)];
        trunk_sections(&mut out, node, remote, trunk);
    }
    out.finish()
}

fn transport(out: &mut ConfigText, node: &Node) {
    let protocol = match node.sip.transport {
        SipTransport::Udp => "udp",
        SipTransport::Tcp => "tcp",
    };
    out.comment("The node's SIP transport; remove any other transport on the same address and port.");
    out.section(TRANSPORT)
        .set("type", "transport")
        .set("protocol", protocol)
        .set("bind", format!("{}:{}", node.sip.bind.as_deref().unwrap_or("0.0.0.0"), node.sip.port));
    if let Some(nat) = &node.nat {
        if let Some(external) = &nat.external_address {
            out.set("external_media_address", external).set("external_signaling_address", external);
        }
        for net in &nat.local_nets {
            out.set("local_net", net);
        }
    }
}

fn phone_sections(out: &mut ConfigText, node: &Node, phone: &PhoneLine) {
    let ext = &phone.extension;
    let auth = format!("{ext}-auth");
    out.comment(&format!("Phone {} ({ext})", phone.name));
    out.section(ext)
        .set("type", "endpoint")
        .set("transport", TRANSPORT)
        .set("context", &node.phone_context)
        .set("disallow", "all")
        .set("allow", phone.codecs.join(","))
        .set("auth", &auth)
        .set("aors", ext);
    match &phone.display_name {
        Some(name) => out.set("callerid", format!("\"{name}\" <{ext}>")),
        None => out.set("callerid", format!("<{ext}>")),
    };
    let nat = if phone.nat { "yes" } else { "no" };
    out.set("rtp_symmetric", nat)
        .set("force_rport", nat)
        .set("rewrite_contact", nat)
        .set("direct_media", "no");
    if let Some(mailbox) = &phone.voicemail {
        out.set("mailboxes", mailbox_with_context(mailbox));
    }
    out.section(&auth)
        .set("type", "auth")
        .set("auth_type", "userpass")
        .set("username", ext)
        .set("password", phone.password.expose());
    out.section(ext)
        .set("type", "aor")
        .set("max_contacts", phone.max_contacts)
        .set("remove_existing", "yes")
        .set("qualify_frequency", QUALIFY_SECONDS);
}

/// `box` → `box@default`, as `mailboxes=` and `VoiceMail()` want it.
pub(super) fn mailbox_with_context(mailbox: &str) -> String {
    if mailbox.contains('@') { mailbox.to_owned() } else { format!("{mailbox}@default") }
}

fn trunk_sections(out: &mut ConfigText, node: &Node, remote: &Node, trunk: &TrunkLink) {
    let name = &trunk.name;
    let auth = format!("{name}-auth");
    let TrunkCredential::Digest(password) = &trunk.credential else {
        unreachable!("the resolver only accepts digest auth on pjsip trunks")
    };
    let codecs = trunk.codecs.as_ref().unwrap_or(&node.codecs);
    out.comment(&format!("Trunk {name} to node {} (pjsip, priority {})", remote.name, trunk.priority));
    // The endpoint both challenges the remote (auth) and answers its challenges (outbound_auth):
    // both ends share one credential. from_user lets a registering (dynamic) remote be
    // identified by user name when no identify section can match its address.
    out.section(name)
        .set("type", "endpoint")
        .set("transport", TRANSPORT)
        .set("context", incoming_context(name))
        .set("disallow", "all")
        .set("allow", codecs.join(","))
        .set("aors", name)
        .set("auth", &auth)
        .set("outbound_auth", &auth)
        .set("from_user", name)
        .set("direct_media", "no");
    if !trunk.permit.is_empty() {
        // Deny both families, then permit: with an IPv4 deny alone, any IPv6 source passes.
        out.set("deny", "0.0.0.0/0.0.0.0").set("deny", "::/0");
        for net in &trunk.permit {
            out.set("permit", net);
        }
    }
    out.section(&auth)
        .set("type", "auth")
        .set("auth_type", "userpass")
        .set("username", name)
        .set("password", password.expose());
    out.section(name).set("type", "aor");
    match &remote.address {
        Some(address) => out.set("contact", format!("sip:{}", host_port(address, remote.sip.port))),
        None => out.set("max_contacts", 1).set("remove_existing", "yes"),
    };
    if trunk.qualify {
        out.set("qualify_frequency", QUALIFY_SECONDS);
    }
    if let Some(address) = &remote.address {
        out.section(&format!("{name}-identify"))
            .set("type", "identify")
            .set("endpoint", name)
            .set("match", address);
    }
    if trunk.registrant.as_deref() == Some(node.name.as_str()) {
        let server = remote.address.as_deref().expect("the registrant's remote has a fixed address");
        let server = host_port(server, remote.sip.port);
        out.section(&format!("{name}-registration"))
            .set("type", "registration")
            .set("transport", TRANSPORT)
            .set("outbound_auth", &auth)
            .set("server_uri", format!("sip:{server}"))
            .set("client_uri", format!("sip:{name}@{server}"))
            .set("contact_user", name)
            .set("retry_interval", 20)
            .set("forbidden_retry_interval", 60)
            .set("max_retries", 1_000_000)
            .set("expiration", 120);
    }
}

/// `host:port`, with brackets around an IPv6 address.
pub(super) fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}
