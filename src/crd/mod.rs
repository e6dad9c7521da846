//! The four custom resources (group `asterisk.operator.dev`, version `v1alpha1`) and the pieces
//! they share: secret references and Kubernetes-style status conditions.

mod blf;
mod node;
mod phone;
mod trunk;

pub use blf::{
    BlfSubscription, BlfSubscriptionSpec, BlfSubscriptionStatus, BlfTarget, BlfTargetStatus, Watcher,
};
pub use node::{
    AgentEndpoint, AsteriskNode, AsteriskNodeSpec, AsteriskNodeStatus, IaxSettings, ManagedNode, NatSettings,
    NumberingPlan, SipSettings, SipTransport,
};
pub use phone::{Device, DeviceVendor, Phone, PhoneSpec, PhoneStatus};
pub use trunk::{AuthMethod, Trunk, TrunkAuth, TrunkEndStatus, TrunkProtocol, TrunkSpec, TrunkStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResourceExt;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

/// API group of every resource of this operator.
pub const GROUP: &str = "asterisk.operator.dev";
/// API version of every resource of this operator.
pub const VERSION: &str = "v1alpha1";

/// A key in a Kubernetes Secret in the resource's namespace. Secrets are only ever referenced,
/// never inlined in a spec.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace as the resource.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret's data. Defaults to `secret`.
    #[serde(default = "default_secret_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_secret_key() -> String {
    "secret".to_owned()
}

/// The CRDs of all four kinds, in a stable order (the order of the files under `crds/`).
pub fn all() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        ("asterisknode", AsteriskNode::crd()),
        ("trunk", Trunk::crd()),
        ("phone", Phone::crd()),
        ("blfsubscription", BlfSubscription::crd()),
    ]
}

/// Schema of a `conditions` list: `metav1.Condition` items, merged by `type` under server-side
/// apply (`x-kubernetes-list-type: map`), as Kubernetes' own types declare it.
pub(crate) fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["type"]));
    schema.insert(
        "description".into(),
        "Kubernetes-style conditions (Ready, Valid, ConfigApplied, …), one per type, each with the \
         generation it was computed for."
            .into(),
    );
    schema
}

/// Codec names as Asterisk spells them (`ulaw`, `alaw`, `g722`, `opus`, …).
pub(crate) fn codecs_schema(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({
        "type": "array",
        "description": "Codecs offered, in order of preference, as Asterisk names them (ulaw, alaw, g722, opus, …).",
        "items": {"type": "string", "pattern": "^[a-z0-9_]{2,16}$"},
        "maxItems": 16
    })
}

/// Same as [`codecs_schema`] for an optional list (absent = the node's codecs).
pub(crate) fn optional_codecs_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = codecs_schema(generator);
    schema.insert("nullable".into(), true.into());
    schema.insert(
        "description".into(),
        "Codecs offered, in order of preference (ulaw, alaw, g722, opus, …). Absent: the node's codecs."
            .into(),
    );
    schema
}

/// Default codecs of a node: G.711 µ-law and A-law, which every phone and Asterisk speaks.
pub(crate) fn default_codecs() -> Vec<String> {
    vec!["ulaw".to_owned(), "alaw".to_owned()]
}

pub(crate) fn default_true() -> bool {
    true
}
