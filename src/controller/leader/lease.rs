//! The `coordination.k8s.io/v1` Lease: who holds it is decided by a pure function ([`decide`]);
//! [`LeaseLock`] reads the Lease, applies the decision with a compare-and-swap, and releases it
//! at shutdown.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

/// What to do with the Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No Lease yet: create it, holding it.
    Create,
    /// We hold it: renew it.
    Renew,
    /// Its holder let it expire: take it over.
    TakeOver,
    /// Someone else holds it and it is still valid.
    Wait {
        /// The current holder.
        holder: String,
    },
}

/// Decides from the Lease as read, who we are, and the time now.
pub fn decide(lease: Option<&Lease>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else { return Decision::Create };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == identity {
        return Decision::Renew;
    }
    // Milliseconds, not seconds: a lease of a few seconds must not gain up to one by rounding.
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15)) * 1000;
    let expired =
        spec.renew_time.as_ref().is_none_or(|t| t.0.as_millisecond() + duration < now.as_millisecond());
    if holder.is_empty() || expired { Decision::TakeOver } else { Decision::Wait { holder } }
}

/// Whether this replica may reconcile, as one attempt to acquire or renew the Lease found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leadership {
    /// We hold the Lease.
    Leader,
    /// Another replica does.
    Follower(String),
    /// The server has no Lease API: a single replica is assumed.
    Unsupported,
}

/// The controller's Lease.
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// Whether the server serves Leases, once known.
    supported: Option<bool>,
}

impl LeaseLock {
    /// A lock on Lease `name` in `namespace`, held for `duration` after each renewal.
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
            supported: None,
        }
    }

    fn spec(&self, now: Timestamp, transitions: i32, acquired: Option<MicroTime>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs() as i32),
            acquire_time: acquired.or(Some(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Reads the Lease and creates, renews or takes it over when it may; a conflicting write
    /// (another replica was faster) just means follower this round.
    pub async fn acquire_or_renew(&mut self) -> Leadership {
        // A missing object and a missing API both answer 404 to a get: ask with a list once.
        if self.supported.is_none() {
            match self.api.list(&kube::api::ListParams::default().limit(1)).await {
                Ok(_) => self.supported = Some(true),
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    tracing::warn!(
                        "the API server has no Lease API (coordination.k8s.io): no leader election, run one replica"
                    );
                    self.supported = Some(false);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list Leases");
                    return Leadership::Follower(String::new());
                }
            }
        }
        if self.supported == Some(false) {
            return Leadership::Unsupported;
        }
        let now = Timestamp::now();
        let lease = match self.api.get_opt(&self.name).await {
            Ok(lease) => lease,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the leader Lease");
                return Leadership::Follower(String::new());
            }
        };
        let decision = decide(lease.as_ref(), &self.identity, now);
        let result = match (&decision, lease) {
            (Decision::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                    spec: Some(self.spec(now, 0, None)),
                };
                self.api.create(&PostParams::default(), &lease).await.map(|_| ())
            }
            (Decision::Renew | Decision::TakeOver, Some(mut lease)) => {
                let old = lease.spec.clone().unwrap_or_default();
                let transitions =
                    old.lease_transitions.unwrap_or(0) + i32::from(decision == Decision::TakeOver);
                let acquired = if decision == Decision::Renew { old.acquire_time } else { None };
                lease.spec = Some(self.spec(now, transitions, acquired));
                // The resourceVersion read above makes this a compare-and-swap.
                self.api.replace(&self.name, &PostParams::default(), &lease).await.map(|_| ())
            }
            (Decision::Wait { holder }, _) => return Leadership::Follower(holder.clone()),
            (_, None) => return Leadership::Follower(String::new()),
        };
        match result {
            Ok(()) => {
                if decision != Decision::Renew {
                    tracing::info!(identity = %self.identity, "became the leader");
                }
                Leadership::Leader
            }
            Err(e) => {
                tracing::info!(error = %e, "another replica took the Lease first");
                Leadership::Follower(String::new())
            }
        }
    }
}

impl LeaseLock {
    /// Gives the Lease up if we hold it (at shutdown), so a standby takes over at its next try
    /// instead of after the lease duration. Best effort: a failure only means the standby waits.
    pub async fn release(&self) {
        if self.supported != Some(true) {
            return;
        }
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else { return };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        // An empty holder is taken over at once (see `decide`).
        spec.holder_identity = None;
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!(identity = %self.identity, "released the leader Lease"),
            Err(e) => tracing::info!(error = %e, "could not release the leader Lease; it lapses by itself"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed: i64, duration: i32) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(duration),
                renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn decisions() {
        let now = Timestamp::from_second(1_000).unwrap();
        assert_eq!(decide(None, "a", now), Decision::Create);
        assert_eq!(decide(Some(&lease("a", 990, 15)), "a", now), Decision::Renew);
        assert_eq!(decide(Some(&lease("b", 990, 15)), "a", now), Decision::Wait { holder: "b".into() });
        assert_eq!(decide(Some(&lease("b", 980, 15)), "a", now), Decision::TakeOver, "b stopped renewing");
        assert_eq!(decide(Some(&lease("", 999, 15)), "a", now), Decision::TakeOver, "released");
        let just_before = Timestamp::from_millisecond(1_000_000 + 14_999).unwrap();
        let just_after = Timestamp::from_millisecond(1_000_000 + 15_001).unwrap();
        assert!(matches!(decide(Some(&lease("b", 1_000, 15)), "a", just_before), Decision::Wait { .. }));
        assert_eq!(
            decide(Some(&lease("b", 1_000, 15)), "a", just_after),
            Decision::TakeOver,
            "to the millisecond"
        );
    }

    use http::Method;
    use serde_json::json;

    use crate::controller::mock_api::{mock, not_found, respond};

    #[tokio::test]
    async fn creates_the_lease_when_absent_and_waits_while_another_holds_it() {
        let (client, mut handle) = mock();
        let mut lock = LeaseLock::new(client, "ops", "ctl", "me", Duration::from_secs(15));
        let server = tokio::spawn(async move {
            let empty = json!({"kind": "LeaseList", "apiVersion": "coordination.k8s.io/v1", "metadata": {}, "items": []});
            let (m, uri, _) = respond(&mut handle, 200, |_| empty).await;
            assert_eq!(
                (m, uri.starts_with("/apis/coordination.k8s.io/v1/namespaces/ops/leases?")),
                (Method::GET, true)
            );
            let (m, uri, _) = respond(&mut handle, 404, |_| not_found()).await;
            assert_eq!(
                (m, uri.as_str()),
                (Method::GET, "/apis/coordination.k8s.io/v1/namespaces/ops/leases/ctl")
            );
            let created =
                json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "ctl"}});
            let (m, _, body) = respond(&mut handle, 201, |_| created).await;
            assert_eq!(m, Method::POST);
            assert_eq!(body["spec"]["holderIdentity"], "me");
            assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
            // Second round: someone else renewed it just now.
            let held = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "ctl", "resourceVersion": "7"},
                "spec": {"holderIdentity": "other", "leaseDurationSeconds": 15, "renewTime": Timestamp::now().to_string()}});
            respond(&mut handle, 200, |_| held).await;
        });
        assert_eq!(lock.acquire_or_renew().await, Leadership::Leader);
        assert_eq!(lock.acquire_or_renew().await, Leadership::Follower("other".into()));
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_server_without_leases_means_a_single_replica() {
        let (client, mut handle) = mock();
        let mut lock = LeaseLock::new(client, "ops", "ctl", "me", Duration::from_secs(15));
        let server = tokio::spawn(async move {
            respond(&mut handle, 404, |_| json!("404 page not found")).await;
        });
        assert_eq!(lock.acquire_or_renew().await, Leadership::Unsupported);
        assert_eq!(lock.acquire_or_renew().await, Leadership::Unsupported, "asked once, remembered");
        server.await.unwrap();
    }
}
