//! The controller: resources in, bundles pushed, status written. This module holds its pure
//! parts so far: status conditions computed from values.

pub mod conditions;
