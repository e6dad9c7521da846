//! Polycom/Poly UC Software (VVX, SoundPoint IP): the phone asks for its master `<mac>.cfg`
//! (lower case), whose `CONFIG_FILES` names the phone's parameter file `<mac>-phone.cfg`:
//! `reg.1.*` for the line, `attendant.resourceList.N.*` for the BLF targets (an empty
//! `attendant.uri` makes the phone subscribe to each one itself).

use super::regional::{self, Transition};
use super::xml::Xml;
use super::{DeskPhone, plain};

/// The master file and the phone's parameter file.
pub(super) fn files(p: &DeskPhone) -> Vec<(String, String)> {
    let mac = p.device.mac.lower();
    let params = format!("{mac}-phone.cfg");
    let mut master = Xml::new(&p.header());
    let attrs: Vec<(String, String)> = [
        ("APP_FILE_PATH", p.firmware().unwrap_or("")),
        ("CONFIG_FILES", params.as_str()),
        ("MISC_FILES", ""),
        ("LOG_FILE_DIRECTORY", ""),
        ("OVERRIDES_DIRECTORY", ""),
        ("CONTACTS_DIRECTORY", ""),
        ("LICENSE_DIRECTORY", ""),
        ("USER_PROFILES_DIRECTORY", ""),
        ("CALL_LISTS_DIRECTORY", ""),
        ("COREFILE_DIRECTORY", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    master.attribute_element("APPLICATION", &attrs);
    let mut x = Xml::new(&p.header());
    x.attribute_element("polycomConfig", &parameters(p));
    vec![(format!("{mac}.cfg"), master.finish()), (params, x.finish())]
}

fn parameters(p: &DeskPhone) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &dyn std::fmt::Display| out.push((k.to_owned(), v.to_string()));
    let ext = &p.phone.extension;
    set("reg.1.address", ext);
    set("reg.1.auth.userId", ext);
    set("reg.1.auth.password", &p.phone.password.expose());
    set("reg.1.displayName", &plain(p.display_name(), 64));
    set("reg.1.label", &plain(p.display_name(), 32));
    set("reg.1.server.1.address", &p.server);
    set("reg.1.server.1.port", &p.port());
    set("reg.1.server.1.transport", &if p.tcp() { "TCPOnly" } else { "UDPOnly" });
    set("reg.1.server.1.expires", &if p.phone.nat { 120 } else { 3600 });
    set("reg.1.server.1.register", &1);
    if p.phone.nat {
        set("nat.keepalive.interval", &30);
    }
    set("attendant.uri", &"");
    set("attendant.reg", &1);
    for (i, key) in p.keys.iter().enumerate() {
        let n = i + 1;
        set(&format!("attendant.resourceList.{n}.address"), &key.extension);
        set(&format!("attendant.resourceList.{n}.label"), &plain(&key.label, 32));
        set(&format!("attendant.resourceList.{n}.type"), &"normal");
    }
    let settings = p.settings();
    if let Some(ntp) = &settings.ntp_server {
        set("tcpIpApp.sntp.address", ntp);
        set("tcpIpApp.sntp.address.overrideDHCP", &1);
    }
    if let Some(tz) = settings.time_zone {
        let zone = regional::zone(tz);
        set("tcpIpApp.sntp.gmtOffset", &(zone.offset_minutes * 60));
        set("tcpIpApp.sntp.gmtOffset.overrideDHCP", &1);
        match zone.dst {
            None => set("tcpIpApp.sntp.daylightSavings.enable", &0),
            Some((start, stop)) => {
                set("tcpIpApp.sntp.daylightSavings.enable", &1);
                set("tcpIpApp.sntp.daylightSavings.fixedDayEnable", &0);
                for (prefix, t) in [("start", start), ("stop", stop)] {
                    transition(&mut set, prefix, t);
                }
            }
        }
    }
    if let Some(locale) = settings.locale {
        set("lcl.ml.lang", &regional::language(locale).cisco_user);
    }
    if let Some(ports) = settings.media_ports {
        set("tcpIpApp.port.rtp.mediaPortRangeStart", &ports.start);
        set("tcpIpApp.port.rtp.mediaPortRangeEnd", &ports.end);
    }
    out
}

/// `daylightSavings.{start,stop}.*`: the first Sunday on or after `date`, or the last one.
fn transition(set: &mut impl FnMut(&str, &dyn std::fmt::Display), prefix: &str, t: Transition) {
    let key = |k: &str| format!("tcpIpApp.sntp.daylightSavings.{prefix}.{k}");
    set(&key("month"), &t.month);
    set(&key("date"), &if t.week == 5 { 1 } else { 1 + 7 * (t.week - 1) });
    set(&key("dayOfWeek"), &1);
    set(&key("dayOfWeek.lastInMonth"), &u8::from(t.week == 5));
    set(&key("time"), &t.hour);
}
