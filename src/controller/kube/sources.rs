//! Read: reflectors keep a cache of the four kinds (and Secrets, where the server serves them),
//! and each pass groups what is live into one [`ResourceSet`] per namespace — a fleet.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::crd::{AsteriskNode, BlfSubscription, Phone, Trunk, namespace_of};
use crate::topology::ResourceSet;

/// The caches the reflectors keep current.
#[derive(Clone)]
pub(crate) struct Stores {
    pub nodes: Store<AsteriskNode>,
    pub trunks: Store<Trunk>,
    pub phones: Store<Phone>,
    pub blfs: Store<BlfSubscription>,
    /// `None`: the server has no Secrets API.
    pub secrets: Option<Store<Secret>>,
}

impl Stores {
    /// Starts the reflectors; `changed` is notified on every watch event. Returns once every
    /// cache holds the server's current state.
    pub async fn start(client: &Client, changed: &Arc<Notify>) -> Stores {
        let secrets = match secrets_served(client).await {
            true => Some(reflect(Api::<Secret>::all(client.clone()), changed.clone())),
            false => None,
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
        stores
    }

    /// Every live (not deleted) resource, one [`ResourceSet`] per namespace, Secrets not yet
    /// filled in.
    pub fn fleets(&self) -> BTreeMap<String, ResourceSet> {
        let mut grouped: BTreeMap<String, ResourceSet> = BTreeMap::new();
        for r in live(&self.nodes) {
            entry(&mut grouped, &r).nodes.push(r);
        }
        for r in live(&self.trunks) {
            entry(&mut grouped, &r).trunks.push(r);
        }
        for r in live(&self.phones) {
            entry(&mut grouped, &r).phones.push(r);
        }
        for r in live(&self.blfs) {
            entry(&mut grouped, &r).blf_subscriptions.push(r);
        }
        grouped
    }
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

fn live<K: Resource<DynamicType = ()> + Clone>(store: &Store<K>) -> impl Iterator<Item = K> + '_ {
    store.state().into_iter().filter(|r| r.meta().deletion_timestamp.is_none()).map(|r| (*r).clone())
}

fn entry<'a, K: Resource>(grouped: &'a mut BTreeMap<String, ResourceSet>, r: &K) -> &'a mut ResourceSet {
    let ns = namespace_of(r.meta());
    grouped.entry(ns.clone()).or_insert_with(|| ResourceSet { namespace: ns, ..ResourceSet::default() })
}
