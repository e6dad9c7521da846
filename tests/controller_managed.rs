//! A fleet with a managed node and an agent node against the test-bed's real API server, which
//! serves custom resources only: no Secrets, Services or StatefulSets. The agent node is
//! configured and Ready as usual (real agent, real Asterisk 22); the managed node's status says,
//! through the status subresource, which workload APIs are missing and what to do; the
//! controller keeps running.

mod support;

use std::time::Duration;

use asterisk_operator::controller::agent_policy::AgentPolicy;
use asterisk_operator::controller::kube::{KubeOptions, run};
use asterisk_operator::controller::metrics::ControllerMetrics;
use asterisk_operator::crd::{AsteriskNode, Phone};
use kube::api::Api;
use support::agent as ag;
use support::apiserver::{ApiServer, condition, create, eventually, install_crds};
use support::fleet::{self, on_loopback};

const FLEET: &str = r#"
apiVersion: asterisk.operator.dev/v1alpha1
kind: AsteriskNode
metadata: {name: office-a}
spec:
  numbering: {prefixes: ["3"], length: 4}
  address: 192.0.2.10
  agent: {endpoint: "http://127.0.0.1:1"}
---
apiVersion: asterisk.operator.dev/v1alpha1
kind: Phone
metadata: {name: reception}
spec: {node: office-a, extension: "3001", displayName: Reception}
"#;

const MANAGED: &str = r#"
apiVersion: asterisk.operator.dev/v1alpha1
kind: AsteriskNode
metadata: {name: branch-m}
spec:
  numbering: {prefixes: ["5"], length: 4}
  managed: {image: "registry.example/asterisk-operator:0.1.0", hostNetwork: true}
---
apiVersion: asterisk.operator.dev/v1alpha1
kind: Phone
metadata: {name: branch-desk}
spec: {node: branch-m, extension: "5001"}
---
apiVersion: asterisk.operator.dev/v1alpha1
kind: Trunk
metadata: {name: a-m-iax}
spec: {protocol: iax2, ends: [office-a, branch-m]}
"#;

#[test]
fn the_agent_node_reconciles_while_the_managed_node_names_the_missing_workload_apis() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let server = ApiServer::start("managed");
    let (mut set, addrs) = on_loopback(fleet::with_test_secrets(fleet::parse(FLEET)));
    let (nodes, agents) = ag::boot_with_agents(&rt, &mut set, &addrs);
    let managed = fleet::parse(MANAGED);
    let work = std::env::temp_dir().join(format!("ao-controller-managed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();

    rt.block_on(async {
        let client = server.client().await;
        install_crds(&client).await;
        for n in set.nodes.iter().chain(&managed.nodes) {
            create(&client, n.clone()).await;
        }
        for p in set.phones.iter().chain(&managed.phones) {
            create(&client, p.clone()).await;
        }
        for t in &managed.trunks {
            create(&client, t.clone()).await;
        }
        let opts = KubeOptions {
            agents: AgentPolicy { allow_plaintext_loopback: true, ..AgentPolicy::default() },
            namespaces: vec![],
            secrets_file: Some(work.join("secrets.yaml")),
            resync: Duration::from_secs(1),
            debounce: Duration::from_millis(100),
            lease: None,
            managed: Default::default(),
            cleanup_timeout: None,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let c = client.clone();
        let controller = tokio::spawn(async move {
            let metrics = ControllerMetrics::default();
            run(c, opts, &metrics, async {
                let _ = stopped.await;
            })
            .await
        });

        let node_api: Api<AsteriskNode> = Api::namespaced(client.clone(), "default");
        let phone_api: Api<Phone> = Api::namespaced(client.clone(), "default");
        eventually("office-a Ready", Duration::from_secs(40), || {
            let api = node_api.clone();
            async move {
                let n = api.get_status("office-a").await.unwrap();
                n.status
                    .as_ref()
                    .and_then(|s| condition(&s.conditions, "Ready"))
                    .is_some_and(|c| c.status == "True")
            }
        })
        .await;
        assert!(nodes["office-a"].rx("pjsip show endpoints").contains(" 3001/"));
        assert!(nodes["office-a"].rx("iax2 show peers").contains("a-m-iax"), "its end of the trunk");
        let a = node_api.get_status("office-a").await.unwrap().status.unwrap();
        assert!(condition(&a.conditions, "Managed").is_none(), "an agent node has no Managed condition");

        eventually("branch-m's Managed condition", Duration::from_secs(20), || {
            let api = node_api.clone();
            async move {
                let n = api.get_status("branch-m").await.unwrap();
                n.status.as_ref().and_then(|s| condition(&s.conditions, "Managed")).is_some()
            }
        })
        .await;
        let m = node_api.get_status("branch-m").await.unwrap().status.unwrap();
        let managed_c = condition(&m.conditions, "Managed").unwrap();
        assert_eq!(
            (managed_c.status.as_str(), managed_c.reason.as_str()),
            ("False", "WorkloadAPIUnavailable")
        );
        for api in ["v1 Secrets", "v1 Services", "apps/v1 StatefulSets"] {
            assert!(managed_c.message.contains(api), "{api} not named in {:?}", managed_c.message);
        }
        assert!(managed_c.message.contains("spec.agent"), "says what to do instead: {:?}", managed_c.message);
        assert_eq!(managed_c.observed_generation, Some(1));
        let applied = condition(&m.conditions, "ConfigApplied").unwrap();
        assert_eq!((applied.status.as_str(), applied.reason.as_str()), ("False", "NoAgent"));
        assert_eq!(condition(&m.conditions, "Valid").unwrap().status, "True", "the node itself is valid");
        assert_eq!(condition(&m.conditions, "Ready").unwrap().status, "False");
        let desk = phone_api.get_status("branch-desk").await.unwrap().status.unwrap();
        assert_eq!(condition(&desk.conditions, "ConfigApplied").unwrap().reason, "NoAgent");

        // Still reconciling: an edit on the agent node reaches its Asterisk.
        let patch = serde_json::json!({"spec": {"displayName": "Front Desk"}});
        phone_api
            .patch("reception", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
            .await
            .unwrap();
        let a_node = &nodes["office-a"];
        eventually("the edited phone on office-a", Duration::from_secs(20), || async {
            a_node.rx("pjsip show endpoint 3001").contains("Front Desk")
        })
        .await;
        assert!(!controller.is_finished(), "the controller keeps running");

        let _ = stop.send(());
        controller.await.unwrap().unwrap();
        for agent in agents.into_values() {
            agent.shutdown().await;
        }
    });
    std::fs::remove_dir_all(&work).unwrap();
}
