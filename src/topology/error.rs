//! Validation errors of the topology resolver: each names the resource, the field and the fix.

use std::fmt;

/// The kind of a resource, as `kubectl` spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `AsteriskNode`
    AsteriskNode,
    /// `Trunk`
    Trunk,
    /// `Phone`
    Phone,
    /// `BlfSubscription`
    BlfSubscription,
}

impl Kind {
    /// The kind as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AsteriskNode => "AsteriskNode",
            Self::Trunk => "Trunk",
            Self::Phone => "Phone",
            Self::BlfSubscription => "BlfSubscription",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies one resource: kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// The resource's kind.
    pub kind: Kind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl ObjectRef {
    /// A reference to `kind` `namespace/name`.
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Self {
        Self { kind, namespace: namespace.to_owned(), name: name.to_owned() }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// Why a resource is invalid; its name is the `reason` of the resource's `Valid` condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// A field breaks a rule the CRD schema also states (for manifests that bypass the API server).
    InvalidField,
    /// Two nodes claim the same numbers.
    OverlappingNumbering,
    /// A phone's extension is not in its node's numbering plan.
    OutsideNumbering,
    /// Two phones have the same extension.
    DuplicateExtension,
    /// A reference names an AsteriskNode that does not exist or is invalid.
    MissingNode,
    /// A reference names a Phone that does not exist or is invalid.
    MissingPhone,
    /// A referenced Secret or key does not exist, or its value cannot be used.
    MissingSecret,
    /// A Secret value that Asterisk's config files cannot carry or that is too weak.
    UnusableSecret,
    /// A trunk whose two ends are the same node.
    SelfTrunk,
    /// A trunk whose two ends both lack a fixed address, so neither can reach the other.
    BothEndsDynamic,
    /// An authentication method that does not fit the trunk's protocol.
    AuthMismatch,
    /// A node no trunk path connects to the rest of the fleet.
    Unreachable,
    /// A BLF target extension that no phone of the fleet has.
    UnknownTarget,
    /// A desk phone's MAC address is not a unicast MAC address in a known notation.
    InvalidMac,
    /// Two desk phones of the fleet have the same MAC address.
    DuplicateMac,
    /// A desk phone model whose provisioning format the vendor's renderer does not write.
    UnsupportedModel,
    /// A desk phone on a node that says nowhere which address its phones register to.
    NoSipServer,
    /// A name the rendered configuration already uses for something else.
    ReservedName,
}

impl Reason {
    /// CamelCase name, used as a condition `reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidField => "InvalidField",
            Self::OverlappingNumbering => "OverlappingNumbering",
            Self::OutsideNumbering => "OutsideNumbering",
            Self::DuplicateExtension => "DuplicateExtension",
            Self::MissingNode => "MissingNode",
            Self::MissingPhone => "MissingPhone",
            Self::MissingSecret => "MissingSecret",
            Self::UnusableSecret => "UnusableSecret",
            Self::SelfTrunk => "SelfTrunk",
            Self::BothEndsDynamic => "BothEndsDynamic",
            Self::AuthMismatch => "AuthMismatch",
            Self::Unreachable => "Unreachable",
            Self::UnknownTarget => "UnknownTarget",
            Self::InvalidMac => "InvalidMac",
            Self::DuplicateMac => "DuplicateMac",
            Self::UnsupportedModel => "UnsupportedModel",
            Self::NoSipServer => "NoSipServer",
            Self::ReservedName => "ReservedName",
        }
    }
}

/// One validation error: which resource, which field, what is wrong and what to do.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
#[error("{object}: {field}: {problem}; {fix}")]
pub struct ValidationError {
    /// The resource at fault.
    pub object: ObjectRef,
    /// Field path inside the resource, e.g. `spec.extension` or `spec.targets[1].extension`.
    pub field: String,
    /// Machine-readable reason.
    pub reason: Reason,
    /// What is wrong.
    pub problem: String,
    /// What to do about it.
    pub fix: String,
}

impl ValidationError {
    /// The message for a status condition: field, problem and fix, without the resource name.
    pub fn condition_message(&self) -> String {
        format!("{}: {}; {}", self.field, self.problem, self.fix)
    }
}
