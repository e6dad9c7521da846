//! Managed nodes (`spec.managed`): the Kubernetes objects the controller owns for an
//! AsteriskNode the operator runs itself. Pure: values in, values out; the API-server mode
//! ([`super::kube`]) applies them.
//!
//! For node `N` in namespace `NS` (all named `asterisk-N`, owned by the AsteriskNode so they are
//! garbage-collected with it):
//!
//! * a **Secret** with the AMI secret, the agent's bearer token, and the agent's self-signed TLS
//!   certificate and key — created once, never regenerated — and the node's mesh certificate,
//!   key and CA ([`super::mesh_pki`]: added to a Secret that lacks them, re-issued when the
//!   namespace's mesh CA changed);
//! * a headless **Service** (`clusterIP: None`, not-ready addresses published) for the agent's
//!   gRPC (7443), metrics/probes (9090) and device-state mesh (7444);
//! * a **StatefulSet** of one pod: an init container `bootstrap` writing the base Asterisk
//!   configuration into the shared config volume, the `asterisk` container, and the `agent`
//!   sidecar, all from `spec.managed.image`.
//!
//! The controller reaches the agent at [`crate::topology::managed_agent_endpoint`] over TLS, trusting exactly the
//! certificate in the Secret and sending the token from it
//! ([`super::credentials::NodeCredentials::agent_access`]).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, ExecAction, HTTPGetAction, KeyToPath,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, Secret,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, TCPSocketAction, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use super::conditions::{ConditionUpdate, ManagedReason};
use super::credentials::{AGENT_TOKEN_KEY, AMI_SECRET_KEY, NodeCredentials, TLS_CERT_KEY, TLS_KEY_KEY};
use super::managed_settings::ManagedSettings;
use super::mesh_pki::{MESH_CA_KEY, MESH_CERT_KEY, MESH_KEY_KEY, MeshLeaf};
use super::secret_roles::SecretRole;
use crate::crd::{AsteriskNode, ManagedNode, SipTransport, namespace_of};
use crate::topology::{MANAGED_GRPC_PORT, managed_workload_name};

/// The agent's HTTP port (`/healthz`, `/readyz`, `/metrics`) in a managed pod.
pub const HTTP_PORT: u16 = 9090;
/// The agent's device-state mesh port in a managed pod (`--mesh-listen`): other agents dial it
/// at this node's agent host; every agent of a fleet uses the same mesh port.
pub const MESH_PORT: u16 = 7444;
/// The AMI user of a managed pod (the least-privilege user of docs/agent.md).
pub const AMI_USER: &str = "asterisk-operator";
/// The pod volume holding only the AMI secret ([`AMI_SECRET_KEY`]) of the node's Secret: all
/// the `bootstrap` init container needs of it.
pub const AMI_SECRET_VOLUME: &str = "ami-secret";

/// Where the pod's volumes are mounted.
pub mod paths {
    /// Asterisk's configuration (emptyDir, written by `bootstrap` and the agent).
    pub const CONFIG: &str = "/etc/asterisk";
    /// RSA keys of IAX2 trunks (emptyDir; Asterisk's `astkeydir` is its parent).
    pub const KEYS: &str = "/var/lib/asterisk/keys";
    /// Asterisk's log (emptyDir; the agent reads `messages` for Asterisk's error text).
    pub const LOGS: &str = "/var/log/asterisk";
    /// Asterisk's control socket and pid file (emptyDir).
    pub const RUN: &str = "/run/asterisk";
    /// The agent's own state: the provisioning files it serves, kept across agent restarts
    /// (emptyDir; not under the config folder, which Asterisk reads).
    pub const STATE: &str = "/var/lib/asterisk-operator";
    /// The node's Secret, read-only files.
    pub const SECRET: &str = "/run/secrets/asterisk-operator";
    /// The operator binary in the image.
    pub const OPERATOR_BIN: &str = "/usr/local/bin/asterisk-operator";
    /// Asterisk in the image.
    pub const ASTERISK_BIN: &str = "/usr/sbin/asterisk";
}

/// Building a managed node's objects failed.
#[derive(Debug, thiserror::Error)]
pub enum ManagedError {
    /// The node has no `spec.managed`.
    #[error("AsteriskNode {namespace}/{name}: spec.managed is absent, so the operator runs no pod for it")]
    NotManaged {
        /// Namespace.
        namespace: String,
        /// Node name.
        name: String,
    },
    /// The node was not read from an API server (owner references need its uid).
    #[error(
        "AsteriskNode {namespace}/{name}: metadata.uid is absent; owner references need the node as the API server has it"
    )]
    NoUid {
        /// Namespace.
        namespace: String,
        /// Node name.
        name: String,
    },
}

fn ids(node: &AsteriskNode) -> (String, String) {
    (namespace_of(node.meta()), node.name_any())
}

fn managed_of(node: &AsteriskNode) -> Result<&ManagedNode, ManagedError> {
    node.spec.managed.as_ref().ok_or_else(|| {
        let (namespace, name) = ids(node);
        ManagedError::NotManaged { namespace, name }
    })
}

/// The labels selecting a node's pod (`app.kubernetes.io/name` and `instance`).
pub fn selector_labels(node: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "asterisk".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), node.to_owned()),
    ])
}

/// Every label of a node's objects: the selector labels plus `managed-by` and `component`.
pub fn labels(node: &str, settings: &ManagedSettings) -> BTreeMap<String, String> {
    let mut labels = selector_labels(node);
    labels.insert("app.kubernetes.io/managed-by".into(), settings.managed_by.clone());
    labels.insert("app.kubernetes.io/component".into(), "pbx".into());
    labels
}

/// Metadata of one owned object: name `asterisk-<node>`, the node's namespace, labels, and a
/// controller owner reference to the node (so deleting the node deletes it).
fn owned_meta(node: &AsteriskNode, settings: &ManagedSettings) -> Result<ObjectMeta, ManagedError> {
    let (namespace, name) = ids(node);
    let owner = owner_reference(node)?;
    Ok(ObjectMeta {
        name: Some(managed_workload_name(&name)),
        namespace: Some(namespace),
        labels: Some(labels(&name, settings)),
        owner_references: Some(vec![owner]),
        ..ObjectMeta::default()
    })
}

/// The owner reference every object of a managed node carries: controller, blocking the
/// node's foreground deletion until it is gone.
pub fn owner_reference(node: &AsteriskNode) -> Result<OwnerReference, ManagedError> {
    let mut owner = node.controller_owner_ref(&()).ok_or_else(|| {
        let (namespace, name) = ids(node);
        ManagedError::NoUid { namespace, name }
    })?;
    owner.block_owner_deletion = Some(true);
    Ok(owner)
}

/// A node's Secret (`asterisk-<node>`, any node: managed or beside an existing server), to
/// create when it does not exist: its agent credentials and, when given, its mesh certificate.
/// Its credentials are never updated (their values must stay stable, or the running agent and
/// the controller would disagree); only the mesh keys are ever added or re-issued
/// ([`super::mesh_pki::check_leaf`]). Labelled as a node Secret, which no `secretRef` may name.
pub fn secret(
    node: &AsteriskNode,
    credentials: &NodeCredentials,
    mesh: Option<&MeshLeaf>,
    settings: &ManagedSettings,
) -> Result<Secret, ManagedError> {
    let mut data = credentials.data();
    data.extend(mesh.map(MeshLeaf::data).unwrap_or_default());
    let mut metadata = owned_meta(node, settings)?;
    metadata.labels.get_or_insert_default().extend([SecretRole::Node.label()]);
    Ok(Secret { metadata, type_: Some("Opaque".into()), data: Some(data), ..Secret::default() })
}

fn port(name: &str, port: u16, protocol: &str) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: port.into(),
        target_port: Some(IntOrString::Int(port.into())),
        protocol: Some(protocol.into()),
        ..ServicePort::default()
    }
}

/// The headless Service of a managed node: stable DNS for pod 0, gRPC, metrics, mesh and
/// phone-provisioning (HTTP) ports.
/// Not-ready addresses are published, so the controller can still push a fixed bundle to an
/// agent whose last apply failed (which makes the pod not ready).
pub fn service(node: &AsteriskNode, settings: &ManagedSettings) -> Result<Service, ManagedError> {
    managed_of(node)?;
    Ok(Service {
        metadata: owned_meta(node, settings)?,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(&node.name_any())),
            ports: Some(vec![
                port("grpc", MANAGED_GRPC_PORT, "TCP"),
                port("metrics", HTTP_PORT, "TCP"),
                port("mesh", MESH_PORT, "TCP"),
                port("provisioning", crate::provision::HTTP_PORT, "TCP"),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn container_port(name: &str, port: u16, protocol: &str) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port.into(),
        protocol: Some(protocol.into()),
        ..ContainerPort::default()
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(HTTP_PORT.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// An exec probe running `asterisk -rx <cli>` in the asterisk container: it answers through
/// Asterisk's control socket (in the `run` volume), and exits 1 when Asterisk does not.
fn asterisk_probe(cli: &str, period: i32, failures: i32) -> Probe {
    let command = [paths::ASTERISK_BIN, "-C", &format!("{}/asterisk.conf", paths::CONFIG), "-rx", cli];
    Probe {
        exec: Some(ExecAction { command: Some(command.map(String::from).to_vec()) }),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn secret_file(key: &str) -> String {
    format!("{}/{key}", paths::SECRET)
}

/// No privilege escalation, no capabilities: SIP and IAX2 ports above 1023 need none.
fn restricted() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Capabilities::default() }),
        ..SecurityContext::default()
    }
}

/// Small, fixed resources of the agent sidecar (idle ≈18 MiB; a 1,000-phone apply fits).
fn agent_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), Quantity("20m".into())),
            ("memory".into(), Quantity("32Mi".into())),
        ])),
        limits: Some(BTreeMap::from([("memory".into(), Quantity("256Mi".into()))])),
        ..ResourceRequirements::default()
    }
}

/// The StatefulSet of a managed node: one pod with the `bootstrap` init container, Asterisk,
/// and the agent sidecar (with the device-state mesh on [`MESH_PORT`]). No secret value appears
/// in it: secrets reach the containers only as files of the mounted Secret. Nothing of the mesh
/// certificate is in it either: a re-issued certificate reaches the running agent through the
/// mounted files (it reloads them), so a renewal or a CA rotation never restarts a PBX.
pub fn stateful_set(node: &AsteriskNode, settings: &ManagedSettings) -> Result<StatefulSet, ManagedError> {
    let managed = managed_of(node)?;
    let name = node.name_any();
    let workload = managed_workload_name(&name);
    let image = Some(managed.image.clone());
    let config = mount("config", paths::CONFIG, false);
    let keys = mount("keys", paths::KEYS, false);
    let secret = mount("secret", paths::SECRET, true);

    let bootstrap = Container {
        name: "bootstrap".into(),
        image: image.clone(),
        command: Some(vec![paths::OPERATOR_BIN.into(), "bootstrap".into()]),
        args: Some(
            [
                "--node",
                &name,
                "--config-dir",
                paths::CONFIG,
                "--keys-dir",
                paths::KEYS,
                "--run-dir",
                paths::RUN,
                "--log-dir",
                paths::LOGS,
                "--ami-secret-file",
                &secret_file(AMI_SECRET_KEY),
            ]
            .map(String::from)
            .to_vec(),
        ),
        // Only the AMI secret: the init container never sees the token or the keys.
        volume_mounts: Some(vec![config.clone(), mount(AMI_SECRET_VOLUME, paths::SECRET, true)]),
        security_context: Some(restricted()),
        ..Container::default()
    };

    let sip_protocol = match node.spec.sip.transport {
        SipTransport::Udp => "UDP",
        SipTransport::Tcp => "TCP",
    };
    let asterisk = Container {
        name: "asterisk".into(),
        image: image.clone(),
        // In the foreground (-f), no console, no colour; configuration from the shared volume.
        command: Some(vec![
            paths::ASTERISK_BIN.into(),
            "-f".into(),
            "-n".into(),
            "-C".into(),
            format!("{}/asterisk.conf", paths::CONFIG),
        ]),
        ports: Some(vec![
            container_port("sip", node.spec.sip.port, sip_protocol),
            container_port("iax", node.spec.iax.port, "UDP"),
        ]),
        resources: managed.resources.clone(),
        volume_mounts: Some(vec![
            config.clone(),
            keys.clone(),
            mount("logs", paths::LOGS, false),
            mount("run", paths::RUN, false),
        ]),
        // Asterisk itself, through its control socket: restart it when it stops answering
        // (monit's "restart if failed"), never because the agent sidecar is down or restarting.
        // Up to 60 s to boot first.
        startup_probe: Some(asterisk_probe("core waitfullybooted", 2, 30)),
        liveness_probe: Some(asterisk_probe("core show uptime", 10, 3)),
        security_context: Some(restricted()),
        ..Container::default()
    };

    let agent_args = [
        "--node",
        &name,
        "--ami-addr",
        "127.0.0.1:5038",
        "--ami-user",
        AMI_USER,
        "--ami-secret-file",
        &secret_file(AMI_SECRET_KEY),
        "--token-file",
        &secret_file(AGENT_TOKEN_KEY),
        "--tls-cert",
        &secret_file(TLS_CERT_KEY),
        "--tls-key",
        &secret_file(TLS_KEY_KEY),
        "--config-dir",
        paths::CONFIG,
        "--keys-dir",
        paths::KEYS,
        "--asterisk-log",
        &format!("{}/messages", paths::LOGS),
        "--grpc-listen",
        &format!("0.0.0.0:{MANAGED_GRPC_PORT}"),
        "--http-listen",
        &format!("0.0.0.0:{HTTP_PORT}"),
        "--mesh-listen",
        &format!("0.0.0.0:{MESH_PORT}"),
        "--mesh-ca",
        &secret_file(MESH_CA_KEY),
        "--mesh-cert",
        &secret_file(MESH_CERT_KEY),
        "--mesh-key",
        &secret_file(MESH_KEY_KEY),
        // Desk phones fetch their files over HTTP, which crosses the Service; TFTP does not (it
        // answers from a new port, which NAT drops) and needs port 69: docs/provisioning.md.
        "--provision-http",
        &format!("0.0.0.0:{}", crate::provision::HTTP_PORT),
        "--provisioning-file",
        &format!("{}/provisioning.json", paths::STATE),
    ]
    .map(String::from)
    .to_vec();
    let agent = Container {
        name: "agent".into(),
        image,
        command: Some(vec![paths::OPERATOR_BIN.into(), "agent".into()]),
        args: Some(agent_args),
        ports: Some(vec![
            container_port("grpc", MANAGED_GRPC_PORT, "TCP"),
            container_port("metrics", HTTP_PORT, "TCP"),
            container_port("mesh", MESH_PORT, "TCP"),
            container_port("provisioning", crate::provision::HTTP_PORT, "TCP"),
        ]),
        resources: Some(agent_resources()),
        volume_mounts: Some(vec![
            config,
            keys,
            mount("logs", paths::LOGS, true),
            mount("state", paths::STATE, false),
            secret,
        ]),
        // Ready: AMI logged in and the last apply succeeded. Alive: the agent's HTTP server
        // accepts connections (whether Asterisk answers is the asterisk container's probe).
        readiness_probe: Some(http_probe("/readyz", 5, 1)),
        liveness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(HTTP_PORT.into()),
                ..TCPSocketAction::default()
            }),
            period_seconds: Some(10),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        security_context: Some(restricted()),
        ..Container::default()
    };

    let empty = |name: &str| Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    };
    let host_network = managed.host_network;
    let pod = PodSpec {
        host_network: host_network.then_some(true),
        // With the host's network the pod would otherwise resolve names with the host's DNS.
        dns_policy: Some(if host_network { "ClusterFirstWithHostNet" } else { "ClusterFirst" }.into()),
        // The agent needs no Kubernetes credentials, and no Service environment variables.
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_user: Some(settings.run_as),
            run_as_group: Some(settings.run_as),
            fs_group: Some(settings.run_as),
            run_as_non_root: Some(true),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        init_containers: Some(vec![bootstrap]),
        containers: vec![asterisk, agent],
        volumes: Some(vec![
            empty("config"),
            empty("keys"),
            empty("logs"),
            empty("run"),
            empty("state"),
            Volume {
                name: "secret".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(workload.clone()),
                    // Owner and group (fsGroup) read; nobody else.
                    default_mode: Some(0o440),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: AMI_SECRET_VOLUME.into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(workload.clone()),
                    items: Some(vec![KeyToPath {
                        key: AMI_SECRET_KEY.into(),
                        path: AMI_SECRET_KEY.into(),
                        ..KeyToPath::default()
                    }]),
                    default_mode: Some(0o440),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            },
        ]),
        ..PodSpec::default()
    };
    Ok(StatefulSet {
        metadata: owned_meta(node, settings)?,
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(workload),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&name)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels(&name, settings)), ..ObjectMeta::default() }),
                spec: Some(pod),
            },
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    })
}

/// The node's `Managed` condition from its StatefulSet's status as the API server returned it.
pub fn workload_condition(node: &str, status: Option<&StatefulSetStatus>) -> ConditionUpdate {
    let w = managed_workload_name(node);
    match status {
        Some(s) if s.ready_replicas.unwrap_or(0) >= 1 => {
            ConditionUpdate::ok(ManagedReason::Running, format!("StatefulSet {w}: pod {w}-0 is ready"))
        }
        Some(_) => ConditionUpdate::failed(
            ManagedReason::Starting,
            format!("StatefulSet {w}: pod {w}-0 is not ready yet (kubectl describe pod {w}-0)"),
        ),
        None => ConditionUpdate::failed(
            ManagedReason::Pending,
            format!("StatefulSet {w} applied; the API server reported no status yet"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::mesh_pki::MeshCa;
    use crate::crd::{AsteriskNodeSpec, NumberingPlan};
    use crate::topology::managed_agent_endpoint;
    use std::time::SystemTime;

    fn node(host_network: bool) -> AsteriskNode {
        let spec: AsteriskNodeSpec = serde_json::from_value(serde_json::json!({
            "numbering": {"prefixes": ["3"], "length": 4},
            "managed": {
                "image": "registry.example/asterisk-operator:0.1.0",
                "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
                "hostNetwork": host_network
            },
            "sip": {"port": 5070, "transport": "tcp"},
            "iax": {"port": 4570}
        }))
        .unwrap();
        let mut n = AsteriskNode::new("office-a", spec);
        n.metadata.namespace = Some("pbx".into());
        n.metadata.uid = Some("uid-office-a".into());
        n
    }

    fn settings() -> ManagedSettings {
        ManagedSettings::default()
    }

    fn mesh_ca() -> MeshCa {
        MeshCa::generate("pbx", SystemTime::now()).unwrap()
    }

    fn leaf() -> MeshLeaf {
        mesh_ca().issue("office-a", SystemTime::now()).unwrap()
    }

    fn container<'a>(pod: &'a PodSpec, name: &str) -> &'a Container {
        pod.containers.iter().chain(pod.init_containers.iter().flatten()).find(|c| c.name == name).unwrap()
    }

    fn args(c: &Container) -> Vec<&str> {
        c.args.iter().flatten().map(String::as_str).collect()
    }

    fn flag<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
        let a = c.args.as_ref()?;
        a.iter().position(|x| x == name).and_then(|i| a.get(i + 1)).map(String::as_str)
    }

    fn mounts(c: &Container) -> BTreeMap<&str, (&str, bool)> {
        c.volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.name.as_str(), (m.mount_path.as_str(), m.read_only == Some(true))))
            .collect()
    }

    #[test]
    fn statefulset_runs_bootstrap_asterisk_and_the_agent_from_one_image() {
        let n = node(false);
        let sts = stateful_set(&n, &settings()).unwrap();
        assert_eq!(sts.metadata.name.as_deref(), Some("asterisk-office-a"));
        assert_eq!(sts.metadata.namespace.as_deref(), Some("pbx"));
        let spec = sts.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.service_name.as_deref(), Some("asterisk-office-a"));
        let pod = spec.template.spec.as_ref().unwrap();
        let names: Vec<_> = pod.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["asterisk", "agent"]);
        assert_eq!(pod.init_containers.as_ref().unwrap().len(), 1);
        for c in ["bootstrap", "asterisk", "agent"] {
            assert_eq!(
                container(pod, c).image.as_deref(),
                Some("registry.example/asterisk-operator:0.1.0"),
                "{c} uses the node's image"
            );
            let sc = container(pod, c).security_context.as_ref().unwrap();
            assert_eq!(sc.allow_privilege_escalation, Some(false));
        }

        let bootstrap = container(pod, "bootstrap");
        assert_eq!(bootstrap.command.as_ref().unwrap(), &[paths::OPERATOR_BIN, "bootstrap"]);
        assert_eq!(flag(bootstrap, "--node"), Some("office-a"));
        assert_eq!(flag(bootstrap, "--config-dir"), Some("/etc/asterisk"));
        assert_eq!(flag(bootstrap, "--keys-dir"), Some("/var/lib/asterisk/keys"));
        assert_eq!(flag(bootstrap, "--ami-secret-file"), Some("/run/secrets/asterisk-operator/ami-secret"));
        assert_eq!(mounts(bootstrap)["config"], ("/etc/asterisk", false));
        assert_eq!(mounts(bootstrap)["ami-secret"], ("/run/secrets/asterisk-operator", true));

        let asterisk = container(pod, "asterisk");
        assert_eq!(
            asterisk.command.as_ref().unwrap(),
            &["/usr/sbin/asterisk", "-f", "-n", "-C", "/etc/asterisk/asterisk.conf"]
        );
        let ports: Vec<_> = asterisk
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.as_deref().unwrap(), p.container_port, p.protocol.as_deref().unwrap()))
            .collect();
        assert_eq!(ports, [("sip", 5070, "TCP"), ("iax", 4570, "UDP")]);
        assert_eq!(asterisk.resources, n.spec.managed.as_ref().unwrap().resources, "spec.managed.resources");
        let m = mounts(asterisk);
        assert_eq!(m["config"], ("/etc/asterisk", false));
        assert_eq!(m["keys"], ("/var/lib/asterisk/keys", false));
        assert_eq!(m["logs"], ("/var/log/asterisk", false));
        assert!(!m.contains_key("secret"), "Asterisk reads its AMI secret from manager.conf, not the Secret");
        let startup = asterisk.startup_probe.as_ref().unwrap();
        assert!(startup.period_seconds.unwrap() * startup.failure_threshold.unwrap() >= 60);

        let agent = container(pod, "agent");
        assert_eq!(agent.command.as_ref().unwrap(), &[paths::OPERATOR_BIN, "agent"]);
        assert_eq!(flag(agent, "--node"), Some("office-a"));
        assert_eq!(flag(agent, "--ami-addr"), Some("127.0.0.1:5038"));
        assert_eq!(flag(agent, "--ami-user"), Some(AMI_USER));
        assert_eq!(flag(agent, "--config-dir"), Some("/etc/asterisk"));
        assert_eq!(flag(agent, "--keys-dir"), Some("/var/lib/asterisk/keys"));
        assert_eq!(flag(agent, "--ami-secret-file"), Some("/run/secrets/asterisk-operator/ami-secret"));
        assert_eq!(flag(agent, "--token-file"), Some("/run/secrets/asterisk-operator/agent-token"));
        assert_eq!(flag(agent, "--tls-cert"), Some("/run/secrets/asterisk-operator/tls.crt"));
        assert_eq!(flag(agent, "--tls-key"), Some("/run/secrets/asterisk-operator/tls.key"));
        assert_eq!(flag(agent, "--asterisk-log"), Some("/var/log/asterisk/messages"));
        assert_eq!(flag(agent, "--grpc-listen"), Some("0.0.0.0:7443"));
        assert_eq!(flag(agent, "--http-listen"), Some("0.0.0.0:9090"));
        // The device-state mesh: its own port, certificate files from the mounted Secret.
        assert_eq!(flag(agent, "--mesh-listen"), Some("0.0.0.0:7444"));
        assert_eq!(flag(agent, "--mesh-ca"), Some("/run/secrets/asterisk-operator/mesh-ca.crt"));
        assert_eq!(flag(agent, "--mesh-cert"), Some("/run/secrets/asterisk-operator/mesh.crt"));
        assert_eq!(flag(agent, "--mesh-key"), Some("/run/secrets/asterisk-operator/mesh.key"));
        let ports: Vec<_> = agent
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.as_deref().unwrap(), p.container_port, p.protocol.as_deref().unwrap()))
            .collect();
        assert_eq!(
            ports,
            [
                ("grpc", 7443, "TCP"),
                ("metrics", 9090, "TCP"),
                ("mesh", 7444, "TCP"),
                ("provisioning", 6970, "TCP")
            ]
        );
        let a = args(agent);
        let after = |flag: &str| a.iter().position(|x| *x == flag).map(|i| a[i + 1]);
        assert_eq!(
            after("--provision-http"),
            Some("0.0.0.0:6970"),
            "phones fetch over HTTP through the Service"
        );
        assert_eq!(
            after("--provisioning-file"),
            Some("/var/lib/asterisk-operator/provisioning.json"),
            "kept outside the config folder"
        );
        assert!(!args(agent).contains(&"--insecure"), "the managed agent serves TLS with a token");
        let ready = agent.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!((ready.path.as_deref(), &ready.port), (Some("/readyz"), &IntOrString::Int(9090)));
        assert!(agent.liveness_probe.as_ref().unwrap().tcp_socket.is_some());
        let m = mounts(agent);
        assert_eq!(m["config"], ("/etc/asterisk", false));
        assert_eq!(m["keys"], ("/var/lib/asterisk/keys", false));
        assert_eq!(m["logs"], ("/var/log/asterisk", true));
        assert_eq!(m["secret"], ("/run/secrets/asterisk-operator", true));

        let volumes: BTreeMap<_, _> = pod.volumes.iter().flatten().map(|v| (v.name.as_str(), v)).collect();
        for shared in ["config", "keys", "logs", "run"] {
            assert!(volumes[shared].empty_dir.is_some(), "{shared} is an emptyDir");
        }
        let secret = volumes["secret"].secret.as_ref().unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("asterisk-office-a"));
        assert_eq!(secret.default_mode, Some(0o440));
        assert_eq!(pod.automount_service_account_token, Some(false), "the agent has no cluster credentials");
        assert_eq!(pod.security_context.as_ref().unwrap().run_as_non_root, Some(true));
        assert_eq!(pod.host_network, None);
        assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirst"));
    }

    /// An agent crash loop must never restart a healthy Asterisk: the asterisk container's
    /// probes ask Asterisk through its control socket (nothing of the agent's), and the socket's
    /// directory and the config they name are mounted in that container.
    #[test]
    fn asterisk_probes_ask_asterisk_itself_not_the_agent() {
        let sts = stateful_set(&node(false), &settings()).unwrap();
        let pod = sts.spec.unwrap().template.spec.unwrap();
        let asterisk = container(&pod, "asterisk");
        let cli = |probe: Option<&Probe>| {
            let p = probe.expect("probe");
            assert!(p.http_get.is_none() && p.tcp_socket.is_none() && p.grpc.is_none(), "{p:?}");
            assert_eq!(p.timeout_seconds, Some(5), "a hung Asterisk fails the probe: {p:?}");
            p.exec.as_ref().unwrap().command.clone().unwrap()
        };
        let rx =
            |c: &str| ["/usr/sbin/asterisk", "-C", "/etc/asterisk/asterisk.conf", "-rx", c].map(String::from);
        assert_eq!(cli(asterisk.startup_probe.as_ref()), rx("core waitfullybooted"));
        assert_eq!(cli(asterisk.liveness_probe.as_ref()), rx("core show uptime"));
        assert!(asterisk.readiness_probe.is_none(), "readiness is the agent's (an apply failed)");
        let m = mounts(asterisk);
        assert_eq!((m["run"], m["config"]), (("/run/asterisk", false), ("/etc/asterisk", false)));
        // Nothing of the asterisk container's health depends on the agent's ports.
        let agent = container(&pod, "agent");
        let agent_ports: Vec<_> = agent.ports.iter().flatten().map(|p| p.container_port).collect();
        let text = serde_json::to_string(&(&asterisk.startup_probe, &asterisk.liveness_probe)).unwrap();
        for port in agent_ports {
            assert!(!text.contains(&port.to_string()), "the asterisk probes use agent port {port}: {text}");
        }
    }

    /// The init container runs before anything else and needs only the AMI secret (for
    /// manager.conf): its volume projects that one key of the Secret.
    #[test]
    fn bootstrap_sees_only_the_ami_secret() {
        let sts = stateful_set(&node(false), &settings()).unwrap();
        let pod = sts.spec.unwrap().template.spec.unwrap();
        let bootstrap = container(&pod, "bootstrap");
        let m = mounts(bootstrap);
        assert_eq!(m.keys().copied().collect::<Vec<_>>(), ["ami-secret", "config"]);
        let volume = pod.volumes.iter().flatten().find(|v| v.name == AMI_SECRET_VOLUME).unwrap();
        let source = volume.secret.as_ref().unwrap();
        assert_eq!(source.secret_name.as_deref(), Some("asterisk-office-a"));
        let items: Vec<_> =
            source.items.iter().flatten().map(|i| (i.key.as_str(), i.path.as_str())).collect();
        assert_eq!(items, [(AMI_SECRET_KEY, AMI_SECRET_KEY)], "one key, at the file name the flag names");
        assert_eq!(source.default_mode, Some(0o440));
        assert_eq!(
            flag(bootstrap, "--ami-secret-file"),
            Some(format!("{}/{}", m["ami-secret"].0, AMI_SECRET_KEY).as_str())
        );
        // The agent keeps the whole Secret, and the asterisk container none of it.
        assert_eq!(mounts(container(&pod, "agent"))["secret"], ("/run/secrets/asterisk-operator", true));
        assert!(!mounts(container(&pod, "asterisk")).keys().any(|k| k.contains("secret")));
    }

    #[test]
    fn a_reissued_mesh_certificate_leaves_the_pod_template_alone() {
        // The agent reloads its mesh certificate files: a renewal must not restart the PBX.
        let n = node(false);
        let template = || serde_json::to_value(stateful_set(&n, &settings()).unwrap()).unwrap();
        let (first, second) = (leaf(), leaf());
        let text = template().to_string();
        for l in [&first, &second] {
            for line in l.cert_pem.lines().filter(|l| !l.starts_with("-----")) {
                assert!(!text.contains(line), "no part of a mesh certificate is in the pod template");
            }
        }
        assert_eq!(template(), template());
    }

    #[test]
    fn host_network_switches_the_dns_policy() {
        let sts = stateful_set(&node(true), &settings()).unwrap();
        let pod = sts.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.host_network, Some(true));
        assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    }

    #[test]
    fn every_object_is_labelled_and_owned_by_the_node() {
        let n = node(false);
        let creds = NodeCredentials::generate("pbx", "office-a", true).unwrap();
        let sts = stateful_set(&n, &settings()).unwrap();
        let svc = service(&n, &settings()).unwrap();
        let sec = secret(&n, &creds, Some(&leaf()), &settings()).unwrap();
        for meta in [&sts.metadata, &svc.metadata, &sec.metadata] {
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
                ("AsteriskNode", "office-a", "uid-office-a")
            );
            assert_eq!(owner.api_version, "asterisk.operator.dev/v1alpha1");
            assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));
            let labels = meta.labels.as_ref().unwrap();
            assert_eq!(labels["app.kubernetes.io/name"], "asterisk");
            assert_eq!(labels["app.kubernetes.io/instance"], "office-a");
            assert_eq!(labels["app.kubernetes.io/managed-by"], "asterisk-operator");
            assert_eq!(labels["app.kubernetes.io/component"], "pbx");
        }
        // The pod template carries the labels; the selector picks this node's pod only.
        let spec = sts.spec.unwrap();
        let template = spec.template.metadata.unwrap().labels.unwrap();
        for (k, v) in spec.selector.match_labels.unwrap() {
            assert_eq!(template[&k], v);
        }
        // Without a uid (not read from an API server) there is no owner reference to make.
        let mut orphan = n.clone();
        orphan.metadata.uid = None;
        let e = stateful_set(&orphan, &settings()).unwrap_err().to_string();
        assert!(e.starts_with("AsteriskNode pbx/office-a: metadata.uid"), "{e}");
    }

    #[test]
    fn service_is_headless_with_grpc_metrics_mesh_and_provisioning() {
        let svc = service(&node(false), &settings()).unwrap();
        assert_eq!(svc.metadata.name.as_deref(), Some("asterisk-office-a"));
        let spec = svc.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        assert_eq!(spec.selector.unwrap(), selector_labels("office-a"));
        let ports: Vec<_> =
            spec.ports.unwrap().into_iter().map(|p| (p.name.unwrap(), p.port, p.protocol.unwrap())).collect();
        assert_eq!(
            ports,
            [
                ("grpc".into(), 7443, "TCP".into()),
                ("metrics".into(), 9090, "TCP".into()),
                ("mesh".into(), 7444, "TCP".into()),
                ("provisioning".into(), 6970, "TCP".into())
            ]
        );
        assert_eq!(
            managed_agent_endpoint("pbx", "office-a"),
            "https://asterisk-office-a-0.asterisk-office-a.pbx.svc:7443"
        );
    }

    #[test]
    fn no_secret_value_appears_in_the_statefulset_or_service() {
        let n = node(true);
        let creds = NodeCredentials::generate("pbx", "office-a", true).unwrap();
        let ca = mesh_ca();
        let mesh = ca.issue("office-a", SystemTime::now()).unwrap();
        let sts = serde_json::to_value(stateful_set(&n, &settings()).unwrap()).unwrap();
        let text = format!("{sts}{}", serde_json::to_string(&service(&n, &settings()).unwrap()).unwrap());
        // PEM values are checked line by line (JSON would escape their line breaks).
        let lines = |pem: &str| {
            pem.lines().filter(|l| l.len() >= 16 && !l.starts_with("-----")).map(String::from).collect()
        };
        for (what, values) in [
            ("AMI secret", vec![creds.ami_secret.expose().to_owned()]),
            ("agent token", vec![creds.agent_token.expose().to_owned()]),
            ("TLS key", lines(creds.tls_key_pem.expose())),
            ("mesh key", lines(mesh.key_pem.expose())),
            ("mesh CA key", lines(ca.key_pem().expose())),
            ("mesh certificate", lines(&mesh.cert_pem)),
        ] {
            for value in values {
                assert!(!text.contains(&value), "the {what} leaked into the workload");
            }
        }
        let containers = sts["spec"]["template"]["spec"]["containers"].as_array().unwrap();
        for c in
            containers.iter().chain(sts["spec"]["template"]["spec"]["initContainers"].as_array().unwrap())
        {
            assert!(c.get("env").is_none() && c.get("envFrom").is_none(), "no environment: {c}");
        }
    }

    #[test]
    fn credentials_round_trip_through_the_secret_and_are_strong() {
        let n = node(false);
        let creds = NodeCredentials::generate("pbx", "office-a", true).unwrap();
        assert_eq!(creds.ami_secret.expose().len(), 32);
        assert_ne!(creds.ami_secret, creds.agent_token);
        assert!(creds.tls_cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(creds.tls_key_pem.expose().contains("PRIVATE KEY"));
        let mesh = leaf();
        let sec = secret(&n, &creds, Some(&mesh), &settings()).unwrap();
        assert_eq!(MeshLeaf::from_secret(&sec), Some(mesh), "the mesh keys are in the Secret");
        let back = NodeCredentials::from_secret(&sec).unwrap();
        assert_eq!(back.ami_secret, creds.ami_secret);
        assert_eq!(back.agent_token, creds.agent_token);
        assert_eq!(back.tls_cert_pem, creds.tls_cert_pem);
        assert_eq!(back.tls_key_pem, creds.tls_key_pem);
        assert_ne!(
            NodeCredentials::generate("pbx", "office-a", true).unwrap().agent_token,
            creds.agent_token,
            "fresh each time"
        );

        let access = back.agent_access("pbx", "office-a", true);
        assert_eq!(access.token.as_ref(), Some(&creds.agent_token));
        assert_eq!(access.tls_ca_pem.as_deref(), Some(creds.tls_cert_pem.as_str()));
        assert_eq!(access.tls_domain.as_deref(), Some("asterisk-office-a-0.asterisk-office-a.pbx.svc"));

        let mut partial = sec.clone();
        partial.data.as_mut().unwrap().remove(AGENT_TOKEN_KEY);
        let e = NodeCredentials::from_secret(&partial).unwrap_err().to_string();
        assert!(e.starts_with("Secret pbx/asterisk-office-a: data.agent-token is missing"), "{e}");
    }

    #[test]
    fn a_node_without_spec_managed_has_no_workload() {
        let mut n = node(false);
        n.spec.managed = None;
        n.spec.numbering = NumberingPlan { prefixes: vec!["3".into()], length: 4 };
        let e = stateful_set(&n, &settings()).unwrap_err().to_string();
        assert_eq!(
            e,
            "AsteriskNode pbx/office-a: spec.managed is absent, so the operator runs no pod for it"
        );
        assert!(service(&n, &settings()).is_err());
    }

    #[test]
    fn managed_condition_follows_the_statefulset() {
        let ready = StatefulSetStatus { replicas: 1, ready_replicas: Some(1), ..Default::default() };
        let starting = StatefulSetStatus { replicas: 1, ready_replicas: Some(0), ..Default::default() };
        let c = workload_condition("office-a", Some(&ready));
        assert!(c.status && c.reason == "Running", "{c:?}");
        let c = workload_condition("office-a", Some(&starting));
        assert!(!c.status && c.reason == "Starting" && c.message.contains("asterisk-office-a-0"), "{c:?}");
        assert_eq!(workload_condition("office-a", None).reason, "Pending");
        assert_eq!(crate::controller::conditions::needs_cluster().type_, "Managed");
    }
}
