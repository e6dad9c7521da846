//! Prometheus metrics of the agent (prometheus-client, text exposition format).
//!
//! Asterisk facts are `asterisk_*`, the agent's own `asterisk_agent_*`. Labels stay
//! low-cardinality: module, result, trunk, event type; per-phone gauges only with
//! `--per-phone-metrics`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// `{module}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModuleLabel {
    /// e.g. `res_pjsip.so`.
    pub module: String,
}

/// `{module, result}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModuleResult {
    /// e.g. `res_pjsip.so`.
    pub module: String,
    /// `ok` or `failed`.
    pub result: String,
}

/// `{result}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok`, `failed`, `unchanged`, `superseded`.
    pub result: String,
}

/// `{hash}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HashLabel {
    /// Full bundle hash.
    pub hash: String,
}

/// `{trunk, protocol}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrunkLabel {
    /// Trunk name (IAX2 peer or PJSIP endpoint).
    pub trunk: String,
    /// `iax2` or `pjsip`.
    pub protocol: String,
}

/// `{version}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    /// e.g. `22.10.1`.
    pub version: String,
}

/// `{protocol, target}` of the SIP probe: one series per node.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabel {
    /// `udp` or `tcp`.
    pub protocol: String,
    /// `address:port` probed.
    pub target: String,
}

/// `{type}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventTypeLabel {
    /// AMI event name.
    pub r#type: String,
}

/// `{endpoint}` (only with `--per-phone-metrics`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    /// PJSIP endpoint (the phone's extension).
    pub endpoint: String,
}

fn reload_buckets() -> Histogram {
    Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

/// Every metric the agent exports.
pub struct Metrics {
    registry: Registry,
    pub asterisk_up: Gauge,
    pub uptime_seconds: Gauge,
    pub last_reload_timestamp_seconds: Gauge<f64, AtomicU64>,
    pub endpoints: Gauge,
    pub endpoints_registered: Gauge,
    pub contacts: Gauge,
    pub active_channels: Gauge,
    pub trunk_up: Family<TrunkLabel, Gauge>,
    pub trunk_rtt_seconds: Family<TrunkLabel, Gauge<f64, AtomicU64>>,
    pub phone_registered: Family<EndpointLabel, Gauge>,
    pub ami_connected: Gauge,
    pub ami_reconnects: Counter,
    pub ami_events: Family<EventTypeLabel, Counter>,
    pub applies: Family<ResultLabel, Counter>,
    pub reloads: Family<ModuleResult, Counter>,
    pub reload_duration: Family<ModuleLabel, Histogram>,
    pub apply_duration: Histogram,
    pub bundle_info: Family<HashLabel, Gauge>,
    /// The Asterisk version (value always 1), for the fleet dashboard's table.
    pub version_info: Family<VersionLabel, Gauge>,
    /// Unix time Asterisk started (from the uptime it reports at each AMI login): a restart loop
    /// shows as this value changing.
    pub start_time_seconds: Gauge<f64, AtomicU64>,
    /// The SIP OPTIONS probe of the node's own transport answered (1) or not (0); absent while
    /// there is nothing to probe.
    pub sip_probe_up: Family<ProbeLabel, Gauge>,
    /// How long the last probe took (to its answer, or to its failure).
    pub sip_probe_duration_seconds: Family<ProbeLabel, Gauge<f64, AtomicU64>>,
    /// Status code of the last probe's answer (0: none).
    pub sip_probe_status_code: Family<ProbeLabel, Gauge>,
    /// The device-state mesh's metrics (`asterisk_agent_mesh_*`).
    pub mesh: crate::mesh::MeshMetrics,
    /// Provisioning fetches and files (`asterisk_agent_provisioning_*`).
    pub provisioning: crate::provision::ProvisionMetrics,
    /// Last values of the session's monotonic counters, to turn them into increments.
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    reconnects: u64,
    events: HashMap<String, u64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            registry: Registry::default(),
            asterisk_up: Gauge::default(),
            uptime_seconds: Gauge::default(),
            last_reload_timestamp_seconds: Gauge::default(),
            endpoints: Gauge::default(),
            endpoints_registered: Gauge::default(),
            contacts: Gauge::default(),
            active_channels: Gauge::default(),
            trunk_up: Family::default(),
            trunk_rtt_seconds: Family::default(),
            phone_registered: Family::default(),
            ami_connected: Gauge::default(),
            ami_reconnects: Counter::default(),
            ami_events: Family::default(),
            applies: Family::default(),
            reloads: Family::default(),
            reload_duration: Family::new_with_constructor(reload_buckets),
            apply_duration: Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            bundle_info: Family::default(),
            start_time_seconds: Gauge::default(),
            version_info: Family::default(),
            sip_probe_up: Family::default(),
            sip_probe_duration_seconds: Family::default(),
            sip_probe_status_code: Family::default(),
            mesh: crate::mesh::MeshMetrics::default(),
            provisioning: crate::provision::ProvisionMetrics::default(),
            seen: Mutex::new(Seen::default()),
        };
        let r = &mut registry;
        r.register(
            "asterisk_up",
            "Asterisk answered the last AMI Ping in time (1) or not (0)",
            m.asterisk_up.clone(),
        );
        r.register("asterisk_uptime_seconds", "Seconds since Asterisk started", m.uptime_seconds.clone());
        r.register(
            "asterisk_last_reload_timestamp_seconds",
            "Unix time of Asterisk's last configuration reload",
            m.last_reload_timestamp_seconds.clone(),
        );
        r.register(
            "asterisk_pjsip_endpoints",
            "PJSIP endpoints loaded (phones and trunks)",
            m.endpoints.clone(),
        );
        r.register(
            "asterisk_pjsip_endpoints_registered",
            "Phone endpoints with at least one reachable contact",
            m.endpoints_registered.clone(),
        );
        r.register(
            "asterisk_pjsip_contacts",
            "PJSIP contacts (registrations and static contacts)",
            m.contacts.clone(),
        );
        r.register("asterisk_active_channels", "Channels up now", m.active_channels.clone());
        r.register("asterisk_trunk_up", "Trunk reachable (1) or not (0)", m.trunk_up.clone());
        r.register(
            "asterisk_trunk_rtt_seconds",
            "Trunk round-trip time of the last qualify",
            m.trunk_rtt_seconds.clone(),
        );
        r.register(
            "asterisk_phone_registered",
            "Phone registered (1) or not (0); only with --per-phone-metrics",
            m.phone_registered.clone(),
        );
        r.register(
            "asterisk_agent_ami_connected",
            "The agent's AMI session is logged in",
            m.ami_connected.clone(),
        );
        r.register("asterisk_agent_ami_reconnects", "AMI logins after the first", m.ami_reconnects.clone());
        r.register("asterisk_agent_ami_events", "AMI events received, by event type", m.ami_events.clone());
        r.register("asterisk_agent_applies", "Bundle applies by result", m.applies.clone());
        r.register("asterisk_agent_reloads", "Module reloads by module and result", m.reloads.clone());
        r.register(
            "asterisk_agent_reload_duration_seconds",
            "Time of one module reload, including its verification",
            m.reload_duration.clone(),
        );
        r.register(
            "asterisk_agent_apply_duration_seconds",
            "Time of one apply that changed something (write, reload, verify)",
            m.apply_duration.clone(),
        );
        r.register(
            "asterisk_agent_bundle_info",
            "The bundle hash in force (value always 1)",
            m.bundle_info.clone(),
        );
        r.register("asterisk_start_time_seconds", "Unix time Asterisk started", m.start_time_seconds.clone());
        r.register(
            "asterisk_version_info",
            "The Asterisk version AMI reports (value always 1)",
            m.version_info.clone(),
        );
        r.register(
            "asterisk_sip_probe_up",
            "The node's SIP transport answered the agent's OPTIONS probe (1) or not (0)",
            m.sip_probe_up.clone(),
        );
        r.register(
            "asterisk_sip_probe_duration_seconds",
            "Time the last SIP OPTIONS probe took, to its answer or its failure",
            m.sip_probe_duration_seconds.clone(),
        );
        r.register(
            "asterisk_sip_probe_status_code",
            "SIP status code of the last probe's answer (0: no answer)",
            m.sip_probe_status_code.clone(),
        );
        m.mesh.register(r);
        m.provisioning.register(r);
        // Every apply outcome from the first scrape: increase() and the dashboard see the first one.
        for result in ["ok", "unchanged", "failed", "superseded"] {
            let _ = m.applies.get_or_create(&ResultLabel { result: result.into() });
        }
        Metrics { registry, ..m }
    }

    /// The text exposition (`/metrics`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }

    /// Records one SIP probe of `target`; `None`: nothing to probe, and the probe's series
    /// disappear (a lone `0` would read as "SIP down").
    pub fn set_sip_probe(
        &self,
        probed: Option<(&super::sip_probe::ProbeTarget, &super::sip_probe::ProbeOutcome)>,
    ) {
        self.sip_probe_up.clear();
        self.sip_probe_duration_seconds.clear();
        self.sip_probe_status_code.clear();
        let Some((target, o)) = probed else { return };
        let label = ProbeLabel {
            protocol: match target.protocol {
                super::sip_probe::Protocol::Udp => "udp",
                super::sip_probe::Protocol::Tcp => "tcp",
            }
            .to_owned(),
            target: target.addr.to_string(),
        };
        self.sip_probe_up.get_or_create(&label).set(o.status.is_some().into());
        self.sip_probe_duration_seconds.get_or_create(&label).set(o.duration.as_secs_f64());
        self.sip_probe_status_code.get_or_create(&label).set(o.status.unwrap_or(0).into());
    }

    /// Sets the version info metric to `version` alone.
    pub fn set_version(&self, version: &str) {
        self.version_info.clear();
        self.version_info.get_or_create(&VersionLabel { version: version.to_owned() }).set(1);
    }

    /// Sets the applied-bundle info metric to `hash` alone.
    pub fn set_bundle(&self, hash: &str) {
        self.bundle_info.clear();
        if !hash.is_empty() {
            self.bundle_info.get_or_create(&HashLabel { hash: hash.to_owned() }).set(1);
        }
    }

    /// Counts one apply.
    pub fn count_apply(&self, result: &str) {
        self.applies.get_or_create(&ResultLabel { result: result.to_owned() }).inc();
    }

    /// Counts one module reload and its duration.
    pub fn count_reload(&self, module: &str, ok: bool, seconds: f64) {
        let result = if ok { "ok" } else { "failed" }.to_owned();
        self.reloads.get_or_create(&ModuleResult { module: module.to_owned(), result }).inc();
        self.reload_duration.get_or_create(&ModuleLabel { module: module.to_owned() }).observe(seconds);
    }

    /// Brings the AMI counters up to the session's totals.
    pub fn sync_session(&self, stats: &crate::ami::SessionStats) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if stats.reconnects > seen.reconnects {
            self.ami_reconnects.inc_by(stats.reconnects - seen.reconnects);
            seen.reconnects = stats.reconnects;
        }
        for (name, &n) in &stats.events_by_type {
            let before = seen.events.get(name).copied().unwrap_or(0);
            if n > before && !name.is_empty() {
                self.ami_events.get_or_create(&EventTypeLabel { r#type: name.clone() }).inc_by(n - before);
                seen.events.insert(name.clone(), n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_has_the_conventional_names() {
        let m = Metrics::new();
        m.asterisk_up.set(1);
        m.count_apply("ok");
        m.count_reload("res_pjsip.so", true, 0.2);
        m.set_bundle("abc");
        m.set_bundle("def");
        let mut stats = crate::ami::SessionStats { reconnects: 2, ..Default::default() };
        stats.events_by_type.insert("FullyBooted".into(), 3);
        m.sync_session(&stats);
        m.sync_session(&stats);
        let text = m.encode();
        for needle in [
            "asterisk_up 1\n",
            "asterisk_agent_applies_total{result=\"ok\"} 1\n",
            "asterisk_agent_reloads_total{module=\"res_pjsip.so\",result=\"ok\"} 1\n",
            "asterisk_agent_reload_duration_seconds_count{module=\"res_pjsip.so\"} 1\n",
            "asterisk_agent_bundle_info{hash=\"def\"} 1\n",
            "asterisk_agent_ami_reconnects_total 2\n",
            "asterisk_agent_ami_events_total{type=\"FullyBooted\"} 3\n",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(!text.contains("hash=\"abc\""));
    }
}
