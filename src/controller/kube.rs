//! The controller against the Kubernetes API: reflectors on the four resources (and Secrets)
//! feed the same fleet reconcile as `--manifests` mode; statuses go back through the status
//! subresource with server-side apply; missing secrets are generated as Secrets owned by the
//! resource that needs them.
//!
//! A server without the core API (such as a bare apiextensions-apiserver) has no Secrets: the
//! controller says so once and then keeps secrets in `--secrets-file`, or, without one, reports
//! every resource that needs a secret as `MissingSecret` naming the cause.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use super::fleet::{AgentAccess, FleetReconciler};
use super::status::ResourceStatus;
use crate::crd::{AsteriskNode, BlfSubscription, Phone, Trunk};
use crate::offline::{self, LoadedFleet};
use crate::render;
use crate::secret::SecretValue;
use crate::topology::{self, Kind, ObjectRef, ResourceSet, phone_secret_ref, trunk_secret_ref};

/// The field manager of every status the controller writes.
pub const FIELD_MANAGER: &str = "asterisk-operator";

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
    tokio::pin!(shutdown);
    loop {
        reconcile(&client, &stores, &opts, &mut fleet).await;
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = changed.notified() => tokio::time::sleep(opts.debounce).await,
            _ = tokio::time::sleep(opts.resync) => {}
        }
    }
}

fn live<K: Resource<DynamicType = ()> + Clone>(store: &Store<K>) -> impl Iterator<Item = K> + '_ {
    store.state().into_iter().filter(|r| r.meta().deletion_timestamp.is_none()).map(|r| (*r).clone())
}

/// One pass: every namespace resolved, rendered, pushed, and its statuses written.
async fn reconcile(client: &Client, stores: &Stores, opts: &KubeOptions, fleet: &mut FleetReconciler) {
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
    let report = fleet.reconcile(&fleets).await;
    for e in &report.errors {
        tracing::warn!(error = %e, "invalid resource");
    }
    for fleet_ in fleets.values() {
        write_statuses(client, fleet_, fleet.statuses()).await;
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
