//! The names the controller writes under on the API server.

/// The field manager of everything the controller writes (statuses, workloads, Secrets), and
/// the reporting controller of its Events.
pub const FIELD_MANAGER: &str = "asterisk-operator";

/// Finalizer on Phones, Trunks and BlfSubscriptions: their deletion waits until the nodes they
/// lived on applied a bundle without them (or those nodes are gone).
pub const FINALIZER: &str = "asterisk.operator.dev/cleanup";
