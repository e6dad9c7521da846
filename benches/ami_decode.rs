//! AMI decode throughput on a realistic mixed event stream built from the Asterisk 22 captures:
//! every event of every capture (DeviceStateChange, ExtensionStatus, VarSet, Newchannel, Hangup,
//! PeerEntry, ContactStatus, …) concatenated and repeated, fed in 64 KiB reads as a socket would.
//! Throughput is reported in events (frames) per second.

use std::hint::black_box;

use asterisk_operator::ami::{Decoder, Frame};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn stream() -> (Vec<u8>, u64) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ami");
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.ends_with(".txt")
                && !n.ends_with(".sent.txt")
                && n.as_bytes()[0] == b'0'
                && !["06d", "06e", "07"].iter().any(|x| n.starts_with(x))
        })
        .collect();
    names.sort();
    let mut events = Vec::new();
    for p in names {
        let mut d = Decoder::new();
        for f in d.decode(&std::fs::read(p).unwrap()) {
            if let Ok(Frame::Message(m)) = f
                && m.event_name().is_some()
            {
                events.push(m.to_wire());
            }
        }
    }
    let one: Vec<u8> = events.concat();
    let reps = (4 << 20) / one.len() + 1;
    let mut all = b"Asterisk Call Manager/11.0.0\r\n".to_vec();
    for _ in 0..reps {
        all.extend_from_slice(&one);
    }
    (all, (events.len() * reps) as u64)
}

fn bench(c: &mut Criterion) {
    let (bytes, n) = stream();
    let mut g = c.benchmark_group("ami_decode");
    g.throughput(Throughput::Elements(n));
    g.sample_size(20);
    g.bench_function("mixed_events_64k_reads", |b| {
        b.iter(|| {
            let mut d = Decoder::new();
            let mut count = 0u64;
            for chunk in bytes.chunks(64 * 1024) {
                d.feed(chunk);
                while let Some(f) = d.next_frame() {
                    if let Ok(Frame::Message(m)) = f {
                        count += black_box(m).len() as u64 / 1024 + 1;
                    }
                }
            }
            assert_eq!(count, n);
        })
    });
    g.finish();
    eprintln!("stream: {} bytes, {n} events, {:.0} bytes/event", bytes.len(), bytes.len() as f64 / n as f64);
}

criterion_group!(benches, bench);
criterion_main!(benches);
