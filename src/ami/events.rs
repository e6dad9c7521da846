//! Typed AMI events. Every typed event keeps the whole [`Message`] (`raw`), so fields not modelled
//! here are never lost; events not modelled at all are [`Event::Other`].

use super::codec::Message;
use super::types::{DeviceState, ExtensionState};

/// `DeviceStateChange` (also the item of `DeviceStateList`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceStateChange {
    pub device: String,
    /// `None` when Asterisk sent a state string this crate does not know.
    pub state: Option<DeviceState>,
    pub raw: Message,
}

/// `ExtensionStatus` (also the item of `ExtensionStateList`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtensionStatus {
    pub exten: String,
    pub context: String,
    /// Empty for a brand-new hint's first event after a dialplan reload.
    pub hint: String,
    pub status: ExtensionState,
    pub status_code: i32,
    pub status_text: String,
    pub raw: Message,
}

/// `Reload`: `Status` 0 success, 2 module not found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReloadEvent {
    /// As given in the action (`res_pjsip.so`, `res_pjsip`), or `All`.
    pub module: String,
    pub status: i32,
    pub raw: Message,
}

impl ReloadEvent {
    pub fn succeeded(&self) -> bool {
        self.status == 0
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FullyBooted {
    pub uptime: Option<u64>,
    pub last_reload: Option<u64>,
    pub raw: Message,
}

/// PJSIP `ContactStatus` (`NonQualified`, `Reachable`, `Unreachable`, `Removed`, …).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactStatus {
    pub uri: String,
    pub status: String,
    pub aor: String,
    pub endpoint: String,
    pub roundtrip_usec: Option<u64>,
    pub raw: Message,
}

/// `PeerStatus` (PJSIP `Reachable`/`Unreachable`, IAX2 `Registered`/`Unregistered`/…).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    pub channel_type: String,
    pub peer: String,
    pub status: String,
    pub raw: Message,
}

/// `Registry`: an outbound registration changed state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registry {
    pub channel_type: String,
    pub username: String,
    pub domain: String,
    pub status: String,
    pub raw: Message,
}

/// `Newchannel` / `Hangup`: counted, not interpreted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelEvent {
    pub channel: String,
    pub uniqueid: String,
    pub raw: Message,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    DeviceStateChange(DeviceStateChange),
    ExtensionStatus(ExtensionStatus),
    Reload(ReloadEvent),
    FullyBooted(FullyBooted),
    ContactStatus(ContactStatus),
    PeerStatus(PeerStatus),
    Registry(Registry),
    Newchannel(ChannelEvent),
    Hangup(ChannelEvent),
    /// Any other event, or a known one missing a required field.
    Other(Message),
}

fn s(m: &Message, k: &str) -> Option<String> {
    m.get(k).map(str::to_owned)
}

fn num<T: std::str::FromStr>(m: &Message, k: &str) -> Option<T> {
    m.get(k)?.trim().parse().ok()
}

impl DeviceStateChange {
    pub fn from_message(m: Message) -> Result<Self, Message> {
        let Some(device) = s(&m, "Device") else { return Err(m) };
        let state = m.get("State").and_then(|v| v.parse().ok());
        Ok(DeviceStateChange { device, state, raw: m })
    }
}

impl ExtensionStatus {
    pub fn from_message(m: Message) -> Result<Self, Message> {
        let (Some(exten), Some(code)) = (s(&m, "Exten"), num::<i32>(&m, "Status")) else { return Err(m) };
        let Some(status) = ExtensionState::from_code(code) else { return Err(m) };
        Ok(ExtensionStatus {
            exten,
            context: s(&m, "Context").unwrap_or_default(),
            hint: s(&m, "Hint").unwrap_or_default(),
            status,
            status_code: code,
            status_text: s(&m, "StatusText").unwrap_or_default(),
            raw: m,
        })
    }
}

impl Event {
    /// Type an event message. Never fails: anything unmodelled becomes [`Event::Other`].
    pub fn from_message(m: Message) -> Event {
        let name = m.event_name().unwrap_or("");
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if is("DeviceStateChange") {
            DeviceStateChange::from_message(m).map_or_else(Event::Other, Event::DeviceStateChange)
        } else if is("ExtensionStatus") {
            ExtensionStatus::from_message(m).map_or_else(Event::Other, Event::ExtensionStatus)
        } else if is("Reload") {
            match (s(&m, "Module"), num(&m, "Status")) {
                (Some(module), Some(status)) => Event::Reload(ReloadEvent { module, status, raw: m }),
                _ => Event::Other(m),
            }
        } else if is("FullyBooted") {
            Event::FullyBooted(FullyBooted {
                uptime: num(&m, "Uptime"),
                last_reload: num(&m, "LastReload"),
                raw: m,
            })
        } else if is("ContactStatus") {
            match (s(&m, "URI"), s(&m, "ContactStatus")) {
                (Some(uri), Some(status)) => Event::ContactStatus(ContactStatus {
                    uri,
                    status,
                    aor: s(&m, "AOR").unwrap_or_default(),
                    endpoint: s(&m, "EndpointName").unwrap_or_default(),
                    roundtrip_usec: num(&m, "RoundtripUsec"),
                    raw: m,
                }),
                _ => Event::Other(m),
            }
        } else if is("PeerStatus") {
            match (s(&m, "Peer"), s(&m, "PeerStatus")) {
                (Some(peer), Some(status)) => Event::PeerStatus(PeerStatus {
                    channel_type: s(&m, "ChannelType").unwrap_or_default(),
                    peer,
                    status,
                    raw: m,
                }),
                _ => Event::Other(m),
            }
        } else if is("Registry") {
            match s(&m, "Status") {
                Some(status) => Event::Registry(Registry {
                    channel_type: s(&m, "ChannelType").unwrap_or_default(),
                    username: s(&m, "Username").unwrap_or_default(),
                    domain: s(&m, "Domain").unwrap_or_default(),
                    status,
                    raw: m,
                }),
                None => Event::Other(m),
            }
        } else if is("Newchannel") || is("Hangup") {
            let hangup = is("Hangup");
            let ev = ChannelEvent {
                channel: s(&m, "Channel").unwrap_or_default(),
                uniqueid: s(&m, "Uniqueid").unwrap_or_default(),
                raw: m,
            };
            if hangup { Event::Hangup(ev) } else { Event::Newchannel(ev) }
        } else {
            Event::Other(m)
        }
    }

    /// The underlying message, all fields included.
    pub fn message(&self) -> &Message {
        match self {
            Event::DeviceStateChange(e) => &e.raw,
            Event::ExtensionStatus(e) => &e.raw,
            Event::Reload(e) => &e.raw,
            Event::FullyBooted(e) => &e.raw,
            Event::ContactStatus(e) => &e.raw,
            Event::PeerStatus(e) => &e.raw,
            Event::Registry(e) => &e.raw,
            Event::Newchannel(e) | Event::Hangup(e) => &e.raw,
            Event::Other(m) => m,
        }
    }

    /// The `Event:` name as Asterisk sent it.
    pub fn name(&self) -> &str {
        self.message().event_name().unwrap_or("")
    }
}
