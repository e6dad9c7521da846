//! The agent against real Asterisk 22 (test-bed: `bash testbed/setup.sh`): apply latency of a
//! 1,000-phone bundle (write + reload + verify), measured through the real `asterisk-operator
//! agent` binary, and that process's idle RSS. A measurement, not a test; numbers go to
//! docs/benchmarks.md.
//!
//! `cargo bench --bench agent_apply`

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use asterisk_operator::agent::{ClientOptions, bundle_to_proto, connect};
use asterisk_operator::render;
use asterisk_operator::topology;
use support::agent as ag;
use support::fleet::{self, on_loopback};

const PHONES: usize = 1000;
const ROUNDS: usize = 7;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // two-offices, with office-a (3XXX) filled up to 1,000 phones.
    let mut yaml = fleet::read("examples/two-offices.yaml");
    for ext in (3000..4000).filter(|e| *e != 3001 && *e != 3002).take(PHONES - 2) {
        yaml.push_str(&format!(
            "---\napiVersion: asterisk.operator.dev/v1alpha1\nkind: Phone\nmetadata: {{name: p{ext}}}\n\
             spec: {{node: office-a, extension: \"{ext}\", displayName: Desk {ext}}}\n"
        ));
    }
    let (mut set, addrs) = on_loopback(fleet::with_test_secrets(fleet::parse(&yaml)));
    let bundle_of = |set: &topology::ResourceSet| {
        let r = topology::resolve(set);
        assert_eq!(r.errors, vec![]);
        render::render_all(&r.topology).remove("office-a").unwrap()
    };
    let bundle = bundle_of(&set);
    println!(
        "bundle: {} phones, pjsip_operator.conf {} KiB",
        PHONES,
        bundle.files[render::PJSIP_FILE].len() / 1024
    );

    let addr = addrs["office-a"];
    let ast = ag::asterisk_for_agent("office-a", addr);
    let dir = std::env::temp_dir().join(format!("ao-bench-{}", std::process::id()));
    let (grpc, http) = (ag::free_port(), ag::free_port());
    let mut child = ag::agent_process(&ast, &dir, grpc, http).spawn().expect("agent binary starts");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut client = rt.block_on(async {
        let opts = ClientOptions::new(&format!("http://127.0.0.1:{grpc}"));
        for _ in 0..100 {
            if let Ok(c) = connect(&opts).await {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("agent did not start");
    });
    let mut apply = |b: &render::Bundle| {
        let t = Instant::now();
        let r = rt.block_on(client.apply(bundle_to_proto(b))).unwrap().into_inner();
        assert!(r.ok, "{r:?}");
        (t.elapsed().as_secs_f64(), r)
    };

    let (first, r) = apply(&bundle);
    println!("first apply (3 files, {:?}): {:.0} ms", r.reloaded_modules, first * 1e3);
    let endpoints = ast.rx("pjsip show endpoints");
    assert!(endpoints.contains("Objects found: 1001"), "{}", endpoints.lines().last().unwrap_or(""));

    let (same, r) = apply(&bundle);
    assert!(r.unchanged);
    println!("same bundle again (nothing to do): {:.1} ms", same * 1e3);

    let mut one_phone = Vec::new();
    let mut agent_side = Vec::new();
    for round in 0..ROUNDS {
        let phone = set.phones.iter_mut().find(|p| p.spec.extension == "3500").unwrap();
        phone.spec.display_name = Some(format!("Desk 3500 r{round}"));
        let (t, r) = apply(&bundle_of(&set));
        assert_eq!(r.reloaded_modules, ["res_pjsip.so"]);
        one_phone.push(t);
        agent_side.push(r.duration_seconds);
    }
    println!(
        "one phone changed in a 1,000-phone bundle (write + res_pjsip reload + verify 1,001 endpoints), {ROUNDS} rounds: \
         median {:.0} ms end to end, {:.0} ms inside the agent; min {:.0} ms, max {:.0} ms",
        median(one_phone.clone()) * 1e3,
        median(agent_side) * 1e3,
        one_phone.iter().copied().fold(f64::MAX, f64::min) * 1e3,
        one_phone.iter().copied().fold(0.0, f64::max) * 1e3,
    );

    // The apply journal's share of that: persisting the one changed file's previous content
    // (fsync, rename, folder fsync) before writing, and removing it after, on the same file
    // system as Asterisk's config folder.
    let journal_path = ast.etc_dir().join(".bench.journal");
    let journal = asterisk_operator::agent::journal::Journal {
        target_hash: bundle.hash.clone(),
        backups: [(
            render::PJSIP_FILE.to_owned(),
            Some(bundle.files[render::PJSIP_FILE].clone().into_bytes()),
        )]
        .into(),
        modules: ["res_pjsip.so".to_owned()].into(),
    };
    let mut journal_times = Vec::new();
    for _ in 0..21 {
        let t = Instant::now();
        journal.begin(&journal_path).unwrap();
        asterisk_operator::agent::journal::Journal::finish(&journal_path).unwrap();
        journal_times.push(t.elapsed().as_secs_f64());
    }
    println!(
        "apply journal for that change (405 KiB backed up: write, fsync, rename, remove), 21 rounds: median {:.1} ms, min {:.1} ms, max {:.1} ms",
        median(journal_times.clone()) * 1e3,
        journal_times.iter().copied().fold(f64::MAX, f64::min) * 1e3,
        journal_times.iter().copied().fold(0.0, f64::max) * 1e3,
    );

    // Idle: let two poll cycles pass, then read the agent's resident set.
    std::thread::sleep(Duration::from_secs(3));
    let _ = ag::get(std::net::SocketAddr::from(([127, 0, 0, 1], http)), "/metrics");
    std::thread::sleep(Duration::from_secs(1));
    let idle = rss_kib(child.id());
    println!("agent idle RSS after the applies: {:.1} MiB", idle as f64 / 1024.0);

    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
