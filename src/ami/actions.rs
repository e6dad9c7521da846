//! Typed actions: each builds an [`Action`] and turns the [`Reply`] into a typed result.
//!
//! Use them with [`Session::call`](super::session::Session::call), or build the `Action` yourself and
//! use [`Session::send`](super::session::Session::send) for anything not modelled here.

use md5::{Digest, Md5};

use super::codec::{Action, Message};
use super::correlate::Reply;
use super::error::AmiError;
use super::events::{DeviceStateChange, ExtensionStatus};
use super::types::{DeviceState, EventMask, ExtensionState};
use crate::secret::SecretValue;

/// An action with a typed answer.
pub trait TypedAction {
    type Output;
    fn action(&self) -> Action;
    fn parse(reply: Reply) -> Result<Self::Output, AmiError>;
}

/// `Err(AmiError::Action)` for `Response: Error`, naming the action and Asterisk's message.
pub fn check(action: &str, reply: Reply) -> Result<Reply, AmiError> {
    if reply.response.is_error() {
        let r = &reply.response;
        // Command puts the real error text in Output: lines.
        let output: Vec<&str> = r.get_all("Output").collect();
        let message = if output.is_empty() {
            r.message().unwrap_or("(no message)").to_owned()
        } else {
            output.join("\n")
        };
        return Err(AmiError::Action { action: action.to_owned(), message });
    }
    Ok(reply)
}

fn field(action: &str, m: &Message, key: &str) -> Result<String, AmiError> {
    m.get(key)
        .map(str::to_owned)
        .ok_or_else(|| AmiError::Protocol { action: action.into(), detail: format!("no {key} header") })
}

/// MD5 login key: `md5(challenge + secret)` in lowercase hex.
pub fn md5_key(challenge: &str, secret: &SecretValue) -> String {
    let mut h = Md5::new();
    h.update(challenge.as_bytes());
    h.update(secret.expose().as_bytes());
    hex::encode(h.finalize())
}

/// Login action; with `challenge` it uses `AuthType: MD5` and `Key`, else the plain `Secret`.
pub fn login_action(user: &str, secret: &SecretValue, challenge: Option<&str>, events: &EventMask) -> Action {
    let a = Action::new("Login");
    let a = match challenge {
        Some(c) => a.header("AuthType", "MD5").header("Username", user).header("Key", md5_key(c, secret)),
        None => a.header("Username", user).header("Secret", secret.expose()),
    };
    a.header("Events", events.to_header())
}

macro_rules! unit_action {
    ($t:ident, $name:literal) => {
        #[derive(Clone, Debug, Default)]
        pub struct $t;
    };
}

unit_action!(Ping, "Ping");
unit_action!(CoreSettings, "CoreSettings");
unit_action!(CoreStatus, "CoreStatus");
unit_action!(ExtensionStateList, "ExtensionStateList");
unit_action!(DeviceStateList, "DeviceStateList");
unit_action!(PJSIPShowEndpoints, "PJSIPShowEndpoints");
unit_action!(PJSIPShowContacts, "PJSIPShowContacts");
unit_action!(PJSIPShowRegistrationsOutbound, "PJSIPShowRegistrationsOutbound");
unit_action!(IAXpeers, "IAXpeers");
unit_action!(IAXregistry, "IAXregistry");
unit_action!(CoreShowChannels, "CoreShowChannels");

#[derive(Clone, Debug, PartialEq)]
pub struct Pong {
    /// Server time, seconds since the epoch.
    pub timestamp: Option<f64>,
}

impl TypedAction for Ping {
    type Output = Pong;
    fn action(&self) -> Action {
        Action::new("Ping")
    }
    fn parse(reply: Reply) -> Result<Pong, AmiError> {
        let r = check("Ping", reply)?;
        Ok(Pong { timestamp: r.response.get("Timestamp").and_then(|t| t.parse().ok()) })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreSettingsInfo {
    pub ami_version: String,
    pub asterisk_version: String,
    pub system_name: String,
    pub raw: Message,
}

impl TypedAction for CoreSettings {
    type Output = CoreSettingsInfo;
    fn action(&self) -> Action {
        Action::new("CoreSettings")
    }
    fn parse(reply: Reply) -> Result<Self::Output, AmiError> {
        let r = check("CoreSettings", reply)?.response;
        Ok(CoreSettingsInfo {
            ami_version: field("CoreSettings", &r, "AMIversion")?,
            asterisk_version: field("CoreSettings", &r, "AsteriskVersion")?,
            system_name: r.get("SystemName").unwrap_or("").to_owned(),
            raw: r,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreStatusInfo {
    /// `CoreStartupDate CoreStartupTime`, e.g. `2026-11-23 09:11:05` (server local time).
    pub startup: String,
    pub last_reload: String,
    pub current_calls: u64,
    pub processed_calls: u64,
    pub raw: Message,
}

impl TypedAction for CoreStatus {
    type Output = CoreStatusInfo;
    fn action(&self) -> Action {
        Action::new("CoreStatus")
    }
    fn parse(reply: Reply) -> Result<Self::Output, AmiError> {
        let r = check("CoreStatus", reply)?.response;
        let g = |k| r.get(k).unwrap_or("");
        let num = |k| r.get(k).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        Ok(CoreStatusInfo {
            startup: format!("{} {}", g("CoreStartupDate"), g("CoreStartupTime")),
            last_reload: format!("{} {}", g("CoreReloadDate"), g("CoreReloadTime")),
            current_calls: num("CoreCurrentCalls"),
            processed_calls: num("CoreProcessedCalls"),
            raw: r.clone(),
        })
    }
}

/// A CLI command. The output lines come from `Output:` headers (Asterisk 20+), or from the raw body
/// of a `Response: Follows` (older servers). An unknown command is an error carrying the output.
#[derive(Clone, Debug)]
pub struct Command(pub String);

impl TypedAction for Command {
    type Output = Vec<String>;
    fn action(&self) -> Action {
        Action::new("Command").header("Command", &self.0)
    }
    fn parse(reply: Reply) -> Result<Vec<String>, AmiError> {
        let r = check("Command", reply)?.response;
        let mut lines: Vec<String> = r.get_all("Output").map(str::to_owned).collect();
        if lines.is_empty() {
            lines = r.raw_lines().map(str::to_owned).collect();
        }
        Ok(lines)
    }
}

/// Reload one module (`res_pjsip.so`, `chan_iax2.so`, `pbx_config.so` …) or everything (`None`).
/// The result is Asterisk's message; the outcome also arrives as a `Reload` event.
#[derive(Clone, Debug, Default)]
pub struct Reload(pub Option<String>);

impl TypedAction for Reload {
    type Output = String;
    fn action(&self) -> Action {
        let a = Action::new("Reload");
        match &self.0 {
            Some(m) => a.header("Module", m),
            None => a,
        }
    }
    fn parse(reply: Reply) -> Result<String, AmiError> {
        Ok(check("Reload", reply)?.response.message().unwrap_or("").to_owned())
    }
}

/// `Events`: change the event mask of this session.
#[derive(Clone, Debug)]
pub struct Events(pub EventMask);

impl TypedAction for Events {
    type Output = ();
    fn action(&self) -> Action {
        Action::new("Events").header("EventMask", self.0.to_header())
    }
    fn parse(reply: Reply) -> Result<(), AmiError> {
        check("Events", reply).map(|_| ())
    }
}

#[derive(Clone, Debug)]
pub struct Setvar {
    pub variable: String,
    pub value: String,
    pub channel: Option<String>,
}

impl Setvar {
    /// `Setvar DEVICE_STATE(<device>) = <state>`, e.g. device `Custom:office-b-4001`.
    pub fn device_state(device: &str, state: DeviceState) -> Self {
        Setvar { variable: format!("DEVICE_STATE({device})"), value: state.as_str().into(), channel: None }
    }
}

impl TypedAction for Setvar {
    type Output = ();
    fn action(&self) -> Action {
        let mut a = Action::new("Setvar");
        if let Some(c) = &self.channel {
            a.push("Channel", c);
        }
        a.header("Variable", &self.variable).header("Value", &self.value)
    }
    fn parse(reply: Reply) -> Result<(), AmiError> {
        check("Setvar", reply).map(|_| ())
    }
}

#[derive(Clone, Debug)]
pub struct Getvar {
    pub variable: String,
    pub channel: Option<String>,
}

impl Getvar {
    pub fn device_state(device: &str) -> Self {
        Getvar { variable: format!("DEVICE_STATE({device})"), channel: None }
    }
}

impl TypedAction for Getvar {
    /// The value (an empty value is `Some("")`).
    type Output = Option<String>;
    fn action(&self) -> Action {
        let mut a = Action::new("Getvar");
        if let Some(c) = &self.channel {
            a.push("Channel", c);
        }
        a.header("Variable", &self.variable)
    }
    fn parse(reply: Reply) -> Result<Option<String>, AmiError> {
        Ok(check("Getvar", reply)?.response.get("Value").map(str::to_owned))
    }
}

/// `ExtensionState` of one extension. A missing extension answers Success with `Status: -1`
/// ([`ExtensionState::Unknown`]) and an empty hint.
#[derive(Clone, Debug)]
pub struct ExtensionStateQuery {
    pub exten: String,
    pub context: String,
}

impl TypedAction for ExtensionStateQuery {
    type Output = ExtensionStatus;
    fn action(&self) -> Action {
        Action::new("ExtensionState").header("Exten", &self.exten).header("Context", &self.context)
    }
    fn parse(reply: Reply) -> Result<ExtensionStatus, AmiError> {
        let r = check("ExtensionState", reply)?.response;
        ExtensionStatus::from_message(r).map_err(|m| AmiError::Protocol {
            action: "ExtensionState".into(),
            detail: format!("no valid Exten/Status in {m:?}"),
        })
    }
}

/// Some list actions answer an empty list with `Response: Error` (Asterisk 22: PJSIPShowContacts
/// says `No Contacts found`); those messages mean "no items", not failure.
const EMPTY_LIST_ERRORS: &[&str] = &["No Contacts found", "No registrations found", "No endpoints found"];

fn list(action: &str, reply: Reply) -> Result<Vec<Message>, AmiError> {
    if reply.response.is_error()
        && reply
            .response
            .message()
            .is_some_and(|m| EMPTY_LIST_ERRORS.iter().any(|e| m.eq_ignore_ascii_case(e)))
    {
        return Ok(Vec::new());
    }
    let r = check(action, reply)?;
    if !r.is_list() {
        return Err(AmiError::Protocol {
            action: action.into(),
            detail: "no event list in the answer".into(),
        });
    }
    Ok(r.events)
}

impl TypedAction for ExtensionStateList {
    type Output = Vec<ExtensionStatus>;
    fn action(&self) -> Action {
        Action::new("ExtensionStateList")
    }
    fn parse(reply: Reply) -> Result<Self::Output, AmiError> {
        Ok(list("ExtensionStateList", reply)?
            .into_iter()
            .filter_map(|m| ExtensionStatus::from_message(m).ok())
            .collect())
    }
}

impl TypedAction for DeviceStateList {
    type Output = Vec<DeviceStateChange>;
    fn action(&self) -> Action {
        Action::new("DeviceStateList")
    }
    fn parse(reply: Reply) -> Result<Self::Output, AmiError> {
        Ok(list("DeviceStateList", reply)?
            .into_iter()
            .filter_map(|m| DeviceStateChange::from_message(m).ok())
            .collect())
    }
}

/// One `EndpointList` item of PJSIPShowEndpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub aor: String,
    /// Contact URIs (Asterisk lists them as `aor/uri,` with a trailing comma).
    pub contacts: Vec<String>,
    /// Human text, e.g. `Not in use`, `Unavailable`.
    pub device_state: String,
    pub active_channels: u32,
    pub raw: Message,
}

impl TypedAction for PJSIPShowEndpoints {
    type Output = Vec<Endpoint>;
    fn action(&self) -> Action {
        Action::new("PJSIPShowEndpoints")
    }
    fn parse(reply: Reply) -> Result<Self::Output, AmiError> {
        Ok(list("PJSIPShowEndpoints", reply)?
            .into_iter()
            .filter(|m| m.event_name().is_some_and(|n| n.eq_ignore_ascii_case("EndpointList")))
            .map(|m| Endpoint {
                name: m.get("ObjectName").unwrap_or("").into(),
                aor: m.get("Aor").unwrap_or("").into(),
                contacts: m
                    .get("Contacts")
                    .unwrap_or("")
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(|c| c.split_once('/').map_or(c, |(_, uri)| uri).to_owned())
                    .collect(),
                device_state: m.get("DeviceState").unwrap_or("").into(),
                active_channels: m.get("ActiveChannels").and_then(|v| v.parse().ok()).unwrap_or(0),
                raw: m,
            })
            .collect())
    }
}

/// One `ContactList` item of PJSIPShowContacts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    pub endpoint: String,
    pub uri: String,
    pub status: String,
    pub roundtrip_usec: Option<u64>,
    pub user_agent: String,
    pub raw: Message,
}

impl TypedAction for PJSIPShowContacts {
    type Output = Vec<Contact>;
    fn action(&self) -> Action {
        Action::new("PJSIPShowContacts")
    }
    fn parse(reply: Reply) -> Result<Self::Output, AmiError> {
        Ok(list("PJSIPShowContacts", reply)?
            .into_iter()
            .map(|m| Contact {
                endpoint: m.get("Endpoint").unwrap_or("").into(),
                uri: m.get("Uri").unwrap_or("").into(),
                status: m.get("Status").unwrap_or("").into(),
                roundtrip_usec: m.get("RoundtripUsec").and_then(|v| v.parse().ok()),
                user_agent: m.get("UserAgent").unwrap_or("").into(),
                raw: m,
            })
            .collect())
    }
}

/// List actions whose items are returned as messages (fields vary by Asterisk version).
macro_rules! message_list {
    ($t:ident, $name:literal) => {
        impl TypedAction for $t {
            type Output = Vec<Message>;
            fn action(&self) -> Action {
                Action::new($name)
            }
            fn parse(reply: Reply) -> Result<Vec<Message>, AmiError> {
                list($name, reply)
            }
        }
    };
}

message_list!(PJSIPShowRegistrationsOutbound, "PJSIPShowRegistrationsOutbound");
message_list!(IAXregistry, "IAXregistry");
message_list!(CoreShowChannels, "CoreShowChannels");

/// One IAXpeers `PeerEntry` (these items arrive without ActionID; the session attaches them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IaxPeer {
    /// `ObjectName`: `name` or `name/username`.
    pub name: String,
    pub address: String,
    pub port: Option<u16>,
    pub dynamic: bool,
    /// e.g. `OK (1 ms)`, `Unmonitored`, `UNREACHABLE`.
    pub status: String,
    pub raw: Message,
}

impl TypedAction for IAXpeers {
    type Output = Vec<IaxPeer>;
    fn action(&self) -> Action {
        Action::new("IAXpeers")
    }
    fn parse(reply: Reply) -> Result<Self::Output, AmiError> {
        Ok(list("IAXpeers", reply)?
            .into_iter()
            .map(|m| IaxPeer {
                name: m.get("ObjectName").unwrap_or("").into(),
                address: m.get("IPaddress").unwrap_or("").into(),
                port: m.get("IPport").or_else(|| m.get("Port")).and_then(|p| p.parse().ok()),
                dynamic: m.get("Dynamic").is_some_and(|d| d.eq_ignore_ascii_case("yes")),
                status: m.get("Status").unwrap_or("").into(),
                raw: m,
            })
            .collect())
    }
}

/// IAXnetstats: no headers at all, just table rows (empty with no calls).
#[derive(Clone, Debug, Default)]
pub struct IAXnetstats;

impl TypedAction for IAXnetstats {
    type Output = Vec<String>;
    fn action(&self) -> Action {
        Action::new("IAXnetstats")
    }
    fn parse(reply: Reply) -> Result<Vec<String>, AmiError> {
        let r = check("IAXnetstats", reply)?;
        Ok(r.response.raw_lines().map(str::to_owned).collect())
    }
}

/// GetConfig. The result maps each category to its `name=value` lines, in file order; duplicate
/// category names (pjsip endpoint + aor) stay separate. A filter matching nothing gives an empty list
/// (Asterisk answers with the colon-less line `No categories found`).
#[derive(Clone, Debug, Default)]
pub struct GetConfig {
    pub filename: String,
    pub category: Option<String>,
    /// e.g. `type=aor`.
    pub filter: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigCategory {
    pub name: String,
    pub lines: Vec<(String, String)>,
}

impl TypedAction for GetConfig {
    type Output = Vec<ConfigCategory>;
    fn action(&self) -> Action {
        let mut a = Action::new("GetConfig").header("Filename", &self.filename);
        if let Some(c) = &self.category {
            a.push("Category", c);
        }
        if let Some(f) = &self.filter {
            a.push("Filter", f);
        }
        a
    }
    fn parse(reply: Reply) -> Result<Self::Output, AmiError> {
        let r = check("GetConfig", reply)?.response;
        let mut cats: Vec<(String, ConfigCategory)> = Vec::new();
        for (k, v) in r.headers() {
            if let Some(idx) = k.strip_prefix("Category-") {
                cats.push((idx.to_owned(), ConfigCategory { name: v.to_owned(), lines: Vec::new() }));
            } else if let Some(rest) = k.strip_prefix("Line-") {
                let idx = rest.split('-').next().unwrap_or("");
                if let Some((_, cat)) = cats.iter_mut().rev().find(|(i, _)| i == idx) {
                    let (name, value) = v.split_once('=').unwrap_or((v, ""));
                    cat.lines.push((name.to_owned(), value.to_owned()));
                }
            }
        }
        Ok(cats.into_iter().map(|(_, c)| c).collect())
    }
}

/// CreateConfig: an empty file (UpdateConfig on a missing file fails with a misleading
/// `File requires escalated privileges`). `File exists` is an error.
#[derive(Clone, Debug)]
pub struct CreateConfig(pub String);

impl TypedAction for CreateConfig {
    type Output = ();
    fn action(&self) -> Action {
        Action::new("CreateConfig").header("Filename", &self.0)
    }
    fn parse(reply: Reply) -> Result<(), AmiError> {
        check("CreateConfig", reply).map(|_| ())
    }
}

/// One change of an UpdateConfig (numbered `Action-000000`, `Cat-000000`, … on the wire).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigChange {
    /// `NewCat`, `RenameCat`, `DelCat`, `EmptyCat`, `Update`, `Delete`, `Append`, `Insert`.
    pub action: String,
    pub cat: String,
    pub var: Option<String>,
    pub value: Option<String>,
    pub match_: Option<String>,
    pub options: Option<String>,
}

impl ConfigChange {
    pub fn new(action: &str, cat: &str) -> Self {
        ConfigChange {
            action: action.into(),
            cat: cat.into(),
            var: None,
            value: None,
            match_: None,
            options: None,
        }
    }
    pub fn append(cat: &str, var: &str, value: &str) -> Self {
        ConfigChange { var: Some(var.into()), value: Some(value.into()), ..Self::new("Append", cat) }
    }
}

/// UpdateConfig: all-or-nothing; `reload` adds `Reload: <module>` (a `Reload` event follows).
#[derive(Clone, Debug, Default)]
pub struct UpdateConfig {
    pub src: String,
    pub dst: String,
    pub reload: Option<String>,
    pub changes: Vec<ConfigChange>,
}

impl TypedAction for UpdateConfig {
    type Output = ();
    fn action(&self) -> Action {
        let mut a =
            Action::new("UpdateConfig").header("SrcFilename", &self.src).header("DstFilename", &self.dst);
        if let Some(r) = &self.reload {
            a.push("Reload", r);
        }
        for (i, c) in self.changes.iter().enumerate() {
            a.push(format!("Action-{i:06}"), &c.action);
            a.push(format!("Cat-{i:06}"), &c.cat);
            for (k, v) in
                [("Var", &c.var), ("Value", &c.value), ("Match", &c.match_), ("Options", &c.options)]
            {
                if let Some(v) = v {
                    a.push(format!("{k}-{i:06}"), v);
                }
            }
        }
        a
    }
    fn parse(reply: Reply) -> Result<(), AmiError> {
        check("UpdateConfig", reply).map(|_| ())
    }
}

impl ExtensionStatus {
    /// The device state to mirror this extension onto a `Custom:` device elsewhere.
    pub fn device_state(&self) -> DeviceState {
        self.status.to_device_state()
    }
}

impl From<&ExtensionStatus> for ExtensionState {
    fn from(e: &ExtensionStatus) -> Self {
        e.status
    }
}
