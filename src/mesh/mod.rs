//! The cross-node device-state mesh.
//!
//! An owner exports the states of its own extensions that other nodes watch; a watcher mirrors
//! them onto local custom device states (`Custom:<owner>-<ext>`) that its hints use.
//!
//! * [`table`] — pure: what an owner exports, what a watcher mirrors (versions, coalescing).
//! * [`owner`] — AMI ExtensionStatus → the gRPC `Mesh` service ([`MeshService`]).
//! * [`watcher`] — links to owners, liveness, the Setvar writer.
//! * [`tls`] — mTLS between peers (certificate names = node names); the listener's side reloads
//!   its certificate files without a restart (`listener`).
//! * [`metrics`] — `asterisk_agent_mesh_*`.
//!
//! The agent hooks it in with [`MeshNode::spawn`] (its AMI session and mesh plan) and adds
//! [`MeshNode::service`] to its tonic server; [`serve`] runs the service on its own listener.

pub mod error;
mod listener;
pub mod metrics;
pub mod owner;
pub mod table;
pub mod tls;
pub mod watcher;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use error::MeshError;
pub use metrics::MeshMetrics;
pub use owner::{MeshService, PeerAuth};
pub use table::{ExportTable, MirrorTable, MirrorView, Outcome, PendingWrite, StateUpdate, Version};
pub use tls::MeshTls;

use crate::ami::{DeviceState, Session};
use crate::render::MeshPlan;

/// Generated gRPC types and the tonic client/server of `proto/mesh.proto`.
pub mod proto {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("asterisk_operator.mesh.v1");
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Is `url`'s host a loopback address (or `localhost`)?
fn loopback_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<tonic::transport::Uri>() else { return false };
    let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Settings of a node's part in the mesh.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    /// This node's name (what it claims when subscribing; its certificate's name under mTLS).
    pub node: String,
    /// mTLS material; `None` = plaintext (`http://` endpoints; tests and local use only).
    pub tls: Option<MeshTls>,
    /// Endpoints of owners by node name, overriding the plan's `endpoint` (e.g. tests on
    /// loopback, or a mesh port other than the agent's).
    pub endpoints: BTreeMap<String, String>,
    /// The fleet's mesh port: owners without an `endpoints` entry are dialled at their plan
    /// endpoint's host (the agent URL) on this port, `https` with `tls`, else `http`. `None`:
    /// the plan endpoint as it is.
    pub peer_port: Option<u16>,
    /// How often an owner sends a heartbeat on an idle stream.
    pub heartbeat_interval: Duration,
    /// Silence after which an owner counts as gone (its mirrors UNAVAILABLE).
    pub heartbeat_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Setvar writes in flight at once.
    pub max_in_flight: usize,
    /// Changes buffered per subscriber before it gets a fresh snapshot instead.
    pub change_buffer: usize,
    /// The owner's epoch; default: its start time in µs (grows across restarts).
    pub epoch: Option<u64>,
}

impl MeshConfig {
    /// Defaults: heartbeat 1 s, timeout 3 s, backoff 100 ms … 500 ms (a restarted owner is back
    /// within a second; a retry is one TCP connect), 64 writes in flight.
    pub fn new(node: &str) -> Self {
        MeshConfig {
            node: node.to_owned(),
            tls: None,
            endpoints: BTreeMap::new(),
            peer_port: None,
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(3),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(500),
            max_in_flight: 64,
            change_buffer: 8192,
            epoch: None,
        }
    }

    fn endpoint_of(&self, owner: &str, plan_endpoint: Option<&str>) -> Option<String> {
        let endpoint = match self.endpoints.get(owner) {
            Some(e) => e.clone(),
            None => {
                let plan = plan_endpoint?;
                match self.peer_port {
                    None => plan.to_owned(),
                    Some(port) => {
                        let uri: tonic::transport::Uri = plan.parse().ok()?;
                        let scheme = if self.tls.is_some() { "https" } else { "http" };
                        format!("{scheme}://{}:{port}", uri.host()?)
                    }
                }
            }
        };
        // Without mTLS nothing proves who answers: only an owner on this machine is trusted.
        if self.tls.is_none() && !loopback_url(&endpoint) {
            tracing::warn!(%owner, %endpoint, "mesh: no mTLS, so only loopback owners are dialled; its mirrors stay UNAVAILABLE");
            return None;
        }
        Some(endpoint)
    }
}

struct Link {
    endpoint: String,
    interest: watch::Sender<Vec<String>>,
    live: Arc<watcher::Liveness>,
    metrics: MeshMetrics,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Link {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if watcher::is_up(&self.live) {
            self.metrics.peers_up.dec();
        }
    }
}

/// Reads a watcher's mirrors ([`MeshNode::mirror_reader`]).
#[derive(Clone)]
pub struct MirrorReader(Arc<watcher::Mirrors>);

impl MirrorReader {
    /// Every mirror the node keeps: its state, whether its owner is heard from, when it changed.
    pub fn views(&self) -> Vec<MirrorView> {
        lock(&self.0.table).views()
    }
}

/// A node's part in the mesh: the owner side (its [`MeshService`]) and the watcher side (links
/// to the owners its plan names, and the writer). Dropping it (or [`MeshNode::shutdown`]) stops
/// every task.
pub struct MeshNode {
    service: MeshService,
    metrics: MeshMetrics,
    mirrors: Arc<watcher::Mirrors>,
    links: Arc<Mutex<BTreeMap<String, Link>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl MeshNode {
    /// Starts the mesh on `session` (the agent's AMI session) following `plan` (update it
    /// through the watch channel: new or dropped BLF targets take effect at once).
    pub fn spawn(
        cfg: MeshConfig,
        plan: watch::Receiver<MeshPlan>,
        session: Session,
        auth: PeerAuth,
    ) -> MeshNode {
        Self::spawn_with_metrics(cfg, plan, session, auth, MeshMetrics::default())
    }

    /// [`MeshNode::spawn`] counting into `metrics` (e.g. the ones the agent's registry holds).
    pub fn spawn_with_metrics(
        cfg: MeshConfig,
        plan: watch::Receiver<MeshPlan>,
        session: Session,
        auth: PeerAuth,
        metrics: MeshMetrics,
    ) -> MeshNode {
        let cfg = Arc::new(cfg);
        let epoch = cfg.epoch.unwrap_or_else(|| unix_nanos() / 1000);
        let exporter = Arc::new(owner::Exporter::new(
            &cfg.node,
            epoch,
            metrics.clone(),
            cfg.heartbeat_interval,
            cfg.change_buffer,
        ));
        // The plan is in force before the service can answer anyone.
        exporter.set_plan(&plan.borrow());
        let mirrors = Arc::new(watcher::Mirrors {
            table: Mutex::new(MirrorTable::new()),
            dirty: tokio::sync::Notify::new(),
            metrics: metrics.clone(),
        });
        let links = Arc::new(Mutex::new(BTreeMap::new()));
        let tasks = vec![
            tokio::spawn(exporter.clone().run_ami(session.clone(), plan.clone())),
            tokio::spawn(watcher::writer(cfg.clone(), session, mirrors.clone())),
            tokio::spawn(follow_plan(cfg.clone(), plan, mirrors.clone(), links.clone())),
        ];
        MeshNode { service: MeshService::new(exporter, auth), metrics, mirrors, links, tasks }
    }

    /// The gRPC service to add to the agent's server.
    pub fn service(&self) -> MeshService {
        self.service.clone()
    }

    /// The mesh metrics (register them in the agent's registry with [`MeshMetrics::register`]).
    pub fn metrics(&self) -> &MeshMetrics {
        &self.metrics
    }

    /// What this node should show for a mirrored device now (tests, status).
    pub fn desired(&self, device: &str) -> Option<DeviceState> {
        lock(&self.mirrors.table).desired(device)
    }

    /// A handle that reads this node's mirrors for as long as the mesh runs (for the agent's
    /// Status).
    pub fn mirror_reader(&self) -> MirrorReader {
        MirrorReader(self.mirrors.clone())
    }

    /// Mirror writes not yet done.
    pub fn pending_writes(&self) -> usize {
        lock(&self.mirrors.table).pending_len()
    }

    /// Owners whose snapshot is in force (subscribed and heard from within the timeout).
    pub fn owners_up(&self) -> Vec<String> {
        lock(&self.links).iter().filter(|(_, l)| watcher::is_up(&l.live)).map(|(o, _)| o.clone()).collect()
    }

    /// Why the link to `owner` last went down (every cause, e.g. `invalid peer certificate:
    /// NotValidForName`), if it did.
    pub fn link_error(&self, owner: &str) -> Option<String> {
        lock(&self.links).get(owner).and_then(|l| watcher::last_error(&l.live))
    }

    /// Stops every task (links, writer, AMI follower). The service stops with its server.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.service.exporter().close();
        for t in self.tasks.drain(..) {
            t.abort();
        }
        lock(&self.links).clear();
    }
}

impl Drop for MeshNode {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn follow_plan(
    cfg: Arc<MeshConfig>,
    mut plan: watch::Receiver<MeshPlan>,
    mirrors: Arc<watcher::Mirrors>,
    links: Arc<Mutex<BTreeMap<String, Link>>>,
) {
    loop {
        let current = plan.borrow_and_update().clone();
        reconcile_links(&cfg, &current, &mirrors, &mut lock(&links));
        if plan.changed().await.is_err() {
            return;
        }
    }
}

/// Brings the mirror table and the owner links in line with `plan`: new owners get a link,
/// dropped ones lose theirs, and the rest get their new interest on their open stream.
fn reconcile_links(
    cfg: &Arc<MeshConfig>,
    plan: &MeshPlan,
    mirrors: &Arc<watcher::Mirrors>,
    links: &mut BTreeMap<String, Link>,
) {
    lock(&mirrors.table).set_plan(plan);
    mirrors.dirty.notify_one();
    links.retain(|owner, _| plan.sources.iter().any(|s| &s.node == owner));
    for source in &plan.sources {
        let interest = lock(&mirrors.table).interest(&source.node);
        let Some(endpoint) = cfg.endpoint_of(&source.node, source.endpoint.as_deref()) else {
            tracing::warn!(owner = %source.node, "mesh: no usable endpoint for owner; its mirrors stay UNAVAILABLE");
            links.remove(&source.node);
            continue;
        };
        if let Some(link) = links.get(&source.node).filter(|l| l.endpoint == endpoint) {
            link.interest.send_if_modified(|i| {
                let changed = *i != interest;
                *i = interest.clone();
                changed
            });
            continue;
        }
        let (tx, rx) = watch::channel(interest);
        let live = watcher::new_liveness();
        let tasks = [
            tokio::spawn(watcher::link(
                cfg.clone(),
                source.node.clone(),
                endpoint.clone(),
                rx,
                mirrors.clone(),
                live.clone(),
            )),
            tokio::spawn(watcher::watchdog(cfg.clone(), source.node.clone(), mirrors.clone(), live.clone())),
        ];
        let metrics = mirrors.metrics.clone();
        links.insert(source.node.clone(), Link { endpoint, interest: tx, live, metrics, tasks });
    }
}

/// A running mesh server of its own (when not added to the agent's server).
pub struct MeshServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<()>,
    certs: Option<Arc<listener::ServerCerts>>,
}

impl MeshServer {
    /// Stops accepting and ends every open stream.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if tokio::time::timeout(Duration::from_secs(2), &mut self.task).await.is_err() {
            self.task.abort();
        }
    }

    /// Why the last TLS handshake this server refused was refused (which certificate check
    /// failed), if any.
    pub fn last_refusal(&self) -> Option<String> {
        self.certs.as_ref().and_then(|c| c.last_refusal())
    }

    /// How often the certificate files were reloaded since the start.
    pub fn certificate_reloads(&self) -> u64 {
        self.certs.as_ref().map_or(0, |c| c.reloads())
    }
}

/// Serves `service` on `listen` (port 0 picks one), with mTLS when `tls` is given. The TLS
/// certificate files are re-read every [`listener::RELOAD_EVERY`]: new handshakes use what
/// they hold, open links keep going.
pub async fn serve(
    service: MeshService,
    listen: SocketAddr,
    tls: Option<&MeshTls>,
) -> Result<MeshServer, MeshError> {
    let tcp = tokio::net::TcpListener::bind(listen).await.map_err(MeshError::Bind)?;
    let addr = tcp.local_addr().map_err(MeshError::Bind)?;
    let router = tonic::transport::Server::builder().tcp_nodelay(true).add_service(service.into_server());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let signal = async {
        let _ = stopped.await;
    };
    let (task, certs) = match tls {
        None => {
            let incoming = tonic::transport::server::TcpIncoming::from(tcp).with_nodelay(Some(true));
            let task = tokio::spawn(async move {
                if let Err(e) = router.serve_with_incoming_shutdown(incoming, signal).await {
                    tracing::error!(error = %e, "mesh server failed");
                }
            });
            (task, None)
        }
        Some(tls) => {
            let certs = Arc::new(listener::ServerCerts::load(tls)?);
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            let acceptor = tokio::spawn(listener::accept(tcp, certs.clone(), tx));
            let incoming = tokio_stream::wrappers::ReceiverStream::new(rx);
            let task = tokio::spawn(async move {
                if let Err(e) = router.serve_with_incoming_shutdown(incoming, signal).await {
                    tracing::error!(error = %e, "mesh server failed");
                }
                acceptor.abort();
            });
            (task, Some(certs))
        }
    };
    Ok(MeshServer { addr, stop: Some(stop), task, certs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_dialled_at_the_fleet_mesh_port_unless_overridden() {
        let mut cfg = MeshConfig::new("office-a");
        cfg.tls = Some(MeshTls { ca: "ca".into(), cert: "c".into(), key: "k".into() });
        assert_eq!(
            cfg.endpoint_of("office-b", Some("https://office-b-agent:7443")).unwrap(),
            "https://office-b-agent:7443"
        );
        cfg.peer_port = Some(7444);
        assert_eq!(
            cfg.endpoint_of("office-b", Some("https://10.0.0.2:7443/")).unwrap(),
            "https://10.0.0.2:7444"
        );
        // A managed owner: pod 0 under its headless Service (what the topology gives as its agent
        // endpoint), on the fleet's mesh port; its certificate is checked against "office-c".
        let managed = crate::topology::managed_agent_endpoint("pbx", "office-c");
        assert_eq!(
            cfg.endpoint_of("office-c", Some(&managed)).unwrap(),
            "https://asterisk-office-c-0.asterisk-office-c.pbx.svc:7444"
        );
        assert_eq!(cfg.endpoint_of("office-b", None), None);
        cfg.endpoints.insert("office-b".into(), "https://127.0.0.9:9999".into());
        assert_eq!(cfg.endpoint_of("office-b", None).unwrap(), "https://127.0.0.9:9999");
    }

    #[test]
    fn without_mtls_only_loopback_owners_are_dialled() {
        let mut cfg = MeshConfig::new("office-a");
        cfg.peer_port = Some(7444);
        assert_eq!(
            cfg.endpoint_of("office-b", Some("https://office-b-agent:7443")),
            None,
            "nothing proves who answers"
        );
        assert_eq!(
            cfg.endpoint_of("office-b", Some("https://127.0.0.2:7443")).unwrap(),
            "http://127.0.0.2:7444"
        );
        cfg.endpoints.insert("office-c".into(), "http://[::1]:7444".into());
        assert_eq!(cfg.endpoint_of("office-c", None).unwrap(), "http://[::1]:7444");
    }
}
