//! Finalizers: live Phones, Trunks and BlfSubscriptions carry [`FINALIZER`]; a deleted one loses
//! it once every node it lived on applied a bundle without it, or that node is gone or invalid
//! (nothing is left to clean up there, so a deletion never hangs on it).

use std::collections::BTreeMap;

use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::names::FINALIZER;
use super::sources::Stores;
use crate::controller::fleet::FleetReconciler;
use crate::crd::namespace_of;
use crate::offline::LoadedFleet;

/// Adds or releases the finalizer of every Phone, Trunk and BlfSubscription in the caches.
pub(crate) async fn sync(
    client: &Client,
    stores: &Stores,
    fleets: &BTreeMap<String, LoadedFleet>,
    fleet: &FleetReconciler,
) {
    // Have all `nodes` applied a bundle without the resource (or are they gone)?
    let released = |ns: &str, nodes: Vec<String>| {
        nodes.iter().all(|node| match fleets.get(ns).and_then(|f| f.bundles.get(node)) {
            None => true,
            Some(bundle) => fleet.applied(ns, node, &bundle.hash),
        })
    };
    for p in stores.phones.state() {
        let release = released(&namespace_of(p.meta()), vec![p.spec.node.clone()]);
        sync_one(client, &*p, release).await;
    }
    for t in stores.trunks.state() {
        let release = released(&namespace_of(t.meta()), t.spec.ends.clone());
        sync_one(client, &*t, release).await;
    }
    for b in stores.blfs.state() {
        let ns = namespace_of(b.meta());
        let watcher_node = match (&b.spec.watcher.phone, &b.spec.watcher.node) {
            (Some(phone), _) => stores
                .phones
                .state()
                .iter()
                .find(|p| p.name_any() == *phone && namespace_of(p.meta()) == ns)
                .map(|p| p.spec.node.clone()),
            (None, Some(node)) => Some(node.clone()),
            _ => None,
        };
        let release = released(&ns, watcher_node.into_iter().collect());
        sync_one(client, &*b, release).await;
    }
}

/// Live object without the finalizer: add it. Deleted object with it and `release`: remove it.
async fn sync_one<K>(client: &Client, resource: &K, release: bool)
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
    let name = resource.name_any();
    // The resourceVersion makes this a compare-and-swap: a concurrent change to the list fails
    // the patch and the next pass tries again with fresh data.
    let patch = serde_json::json!({
        "metadata": {"finalizers": next, "resourceVersion": meta.resource_version}
    });
    let api: Api<K> = Api::namespaced(client.clone(), &namespace_of(meta));
    match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => tracing::debug!(kind = %K::kind(&()), %name, deleting, "finalizer updated"),
        Err(e) => tracing::warn!(kind = %K::kind(&()), %name, error = %e, "could not update the finalizer"),
    }
}

#[cfg(test)]
mod tests {
    use http::Method;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::controller::mock_api::{answer, mock, phone, silent};

    #[tokio::test]
    async fn finalizer_is_added_to_live_resources_and_removed_once_released() {
        // Live, without the finalizer: it is added, guarded by the resourceVersion.
        let (client, mut handle) = mock();
        let mut p = phone("reception");
        p.metadata.resource_version = Some("41".into());
        p.metadata.finalizers = Some(vec!["example.com/other".into()]);
        let reply = serde_json::to_value(&p).unwrap();
        let server = tokio::spawn(async move { answer(&mut handle, Some(reply)).await });
        sync_one(&client, &p, false).await;
        let (method, uri, body) = server.await.unwrap();
        assert_eq!(method, Method::PATCH);
        assert!(
            uri.starts_with("/apis/asterisk.operator.dev/v1alpha1/namespaces/default/phones/reception?"),
            "{uri}"
        );
        assert_eq!(body["metadata"]["finalizers"], serde_json::json!(["example.com/other", FINALIZER]));
        assert_eq!(body["metadata"]["resourceVersion"], "41");

        // Being deleted, not released yet (its node has not applied a bundle without it): no call.
        let (client, mut handle) = mock();
        let mut deleting = p.clone();
        deleting.metadata.finalizers = Some(vec!["example.com/other".into(), FINALIZER.into()]);
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        sync_one(&client, &deleting, false).await;
        assert!(silent(&mut handle).await, "no request while the node still has the phone");

        // Released: only our finalizer goes, the other controller's stays.
        let (client, mut handle) = mock();
        let reply = serde_json::to_value(&deleting).unwrap();
        let server = tokio::spawn(async move { answer(&mut handle, Some(reply)).await });
        sync_one(&client, &deleting, true).await;
        let (_, _, body) = server.await.unwrap();
        assert_eq!(body["metadata"]["finalizers"], serde_json::json!(["example.com/other"]));
    }
}
