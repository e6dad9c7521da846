//! AMI (Asterisk Manager Interface) client: codec, session and typed actions.
//!
//! * [`codec`] — pure: bytes ⇄ frames ([`Decoder`], [`Message`], [`Action`]).
//! * [`correlate`] — pure: responses and event lists matched to actions by ActionID.
//! * [`types`], [`events`], [`actions`] — typed states, events and actions.
//! * [`session`] — tokio: the connection, login, multiplexing, events, keepalive, reconnect.
//! * [`cli`] — `asterisk-operator ami`.

pub mod actions;
pub mod cli;
pub mod codec;
pub mod correlate;
pub mod error;
pub mod events;
pub mod session;
pub mod types;

pub use actions::TypedAction;
pub use codec::{Action, DecodeError, Decoder, EncodeError, Frame, Limits, Message, MessageKind};
pub use correlate::{Correlator, Expect, Reply, Routed};
pub use error::AmiError;
pub use events::Event;
pub use session::{AuthMethod, ConnectionState, EventStream, Session, SessionConfig, SessionStats};
pub use types::{DeviceState, EventMask, ExtensionState};
