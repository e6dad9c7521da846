//! Pure routing of decoded messages to the actions waiting for them (by ActionID), assembling event
//! lists (`EventList: start` … `EventList: Complete`), and everything else to the event stream.
//!
//! Quirks handled (Asterisk 22 captures):
//! * IAXpeers' `PeerEntry` list items carry no ActionID: an action may name such an item event, and
//!   an ActionID-less event of that name is attached to the oldest such list in progress.
//! * IAXnetstats answers with no headers at all (raw table rows, or just a blank line): the oldest
//!   action expecting a raw reply takes the next raw frame.
//! * `Status` list items have ActionID last — irrelevant here, lookup is by header name.
//! * An event carrying the ActionID of an action already answered (e.g. `OriginateResponse` after an
//!   async Originate) is an ordinary event.

use std::collections::{HashMap, VecDeque};

use super::codec::{Message, MessageKind};

/// What kind of answer an action expects beyond the normal response/event list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expect {
    /// Name of list-item events that arrive without ActionID (IAXpeers: `PeerEntry`).
    pub items_without_action_id: Option<String>,
    /// The reply is a raw frame without headers (IAXnetstats).
    pub raw_reply: bool,
}

impl Expect {
    /// The known quirks, by action name.
    pub fn for_action(name: &str) -> Self {
        if name.eq_ignore_ascii_case("IAXpeers") {
            Expect { items_without_action_id: Some("PeerEntry".into()), raw_reply: false }
        } else if name.eq_ignore_ascii_case("IAXnetstats") {
            Expect { items_without_action_id: None, raw_reply: true }
        } else {
            Expect::default()
        }
    }
}

/// A complete answer to one action.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Reply {
    /// The response (for a raw reply, the raw frame).
    pub response: Message,
    /// List items, in arrival order (empty unless the response started an event list).
    pub events: Vec<Message>,
    /// The `…Complete` event that closed the list.
    pub complete: Option<Message>,
}

impl Reply {
    pub fn is_list(&self) -> bool {
        self.complete.is_some() || self.response.starts_event_list()
    }

    /// `ListItems:` of the closing event.
    pub fn list_items(&self) -> Option<usize> {
        self.complete.as_ref()?.get("ListItems")?.trim().parse().ok()
    }
}

/// The result of routing one message.
#[derive(Debug)]
pub enum Routed<T> {
    /// An action is fully answered.
    Done { token: T, action_id: String, reply: Reply },
    /// Part of a list still in progress (or an ignorable blank frame).
    Consumed,
    /// An event for the event stream.
    Event(Message),
    /// A response nobody waits for (no or unknown ActionID).
    Unmatched(Message),
}

struct Pending<T> {
    token: T,
    expect: Expect,
    response: Option<Message>,
    events: Vec<Message>,
}

/// Tracks actions in flight. `T` is whatever the caller wants back on completion (e.g. a oneshot).
pub struct Correlator<T> {
    pending: HashMap<String, Pending<T>>,
    /// ActionIDs in send order, for the quirks that cannot be matched by ActionID.
    order: VecDeque<String>,
}

impl<T> Default for Correlator<T> {
    fn default() -> Self {
        Correlator { pending: HashMap::new(), order: VecDeque::new() }
    }
}

impl<T> Correlator<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, action_id: String, expect: Expect, token: T) {
        if expect.raw_reply || expect.items_without_action_id.is_some() {
            self.order.push_back(action_id.clone());
        }
        self.pending.insert(action_id, Pending { token, expect, response: None, events: Vec::new() });
    }

    /// Forget an action (timed out); its token is returned.
    pub fn cancel(&mut self, action_id: &str) -> Option<T> {
        self.order.retain(|id| id != action_id);
        self.pending.remove(action_id).map(|p| p.token)
    }

    /// Forget every action (connection lost); their tokens are returned.
    pub fn drain(&mut self) -> Vec<(String, T)> {
        self.order.clear();
        self.pending.drain().map(|(id, p)| (id, p.token)).collect()
    }

    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    fn done(&mut self, id: String, response: Message, complete: Option<Message>) -> Routed<T> {
        self.order.retain(|x| *x != id);
        match self.pending.remove(&id) {
            Some(p) => Routed::Done {
                token: p.token,
                action_id: id,
                reply: Reply { response, events: p.events, complete },
            },
            None => Routed::Unmatched(response),
        }
    }

    pub fn route(&mut self, msg: Message) -> Routed<T> {
        match msg.kind() {
            MessageKind::Response => {
                let Some(id) = msg.action_id().map(str::to_owned) else { return Routed::Unmatched(msg) };
                let Some(p) = self.pending.get_mut(&id) else { return Routed::Unmatched(msg) };
                if msg.starts_event_list() && !msg.is_error() {
                    p.response = Some(msg);
                    Routed::Consumed
                } else {
                    self.done(id, msg, None)
                }
            }
            MessageKind::Event => {
                let id = match msg.action_id() {
                    Some(id) if self.pending.contains_key(id) => Some(id.to_owned()),
                    Some(_) => None,
                    None => self.orphan_owner(&msg),
                };
                let Some(id) = id else { return Routed::Event(msg) };
                if msg.completes_event_list() {
                    let response =
                        self.pending.get_mut(&id).and_then(|p| p.response.take()).unwrap_or_default();
                    return self.done(id, response, Some(msg));
                }
                if let Some(p) = self.pending.get_mut(&id) {
                    p.events.push(msg);
                }
                Routed::Consumed
            }
            MessageKind::Raw => {
                let owner = self
                    .order
                    .iter()
                    .find(|id| self.pending.get(id.as_str()).is_some_and(|p| p.expect.raw_reply))
                    .cloned();
                match owner {
                    Some(id) => self.done(id, msg, None),
                    None if msg.is_empty() => Routed::Consumed,
                    None => Routed::Unmatched(msg),
                }
            }
        }
    }

    fn orphan_owner(&self, msg: &Message) -> Option<String> {
        let name = msg.event_name()?;
        self.order
            .iter()
            .find(|id| {
                self.pending.get(id.as_str()).is_some_and(|p| {
                    p.response.is_some()
                        && p.expect
                            .items_without_action_id
                            .as_deref()
                            .is_some_and(|n| n.eq_ignore_ascii_case(name))
                })
            })
            .cloned()
    }
}
