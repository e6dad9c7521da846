//! asterisk-operator: a Kubernetes-style reconciling controller for fleets of Asterisk PBX servers.
//!
//! Pure cores (`topology`, `render`, `ami::codec`, the mesh tables, the controller's statuses and
//! plans) take values and return values; I/O lives in the thin shells around them (`ami`
//! sessions, the agent, the controller's API calls, the CLI in `main.rs`). The modules stand in
//! layers without import cycles (docs/design.md, "Layout").

pub mod agent;
pub mod ami;
pub mod bootstrap;
pub mod controller;
pub mod crd;
pub mod daemon;
pub mod manifest;
pub mod mesh;
pub mod offline;
pub mod provision;
pub mod render;
pub mod secret;
pub mod topology;
