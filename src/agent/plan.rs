//! The pure half of an apply: what to write, what to remove, which modules to reload, and what to
//! look for afterwards. No I/O here: the caller reads the files on disk and hands their contents in.

use std::collections::{BTreeMap, BTreeSet};

use crate::render::{EXTENSIONS_FILE, IAX_FILE, KEYS_DIR, PJSIP_FILE};

/// An Asterisk module an owned file belongs to. The order of the variants is the reload order:
/// keys before the IAX2 peers that use them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Module {
    /// `keys/*`: res_crypto re-reads the key directory on reload.
    Crypto,
    /// `pjsip_operator.conf`.
    Pjsip,
    /// `iax_operator.conf`.
    Iax,
    /// `extensions_operator.conf` (`dialplan reload`).
    Dialplan,
}

impl Module {
    /// The module name the AMI `Reload` action takes.
    pub fn name(self) -> &'static str {
        match self {
            Module::Crypto => "res_crypto.so",
            Module::Pjsip => "res_pjsip.so",
            Module::Iax => "chan_iax2.so",
            Module::Dialplan => "pbx_config.so",
        }
    }

    /// Every module, in reload order.
    pub const ALL: [Module; 4] = [Module::Crypto, Module::Pjsip, Module::Iax, Module::Dialplan];
}

/// Where a bundle file goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Asterisk's config directory (`--config-dir`).
    Config,
    /// Asterisk's key directory (`--keys-dir`); the `keys/` prefix is stripped.
    Keys,
}

/// A bundle file name the agent does not accept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {reason}")]
pub struct PlanError {
    /// The bundle file name.
    pub file: String,
    /// Why it is refused.
    pub reason: String,
}

/// Which module reads a bundle file, and where it goes. Only the files the renderer produces are
/// accepted: a file no module reads would be written and never take effect.
pub fn classify(file: &str) -> Result<(Module, Target), PlanError> {
    let refuse = |reason: &str| PlanError { file: file.to_owned(), reason: reason.to_owned() };
    if let Some(key) = file.strip_prefix(KEYS_DIR).and_then(|r| r.strip_prefix('/')) {
        let plain = !key.is_empty() && !key.contains('/') && key != "." && key != "..";
        if !plain {
            return Err(refuse("a key file must be keys/<name>.key or keys/<name>.pub"));
        }
        if !(key.ends_with(".key") || key.ends_with(".pub")) {
            return Err(refuse("a key file must end in .key or .pub"));
        }
        return Ok((Module::Crypto, Target::Keys));
    }
    match file {
        PJSIP_FILE => Ok((Module::Pjsip, Target::Config)),
        IAX_FILE => Ok((Module::Iax, Target::Config)),
        EXTENSIONS_FILE => Ok((Module::Dialplan, Target::Config)),
        _ => Err(refuse(&format!(
            "not a file the agent manages (expected {PJSIP_FILE}, {IAX_FILE}, {EXTENSIONS_FILE} or {KEYS_DIR}/*)"
        ))),
    }
}

/// The file name inside its target directory.
pub fn target_name(file: &str) -> &str {
    file.strip_prefix(KEYS_DIR).and_then(|r| r.strip_prefix('/')).unwrap_or(file)
}

/// What an apply has to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Files whose content differs from what is on disk (or that are absent), with the new content.
    pub writes: BTreeMap<String, String>,
    /// Files the previous bundle had and this one has not.
    pub removes: BTreeSet<String>,
    /// Modules to reload, in order, each once.
    pub modules: Vec<Module>,
    /// Of those, the ones a reload is not enough for: chan_iax2 ignores a new `bindaddr` or
    /// `bindport` on reload ("Ignoring bindaddr on reload"), so it is unloaded and loaded.
    pub restart: BTreeSet<Module>,
}

impl Plan {
    /// Nothing to write, remove or reload.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.removes.is_empty()
    }

    /// Every file touched, in bundle naming.
    pub fn changed_files(&self) -> Vec<String> {
        self.writes.keys().chain(self.removes.iter()).cloned().collect()
    }

    /// The changed files a module reads.
    pub fn files_of(&self, module: Module) -> Vec<String> {
        self.changed_files().into_iter().filter(|f| classify(f).is_ok_and(|(m, _)| m == module)).collect()
    }
}

/// Compares the bundle's files with what is on disk now (`current`: file → contents, `None` when
/// absent) and with the names the previous apply wrote (`previous`), and decides what to do.
pub fn plan(
    bundle: &BTreeMap<String, String>,
    current: &BTreeMap<String, Option<String>>,
    previous: &BTreeSet<String>,
) -> Result<Plan, PlanError> {
    let mut out = Plan::default();
    let mut modules = BTreeSet::new();
    for (file, contents) in bundle {
        let (module, _) = classify(file)?;
        if current.get(file).and_then(Option::as_ref) != Some(contents) {
            out.writes.insert(file.clone(), contents.clone());
            modules.insert(module);
        }
    }
    for file in previous.iter().filter(|f| !bundle.contains_key(*f)) {
        // A name we wrote ourselves; one we no longer understand is left alone.
        if let Ok((module, _)) = classify(file)
            && current.get(file).is_some_and(Option::is_some)
        {
            out.removes.insert(file.clone());
            modules.insert(module);
        }
    }
    out.modules = modules.into_iter().collect();
    if out.modules.contains(&Module::Iax) {
        let old = current.get(IAX_FILE).and_then(Option::as_deref).map(iax_listener).unwrap_or_default();
        let new = bundle.get(IAX_FILE).map(|t| iax_listener(t)).unwrap_or_default();
        if old != new {
            out.restart.insert(Module::Iax);
        }
    }
    Ok(out)
}

/// `bindaddr` and `bindport` of the `[general]` section(s) of an IAX2 file.
pub fn iax_listener(text: &str) -> (Option<String>, Option<String>) {
    let mut out = (None, None);
    for (_, lines) in sections(text).iter().filter(|(n, _)| n.eq_ignore_ascii_case("general")) {
        if let Some(v) = value(lines, "bindaddr") {
            out.0 = Some(v.to_owned());
        }
        if let Some(v) = value(lines, "bindport") {
            out.1 = Some(v.to_owned());
        }
    }
    out
}

/// Sections of an Asterisk `.conf` file: `(name, [(key, value)])`, in order. Templates (`(!)`)
/// are left out; `[name](+)` additions and `[name](template)` sections are kept under `name`.
pub fn sections(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut skipping = false;
    for raw in text.lines() {
        let line = raw.split(';').next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let Some((name, after)) = rest.split_once(']') else { continue };
            skipping = after.trim_start().starts_with("(!");
            if !skipping {
                out.push((name.trim().to_owned(), Vec::new()));
            }
            continue;
        }
        if skipping {
            continue;
        }
        if let Some(current) = out.last_mut() {
            let (k, v) = match line.split_once("=>") {
                Some((k, v)) => (k, v),
                None => line.split_once('=').unwrap_or((line, "")),
            };
            current.1.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    out
}

fn value<'a>(lines: &'a [(String, String)], key: &str) -> Option<&'a str> {
    lines.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
}

/// What a rendered PJSIP file defines, by object type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PjsipObjects {
    /// `type=endpoint` sections.
    pub endpoints: BTreeSet<String>,
    /// `type=aor` sections.
    pub aors: BTreeSet<String>,
    /// Endpoints with an `outbound_auth`: trunks (the renderer gives phones none).
    pub trunks: BTreeSet<String>,
}

/// Endpoints, AORs and trunk endpoints of a PJSIP file.
pub fn pjsip_objects(text: &str) -> PjsipObjects {
    let mut out = PjsipObjects::default();
    for (name, lines) in sections(text) {
        match value(&lines, "type").map(str::to_ascii_lowercase).as_deref() {
            Some("endpoint") => {
                if value(&lines, "outbound_auth").is_some() {
                    out.trunks.insert(name.clone());
                }
                out.endpoints.insert(name);
            }
            Some("aor") => {
                out.aors.insert(name);
            }
            _ => {}
        }
    }
    out
}

/// IAX2 peers (`type=peer` or `friend`) of an IAX2 file: what `IAXpeers` lists.
pub fn iax_peers(text: &str) -> BTreeSet<String> {
    sections(text)
        .into_iter()
        .filter(|(name, lines)| {
            !name.eq_ignore_ascii_case("general")
                && value(lines, "type")
                    .is_some_and(|t| t.eq_ignore_ascii_case("peer") || t.eq_ignore_ascii_case("friend"))
        })
        .map(|(name, _)| name)
        .collect()
}

/// Dialplan contexts of an extensions file.
pub fn dialplan_contexts(text: &str) -> BTreeSet<String> {
    sections(text)
        .into_iter()
        .map(|(name, _)| name)
        .filter(|n| !n.eq_ignore_ascii_case("general") && !n.eq_ignore_ascii_case("globals"))
        .collect()
}

/// ERROR lines of an Asterisk log excerpt that name one of `files` (by file name), with the file
/// each names: Asterisk says e.g. `Could not find option … at line 14 of /etc/asterisk/pjsip_operator.conf`.
pub fn log_errors_about<'a>(log: &'a str, files: &[String]) -> Vec<(String, &'a str)> {
    log.lines()
        .filter(|l| l.contains("ERROR[") || l.starts_with("ERROR"))
        .filter_map(|l| files.iter().find(|f| l.contains(target_name(f))).map(|f| (f.clone(), l)))
        .collect()
}

/// The message part of an Asterisk log line (after `file.c: `), for people.
pub fn log_message(line: &str) -> &str {
    line.split_once("] ")
        .map(|(_, rest)| rest)
        .and_then(|rest| rest.split_once(": "))
        .map_or(line, |(_, msg)| msg)
        .trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn disk(pairs: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<String>> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.map(str::to_owned))).collect()
    }

    #[test]
    fn same_content_plans_nothing() {
        let b = files(&[(PJSIP_FILE, "a"), (IAX_FILE, "b"), (EXTENSIONS_FILE, "c")]);
        let d = disk(&[(PJSIP_FILE, Some("a")), (IAX_FILE, Some("b")), (EXTENSIONS_FILE, Some("c"))]);
        let p = plan(&b, &d, &b.keys().cloned().collect()).unwrap();
        assert!(p.is_empty());
        assert_eq!(p.modules, vec![]);
    }

    #[test]
    fn one_changed_file_reloads_only_its_module() {
        let b = files(&[(PJSIP_FILE, "new"), (IAX_FILE, "b"), (EXTENSIONS_FILE, "c")]);
        let d = disk(&[(PJSIP_FILE, Some("old")), (IAX_FILE, Some("b")), (EXTENSIONS_FILE, Some("c"))]);
        let p = plan(&b, &d, &BTreeSet::new()).unwrap();
        assert_eq!(p.writes.keys().collect::<Vec<_>>(), vec![PJSIP_FILE]);
        assert_eq!(p.modules, vec![Module::Pjsip]);
    }

    #[test]
    fn absent_files_are_written_and_modules_come_in_reload_order() {
        let b = files(&[(EXTENSIONS_FILE, "c"), (IAX_FILE, "b"), ("keys/t.key", "k"), (PJSIP_FILE, "a")]);
        let p = plan(&b, &disk(&[]), &BTreeSet::new()).unwrap();
        assert_eq!(p.writes.len(), 4);
        assert_eq!(p.modules, vec![Module::Crypto, Module::Pjsip, Module::Iax, Module::Dialplan]);
        let names: Vec<_> = p.modules.iter().map(|m| m.name()).collect();
        assert_eq!(names, ["res_crypto.so", "res_pjsip.so", "chan_iax2.so", "pbx_config.so"]);
    }

    #[test]
    fn files_of_an_earlier_bundle_are_removed_when_present() {
        let b = files(&[(PJSIP_FILE, "a")]);
        let d = disk(&[(PJSIP_FILE, Some("a")), ("keys/old.key", Some("k")), ("keys/gone.pub", None)]);
        let prev: BTreeSet<String> = ["keys/old.key", "keys/gone.pub", PJSIP_FILE].map(String::from).into();
        let p = plan(&b, &d, &prev).unwrap();
        assert!(p.writes.is_empty());
        assert_eq!(p.removes.iter().collect::<Vec<_>>(), vec!["keys/old.key"]);
        assert_eq!(p.modules, vec![Module::Crypto]);
        assert_eq!(p.changed_files(), vec!["keys/old.key".to_string()]);
    }

    #[test]
    fn unknown_and_escaping_names_are_refused() {
        for bad in
            ["sip.conf", "../pjsip_operator.conf", "keys/../x.key", "keys/a/b.key", "keys/x.txt", "keys/"]
        {
            let err = plan(&files(&[(bad, "x")]), &disk(&[]), &BTreeSet::new()).unwrap_err();
            assert_eq!(err.file, bad);
        }
        assert_eq!(classify("keys/a-b.key").unwrap(), (Module::Crypto, Target::Keys));
        assert_eq!(target_name("keys/a-b.key"), "a-b.key");
        assert_eq!(target_name(PJSIP_FILE), PJSIP_FILE);
    }

    const PJSIP: &str = "\
; header
[operator-transport]
type=transport
bind=0.0.0.0:5060

[3001]
type=endpoint
aors=3001 ; comment

[3001-auth]
type=auth
password=x;y

[3001]
type=aor

[a-b-sip]
type=endpoint
outbound_auth=a-b-sip-auth

[a-b-sip]
type = aor
contact=sip:127.0.0.1

[tpl](!)
type=endpoint
";

    #[test]
    fn a_new_iax_listener_needs_a_module_restart_other_changes_a_reload() {
        let old = "[general](+)\nbindport=4569\nbindaddr=127.0.0.1\n[t]\ntype=peer\nqualify=yes\n";
        let peer_changed = old.replace("qualify=yes", "qualify=no");
        let moved = old.replace("127.0.0.1", "127.0.0.2");
        let p = plan(&files(&[(IAX_FILE, &peer_changed)]), &disk(&[(IAX_FILE, Some(old))]), &BTreeSet::new())
            .unwrap();
        assert_eq!((p.modules.clone(), p.restart.len()), (vec![Module::Iax], 0));
        let p =
            plan(&files(&[(IAX_FILE, &moved)]), &disk(&[(IAX_FILE, Some(old))]), &BTreeSet::new()).unwrap();
        assert!(p.restart.contains(&Module::Iax));
        let p = plan(&files(&[(IAX_FILE, old)]), &disk(&[(IAX_FILE, None)]), &BTreeSet::new()).unwrap();
        assert!(p.restart.contains(&Module::Iax), "first apply binds the listener");
        assert_eq!(iax_listener(old), (Some("127.0.0.1".into()), Some("4569".into())));
    }

    #[test]
    fn pjsip_objects_by_type_without_templates() {
        let o = pjsip_objects(PJSIP);
        assert_eq!(o.endpoints, ["3001", "a-b-sip"].map(String::from).into());
        assert_eq!(o.aors, ["3001", "a-b-sip"].map(String::from).into());
        assert_eq!(o.trunks, ["a-b-sip"].map(String::from).into());
    }

    #[test]
    fn iax_peers_and_contexts() {
        let iax = "[general](+)\nbindport=4569\nregister => a:b@c\n\n[a-b-iax]\ntype=peer\n\n[a-b-iax-in]\ntype=user\n\n[f]\ntype=friend\n";
        assert_eq!(iax_peers(iax), ["a-b-iax", "f"].map(String::from).into());
        let ext = "[general]\nstatic=yes\n[operator-local]\nexten => 1,1,NoOp()\n same => n,Hangup()\n[operator-routes]\n";
        assert_eq!(dialplan_contexts(ext), ["operator-local", "operator-routes"].map(String::from).into());
    }

    #[test]
    fn log_errors_name_the_file_and_keep_asterisks_message() {
        let log = "\
[2026-11-23 10:42:58.419] VERBOSE[31458] loader.c: Reloading module 'res_pjsip.so' (Basic SIP resource)
[2026-11-23 10:42:58.419] ERROR[31358] config_options.c: Could not find option suitable for category '3002' named 'bogus_option' at line 14 of /tmp/x/etc/pjsip_operator.conf
[2026-11-23 10:42:58.419] ERROR[31358] res_sorcery_config.c: Could not create an object of type 'endpoint' with id '3002' from configuration file 'pjsip.conf'
";
        let errs = log_errors_about(log, &[PJSIP_FILE.to_string(), IAX_FILE.to_string()]);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].0, PJSIP_FILE);
        assert_eq!(
            log_message(errs[0].1),
            "Could not find option suitable for category '3002' named 'bogus_option' at line 14 of /tmp/x/etc/pjsip_operator.conf"
        );
    }
}
