//! Leader election, so two controller replicas never act at the same time.
//!
//! The Lease is renewed by its own task ([`elect`]), every few seconds whatever a reconcile pass
//! is doing — a pass can take minutes (agents slow to answer, many patches). The task publishes
//! a [`Gate`]: the pass is cancelled when it closes, and every write is checked against it at the
//! moment it is sent — Kubernetes writes by [`gated_client`], agent pushes by the fleet
//! reconciler — so a leader that cannot renew stops acting before a standby may take over.

mod gate;
mod lease;

use std::time::Instant;

use kube::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use gate::{Gate, Term, Timing};
pub use lease::{Decision, Leadership, LeaseLock, decide};

/// The running election: dropping it stops renewing (the term then lapses on its own).
pub struct Election {
    task: Option<JoinHandle<LeaseLock>>,
    stop: watch::Sender<bool>,
}

impl Election {
    /// Stops renewing and releases the Lease, so a standby takes over without waiting for it
    /// to lapse.
    pub async fn resign(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take()
            && let Ok(lock) = task.await
        {
            lock.release().await;
        }
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Starts renewing `lock` every `timing.retry`; the gate says when this replica may act.
pub fn elect(mut lock: LeaseLock, timing: Timing) -> (Gate, Election) {
    let (term_tx, term_rx) = watch::channel(Term::Standby);
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        loop {
            let started = Instant::now();
            // A renewal that hangs must not outlive its own term: give up at the deadline.
            let leadership = tokio::select! {
                l = lock.acquire_or_renew() => Some(l),
                () = tokio::time::sleep(timing.renew_deadline) => None,
                _ = stopped.changed() => return lock,
            };
            if leadership.is_none() {
                tracing::warn!("renewing the leader Lease timed out");
            }
            let was = *term_tx.borrow();
            let term = gate::next_term(was, leadership.as_ref(), started, timing);
            match (was, term) {
                (Term::Until(_), Term::Standby) => {
                    tracing::warn!("another replica holds the leader Lease; standing by")
                }
                (Term::Standby, Term::Until(_)) => tracing::info!("holding the leader Lease"),
                _ => {}
            }
            term_tx.send_replace(term);
            tokio::select! {
                () = tokio::time::sleep_until((started + timing.retry).into()) => {}
                _ = stopped.changed() => return lock,
            }
        }
    });
    (Gate::new(term_rx), Election { task: Some(task), stop })
}

/// Refused: this replica does not hold the leader Lease now.
#[derive(Debug, thiserror::Error)]
#[error("not the leader (the leader Lease is held elsewhere or lapsed): write refused")]
pub struct NotLeader;

/// `client`, with every write (POST, PUT, PATCH, DELETE) refused while `gate` is closed: the
/// last line of defence behind cancelling the pass, checked when the request is sent. Reads and
/// watches pass, so a standby's caches stay warm.
pub fn gated_client(client: Client, gate: Gate) -> Client {
    let namespace = client.default_namespace().to_owned();
    let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
        let (client, gate) = (client.clone(), gate.clone());
        async move {
            let reads = matches!(*request.method(), http::Method::GET | http::Method::HEAD);
            if !reads && !gate.may_act() {
                return Err(Box::new(NotLeader) as tower::BoxError);
            }
            client.send(request).await.map_err(|e| Box::new(e) as tower::BoxError)
        }
    });
    Client::new(service, namespace)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::Method;
    use serde_json::json;

    use super::*;
    use crate::controller::mock_api::{mock, respond};

    #[tokio::test]
    async fn writes_are_refused_while_the_gate_is_closed_and_reads_pass() {
        let (client, mut handle) = mock();
        let (tx, rx) = watch::channel(Term::Standby);
        let client = gated_client(client, Gate::new(rx));
        let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(client, "ops");
        let server = tokio::spawn(async move {
            let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
            let (m, _, _) = respond(&mut handle, 200, |_| cm.clone()).await;
            assert_eq!(m, Method::GET);
            let (m, _, _) = respond(&mut handle, 200, |_| cm).await;
            assert_eq!(m, Method::PATCH, "the only write that reaches the server");
            handle
        });
        api.get("x").await.expect("a standby reads");
        let patch = kube::api::Patch::Merge(json!({"data": {"k": "v"}}));
        let refused = api.patch("x", &Default::default(), &patch).await.unwrap_err();
        assert!(refused.to_string().contains("not the leader"), "{refused}");
        tx.send(Term::Until(Instant::now() + Duration::from_secs(60))).unwrap();
        api.patch("x", &Default::default(), &patch).await.expect("the leader writes");
        let mut handle = server.await.unwrap();
        assert!(crate::controller::mock_api::silent(&mut handle).await);
    }
}
