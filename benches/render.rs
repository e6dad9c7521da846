//! Resolve + render a whole fleet: 20 nodes, up to 10,000 phones, 500 BLF targets.
//! Target: < 100 ms for the whole fleet, linear in phones.

use std::hint::black_box;

use asterisk_operator::crd::*;
use asterisk_operator::render;
use asterisk_operator::secret::SecretValue;
use asterisk_operator::topology::{self, ResourceSet};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const NODES: usize = 20;

fn fleet(phones: usize, blf_targets: usize) -> ResourceSet {
    let mut set = ResourceSet { namespace: "default".into(), ..ResourceSet::default() };
    let spec_node = |i: usize| AsteriskNodeSpec {
        numbering: NumberingPlan { prefixes: vec![format!("{}", 10 + i)], length: 6 },
        address: (i % 3 != 2).then(|| format!("192.0.2.{}", i + 1)),
        agent: Some(AgentEndpoint { endpoint: format!("https://node-{i}:7443") }),
        managed: None,
        sip: SipSettings::default(),
        iax: IaxSettings::default(),
        phone_context: "operator-phones".into(),
        codecs: vec!["ulaw".into(), "alaw".into()],
        nat: None,
    };
    for i in 0..NODES {
        set.nodes.push(AsteriskNode::new(&format!("node-{i}"), spec_node(i)));
    }
    // A hub (node-0, fixed address) with an IAX2 trunk to every branch and a PJSIP fallback to
    // every other one, plus a few direct branch-to-branch trunks.
    let mut trunk = |name: String, protocol, a: usize, b: usize, priority| {
        let mut t = Trunk::new(
            &name,
            TrunkSpec {
                protocol,
                ends: vec![format!("node-{a}"), format!("node-{b}")],
                priority,
                auth: TrunkAuth::default(),
                trunking: true,
                permit: vec![],
                codecs: None,
                qualify: true,
            },
        );
        t.metadata.namespace = Some("default".into());
        set.trunks.push(t);
    };
    for i in 1..NODES {
        trunk(format!("hub-{i}"), TrunkProtocol::Iax2, 0, i, 1);
        if i % 2 == 0 {
            trunk(format!("hub-{i}-sip"), TrunkProtocol::Pjsip, 0, i, 2);
        }
    }
    for i in (1..NODES - 1).step_by(4) {
        trunk(format!("direct-{i}"), TrunkProtocol::Iax2, i, i + 1, 1);
    }
    for p in 0..phones {
        let node = p % NODES;
        let ext = format!("{}{:04}", 10 + node, p / NODES);
        set.phones.push(Phone::new(
            &format!("phone-{p}"),
            PhoneSpec {
                node: format!("node-{node}"),
                extension: ext,
                display_name: Some(format!("Phone {p}")),
                secret_ref: None,
                nat: true,
                codecs: None,
                voicemail: None,
                max_contacts: 1,
                device: None,
            },
        ));
    }
    // BLF: subscriptions of 10 targets each, watched by phones spread over the nodes.
    for s in 0..blf_targets / 10 {
        let watcher = (s * 7) % phones;
        let targets = (0..10)
            .map(|k| {
                let p = (s * 131 + k * 17 + 1) % phones;
                BlfTarget { extension: format!("{}{:04}", 10 + p % NODES, p / NODES), label: None }
            })
            .collect();
        set.blf_subscriptions.push(BlfSubscription::new(
            &format!("blf-{s}"),
            BlfSubscriptionSpec {
                watcher: Watcher { phone: Some(format!("phone-{watcher}")), node: None },
                targets,
            },
        ));
    }
    for missing in topology::missing_secrets(&set) {
        set.secrets
            .entry(missing.name)
            .or_default()
            .insert(missing.key, SecretValue::new("BenchSecret0123456789"));
    }
    set
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("resolve_and_render_fleet");
    group.sample_size(20);
    for phones in [1_000usize, 5_000, 10_000] {
        let set = fleet(phones, 500);
        let check = topology::resolve(&set);
        assert!(check.errors.is_empty(), "{:?}", &check.errors[..check.errors.len().min(3)]);
        assert_eq!(check.topology.phones.len(), phones);
        group.throughput(Throughput::Elements(phones as u64));
        group.bench_with_input(BenchmarkId::new("20_nodes_500_blf", phones), &set, |b, set| {
            b.iter(|| {
                let resolution = topology::resolve(black_box(set));
                black_box(render::render_all(&resolution.topology))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
