//! Which Kubernetes Events a reconcile should emit, computed from the statuses before and after
//! (pure), and which invalid resources to log. Both mark transitions only, so a steady fleet
//! emits no Event and logs no line, however many passes it goes through.

use std::collections::{BTreeMap, BTreeSet};

use super::conditions::types;
use super::status::ResourceStatus;
use crate::topology::{Kind, ObjectRef};

/// One Event to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// The resource it is about.
    pub object: ObjectRef,
    /// Warning (true) or Normal.
    pub warning: bool,
    /// CamelCase reason, e.g. `Applied`, `ApplyFailed`, `OutsideNumbering`.
    pub reason: String,
    /// What happened, for people.
    pub note: String,
    /// What the controller was doing: `Validate` or `Apply`.
    pub action: &'static str,
}

/// The invalid-resource errors logged so far: each is logged once when it appears, and once
/// when it is gone, instead of at every pass.
#[derive(Debug, Default)]
pub struct LoggedErrors(BTreeSet<String>);

impl LoggedErrors {
    /// Logs the errors in `errors` not logged at the last call (WARN), and those fixed since
    /// (INFO).
    pub fn log(&mut self, errors: &[String]) {
        let (new, gone) = self.update(errors);
        for e in new {
            tracing::warn!(error = %e, "invalid resource");
        }
        for e in gone {
            tracing::info!(was = %e, "fixed: no longer invalid");
        }
    }

    /// Remembers `errors`; returns (the new ones, the ones gone).
    fn update(&mut self, errors: &[String]) -> (Vec<String>, Vec<String>) {
        let current: BTreeSet<String> = errors.iter().cloned().collect();
        let new = current.difference(&self.0).cloned().collect();
        let gone = self.0.difference(&current).cloned().collect();
        self.0 = current;
        (new, gone)
    }
}

fn condition<'a>(status: Option<&'a ResourceStatus>, type_: &str) -> Option<(&'a str, &'a str, &'a str)> {
    status?
        .conditions()
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
}

fn applied_hash(status: Option<&ResourceStatus>) -> Option<&str> {
    match status {
        Some(ResourceStatus::Node(s)) => s.applied_bundle_hash.as_deref(),
        _ => None,
    }
}

/// Events for what changed between `before` and `after`: a resource that became invalid (or
/// invalid for another reason), a node that applied a new bundle, a node whose apply failed.
pub fn notices(
    before: &BTreeMap<ObjectRef, ResourceStatus>,
    after: &BTreeMap<ObjectRef, ResourceStatus>,
) -> Vec<Notice> {
    let mut out = Vec::new();
    for (object, status) in after {
        let old = before.get(object);
        let valid = condition(Some(status), types::VALID);
        if let Some(("False", reason, message)) = valid
            && condition(old, types::VALID) != valid
        {
            out.push(Notice {
                object: object.clone(),
                warning: true,
                reason: reason.to_owned(),
                note: message.to_owned(),
                action: "Validate",
            });
        }
        if object.kind != Kind::AsteriskNode {
            continue;
        }
        let applied = condition(Some(status), types::CONFIG_APPLIED);
        match applied {
            Some(("True", _, _))
                if applied_hash(Some(status)) != applied_hash(old)
                    || condition(old, types::CONFIG_APPLIED) != applied =>
            {
                let hash = applied_hash(Some(status)).unwrap_or_default();
                out.push(Notice {
                    object: object.clone(),
                    warning: false,
                    reason: "Applied".into(),
                    note: format!("bundle {} applied", &hash[..12.min(hash.len())]),
                    action: "Apply",
                });
            }
            Some(("False", reason, message))
                if reason != "Invalid" && condition(old, types::CONFIG_APPLIED) != applied =>
            {
                out.push(Notice {
                    object: object.clone(),
                    warning: true,
                    reason: reason.to_owned(),
                    note: message.to_owned(),
                    action: "Apply",
                });
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_resource_is_logged_once_per_change() {
        let mut logged = LoggedErrors::default();
        let (a, b) = ("Phone desk: spec.extension …".to_owned(), "Trunk x: spec.ends …".to_owned());
        assert_eq!(logged.update(std::slice::from_ref(&a)), (vec![a.clone()], vec![]));
        assert_eq!(logged.update(std::slice::from_ref(&a)), (vec![], vec![]), "every later pass: nothing");
        assert_eq!(logged.update(&[a.clone(), b.clone()]), (vec![b.clone()], vec![]));
        assert_eq!(logged.update(&[b]), (vec![], vec![a]), "fixed");
    }
    use crate::controller::conditions::{AppliedReason, ConditionUpdate, ValidReason, set_condition};
    use crate::crd::{AsteriskNodeStatus, PhoneStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn node(hash: &str, applied: ConditionUpdate) -> ResourceStatus {
        let mut s = AsteriskNodeStatus { applied_bundle_hash: Some(hash.into()), ..Default::default() };
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        set_condition(&mut s.conditions, ConditionUpdate::ok(ValidReason::Valid, "ok"), Some(1), &now);
        set_condition(&mut s.conditions, applied, Some(1), &now);
        ResourceStatus::Node(s)
    }

    #[test]
    fn applies_failures_and_invalid_resources_are_announced_once() {
        let a = ObjectRef::new(Kind::AsteriskNode, "default", "office-a");
        let p = ObjectRef::new(Kind::Phone, "default", "stray");
        let ok = || ConditionUpdate::ok(AppliedReason::Applied, "in force");
        let mut invalid = PhoneStatus::default();
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        set_condition(
            &mut invalid.conditions,
            ConditionUpdate::failed(crate::topology::Reason::OutsideNumbering, "spec.extension: …"),
            Some(1),
            &now,
        );

        let empty = BTreeMap::new();
        let first =
            BTreeMap::from([(a.clone(), node("aaaa", ok())), (p.clone(), ResourceStatus::Phone(invalid))]);
        let n = notices(&empty, &first);
        assert_eq!(n.len(), 2);
        assert!(n.iter().any(|n| n.object == a && n.reason == "Applied" && !n.warning));
        assert!(n.iter().any(|n| n.object == p && n.reason == "OutsideNumbering" && n.warning));
        assert!(notices(&first, &first).is_empty(), "a steady fleet emits nothing");

        let mut second = first.clone();
        second.insert(a.clone(), node("bbbb", ok()));
        assert_eq!(notices(&first, &second)[0].note, "bundle bbbb applied");

        let mut third = second.clone();
        third.insert(
            a.clone(),
            node("bbbb", ConditionUpdate::failed(AppliedReason::ApplyFailed, "pjsip_operator.conf: bad")),
        );
        let n = notices(&second, &third);
        assert_eq!(
            (n[0].warning, n[0].reason.as_str(), n[0].note.as_str()),
            (true, "ApplyFailed", "pjsip_operator.conf: bad")
        );
    }
}
