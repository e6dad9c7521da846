//! Events: the transitions [`notices`](crate::controller::notices) finds are published as
//! `events.k8s.io/v1` Events on their resource. A server without the Events API turns them off,
//! said once.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::ObjectMeta;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};

use super::names::FIELD_MANAGER;
use crate::controller::notices::Notice;
use crate::offline::LoadedFleet;
use crate::topology::Kind;

/// Publishes Events as the controller.
pub(crate) struct EventPublisher {
    recorder: Recorder,
    enabled: bool,
}

impl EventPublisher {
    /// Events reported by this controller replica (`HOSTNAME`, its pod name).
    pub fn new(client: Client) -> Self {
        let reporter =
            Reporter { controller: FIELD_MANAGER.into(), instance: std::env::var("HOSTNAME").ok() };
        Self { recorder: Recorder::new(client, reporter), enabled: true }
    }

    /// Publishes `notice` on its resource in `fleet` (nothing when the resource is gone).
    pub async fn publish(&mut self, fleet: &LoadedFleet, notice: &Notice) {
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
        self.publish_on(&reference, notice).await;
    }

    /// Publishes `notice` on the object `reference` points at (one that is no longer in a
    /// fleet: being deleted).
    pub async fn publish_on(&mut self, reference: &ObjectReference, notice: &Notice) {
        if !self.enabled {
            return;
        }
        let event = Event {
            type_: if notice.warning { EventType::Warning } else { EventType::Normal },
            reason: notice.reason.clone(),
            note: Some(notice.note.chars().take(1024).collect()),
            action: notice.action.into(),
            secondary: None,
        };
        match self.recorder.publish(&event, reference).await {
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
    use std::collections::BTreeMap;

    use http::Method;

    use super::*;
    use crate::controller::mock_api::{answer, mock, phone};
    use crate::topology::{self, ObjectRef, ResourceSet};

    #[tokio::test]
    async fn notices_become_events_on_the_resource() {
        let (client, mut handle) = mock();
        let mut events = EventPublisher::new(client);
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
}
