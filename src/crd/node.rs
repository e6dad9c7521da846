//! `AsteriskNode`: one Asterisk server of the fleet.

// kube-derive takes one `printcolumn(...)` per column; clippy reads repeated `type_ = "string"`
// arguments as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, NodeProvisioning, codecs_schema, conditions_schema, default_codecs};

/// One Asterisk server: its numbering plan, where other nodes and the controller reach it, and
/// its SIP/IAX2 listeners.
#[derive(CustomResource, Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "asterisk.operator.dev",
    version = "v1alpha1",
    kind = "AsteriskNode",
    namespaced,
    status = "AsteriskNodeStatus",
    shortname = "an",
    shortname = "astnode",
    category = "asterisk",
    doc = "One Asterisk server of the fleet: numbering plan, address, agent and listeners.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Numbers", type_ = "string", json_path = ".spec.numbering.prefixes"),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.asteriskVersion"),
    printcolumn(name = "Phones", type_ = "integer", json_path = ".status.phones"),
    printcolumn(name = "Registered", type_ = "integer", json_path = ".status.registered"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.agent) != has(self.managed)",
    "message": "set exactly one of spec.agent (an agent beside an existing Asterisk) or spec.managed (a pod run by the operator)"
}]))]
#[serde(rename_all = "camelCase")]
pub struct AsteriskNodeSpec {
    /// The numbers this node owns. Numbering plans of different nodes must not overlap, so any
    /// number tells which server it lives on; routes to other nodes are derived from them.
    pub numbering: NumberingPlan,
    /// Host name or IP address where other nodes reach this server. Absent: the node has a
    /// dynamic address and registers to the nodes it has trunks with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = super::rules::HOST_PATTERN), length(max = super::rules::HOST_MAX))]
    pub address: Option<String>,
    /// The agent beside an existing Asterisk server (systemd service or sidecar you run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentEndpoint>,
    /// Run Asterisk and its agent as a StatefulSet owned by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedNode>,
    /// The node's PJSIP transport.
    #[serde(default)]
    pub sip: SipSettings,
    /// The node's IAX2 listener.
    #[serde(default)]
    pub iax: IaxSettings,
    /// Dialplan context the node's phones dial from. Defaults to `operator-phones`.
    #[serde(default = "default_phone_context")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,79}$"))]
    pub phone_context: String,
    /// Codecs offered by phones and trunks of this node unless they say otherwise.
    #[serde(default = "default_codecs")]
    #[schemars(schema_with = "codecs_schema")]
    pub codecs: Vec<String>,
    /// NAT settings of the node's PJSIP transport, for a server behind a NAT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat: Option<NatSettings>,
    /// What the provisioning files of the node's desk phones need, and who may fetch them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<NodeProvisioning>,
}

fn default_phone_context() -> String {
    super::rules::DEFAULT_PHONE_CONTEXT.to_owned()
}

/// A node's numbering plan: every number of `length` digits that starts with one of `prefixes`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NumberingPlan {
    /// Leading digits of the numbers this node owns, e.g. `["3"]` for 3000–3999 with length 4.
    #[schemars(length(min = 1, max = 64), inner(regex(pattern = r"^[0-9]{1,14}$")))]
    pub prefixes: Vec<String>,
    /// Number of digits of every extension of this node (2–15).
    #[schemars(range(min = 2, max = 15))]
    pub length: u8,
}

/// Where the controller reaches the node's agent.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentEndpoint {
    /// gRPC endpoint of the agent, e.g. `https://office-a-agent:7443`.
    #[schemars(regex(pattern = r"^https?://[^\s/]+(:[0-9]{1,5})?/?$"))]
    pub endpoint: String,
}

/// An Asterisk pod run by the operator (StatefulSet with the agent as a sidecar).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedNode {
    /// Container image with Asterisk 22 and the operator binary.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
    /// Compute resources of the Asterisk container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Use the host's network namespace, so SIP and RTP need no NAT traversal.
    #[serde(default)]
    pub host_network: bool,
}

/// The node's PJSIP transport.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SipSettings {
    /// SIP port (default 5060).
    #[serde(default = "default_sip_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Listen address; defaults to `0.0.0.0` (all addresses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9A-Fa-f.:\[\]]{2,45}$"))]
    pub bind: Option<String>,
    /// Transport protocol (default udp).
    #[serde(default)]
    pub transport: SipTransport,
}

impl Default for SipSettings {
    fn default() -> Self {
        Self { port: default_sip_port(), bind: None, transport: SipTransport::default() }
    }
}

fn default_sip_port() -> u16 {
    5060
}

/// SIP transport protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SipTransport {
    /// SIP over UDP.
    #[default]
    Udp,
    /// SIP over TCP.
    Tcp,
}

/// The node's IAX2 listener.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IaxSettings {
    /// IAX2 port (default 4569).
    #[serde(default = "default_iax_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Listen address; defaults to `0.0.0.0` (all addresses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9A-Fa-f.:\[\]]{2,45}$"))]
    pub bind: Option<String>,
}

impl Default for IaxSettings {
    fn default() -> Self {
        Self { port: default_iax_port(), bind: None }
    }
}

fn default_iax_port() -> u16 {
    4569
}

/// NAT settings for a server behind a NAT (PJSIP transport `external_*` and `local_net`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NatSettings {
    /// Public address to advertise in SIP signalling and SDP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = super::rules::HOST_PATTERN))]
    pub external_address: Option<String>,
    /// Networks reached without NAT, in CIDR form (e.g. `192.168.0.0/16`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = r"^[0-9A-Fa-f.:]+/[0-9]{1,3}$")))]
    pub local_nets: Vec<String>,
}

/// Observed state of an Asterisk node, written by the controller from what the agent reports.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AsteriskNodeStatus {
    /// Valid, Ready, AgentConnected, ConfigApplied; and Managed for a node with spec.managed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Asterisk version as the server reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asterisk_version: Option<String>,
    /// When Asterisk started (RFC 3339); a timestamp rather than an uptime, so the status
    /// only changes when Asterisk restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Content hash of the bundle the agent last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_bundle_hash: Option<String>,
    /// When the agent last reloaded a module (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reload: Option<String>,
    /// Phones homed on this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phones: Option<u32>,
    /// PJSIP endpoints configured on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<u32>,
    /// Endpoints with at least one reachable contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered: Option<u32>,
    /// Active channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<u32>,
}
