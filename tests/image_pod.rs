//! The image is real: built from the repository's `Dockerfile` (its host-binary path, with the
//! binary this test run built) and run as two managed nodes' pods with podman — the controller's
//! own StatefulSet, Secret and credentials, converted by `support::pod::to_podman` (which lists
//! every difference from Kubernetes). From the host, the controller's fleet reconcile pushes each
//! node's rendered bundle exactly as it does for a managed node (pinned certificate, token); AMI
//! inside the pods shows the endpoints; a real phone registers to office-a and the pod of
//! office-b mirrors its lamp over the mesh with the controller-issued mesh certificates. Killing
//! the agent leaves Asterisk running and its probes passing; killing Asterisk makes the agent
//! report it down. Nothing in the pods runs as root, and no Secret value shows in `podman
//! inspect` or the containers' logs.
//!
//! Needs the test-bed with podman and the image base: `bash testbed/setup.sh`.

mod support;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime};

use asterisk_operator::controller::agent_policy::AgentPolicy;
use asterisk_operator::controller::conditions::{ConditionUpdate, ManagedReason};
use asterisk_operator::controller::credentials::{AMI_SECRET_KEY, NodeCredentials};
use asterisk_operator::controller::fleet::{AgentTarget, FleetReconciler};
use asterisk_operator::controller::managed::{self, AMI_SECRET_VOLUME, AMI_USER, HTTP_PORT, paths};
use asterisk_operator::controller::managed_settings::ManagedSettings;
use asterisk_operator::controller::mesh_pki::MeshCa;
use asterisk_operator::offline::LoadedFleet;
use asterisk_operator::render;
use asterisk_operator::topology::{self, Kind, MANAGED_GRPC_PORT, ObjectRef, managed_workload_name};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{HostAlias, Probe, Secret};
use support::agent::{get, parse_metrics, value};
use support::baresip::{Baresip, phone_password};
use support::fleet;
use support::pod::{
    Image, Network, PodSite, RunDir, RunningPod, StageImages, podman, podman_logs, podman_ok, require_podman,
    run_name, to_podman,
};

const NAMESPACE: &str = "default";
const NODES: [&str; 2] = ["office-a", "office-b"];

/// Two managed nodes on the pods' addresses, an IAX2 trunk between them, a phone on each, and
/// office-b's phone watching office-a's (so office-b's agent mirrors 3001 over the mesh).
fn fleet_yaml(image: &str, a: Ipv4Addr, b: Ipv4Addr, phones_net: Ipv4Addr) -> String {
    format!(
        r#"
apiVersion: asterisk.operator.dev/v1alpha1
kind: AsteriskNode
metadata: {{name: office-a}}
spec:
  numbering: {{prefixes: ["3"], length: 4}}
  address: {a}
  managed: {{image: "{image}"}}
  provisioning: {{allowedNetworks: ["{phones_net}/32"]}}
---
apiVersion: asterisk.operator.dev/v1alpha1
kind: AsteriskNode
metadata: {{name: office-b}}
spec:
  numbering: {{prefixes: ["4"], length: 4}}
  address: {b}
  managed: {{image: "{image}"}}
---
apiVersion: asterisk.operator.dev/v1alpha1
kind: Trunk
metadata: {{name: a-b-iax}}
spec: {{protocol: iax2, ends: [office-a, office-b], auth: {{method: md5}}}}
---
apiVersion: asterisk.operator.dev/v1alpha1
kind: Phone
metadata: {{name: reception}}
spec:
  node: office-a
  extension: "3001"
  displayName: Reception
  device: {{vendor: yealink, model: T46S, mac: "80:5E:C0:AA:30:01"}}
---
apiVersion: asterisk.operator.dev/v1alpha1
kind: Phone
metadata: {{name: sales-1}}
spec: {{node: office-b, extension: "4001", displayName: Sales 1}}
---
apiVersion: asterisk.operator.dev/v1alpha1
kind: BlfSubscription
metadata: {{name: sales-watches-reception}}
spec:
  watcher: {{phone: sales-1}}
  targets: [{{extension: "3001", label: Reception}}]
"#
    )
}

/// One node as the controller runs it: its objects and the secrets they were made from.
struct ManagedNode {
    credentials: NodeCredentials,
    stateful_set: StatefulSet,
    secret: Secret,
}

/// Every value of the node Secrets, the mesh CA and the fleet's own Secrets (phone and trunk
/// secrets, which travel in the bundles), as text that must never show (PEM keys line by line,
/// as JSON escapes their line breaks), the node Secrets' also base64-encoded as `data` is.
fn secret_values(
    nodes: &BTreeMap<&str, ManagedNode>,
    ca: &MeshCa,
    fleet_: &LoadedFleet,
) -> Vec<(String, String)> {
    let lines = |what: &str, pem: &str| -> Vec<(String, String)> {
        pem.lines()
            .filter(|l| l.len() >= 16 && !l.starts_with("-----"))
            .map(|l| (what.to_owned(), l.to_owned()))
            .collect()
    };
    let mut values = lines("mesh CA key", ca.key_pem().expose());
    for (name, keys) in &fleet_.resources.secrets {
        for (key, value) in keys {
            values.push((format!("Secret {name} {key}"), value.expose().to_owned()));
        }
    }
    for (node, n) in nodes {
        let data = n.secret.data.as_ref().unwrap();
        values.push((format!("{node} AMI secret"), n.credentials.ami_secret.expose().to_owned()));
        values.push((format!("{node} agent token"), n.credentials.agent_token.expose().to_owned()));
        values.extend(lines(&format!("{node} TLS key"), n.credentials.tls_key_pem.expose()));
        values.extend(lines(&format!("{node} mesh key"), &String::from_utf8_lossy(&data["mesh.key"].0)));
        for (key, bytes) in data.iter().filter(|(k, _)| k.as_str() != "tls.crt" && !k.ends_with(".crt")) {
            let base64 = serde_json::to_value(ByteString(bytes.0.clone())).unwrap();
            values.push((format!("{node} {key} (base64)"), base64.as_str().unwrap()[..24].to_owned()));
        }
    }
    values
}

/// Runs `asterisk-operator ami … action <action> <headers>` in the agent container: AMI from
/// inside the pod, as the agent's user with the mounted secret file.
fn ami(pod: &RunningPod, action: &str, headers: &[&str]) -> serde_json::Value {
    let secret_file = format!("{}/{AMI_SECRET_KEY}", paths::SECRET);
    let mut args = vec![paths::OPERATOR_BIN, "ami", "--addr", "127.0.0.1:5038", "--user", AMI_USER];
    args.extend(["--secret-file", &secret_file, "action", action]);
    args.extend(headers);
    let out = pod.exec("agent", &args);
    assert!(out.status.success(), "ami {action} in {}: {}", pod.name, String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("ami prints JSON")
}

/// The device state office-b's Asterisk shows for `device`, read over AMI inside its pod.
fn device_state(pod: &RunningPod, device: &str) -> String {
    let reply = ami(pod, "Getvar", &[&format!("Variable=DEVICE_STATE({device})")]);
    reply["response"]["Value"].as_str().unwrap_or_default().to_owned()
}

fn wait_device_state(pod: &RunningPod, device: &str, want: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let now = device_state(pod, device);
        if now == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{device} on {} is {now}, not {want}, after {within:?}", pod.name);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `asterisk -rx <cli>` in the asterisk container (through Asterisk's control socket).
fn cli(pod: &RunningPod, command: &str) -> String {
    let conf = format!("{}/asterisk.conf", paths::CONFIG);
    let out = pod.exec("asterisk", &[paths::ASTERISK_BIN, "-C", &conf, "-rx", command]);
    assert!(out.status.success(), "{command}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The agent's HTTP endpoint `path` on `pod`: (status, body), or `None` while nothing listens.
fn http(pod: &RunningPod, path: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from((pod.ip, HTTP_PORT));
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    Some(get(addr, path))
}

fn wait_http(pod: &RunningPod, path: &str, want: u16, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let got = http(pod, path);
        if let Some((code, body)) = &got
            && *code == want
        {
            return body.clone();
        }
        assert!(Instant::now() < deadline, "{} {path}: {got:?}, not {want}, after {within:?}", pod.name);
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn asterisk_up(pod: &RunningPod) -> f64 {
    let (_, body) = http(pod, "/metrics").expect("the agent serves /metrics");
    value(&parse_metrics(&body), "asterisk_up")
}

/// Runs the asterisk container's probe (exec) as the kubelet would: did it pass?
fn probe_passes(pod: &RunningPod, probe: &Probe) -> bool {
    let command = probe.exec.as_ref().and_then(|e| e.command.clone()).expect("an exec probe");
    let args: Vec<&str> = command.iter().map(String::as_str).collect();
    pod.exec("asterisk", &args).status.success()
}

/// Pushes every node's bundle with the controller's fleet reconcile, as the API-server mode
/// does for managed nodes whose pods are ready: TLS pinned to the node's certificate and
/// checked against its pod's DNS name, the node's token. Only the address it dials is the
/// pod's (the host cannot resolve cluster names). Returns node → (applied, message).
fn push(
    fleet_: &LoadedFleet,
    nodes: &BTreeMap<&str, ManagedNode>,
    pods: &BTreeMap<&str, RunningPod>,
) -> BTreeMap<String, (bool, String)> {
    let mut fleet_ = LoadedFleet {
        resources: fleet_.resources.clone(),
        resolution: fleet_.resolution.clone(),
        bundles: fleet_.bundles.clone(),
    };
    let mut targets = BTreeMap::new();
    for (name, node) in nodes {
        let topo = fleet_.resolution.topology.nodes.get_mut(*name).unwrap();
        assert_eq!(topo.agent_endpoint, Some(topology::managed_agent_endpoint(NAMESPACE, name)));
        topo.agent_endpoint = Some(format!("https://{}:{MANAGED_GRPC_PORT}", pods[name].ip));
        targets.insert(
            (NAMESPACE.to_owned(), name.to_string()),
            AgentTarget {
                managed: Some(ConditionUpdate::ok(ManagedReason::Running, "pod ready")),
                access: Ok(node.credentials.agent_access(NAMESPACE, name, true)),
            },
        );
    }
    let mut reconciler = FleetReconciler::new(AgentPolicy::default());
    reconciler.set_targets(targets);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let report = rt.block_on(reconciler.reconcile(&BTreeMap::from([(NAMESPACE.to_owned(), fleet_)])));
    NODES
        .iter()
        .map(|n| {
            let status = &reconciler.statuses()[&ObjectRef::new(Kind::AsteriskNode, NAMESPACE, n)];
            let applied = status.conditions().iter().find(|c| c.type_ == "ConfigApplied").unwrap();
            (n.to_string(), (report.pushed[&format!("{NAMESPACE}/{n}")], applied.message.clone()))
        })
        .collect()
}

#[test]
fn managed_pods_from_the_real_image_take_bundles_mirror_lamps_and_survive_their_agent() {
    require_podman();
    let run = run_name();
    let dir = RunDir::create("image-pod");

    // The image, from the binary this test run built (the Dockerfile's host path).
    let image = Image::build_from_host_binary(std::path::Path::new(env!("CARGO_BIN_EXE_asterisk-operator")));
    let inspected = image.inspect();
    let labels = &inspected["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION"),
        "Dockerfile VERSION = Cargo.toml"
    );
    assert_eq!(labels["org.opencontainers.image.licenses"], env!("CARGO_PKG_LICENSE"));
    assert_eq!(labels["org.opencontainers.image.source"], env!("CARGO_PKG_REPOSITORY"));
    assert_eq!(inspected["Config"]["User"], "200:200", "the image runs as the asterisk user");
    eprintln!(
        "image {}: built in {:.1} s, {} MB",
        image.tag,
        image.build_time.as_secs_f64(),
        inspected["Size"].as_u64().unwrap_or(0) / 1_000_000
    );

    // The fleet, with the pods' addresses (a network of this run, addresses fixed in advance
    // so the rendered trunk and the pods' host aliases can name them).
    let network = Network::create();
    let ips: BTreeMap<&str, Ipv4Addr> =
        NODES.iter().zip([10, 11]).map(|(n, i)| (*n, network.address(i))).collect();
    let resources = fleet::with_test_secrets(fleet::parse(&fleet_yaml(
        &image.tag,
        ips["office-a"],
        ips["office-b"],
        network.gateway,
    )));
    let resolution = topology::resolve(&resources);
    assert_eq!(resolution.errors, vec![]);
    let bundles = render::render_all(&resolution.topology);
    let fleet_ = LoadedFleet { resources, resolution, bundles };

    // What the controller makes for each node: credentials, the namespace's mesh CA and the
    // node's leaf, the Secret, the StatefulSet (the node as read from an API server has a uid).
    let now = SystemTime::now();
    let ca = MeshCa::generate(NAMESPACE, now).unwrap();
    let settings = ManagedSettings::default();
    let nodes: BTreeMap<&str, ManagedNode> = NODES
        .iter()
        .map(|name| {
            let mut node = fleet_
                .resources
                .nodes
                .iter()
                .find(|n| n.metadata.name.as_deref() == Some(name))
                .unwrap()
                .clone();
            node.metadata.namespace = Some(NAMESPACE.into());
            node.metadata.uid = Some(format!("uid-{name}"));
            let credentials = NodeCredentials::generate(NAMESPACE, name, true).unwrap();
            let leaf = ca.issue(name, now).unwrap();
            let secret = managed::secret(&node, &credentials, Some(&leaf), &settings).unwrap();
            let stateful_set = managed::stateful_set(&node, &settings).unwrap();
            (*name, ManagedNode { credentials, stateful_set, secret })
        })
        .collect();

    // The pods. Each resolves every node's pod name under its headless Service.
    let host_aliases: Vec<HostAlias> = NODES
        .iter()
        .map(|n| {
            let w = managed_workload_name(n);
            HostAlias { ip: ips[n].to_string(), hostnames: Some(vec![format!("{w}-0.{w}.{NAMESPACE}.svc")]) }
        })
        .collect();
    let site = PodSite { run: &run, dir: &dir.0, host_aliases };
    let pods: BTreeMap<&str, RunningPod> = NODES
        .iter()
        .map(|n| {
            (
                *n,
                RunningPod::play(
                    to_podman(&nodes[n].stateful_set, &nodes[n].secret, &site),
                    &network,
                    ips[n],
                ),
            )
        })
        .collect();
    for pod in pods.values() {
        wait_http(pod, "/healthz", 200, Duration::from_secs(60));
    }
    let (a, b) = (&pods["office-a"], &pods["office-b"]);

    // The bundles, pushed from the host as the controller pushes to managed nodes.
    for (node, (ok, why)) in push(&fleet_, &nodes, &pods) {
        assert!(ok, "{node}: not applied: {why}");
    }
    for pod in pods.values() {
        wait_http(pod, "/readyz", 200, Duration::from_secs(10));
    }

    // The desk phone's file, from the pod's provisioning port (what its Service publishes),
    // byte-identical to the rendered one; the host stands in for the phones' network.
    let served = get(SocketAddr::from((a.ip, asterisk_operator::provision::HTTP_PORT)), "/805ec0aa3001.cfg");
    let rendered = &fleet_.bundles["office-a"].provisioning.files["805ec0aa3001.cfg"];
    assert_eq!(served, (200, rendered.clone()), "the Yealink file served by office-a's pod");

    // AMI inside each pod shows the node's endpoints: its phone and the trunk to the other.
    let endpoints = |pod: &RunningPod| -> Vec<String> {
        let reply = ami(pod, "PJSIPShowEndpoints", &[]);
        reply["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["ObjectName"].as_str().map(String::from))
            .collect()
    };
    assert!(endpoints(a).contains(&"3001".to_owned()), "office-a: {:?}", endpoints(a));
    assert!(endpoints(b).contains(&"4001".to_owned()), "office-b: {:?}", endpoints(b));
    // The IAX2 trunk between the pods answers its qualify pokes.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let peers = ami(a, "IAXpeerlist", &[]);
        let trunk =
            peers["events"].as_array().unwrap().iter().find(|e| e["ObjectName"] == "a-b-iax").cloned();
        let status = trunk.as_ref().and_then(|t| t["Status"].as_str()).unwrap_or_default();
        if status.starts_with("OK") {
            assert_eq!(trunk.unwrap()["IPaddress"], b.ip.to_string());
            break;
        }
        assert!(Instant::now() < deadline, "office-a's IAX2 trunk to office-b: {peers}");
        std::thread::sleep(Duration::from_millis(300));
    }

    // A real phone registers to office-a over the pod network; office-b's pod mirrors its lamp.
    let mirror = "Custom:office-a-3001";
    assert_eq!(device_state(b, mirror), "UNAVAILABLE", "no phone yet");
    let password = phone_password(&fleet_.bundles["office-a"].files[render::PJSIP_FILE], "3001");
    let mut phone = Baresip::start(network.gateway, a.ip, "3001", &password);
    let took = wait_device_state(b, mirror, "NOT_INUSE", Duration::from_secs(30));
    eprintln!("registration mirrored to office-b in {took:?}");
    cli(a, "channel originate PJSIP/3001 application Wait 60");
    wait_device_state(b, mirror, "INUSE", Duration::from_secs(10));
    cli(a, "channel request hangup all");
    wait_device_state(b, mirror, "NOT_INUSE", Duration::from_secs(10));

    // Nothing in the pods runs as root: every process of their containers runs as 200:200 with
    // no capabilities, under seccomp (the init container has exited: it ran as the Pod says,
    // see below). The one root process is podman's own infra container (its stand-in for
    // Kubernetes' pause container, whose user podman 4.3 cannot change; Kubernetes' pause image
    // runs as 65535).
    for (node, pod) in &pods {
        let mut own: Vec<_> = pod
            .podman_containers()
            .iter()
            .filter_map(|c| c.strip_prefix(&format!("{}-", pod.name)).map(String::from))
            .collect();
        own.sort();
        assert_eq!(own, ["agent", "asterisk", "bootstrap"], "{node}: the StatefulSet's containers");
        for c in pod.podman_containers() {
            let Some(short) = c.strip_prefix(&format!("{}-", pod.name)) else {
                let infra = pod.processes_of(&c, &["huser", "args"]);
                let commands: Vec<_> = infra.values().map(|p| p["args"].as_str()).collect();
                assert_eq!(
                    commands,
                    ["/catatonit -P"],
                    "{node}: {c} is podman's infra container and only that"
                );
                continue;
            };
            if short == "bootstrap" {
                continue;
            }
            let processes = pod.processes(short, &["huser", "hgroup", "capeff", "seccomp", "args"]);
            assert!(!processes.is_empty(), "{node} {short}: no processes");
            for p in processes.values() {
                assert_eq!(
                    (p["huser"].as_str(), p["hgroup"].as_str()),
                    ("200", "200"),
                    "{node} {short}: {p:?}"
                );
                assert_eq!(
                    (p["capeff"].as_str(), p["seccomp"].as_str()),
                    ("none", "filter"),
                    "{node} {short}: {p:?}"
                );
            }
        }
        let agent = pod.inspect("agent");
        assert_eq!(agent["HostConfig"]["Memory"], 256 * 1024 * 1024, "{node}: the agent's memory limit");
        let init = pod.inspect("bootstrap");
        assert_eq!(init["Config"]["User"], "200:200", "{node}: bootstrap");
        assert_eq!(init["State"]["ExitCode"], 0, "{node}: bootstrap");
        // The init container got the AMI secret and nothing else of the Secret.
        let mounted: Vec<_> =
            init["Mounts"].as_array().unwrap().iter().filter_map(|m| m["Source"].as_str()).collect();
        let folder = pod
            .secret_folders()
            .iter()
            .find(|f| f.path.ends_with(format!("{}-{AMI_SECRET_VOLUME}", managed_workload_name(node))))
            .unwrap();
        assert!(mounted.contains(&folder.path.to_str().unwrap()), "{node}: {mounted:?}");
        let files: Vec<_> = std::fs::read_dir(&folder.path)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(files, [AMI_SECRET_KEY], "{node}: the init container sees only the AMI secret");
    }

    // No Secret value in what podman shows about the pods and their containers (environment,
    // arguments, mounts) nor in the containers' logs.
    let mut shown = String::new();
    for pod in pods.values() {
        shown += &podman_ok(&["pod", "inspect", &pod.name]);
        for c in pod.podman_containers() {
            shown += &podman_ok(&["inspect", &c]);
            shown += &podman_logs(&c);
        }
    }
    for seen in ["\"Env\"", "--token-file", "/run/secrets/asterisk-operator/agent-token", "agent started"] {
        assert!(shown.contains(seen), "podman's output lacks {seen}: the check below would look at nothing");
    }
    for (what, value) in secret_values(&nodes, &ca, &fleet_) {
        assert!(!shown.contains(&value), "the {what} shows in podman inspect or logs");
    }

    // The agent crashes: Asterisk keeps running, answers its probes, keeps its phone; office-b's
    // lamp goes UNAVAILABLE (the owner is gone) and comes back when the agent is restarted.
    let probes = {
        let pod = nodes["office-a"].stateful_set.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let asterisk = pod.containers.iter().find(|c| c.name == "asterisk").unwrap();
        [asterisk.startup_probe.clone().unwrap(), asterisk.liveness_probe.clone().unwrap()]
    };
    let before = a.state("asterisk");
    a.kill("agent");
    wait_device_state(b, mirror, "UNAVAILABLE", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(a.state("asterisk"), before, "Asterisk was not touched by the agent's crash");
    for probe in &probes {
        assert!(probe_passes(a, probe), "the asterisk container's probe fails without the agent: {probe:?}");
    }
    let contacts = cli(a, "pjsip show contacts");
    let phone_contact = format!("@{}:5060", network.gateway);
    assert!(
        contacts.contains("3001/sip:3001") && contacts.contains(&phone_contact) && contacts.contains("Avail"),
        "the phone stays registered: {contacts}"
    );
    a.restart("agent");
    wait_http(a, "/readyz", 200, Duration::from_secs(30));
    wait_device_state(b, mirror, "NOT_INUSE", Duration::from_secs(15));
    assert_eq!(a.state("asterisk"), before);

    // Asterisk dies: the agent reports it down; its probes fail (the kubelet would restart
    // it); restarted, it boots from the config volume with what the agent applied.
    a.kill("asterisk");
    let health = wait_http(a, "/healthz", 503, Duration::from_secs(10));
    assert!(health.contains("Ping"), "{health}");
    assert_eq!(asterisk_up(a), 0.0, "asterisk_up while Asterisk is dead");
    assert_eq!(http(a, "/readyz").unwrap().0, 503);
    for probe in &probes {
        assert!(!probe_passes(a, probe), "a probe passed with Asterisk dead: {probe:?}");
    }
    a.restart("asterisk");
    wait_http(a, "/healthz", 200, Duration::from_secs(60));
    assert_eq!(asterisk_up(a), 1.0);
    assert!(endpoints(a).contains(&"3001".to_owned()), "the applied phone after the restart");
    wait_http(a, "/readyz", 200, Duration::from_secs(15));

    phone.stop();
}

/// The Dockerfile's other path, the release build inside the Rust image, cannot run here: no
/// registry serves `rust:…`. What is checked: buildah takes the file and stops only for want of
/// that image; with a local image standing in for it, every step of the path runs up to `cargo
/// build` (which the stand-in lacks); and the sources those steps copied (through
/// `.dockerignore`) are a package cargo accepts — its manifest with every target's file, the
/// lock file, every file the code includes.
#[test]
fn the_release_path_of_the_dockerfile_runs_up_to_the_missing_rust_image() {
    require_podman();
    let dir = fleet::repo();
    let build = |extra: &[&str]| {
        let out = std::process::Command::new("podman")
            .args(["build", "--pull=never", "--force-rm", "--target", "release"])
            .args(extra)
            .arg("-f")
            .arg(dir.join("Dockerfile"))
            .arg(&dir)
            .output()
            .expect("podman build runs");
        assert!(!out.status.success(), "the release path cannot succeed here");
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let out = build(&["--layers=false"]);
    assert!(out.contains("docker.io/library/rust:1-slim-trixie: image not known"), "{out}");

    // The stand-in: every step's result is kept (layers), so the copied sources can be read.
    let stages = StageImages::new();
    let stand_in = format!("RUST={}", support::pod::BASE_IMAGE);
    let out = build(&["--layers=true", "--build-arg", &stand_in]);
    let lines: Vec<&str> = out.lines().collect();
    let run = lines
        .iter()
        .position(|l| l.starts_with("STEP ") && l.contains(": RUN cargo build --release --locked"));
    let run = run.unwrap_or_else(|| panic!("the release stage did not get to cargo: {out}"));
    let (step, of) = lines[run][5..].split_once(':').unwrap().0.split_once('/').unwrap();
    assert_eq!(step, of, "cargo build is the release stage's last step: {out}");
    assert!(out.contains("cargo: not found"), "stopped before cargo for another reason: {out}");
    let copied = lines[..run]
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("--> ").filter(|id| !id.starts_with("Using cache")))
        .unwrap_or_else(|| panic!("no image after the COPY steps: {out}"));
    let root = podman_ok(&["image", "mount", copied]);
    let src = std::path::Path::new(root.trim()).join("src");
    let fetch = std::process::Command::new("cargo")
        .args(["fetch", "--offline", "--locked", "--target", "x86_64-unknown-linux-gnu", "--manifest-path"])
        .arg(src.join("Cargo.toml"))
        .output()
        .expect("cargo runs");
    let missing = included_files_missing(&src.join("src"));
    let _ = podman(&["image", "unmount", copied]);
    drop(stages);
    assert!(
        fetch.status.success(),
        "cargo refuses the sources the release build copies (add what it names to the Dockerfile and .dockerignore): {}",
        String::from_utf8_lossy(&fetch.stderr)
    );
    assert_eq!(missing, Vec::<String>::new(), "files the code includes that the release build does not copy");
}

/// Every `include_str!`/`include_bytes!` under `dir` whose file does not exist.
fn included_files_missing(dir: &std::path::Path) -> Vec<String> {
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            missing.extend(included_files_missing(&path));
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for marker in ["include_str!(\"", "include_bytes!(\""] {
            for (at, _) in text.match_indices(marker) {
                let rest = &text[at + marker.len()..];
                let file = &rest[..rest.find('"').unwrap()];
                if !path.parent().unwrap().join(file).exists() {
                    missing.push(format!("{}: {file}", path.display()));
                }
            }
        }
    }
    missing
}
