//! Watcher side: one link per owning node (dial, subscribe with the interest set, apply snapshot
//! and changes to the [`MirrorTable`], reconnect with backoff and jitter), a watchdog per owner
//! (silent past the timeout → its mirrors UNAVAILABLE), and one writer that turns pending
//! mirrors into AMI `Setvar DEVICE_STATE(Custom:…)`, coalescing whatever arrives meanwhile.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use super::error::MeshError;
use super::metrics::{MeshMetrics, PeerLabel};
use super::proto::{self, mesh_client};
use super::table::{MirrorTable, Outcome, PendingWrite, StateUpdate, Version};
use super::{MeshConfig, lock, unix_nanos};
use crate::ami::{DeviceState, Session, actions};

/// What the watcher side shares between its tasks.
pub(crate) struct Mirrors {
    pub table: Mutex<MirrorTable>,
    pub dirty: Notify,
    pub metrics: MeshMetrics,
}

impl Mirrors {
    fn apply(&self, owner: &str, states: &[proto::State], stamped: bool) {
        let mut table = lock(&self.table);
        let before = table.coalesced();
        let mut accepted = 0;
        let now = unix_nanos();
        for s in states {
            let Ok(state) = s.state.parse::<DeviceState>() else {
                tracing::warn!(%owner, state = %s.state, "mesh: unknown device state; ignored");
                continue;
            };
            let update = StateUpdate {
                extension: s.extension.clone(),
                state,
                version: Version { epoch: s.epoch, seq: s.seq },
            };
            let stamp = if stamped { s.observed_unix_nanos } else { 0 };
            match table.apply_stamped(owner, &update, stamp, now) {
                Outcome::Accepted => accepted += 1,
                Outcome::Stale => {
                    self.metrics.updates_stale.inc();
                }
                Outcome::NotWatched => {}
            }
        }
        self.metrics.updates_received.inc_by(states.len() as u64);
        self.metrics.updates_coalesced.inc_by(table.coalesced() - before);
        drop(table);
        if accepted > 0 {
            self.dirty.notify_one();
        }
    }
}

/// The liveness of one owner, shared by its link and its watchdog.
pub(crate) struct Liveness {
    /// Milliseconds since `origin` when something last arrived (or the link started).
    last_heard_ms: AtomicU64,
    /// A snapshot arrived since the last loss: the mirrors hold the owner's truth.
    fresh: AtomicBool,
    origin: Instant,
    /// Why the link last went down, with every cause (e.g. which certificate check failed).
    last_error: Mutex<Option<String>>,
}

impl Liveness {
    fn new() -> Self {
        Liveness {
            last_heard_ms: AtomicU64::new(0),
            fresh: AtomicBool::new(false),
            origin: Instant::now(),
            last_error: Mutex::new(None),
        }
    }
    fn heard(&self) {
        self.last_heard_ms.store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn silence(&self) -> Duration {
        let last = Duration::from_millis(self.last_heard_ms.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }
}

/// One owner's link: subscribe, read, reconnect. Runs until aborted.
pub(crate) async fn link(
    cfg: Arc<MeshConfig>,
    owner: String,
    endpoint: String,
    mut interest: watch::Receiver<Vec<String>>,
    mirrors: Arc<Mirrors>,
    live: Arc<Liveness>,
) {
    let mut backoff = cfg.backoff_initial;
    loop {
        let started = Instant::now();
        match session(&cfg, &owner, &endpoint, &mut interest, &mirrors, &live).await {
            Ok(()) => return,
            Err(e) => {
                let why = with_causes(&e);
                tracing::info!(%owner, %endpoint, error = %why, "mesh: link to owner down");
                *lock(&live.last_error) = Some(why);
            }
        }
        if started.elapsed() > Duration::from_secs(10) {
            backoff = cfg.backoff_initial;
        }
        // Exponential backoff with "equal jitter": half fixed, half random.
        let half = backoff / 2;
        let delay = half + half.mul_f64(rand::rng().random_range(0.0..=1.0));
        backoff = (backoff * 2).min(cfg.backoff_max);
        tokio::time::sleep(delay).await;
    }
}

/// One subscription, until it fails (or the interest channel closes: `Ok`).
async fn session(
    cfg: &MeshConfig,
    owner: &str,
    endpoint: &str,
    interest: &mut watch::Receiver<Vec<String>>,
    mirrors: &Mirrors,
    live: &Liveness,
) -> Result<(), MeshError> {
    let mut ep = Endpoint::from_shared(endpoint.to_owned())?
        .connect_timeout(cfg.heartbeat_timeout.min(Duration::from_secs(2)))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(cfg.heartbeat_interval)
        .keep_alive_timeout(cfg.heartbeat_timeout);
    if let Some(tls) = &cfg.tls {
        ep = ep.tls_config(tls.client_config(owner)?)?;
    }
    let channel = ep.connect().await?;
    let mut client = mesh_client::MeshClient::new(channel);
    let (tx, rx) = mpsc::channel(4);
    let sub = |exts: Vec<String>| proto::Subscribe {
        watcher: cfg.node.clone(),
        owner: owner.to_owned(),
        extensions: exts,
    };
    let first = interest.borrow_and_update().clone();
    tx.send(sub(first)).await.map_err(|_| MeshError::Closed)?;
    let mut inbound = client.subscribe(ReceiverStream::new(rx)).await?.into_inner();
    let label = PeerLabel { peer: owner.to_owned() };
    loop {
        tokio::select! {
            msg = tokio::time::timeout(cfg.heartbeat_timeout, inbound.message()) => {
                let msg = match msg {
                    Err(_) => return Err(MeshError::Silent(cfg.heartbeat_timeout)),
                    Ok(Err(status)) => return Err(status.into()),
                    Ok(Ok(None)) => return Err(MeshError::Ended),
                    Ok(Ok(Some(m))) => m,
                };
                live.heard();
                match msg.kind {
                    Some(proto::owner_message::Kind::Snapshot(s)) => {
                        if s.owner != owner {
                            return Err(MeshError::WrongOwner { answered: s.owner, expected: owner.to_owned() });
                        }
                        mirrors.apply(owner, &s.states, false);
                        if !live.fresh.swap(true, Ordering::Relaxed) {
                            mirrors.metrics.peers_up.inc();
                            mirrors.metrics.peer_up.get_or_create(&label).set(1);
                            tracing::info!(%owner, states = s.states.len(), "mesh: snapshot from owner");
                        }
                    }
                    // The watchdog declared the owner lost (its mirrors went UNAVAILABLE) while
                    // this stream stayed up: only a fresh snapshot restores the unchanged ones.
                    Some(_) | None if !live.fresh.load(Ordering::Relaxed) => return Err(MeshError::Resync),
                    Some(proto::owner_message::Kind::Changes(c)) => mirrors.apply(owner, &c.states, true),
                    Some(proto::owner_message::Kind::Heartbeat(_)) | None => {}
                }
            }
            changed = interest.changed() => {
                if changed.is_err() { return Ok(()) }
                let exts = interest.borrow_and_update().clone();
                tx.send(sub(exts)).await.map_err(|_| MeshError::Closed)?;
            }
        }
    }
}

/// Marks an owner lost after `timeout` of silence, and keeps the peer gauges current.
pub(crate) async fn watchdog(
    cfg: Arc<MeshConfig>,
    owner: String,
    mirrors: Arc<Mirrors>,
    live: Arc<Liveness>,
) {
    let label = PeerLabel { peer: owner.clone() };
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        let silence = live.silence();
        mirrors.metrics.heartbeat_age.get_or_create(&label).set(silence.as_secs_f64());
        if silence >= cfg.heartbeat_timeout && live.fresh.swap(false, Ordering::Relaxed) {
            tracing::warn!(%owner, ?silence, "mesh: owner unreachable; its mirrors go UNAVAILABLE");
            mirrors.metrics.owners_lost.inc();
            mirrors.metrics.peers_up.dec();
            mirrors.metrics.peer_up.get_or_create(&label).set(0);
            lock(&mirrors.table).owner_lost(&owner, unix_nanos());
            mirrors.dirty.notify_one();
        }
    }
}

pub(crate) fn new_liveness() -> Arc<Liveness> {
    let l = Arc::new(Liveness::new());
    l.heard();
    l
}

/// An error with its chain of causes (tonic's transport error alone says only "transport error").
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out = format!("{out}: {text}");
        }
        source = s.source();
    }
    out
}

/// Why the owner's link last went down.
pub(crate) fn last_error(live: &Liveness) -> Option<String> {
    lock(&live.last_error).clone()
}

/// Is the owner's truth in the mirrors now?
pub(crate) fn is_up(live: &Liveness) -> bool {
    live.fresh.load(Ordering::Relaxed)
}

/// Writes pending mirrors with one Setvar each, keeping up to `cfg.max_in_flight` in flight
/// (never two for one device), until aborted.
pub(crate) async fn writer(cfg: Arc<MeshConfig>, session: Session, mirrors: Arc<Mirrors>) {
    let mut state = session.state();
    let mut set: JoinSet<(PendingWrite, Result<(), crate::ami::AmiError>)> = JoinSet::new();
    let mut pause_until: Option<Instant> = None;
    loop {
        let paused = pause_until.is_some_and(|t| Instant::now() < t);
        if session.is_connected() && !paused && set.len() < cfg.max_in_flight {
            let batch = lock(&mirrors.table).take_pending_stamped(cfg.max_in_flight - set.len());
            for w in batch {
                let s = session.clone();
                set.spawn(async move {
                    let r = s.call(&actions::Setvar::device_state(&w.device, w.state)).await;
                    (w, r)
                });
            }
        }
        tokio::select! {
            Some(done) = set.join_next(), if !set.is_empty() => {
                let Ok((w, r)) = done else { continue };
                match r {
                    Ok(()) => {
                        lock(&mirrors.table).written(&w.device, w.state);
                        mirrors.metrics.updates_applied.inc();
                        if w.stamp > 0 {
                            let latency = unix_nanos().saturating_sub(w.stamp) as f64 / 1e9;
                            mirrors.metrics.propagation_latency.observe(latency);
                        }
                    }
                    Err(e) => {
                        lock(&mirrors.table).retry(&w.device);
                        mirrors.metrics.write_failures.inc();
                        tracing::warn!(device = %w.device, error = %e, "mesh: Setvar failed; will retry");
                        pause_until = Some(Instant::now() + Duration::from_millis(100));
                    }
                }
            }
            _ = mirrors.dirty.notified() => {}
            _ = tokio::time::sleep_until(pause_until.unwrap_or_else(Instant::now)), if paused => {
                pause_until = None;
            }
            changed = state.changed() => {
                if changed.is_err() { return }
                if state.borrow_and_update().is_connected() {
                    // Asterisk may have restarted: write every mirrored state again.
                    lock(&mirrors.table).forget_written();
                }
            }
        }
    }
}
