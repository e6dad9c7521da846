//! Decide: what a managed node's workload (`spec.managed`) needs this pass, from what the
//! caches hold — pure, so every decision has a table test. [`super::workloads`] does it.
//!
//! Per namespace, its mesh CA ([`plan_mesh_ca`]): the `asterisk-mesh-ca` Secret when present
//! (the user's, or one generated earlier), else a new one to create. Per node
//! ([`plan_workload`]): its Secret (create it; keep it; or write only its mesh keys when the leaf
//! is missing or no longer right), then its Service and StatefulSet (apply them when they
//! changed or were last applied long ago, else only read the StatefulSet's status).

use std::time::{Duration, SystemTime};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::ResourceExt;

use crate::controller::conditions::{ConditionUpdate, ManagedReason};
use crate::controller::managed::{self, NodeCredentials};
use crate::controller::managed_settings::ManagedSettings;
use crate::controller::mesh_pki::{self, LeafCheck, MeshCa, MeshLeaf};
use crate::crd::AsteriskNode;

/// Re-apply an unchanged workload this often anyway, undoing hand edits of owned fields.
pub(crate) const REAPPLY: Duration = Duration::from_secs(600);

/// Why a managed node's workload is not running (its `Managed=False` condition).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    /// The node failed validation.
    #[error("no StatefulSet is run for an invalid node: see the Valid condition")]
    InvalidNode,
    /// The server lacks APIs a managed node needs.
    #[error(
        "the API server does not serve {}, which a managed node needs (its Secret, headless Service and StatefulSet); run the controller against a full Kubernetes API server, or run Asterisk and `asterisk-operator agent` yourself and set spec.agent.endpoint instead of spec.managed",
        .0.join(", ")
    )]
    ApiUnavailable(Vec<String>),
    /// The namespace's mesh CA cannot be used.
    #[error("{0}")]
    MeshCa(String),
    /// The node's Secret lacks a key.
    #[error("{0}")]
    SecretIncomplete(String),
    /// The node's objects (or its certificates) cannot be built.
    #[error("{0}")]
    Build(String),
    /// Waiting for the server or the cache to catch up.
    #[error("{0}")]
    Pending(String),
    /// The server refused a write.
    #[error("{0}")]
    ApplyFailed(String),
}

impl WorkloadError {
    /// The `Managed` reason this error is written with.
    pub fn reason(&self) -> ManagedReason {
        match self {
            Self::InvalidNode | Self::Build(_) => ManagedReason::Invalid,
            Self::ApiUnavailable(_) => ManagedReason::WorkloadAPIUnavailable,
            Self::MeshCa(_) => ManagedReason::MeshCAInvalid,
            Self::SecretIncomplete(_) => ManagedReason::SecretIncomplete,
            Self::Pending(_) => ManagedReason::Pending,
            Self::ApplyFailed(_) => ManagedReason::ApplyFailed,
        }
    }

    /// The node's `Managed=False` condition.
    pub fn to_condition(&self) -> ConditionUpdate {
        ConditionUpdate::failed(self.reason(), self.to_string())
    }
}

/// The namespace's mesh CA.
#[derive(Clone, Debug)]
pub(crate) enum CaPlan {
    /// The `asterisk-mesh-ca` Secret holds a usable CA.
    Use(MeshCa),
    /// There is none: create this Secret (no owner: it is the whole fleet's) holding this CA.
    Create(MeshCa, Box<Secret>),
}

/// Decides the mesh CA of `namespace` from its cached `asterisk-mesh-ca` Secret.
pub(crate) fn plan_mesh_ca(
    namespace: &str,
    cached: Option<&Secret>,
    settings: &ManagedSettings,
    now: SystemTime,
) -> Result<CaPlan, WorkloadError> {
    let invalid = |e: mesh_pki::MeshPkiError| WorkloadError::MeshCa(e.to_string());
    match cached {
        Some(secret) => MeshCa::from_secret(secret, now).map(CaPlan::Use).map_err(invalid),
        None => {
            let ca = MeshCa::generate(namespace, now).map_err(invalid)?;
            let secret = mesh_pki::ca_secret(namespace, &ca, settings);
            Ok(CaPlan::Create(ca, Box::new(secret)))
        }
    }
}

/// What to do with a node's Secret.
#[derive(Clone, Debug)]
pub(crate) enum SecretStep {
    /// It holds the credentials and a current mesh leaf.
    Keep,
    /// There is none: create this one (created once; its credentials are never regenerated).
    Create(Box<Secret>),
    /// Write only these mesh keys into the existing Secret, guarded by its resourceVersion
    /// (a merge patch). `reissued`: why the old leaf was replaced (`None`: there was none).
    WriteMeshKeys { patch: serde_json::Value, reissued: Option<String> },
}

/// What to do with a node's Service and StatefulSet.
#[derive(Clone, Debug)]
pub(crate) enum ObjectStep {
    /// Unchanged and applied recently: only read the StatefulSet's status.
    Observe,
    /// Apply both by server-side apply, and remember `hash`.
    Apply { service: Box<Service>, stateful_set: Box<StatefulSet>, hash: String },
}

/// Everything one managed node needs this pass.
#[derive(Clone, Debug)]
pub(crate) struct WorkloadPlan {
    /// The node's credentials (the Secret's, or the ones about to be created).
    pub credentials: NodeCredentials,
    pub secret: SecretStep,
    pub objects: ObjectStep,
}

/// What [`plan_workload`] decides from.
pub(crate) struct WorkloadInputs<'a> {
    pub node: &'a AsteriskNode,
    /// The node passed validation.
    pub valid: bool,
    /// Workload APIs the server does not serve.
    pub missing_apis: &'a [String],
    /// The namespace's mesh CA.
    pub ca: &'a Result<MeshCa, WorkloadError>,
    /// The node's Secret as cached.
    pub secret: Option<&'a Secret>,
    /// Hash of the objects last applied and how long ago.
    pub last_applied: Option<(&'a str, Duration)>,
    pub settings: &'a ManagedSettings,
    pub now: SystemTime,
}

/// Decides one managed node's pass.
pub(crate) fn plan_workload(inputs: WorkloadInputs) -> Result<WorkloadPlan, WorkloadError> {
    let WorkloadInputs { node, valid, missing_apis, ca, secret, last_applied, settings, now } = inputs;
    if !valid {
        return Err(WorkloadError::InvalidNode);
    }
    if !missing_apis.is_empty() {
        return Err(WorkloadError::ApiUnavailable(missing_apis.to_vec()));
    }
    let ca = ca.as_ref().map_err(Clone::clone)?;
    let build = |e: &dyn std::fmt::Display| WorkloadError::Build(e.to_string());
    let name = node.name_any();
    let (credentials, leaf, secret_step) = match secret {
        Some(secret) => {
            let credentials = NodeCredentials::from_secret(secret)
                .map_err(|e| WorkloadError::SecretIncomplete(e.to_string()))?;
            let (leaf, step) = match mesh_pki::check_leaf(secret, ca, &name, now) {
                LeafCheck::Current(leaf) => (leaf, SecretStep::Keep),
                check => {
                    let leaf = ca.issue(&name, now).map_err(|e| build(&e))?;
                    let patch = serde_json::json!({
                        "metadata": {"resourceVersion": secret.resource_version()},
                        "data": leaf.data(),
                    });
                    let reissued = match check {
                        LeafCheck::Reissue(why) => Some(why),
                        _ => None,
                    };
                    (leaf, SecretStep::WriteMeshKeys { patch, reissued })
                }
            };
            (credentials, leaf, step)
        }
        None => {
            let leaf: MeshLeaf = ca.issue(&name, now).map_err(|e| build(&e))?;
            let credentials = NodeCredentials::generate(node).map_err(|e| build(&e))?;
            let secret = managed::secret(node, &credentials, &leaf, settings).map_err(|e| build(&e))?;
            (credentials, leaf, SecretStep::Create(Box::new(secret)))
        }
    };
    let service = managed::service(node, settings).map_err(|e| build(&e))?;
    let stateful_set = managed::stateful_set(node, settings, &leaf).map_err(|e| build(&e))?;
    let hash = objects_hash(&service, &stateful_set);
    let fresh = last_applied.is_some_and(|(h, age)| h == hash && age < REAPPLY);
    let objects = match fresh {
        true => ObjectStep::Observe,
        false => ObjectStep::Apply { service: Box::new(service), stateful_set: Box::new(stateful_set), hash },
    };
    Ok(WorkloadPlan { credentials, secret: secret_step, objects })
}

/// Content hash of the objects as applied (what decides whether to apply them again).
fn objects_hash(service: &Service, stateful_set: &StatefulSet) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(service).unwrap_or_default());
    h.update(serde_json::to_vec(stateful_set).unwrap_or_default());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::conditions::Reason;
    use crate::controller::mock_api::managed_node;

    struct Case {
        name: &'static str,
        valid: bool,
        missing: Vec<String>,
        ca_ok: bool,
        secret: Option<Secret>,
        last_applied: Option<Duration>,
        same_hash: bool,
        want: &'static str,
    }

    /// The plan's shape as one word per step, or the error's reason.
    fn shape(plan: &Result<WorkloadPlan, WorkloadError>) -> String {
        match plan {
            Err(e) => format!("error {}", e.reason().as_str()),
            Ok(p) => {
                let secret = match p.secret {
                    SecretStep::Keep => "keep",
                    SecretStep::Create(_) => "create",
                    SecretStep::WriteMeshKeys { reissued: None, .. } => "add-mesh-keys",
                    SecretStep::WriteMeshKeys { reissued: Some(_), .. } => "reissue-mesh-keys",
                };
                let objects = match p.objects {
                    ObjectStep::Observe => "observe",
                    ObjectStep::Apply { .. } => "apply",
                };
                format!("{secret} {objects}")
            }
        }
    }

    #[test]
    fn every_decision_of_a_managed_node() {
        let now = SystemTime::now();
        let settings = ManagedSettings::default();
        let node = managed_node();
        let ca = MeshCa::generate("default", now).unwrap();
        let other_ca = MeshCa::generate("default", now).unwrap();
        // The Secret a first pass creates, as the cache then holds it.
        let first = plan_workload(WorkloadInputs {
            node: &node,
            valid: true,
            missing_apis: &[],
            ca: &Ok(ca.clone()),
            secret: None,
            last_applied: None,
            settings: &settings,
            now,
        })
        .unwrap();
        let SecretStep::Create(created) = &first.secret else { panic!("first pass creates the Secret") };
        let ObjectStep::Apply { hash, .. } = &first.objects else { panic!("first pass applies") };
        let current = (**created).clone();
        let mut pre_mesh = current.clone();
        for k in mesh_pki::MESH_KEYS {
            pre_mesh.data.as_mut().unwrap().remove(k);
        }
        let mut foreign = current.clone();
        foreign.data.as_mut().unwrap().extend(other_ca.issue("office-a", now).unwrap().data());
        let mut incomplete = current.clone();
        incomplete.data.as_mut().unwrap().remove(managed::AGENT_TOKEN_KEY);

        let case = |name, secret: Option<&Secret>, last_applied, same_hash, want| Case {
            name,
            valid: true,
            missing: vec![],
            ca_ok: true,
            secret: secret.cloned(),
            last_applied,
            same_hash,
            want,
        };
        let recently = Some(Duration::from_secs(5));
        let long_ago = Some(REAPPLY + Duration::from_secs(1));
        let cases = [
            Case { valid: false, ..case("invalid node", None, None, false, "error Invalid") },
            Case {
                missing: vec!["apps/v1 StatefulSets".into()],
                ..case("missing API", None, None, false, "error WorkloadAPIUnavailable")
            },
            Case { ca_ok: false, ..case("unusable CA", None, None, false, "error MeshCAInvalid") },
            case("no Secret yet", None, None, false, "create apply"),
            case("unchanged, applied recently", Some(&current), recently, true, "keep observe"),
            case("unchanged, applied long ago", Some(&current), long_ago, true, "keep apply"),
            case("objects changed", Some(&current), recently, false, "keep apply"),
            case("Secret from before the mesh", Some(&pre_mesh), recently, true, "add-mesh-keys apply"),
            case("leaf of another CA", Some(&foreign), recently, true, "reissue-mesh-keys apply"),
            case("Secret lacks the token", Some(&incomplete), recently, true, "error SecretIncomplete"),
        ];
        for c in cases {
            let ca_result = if c.ca_ok { Ok(ca.clone()) } else { Err(WorkloadError::MeshCa("bad".into())) };
            let applied_hash = if c.same_hash { hash.clone() } else { "other".to_owned() };
            let plan = plan_workload(WorkloadInputs {
                node: &node,
                valid: c.valid,
                missing_apis: &c.missing,
                ca: &ca_result,
                secret: c.secret.as_ref(),
                last_applied: c.last_applied.map(|age| (applied_hash.as_str(), age)),
                settings: &settings,
                now,
            });
            assert_eq!(shape(&plan), c.want, "{}", c.name);
        }
    }

    #[test]
    fn a_kept_secret_keeps_its_credentials_and_mesh_keys_are_guarded_by_its_version() {
        let now = SystemTime::now();
        let settings = ManagedSettings::default();
        let node = managed_node();
        let ca = Ok(MeshCa::generate("default", now).unwrap());
        let plan = |secret: Option<&Secret>| {
            plan_workload(WorkloadInputs {
                node: &node,
                valid: true,
                missing_apis: &[],
                ca: &ca,
                secret,
                last_applied: None,
                settings: &settings,
                now,
            })
            .unwrap()
        };
        let SecretStep::Create(created) = plan(None).secret else { panic!("created") };
        let mut stored = (*created).clone();
        stored.metadata.resource_version = Some("7".into());
        let kept = plan(Some(&stored));
        let original = NodeCredentials::from_secret(&stored).unwrap();
        assert_eq!(kept.credentials.agent_token, original.agent_token, "never regenerated");
        for k in mesh_pki::MESH_KEYS {
            stored.data.as_mut().unwrap().remove(k);
        }
        let SecretStep::WriteMeshKeys { patch, .. } = plan(Some(&stored)).secret else {
            panic!("mesh keys added")
        };
        assert_eq!(patch["metadata"], serde_json::json!({"resourceVersion": "7"}));
        let keys: Vec<&String> = patch["data"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["mesh-ca.crt", "mesh.crt", "mesh.key"], "only the mesh keys");
    }

    #[test]
    fn every_error_is_its_reason_and_message() {
        let e = WorkloadError::ApiUnavailable(vec!["apps/v1 StatefulSets".into()]);
        let c = e.to_condition();
        assert_eq!((c.type_, c.status, c.reason.as_str()), ("Managed", false, "WorkloadAPIUnavailable"));
        assert!(c.message.contains("does not serve apps/v1 StatefulSets"), "{c:?}");
        assert_eq!(WorkloadError::InvalidNode.to_condition().reason, "Invalid");
    }
}
