//! `controller --manifests`: the reconcile fed from YAML files drives two real Asterisk 22
//! instances through two agents (with the device-state mesh) — apply, edit a phone (only its
//! node, only res_pjsip), delete a phone (gone from its node), and honest status for every
//! resource: trunks say whether both ends reach each other (Routed), BLF subscriptions whether
//! their lamps follow the owner (Mirrored), and both turn false when office-b goes away.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use asterisk_operator::controller::agent_policy::AgentPolicy;
use asterisk_operator::controller::manifests::{ManifestsController, ManifestsOptions};
use asterisk_operator::controller::status::ResourceStatus;
use asterisk_operator::crd::{BlfSubscription, BlfSubscriptionSpec, BlfTarget, Watcher};
use asterisk_operator::topology::{Kind, ObjectRef, ResourceSet};
use kube::Resource;
use support::agent::{self as ag, get, parse_metrics, value};
use support::fleet::{self, on_loopback};

/// Writes one file per resource (`<kind>-<name>.yaml`), as a person keeps a fleet in git.
fn write_manifests(dir: &Path, set: &ResourceSet) {
    std::fs::create_dir_all(dir).unwrap();
    let write = |kind: &str, name: &str, text: String| {
        std::fs::write(dir.join(format!("{kind}-{name}.yaml")), text).unwrap();
    };
    for r in &set.nodes {
        write("node", r.meta().name.as_deref().unwrap(), serde_saphyr::to_string(r).unwrap());
    }
    for r in &set.trunks {
        write("trunk", r.meta().name.as_deref().unwrap(), serde_saphyr::to_string(r).unwrap());
    }
    for r in &set.phones {
        write("phone", r.meta().name.as_deref().unwrap(), serde_saphyr::to_string(r).unwrap());
    }
    for r in &set.blf_subscriptions {
        write("blf", r.meta().name.as_deref().unwrap(), serde_saphyr::to_string(r).unwrap());
    }
}

fn condition(
    statuses: &BTreeMap<ObjectRef, ResourceStatus>,
    kind: Kind,
    name: &str,
    type_: &str,
) -> (String, String, String) {
    let status = &statuses[&ObjectRef::new(kind, "default", name)];
    let c = status
        .conditions()
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("{name} has no {type_}"));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

/// Reconciles until `done` holds for the statuses (the agents' reports of trunks and mirrors
/// arrive with the next pass after the state changed), or fails after `within`.
fn reconcile_until(
    rt: &tokio::runtime::Runtime,
    controller: &mut ManifestsController,
    within: Duration,
    what: &str,
    done: impl Fn(&BTreeMap<ObjectRef, ResourceStatus>) -> bool,
) {
    let deadline = Instant::now() + within;
    loop {
        rt.block_on(controller.reconcile()).unwrap();
        if done(controller.statuses()) {
            return;
        }
        assert!(Instant::now() < deadline, "{what} within {within:?}: {:#?}", controller.statuses());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn reloads(agent_http: std::net::SocketAddr, module: &str) -> f64 {
    let (code, body) = get(agent_http, "/metrics");
    assert_eq!(code, 200);
    value(&parse_metrics(&body), &format!(r#"asterisk_agent_reloads_total{{module="{module}",result="ok"}}"#))
}

#[test]
fn manifests_mode_applies_edits_and_deletes_through_real_agents() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (mut set, addrs) = on_loopback(fleet::example("two-offices"));
    set.secrets.clear(); // the controller generates and keeps them, as it would for a user
    // office-a itself watches 4001 (no phone keys): it stays valid when sales-2 goes below.
    set.blf_subscriptions.push(BlfSubscription::new(
        "office-a-watches-4001",
        BlfSubscriptionSpec {
            watcher: Watcher { phone: None, node: Some("office-a".into()) },
            targets: vec![BlfTarget { extension: "4001".into(), label: None }],
        },
    ));
    let (nodes, mut agents) = ag::boot_with_mesh_agents(&rt, &mut set, &addrs);
    let work = std::env::temp_dir().join(format!("ao-controller-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let dir = work.join("fleet");
    write_manifests(&dir, &set);
    let status_file = work.join("status.yaml");
    let mut controller = ManifestsController::new(ManifestsOptions {
        inputs: vec![dir.clone()],
        status_file: status_file.clone(),
        secrets_file: work.join("secrets.yaml"),
        agents: AgentPolicy { allow_plaintext_loopback: true, ..AgentPolicy::default() },
    });
    let (a, b) = (&nodes["office-a"], &nodes["office-b"]);

    // 1. Apply: both nodes configured, every resource Ready, status written.
    let report = rt.block_on(controller.reconcile()).unwrap();
    assert_eq!(report.errors, Vec::<String>::new());
    assert_eq!(
        report.pushed,
        BTreeMap::from([("default/office-a".into(), true), ("default/office-b".into(), true)])
    );
    assert!(a.rx("pjsip show endpoints").contains(" 3001/"));
    assert!(b.rx("pjsip show endpoints").contains(" 4002/"));
    for (kind, name) in [
        (Kind::AsteriskNode, "office-a"),
        (Kind::AsteriskNode, "office-b"),
        (Kind::Trunk, "a-b-iax"),
        (Kind::Phone, "reception"),
        (Kind::BlfSubscription, "reception-watches-sales"),
    ] {
        assert_eq!(condition(controller.statuses(), kind, name, "Ready").0, "True", "{kind} {name}");
    }
    assert_eq!(condition(controller.statuses(), Kind::AsteriskNode, "office-b", "AgentConnected").0, "True");
    let ResourceStatus::Node(node_a) =
        &controller.statuses()[&ObjectRef::new(Kind::AsteriskNode, "default", "office-a")]
    else {
        panic!("node status")
    };
    assert_eq!(node_a.phones, Some(2));
    assert!(node_a.asterisk_version.as_deref().is_some_and(|v| v.contains("22.")), "{node_a:?}");
    let written = std::fs::read_to_string(&status_file).unwrap();
    assert!(written.contains("kind: Phone") && written.contains("reason: Applied"), "{written}");
    for secret in std::fs::read_to_string(work.join("secrets.yaml"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(": \""))
    {
        assert!(!written.contains(secret.1.trim_end_matches('"')), "no secret in the status file");
    }

    // Once office-b registered and both ends qualified each other, the IAX2 trunk is up and
    // says which routes use it; once office-a's mesh has office-b's snapshot, the lamps are live.
    reconcile_until(&rt, &mut controller, Duration::from_secs(30), "a-b-iax routed, lamps live", |s| {
        condition(s, Kind::Trunk, "a-b-iax", "Routed").0 == "True"
            && condition(s, Kind::BlfSubscription, "reception-watches-sales", "Mirrored").0 == "True"
            && condition(s, Kind::BlfSubscription, "office-a-watches-4001", "Mirrored").0 == "True"
    });
    let ResourceStatus::Trunk(iax) =
        &controller.statuses()[&ObjectRef::new(Kind::Trunk, "default", "a-b-iax")]
    else {
        panic!("trunk status")
    };
    assert_eq!(iax.up, Some(true));
    assert!(iax.ends.iter().all(|e| e.reachable == Some(true)), "{iax:?}");
    let used: Vec<(&str, &str, u32)> =
        iax.routes.iter().map(|r| (r.from.as_str(), r.destination.as_str(), r.choice)).collect();
    assert_eq!(used, [("office-a", "office-b", 1), ("office-b", "office-a", 1)], "primary both ways");
    let (_, _, message) = condition(controller.statuses(), Kind::Trunk, "a-b-iax", "Routed");
    assert!(message.contains("office-a → office-b (4XXX) choice 1"), "{message}");
    let ResourceStatus::Blf(blf) =
        &controller.statuses()[&ObjectRef::new(Kind::BlfSubscription, "default", "reception-watches-sales")]
    else {
        panic!("blf status")
    };
    for t in &blf.targets {
        match t.node.as_deref() {
            Some("office-b") => assert!(t.mirrored == Some(true) && t.state.is_some(), "{t:?}"),
            // A target on the watcher's own node needs no mirror.
            _ => assert_eq!(
                (t.node.as_deref(), t.mirrored, t.state.as_deref()),
                (Some("office-a"), None, None)
            ),
        }
    }

    // Nothing changed: nothing pushed (the agents are only asked for their status).
    let report = rt.block_on(controller.reconcile()).unwrap();
    assert!(report.pushed.is_empty(), "{:?}", report.pushed);

    // 2. Edit one phone's YAML: only its node is pushed, and only res_pjsip is reloaded there.
    let (pjsip_a, dialplan_a) = (
        reloads(agents["office-a"].http_addr, "res_pjsip.so"),
        reloads(agents["office-a"].http_addr, "pbx_config.so"),
    );
    let phone = dir.join("phone-accounts.yaml");
    let text = std::fs::read_to_string(&phone).unwrap().replace("Accounts", "Accounts Desk");
    std::fs::write(&phone, text).unwrap();
    let report = rt.block_on(controller.reconcile()).unwrap();
    assert_eq!(report.pushed, BTreeMap::from([("default/office-a".into(), true)]));
    assert_eq!(reloads(agents["office-a"].http_addr, "res_pjsip.so"), pjsip_a + 1.0);
    assert_eq!(reloads(agents["office-a"].http_addr, "pbx_config.so"), dialplan_a);
    assert!(a.rx("pjsip show endpoint 3002").contains("Accounts Desk"));

    // 3. Delete a phone: it is gone from its node. The BLF subscription that watched it becomes
    //    invalid (its target is gone) and says which field, so office-a's mirrors go too.
    std::fs::remove_file(dir.join("phone-sales-2.yaml")).unwrap();
    let report = rt.block_on(controller.reconcile()).unwrap();
    assert!(report.pushed.contains_key("default/office-b"));
    assert!(!b.rx("pjsip show endpoints").contains(" 4002/"), "4002 removed from office-b");
    let (status, reason, message) =
        condition(controller.statuses(), Kind::BlfSubscription, "reception-watches-sales", "Valid");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "UnknownTarget"));
    assert!(message.starts_with("spec.targets[1].extension"), "{message}");
    assert!(!controller.statuses().contains_key(&ObjectRef::new(Kind::Phone, "default", "sales-2")));

    // 4. An agent that is gone: its node says so; the other node is unaffected.
    let agent_b = agents.remove("office-b").unwrap();
    rt.block_on(agent_b.shutdown());
    let phone = dir.join("phone-sales-1.yaml");
    let text = std::fs::read_to_string(&phone).unwrap().replace("Sales 1", "Sales One");
    std::fs::write(&phone, text).unwrap();
    let report = rt.block_on(controller.reconcile()).unwrap();
    assert_eq!(report.pushed.get("default/office-b"), Some(&false));
    let (status, reason, _) =
        condition(controller.statuses(), Kind::AsteriskNode, "office-b", "AgentConnected");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Unreachable"));
    assert_eq!(condition(controller.statuses(), Kind::Phone, "sales-1", "Ready").0, "False");
    assert_eq!(condition(controller.statuses(), Kind::Phone, "reception", "Ready").0, "True");
    // Its end of the trunk no longer reports, so the trunk is not up; office-a's mesh stops
    // hearing office-b (3 s), so the lamp of 4001 shows UNAVAILABLE and says why.
    reconcile_until(&rt, &mut controller, Duration::from_secs(15), "lamps of office-b not live", |s| {
        condition(s, Kind::BlfSubscription, "office-a-watches-4001", "Mirrored").1 == "OwnerUnreachable"
    });
    let (status, reason, message) = condition(controller.statuses(), Kind::Trunk, "a-b-iax", "Routed");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Unknown"), "{message}");
    assert!(message.contains("office-b's agent has not reported it"), "{message}");
    let ResourceStatus::Trunk(iax) =
        &controller.statuses()[&ObjectRef::new(Kind::Trunk, "default", "a-b-iax")]
    else {
        panic!("trunk status")
    };
    assert_eq!(iax.up, Some(false));
    let (status, _, message) =
        condition(controller.statuses(), Kind::BlfSubscription, "office-a-watches-4001", "Mirrored");
    assert_eq!(status, "False");
    assert!(message.contains("4001 (office-b not heard from)"), "{message}");
    let ResourceStatus::Blf(blf) =
        &controller.statuses()[&ObjectRef::new(Kind::BlfSubscription, "default", "office-a-watches-4001")]
    else {
        panic!("blf status")
    };
    assert_eq!(
        (blf.targets[0].mirrored, blf.targets[0].state.as_deref()),
        (Some(false), Some("UNAVAILABLE")),
        "{blf:?}"
    );

    for agent in agents.into_values() {
        rt.block_on(agent.shutdown());
    }
    std::fs::remove_dir_all(&work).unwrap();
}

/// A running `--manifests` controller meets a file with a schema error: it keeps running, every
/// valid resource is still reconciled (an edit elsewhere reaches Asterisk), and the status file
/// names the file, the document, the field and the fix until the file is corrected.
#[test]
fn a_mistyped_manifest_is_reported_and_the_rest_of_the_fleet_keeps_being_reconciled() {
    use asterisk_operator::controller::manifests::run;
    use asterisk_operator::controller::metrics::ControllerMetrics;
    use std::time::{Duration, Instant};

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (mut set, addrs) = on_loopback(fleet::example("two-offices"));
    set.secrets.clear();
    let (nodes, agents) = ag::boot_with_agents(&rt, &mut set, &addrs);
    let work = std::env::temp_dir().join(format!("ao-controller-schema-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let dir = work.join("fleet");
    write_manifests(&dir, &set);
    let status_file = work.join("status.yaml");
    let opts = ManifestsOptions {
        inputs: vec![dir.clone()],
        status_file: status_file.clone(),
        secrets_file: work.join("secrets.yaml"),
        agents: AgentPolicy { allow_plaintext_loopback: true, ..AgentPolicy::default() },
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = rt.spawn(async move {
        let metrics = ControllerMetrics::default();
        run(opts, Duration::from_millis(200), false, &metrics, async {
            let _ = stopped.await;
        })
        .await
    });
    let wait_status = |what: &str, pred: &dyn Fn(&str) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&status_file).unwrap_or_default();
            if pred(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "status file never showed {what}:\n{text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_status("both nodes applied", &|t| t.matches("reason: Applied").count() >= 2);

    // A second document in a new file has `nat: maybe`; at the same time a valid phone changes.
    let broken = dir.join("phone-broken.yaml");
    std::fs::write(
        &broken,
        "# a desk phone\n---\napiVersion: asterisk.operator.dev/v1alpha1\nkind: Phone\nmetadata: {name: lobby}\n\
         spec: {node: office-a, extension: \"3010\", nat: maybe}\n",
    )
    .unwrap();
    let phone = dir.join("phone-accounts.yaml");
    std::fs::write(&phone, std::fs::read_to_string(&phone).unwrap().replace("Accounts", "Accounts Two"))
        .unwrap();
    let text = wait_status("the broken document", &|t| t.contains("phone-broken.yaml"));
    assert!(text.contains("reason: InvalidField"), "{text}");
    assert!(
        text.contains("kind: Phone") && text.contains("name: lobby") && text.contains("document: 1"),
        "{text}"
    );
    assert!(
        text.contains("spec.nat: invalid type: string \\\"maybe\\\", expected a boolean; give a boolean")
            || text.contains("spec.nat: invalid type: string \"maybe\", expected a boolean; give a boolean"),
        "{text}"
    );
    let a = &nodes["office-a"];
    a.wait_for("pjsip show endpoint 3002", Duration::from_secs(20), |o| o.contains("Accounts Two"));
    assert!(!a.rx("pjsip show endpoints").contains("3010"), "the broken phone is left out");
    std::thread::sleep(Duration::from_millis(500));
    assert!(!controller.is_finished(), "the controller stopped on a mistyped manifest");

    // Corrected: the phone is configured, the error is gone from the status file.
    std::fs::write(&broken, std::fs::read_to_string(&broken).unwrap().replace("nat: maybe", "nat: true"))
        .unwrap();
    a.wait_for("pjsip show endpoints", Duration::from_secs(20), |o| o.contains(" 3010/"));
    wait_status("the error gone", &|t| !t.contains("phone-broken.yaml"));

    stop.send(()).unwrap();
    let report = rt.block_on(controller).unwrap().unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    for agent in agents.into_values() {
        rt.block_on(agent.shutdown());
    }
    std::fs::remove_dir_all(&work).unwrap();
}
