//! Owner side: AMI ExtensionStatus events → [`ExportTable`] → every subscribed watcher, filtered
//! by its interest (and by the plan: a watcher only sees what it is named a watcher of).

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::metrics::MeshMetrics;
use super::proto::{self, mesh_server};
use super::table::{ExportTable, StateUpdate};
use super::{lock, unix_nanos};
use crate::ami::{Event, ExtensionState, Session, actions};
use crate::render::MeshPlan;

/// How the owner checks who subscribes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerAuth {
    /// The client certificate (mTLS) must name the watcher the subscription claims.
    Certificate,
    /// Trust the claimed name (plaintext, tests and local use only).
    Insecure,
}

/// A change as it travels from the AMI task to the subscriber tasks.
#[derive(Clone, Debug)]
pub(crate) struct Change {
    pub update: StateUpdate,
    pub observed: u64,
}

/// The exported states of this node and the fan-out of their changes.
pub struct Exporter {
    node: String,
    table: Mutex<ExportTable>,
    changes: broadcast::Sender<Arc<Change>>,
    metrics: MeshMetrics,
    heartbeat: Duration,
    /// Set when the mesh node stops: every subscriber stream ends.
    closed: watch::Sender<bool>,
    /// Bumped on every plan change: subscribers recompute what their watcher may see.
    plan_version: watch::Sender<u64>,
}

pub(crate) fn to_proto(u: &StateUpdate, observed: u64) -> proto::State {
    proto::State {
        extension: u.extension.clone(),
        state: u.state.as_str().to_owned(),
        epoch: u.version.epoch,
        seq: u.version.seq,
        observed_unix_nanos: observed,
    }
}

impl Exporter {
    pub(crate) fn new(
        node: &str,
        epoch: u64,
        metrics: MeshMetrics,
        heartbeat: Duration,
        buffer: usize,
    ) -> Self {
        let (changes, _) = broadcast::channel(buffer.max(16));
        Exporter {
            node: node.to_owned(),
            table: Mutex::new(ExportTable::new(epoch)),
            changes,
            metrics,
            heartbeat,
            closed: watch::Sender::new(false),
            plan_version: watch::Sender::new(0),
        }
    }

    /// Ends every subscriber stream, and refuses new ones.
    pub(crate) fn close(&self) {
        self.closed.send_replace(true);
    }

    pub(crate) fn set_plan(&self, plan: &MeshPlan) {
        lock(&self.table).set_plan(plan);
        self.plan_version.send_modify(|v| *v += 1);
    }

    /// Feeds one observed hint state; sends the change if there is one.
    pub(crate) fn observe(&self, extension: &str, context: &str, state: ExtensionState) {
        let observed = unix_nanos();
        let mut table = lock(&self.table);
        if let Some(update) = table.observe(extension, context, state) {
            // Sent under the lock: a snapshot taken under it is never older than a change
            // a subscriber has yet to receive.
            let _ = self.changes.send(Arc::new(Change { update, observed }));
        }
    }

    fn all_unavailable(&self) {
        let observed = unix_nanos();
        let mut table = lock(&self.table);
        for update in table.all_unavailable() {
            let _ = self.changes.send(Arc::new(Change { update, observed }));
        }
    }

    fn snapshot(
        &self,
        interest: &BTreeSet<String>,
    ) -> (broadcast::Receiver<Arc<Change>>, proto::OwnerMessage) {
        let table = lock(&self.table);
        let rx = self.changes.subscribe();
        let states: Vec<proto::State> =
            table.snapshot(interest.iter().map(String::as_str)).iter().map(|u| to_proto(u, 0)).collect();
        self.metrics.updates_sent.inc_by(states.len() as u64);
        let msg = proto::OwnerMessage {
            kind: Some(proto::owner_message::Kind::Snapshot(proto::Snapshot {
                owner: self.node.clone(),
                epoch: table.epoch(),
                states,
            })),
        };
        (rx, msg)
    }

    fn allowed(&self, watcher: &str, extensions: &[String]) -> BTreeSet<String> {
        let table = lock(&self.table);
        extensions.iter().filter(|e| table.allowed(watcher, e)).cloned().collect()
    }

    fn heartbeat_msg(&self) -> proto::OwnerMessage {
        let v = lock(&self.table).version();
        proto::OwnerMessage {
            kind: Some(proto::owner_message::Kind::Heartbeat(proto::Heartbeat {
                epoch: v.epoch,
                seq: v.seq,
            })),
        }
    }

    /// Follows AMI: ExtensionStatus events, a full ExtensionStateList on every (re)connect and
    /// after missed events, UNAVAILABLE for everything while Asterisk is gone, and plan changes.
    pub(crate) async fn run_ami(self: Arc<Self>, session: Session, mut plan: watch::Receiver<MeshPlan>) {
        let mut events = session.events_with_capacity(65_536);
        let mut state = session.state();
        let mut dropped = 0;
        let mut need_resync = state.borrow().is_connected();
        plan.borrow_and_update();
        loop {
            if need_resync && session.is_connected() {
                need_resync = false;
                match session.call(&actions::ExtensionStateList).await {
                    Ok(list) => {
                        for e in list {
                            self.observe(&e.exten, &e.context, e.status);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "mesh: ExtensionStateList failed; retrying");
                        need_resync = true;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
            }
            tokio::select! {
                ev = events.recv() => {
                    let Some(ev) = ev else { return };
                    if let Event::ExtensionStatus(e) = &*ev {
                        self.observe(&e.exten, &e.context, e.status);
                    }
                    if events.dropped() != dropped {
                        // Missed events: only a full list tells the truth again.
                        dropped = events.dropped();
                        need_resync = true;
                    }
                }
                changed = state.changed() => {
                    if changed.is_err() { return }
                    if state.borrow_and_update().is_connected() {
                        need_resync = true;
                    } else {
                        self.all_unavailable();
                    }
                }
                changed = plan.changed() => {
                    if changed.is_err() { return }
                    self.set_plan(&plan.borrow_and_update());
                    need_resync = true;
                }
            }
        }
    }
}

/// The gRPC `Mesh` service: add it to the agent's tonic server.
#[derive(Clone)]
pub struct MeshService {
    exporter: Arc<Exporter>,
    auth: PeerAuth,
}

impl MeshService {
    pub(crate) fn new(exporter: Arc<Exporter>, auth: PeerAuth) -> Self {
        MeshService { exporter, auth }
    }

    pub(crate) fn exporter(&self) -> &Exporter {
        &self.exporter
    }

    /// The tonic server to add with `Server::builder().add_service(…)`.
    pub fn into_server(self) -> mesh_server::MeshServer<MeshService> {
        mesh_server::MeshServer::new(self)
    }
}

type OwnerStream = Pin<Box<dyn Stream<Item = Result<proto::OwnerMessage, Status>> + Send + 'static>>;

/// Largest number of changes in one `Changes` message.
const BATCH: usize = 512;

#[tonic::async_trait]
impl mesh_server::Mesh for MeshService {
    type SubscribeStream = OwnerStream;

    async fn subscribe(
        &self,
        request: Request<Streaming<proto::Subscribe>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let certs = request.peer_certs();
        let mut inbound = request.into_inner();
        if *self.exporter.closed.borrow() {
            return Err(Status::unavailable("the mesh node is stopping"));
        }
        let first =
            inbound.message().await?.ok_or_else(|| Status::invalid_argument("no Subscribe message"))?;
        if first.owner != self.exporter.node {
            return Err(Status::failed_precondition(format!(
                "this is node {:?}, not {:?}",
                self.exporter.node, first.owner
            )));
        }
        if self.auth == PeerAuth::Certificate {
            let ok = certs
                .as_ref()
                .and_then(|c| c.first())
                .is_some_and(|c| super::tls::cert_names_node(c, &first.watcher));
            if !ok {
                tracing::warn!(watcher = %first.watcher, "mesh: refused a subscriber whose certificate does not name it");
                return Err(Status::permission_denied(format!(
                    "the client certificate does not name node {:?}",
                    first.watcher
                )));
            }
        }
        let (tx, rx) = mpsc::channel(64);
        let exporter = self.exporter.clone();
        tokio::spawn(serve_subscriber(exporter, first, inbound, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn serve_subscriber(
    exporter: Arc<Exporter>,
    first: proto::Subscribe,
    mut inbound: Streaming<proto::Subscribe>,
    tx: mpsc::Sender<Result<proto::OwnerMessage, Status>>,
) {
    let watcher = first.watcher.clone();
    let metrics = exporter.metrics.clone();
    metrics.subscribers.inc();
    let _gauge = scopeguard(move || {
        metrics.subscribers.dec();
    });
    // What the watcher asked for, and the part of it the plan lets it see (recomputed when
    // either changes: the watcher's and the owner's plans do not change at the same instant).
    let mut requested = first.extensions;
    let mut plan_version = exporter.plan_version.subscribe();
    plan_version.borrow_and_update();
    let mut interest = exporter.allowed(&watcher, &requested);
    tracing::info!(%watcher, extensions = interest.len(), "mesh: watcher subscribed");
    let (mut rx, snapshot) = exporter.snapshot(&interest);
    if tx.send(Ok(snapshot)).await.is_err() {
        return;
    }
    let mut closed_rx = exporter.closed.subscribe();
    let closed = async move {
        let _ = closed_rx.wait_for(|c| *c).await;
    };
    tokio::pin!(closed);
    let mut beat = tokio::time::interval(exporter.heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = &mut closed => return,
            msg = inbound.message() => match msg {
                Ok(Some(sub)) => {
                    requested = sub.extensions;
                    interest = exporter.allowed(&watcher, &requested);
                    let (new_rx, snapshot) = exporter.snapshot(&interest);
                    rx = new_rx;
                    if tx.send(Ok(snapshot)).await.is_err() { return }
                }
                _ => return,
            },
            changed = plan_version.changed() => {
                if changed.is_err() { return }
                let allowed = exporter.allowed(&watcher, &requested);
                if allowed != interest {
                    interest = allowed;
                    let (new_rx, snapshot) = exporter.snapshot(&interest);
                    rx = new_rx;
                    if tx.send(Ok(snapshot)).await.is_err() { return }
                }
            }
            change = rx.recv() => {
                let mut batch = Vec::new();
                let mut lagged = false;
                let mut next = change;
                loop {
                    match next {
                        Ok(c) => {
                            if interest.contains(&c.update.extension) {
                                batch.push(to_proto(&c.update, c.observed));
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => { lagged = true; }
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                    if batch.len() >= BATCH { break }
                    next = match rx.try_recv() {
                        Ok(c) => Ok(c),
                        Err(broadcast::error::TryRecvError::Lagged(n)) => Err(broadcast::error::RecvError::Lagged(n)),
                        Err(_) => break,
                    };
                }
                if lagged {
                    // Too far behind: a snapshot (the latest state of each) replaces the backlog.
                    exporter.metrics.lag_snapshots.inc();
                    let (new_rx, snapshot) = exporter.snapshot(&interest);
                    rx = new_rx;
                    if tx.send(Ok(snapshot)).await.is_err() { return }
                    continue;
                }
                if !batch.is_empty() {
                    exporter.metrics.updates_sent.inc_by(batch.len() as u64);
                    let msg = proto::OwnerMessage { kind: Some(proto::owner_message::Kind::Changes(proto::Changes { states: batch })) };
                    if tx.send(Ok(msg)).await.is_err() { return }
                    beat.reset();
                }
            }
            _ = beat.tick() => {
                if tx.send(Ok(exporter.heartbeat_msg())).await.is_err() { return }
            }
        }
    }
}

struct Guard<F: FnMut()>(F);
impl<F: FnMut()> Drop for Guard<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}
fn scopeguard<F: FnMut()>(f: F) -> Guard<F> {
    Guard(f)
}
