//! The controller against the Kubernetes API: reflectors on the four resources (and Secrets)
//! feed the same fleet reconcile as `--manifests` mode; statuses go back through the status
//! subresource with server-side apply; missing secrets are generated as Secrets owned by the
//! resource that needs them.
//!
//! A server without the core API (such as a bare apiextensions-apiserver) has no Secrets: the
//! controller says so once and then keeps secrets in `--secrets-file`, or, without one, reports
//! every resource that needs a secret as `MissingSecret` naming the cause.
//!
//! Nodes with `spec.managed` get their Secret (created once), headless Service and StatefulSet
//! ([`super::managed`]) by server-side apply before the bundles are pushed. Without the APIs
//! those need, such a node reports `Managed=False`, `WorkloadAPIUnavailable`, naming what is
//! missing; the rest of the fleet reconciles as usual.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use super::conditions::{ConditionUpdate, types};
use super::events::{Notice, notices};
use super::fleet::{AgentAccess, FleetReconciler, ManagedTarget, ReconcileReport};
use super::leader::{Leadership, LeaseLock};
use super::managed::{self, ManagedSettings, NodeCredentials};
use super::mesh_pki::{self, LeafCheck, MeshCa, MeshLeaf};
use super::metrics::ControllerMetrics;
use super::status::ResourceStatus;
use crate::crd::{AsteriskNode, BlfSubscription, Phone, Trunk};
use crate::offline::{self, LoadedFleet};
use crate::render;
use crate::secret::SecretValue;
use crate::topology::{self, Kind, ObjectRef, ResourceSet, phone_secret_ref, trunk_secret_ref};

/// The field manager of every status the controller writes.
pub const FIELD_MANAGER: &str = "asterisk-operator";

/// Finalizer on Phones, Trunks and BlfSubscriptions: their deletion waits until the nodes they
/// lived on applied a bundle without them (or those nodes are gone).
pub const FINALIZER: &str = "asterisk.operator.dev/cleanup";

/// Settings of the API-server mode.
#[derive(Clone, Debug)]
pub struct KubeOptions {
    /// How the agents are reached.
    pub agents: AgentAccess,
    /// Where to keep generated secrets when the server has no Secrets API.
    pub secrets_file: Option<PathBuf>,
    /// Reconcile at least this often (retries, agent status refresh).
    pub resync: Duration,
    /// Wait this long after a change for more changes before reconciling.
    pub debounce: Duration,
    /// Leader election: only the holder of this Lease reconciles.
    pub lease: Option<LeaseSettings>,
    /// What shapes the workloads of managed nodes.
    pub managed: ManagedSettings,
}

/// The leader-election Lease.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// Namespace of the Lease (the controller's own).
    pub namespace: String,
    /// Lease name.
    pub name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a lease holds without renewal.
    pub duration: Duration,
}

/// The API-server mode failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The API server could not be reached at start.
    #[error("talking to the API server: {0}")]
    Api(#[from] kube::Error),
}

/// The stores the reflectors keep current.
#[derive(Clone)]
struct Stores {
    nodes: Store<AsteriskNode>,
    trunks: Store<Trunk>,
    phones: Store<Phone>,
    blfs: Store<BlfSubscription>,
    secrets: Option<Store<Secret>>,
}

/// Starts a reflector for `K`; `changed` is notified on every event.
fn reflect<K>(api: Api<K>, changed: Arc<Notify>) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    tokio::spawn(async move {
        stream
            .for_each(|event| {
                if let Err(e) = &event {
                    tracing::warn!(error = %e, kind = std::any::type_name::<K>(), "watch failed; retrying");
                }
                changed.notify_one();
                async {}
            })
            .await;
    });
    store
}

/// Does the server serve Secrets? (A bare apiextensions-apiserver does not.)
async fn secrets_served(client: &Client) -> bool {
    let api: Api<Secret> = Api::all(client.clone());
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => true,
        Err(kube::Error::Api(status)) if status.code == 404 => false,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list Secrets; treating the Secrets API as unavailable");
            false
        }
    }
}

/// Runs until `shutdown` resolves.
pub async fn run(
    client: Client,
    opts: KubeOptions,
    metrics: &ControllerMetrics,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), KubeError> {
    client.apiserver_version().await?;
    let changed = Arc::new(Notify::new());
    let secrets = if secrets_served(&client).await {
        Some(reflect(Api::<Secret>::all(client.clone()), changed.clone()))
    } else {
        match &opts.secrets_file {
            Some(f) => {
                tracing::warn!(file = %f.display(), "the API server has no Secrets API: keeping secrets in the secrets file")
            }
            None => tracing::error!(
                "the API server has no Secrets API and no --secrets-file was given: resources that need a secret stay invalid (MissingSecret)"
            ),
        }
        None
    };
    let stores = Stores {
        nodes: reflect(Api::all(client.clone()), changed.clone()),
        trunks: reflect(Api::all(client.clone()), changed.clone()),
        phones: reflect(Api::all(client.clone()), changed.clone()),
        blfs: reflect(Api::all(client.clone()), changed.clone()),
        secrets,
    };
    let _ = tokio::join!(
        stores.nodes.wait_until_ready(),
        stores.trunks.wait_until_ready(),
        stores.phones.wait_until_ready(),
        stores.blfs.wait_until_ready()
    );
    if let Some(s) = &stores.secrets {
        let _ = s.wait_until_ready().await;
    }
    tracing::info!("controller started: watching AsteriskNodes, Trunks, Phones, BlfSubscriptions");
    let mut fleet = FleetReconciler::new(opts.agents.clone());
    let mut events = Events {
        recorder: Recorder::new(
            client.clone(),
            Reporter { controller: FIELD_MANAGER.into(), instance: std::env::var("HOSTNAME").ok() },
        ),
        enabled: true,
    };
    let mut lock = opts
        .lease
        .as_ref()
        .map(|l| LeaseLock::new(client.clone(), &l.namespace, &l.name, &l.identity, l.duration));
    // Renew well inside the lease duration.
    let tick = opts.lease.as_ref().map_or(opts.resync, |l| opts.resync.min(l.duration / 3));
    let mut leading = false;
    let mut workloads = Workloads::default();
    tokio::pin!(shutdown);
    loop {
        let leadership = match &mut lock {
            Some(lock) => lock.acquire_or_renew().await,
            None => Leadership::Unsupported,
        };
        if let Leadership::Follower(holder) = &leadership {
            if leading {
                tracing::warn!(%holder, "lost the leader Lease; standing by");
            }
            leading = false;
            metrics.went_round(false);
        } else {
            if !leading {
                // What another leader did meanwhile is unknown: push everything again (an agent
                // answers an unchanged bundle cheaply).
                fleet = FleetReconciler::new(opts.agents.clone());
            }
            leading = true;
            let started = std::time::Instant::now();
            let report = reconcile(&client, &stores, &opts, &mut fleet, &mut events, &mut workloads).await;
            metrics.observe(&report, fleet.statuses(), started.elapsed());
        }
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = changed.notified() => tokio::time::sleep(opts.debounce).await,
            _ = tokio::time::sleep(tick) => {}
        }
    }
}

fn live<K: Resource<DynamicType = ()> + Clone>(store: &Store<K>) -> impl Iterator<Item = K> + '_ {
    store.state().into_iter().filter(|r| r.meta().deletion_timestamp.is_none()).map(|r| (*r).clone())
}

/// One pass: every namespace resolved, rendered, pushed, and its statuses written.
async fn reconcile(
    client: &Client,
    stores: &Stores,
    opts: &KubeOptions,
    fleet: &mut FleetReconciler,
    events: &mut Events,
    workloads: &mut Workloads,
) -> ReconcileReport {
    // Group by namespace (a fleet is one namespace).
    let mut grouped: BTreeMap<String, ResourceSet> = BTreeMap::new();
    for r in live(&stores.nodes) {
        entry(&mut grouped, &r).nodes.push(r);
    }
    for r in live(&stores.trunks) {
        entry(&mut grouped, &r).trunks.push(r);
    }
    for r in live(&stores.phones) {
        entry(&mut grouped, &r).phones.push(r);
    }
    for r in live(&stores.blfs) {
        entry(&mut grouped, &r).blf_subscriptions.push(r);
    }

    let mut fleets = BTreeMap::new();
    for (namespace, mut set) in grouped {
        fill_secrets(client, stores, opts, &mut set).await;
        let resolution = topology::resolve(&set);
        let bundles = render::render_all(&resolution.topology);
        fleets.insert(namespace, LoadedFleet { resources: set, resolution, bundles });
    }
    let targets = workloads.reconcile(client, stores.secrets.as_ref(), &fleets, opts).await;
    fleet.set_managed(targets);
    let before = fleet.statuses().clone();
    let report = fleet.reconcile(&fleets).await;
    for e in &report.errors {
        tracing::warn!(error = %e, "invalid resource");
    }
    for notice in notices(&before, fleet.statuses()) {
        if let Some(fleet_) = fleets.get(&notice.object.namespace) {
            events.publish(fleet_, &notice).await;
        }
    }
    for fleet_ in fleets.values() {
        write_statuses(client, fleet_, fleet.statuses()).await;
    }
    finalize(client, stores, &fleets, fleet).await;
    report
}

/// Adds the finalizer to live Phones, Trunks and BlfSubscriptions, and removes it from deleted
/// ones once every node they lived on applied a bundle without them, or is gone.
async fn finalize(
    client: &Client,
    stores: &Stores,
    fleets: &BTreeMap<String, LoadedFleet>,
    fleet: &FleetReconciler,
) {
    // The nodes that must drop a resource before its deletion completes.
    let done = |ns: &str, nodes: Vec<String>| {
        nodes.iter().all(|node| match fleets.get(ns).and_then(|f| f.bundles.get(node)) {
            None => true, // the node is gone or invalid: nothing is left to clean up there
            Some(bundle) => fleet.applied(ns, node, &bundle.hash),
        })
    };
    for p in stores.phones.state() {
        let ns = p.namespace().unwrap_or_else(|| "default".into());
        let release = done(&ns, vec![p.spec.node.clone()]);
        sync_finalizer(client, &*p, release).await;
    }
    for t in stores.trunks.state() {
        let ns = t.namespace().unwrap_or_else(|| "default".into());
        let release = done(&ns, t.spec.ends.clone());
        sync_finalizer(client, &*t, release).await;
    }
    for b in stores.blfs.state() {
        let ns = b.namespace().unwrap_or_else(|| "default".into());
        let watcher_node = match (&b.spec.watcher.phone, &b.spec.watcher.node) {
            (Some(phone), _) => stores
                .phones
                .state()
                .iter()
                .find(|p| p.name_any() == *phone && p.namespace().as_deref() == Some(&ns))
                .map(|p| p.spec.node.clone()),
            (None, Some(node)) => Some(node.clone()),
            _ => None,
        };
        let release = done(&ns, watcher_node.into_iter().collect());
        sync_finalizer(client, &*b, release).await;
    }
}

/// Live object without the finalizer: add it. Deleted object with it and `release`: remove it.
async fn sync_finalizer<K>(client: &Client, resource: &K, release: bool)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let meta = resource.meta();
    let finalizers = meta.finalizers.clone().unwrap_or_default();
    let has = finalizers.iter().any(|f| f == FINALIZER);
    let deleting = meta.deletion_timestamp.is_some();
    let next: Vec<String> = match (deleting, has) {
        (false, false) => finalizers.iter().cloned().chain([FINALIZER.to_owned()]).collect(),
        (true, true) if release => finalizers.iter().filter(|f| *f != FINALIZER).cloned().collect(),
        _ => return,
    };
    let ns = resource.namespace().unwrap_or_else(|| "default".into());
    let name = resource.name_any();
    // The resourceVersion makes this a compare-and-swap: a concurrent change to the list fails
    // the patch and the next reconcile tries again with fresh data.
    let patch = serde_json::json!({
        "metadata": {"finalizers": next, "resourceVersion": meta.resource_version}
    });
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => tracing::debug!(kind = %K::kind(&()), %name, deleting, "finalizer updated"),
        Err(e) => tracing::warn!(kind = %K::kind(&()), %name, error = %e, "could not update the finalizer"),
    }
}

fn entry<'a, K: Resource>(grouped: &'a mut BTreeMap<String, ResourceSet>, r: &K) -> &'a mut ResourceSet {
    let ns = r.meta().namespace.clone().unwrap_or_else(|| "default".into());
    grouped.entry(ns.clone()).or_insert_with(|| ResourceSet { namespace: ns, ..ResourceSet::default() })
}

/// Puts the namespace's Secrets into `set`, and generates the missing ones: as Secrets owned by
/// the resource that needs them when the server has Secrets, else in the secrets file.
async fn fill_secrets(client: &Client, stores: &Stores, opts: &KubeOptions, set: &mut ResourceSet) {
    match &stores.secrets {
        Some(store) => {
            for s in store.state().iter().filter(|s| s.namespace().as_deref() == Some(&set.namespace)) {
                let keys = set.secrets.entry(s.name_any()).or_default();
                for (k, v) in s.data.clone().unwrap_or_default() {
                    keys.insert(k, SecretValue::new(String::from_utf8_lossy(&v.0).into_owned()));
                }
            }
            for (reference, owner) in missing_with_owners(set) {
                let value = SecretValue::generate();
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(reference.name.clone()),
                        namespace: Some(set.namespace.clone()),
                        owner_references: Some(vec![owner]),
                        labels: Some(BTreeMap::from([(
                            "app.kubernetes.io/managed-by".into(),
                            FIELD_MANAGER.into(),
                        )])),
                        ..ObjectMeta::default()
                    },
                    string_data: Some(BTreeMap::from([(reference.key.clone(), value.expose().to_owned())])),
                    ..Secret::default()
                };
                let api: Api<Secret> = Api::namespaced(client.clone(), &set.namespace);
                match api.create(&PostParams::default(), &secret).await {
                    Ok(_) => {
                        tracing::info!(secret = %reference.name, namespace = %set.namespace, "generated a secret");
                        set.secrets.entry(reference.name).or_default().insert(reference.key, value);
                    }
                    Err(e) => {
                        tracing::warn!(secret = %reference.name, error = %e, "could not create a generated secret")
                    }
                }
            }
        }
        None => {
            let Some(file) = &opts.secrets_file else { return };
            let mut kept = crate::manifest::Manifests::default();
            if file.is_file()
                && let Err(e) = kept.add_path(file)
            {
                tracing::error!(error = %e, "cannot read the secrets file");
                return;
            }
            if let Some(ns) = kept.namespaces.remove(&set.namespace) {
                set.secrets.extend(ns.secrets);
            }
            let mut generated: BTreeMap<String, BTreeMap<String, BTreeMap<String, SecretValue>>> =
                BTreeMap::new();
            for reference in topology::missing_secrets(set) {
                let value = SecretValue::generate();
                set.secrets
                    .entry(reference.name.clone())
                    .or_default()
                    .insert(reference.key.clone(), value.clone());
                generated
                    .entry(set.namespace.clone())
                    .or_default()
                    .entry(reference.name)
                    .or_default()
                    .insert(reference.key, value);
            }
            if let Err(e) = offline::keep_generated_secrets(file, &generated) {
                tracing::error!(error = %e, "cannot keep generated secrets");
            }
        }
    }
}

/// Missing secrets with the resource that should own each generated Secret.
fn missing_with_owners(set: &ResourceSet) -> Vec<(crate::crd::SecretKeyRef, OwnerReference)> {
    let missing = topology::missing_secrets(set);
    let mut out = Vec::new();
    let mut owner_of = |reference: crate::crd::SecretKeyRef, owner: Option<OwnerReference>| {
        if let Some(owner) = owner.filter(|_| missing.contains(&reference))
            && !out.iter().any(|(r, _): &(crate::crd::SecretKeyRef, _)| r.name == reference.name)
        {
            out.push((reference, owner));
        }
    };
    for p in &set.phones {
        owner_of(phone_secret_ref(p), p.controller_owner_ref(&()));
    }
    for t in &set.trunks {
        owner_of(trunk_secret_ref(t), t.controller_owner_ref(&()));
    }
    out
}

/// Writes each resource's status whose content differs from what the server has.
async fn write_statuses(
    client: &Client,
    fleet: &LoadedFleet,
    statuses: &BTreeMap<ObjectRef, ResourceStatus>,
) {
    for r in &fleet.resources.nodes {
        patch_if_changed(client, r, Kind::AsteriskNode, statuses, r.status.as_ref()).await;
    }
    for r in &fleet.resources.trunks {
        patch_if_changed(client, r, Kind::Trunk, statuses, r.status.as_ref()).await;
    }
    for r in &fleet.resources.phones {
        patch_if_changed(client, r, Kind::Phone, statuses, r.status.as_ref()).await;
    }
    for r in &fleet.resources.blf_subscriptions {
        patch_if_changed(client, r, Kind::BlfSubscription, statuses, r.status.as_ref()).await;
    }
}

async fn patch_if_changed<K, S>(
    client: &Client,
    resource: &K,
    kind: Kind,
    statuses: &BTreeMap<ObjectRef, ResourceStatus>,
    current: Option<&S>,
) where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    S: Serialize,
{
    let ns = resource.namespace().unwrap_or_else(|| "default".into());
    let name = resource.name_any();
    let Some(status) = statuses.get(&ObjectRef::new(kind, &ns, &name)) else { return };
    let ours = serde_json::to_value(status).unwrap_or_default();
    if current.map(|c| serde_json::to_value(c).unwrap_or_default()) == Some(ours.clone()) {
        return;
    }
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": ours,
    });
    if let Err(e) =
        api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await
    {
        tracing::warn!(kind = %kind, namespace = %ns, name = %name, error = %e, "could not write status");
    }
}

/// APIs a managed node needs, as named in its condition.
const SECRETS_API: &str = "v1 Secrets";
const SERVICES_API: &str = "v1 Services";
const STATEFULSETS_API: &str = "apps/v1 StatefulSets";

/// Re-apply an unchanged workload this often anyway, undoing hand edits of owned fields.
const REAPPLY: Duration = Duration::from_secs(600);
/// While workload APIs are missing, ask the server again this often.
const REDISCOVER: Duration = Duration::from_secs(60);

/// The managed nodes' workloads across passes: which APIs the server serves, and what was
/// last applied for each node (so an unchanged workload costs one GET, not two patches).
#[derive(Debug, Default)]
struct Workloads {
    /// APIs found missing by the last discovery (empty: all served); `None`: not asked yet.
    missing: Option<Vec<String>>,
    discovered: Option<std::time::Instant>,
    /// (namespace, node) → hash of the Service and StatefulSet applied, and when.
    applied: BTreeMap<(String, String), (String, std::time::Instant)>,
}

impl Workloads {
    /// The APIs managed nodes need that the server does not serve (asked again after
    /// [`REDISCOVER`] while some are missing); says so once in the log when that changes.
    async fn missing_apis(&mut self, client: &Client, secrets_watched: bool) -> Vec<String> {
        let due = match (&self.missing, self.discovered) {
            (Some(m), _) if m.is_empty() => false,
            (Some(_), Some(at)) => at.elapsed() >= REDISCOVER,
            _ => true,
        };
        if due {
            let found = discover(client).await;
            let before = self.missing.replace(found.clone());
            self.discovered = Some(std::time::Instant::now());
            if before.as_ref() != Some(&found) {
                match found.is_empty() {
                    true => tracing::info!("the API server serves what managed nodes need"),
                    false => tracing::warn!(
                        missing = %found.join(", "),
                        "the API server does not serve what managed nodes need: they get Managed=False (WorkloadAPIUnavailable); the other nodes reconcile as usual"
                    ),
                }
            }
        }
        let mut missing = self.missing.clone().unwrap_or_default();
        if !secrets_watched && !missing.iter().any(|m| m.starts_with(SECRETS_API)) {
            // Served now, but not when the controller started (no Secret reflector).
            missing.push(format!("{SECRETS_API} (not served when the controller started; restart it)"));
        }
        missing
    }

    /// A request answered 404 for `api`: it is gone; discover again next pass.
    fn lost(&mut self, api: &str) {
        tracing::warn!(api, "the API server answered 404 for a workload API managed nodes need");
        self.missing = Some(vec![api.to_owned()]);
        self.discovered = None;
    }

    /// Applies the workload of every managed node of `fleets` and says, per node, how the
    /// controller can reach its agent (or why not).
    async fn reconcile(
        &mut self,
        client: &Client,
        secrets: Option<&Store<Secret>>,
        fleets: &BTreeMap<String, LoadedFleet>,
        opts: &KubeOptions,
    ) -> BTreeMap<(String, String), ManagedTarget> {
        let mut targets = BTreeMap::new();
        let managed_nodes: Vec<(&String, &AsteriskNode, bool)> = fleets
            .iter()
            .flat_map(|(ns, f)| {
                f.resources
                    .nodes
                    .iter()
                    .filter(|n| n.spec.managed.is_some())
                    .map(move |n| (ns, n, f.resolution.topology.nodes.contains_key(&n.name_any())))
            })
            .collect();
        self.applied
            .retain(|key, _| managed_nodes.iter().any(|(ns, n, _)| key.0 == **ns && key.1 == n.name_any()));
        if managed_nodes.is_empty() {
            return targets;
        }
        let missing = self.missing_apis(client, secrets.is_some()).await;
        // The namespace's mesh CA, read (or generated) once per pass for all its nodes.
        let mut cas: BTreeMap<String, Result<MeshCa, ManagedTarget>> = BTreeMap::new();
        for (ns, node, valid) in managed_nodes {
            let key = (ns.clone(), node.name_any());
            let target = match (valid, secrets) {
                (false, _) => unavailable(
                    "Invalid",
                    "no StatefulSet is run for an invalid node: see the Valid condition".into(),
                ),
                (true, Some(secrets)) if missing.is_empty() => {
                    let ca = match cas.get(ns) {
                        Some(ca) => ca.clone(),
                        None => {
                            let ca = self.mesh_ca(client, secrets, ns, &opts.managed).await;
                            cas.insert(ns.clone(), ca.clone());
                            ca
                        }
                    };
                    match ca {
                        Ok(ca) => self.apply(client, secrets, node, &ca, &opts.agents, &opts.managed).await,
                        Err(target) => target,
                    }
                }
                _ => unavailable("WorkloadAPIUnavailable", unavailable_message(&missing)),
            };
            targets.insert(key, target);
        }
        targets
    }

    /// The namespace's mesh CA: the Secret `asterisk-mesh-ca` when it exists (the user's, or
    /// one generated earlier), else a new one, created once with no owner reference (it is the
    /// whole fleet's). A CA Secret that is unusable is every managed node's `MeshCAInvalid`.
    async fn mesh_ca(
        &mut self,
        client: &Client,
        secrets: &Store<Secret>,
        ns: &str,
        settings: &ManagedSettings,
    ) -> Result<MeshCa, ManagedTarget> {
        let now = SystemTime::now();
        let invalid = |e: mesh_pki::MeshPkiError| unavailable("MeshCAInvalid", e.to_string());
        if let Some(secret) = cached(secrets, ns, mesh_pki::CA_SECRET) {
            return MeshCa::from_secret(&secret, now).map_err(invalid);
        }
        let ca = MeshCa::generate(ns, now).map_err(invalid)?;
        self.create(client, &mesh_pki::ca_secret(ns, &ca, settings), "the namespace's mesh CA").await?;
        Ok(ca)
    }

    /// One node: its Secret (created when absent; only its mesh keys are ever added or
    /// re-issued), then Service and StatefulSet by server-side apply; the StatefulSet's status
    /// gives the condition.
    async fn apply(
        &mut self,
        client: &Client,
        secrets: &Store<Secret>,
        node: &AsteriskNode,
        ca: &MeshCa,
        agents: &AgentAccess,
        settings: &ManagedSettings,
    ) -> ManagedTarget {
        let ns = node.namespace().unwrap_or_else(|| "default".into());
        let name = node.name_any();
        let workload = crate::topology::managed_workload_name(&name);
        let (credentials, leaf) = match cached(secrets, &ns, &workload) {
            Some(secret) => {
                let credentials = match NodeCredentials::from_secret(&secret) {
                    Ok(c) => c,
                    Err(e) => return unavailable("SecretIncomplete", e.to_string()),
                };
                let leaf = match mesh_pki::check_leaf(&secret, ca, &name, SystemTime::now()) {
                    LeafCheck::Current(leaf) => leaf,
                    check => match self.write_mesh_keys(client, &secret, ca, &name, check).await {
                        Ok(leaf) => leaf,
                        Err(target) => return target,
                    },
                };
                (credentials, leaf)
            }
            None => match self.create_secret(client, node, ca, settings).await {
                Ok(made) => made,
                Err(target) => return target,
            },
        };
        let built = managed::service(node, settings)
            .and_then(|svc| Ok((svc, managed::stateful_set(node, settings, &leaf)?)));
        let (service, stateful_set) = match built {
            Ok(objects) => objects,
            Err(e) => return unavailable("Invalid", e.to_string()),
        };
        let hash = {
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            h.update(serde_json::to_vec(&service).unwrap_or_default());
            h.update(serde_json::to_vec(&stateful_set).unwrap_or_default());
            hex::encode(h.finalize())
        };
        let key = (ns.clone(), name.clone());
        let fresh = self.applied.get(&key).is_some_and(|(h, at)| *h == hash && at.elapsed() < REAPPLY);
        let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let result = if fresh {
            sts_api.get_status(&workload).await
        } else {
            let svc_api: Api<Service> = Api::namespaced(client.clone(), &ns);
            match svc_api.patch(&workload, &params, &Patch::Apply(&service)).await {
                Ok(_) => sts_api.patch(&workload, &params, &Patch::Apply(&stateful_set)).await,
                Err(e) if not_served(&e) => {
                    self.lost(SERVICES_API);
                    return unavailable(
                        "WorkloadAPIUnavailable",
                        unavailable_message(&[SERVICES_API.into()]),
                    );
                }
                Err(e) => Err(e),
            }
        };
        match result {
            Ok(sts) => {
                if !fresh {
                    tracing::info!(node = %name, namespace = %ns, statefulset = %workload, "applied the managed node's Service and StatefulSet");
                    self.applied.insert(key, (hash, std::time::Instant::now()));
                }
                ManagedTarget {
                    condition: managed::workload_condition(&name, sts.status.as_ref()),
                    access: Some(credentials.agent_access(&ns, &name, agents)),
                }
            }
            Err(kube::Error::Api(s)) if s.code == 404 && fresh && !not_served_status(&s) => {
                // Deleted behind our back: apply it again next pass.
                self.applied.remove(&key);
                unavailable("Pending", format!("StatefulSet {ns}/{workload} is gone; re-creating it"))
            }
            Err(e) if not_served(&e) => {
                self.lost(STATEFULSETS_API);
                unavailable("WorkloadAPIUnavailable", unavailable_message(&[STATEFULSETS_API.into()]))
            }
            Err(e) => {
                self.applied.remove(&key);
                tracing::warn!(node = %name, namespace = %ns, error = %e, "could not apply the managed node's workload");
                unavailable("ApplyFailed", format!("StatefulSet/Service {ns}/{workload}: {e}"))
            }
        }
    }

    /// Generates the node's credentials and mesh certificate and creates its Secret with them.
    async fn create_secret(
        &mut self,
        client: &Client,
        node: &AsteriskNode,
        ca: &MeshCa,
        settings: &ManagedSettings,
    ) -> Result<(NodeCredentials, MeshLeaf), ManagedTarget> {
        let leaf = ca
            .issue(&node.name_any(), SystemTime::now())
            .map_err(|e| unavailable("Invalid", e.to_string()))?;
        let made = NodeCredentials::generate(node)
            .and_then(|c| Ok((managed::secret(node, &c, &leaf, settings)?, c)));
        let (secret, credentials) = made.map_err(|e| unavailable("Invalid", e.to_string()))?;
        self.create(client, &secret, "the managed node's Secret").await?;
        Ok((credentials, leaf))
    }

    /// Adds the mesh keys to a node's Secret that lacks them, or replaces a leaf `check` found
    /// wrong; the Secret's other keys are left alone. A merge patch guarded by the Secret's
    /// resourceVersion: a Secret changed since it was read is left for the next pass.
    async fn write_mesh_keys(
        &mut self,
        client: &Client,
        secret: &Secret,
        ca: &MeshCa,
        node: &str,
        check: LeafCheck,
    ) -> Result<MeshLeaf, ManagedTarget> {
        let ns = secret.namespace().unwrap_or_else(|| "default".into());
        let name = secret.name_any();
        let leaf = ca.issue(node, SystemTime::now()).map_err(|e| unavailable("Invalid", e.to_string()))?;
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": secret.resource_version()},
            "data": leaf.data(),
        });
        let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
        match api.patch(&name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => {
                match check {
                    LeafCheck::Reissue(why) => {
                        tracing::warn!(secret = %name, namespace = %ns, reason = %why, "re-issued the managed node's mesh certificate")
                    }
                    _ => {
                        tracing::info!(secret = %name, namespace = %ns, "added a mesh certificate to the managed node's Secret")
                    }
                }
                Ok(leaf)
            }
            Err(kube::Error::Api(s)) if s.code == 409 || (s.code == 404 && !not_served_status(&s)) => {
                Err(unavailable(
                    "Pending",
                    format!(
                        "Secret {ns}/{name} changed since the controller read it; adding its mesh keys next pass"
                    ),
                ))
            }
            Err(e) if not_served(&e) => {
                self.lost(SECRETS_API);
                Err(unavailable("WorkloadAPIUnavailable", unavailable_message(&[SECRETS_API.into()])))
            }
            Err(e) => {
                tracing::warn!(secret = %name, namespace = %ns, error = %e, "could not add the mesh keys to the managed node's Secret");
                Err(unavailable("ApplyFailed", format!("updating the mesh keys of Secret {ns}/{name}: {e}")))
            }
        }
    }

    /// Creates `secret` (never replaces one: a Secret that exists already is left alone).
    async fn create(&mut self, client: &Client, secret: &Secret, what: &str) -> Result<(), ManagedTarget> {
        let ns = secret.namespace().unwrap_or_else(|| "default".into());
        let name = secret.name_any();
        let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
        match api.create(&params, secret).await {
            Ok(_) => {
                tracing::info!(secret = %name, namespace = %ns, "generated {what}");
                Ok(())
            }
            // Created by an earlier pass the Secret store has not caught up with: never replace it.
            Err(kube::Error::Api(s)) if s.code == 409 => Err(unavailable(
                "Pending",
                format!("Secret {ns}/{name} exists but is not in the controller's cache yet; retrying"),
            )),
            Err(e) if not_served(&e) => {
                self.lost(SECRETS_API);
                Err(unavailable("WorkloadAPIUnavailable", unavailable_message(&[SECRETS_API.into()])))
            }
            Err(e) => {
                tracing::warn!(secret = %name, namespace = %ns, error = %e, "could not create {what}");
                Err(unavailable("ApplyFailed", format!("creating Secret {ns}/{name}: {e}")))
            }
        }
    }
}

/// The Secret `name` of namespace `ns` in the controller's cache.
fn cached(secrets: &Store<Secret>, ns: &str, name: &str) -> Option<Secret> {
    secrets
        .state()
        .into_iter()
        .find(|s| s.namespace().as_deref() == Some(ns) && s.name_any() == name)
        .map(|s| (*s).clone())
}

/// Which of the APIs managed nodes need the server does not serve.
async fn discover(client: &Client) -> Vec<String> {
    let mut missing = Vec::new();
    let core = client.list_core_api_resources("v1").await;
    let apps = client.list_api_group_resources("apps/v1").await;
    for (result, wanted) in [
        (core, vec![("secrets", SECRETS_API), ("services", SERVICES_API)]),
        (apps, vec![("statefulsets", STATEFULSETS_API)]),
    ] {
        match result {
            Ok(list) => missing.extend(
                wanted
                    .into_iter()
                    .filter(|(r, _)| !list.resources.iter().any(|x| x.name == *r))
                    .map(|(_, api)| api.to_owned()),
            ),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                missing.extend(wanted.into_iter().map(|(_, api)| api.to_owned()))
            }
            Err(e) => {
                missing.extend(wanted.into_iter().map(|(_, api)| format!("{api} (discovery failed: {e})")))
            }
        }
    }
    missing
}

/// A 404 for the resource type itself ("the server could not find the requested resource"), not
/// for one object or its namespace.
fn not_served(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if not_served_status(s))
}

fn not_served_status(s: &kube::core::Status) -> bool {
    s.code == 404 && s.message.contains("could not find the requested resource")
}

fn unavailable(reason: &str, message: String) -> ManagedTarget {
    ManagedTarget { condition: ConditionUpdate::failed(types::MANAGED, reason, message), access: None }
}

fn unavailable_message(missing: &[String]) -> String {
    format!(
        "the API server does not serve {}, which a managed node needs (its Secret, headless Service and StatefulSet); run the controller against a full Kubernetes API server, or run Asterisk and `asterisk-operator agent` yourself and set spec.agent.endpoint instead of spec.managed",
        missing.join(", ")
    )
}

/// Publishes Events; turns itself off (saying so once) on a server without the Events API.
struct Events {
    recorder: Recorder,
    enabled: bool,
}

impl Events {
    async fn publish(&mut self, fleet: &LoadedFleet, notice: &Notice) {
        if !self.enabled {
            return;
        }
        let r = &fleet.resources;
        let name = |m: &ObjectMeta| m.name.as_deref() == Some(notice.object.name.as_str());
        let reference = match notice.object.kind {
            Kind::AsteriskNode => r.nodes.iter().find(|x| name(x.meta())).map(|x| x.object_ref(&())),
            Kind::Trunk => r.trunks.iter().find(|x| name(x.meta())).map(|x| x.object_ref(&())),
            Kind::Phone => r.phones.iter().find(|x| name(x.meta())).map(|x| x.object_ref(&())),
            Kind::BlfSubscription => {
                r.blf_subscriptions.iter().find(|x| name(x.meta())).map(|x| x.object_ref(&()))
            }
        };
        let Some(reference) = reference else { return };
        let event = Event {
            type_: if notice.warning { EventType::Warning } else { EventType::Normal },
            reason: notice.reason.clone(),
            note: Some(notice.note.chars().take(1024).collect()),
            action: notice.action.into(),
            secondary: None,
        };
        match self.recorder.publish(&event, &reference).await {
            Ok(()) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {
                tracing::warn!("the API server has no Events API (events.k8s.io): not publishing Events");
                self.enabled = false;
            }
            Err(e) => tracing::warn!(error = %e, object = %notice.object, "could not publish an Event"),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The API side the real test server cannot serve (Secrets, Events), and the exact status
    //! patch, against kube-rs's mocked API service.

    use http::{Method, Request, Response};
    use kube::client::Body;
    use serde_json::Value;

    use super::*;
    use crate::crd::PhoneSpec;

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    fn mock() -> (Client, Handle) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (Client::new(service, "default"), handle)
    }

    /// Answers the next request with `reply` (or its own body) and returns (method, uri, body).
    async fn answer(handle: &mut Handle, reply: Option<Value>) -> (Method, String, Value) {
        respond(handle, 200, |body| reply.unwrap_or_else(|| body.clone())).await
    }

    /// Answers the next request with HTTP `code` and what `reply` makes of its body; returns
    /// (method, uri, body).
    async fn respond(
        handle: &mut Handle,
        code: u16,
        reply: impl FnOnce(&Value) -> Value,
    ) -> (Method, String, Value) {
        let (request, send) = handle.next_request().await.expect("the client sent a request");
        let (method, uri) = (request.method().clone(), request.uri().to_string());
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let reply = reply(&body);
        send.send_response(
            Response::builder().status(code).body(Body::from(serde_json::to_vec(&reply).unwrap())).unwrap(),
        );
        (method, uri, body)
    }

    fn options() -> KubeOptions {
        KubeOptions {
            agents: AgentAccess::default(),
            secrets_file: None,
            resync: Duration::from_secs(1),
            debounce: Duration::from_millis(1),
            lease: None,
            managed: ManagedSettings::default(),
        }
    }

    fn phone(name: &str) -> Phone {
        let mut p = Phone::new(name, PhoneSpec::new("office-a", "3001"));
        p.metadata.namespace = Some("default".into());
        p.metadata.uid = Some("uid-1".into());
        p.metadata.generation = Some(3);
        p
    }

    #[tokio::test]
    async fn a_missing_secret_is_generated_and_owned_by_its_phone() {
        let (client, mut handle) = mock();
        let (store, _writer) = reflector::store::<Secret>();
        let stores = Stores {
            nodes: reflector::store().0,
            trunks: reflector::store().0,
            phones: reflector::store().0,
            blfs: reflector::store().0,
            secrets: Some(store),
        };
        let opts = options();
        let mut set = ResourceSet {
            namespace: "default".into(),
            phones: vec![phone("reception")],
            ..Default::default()
        };
        let server = tokio::spawn(async move { answer(&mut handle, None).await });
        fill_secrets(&client, &stores, &opts, &mut set).await;
        let (method, uri, body) = server.await.unwrap();
        assert_eq!(method, Method::POST);
        assert!(uri.starts_with("/api/v1/namespaces/default/secrets"), "{uri}");
        assert_eq!(body["metadata"]["name"], "phone-reception");
        let owner = &body["metadata"]["ownerReferences"][0];
        assert_eq!(
            (owner["kind"].as_str(), owner["name"].as_str(), owner["uid"].as_str()),
            (Some("Phone"), Some("reception"), Some("uid-1"))
        );
        assert_eq!(owner["controller"], true);
        let value = body["stringData"]["secret"].as_str().unwrap();
        assert_eq!(value.len(), 32);
        assert_eq!(
            set.secrets["phone-reception"]["secret"].expose(),
            value,
            "used at once, not only next time"
        );
    }

    #[tokio::test]
    async fn status_is_written_by_server_side_apply_only_when_it_changed() {
        let (client, mut handle) = mock();
        let p = phone("reception");
        let now =
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let mut status = crate::crd::PhoneStatus::default();
        crate::controller::conditions::set_condition(
            &mut status.conditions,
            crate::controller::conditions::ConditionUpdate::ok("Ready", "Ready", "valid and in force"),
            Some(3),
            &now,
        );
        let object = ObjectRef::new(Kind::Phone, "default", "reception");
        let statuses = BTreeMap::from([(object, ResourceStatus::Phone(status.clone()))]);
        let server = tokio::spawn(async move {
            answer(&mut handle, Some(serde_json::to_value(phone("reception")).unwrap())).await
        });
        patch_if_changed(&client, &p, Kind::Phone, &statuses, None::<&crate::crd::PhoneStatus>).await;
        let (method, uri, body) = server.await.unwrap();
        assert_eq!(method, Method::PATCH);
        assert!(
            uri.starts_with(
                "/apis/asterisk.operator.dev/v1alpha1/namespaces/default/phones/reception/status?"
            ),
            "{uri}"
        );
        assert!(uri.contains("fieldManager=asterisk-operator") && uri.contains("force=true"), "{uri}");
        assert_eq!(body["kind"], "Phone");
        let c = &body["status"]["conditions"][0];
        assert_eq!(
            (c["type"].as_str(), c["status"].as_str(), c["observedGeneration"].as_i64()),
            (Some("Ready"), Some("True"), Some(3))
        );

        // Same status as the server has: no request at all (the mock would hang otherwise).
        let (client, _handle) = mock();
        let done = tokio::time::timeout(
            Duration::from_secs(1),
            patch_if_changed(&client, &p, Kind::Phone, &statuses, Some(&status)),
        )
        .await;
        assert!(done.is_ok(), "an unchanged status is not written");
    }

    #[tokio::test]
    async fn notices_become_events_on_the_resource() {
        let (client, mut handle) = mock();
        let mut events = Events { recorder: Recorder::new(client, FIELD_MANAGER.into()), enabled: true };
        let fleet = LoadedFleet {
            resources: ResourceSet {
                namespace: "default".into(),
                phones: vec![phone("stray")],
                ..Default::default()
            },
            resolution: topology::resolve(&ResourceSet::default()),
            bundles: BTreeMap::new(),
        };
        let notice = Notice {
            object: ObjectRef::new(Kind::Phone, "default", "stray"),
            warning: true,
            reason: "OutsideNumbering".into(),
            note: "spec.extension: 4999 is outside node office-a's numbering plan (3XXX); pick an extension of that plan".into(),
            action: "Validate",
        };
        let server = tokio::spawn(async move { answer(&mut handle, None).await });
        events.publish(&fleet, &notice).await;
        let (method, uri, body) = server.await.unwrap();
        assert_eq!(method, Method::POST);
        assert!(uri.starts_with("/apis/events.k8s.io/v1/namespaces/default/events"), "{uri}");
        assert_eq!(body["type"], "Warning");
        assert_eq!(body["reason"], "OutsideNumbering");
        assert_eq!(body["action"], "Validate");
        assert_eq!(body["regarding"]["kind"], "Phone");
        assert_eq!(body["regarding"]["name"], "stray");
        assert!(body["note"].as_str().unwrap().starts_with("spec.extension:"));
        assert_eq!(body["reportingController"], FIELD_MANAGER);
    }

    #[tokio::test]
    async fn finalizer_is_added_to_live_resources_and_removed_once_released() {
        // Live, without the finalizer: it is added, guarded by the resourceVersion.
        let (client, mut handle) = mock();
        let mut p = phone("reception");
        p.metadata.resource_version = Some("41".into());
        p.metadata.finalizers = Some(vec!["example.com/other".into()]);
        let reply = serde_json::to_value(&p).unwrap();
        let server = tokio::spawn(async move { answer(&mut handle, Some(reply)).await });
        sync_finalizer(&client, &p, false).await;
        let (method, uri, body) = server.await.unwrap();
        assert_eq!(method, Method::PATCH);
        assert!(
            uri.starts_with("/apis/asterisk.operator.dev/v1alpha1/namespaces/default/phones/reception?"),
            "{uri}"
        );
        assert_eq!(body["metadata"]["finalizers"], serde_json::json!(["example.com/other", FINALIZER]));
        assert_eq!(body["metadata"]["resourceVersion"], "41");

        // Being deleted, not released yet (its node has not applied a bundle without it): no call.
        let (client, _handle) = mock();
        let mut deleting = p.clone();
        deleting.metadata.finalizers = Some(vec!["example.com/other".into(), FINALIZER.into()]);
        deleting.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        let waited =
            tokio::time::timeout(Duration::from_secs(1), sync_finalizer(&client, &deleting, false)).await;
        assert!(waited.is_ok(), "no request while the node still has the phone");

        // Released: only our finalizer goes, the other controller's stays.
        let (client, mut handle) = mock();
        let reply = serde_json::to_value(&deleting).unwrap();
        let server = tokio::spawn(async move { answer(&mut handle, Some(reply)).await });
        sync_finalizer(&client, &deleting, true).await;
        let (_, _, body) = server.await.unwrap();
        assert_eq!(body["metadata"]["finalizers"], serde_json::json!(["example.com/other"]));
    }

    /// One fleet with the managed node office-a (as read from the API server: it has a uid).
    fn managed_fleet() -> BTreeMap<String, LoadedFleet> {
        let spec = serde_json::from_value(serde_json::json!({
            "numbering": {"prefixes": ["3"], "length": 4},
            "managed": {"image": "registry.example/asterisk-operator:0.1.0", "hostNetwork": true}
        }))
        .unwrap();
        let mut node = AsteriskNode::new("office-a", spec);
        node.metadata.namespace = Some("default".into());
        node.metadata.uid = Some("uid-node".into());
        let resources = ResourceSet { namespace: "default".into(), nodes: vec![node], ..Default::default() };
        let resolution = topology::resolve(&resources);
        let bundles = render::render_all(&resolution.topology);
        BTreeMap::from([("default".to_owned(), LoadedFleet { resources, resolution, bundles })])
    }

    fn resource_list(group_version: &str, names: &[&str]) -> Value {
        let resources: Vec<Value> = names
            .iter()
            .map(|n| serde_json::json!({"name": n, "singularName": "", "namespaced": true, "kind": "X", "verbs": []}))
            .collect();
        serde_json::json!({"kind": "APIResourceList", "groupVersion": group_version, "resources": resources})
    }

    fn not_found() -> Value {
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "the server could not find the requested resource", "reason": "NotFound",
            "details": {}, "code": 404})
    }

    const KEY: (&str, &str) = ("default", "office-a");

    fn key() -> (String, String) {
        (KEY.0.to_owned(), KEY.1.to_owned())
    }

    #[tokio::test]
    async fn a_managed_node_gets_its_secret_once_and_its_workload_by_server_side_apply() {
        let (client, mut handle) = mock();
        let (store, mut writer) = reflector::store::<Secret>();
        let fleets = managed_fleet();
        let server = tokio::spawn(async move {
            let core = answer(&mut handle, Some(resource_list("v1", &["secrets", "services", "pods"]))).await;
            let apps = answer(&mut handle, Some(resource_list("apps/v1", &["statefulsets"]))).await;
            let ca = answer(&mut handle, None).await;
            let secret = answer(&mut handle, None).await;
            let service = answer(&mut handle, None).await;
            let sts = respond(&mut handle, 200, |body| {
                let mut b = body.clone();
                b["status"] = serde_json::json!({"replicas": 1, "readyReplicas": 1});
                b
            })
            .await;
            (vec![core, apps, ca, secret, service, sts], handle)
        });
        let mut workloads = Workloads::default();
        let targets = workloads.reconcile(&client, Some(&store), &fleets, &options()).await;
        let (seen, mut handle) = server.await.unwrap();
        let uris: Vec<(&Method, &str)> =
            seen.iter().map(|(m, u, _)| (m, u.split('?').next().unwrap())).collect();
        assert_eq!(
            uris,
            [
                (&Method::GET, "/api/v1"),
                (&Method::GET, "/apis/apps/v1"),
                (&Method::POST, "/api/v1/namespaces/default/secrets"),
                (&Method::POST, "/api/v1/namespaces/default/secrets"),
                (&Method::PATCH, "/api/v1/namespaces/default/services/asterisk-office-a"),
                (&Method::PATCH, "/apis/apps/v1/namespaces/default/statefulsets/asterisk-office-a"),
            ]
        );
        // Server-side apply under the controller's field manager.
        for (_, uri, _) in &seen[4..] {
            assert!(uri.contains("fieldManager=asterisk-operator") && uri.contains("force=true"), "{uri}");
        }
        // The namespace's mesh CA first: generated, shared by the fleet (no owner reference).
        let (_, _, ca_body) = &seen[2];
        assert_eq!(ca_body["metadata"]["name"], mesh_pki::CA_SECRET);
        assert!(ca_body["metadata"].get("ownerReferences").is_none(), "{}", ca_body["metadata"]);
        let mut ca_secret: Secret = serde_json::from_value(ca_body.clone()).unwrap();
        ca_secret.metadata.namespace = Some("default".into());
        let ca = MeshCa::from_secret(&ca_secret, SystemTime::now()).expect("a usable CA");
        let (_, _, secret) = &seen[3];
        assert_eq!(secret["metadata"]["name"], "asterisk-office-a");
        assert_eq!(secret["metadata"]["ownerReferences"][0]["uid"], "uid-node");
        for k in
            [managed::AMI_SECRET_KEY, managed::AGENT_TOKEN_KEY, managed::TLS_CERT_KEY, managed::TLS_KEY_KEY]
        {
            assert!(secret["data"][k].is_string(), "{k} in {secret}");
        }
        // The node's mesh certificate, signed by that CA, naming the node.
        let node_secret: Secret = serde_json::from_value(secret.clone()).unwrap();
        let LeafCheck::Current(leaf) = mesh_pki::check_leaf(&node_secret, &ca, "office-a", SystemTime::now())
        else {
            panic!(
                "the node's mesh certificate does not verify: {:?}",
                secret["data"].as_object().map(|d| d.keys().collect::<Vec<_>>())
            )
        };
        let (_, _, service) = &seen[4];
        assert_eq!((service["apiVersion"].as_str(), service["kind"].as_str()), (Some("v1"), Some("Service")));
        assert_eq!(service["spec"]["clusterIP"], "None");
        let ports: Vec<(&str, i64)> = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap(), p["port"].as_i64().unwrap()))
            .collect();
        assert_eq!(ports, [("grpc", 7443), ("metrics", 9090), ("mesh", 7444)]);
        let (_, _, sts) = &seen[5];
        assert_mesh_in_pod(sts, &leaf);
        assert_eq!(
            (sts["apiVersion"].as_str(), sts["kind"].as_str()),
            (Some("apps/v1"), Some("StatefulSet"))
        );
        let pod = &sts["spec"]["template"]["spec"];
        assert_eq!(pod["hostNetwork"], true);
        assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
        let names: Vec<&str> =
            pod["containers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["asterisk", "agent"]);
        let sts_text = sts.to_string();
        let token_bytes: k8s_openapi::ByteString =
            serde_json::from_value(secret["data"][managed::AGENT_TOKEN_KEY].clone()).unwrap();
        let token = String::from_utf8(token_bytes.0).unwrap();
        assert!(!sts_text.contains(&token), "the token stays in the Secret");

        let target = &targets[&key()];
        assert_eq!((target.condition.status, target.condition.reason.as_str()), (true, "Running"));
        let access = target.access.as_ref().expect("the agent is reachable");
        assert_eq!(access.token.as_ref().unwrap().expose(), token, "pushes carry the node's own token");

        // Next pass: the Secret is in the cache now and the workload unchanged: no Secret is
        // created again, one GET of the StatefulSet's status replaces the two patches.
        let mut stored: Secret = serde_json::from_value(secret.clone()).unwrap();
        stored.metadata.namespace = Some("default".into());
        writer.apply_watcher_event(&watcher::Event::Apply(stored));
        writer.apply_watcher_event(&watcher::Event::Apply(ca_secret));
        let server = tokio::spawn(async move {
            let get = respond(&mut handle, 200, |_| {
                serde_json::json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                    "metadata": {"name": "asterisk-office-a", "namespace": "default"},
                    "status": {"replicas": 1, "readyReplicas": 0}})
            })
            .await;
            (get, handle)
        });
        let targets = workloads.reconcile(&client, Some(&store), &fleets, &options()).await;
        let ((method, uri, _), mut handle) = server.await.unwrap();
        assert_eq!(
            (method, uri.as_str()),
            (Method::GET, "/apis/apps/v1/namespaces/default/statefulsets/asterisk-office-a/status")
        );
        let target = &targets[&key()];
        assert_eq!((target.condition.status, target.condition.reason.as_str()), (false, "Starting"));
        assert_eq!(target.access.as_ref().unwrap().token.as_ref().unwrap().expose(), token, "same secret");
        let more = tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await;
        assert!(more.is_err(), "nothing else was sent");
    }

    /// The agent container of a StatefulSet (as sent) runs the mesh on 7444 with the files of
    /// the mounted Secret, and the pod template carries `leaf`'s fingerprint.
    fn assert_mesh_in_pod(sts: &Value, leaf: &MeshLeaf) {
        let template = &sts["spec"]["template"];
        assert_eq!(template["metadata"]["annotations"][managed::MESH_CERT_ANNOTATION], leaf.revision());
        let agent =
            template["spec"]["containers"].as_array().unwrap().iter().find(|c| c["name"] == "agent").unwrap();
        let args: Vec<&str> = agent["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        for pair in [
            ["--mesh-listen", "0.0.0.0:7444"],
            ["--mesh-ca", "/run/secrets/asterisk-operator/mesh-ca.crt"],
            ["--mesh-cert", "/run/secrets/asterisk-operator/mesh.crt"],
            ["--mesh-key", "/run/secrets/asterisk-operator/mesh.key"],
        ] {
            assert!(args.windows(2).any(|w| w == pair), "{pair:?} in {args:?}");
        }
        let ports: Vec<(&str, i64)> = agent["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap(), p["containerPort"].as_i64().unwrap()))
            .collect();
        assert_eq!(ports, [("grpc", 7443), ("metrics", 9090), ("mesh", 7444)]);
        let text = sts.to_string();
        for line in leaf.key_pem.expose().lines().filter(|l| !l.starts_with("-----")) {
            assert!(!text.contains(line), "the mesh key stays in the Secret");
        }
    }

    /// `office-a`'s Secret as a controller before the mesh made it (no mesh keys), as cached.
    fn pre_mesh_secret() -> Secret {
        let fleets = managed_fleet();
        let node = &fleets["default"].resources.nodes[0];
        let creds = NodeCredentials::generate(node).unwrap();
        let leaf = MeshCa::generate("default", SystemTime::now())
            .unwrap()
            .issue("office-a", SystemTime::now())
            .unwrap();
        let mut secret = managed::secret(node, &creds, &leaf, &ManagedSettings::default()).unwrap();
        for k in mesh_pki::MESH_KEYS {
            secret.data.as_mut().unwrap().remove(k);
        }
        secret.metadata.resource_version = Some("7".into());
        secret
    }

    #[tokio::test]
    async fn a_user_mesh_ca_is_reused_and_node_secrets_get_only_their_mesh_keys_written() {
        let now = SystemTime::now();
        let user_ca = MeshCa::generate("default", now).unwrap();
        let mut ca_secret = mesh_pki::ca_secret("default", &user_ca, &ManagedSettings::default());
        ca_secret.metadata.labels = None; // the user's own, not the controller's
        let old = pre_mesh_secret();
        let mut foreign = old.clone();
        let foreign_leaf = MeshCa::generate("default", now).unwrap().issue("office-a", now).unwrap();
        foreign.data.as_mut().unwrap().extend(foreign_leaf.data());
        let current = {
            let mut s = old.clone();
            s.data.as_mut().unwrap().extend(user_ca.issue("office-a", now).unwrap().data());
            s
        };
        for (case, node_secret, written) in [
            ("pre-mesh Secret", &old, true),
            ("leaf of another CA", &foreign, true),
            ("current leaf", &current, false),
        ] {
            let (client, mut handle) = mock();
            let (store, mut writer) = reflector::store::<Secret>();
            writer.apply_watcher_event(&watcher::Event::Apply(ca_secret.clone()));
            writer.apply_watcher_event(&watcher::Event::Apply(node_secret.clone()));
            let server = tokio::spawn(async move {
                let mut seen = vec![
                    answer(&mut handle, Some(resource_list("v1", &["secrets", "services"]))).await,
                    answer(&mut handle, Some(resource_list("apps/v1", &["statefulsets"]))).await,
                ];
                for _ in 0..if written { 3 } else { 2 } {
                    seen.push(answer(&mut handle, None).await);
                }
                let more = tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await;
                assert!(more.is_err(), "nothing else was sent");
                seen
            });
            let mut workloads = Workloads::default();
            let targets = workloads.reconcile(&client, Some(&store), &managed_fleet(), &options()).await;
            let seen = server.await.unwrap();
            assert!(seen.iter().all(|(m, _, _)| m != Method::POST), "{case}: no Secret is created: {seen:?}");
            let target = &targets[&key()];
            assert!(target.access.is_some(), "{case}: {:?}", target.condition);
            let creds = NodeCredentials::from_secret(&old).unwrap();
            assert_eq!(target.access.as_ref().unwrap().token.as_ref(), Some(&creds.agent_token), "{case}");
            let leaf = if written {
                let (method, uri, patch) = &seen[2];
                assert_eq!(
                    (method, uri.split('?').next().unwrap()),
                    (&Method::PATCH, "/api/v1/namespaces/default/secrets/asterisk-office-a"),
                    "{case}"
                );
                assert!(uri.contains("fieldManager=asterisk-operator"), "{uri}");
                assert_eq!(patch["metadata"], serde_json::json!({"resourceVersion": "7"}), "{case}: guarded");
                let keys: Vec<&String> = patch["data"].as_object().unwrap().keys().collect();
                assert_eq!(keys, ["mesh-ca.crt", "mesh.crt", "mesh.key"], "{case}: only the mesh keys");
                let mut patched = old.clone();
                patched.data.as_mut().unwrap().extend(
                    serde_json::from_value::<BTreeMap<String, k8s_openapi::ByteString>>(
                        patch["data"].clone(),
                    )
                    .unwrap(),
                );
                match mesh_pki::check_leaf(&patched, &user_ca, "office-a", now) {
                    LeafCheck::Current(leaf) => leaf,
                    other => panic!("{case}: the written leaf is not the user CA's: {other:?}"),
                }
            } else {
                MeshLeaf::from_secret(&current).unwrap()
            };
            let (_, _, sts) = seen.last().unwrap();
            assert_mesh_in_pod(sts, &leaf);
        }
    }

    #[tokio::test]
    async fn an_unusable_mesh_ca_is_a_condition_and_nothing_is_written() {
        let (client, mut handle) = mock();
        let (store, mut writer) = reflector::store::<Secret>();
        let ca = MeshCa::generate("default", SystemTime::now()).unwrap();
        let mut ca_secret = mesh_pki::ca_secret("default", &ca, &ManagedSettings::default());
        ca_secret.data.as_mut().unwrap().remove(mesh_pki::CA_KEY_KEY);
        writer.apply_watcher_event(&watcher::Event::Apply(ca_secret));
        let server = tokio::spawn(async move {
            answer(&mut handle, Some(resource_list("v1", &["secrets", "services"]))).await;
            answer(&mut handle, Some(resource_list("apps/v1", &["statefulsets"]))).await;
            let more = tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await;
            assert!(more.is_err(), "nothing is created or applied");
        });
        let targets =
            Workloads::default().reconcile(&client, Some(&store), &managed_fleet(), &options()).await;
        server.await.unwrap();
        let c = &targets[&key()].condition;
        assert_eq!((c.status, c.reason.as_str()), (false, "MeshCAInvalid"));
        assert!(c.message.starts_with("Secret default/asterisk-mesh-ca: data.ca.key is missing"), "{c:?}");
    }

    #[tokio::test]
    async fn a_server_without_apps_v1_degrades_to_a_condition() {
        let (client, mut handle) = mock();
        let (store, _writer) = reflector::store::<Secret>();
        let fleets = managed_fleet();
        let server = tokio::spawn(async move {
            answer(&mut handle, Some(resource_list("v1", &["secrets", "services"]))).await;
            let apps = respond(&mut handle, 404, |_| not_found()).await;
            (apps, handle)
        });
        let mut workloads = Workloads::default();
        let targets = workloads.reconcile(&client, Some(&store), &fleets, &options()).await;
        let ((_, uri, _), mut handle) = server.await.unwrap();
        assert_eq!(uri, "/apis/apps/v1");
        let target = &targets[&key()];
        assert_eq!(target.condition.type_, "Managed");
        assert_eq!(
            (target.condition.status, target.condition.reason.as_str()),
            (false, "WorkloadAPIUnavailable")
        );
        assert!(
            target.condition.message.contains("does not serve apps/v1 StatefulSets"),
            "{:?}",
            target.condition
        );
        assert!(!target.condition.message.contains("v1 Secrets"), "only what is missing is named");
        assert!(target.access.is_none(), "nothing to push to");
        let more = tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await;
        assert!(more.is_err(), "no Secret or Service is created for a workload that cannot run");

        // The next pass, within the rediscovery interval, asks nothing and says the same.
        let again = workloads.reconcile(&client, Some(&store), &fleets, &options()).await;
        assert_eq!(again[&key()].condition, target.condition);

        // The fleet: the node is not pushed to, and its status says why.
        let mut fleet = FleetReconciler::new(AgentAccess::default());
        fleet.set_managed(again);
        fleet.reconcile(&fleets).await;
        let status = &fleet.statuses()[&ObjectRef::new(Kind::AsteriskNode, "default", "office-a")];
        let applied = status.conditions().iter().find(|c| c.type_ == "ConfigApplied").unwrap();
        assert_eq!(applied.reason, "NoAgent");
        assert!(applied.message.contains("apps/v1 StatefulSets"), "{applied:?}");
        let managed = status.conditions().iter().find(|c| c.type_ == "Managed").unwrap();
        assert_eq!((managed.status.as_str(), managed.reason.as_str()), ("False", "WorkloadAPIUnavailable"));
    }

    #[tokio::test]
    async fn without_a_cluster_a_managed_node_says_it_needs_one() {
        let fleets = managed_fleet();
        let mut fleet = FleetReconciler::new(AgentAccess::default());
        let report = fleet.reconcile(&fleets).await;
        assert_eq!(report.pushed.get("default/office-a"), Some(&false));
        let status = &fleet.statuses()[&ObjectRef::new(Kind::AsteriskNode, "default", "office-a")];
        let managed = status.conditions().iter().find(|c| c.type_ == "Managed").unwrap();
        assert_eq!((managed.status.as_str(), managed.reason.as_str()), ("False", "NeedsCluster"));
        let ready = status.conditions().iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "False");
    }
}
