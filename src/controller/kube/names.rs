//! The names the controller writes under on the API server.

/// The field manager of everything the controller writes (statuses, workloads, Secrets), and
/// the reporting controller of its Events.
pub const FIELD_MANAGER: &str = "asterisk-operator";

/// Finalizer on every resource: a deleted one goes once nothing of it is left on any node (see
/// `finalizers`).
pub const FINALIZER: &str = "asterisk.operator.dev/cleanup";

/// Annotation (`"true"`) on a deleted resource: release it without waiting for its cleanup —
/// the escape hatch for a node whose agent will never answer again. The operator's files for it
/// may then remain on that node.
pub const SKIP_CLEANUP_ANNOTATION: &str = "asterisk.operator.dev/skip-cleanup";
