//! Decide (pure): what happens to a resource's cleanup finalizer. A deleted resource is released
//! only once nothing of it is left on any node — its credentials included — or once its author
//! said to give up (the `skip-cleanup` annotation), or the cleanup timed out; the last two are
//! announced as warnings, since the operator's files may then remain on a node.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

/// Where a Phone's, Trunk's or BLF subscription's configuration lives: one node, as the cleanup
/// sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum NodePlace {
    /// Valid and rendered; whether its agent applied a bundle without the resource.
    Rendered { node: String, applied_without: bool },
    /// The node exists but is invalid: no bundle without the resource can be rendered for it
    /// until it is fixed (or deleted).
    Invalid { node: String },
    /// Being deleted (its own cleanup empties it) or gone.
    Leaving,
}

/// Why the resource's configuration may still be on its nodes; empty when it is gone.
pub(crate) fn pending(places: &[NodePlace]) -> Vec<String> {
    places
        .iter()
        .filter_map(|p| match p {
            NodePlace::Rendered { applied_without: true, .. } | NodePlace::Leaving => None,
            NodePlace::Rendered { node, .. } => {
                Some(format!("node {node} has not applied a bundle without it yet"))
            }
            NodePlace::Invalid { node } => Some(format!(
                "node {node} is invalid, so no bundle without it can be pushed: fix the node (see its Valid condition) or delete it"
            )),
        })
        .collect()
}

/// A deleted resource, as far as its cleanup goes.
#[derive(Clone, Debug)]
pub(crate) struct Deletion {
    /// Its `deletionTimestamp`.
    pub since: Timestamp,
    /// It carries the skip-cleanup annotation.
    pub skip_cleanup: bool,
}

/// What to do with the finalizer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FinalizerStep {
    /// A live resource without it: add it.
    Add,
    /// Nothing to do (live with it, or deleted without it).
    None,
    /// Deleted, and its configuration may still be on a node: keep it; why.
    Keep(String),
    /// Deleted and cleaned up everywhere: release it.
    Release,
    /// Deleted, not cleaned up, released anyway: the warning to give.
    GiveUp(String),
}

/// Decides from the resource's deletion (`None`: live), whether it has the finalizer, what is
/// still `pending`, and the cleanup timeout (`None`: wait as long as it takes).
pub(crate) fn decide(
    deletion: Option<&Deletion>,
    has: bool,
    pending: &[String],
    timeout: Option<Duration>,
    now: Timestamp,
) -> FinalizerStep {
    let Some(deletion) = deletion else {
        return if has { FinalizerStep::None } else { FinalizerStep::Add };
    };
    if !has {
        return FinalizerStep::None;
    }
    if pending.is_empty() {
        return FinalizerStep::Release;
    }
    let what = pending.join("; ");
    if deletion.skip_cleanup {
        return FinalizerStep::GiveUp(format!(
            "released without cleanup (skip-cleanup annotation): {what}; the operator's files for it may remain on that node"
        ));
    }
    let waited = now.duration_since(deletion.since).unsigned_abs();
    match timeout {
        Some(limit) if waited >= limit => FinalizerStep::GiveUp(format!(
            "released after waiting {} s for its cleanup (--cleanup-timeout): {what}; the operator's files for it may remain on that node",
            waited.as_secs()
        )),
        _ => FinalizerStep::Keep(what),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_names_each_node_still_holding_the_resource() {
        let rendered =
            |node: &str, applied_without| NodePlace::Rendered { node: node.into(), applied_without };
        assert!(pending(&[rendered("a", true), NodePlace::Leaving]).is_empty());
        let p = pending(&[rendered("a", false), NodePlace::Invalid { node: "b".into() }]);
        assert_eq!(p.len(), 2);
        assert!(p[0].contains("node a has not applied"), "{p:?}");
        assert!(p[1].contains("node b is invalid") && p[1].contains("fix the node"), "{p:?}");
    }

    #[test]
    fn a_deleted_resource_is_released_only_when_clean_or_given_up() {
        let t = |s: i64| Timestamp::from_second(s).unwrap();
        let deleted = |skip| Deletion { since: t(1_000), skip_cleanup: skip };
        let waiting = vec!["node a has not applied a bundle without it yet".to_owned()];
        let limit = Some(Duration::from_secs(600));
        type Case<'a> = (&'a str, Option<Deletion>, bool, &'a [String], Option<Duration>, i64, &'a str);
        let cases: [Case; 9] = [
            ("live without it", None, false, &[], limit, 1_000, "Add"),
            ("live with it", None, true, &waiting, limit, 1_000, "None"),
            (
                "deleted, another controller's only",
                Some(deleted(false)),
                false,
                &waiting,
                limit,
                1_000,
                "None",
            ),
            ("deleted and clean", Some(deleted(false)), true, &[], limit, 1_000, "Release"),
            ("deleted, still on a node", Some(deleted(false)), true, &waiting, limit, 1_300, "Keep"),
            ("deleted, timed out", Some(deleted(false)), true, &waiting, limit, 1_600, "GiveUp"),
            ("deleted, no timeout", Some(deleted(false)), true, &waiting, None, 99_999, "Keep"),
            ("deleted, skip-cleanup", Some(deleted(true)), true, &waiting, None, 1_000, "GiveUp"),
            ("skip-cleanup but clean", Some(deleted(true)), true, &[], None, 1_000, "Release"),
        ];
        for (name, deletion, has, pending, timeout, now, want) in cases {
            let step = decide(deletion.as_ref(), has, pending, timeout, t(now));
            let got = format!("{step:?}");
            assert!(got.starts_with(want), "{name}: {got}");
            if let FinalizerStep::GiveUp(w) | FinalizerStep::Keep(w) = &step {
                assert!(w.contains("node a has not applied"), "{name}: says what is left: {w}");
            }
        }
    }
}
