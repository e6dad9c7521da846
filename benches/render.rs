//! Resolve + render a whole fleet: 20 nodes, up to 10,000 phones, 500 BLF targets.
//! Target: < 100 ms for the whole fleet, linear in phones.

use std::hint::black_box;

#[path = "../tests/support/mod.rs"]
mod support;

use asterisk_operator::render;
use asterisk_operator::topology;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("resolve_and_render_fleet");
    group.sample_size(20);
    for phones in [1_000usize, 5_000, 10_000] {
        let set = support::fleet::synthetic(20, phones, 500);
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
