//! `extensions_operator.conf`: the node's own extensions and hints, routes to every other node,
//! mirrored hints of remote BLF targets, and one incoming context per trunk.

use super::pjsip::mailbox_with_context;
use super::{ConfigText, LOCAL_CONTEXT, ROUTES_CONTEXT, incoming_context, mirror_device};
use crate::crd::TrunkProtocol;
use crate::topology::{Hop, Node, Route, Topology};

pub(super) fn render(topology: &Topology, node: &Node) -> String {
    let mut out = ConfigText::new(&node.name);

    out.comment("The node's phones: a hint (for BLF) and a way to ring each.");
    out.section(LOCAL_CONTEXT);
    for phone in topology.phones_of(&node.name) {
        let ext = &phone.extension;
        out.line(format!("exten => {ext},hint,PJSIP/{ext}"));
        match &phone.voicemail {
            None => out.line(format!("exten => {ext},1,Dial(PJSIP/{ext})")),
            Some(mailbox) => out.line(format!("exten => {ext},1,Dial(PJSIP/{ext},30)")).line(format!(
                " same => n,VoiceMail({},${{IF($[\"${{DIALSTATUS}}\" = \"BUSY\"]?b:u)}})",
                mailbox_with_context(mailbox)
            )),
        };
        out.line(" same => n,Hangup()");
    }

    out.comment("Routes to the other nodes' numbers; the next trunk is tried only when one is unavailable.");
    out.section(ROUTES_CONTEXT);
    for route in topology.routes.get(&node.name).into_iter().flatten() {
        route_lines(&mut out, route);
    }
    let mirrors: Vec<_> = topology.mirrors.iter().filter(|m| m.watcher == node.name).collect();
    if !mirrors.is_empty() {
        // Hint-only extensions: they carry the mirrored state for BLF, while a call to the same
        // number still matches the route pattern above (checked on Asterisk 22).
        out.line("; BLF: remote extensions mirrored by the device-state mesh");
        for m in mirrors {
            out.line(format!("exten => {},hint,{}", m.extension, mirror_device(&m.owner, &m.extension)));
        }
    }

    out.comment("Phones dial from here.");
    out.section(&node.phone_context)
        .line(format!("include => {LOCAL_CONTEXT}"))
        .line(format!("include => {ROUTES_CONTEXT}"));

    for trunk in topology.trunks.values().filter(|t| t.touches(&node.name)) {
        out.comment(&format!(
            "Calls arriving over trunk {} from node {}.",
            trunk.name,
            trunk.remote_of(&node.name)
        ));
        // Routes are included too: a node between two others passes calls on. Every hop gets
        // strictly closer to the destination, so this never loops.
        out.section(&incoming_context(&trunk.name))
            .line(format!("include => {LOCAL_CONTEXT}"))
            .line(format!("include => {ROUTES_CONTEXT}"));
    }
    out.finish()
}

fn dial_target(hop: &Hop) -> String {
    match hop.protocol {
        TrunkProtocol::Iax2 => format!("IAX2/{}/${{EXTEN}}", hop.trunk),
        TrunkProtocol::Pjsip => format!("PJSIP/${{EXTEN}}@{}", hop.trunk),
    }
}

fn route_lines(out: &mut ConfigText, route: &Route) {
    let via: Vec<String> = route
        .hops
        .iter()
        .map(|h| format!("{} ({}, priority {})", h.trunk, h.protocol.as_str(), h.priority))
        .collect();
    let how = if route.distance == 1 { "direct" } else { "via" };
    let next = route.hops.first().map(|h| h.next.as_str()).unwrap_or_default();
    let note = if route.distance == 1 {
        format!("; to {} ({how}): {}", route.destination, via.join(", then "))
    } else {
        format!("; to {} ({how} {next}, {} hops): {}", route.destination, route.distance, via.join(", then "))
    };
    out.line(note);
    for pattern in &route.patterns {
        let exten = format!("_{pattern}");
        let mut first = true;
        for hop in &route.hops {
            let step = format!("Dial({})", dial_target(hop));
            if first {
                out.line(format!("exten => {exten},1,{step}"));
                first = false;
            } else {
                out.line(format!(" same => n,{step}"));
            }
            out.line(" same => n,GotoIf($[\"${DIALSTATUS}\" != \"CHANUNAVAIL\" & \"${DIALSTATUS}\" != \"CONGESTION\"]?done)");
        }
        if first {
            out.line(format!("exten => {exten},1,Congestion()"));
        } else {
            out.line(" same => n,Congestion()");
        }
        out.line(" same => n(done),Hangup()");
    }
}
