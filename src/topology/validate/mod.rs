//! Validation of each kind: every resource is checked, the valid ones are kept, and every
//! problem becomes a [`ValidationError`] naming the resource, the field and the fix. A leaf of
//! the resolver: the pipeline that calls these steps in order lives in [`super::resolve`].
//!
//! * [`nodes`] — AsteriskNodes: fields, numbering plans that must not overlap;
//! * [`trunks`] — Trunks: ends, auth and credentials;
//! * [`phones`] — Phones: home node, extension, credentials; [`devices`] their desk phones;
//! * [`blf`] — BlfSubscriptions: watcher and targets, the mirrors and keys they make;
//!   and nodes no trunk path reaches.

mod blf;
mod devices;
mod fields;
mod nodes;
mod phones;
mod trunks;

use std::collections::BTreeSet;

pub(super) use blf::{blf_subscriptions, reachability};
pub(super) use nodes::nodes;
pub(super) use phones::phones;
pub(super) use trunks::trunks;

use super::{Kind, ObjectRef, Reason, ValidationError, name_of};
use crate::crd::rules::{DNS_LABEL_FIX, is_dns_label};

/// The errors of one resolve run.
pub(super) struct Report {
    namespace: String,
    errors: Vec<ValidationError>,
}

impl Report {
    /// No errors yet, for the fleet of `namespace`.
    pub fn new(namespace: &str) -> Self {
        Self { namespace: namespace.to_owned(), errors: Vec::new() }
    }

    /// Reports about one resource.
    pub fn on(&mut self, kind: Kind, name: &str) -> Reporter<'_> {
        let object = ObjectRef::new(kind, &self.namespace, name);
        Reporter { report: self, object, clean: true }
    }

    /// Every error, sorted, without duplicates.
    pub fn into_errors(self) -> Vec<ValidationError> {
        let mut list = self.errors;
        list.sort();
        list.dedup();
        list
    }
}

/// Reports the errors of one resource and remembers whether it had any.
pub(super) struct Reporter<'a> {
    report: &'a mut Report,
    object: ObjectRef,
    clean: bool,
}

impl Reporter<'_> {
    /// One error: `field` is wrong for `reason`; what is wrong and what to do.
    pub fn error(&mut self, field: impl Into<String>, reason: Reason, problem: impl Into<String>, fix: &str) {
        self.clean = false;
        self.report.errors.push(ValidationError {
            object: self.object.clone(),
            field: field.into(),
            reason,
            problem: problem.into(),
            fix: fix.to_owned(),
        });
    }

    /// An `InvalidField` error on `value` of `field` unless `ok`; returns `ok`.
    pub fn check(&mut self, ok: bool, field: impl Into<String>, value: &str, fix: &str) -> bool {
        if !ok {
            self.error(field, Reason::InvalidField, format!("{value:?} is not allowed here"), fix);
        }
        ok
    }

    /// No error was reported through this reporter.
    pub fn clean(&self) -> bool {
        self.clean
    }

    /// The resource's name.
    pub fn name(&self) -> &str {
        &self.object.name
    }

    /// The fleet's namespace.
    pub fn namespace(&self) -> &str {
        &self.report.namespace
    }
}

/// Sort key that keeps the oldest resource when two conflict: creation time, then name.
fn age_key(meta: &kube::api::ObjectMeta) -> (bool, Option<String>, String) {
    let created = meta.creation_timestamp.as_ref().map(|t| t.0.to_string());
    (created.is_none(), created, name_of(meta))
}

/// The resources of one kind worth resolving, oldest first (so the oldest keeps what two
/// claim): names that are DNS-1123 labels and defined once, each with its resource.
fn candidates<'a, K: kube::Resource>(kind: Kind, list: &'a [K], report: &mut Report) -> Vec<(String, &'a K)> {
    let mut sorted: Vec<&K> = list.iter().collect();
    sorted.sort_by_cached_key(|r| age_key(r.meta()));
    let mut seen = BTreeSet::new();
    let mut dups = BTreeSet::new();
    for name in sorted.iter().map(|r| name_of(r.meta())) {
        if !seen.insert(name.clone()) && dups.insert(name.clone()) {
            report.on(kind, &name).error(
                "metadata.name",
                Reason::InvalidField,
                "is defined more than once",
                "give each resource of a kind its own name, or delete the copy",
            );
        }
    }
    sorted
        .into_iter()
        .map(|r| (name_of(r.meta()), r))
        .filter(|(name, _)| !dups.contains(name))
        .filter(|(name, _)| {
            let ok = is_dns_label(name);
            if !ok {
                report.on(kind, name).error(
                    "metadata.name",
                    Reason::InvalidField,
                    format!("{name:?} is not a DNS-1123 label"),
                    DNS_LABEL_FIX,
                );
            }
            ok
        })
        .collect()
}
