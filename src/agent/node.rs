//! The agent's view of its Asterisk: the AMI session, the apply procedure, the polled status and
//! the metrics. The gRPC and HTTP servers are thin shells around a shared [`Node`].

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::timeout;

use super::metrics::{EndpointLabel, Metrics, TrunkLabel};
use super::plan::{self, Module, Target};
use super::proto;
use super::sip_probe::{self, ProbeSetting, ProbeTarget};
use crate::ami::actions::{
    self, CoreSettings, CoreShowChannels, IAXpeers, PJSIPShowContacts, PJSIPShowEndpoints, Ping, Reload,
};
use crate::ami::{Action, Event, Session, TypedAction};
use crate::render::{Bundle, EXTENSIONS_FILE, IAX_FILE, MeshPlan, PJSIP_FILE};

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
        }
    }
}

/// What the agent knows about its Asterisk right now.
#[derive(Clone, Debug, Default)]
pub struct Status {
    pub applied_hash: String,
    pub applied_files: BTreeSet<String>,
    pub mesh: Option<MeshPlan>,
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
}

/// The persisted record of the last successful apply.
#[derive(Serialize, Deserialize, Default)]
struct Applied {
    hash: String,
    files: BTreeSet<String>,
    mesh: Option<MeshPlan>,
}

/// One agent's node: shared by the gRPC service, the HTTP endpoints and the background tasks.
pub struct Node {
    pub cfg: NodeConfig,
    pub session: Session,
    pub metrics: Metrics,
    status: Mutex<Status>,
    booted: watch::Sender<bool>,
    /// Serializes applies (the queue in front of it keeps only the newest waiting bundle).
    apply_lock: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// A failed step: which bundle file, and the message.
struct Failure {
    file: String,
    message: String,
}

impl Failure {
    fn new(file: impl Into<String>, message: impl Into<String>) -> Self {
        Failure { file: file.into(), message: message.into() }
    }
}

impl Node {
    /// A node around an AMI session and an event subscription made before its first login
    /// ([`Session::spawn_subscribed`]). Reads the last applied state from disk and starts the
    /// event and poll tasks.
    pub fn start(cfg: NodeConfig, session: Session, events: crate::ami::EventStream) -> Arc<Node> {
        let mut status = Status::default();
        if let Ok(text) = std::fs::read_to_string(&cfg.state_file)
            && let Ok(applied) = serde_json::from_str::<Applied>(&text)
        {
            status.applied_hash = applied.hash;
            status.applied_files = applied.files;
            status.mesh = applied.mesh;
        }
        let pjsip = std::fs::read_to_string(cfg.config_dir.join(PJSIP_FILE)).ok();
        if let Some(text) = &pjsip {
            status.pjsip_trunks = plan::pjsip_objects(text).trunks;
        }
        status.sip_target = cfg.sip_probe.target(pjsip.as_deref());
        let metrics = Metrics::new();
        metrics.set_bundle(&status.applied_hash);
        let (booted, _) = watch::channel(false);
        let node = Arc::new(Node {
            cfg,
            session,
            metrics,
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
        }
    }

    /// Waits (bounded) for AMI to be logged in and Asterisk to have reported FullyBooted.
    async fn wait_booted(&self) -> Result<(), String> {
        let within = self.cfg.boot_timeout;
        self.session.wait_connected(within).await.map_err(|e| e.to_string())?;
        let mut rx = self.booted.subscribe();
        match timeout(within, rx.wait_for(|b| *b)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(format!(
                "Asterisk did not report FullyBooted within {within:?} (does the AMI user have read=system?)"
            )),
        }
    }

    /// Applies a bundle: idempotent, atomic, verified, rolled back on failure. Serialized.
    pub async fn apply(&self, bundle: &Bundle) -> proto::ApplyResult {
        let _guard = self.apply_lock.lock().await;
        let start = Instant::now();
        let mut result = proto::ApplyResult::default();
        let outcome = self.apply_locked(bundle, &mut result).await;
        result.duration_seconds = start.elapsed().as_secs_f64();
        {
            let mut st = lock(&self.status);
            match outcome {
                Ok(()) => {
                    result.ok = true;
                    result.applied_hash = bundle.hash.clone();
                    st.last_apply_failed = false;
                    st.last_error = None;
                    self.metrics.count_apply(if result.unchanged { "unchanged" } else { "ok" });
                    if !result.unchanged {
                        self.metrics.apply_duration.observe(result.duration_seconds);
                    }
                    self.metrics.set_bundle(&bundle.hash);
                    tracing::info!(
                        node = %bundle.node,
                        hash = %bundle.short_hash(),
                        unchanged = result.unchanged,
                        changed = ?result.changed_files,
                        reloaded = ?result.reloaded_modules,
                        seconds = result.duration_seconds,
                        "bundle applied"
                    );
                }
                Err(f) => {
                    result.ok = false;
                    result.applied_hash = st.applied_hash.clone();
                    let text = if f.file.is_empty() {
                        f.message.clone()
                    } else {
                        format!("{}: {}", f.file, f.message)
                    };
                    tracing::warn!(node = %bundle.node, hash = %bundle.short_hash(), error = %text, rolled_back = result.rolled_back, "apply failed");
                    st.last_apply_failed = true;
                    st.last_error = Some(text);
                    result.error = Some(proto::ApplyError { file: f.file, message: f.message });
                    self.metrics.count_apply("failed");
                }
            }
        }
        // What changed shows in the next scrape, not one poll interval later.
        if result.ok && !result.unchanged {
            self.poll().await;
        }
        result
    }

    async fn apply_locked(&self, bundle: &Bundle, result: &mut proto::ApplyResult) -> Result<(), Failure> {
        if bundle.node != self.cfg.node {
            return Err(Failure::new(
                "",
                format!("bundle is for node {:?}, this agent serves {:?}", bundle.node, self.cfg.node),
            ));
        }
        let previous = lock(&self.status).applied_files.clone();
        let current = self.read_current(bundle.files.keys().chain(previous.iter()));
        let plan =
            plan::plan(&bundle.files, &current, &previous).map_err(|e| Failure::new(e.file, e.reason))?;
        result.changed_files = plan.changed_files();
        if plan.is_empty() {
            result.unchanged = true;
            self.record_applied(bundle).map_err(|e| Failure::new("", e))?;
            return Ok(());
        }
        self.wait_booted().await.map_err(|e| Failure::new("", e))?;

        let log_offset = self.log_len();
        // Write every changed file, remembering what was there to restore it on failure.
        let mut backup: BTreeMap<String, Option<String>> = BTreeMap::new();
        for file in result.changed_files.clone() {
            backup.insert(file.clone(), current.get(&file).cloned().flatten());
            let outcome = match plan.writes.get(&file) {
                Some(text) => self.write_file(&file, Some(text)),
                None => self.write_file(&file, None),
            };
            if let Err(e) = outcome {
                self.restore(&backup);
                return Err(Failure::new(file, e));
            }
        }

        let mut failure = None;
        for &module in &plan.modules {
            result.reloaded_modules.push(module.name().to_owned());
            let t = Instant::now();
            let r = match self.reload(module, plan.restart.contains(&module)).await {
                Ok(()) => self.verify(module, bundle).await,
                Err(e) => Err(Failure::new(plan.files_of(module).first().cloned().unwrap_or_default(), e)),
            };
            self.metrics.count_reload(module.name(), r.is_ok(), t.elapsed().as_secs_f64());
            if let Err(f) = r {
                failure = Some(f);
                break;
            }
        }
        // Asterisk's own complaints about our files, when its log is readable.
        let log = self.log_since(log_offset);
        let complaints = plan::log_errors_about(&log, &result.changed_files);
        if failure.is_none()
            && let Some((file, line)) = complaints.first()
        {
            failure = Some(Failure::new(file.clone(), plan::log_message(line).to_owned()));
        } else if let Some(f) = failure.as_mut() {
            let lines: Vec<&str> = complaints
                .iter()
                .filter(|(file, _)| *file == f.file)
                .map(|(_, l)| plan::log_message(l))
                .collect();
            if !lines.is_empty() {
                f.message = format!("{}; Asterisk: {}", f.message, lines.join("; "));
            }
        }
        let Some(failure) = failure else {
            lock(&self.status).last_reload = Some(SystemTime::now());
            self.record_applied(bundle).map_err(|e| Failure::new("", e))?;
            return Ok(());
        };

        // Roll back: previous files, the same modules reloaded again.
        self.restore(&backup);
        for &module in &plan.modules {
            result.reloaded_modules.push(module.name().to_owned());
            let t = Instant::now();
            let ok = self.reload(module, plan.restart.contains(&module)).await;
            if let Err(e) = &ok {
                tracing::error!(module = module.name(), error = %e, "reload after rollback failed");
            }
            self.metrics.count_reload(module.name(), ok.is_ok(), t.elapsed().as_secs_f64());
        }
        result.rolled_back = true;
        Err(failure)
    }

    fn path_of(&self, file: &str) -> PathBuf {
        let dir = match plan::classify(file).map(|(_, t)| t) {
            Ok(Target::Keys) => &self.cfg.keys_dir,
            _ => &self.cfg.config_dir,
        };
        dir.join(plan::target_name(file))
    }

    fn read_current<'a>(&self, files: impl Iterator<Item = &'a String>) -> BTreeMap<String, Option<String>> {
        files
            .filter(|f| plan::classify(f).is_ok())
            .map(|f| (f.clone(), std::fs::read_to_string(self.path_of(f)).ok()))
            .collect()
    }

    /// Writes (temp file in the same directory, then rename) or removes one file.
    fn write_file(&self, file: &str, contents: Option<&str>) -> Result<(), String> {
        let path = self.path_of(file);
        let Some(contents) = contents else {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(format!("removing {}: {e}", path.display()))
                }
                _ => Ok(()),
            };
        };
        write_atomic(&path, contents.as_bytes()).map_err(|e| format!("writing {}: {e}", path.display()))
    }

    fn restore(&self, backup: &BTreeMap<String, Option<String>>) {
        for (file, old) in backup {
            if let Err(e) = self.write_file(file, old.as_deref()) {
                tracing::error!(file = %file, error = %e, "restoring the previous file failed");
            }
        }
    }

    fn record_applied(&self, bundle: &Bundle) -> Result<(), String> {
        if lock(&self.status).applied_hash == bundle.hash && self.cfg.state_file.exists() {
            return Ok(());
        }
        let applied = Applied {
            hash: bundle.hash.clone(),
            files: bundle.files.keys().cloned().collect(),
            mesh: Some(bundle.mesh.clone()),
        };
        let text = serde_json::to_string_pretty(&applied).expect("applied state serializes");
        write_atomic(&self.cfg.state_file, text.as_bytes())
            .map_err(|e| format!("writing {}: {e}", self.cfg.state_file.display()))?;
        let mut st = lock(&self.status);
        st.applied_hash = applied.hash;
        st.applied_files = applied.files;
        st.mesh = applied.mesh;
        if let Some(text) = bundle.files.get(PJSIP_FILE) {
            st.pjsip_trunks = plan::pjsip_objects(text).trunks;
        }
        st.sip_target = self.cfg.sip_probe.target(bundle.files.get(PJSIP_FILE).map(String::as_str));
        Ok(())
    }

    /// One AMI `Reload` of a module; success needs `Response: Success` and, when the `Reload`
    /// event arrives (read class `system`), its `Status: 0`.
    async fn reload(&self, module: Module, restart: bool) -> Result<(), String> {
        let name = module.name();
        if restart {
            return self.restart(name).await;
        }
        let mut events = self.session.events_with_capacity(256);
        let message = self.session.call(&Reload(Some(name.to_owned()))).await.map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, events.recv()).await {
                Ok(Some(ev)) => {
                    if let Event::Reload(r) = &*ev
                        && (r.module.eq_ignore_ascii_case(name) || r.module.eq_ignore_ascii_case("All"))
                    {
                        return if r.succeeded() {
                            Ok(())
                        } else {
                            Err(format!(
                                "Asterisk reported Reload status {} for {name} ({message})",
                                r.status
                            ))
                        };
                    }
                }
                // No Reload event (the user may lack read=system): the response said success.
                _ => return Ok(()),
            }
        }
    }

    /// Unloads and loads a module (AMI `ModuleLoad`), for settings its reload ignores.
    async fn restart(&self, name: &str) -> Result<(), String> {
        tracing::info!(module = name, "unloading and loading the module: its listener changed");
        for load_type in ["unload", "load"] {
            let action = Action::new("ModuleLoad").header("Module", name).header("LoadType", load_type);
            let reply = self.session.send(action).await.map_err(|e| e.to_string())?;
            actions::check("ModuleLoad", reply).map_err(|e| format!("{load_type} {name}: {e}"))?;
        }
        Ok(())
    }

    /// Everything the bundle defines for `module` is loaded. Asterisk applies a reload
    /// synchronously, but the check is retried briefly in case a list lags behind.
    async fn verify(&self, module: Module, bundle: &Bundle) -> Result<(), Failure> {
        let mut last = Ok(());
        for attempt in 0..4 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            last = self.verify_once(module, bundle).await;
            if last.is_ok() {
                break;
            }
        }
        last
    }

    async fn verify_once(&self, module: Module, bundle: &Bundle) -> Result<(), Failure> {
        let ami = |file: &str| {
            let file = file.to_owned();
            move |e: crate::ami::AmiError| Failure::new(file, format!("verifying after reload: {e}"))
        };
        match module {
            Module::Pjsip => {
                let Some(text) = bundle.files.get(PJSIP_FILE) else { return Ok(()) };
                let want = plan::pjsip_objects(text);
                let loaded = self.session.call(&PJSIPShowEndpoints).await.map_err(ami(PJSIP_FILE))?;
                let names: BTreeSet<&str> = loaded.iter().map(|e| e.name.as_str()).collect();
                let aors: BTreeSet<&str> = loaded
                    .iter()
                    .flat_map(|e| e.aor.split(','))
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .collect();
                let missing: Vec<&str> =
                    want.endpoints.iter().map(String::as_str).filter(|n| !names.contains(n)).collect();
                if !missing.is_empty() {
                    return Err(Failure::new(
                        PJSIP_FILE,
                        format!(
                            "endpoints defined in the file but not loaded by Asterisk: {}",
                            list(&missing)
                        ),
                    ));
                }
                let missing: Vec<&str> =
                    want.aors.iter().map(String::as_str).filter(|n| !aors.contains(n)).collect();
                if !missing.is_empty() {
                    return Err(Failure::new(
                        PJSIP_FILE,
                        format!("AORs defined in the file but not loaded by Asterisk: {}", list(&missing)),
                    ));
                }
                Ok(())
            }
            Module::Iax => {
                let Some(text) = bundle.files.get(IAX_FILE) else { return Ok(()) };
                let want = plan::iax_peers(text);
                let loaded = self.session.call(&IAXpeers).await.map_err(ami(IAX_FILE))?;
                let names: BTreeSet<&str> =
                    loaded.iter().map(|p| p.name.split('/').next().unwrap_or("")).collect();
                let missing: Vec<&str> =
                    want.iter().map(String::as_str).filter(|n| !names.contains(n)).collect();
                if !missing.is_empty() {
                    return Err(Failure::new(
                        IAX_FILE,
                        format!(
                            "IAX2 peers defined in the file but not loaded by Asterisk: {}",
                            list(&missing)
                        ),
                    ));
                }
                Ok(())
            }
            Module::Dialplan => {
                let Some(text) = bundle.files.get(EXTENSIONS_FILE) else { return Ok(()) };
                for context in plan::dialplan_contexts(text) {
                    let reply = self
                        .session
                        .send(Action::new("ShowDialPlan").header("Context", &context))
                        .await
                        .map_err(ami(EXTENSIONS_FILE))?;
                    if reply.response.is_error() {
                        return Err(Failure::new(
                            EXTENSIONS_FILE,
                            format!(
                                "context {context} not loaded by Asterisk: {}",
                                reply.response.message().unwrap_or("(no message)")
                            ),
                        ));
                    }
                }
                Ok(())
            }
            Module::Crypto => Ok(()),
        }
    }

    fn log_len(&self) -> u64 {
        self.cfg.asterisk_log.as_ref().and_then(|p| std::fs::metadata(p).ok()).map_or(0, |m| m.len())
    }

    /// What Asterisk logged since `offset` (at most 256 KiB).
    fn log_since(&self, offset: u64) -> String {
        let Some(path) = &self.cfg.asterisk_log else { return String::new() };
        let Ok(mut f) = std::fs::File::open(path) else { return String::new() };
        let len = f.metadata().map_or(0, |m| m.len());
        let offset = if len < offset { 0 } else { offset };
        let mut buf = Vec::new();
        let _ = f.seek(SeekFrom::Start(offset)).and_then(|_| f.take(256 * 1024).read_to_end(&mut buf));
        String::from_utf8_lossy(&buf).into_owned()
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

fn list(names: &[&str]) -> String {
    const MAX: usize = 10;
    let mut s = names.iter().take(MAX).copied().collect::<Vec<_>>().join(", ");
    if names.len() > MAX {
        s.push_str(&format!(" and {} more", names.len() - MAX));
    }
    s
}

/// Temp file in the target's directory, fsync, rename over the target. Mode 0640: Asterisk (same
/// user or group as the agent) must read it; the files hold secrets.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.ao-tmp-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o640);
    let written = options.open(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    match written.and_then(|()| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
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
    let bundle = Bundle::new(&b.node, files, mesh).in_namespace(&b.namespace);
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
