//! Resources → validated [`Topology`] (pure).
//!
//! * [`resolve`] — the pipeline: each kind validated in turn (`validate`, a leaf), then the
//!   routes over the surviving trunks (`routing`, a leaf);
//! * `error` — what a validation error carries (resource, field, reason, problem, fix).
//!
//! [`resolve`] takes every resource of one namespace (one fleet) and the Secrets they reference,
//! and returns the topology built from the valid ones plus one [`ValidationError`] per problem.
//! An invalid resource is left out with its error (and so is whatever depends on it); everything
//! else still resolves, so one bad manifest never takes the fleet down.

pub mod device;
mod error;
mod routing;
mod validate;

use std::collections::{BTreeMap, BTreeSet};

pub use device::{DeviceFormat, DeviceLine, Mac};
pub use error::{Kind, ObjectRef, Reason, ValidationError};
pub use routing::{Hop, Route};

use crate::crd::{
    AsteriskNode, AuthMethod, BlfSubscription, IaxSettings, NatSettings, NodeProvisioning, NumberingPlan,
    Phone, SecretKeyRef, SipSettings, Trunk, TrunkProtocol,
};
use crate::secret::SecretValue;

/// Secrets of one namespace: Secret name → key → value.
pub type SecretStore = BTreeMap<String, BTreeMap<String, SecretValue>>;

/// Every resource of one fleet (one namespace), as read from the API server or from manifests.
#[derive(Clone, Debug, Default)]
pub struct ResourceSet {
    /// The namespace all these resources live in.
    pub namespace: String,
    /// AsteriskNode resources.
    pub nodes: Vec<AsteriskNode>,
    /// Trunk resources.
    pub trunks: Vec<Trunk>,
    /// Phone resources.
    pub phones: Vec<Phone>,
    /// BlfSubscription resources.
    pub blf_subscriptions: Vec<BlfSubscription>,
    /// The Secrets they may reference.
    pub secrets: SecretStore,
    /// Where those Secrets come from (what a missing one's message tells the user to do).
    pub secret_source: SecretSource,
}

/// Where a fleet's Secrets come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SecretSource {
    /// Manifest files (`render`, `--manifests`): every Secret in them may be referenced.
    #[default]
    Files,
    /// The API server: only Secrets labelled `asterisk.operator.dev/secret=usable` may be; the
    /// controller reads no other, and says nothing about whether one exists.
    Labelled,
}

/// A validated fleet: what the renderer and the mesh work from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// The fleet's namespace.
    pub namespace: String,
    /// Valid nodes by name.
    pub nodes: BTreeMap<String, Node>,
    /// Valid trunks by name.
    pub trunks: BTreeMap<String, TrunkLink>,
    /// Valid phones by name.
    pub phones: BTreeMap<String, PhoneLine>,
    /// For each node, its routes to every other reachable node's numbering plan.
    pub routes: BTreeMap<String, Vec<Route>>,
    /// Remote extensions whose state a node mirrors (for BLF across nodes).
    pub mirrors: BTreeSet<Mirror>,
    /// BLF keys of each phone (phone name → keys in the order the subscriptions list them).
    pub blf_keys: BTreeMap<String, Vec<BlfKey>>,
}

impl Topology {
    /// The phones homed on `node`, by extension.
    pub fn phones_of(&self, node: &str) -> Vec<&PhoneLine> {
        let mut phones: Vec<&PhoneLine> = self.phones.values().filter(|p| p.node == node).collect();
        phones.sort_by(|a, b| a.extension.cmp(&b.extension));
        phones
    }
}

/// A valid AsteriskNode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Resource name; also the node's name in configs and custom device states.
    pub name: String,
    /// The numbers it owns.
    pub numbering: NumberingPlan,
    /// Where other nodes reach it; `None` = dynamic, it registers.
    pub address: Option<String>,
    /// Its agent's gRPC endpoint: `spec.agent.endpoint`, or for a managed node the stable DNS
    /// name of its pod behind the headless Service ([`managed_agent_endpoint`]).
    pub agent_endpoint: Option<String>,
    /// Run by the operator (`spec.managed`): the controller owns its StatefulSet.
    pub managed: bool,
    /// PJSIP transport.
    pub sip: SipSettings,
    /// IAX2 listener.
    pub iax: IaxSettings,
    /// Context phones dial from.
    pub phone_context: String,
    /// Default codecs.
    pub codecs: Vec<String>,
    /// NAT settings.
    pub nat: Option<NatSettings>,
    /// What its desk phones' provisioning files need (`spec.provisioning`, or the defaults).
    pub provisioning: NodeProvisioning,
}

impl Node {
    /// Does this node own `extension`?
    pub fn owns(&self, extension: &str) -> bool {
        owns(&self.numbering, extension)
    }
}

/// Does a numbering plan contain `extension`?
pub fn owns(plan: &NumberingPlan, extension: &str) -> bool {
    extension.len() == usize::from(plan.length)
        && plan.prefixes.iter().any(|p| extension.starts_with(p.as_str()))
}

/// A valid Phone with its credentials resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhoneLine {
    /// Resource name.
    pub name: String,
    /// Home node.
    pub node: String,
    /// Extension (digits); also the PJSIP endpoint, aor and auth user name.
    pub extension: String,
    /// Caller ID name.
    pub display_name: Option<String>,
    /// SIP password.
    pub password: SecretValue,
    /// NAT-friendly endpoint settings.
    pub nat: bool,
    /// Codecs (the node's when the phone names none).
    pub codecs: Vec<String>,
    /// Voicemail box.
    pub voicemail: Option<String>,
    /// Maximum simultaneous registrations.
    pub max_contacts: u8,
    /// Desk phone to provision.
    pub device: Option<DeviceLine>,
}

/// A valid Trunk with its credentials resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrunkLink {
    /// Resource name; also the peer/endpoint name on both ends.
    pub name: String,
    /// IAX2 or PJSIP.
    pub protocol: TrunkProtocol,
    /// The two nodes, sorted by name.
    pub ends: [String; 2],
    /// Lower is tried first.
    pub priority: u8,
    /// How the ends authenticate each other.
    pub credential: TrunkCredential,
    /// IAX2 `trunk=yes`.
    pub trunking: bool,
    /// Networks allowed to use the trunk.
    pub permit: Vec<String>,
    /// Codecs, when the trunk names them; else each end uses its node's.
    pub codecs: Option<Vec<String>>,
    /// Reachability checks.
    pub qualify: bool,
    /// The end that registers to the other (it has no fixed address).
    pub registrant: Option<String>,
}

impl TrunkLink {
    /// The other end, seen from `node`.
    pub fn remote_of(&self, node: &str) -> &str {
        if self.ends[0] == node { &self.ends[1] } else { &self.ends[0] }
    }

    /// Does this trunk end on `node`?
    pub fn touches(&self, node: &str) -> bool {
        self.ends.iter().any(|e| e == node)
    }
}

/// Trunk authentication with its secret material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrunkCredential {
    /// IAX2 MD5 challenge/response with a shared secret.
    Md5(SecretValue),
    /// IAX2 plaintext secret.
    Plaintext(SecretValue),
    /// IAX2 RSA: the trunk's key pair (PEM), used by both ends.
    Rsa {
        /// Private key (`outkey`), PEM.
        private_key: SecretValue,
        /// Public key (`inkeys`), PEM.
        public_key: SecretValue,
    },
    /// SIP digest with a shared password.
    Digest(SecretValue),
}

impl TrunkCredential {
    /// The method this credential is for.
    pub fn method(&self) -> AuthMethod {
        match self {
            Self::Md5(_) => AuthMethod::Md5,
            Self::Plaintext(_) => AuthMethod::Plaintext,
            Self::Rsa { .. } => AuthMethod::Rsa,
            Self::Digest(_) => AuthMethod::Digest,
        }
    }
}

/// A node mirrors the state of an extension that lives on another node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mirror {
    /// The node that shows the state (its phones' BLF keys subscribe there).
    pub watcher: String,
    /// The node that owns the extension.
    pub owner: String,
    /// The extension.
    pub extension: String,
}

/// One BLF key of a phone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlfKey {
    /// Watched extension.
    pub extension: String,
    /// Key label (the extension when none is given).
    pub label: String,
}

/// The result of resolving a fleet: the valid part and every error.
#[derive(Clone, Debug)]
pub struct Resolution {
    /// Topology of the valid resources.
    pub topology: Topology,
    /// Every validation error, sorted.
    pub errors: Vec<ValidationError>,
}

impl Resolution {
    /// Errors about one resource.
    pub fn errors_for<'a>(&'a self, object: &'a ObjectRef) -> impl Iterator<Item = &'a ValidationError> + 'a {
        self.errors.iter().filter(move |e| &e.object == object)
    }
}

/// The Secret a Phone's password lives in: its `secretRef`, or `phone-<name>` / `secret` when
/// absent (generated on first use).
pub fn phone_secret_ref(phone: &Phone) -> SecretKeyRef {
    phone.spec.secret_ref.clone().unwrap_or_else(|| generated_ref("phone", &name_of(&phone.metadata)))
}

/// The Secret a desk phone's provisioning password lives in: `phone-<name>.provisioning` / `secret`,
/// generated and owned by the Phone. Its own name, not a key in `phone-<name>`: a Phone with a
/// `secretRef` has no generated Secret to add a key to, and the controller never writes into
/// a user's Secret. The `.` keeps it apart from every `phone-<name>` (names have no dots).
pub fn provisioning_secret_ref(phone: &Phone) -> SecretKeyRef {
    generated_ref("phone", &format!("{}.provisioning", name_of(&phone.metadata)))
}

/// The Secret a Trunk's credential lives in: its `auth.secretRef`, or `trunk-<name>` / `secret`.
pub fn trunk_secret_ref(trunk: &Trunk) -> SecretKeyRef {
    trunk.spec.auth.secret_ref.clone().unwrap_or_else(|| generated_ref("trunk", &name_of(&trunk.metadata)))
}

/// The agent's gRPC port in a managed node's pod.
pub const MANAGED_GRPC_PORT: u16 = 7443;

/// Name of the StatefulSet, headless Service and Secret of a managed node: `asterisk-<node>`.
pub fn managed_workload_name(node: &str) -> String {
    format!("asterisk-{node}")
}

/// Where the controller reaches a managed node's agent: pod 0 of its StatefulSet under the
/// headless Service, `https://asterisk-<node>-0.asterisk-<node>.<namespace>.svc:7443`. The
/// cluster domain is left to the resolver's search path, so it works with any cluster domain.
pub fn managed_agent_endpoint(namespace: &str, node: &str) -> String {
    let w = managed_workload_name(node);
    format!("https://{w}-0.{w}.{namespace}.svc:{MANAGED_GRPC_PORT}")
}

/// Keys of the RSA key pair in an `rsa` trunk's Secret.
pub const RSA_PRIVATE_KEY: &str = "rsa.key";
/// See [`RSA_PRIVATE_KEY`].
pub const RSA_PUBLIC_KEY: &str = "rsa.pub";

fn generated_ref(kind: &str, name: &str) -> SecretKeyRef {
    SecretKeyRef { name: format!("{kind}-{name}"), key: "secret".to_owned() }
}

pub(crate) fn name_of(meta: &kube::api::ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

/// The effective auth method of a trunk: as given, or md5 (IAX2) / digest (PJSIP).
pub fn auth_method(trunk: &Trunk) -> AuthMethod {
    trunk.spec.auth.method.unwrap_or(match trunk.spec.protocol {
        TrunkProtocol::Iax2 => AuthMethod::Md5,
        TrunkProtocol::Pjsip => AuthMethod::Digest,
    })
}

/// Resolves one fleet. Pure: same input, same output.
///
/// Nodes first (everything else refers to them), then trunks and phones on the valid nodes,
/// reachability over the valid trunks, BLF subscriptions on the valid phones; routes last, over
/// what survived.
pub fn resolve(resources: &ResourceSet) -> Resolution {
    let mut report = validate::Report::new(&resources.namespace);
    let nodes = validate::nodes(&resources.nodes, &mut report);
    let trunks = validate::trunks(&resources.trunks, &nodes, resources, &mut report);
    let phones = validate::phones(&resources.phones, &nodes, resources, &mut report);
    validate::reachability(&routing::components(&nodes, &trunks), &mut report);
    let (mirrors, blf_keys) =
        validate::blf_subscriptions(&resources.blf_subscriptions, &nodes, &phones, &mut report);
    let routes = routing::routes(&nodes, &trunks);
    Resolution {
        topology: Topology {
            namespace: resources.namespace.clone(),
            nodes,
            trunks,
            phones,
            routes,
            mirrors,
            blf_keys,
        },
        errors: report.into_errors(),
    }
}

/// A numbering plan as dialplan-style patterns, e.g. `3XXX`.
pub fn plan_patterns(plan: &NumberingPlan) -> Vec<String> {
    plan.prefixes
        .iter()
        .map(|p| format!("{p}{}", "X".repeat(usize::from(plan.length).saturating_sub(p.len()))))
        .collect()
}

/// Secret keys that phones and trunks reference (or would get by default) but that `resources`
/// lacks, sorted and without duplicates: what to generate before resolving. RSA key pairs are
/// never generated (make them with `astgenkey`).
pub fn missing_secrets(resources: &ResourceSet) -> Vec<SecretKeyRef> {
    let phones = resources.phones.iter().map(phone_secret_ref);
    let devices = resources.phones.iter().filter(|p| p.spec.device.is_some()).map(provisioning_secret_ref);
    let trunks = resources.trunks.iter().filter(|t| auth_method(t) != AuthMethod::Rsa).map(trunk_secret_ref);
    let mut missing: Vec<SecretKeyRef> = phones
        .chain(devices)
        .chain(trunks)
        .filter(|r| resources.secrets.get(&r.name).is_none_or(|keys| !keys.contains_key(&r.key)))
        .collect();
    missing.sort();
    missing.dedup();
    missing
}
