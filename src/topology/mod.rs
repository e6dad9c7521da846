//! Resources -> validated Topology (pure).
