//! Read: reflectors keep a cache of the four kinds (and of the Secrets labelled for the
//! operator, where the server serves Secrets), in every namespace or the ones given, and each
//! pass groups what is live into one [`ResourceSet`] per namespace — a fleet.
//!
//! Only Secrets carrying [`secret_roles::LABEL`] are watched: no other Secret is ever cached,
//! read or able to wake a pass.

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

use crate::controller::secret_roles;
use crate::crd::{AsteriskNode, BlfSubscription, Phone, Trunk, namespace_of};
use crate::topology::ResourceSet;

/// One cache per watched namespace (or one for all).
#[derive(Clone)]
pub(crate) struct Caches<K: Resource<DynamicType = ()> + Clone + 'static>(Vec<Store<K>>);

impl<K> Caches<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    /// Reflectors on `K` in `namespaces` (empty: all), with `config`.
    fn start(
        client: &Client,
        namespaces: &[String],
        config: &watcher::Config,
        changed: &Arc<Notify>,
    ) -> Self {
        let apis: Vec<Api<K>> = match namespaces.is_empty() {
            true => vec![Api::all(client.clone())],
            false => namespaces.iter().map(|ns| Api::namespaced(client.clone(), ns)).collect(),
        };
        Self(apis.into_iter().map(|api| reflect(api, config.clone(), changed.clone())).collect())
    }

    async fn wait_until_ready(&self) {
        for store in &self.0 {
            let _ = store.wait_until_ready().await;
        }
    }

    /// Everything cached, deleted or not.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.0.iter().flat_map(|s| s.state()).collect()
    }

    fn live(&self) -> impl Iterator<Item = K> + '_ {
        self.state().into_iter().filter(|r| r.meta().deletion_timestamp.is_none()).map(|r| (*r).clone())
    }
}

/// The caches the reflectors keep current.
#[derive(Clone)]
pub(crate) struct Stores {
    pub nodes: Caches<AsteriskNode>,
    pub trunks: Caches<Trunk>,
    pub phones: Caches<Phone>,
    pub blfs: Caches<BlfSubscription>,
    /// The Secrets labelled for the operator; `None`: the server has no Secrets API.
    pub secrets: Option<Caches<Secret>>,
}

impl Stores {
    /// Starts the reflectors in `namespaces` (empty: all); `changed` is notified on every
    /// watch event. Returns once every cache holds the server's current state.
    pub async fn start(client: &Client, namespaces: &[String], changed: &Arc<Notify>) -> Stores {
        let all = watcher::Config::default();
        let labelled = watcher::Config::default().labels(secret_roles::LABEL);
        let secrets = match secrets_served(client, namespaces).await {
            true => Some(Caches::start(client, namespaces, &labelled, changed)),
            false => None,
        };
        let stores = Stores {
            nodes: Caches::start(client, namespaces, &all, changed),
            trunks: Caches::start(client, namespaces, &all, changed),
            phones: Caches::start(client, namespaces, &all, changed),
            blfs: Caches::start(client, namespaces, &all, changed),
            secrets,
        };
        tokio::join!(
            stores.nodes.wait_until_ready(),
            stores.trunks.wait_until_ready(),
            stores.phones.wait_until_ready(),
            stores.blfs.wait_until_ready()
        );
        if let Some(s) = &stores.secrets {
            s.wait_until_ready().await;
        }
        stores
    }

    /// Every live (not deleted) resource, one [`ResourceSet`] per namespace, Secrets not yet
    /// filled in.
    pub fn fleets(&self) -> BTreeMap<String, ResourceSet> {
        let mut grouped: BTreeMap<String, ResourceSet> = BTreeMap::new();
        for r in self.nodes.live() {
            entry(&mut grouped, &r).nodes.push(r);
        }
        for r in self.trunks.live() {
            entry(&mut grouped, &r).trunks.push(r);
        }
        for r in self.phones.live() {
            entry(&mut grouped, &r).phones.push(r);
        }
        for r in self.blfs.live() {
            entry(&mut grouped, &r).blf_subscriptions.push(r);
        }
        grouped
    }
}

/// Starts a reflector for `K`; `changed` is notified on every event.
fn reflect<K>(api: Api<K>, config: watcher::Config, changed: Arc<Notify>) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config)).default_backoff();
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

/// Does the server serve Secrets? (A bare apiextensions-apiserver does not.) Asked with the
/// label selector, so the answer never holds a Secret the controller may not read.
async fn secrets_served(client: &Client, namespaces: &[String]) -> bool {
    let api: Api<Secret> = match namespaces.first() {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    match api.list(&ListParams::default().labels(secret_roles::LABEL).limit(1)).await {
        Ok(_) => true,
        Err(kube::Error::Api(status)) if status.code == 404 => false,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list Secrets; treating the Secrets API as unavailable");
            false
        }
    }
}

fn entry<'a, K: Resource>(grouped: &'a mut BTreeMap<String, ResourceSet>, r: &K) -> &'a mut ResourceSet {
    let ns = namespace_of(r.meta());
    grouped.entry(ns.clone()).or_insert_with(|| ResourceSet { namespace: ns, ..ResourceSet::default() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::mock_api::{answer, mock};

    fn empty_list() -> serde_json::Value {
        serde_json::json!({"kind": "SecretList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []})
    }

    #[tokio::test]
    async fn secrets_are_asked_for_and_watched_only_by_the_operator_label() {
        // Whether the server serves Secrets: asked with the label selector too.
        let (client, mut handle) = mock();
        let server = tokio::spawn(async move { answer(&mut handle, Some(empty_list())).await });
        assert!(secrets_served(&client, &[]).await);
        let (_, uri, _) = server.await.unwrap();
        assert!(uri.starts_with("/api/v1/secrets?"), "{uri}");
        assert!(uri.contains("labelSelector=asterisk.operator.dev%2Fsecret"), "{uri}");

        // The cache of a namespaced controller: one watch per namespace, each by the label.
        let (client, mut handle) = mock();
        let changed = Arc::new(Notify::new());
        let labelled = watcher::Config::default().labels(secret_roles::LABEL);
        let _caches = Caches::<Secret>::start(&client, &["team-a".into()], &labelled, &changed);
        let (_, uri, _) = answer(&mut handle, Some(empty_list())).await;
        assert!(uri.starts_with("/api/v1/namespaces/team-a/secrets?"), "{uri}");
        assert!(uri.contains("labelSelector=asterisk.operator.dev%2Fsecret"), "{uri}");
    }
}
