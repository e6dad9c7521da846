//! The controller against a real API server (the test-bed's apiextensions-apiserver), real
//! agents and real Asterisk 22: it watches the example fleet, configures both nodes, writes
//! status through the status subresource, follows an edit and a delete. That server has no
//! Secrets API, so the controller keeps generated secrets in its secrets file and says so.

mod support;

use std::time::Duration;

use asterisk_operator::controller::agent_policy::AgentPolicy;
use asterisk_operator::controller::kube::{KubeOptions, LeaseSettings, run};
use asterisk_operator::controller::metrics::{ControllerMetrics, serve};
use asterisk_operator::crd::{AsteriskNode, BlfSubscription, Phone, Trunk};
use kube::Resource;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use support::agent as ag;
use support::apiserver::{ApiServer, condition, create, eventually, install_crds};
use support::fleet::{self, on_loopback};

#[test]
fn controller_reconciles_the_fleet_from_a_real_api_server() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let server = ApiServer::start("controller");
    let (mut set, addrs) = on_loopback(fleet::example("two-offices"));
    let (nodes, agents) = ag::boot_with_agents(&rt, &mut set, &addrs);
    let work = std::env::temp_dir().join(format!("ao-controller-kube-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let secrets_file = work.join("secrets.yaml");

    rt.block_on(async {
        let client = server.client().await;
        install_crds(&client).await;
        for r in set.nodes.clone() {
            create(&client, r).await;
        }
        for r in set.trunks.clone() {
            create(&client, r).await;
        }
        for r in set.phones.clone() {
            create(&client, r).await;
        }
        for r in set.blf_subscriptions.clone() {
            create(&client, r).await;
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let client_for_controller = client.clone();
        let opts = KubeOptions {
            agents: AgentPolicy { allow_plaintext_loopback: true, ..AgentPolicy::default() },
            namespaces: vec![],
            secrets_file: Some(secrets_file.clone()),
            resync: Duration::from_secs(2),
            debounce: Duration::from_millis(100),
            // This server has no Lease API: the controller says so and runs as the only replica.
            lease: Some(LeaseSettings {
                namespace: "default".into(),
                name: "asterisk-operator-controller".into(),
                identity: "test".into(),
                duration: Duration::from_secs(15),
            }),
            managed: Default::default(),
            cleanup_timeout: None,
        };
        let metrics = std::sync::Arc::new(ControllerMetrics::default());
        let (http, _task) =
            serve("127.0.0.1:0".parse().unwrap(), metrics.clone(), Duration::from_secs(60)).await.unwrap();
        let m = metrics.clone();
        let controller = tokio::spawn(async move {
            run(client_for_controller, opts, &m, async {
                let _ = stopped.await;
            })
            .await
        });

        let node_api: Api<AsteriskNode> = Api::namespaced(client.clone(), "default");
        let phone_api: Api<Phone> = Api::namespaced(client.clone(), "default");
        let blf_api: Api<BlfSubscription> = Api::namespaced(client.clone(), "default");
        let trunk_api: Api<Trunk> = Api::namespaced(client.clone(), "default");

        // Both nodes configured and Ready, read back through the status subresource.
        for name in ["office-a", "office-b"] {
            eventually(&format!("{name} Ready"), Duration::from_secs(40), || {
                let api = node_api.clone();
                async move {
                    let n = api.get_status(name).await.unwrap();
                    n.status
                        .as_ref()
                        .and_then(|s| condition(&s.conditions, "Ready"))
                        .is_some_and(|c| c.status == "True")
                }
            })
            .await;
        }
        // The controller's own probes and metrics (recorded when the pass that wrote the
        // statuses above finishes).
        eventually("/readyz and nodes_ready", Duration::from_secs(10), || async move {
            let (code, body) = ag::get(http, "/metrics");
            let ready = ag::get(http, "/readyz").0 == 200;
            ready
                && code == 200
                && ag::value(&ag::parse_metrics(&body), "asterisk_operator_nodes_ready") == 2.0
        })
        .await;
        let (_, body) = ag::get(http, "/metrics");
        let m = ag::parse_metrics(&body);
        assert!(ag::value(&m, r#"asterisk_operator_bundles_pushed_total{result="ok"}"#) >= 2.0, "{body}");
        assert!(
            ag::value(&m, r#"asterisk_operator_resources{kind="Phone",result="ready"}"#) >= 4.0,
            "{body}"
        );
        let a = node_api.get_status("office-a").await.unwrap();
        let st = a.status.unwrap();
        assert_eq!(st.phones, Some(2));
        assert!(st.asterisk_version.as_deref().is_some_and(|v| v.contains("22.")), "{st:?}");
        assert!(st.applied_bundle_hash.is_some());
        let ready = condition(&st.conditions, "Ready").unwrap();
        assert_eq!(ready.observed_generation, Some(1));
        assert!(nodes["office-a"].rx("pjsip show endpoints").contains(" 3001/"));
        assert!(nodes["office-b"].rx("pjsip show endpoints").contains(" 4001/"));
        let trunk = trunk_api.get_status("a-b-iax").await.unwrap();
        assert_eq!(condition(&trunk.status.unwrap().conditions, "ConfigApplied").unwrap().status, "True");
        assert!(std::fs::read_to_string(&secrets_file).unwrap().contains("name: phone-reception"));

        // Edit a phone: the change reaches Asterisk, and its status follows the new generation.
        let patch = serde_json::json!({"spec": {"displayName": "Accounts Desk"}});
        phone_api.patch("accounts", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        let a_node = &nodes["office-a"];
        eventually("the edited phone on office-a", Duration::from_secs(20), || async {
            a_node.rx("pjsip show endpoint 3002").contains("Accounts Desk")
        })
        .await;
        eventually("the phone's status at generation 2", Duration::from_secs(20), || {
            let api = phone_api.clone();
            async move {
                let p = api.get_status("accounts").await.unwrap();
                p.status
                    .as_ref()
                    .and_then(|s| condition(&s.conditions, "Ready"))
                    .is_some_and(|c| c.observed_generation == Some(2) && c.status == "True")
            }
        })
        .await;

        // Live resources carry the cleanup finalizer.
        let p = phone_api.get("sales-2").await.unwrap();
        assert!(
            p.meta()
                .finalizers
                .as_ref()
                .is_some_and(|f| f.iter().any(|f| f == "asterisk.operator.dev/cleanup"))
        );

        // Delete a phone: gone from its node, then its finalizer is released and the object goes;
        // the subscription that watched it says why it is invalid.
        phone_api.delete("sales-2", &DeleteParams::default()).await.unwrap();
        let b_node = &nodes["office-b"];
        eventually("4002 gone from office-b", Duration::from_secs(20), || async {
            !b_node.rx("pjsip show endpoints").contains(" 4002/")
        })
        .await;
        eventually("the deleted phone's object gone", Duration::from_secs(20), || {
            let api = phone_api.clone();
            async move { api.get_opt("sales-2").await.unwrap().is_none() }
        })
        .await;
        eventually("the BLF subscription invalid", Duration::from_secs(20), || {
            let api = blf_api.clone();
            async move {
                let b = api.get_status("reception-watches-sales").await.unwrap();
                b.status.as_ref().and_then(|s| condition(&s.conditions, "Valid")).is_some_and(|c| {
                    c.status == "False"
                        && c.reason == "UnknownTarget"
                        && c.message.starts_with("spec.targets[1].extension")
                })
            }
        })
        .await;

        // Passes are counted: "nothing happened" is checked after passes, not after a sleep.
        let passes = || {
            let m = ag::parse_metrics(&ag::get(http, "/metrics").1);
            ag::value(&m, r#"asterisk_operator_reconciles_total{result="ok"}"#)
                + ag::value(&m, r#"asterisk_operator_reconciles_total{result="degraded"}"#)
        };
        let two_more_passes =
            |from: f64| {
                eventually("two more passes", Duration::from_secs(20), move || async move {
                    passes() >= from + 2.0
                })
            };

        // A phone deleted while its node is invalid: nothing can be pushed to that node, so the
        // phone stays (its credentials are still on the PBX) until the node is fixed — then a
        // bundle without it is applied and only then the phone goes.
        let invalid = serde_json::json!({"spec": {"phoneContext": "globals"}});
        node_api.patch("office-a", &PatchParams::default(), &Patch::Merge(&invalid)).await.unwrap();
        eventually("office-a invalid", Duration::from_secs(20), || {
            let api = node_api.clone();
            async move {
                let n = api.get_status("office-a").await.unwrap();
                n.status.as_ref().and_then(|s| condition(&s.conditions, "Valid")).is_some_and(|c| {
                    c.status == "False" && c.reason == "ReservedName" && c.observed_generation == Some(2)
                })
            }
        })
        .await;
        phone_api.delete("reception", &DeleteParams::default()).await.unwrap();
        two_more_passes(passes()).await;
        let held = phone_api.get_opt("reception").await.unwrap().expect("held by its finalizer");
        assert!(held.meta().deletion_timestamp.is_some());
        assert!(
            a_node.rx("pjsip show endpoints").contains(" 3001/"),
            "the PBX still has it: nothing was pushed"
        );
        let fixed = serde_json::json!({"spec": {"phoneContext": "operator-phones"}});
        node_api.patch("office-a", &PatchParams::default(), &Patch::Merge(&fixed)).await.unwrap();
        eventually("3001's credentials gone from office-a", Duration::from_secs(30), || async {
            !a_node.rx("pjsip show endpoints").contains(" 3001/")
        })
        .await;
        eventually(
            "the phone released once its node applied a bundle without it",
            Duration::from_secs(20),
            || {
                let api = phone_api.clone();
                async move { api.get_opt("reception").await.unwrap().is_none() }
            },
        )
        .await;

        // Deleting a node beside an existing server: its agent is pushed the empty bundle, so no
        // phone or trunk credential of the operator's stays on that PBX, and only then it goes.
        assert!(b_node.rx("pjsip show endpoints").contains(" 4001/"));
        assert!(b_node.rx("iax2 show peers").contains("a-b-iax"), "{}", b_node.rx("iax2 show peers"));
        node_api.delete("office-b", &DeleteParams::default()).await.unwrap();
        eventually("office-b gone", Duration::from_secs(30), || {
            let api = node_api.clone();
            async move { api.get_opt("office-b").await.unwrap().is_none() }
        })
        .await;
        let endpoints = b_node.rx("pjsip show endpoints");
        assert!(!endpoints.contains(" 4001/") && !endpoints.contains(" 4002/"), "{endpoints}");
        assert!(!b_node.rx("iax2 show peers").contains("a-b-iax"), "{}", b_node.rx("iax2 show peers"));
        assert!(!b_node.etc_dir().join("pjsip_operator.conf").exists(), "the operator's files are removed");
        // A phone whose node is gone is not held by its finalizer.
        phone_api.delete("sales-1", &DeleteParams::default()).await.unwrap();
        eventually("sales-1 released although its node is gone", Duration::from_secs(20), || {
            let api = phone_api.clone();
            async move { api.get_opt("sales-1").await.unwrap().is_none() }
        })
        .await;

        // A node whose agent never answers holds its deletion (the default cleanup timeout
        // gives up after 30 minutes); the skip-cleanup annotation releases it at once.
        let lost: AsteriskNode = serde_json::from_value(serde_json::json!({
            "apiVersion": "asterisk.operator.dev/v1alpha1", "kind": "AsteriskNode",
            "metadata": {"name": "office-c", "namespace": "default"},
            "spec": {"numbering": {"prefixes": ["5"], "length": 4}, "address": "127.0.0.1",
                "agent": {"endpoint": "http://127.0.0.1:1"}}}))
        .unwrap();
        create(&client, lost).await;
        eventually("office-c carries the finalizer", Duration::from_secs(20), || {
            let api = node_api.clone();
            async move {
                api.get("office-c")
                    .await
                    .unwrap()
                    .meta()
                    .finalizers
                    .iter()
                    .flatten()
                    .any(|f| f == "asterisk.operator.dev/cleanup")
            }
        })
        .await;
        node_api.delete("office-c", &DeleteParams::default()).await.unwrap();
        two_more_passes(passes()).await;
        assert!(
            node_api.get_opt("office-c").await.unwrap().is_some(),
            "held: its agent never applied the empty bundle"
        );
        let skip =
            serde_json::json!({"metadata": {"annotations": {"asterisk.operator.dev/skip-cleanup": "true"}}});
        node_api.patch("office-c", &PatchParams::default(), &Patch::Merge(&skip)).await.unwrap();
        eventually("office-c released by the escape hatch", Duration::from_secs(20), || {
            let api = node_api.clone();
            async move { api.get_opt("office-c").await.unwrap().is_none() }
        })
        .await;

        let _ = stop.send(());
        controller.await.unwrap().unwrap();
        for agent in agents.into_values() {
            agent.shutdown().await;
        }
    });
    std::fs::remove_dir_all(&work).unwrap();
}
