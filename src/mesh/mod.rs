//! The cross-node device-state mesh: pure state tables here; the gRPC glue beside them.
//!
//! An owner exports the states of its own extensions that other nodes watch; a watcher mirrors
//! them onto local custom device states (`Custom:<owner>-<ext>`) that its hints use.

pub mod table;

pub use table::{ExportTable, MirrorTable, Outcome, StateUpdate, Version};
