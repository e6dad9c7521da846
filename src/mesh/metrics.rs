//! Prometheus metrics of the mesh (prometheus-client). [`MeshMetrics::register`] adds them to
//! the agent's registry; the names follow `asterisk_agent_mesh_*`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// `{peer}`: another node of the mesh (a few per fleet: low cardinality).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    /// Node name.
    pub peer: String,
}

fn latency_buckets() -> Histogram {
    Histogram::new([
        0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ])
}

/// Every mesh metric. Clones share the values.
#[derive(Clone)]
pub struct MeshMetrics {
    /// States sent to watchers (snapshot entries and changes).
    pub updates_sent: Counter,
    /// States received from owners.
    pub updates_received: Counter,
    /// Mirrored states written into Asterisk (Setvar answered Success).
    pub updates_applied: Counter,
    /// Received states older than what the watcher had (ignored).
    pub updates_stale: Counter,
    /// Received states that replaced a write still waiting (only the latest is written).
    pub updates_coalesced: Counter,
    /// Setvar writes that failed (retried).
    pub write_failures: Counter,
    /// Owner's AMI event → watcher's Setvar answered, for streamed changes.
    pub propagation_latency: Histogram,
    /// Owners this node is subscribed to and hearing from.
    pub peers_up: Gauge,
    /// Per owner: 1 while subscribed and heard from within the timeout.
    pub peer_up: Family<PeerLabel, Gauge>,
    /// Per owner: seconds since anything (heartbeat, change, snapshot) arrived.
    pub heartbeat_age: Family<PeerLabel, Gauge<f64, AtomicU64>>,
    /// Watchers subscribed to this node now.
    pub subscribers: Gauge,
    /// Times an owner went unreachable past the timeout (its mirrors set UNAVAILABLE).
    pub owners_lost: Counter,
    /// Snapshots sent because a subscriber fell too far behind the change stream.
    pub lag_snapshots: Counter,
}

impl Default for MeshMetrics {
    fn default() -> Self {
        Self {
            updates_sent: Counter::default(),
            updates_received: Counter::default(),
            updates_applied: Counter::default(),
            updates_stale: Counter::default(),
            updates_coalesced: Counter::default(),
            write_failures: Counter::default(),
            propagation_latency: latency_buckets(),
            peers_up: Gauge::default(),
            peer_up: Family::default(),
            heartbeat_age: Family::default(),
            subscribers: Gauge::default(),
            owners_lost: Counter::default(),
            lag_snapshots: Counter::default(),
        }
    }
}

impl MeshMetrics {
    /// Registers every metric in `registry` (the agent's), under `asterisk_agent_mesh_*`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("asterisk_agent_mesh");
        r.register("updates_sent", "Device states sent to watching nodes", self.updates_sent.clone());
        r.register(
            "updates_received",
            "Device states received from owning nodes",
            self.updates_received.clone(),
        );
        r.register(
            "updates_applied",
            "Mirrored device states written into Asterisk (Setvar)",
            self.updates_applied.clone(),
        );
        r.register(
            "updates_stale",
            "Received states older than the mirror's (ignored)",
            self.updates_stale.clone(),
        );
        r.register(
            "updates_coalesced",
            "Received states that replaced a write still waiting",
            self.updates_coalesced.clone(),
        );
        r.register(
            "write_failures",
            "Setvar writes of mirrored states that failed",
            self.write_failures.clone(),
        );
        r.register(
            "propagation_latency_seconds",
            "Owner's AMI event to the watcher's Setvar answered",
            self.propagation_latency.clone(),
        );
        r.register("peers_up", "Owning nodes subscribed to and heard from", self.peers_up.clone());
        r.register(
            "peer_up",
            "Owning node subscribed to and heard from (1) or not (0)",
            self.peer_up.clone(),
        );
        r.register(
            "heartbeat_age_seconds",
            "Seconds since anything arrived from the owning node",
            self.heartbeat_age.clone(),
        );
        r.register("subscribers", "Watching nodes subscribed to this node", self.subscribers.clone());
        r.register(
            "owners_lost",
            "Owning nodes unreachable past the timeout (mirrors set UNAVAILABLE)",
            self.owners_lost.clone(),
        );
        r.register(
            "lag_snapshots",
            "Snapshots sent to a watcher that fell behind the change stream",
            self.lag_snapshots.clone(),
        );
    }

    /// The metrics alone in text format (tests, or a mesh running outside the agent).
    pub fn encode(&self) -> String {
        let mut registry = Registry::default();
        self.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("writing to a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = MeshMetrics::default();
        m.updates_sent.inc();
        m.propagation_latency.observe(0.0004);
        m.peer_up.get_or_create(&PeerLabel { peer: "office-b".into() }).set(1);
        m.heartbeat_age.get_or_create(&PeerLabel { peer: "office-b".into() }).set(0.25);
        let text = m.encode();
        for needle in [
            "asterisk_agent_mesh_updates_sent_total 1\n",
            "asterisk_agent_mesh_propagation_latency_seconds_count 1\n",
            "asterisk_agent_mesh_peer_up{peer=\"office-b\"} 1\n",
            "asterisk_agent_mesh_heartbeat_age_seconds{peer=\"office-b\"} 0.25\n",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }
}
