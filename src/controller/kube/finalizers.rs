//! Do: every Phone, Trunk, BlfSubscription and AsteriskNode carries [`FINALIZER`]; what
//! happens to it when one is deleted is decided by [`super::finalizer_plan`]. A deleted Phone,
//! Trunk or subscription is released once every node it lived on applied a bundle without it (a
//! node that is invalid holds it until fixed or deleted; a node leaving empties itself); a
//! deleted AsteriskNode beside an existing server once its agent applied the empty bundle, so no
//! credential of the operator's stays on that Asterisk. A managed node's pod goes with it.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::events::EventPublisher;
use super::finalizer_plan::{Deletion, FinalizerStep, NodePlace, decide, pending};
use super::names::{FINALIZER, SKIP_CLEANUP_ANNOTATION};
use super::sources::Stores;
use crate::controller::fleet::FleetReconciler;
use crate::controller::notices::Notice;
use crate::crd::namespace_of;
use crate::offline::LoadedFleet;
use crate::topology::{Kind, ObjectRef};

/// A namespaced kind of the fleet, patched by name.
trait Finalized:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + std::fmt::Debug
{
}

impl<K> Finalized for K where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
{
}

/// The cleanup finalizers across passes.
#[derive(Debug, Default)]
pub(crate) struct Finalizers {
    /// Give up waiting for a deleted resource's cleanup after this long (`None`: never).
    timeout: Option<Duration>,
    /// What each deleted resource was last reported waiting for, so it is said once per change.
    waiting: BTreeMap<ObjectRef, String>,
}

impl Finalizers {
    /// Giving up on a deleted resource's cleanup after `timeout` (`None`: never).
    pub fn new(timeout: Option<Duration>) -> Self {
        Self { timeout, waiting: BTreeMap::new() }
    }

    /// Adds, keeps or releases the finalizer of every resource in the caches.
    pub async fn sync(
        &mut self,
        client: &Client,
        stores: &Stores,
        fleets: &BTreeMap<String, LoadedFleet>,
        fleet: &FleetReconciler,
        events: &mut EventPublisher,
    ) {
        let place = |ns: &str, node: &str| -> NodePlace {
            let Some(f) = fleets.get(ns) else { return NodePlace::Leaving };
            match f.bundles.get(node) {
                Some(b) => NodePlace::Rendered {
                    node: node.into(),
                    applied_without: fleet.applied(ns, node, &b.hash),
                },
                None if f.resources.nodes.iter().any(|n| n.name_any() == node) => {
                    NodePlace::Invalid { node: node.into() }
                }
                None => NodePlace::Leaving,
            }
        };
        let mut seen = Vec::new();
        for n in stores.nodes.state() {
            let ns = namespace_of(n.meta());
            let name = n.name_any();
            let pending = match (&n.spec.managed, &n.spec.agent) {
                // Its StatefulSet, and the pod running Asterisk, are deleted with it.
                (Some(_), _) => vec![],
                _ if fleet.retired(&ns, &name) => vec![],
                (None, Some(_)) => vec![format!(
                    "its agent has not applied the empty bundle that removes the operator's files yet ({})",
                    fleet
                        .last_outcome(&ns, &name)
                        .filter(|o| !o.is_empty())
                        .unwrap_or_else(|| "not contacted yet".into())
                )],
                (None, None) => vec!["it has no spec.agent.endpoint to reach its agent".into()],
            };
            seen.push(self.sync_one(client, events, &*n, Kind::AsteriskNode, &pending).await);
        }
        for p in stores.phones.state() {
            let ns = namespace_of(p.meta());
            let pending = pending(&[place(&ns, &p.spec.node)]);
            seen.push(self.sync_one(client, events, &*p, Kind::Phone, &pending).await);
        }
        for t in stores.trunks.state() {
            let ns = namespace_of(t.meta());
            let places: Vec<NodePlace> = t.spec.ends.iter().map(|end| place(&ns, end)).collect();
            seen.push(self.sync_one(client, events, &*t, Kind::Trunk, &pending(&places)).await);
        }
        let phones = stores.phones.state();
        for b in stores.blfs.state() {
            let ns = namespace_of(b.meta());
            let watcher_node = match (&b.spec.watcher.phone, &b.spec.watcher.node) {
                (Some(phone), _) => phones
                    .iter()
                    .find(|p| p.name_any() == *phone && namespace_of(p.meta()) == ns)
                    .map(|p| p.spec.node.clone()),
                (None, Some(node)) => Some(node.clone()),
                _ => None,
            };
            let places: Vec<NodePlace> = watcher_node.iter().map(|node| place(&ns, node)).collect();
            seen.push(self.sync_one(client, events, &*b, Kind::BlfSubscription, &pending(&places)).await);
        }
        self.waiting.retain(|object, _| seen.contains(object));
    }

    /// Decides and performs one resource's step; returns which resource it was.
    async fn sync_one<K: Finalized>(
        &mut self,
        client: &Client,
        events: &mut EventPublisher,
        resource: &K,
        kind: Kind,
        pending: &[String],
    ) -> ObjectRef {
        let meta = resource.meta();
        let object = ObjectRef::new(kind, &namespace_of(meta), &resource.name_any());
        let has = meta.finalizers.iter().flatten().any(|f| f == FINALIZER);
        let deletion = meta.deletion_timestamp.as_ref().map(|t| Deletion {
            since: t.0,
            skip_cleanup: meta
                .annotations
                .as_ref()
                .is_some_and(|a| a.get(SKIP_CLEANUP_ANNOTATION).is_some_and(|v| v == "true")),
        });
        let step = decide(deletion.as_ref(), has, pending, self.timeout, Timestamp::now());
        let notice = |warning: bool, reason: &str, note: &str| Notice {
            object: object.clone(),
            warning,
            reason: reason.into(),
            note: note.into(),
            action: "Cleanup",
        };
        match step {
            FinalizerStep::None => {}
            FinalizerStep::Add => set_finalizer(client, resource, true).await,
            FinalizerStep::Release => {
                self.waiting.remove(&object);
                set_finalizer(client, resource, false).await;
            }
            FinalizerStep::Keep(why) => {
                if self.waiting.get(&object) != Some(&why) {
                    tracing::info!(%object, waiting_for = %why, "deleted; its cleanup is not finished");
                    events
                        .publish_on(&resource.object_ref(&()), &notice(false, "CleanupPending", &why))
                        .await;
                    self.waiting.insert(object.clone(), why);
                }
            }
            FinalizerStep::GiveUp(warning) => {
                tracing::warn!(%object, "{warning}");
                events.publish_on(&resource.object_ref(&()), &notice(true, "CleanupSkipped", &warning)).await;
                self.waiting.remove(&object);
                set_finalizer(client, resource, false).await;
            }
        }
        object
    }
}

/// Adds the finalizer (`add`) or removes it, leaving every other controller's alone.
async fn set_finalizer<K: Finalized>(client: &Client, resource: &K, add: bool) {
    let meta = resource.meta();
    let finalizers = meta.finalizers.clone().unwrap_or_default();
    let next: Vec<String> = match add {
        true => finalizers.iter().cloned().chain([FINALIZER.to_owned()]).collect(),
        false => finalizers.iter().filter(|f| *f != FINALIZER).cloned().collect(),
    };
    let name = resource.name_any();
    // The resourceVersion makes this a compare-and-swap: a concurrent change to the list fails
    // the patch and the next pass tries again with fresh data.
    let patch = serde_json::json!({
        "metadata": {"finalizers": next, "resourceVersion": meta.resource_version}
    });
    let api: Api<K> = Api::namespaced(client.clone(), &namespace_of(meta));
    match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => tracing::debug!(kind = %K::kind(&()), %name, add, "finalizer updated"),
        Err(e) => tracing::warn!(kind = %K::kind(&()), %name, error = %e, "could not update the finalizer"),
    }
}

#[cfg(test)]
mod tests {
    use http::Method;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::controller::mock_api::{answer, mock, phone};

    #[tokio::test]
    async fn the_finalizer_is_added_and_removed_alone_guarded_by_the_resource_version() {
        // Live, without the finalizer: it is added, guarded by the resourceVersion.
        let (client, mut handle) = mock();
        let mut p = phone("reception");
        p.metadata.resource_version = Some("41".into());
        p.metadata.finalizers = Some(vec!["example.com/other".into()]);
        let reply = serde_json::to_value(&p).unwrap();
        let server = tokio::spawn(async move { answer(&mut handle, Some(reply)).await });
        set_finalizer(&client, &p, true).await;
        let (method, uri, body) = server.await.unwrap();
        assert_eq!(method, Method::PATCH);
        assert!(
            uri.starts_with("/apis/asterisk.operator.dev/v1alpha1/namespaces/default/phones/reception?"),
            "{uri}"
        );
        assert_eq!(body["metadata"]["finalizers"], serde_json::json!(["example.com/other", FINALIZER]));
        assert_eq!(body["metadata"]["resourceVersion"], "41");

        // Released: only our finalizer goes, the other controller's stays.
        let (client, mut handle) = mock();
        let mut deleting = p.clone();
        deleting.metadata.finalizers = Some(vec!["example.com/other".into(), FINALIZER.into()]);
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let reply = serde_json::to_value(&deleting).unwrap();
        let server = tokio::spawn(async move { answer(&mut handle, Some(reply)).await });
        set_finalizer(&client, &deleting, false).await;
        let (_, _, body) = server.await.unwrap();
        assert_eq!(body["metadata"]["finalizers"], serde_json::json!(["example.com/other"]));
    }
}
