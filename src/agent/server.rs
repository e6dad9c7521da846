//! The agent's servers: gRPC (`Agent` service, token or mTLS) and HTTP (`/healthz`, `/readyz`,
//! `/metrics`), around one shared [`Node`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use tokio::sync::{Notify, oneshot, watch};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::{Request, Response, Status};

use super::client::read_file;
use super::error::AgentError;
use super::node::{Node, NodeConfig, bundle_from_proto};
use super::proto::{self, agent_server};
use crate::ami::{Session, SessionConfig};
use crate::render::Bundle;
use crate::secret::SecretValue;

/// PEM files of the gRPC server's TLS identity, and the CA that client certificates must chain to
/// (mTLS) when given.
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// The device-state mesh (docs/mesh.md): its own listener, because its TLS differs from the
/// Apply API's (client certificates from the mesh CA, named after the node they come from).
#[derive(Clone, Debug)]
pub struct MeshOptions {
    /// Where other agents subscribe; its port is also where this agent dials them (the fleet's
    /// mesh port, on the host of each owner's agent endpoint).
    pub listen: SocketAddr,
    /// mTLS material; `None` = plaintext, trusting claimed node names (needs `--plaintext` and a
    /// loopback listen address).
    pub tls: Option<crate::mesh::MeshTls>,
    /// Owner node → mesh URL, overriding the above (tests, odd networks).
    pub endpoints: std::collections::BTreeMap<String, String>,
}

/// Everything `asterisk-operator agent` needs.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    pub node: NodeConfig,
    pub ami: SessionConfig,
    pub grpc_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub tls: Option<ServerTls>,
    /// Callers must send `authorization: Bearer <token>`.
    pub token: Option<SecretValue>,
    /// Serve gRPC (and the mesh, without mesh certificates) in plaintext: loopback only.
    pub plaintext: bool,
    /// Accept callers that present neither a token nor a client certificate: loopback only.
    pub no_auth: bool,
    /// Take part in the device-state mesh.
    pub mesh: Option<MeshOptions>,
    /// Serve the desk phones' provisioning files (TFTP, HTTP, HTTPS).
    pub provision: crate::provision::ProvisionOptions,
}

impl AgentOptions {
    /// Refuses configurations that would expose the Apply API (which writes dialplan: code
    /// execution on the PBX) or the mesh without protection. Plaintext and unauthenticated
    /// serving are each a separate, explicit choice, and only on a loopback address: one flag
    /// must never open the network.
    pub fn check(&self) -> Result<(), AgentError> {
        let grpc = self.grpc_listen;
        if self.tls.is_none() && !self.plaintext {
            return Err(AgentError::Options(
                "gRPC without TLS needs --plaintext (loopback only); give --tls-cert and --tls-key".into(),
            ));
        }
        if self.tls.is_none() && !grpc.ip().is_loopback() {
            return Err(AgentError::Options(format!(
                "--plaintext serves the Apply API unencrypted, so only on a loopback address, not {grpc}: give --tls-cert and --tls-key, or --grpc-listen 127.0.0.1:{}",
                grpc.port()
            )));
        }
        let mtls = self.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        if !mtls && self.token.is_none() && !self.no_auth {
            return Err(AgentError::Options(
                "no caller authentication: give --tls-client-ca (mTLS) or --token-file (or --no-auth, loopback only)".into(),
            ));
        }
        if let Some(file) = &self.node.provisioning_file
            && file.starts_with(&self.node.config_dir)
        {
            return Err(AgentError::Options(format!(
                "--provisioning-file {} is inside Asterisk's config folder {}: keep the phones' files where Asterisk does not read them",
                file.display(),
                self.node.config_dir.display()
            )));
        }
        if !mtls && self.token.is_none() && !grpc.ip().is_loopback() {
            return Err(AgentError::Options(format!(
                "--no-auth lets anyone who reaches {grpc} apply configuration (code execution on the PBX), so only on a loopback address: give --token-file or --tls-client-ca"
            )));
        }
        if let Some(mesh) = self.mesh.as_ref().filter(|m| m.tls.is_none()) {
            if !self.plaintext {
                return Err(AgentError::Options(
                    "the mesh without mTLS needs --plaintext (loopback only); give --mesh-ca, --mesh-cert and --mesh-key".into(),
                ));
            }
            if !mesh.listen.ip().is_loopback() {
                return Err(AgentError::Options(format!(
                    "the mesh without mTLS trusts the node name each peer claims, so only on a loopback address, not {}: give --mesh-ca, --mesh-cert and --mesh-key",
                    mesh.listen
                )));
            }
        }
        Ok(())
    }
}

/// Keeps at most one bundle waiting behind the one being applied; a newer one replaces it.
struct ApplyQueue {
    pending: Mutex<Option<(Bundle, oneshot::Sender<proto::ApplyResult>)>>,
    notify: Notify,
}

impl ApplyQueue {
    fn submit(&self, node: &Node, bundle: Bundle) -> oneshot::Receiver<proto::ApplyResult> {
        let (tx, rx) = oneshot::channel();
        let hash = bundle.hash.clone();
        let old = self.pending.lock().unwrap_or_else(|p| p.into_inner()).replace((bundle, tx));
        if let Some((old, old_tx)) = old {
            node.metrics.count_apply("superseded");
            let _ = old_tx.send(proto::ApplyResult {
                ok: false,
                superseded: true,
                applied_hash: node.status().applied_hash,
                error: Some(proto::ApplyError {
                    file: String::new(),
                    message: format!(
                        "superseded by bundle {} before it was applied",
                        &hash[..12.min(hash.len())]
                    ),
                }),
                ..Default::default()
            });
            tracing::info!(superseded = %old.short_hash(), by = %&hash[..12.min(hash.len())], "queued bundle superseded");
        }
        self.notify.notify_one();
        rx
    }

    async fn worker(self: Arc<Self>, node: Arc<Node>) {
        loop {
            self.notify.notified().await;
            loop {
                let next = self.pending.lock().unwrap_or_else(|p| p.into_inner()).take();
                let Some((bundle, tx)) = next else { break };
                let result = node.apply(&bundle).await;
                let _ = tx.send(result);
            }
        }
    }
}

/// The gRPC `Agent` service.
pub struct AgentService {
    node: Arc<Node>,
    queue: Arc<ApplyQueue>,
    /// The mesh's mirrors, reported in the node's Status (BLF subscriptions' `Mirrored`).
    mirrors: Option<crate::mesh::MirrorReader>,
}

impl AgentService {
    /// A service applying through `node`, with its own apply worker; `mirrors` when the agent
    /// runs the mesh.
    pub fn new(node: Arc<Node>, mirrors: Option<crate::mesh::MirrorReader>) -> Self {
        let queue = Arc::new(ApplyQueue { pending: Mutex::new(None), notify: Notify::new() });
        tokio::spawn(queue.clone().worker(node.clone()));
        AgentService { node, queue, mirrors }
    }
}

#[tonic::async_trait]
impl agent_server::Agent for AgentService {
    async fn apply(&self, request: Request<proto::Bundle>) -> Result<Response<proto::ApplyResult>, Status> {
        let bundle = bundle_from_proto(request.into_inner()).map_err(Status::invalid_argument)?;
        let cfg = &self.node.cfg;
        if bundle.node != cfg.node || bundle.namespace != cfg.namespace {
            tracing::warn!(
                namespace = %bundle.namespace, node = %bundle.node,
                "refused a bundle for another node: this agent serves {}/{}", cfg.namespace, cfg.node
            );
            return Err(Status::permission_denied(format!(
                "this agent serves node {}/{}, not {}/{}",
                cfg.namespace, cfg.node, bundle.namespace, bundle.node
            )));
        }
        let rx = self.queue.submit(&self.node, bundle);
        let result = rx.await.map_err(|_| Status::unavailable("agent shutting down"))?;
        Ok(Response::new(result))
    }

    async fn status(&self, _: Request<proto::StatusRequest>) -> Result<Response<proto::NodeStatus>, Status> {
        let mut status = self.node.node_status().await;
        if let Some(mirrors) = &self.mirrors {
            status.mesh = true;
            status.mirrors = mirrors
                .views()
                .into_iter()
                .map(|v| proto::MirrorState {
                    owner: v.owner,
                    extension: v.extension,
                    state: v.state.as_str().to_owned(),
                    live: v.live,
                    changed_unix: (v.changed / 1_000_000_000) as i64,
                })
                .collect();
        }
        Ok(Response::new(status))
    }
}

/// Checks `authorization: Bearer <token>` when a token is configured.
#[derive(Clone)]
pub struct TokenCheck(Option<Arc<SecretValue>>);

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.0 else { return Ok(request) };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if constant_time_eq(given.as_bytes(), token.expose().as_bytes()) {
            Ok(request)
        } else {
            Err(Status::unauthenticated("missing or wrong bearer token"))
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A running agent: its bound addresses and its node, until [`RunningAgent::shutdown`].
pub struct RunningAgent {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub node: Arc<Node>,
    /// The provisioning servers and their bound addresses.
    pub provision: crate::provision::RunningProvision,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    mesh: Option<RunningMesh>,
}

impl RunningAgent {
    /// Graceful stop: no new requests, in-flight ones finish, AMI Logoff.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Some(mesh) = self.mesh {
            mesh.shutdown().await;
        }
        self.provision.stopped(SHUTDOWN_GRACE).await;
        // Graceful: servers stop accepting and finish in-flight calls. A client that keeps an
        // idle connection open (HTTP/2, keep-alive) would hold that forever, so it gets a grace
        // period and is then cut.
        for mut t in self.tasks {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut t).await.is_err() {
                tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
                t.abort();
            }
        }
        self.node.session.close().await;
        tracing::info!("agent stopped");
    }
}

/// How long a graceful shutdown waits for open connections.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Starts the agent: AMI session, node tasks, gRPC and HTTP servers. Port 0 picks a free port
/// (see the addresses in the result).
pub async fn start(opts: AgentOptions) -> Result<RunningAgent, AgentError> {
    opts.check()?;
    let tls = match &opts.tls {
        None => None,
        Some(t) => {
            let read = read_file;
            let mut cfg = ServerTlsConfig::new().identity(Identity::from_pem(read(&t.cert)?, read(&t.key)?));
            if let Some(ca) = &t.client_ca {
                cfg = cfg.client_ca_root(Certificate::from_pem(read(ca)?));
            }
            Some(cfg)
        }
    };
    let bind = |what, addr| async move {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| AgentError::Bind {
            what,
            addr,
            source,
        })?;
        let local = listener.local_addr().map_err(|source| AgentError::Bind { what, addr, source })?;
        Ok::<_, AgentError>((listener, local))
    };
    let (grpc, grpc_addr) = bind("gRPC", opts.grpc_listen).await?;
    let (http, http_addr) = bind("HTTP", opts.http_listen).await?;

    let (session, events) = Session::spawn_subscribed(opts.ami.clone(), 1024);
    let node = Node::start(opts.node.clone(), session, events);
    let (stop, stopped) = watch::channel(false);
    let wait = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let mesh = match &opts.mesh {
        Some(m) => Some(RunningMesh::start(&opts.node.node, m, &node).await?),
        None => None,
    };
    let provision =
        crate::provision::start(&opts.provision, node.provisioning.clone(), stopped.clone()).await?;

    let service = tonic::service::interceptor::InterceptedService::new(
        agent_server::AgentServer::new(AgentService::new(
            node.clone(),
            mesh.as_ref().map(|m| m.node.mirror_reader()),
        ))
        .max_decoding_message_size(super::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(super::MAX_MESSAGE_BYTES),
        TokenCheck(opts.token.clone().map(Arc::new)),
    );
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).map_err(AgentError::Tls)?;
    }
    let grpc_task = {
        let signal = wait(stopped.clone());
        let router = builder.add_service(service);
        tokio::spawn(async move {
            if let Err(e) = router
                .serve_with_incoming_shutdown(TcpIncoming::from(grpc).with_nodelay(Some(true)), signal)
                .await
            {
                tracing::error!(error = %e, "gRPC server failed");
            }
        })
    };
    let http_task = {
        let signal = wait(stopped.clone());
        let app = axum::Router::new()
            .route("/healthz", axum::routing::get(healthz))
            .route("/readyz", axum::routing::get(readyz))
            .route("/metrics", axum::routing::get(metrics))
            .with_state(node.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(http, app).with_graceful_shutdown(signal).await {
                tracing::error!(error = %e, "HTTP server failed");
            }
        })
    };
    tracing::info!(
        node = %opts.node.node,
        grpc = %grpc_addr,
        http = %http_addr,
        ami = %opts.ami.addr,
        tls = opts.tls.is_some(),
        mtls = opts.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
        token = opts.token.is_some(),
        "agent started"
    );
    Ok(RunningAgent { grpc_addr, http_addr, node, provision, stop, tasks: vec![grpc_task, http_task], mesh })
}

/// The mesh beside the agent: it follows the applied bundle's mesh plan.
struct RunningMesh {
    node: crate::mesh::MeshNode,
    server: crate::mesh::MeshServer,
    follow: tokio::task::JoinHandle<()>,
}

impl RunningMesh {
    async fn start(name: &str, opts: &MeshOptions, node: &Arc<Node>) -> Result<RunningMesh, AgentError> {
        use crate::mesh::{MeshConfig, MeshNode, PeerAuth};
        let initial = node
            .status()
            .mesh
            .unwrap_or_else(|| crate::render::MeshPlan { node: name.to_owned(), ..Default::default() });
        let (plan_tx, plan_rx) = watch::channel(initial);
        let mut cfg = MeshConfig::new(name);
        cfg.tls = opts.tls.clone();
        cfg.peer_port = Some(opts.listen.port());
        cfg.endpoints = opts.endpoints.clone();
        let auth = if cfg.tls.is_some() { PeerAuth::Certificate } else { PeerAuth::Insecure };
        let mesh =
            MeshNode::spawn_with_metrics(cfg, plan_rx, node.session.clone(), auth, node.metrics.mesh.clone());
        let server = crate::mesh::serve(mesh.service(), opts.listen, opts.tls.as_ref())
            .await
            .map_err(|source| AgentError::Mesh { addr: opts.listen, source })?;
        // A newly applied plan takes effect at once; links and streams stay up.
        let weak = Arc::downgrade(node);
        let follow = tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
            loop {
                tick.tick().await;
                let Some(plan) = weak.upgrade().map(|n| n.status().mesh) else { return };
                if let Some(plan) = plan {
                    plan_tx.send_if_modified(|p| {
                        let changed = *p != plan;
                        *p = plan;
                        changed
                    });
                }
            }
        });
        tracing::info!(listen = %server.addr, mtls = opts.tls.is_some(), "mesh started");
        Ok(RunningMesh { node: mesh, server, follow })
    }

    async fn shutdown(self) {
        self.follow.abort();
        self.node.shutdown();
        self.server.stop().await;
    }
}

/// Runs until `shutdown` resolves (SIGTERM / ctrl-c in the CLI), then stops gracefully.
pub async fn run(
    opts: AgentOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    let agent = start(opts).await?;
    shutdown.await;
    tracing::info!("shutting down");
    agent.shutdown().await;
    Ok(())
}

async fn healthz(State(node): State<Arc<Node>>) -> impl IntoResponse {
    match node.health().await {
        Ok(rtt) => (StatusCode::OK, format!("ok: Asterisk answered an AMI Ping in {} ms\n", rtt.as_millis())),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}

async fn readyz(State(node): State<Arc<Node>>) -> impl IntoResponse {
    match node.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")),
    }
}

async fn metrics(State(node): State<Arc<Node>>) -> impl IntoResponse {
    node.metrics.sync_session(&node.session.stats());
    node.metrics.ami_connected.set(i64::from(node.session.is_connected()));
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        node.metrics.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_check_accepts_only_the_token() {
        let mut check = TokenCheck(Some(Arc::new(SecretValue::new("s3cret-token"))));
        let with = |v: Option<&str>| {
            let mut r = Request::new(());
            if let Some(v) = v {
                r.metadata_mut().insert("authorization", v.parse().unwrap());
            }
            r
        };
        use tonic::service::Interceptor;
        assert!(check.call(with(Some("Bearer s3cret-token"))).is_ok());
        for bad in [None, Some("Bearer wrong"), Some("s3cret-token"), Some("Bearer s3cret-token2")] {
            let err = check.call(with(bad)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated);
        }
        assert!(TokenCheck(None).call(with(None)).is_ok());
    }
}
