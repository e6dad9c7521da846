//! Decide: what each node's Secret and, for a managed node (`spec.managed`), its workload need
//! this pass, from what the caches hold — pure, so every decision has a table test.
//! [`super::workloads`] does it.
//!
//! Per namespace, its mesh CA ([`plan_mesh_ca`]): the `asterisk-mesh-ca` Secret when present
//! (the user's, or one generated earlier), else a new one to create. Per node
//! ([`plan_workload`]): its Secret with its own agent credentials (create it; keep it; or write
//! only its mesh keys when the leaf is missing or no longer right); then, for a managed node
//! whose image and host networking the operator permits, its Service and StatefulSet (apply
//! them when they changed or were last applied long ago, else only read the StatefulSet's
//! status).

use std::time::{Duration, SystemTime};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::{Resource, ResourceExt};

use crate::controller::conditions::{ConditionUpdate, ManagedReason};
use crate::controller::credentials::NodeCredentials;
use crate::controller::managed;
use crate::controller::managed_settings::ManagedSettings;
use crate::controller::mesh_pki::{self, LeafCheck, MeshCa};
use crate::crd::{AsteriskNode, ManagedNode, namespace_of};

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
    /// The node asks for something the operator's configuration does not allow.
    #[error("{0}")]
    NotPermitted(String),
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
            Self::NotPermitted(_) => ManagedReason::NotPermitted,
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

/// Everything one node needs this pass.
#[derive(Clone, Debug)]
pub(crate) struct WorkloadPlan {
    /// The node's credentials (the Secret's, or the ones about to be created).
    pub credentials: NodeCredentials,
    pub secret: SecretStep,
    /// A managed node's Service and StatefulSet (`None` for a node beside an existing server).
    pub objects: Option<ObjectStep>,
    /// The namespace's mesh CA is unusable: the node's mesh keys stay as they are, and nothing
    /// else waits for it (configuration keeps flowing to the node).
    pub mesh_problem: Option<WorkloadError>,
}

/// What [`plan_workload`] decides from.
pub(crate) struct WorkloadInputs<'a> {
    pub node: &'a AsteriskNode,
    /// The node passed validation.
    pub valid: bool,
    /// APIs the node needs that the server does not serve (for a managed node: Secrets,
    /// Services, StatefulSets; else Secrets).
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

/// Decides one node's pass.
pub(crate) fn plan_workload(inputs: WorkloadInputs) -> Result<WorkloadPlan, WorkloadError> {
    let WorkloadInputs { node, valid, missing_apis, ca, secret, last_applied, settings, now } = inputs;
    if !valid {
        return Err(WorkloadError::InvalidNode);
    }
    if !missing_apis.is_empty() {
        return Err(WorkloadError::ApiUnavailable(missing_apis.to_vec()));
    }
    if let Some(managed) = &node.spec.managed {
        permitted(managed, settings)?;
    }
    let managed = node.spec.managed.is_some();
    let (credentials, secret_step, mesh_problem) = match (ca, secret) {
        (Ok(ca), _) => {
            let (credentials, step) = plan_secret(node, secret, ca, settings, now)?;
            (credentials, step, None)
        }
        // A broken or expiring CA must not stop configuration: the Secret's credentials still
        // reach the agent, and its mesh keys are left as they are until the CA is fixed.
        (Err(e), Some(secret)) => {
            let credentials = NodeCredentials::from_secret(secret)
                .map_err(|e| WorkloadError::SecretIncomplete(e.to_string()))?;
            (credentials, SecretStep::Keep, Some(e.clone()))
        }
        // A new managed pod cannot start without its mesh certificate files.
        (Err(e), None) if managed => return Err(e.clone()),
        (Err(e), None) => {
            let credentials = NodeCredentials::generate(&namespace_of(node.meta()), &node.name_any(), false)
                .map_err(|e| WorkloadError::Build(e.to_string()))?;
            let secret = managed::secret(node, &credentials, None, settings)
                .map_err(|e| WorkloadError::Build(e.to_string()))?;
            (credentials, SecretStep::Create(Box::new(secret)), Some(e.clone()))
        }
    };
    let objects = match managed {
        false => None,
        true => {
            let build = |e: managed::ManagedError| WorkloadError::Build(e.to_string());
            let service = managed::service(node, settings).map_err(build)?;
            let stateful_set = managed::stateful_set(node, settings).map_err(build)?;
            let hash = objects_hash(&service, &stateful_set);
            let fresh = last_applied.is_some_and(|(h, age)| h == hash && age < REAPPLY);
            Some(match fresh {
                true => ObjectStep::Observe,
                false => ObjectStep::Apply {
                    service: Box::new(service),
                    stateful_set: Box::new(stateful_set),
                    hash,
                },
            })
        }
    };
    Ok(WorkloadPlan { credentials, secret: secret_step, objects, mesh_problem })
}

/// The operator runs only the images, and grants host networking only, its configuration allows:
/// writing an AsteriskNode must not give its author more than the operator's administrator did.
fn permitted(managed: &ManagedNode, settings: &ManagedSettings) -> Result<(), WorkloadError> {
    if !settings.image_prefixes.iter().any(|p| managed.image.starts_with(p.as_str())) {
        let allowed = match settings.image_prefixes.is_empty() {
            true => "none is allowed: the controller has no --managed-image-prefix".to_owned(),
            false => format!("allowed: images starting with {}", settings.image_prefixes.join(", ")),
        };
        return Err(WorkloadError::NotPermitted(format!(
            "spec.managed.image {:?} is not one this operator may run ({allowed}); use an allowed image, or ask the operator's administrator to allow it",
            managed.image
        )));
    }
    if managed.host_network && !settings.allow_host_network {
        return Err(WorkloadError::NotPermitted(
            "spec.managed.hostNetwork is true, which this operator does not allow (the controller runs without --allow-host-network); remove it and reach the pod through its Service, or ask the operator's administrator".into(),
        ));
    }
    Ok(())
}

/// A node's Secret with a usable CA: its credentials, and what to write.
fn plan_secret(
    node: &AsteriskNode,
    secret: Option<&Secret>,
    ca: &MeshCa,
    settings: &ManagedSettings,
    now: SystemTime,
) -> Result<(NodeCredentials, SecretStep), WorkloadError> {
    let build = |e: &dyn std::fmt::Display| WorkloadError::Build(e.to_string());
    let name = node.name_any();
    match secret {
        Some(secret) => {
            let credentials = NodeCredentials::from_secret(secret)
                .map_err(|e| WorkloadError::SecretIncomplete(e.to_string()))?;
            let step = match mesh_pki::check_leaf(secret, ca, &name, now) {
                LeafCheck::Current(_) => SecretStep::Keep,
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
                    SecretStep::WriteMeshKeys { patch, reissued }
                }
            };
            Ok((credentials, step))
        }
        None => {
            let leaf = ca.issue(&name, now).map_err(|e| build(&e))?;
            let credentials =
                NodeCredentials::generate(&namespace_of(node.meta()), &name, node.spec.managed.is_some())
                    .map_err(|e| build(&e))?;
            let secret = managed::secret(node, &credentials, Some(&leaf), settings).map_err(|e| build(&e))?;
            Ok((credentials, SecretStep::Create(Box::new(secret))))
        }
    }
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
    use crate::controller::credentials;
    use crate::controller::mock_api::{managed_node, managed_settings};

    struct Case {
        name: &'static str,
        node: AsteriskNode,
        settings: ManagedSettings,
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
                    Some(ObjectStep::Observe) => "observe",
                    Some(ObjectStep::Apply { .. }) => "apply",
                    None => "no-workload",
                };
                let mesh = if p.mesh_problem.is_some() { " (mesh keys wait for the CA)" } else { "" };
                format!("{secret} {objects}{mesh}")
            }
        }
    }

    #[test]
    fn every_decision_of_a_node() {
        let now = SystemTime::now();
        let settings = managed_settings();
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
        let Some(ObjectStep::Apply { hash, .. }) = &first.objects else { panic!("first pass applies") };
        let current = (**created).clone();
        let mut pre_mesh = current.clone();
        for k in mesh_pki::MESH_KEYS {
            pre_mesh.data.as_mut().unwrap().remove(k);
        }
        let mut foreign = current.clone();
        foreign.data.as_mut().unwrap().extend(other_ca.issue("office-a", now).unwrap().data());
        let mut incomplete = current.clone();
        incomplete.data.as_mut().unwrap().remove(credentials::AGENT_TOKEN_KEY);

        let case = |name, secret: Option<&Secret>, last_applied, same_hash, want| Case {
            name,
            node: node.clone(),
            settings: settings.clone(),
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
            // New mesh keys reach the agent through the mounted files: the pod is not rolled.
            case("Secret from before the mesh", Some(&pre_mesh), recently, true, "add-mesh-keys observe"),
            case("leaf of another CA", Some(&foreign), recently, true, "reissue-mesh-keys observe"),
            // A broken CA stops nothing but the mesh keys of a node that runs already.
            Case {
                ca_ok: false,
                ..case(
                    "unusable CA, node running",
                    Some(&current),
                    recently,
                    true,
                    "keep observe (mesh keys wait for the CA)",
                )
            },
            Case {
                node: agent_node(),
                ca_ok: false,
                ..case(
                    "unusable CA, new node beside a server",
                    None,
                    None,
                    false,
                    "create no-workload (mesh keys wait for the CA)",
                )
            },
            case("Secret lacks the token", Some(&incomplete), recently, true, "error SecretIncomplete"),
            Case {
                settings: ManagedSettings {
                    image_prefixes: vec!["ghcr.io/other/".into()],
                    ..settings.clone()
                },
                ..case("image not allowed", None, None, false, "error NotPermitted")
            },
            Case {
                settings: ManagedSettings { image_prefixes: vec![], ..settings.clone() },
                ..case("no image allowed at all", None, None, false, "error NotPermitted")
            },
            Case {
                settings: ManagedSettings { allow_host_network: false, ..settings.clone() },
                ..case("host network not allowed", None, None, false, "error NotPermitted")
            },
            Case {
                node: agent_node(),
                ..case("beside an existing server", None, None, false, "create no-workload")
            },
            Case {
                node: agent_node(),
                settings: ManagedSettings::default(),
                ..case(
                    "beside a server, nothing to permit",
                    Some(&current),
                    recently,
                    true,
                    "keep no-workload",
                )
            },
        ];
        for c in cases {
            let ca_result = if c.ca_ok { Ok(ca.clone()) } else { Err(WorkloadError::MeshCa("bad".into())) };
            let applied_hash = if c.same_hash { hash.clone() } else { "other".to_owned() };
            let plan = plan_workload(WorkloadInputs {
                node: &c.node,
                valid: c.valid,
                missing_apis: &c.missing,
                ca: &ca_result,
                secret: c.secret.as_ref(),
                last_applied: c.last_applied.map(|age| (applied_hash.as_str(), age)),
                settings: &c.settings,
                now,
            });
            assert_eq!(shape(&plan), c.want, "{}", c.name);
        }
    }

    #[test]
    fn a_kept_secret_keeps_its_credentials_and_mesh_keys_are_guarded_by_its_version() {
        let now = SystemTime::now();
        let settings = managed_settings();
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

    /// office-a beside an existing server (`spec.agent`), as read from an API server.
    fn agent_node() -> AsteriskNode {
        let mut node = managed_node();
        node.spec.managed = None;
        node.spec.agent = Some(crate::crd::AgentEndpoint { endpoint: "https://pbx.example:7443".into() });
        node
    }

    #[test]
    fn the_agent_certificate_names_the_node_and_its_namespace() {
        let now = SystemTime::now();
        let ca = Ok(MeshCa::generate("default", now).unwrap());
        let plan = plan_workload(WorkloadInputs {
            node: &agent_node(),
            valid: true,
            missing_apis: &[],
            ca: &ca,
            secret: None,
            last_applied: None,
            settings: &ManagedSettings::default(),
            now,
        })
        .unwrap();
        let SecretStep::Create(secret) = &plan.secret else { panic!("created") };
        assert_eq!(secret.metadata.labels.as_ref().unwrap()["asterisk.operator.dev/secret"], "node");
        let access = plan.credentials.agent_access("default", "office-a", false);
        assert_eq!(access.tls_domain.as_deref(), Some("office-a.default.asterisk-agent"));
        assert_eq!(access.tls_ca_pem.as_deref(), Some(plan.credentials.tls_cert_pem.as_str()), "pinned");
        let (_, cert) = x509_parser::pem::parse_x509_pem(plan.credentials.tls_cert_pem.as_bytes()).unwrap();
        let cert = cert.parse_x509().unwrap();
        let names: Vec<String> = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, ["DNSName(office-a.default.asterisk-agent)"]);
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
