//! Namespaces are tenants, and node names are unique only within one. Two namespaces each have
//! a node `office-a` with its own agent beside its own real Asterisk 22, each agent holding the
//! credentials the controller keeps for that namespace's node. Each namespace's bundle reaches
//! only its own agent: pointing one namespace's node at the other's agent fails the pinned TLS
//! handshake, and a push crafted with one namespace's credentials for the other namespace is
//! refused by the agent itself.
//!
//! Needs the test-bed: `bash testbed/setup.sh`.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use asterisk_operator::agent::proto::Bundle;
use asterisk_operator::agent::{ClientOptions, ServerTls, bundle_to_proto, connect};
use asterisk_operator::controller::agent_policy::AgentPolicy;
use asterisk_operator::controller::credentials::NodeCredentials;
use asterisk_operator::controller::manifests::{ManifestsController, ManifestsOptions};
use asterisk_operator::controller::status::ResourceStatus;
use asterisk_operator::manifest::secrets_yaml;
use asterisk_operator::render::Bundle as RenderedBundle;
use asterisk_operator::topology::{Kind, ObjectRef};
use support::agent as ag;
use support::asterisk::fresh_address;

const TEAMS: [&str; 2] = ["team-a", "team-b"];

fn fleet(team: &str, endpoint: &str) -> String {
    format!(
        r#"apiVersion: asterisk.operator.dev/v1alpha1
kind: AsteriskNode
metadata: {{name: office-a, namespace: {team}}}
spec:
  numbering: {{prefixes: ["3"], length: 4}}
  address: 192.0.2.10
  agent: {{endpoint: "{endpoint}"}}
---
apiVersion: asterisk.operator.dev/v1alpha1
kind: Phone
metadata: {{name: desk, namespace: {team}}}
spec: {{node: office-a, extension: "3001", displayName: "Desk of {team}"}}
"#
    )
}

fn applied(statuses: &BTreeMap<ObjectRef, ResourceStatus>, team: &str) -> (String, String, String) {
    let c = statuses[&ObjectRef::new(Kind::AsteriskNode, team, "office-a")]
        .conditions()
        .iter()
        .find(|c| c.type_ == "ConfigApplied")
        .unwrap()
        .clone();
    (c.status, c.reason, c.message)
}

#[test]
fn each_namespace_reaches_only_its_own_agent() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let work = std::env::temp_dir().join(format!("ao-tenancy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("fleet")).unwrap();

    // Per namespace: its node's credentials (kept in the secrets file, as the controller keeps
    // them), an Asterisk and an agent serving TLS with them, checking the namespace.
    let mut kept = String::new();
    let mut nodes = BTreeMap::new();
    let mut agents = BTreeMap::new();
    let mut creds = BTreeMap::new();
    for team in TEAMS {
        let c = NodeCredentials::generate(team, "office-a", false).unwrap();
        kept.push_str(&secrets_yaml(team, &BTreeMap::from([("asterisk-office-a".to_owned(), c.values())])));
        let asterisk = ag::asterisk_for_agent(&format!("{team}-office-a"), fresh_address());
        let dir = work.join(team);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tls.crt"), &c.tls_cert_pem).unwrap();
        std::fs::write(dir.join("tls.key"), c.tls_key_pem.expose()).unwrap();
        let mut opts = ag::options(&asterisk);
        opts.node.node = "office-a".into();
        opts.node.namespace = team.into();
        opts.tls = Some(ServerTls { cert: dir.join("tls.crt"), key: dir.join("tls.key"), client_ca: None });
        opts.token = Some(c.agent_token.clone());
        (opts.plaintext, opts.no_auth) = (false, false);
        agents.insert(team, ag::start(&rt, opts));
        nodes.insert(team, asterisk);
        creds.insert(team, c);
    }
    std::fs::write(work.join("secrets.yaml"), kept).unwrap();
    let url = |team: &str| format!("https://{}", agents[team].grpc_addr);
    let write_fleet = |team: &str, endpoint: &str| {
        std::fs::write(work.join("fleet").join(format!("{team}.yaml")), fleet(team, endpoint)).unwrap()
    };
    for team in TEAMS {
        write_fleet(team, &url(team));
    }
    let mut controller = ManifestsController::new(ManifestsOptions {
        inputs: vec![work.join("fleet")],
        status_file: work.join("status.yaml"),
        secrets_file: work.join("secrets.yaml"),
        agents: AgentPolicy::default(),
    });

    // Each namespace's bundle, over TLS with its own node's credentials, to its own agent.
    let report = rt.block_on(controller.reconcile()).unwrap();
    assert_eq!(
        report.pushed,
        BTreeMap::from([("team-a/office-a".into(), true), ("team-b/office-a".into(), true)]),
        "{:#?}",
        controller.statuses()
    );
    for team in TEAMS {
        let other = TEAMS.iter().find(|t| **t != team).unwrap();
        let endpoint = nodes[team].rx("pjsip show endpoint 3001");
        assert!(endpoint.contains(&format!("Desk of {team}")), "{team}: {endpoint}");
        assert!(!endpoint.contains(&format!("Desk of {other}")), "{team} got {other}'s bundle");
    }

    // team-b's node now names team-a's agent: the handshake fails (team-a's agent holds another
    // key than the one team-b's node pins), so nothing reaches it.
    std::fs::write(
        work.join("fleet").join("team-b.yaml"),
        fleet("team-b", &url("team-a")).replace("Desk of team-b", "Desk of team-b, moved"),
    )
    .unwrap();
    let report = rt.block_on(controller.reconcile()).unwrap();
    assert_eq!(report.pushed.get("team-b/office-a"), Some(&false), "{report:?}");
    let (status, reason, _) = applied(controller.statuses(), "team-b");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "AgentUnreachable"));
    assert!(nodes["team-a"].rx("pjsip show endpoint 3001").contains("Desk of team-a"));
    assert!(!nodes["team-a"].rx("pjsip show endpoint 3001").contains("moved"));

    // A push crafted with team-a's own credentials but for team-b's node: the agent refuses it.
    let crafted: Bundle = bundle_to_proto(&controller_bundle(&work, "team-b"));
    assert_eq!(crafted.namespace, "team-b");
    let access = creds["team-a"].agent_access("team-a", "office-a", false);
    let refused = rt.block_on(async {
        let mut client = connect(&ClientOptions::with_access(&url("team-a"), access)).await.unwrap();
        client.apply(crafted).await.unwrap_err()
    });
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("serves node team-a/office-a, not team-b/office-a"), "{refused:?}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(!nodes["team-a"].rx("pjsip show endpoint 3001").contains("moved"), "nothing was applied");

    for (_, agent) in agents {
        rt.block_on(agent.shutdown());
    }
    std::fs::remove_dir_all(&work).unwrap();
}

/// team's bundle as `render` makes it from the fleet folder.
fn controller_bundle(work: &std::path::Path, team: &str) -> RenderedBundle {
    let loaded =
        asterisk_operator::offline::load_fleets(&[work.join("fleet")], &work.join("secrets.yaml")).unwrap();
    loaded.fleets[team].bundles["office-a"].clone()
}
