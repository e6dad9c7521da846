//! Desk-phone provisioning settings of a node (`AsteriskNode.spec.provisioning`) and what a
//! Phone's status says about its provisioning file. Why these live on the node and not on a
//! fleet-wide resource: docs/adr/0006-phone-provisioning.md.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::DeviceVendor;

/// What the node's phones need in their provisioning files, and who may fetch them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeProvisioning {
    /// Host name or address the phones register to. Default: `spec.address`. Set it when the
    /// phones reach the server by another address than the other nodes do (a LAN address behind
    /// NAT, or a node without `spec.address`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9]([A-Za-z0-9.:-]{0,251}[A-Za-z0-9])?$"))]
    pub sip_server: Option<String>,
    /// Networks (CIDR) whose phones may fetch their files without credentials: over TFTP (which
    /// has none) and over HTTP(S). Empty: TFTP serves nobody, HTTP(S) only with each phone's
    /// provisioning credentials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(regex(pattern = r"^[0-9A-Fa-f.:]+/[0-9]{1,3}$")))]
    pub allowed_networks: Vec<String>,
    /// Time zone of the phones' clocks (with its daylight-saving rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<TimeZone>,
    /// Language of the phones' menus (and tones, where the vendor ties them to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<Locale>,
    /// NTP server the phones set their clocks from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9]([A-Za-z0-9.:-]{0,251}[A-Za-z0-9])?$"))]
    pub ntp_server: Option<String>,
    /// RTP port range of the phones. Default: each vendor's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_ports: Option<PortRange>,
    /// Firmware each kind of phone should run: the first entry matching the phone's vendor (and
    /// model, when the entry lists models) applies. The firmware files themselves are not served
    /// by the agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub firmware: Vec<FirmwareLoad>,
}

/// A range of UDP ports, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.start < self.end",
    "message": "mediaPorts.start must be below mediaPorts.end"
}]))]
#[serde(rename_all = "camelCase")]
pub struct PortRange {
    /// First port (even: RTP uses even ports, RTCP the odd one above).
    #[schemars(range(min = 1024, max = 65534))]
    pub start: u16,
    /// Last port.
    #[schemars(range(min = 1025, max = 65535))]
    pub end: u16,
}

/// The firmware of one kind of phone.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FirmwareLoad {
    /// Vendor it is for.
    pub vendor: DeviceVendor,
    /// Models it is for (as in `spec.device.model`). Empty: every model of the vendor.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(regex(pattern = r"^[A-Za-z0-9._ -]{1,32}$")))]
    pub models: Vec<String>,
    /// Cisco: the load name (e.g. `SIP41.9-4-2SR3-1S`, `P0S3-8-12-00`); Yealink, Polycom and
    /// Snom: the URL (or, for Polycom, the path) of the firmware image.
    #[schemars(regex(pattern = r"^[A-Za-z0-9._:/?=&%+~-]{1,256}$"))]
    pub load: String,
}

/// Time zones the phone formats can express, with their daylight-saving rules. Each vendor
/// names zones its own way; the renderer carries every vendor's spelling of each of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema)]
pub enum TimeZone {
    /// UTC, no daylight saving.
    #[serde(rename = "UTC")]
    Utc,
    /// UK time (GMT/BST).
    #[serde(rename = "Europe/London")]
    EuropeLondon,
    /// Irish time.
    #[serde(rename = "Europe/Dublin")]
    EuropeDublin,
    /// Portuguese time.
    #[serde(rename = "Europe/Lisbon")]
    EuropeLisbon,
    /// Central European time.
    #[serde(rename = "Europe/Amsterdam")]
    EuropeAmsterdam,
    /// Central European time.
    #[serde(rename = "Europe/Berlin")]
    EuropeBerlin,
    /// Central European time.
    #[serde(rename = "Europe/Brussels")]
    EuropeBrussels,
    /// Central European time.
    #[serde(rename = "Europe/Copenhagen")]
    EuropeCopenhagen,
    /// Central European time.
    #[serde(rename = "Europe/Madrid")]
    EuropeMadrid,
    /// Central European time.
    #[serde(rename = "Europe/Oslo")]
    EuropeOslo,
    /// Central European time.
    #[serde(rename = "Europe/Paris")]
    EuropeParis,
    /// Central European time.
    #[serde(rename = "Europe/Prague")]
    EuropePrague,
    /// Central European time.
    #[serde(rename = "Europe/Rome")]
    EuropeRome,
    /// Central European time.
    #[serde(rename = "Europe/Stockholm")]
    EuropeStockholm,
    /// Central European time.
    #[serde(rename = "Europe/Vienna")]
    EuropeVienna,
    /// Central European time.
    #[serde(rename = "Europe/Warsaw")]
    EuropeWarsaw,
    /// Central European time.
    #[serde(rename = "Europe/Zurich")]
    EuropeZurich,
    /// Eastern European time.
    #[serde(rename = "Europe/Athens")]
    EuropeAthens,
    /// Eastern European time.
    #[serde(rename = "Europe/Bucharest")]
    EuropeBucharest,
    /// Eastern European time.
    #[serde(rename = "Europe/Helsinki")]
    EuropeHelsinki,
    /// US Eastern time.
    #[serde(rename = "America/New_York")]
    AmericaNewYork,
    /// Canadian Eastern time.
    #[serde(rename = "America/Toronto")]
    AmericaToronto,
    /// US Central time.
    #[serde(rename = "America/Chicago")]
    AmericaChicago,
    /// US Mountain time.
    #[serde(rename = "America/Denver")]
    AmericaDenver,
    /// Arizona: Mountain time without daylight saving.
    #[serde(rename = "America/Phoenix")]
    AmericaPhoenix,
    /// US Pacific time.
    #[serde(rename = "America/Los_Angeles")]
    AmericaLosAngeles,
    /// Canadian Pacific time.
    #[serde(rename = "America/Vancouver")]
    AmericaVancouver,
    /// India, no daylight saving.
    #[serde(rename = "Asia/Kolkata")]
    AsiaKolkata,
    /// Japan, no daylight saving.
    #[serde(rename = "Asia/Tokyo")]
    AsiaTokyo,
}

/// Phone languages every supported vendor has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema)]
pub enum Locale {
    /// English (United States).
    #[serde(rename = "en_US")]
    EnUs,
    /// English (United Kingdom).
    #[serde(rename = "en_GB")]
    EnGb,
    /// German (Germany).
    #[serde(rename = "de_DE")]
    DeDe,
    /// French (France).
    #[serde(rename = "fr_FR")]
    FrFr,
    /// Spanish (Spain).
    #[serde(rename = "es_ES")]
    EsEs,
    /// Italian (Italy).
    #[serde(rename = "it_IT")]
    ItIt,
}

/// When and from where a phone last fetched its provisioning file, as its node's agent saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningStatus {
    /// When the file was last served (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fetch_time: Option<String>,
    /// The address it was fetched from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fetch_source: Option<String>,
    /// The file served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fetch_file: Option<String>,
    /// `tftp`, `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fetch_protocol: Option<String>,
    /// The User-Agent the phone sent (HTTP only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}
