//! Phones: an existing home node whose numbering plan holds the extension, one phone per
//! extension (the older keeps it), values that reach config lines, and the SIP password from
//! its Secret.

use std::collections::BTreeMap;

use super::fields::{check_codecs, is_digits, is_name, secret_value};
use super::{Report, candidates};
use crate::crd::Phone;
use crate::topology::{
    Kind, Node, PhoneLine, Reason, ResourceSet, phone_secret_ref, plan_patterns, provisioning_secret_ref,
};

/// The valid phones by name.
pub(in crate::topology) fn phones(
    list: &[Phone],
    nodes: &BTreeMap<String, Node>,
    set: &ResourceSet,
    report: &mut Report,
) -> BTreeMap<String, PhoneLine> {
    let mut phones = BTreeMap::new();
    let mut by_extension: BTreeMap<String, String> = BTreeMap::new();
    let mut by_mac = BTreeMap::new();
    for (name, phone) in candidates(Kind::Phone, list, report) {
        let spec = &phone.spec;
        let mut r = report.on(Kind::Phone, &name);
        let Some(node) = nodes.get(&spec.node) else {
            r.error(
                "spec.node",
                Reason::MissingNode,
                format!("AsteriskNode {:?} does not exist or is invalid", spec.node),
                "name an existing, valid AsteriskNode in the same namespace",
            );
            continue;
        };
        if !is_digits(&spec.extension) {
            r.error(
                "spec.extension",
                Reason::InvalidField,
                format!("{:?} is not all digits", spec.extension),
                "use digits only, e.g. \"3001\"",
            );
            continue;
        }
        if !node.owns(&spec.extension) {
            r.error(
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
        if let Some(display) = &spec.display_name {
            let fine = !display.is_empty()
                && display.chars().count() <= 64
                && !display.chars().any(|c| c.is_control() || matches!(c, '"' | '<' | '>' | '\\' | ';'));
            r.check(
                fine,
                "spec.displayName",
                display,
                "use at most 64 characters without quotes, <, >, backslash or ;",
            );
        }
        if let Some(mailbox) = &spec.voicemail {
            let (number, context) =
                mailbox.split_once('@').map_or((mailbox.as_str(), None), |(n, c)| (n, Some(c)));
            let fine = is_digits(number) && number.len() <= 15 && context.is_none_or(|c| is_name(c, 79));
            r.check(fine, "spec.voicemail", mailbox, "write a mailbox number, optionally @context");
        }
        if let Some(codecs) = &spec.codecs {
            check_codecs(&mut r, "spec.codecs", codecs);
        }
        if !r.clean() {
            continue;
        }
        if let Some(other) = by_extension.get(&spec.extension) {
            r.error(
                "spec.extension",
                Reason::DuplicateExtension,
                format!("{} is already the extension of phone {other}", spec.extension),
                "give every phone its own extension",
            );
            continue;
        }
        let reference = phone_secret_ref(phone);
        let Some(password) = secret_value(set, &mut r, "spec.secretRef", &reference, &reference.key) else {
            continue;
        };
        let device = match &spec.device {
            None => None,
            Some(d) => {
                let Some(checked) = super::devices::check(&mut r, d, node) else { continue };
                let p = provisioning_secret_ref(phone);
                let Some(password) = secret_value(set, &mut r, "spec.device", &p, &p.key) else { continue };
                if !super::devices::claim_mac(&mut by_mac, &mut r, checked.mac) {
                    continue;
                }
                Some(checked.with_password(password))
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
