//! The controller settings that shape every managed node's workload (`spec.managed`): what its
//! objects are labelled with and which user its containers run as. A leaf, shared by the
//! workload builder ([`super::managed`]) and the mesh PKI ([`super::mesh_pki`]).

/// Settings of the controller that shape every managed workload.
#[derive(Clone, Debug)]
pub struct ManagedSettings {
    /// `app.kubernetes.io/managed-by` of every object.
    pub managed_by: String,
    /// User and group id the containers run as: the image's `asterisk` user (the Dockerfile
    /// creates it with this id).
    pub run_as: i64,
    /// The images a node's `spec.managed.image` may name, as prefixes (a registry and
    /// repository, e.g. `ghcr.io/asterisk-operator/asterisk-operator:`). None: no managed node
    /// runs — the operator's administrator decides which images run under its account.
    pub image_prefixes: Vec<String>,
    /// Whether a node may ask for `spec.managed.hostNetwork` (off: the pod's network only).
    pub allow_host_network: bool,
}

impl Default for ManagedSettings {
    fn default() -> Self {
        Self {
            managed_by: "asterisk-operator".into(),
            run_as: 200,
            image_prefixes: Vec::new(),
            allow_host_network: false,
        }
    }
}
