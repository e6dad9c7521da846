//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod agent;
pub mod apiserver;
pub mod asterisk;
pub mod baresip;
pub mod fake_ami;
pub mod fake_api;
pub mod fleet;
pub mod mesh;
pub mod pod;
pub mod provision;
