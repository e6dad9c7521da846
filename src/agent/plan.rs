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
    /// Changes that neither a reload nor a module restart puts in force (PJSIP transports):
    /// Asterisk must restart. Empty: everything takes effect now.
    pub needs_asterisk_restart: Vec<String>,
}

impl Plan {
    /// Nothing to write, remove or reload.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.removes.is_empty() && self.modules.is_empty()
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

/// What a plan is computed from: the bundle, the disk, and what the agent knows.
#[derive(Clone, Copy, Debug)]
pub struct PlanInput<'a> {
    /// The bundle's files.
    pub bundle: &'a BTreeMap<String, String>,
    /// What is on disk now: file → contents, `None` when absent.
    pub current: &'a BTreeMap<String, Option<Vec<u8>>>,
    /// The names the previous apply wrote.
    pub previous: &'a BTreeSet<String>,
    /// Asterisk's main `iax.conf` (it holds the listener when the operator's file does not),
    /// when readable.
    pub main_iax: Option<&'a str>,
    /// Digest ([`digest`]) of every file as the last verified apply had it; empty when what
    /// Asterisk runs was not verified. A file that matches the disk but not this is reloaded
    /// and verified anyway: it may have been written by an apply that never reloaded, or by hand.
    pub verified: &'a BTreeMap<String, String>,
}

/// SHA-256 (hex) of a file's contents, as the state file records them.
pub fn digest(contents: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(contents.as_bytes()))
}

/// Compares the bundle's files with what is on disk now and with the names the previous
/// apply wrote, and decides what to do.
pub fn plan(input: PlanInput<'_>) -> Result<Plan, PlanError> {
    let PlanInput { bundle, current, previous, main_iax, verified } = input;
    let mut out = Plan::default();
    let mut modules = BTreeSet::new();
    let on_disk = |file: &str| current.get(file).and_then(Option::as_deref);
    for (file, contents) in bundle {
        let (module, _) = classify(file)?;
        if on_disk(file) != Some(contents.as_bytes()) {
            out.writes.insert(file.clone(), contents.clone());
            modules.insert(module);
        } else if verified.get(file) != Some(&digest(contents)) {
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
        let old = on_disk(IAX_FILE).map(String::from_utf8_lossy);
        let new = bundle.get(IAX_FILE).map(String::as_str);
        if iax_listeners(main_iax, old.as_deref()) != iax_listeners(main_iax, new) {
            out.restart.insert(Module::Iax);
        }
    }
    if let Some(new) = bundle.get(PJSIP_FILE)
        && let Some(old) = on_disk(PJSIP_FILE)
    {
        out.needs_asterisk_restart = pjsip_transport_changes(&String::from_utf8_lossy(old), new);
    }
    Ok(out)
}

/// Where chan_iax2 listens with `main` (Asterisk's iax.conf) and the operator's file included
/// at its end: every `bindaddr` of `[general]` (its port, or the `bindport` before it), or
/// `0.0.0.0:<bindport>` when there is none — what chan_iax2 binds at load. A reload ignores
/// these settings, so a difference needs the module unloaded and loaded.
pub fn iax_listeners(main: Option<&str>, operator: Option<&str>) -> BTreeSet<String> {
    let mut port = "4569".to_owned();
    let mut out = BTreeSet::new();
    for text in [main, operator].into_iter().flatten() {
        for (_, lines) in sections(text).iter().filter(|(n, _)| n.eq_ignore_ascii_case("general")) {
            for (k, v) in lines {
                if k.eq_ignore_ascii_case("bindport") {
                    port = v.clone();
                } else if k.eq_ignore_ascii_case("bindaddr") {
                    let with_port = v.rsplit_once(':').is_some_and(|(h, p)| {
                        !p.is_empty()
                            && p.bytes().all(|b| b.is_ascii_digit())
                            && (!h.contains(':') || h.ends_with(']'))
                    });
                    out.insert(if with_port { v.clone() } else { format!("{v}:{port}") });
                }
            }
        }
    }
    if out.is_empty() {
        out.insert(format!("0.0.0.0:{port}"));
    }
    out
}

/// Transports of the old PJSIP file that the new one changes or drops, described for people.
/// res_pjsip keeps a transport as it is on reload unless it was loaded with `allow_reload=yes`,
/// so such a change takes effect only when Asterisk restarts. Empty: a reload applies it all.
pub fn pjsip_transport_changes(old: &str, new: &str) -> Vec<String> {
    let transports = |text: &str| -> BTreeMap<String, BTreeSet<(String, String)>> {
        let mut out: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
        for (name, lines) in sections(text) {
            if value(&lines, "type").is_some_and(|t| t.eq_ignore_ascii_case("transport")) {
                out.entry(name)
                    .or_default()
                    .extend(lines.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)));
            }
        }
        out
    };
    let (old, new) = (transports(old), transports(new));
    let mut changes = Vec::new();
    for (name, settings) in &old {
        let reloadable = settings.iter().any(|(k, v)| k == "allow_reload" && is_true(v));
        match new.get(name) {
            _ if reloadable => {}
            None => changes.push(format!("transport {name} removed")),
            Some(n) if n != settings => {
                let was = |k: &str| settings.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
                let now = |k: &str| n.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
                let what = if was("bind") != now("bind") {
                    format!("bind {} -> {}", was("bind").unwrap_or("(none)"), now("bind").unwrap_or("(none)"))
                } else {
                    "settings changed".to_owned()
                };
                changes.push(format!("transport {name}: {what}"));
            }
            Some(_) => {}
        }
    }
    changes
}

fn is_true(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "yes" | "true" | "on" | "1" | "y")
}

/// Why the operator's IAX2 file cannot take effect with this main `iax.conf`, with the fix; `None`
/// when it is included after a `[general]` section. Asterisk adds the file's `[general](+)` to an
/// existing `[general]`: included before one (or not at all), none of the file is loaded.
pub fn iax_include_problem(main: &str) -> Option<String> {
    let mut general_before = false;
    for raw in main.lines() {
        let line = raw.split(';').next().unwrap_or("").trim();
        if let Some(rest) = line.strip_prefix("#tryinclude").or_else(|| line.strip_prefix("#include")) {
            let target = rest.trim().trim_matches(|c| c == '"' || c == '<' || c == '>');
            if target.ends_with(IAX_FILE) {
                return (!general_before).then(|| {
                    format!(
                        "cause: iax.conf has no [general] section before its `#tryinclude {IAX_FILE}` line, so \
                         Asterisk cannot add this file's [general](+) to it and loads none of the file; fix: \
                         put `#tryinclude {IAX_FILE}` at the end of iax.conf, after [general]"
                    )
                });
            }
        }
        if let Some(rest) = line.strip_prefix('[')
            && let Some((name, after)) = rest.split_once(']')
            && name.trim().eq_ignore_ascii_case("general")
            && !after.trim_start().starts_with("(!")
        {
            general_before = true;
        }
    }
    Some(format!(
        "cause: iax.conf does not include {IAX_FILE}; fix: add `#tryinclude {IAX_FILE}` at the end of iax.conf, after [general]"
    ))
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

/// ERROR lines of a log excerpt saying chan_iax2 could not open a listener. Asterisk loads
/// chan_iax2 anyway (without that listener), so only its log tells that the load failed.
pub fn iax_listener_errors(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("ERROR["))
        .filter(|l| {
            l.contains("Unable to create network socket")
                || (l.contains("netsock.c") && l.contains("Unable to bind"))
        })
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

    fn disk(pairs: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<Vec<u8>>> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.map(|t| t.as_bytes().to_vec()))).collect()
    }

    /// A plan after a verified apply, without a main iax.conf.
    fn plan(
        bundle: &BTreeMap<String, String>,
        current: &BTreeMap<String, Option<Vec<u8>>>,
        previous: &BTreeSet<String>,
    ) -> Result<Plan, PlanError> {
        let verified = bundle.iter().map(|(f, c)| (f.clone(), digest(c))).collect();
        super::plan(PlanInput { bundle, current, previous, main_iax: None, verified: &verified })
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
        assert!(p.restart.contains(&Module::Iax), "first apply binds the new listener");
        assert_eq!(iax_listeners(None, Some(old)), ["127.0.0.1:4569".to_owned()].into());
    }

    #[test]
    fn the_first_apply_keeps_chan_iax2_running_when_it_already_listens_there() {
        // Adopting a live PBX: its iax.conf binds the default 0.0.0.0:4569, and so does a
        // rendered file without `bind`: reload only, calls stay up.
        let main = "[general]\ndisallow=all\nallow=ulaw\n\n#tryinclude iax_operator.conf\n";
        let rendered = "[general](+)\nbindport=4569\n\n[t]\ntype=peer\n";
        let input = |current: &BTreeMap<String, Option<Vec<u8>>>, main_iax| {
            super::plan(PlanInput {
                bundle: &files(&[(IAX_FILE, rendered)]),
                current,
                previous: &BTreeSet::new(),
                main_iax,
                verified: &BTreeMap::new(),
            })
            .unwrap()
        };
        let p = input(&disk(&[(IAX_FILE, None)]), Some(main));
        assert_eq!((p.modules.clone(), p.restart.len()), (vec![Module::Iax], 0));
        // The rendered file moves to another port: restart.
        let moved = rendered.replace("4569", "4570");
        let p = super::plan(PlanInput {
            bundle: &files(&[(IAX_FILE, &moved)]),
            current: &disk(&[(IAX_FILE, Some(rendered))]),
            previous: &BTreeSet::new(),
            main_iax: Some(main),
            verified: &BTreeMap::from([(IAX_FILE.to_owned(), digest(rendered))]),
        })
        .unwrap();
        assert!(p.restart.contains(&Module::Iax));
        // A bindport after the main file's bindaddr moves nothing (chan_iax2 binds each bindaddr
        // with the port in force when it reads it).
        let main_bound = main.replace("allow=ulaw", "bindaddr=192.0.2.1");
        assert_eq!(iax_listeners(Some(&main_bound), None), ["192.0.2.1:4569".to_owned()].into());
        assert_eq!(iax_listeners(Some(&main_bound), Some(&moved)), ["192.0.2.1:4569".to_owned()].into());
        assert_eq!(
            iax_listeners(None, Some("[general]\nbindaddr=[::1]:4600\n")),
            ["[::1]:4600".to_owned()].into()
        );
    }

    #[test]
    fn an_unverified_file_is_reloaded_even_when_the_disk_matches() {
        let b = files(&[(PJSIP_FILE, "a"), (EXTENSIONS_FILE, "c"), (IAX_FILE, "i")]);
        let d = disk(&[(PJSIP_FILE, Some("a")), (EXTENSIONS_FILE, Some("c")), (IAX_FILE, Some("old"))]);
        let previous = BTreeSet::new();
        let input =
            |verified| PlanInput { bundle: &b, current: &d, previous: &previous, main_iax: None, verified };
        // Nothing verified (an interrupted apply was rolled back): every module.
        let nothing = BTreeMap::new();
        let p = super::plan(input(&nothing)).unwrap();
        assert_eq!(p.writes.keys().collect::<Vec<_>>(), [IAX_FILE]);
        assert_eq!(p.modules, vec![Module::Pjsip, Module::Iax, Module::Dialplan]);
        // The dialplan on disk is the verified one; the PJSIP file on disk is not (written by an
        // apply that never reloaded): it is reloaded although it matches the bundle.
        let verified = BTreeMap::from([
            (PJSIP_FILE.to_owned(), digest("an older a")),
            (EXTENSIONS_FILE.to_owned(), digest("c")),
        ]);
        let p = super::plan(input(&verified)).unwrap();
        assert_eq!(p.modules, vec![Module::Pjsip, Module::Iax]);
    }

    #[test]
    fn a_changed_or_dropped_sip_transport_needs_an_asterisk_restart() {
        let old = "[operator-transport]\ntype=transport\nprotocol=udp\nbind=0.0.0.0:5060\n\n[3001]\ntype=endpoint\n";
        assert_eq!(pjsip_transport_changes(old, &old.replace("[3001]", "[3002]")), Vec::<String>::new());
        assert_eq!(
            pjsip_transport_changes(old, &old.replace("5060", "5070")),
            ["transport operator-transport: bind 0.0.0.0:5060 -> 0.0.0.0:5070"]
        );
        assert_eq!(
            pjsip_transport_changes(old, &old.replace("protocol=udp", "protocol=tcp")),
            ["transport operator-transport: settings changed"]
        );
        assert_eq!(
            pjsip_transport_changes(old, "[3001]\ntype=endpoint\n"),
            ["transport operator-transport removed"]
        );
        let reloadable = old.replace("protocol=udp", "protocol=udp\nallow_reload=yes");
        assert!(pjsip_transport_changes(&reloadable, &reloadable.replace("5060", "5070")).is_empty());
        let b = files(&[(PJSIP_FILE, &old.replace("5060", "5070"))]);
        let p = plan(&b, &disk(&[(PJSIP_FILE, Some(old))]), &BTreeSet::new()).unwrap();
        assert_eq!(p.needs_asterisk_restart.len(), 1);
        let p = plan(&b, &disk(&[(PJSIP_FILE, None)]), &BTreeSet::new()).unwrap();
        assert!(p.needs_asterisk_restart.is_empty(), "a new transport is created by the reload");
    }

    #[test]
    fn iax_conf_must_include_the_file_after_general() {
        assert_eq!(iax_include_problem("[general]\nallow=ulaw\n#tryinclude iax_operator.conf\n"), None);
        assert_eq!(
            iax_include_problem("[general]\n[peer]\ntype=peer\n#include \"iax_operator.conf\"\n"),
            None
        );
        let before = iax_include_problem("#tryinclude iax_operator.conf\n[general]\nallow=ulaw\n").unwrap();
        assert!(
            before.contains("no [general] section before") && before.contains("at the end of iax.conf"),
            "{before}"
        );
        let template_only = iax_include_problem("[general](!)\n#tryinclude iax_operator.conf\n").unwrap();
        assert!(template_only.contains("no [general]"), "{template_only}");
        let missing = iax_include_problem("[general]\nallow=ulaw\n").unwrap();
        assert!(missing.contains("does not include iax_operator.conf"), "{missing}");
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
    fn a_listener_chan_iax2_could_not_open_is_found_in_the_log() {
        let log = "\
[2026-12-01 05:31:22.922] VERBOSE[10227] chan_iax2.c: Binding IAX2 to address 127.100.39.120:4569
[2026-12-01 05:31:22.964] ERROR[10227] iax2/netsock.c: Unable to bind to 192.0.2.77:4569: Cannot assign requested address
[2026-12-01 05:31:22.964] WARNING[10227] chan_iax2.c: Unable to apply binding to '192.0.2.77' at line 7
[2026-12-01 05:31:22.964] ERROR[10227] chan_iax2.c: Unable to create network socket: Cannot assign requested address
[2026-12-01 05:31:22.965] VERBOSE[10227] chan_iax2.c: IAX Ready and Listening
";
        let errors = iax_listener_errors(log);
        assert_eq!(errors.len(), 2);
        assert_eq!(
            log_message(errors[1]),
            "Unable to create network socket: Cannot assign requested address"
        );
        assert!(iax_listener_errors("[x] VERBOSE[1] chan_iax2.c: IAX Ready and Listening\n").is_empty());
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
