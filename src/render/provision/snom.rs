//! Snom (3xx, 7xx, 8xx, D3xx, D7xx): one XML settings file `<MAC>.xml` (upper case) with the
//! identity in `phone-settings` and each BLF target an `fkey` `blf sip:<ext>@<server>`. The
//! phones find it through a setting-server URL such as `http://agent:6970/{mac}.xml`.

use super::regional::{self, Transition};
use super::xml::Xml;
use super::{DeskPhone, plain};

/// `<MAC>.xml`.
pub(super) fn phone(p: &DeskPhone) -> (String, String) {
    let name = format!("{}.xml", p.device.mac.upper());
    let ext = &p.phone.extension;
    let settings = p.settings();
    let mut x = Xml::new(&p.header());
    x.open("settings", &[]).open("phone-settings", &[]);
    let r = [("perm", "R")];
    let line = [("idx", "1"), ("perm", "R")];
    x.leaf_with("user_active", &line, "on")
        .leaf_with("user_realname", &line, plain(p.display_name(), 64))
        .leaf_with("user_idle_text", &line, plain(p.display_name(), 32))
        .leaf_with("user_name", &line, ext)
        .leaf_with("user_pname", &line, ext)
        .leaf_with("user_pass", &line, p.phone.password.expose());
    let transport = if p.tcp() { ";transport=tcp" } else { "" };
    x.leaf_with("user_host", &line, format!("{}:{}{transport}", p.server, p.port()));
    x.leaf_with("user_expiry", &line, if p.phone.nat { 120 } else { 3600 });
    if let Some(ntp) = &settings.ntp_server {
        x.leaf_with("ntp_server", &r, ntp);
    }
    if let Some(tz) = settings.time_zone {
        let zone = regional::zone(tz);
        x.leaf_with("utc_offset", &r, format!("{:+}", zone.offset_minutes * 60));
        let dst = zone.dst.map(|(start, end)| format!("3600 {} {}", transition(start), transition(end)));
        x.leaf_with("dst", &r, dst.unwrap_or_default());
    }
    if let Some(locale) = settings.locale {
        let l = regional::language(locale);
        x.leaf_with("language", &r, l.snom).leaf_with("web_language", &r, l.snom);
        x.leaf_with("tone_scheme", &r, l.snom_tones);
    }
    if let Some(ports) = settings.media_ports {
        x.leaf_with("rtp_port_start", &r, ports.start).leaf_with("rtp_port_end", &r, ports.end);
    }
    if let Some(load) = p.firmware() {
        x.leaf_with("update_policy", &r, "auto_update").leaf_with("firmware", &r, load);
    }
    x.close();
    x.open("functionKeys", &[]);
    x.leaf_with("fkey", &[("idx", "0"), ("context", "active"), ("perm", "R")], "line");
    for (i, key) in p.keys.iter().enumerate() {
        let idx = (i + 1).to_string();
        let label = plain(&key.label, 32);
        let attrs = [("idx", idx.as_str()), ("context", "active"), ("label", label.as_str()), ("perm", "R")];
        x.leaf_with("fkey", &attrs, format!("blf sip:{}@{}", key.extension, p.server));
    }
    x.close().close();
    (name, x.finish())
}

/// `MM.WW.DD HH:MM:SS`: month, week (5 = the last), weekday (7 = Sunday), local time.
fn transition(t: Transition) -> String {
    format!("{:02}.{:02}.07 {:02}:00:00", t.month, t.week, t.hour)
}
