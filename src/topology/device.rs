//! Desk phones and the node settings their provisioning files need: MAC syntax and
//! normalisation, the file format a vendor's model reads, one MAC per phone fleet-wide, and the
//! node's provisioning settings. Pure; every problem is a [`ValidationError`] with field and fix.

use std::collections::BTreeMap;
use std::fmt;

use super::validate::{is_host, valid_cidr};
use super::{Kind, Node, ObjectRef, Reason, ValidationError};
use crate::crd::{Device, DeviceVendor, NodeProvisioning};
use crate::secret::SecretValue;

/// A MAC address, normalised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac([u8; 6]);

impl Mac {
    /// Parses `00:1a:2b:3c:4d:5e`, `00-1A-2B-3C-4D-5E`, `001a.2b3c.4d5e` or `001a2b3c4d5e`.
    pub fn parse(text: &str) -> Option<Mac> {
        let text = text.trim();
        let hex: String = match text.len() {
            17 => {
                let sep = text.as_bytes()[2];
                if !(sep == b':' || sep == b'-') {
                    return None;
                }
                let parts: Vec<&str> = text.split(sep as char).collect();
                if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
                    return None;
                }
                parts.concat()
            }
            14 => {
                let parts: Vec<&str> = text.split('.').collect();
                if parts.len() != 3 || parts.iter().any(|p| p.len() != 4) {
                    return None;
                }
                parts.concat()
            }
            12 => text.to_owned(),
            _ => return None,
        };
        let mut bytes = [0u8; 6];
        hex::decode_to_slice(&hex, &mut bytes).ok()?;
        Some(Mac(bytes))
    }

    /// Twelve lowercase hex digits, as Yealink and Polycom name their files.
    pub fn lower(&self) -> String {
        hex::encode(self.0)
    }

    /// Twelve uppercase hex digits, as Cisco and Snom name their files.
    pub fn upper(&self) -> String {
        hex::encode_upper(self.0)
    }

    /// A group address (multicast or broadcast) cannot be a phone's.
    fn is_group(&self) -> bool {
        self.0[0] & 1 == 1
    }

    fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }
}

impl fmt::Display for Mac {
    /// `00:1a:2b:3c:4d:5e`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|b| format!("{b:02x}")).collect();
        f.write_str(&parts.join(":"))
    }
}

/// The provisioning file format a phone reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeviceFormat {
    /// Cisco 7940/7960 SIP firmware: plain-text `SIP<MAC>.cnf`.
    CiscoText,
    /// Cisco 79x1/79x2/79x5/7931/69xx/88xx enterprise SIP firmware: `SEP<MAC>.cnf.xml`.
    CiscoXml,
    /// Yealink: `<mac>.cfg` plus the common `y000000000000.cfg`.
    Yealink,
    /// Polycom UC Software: master `<mac>.cfg` naming `<mac>-phone.cfg`.
    Polycom,
    /// Snom: `<MAC>.xml`.
    Snom,
}

/// A valid desk phone, ready to render.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceLine {
    /// Vendor.
    pub vendor: DeviceVendor,
    /// Model in the vendor's canonical spelling (e.g. `7941`, `T46S`, `VVX410`, `D785`).
    pub model: String,
    /// The file format that model reads.
    pub format: DeviceFormat,
    /// MAC address.
    pub mac: Mac,
    /// The password the phone fetches its files with over HTTP(S) (user: the Phone's name).
    pub provisioning_password: SecretValue,
}

/// Cisco models by format (numbers without the `CP-` prefix and `G`/`G-GE` suffix).
const CISCO_TEXT: &[&str] = &["7940", "7960"];
const CISCO_XML: &[&str] = &[
    "7906", "7911", "7941", "7961", "7971", "7942", "7962", "7945", "7965", "7975", "7931", "6901", "6911",
    "6921", "6941", "6945", "6961", "8811", "8841", "8845", "8851", "8861", "8865",
];

/// The canonical model and its file format, or `None` when the vendor's renderer does not write
/// that model's format.
pub fn format_of(vendor: DeviceVendor, model: &str) -> Option<(String, DeviceFormat)> {
    let upper = model.trim().to_ascii_uppercase();
    match vendor {
        DeviceVendor::Cisco => {
            let bare = upper.strip_prefix("CP-").unwrap_or(&upper);
            let bare = ["G-GE", "GE", "G"].iter().find_map(|s| bare.strip_suffix(s)).unwrap_or(bare);
            if CISCO_TEXT.contains(&bare) {
                Some((bare.to_owned(), DeviceFormat::CiscoText))
            } else if CISCO_XML.contains(&bare) {
                Some((bare.to_owned(), DeviceFormat::CiscoXml))
            } else {
                None
            }
        }
        DeviceVendor::Yealink => {
            let bare = upper.trim_start_matches("SIP-").trim_start_matches("SIP ");
            let family = bare.strip_prefix('T').and_then(|r| r.get(..2)).and_then(|d| d.parse::<u8>().ok());
            let tail = bare.get(3..).unwrap_or("");
            let tail_ok = tail.strip_suffix("_E2").unwrap_or(tail);
            let t_series = family.is_some_and(|f| f == 19 || (20..=59).contains(&f))
                && tail_ok.len() <= 2
                && tail_ok.bytes().all(|b| b.is_ascii_uppercase());
            let cp = matches!(bare, "CP920" | "CP925" | "CP960" | "CP965");
            (t_series || cp).then(|| (bare.to_owned(), DeviceFormat::Yealink))
        }
        DeviceVendor::Polycom => {
            let bare: String = upper.chars().filter(|c| !matches!(c, ' ' | '-' | '_')).collect();
            let digits = |rest: &str, n: usize| rest.len() == n && rest.bytes().all(|b| b.is_ascii_digit());
            let ok = bare.strip_prefix("VVX").is_some_and(|r| digits(r, 3))
                || bare.strip_prefix("SPIP").is_some_and(|r| digits(r, 3))
                || bare.strip_prefix("IP").is_some_and(|r| digits(r, 3) || digits(r, 4))
                || bare.strip_prefix("SSIP").is_some_and(|r| digits(r, 4));
            ok.then_some((bare, DeviceFormat::Polycom))
        }
        DeviceVendor::Snom => {
            let bare = upper.trim_start_matches("SNOM").trim();
            let digits = |r: &str| r.len() == 3 && r.bytes().all(|b| b.is_ascii_digit());
            let ok = bare.strip_prefix('D').is_some_and(|r| digits(r.strip_suffix('W').unwrap_or(r)))
                || (digits(bare) && matches!(bare.as_bytes()[0], b'3' | b'7' | b'8'));
            ok.then(|| (bare.to_owned(), DeviceFormat::Snom))
        }
    }
}

/// What a vendor's renderer supports, for the fix text of an unsupported model.
fn supported_models(vendor: DeviceVendor) -> &'static str {
    match vendor {
        DeviceVendor::Cisco => {
            "7940 or 7960 (SIP<MAC>.cnf), or 7906, 7911, 7931, 7941, 7942, 7945, 7961, 7962, 7965, 7971, 7975, 69xx, 88xx (SEP<MAC>.cnf.xml); SPA and 3PCC phones use other formats"
        }
        DeviceVendor::Yealink => "T19 to T58 (e.g. T46S, T54W, T21P_E2) or CP920/CP925/CP960/CP965",
        DeviceVendor::Polycom => "VVX 101 to 601 or SoundPoint/SoundStation IP (UC Software 4 or later)",
        DeviceVendor::Snom => "3xx, 7xx, 8xx, D3xx or D7xx",
    }
}

fn phone_error(
    ns: &str,
    phone: &str,
    reason: Reason,
    field: &str,
    problem: String,
    fix: &str,
) -> ValidationError {
    ValidationError {
        object: ObjectRef::new(Kind::Phone, ns, phone),
        field: field.to_owned(),
        reason,
        problem,
        fix: fix.to_owned(),
    }
}

/// A desk phone that passed [`check`], still without its provisioning password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedDevice {
    vendor: DeviceVendor,
    model: String,
    format: DeviceFormat,
    /// Its MAC address.
    pub mac: Mac,
}

impl CheckedDevice {
    /// The device with the password it fetches its files with.
    pub fn with_password(self, provisioning_password: SecretValue) -> DeviceLine {
        let CheckedDevice { vendor, model, format, mac } = self;
        DeviceLine { vendor, model, format, mac, provisioning_password }
    }
}

/// Checks a Phone's `spec.device` on its node: the MAC, the model and an address to register
/// to. Returns the device without its password (the caller looks that up) or every problem.
pub fn check(
    ns: &str,
    phone: &str,
    device: &Device,
    node: &Node,
) -> Result<CheckedDevice, Vec<ValidationError>> {
    let mut errors = Vec::new();
    let mac = match Mac::parse(&device.mac) {
        Some(mac) if mac.is_group() || mac.is_zero() => {
            errors.push(phone_error(
                ns,
                phone,
                Reason::InvalidMac,
                "spec.device.mac",
                format!(
                    "{} is a {} address, not a phone's",
                    device.mac,
                    if mac.is_zero() { "null" } else { "multicast or broadcast" }
                ),
                "use the MAC address printed on the phone's label (its first byte is even)",
            ));
            None
        }
        Some(mac) => Some(mac),
        None => {
            errors.push(phone_error(
                ns,
                phone,
                Reason::InvalidMac,
                "spec.device.mac",
                format!("{:?} is not a MAC address", device.mac),
                "write six hex pairs, e.g. 00:1a:2b:3c:4d:5e, 00-1A-2B-3C-4D-5E, 001a.2b3c.4d5e or 001a2b3c4d5e",
            ));
            None
        }
    };
    let format = format_of(device.vendor, &device.model);
    if format.is_none() {
        errors.push(phone_error(
            ns,
            phone,
            Reason::UnsupportedModel,
            "spec.device.model",
            format!(
                "{} {:?} reads a provisioning format the operator does not render",
                device.vendor.as_str(),
                device.model
            ),
            &format!("use a supported {} model: {}", device.vendor.as_str(), supported_models(device.vendor)),
        ));
    }
    if sip_server(node).is_none() {
        errors.push(phone_error(
            ns,
            phone,
            Reason::NoSipServer,
            "spec.device",
            format!("node {} has neither spec.provisioning.sipServer nor spec.address, so the file cannot say where to register", node.name),
            &format!("set spec.provisioning.sipServer (the address the phones reach it at) on node {}", node.name),
        ));
    }
    match (format, mac) {
        (Some((model, format)), Some(mac)) if errors.is_empty() => {
            Ok(CheckedDevice { vendor: device.vendor, model, format, mac })
        }
        _ => Err(errors),
    }
}

/// Where a node's phones register: `spec.provisioning.sipServer`, else `spec.address`.
pub fn sip_server(node: &Node) -> Option<&str> {
    node.provisioning.sip_server.as_deref().or(node.address.as_deref())
}

/// Claims `mac` for `phone`; the phone that claimed it first (the older one) keeps it, and the
/// error for the second names both.
pub fn claim_mac(
    owners: &mut BTreeMap<Mac, String>,
    ns: &str,
    phone: &str,
    mac: Mac,
) -> Option<ValidationError> {
    if let Some(other) = owners.get(&mac) {
        return Some(phone_error(
            ns,
            phone,
            Reason::DuplicateMac,
            "spec.device.mac",
            format!(
                "{mac} is also the MAC address of phone {other}, so phones {other} and {phone} would fetch the same file"
            ),
            &format!(
                "give each desk phone its own MAC address, or remove spec.device from phone {phone} or {other}"
            ),
        ));
    }
    owners.insert(mac, phone.to_owned());
    None
}

/// Checks a node's `spec.provisioning`; every problem names its field.
pub fn check_node(ns: &str, node: &str, settings: &NodeProvisioning) -> Vec<ValidationError> {
    let mut errors = Vec::new();
    let mut push = |field: String, value: &str, fix: &str| {
        errors.push(ValidationError {
            object: ObjectRef::new(Kind::AsteriskNode, ns, node),
            field,
            reason: Reason::InvalidField,
            problem: format!("{value:?} is not allowed here"),
            fix: fix.to_owned(),
        })
    };
    let host_fix = "use a host name or an IP address (letters, digits, '.', '-', ':')";
    for (field, host) in [("sipServer", &settings.sip_server), ("ntpServer", &settings.ntp_server)] {
        if let Some(host) = host
            && !is_host(host)
        {
            push(format!("spec.provisioning.{field}"), host, host_fix);
        }
    }
    for (i, net) in settings.allowed_networks.iter().enumerate() {
        if !valid_cidr(net) {
            push(
                format!("spec.provisioning.allowedNetworks[{i}]"),
                net,
                "write an address and prefix length, e.g. 192.168.10.0/24",
            );
        }
    }
    if let Some(ports) = settings.media_ports
        && !(ports.start >= 1024 && ports.start < ports.end && ports.start % 2 == 0)
    {
        push(
            "spec.provisioning.mediaPorts".into(),
            &format!("{}-{}", ports.start, ports.end),
            "use an even start of at least 1024, below the end (e.g. start 16384, end 32766)",
        );
    }
    for (i, load) in settings.firmware.iter().enumerate() {
        let ok = !load.load.is_empty()
            && load.load.len() <= 256
            && load.load.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:/?=&%+~-".contains(&b));
        if !ok {
            push(
                format!("spec.provisioning.firmware[{i}].load"),
                &load.load,
                "give the load name or URL: letters, digits and . _ : / ? = & % + ~ -",
            );
        }
        for (j, model) in load.models.iter().enumerate() {
            if format_of(load.vendor, model).is_none() {
                push(
                    format!("spec.provisioning.firmware[{i}].models[{j}]"),
                    model,
                    &format!(
                        "name a supported {} model: {}",
                        load.vendor.as_str(),
                        supported_models(load.vendor)
                    ),
                );
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_in_every_common_notation_normalise_to_one() {
        let want = "001a2b3c4d5e";
        for text in [
            "00:1a:2b:3c:4d:5e",
            "00-1A-2B-3C-4D-5E",
            "001a.2b3c.4d5e",
            "001A2B3C4D5E",
            " 00:1A:2b:3c:4d:5e ",
        ] {
            assert_eq!(Mac::parse(text).map(|m| m.lower()), Some(want.to_owned()), "{text}");
        }
        let mac = Mac::parse(want).unwrap();
        assert_eq!((mac.upper().as_str(), mac.to_string().as_str()), ("001A2B3C4D5E", "00:1a:2b:3c:4d:5e"));
        for bad in [
            "",
            "00:1a:2b:3c:4d",
            "00:1a:2b:3c:4d:5e:6f",
            "00:1a-2b:3c:4d:5e",
            "001a2b3c4d5g",
            "00.1a2b.3c4d5e",
            "0:1a:2b:3c:4d:5e:",
        ] {
            assert_eq!(Mac::parse(bad), None, "{bad:?}");
        }
        assert!(Mac::parse("01:00:5e:00:00:01").unwrap().is_group());
        assert!(Mac::parse("ff:ff:ff:ff:ff:ff").unwrap().is_group());
        assert!(!mac.is_group());
    }

    #[test]
    fn models_select_their_format_or_are_refused() {
        use DeviceFormat::{CiscoText, CiscoXml};
        use DeviceVendor::{Cisco, Polycom, Snom, Yealink};
        let (yealink, polycom, snom) = (DeviceFormat::Yealink, DeviceFormat::Polycom, DeviceFormat::Snom);
        type Case<'a> = (DeviceVendor, &'a str, Option<(&'a str, DeviceFormat)>);
        let cases: &[Case] = &[
            (Cisco, "7960", Some(("7960", CiscoText))),
            (Cisco, "CP-7940G", Some(("7940", CiscoText))),
            (Cisco, "7931G", Some(("7931", CiscoXml))),
            (Cisco, "7961G-GE", Some(("7961", CiscoXml))),
            (Cisco, "8865", Some(("8865", CiscoXml))),
            (Cisco, "6921", Some(("6921", CiscoXml))),
            (Cisco, "7912", None),
            (Cisco, "SPA504G", None),
            (Cisco, "8841-3PCC", None),
            (Yealink, "T46S", Some(("T46S", yealink))),
            (Yealink, "SIP-T21P_E2", Some(("T21P_E2", yealink))),
            (Yealink, "t54w", Some(("T54W", yealink))),
            (Yealink, "CP920", Some(("CP920", yealink))),
            (Yealink, "W52P", None),
            (Yealink, "T18", None),
            (Polycom, "VVX 410", Some(("VVX410", polycom))),
            (Polycom, "SPIP-335", Some(("SPIP335", polycom))),
            (Polycom, "IP 6000", Some(("IP6000", polycom))),
            (Polycom, "Trio 8800", None),
            (Snom, "D785", Some(("D785", snom))),
            (Snom, "snom 320", Some(("320", snom))),
            (Snom, "D862W", Some(("D862W", snom))),
            (Snom, "M900", None),
            (Snom, "420", None),
        ];
        for (vendor, model, want) in cases {
            let got = format_of(*vendor, model);
            assert_eq!(got.as_ref().map(|(m, f)| (m.as_str(), *f)), *want, "{vendor:?} {model}");
        }
    }

    #[test]
    fn the_first_phone_keeps_a_mac_and_the_second_error_names_both() {
        let mut owners = BTreeMap::new();
        let mac = Mac::parse("00:1a:2b:3c:4d:5e").unwrap();
        assert_eq!(claim_mac(&mut owners, "ns", "reception", mac), None);
        let err = claim_mac(&mut owners, "ns", "lobby", mac).unwrap();
        assert_eq!((err.reason, err.field.as_str()), (Reason::DuplicateMac, "spec.device.mac"));
        assert!(err.problem.contains("reception") && err.problem.contains("lobby"), "{}", err.problem);
        assert_eq!(owners[&mac], "reception");
    }
}
