//! Cisco SIP desk phones. Two formats:
//!
//! * `SIP<MAC>.cnf` — plain `key: "value"` lines, read by the 7940/7960 SIP firmware. The line
//!   is `line1_*`; BLF targets become `speed_lineN`/`speed_labelN` speed dials on the remaining
//!   buttons (the 79x0 firmware has no BLF).
//! * `SEP<MAC>.cnf.xml` — the `<device>` document of the enterprise SIP firmware (79x1, 79x2,
//!   79x5, 7931, 69xx, 88xx): the line on button 1 (`featureID` 9), each BLF target a `featureID`
//!   21 "BLF speed dial" on the next buttons. Those keys dial, but their lamps stay dark against
//!   a stock Asterisk: the firmware only lights them for a server that also sends Cisco's own
//!   presence signalling (docs/provisioning.md).
//!
//! MAC in upper case without separators, as the phones ask for it.

use std::fmt::Write;

use sha2::{Digest, Sha256};

use super::regional::{self, Transition};
use super::xml::Xml;
use super::{DeskPhone, plain};

/// Longest phone label: the 79xx status bar shows 11 characters, the tightest of these models.
const LABEL_MAX: usize = 11;
/// Longest key label we write; the phones cut longer ones to their display.
const KEY_LABEL_MAX: usize = 30;
/// Cisco's own default RTP range, used when the node sets none.
const MEDIA_PORTS: (u16, u16) = (16384, 32766);
/// Registration interval: short behind NAT, so the binding stays open.
fn register_seconds(nat: bool) -> u32 {
    if nat { 120 } else { 3600 }
}

/// Line buttons of the 79x0 models: the line takes the first, speed dials the rest.
fn text_buttons(model: &str) -> usize {
    if model == "7940" { 2 } else { 6 }
}

/// `SIP<MAC>.cnf` for a 7940/7960.
pub(super) fn text(p: &DeskPhone) -> (String, String) {
    let name = format!("SIP{}.cnf", p.device.mac.upper());
    let mut out = String::new();
    let mut set = |key: &str, value: &dyn std::fmt::Display| {
        let _ = writeln!(out, "{key}: \"{value}\"");
    };
    let ext = &p.phone.extension;
    let settings = p.settings();
    if let Some(load) = p.firmware() {
        set("image_version", &load);
    }
    set("phone_label", &plain(p.display_name(), LABEL_MAX));
    set("proxy1_address", &p.server);
    set("proxy1_port", &p.port());
    set("proxy_register", &1);
    set("timer_register_expires", &register_seconds(p.phone.nat));
    set("line1_name", ext);
    set("line1_shortname", ext);
    set("line1_displayname", &plain(p.display_name(), 64));
    set("line1_authname", ext);
    set("line1_password", &p.phone.password.expose());
    let slots = text_buttons(&p.device.model) - 1;
    for (i, key) in p.keys.iter().take(slots).enumerate() {
        set(&format!("speed_line{}", i + 1), &key.extension);
        set(&format!("speed_label{}", i + 1), &plain(&key.label, KEY_LABEL_MAX));
    }
    set("nat_enable", &u8::from(p.phone.nat));
    set("nat_received_processing", &u8::from(p.phone.nat));
    set("voip_control_port", &p.port());
    let (start, end) = settings.media_ports.map_or(MEDIA_PORTS, |r| (r.start, r.end));
    set("start_media_port", &start);
    set("end_media_port", &end);
    if let Some(ntp) = &settings.ntp_server {
        set("sntp_mode", &"unicast");
        set("sntp_server", ntp);
    }
    if let Some(tz) = settings.time_zone {
        set("time_zone", &regional::cisco_text_zone(tz));
        match regional::zone(tz).dst {
            None => set("dst_auto_adjust", &0),
            Some((start, stop)) => {
                set("dst_auto_adjust", &1);
                set("dst_offset", &1);
                for (prefix, t) in [("dst_start", start), ("dst_stop", stop)] {
                    text_transition(&mut set, prefix, t);
                }
            }
        }
    }
    if let Some(locale) = settings.locale {
        let l = regional::language(locale);
        set("user_locale", &l.cisco_user);
        set("network_locale", &l.cisco_network);
    }
    let mut text = format!("# {}\n# Cisco {} SIP firmware.\n", p.header(), p.device.model);
    if p.keys.len() > slots {
        let rest: Vec<&str> = p.keys[slots..].iter().map(|k| k.extension.as_str()).collect();
        let _ = writeln!(text, "# No button left for the BLF targets {}.", rest.join(", "));
    }
    text.push_str(&out);
    (name, text)
}

/// `dst_start_*` / `dst_stop_*`: month and day abbreviated, week 8 meaning the last.
fn text_transition(set: &mut impl FnMut(&str, &dyn std::fmt::Display), prefix: &str, t: Transition) {
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    set(&format!("{prefix}_month"), &MONTHS[usize::from(t.month) - 1]);
    set(&format!("{prefix}_day_of_week"), &"Sun");
    set(&format!("{prefix}_week_of_month"), &if t.week == 5 { 8 } else { t.week });
    set(&format!("{prefix}_time"), &format!("{:02}", t.hour));
}

/// `SEP<MAC>.cnf.xml` for the enterprise SIP firmware.
pub(super) fn xml(p: &DeskPhone) -> (String, String) {
    let name = format!("SEP{}.cnf.xml", p.device.mac.upper());
    let settings = p.settings();
    let language = settings.locale.map(regional::language);
    let mut x = Xml::new(&p.header());
    x.open("device", &[]);
    x.leaf("fullConfig", "true").leaf("deviceProtocol", "SIP");
    x.open("devicePool", &[]).open("dateTimeSetting", &[]);
    x.leaf("dateTemplate", if language.as_ref().is_some_and(|l| l.day_first) { "D/M/Y" } else { "M/D/Y" });
    if let Some(tz) = settings.time_zone {
        x.leaf("timeZone", regional::cisco_xml_zone(tz));
    }
    if let Some(ntp) = &settings.ntp_server {
        x.open("ntps", &[]).open("ntp", &[]).leaf("name", ntp).leaf("ntpMode", "Unicast").close().close();
    }
    x.close();
    x.open("callManagerGroup", &[]).open("members", &[]).open("member", &[("priority", "0")]);
    x.open("callManager", &[]).open("ports", &[]);
    x.leaf("ethernetPhonePort", 2000).leaf("sipPort", p.port()).leaf("securedSipPort", 5061).close();
    x.leaf("processNodeName", p.server).close().close().close().close();
    x.close();

    x.open("sipProfile", &[]);
    x.open("sipProxies", &[]).leaf("registerWithProxy", "true").close();
    x.open("sipCallFeatures", &[]);
    for (k, v) in [
        ("cnfJoinEnabled", "true"),
        ("rfc2543Hold", "false"),
        ("callHoldRingback", "2"),
        ("localCfwdEnable", "true"),
        ("semiAttendedTransfer", "true"),
        ("anonymousCallBlock", "2"),
        ("callerIdBlocking", "2"),
        ("dndControl", "0"),
        ("remoteCcEnable", "true"),
    ] {
        x.leaf(k, v);
    }
    x.close();
    x.open("sipStack", &[]);
    let register = register_seconds(p.phone.nat).to_string();
    for (k, v) in [
        ("sipInviteRetx", "6"),
        ("sipRetx", "10"),
        ("timerInviteExpires", "180"),
        ("timerRegisterExpires", register.as_str()),
        ("timerRegisterDelta", "5"),
        ("timerKeepAliveExpires", "120"),
        ("timerSubscribeExpires", "120"),
        ("timerSubscribeDelta", "5"),
        ("timerT1", "500"),
        ("timerT2", "4000"),
        ("maxRedirects", "70"),
        ("remotePartyID", "true"),
        ("userInfo", "None"),
    ] {
        x.leaf(k, v);
    }
    x.close();
    let nat = if p.phone.nat { "true" } else { "false" };
    for (k, v) in [
        ("autoAnswerTimer", "1"),
        ("autoAnswerAltBehavior", "false"),
        ("autoAnswerOverride", "true"),
        ("transferOnhookEnabled", "false"),
        ("enableVad", "false"),
        ("preferredCodec", "none"),
        ("dtmfAvtPayload", "101"),
        ("dtmfDbLevel", "3"),
        ("dtmfOutofBand", "avt"),
        ("alwaysUsePrimeLine", "false"),
        ("alwaysUsePrimeLineVoiceMail", "false"),
        ("kpml", "3"),
        ("natEnabled", nat),
        ("natReceivedProcessing", nat),
    ] {
        x.leaf(k, v);
    }
    x.leaf("phoneLabel", plain(p.display_name(), LABEL_MAX));
    x.leaf("stutterMsgWaiting", 1).leaf("callStats", "false");
    let (start, end) = settings.media_ports.map_or(MEDIA_PORTS, |r| (r.start, r.end));
    x.leaf("startMediaPort", start).leaf("stopMediaPort", end);
    x.open("sipLines", &[]);
    let ext = &p.phone.extension;
    x.open("line", &[("button", "1"), ("lineIndex", "1")]);
    x.leaf("featureID", 9).leaf("featureLabel", ext).leaf("proxy", p.server).leaf("port", p.port());
    x.leaf("name", ext).leaf("displayName", plain(p.display_name(), 64));
    x.open("autoAnswer", &[]).leaf("autoAnswerEnabled", 2).close();
    x.leaf("callWaiting", 3).leaf("authName", ext).leaf("authPassword", p.phone.password.expose());
    x.leaf("sharedLine", "false").leaf("messageWaitingLampPolicy", 3);
    x.leaf("ringSettingIdle", 4).leaf("ringSettingActive", 5).leaf("contact", ext);
    x.open("forwardCallInfoDisplay", &[]);
    x.leaf("callerName", "true").leaf("callerNumber", "true").leaf("redirectedNumber", "false");
    x.leaf("dialedNumber", "true").close();
    x.close();
    for (i, key) in p.keys.iter().enumerate() {
        let button = (i + 2).to_string();
        x.open("line", &[("button", &button)]);
        x.leaf("featureID", 21).leaf("featureLabel", plain(&key.label, KEY_LABEL_MAX));
        x.leaf("speedDialNumber", &key.extension).leaf("featureOptionMask", 1).close();
    }
    x.close();
    x.leaf("voipControlPort", p.port()).leaf("dscpForAudio", 184).leaf("ringSettingBusyStationPolicy", 0);
    x.close();

    x.open("commonProfile", &[]);
    x.leaf("phonePassword", "").leaf("backgroundImageAccess", "true").leaf("callLogBlfEnabled", 2).close();
    if let Some(load) = p.firmware() {
        x.leaf("loadInformation", load);
    }
    x.open("vendorConfig", &[]);
    x.leaf("disableSpeaker", "false").leaf("disableSpeakerAndHeadset", "false").leaf("settingsAccess", 1);
    x.close();
    if let Some(l) = &language {
        x.open("userLocale", &[]).leaf("name", l.cisco_user).leaf("langCode", l.code).close();
        x.leaf("networkLocale", l.cisco_network);
    }
    x.leaf("deviceSecurityMode", 1);
    x.leaf("transportLayerProtocol", if p.tcp() { 1 } else { 2 });
    // The phone compares versionStamp with what it runs: a stamp of the content makes every
    // change a new version and an unchanged file the same one.
    x.close();
    let body = x.finish();
    let stamp = hex::encode(Sha256::digest(body.as_bytes()));
    let cut = body.rfind("</device>").expect("the device element");
    (name, format!("{}  <versionStamp>{}</versionStamp>\n{}", &body[..cut], &stamp[..32], &body[cut..]))
}
