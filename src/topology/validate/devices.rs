//! Desk phones: a MAC in a known notation that is a phone's and no other phone's in the fleet
//! (the older phone keeps it), a model whose format a renderer writes, a node that says where
//! its phones register; and the node's provisioning settings.

use std::collections::BTreeMap;

use super::Reporter;
use super::fields::valid_cidr;
use crate::crd::rules::{HOST_FIX, is_host};
use crate::crd::{Device, NodeProvisioning};
use crate::topology::device::{CheckedDevice, Mac, format_of, sip_server, supported_models};
use crate::topology::{Node, Reason};

/// Checks a Phone's `spec.device` on its node: the MAC, the model and an address to register
/// to. The device without its password (the caller looks that up), or `None` after reporting
/// every problem.
pub(super) fn check(r: &mut Reporter, device: &Device, node: &Node) -> Option<CheckedDevice> {
    let mac = match Mac::parse(&device.mac) {
        Some(mac) if mac.is_group() || mac.is_zero() => {
            let kind = if mac.is_zero() { "null" } else { "multicast or broadcast" };
            r.error(
                "spec.device.mac",
                Reason::InvalidMac,
                format!("{} is a {kind} address, not a phone's", device.mac),
                "use the MAC address printed on the phone's label (its first byte is even)",
            );
            None
        }
        Some(mac) => Some(mac),
        None => {
            r.error(
                "spec.device.mac",
                Reason::InvalidMac,
                format!("{:?} is not a MAC address", device.mac),
                "write six hex pairs, e.g. 00:1a:2b:3c:4d:5e, 00-1A-2B-3C-4D-5E, 001a.2b3c.4d5e or 001a2b3c4d5e",
            );
            None
        }
    };
    let vendor = device.vendor.as_str();
    let format = format_of(device.vendor, &device.model);
    if format.is_none() {
        r.error(
            "spec.device.model",
            Reason::UnsupportedModel,
            format!("{vendor} {:?} reads a provisioning format the operator does not render", device.model),
            &format!("use a supported {vendor} model: {}", supported_models(device.vendor)),
        );
    }
    let server = sip_server(node);
    if server.is_none() {
        r.error(
            "spec.device",
            Reason::NoSipServer,
            format!(
                "node {} has neither spec.provisioning.sipServer nor spec.address, so the file cannot say where to register",
                node.name
            ),
            &format!("set spec.provisioning.sipServer (the address the phones reach it at) on node {}", node.name),
        );
    }
    let ((model, format), mac, _) = (format?, mac?, server?);
    Some(CheckedDevice { vendor: device.vendor, model, format, mac })
}

/// Claims `mac` for the phone of `r`; the phone that claimed it first (the older one) keeps it,
/// and the error for the second names both. Whether it was free.
pub(super) fn claim_mac(owners: &mut BTreeMap<Mac, String>, r: &mut Reporter, mac: Mac) -> bool {
    let phone = r.name().to_owned();
    if let Some(other) = owners.get(&mac) {
        r.error(
            "spec.device.mac",
            Reason::DuplicateMac,
            format!("{mac} is also the MAC address of phone {other}, so phones {other} and {phone} would fetch the same file"),
            &format!("give each desk phone its own MAC address, or remove spec.device from phone {phone} or {other}"),
        );
        return false;
    }
    owners.insert(mac, phone);
    true
}

/// Checks a node's `spec.provisioning`; every problem names its field.
pub(super) fn check_node(r: &mut Reporter, settings: &NodeProvisioning) {
    for (field, host) in [("sipServer", &settings.sip_server), ("ntpServer", &settings.ntp_server)] {
        if let Some(host) = host {
            r.check(is_host(host), format!("spec.provisioning.{field}"), host, HOST_FIX);
        }
    }
    for (i, net) in settings.allowed_networks.iter().enumerate() {
        let field = format!("spec.provisioning.allowedNetworks[{i}]");
        r.check(valid_cidr(net), field, net, "write an address and prefix length, e.g. 192.168.10.0/24");
    }
    if let Some(ports) = settings.media_ports {
        let ok = ports.start >= 1024 && ports.start < ports.end && ports.start % 2 == 0;
        let value = format!("{}-{}", ports.start, ports.end);
        let fix = "use an even start of at least 1024, below the end (e.g. start 16384, end 32766)";
        r.check(ok, "spec.provisioning.mediaPorts", &value, fix);
    }
    for (i, load) in settings.firmware.iter().enumerate() {
        let ok = !load.load.is_empty()
            && load.load.len() <= 256
            && load.load.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:/?=&%+~-".contains(&b));
        let fix = "give the load name or URL: letters, digits and . _ : / ? = & % + ~ -";
        r.check(ok, format!("spec.provisioning.firmware[{i}].load"), &load.load, fix);
        let vendor = load.vendor.as_str();
        for (j, model) in load.models.iter().enumerate() {
            let fix = format!("name a supported {vendor} model: {}", supported_models(load.vendor));
            let field = format!("spec.provisioning.firmware[{i}].models[{j}]");
            r.check(format_of(load.vendor, model).is_some(), field, model, &fix);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Report;
    use super::*;
    use crate::topology::Kind;

    #[test]
    fn the_first_phone_keeps_a_mac_and_the_second_error_names_both() {
        let mut report = Report::new("ns");
        let mut owners = BTreeMap::new();
        let mac = Mac::parse("00:1a:2b:3c:4d:5e").unwrap();
        assert!(claim_mac(&mut owners, &mut report.on(Kind::Phone, "reception"), mac));
        assert!(!claim_mac(&mut owners, &mut report.on(Kind::Phone, "lobby"), mac));
        let errors = report.into_errors();
        let err = &errors[0];
        assert_eq!(
            (err.object.name.as_str(), err.reason, err.field.as_str()),
            ("lobby", Reason::DuplicateMac, "spec.device.mac")
        );
        assert!(err.problem.contains("reception") && err.problem.contains("lobby"), "{}", err.problem);
        assert_eq!(owners[&mac], "reception");
    }
}
