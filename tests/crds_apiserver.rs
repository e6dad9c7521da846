//! The checked-in CRDs on a real API server (apiextensions-apiserver from the test-bed): they
//! install (so their schemas are structural), every example resource is accepted with its
//! defaults filled in, the status subresource works, and invalid resources are refused with a
//! message that names the field.

mod support;

use asterisk_operator::crd::{AsteriskNode, BlfSubscription, Phone, Trunk};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde_json::{Value, json};
use support::apiserver::ApiServer;
use support::fleet;

fn api_resource(kind: &str) -> ApiResource {
    match kind {
        "AsteriskNode" => ApiResource::erase::<AsteriskNode>(&()),
        "Trunk" => ApiResource::erase::<Trunk>(&()),
        "Phone" => ApiResource::erase::<Phone>(&()),
        "BlfSubscription" => ApiResource::erase::<BlfSubscription>(&()),
        other => panic!("not one of ours: {other}"),
    }
}

/// Creates one manifest document (as `kubectl create` would send it).
async fn create(client: &Client, doc: &Value) -> Result<DynamicObject, kube::Error> {
    let kind = doc["kind"].as_str().unwrap();
    let ns = doc["metadata"]["namespace"].as_str().unwrap_or("default");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &api_resource(kind));
    let obj: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
    api.create(&PostParams::default(), &obj).await
}

fn our_documents(path: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(&fleet::read(path)).unwrap();
    docs.into_iter()
        .filter(|d| d["apiVersion"].as_str().is_some_and(|v| v.starts_with("asterisk.operator.dev/")))
        .collect()
}

#[tokio::test]
async fn crds_work_on_a_real_api_server() {
    let server = ApiServer::start("crds");
    let client = server.client().await;
    support::apiserver::install_crds(&client).await;

    // Every example resource is accepted.
    for example in ["examples/two-offices.yaml", "examples/three-sites.yaml"] {
        for doc in our_documents(example) {
            let name = doc["metadata"]["name"].as_str().unwrap().to_owned();
            create(&client, &doc).await.unwrap_or_else(|e| panic!("{example}: {name} refused: {e}"));
        }
    }
    // Defaults from the schema are filled in by the server, and the typed client reads them.
    let nodes: Api<AsteriskNode> = Api::namespaced(client.clone(), "default");
    let b = nodes.get("office-b").await.unwrap();
    assert_eq!(b.spec.sip.port, 5060);
    assert_eq!(b.spec.iax.port, 4569);
    assert_eq!(b.spec.phone_context, "operator-phones");
    assert_eq!(b.spec.codecs, vec!["ulaw", "alaw"]);
    let trunks: Api<Trunk> = Api::namespaced(client.clone(), "default");
    assert!(trunks.get("a-b-sip").await.unwrap().spec.qualify);

    // The status subresource takes conditions (server-side apply, merged by type).
    let status = json!({
        "apiVersion": "asterisk.operator.dev/v1alpha1", "kind": "AsteriskNode",
        "status": {"conditions": [{
            "type": "Ready", "status": "True", "reason": "Applied", "message": "bundle applied",
            "lastTransitionTime": "2026-11-23T10:00:00Z", "observedGeneration": 1
        }], "phones": 2}
    });
    nodes
        .patch_status(
            "office-a",
            &PatchParams::apply("asterisk-operator-test").force(),
            &Patch::Apply(&status),
        )
        .await
        .unwrap();
    let a = nodes.get_status("office-a").await.unwrap();
    let st = a.status.clone().unwrap();
    assert_eq!(st.phones, Some(2));
    assert_eq!(st.conditions[0].type_, "Ready");
    assert_eq!(a.meta().generation, Some(1), "a status write does not bump the generation");

    // Invalid resources are refused at once, with a message that names the field.
    let api = "asterisk.operator.dev/v1alpha1";
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"apiVersion": api, "kind": "Trunk", "metadata": {"name": "bad-protocol"},
                   "spec": {"protocol": "sip", "ends": ["office-a", "office-b"]}}),
            "spec.protocol",
        ),
        (
            json!({"apiVersion": api, "kind": "Trunk", "metadata": {"name": "bad-auth"},
                   "spec": {"protocol": "iax2", "ends": ["office-a", "office-b"], "auth": {"method": "sha1"}}}),
            "spec.auth.method",
        ),
        (
            json!({"apiVersion": api, "kind": "Trunk", "metadata": {"name": "digest-on-iax"},
                   "spec": {"protocol": "iax2", "ends": ["office-a", "office-b"], "auth": {"method": "digest"}}}),
            "spec.auth.method",
        ),
        (
            json!({"apiVersion": api, "kind": "Trunk", "metadata": {"name": "self"},
                   "spec": {"protocol": "iax2", "ends": ["office-a", "office-a"]}}),
            "spec.ends",
        ),
        (
            json!({"apiVersion": api, "kind": "Trunk", "metadata": {"name": "three-ends"},
                   "spec": {"protocol": "iax2", "ends": ["office-a", "office-b", "hq"]}}),
            "spec.ends",
        ),
        (
            json!({"apiVersion": api, "kind": "Phone", "metadata": {"name": "bad-mac"},
                   "spec": {"node": "office-a", "extension": "3009",
                            "device": {"vendor": "cisco", "model": "7931G", "mac": "00:1a:2b:3c:4d"}}}),
            "spec.device.mac",
        ),
        (
            json!({"apiVersion": api, "kind": "Phone", "metadata": {"name": "bad-vendor"},
                   "spec": {"node": "office-a", "extension": "3009",
                            "device": {"vendor": "acme", "model": "1", "mac": "00:1a:2b:3c:4d:5e"}}}),
            "spec.device.vendor",
        ),
        (
            json!({"apiVersion": api, "kind": "Phone", "metadata": {"name": "lettered"},
                   "spec": {"node": "office-a", "extension": "30a1"}}),
            "spec.extension",
        ),
        (
            json!({"apiVersion": api, "kind": "AsteriskNode", "metadata": {"name": "bad-port"},
                   "spec": {"numbering": {"prefixes": ["8"], "length": 4}, "agent": {"endpoint": "https://x:7443"},
                            "sip": {"port": 70000}}}),
            "spec.sip.port",
        ),
        (
            json!({"apiVersion": api, "kind": "AsteriskNode", "metadata": {"name": "bad-prefix"},
                   "spec": {"numbering": {"prefixes": ["8a"], "length": 4}, "agent": {"endpoint": "https://x:7443"}}}),
            "spec.numbering.prefixes[0]",
        ),
        (
            json!({"apiVersion": api, "kind": "AsteriskNode", "metadata": {"name": "agent-and-managed"},
                   "spec": {"numbering": {"prefixes": ["8"], "length": 4}, "agent": {"endpoint": "https://x:7443"},
                            "managed": {"image": "asterisk:22"}}}),
            "spec.agent",
        ),
        (
            json!({"apiVersion": api, "kind": "BlfSubscription", "metadata": {"name": "two-watchers"},
                   "spec": {"watcher": {"phone": "reception", "node": "office-a"}, "targets": [{"extension": "4001"}]}}),
            "watcher.phone or watcher.node",
        ),
        (
            json!({"apiVersion": api, "kind": "BlfSubscription", "metadata": {"name": "no-targets"},
                   "spec": {"watcher": {"node": "office-a"}, "targets": []}}),
            "spec.targets",
        ),
    ];
    let mut failures = Vec::new();
    for (doc, field) in &cases {
        let name = doc["metadata"]["name"].as_str().unwrap();
        match create(&client, doc).await {
            Ok(_) => failures.push(format!("{name}: accepted")),
            Err(kube::Error::Api(status)) => {
                if status.code != 422 || !status.message.contains(field) {
                    failures
                        .push(format!("{name}: {} {:?} does not name {field}", status.code, status.message));
                }
            }
            Err(other) => failures.push(format!("{name}: {other}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
