//! The one label by which the controller finds the Secrets it may read
//! (`asterisk.operator.dev/secret`). It watches only Secrets that carry it, and each value says
//! what the Secret is for; a Secret without it is never read, whatever a resource names.

/// The label's key.
pub const LABEL: &str = "asterisk.operator.dev/secret";

/// What a labelled Secret is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretRole {
    /// A `secretRef` may name it (a phone's or trunk's password): the user's opt-in, or a
    /// default `phone-<name>` / `trunk-<name>` Secret the controller generated.
    Usable,
    /// A node's own credentials (agent token and certificate, AMI and mesh keys): the
    /// controller's, never named by a `secretRef`.
    Node,
    /// The namespace's mesh CA (`asterisk-mesh-ca`): the user's or generated.
    MeshCa,
}

impl SecretRole {
    /// The label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Usable => "usable",
            Self::Node => "node",
            Self::MeshCa => "mesh-ca",
        }
    }

    /// The role a Secret's labels give it, if any.
    pub fn of(labels: Option<&std::collections::BTreeMap<String, String>>) -> Option<Self> {
        match labels?.get(LABEL)?.as_str() {
            "usable" => Some(Self::Usable),
            "node" => Some(Self::Node),
            "mesh-ca" => Some(Self::MeshCa),
            _ => None,
        }
    }

    /// `(LABEL, value)` to put on a Secret.
    pub fn label(self) -> (String, String) {
        (LABEL.to_owned(), self.as_str().to_owned())
    }
}
