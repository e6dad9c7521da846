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
    /// Every target of a BLF subscription is mirrored where it is watched.
    pub const MIRRORED: &str = "Mirrored";
    /// A managed node's StatefulSet, Service and Secret exist and its pod is ready.
    pub const MANAGED: &str = "Managed";
    /// Every other node's numbers are routable from this node.
    pub const ROUTED: &str = "Routed";
}

/// A condition about to be written: everything but the transition time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionUpdate {
    /// Condition type, e.g. [`types::READY`].
    pub type_: &'static str,
    /// `True`, `False` or `Unknown`.
    pub status: bool,
    /// CamelCase reason.
    pub reason: String,
    /// Message for people.
    pub message: String,
}

impl ConditionUpdate {
    /// A `True` condition.
    pub fn ok(type_: &'static str, reason: &str, message: impl Into<String>) -> Self {
        Self { type_, status: true, reason: reason.to_owned(), message: message.into() }
    }

    /// A `False` condition.
    pub fn failed(type_: &'static str, reason: &str, message: impl Into<String>) -> Self {
        Self { type_, status: false, reason: reason.to_owned(), message: message.into() }
    }

    /// `Valid` from a resource's validation errors: True when there are none, else False with
    /// the first error's reason and every message (field, problem, fix).
    pub fn valid(errors: &[&ValidationError]) -> Self {
        match errors.first() {
            None => Self::ok(types::VALID, "Valid", "the resource passed validation"),
            Some(first) => Self::failed(
                types::VALID,
                first.reason.as_str(),
                errors.iter().map(|e| e.condition_message()).collect::<Vec<_>>().join("\n"),
            ),
        }
    }
}

/// Sets `update` in `conditions` for `generation` at `now`: replaces the condition of the same
/// type, keeping its `lastTransitionTime` when the status did not change. Returns whether
/// anything changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    update: ConditionUpdate,
    generation: Option<i64>,
    now: &Time,
) -> bool {
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
    use crate::topology::{Kind, ObjectRef, Reason};

    fn time(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut conditions = Vec::new();
        let t0 = time("2026-11-23T10:00:00Z");
        let t1 = time("2026-11-23T11:00:00Z");
        assert!(set_condition(
            &mut conditions,
            ConditionUpdate::ok(types::READY, "Applied", "ok"),
            Some(1),
            &t0
        ));
        assert!(!set_condition(
            &mut conditions,
            ConditionUpdate::ok(types::READY, "Applied", "ok"),
            Some(1),
            &t1
        ));
        assert_eq!(conditions[0].last_transition_time, t0);
        assert!(set_condition(
            &mut conditions,
            ConditionUpdate::ok(types::READY, "Applied", "ok"),
            Some(2),
            &t1
        ));
        assert_eq!(conditions[0].last_transition_time, t0, "a new generation alone is no transition");
        assert_eq!(conditions[0].observed_generation, Some(2));
        assert!(set_condition(
            &mut conditions,
            ConditionUpdate::failed(types::READY, "ApplyFailed", "no"),
            Some(2),
            &t1
        ));
        assert_eq!((conditions[0].status.as_str(), &conditions[0].last_transition_time), ("False", &t1));
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
