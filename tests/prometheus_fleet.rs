//! A real Prometheus (Debian's 2.42, started here on a free loopback port, 1 s scrape and
//! evaluation intervals) scrapes two real agents beside two real Asterisk 22 instances (with the
//! device-state mesh between them) and a controller in `--manifests` mode, with the chart's
//! alert rules loaded. It proves:
//! - stopping one Asterisk fires AsteriskDown for that node only, and starting it again resolves
//!   it (how long the alert took is printed and recorded in docs/monitoring.md, a measurement,
//!   not an assertion);
//! - every query of the fleet dashboard returns at least one series from this Prometheus;
//! - every metric name a rule or a panel uses is one the agent or the controller exports.
//!
//! Needs the test-bed: `bash testbed/setup.sh` (prometheus comes with its host packages).

mod support;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use asterisk_operator::agent::MeshOptions;
use asterisk_operator::controller::manifests::{self, ManifestsOptions};
use asterisk_operator::controller::metrics::{self as cmetrics, ControllerMetrics};
use asterisk_operator::render;
use asterisk_operator::topology;
use serde_json::Value;
use support::agent as ag;
use support::fleet::{self, on_loopback, repo};
use support::mesh::{self as m, Pki, drive_device};

const MESH_PORT: u16 = 7444;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Prometheus {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(dir: &std::path::Path, config: &str) -> Prometheus {
        let bin = PathBuf::from("/usr/bin/prometheus");
        assert!(bin.exists(), "/usr/bin/prometheus is missing: run `bash testbed/setup.sh`");
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        let p = Prometheus { child, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(p.addr).is_err() || ag::get(p.addr, "/-/ready").0 != 200 {
            assert!(
                Instant::now() < deadline,
                "prometheus not ready: {}",
                std::fs::read_to_string(dir.join("prometheus.log")).unwrap()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    fn api(&self, path: &str) -> Value {
        let (code, body) = ag::get(self.addr, path);
        assert_eq!(code, 200, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{path}: {body}");
        v["data"].clone()
    }

    /// An instant query's result vector.
    fn query(&self, expr: &str) -> Vec<Value> {
        let data = self.api(&format!("/api/v1/query?query={}", urlencode(expr)));
        match data["resultType"].as_str() {
            Some("vector") => data["result"].as_array().unwrap().clone(),
            Some("scalar") => vec![data["result"].clone()],
            other => panic!("{expr}: result type {other:?}"),
        }
    }

    /// Firing alerts named `name`, as (node, state).
    fn alerts(&self, name: &str) -> Vec<(String, String)> {
        self.api("/api/v1/alerts")["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["labels"]["alertname"] == name)
            .map(|a| {
                (
                    a["labels"]["node"].as_str().unwrap_or("").to_owned(),
                    a["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < within, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
    start.elapsed()
}

/// Metric names in a PromQL expression (identifiers of this project's families, `up`, `ALERTS`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut word = String::new();
    for c in expr.chars().chain([' ']) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            if word.starts_with("asterisk_") || word == "up" {
                out.insert(word.clone());
            }
            word.clear();
        }
    }
    out
}

#[test]
fn prometheus_with_the_charts_rules_alerts_for_the_stopped_node_only_and_every_panel_has_data() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (mut set, addrs) = on_loopback(fleet::example("two-offices"));
    let resolution = topology::resolve(&set);
    assert_eq!(resolution.errors, vec![]);
    let mut bundles = render::render_all(&resolution.topology);
    m::drive_hints(&mut bundles, "office-b", &["4002"]);
    let pki = Pki::new("prometheus");
    let (mut nodes, agents) = rt.block_on(ag::boot_mesh_agents(&addrs, &bundles, |name, addr| MeshOptions {
        listen: SocketAddr::from((addr, MESH_PORT)),
        tls: Some(pki.issue(name, name)),
        endpoints: addrs.iter().map(|(n, a)| (n.clone(), format!("https://{a}:{MESH_PORT}"))).collect(),
    }));
    // Device-state changes, so the mesh's propagation histogram has observations.
    let obs_b = rt.block_on(ag::observer(&nodes["office-b"]));
    for state in [asterisk_operator::ami::DeviceState::InUse, asterisk_operator::ami::DeviceState::NotInUse] {
        rt.block_on(m::set_state(&obs_b, &drive_device("4002"), state));
    }

    // The controller, in --manifests mode, pointed at the two agents.
    let dir = std::env::temp_dir().join(format!("ao-prometheus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for node in &mut set.nodes {
        let name = node.metadata.name.clone().unwrap();
        node.spec.agent.as_mut().unwrap().endpoint = format!("http://{}", agents[&name].grpc_addr);
    }
    let mut yaml = String::new();
    let docs: Vec<String> = set
        .nodes
        .iter()
        .map(|r| serde_saphyr::to_string(r).unwrap())
        .chain(set.trunks.iter().map(|r| serde_saphyr::to_string(r).unwrap()))
        .chain(set.phones.iter().map(|r| serde_saphyr::to_string(r).unwrap()))
        .chain(set.blf_subscriptions.iter().map(|r| serde_saphyr::to_string(r).unwrap()))
        .collect();
    for d in docs {
        yaml.push_str("---\n");
        yaml.push_str(&d);
    }
    std::fs::write(dir.join("fleet.yaml"), yaml).unwrap();
    let metrics = Arc::new(ControllerMetrics::default());
    let (controller_http, _server) = rt
        .block_on(cmetrics::serve("127.0.0.1:0".parse().unwrap(), metrics.clone(), Duration::from_secs(60)))
        .unwrap();
    let opts = ManifestsOptions {
        inputs: vec![dir.join("fleet.yaml")],
        status_file: dir.join("status.yaml"),
        secrets_file: dir.join("secrets.yaml"),
        // The agents serve plaintext on loopback (test harness); nothing secret is sent to them.
        agents: asterisk_operator::controller::agent_policy::AgentPolicy {
            allow_plaintext_loopback: true,
            ..Default::default()
        },
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller_metrics = metrics.clone();
    let controller = rt.spawn(async move {
        let _ = manifests::run(opts, Duration::from_secs(1), false, &controller_metrics, async {
            let _ = stop_rx.await;
        })
        .await;
    });

    let rules = repo().join("charts/asterisk-operator/files/prometheus-rules.yaml");
    let agent_targets: String = agents
        .iter()
        .map(|(name, a)| {
            format!(
                "      - targets: ['{}']\n        labels: {{namespace: {}, node: {name}}}\n",
                a.http_addr, set.namespace
            )
        })
        .collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files: ['{}']\n\
         scrape_configs:\n\
         \x20 - job_name: asterisk-agents\n    static_configs:\n{agent_targets}\
         \x20 - job_name: asterisk-operator\n    honor_labels: true\n    static_configs:\n      - targets: ['{controller_http}']\n",
        rules.display()
    );
    let prom = Prometheus::start(&dir, &config);

    wait_until("both agents and the controller scraped up", Duration::from_secs(30), || {
        prom.query("up == 1").len() == 3
    });
    wait_until("the controller reports both nodes' bundles", Duration::from_secs(30), || {
        prom.query("asterisk_operator_node_applied_bundle_fingerprint > 0").len() == 2
    });
    assert!(prom.alerts("AsteriskDown").is_empty(), "nothing down yet");

    // Every panel query returns a series, and every metric of a rule or a panel exists.
    let exported: BTreeSet<String> = prom
        .api("/api/v1/label/__name__/values")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("charts/asterisk-operator/files/dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut used = BTreeSet::new();
    wait_until("the trunks and the mesh have data", Duration::from_secs(60), || {
        !prom.query("asterisk_trunk_rtt_seconds").is_empty()
            && !prom.query("asterisk_agent_mesh_heartbeat_age_seconds").is_empty()
    });
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            used.extend(metric_names(expr));
            let e = expr.replace("$__rate_interval", "1m").replace("$namespace", ".*").replace("$node", ".*");
            // Rates and increases need a few samples first.
            let what = format!("panel {:?}: {e} returns a series", p["title"]);
            wait_until(&what, Duration::from_secs(20), || !prom.query(&e).is_empty());
        }
    }
    let rule_text = std::fs::read_to_string(&rules).unwrap();
    for line in
        rule_text.lines().filter(|l| l.trim_start().starts_with("expr:") || l.starts_with("          "))
    {
        used.extend(metric_names(line));
    }
    let exported_families: BTreeSet<String> = exported.iter().cloned().collect();
    for name in &used {
        assert!(exported_families.contains(name), "{name} is used by a rule or panel but nothing exports it");
    }

    // Stop office-a's Asterisk: AsteriskDown fires for office-a only, then resolves.
    let stopped = Instant::now();
    nodes.get_mut("office-a").unwrap().stop();
    let fired = wait_until("AsteriskDown fires for office-a", Duration::from_secs(90), || {
        prom.alerts("AsteriskDown").iter().any(|(node, state)| node == "office-a" && state == "firing")
    });
    let alerts = prom.alerts("AsteriskDown");
    assert!(alerts.iter().all(|(node, _)| node == "office-a"), "only office-a: {alerts:?}");
    println!("MEASURED AsteriskDown firing {:.1} s after the stop", stopped.elapsed().as_secs_f64());
    let _ = fired;

    nodes.get_mut("office-a").unwrap().boot();
    let restarted = Instant::now();
    wait_until("AsteriskDown resolves after the restart", Duration::from_secs(90), || {
        prom.alerts("AsteriskDown").is_empty()
    });
    println!("MEASURED AsteriskDown resolved {:.1} s after the restart", restarted.elapsed().as_secs_f64());

    let _ = stop_tx.send(());
    let _ = rt.block_on(controller);
    for (_, agent) in agents {
        rt.block_on(agent.shutdown());
    }
}
