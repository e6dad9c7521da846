//! `Phone`: a SIP endpoint homed on one node.

// kube-derive takes one `printcolumn(...)` per column; clippy reads repeated `type_ = "string"`
// arguments as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, SecretKeyRef, conditions_schema, default_true, optional_codecs_schema};

/// A SIP phone homed on one node: its extension, credentials and optionally the device to provision.
#[derive(CustomResource, Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "asterisk.operator.dev",
    version = "v1alpha1",
    kind = "Phone",
    namespaced,
    status = "PhoneStatus",
    shortname = "ph",
    category = "asterisk",
    doc = "A SIP phone (PJSIP endpoint) homed on one Asterisk node.",
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.node"),
    printcolumn(name = "Extension", type_ = "string", json_path = ".spec.extension"),
    printcolumn(name = "Registered", type_ = "boolean", json_path = ".status.registered"),
    printcolumn(name = "Contact", type_ = "string", json_path = ".status.contact", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct PhoneSpec {
    /// Name of the AsteriskNode this phone registers to.
    #[schemars(length(min = 1, max = 253))]
    pub node: String,
    /// The phone's extension: digits only, inside its node's numbering plan.
    #[schemars(regex(pattern = r"^[0-9]{2,15}$"))]
    pub extension: String,
    /// Name shown as caller ID and on the display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r#"^[^"<>\r\n\\]{1,64}$"#))]
    pub display_name: Option<String>,
    /// Secret holding the SIP password. Absent: a strong password is generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// The phone is behind NAT or on another network: rtp_symmetric, force_rport,
    /// rewrite_contact and no direct media (default true).
    #[serde(default = "default_true")]
    pub nat: bool,
    /// Codecs for this phone. Absent: the node's codecs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_codecs_schema")]
    pub codecs: Option<Vec<String>>,
    /// Voicemail box (`mailbox` or `mailbox@context`) for the message-waiting lamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,15}(@[A-Za-z0-9_-]{1,79})?$"))]
    pub voicemail: Option<String>,
    /// How many devices may register for this phone at once (default 1).
    #[serde(default = "default_max_contacts")]
    #[schemars(range(min = 1, max = 20))]
    pub max_contacts: u8,
    /// The desk phone to provision with a configuration file (line and BLF keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Device>,
}

impl PhoneSpec {
    /// A phone with only its node and extension set, every other field at its default (what a
    /// manifest with just those two fields gives).
    pub fn new(node: &str, extension: &str) -> Self {
        Self {
            node: node.to_owned(),
            extension: extension.to_owned(),
            display_name: None,
            secret_ref: None,
            nat: true,
            codecs: None,
            voicemail: None,
            max_contacts: default_max_contacts(),
            device: None,
        }
    }
}

fn default_max_contacts() -> u8 {
    1
}

/// A desk phone to provision.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// Vendor, which selects the provisioning file format.
    pub vendor: DeviceVendor,
    /// Model, e.g. `7931G`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9._ -]{1,32}$"))]
    pub model: String,
    /// MAC address, six hex pairs separated by `:` (e.g. `00:1a:2b:3c:4d:5e`).
    #[schemars(regex(pattern = r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$"))]
    pub mac: String,
}

/// Phone vendors whose provisioning format is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeviceVendor {
    /// Cisco SCCP/SIP desk phones (`SEP<MAC>.cnf.xml`).
    Cisco,
}

/// Observed state of a phone.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhoneStatus {
    /// Valid, ConfigApplied, Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// At least one contact is registered and reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered: Option<bool>,
    /// The registered contact URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// The User-Agent the phone registered with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Qualify round-trip time, in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roundtrip_usec: Option<u64>,
}
