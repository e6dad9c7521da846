//! A node's agent credentials (pure): the bearer token the agent demands, the agent's own
//! self-signed TLS certificate the controller pins, and the AMI secret of its Asterisk user —
//! one set per node, bound to its namespace and name, kept in the node's Secret
//! `asterisk-<node>` (or the secrets file in `--manifests` mode). Nothing is shared between
//! nodes: a credential reaches one agent only, and only over TLS.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::{Resource, ResourceExt};

use crate::agent::client::AgentAccess;
use crate::crd::namespace_of;
use crate::secret::SecretValue;
use crate::topology::managed_workload_name;

/// Key of the AMI secret in the node's Secret.
pub const AMI_SECRET_KEY: &str = "ami-secret";
/// Key of the agent's bearer token in the node's Secret.
pub const AGENT_TOKEN_KEY: &str = "agent-token";
/// Key of the agent's TLS certificate (PEM, self-signed; the controller pins it).
pub const TLS_CERT_KEY: &str = "tls.crt";
/// Key of the agent's TLS private key (PEM, PKCS#8).
pub const TLS_KEY_KEY: &str = "tls.key";

/// A node's credentials could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The node's Secret lacks a key (someone created or edited it by hand).
    #[error(
        "Secret {namespace}/{secret}: data.{key} is missing; add it, or delete the Secret so the controller generates a complete one (the agent then needs the new credentials)"
    )]
    SecretKeyMissing {
        /// Namespace.
        namespace: String,
        /// Secret name.
        secret: String,
        /// The missing key.
        key: &'static str,
    },
    /// The agent's certificate could not be generated.
    #[error("AsteriskNode {namespace}/{name}: generating the agent's TLS certificate: {source}")]
    Certificate {
        /// Namespace.
        namespace: String,
        /// Node name.
        name: String,
        /// What rcgen said.
        source: rcgen::Error,
    },
}

/// What a node's Secret holds for its agent.
#[derive(Clone, Debug)]
pub struct NodeCredentials {
    /// The AMI secret of the agent's Asterisk user (managed pods use it; beside an existing
    /// server, use it in manager.conf or keep your own).
    pub ami_secret: SecretValue,
    /// The bearer token the agent requires from the controller.
    pub agent_token: SecretValue,
    /// The agent's self-signed TLS certificate (PEM): public, pinned by the controller.
    pub tls_cert_pem: String,
    /// Its private key (PEM).
    pub tls_key_pem: SecretValue,
}

impl NodeCredentials {
    /// Fresh credentials for node `node` of `namespace`: random AMI secret and token (≈190 bits
    /// each), and a self-signed ECDSA P-256 certificate naming the node's identity
    /// ([`agent_identity`]) and, for a managed node, its pod's DNS names.
    pub fn generate(namespace: &str, node: &str, managed: bool) -> Result<Self, CredentialsError> {
        let err = |source| CredentialsError::Certificate {
            namespace: namespace.to_owned(),
            name: node.to_owned(),
            source,
        };
        let mut names = vec![agent_identity(namespace, node)];
        if managed {
            names.extend(pod_dns_names(namespace, node));
        }
        let key = rcgen::KeyPair::generate().map_err(err)?;
        let mut params = rcgen::CertificateParams::new(names).map_err(err)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, managed_workload_name(node));
        let cert = params.self_signed(&key).map_err(err)?;
        Ok(Self {
            ami_secret: SecretValue::generate(),
            agent_token: SecretValue::generate(),
            tls_cert_pem: cert.pem(),
            tls_key_pem: SecretValue::new(key.serialize_pem()),
        })
    }

    /// Reads them back from the node's Secret (`data`, or `stringData` of one not yet stored).
    pub fn from_secret(secret: &Secret) -> Result<Self, CredentialsError> {
        Self::from_lookup(&namespace_of(secret.meta()), &secret.name_any(), |key| {
            let data = secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|b| String::from_utf8_lossy(&b.0).into_owned());
            data.or_else(|| secret.string_data.as_ref().and_then(|d| d.get(key)).cloned())
        })
    }

    /// Reads them back from Secret `name` of `namespace` as the secrets file keeps it.
    pub fn from_values(
        namespace: &str,
        name: &str,
        values: &BTreeMap<String, SecretValue>,
    ) -> Result<Self, CredentialsError> {
        Self::from_lookup(namespace, name, |key| values.get(key).map(|v| v.expose().to_owned()))
    }

    fn from_lookup(
        namespace: &str,
        secret: &str,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, CredentialsError> {
        let get = |key: &'static str| {
            get(key).filter(|v| !v.trim().is_empty()).ok_or_else(|| CredentialsError::SecretKeyMissing {
                namespace: namespace.to_owned(),
                secret: secret.to_owned(),
                key,
            })
        };
        Ok(Self {
            ami_secret: SecretValue::new(get(AMI_SECRET_KEY)?.trim_end()),
            agent_token: SecretValue::new(get(AGENT_TOKEN_KEY)?.trim_end()),
            tls_cert_pem: get(TLS_CERT_KEY)?,
            tls_key_pem: SecretValue::new(get(TLS_KEY_KEY)?),
        })
    }

    /// The four keys and their values.
    pub fn values(&self) -> BTreeMap<String, SecretValue> {
        BTreeMap::from([
            (AMI_SECRET_KEY.to_owned(), self.ami_secret.clone()),
            (AGENT_TOKEN_KEY.to_owned(), self.agent_token.clone()),
            (TLS_CERT_KEY.to_owned(), SecretValue::new(self.tls_cert_pem.clone())),
            (TLS_KEY_KEY.to_owned(), self.tls_key_pem.clone()),
        ])
    }

    /// The four keys as Secret data.
    pub fn data(&self) -> BTreeMap<String, ByteString> {
        self.values().into_iter().map(|(k, v)| (k, ByteString(v.expose().as_bytes().to_vec()))).collect()
    }

    /// How the controller reaches this node's agent: TLS trusting only the node's own
    /// certificate, checked against the name the controller expects of it (the pod's DNS name
    /// for a managed node, else [`agent_identity`]), and the node's token.
    pub fn agent_access(&self, namespace: &str, node: &str, managed: bool) -> AgentAccess {
        let name = if managed { pod_host(namespace, node) } else { agent_identity(namespace, node) };
        AgentAccess {
            token: Some(self.agent_token.clone()),
            tls_ca: None,
            tls_ca_pem: Some(self.tls_cert_pem.clone()),
            tls_cert: None,
            tls_key: None,
            tls_domain: Some(name),
        }
    }
}

/// The name in a node's agent certificate that binds it to its namespace and node:
/// `<node>.<namespace>.asterisk-agent`. The controller checks it whatever host the endpoint
/// names, so the certificate does not depend on how the agent is reached.
pub fn agent_identity(namespace: &str, node: &str) -> String {
    format!("{node}.{namespace}.asterisk-agent")
}

/// Host name of a managed node's pod 0 under its headless Service (what the controller
/// connects to).
fn pod_host(namespace: &str, node: &str) -> String {
    let w = managed_workload_name(node);
    format!("{w}-0.{w}.{namespace}.svc")
}

/// A managed agent's DNS names: pod 0 and the Service, short and fully qualified with the
/// default cluster domain.
fn pod_dns_names(namespace: &str, node: &str) -> Vec<String> {
    let w = managed_workload_name(node);
    let pod = pod_host(namespace, node);
    let svc = format!("{w}.{namespace}.svc");
    vec![pod.clone(), format!("{pod}.cluster.local"), svc.clone(), format!("{svc}.cluster.local")]
}
