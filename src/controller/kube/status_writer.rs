//! Update status: each resource's status goes to its status subresource by server-side apply
//! under [`FIELD_MANAGER`] — only when it differs from what the server has, so a steady fleet
//! writes nothing.

use std::collections::BTreeMap;

use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::names::FIELD_MANAGER;
use crate::controller::status::ResourceStatus;
use crate::crd::namespace_of;
use crate::offline::LoadedFleet;
use crate::topology::{Kind, ObjectRef};

/// Writes the status of every resource of `fleet` whose content changed.
pub(crate) async fn write(
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
    let ns = namespace_of(resource.meta());
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

#[cfg(test)]
mod tests {
    use http::Method;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::controller::conditions::{ConditionUpdate, ReadyReason, set_condition};
    use crate::controller::mock_api::{answer, mock, phone, silent};
    use crate::crd::PhoneStatus;

    #[tokio::test]
    async fn status_is_written_by_server_side_apply_only_when_it_changed() {
        let (client, mut handle) = mock();
        let p = phone("reception");
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let mut status = PhoneStatus::default();
        set_condition(
            &mut status.conditions,
            ConditionUpdate::ok(ReadyReason::Ready, "valid and in force"),
            Some(3),
            &now,
        );
        let object = ObjectRef::new(Kind::Phone, "default", "reception");
        let statuses = BTreeMap::from([(object, ResourceStatus::Phone(status.clone()))]);
        let server = tokio::spawn(async move {
            answer(&mut handle, Some(serde_json::to_value(phone("reception")).unwrap())).await
        });
        patch_if_changed(&client, &p, Kind::Phone, &statuses, None::<&PhoneStatus>).await;
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

        // Same status as the server has: no request at all.
        let (client, mut handle) = mock();
        patch_if_changed(&client, &p, Kind::Phone, &statuses, Some(&status)).await;
        assert!(silent(&mut handle).await, "an unchanged status is not written");
    }
}
