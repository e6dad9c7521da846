//! Yealink (T19–T58, CP9x0): `key = value` files beginning `#!version:1.0.0.1`. The phone asks
//! for the common `y000000000000.cfg` (settings of every Yealink phone of the node: clock,
//! language, RTP ports), then its own `<mac>.cfg` (lower case): account 1 and one `linekey.N`
//! per BLF target (type 16 = BLF), after the account's own key.

use std::fmt::Write;

use super::regional::{self, Transition};
use super::{DeskPhone, plain};
use crate::topology::Node;

/// Name of the file every Yealink phone asks for before its own.
pub(super) const COMMON_FILE: &str = "y000000000000.cfg";

/// `linekey.N.type` values.
const KEY_LINE: u8 = 15;
const KEY_BLF: u8 = 16;

/// A Yealink configuration file under construction.
struct Cfg(String);

impl Cfg {
    fn new(header: &str) -> Self {
        Cfg(format!("#!version:1.0.0.1\n## {header}\n"))
    }

    fn set(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Self {
        let _ = writeln!(self.0, "{key} = {value}");
        self
    }
}

/// `<mac>.cfg`: the phone's own account and keys.
pub(super) fn phone(p: &DeskPhone) -> (String, String) {
    let name = format!("{}.cfg", p.device.mac.lower());
    let ext = &p.phone.extension;
    let mut c = Cfg::new(&p.header());
    c.set("account.1.enable", 1)
        .set("account.1.label", plain(p.display_name(), 32))
        .set("account.1.display_name", plain(p.display_name(), 64))
        .set("account.1.auth_name", ext)
        .set("account.1.user_name", ext)
        .set("account.1.password", p.phone.password.expose())
        .set("account.1.sip_server.1.address", p.server)
        .set("account.1.sip_server.1.port", p.port())
        .set("account.1.sip_server.1.transport_type", if p.tcp() { 1 } else { 0 })
        .set("account.1.sip_server.1.expires", if p.phone.nat { 120 } else { 3600 })
        .set("account.1.nat.rport", u8::from(p.phone.nat))
        .set("account.1.nat.udp_update_enable", u8::from(p.phone.nat));
    key(&mut c, 1, KEY_LINE, ext, &plain(p.display_name(), 32));
    for (i, k) in p.keys.iter().enumerate() {
        key(&mut c, i + 2, KEY_BLF, &k.extension, &plain(&k.label, 32));
    }
    if let Some(load) = p.firmware() {
        c.set("static.firmware.url", load);
    }
    (name, c.0)
}

fn key(c: &mut Cfg, n: usize, kind: u8, value: &str, label: &str) {
    c.set(&format!("linekey.{n}.type"), kind)
        .set(&format!("linekey.{n}.line"), 1)
        .set(&format!("linekey.{n}.value"), value)
        .set(&format!("linekey.{n}.label"), label);
}

/// `y000000000000.cfg`: what every Yealink phone of `node` shares.
pub(super) fn common(node: &Node) -> (String, String) {
    let settings = &node.provisioning;
    let mut c = Cfg::new(&format!(
        "Rendered by asterisk-operator for the Yealink phones of node {}. Do not edit: the next apply overwrites it.",
        node.name
    ));
    if let Some(ntp) = &settings.ntp_server {
        c.set("local_time.ntp_server1", ntp);
    }
    if let Some(tz) = settings.time_zone {
        let zone = regional::zone(tz);
        let (hours, minutes) = (zone.offset_minutes / 60, zone.offset_minutes.abs() % 60);
        let offset = if minutes == 0 { format!("{hours:+}") } else { format!("{hours:+}:{minutes:02}") };
        c.set("local_time.time_zone", offset);
        match zone.dst {
            None => {
                c.set("local_time.summer_time", 0);
            }
            Some((start, end)) => {
                c.set("local_time.summer_time", 1)
                    .set("local_time.dst_time_type", 1)
                    .set("local_time.start_time", transition(start))
                    .set("local_time.end_time", transition(end))
                    .set("local_time.offset_time", 60);
            }
        }
    }
    if let Some(locale) = settings.locale {
        let l = regional::language(locale);
        c.set("lang.gui", l.yealink).set("lang.wui", l.yealink);
    }
    if let Some(ports) = settings.media_ports {
        c.set("network.port.min_rtpport", ports.start).set("network.port.max_rtpport", ports.end);
    }
    (COMMON_FILE.to_owned(), c.0)
}

/// `month/week/weekday/hour`, week 5 meaning the last and weekday 7 Sunday.
fn transition(t: Transition) -> String {
    format!("{}/{}/7/{}", t.month, t.week, t.hour)
}
