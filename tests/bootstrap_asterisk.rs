//! A managed node's pod, as far as it can run without a cluster: `asterisk-operator bootstrap`
//! (the init container) writes the base configuration, real Asterisk 22 boots from it alone,
//! the agent serves TLS with the node's generated certificate and token (as the sidecar does),
//! and the controller's fleet reconcile pushes the node's bundle there, pinning that certificate.
//! A second bootstrap (the init container again) keeps what the agent applied.
//!
//! Needs the test-bed: `bash testbed/setup.sh`.

mod support;

use std::collections::BTreeMap;

use asterisk_operator::agent::AgentAccess;
use asterisk_operator::agent::{AgentOptions, ServerTls};
use asterisk_operator::controller::agent_policy::AgentPolicy;
use asterisk_operator::controller::conditions::{ConditionUpdate, ManagedReason};
use asterisk_operator::controller::credentials::NodeCredentials;
use asterisk_operator::controller::fleet::{AgentTarget, FleetReconciler};
use asterisk_operator::offline::LoadedFleet;
use asterisk_operator::render;
use asterisk_operator::topology::{self, Kind, ObjectRef};
use support::agent as ag;
use support::asterisk::{Asterisk, fresh_address};
use support::fleet;

const NODE: &str = "boot-a";

/// Warnings Asterisk 22 logs with any configuration of this package (testbed/README.md).
const KNOWN_NOISE: &[&str] = &["No music on hold classes configured"];

fn problems(asterisk: &Asterisk) -> Vec<String> {
    asterisk.problems_except(KNOWN_NOISE)
}

/// The managed node's fleet on `addr`: one node, one phone, test secrets.
fn fleet_on(addr: std::net::Ipv4Addr) -> LoadedFleet {
    let yaml = format!(
        r#"
apiVersion: asterisk.operator.dev/v1alpha1
kind: AsteriskNode
metadata: {{name: {NODE}}}
spec:
  numbering: {{prefixes: ["3"], length: 4}}
  address: {addr}
  managed: {{image: "asterisk-operator:test"}}
  sip: {{port: 5060, bind: {addr}}}
  iax: {{port: 4569, bind: {addr}}}
---
apiVersion: asterisk.operator.dev/v1alpha1
kind: Phone
metadata: {{name: reception}}
spec: {{node: {NODE}, extension: "3001", displayName: Reception}}
"#
    );
    let resources = fleet::with_test_secrets(fleet::parse(&yaml));
    let resolution = topology::resolve(&resources);
    assert_eq!(resolution.errors, vec![]);
    let bundles = render::render_all(&resolution.topology);
    LoadedFleet { resources, resolution, bundles }
}

/// A reconciler that pushes to `agent_url` with `access`, as the API-server mode does for a
/// managed node whose pod is ready (the pod's DNS name replaced by the local address).
fn push(fleet_: &LoadedFleet, agent_url: &str, access: AgentAccess) -> (bool, String) {
    let mut fleet_ = LoadedFleet {
        resources: fleet_.resources.clone(),
        resolution: fleet_.resolution.clone(),
        bundles: fleet_.bundles.clone(),
    };
    let node = fleet_.resolution.topology.nodes.get_mut(NODE).unwrap();
    assert_eq!(
        node.agent_endpoint.as_deref(),
        Some("https://asterisk-boot-a-0.asterisk-boot-a.default.svc:7443"),
        "a managed node is pushed to pod 0 under its headless Service"
    );
    node.agent_endpoint = Some(agent_url.to_owned());
    let mut reconciler = FleetReconciler::new(AgentPolicy::default());
    reconciler.set_targets(BTreeMap::from([(
        ("default".to_owned(), NODE.to_owned()),
        AgentTarget {
            managed: Some(ConditionUpdate::ok(ManagedReason::Running, "pod ready")),
            access: Ok(access),
        },
    )]));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let report = rt.block_on(reconciler.reconcile(&BTreeMap::from([("default".to_owned(), fleet_)])));
    let status = &reconciler.statuses()[&ObjectRef::new(Kind::AsteriskNode, "default", NODE)];
    let applied = status.conditions().iter().find(|c| c.type_ == "ConfigApplied").unwrap();
    let managed = status.conditions().iter().find(|c| c.type_ == "Managed").unwrap();
    assert_eq!(managed.reason, "Running");
    (report.pushed[&format!("default/{NODE}")], applied.message.clone())
}

#[test]
fn a_bootstrapped_node_boots_asterisk_22_cleanly_and_takes_its_bundle_over_pinned_tls() {
    let addr = fresh_address();
    let fleet_ = fleet_on(addr);
    let creds = NodeCredentials::generate("default", NODE, true).unwrap();

    // The init container's work, then Asterisk from that directory alone.
    let mut asterisk = Asterisk::builder(NODE).addr(addr).bootstrapped(creds.ami_secret.expose()).start();
    let etc = asterisk.etc_dir();
    let written: Vec<_> = std::fs::read_dir(&etc).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(written.iter().all(|f| !f.to_string_lossy().ends_with("_operator.conf")), "{written:?}");
    assert_eq!(problems(&asterisk), Vec::<String>::new(), "Asterisk complained about the base configuration");
    assert!(asterisk.log().contains("modules will be loaded"), "the log is where the checks look");
    assert!(asterisk.rx("core show settings").contains(NODE), "systemname");
    assert!(asterisk.rx("manager show users").contains("asterisk-operator"));
    assert!(!asterisk.rx("manager show users").contains("admin"), "only the agent's user");
    assert!(asterisk.rx("indication show us").contains("350+440"), "tone zones load");

    // The sidecar's configuration: TLS with the node's certificate, the node's token, the
    // generated AMI secret, nothing insecure.
    let secrets = asterisk.host_dir().join("secret");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("tls.crt"), &creds.tls_cert_pem).unwrap();
    std::fs::write(secrets.join("tls.key"), creds.tls_key_pem.expose()).unwrap();
    let mut opts: AgentOptions = ag::options(&asterisk);
    opts.ami.secret = creds.ami_secret.clone();
    opts.ami.username = "asterisk-operator".into();
    opts.tls =
        Some(ServerTls { cert: secrets.join("tls.crt"), key: secrets.join("tls.key"), client_ca: None });
    opts.token = Some(creds.agent_token.clone());
    opts.plaintext = false;
    opts.no_auth = false;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let agent = ag::start(&rt, opts);
    let url = format!("https://{}", agent.grpc_addr);

    // Pinning: another node's certificate is not trusted, nor is a wrong token accepted.
    let other = NodeCredentials::generate("default", NODE, true).unwrap();
    let (ok, why) = push(&fleet_, &url, other.agent_access("default", NODE, true));
    assert!(!ok, "a certificate other than the pinned one was accepted");
    assert!(
        why.contains(&url) || why.to_lowercase().contains("certificate") || why.contains("connect"),
        "{why}"
    );
    let mut wrong_token = creds.agent_access("default", NODE, true);
    wrong_token.token = Some(other.agent_token.clone());
    let (ok, why) = push(&fleet_, &url, wrong_token);
    assert!(!ok && why.contains("bearer token"), "{why}");

    // The node's own credentials: applied.
    let (ok, why) = push(&fleet_, &url, creds.agent_access("default", NODE, true));
    assert!(ok, "not applied: {why}");
    asterisk.wait_for("pjsip show endpoints", std::time::Duration::from_secs(5), |o| o.contains("3001"));
    assert!(asterisk.rx("pjsip show transports").contains(&format!("{addr}:5060")), "the rendered transport");
    assert!(asterisk.rx("dialplan show").contains("3001"), "the rendered dialplan");
    assert_eq!(problems(&asterisk), Vec::<String>::new(), "Asterisk complained about the bundle");

    // The pod restarts: bootstrap runs again, Asterisk boots with what the agent applied.
    rt.block_on(agent.shutdown());
    asterisk.stop();
    let pjsip_operator = std::fs::read_to_string(etc.join("pjsip_operator.conf")).unwrap();
    let out = asterisk.bootstrap();
    assert!(out.contains("wrote 24 base files") && !out.contains(creds.ami_secret.expose()), "{out}");
    assert_eq!(std::fs::read_to_string(etc.join("pjsip_operator.conf")).unwrap(), pjsip_operator);
    asterisk.boot();
    assert!(asterisk.rx("pjsip show endpoints").contains("3001"), "the applied phone survives a restart");
}
