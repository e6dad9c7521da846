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
}

impl Default for ManagedSettings {
    fn default() -> Self {
        Self { managed_by: "asterisk-operator".into(), run_as: 200 }
    }
}
