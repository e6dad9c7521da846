//! The agent's view of its Asterisk: the AMI session, the polled status and the metrics. The
//! apply procedure is in [`super::apply`]; the gRPC and HTTP servers are thin shells around a
//! shared [`Node`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::config_files::ConfigDirs;
use super::journal::{self, Journal};
use super::metrics::{EndpointLabel, Metrics, TrunkLabel};
use super::plan;
use super::proto;
use super::sip_probe::{self, ProbeSetting, ProbeTarget};
use crate::ami::actions::{
    self, CoreSettings, CoreShowChannels, IAXpeers, PJSIPShowContacts, PJSIPShowEndpoints, Ping,
};
use crate::ami::{Event, Session, TypedAction};
use crate::provision::ProvisionStore;
use crate::render::{Bundle, MeshPlan, PJSIP_FILE};

/// A fault the agent injects into its own applies. Test-only: enabled by the hidden
/// `--test-fault` flag (`AO_AGENT_TEST_FAULT`), never set in production.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// After writing the files (journal in place), hold forever instead of reloading, so a test
    /// can SIGKILL the agent between writing and reloading.
    HoldBeforeReload,
}

impl std::str::FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hold-before-reload" => Ok(Fault::HoldBeforeReload),
            other => Err(format!("unknown test fault {other:?} (known: hold-before-reload)")),
        }
    }
}

/// Where and how the agent applies bundles.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Node name; bundles for another node are refused.
    pub node: String,
    /// The node's namespace; bundles for another namespace are refused.
    pub namespace: String,
    /// Asterisk's config directory (the `*_operator.conf` files).
    pub config_dir: PathBuf,
    /// Asterisk's key directory (`astkeydir/keys`).
    pub keys_dir: PathBuf,
    /// What was applied last (hash, file names, mesh plan); default `<config_dir>/.asterisk-operator-applied.json`.
    /// The apply journal lives beside it (`<state-file>.journal`).
    pub state_file: PathBuf,
    /// Asterisk's log file, read after a reload for its error messages (optional).
    pub asterisk_log: Option<PathBuf>,
    /// `/healthz`: how long Asterisk has to answer a Ping.
    pub ping_timeout: Duration,
    /// How often counts and trunk states are polled.
    pub poll_interval: Duration,
    /// How long an apply waits for AMI and for Asterisk to be fully booted.
    pub boot_timeout: Duration,
    /// One `asterisk_phone_registered{endpoint}` gauge per phone.
    pub per_phone_metrics: bool,
    /// What each poll probes with a SIP OPTIONS (default: the applied transport).
    pub sip_probe: ProbeSetting,
    /// Test-only fault injection (see [`Fault`]).
    pub fault: Option<Fault>,
    /// Where the desk phones' provisioning files are kept between restarts (never under
    /// `config_dir`: Asterisk must not read them); `None`: in memory only (an agent that
    /// serves no phones).
    pub provisioning_file: Option<PathBuf>,
}

impl NodeConfig {
    /// Defaults for everything but the node name and directories.
    pub fn new(node: &str, config_dir: PathBuf, keys_dir: PathBuf) -> Self {
        NodeConfig {
            node: node.to_owned(),
            namespace: crate::crd::DEFAULT_NAMESPACE.to_owned(),
            state_file: config_dir.join(".asterisk-operator-applied.json"),
            config_dir,
            keys_dir,
            asterisk_log: None,
            ping_timeout: Duration::from_secs(3),
            poll_interval: Duration::from_secs(15),
            boot_timeout: Duration::from_secs(60),
            per_phone_metrics: false,
            sip_probe: ProbeSetting::Auto,
            fault: None,
            provisioning_file: None,
        }
    }

    pub(super) fn dirs(&self) -> ConfigDirs {
        ConfigDirs { config: self.config_dir.clone(), keys: self.keys_dir.clone() }
    }

    pub(super) fn journal_path(&self) -> PathBuf {
        journal::path_for(&self.state_file)
    }
}

/// Changes written and reloaded that only an Asterisk restart puts in force.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRestart {
    /// The bundle applied last.
    pub hash: String,
    /// What waits for the restart, for people.
    pub reasons: Vec<String>,
    /// When the Asterisk that was running then had started (seconds since the epoch; 0 when
    /// unknown): a later start means it restarted and loaded everything from disk.
    pub asterisk_started_unix: u64,
}

impl PendingRestart {
    /// The message of the `restart_required` answers.
    pub fn message(&self) -> String {
        format!(
            "{}: Asterisk applies this only when it restarts (a reload keeps the old value); restart \
             Asterisk to put it in force",
            self.reasons.join("; ")
        )
    }
}

/// What the agent knows about its Asterisk right now.
#[derive(Clone, Debug, Default)]
pub struct Status {
    pub applied_hash: String,
    pub applied_files: BTreeSet<String>,
    pub mesh: Option<MeshPlan>,
    /// Digest of each file of `applied_hash` ([`plan::digest`]): what Asterisk was verified
    /// to run. Emptied after an interrupted apply was rolled back at start or a rollback could
    /// not reload: the next apply then reloads and verifies every module of its bundle, even
    /// when the files on disk already match it.
    pub verified: BTreeMap<String, String>,
    /// Changes written that wait for an Asterisk restart.
    pub restart_pending: Option<PendingRestart>,
    /// PJSIP trunk endpoints of the applied bundle.
    pub pjsip_trunks: BTreeSet<String>,
    pub last_error: Option<String>,
    pub last_apply_failed: bool,
    pub asterisk_version: String,
    /// Uptime reported by FullyBooted, and when.
    uptime_at: Option<(u64, Instant)>,
    pub last_reload: Option<SystemTime>,
    pub endpoints: u32,
    pub endpoints_registered: u32,
    pub contacts: u32,
    pub active_channels: u32,
    pub trunks: u32,
    pub trunks_reachable: u32,
    /// Each trunk as this end sees it, by name and protocol.
    pub trunk_states: Vec<proto::TrunkState>,
    pub booted: bool,
    /// Where the SIP probe goes (from `--sip-probe` or the applied transport).
    pub sip_target: Option<ProbeTarget>,
    /// When Asterisk started, from the uptime FullyBooted reported.
    pub started_at: Option<SystemTime>,
}

impl Status {
    /// Seconds since Asterisk started (0 when unknown).
    pub fn uptime_seconds(&self) -> u64 {
        self.uptime_at.map_or(0, |(u, at)| u + at.elapsed().as_secs())
    }

    /// When the running Asterisk started, in seconds since the epoch (0 when unknown).
    pub fn asterisk_started_unix(&self) -> u64 {
        self.started_at.map_or(0, |t| unix_seconds(t) as u64)
    }

    /// Clears a pending restart once Asterisk has restarted since (it read every file at start;
    /// the next apply verifies them).
    pub(super) fn settle_restart(&mut self) -> bool {
        let started = self.asterisk_started_unix();
        let restarted = self.restart_pending.as_ref().is_some_and(|p| {
            started > 0 && p.asterisk_started_unix > 0 && started > p.asterisk_started_unix + 2
        });
        if restarted {
            tracing::info!("Asterisk restarted: the changes that waited for it are in force");
            self.restart_pending = None;
            self.verified.clear();
        }
        restarted
    }
}

/// The persisted record of the last verified apply.
#[derive(Serialize, Deserialize, Default)]
pub(super) struct Applied {
    pub hash: String,
    pub files: BTreeSet<String>,
    pub mesh: Option<MeshPlan>,
    /// File → digest of its verified contents (absent in state files of older agents: their
    /// next apply reloads what it finds unverified).
    #[serde(default)]
    pub digests: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_required: Option<PendingRestart>,
}

/// One agent's node: shared by the gRPC service, the HTTP endpoints and the background tasks.
pub struct Node {
    pub cfg: NodeConfig,
    pub session: Session,
    pub metrics: Metrics,
    /// The desk phones' provisioning files the agent serves.
    pub provisioning: Arc<ProvisionStore>,
    pub(super) status: Mutex<Status>,
    pub(super) booted: watch::Sender<bool>,
    /// Serializes applies (the queue in front of it keeps only the newest waiting bundle).
    pub(super) apply_lock: tokio::sync::Mutex<()>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl Node {
    /// A node around an AMI session and an event subscription made before its first login
    /// ([`Session::spawn_subscribed`]). Reads the last applied state from disk, rolls back an
    /// apply that was interrupted (its journal), and starts the event and poll tasks.
    pub fn start(cfg: NodeConfig, session: Session, events: crate::ami::EventStream) -> Arc<Node> {
        let mut status = Status::default();
        if let Ok(text) = std::fs::read_to_string(&cfg.state_file)
            && let Ok(applied) = serde_json::from_str::<Applied>(&text)
        {
            status.applied_hash = applied.hash;
            status.applied_files = applied.files;
            status.mesh = applied.mesh;
            status.verified = applied.digests;
            status.restart_pending = applied.restart_required;
        }
        if let Err(e) = recover(&cfg, &mut status) {
            tracing::error!(error = %e, "an interrupted apply could not be rolled back");
            status.last_apply_failed = true;
            status.last_error = Some(e);
        }
        let pjsip = std::fs::read_to_string(cfg.config_dir.join(PJSIP_FILE)).ok();
        if let Some(text) = &pjsip {
            status.pjsip_trunks = plan::pjsip_objects(text).trunks;
        }
        status.sip_target = cfg.sip_probe.target(pjsip.as_deref());
        let metrics = Metrics::new();
        metrics.set_bundle(&status.applied_hash);
        let provisioning =
            Arc::new(ProvisionStore::open(cfg.provisioning_file.as_deref(), metrics.provisioning.clone()));
        let (booted, _) = watch::channel(false);
        let node = Arc::new(Node {
            cfg,
            session,
            metrics,
            provisioning,
            status: Mutex::new(status),
            booted,
            apply_lock: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(events_task(Arc::downgrade(&node), node.session.state(), events));
        tokio::spawn(poll_task(Arc::downgrade(&node)));
        node
    }

    /// A copy of the current status.
    pub fn status(&self) -> Status {
        lock(&self.status).clone()
    }

    /// `/healthz`: Asterisk answers a Ping within the timeout.
    pub async fn health(&self) -> Result<Duration, String> {
        let start = Instant::now();
        let r = self.session.send_with_timeout(Ping.action(), self.cfg.ping_timeout).await;
        let r = r.and_then(|reply| actions::check("Ping", reply));
        self.metrics.ami_connected.set(i64::from(self.session.is_connected()));
        match r {
            Ok(_) => {
                self.metrics.asterisk_up.set(1);
                Ok(start.elapsed())
            }
            Err(e) => {
                self.metrics.asterisk_up.set(0);
                Err(format!("Asterisk did not answer an AMI Ping within {:?}: {e}", self.cfg.ping_timeout))
            }
        }
    }

    /// `/readyz`: AMI is up and the last apply did not fail.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.session.is_connected() {
            return Err(format!("AMI not connected: {:?}", *self.session.state().borrow()));
        }
        let st = lock(&self.status);
        if st.last_apply_failed {
            return Err(format!("last apply failed: {}", st.last_error.as_deref().unwrap_or("(no message)")));
        }
        Ok(())
    }

    /// The gRPC `NodeStatus`, after a fresh poll.
    pub async fn node_status(&self) -> proto::NodeStatus {
        self.poll().await;
        lock(&self.status).settle_restart();
        let st = self.status();
        proto::NodeStatus {
            node: self.cfg.node.clone(),
            asterisk_version: st.asterisk_version.clone(),
            uptime_seconds: st.uptime_seconds(),
            applied_hash: st.applied_hash.clone(),
            endpoints: st.endpoints,
            endpoints_registered: st.endpoints_registered,
            contacts: st.contacts,
            active_channels: st.active_channels,
            trunks: st.trunks,
            trunks_reachable: st.trunks_reachable,
            last_error: st.last_error.clone().unwrap_or_default(),
            ami_connected: self.session.is_connected(),
            last_reload_unix: st.last_reload.map_or(0, |t| unix_seconds(t) as i64),
            ready: self.readiness().is_ok(),
            asterisk_started_unix: st.started_at.map_or(0, |t| unix_seconds(t) as i64),
            trunk_states: st.trunk_states.clone(),
            mirrors: Vec::new(),
            mesh: false,
            restart_required: st.restart_pending.as_ref().map(PendingRestart::message).unwrap_or_default(),
            provisioning_fetches: self.provisioning.last_fetches().iter().map(Into::into).collect(),
        }
    }

    /// Polls counts, trunk states and the version (a handful of list actions) into the status
    /// and the metrics.
    pub async fn poll(&self) {
        let connected = self.session.is_connected();
        self.metrics.ami_connected.set(i64::from(connected));
        self.metrics.sync_session(&self.session.stats());
        if !connected {
            self.metrics.asterisk_up.set(0);
            // SIP is checked on its own, as monit did: it needs no AMI.
            let target = lock(&self.status).sip_target;
            self.probe_sip(target).await;
            return;
        }
        let version = self.session.call(&CoreSettings).await.ok().map(|s| s.asterisk_version);
        let channels = self.session.call(&CoreShowChannels).await.ok().map(|c| c.len() as u32);
        let endpoints = self.session.call(&PJSIPShowEndpoints).await.ok();
        let contacts = self.session.call(&PJSIPShowContacts).await.ok();
        let peers = self.session.call(&IAXpeers).await.ok();

        let target = {
            let mut st = lock(&self.status);
            if let Some(v) = version {
                self.metrics.set_version(&v);
                st.asterisk_version = v;
            }
            if let Some(n) = channels {
                st.active_channels = n;
                self.metrics.active_channels.set(n.into());
            }
            let mut trunk_up: BTreeMap<(String, &str), (bool, Option<f64>)> = BTreeMap::new();
            if let (Some(endpoints), Some(contacts)) = (&endpoints, &contacts) {
                let reachable = |s: &str| {
                    !matches!(s.to_ascii_lowercase().as_str(), "unreachable" | "unavailable" | "removed")
                };
                let mut phones_up = BTreeMap::new();
                for e in endpoints.iter().filter(|e| !st.pjsip_trunks.contains(&e.name)) {
                    phones_up.insert(e.name.clone(), false);
                }
                for c in contacts {
                    if let Some(up) = phones_up.get_mut(&c.endpoint) {
                        *up |= reachable(&c.status);
                    }
                }
                for t in &st.pjsip_trunks {
                    let mine: Vec<_> = contacts.iter().filter(|c| &c.endpoint == t).collect();
                    let up = mine.iter().any(|c| c.status.eq_ignore_ascii_case("Reachable"));
                    let rtt = mine.iter().filter_map(|c| c.roundtrip_usec).filter(|&u| u > 0).min();
                    trunk_up.insert((t.clone(), "pjsip"), (up, rtt.map(|u| u as f64 / 1e6)));
                }
                st.endpoints = endpoints.len() as u32;
                st.contacts = contacts.len() as u32;
                st.endpoints_registered = phones_up.values().filter(|u| **u).count() as u32;
                self.metrics.endpoints.set(st.endpoints.into());
                self.metrics.contacts.set(st.contacts.into());
                self.metrics.endpoints_registered.set(st.endpoints_registered.into());
                if self.cfg.per_phone_metrics {
                    self.metrics.phone_registered.clear();
                    for (name, up) in &phones_up {
                        self.metrics
                            .phone_registered
                            .get_or_create(&EndpointLabel { endpoint: name.clone() })
                            .set((*up).into());
                    }
                }
            }
            if let Some(peers) = &peers {
                for p in peers {
                    let name = p.name.split('/').next().unwrap_or("").to_owned();
                    let up = p.status.starts_with("OK");
                    let rtt = p
                        .status
                        .split_once('(')
                        .and_then(|(_, r)| r.trim_end_matches(')').trim().strip_suffix("ms"))
                        .and_then(|ms| ms.trim().parse::<f64>().ok())
                        .map(|ms| ms / 1000.0);
                    trunk_up.insert((name, "iax2"), (up, rtt));
                }
            }
            if endpoints.is_some() || peers.is_some() {
                st.trunks = trunk_up.len() as u32;
                st.trunks_reachable = trunk_up.values().filter(|(up, _)| *up).count() as u32;
                st.trunk_states = trunk_up
                    .iter()
                    .map(|((name, protocol), (up, rtt))| proto::TrunkState {
                        name: name.clone(),
                        protocol: (*protocol).to_owned(),
                        reachable: *up,
                        rtt_seconds: rtt.unwrap_or(0.0),
                    })
                    .collect();
                self.metrics.trunk_up.clear();
                self.metrics.trunk_rtt_seconds.clear();
                for ((trunk, protocol), (up, rtt)) in trunk_up {
                    let label = TrunkLabel { trunk, protocol: protocol.to_owned() };
                    self.metrics.trunk_up.get_or_create(&label).set(up.into());
                    if let Some(rtt) = rtt {
                        self.metrics.trunk_rtt_seconds.get_or_create(&label).set(rtt);
                    }
                }
            }
            self.metrics.uptime_seconds.set(st.uptime_seconds() as i64);
            if let Some(t) = st.last_reload {
                self.metrics.last_reload_timestamp_seconds.set(unix_seconds(t));
            }
            if let Some(t) = st.started_at {
                self.metrics.start_time_seconds.set(unix_seconds(t));
            }
            st.sip_target
        };
        self.probe_sip(target).await;
        // Last, so `asterisk_up 1` in a scrape means the rest of this poll is in it too.
        let _ = self.health().await;
    }

    /// One SIP OPTIONS to the node's transport, into the metrics.
    async fn probe_sip(&self, target: Option<ProbeTarget>) {
        let Some(target) = target else {
            self.metrics.set_sip_probe(None);
            return;
        };
        let outcome = sip_probe::probe(&target, self.cfg.ping_timeout).await;
        if let Some(e) = &outcome.error {
            tracing::warn!(target = %target.addr, error = %e, "SIP probe of the node's transport failed");
        }
        self.metrics.set_sip_probe(Some((&target, &outcome)));
    }
}

/// Rolls back an apply the agent did not live to finish (its journal is on disk): the files it
/// was about to change go back to what they were, and the next apply reloads and verifies
/// everything, since Asterisk may have loaded the new files in between. The journal stays
/// (and the error is returned) when a file cannot be put back: the next start tries again.
pub(super) fn recover(cfg: &NodeConfig, status: &mut Status) -> Result<(), String> {
    let path = cfg.journal_path();
    let Some(journal) = Journal::load(&path)? else { return Ok(()) };
    tracing::warn!(
        target_hash = %journal.target_hash,
        files = ?journal.backups.keys().collect::<Vec<_>>(),
        "an apply was interrupted; putting the previous files back"
    );
    let failed = cfg.dirs().restore(&journal.backups);
    if !failed.is_empty() {
        return Err(format!(
            "an interrupted apply of bundle {} could not be rolled back: {}",
            journal.target_hash,
            failed.join("; ")
        ));
    }
    status.verified.clear();
    Journal::finish(&path)
}

/// Tracks FullyBooted (ready for applies), uptime and reloads from AMI events.
async fn events_task(
    node: std::sync::Weak<Node>,
    mut state: watch::Receiver<crate::ami::ConnectionState>,
    mut events: crate::ami::EventStream,
) {
    loop {
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else { return };
                let Some(node) = node.upgrade() else { return };
                let poll_now = {
                let mut st = lock(&node.status);
                match &*ev {
                    Event::FullyBooted(b) => {
                        if let Some(u) = b.uptime {
                            st.uptime_at = Some((u, Instant::now()));
                            st.started_at = start_time(st.started_at, u);
                            node.metrics.uptime_seconds.set(u as i64);
                            if let Some(t) = st.started_at {
                                node.metrics.start_time_seconds.set(unix_seconds(t));
                            }
                        }
                        if let Some(r) = b.last_reload {
                            st.last_reload = SystemTime::now().checked_sub(Duration::from_secs(r));
                        }
                        st.booted = true;
                        node.booted.send_replace(true);
                        true
                    }
                    Event::Reload(_) => {
                        st.last_reload = Some(SystemTime::now());
                        false
                    }
                    _ => false,
                }
                };
                // Logged in to a booted Asterisk (it sends FullyBooted on every login): poll
                // now, so the first scrape tells the truth.
                if poll_now {
                    tokio::spawn(async move { node.poll().await });
                }
            }
            changed = state.changed() => {
                if changed.is_err() { return }
                let connected = state.borrow().is_connected();
                let Some(node) = node.upgrade() else { return };
                node.metrics.ami_connected.set(i64::from(connected));
                if !connected {
                    lock(&node.status).booted = false;
                    node.booted.send_replace(false);
                    node.metrics.asterisk_up.set(0);
                }
            }
        }
    }
}

async fn poll_task(node: std::sync::Weak<Node>) {
    loop {
        let Some(interval) = node.upgrade().map(|n| n.cfg.poll_interval) else { return };
        tokio::time::sleep(interval).await;
        let Some(n) = node.upgrade() else { return };
        n.poll().await;
    }
}

/// When Asterisk started, from an uptime reported now. A value within 2 s of the one known is
/// kept: uptime is in whole seconds, and a reconnect must not look like a restart.
fn start_time(known: Option<SystemTime>, uptime_seconds: u64) -> Option<SystemTime> {
    // Whole seconds, as the uptime is: the value does not wobble from one login to the next.
    let now_secs = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    let now = UNIX_EPOCH + Duration::from_secs(now_secs.checked_sub(uptime_seconds)?);
    match known {
        Some(k) => {
            let apart = now.duration_since(k).unwrap_or_else(|e| e.duration());
            Some(if apart <= Duration::from_secs(2) { k } else { now })
        }
        None => Some(now),
    }
}

/// Converts a gRPC bundle into a [`Bundle`], checking the hash.
pub fn bundle_from_proto(b: proto::Bundle) -> Result<Bundle, String> {
    let mesh: MeshPlan = if b.mesh_json.trim().is_empty() {
        MeshPlan { node: b.node.clone(), ..MeshPlan::default() }
    } else {
        serde_json::from_str(&b.mesh_json).map_err(|e| format!("mesh plan is not valid JSON: {e}"))?
    };
    let files: BTreeMap<String, String> = b.files.into_iter().collect();
    let provisioning = super::provisioning::from_proto(b.provisioning_files, &b.provisioning_json)?;
    let bundle = Bundle::new(&b.node, files, mesh).in_namespace(&b.namespace).with_provisioning(provisioning);
    if !b.hash.is_empty() && b.hash != bundle.hash {
        return Err(format!(
            "bundle hash {} does not match its content ({}): corrupted or edited in transit",
            b.hash, bundle.hash
        ));
    }
    Ok(bundle)
}

/// The gRPC form of a [`Bundle`].
pub fn bundle_to_proto(b: &Bundle) -> proto::Bundle {
    proto::Bundle {
        node: b.node.clone(),
        hash: b.hash.clone(),
        files: b.files.clone().into_iter().collect(),
        mesh_json: serde_json::to_string(&b.mesh).expect("mesh plan serializes"),
        namespace: b.namespace.clone(),
        ..super::provisioning::to_proto(&b.provisioning)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_survives_a_reconnect_and_moves_on_a_restart() {
        let first = start_time(None, 100).unwrap();
        assert_eq!(start_time(Some(first), 101), Some(first), "one second of rounding is no restart");
        let restarted = start_time(Some(first), 3).unwrap();
        assert!(restarted > first + Duration::from_secs(90), "a small uptime is a new start");
    }
}
