//! The AMI codec against every capture from a real Asterisk 22 (tests/fixtures/ami, see its README).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use asterisk_operator::ami::actions::{self, TypedAction};
use asterisk_operator::ami::events::Event;
use asterisk_operator::ami::{
    Action, Correlator, Decoder, DeviceState, Expect, ExtensionState, Frame, Message, MessageKind, Reply,
    Routed,
};
use asterisk_operator::secret::SecretValue;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ami")
}

fn read(name: &str) -> Vec<u8> {
    let p = dir().join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every received-bytes capture of an AMI connection (not the .sent files, SIP log, timing, metrics).
fn ami_captures() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".txt") && !n.ends_with(".sent.txt") && !n.ends_with(".headers.txt"))
        .filter(|n| !n.starts_with("06d") && !n.starts_with("06e") && !n.starts_with("07"))
        .collect();
    v.sort();
    v
}

fn all_txt() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".txt"))
        .collect();
    v.sort();
    v
}

fn find(prefix: &str) -> String {
    ami_captures()
        .into_iter()
        .find(|n| n.starts_with(prefix))
        .unwrap_or_else(|| panic!("no capture {prefix}"))
}

fn frames(bytes: &[u8], banner: bool) -> Vec<Frame> {
    let mut d = if banner { Decoder::new() } else { Decoder::without_banner() };
    d.decode(bytes).into_iter().map(|r| r.expect("capture decodes without error")).collect()
}

fn messages(name: &str) -> Vec<Message> {
    frames(&read(name), true)
        .into_iter()
        .filter_map(|f| match f {
            Frame::Message(m) => Some(m),
            Frame::Banner(_) => None,
        })
        .collect()
}

/// The actions of a `.sent.txt`: (ActionID, action).
fn sent_actions(received: &str) -> Vec<(String, Action)> {
    let sent = received.replace(".txt", ".sent.txt");
    frames(&read(&sent), false)
        .into_iter()
        .filter_map(|f| match f {
            Frame::Message(m) => Action::from_message(&m),
            Frame::Banner(b) => panic!("banner in sent bytes: {b}"),
        })
        .filter_map(|(a, id)| id.map(|id| (id, a)))
        .collect()
}

#[derive(Default, Debug)]
struct Routed_ {
    replies: HashMap<String, Reply>,
    order: Vec<String>,
    events: Vec<Message>,
    unmatched: Vec<Message>,
}

/// Route a capture through the correlator with the ActionIDs of its .sent file.
fn route(name: &str) -> Routed_ {
    let mut c: Correlator<()> = Correlator::new();
    for (id, a) in sent_actions(name) {
        c.register(id, Expect::for_action(a.name()), ());
    }
    // 01e also sends a message without `Action:` (but with an ActionID).
    for f in frames(&read(&name.replace(".txt", ".sent.txt")), false) {
        if let Frame::Message(m) = f
            && m.get("Action").is_none()
            && let Some(id) = m.action_id()
        {
            c.register(id.to_owned(), Expect::default(), ());
        }
    }
    let mut out = Routed_::default();
    for m in messages(name) {
        match c.route(m) {
            Routed::Done { action_id, reply, .. } => {
                out.order.push(action_id.clone());
                out.replies.insert(action_id, reply);
            }
            Routed::Event(m) => out.events.push(m),
            Routed::Unmatched(m) => out.unmatched.push(m),
            Routed::Consumed => {}
        }
    }
    out
}

impl Routed_ {
    fn reply(&self, id: &str) -> Reply {
        self.replies.get(id).cloned().unwrap_or_else(|| panic!("no reply for {id}: have {:?}", self.order))
    }
    fn typed(&self) -> Vec<Event> {
        self.events.iter().cloned().map(Event::from_message).collect()
    }
}

#[test]
fn every_capture_decodes_and_reencodes_byte_for_byte() {
    let caps = ami_captures();
    assert!(caps.len() >= 37, "expected all captures, found {}", caps.len());
    for name in caps {
        let raw = read(&name);
        let fs = frames(&raw, true);
        assert_eq!(fs.first(), Some(&Frame::Banner("Asterisk Call Manager/11.0.0".into())), "{name}");
        let mut wire = b"Asterisk Call Manager/11.0.0\r\n".to_vec();
        for f in &fs[1..] {
            let Frame::Message(m) = f else { panic!("{name}: second banner") };
            // Raw frames: IAXnetstats rows (05*), and empty frames from a stray CRLF (05a's IAXnetstats
            // with no calls; 04b's PJSIPShowEndpoint error whose Message ends in a bare LF + CRLF).
            assert!(m.kind() != MessageKind::Raw || name.starts_with("05") || m.is_empty(), "{name}: {m:?}");
            wire.extend(m.to_wire());
        }
        // The only non-CRLF line endings are IAXnetstats rows (bare LF).
        let normalized = String::from_utf8_lossy(&raw).replace("\r\n", "\n").replace('\n', "\r\n");
        assert_eq!(String::from_utf8_lossy(&wire), normalized, "{name}");
        assert!(fs.len() >= 2, "{name}");
    }
}

/// Frames must not depend on how the bytes were split across reads: every split point of every
/// capture (sent files, SIP log and metrics included), plus byte-at-a-time.
#[test]
fn every_split_point_of_every_capture_gives_the_same_frames() {
    for name in all_txt() {
        let raw = read(&name);
        let banner = !name.ends_with(".sent.txt");
        let mut d = if banner { Decoder::new() } else { Decoder::without_banner() };
        let whole = d.decode(&raw);
        assert!(!whole.is_empty(), "{name}");
        // Every boundary; for the two files over 16 KiB every 7th (plus byte-at-a-time below) to keep
        // the debug-build test time reasonable.
        let step = if raw.len() > 16 * 1024 { 7 } else { 1 };
        for i in (0..=raw.len()).step_by(step) {
            let mut d = if banner { Decoder::new() } else { Decoder::without_banner() };
            let mut got = d.decode(&raw[..i]);
            got.extend(d.decode(&raw[i..]));
            assert_eq!(got, whole, "{name} split at {i}");
        }
        let mut d = if banner { Decoder::new() } else { Decoder::without_banner() };
        let mut got = Vec::new();
        for b in &raw {
            got.extend(d.decode(std::slice::from_ref(b)));
        }
        assert_eq!(got, whole, "{name} byte at a time");
    }
}

#[test]
fn sent_files_round_trip_through_the_encoder() {
    let mut n = 0;
    for name in all_txt().into_iter().filter(|n| n.ends_with(".sent.txt")) {
        let raw = read(&name);
        let mut out = Vec::new();
        for f in frames(&raw, false) {
            let Frame::Message(m) = f else { unreachable!() };
            match Action::from_message(&m) {
                Some((a, id)) => {
                    a.encode(id.as_deref(), &mut out).unwrap();
                    n += 1;
                }
                // 01e deliberately sends a message without Action: re-emit as is.
                None => out.extend(m.to_wire()),
            }
        }
        assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&raw), "{name}");
    }
    assert!(n > 150, "only {n} actions");
}

#[test]
fn every_event_list_has_listitems_items_and_all_responses_are_matched() {
    let mut lists = 0;
    for name in ami_captures() {
        let r = route(&name);
        for (id, reply) in &r.replies {
            if let Some(n) = reply.list_items() {
                assert_eq!(reply.events.len(), n, "{name} {id}");
                assert!(reply.response.starts_event_list(), "{name} {id}");
                lists += 1;
            }
        }
        // The only response without a matching ActionID is 01e's Ping sent without one.
        for m in &r.unmatched {
            assert!(name.starts_with("01e"), "{name}: unmatched {m:?}");
        }
        for e in &r.events {
            assert_eq!(e.kind(), MessageKind::Event, "{name}");
        }
        let sent: Vec<String> = sent_actions(&name).into_iter().map(|(id, _)| id).collect();
        for id in &sent {
            // 01b's second login is never answered (Asterisk closed the connection).
            if id == "login-2" && name.starts_with("01b") {
                assert!(!r.replies.contains_key(id));
                continue;
            }
            assert!(r.replies.contains_key(id), "{name}: no reply for {id}");
        }
    }
    assert!(lists >= 20, "{lists}");
}

#[test]
fn banner_login_events_and_goodbye() {
    let r = route(&find("01a-node1"));
    assert_eq!(r.reply("login-1").response.message(), Some("Authentication accepted"));
    let ev = r.typed();
    let Event::FullyBooted(fb) = &ev[0] else { panic!("{ev:?}") };
    assert_eq!((fb.uptime, fb.last_reload), (Some(4), Some(4)));
    assert_eq!(fb.raw.get("Status"), Some("Fully Booted"));
    assert_eq!(ev[1].name(), "SuccessfulAuth");
    assert_eq!(ev[1].message().get("RemoteAddress"), Some("IPV4/TCP/127.0.0.1/43136"));
    let bye = r.reply("logoff-2").response;
    assert_eq!(bye.response(), Some("Goodbye"));
    assert!(!bye.is_error());
    assert_eq!(bye.message(), Some("Thanks for all the fish."));
}

#[test]
fn failed_login_is_an_error_and_the_retry_unanswered() {
    let r = route(&find("01b-node1"));
    let resp = r.reply("login-1").response;
    assert!(resp.is_error());
    assert_eq!(resp.message(), Some("Authentication failed"));
    assert_eq!(r.replies.len(), 1);
    let obs = route(&find("01g-node1"));
    let inv = obs.events.iter().find(|e| e.event_name() == Some("InvalidPassword")).unwrap();
    assert_eq!(inv.get("AccountID"), Some("admin"));
}

#[test]
fn ping_coresettings_corestatus() {
    let r = route(&find("01c-node1"));
    let pong = actions::Ping::parse(r.reply("ping-2")).unwrap();
    assert_eq!(pong.timestamp, Some(1_795_425_074.812_07));
    let cs = actions::CoreSettings::parse(r.reply("coresettings-3")).unwrap();
    assert_eq!(
        (cs.ami_version.as_str(), cs.asterisk_version.as_str(), cs.system_name.as_str()),
        ("11.0.0", "22.10.1", "")
    );
    assert_eq!(cs.raw.get("CoreHTTPenabled"), Some("No"));
    let st = actions::CoreStatus::parse(r.reply("corestatus-4")).unwrap();
    assert_eq!(st.startup, "2026-11-23 09:11:05");
    assert_eq!((st.current_calls, st.processed_calls), (0, 0));
}

#[test]
fn command_output_lines_and_errors() {
    let r = route(&find("01d-node1"));
    let v = actions::Command::parse(r.reply("command-2")).unwrap();
    assert_eq!(
        v,
        ["Asterisk 22.10.1 built by root @ vm on a x86_64 running Linux on 2026-11-23 08:58:33 UTC"]
    );
    let up = actions::Command::parse(r.reply("command-3")).unwrap();
    assert_eq!(up, ["System uptime: 9 seconds", "Last reload: 9 seconds"]);
    let mods = actions::Command::parse(r.reply("command-4")).unwrap();
    assert_eq!(mods.len(), 7);
    assert!(mods[2].starts_with("chan_iax2.so "));
    assert_eq!(mods[6], "5 modules loaded");
    let err = actions::Command::parse(r.reply("command-5")).unwrap_err().to_string();
    assert!(err.contains("Command") && err.contains("No such command 'no such cli command'"), "{err}");

    // A blank output line is `Output: ` and indentation after the one space is kept.
    let r = route(&find("02c"));
    let hints = actions::Command::parse(r.reply("command-4")).unwrap();
    assert_eq!(hints[0], "");
    assert_eq!(hints[1], "    -= Registered Asterisk Dial Plan Hints =-");
    assert_eq!(hints.last().unwrap(), "- 5 hints registered");
    assert!(hints.iter().any(|l| l.starts_with("_XXXX*[a-z].@lab")));
}

#[test]
fn unknown_action_missing_action_and_no_actionid() {
    let r = route(&find("01e-node1"));
    let e = actions::check("NoSuchAction", r.reply("nosuchaction-2")).unwrap_err().to_string();
    assert!(
        e.contains("NoSuchAction")
            && e.contains("Invalid/unknown command: NoSuchAction. Use Action: ListCommands")
    );
    assert_eq!(r.reply("noaction-1").response.message(), Some("Missing action in request"));
    assert_eq!(r.unmatched.len(), 1);
    assert_eq!(r.unmatched[0].action_id(), None);
    assert_eq!(r.unmatched[0].get("Ping"), Some("Pong"));
}

#[test]
fn md5_challenge_key_matches_the_real_login() {
    let r = route(&find("01f-node1"));
    let ch = r.reply("challenge-1").response.get("Challenge").unwrap().to_owned();
    assert_eq!(ch, "308413785");
    let key = actions::md5_key(&ch, &SecretValue::new("labsecret"));
    let sent = sent_actions(&find("01f-node1"));
    let login = &sent.iter().find(|(id, _)| id == "login-2").unwrap().1;
    assert_eq!(login.get("Key"), Some(key.as_str()));
    assert_eq!(r.reply("events-3").response.get("Events"), Some("On"));
    assert_eq!(r.reply("events-4").response.get("Events"), Some("Off"));
    // Our Login builder produces the same headers as the capture (secret aside).
    let ours =
        actions::login_action("admin", &SecretValue::new("labsecret"), Some(&ch), &"off".parse().unwrap());
    assert_eq!(ours.headers().collect::<Vec<_>>(), login.headers().collect::<Vec<_>>());
}

#[test]
fn setvar_custom_device_state_events_and_getvar() {
    let r = route(&find("02a"));
    assert_eq!(actions::Getvar::parse(r.reply("getvar-3")).unwrap().as_deref(), Some("UNKNOWN"));
    assert_eq!(actions::Getvar::parse(r.reply("getvar-5")).unwrap().as_deref(), Some("INUSE"));
    let idle = actions::ExtensionStateQuery::parse(r.reply("extensionstate-2")).unwrap();
    assert_eq!(
        (idle.exten.as_str(), idle.context.as_str(), idle.hint.as_str()),
        ("1234", "lab", "Custom:mystate")
    );
    assert_eq!(idle.status, ExtensionState::Idle);
    let inuse = actions::ExtensionStateQuery::parse(r.reply("extensionstate-6")).unwrap();
    assert_eq!((inuse.status, inuse.status_text.as_str()), (ExtensionState::InUse, "InUse"));
    actions::Setvar::parse(r.reply("setvar-7")).unwrap();
    let states: Vec<String> = r
        .typed()
        .into_iter()
        .filter_map(|e| match e {
            Event::DeviceStateChange(d) => Some(format!("{}={:?}", d.device, d.state.unwrap())),
            Event::ExtensionStatus(x) => Some(format!("{}@{}={:?}", x.exten, x.context, x.status)),
            _ => None,
        })
        .collect();
    // Setting INUSE twice produced events once.
    assert_eq!(
        states,
        ["1234@lab=InUse", "Custom:mystate=InUse", "1234@lab=Idle", "Custom:mystate=NotInUse"]
    );
    // The builder matches the captured bytes.
    let sent = sent_actions(&find("02a"));
    assert_eq!(sent[3].1, actions::Setvar::device_state("Custom:mystate", DeviceState::InUse).action());
}

/// Each Setvar of 02b is followed by an ExtensionState; the hint must show what our device→extension
/// mapping predicts, and the refused values must be errors.
#[test]
fn every_device_state_value_maps_to_the_observed_extension_state() {
    let name = find("02b");
    let r = route(&name);
    let sent = sent_actions(&name);
    let mut checked = 0;
    for w in sent.windows(2) {
        let ((sid, set), (eid, _)) = (&w[0], &w[1]);
        if set.name() != "Setvar" {
            continue;
        }
        let value = set.get("Value").unwrap();
        let res = actions::Setvar::parse(r.reply(sid));
        match value.parse::<DeviceState>() {
            Ok(DeviceState::Unknown) | Err(_) => {
                let e = res.unwrap_err().to_string();
                assert!(e.contains("Setvar") && e.contains("Variable not set"), "{value}: {e}");
            }
            Ok(ds) => {
                res.unwrap();
                let st = actions::ExtensionStateQuery::parse(r.reply(eid)).unwrap();
                assert_eq!(st.status, ExtensionState::from(ds), "{value}");
                assert_eq!(st.status_text, st.status.text());
                assert_eq!(ExtensionState::from_code(st.status_code), Some(st.status));
                checked += 1;
            }
        }
    }
    assert!(checked >= 7, "{checked}");
    let missing: Vec<_> = ["extensionstate-22", "extensionstate-23"]
        .iter()
        .map(|id| actions::ExtensionStateQuery::parse(r.reply(id)).unwrap())
        .collect();
    for m in missing {
        assert_eq!((m.status, m.status_code, m.hint.as_str()), (ExtensionState::Unknown, -1, ""));
    }
    // INVALID is accepted: a DeviceStateChange State INVALID and no ExtensionStatus for it.
    let ev = r.typed();
    let i = ev
        .iter()
        .position(|e| matches!(e, Event::DeviceStateChange(d) if d.state == Some(DeviceState::Invalid)))
        .unwrap();
    assert!(!matches!(ev[i - 1], Event::ExtensionStatus(_)));
    let codes: Vec<i32> = ev
        .iter()
        .filter_map(|e| if let Event::ExtensionStatus(x) = e { Some(x.status_code) } else { None })
        .collect();
    for c in [8, 9, 16, 2, 4, 0] {
        assert!(codes.contains(&c), "{c} in {codes:?}");
    }
}

#[test]
fn devicestatelist_and_extensionstatelist() {
    let r = route(&find("02c"));
    let ds = actions::DeviceStateList::parse(r.reply("devicestatelist-2")).unwrap();
    let got: Vec<(String, DeviceState)> = ds.into_iter().map(|d| (d.device, d.state.unwrap())).collect();
    assert_eq!(
        got,
        [
            ("Custom:mystate".into(), DeviceState::NotInUse),
            ("IAX2/reg2".into(), DeviceState::Unknown),
            ("PJSIP/1001".into(), DeviceState::Unavailable),
            ("PJSIP/1002".into(), DeviceState::Unavailable),
        ]
    );
    let es = actions::ExtensionStateList::parse(r.reply("extensionstatelist-3")).unwrap();
    assert_eq!(es.len(), 3);
    assert_eq!(
        (es[0].exten.as_str(), es[0].hint.as_str(), es[0].status),
        ("1001", "PJSIP/1001", ExtensionState::Unavailable)
    );
    assert_eq!((es[2].exten.as_str(), es[2].status), ("1234", ExtensionState::Idle));
    assert_eq!(
        r.reply("extensionstatelist-3").complete.unwrap().event_name(),
        Some("ExtensionStateListComplete")
    );
}

#[test]
fn pattern_hints_materialise_on_demand() {
    let r = route(&find("02d"));
    let ext: Vec<String> = r
        .typed()
        .into_iter()
        .filter_map(|e| {
            if let Event::ExtensionStatus(x) = e { Some(format!("{}@{}", x.exten, x.context)) } else { None }
        })
        .collect();
    assert!(ext.contains(&"4001*nodeb@lab".to_string()), "{ext:?}");
    assert!(ext.contains(&"400*nodeb@blog".to_string()), "{ext:?}");
    let dsc = r
        .typed()
        .into_iter()
        .filter(|e| matches!(e, Event::DeviceStateChange(d) if d.device == "Custom:4002*nodeb"))
        .count();
    assert!(dsc >= 1);
}

#[test]
fn getconfig_categories_no_categories_found_and_json_duplicates() {
    let name = find("03a");
    let r = route(&name);
    let all = actions::GetConfig::parse(r.reply("getconfig-2")).unwrap();
    assert!(all.len() >= 4, "{all:?}");
    // Duplicate category names (endpoint and aor 1001) stay separate.
    let n1001: Vec<_> = all.iter().filter(|c| c.name == "1001").collect();
    assert!(n1001.len() >= 2, "{all:?}");
    assert!(n1001.iter().any(|c| c.lines.contains(&("type".into(), "endpoint".into()))));
    assert!(n1001.iter().any(|c| c.lines.contains(&("type".into(), "aor".into()))));
    // 03h: a GetConfig whose filter matched nothing answers the colon-less `No categories found`.
    let h = route(&find("03h"));
    let empty = h.reply("getconfig-3");
    assert_eq!(empty.response.raw_lines().collect::<Vec<_>>(), ["No categories found"]);
    assert!(actions::GetConfig::parse(empty).unwrap().is_empty());
    assert!(!actions::GetConfig::parse(h.reply("getconfig-5")).unwrap().is_empty());
    let missing = actions::GetConfig::parse(r.reply("getconfig-7")).unwrap_err().to_string();
    assert!(missing.contains("GetConfig") && missing.contains("Config file not found"), "{missing}");
    // GetConfigJSON: one JSON header whose text has duplicate keys (kept verbatim as a string).
    let json = r.reply("getconfigjson-5").response.get("JSON").unwrap().to_owned();
    assert!(json.starts_with('{'));
    assert!(json.matches("\"1001\"").count() >= 2, "{json}");
}

#[test]
fn createconfig_updateconfig_reload_events() {
    let r = route(&find("03b"));
    actions::CreateConfig::parse(r.reply("createconfig-2")).unwrap();
    let e = actions::CreateConfig::parse(r.reply("createconfig-3")).unwrap_err().to_string();
    assert!(e.contains("File exists"), "{e}");
    let up = r.reply("updateconfig-4");
    assert_eq!(up.response.message(), None);
    actions::UpdateConfig::parse(up).unwrap();
    let reloads: Vec<_> =
        r.typed().into_iter().filter_map(|e| if let Event::Reload(x) = e { Some(x) } else { None }).collect();
    assert_eq!(reloads.len(), 1);
    assert_eq!((reloads[0].module.as_str(), reloads[0].status), ("res_pjsip.so", 0));
    assert_eq!(reloads[0].raw.get("Privilege"), Some("system,all"));
    // Our UpdateConfig builder reproduces the captured action header for header.
    let sent = sent_actions(&find("03b"));
    let captured = &sent.iter().find(|(id, _)| id == "updateconfig-4").unwrap().1;
    let mut ours = actions::UpdateConfig {
        src: captured.get("SrcFilename").unwrap().into(),
        dst: captured.get("DstFilename").unwrap().into(),
        reload: captured.get("Reload").map(Into::into),
        changes: vec![],
    };
    for i in 0.. {
        let k = |p: &str| captured.get(&format!("{p}-{i:06}")).map(str::to_owned);
        let Some(action) = k("Action") else { break };
        ours.changes.push(actions::ConfigChange {
            action,
            cat: k("Cat").unwrap(),
            var: k("Var"),
            value: k("Value"),
            match_: k("Match"),
            options: k("Options"),
        });
    }
    assert_eq!(ours.changes.len(), 15);
    let mut a = Vec::new();
    let mut b = Vec::new();
    ours.action().encode(Some("x"), &mut a).unwrap();
    captured.encode(Some("x"), &mut b).unwrap();
    // Header order of the capture: Src/Dst/Reload first, then numbered changes.
    let sort = |v: &[u8]| {
        let mut l: Vec<String> = String::from_utf8_lossy(v).lines().map(str::to_owned).collect();
        l.sort();
        l
    };
    assert_eq!(sort(&a), sort(&b));
}

#[test]
fn reload_responses_and_events_including_nosuchmodule() {
    let r = route(&find("03e"));
    assert_eq!(actions::Reload::parse(r.reply("reload-2")).unwrap(), "Module Reloaded");
    let e = actions::Reload::parse(r.reply("reload-6")).unwrap_err().to_string();
    assert!(e.contains("Reload") && e.contains("No such module"), "{e}");
    let reloads: Vec<(String, i32)> = r
        .typed()
        .into_iter()
        .filter_map(|e| if let Event::Reload(x) = e { Some((x.module, x.status)) } else { None })
        .collect();
    assert!(reloads.contains(&("nosuchmodule.so".into(), 2)), "{reloads:?}");
    assert!(reloads.contains(&("res_pjsip".into(), 0)));
    assert!(reloads.contains(&("All".into(), 0)));
    assert_eq!(reloads.iter().filter(|(_, s)| *s == 0).count(), reloads.len() - 1);
    assert_eq!(r.reply("moduleload-9").response.message(), Some("Module reloaded."));
}

#[test]
fn updateconfig_error_messages() {
    let r = route(&find("03f"));
    let msg = |id: &str| actions::UpdateConfig::parse(r.reply(id)).unwrap_err().to_string();
    assert!(msg("updateconfig-2").contains("File requires escalated privileges"));
    assert!(msg("updateconfig-3").contains("Given category does not exist"));
    assert!(msg("updateconfig-4").contains("Unknown action command"));
    assert!(msg("updateconfig-5").contains("Create category did not complete successfully"));
    assert!(msg("updateconfig-7").contains("Update did not complete successfully"));
    assert!(msg("updateconfig-17").contains("Filename not specified"));
    actions::UpdateConfig::parse(r.reply("updateconfig-6")).unwrap();
}

#[test]
fn pjsip_register_and_unregister_events() {
    let ev = route(&find("04a")).typed();
    let cs: Vec<_> = ev
        .iter()
        .filter_map(|e| if let Event::ContactStatus(c) = e { Some(c.clone()) } else { None })
        .collect();
    assert_eq!(cs.len(), 2);
    assert_eq!((cs[0].status.as_str(), cs[0].roundtrip_usec), ("NonQualified", Some(0)));
    assert_eq!(cs[1].status, "Reachable");
    assert!(cs[1].roundtrip_usec.unwrap() > 0);
    assert_eq!(
        (cs[0].uri.as_str(), cs[0].aor.as_str(), cs[0].endpoint.as_str()),
        ("sip:1001@127.0.0.1:5071;ob", "1001", "1001")
    );
    let ps = ev.iter().find_map(|e| if let Event::PeerStatus(p) = e { Some(p) } else { None }).unwrap();
    assert_eq!(
        (ps.channel_type.as_str(), ps.peer.as_str(), ps.status.as_str()),
        ("PJSIP", "PJSIP/1001", "Reachable")
    );
    assert!(ev.iter().any(|e| matches!(e, Event::DeviceStateChange(d) if d.device == "PJSIP/1001" && d.state == Some(DeviceState::NotInUse))));

    let ev = route(&find("04c")).typed();
    assert!(ev.iter().any(|e| matches!(e, Event::PeerStatus(p) if p.status == "Unreachable")));
    assert!(ev.iter().any(|e| matches!(e, Event::ContactStatus(c) if c.status == "Removed")));
    assert!(ev.iter().any(|e| matches!(e, Event::ExtensionStatus(x) if x.status == ExtensionState::Unavailable && x.exten == "1001")));
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::DeviceStateChange(d) if d.state == Some(DeviceState::Unavailable)))
    );
}

#[test]
fn pjsip_show_endpoints_and_contacts() {
    let r = route(&find("04b"));
    let eps = actions::PJSIPShowEndpoints::parse(r.reply("pjsipshowendpoints-2")).unwrap();
    assert_eq!(eps.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["1001", "1002", "2001"]);
    assert_eq!(eps[0].contacts, ["sip:1001@127.0.0.1:5071;ob"]);
    assert_eq!((eps[0].device_state.as_str(), eps[0].active_channels), ("Not in use", 0));
    assert!(eps[1].contacts.is_empty());
    assert_eq!(eps[2].aor, "2001-aor");
    let cs = actions::PJSIPShowContacts::parse(r.reply("pjsipshowcontacts-3")).unwrap();
    assert_eq!(cs.len(), 1);
    assert_eq!(
        (cs[0].endpoint.as_str(), cs[0].status.as_str(), cs[0].roundtrip_usec),
        ("1001", "Reachable", Some(683))
    );
    assert!(cs[0].user_agent.starts_with("PJSUA/v2.17"));
    let e = actions::check("PJSIPShowEndpoint", r.reply("pjsipshowendpoint-9")).unwrap_err().to_string();
    assert!(e.contains("Unable to retrieve endpoint"), "{e}");
    assert_eq!(r.reply("pjsipshowsubscriptionsinbound-7").list_items(), Some(0));
}

#[test]
fn iaxpeers_items_without_actionid_iaxregistry_and_netstats() {
    let r = route(&find("05a"));
    let peers = actions::IAXpeers::parse(r.reply("iaxpeers-2")).unwrap();
    assert_eq!(peers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["node2/node1", "node9", "reg2"]);
    assert!(peers.iter().all(|p| p.raw.action_id().is_none()));
    assert_eq!(
        (peers[0].address.as_str(), peers[0].port, peers[0].dynamic),
        ("127.0.0.1", Some(4571), false)
    );
    assert_eq!(peers[0].status, "OK (1 ms)");
    assert!(peers[2].dynamic);
    // IAXpeerlist has ActionIDs and different field names.
    let list = r.reply("iaxpeerlist-3");
    assert_eq!(list.events.len(), 3);
    assert_eq!(list.events[0].get("Port"), Some("4571"));
    assert_eq!(list.events[0].get("Channeltype"), Some("IAX"));
    assert!(actions::IAXregistry::parse(r.reply("iaxregistry-4")).unwrap().is_empty());
    // No calls: IAXnetstats answers a bare CRLF, which completes it with no rows.
    assert!(actions::IAXnetstats::parse(r.reply("iaxnetstats-5")).unwrap().is_empty());
    assert!(r.events.is_empty(), "{:?}", r.events);

    let r = route(&find("05b"));
    let reg = actions::IAXregistry::parse(r.reply("iaxregistry-3")).unwrap();
    assert_eq!(reg.len(), 1);
    assert_eq!((reg[0].get("Username"), reg[0].get("State")), (Some("reg2"), Some("Registered")));
    assert_eq!(actions::IAXpeers::parse(r.reply("iaxpeers-2")).unwrap().len(), 1);
}

#[test]
fn originate_response_is_an_event_and_channel_events_are_typed() {
    let r = route(&find("05c"));
    let orig: Vec<&Message> =
        r.events.iter().filter(|e| e.event_name() == Some("OriginateResponse")).collect();
    assert_eq!(orig.len(), 2);
    for o in &orig {
        assert_eq!(o.kind(), MessageKind::Event);
        assert_eq!(o.response(), None);
    }
    let results: Vec<_> = orig.iter().map(|o| o.get("Response").unwrap()).collect();
    assert!(results.contains(&"Success") && results.contains(&"Failure"), "{results:?}");
    let ev = r.typed();
    let newch = ev.iter().filter(|e| matches!(e, Event::Newchannel(_))).count();
    let hang: Vec<_> =
        ev.iter().filter_map(|e| if let Event::Hangup(h) = e { Some(h) } else { None }).collect();
    assert_eq!(newch, r.events.iter().filter(|e| e.event_name() == Some("Newchannel")).count());
    assert!(newch >= 3);
    assert_eq!(hang.len(), r.events.iter().filter(|e| e.event_name() == Some("Hangup")).count());
    assert!(hang.iter().all(|h| !h.uniqueid.is_empty() && h.raw.get("Cause-txt").is_some()));
    // Unknown events are kept whole.
    let varset = ev.iter().find(|e| e.name() == "VarSet").unwrap();
    assert!(matches!(varset, Event::Other(m) if m.get("Variable").is_some()));
}

#[test]
fn coreshowchannels_status_with_actionid_last_and_netstats_rows() {
    let r = route(&find("05e"));
    let ch = actions::CoreShowChannels::parse(r.reply("coreshowchannels-2")).unwrap();
    assert_eq!(ch.len(), 3);
    assert_eq!(ch[0].get("Channel"), Some("Local/600@to-iax-00000000;1"));
    let st = r.reply("status-3");
    assert_eq!(st.events.len(), 3);
    for e in &st.events {
        let (k, v) = e.headers().last().unwrap();
        assert_eq!((k, v), ("ActionID", "status-3"));
    }
    let rows = actions::IAXnetstats::parse(r.reply("iaxnetstats-4")).unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].starts_with("IAX2/node2-573 1000 -1 0"), "{rows:?}");
    assert!(rows[0].contains("Tx:NEW"));
}

#[test]
fn subscribe_and_blf_flip_events() {
    let r = route(&find("06a"));
    assert!(r.typed().iter().any(|e| matches!(e, Event::ExtensionStatus(x) if x.exten == "4001*nodeb")));
    let r = route(&find("06b"));
    assert_eq!(r.reply("pjsipshowsubscriptionsinbound-2").events.len(), 2);

    // 06c: each Setvar that changes the state gives exactly one DeviceStateChange with that state.
    let name = find("06c");
    let r = route(&name);
    let mut last: HashMap<String, String> = HashMap::new();
    let mut expected = Vec::new();
    for (_, a) in sent_actions(&name).into_iter().filter(|(_, a)| a.name() == "Setvar") {
        let dev =
            a.get("Variable").unwrap().trim_start_matches("DEVICE_STATE(").trim_end_matches(')').to_owned();
        let v = a.get("Value").unwrap().to_uppercase();
        if last.get(&dev) != Some(&v) {
            expected.push((dev.clone(), v.clone()));
        }
        last.insert(dev, v);
    }
    let got: Vec<(String, String)> = r
        .typed()
        .into_iter()
        .filter_map(|e| {
            if let Event::DeviceStateChange(d) = e {
                Some((d.device, d.state.unwrap().to_string()))
            } else {
                None
            }
        })
        .filter(|(d, _)| d.starts_with("Custom:"))
        .collect();
    assert_eq!(got, expected);
    assert!(got.len() >= 20);
}

#[test]
fn non_ami_files_are_handled_without_errors() {
    // The SIP NOTIFY log and the metrics are not AMI; the decoder must still behave.
    for n in ["06d-pjsua-received-sip-notify.txt", "07-node1-prometheus-metrics.txt"] {
        let fs = frames(&read(n), true);
        assert!(!fs.is_empty());
    }
}
