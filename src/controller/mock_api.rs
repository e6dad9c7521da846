//! Test-only: kube-rs's mocked API service, for what the real test API server cannot serve
//! (Secrets, Services, StatefulSets, Events, Leases). One fixture for every controller test.

use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::Value;

use crate::crd::{AsteriskNode, Phone, PhoneSpec};

/// The test's end of the mocked API service.
pub(crate) type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// A client whose requests the test answers through the returned handle.
pub(crate) fn mock() -> (Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

/// Answers the next request with 200 and `reply` (or its own body) and returns
/// (method, uri, body).
pub(crate) async fn answer(handle: &mut Handle, reply: Option<Value>) -> (Method, String, Value) {
    respond(handle, 200, |body| reply.unwrap_or_else(|| body.clone())).await
}

/// Answers the next request with HTTP `code` and what `reply` makes of its body; returns
/// (method, uri, body).
pub(crate) async fn respond(
    handle: &mut Handle,
    code: u16,
    reply: impl FnOnce(&Value) -> Value,
) -> (Method, String, Value) {
    let (request, send) = handle.next_request().await.expect("the client sent a request");
    let (method, uri) = (request.method().clone(), request.uri().to_string());
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let reply = reply(&body);
    send.send_response(
        Response::builder().status(code).body(Body::from(serde_json::to_vec(&reply).unwrap())).unwrap(),
    );
    (method, uri, body)
}

/// True when the client sends nothing more within 200 ms.
pub(crate) async fn silent(handle: &mut Handle) -> bool {
    tokio::time::timeout(std::time::Duration::from_millis(200), handle.next_request()).await.is_err()
}

/// The Status a server answers for a resource type it does not serve.
pub(crate) fn not_found() -> Value {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "the server could not find the requested resource", "reason": "NotFound",
        "details": {}, "code": 404})
}

/// A discovery answer: the resources `names` of `group_version`.
pub(crate) fn resource_list(group_version: &str, names: &[&str]) -> Value {
    let resources: Vec<Value> = names
        .iter()
        .map(|n| serde_json::json!({"name": n, "singularName": "", "namespaced": true, "kind": "X", "verbs": []}))
        .collect();
    serde_json::json!({"kind": "APIResourceList", "groupVersion": group_version, "resources": resources})
}

/// Phone `name` on office-a as read from an API server (namespace, uid, generation 3).
pub(crate) fn phone(name: &str) -> Phone {
    let mut p = Phone::new(name, PhoneSpec::new("office-a", "3001"));
    p.metadata.namespace = Some("default".into());
    p.metadata.uid = Some("uid-1".into());
    p.metadata.generation = Some(3);
    p
}

/// The managed node office-a (host network) as read from an API server (it has a uid).
pub(crate) fn managed_node() -> AsteriskNode {
    let spec = serde_json::from_value(serde_json::json!({
        "numbering": {"prefixes": ["3"], "length": 4},
        "managed": {"image": "registry.example/asterisk-operator:0.1.0", "hostNetwork": true}
    }))
    .unwrap();
    let mut node = AsteriskNode::new("office-a", spec);
    node.metadata.namespace = Some("default".into());
    node.metadata.uid = Some("uid-node".into());
    node
}

/// Settings that let [`managed_node`] run: its image and host networking allowed.
pub(crate) fn managed_settings() -> crate::controller::managed_settings::ManagedSettings {
    crate::controller::managed_settings::ManagedSettings {
        image_prefixes: vec!["registry.example/asterisk-operator:".into()],
        allow_host_network: true,
        ..Default::default()
    }
}
