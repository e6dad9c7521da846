//! The controller, measured (not a test; numbers go to docs/benchmarks.md):
//! 1. time from a changed Phone manifest to its node's ApplyResult, through a real agent and a
//!    real Asterisk 22 (test-bed: `bash testbed/setup.sh`), in `--manifests` mode;
//! 2. the controller process's RSS with 10,000 phones across 20 nodes.
//!
//! `cargo bench --bench controller`

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use asterisk_operator::controller::agent_policy::AgentPolicy;
use asterisk_operator::controller::manifests::{ManifestsController, ManifestsOptions};
use support::agent as ag;
use support::fleet::{self, on_loopback};

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn to_yaml(set: &asterisk_operator::topology::ResourceSet) -> String {
    let mut docs = Vec::new();
    docs.extend(set.nodes.iter().map(|r| serde_saphyr::to_string(r).unwrap()));
    docs.extend(set.trunks.iter().map(|r| serde_saphyr::to_string(r).unwrap()));
    docs.extend(set.phones.iter().map(|r| serde_saphyr::to_string(r).unwrap()));
    docs.extend(set.blf_subscriptions.iter().map(|r| serde_saphyr::to_string(r).unwrap()));
    docs.join("---\n")
}

fn change_to_apply() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (mut set, addrs) = on_loopback(fleet::example("two-offices"));
    set.secrets.clear();
    let (nodes, agents) = ag::boot_with_agents(&rt, &mut set, &addrs);
    let work = std::env::temp_dir().join(format!("ao-bench-controller-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("fleet")).unwrap();
    let fleet_file = work.join("fleet/fleet.yaml");
    std::fs::write(&fleet_file, to_yaml(&set)).unwrap();
    let mut controller = ManifestsController::new(ManifestsOptions {
        inputs: vec![work.join("fleet")],
        status_file: work.join("status.yaml"),
        secrets_file: work.join("secrets.yaml"),
        agents: AgentPolicy { allow_plaintext_loopback: true, ..AgentPolicy::default() },
    });
    let first = rt.block_on(controller.reconcile()).unwrap();
    assert!(first.pushed.values().all(|ok| *ok), "{first:?}");
    let mut times = Vec::new();
    let mut name = "Accounts".to_owned();
    for round in 0..9 {
        let text = std::fs::read_to_string(&fleet_file).unwrap();
        let next = format!("Accounts{round}");
        assert!(text.contains(&format!("displayName: {name}\n")), "round {round}");
        std::fs::write(
            &fleet_file,
            text.replace(&format!("displayName: {name}\n"), &format!("displayName: {next}\n")),
        )
        .unwrap();
        name = next;
        let start = Instant::now();
        let report = rt.block_on(controller.reconcile()).unwrap();
        let took = start.elapsed();
        assert_eq!(report.pushed, BTreeMap::from([("default/office-a".to_owned(), true)]), "round {round}");
        times.push(took.as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "changed Phone -> ApplyResult (manifests read + resolve + render + push + apply + status), two-offices: median {:.1} ms, min {:.1}, max {:.1} ({} rounds)",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1],
        times.len()
    );
    for agent in agents.into_values() {
        rt.block_on(agent.shutdown());
    }
    drop(nodes);
    std::fs::remove_dir_all(&work).unwrap();
}

fn rss_with_a_large_fleet() {
    let mut set = fleet::synthetic(20, 10_000, 500);
    set.secrets.clear();
    for node in &mut set.nodes {
        // Nobody listens: the controller still reads, resolves, renders and keeps every status.
        node.spec.agent.as_mut().unwrap().endpoint = "http://127.0.0.1:9".into();
    }
    let work = std::env::temp_dir().join(format!("ao-bench-controller-rss-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("fleet")).unwrap();
    std::fs::write(work.join("fleet/fleet.yaml"), to_yaml(&set)).unwrap();
    let status = work.join("status.yaml");
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_asterisk-operator"))
        .args(["controller", "--interval", "2", "--manifests"])
        .arg(work.join("fleet"))
        .arg("--status-file")
        .arg(&status)
        .arg("--secrets-file")
        .arg(work.join("secrets.yaml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while !status.exists() {
        assert!(start.elapsed() < Duration::from_secs(120), "no status file");
        std::thread::sleep(Duration::from_millis(20));
    }
    let first = start.elapsed();
    std::thread::sleep(Duration::from_secs(5));
    let rss = rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "controller with 20 nodes, 10,000 phones, 500 BLF targets (agents unreachable): first reconcile (incl. generating 10,000+ secrets) {:.2} s, RSS after {:.1} MiB",
        first.as_secs_f64(),
        rss as f64 / 1024.0
    );
    std::fs::remove_dir_all(&work).unwrap();
}

fn main() {
    change_to_apply();
    rss_with_a_large_fleet();
}
