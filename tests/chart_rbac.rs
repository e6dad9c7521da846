//! The chart's RBAC is exactly what the controller uses. A fake API server (a recording tower
//! service standing in for Kubernetes, which the test-bed's API server is not: it serves no
//! Secrets, Services, StatefulSets, Events or Leases) answers full reconciles of a fleet with a
//! node beside an existing server and a managed node; every call it sees is mapped to
//! (API group, resource, verb) and must be granted by the chart's rendered roles — and every grant
//! must be used, unless this file says why a reconcile cannot show it. Run once watching all
//! namespaces (the ClusterRole) and once with `watchNamespaces` (Roles only, every call in the
//! watched namespace).
//!
//! Needs helm from the test-bed: `bash testbed/setup.sh`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use asterisk_operator::controller::agent_policy::AgentPolicy;
use asterisk_operator::controller::credentials::NodeCredentials;
use asterisk_operator::controller::kube::{KubeOptions, LeaseSettings, run};
use asterisk_operator::controller::managed;
use asterisk_operator::controller::managed_settings::ManagedSettings;
use asterisk_operator::controller::mesh_pki::{self, MeshCa};
use asterisk_operator::controller::metrics::ControllerMetrics;
use asterisk_operator::crd::AsteriskNode;
use http::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use support::fake_api::{Body, LeaseStore, json_body, open_watch, status};
use support::fleet::repo;

const NS: &str = "tenant-a";
const CONTROLLER_NS: &str = "asterisk-operator";
const IMAGE: &str = "ghcr.io/asterisk-operator/asterisk-operator";

/// (API group, resource or resource/subresource, verb).
type Grant = (String, String, String);

/// Grants a reconcile of this fleet cannot show, and why.
const NOT_SHOWN: &[(&str, &str, &str, &str)] = &[(
    "events.k8s.io",
    "events",
    "patch",
    "kube-rs's Event recorder patches an Event only when the same Event repeats within minutes; a few passes emit each transition once",
)];

/// The fleet as the API server holds it: kind → objects.
fn fleet() -> BTreeMap<&'static str, Vec<Value>> {
    let meta = |name: &str, uid: &str| json!({"name": name, "namespace": NS, "uid": uid, "resourceVersion": "1", "generation": 1});
    let cr = |kind: &str, name: &str, spec: Value| json!({"apiVersion": "asterisk.operator.dev/v1alpha1", "kind": kind, "metadata": meta(name, &format!("uid-{name}")), "spec": spec});
    BTreeMap::from([
        (
            "asterisknodes",
            vec![
                cr(
                    "AsteriskNode",
                    "office-a",
                    json!({"numbering": {"prefixes": ["3"], "length": 4}, "address": "192.0.2.10", "agent": {"endpoint": "https://127.0.0.1:1"}}),
                ),
                cr(
                    "AsteriskNode",
                    "office-b",
                    json!({"numbering": {"prefixes": ["4"], "length": 4}, "managed": {"image": format!("{IMAGE}:0.1.0")}}),
                ),
            ],
        ),
        ("trunks", vec![cr("Trunk", "a-b", json!({"protocol": "iax2", "ends": ["office-a", "office-b"]}))]),
        (
            "phones",
            vec![
                cr("Phone", "desk-a", json!({"node": "office-a", "extension": "3001"})),
                // Its default Secret exists and is someone else's: created → 409 → read → left alone.
                cr("Phone", "desk-b", json!({"node": "office-b", "extension": "4001"})),
            ],
        ),
        (
            "blfsubscriptions",
            vec![cr(
                "BlfSubscription",
                "desk-a-watches",
                json!({"watcher": {"phone": "desk-a"}, "targets": [{"extension": "4001"}]}),
            )],
        ),
    ])
}

/// The labelled Secrets the cache holds: the namespace's mesh CA, office-a's Secret from before
/// the mesh (so its mesh keys are written), and office-b's current one (so its unchanged
/// workload is only observed on later passes).
fn secrets() -> &'static [Value] {
    static SECRETS: std::sync::OnceLock<Vec<Value>> = std::sync::OnceLock::new();
    SECRETS.get_or_init(|| {
        let settings = ManagedSettings::default();
        let now = SystemTime::now();
        let ca = MeshCa::generate(NS, now).unwrap();
        let node = |i: usize| -> AsteriskNode {
            serde_json::from_value(fleet()["asterisknodes"][i].clone()).unwrap()
        };
        let a = NodeCredentials::generate(NS, "office-a", false).unwrap();
        let b = NodeCredentials::generate(NS, "office-b", true).unwrap();
        let leaf_b = ca.issue("office-b", now).unwrap();
        [
            mesh_pki::ca_secret(NS, &ca, &settings),
            managed::secret(&node(0), &a, None, &settings).unwrap(),
            managed::secret(&node(1), &b, Some(&leaf_b), &settings).unwrap(),
        ]
        .iter()
        .map(|s| serde_json::to_value(s).unwrap())
        .collect()
    })
}

/// What the fake server saw: (method, path, query).
type Calls = Arc<Mutex<Vec<(Method, String, String)>>>;

async fn answer(
    req: Request<kube::client::Body>,
    calls: Calls,
    lease: Arc<Mutex<LeaseStore>>,
) -> Response<Body> {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let query = req.uri().query().unwrap_or_default().to_owned();
    calls.lock().unwrap().push((method.clone(), path.clone(), query.clone()));
    let body: Value =
        serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap_or(Value::Null);
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let list = |kind: &str, items: Vec<Value>| json!({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items});
    let ok = |v: &Value| json_body(StatusCode::OK, v);
    if query.contains("watch=true") {
        return open_watch();
    }
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["version"]) => {
            ok(&json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"}))
        }
        ("GET", ["api", "v1"]) => ok(&json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
            {"name": "secrets", "singularName": "", "namespaced": true, "kind": "Secret", "verbs": []},
            {"name": "services", "singularName": "", "namespaced": true, "kind": "Service", "verbs": []}]})),
        ("GET", ["apis", "apps", "v1"]) => {
            ok(&json!({"kind": "APIResourceList", "groupVersion": "apps/v1", "resources": [
            {"name": "statefulsets", "singularName": "", "namespaced": true, "kind": "StatefulSet", "verbs": []}]}))
        }
        // Collections of the fleet's kinds (all namespaces, or the watched one).
        ("GET", [.., kind]) if fleet().contains_key(kind) => ok(&list("List", fleet()[kind].clone())),
        ("GET", [.., "secrets"]) => ok(&list("SecretList", secrets().to_vec())),
        ("GET", [.., "secrets", _]) => ok(&json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": parts[parts.len() - 1], "namespace": NS}, "data": {"secret": "c29tZW9uZSBlbHNlJ3M="}})),
        ("POST", [.., "secrets"]) if body["metadata"]["name"] == "phone-desk-b" => json_body(
            StatusCode::CONFLICT,
            &status(409, "AlreadyExists", "secrets \"phone-desk-b\" already exists"),
        ),
        (m, [.., "leases"]) => lease.lock().unwrap().answer(m, false, &body),
        (m, [.., "leases", _]) => lease.lock().unwrap().answer(m, true, &body),
        ("GET", [.., "statefulsets", name, "status"]) => {
            ok(&json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": NS}, "status": {"replicas": 1, "readyReplicas": 1}}))
        }
        // A resource of the fleet, patched (finalizer) or its status applied: answer the object.
        // .../namespaces/<ns>/<kind>/<name>[/status]
        ("PATCH", [_, _, _, _, _, kind, name, ..]) if fleet().contains_key(kind) => {
            let object = fleet()[kind].iter().find(|o| o["metadata"]["name"] == *name).cloned();
            ok(&object.unwrap_or(body))
        }
        ("PATCH", [.., "statefulsets", _]) => {
            let mut sts = body.clone();
            sts["status"] = json!({"replicas": 1, "readyReplicas": 1});
            ok(&sts)
        }
        ("POST", _) => json_body(StatusCode::CREATED, &body),
        ("PATCH", _) => ok(&body),
        _ => json_body(
            StatusCode::NOT_FOUND,
            &status(404, "NotFound", "the server could not find the requested resource"),
        ),
    }
}

/// Runs the controller against the fake server for a few passes; returns every call.
fn record(namespaces: &[&str]) -> Vec<(Method, String, String)> {
    let calls: Calls = Arc::default();
    let lease = Arc::new(Mutex::new(LeaseStore::default()));
    let (c, l) = (calls.clone(), lease.clone());
    let service = tower::service_fn(move |req| {
        let (c, l) = (c.clone(), l.clone());
        async move { Ok::<_, Infallible>(answer(req, c, l).await) }
    });
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let client = kube::Client::new(service, NS);
        let opts = KubeOptions {
            agents: AgentPolicy::default(),
            namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
            secrets_file: None,
            resync: Duration::from_millis(300),
            debounce: Duration::from_millis(50),
            lease: Some(LeaseSettings {
                namespace: CONTROLLER_NS.into(),
                name: "asterisk-operator-controller".into(),
                identity: "controller-0".into(),
                duration: Duration::from_secs(15),
            }),
            managed: ManagedSettings {
                image_prefixes: vec![format!("{IMAGE}:")],
                ..ManagedSettings::default()
            },
            cleanup_timeout: None,
        };
        let metrics = ControllerMetrics::default();
        run(client, opts, &metrics, tokio::time::sleep(Duration::from_secs(3))).await.unwrap();
    });
    calls.lock().unwrap().clone()
}

/// (group, resource, verb) of a resource request; `None` for discovery (non-resource URLs).
fn grant_of(method: &Method, path: &str, query: &str) -> Option<(Grant, Option<String>)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (resource, named) = match rest {
        [] => return None,
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, sub] => (format!("{resource}/{sub}"), true),
        _ => return None,
    };
    let verb = match (method.as_str(), named) {
        ("GET", false) if query.contains("watch=true") => "watch",
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", _) => "delete",
        (m, _) => panic!("unexpected method {m}"),
    };
    Some(((group.to_owned(), resource, verb.to_owned()), namespace))
}

/// The chart's rendered roles: namespace (`None`: cluster-wide) → grants.
fn chart_grants(set: Option<&str>) -> BTreeMap<Option<String>, BTreeSet<Grant>> {
    let helm = PathBuf::from("/var/cache/asterisk-operator/bin/helm");
    assert!(helm.exists(), "helm is missing: run `bash testbed/setup.sh`");
    let mut cmd = Command::new(helm);
    cmd.args(["template", "ao", "--namespace", CONTROLLER_NS]).arg(repo().join("charts/asterisk-operator"));
    if let Some(set) = set {
        cmd.args(["--set", set]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut grants: BTreeMap<Option<String>, BTreeSet<Grant>> = BTreeMap::new();
    for doc in String::from_utf8_lossy(&out.stdout).split("\n---") {
        let v: Value = serde_saphyr::from_str(doc).unwrap_or(Value::Null);
        let scope = match v["kind"].as_str() {
            Some("ClusterRole") => None,
            Some("Role") => Some(v["metadata"]["namespace"].as_str().unwrap().to_owned()),
            _ => continue,
        };
        for rule in v["rules"].as_array().unwrap() {
            let strings = |k: &str| -> Vec<String> {
                rule[k].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
            };
            for g in strings("apiGroups") {
                for r in strings("resources") {
                    for verb in strings("verbs") {
                        assert!(g != "*" && r != "*" && verb != "*", "no wildcard: {rule}");
                        grants.entry(scope.clone()).or_default().insert((g.clone(), r.clone(), verb));
                    }
                }
            }
        }
    }
    grants
}

/// Every call granted by a role that covers it, and every grant used (or explained).
fn check(calls: &[(Method, String, String)], grants: &BTreeMap<Option<String>, BTreeSet<Grant>>) {
    let mut used: BTreeSet<(Option<String>, Grant)> = BTreeSet::new();
    let mut missing = Vec::new();
    for (method, path, query) in calls {
        let Some((grant, namespace)) = grant_of(method, path, query) else { continue };
        // A ClusterRole covers every namespace; a Role its own.
        let scope = [None, namespace.clone()].into_iter().find(|scope| {
            grants.get(scope).is_some_and(|g| g.contains(&grant)) && (scope.is_none() || *scope == namespace)
        });
        match scope {
            Some(scope) => {
                used.insert((scope, grant));
            }
            None => missing.push(format!("{method} {path}?{query} needs {grant:?} in {namespace:?}")),
        }
    }
    assert!(missing.is_empty(), "calls the chart does not grant:\n{}", missing.join("\n"));
    let mut unused = Vec::new();
    for (scope, set) in grants {
        for grant in set {
            let explained = NOT_SHOWN
                .iter()
                .any(|(g, r, v, _)| (*g, *r, *v) == (grant.0.as_str(), grant.1.as_str(), grant.2.as_str()));
            if !used.contains(&(scope.clone(), grant.clone())) && !explained {
                unused.push(format!("{grant:?} in {scope:?}"));
            }
        }
    }
    assert!(unused.is_empty(), "the chart grants what the controller never uses:\n{}", unused.join("\n"));
}

#[test]
fn the_chart_grants_exactly_the_calls_of_full_reconciles() {
    let calls = record(&[]);
    let kinds: BTreeSet<String> = calls
        .iter()
        .filter_map(|(m, p, q)| grant_of(m, p, q))
        .map(|(g, _)| format!("{} {}", g.1, g.2))
        .collect();
    // The reconciles did what the grants are for: a workload applied and observed, a Secret
    // created, read back (someone else's) and its mesh keys written, statuses, finalizers,
    // Events, the Lease created and renewed.
    for expected in [
        "statefulsets patch",
        "statefulsets/status get",
        "services patch",
        "secrets create",
        "secrets get",
        "secrets patch",
        "phones/status patch",
        "phones patch",
        "events create",
        "leases create",
        "leases update",
    ] {
        assert!(kinds.contains(expected), "no {expected} in {kinds:?}");
    }
    // Secrets are only ever listed and watched by the operator's label.
    for (method, path, query) in &calls {
        if path.ends_with("/secrets") && *method == Method::GET {
            assert!(query.contains("labelSelector=asterisk.operator.dev%2Fsecret"), "{path}?{query}");
        }
    }
    check(&calls, &chart_grants(None));
}

#[test]
fn with_watch_namespaces_every_call_stays_in_the_namespace_its_role_covers() {
    let calls = record(&[NS]);
    for (method, path, query) in &calls {
        if let Some((grant, namespace)) = grant_of(method, path, query) {
            let allowed = [Some(NS.to_owned()), Some(CONTROLLER_NS.to_owned())];
            assert!(
                allowed.contains(&namespace),
                "{method} {path}?{query} ({grant:?}) leaves the watched namespaces"
            );
        }
    }
    let grants = chart_grants(Some(&format!("watchNamespaces={{{NS}}}")));
    assert!(!grants.contains_key(&None), "no ClusterRole with watchNamespaces");
    check(&calls, &grants);
}
