//! Small value types shared by actions and events: device and extension states, event masks, secrets.

use std::fmt;
use std::str::FromStr;

/// Header names whose values must never be shown (Debug, JSON output, logs): Login's `Secret`
/// and `Key`, and the passwords PJSIPShowAuths and friends answer with.
const SECRET_KEYS: &[&str] = &["Secret", "Key", "Password", "Passwd", "Md5Cred", "AuthPassword"];

/// Options of config lines (GetConfig's `Line-…` headers, `name=value`) whose values are secrets.
const SECRET_OPTIONS: &[&str] = &["secret", "password", "passwd", "md5_cred", "md5secret", "dbsecret"];

/// The value to display for header `key`: `"<redacted>"` for secrets, and the value of a
/// secret option redacted in a config line (`Line-000000-000001: secret=…`).
pub fn redact_value<'a>(key: &str, value: &'a str) -> std::borrow::Cow<'a, str> {
    if SECRET_KEYS.iter().any(|s| s.eq_ignore_ascii_case(key)) {
        return "<redacted>".into();
    }
    let config_line = key.len() > 5 && key[..5].eq_ignore_ascii_case("Line-");
    match value.split_once('=') {
        Some((option, _))
            if config_line && SECRET_OPTIONS.iter().any(|s| s.eq_ignore_ascii_case(option.trim())) =>
        {
            format!("{option}=<redacted>").into()
        }
        _ => value.into(),
    }
}

/// An extension (hint) state as numbered by `ExtensionStatus` / `ExtensionState` (`Status:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ExtensionState {
    Idle,
    InUse,
    Busy,
    Unavailable,
    Ringing,
    InUseRinging,
    Hold,
    /// `-1`: no such extension/hint, or unknown.
    Unknown,
}

impl ExtensionState {
    pub fn from_code(code: i32) -> Option<Self> {
        Some(match code {
            0 => Self::Idle,
            1 => Self::InUse,
            2 => Self::Busy,
            4 => Self::Unavailable,
            8 => Self::Ringing,
            9 => Self::InUseRinging,
            16 => Self::Hold,
            -1 => Self::Unknown,
            _ => return None,
        })
    }

    pub fn code(self) -> i32 {
        match self {
            Self::Idle => 0,
            Self::InUse => 1,
            Self::Busy => 2,
            Self::Unavailable => 4,
            Self::Ringing => 8,
            Self::InUseRinging => 9,
            Self::Hold => 16,
            Self::Unknown => -1,
        }
    }

    /// Asterisk's `StatusText` for this state.
    pub fn text(self) -> &'static str {
        match self {
            Self::Idle => "Idle",
            Self::InUse => "InUse",
            Self::Busy => "Busy",
            Self::Unavailable => "Unavailable",
            Self::Ringing => "Ringing",
            Self::InUseRinging => "InUse&Ringing",
            Self::Hold => "Hold",
            Self::Unknown => "Unknown",
        }
    }

    /// The device state to set on a `Custom:` device so a hint on it shows this extension state.
    pub fn to_device_state(self) -> DeviceState {
        match self {
            Self::Idle => DeviceState::NotInUse,
            Self::InUse => DeviceState::InUse,
            Self::Busy => DeviceState::Busy,
            Self::Unavailable => DeviceState::Unavailable,
            Self::Ringing => DeviceState::Ringing,
            Self::InUseRinging => DeviceState::RingInUse,
            Self::Hold => DeviceState::OnHold,
            // Setvar refuses UNKNOWN ("Variable not set"); an unknown remote state must not look idle.
            Self::Unknown => DeviceState::Unavailable,
        }
    }
}

impl From<DeviceState> for ExtensionState {
    /// The extension state a hint on a single device in this state shows (as Asterisk 22 does:
    /// `UNKNOWN` → Idle, `INVALID` → Unavailable).
    fn from(d: DeviceState) -> Self {
        match d {
            DeviceState::NotInUse | DeviceState::Unknown => Self::Idle,
            DeviceState::InUse => Self::InUse,
            DeviceState::Busy => Self::Busy,
            DeviceState::Unavailable | DeviceState::Invalid => Self::Unavailable,
            DeviceState::Ringing => Self::Ringing,
            DeviceState::RingInUse => Self::InUseRinging,
            DeviceState::OnHold => Self::Hold,
        }
    }
}

/// A device state as written by `DEVICE_STATE()` and reported in `DeviceStateChange` (`State:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DeviceState {
    Unknown,
    NotInUse,
    InUse,
    Busy,
    Invalid,
    Unavailable,
    Ringing,
    RingInUse,
    OnHold,
}

impl DeviceState {
    pub const ALL: [DeviceState; 9] = [
        Self::Unknown,
        Self::NotInUse,
        Self::InUse,
        Self::Busy,
        Self::Invalid,
        Self::Unavailable,
        Self::Ringing,
        Self::RingInUse,
        Self::OnHold,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "UNKNOWN",
            Self::NotInUse => "NOT_INUSE",
            Self::InUse => "INUSE",
            Self::Busy => "BUSY",
            Self::Invalid => "INVALID",
            Self::Unavailable => "UNAVAILABLE",
            Self::Ringing => "RINGING",
            Self::RingInUse => "RINGINUSE",
            Self::OnHold => "ONHOLD",
        }
    }
}

impl fmt::Display for DeviceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown device state {0:?}")]
pub struct UnknownDeviceState(pub String);

impl FromStr for DeviceState {
    type Err = UnknownDeviceState;
    /// Case-insensitive, as Asterisk accepts it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|d| d.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownDeviceState(s.to_owned()))
    }
}

/// The `EventMask` of the `Events` action (and `Events:` of Login).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum EventMask {
    /// No events.
    Off,
    /// All events the user may read.
    #[default]
    On,
    /// Only these classes, e.g. `["system", "call"]`.
    Classes(Vec<String>),
}

impl EventMask {
    pub fn classes<S: Into<String>>(c: impl IntoIterator<Item = S>) -> Self {
        EventMask::Classes(c.into_iter().map(Into::into).collect())
    }

    pub fn to_header(&self) -> String {
        match self {
            EventMask::Off => "off".into(),
            EventMask::On => "on".into(),
            EventMask::Classes(c) => c.join(","),
        }
    }

    pub fn is_off(&self) -> bool {
        matches!(self, EventMask::Off) || matches!(self, EventMask::Classes(c) if c.is_empty())
    }
}

impl FromStr for EventMask {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim() {
            x if x.eq_ignore_ascii_case("off") => EventMask::Off,
            x if x.eq_ignore_ascii_case("on") => EventMask::On,
            x => EventMask::classes(x.split(',').map(str::trim).filter(|c| !c.is_empty())),
        })
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::redact_value;

    #[test]
    fn secrets_passwords_and_secret_config_lines_are_redacted() {
        for key in ["Secret", "key", "Password", "MD5Cred"] {
            assert_eq!(redact_value(key, "Hunter2"), "<redacted>", "{key}");
        }
        assert_eq!(redact_value("Line-000000-000003", "secret=Hunter2"), "secret=<redacted>");
        assert_eq!(redact_value("Line-000001-000000", "password = Hunter2"), "password =<redacted>");
        assert_eq!(redact_value("Line-000000-000001", "type=peer"), "type=peer");
        assert_eq!(redact_value("ObjectName", "secret=x"), "secret=x", "only config lines");
    }
}
