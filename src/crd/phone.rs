//! `Phone`: a SIP endpoint homed on one node.

// kube-derive takes one `printcolumn(...)` per column; clippy reads repeated `type_ = "string"`
// arguments as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    Condition, ProvisioningStatus, SecretKeyRef, conditions_schema, default_true, optional_codecs_schema,
};

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
    printcolumn(
        name = "Provisioned",
        type_ = "date",
        json_path = ".status.provisioning.lastFetchTime",
        priority = 1
    ),
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
    /// Model, which selects the format where the vendor has several: Cisco 7940/7960 read the
    /// plain-text `SIP<MAC>.cnf`, Cisco 79x1/79x2/79x5/7931/69xx/88xx `SEP<MAC>.cnf.xml`;
    /// Yealink T19–T58/CP9x0, Polycom VVX/SoundPoint IP, Snom 3xx/7xx/8xx/D3xx/D7xx.
    #[schemars(regex(pattern = r"^[A-Za-z0-9._ -]{1,32}$"))]
    pub model: String,
    /// MAC address, in any common notation: `00:1a:2b:3c:4d:5e`, `00-1A-2B-3C-4D-5E`,
    /// `001a.2b3c.4d5e` or `001a2b3c4d5e`. The file names use it in the case each vendor expects;
    /// the agent matches names case-insensitively.
    #[schemars(regex(
        pattern = r"^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$|^([0-9A-Fa-f]{4}\.){2}[0-9A-Fa-f]{4}$|^[0-9A-Fa-f]{12}$"
    ))]
    pub mac: String,
}

/// Phone vendors whose provisioning formats are rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeviceVendor {
    /// Cisco SIP desk phones (`SIP<MAC>.cnf` or `SEP<MAC>.cnf.xml`).
    Cisco,
    /// Yealink (`<mac>.cfg` and the common `y000000000000.cfg`).
    Yealink,
    /// Polycom/Poly UC Software (master `<mac>.cfg` and `<mac>-phone.cfg`).
    Polycom,
    /// Snom (`<MAC>.xml`).
    Snom,
}

impl DeviceVendor {
    /// The vendor as written in manifests (and in metrics labels).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cisco => "cisco",
            Self::Yealink => "yealink",
            Self::Polycom => "polycom",
            Self::Snom => "snom",
        }
    }
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
    /// When and from where the desk phone last fetched its provisioning file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<ProvisioningStatus>,
}
