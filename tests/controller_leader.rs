//! Two controller replicas share one fake API server (the test-bed's serves no Leases) whose
//! writes are slow enough that one pass takes several Lease durations. Never do both act at
//! once: while the leader is healthy the standby writes nothing, however long its passes; when
//! the leader is cut off from the Lease (its other writes still get through, the worst case),
//! it stops writing before the standby takes over, and the standby then reconciles.

mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use asterisk_operator::controller::agent_policy::AgentPolicy;
use asterisk_operator::controller::kube::{KubeOptions, LeaseSettings, run};
use asterisk_operator::controller::managed_settings::ManagedSettings;
use asterisk_operator::controller::metrics::ControllerMetrics;
use http::{Request, Response, StatusCode};
use serde_json::{Value, json};
use support::fake_api::{Body, LeaseStore, json_body, open_watch, status};

const NS: &str = "tenant-a";
/// Each write (status, finalizer, Event) takes this long to answer: a pass of this fleet takes
/// longer than the Lease.
const SLOW_WRITE: Duration = Duration::from_millis(250);
const LEASE: Duration = Duration::from_secs(3);

/// The fleet: two nodes and a dozen phones, so a pass makes dozens of writes.
fn fleet() -> BTreeMap<&'static str, Vec<Value>> {
    let cr = |kind: &str, name: &str, spec: Value| {
        json!({"apiVersion": "asterisk.operator.dev/v1alpha1", "kind": kind,
            "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"), "resourceVersion": "1", "generation": 1},
            "spec": spec})
    };
    let nodes = vec![
        cr(
            "AsteriskNode",
            "office-a",
            json!({"numbering": {"prefixes": ["3"], "length": 4}, "address": "192.0.2.10"}),
        ),
        cr(
            "AsteriskNode",
            "office-b",
            json!({"numbering": {"prefixes": ["4"], "length": 4}, "address": "192.0.2.11"}),
        ),
    ];
    let phones = (0..12)
        .map(|i| {
            let node = if i % 2 == 0 { "office-a" } else { "office-b" };
            let extension = format!("{}{:03}", if i % 2 == 0 { 3 } else { 4 }, i + 1);
            cr("Phone", &format!("desk-{i}"), json!({"node": node, "extension": extension}))
        })
        .collect();
    BTreeMap::from([
        ("asterisknodes", nodes),
        ("trunks", vec![]),
        ("phones", phones),
        ("blfsubscriptions", vec![]),
    ])
}

/// What the fake server shares between the replicas.
#[derive(Default)]
struct Server {
    lease: LeaseStore,
    /// Every write other than the Lease's: (replica, when it reached the server).
    writes: Vec<(&'static str, Instant)>,
    /// Replicas whose Lease requests fail (cut off from the Lease, not from the rest).
    cut_off: Vec<&'static str>,
}

async fn answer(
    replica: &'static str,
    req: Request<kube::client::Body>,
    server: Arc<Mutex<Server>>,
) -> Response<Body> {
    let (method, path) = (req.method().as_str().to_owned(), req.uri().path().to_owned());
    let query = req.uri().query().unwrap_or_default().to_owned();
    let body: Value =
        serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap_or(Value::Null);
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ok = |v: &Value| json_body(StatusCode::OK, v);
    if query.contains("watch=true") {
        return open_watch();
    }
    if parts.contains(&"leases") {
        let mut s = server.lock().unwrap();
        if s.cut_off.contains(&replica) {
            return json_body(StatusCode::SERVICE_UNAVAILABLE, &status(503, "ServiceUnavailable", "cut off"));
        }
        return s.lease.answer(&method, parts.last() != Some(&"leases"), &body);
    }
    if method != "GET" {
        server.lock().unwrap().writes.push((replica, Instant::now()));
        tokio::time::sleep(SLOW_WRITE).await;
    }
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["version"]) => {
            ok(&json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"}))
        }
        // Core v1 without Secrets, no apps/v1: nothing needs them in this fleet.
        ("GET", ["api", "v1"]) => {
            ok(&json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": []}))
        }
        ("GET", [.., kind]) if fleet().contains_key(kind) => ok(&json!({"kind": "List", "apiVersion": "v1",
            "metadata": {"resourceVersion": "1"}, "items": fleet()[kind].clone()})),
        ("PATCH", [_, _, _, _, _, kind, name, ..]) if fleet().contains_key(kind) => {
            let object = fleet()[kind].iter().find(|o| o["metadata"]["name"] == *name).cloned();
            ok(&object.unwrap_or(body))
        }
        ("POST", _) => json_body(StatusCode::CREATED, &body),
        _ => json_body(
            StatusCode::NOT_FOUND,
            &status(404, "NotFound", "the server could not find the requested resource"),
        ),
    }
}

fn replica(
    identity: &'static str,
    server: &Arc<Mutex<Server>>,
) -> impl std::future::Future<Output = ()> + use<> {
    let server = server.clone();
    let service = tower::service_fn(move |req| {
        let server = server.clone();
        async move { Ok::<_, Infallible>(answer(identity, req, server).await) }
    });
    let opts = KubeOptions {
        agents: AgentPolicy::default(),
        namespaces: vec![],
        secrets_file: None,
        resync: Duration::from_millis(200),
        debounce: Duration::from_millis(20),
        lease: Some(LeaseSettings {
            namespace: "asterisk-operator".into(),
            name: "asterisk-operator-controller".into(),
            identity: identity.into(),
            duration: LEASE,
        }),
        managed: ManagedSettings::default(),
        cleanup_timeout: None,
    };
    async move {
        let client = kube::Client::new(service, NS);
        let metrics = ControllerMetrics::default();
        run(client, opts, &metrics, std::future::pending()).await.unwrap();
    }
}

#[test]
fn two_replicas_never_act_at_once_even_when_a_pass_outlasts_the_lease() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let server = Arc::new(Mutex::new(Server::default()));
    rt.block_on(async {
        let a = tokio::spawn(replica("replica-a", &server));
        // B starts once A holds the Lease, so which one leads first is known.
        while server.lock().unwrap().lease.holder().as_deref() != Some("replica-a") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let b = tokio::spawn(replica("replica-b", &server));
        // Three Lease durations of long passes: A keeps the Lease throughout.
        tokio::time::sleep(LEASE * 3).await;
        {
            let s = server.lock().unwrap();
            let by = |r| s.writes.iter().filter(|(w, _)| *w == r).count();
            assert!(by("replica-a") > 30, "A reconciled: {} writes", by("replica-a"));
            assert_eq!(by("replica-b"), 0, "B acted while A held the Lease");
            assert_eq!(s.lease.holder().as_deref(), Some("replica-a"));
        }
        // Cut A off from the Lease: it cannot renew, yet its other writes still get through.
        let cut = Instant::now();
        server.lock().unwrap().cut_off.push("replica-a");
        let deadline = Instant::now() + LEASE * 4;
        loop {
            let (b_writes, holder) = {
                let s = server.lock().unwrap();
                (s.writes.iter().filter(|(w, _)| *w == "replica-b").count(), s.lease.holder())
            };
            if b_writes >= 10 {
                break;
            }
            assert!(Instant::now() < deadline, "B never took over; Lease held by {holder:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let s = server.lock().unwrap();
        let last_a = s.writes.iter().filter(|(w, _)| *w == "replica-a").map(|(_, t)| *t).max().unwrap();
        let first_b = s.writes.iter().filter(|(w, _)| *w == "replica-b").map(|(_, t)| *t).min().unwrap();
        assert!(last_a < first_b, "A wrote {:?} after B started writing", last_a.duration_since(first_b));
        assert!(last_a.duration_since(cut) < LEASE, "A stopped within its renew deadline");
        assert_eq!(s.lease.holder().as_deref(), Some("replica-b"));
        a.abort();
        b.abort();
    });
}
