//! Stress: 20 mesh nodes in one process, each with its own in-test AMI endpoint, a random
//! interest graph over 10,000 extensions (500 owned per node), every watcher converging to its
//! owners' states: first from the snapshots, then after 20,000 random changes. The times to
//! converge are printed (`--nocapture`) and bounded.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use asterisk_operator::ami::{ExtensionState, Session};
use asterisk_operator::mesh::MeshConfig;
use asterisk_operator::render::{MeshExport, MeshImport, MeshPlan, MeshSource};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, IteratorRandom};
use rand::{Rng, SeedableRng};
use support::fake_ami::FakeAmi;
use support::mesh::{TestMesh, ami_config};

const NODES: usize = 20;
const PER_NODE: usize = 500;
const CONTEXT: &str = "operator-local";
const HINT_STATES: [ExtensionState; 7] = [
    ExtensionState::Idle,
    ExtensionState::InUse,
    ExtensionState::Busy,
    ExtensionState::Unavailable,
    ExtensionState::Ringing,
    ExtensionState::InUseRinging,
    ExtensionState::Hold,
];

fn node(i: usize) -> String {
    format!("n{i:02}")
}

fn ext(owner: usize, j: usize) -> String {
    (10_000 + owner * PER_NODE + j).to_string()
}

/// Random interest: each node watches 2–8 other nodes, 20–200 of each one's extensions.
fn plans(rng: &mut StdRng) -> (Vec<MeshPlan>, usize) {
    let mut imports: Vec<BTreeMap<usize, BTreeSet<usize>>> = vec![BTreeMap::new(); NODES];
    let mut mirrors = 0;
    for (w, imp) in imports.iter_mut().enumerate() {
        let k = rng.random_range(2..=8);
        let owners = (0..NODES).filter(|o| *o != w).choose_multiple(rng, k);
        for o in owners {
            let k = rng.random_range(20..=200);
            let exts: BTreeSet<usize> = (0..PER_NODE).choose_multiple(rng, k).into_iter().collect();
            mirrors += exts.len();
            imp.insert(o, exts);
        }
    }
    let plans = (0..NODES)
        .map(|n| {
            let sources = imports[n]
                .iter()
                .map(|(o, exts)| MeshSource {
                    node: node(*o),
                    endpoint: None,
                    imports: exts
                        .iter()
                        .map(|j| MeshImport {
                            extension: ext(*o, *j),
                            device: format!("Custom:{}-{}", node(*o), ext(*o, *j)),
                        })
                        .collect(),
                })
                .collect();
            let mut exports: BTreeMap<usize, Vec<String>> = BTreeMap::new();
            for (w, imp) in imports.iter().enumerate() {
                for j in imp.get(&n).into_iter().flatten() {
                    exports.entry(*j).or_default().push(node(w));
                }
            }
            MeshPlan {
                node: node(n),
                sources,
                exports: exports
                    .into_iter()
                    .map(|(j, watchers)| MeshExport {
                        extension: ext(n, j),
                        context: CONTEXT.into(),
                        watchers,
                    })
                    .collect(),
            }
        })
        .collect();
    (plans, mirrors)
}

/// Mirrors that do not (yet) show their owner's state.
fn wrong(
    plans: &[MeshPlan],
    fakes: &[FakeAmi],
    truth: &[BTreeMap<String, ExtensionState>],
    report: bool,
) -> usize {
    let mut wrong = 0;
    for (w, plan) in plans.iter().enumerate() {
        let devices = fakes[w].devices();
        for s in &plan.sources {
            let o: usize = s.node[1..].parse().unwrap();
            for i in &s.imports {
                let want = truth[o][&i.extension].to_device_state();
                if devices.get(&i.device).map(String::as_str) != Some(want.as_str()) {
                    if wrong < 5 && report {
                        eprintln!(
                            "{} on {}: want {want}, got {:?}",
                            i.device,
                            plan.node,
                            devices.get(&i.device)
                        );
                    }
                    wrong += 1;
                }
            }
        }
    }
    wrong
}

async fn converge(
    plans: &[MeshPlan],
    fakes: &[FakeAmi],
    truth: &[BTreeMap<String, ExtensionState>],
    within: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let w = wrong(plans, fakes, truth, false);
        if w == 0 {
            return start.elapsed();
        }
        if start.elapsed() >= within {
            wrong(plans, fakes, truth, true);
            panic!("{w} mirrors still wrong after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_nodes_random_interest_ten_thousand_extensions_converge() {
    let mut rng = StdRng::seed_from_u64(0x5eed_0005);
    let (plans, mirrors) = plans(&mut rng);
    let mut fakes = Vec::new();
    let mut truth: Vec<BTreeMap<String, ExtensionState>> = Vec::new();
    for n in 0..NODES {
        let fake = FakeAmi::start().await;
        let mut t = BTreeMap::new();
        let changes: Vec<_> = (0..PER_NODE)
            .map(|j| {
                let s = *HINT_STATES.choose(&mut rng).unwrap();
                t.insert(ext(n, j), s);
                (ext(n, j), CONTEXT.to_owned(), s)
            })
            .collect();
        fake.set_hints(&changes);
        fakes.push(fake);
        truth.push(t);
    }
    // Ports first (every node needs every owner's endpoint), then the nodes.
    // Each node on its own loopback address: a port picked with `bind(:0)` and released could be
    // taken by one of the AMI sessions' outgoing connections before the node binds it.
    let listens: Vec<SocketAddr> =
        (0..NODES).map(|_| SocketAddr::from((support::asterisk::fresh_address(), 7444))).collect();
    let endpoints: BTreeMap<String, String> =
        (0..NODES).map(|n| (node(n), format!("http://{}", listens[n]))).collect();
    let start = Instant::now();
    let mut meshes = Vec::new();
    for n in 0..NODES {
        let mut cfg = MeshConfig::new(&node(n));
        cfg.endpoints = endpoints.clone();
        let session = Session::spawn(ami_config(fakes[n].addr));
        meshes.push(TestMesh::start_on(&node(n), listens[n], plans[n].clone(), cfg, session).await);
    }
    converge(&plans, &fakes, &truth, Duration::from_secs(20)).await;
    let initial = start.elapsed();

    // 20,000 random changes, in batches of 100 per owner write.
    let burst = Instant::now();
    for _ in 0..200 {
        let o = rng.random_range(0..NODES);
        let changes: Vec<_> = (0..100)
            .map(|_| {
                let j = rng.random_range(0..PER_NODE);
                let s = *HINT_STATES.choose(&mut rng).unwrap();
                truth[o].insert(ext(o, j), s);
                (ext(o, j), CONTEXT.to_owned(), s)
            })
            .collect();
        fakes[o].set_hints(&changes);
    }
    converge(&plans, &fakes, &truth, Duration::from_secs(20)).await;
    let after = burst.elapsed();
    let setvars: u64 = fakes.iter().map(FakeAmi::setvars).sum();
    eprintln!(
        "mesh stress: {NODES} nodes, {} extensions, {mirrors} mirrors; every mirror right {initial:?} after \
         the start; 20,000 random changes converged {after:?} after the first; {setvars} Setvars in all",
        NODES * PER_NODE
    );
    for m in &meshes {
        assert_eq!(m.node.owners_up().len(), plans.iter().find(|p| p.node == m.name).unwrap().sources.len());
    }
    for m in meshes {
        m.stop().await;
    }
}
