//! Kubernetes-style status conditions (`metav1.Condition`), computed from values.
//!
//! Like `meta.SetStatusCondition` in Go: a condition's `lastTransitionTime` only moves when its
//! status changes, so a reconcile that finds nothing new writes an identical status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::topology::ValidationError;

/// Condition types the operator writes.
pub mod types {
    /// The resource passed validation.
    pub const VALID: &str = "Valid";
    /// Everything the resource describes is in effect.
    pub const READY: &str = "Ready";
    /// The node's agent applied the bundle with this resource in it.
    pub const CONFIG_APPLIED: &str = "ConfigApplied";
    /// The controller reaches the node's agent.
    pub const AGENT_CONNECTED: &str = "AgentConnected";
    /// Every remote target of a BLF subscription is mirrored live where it is watched.
    pub const MIRRORED: &str = "Mirrored";
    /// A managed node's StatefulSet, Service and Secret exist and its pod is ready.
    pub const MANAGED: &str = "Managed";
    /// A trunk is up at both ends, so the routes that use it can.
    pub const ROUTED: &str = "Routed";
}

/// The vocabulary of one condition type: each reason belongs to exactly one type, so a
/// condition cannot be written with another type's reason (or a misspelt one).
pub trait Reason: Copy {
    /// The condition type these reasons are for, e.g. [`types::CONFIG_APPLIED`].
    const TYPE: &'static str;
    /// The CamelCase reason as written in the condition.
    fn as_str(self) -> &'static str;
}

/// Declares the reasons of one condition type; each reason is written as its variant's name.
macro_rules! reasons {
    ($(#[$doc:meta])* $name:ident for $type_:expr => { $($(#[$vdoc:meta])* $variant:ident,)+ }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl Reason for $name {
            const TYPE: &'static str = $type_;
            fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => stringify!($variant),)+
                }
            }
        }
    };
}

reasons! {
    /// `Valid=True` (its failures are [`crate::topology::Reason`]s).
    ValidReason for types::VALID => {
        /// The resource passed validation.
        Valid,
    }
}

reasons! {
    /// Why a resource is, or is not, `Ready`.
    ReadyReason for types::READY => {
        /// Valid and in force.
        Ready,
        /// See the Valid and ConfigApplied conditions.
        NotReady,
    }
}

reasons! {
    /// Whether the bundle with the resource in it is in force on its node(s).
    AppliedReason for types::CONFIG_APPLIED => {
        /// The node's agent applied the current bundle.
        Applied,
        /// The resource is invalid, so none of it is applied.
        Invalid,
        /// The node is invalid, so nothing was rendered for it.
        NotRendered,
        /// Not pushed yet.
        Pending,
        /// The node has no agent the controller may push to.
        NoAgent,
        /// The agent could not be reached.
        AgentUnreachable,
        /// A newer bundle is being applied.
        Superseded,
        /// Asterisk (or the agent) rejected the bundle; the previous configuration stays.
        ApplyFailed,
        /// The bundle is written and reloaded, but part of it (a SIP transport, an IAX2
        /// listener) takes effect only when Asterisk restarts.
        RestartRequired,
    }
}

reasons! {
    /// Whether the controller reaches a node's agent.
    AgentReason for types::AGENT_CONNECTED => {
        /// The agent answered.
        Connected,
        /// Not contacted yet.
        Pending,
        /// The agent could not be reached or refused the call.
        Unreachable,
        /// The node has no agent the controller may push to.
        NoAgent,
    }
}

reasons! {
    /// The state of a managed node's StatefulSet, Service and Secret.
    ManagedReason for types::MANAGED => {
        /// The pod is ready.
        Running,
        /// The pod is not ready yet.
        Starting,
        /// Applied; waiting for the API server (status, cache) to catch up.
        Pending,
        /// The node is invalid, or its objects cannot be built.
        Invalid,
        /// The API server does not serve what a managed node needs.
        WorkloadAPIUnavailable,
        /// The namespace's mesh CA Secret cannot be used.
        MeshCAInvalid,
        /// The node's Secret lacks a key.
        SecretIncomplete,
        /// The API server refused an object.
        ApplyFailed,
        /// `--manifests` mode: there is no cluster to run a pod in.
        NeedsCluster,
        /// The node asks for an image or host networking the operator does not allow.
        NotPermitted,
    }
}

reasons! {
    /// Whether a trunk is up at both ends (and so carries the routes that use it).
    RoutedReason for types::ROUTED => {
        /// Both ends report the other end reachable.
        Up,
        /// An end reports the other end unreachable.
        Down,
        /// An end's agent has not reported the trunk (unreachable, or not applied yet).
        Unknown,
        /// The trunk is invalid or not rendered, so nothing routes over it.
        NotRouted,
    }
}

reasons! {
    /// Whether every remote target of a BLF subscription is mirrored live on the watcher's node.
    MirroredReason for types::MIRRORED => {
        /// Every remote target's owner is heard from; local targets need no mirror.
        Live,
        /// Some target's owner is not heard from: its lamp shows UNAVAILABLE.
        OwnerUnreachable,
        /// The watcher node's agent has not reported its mirrors (unreachable, no mesh, or the
        /// bundle is not applied yet).
        Unknown,
        /// The subscription is invalid or not rendered, so nothing is mirrored.
        NotMirrored,
    }
}

/// A condition about to be written: everything but the transition time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionUpdate {
    /// Condition type, e.g. [`types::READY`].
    pub type_: &'static str,
    /// `True`, `False` or `Unknown`.
    pub status: bool,
    /// CamelCase reason, one of the type's [`Reason`]s.
    pub reason: String,
    /// Message for people.
    pub message: String,
}

impl ConditionUpdate {
    /// A `True` condition of the reason's type.
    pub fn ok<R: Reason>(reason: R, message: impl Into<String>) -> Self {
        Self { type_: R::TYPE, status: true, reason: reason.as_str().to_owned(), message: message.into() }
    }

    /// A `False` condition of the reason's type.
    pub fn failed<R: Reason>(reason: R, message: impl Into<String>) -> Self {
        Self { type_: R::TYPE, status: false, reason: reason.as_str().to_owned(), message: message.into() }
    }

    /// `Valid` from a resource's validation errors: True when there are none, else False with
    /// the first error's reason and every message (field, problem, fix).
    pub fn valid(errors: &[&ValidationError]) -> Self {
        match errors.first() {
            None => Self::ok(ValidReason::Valid, "the resource passed validation"),
            Some(first) => Self::failed(
                first.reason,
                errors.iter().map(|e| e.condition_message()).collect::<Vec<_>>().join("\n"),
            ),
        }
    }
}

impl Reason for crate::topology::Reason {
    const TYPE: &'static str = types::VALID;
    fn as_str(self) -> &'static str {
        crate::topology::Reason::as_str(self)
    }
}

/// A managed node in `--manifests` mode: there is no cluster to run its pod in.
pub fn needs_cluster() -> ConditionUpdate {
    ConditionUpdate::failed(
        ManagedReason::NeedsCluster,
        "spec.managed needs the controller to run against a Kubernetes cluster (it creates a StatefulSet, a Service and a Secret); without one, run Asterisk and `asterisk-operator agent` yourself and set spec.agent.endpoint",
    )
}

/// The longest condition message kept, in bytes. An apply error can carry a whole Asterisk log
/// (hundreds of KiB): the status would be rewritten with it on every change, and the API server
/// refuses condition messages over 32 KiB. The whole text stays in the agent's log.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// `message` cut to [`MAX_MESSAGE_BYTES`] at a character boundary, saying how much was cut.
pub fn bounded_message(mut message: String) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message;
    }
    let total = message.len();
    let mut end = MAX_MESSAGE_BYTES - 64;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    message.push_str(&format!(" … ({} of {total} bytes cut; the agent's log has it all)", total - end));
    message
}

/// Sets `update` in `conditions` for `generation` at `now`: replaces the condition of the same
/// type, keeping its `lastTransitionTime` when the status did not change. Messages are bounded
/// ([`bounded_message`]). Returns whether anything changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    mut update: ConditionUpdate,
    generation: Option<i64>,
    now: &Time,
) -> bool {
    update.message = bounded_message(update.message);
    let status = if update.status { "True" } else { "False" }.to_owned();
    let existing = conditions.iter_mut().find(|c| c.type_ == update.type_);
    match existing {
        Some(c) => {
            let changed = c.status != status
                || c.reason != update.reason
                || c.message != update.message
                || c.observed_generation != generation;
            if c.status != status {
                c.last_transition_time = now.clone();
            }
            c.status = status;
            c.reason = update.reason;
            c.message = update.message;
            c.observed_generation = generation;
            changed
        }
        None => {
            conditions.push(Condition {
                type_: update.type_.to_owned(),
                status,
                reason: update.reason,
                message: update.message,
                observed_generation: generation,
                last_transition_time: now.clone(),
            });
            conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_message_is_cut_once_and_then_compares_equal() {
        let log = "ERROR[1234] config.c: Error in file pjsip.conf: ü\n".repeat(6000);
        let update = ConditionUpdate::failed(AppliedReason::ApplyFailed, log.clone());
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let mut conditions = Vec::new();
        assert!(set_condition(&mut conditions, update.clone(), Some(1), &now));
        let message = &conditions[0].message;
        assert!(message.len() <= MAX_MESSAGE_BYTES, "{} bytes", message.len());
        assert!(message.starts_with("ERROR[1234]") && message.contains("bytes cut"), "{message}");
        assert!(
            !set_condition(&mut conditions, update, Some(1), &now),
            "the same long message again: no change"
        );
        assert_eq!(bounded_message("short".into()), "short");
    }
    use crate::topology::{Kind, ObjectRef, Reason};

    fn time(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut conditions = Vec::new();
        let t0 = time("2026-11-23T10:00:00Z");
        let t1 = time("2026-11-23T11:00:00Z");
        assert!(set_condition(&mut conditions, ConditionUpdate::ok(ReadyReason::Ready, "ok"), Some(1), &t0));
        assert!(!set_condition(&mut conditions, ConditionUpdate::ok(ReadyReason::Ready, "ok"), Some(1), &t1));
        assert_eq!(conditions[0].last_transition_time, t0);
        assert!(set_condition(&mut conditions, ConditionUpdate::ok(ReadyReason::Ready, "ok"), Some(2), &t1));
        assert_eq!(conditions[0].last_transition_time, t0, "a new generation alone is no transition");
        assert_eq!(conditions[0].observed_generation, Some(2));
        assert!(set_condition(
            &mut conditions,
            ConditionUpdate::failed(ReadyReason::NotReady, "no"),
            Some(2),
            &t1
        ));
        assert_eq!((conditions[0].status.as_str(), &conditions[0].last_transition_time), ("False", &t1));
        assert_eq!(conditions[0].reason, "NotReady");
    }

    #[test]
    fn valid_condition_lists_every_error_with_field_and_fix() {
        let e = |field: &str| ValidationError {
            object: ObjectRef::new(Kind::Phone, "default", "p"),
            field: field.into(),
            reason: Reason::OutsideNumbering,
            problem: "4999 is outside node office-a's numbering plan (3XXX)".into(),
            fix: "pick an extension of that plan".into(),
        };
        let (a, b) = (e("spec.extension"), e("spec.node"));
        let c = ConditionUpdate::valid(&[&a, &b]);
        assert!(!c.status);
        assert_eq!(c.reason, "OutsideNumbering");
        assert_eq!(c.message.lines().count(), 2);
        assert!(c.message.starts_with("spec.extension: 4999 is outside"));
        assert!(ConditionUpdate::valid(&[]).status);
    }
}
