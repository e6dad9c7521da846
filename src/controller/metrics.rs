//! The controller's Prometheus metrics and probes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::fleet::ReconcileReport;
use super::status::ResourceStatus;
use crate::agent::metrics::ResultLabel;
use crate::topology::ObjectRef;

/// `{kind, result}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindResult {
    /// Resource kind.
    pub kind: String,
    /// `ready` or `not_ready`.
    pub result: String,
}

/// `{namespace, node}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    pub namespace: String,
    pub node: String,
}

/// A bundle hash as a number Prometheus can compare: its first 52 bits (13 hex digits; an f64
/// holds them exactly), 0 for no hash. A hash as a label value would make a new series on every
/// apply; a number keeps one series per node and still tells "same" from "different".
pub fn bundle_fingerprint(hash: &str) -> f64 {
    hash.get(..13).and_then(|h| u64::from_str_radix(h, 16).ok()).map_or(0.0, |v| v as f64)
}

/// The controller's metrics.
pub struct ControllerMetrics {
    registry: Registry,
    /// Reconcile passes, by outcome (`ok`: everything valid and applied; `degraded`).
    pub reconciles: Family<ResultLabel, Counter>,
    /// Duration of a reconcile pass.
    pub reconcile_duration: Histogram,
    /// Bundles pushed to agents, by result (`ok`, `failed`).
    pub bundles_pushed: Family<ResultLabel, Counter>,
    /// Resources by kind and readiness, after the last pass.
    pub resources: Family<KindResult, Gauge>,
    /// AsteriskNodes whose Ready condition is True.
    pub nodes_ready: Gauge,
    /// Each AsteriskNode's Ready condition (1 True, 0 otherwise).
    pub node_ready: Family<NodeLabel, Gauge>,
    /// This replica holds the leader Lease (1) or stands by (0).
    pub leader: Gauge,
    /// Fingerprint of the bundle each node should run ([`bundle_fingerprint`]).
    pub desired_bundle: Family<NodeLabel, Gauge<f64, AtomicU64>>,
    /// Fingerprint of the bundle each node's agent last said it runs (0: unknown).
    pub applied_bundle: Family<NodeLabel, Gauge<f64, AtomicU64>>,
    /// Unix time of the last finished reconcile pass.
    last_pass: Arc<AtomicI64>,
    /// Unix time the control loop last went round, leading or standing by (for liveness).
    last_loop: Arc<AtomicI64>,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let m = ControllerMetrics {
            reconciles: Family::default(),
            reconcile_duration: Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0]),
            bundles_pushed: Family::default(),
            resources: Family::default(),
            nodes_ready: Gauge::default(),
            node_ready: Family::default(),
            leader: Gauge::default(),
            desired_bundle: Family::default(),
            applied_bundle: Family::default(),
            last_pass: Arc::default(),
            last_loop: Arc::default(),
            registry: Registry::default(),
        };
        registry.register(
            "asterisk_operator_reconciles",
            "Reconcile passes by outcome",
            m.reconciles.clone(),
        );
        registry.register(
            "asterisk_operator_reconcile_duration_seconds",
            "Duration of a reconcile pass",
            m.reconcile_duration.clone(),
        );
        registry.register(
            "asterisk_operator_bundles_pushed",
            "Bundles pushed to agents by result",
            m.bundles_pushed.clone(),
        );
        registry.register(
            "asterisk_operator_resources",
            "Resources by kind and readiness",
            m.resources.clone(),
        );
        registry.register(
            "asterisk_operator_nodes_ready",
            "AsteriskNodes that are Ready",
            m.nodes_ready.clone(),
        );
        registry.register(
            "asterisk_operator_node_ready",
            "The AsteriskNode's Ready condition is True (1) or not (0)",
            m.node_ready.clone(),
        );
        registry.register(
            "asterisk_operator_leader",
            "This replica holds the leader Lease and reconciles (1) or stands by (0)",
            m.leader.clone(),
        );
        registry.register(
            "asterisk_operator_node_desired_bundle_fingerprint",
            "First 52 bits of the hash of the bundle the node should run",
            m.desired_bundle.clone(),
        );
        registry.register(
            "asterisk_operator_node_applied_bundle_fingerprint",
            "First 52 bits of the hash of the bundle the node's agent last reported (0: unknown)",
            m.applied_bundle.clone(),
        );
        // Both outcomes exist from the first scrape, so rate() and increase() see the first pass.
        for result in ["ok", "degraded"] {
            let _ = m.reconciles.get_or_create(&ResultLabel { result: result.into() });
        }
        ControllerMetrics { registry, ..m }
    }
}

impl ControllerMetrics {
    /// Records one reconcile pass.
    pub fn observe(
        &self,
        report: &ReconcileReport,
        statuses: &BTreeMap<ObjectRef, ResourceStatus>,
        took: Duration,
    ) {
        let clean = report.errors.is_empty() && report.pushed.values().all(|ok| *ok);
        let result = if clean { "ok" } else { "degraded" };
        self.reconciles.get_or_create(&ResultLabel { result: result.into() }).inc();
        self.reconcile_duration.observe(took.as_secs_f64());
        for ok in report.pushed.values() {
            let result = if *ok { "ok" } else { "failed" };
            self.bundles_pushed.get_or_create(&ResultLabel { result: result.into() }).inc();
        }
        self.resources.clear();
        self.node_ready.clear();
        let mut nodes_ready = 0;
        for (object, status) in statuses {
            let ready = status.conditions().iter().any(|c| c.type_ == "Ready" && c.status == "True");
            let label = KindResult {
                kind: object.kind.as_str().into(),
                result: if ready { "ready" } else { "not_ready" }.into(),
            };
            self.resources.get_or_create(&label).inc();
            if object.kind == crate::topology::Kind::AsteriskNode {
                let label = NodeLabel { namespace: object.namespace.clone(), node: object.name.clone() };
                self.node_ready.get_or_create(&label).set(ready.into());
                nodes_ready += i64::from(ready);
            }
        }
        self.nodes_ready.set(nodes_ready);
        self.desired_bundle.clear();
        self.applied_bundle.clear();
        for ((namespace, node), hashes) in &report.bundles {
            let label = NodeLabel { namespace: namespace.clone(), node: node.clone() };
            self.desired_bundle.get_or_create(&label).set(bundle_fingerprint(&hashes.desired));
            self.applied_bundle.get_or_create(&label).set(bundle_fingerprint(&hashes.applied));
        }
        self.last_pass.store(unix_now(), Ordering::Relaxed);
        self.went_round(true);
    }

    /// The control loop went round: as leader (after [`Self::observe`]) or standing by. A
    /// standby replica is alive and ready: it takes over when the leader's Lease lapses.
    pub fn went_round(&self, leading: bool) {
        self.leader.set(leading.into());
        if !leading {
            // Per-node series are the leader's to report; a standby's would go stale.
            self.desired_bundle.clear();
            self.applied_bundle.clear();
            self.node_ready.clear();
        }
        self.last_loop.store(unix_now(), Ordering::Relaxed);
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }

    /// Seconds since the last finished pass, `None` before the first.
    pub fn since_last_pass(&self) -> Option<i64> {
        let last = self.last_pass.load(Ordering::Relaxed);
        (last > 0).then(|| unix_now() - last)
    }

    /// Seconds since the control loop last went round, `None` before the first time.
    pub fn since_last_loop(&self) -> Option<i64> {
        let last = self.last_loop.load(Ordering::Relaxed);
        (last > 0).then(|| unix_now() - last)
    }
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Serves `/metrics`, `/healthz` (the control loop went round within `stale_after`) and
/// `/readyz` (it went round at least once: a first pass as leader, or a Lease check as standby)
/// on `addr` until the returned task is aborted.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<ControllerMetrics>,
    stale_after: Duration,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics_page))
        .route("/healthz", axum::routing::get(healthz))
        .route("/readyz", axum::routing::get(readyz))
        .with_state((metrics, stale_after));
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "controller HTTP server failed");
        }
    });
    Ok((local, task))
}

type Shared = (Arc<ControllerMetrics>, Duration);

async fn metrics_page(State((m, _)): State<Shared>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], m.encode())
}

async fn healthz(State((m, stale)): State<Shared>) -> impl IntoResponse {
    match m.since_last_loop() {
        Some(s) if s > stale.as_secs() as i64 => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("the control loop last went round {s} s ago\n"))
        }
        _ => (StatusCode::OK, "ok\n".to_owned()),
    }
}

async fn readyz(State((m, _)): State<Shared>) -> impl IntoResponse {
    match m.since_last_loop() {
        Some(_) => (StatusCode::OK, "ready\n"),
        None => (StatusCode::SERVICE_UNAVAILABLE, "the control loop has not gone round yet\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_is_counted_with_its_pushes_and_ready_resources() {
        let m = ControllerMetrics::default();
        assert_eq!(m.since_last_pass(), None);
        let report = ReconcileReport {
            pushed: BTreeMap::from([("default/a".into(), true), ("default/b".into(), false)]),
            ..ReconcileReport::default()
        };
        m.observe(&report, &BTreeMap::new(), Duration::from_millis(3));
        let text = m.encode();
        assert!(text.contains("asterisk_operator_reconciles_total{result=\"degraded\"} 1"), "{text}");
        assert!(text.contains("asterisk_operator_bundles_pushed_total{result=\"failed\"} 1"), "{text}");
        assert!(text.contains("asterisk_operator_bundles_pushed_total{result=\"ok\"} 1"), "{text}");
        assert!(text.contains("asterisk_operator_nodes_ready 0"), "{text}");
        assert_eq!(m.since_last_pass(), Some(0));
    }

    #[test]
    fn bundles_are_numbers_per_node_and_a_standby_reports_none() {
        assert_eq!(bundle_fingerprint(""), 0.0);
        assert_eq!(bundle_fingerprint("0000000000001ffff"), 1.0);
        assert_eq!(bundle_fingerprint("fffffffffffff0"), (2f64.powi(52) - 1.0));
        let m = ControllerMetrics::default();
        assert!(
            m.encode().contains("asterisk_operator_reconciles_total{result=\"ok\"} 0"),
            "from the first scrape"
        );
        let report = ReconcileReport {
            bundles: BTreeMap::from([(
                ("default".into(), "office-a".into()),
                super::super::fleet::BundleHashes {
                    desired: "00000000000020".into(),
                    applied: String::new(),
                },
            )]),
            ..ReconcileReport::default()
        };
        m.observe(&report, &BTreeMap::new(), Duration::from_millis(1));
        let text = m.encode();
        let label = "{namespace=\"default\",node=\"office-a\"}";
        assert!(
            text.contains(&format!("asterisk_operator_node_desired_bundle_fingerprint{label} 2.0")),
            "{text}"
        );
        assert!(
            text.contains(&format!("asterisk_operator_node_applied_bundle_fingerprint{label} 0.0")),
            "{text}"
        );
        assert!(text.contains("asterisk_operator_leader 1"), "{text}");
        m.went_round(false);
        let text = m.encode();
        assert!(text.contains("asterisk_operator_leader 0") && !text.contains("fingerprint{"), "{text}");
        assert_eq!(m.since_last_loop(), Some(0), "a standby is alive and ready");
    }
}
