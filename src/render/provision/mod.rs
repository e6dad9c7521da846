//! Desk-phone provisioning files (pure): every Phone with a `spec.device` gets the files its
//! vendor's firmware asks for, rendered from the same topology as the Asterisk files — the SIP
//! line, the BLF keys of the subscriptions it watches, and the node's provisioning settings.
//! One module per vendor format:
//!
//! | vendor  | files                                              | module      |
//! |---------|----------------------------------------------------|-------------|
//! | Cisco   | `SIP<MAC>.cnf` (7940/7960), `SEP<MAC>.cnf.xml`     | [`cisco`]   |
//! | Yealink | `<mac>.cfg`, common `y000000000000.cfg`            | [`yealink`] |
//! | Polycom | master `<mac>.cfg`, `<mac>-phone.cfg`              | [`polycom`] |
//! | Snom    | `<MAC>.xml`                                        | [`snom`]    |
//!
//! The files travel in the node's bundle apart from the Asterisk files, with an index that says
//! whose each file is and who may fetch it; the agent serves them (`crate::provision`).

mod cisco;
mod polycom;
mod regional;
mod snom;
mod xml;
mod yealink;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::crd::{DeviceVendor, NodeProvisioning, SipTransport};
use crate::topology::{BlfKey, DeviceFormat, DeviceLine, Node, PhoneLine, Topology, device};

/// Folder of the provisioning files inside a written bundle (`out/<node>/provisioning/`).
pub const PROVISIONING_DIR: &str = "provisioning";
/// The provisioning index inside a written bundle folder.
pub const PROVISIONING_INDEX_FILE: &str = "provisioning.json";

/// A node's provisioning files and their index. Its `Debug` names the files, never shows them:
/// they hold the phones' SIP passwords.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Provisioning {
    /// File name → contents.
    pub files: BTreeMap<String, String>,
    /// Whose each file is, and who may fetch them.
    pub index: ProvisioningIndex,
}

impl std::fmt::Debug for Provisioning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.files.keys()).finish()
    }
}

impl Provisioning {
    /// No files (nodes without desk phones).
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// What the agent needs besides the files to serve them: no secrets, only verifiers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningIndex {
    /// File name → whose it is.
    pub files: BTreeMap<String, ServedFile>,
    /// Networks (CIDR) that may fetch without credentials (and the only ones TFTP serves).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_networks: Vec<String>,
    /// Phone name → [`credential_verifier`] of its provisioning password.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub credentials: BTreeMap<String, String>,
}

/// Whose a provisioning file is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServedFile {
    /// The Phone it belongs to; `None` for a vendor's common file (any phone of the node may
    /// fetch it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// The vendor whose format it is.
    pub vendor: DeviceVendor,
}

/// What the agent keeps of a phone's provisioning password: a salted SHA-256, so the bundle's
/// index and the agent's state hold no password. Generated passwords have ≈190 bits, so a fast
/// hash is enough; a user's own must pass the resolver's rules (≥ 12 characters).
pub fn credential_verifier(phone: &str, password: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"asterisk-operator provisioning\0");
    h.update(phone.as_bytes());
    h.update(b"\0");
    h.update(password.as_bytes());
    hex::encode(h.finalize())
}

/// One desk phone with everything its files are rendered from.
pub(super) struct DeskPhone<'a> {
    pub node: &'a Node,
    pub phone: &'a PhoneLine,
    pub device: &'a DeviceLine,
    /// Where it registers (`spec.provisioning.sipServer` or the node's address).
    pub server: &'a str,
    /// Its BLF keys, in the order the subscriptions list them.
    pub keys: &'a [BlfKey],
}

impl DeskPhone<'_> {
    fn settings(&self) -> &NodeProvisioning {
        &self.node.provisioning
    }

    fn port(&self) -> u16 {
        self.node.sip.port
    }

    fn tcp(&self) -> bool {
        self.node.sip.transport == SipTransport::Tcp
    }

    /// The caller-ID name, or the extension when it has none.
    fn display_name(&self) -> &str {
        self.phone.display_name.as_deref().unwrap_or(&self.phone.extension)
    }

    /// The firmware of the first `spec.provisioning.firmware` entry for this vendor and model.
    fn firmware(&self) -> Option<&str> {
        let d = self.device;
        self.settings()
            .firmware
            .iter()
            .find(|f| {
                f.vendor == d.vendor
                    && (f.models.is_empty()
                        || f.models
                            .iter()
                            .any(|m| device::format_of(f.vendor, m).is_some_and(|(m, _)| m == d.model)))
            })
            .map(|f| f.load.as_str())
    }

    /// The header every file carries (as a comment).
    fn header(&self) -> String {
        format!(
            "Rendered by asterisk-operator for phone {} ({}) on node {}. Do not edit: the next apply overwrites it.",
            self.phone.name, self.phone.extension, self.node.name
        )
    }
}

/// Text for a label or name in a phone file: no control characters, quotes or backslashes
/// (the plain-text formats have no escapes), at most `max` characters.
pub(super) fn plain(text: &str, max: usize) -> String {
    let cleaned: String =
        text.chars().map(|c| if c.is_control() || matches!(c, '"' | '\\') { ' ' } else { c }).collect();
    cleaned.trim().chars().take(max).collect::<String>().trim_end().to_owned()
}

/// Renders the provisioning files of `node`'s desk phones.
pub fn render(topology: &Topology, node: &Node) -> Provisioning {
    let mut out = Provisioning::default();
    let Some(server) = device::sip_server(node) else { return out };
    let no_keys = Vec::new();
    let add = |out: &mut Provisioning, name: String, contents: String, phone: Option<&str>, vendor| {
        out.index.files.insert(name.clone(), ServedFile { phone: phone.map(str::to_owned), vendor });
        out.files.insert(name, contents);
    };
    let mut yealink_phones = false;
    for phone in topology.phones_of(&node.name) {
        let Some(device) = &phone.device else { continue };
        let desk = DeskPhone {
            node,
            phone,
            device,
            server,
            keys: topology.blf_keys.get(&phone.name).unwrap_or(&no_keys),
        };
        let files = match device.format {
            DeviceFormat::CiscoText => vec![cisco::text(&desk)],
            DeviceFormat::CiscoXml => vec![cisco::xml(&desk)],
            DeviceFormat::Yealink => {
                yealink_phones = true;
                vec![yealink::phone(&desk)]
            }
            DeviceFormat::Polycom => polycom::files(&desk),
            DeviceFormat::Snom => vec![snom::phone(&desk)],
        };
        for (name, contents) in files {
            add(&mut out, name, contents, Some(&phone.name), device.vendor);
        }
        out.index.credentials.insert(
            phone.name.clone(),
            credential_verifier(&phone.name, device.provisioning_password.expose()),
        );
    }
    if yealink_phones {
        let (name, contents) = yealink::common(node);
        add(&mut out, name, contents, None, DeviceVendor::Yealink);
    }
    if !out.is_empty() {
        out.index.allowed_networks = node.provisioning.allowed_networks.clone();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_drops_what_files_cannot_carry() {
        assert_eq!(plain("  Sales \"1\"\n\\x ", 64), "Sales  1   x");
        assert_eq!(plain("Reception desk", 11), "Reception d");
        assert_eq!(plain("Empfang Süd", 9), "Empfang S");
    }

    #[test]
    fn verifiers_depend_on_phone_and_password() {
        let v = credential_verifier("reception", "pw0123456789");
        assert_eq!(v.len(), 64);
        assert_ne!(v, credential_verifier("lobby", "pw0123456789"));
        assert_ne!(v, credential_verifier("reception", "pw0123456780"));
        assert_eq!(v, credential_verifier("reception", "pw0123456789"));
    }
}
