//! Desk phones as the renderers see them: a normalised MAC address, the file format a vendor's
//! model reads, and where a node's phones register. Their checks are in `validate/devices.rs`.

use std::fmt;

use super::Node;
use crate::crd::DeviceVendor;
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
    pub fn is_group(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// The null address.
    pub fn is_zero(&self) -> bool {
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
pub fn supported_models(vendor: DeviceVendor) -> &'static str {
    match vendor {
        DeviceVendor::Cisco => {
            "7940 or 7960 (SIP<MAC>.cnf), or 7906, 7911, 7931, 7941, 7942, 7945, 7961, 7962, 7965, 7971, 7975, 69xx, 88xx (SEP<MAC>.cnf.xml); SPA and 3PCC phones use other formats"
        }
        DeviceVendor::Yealink => "T19 to T58 (e.g. T46S, T54W, T21P_E2) or CP920/CP925/CP960/CP965",
        DeviceVendor::Polycom => "VVX 101 to 601 or SoundPoint/SoundStation IP (UC Software 4 or later)",
        DeviceVendor::Snom => "3xx, 7xx, 8xx, D3xx or D7xx",
    }
}

/// A desk phone whose MAC, model and node passed validation, still without its provisioning
/// password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedDevice {
    /// Vendor.
    pub vendor: DeviceVendor,
    /// Canonical model.
    pub model: String,
    /// File format.
    pub format: DeviceFormat,
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

/// Where a node's phones register: `spec.provisioning.sipServer`, else `spec.address`.
pub fn sip_server(node: &Node) -> Option<&str> {
    node.provisioning.sip_server.as_deref().or(node.address.as_deref())
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
}
