//! `BlfSubscription`: which watchers see the busy lamps of which extensions, fleet-wide.

// kube-derive takes one `printcolumn(...)` per column; clippy reads repeated `type_ = "string"`
// arguments as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, conditions_schema};

/// These watchers see the state of these extensions, wherever in the fleet they live.
#[derive(CustomResource, Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "asterisk.operator.dev",
    version = "v1alpha1",
    kind = "BlfSubscription",
    namespaced,
    status = "BlfSubscriptionStatus",
    shortname = "blf",
    category = "asterisk",
    doc = "Busy-lamp (BLF) subscription: a phone or node watches extensions anywhere in the fleet.",
    printcolumn(name = "Phone", type_ = "string", json_path = ".spec.watcher.phone"),
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.watcher.node"),
    printcolumn(
        name = "Mirrored",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Mirrored\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct BlfSubscriptionSpec {
    /// Who watches: a phone (its BLF keys) or a whole node.
    pub watcher: Watcher,
    /// The extensions watched, anywhere in the fleet.
    #[schemars(length(min = 1, max = 1000))]
    pub targets: Vec<BlfTarget>,
}

/// The watcher of a BLF subscription: exactly one of `phone` or `node`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.phone) != has(self.node)",
    "message": "set exactly one of watcher.phone or watcher.node"
}]))]
#[serde(rename_all = "camelCase")]
pub struct Watcher {
    /// A Phone whose BLF keys show the targets; its node mirrors their state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub phone: Option<String>,
    /// An AsteriskNode that mirrors the targets' state (hints, no keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub node: Option<String>,
}

/// One watched extension.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlfTarget {
    /// The watched extension (digits), on any node.
    #[schemars(regex(pattern = r"^[0-9]{2,15}$"))]
    pub extension: String,
    /// Text of the BLF key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub label: Option<String>,
}

/// Observed state of a BLF subscription.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlfSubscriptionStatus {
    /// Valid, ConfigApplied, Mirrored, Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Current state of each target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<BlfTargetStatus>,
}

/// Current state of one watched extension.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlfTargetStatus {
    /// The watched extension.
    pub extension: String,
    /// The node that owns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Device state as mirrored on the watcher's node (NOT_INUSE, INUSE, BUSY, UNAVAILABLE,
    /// RINGING, RINGINUSE, ONHOLD). Absent for a target on the watcher's own node (no mirror).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The mirror follows its owner (true), or shows UNAVAILABLE because the owner is not heard
    /// from (false). Absent for a target on the watcher's own node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirrored: Option<bool>,
    /// When the mirrored state last changed on the watcher's node (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change: Option<String>,
}
