//! The apply procedure (a thin shell around [`plan`]): journal, write, reload, verify, and on
//! failure a rollback whose outcome is reported as it is.
//!
//! "Applied" means Asterisk runs the bundle: an apply answers `unchanged` only when the last
//! *verified* apply had this very bundle; `rolled_back` only when the previous files are back
//! on disk, reloaded and verified; `restart_required` when a change only an Asterisk restart
//! puts in force (a SIP transport) was written.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom};
use std::time::{Duration, Instant, SystemTime};

use tokio::time::timeout;

use super::journal::Journal;
use super::node::{Applied, Fault, Node, PendingRestart, lock};
use super::plan::{self, Module, PlanInput};
use super::proto;
use crate::ami::actions::{self, IAXpeers, PJSIPShowEndpoints, Reload};
use crate::ami::{Action, Event};
use crate::render::{Bundle, EXTENSIONS_FILE, IAX_FILE, PJSIP_FILE, PROVISIONING_DIR};

/// A failed step: which bundle file, and the message.
pub(super) struct Failure {
    file: String,
    message: String,
}

impl Failure {
    fn new(file: impl Into<String>, message: impl Into<String>) -> Self {
        Failure { file: file.into(), message: message.into() }
    }
}

/// How an unload-and-load of a module went.
enum Restart {
    /// Unloaded (or found not loaded) and loaded again: the new settings are in force.
    Done,
    /// Asterisk refused the unload (the module is in use, e.g. calls up): it still runs, with
    /// its old settings.
    Refused(String),
}

/// What went wrong while undoing a failed apply, for the answer.
#[derive(Default)]
struct Rollback {
    problems: Vec<String>,
}

impl Node {
    /// Applies a bundle: journaled, verified, rolled back on failure. Serialized.
    pub async fn apply(&self, bundle: &Bundle) -> proto::ApplyResult {
        let _guard = self.apply_lock.lock().await;
        let start = Instant::now();
        let mut result = proto::ApplyResult::default();
        let outcome = self.apply_locked(bundle, &mut result).await;
        // Provisioning files follow only an Asterisk configuration in force: a phone must not
        // get a password Asterisk does not have yet. They reload nothing.
        let outcome = outcome.and_then(|()| {
            let changed = self
                .provisioning
                .apply(&bundle.provisioning)
                .map_err(|e| Failure::new(PROVISIONING_DIR, e.to_string()))?;
            result.unchanged &= changed.is_empty();
            result.provisioning_changed = changed;
            Ok(())
        });
        result.duration_seconds = start.elapsed().as_secs_f64();
        self.answer(bundle, outcome, &mut result);
        // What changed shows in the next scrape, not one poll interval later.
        if result.ok && !result.unchanged {
            self.poll().await;
        }
        result
    }

    /// Records an apply's outcome in the status and the metrics, and completes the answer.
    fn answer(&self, bundle: &Bundle, outcome: Result<(), Failure>, result: &mut proto::ApplyResult) {
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
                if result.applied_hash.is_empty() {
                    result.applied_hash = st.applied_hash.clone();
                }
                let text =
                    if f.file.is_empty() { f.message.clone() } else { format!("{}: {}", f.file, f.message) };
                tracing::warn!(node = %bundle.node, hash = %bundle.short_hash(), error = %text, rolled_back = result.rolled_back, restart_required = !result.restart_required.is_empty(), "apply failed");
                st.last_apply_failed = true;
                st.last_error = Some(text);
                result.error = Some(proto::ApplyError { file: f.file, message: f.message });
                self.metrics.count_apply(if result.restart_required.is_empty() {
                    "failed"
                } else {
                    "restart_required"
                });
            }
        }
    }

    async fn apply_locked(&self, bundle: &Bundle, result: &mut proto::ApplyResult) -> Result<(), Failure> {
        if bundle.node != self.cfg.node {
            return Err(Failure::new(
                "",
                format!("bundle is for node {:?}, this agent serves {:?}", bundle.node, self.cfg.node),
            ));
        }
        let (previous, verified, pending) = {
            let mut st = lock(&self.status);
            if st.last_apply_failed && self.cfg.journal_path().exists() {
                // The start could not roll back an interrupted apply: try again before
                // anything else, or its backups would be overwritten by a new journal.
                super::node::recover(&self.cfg, &mut st).map_err(|e| Failure::new("", e))?;
            }
            st.settle_restart();
            (st.applied_files.clone(), st.verified.clone(), st.restart_pending.clone())
        };
        if let Some(p) = pending.as_ref().filter(|p| p.hash == bundle.hash) {
            // Written, reloaded and verified already; only the restart is missing.
            return Err(restart_required(result, bundle, p));
        }
        let dirs = self.cfg.dirs();
        let current = dirs
            .read_current(bundle.files.keys().chain(previous.iter()))
            .map_err(|u| Failure::new(u.file.clone(), u.to_string()))?;
        let main_iax = std::fs::read(self.cfg.config_dir.join("iax.conf"))
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let plan = plan::plan(PlanInput {
            bundle: &bundle.files,
            current: &current,
            previous: &previous,
            main_iax: main_iax.as_deref(),
            verified: &verified,
        })
        .map_err(|e| Failure::new(e.file, e.reason))?;
        result.changed_files = plan.changed_files();
        if plan.is_empty() {
            result.unchanged = true;
            return Ok(());
        }
        self.wait_booted().await.map_err(|e| Failure::new("", e))?;

        // The journal is on disk before the first file changes.
        let backup: BTreeMap<String, Option<Vec<u8>>> =
            result.changed_files.iter().map(|f| (f.clone(), current.get(f).cloned().flatten())).collect();
        let journal_path = self.cfg.journal_path();
        Journal {
            target_hash: bundle.hash.clone(),
            backups: backup.clone(),
            modules: plan.modules.iter().map(|m| m.name().to_owned()).collect(),
        }
        .begin(&journal_path)
        .map_err(|e| Failure::new("", e))?;

        let log_offset = self.log_len();
        for file in &result.changed_files {
            if let Err(e) = dirs.write(file, plan.writes.get(file).map(String::as_bytes)) {
                let failed = dirs.restore(&backup);
                if failed.is_empty() {
                    let _ = Journal::finish(&journal_path);
                    result.rolled_back = true;
                }
                return Err(Failure::new(file.clone(), e));
            }
        }
        if self.cfg.fault == Some(Fault::HoldBeforeReload) {
            tracing::warn!("test fault injection: files written, holding before the reload");
            std::future::pending::<()>().await;
        }

        let mut failure = None;
        let mut needs_restart = plan.needs_asterisk_restart.clone();
        for &module in &plan.modules {
            result.reloaded_modules.push(module.name().to_owned());
            let t = Instant::now();
            let file = module_file(module, &bundle.files);
            let r = match self.reload_checked(module, plan.restart.contains(&module)).await {
                Ok(Some(refused)) => {
                    needs_restart.push(refused);
                    self.verify(module, &bundle.files).await
                }
                Ok(None) => self.verify(module, &bundle.files).await,
                Err(e) => Err(Failure::new(file, e)),
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
            if f.file == IAX_FILE
                && let Some(problem) = main_iax.as_deref().and_then(plan::iax_include_problem)
            {
                f.message = format!("{}; {problem}", f.message);
            }
        }
        let Some(mut failure) = failure else {
            lock(&self.status).last_reload = Some(SystemTime::now());
            let pending = self.restart_still_pending(bundle, needs_restart);
            self.record_applied(bundle, pending.clone()).map_err(|e| Failure::new("", e))?;
            Journal::finish(&journal_path).map_err(|e| Failure::new("", e))?;
            return match pending {
                Some(p) => Err(restart_required(result, bundle, &p)),
                None => Ok(()),
            };
        };

        // Roll back: the previous files, the same modules reloaded (a restarted one unloaded and
        // loaded again, whatever state the failure left it in), and the previous content verified.
        let rollback = self.roll_back(&plan, &backup, bundle, result).await;
        if rollback.problems.is_empty() {
            result.rolled_back = true;
            let _ = Journal::finish(&journal_path);
        } else {
            failure.message =
                format!("{}; rollback incomplete: {}", failure.message, rollback.problems.join("; "));
            // Whatever Asterisk runs now was not verified: the next apply reloads everything.
            lock(&self.status).verified.clear();
            if self.cfg.dirs().read_current(backup.keys()).is_ok_and(|now| now == backup) {
                let _ = Journal::finish(&journal_path);
            }
        }
        Err(failure)
    }

    async fn roll_back(
        &self,
        plan: &plan::Plan,
        backup: &BTreeMap<String, Option<Vec<u8>>>,
        bundle: &Bundle,
        result: &mut proto::ApplyResult,
    ) -> Rollback {
        let mut out = Rollback::default();
        let failed = self.cfg.dirs().restore(backup);
        if !failed.is_empty() {
            out.problems.push(format!("previous files not restored: {}", failed.join("; ")));
        }
        // What each module should run again: the previous content of changed files, the
        // bundle's for the ones this apply did not change.
        let mut old: BTreeMap<String, String> = bundle.files.clone();
        for (file, content) in backup {
            match content {
                Some(bytes) => old.insert(file.clone(), String::from_utf8_lossy(bytes).into_owned()),
                None => old.remove(file),
            };
        }
        for &module in &plan.modules {
            result.reloaded_modules.push(module.name().to_owned());
            let t = Instant::now();
            let r = match self.reload_checked(module, plan.restart.contains(&module)).await {
                Ok(_) => self.verify(module, &old).await.map_err(|f| f.message),
                Err(e) => Err(e),
            };
            self.metrics.count_reload(module.name(), r.is_ok(), t.elapsed().as_secs_f64());
            if let Err(e) = r {
                tracing::error!(module = module.name(), error = %e, "rollback of the module failed");
                out.problems.push(format!("{}: {e}", module.name()));
            }
        }
        out
    }

    /// The restart still owed after this apply: what it needs now, plus what an earlier apply
    /// left waiting (Asterisk has not restarted since, or [`Status::settle_restart`] would
    /// have cleared it).
    fn restart_still_pending(&self, bundle: &Bundle, needs: Vec<String>) -> Option<PendingRestart> {
        let st = lock(&self.status);
        let mut reasons = st.restart_pending.as_ref().map(|p| p.reasons.clone()).unwrap_or_default();
        for r in needs {
            if !reasons.contains(&r) {
                reasons.push(r);
            }
        }
        (!reasons.is_empty()).then(|| PendingRestart {
            hash: bundle.hash.clone(),
            reasons,
            asterisk_started_unix: st.asterisk_started_unix(),
        })
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

    fn record_applied(&self, bundle: &Bundle, pending: Option<PendingRestart>) -> Result<(), String> {
        let applied = Applied {
            hash: bundle.hash.clone(),
            files: bundle.files.keys().cloned().collect(),
            mesh: Some(bundle.mesh.clone()),
            digests: bundle.files.iter().map(|(f, c)| (f.clone(), plan::digest(c))).collect(),
            restart_required: pending,
        };
        let text = serde_json::to_string_pretty(&applied).expect("applied state serializes");
        super::config_files::write_atomic(&self.cfg.state_file, text.as_bytes())
            .map_err(|e| format!("writing {}: {e}", self.cfg.state_file.display()))?;
        let mut st = lock(&self.status);
        st.applied_hash = applied.hash;
        st.applied_files = applied.files;
        st.mesh = applied.mesh;
        st.verified = applied.digests;
        st.restart_pending = applied.restart_required;
        if let Some(text) = bundle.files.get(PJSIP_FILE) {
            st.pjsip_trunks = plan::pjsip_objects(text).trunks;
        }
        st.sip_target = self.cfg.sip_probe.target(bundle.files.get(PJSIP_FILE).map(String::as_str));
        Ok(())
    }

    /// [`Node::reload`], and for a restarted chan_iax2 a look at what Asterisk logged meanwhile:
    /// a listener it could not open makes the load a failure (Asterisk loads the module anyway,
    /// without the listener; only the log says so, hence `--asterisk-log`).
    async fn reload_checked(&self, module: Module, restart: bool) -> Result<Option<String>, String> {
        let offset = self.log_len();
        let outcome = self.reload(module, restart).await?;
        if restart && module == Module::Iax && outcome.is_none() {
            let log = self.log_since(offset);
            let errors = plan::iax_listener_errors(&log);
            if !errors.is_empty() {
                let said: Vec<&str> = errors.iter().map(|l| plan::log_message(l)).collect();
                return Err(format!(
                    "chan_iax2 was loaded without its listener (bindaddr/bindport): Asterisk: {}",
                    said.join("; ")
                ));
            }
        }
        Ok(outcome)
    }

    /// Reloads a module (AMI `Reload`; success needs `Response: Success` and, when the `Reload`
    /// event arrives (read class `system`), its `Status: 0`), or unloads and loads it when
    /// `restart`. `Ok(Some(why))`: the unload was refused, so the module was reloaded instead and
    /// keeps its old listener until it is next loaded.
    async fn reload(&self, module: Module, restart: bool) -> Result<Option<String>, String> {
        let name = module.name();
        if restart {
            match self.restart(name).await? {
                Restart::Done => return Ok(None),
                Restart::Refused(why) => {
                    self.reload_module(name).await?;
                    return Ok(Some(format!(
                        "{name} keeps its old listener: Asterisk refused to unload it ({why}); it takes the \
                         new bindaddr/bindport when it is next loaded"
                    )));
                }
            }
        }
        self.reload_module(name).await.map(|()| None)
    }

    async fn reload_module(&self, name: &str) -> Result<(), String> {
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

    /// Unloads and loads a module (AMI `ModuleLoad`), for settings its reload ignores. The load
    /// is always tried when the module is not loaded after the unload attempt (a rollback after
    /// a failed load finds it unloaded); a refused unload leaves the running module alone.
    async fn restart(&self, name: &str) -> Result<Restart, String> {
        tracing::info!(module = name, "unloading and loading the module: its listener changed");
        let module_load = |load_type: &'static str| async move {
            let action = Action::new("ModuleLoad").header("Module", name).header("LoadType", load_type);
            let reply = self.session.send(action).await.map_err(|e| e.to_string())?;
            actions::check("ModuleLoad", reply).map(|_| ()).map_err(|e| format!("{load_type} {name}: {e}"))
        };
        if let Err(unload) = module_load("unload").await {
            if self.module_loaded(name).await? {
                return Ok(Restart::Refused(unload));
            }
            tracing::info!(module = name, "the module was not loaded; loading it");
        }
        module_load("load").await?;
        if !self.module_loaded(name).await? {
            return Err(format!("{name} is not running after its load"));
        }
        Ok(Restart::Done)
    }

    /// Is the module loaded (AMI `ModuleCheck`)?
    async fn module_loaded(&self, name: &str) -> Result<bool, String> {
        let reply = self
            .session
            .send(Action::new("ModuleCheck").header("Module", name))
            .await
            .map_err(|e| format!("checking whether {name} is loaded: {e}"))?;
        Ok(!reply.response.is_error())
    }

    /// Everything `files` defines for `module` is loaded. Asterisk applies a reload
    /// synchronously, but the check is retried briefly in case a list lags behind; a check AMI
    /// could not answer is not retried.
    async fn verify(&self, module: Module, files: &BTreeMap<String, String>) -> Result<(), Failure> {
        let mut last = Ok(());
        for attempt in 0..4 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            last = self.verify_once(module, files).await;
            match &last {
                Ok(()) => break,
                Err(f) if f.message.starts_with(AMI_FAILED) => break,
                Err(_) => {}
            }
        }
        last
    }

    async fn verify_once(&self, module: Module, files: &BTreeMap<String, String>) -> Result<(), Failure> {
        let ami = |file: &str| {
            let file = file.to_owned();
            move |e: crate::ami::AmiError| Failure::new(file, format!("{AMI_FAILED}: {e}"))
        };
        match module {
            Module::Pjsip => {
                let Some(text) = files.get(PJSIP_FILE) else { return Ok(()) };
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
                let Some(text) = files.get(IAX_FILE) else { return Ok(()) };
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
                let Some(text) = files.get(EXTENSIONS_FILE) else { return Ok(()) };
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
}

/// How a verify failure that AMI caused (not Asterisk's configuration) starts.
const AMI_FAILED: &str = "verifying after reload";

/// The answer when the bundle is written, loaded and verified but part of it waits for an
/// Asterisk restart: not ok (Asterisk does not run all of it), nothing rolled back.
fn restart_required(result: &mut proto::ApplyResult, bundle: &Bundle, p: &PendingRestart) -> Failure {
    result.restart_required = p.message();
    result.applied_hash = bundle.hash.clone();
    let file = if p.reasons.iter().all(|r| r.starts_with("transport ")) { PJSIP_FILE } else { "" };
    Failure::new(file, p.message())
}

/// The bundle file a module reads (for naming it in an error).
fn module_file(module: Module, files: &BTreeMap<String, String>) -> String {
    files
        .keys()
        .find(|f| plan::classify(f).is_ok_and(|(m, _)| m == module))
        .cloned()
        .unwrap_or_else(|| module.name().to_owned())
}

fn list(names: &[&str]) -> String {
    const MAX: usize = 10;
    let mut s = names.iter().take(MAX).copied().collect::<Vec<_>>().join(", ");
    if names.len() > MAX {
        s.push_str(&format!(" and {} more", names.len() - MAX));
    }
    s
}
