//! `Trunk`: a link between two nodes, rendered on both ends from this one resource.

// kube-derive takes one `printcolumn(...)` per column; clippy reads repeated `type_ = "string"`
// arguments as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, SecretKeyRef, conditions_schema, default_true, optional_codecs_schema};

/// A trunk between two nodes over IAX2 or PJSIP. Both ends are rendered from this resource; when
/// one end has no fixed address it registers to the other.
#[derive(CustomResource, Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "asterisk.operator.dev",
    version = "v1alpha1",
    kind = "Trunk",
    namespaced,
    status = "TrunkStatus",
    shortname = "trk",
    category = "asterisk",
    doc = "A trunk between two Asterisk nodes (IAX2 or PJSIP), rendered on both ends.",
    printcolumn(name = "Protocol", type_ = "string", json_path = ".spec.protocol"),
    printcolumn(name = "Nodes", type_ = "string", json_path = ".spec.ends"),
    printcolumn(name = "Priority", type_ = "integer", json_path = ".spec.priority"),
    printcolumn(name = "Up", type_ = "boolean", json_path = ".status.up"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.ends[0] != self.ends[1]",
        "message": "spec.ends must name two different nodes"
    },
    {
        "rule": "!has(self.auth) || !has(self.auth.method) || ((self.protocol == 'pjsip') == (self.auth.method == 'digest'))",
        "message": "spec.auth.method: pjsip trunks use digest; iax2 trunks use md5, rsa or plaintext"
    }
]))]
#[serde(rename_all = "camelCase")]
pub struct TrunkSpec {
    /// Signalling protocol: `iax2` or `pjsip`.
    pub protocol: TrunkProtocol,
    /// The two AsteriskNode names this trunk connects.
    #[schemars(length(min = 2, max = 2), inner(length(min = 1, max = 253)))]
    pub ends: Vec<String>,
    /// Lower is tried first. A second trunk between the same nodes with a higher number is the
    /// fallback when the first is down.
    #[serde(default = "default_priority")]
    #[schemars(range(min = 1, max = 99))]
    pub priority: u8,
    /// Authentication between the ends.
    #[serde(default)]
    pub auth: TrunkAuth,
    /// IAX2 trunking (`trunk=yes`): many calls share one packet stream.
    #[serde(default)]
    pub trunking: bool,
    /// Networks allowed to use this trunk, in CIDR form. Empty: any address (authentication still applies).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = r"^[0-9A-Fa-f.:]+/[0-9]{1,3}$")))]
    pub permit: Vec<String>,
    /// Codecs for calls on this trunk. Absent: those of the ends' nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_codecs_schema")]
    pub codecs: Option<Vec<String>>,
    /// Check the peer's reachability and latency (IAX2 `qualify`, PJSIP `qualify_frequency`).
    #[serde(default = "default_true")]
    pub qualify: bool,
}

fn default_priority() -> u8 {
    1
}

/// Trunk signalling protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TrunkProtocol {
    /// Inter-Asterisk eXchange v2 (chan_iax2).
    Iax2,
    /// SIP through chan_pjsip.
    Pjsip,
}

impl TrunkProtocol {
    /// The name used in manifests and Asterisk technology prefixes (`IAX2/…`, `PJSIP/…`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Iax2 => "iax2",
            Self::Pjsip => "pjsip",
        }
    }
}

/// Authentication between the two ends of a trunk.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrunkAuth {
    /// `md5`, `rsa` or `plaintext` for IAX2 (default md5); `digest` for PJSIP (the default there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<AuthMethod>,
    /// Secret holding the shared secret (md5, plaintext, digest), or the RSA key pair under the
    /// keys `rsa.key` and `rsa.pub` (rsa). Absent: a strong secret is generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
}

/// Trunk authentication method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// IAX2 MD5 challenge/response (the secret never crosses the wire).
    Md5,
    /// IAX2 RSA keys (`inkeys`/`outkey`).
    Rsa,
    /// IAX2 plaintext secret (only for trusted networks).
    Plaintext,
    /// SIP digest authentication (PJSIP).
    Digest,
}

impl AuthMethod {
    /// The name used in manifests and in `iax.conf` `auth=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "md5",
            Self::Rsa => "rsa",
            Self::Plaintext => "plaintext",
            Self::Digest => "digest",
        }
    }
}

/// Observed state of a trunk.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrunkStatus {
    /// Valid, ConfigApplied, Routed, Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Both ends report the other end reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up: Option<bool>,
    /// What each end reports about its peer. Round-trip times are in the agents' metrics
    /// (`asterisk_trunk_rtt_seconds`), not here: they change on every check, and a status that
    /// changes on every check would be rewritten on every pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ends: Vec<TrunkEndStatus>,
    /// The routes that use this trunk, from each node that dials over it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<TrunkRouteStatus>,
}

/// One end's view of a trunk.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrunkEndStatus {
    /// The node at this end.
    pub node: String,
    /// The peer is reachable from this end (absent: this end's agent has not reported it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable: Option<bool>,
}

/// A route that dials over the trunk.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrunkRouteStatus {
    /// The node whose calls take the trunk.
    pub from: String,
    /// The node that owns the numbers.
    pub destination: String,
    /// Those numbers, as dialplan patterns (`4XXX`).
    pub patterns: Vec<String>,
    /// Where the trunk stands among the route's ways out: 1 is tried first, higher numbers are
    /// fallbacks.
    pub choice: u32,
}
