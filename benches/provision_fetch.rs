//! 1,000 desk phones boot at once and fetch their files from the real `asterisk-operator agent`
//! binary beside a real Asterisk 22 (test-bed: `bash testbed/setup.sh`): over TFTP (each phone
//! a transfer of its own, a Cisco asking for its CTL file first, half the phones negotiating
//! blksize/tsize like atftp and curl, half sending no options like tftp-hpa), then the same
//! over HTTP. Reports the time until every phone has its files, the latency per phone, and the
//! agent's CPU time and RSS while serving. A measurement, not a test; numbers go to
//! docs/benchmarks.md.
//!
//! `cargo bench --bench provision_fetch`

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use asterisk_operator::agent::{ClientOptions, bundle_to_proto, connect};
use asterisk_operator::crd::{NodeProvisioning, TimeZone};
use asterisk_operator::provision::tftp::packet::{self, Mode, Packet, Request};
use asterisk_operator::render;
use asterisk_operator::topology;
use support::agent as ag;
use support::fleet::{self, on_loopback};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

const PHONES: usize = 1000;
const MODELS: [(&str, &str); 5] =
    [("cisco", "8845"), ("cisco", "7960"), ("yealink", "T46S"), ("polycom", "VVX 410"), ("snom", "D785")];

/// (user+system CPU seconds, VmRSS KiB, VmHWM KiB) of a process.
fn usage(pid: u32, ticks: f64) -> (f64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let cpu = (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / ticks;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |key: &str| {
        let line = status.lines().find(|l| l.starts_with(key)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap()
    };
    (cpu, kib("VmRSS:"), kib("VmHWM:"))
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// One TFTP read like a phone's: returns the bytes, or None when the server said "not found".
async fn tftp_get(server: SocketAddr, name: &str, options: bool) -> Option<Vec<u8>> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let opts =
        if options { vec![("blksize".into(), "1428".into()), ("tsize".into(), "0".into())] } else { vec![] };
    let rrq = Packet::Rrq(Request { filename: name.into(), mode: Mode::Octet, options: opts }).encode();
    let (mut blksize, mut expected, mut got, mut last) = (512usize, 1u16, Vec::new(), rrq.clone());
    let mut peer = server;
    socket.send_to(&rrq, server).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let mut silence = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(1), socket.recv_from(&mut buf)).await {
            Err(_) => {
                silence += 1;
                assert!(silence < 15, "{name}: no answer");
                socket.send_to(&last, peer).await.unwrap();
            }
            Ok(r) => {
                let (len, from) = r.unwrap();
                silence = 0;
                peer = from;
                match packet::decode(&buf[..len]).unwrap() {
                    Packet::Oack { options } => {
                        if let Some((_, v)) = options.iter().find(|(k, _)| k == "blksize") {
                            blksize = v.parse().unwrap();
                        }
                        last = Packet::Ack { block: 0 }.encode();
                        socket.send_to(&last, peer).await.unwrap();
                    }
                    Packet::Data { block, data } if block == expected => {
                        got.extend_from_slice(&data);
                        last = Packet::Ack { block }.encode();
                        socket.send_to(&last, peer).await.unwrap();
                        if data.len() < blksize {
                            return Some(got);
                        }
                        expected = expected.wrapping_add(1);
                    }
                    Packet::Data { block, .. } => {
                        socket.send_to(&Packet::Ack { block }.encode(), peer).await.map(drop).unwrap()
                    }
                    Packet::Error { .. } => return None,
                    other => panic!("{name}: unexpected {other:?}"),
                }
            }
        }
    }
}

async fn http_get(server: SocketAddr, name: &str) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(server).await.unwrap();
    s.write_all(
        format!("GET /{name} HTTP/1.1\r\nHost: agent\r\nUser-Agent: bench\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut response = Vec::new();
    s.read_to_end(&mut response).await.unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert!(response.starts_with(b"HTTP/1.1 200"), "{name}: {}", String::from_utf8_lossy(&response[..split]));
    response[split + 4..].to_vec()
}

fn main() {
    let mut yaml = fleet::read("examples/two-offices.yaml");
    // office-a owns 3XXX and, below, 5XXX too: room for 999 desk phones beside the reception.
    let extensions = (3003..=3999).chain(5000..).take(PHONES - 1);
    for (i, ext) in extensions.enumerate() {
        let (vendor, model) = MODELS[i % MODELS.len()];
        yaml.push_str(&format!(
            "---\napiVersion: asterisk.operator.dev/v1alpha1\nkind: Phone\nmetadata: {{name: p{ext}}}\n\
             spec: {{node: office-a, extension: \"{ext}\", displayName: Desk {ext}, \
             device: {{vendor: {vendor}, model: \"{model}\", mac: \"00:0b:82:00:{:02x}:{:02x}\"}}}}\n\
             ---\napiVersion: asterisk.operator.dev/v1alpha1\nkind: BlfSubscription\nmetadata: {{name: keys-{ext}}}\n\
             spec: {{watcher: {{phone: p{ext}}}, targets: [{{extension: \"3001\", label: Reception}}, {{extension: \"4001\", label: Sales}}]}}\n",
            i / 256,
            i % 256
        ));
    }
    let (mut set, addrs) = on_loopback(fleet::with_test_secrets(fleet::parse(&yaml)));
    let a = set.nodes.iter_mut().find(|n| n.metadata.name.as_deref() == Some("office-a")).unwrap();
    a.spec.numbering.prefixes.push("5".into());
    a.spec.provisioning = Some(NodeProvisioning {
        allowed_networks: vec!["127.0.0.1/32".into()],
        time_zone: Some(TimeZone::EuropeBerlin),
        ntp_server: Some("192.0.2.1".into()),
        ..NodeProvisioning::default()
    });
    let resolution = topology::resolve(&set);
    assert_eq!(resolution.errors, vec![]);
    let bundle = render::render_all(&resolution.topology).remove("office-a").unwrap();
    let index = &bundle.provisioning.index;
    // Each phone's boot: a Cisco asks for its CTL file first; a Yealink for the common file.
    let mut boots: Vec<Vec<String>> = Vec::new();
    for phone in set.phones.iter().filter_map(|p| p.metadata.name.clone()) {
        let mut files: Vec<String> = index
            .files
            .iter()
            .filter(|(_, f)| f.phone.as_deref() == Some(&phone))
            .map(|(n, _)| n.clone())
            .collect();
        if files.is_empty() {
            continue;
        }
        files.sort_by_key(|n| n.ends_with("-phone.cfg")); // Polycom: master file first
        if let Some(sep) = files.iter().find(|n| n.starts_with("SEP")) {
            files.insert(0, format!("CTL{}.tlv", sep.trim_end_matches(".cnf.xml")));
        }
        if files[0].ends_with(".cfg") && index.files[&files[0]].vendor.as_str() == "yealink" {
            files.insert(0, "y000000000000.cfg".into());
        }
        boots.push(files);
    }
    let requests: usize = boots.iter().map(Vec::len).sum();
    println!(
        "{} desk phones, {} provisioning files ({} KiB), {requests} requests per boot storm",
        boots.len(),
        bundle.provisioning.files.len(),
        bundle.provisioning.files.values().map(String::len).sum::<usize>() / 1024
    );

    let addr = addrs["office-a"];
    let ast = ag::asterisk_for_agent("office-a", addr);
    let dir = std::env::temp_dir().join(format!("ao-bench-prov-{}", std::process::id()));
    let free_port = ag::free_port;
    let (grpc, http, tftp_port, prov_http) = (free_port(), free_port(), free_port(), free_port());
    let mut child = ag::agent_process(&ast, &dir, grpc, http)
        .arg("--provisioning-file")
        .arg(dir.join("provisioning.json"))
        .args(["--provision-tftp", &format!("127.0.0.1:{tftp_port}")])
        .args(["--provision-http", &format!("127.0.0.1:{prov_http}")])
        .spawn()
        .expect("agent binary starts");
    let ticks: f64 = String::from_utf8(Command::new("getconf").arg("CLK_TCK").output().unwrap().stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let opts = ClientOptions::new(&format!("http://127.0.0.1:{grpc}"));
        let mut client = loop {
            if let Ok(c) = connect(&opts).await {
                break c;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let r = client.apply(bundle_to_proto(&bundle)).await.unwrap().into_inner();
        assert!(r.ok, "{r:?}");
    });
    let expected: Arc<std::collections::BTreeMap<String, String>> =
        Arc::new(bundle.provisioning.files.clone());
    let boots = Arc::new(boots);
    let (_, rss_before, _) = usage(child.id(), ticks);
    println!("agent RSS before serving: {:.1} MiB", rss_before as f64 / 1024.0);

    let storm = |protocol: &'static str, in_flight: usize| {
        let (cpu0, _, _) = usage(child.id(), ticks);
        let started = Instant::now();
        let latencies = rt.block_on(async {
            let slots = Arc::new(Semaphore::new(in_flight));
            let mut tasks = tokio::task::JoinSet::new();
            for (i, files) in boots.iter().cloned().enumerate() {
                let (slots, expected) = (slots.clone(), expected.clone());
                tasks.spawn(async move {
                    let _slot = slots.acquire_owned().await.unwrap();
                    let t = Instant::now();
                    for name in &files {
                        let got = match protocol {
                            "tftp" => {
                                tftp_get(SocketAddr::from(([127, 0, 0, 1], tftp_port)), name, i % 2 == 0)
                                    .await
                            }
                            _ if name.starts_with("CTL") => None,
                            _ => Some(http_get(SocketAddr::from(([127, 0, 0, 1], prov_http)), name).await),
                        };
                        match expected.get(name) {
                            Some(want) => assert_eq!(got.as_deref(), Some(want.as_bytes()), "{name}"),
                            None => assert!(got.is_none(), "{name} should not exist"),
                        }
                    }
                    t.elapsed().as_secs_f64()
                });
            }
            let mut latencies = Vec::new();
            while let Some(t) = tasks.join_next().await {
                latencies.push(t.unwrap());
            }
            latencies
        });
        let total = started.elapsed().as_secs_f64();
        let (cpu1, rss, hwm) = usage(child.id(), ticks);
        let mut l = latencies;
        println!(
            "{protocol}, {} phones, {in_flight} booting at a time: all served in {:.2} s ({:.0} requests/s); \
             per phone p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; agent CPU {:.2} s ({:.0} % of one core); RSS {:.1} MiB (peak {:.1} MiB)",
            l.len(),
            total,
            requests as f64 / total,
            percentile(&mut l, 0.5) * 1e3,
            percentile(&mut l, 0.99) * 1e3,
            percentile(&mut l, 1.0) * 1e3,
            cpu1 - cpu0,
            (cpu1 - cpu0) / total * 100.0,
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0,
        );
    };
    for in_flight in [PHONES, 100] {
        storm("tftp", in_flight);
        storm("http", in_flight);
    }

    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
