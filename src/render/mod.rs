//! Topology -> per-node Bundle (pure).
