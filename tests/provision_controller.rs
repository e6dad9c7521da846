//! The controller in `--manifests` mode keeps a desk phone's file right: editing a
//! BlfSubscription changes the file the node's agent serves within one reconcile and reloads
//! nothing in Asterisk (the agent's reload counters prove it), and the Phone's status says when
//! and from where the phone last fetched its file.
//!
//! Needs the test-bed: `bash testbed/setup.sh`.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use asterisk_operator::controller::agent_policy::AgentPolicy;
use asterisk_operator::controller::manifests::{ManifestsController, ManifestsOptions};
use asterisk_operator::controller::status::ResourceStatus;
use asterisk_operator::crd::{NodeProvisioning, ProvisioningStatus};
use asterisk_operator::topology::{Kind, ObjectRef, ResourceSet};
use support::agent::{self as ag, get, parse_metrics};
use support::fleet::{self, on_loopback};
use support::provision::{self as pv, curl};

/// All resources of `set` in one YAML file, as `kubectl apply -f` takes them.
fn write_fleet(path: &Path, set: &ResourceSet) {
    let mut docs = Vec::new();
    docs.extend(set.nodes.iter().map(|r| serde_saphyr::to_string(r).unwrap()));
    docs.extend(set.trunks.iter().map(|r| serde_saphyr::to_string(r).unwrap()));
    docs.extend(set.phones.iter().map(|r| serde_saphyr::to_string(r).unwrap()));
    docs.extend(set.blf_subscriptions.iter().map(|r| serde_saphyr::to_string(r).unwrap()));
    std::fs::write(path, docs.join("---\n")).unwrap();
}

fn reloads(agent: &asterisk_operator::agent::RunningAgent) -> f64 {
    let (code, body) = get(agent.http_addr, "/metrics");
    assert_eq!(code, 200);
    let m: BTreeMap<String, f64> = parse_metrics(&body);
    m.iter().filter(|(k, _)| k.starts_with("asterisk_agent_reloads_total{")).map(|(_, v)| v).sum()
}

fn reception(controller: &ManifestsController) -> Option<ProvisioningStatus> {
    match &controller.statuses()[&ObjectRef::new(Kind::Phone, "default", "reception")] {
        ResourceStatus::Phone(p) => p.provisioning.clone(),
        other => panic!("not a phone status: {other:?}"),
    }
}

#[test]
fn a_blf_edit_changes_the_served_file_in_one_reconcile_and_reloads_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (mut set, addrs) = on_loopback(fleet::example("two-offices"));
    set.secrets.clear(); // the controller generates and keeps them, as for a user
    // The reception's Cisco 7931 on office-a fetches from the host (127.0.0.1) over TFTP.
    let a = set.nodes.iter_mut().find(|n| n.metadata.name.as_deref() == Some("office-a")).unwrap();
    a.spec.provisioning = Some(NodeProvisioning {
        allowed_networks: vec!["127.0.0.1/32".into()],
        ..NodeProvisioning::default()
    });
    let mut nodes = BTreeMap::new();
    let mut agents = BTreeMap::new();
    for node in &mut set.nodes {
        let name = node.metadata.name.clone().unwrap();
        let asterisk = ag::asterisk_for_agent(&name, addrs[&name]);
        let opts = match name.as_str() {
            "office-a" => pv::serving(ag::options(&asterisk), addrs[&name], None),
            _ => ag::options(&asterisk),
        };
        let agent = ag::start(&rt, opts);
        node.spec.agent.as_mut().unwrap().endpoint = format!("http://{}", agent.grpc_addr);
        nodes.insert(name.clone(), asterisk);
        agents.insert(name, agent);
    }
    let work = std::env::temp_dir().join(format!("ao-provision-controller-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let manifest = work.join("fleet.yaml");
    write_fleet(&manifest, &set);
    let mut controller = ManifestsController::new(ManifestsOptions {
        inputs: vec![manifest.clone()],
        status_file: work.join("status.yaml"),
        secrets_file: work.join("secrets.yaml"),
        agents: AgentPolicy { allow_plaintext_loopback: true, ..AgentPolicy::default() },
    });
    let report = rt.block_on(controller.reconcile()).unwrap();
    assert_eq!(report.errors, Vec::<String>::new());
    assert_eq!(report.pushed.values().filter(|ok| **ok).count(), 2, "{:?}", report.pushed);

    // The phone boots: its file has the BLF keys of its subscription, in order.
    let tftp = agents["office-a"].provision.tftp.unwrap();
    let url = format!("tftp://{tftp}/SEP001A2B3C4D5E.cnf.xml");
    let out = work.join("fetched.xml");
    let fetch = |out: &Path| {
        let o = curl(&url, out, &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read_to_string(out).unwrap()
    };
    let before = fetch(&out);
    let keys = |xml: &str| -> Vec<String> {
        xml.lines()
            .filter_map(|l| l.trim().strip_prefix("<featureLabel>"))
            .map(|l| l.replace("</featureLabel>", ""))
            .collect()
    };
    assert_eq!(keys(&before), ["3001", "Sales 1", "Sales 2", "Accounts"]);
    let reloads_a = reloads(&agents["office-a"]);
    let reloads_b = reloads(&agents["office-b"]);

    // Edit the subscription: a new label and another order. One reconcile later the served
    // file has the new keys; nothing was reloaded anywhere, office-b was not even pushed.
    let text = std::fs::read_to_string(&manifest).unwrap();
    let sales1 = "- extension: \"4001\"\n    label: Sales 1\n";
    let sales2 = "- extension: \"4002\"\n    label: Sales 2\n";
    assert!(text.contains(sales1) && text.contains(sales2), "{text}");
    let edited = text.replacen(sales1, "@@", 1).replacen(sales2, sales1, 1).replacen(
        "@@",
        &sales2.replace("Sales 2", "Sales Two"),
        1,
    );
    std::fs::write(&manifest, edited).unwrap();
    let report = rt.block_on(controller.reconcile()).unwrap();
    assert_eq!(report.pushed, BTreeMap::from([("default/office-a".to_owned(), true)]));
    let after = fetch(&out);
    assert_eq!(keys(&after), ["3001", "Sales Two", "Sales 1", "Accounts"]);
    assert_eq!(reloads(&agents["office-a"]), reloads_a, "a BLF key edit reloads nothing in Asterisk");
    assert_eq!(reloads(&agents["office-b"]), reloads_b);

    // The Status taken right after that push already has the first fetch; the one after it
    // appears when the controller next refreshes the node's status.
    let first = reception(&controller).expect("the reception's status shows its fetch");
    assert_eq!(first.last_fetch_source.as_deref(), Some("127.0.0.1"));
    assert_eq!(first.last_fetch_protocol.as_deref(), Some("tftp"));
    assert_eq!(first.last_fetch_file.as_deref(), Some("SEP001A2B3C4D5E.cnf.xml"));
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        rt.block_on(controller.reconcile()).unwrap();
        if reception(&controller).and_then(|s| s.last_fetch_time) != first.last_fetch_time {
            break;
        }
        assert!(Instant::now() < deadline, "the phone's status never showed its second fetch");
        std::thread::sleep(Duration::from_millis(500));
    }
    let written = std::fs::read_to_string(work.join("status.yaml")).unwrap();
    assert!(written.contains("lastFetchSource: \"127.0.0.1\""), "{written}");

    for agent in agents.into_values() {
        rt.block_on(agent.shutdown());
    }
    drop(nodes);
    std::fs::remove_dir_all(&work).unwrap();
}
