//! End-to-end relay benchmark of the device-state mesh with real Asterisk 22 on both sides.
//!
//! Two Asterisk instances on loopback (office-b owns `N` extensions whose hints are
//! `Custom:drive-<ext>`, office-a mirrors them on `Custom:office-b-<ext>`), and the two mesh
//! nodes as separate processes (this binary re-executed with `AO_MESH_CHILD`), talking mTLS.
//! A driver writes `Setvar DEVICE_STATE(Custom:drive-<ext>)` on its own AMI connection at a
//! fixed rate; two observers, each on its own AMI connection, time-stamp the owner's
//! `DeviceStateChange` and the watcher's `DeviceStateChange` of the mirrored device. Reported:
//! relay latency p50/p90/p99/max at 10, 100, 1,000 changes/s; the highest sustained rate; the
//! mesh processes' CPU and RSS; and a 20,000/s, 5 s burst (final states, lag recovery).
//! Two breakdown columns: owner's `ExtensionStatus` → mirror (where the mesh starts), and one
//! AMI leg alone (the driver's Setvar written → the owner's `DeviceStateChange`), which the
//! watcher's own Setvar costs again inside every relay.
//!
//! `AO_MESH_BENCH_QUICK=1` stops after the three latency rates; `AO_MESH_BENCH_FLAVOR=multi`
//! runs the mesh processes on two tokio workers instead of the agent's one thread.
//!
//! `cargo bench --bench mesh_relay` (needs the test-bed: `bash testbed/setup.sh`). Not a
//! criterion bench: one run is minutes of real time against real processes, and the numbers
//! are distributions over thousands of events, printed as a Markdown table.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use asterisk_operator::ami::events::ExtensionStatus;
use asterisk_operator::ami::{Action, Decoder, DeviceState, Frame, Session, SessionConfig};
use asterisk_operator::mesh::{self, MeshConfig, MeshNode, MeshTls, PeerAuth};
use asterisk_operator::render::{MeshExport, MeshImport, MeshPlan, MeshSource};
use asterisk_operator::secret::SecretValue;
use serde::{Deserialize, Serialize};
use support::asterisk::Asterisk;
use support::mesh::{Pki, STATES};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Exported extensions (changes rotate over them).
const N: u32 = 200;
const FIRST: u32 = 1000;

#[derive(Serialize, Deserialize)]
struct ChildConfig {
    node: String,
    ami: String,
    listen: SocketAddr,
    plan: MeshPlan,
    endpoints: BTreeMap<String, String>,
    ca: String,
    cert: String,
    key: String,
}

/// A mesh node process: serves, follows its plan, prints `ready`; on stdin `metrics` prints
/// its metrics and `END`; exits on EOF.
fn child(json: &str) {
    let cfg: ChildConfig = serde_json::from_str(json).expect("child config");
    // One thread, like the agent (src/main.rs); `AO_MESH_BENCH_FLAVOR=multi` compares two workers.
    let rt = match std::env::var("AO_MESH_BENCH_FLAVOR").as_deref() {
        Ok("multi") => tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build(),
        _ => tokio::runtime::Builder::new_current_thread().enable_all().build(),
    }
    .unwrap();
    rt.block_on(async move {
        let mut ami = SessionConfig::new(cfg.ami.clone(), "admin", SecretValue::new("secret"));
        ami.backoff_max = Duration::from_millis(500);
        let session = Session::spawn(ami);
        let tls = MeshTls { ca: cfg.ca.into(), cert: cfg.cert.into(), key: cfg.key.into() };
        let mut mc = MeshConfig::new(&cfg.node);
        mc.tls = Some(tls.clone());
        mc.endpoints = cfg.endpoints;
        let (_plan_tx, plan_rx) = tokio::sync::watch::channel(cfg.plan);
        let node = MeshNode::spawn(mc, plan_rx, session, PeerAuth::Certificate);
        let _server = mesh::serve(node.service(), cfg.listen, Some(&tls)).await.expect("mesh server");
        println!("ready");
        let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(4);
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        while let Some(cmd) = rx.recv().await {
            if cmd == "metrics" {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}END", node.metrics().encode());
                let _ = out.flush();
            }
        }
    });
}

struct MeshProcess {
    child: Child,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl MeshProcess {
    fn start(cfg: &ChildConfig) -> MeshProcess {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env("AO_MESH_CHILD", serde_json::to_string(cfg).unwrap())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("mesh child starts");
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "mesh child did not start");
        MeshProcess { child, stdout }
    }

    fn metrics(&mut self) -> String {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "metrics").unwrap();
        stdin.flush().unwrap();
        let mut text = String::new();
        loop {
            let mut line = String::new();
            if self.stdout.read_line(&mut line).unwrap() == 0 || line == "END\n" {
                return text;
            }
            text.push_str(&line);
        }
    }

    /// (CPU seconds so far, current RSS kB, peak RSS kB).
    fn usage(&self) -> (f64, u64, u64) {
        proc_usage(self.child.id())
    }
}

impl Drop for MeshProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_usage(pid: u32) -> (f64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (ticks / 100.0, kb("VmRSS:"), kb("VmHWM:"))
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A raw AMI connection, logged in.
async fn raw_login(
    addr: SocketAddr,
    events: &str,
) -> (tokio::net::tcp::OwnedReadHalf, tokio::net::tcp::OwnedWriteHalf, Decoder) {
    let stream = TcpStream::connect(addr).await.expect("AMI connect");
    stream.set_nodelay(true).unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let mut out = Vec::new();
    Action::new("Login")
        .header("Username", "admin")
        .header("Secret", "secret")
        .header("Events", events)
        .encode(Some("login"), &mut out)
        .unwrap();
    wr.write_all(&out).await.unwrap();
    let mut dec = Decoder::new();
    let mut buf = vec![0u8; 65536];
    loop {
        while let Some(f) = dec.next_frame() {
            if let Ok(Frame::Message(m)) = f
                && m.action_id() == Some("login")
            {
                assert!(!m.is_error(), "AMI login refused");
                return (rd, wr, dec);
            }
        }
        let n = rd.read(&mut buf).await.unwrap();
        assert!(n > 0, "AMI closed during login");
        dec.feed(&buf[..n]);
    }
}

/// One observed DeviceStateChange: (extension, state index, when).
type Seen = (u32, u8, Instant);

/// Records every DeviceStateChange of devices `<prefix><ext>`, time-stamped at arrival.
async fn observe(addr: SocketAddr, prefix: &'static str, log: Arc<Mutex<Vec<Seen>>>) {
    observe_with_hints(addr, prefix, log, None).await
}

/// Like [`observe`], also recording the owner's `ExtensionStatus` of every hint in `hints`:
/// the moment Asterisk finished its own hint processing, where the mesh's owner starts.
async fn observe_with_hints(
    addr: SocketAddr,
    prefix: &'static str,
    log: Arc<Mutex<Vec<Seen>>>,
    hints: Option<Arc<Mutex<Vec<Seen>>>>,
) {
    let (mut rd, _wr, mut dec) = raw_login(addr, "on").await;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let now = Instant::now();
        dec.feed(&buf[..n]);
        let mut log = log.lock().unwrap();
        while let Some(f) = dec.next_frame() {
            let Ok(Frame::Message(m)) = f else { continue };
            if m.event_name() == Some("ExtensionStatus")
                && let Some(hints) = &hints
            {
                if let Ok(es) = ExtensionStatus::from_message(m)
                    && let Ok(ext) = es.exten.parse::<u32>()
                    && let Some(idx) = STATES.iter().position(|s| *s == es.status.to_device_state())
                {
                    hints.lock().unwrap().push((ext, idx as u8, now));
                }
                continue;
            }
            if m.event_name() != Some("DeviceStateChange") {
                continue;
            }
            let (Some(dev), Some(state)) = (m.get("Device"), m.get("State")) else { continue };
            let Some(ext) = dev.strip_prefix(prefix).and_then(|e| e.parse::<u32>().ok()) else { continue };
            let Ok(state) = state.parse::<DeviceState>() else { continue };
            let Some(idx) = STATES.iter().position(|s| *s == state) else { continue };
            log.push((ext, idx as u8, now));
        }
    }
}

/// The driver: Setvars in order on one connection, paced to `rate`/s for `secs`, continuing
/// the global change counter `k` (so consecutive changes of an extension always differ).
async fn drive(
    addr: SocketAddr,
    rate: f64,
    secs: f64,
    k: &mut u64,
    mut sends: Option<&mut Vec<Seen>>,
) -> (u64, Duration) {
    let (mut rd, mut wr, _) = raw_login(addr, "off").await;
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 1 << 16];
        while matches!(rd.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    let start = Instant::now();
    let total = (rate * secs) as u64;
    let mut sent = 0u64;
    let mut out = Vec::with_capacity(1 << 16);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    while sent < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate) as u64).min(total);
        out.clear();
        let first = *k;
        while sent < due {
            let (ext, state) = change(*k);
            *k += 1;
            sent += 1;
            let id = format!("d{k}");
            Action::new("Setvar")
                .header("Variable", format!("DEVICE_STATE(Custom:drive-{ext})"))
                .header("Value", state.as_str())
                .encode(Some(&id), &mut out)
                .unwrap();
        }
        if !out.is_empty() {
            wr.write_all(&out).await.unwrap();
            if let Some(log) = sends.as_deref_mut() {
                let now = Instant::now();
                for j in first..*k {
                    let (ext, state) = change(j);
                    let idx = STATES.iter().position(|s| *s == state).unwrap_or(0);
                    log.push((ext, idx as u8, now));
                }
            }
        }
    }
    let took = start.elapsed();
    // Log off (the reader sees the close once every answer is in).
    let mut bye = Vec::new();
    Action::new("Logoff").encode(Some("bye"), &mut bye).unwrap();
    wr.write_all(&bye).await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(30), reader).await;
    (sent, took)
}

fn change(k: u64) -> (u32, DeviceState) {
    let ext = FIRST + (k % u64::from(N)) as u32;
    (ext, STATES[((k / u64::from(N)) % STATES.len() as u64) as usize])
}

/// Latencies of watcher events matched to the owner event they mirror: the latest owner event
/// of that extension with that state before the watcher's (a coalesced burst writes only the
/// latest state, so that is its cause). Returns (owner event time, latency µs) and the number
/// of owner events folded into a later one (coalesced).
fn matched(owner: &[Seen], watcher: &[Seen]) -> (Vec<(Instant, f64)>, usize) {
    let mut by_ext: HashMap<u32, Vec<(u8, Instant)>> = HashMap::new();
    for (e, s, t) in owner {
        by_ext.entry(*e).or_default().push((*s, *t));
    }
    let mut pos: HashMap<u32, usize> = HashMap::new();
    let mut lat = Vec::new();
    let mut skipped = 0;
    for (e, s, t2) in watcher {
        let Some(list) = by_ext.get(e) else { continue };
        let p = pos.entry(*e).or_default();
        let mut best = None;
        let mut i = *p;
        while i < list.len() && list[i].1 <= *t2 {
            if list[i].0 == *s {
                best = Some(i);
            }
            i += 1;
        }
        if let Some(i) = best {
            skipped += i - *p;
            lat.push((list[i].1, t2.duration_since(list[i].1).as_secs_f64() * 1e6));
            *p = i + 1;
        }
    }
    (lat, skipped)
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

struct Bench {
    owner_addr: SocketAddr,
    owner_log: Arc<Mutex<Vec<Seen>>>,
    hint_log: Arc<Mutex<Vec<Seen>>>,
    watcher_log: Arc<Mutex<Vec<Seen>>>,
    k: u64,
}

struct Phase {
    offered: f64,
    sent: u64,
    send_secs: f64,
    owner_events: usize,
    watcher_events: usize,
    lat: Vec<f64>,
    /// Owner's ExtensionStatus (hint processed by Asterisk) → watcher's DeviceStateChange, µs.
    hop: Vec<f64>,
    /// One AMI leg: the driver's Setvar written → the owner's DeviceStateChange, µs.
    leg: Vec<f64>,
    coalesced: usize,
}

impl Bench {
    async fn phase(&mut self, rate: f64, secs: f64, settle: Duration) -> Phase {
        self.owner_log.lock().unwrap().clear();
        self.hint_log.lock().unwrap().clear();
        self.watcher_log.lock().unwrap().clear();
        let mut sends = Vec::new();
        let (sent, took) = drive(self.owner_addr, rate, secs, &mut self.k, Some(&mut sends)).await;
        tokio::time::sleep(settle).await;
        let owner = std::mem::take(&mut *self.owner_log.lock().unwrap());
        let watcher = std::mem::take(&mut *self.watcher_log.lock().unwrap());
        let hints = std::mem::take(&mut *self.hint_log.lock().unwrap());
        let (pairs, coalesced) = matched(&owner, &watcher);
        let mut lat: Vec<f64> = pairs.iter().map(|p| p.1).collect();
        lat.sort_by(f64::total_cmp);
        let mut hop: Vec<f64> = matched(&hints, &watcher).0.iter().map(|p| p.1).collect();
        hop.sort_by(f64::total_cmp);
        let mut leg: Vec<f64> = matched(&sends, &owner).0.iter().map(|p| p.1).collect();
        leg.sort_by(f64::total_cmp);
        Phase {
            offered: rate,
            sent,
            send_secs: took.as_secs_f64(),
            owner_events: owner.len(),
            watcher_events: watcher.len(),
            lat,
            hop,
            leg,
            coalesced,
        }
    }
}

/// Mirrors on office-a whose state differs from the owner's driven device on office-b.
async fn wrong_mirrors(a: &Asterisk, b: &Asterisk) -> usize {
    let obs_a = support::mesh::observer(a).await;
    let obs_b = support::mesh::observer(b).await;
    let mut wrong = 0;
    for e in FIRST..FIRST + N {
        let want = support::mesh::device_state(&obs_b, &format!("Custom:drive-{e}")).await;
        let got = support::mesh::device_state(&obs_a, &format!("Custom:office-b-{e}")).await;
        if want != got {
            wrong += 1;
        }
    }
    wrong
}

fn hints(context: &str, device: impl Fn(u32) -> String) -> String {
    let mut s = format!("[{context}]\n");
    for e in FIRST..FIRST + N {
        s.push_str(&format!("exten => {e},hint,{}\n", device(e)));
    }
    s
}

fn main() {
    if let Ok(cfg) = std::env::var("AO_MESH_CHILD") {
        child(&cfg);
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and the test harness protocol: nothing to list.
    }
    // `cargo bench` passes `--bench`; without it (`cargo test --all-targets`) only a smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let b = Asterisk::builder("office-b")
        .file("extensions_operator.conf", hints("operator-local", |e| format!("Custom:drive-{e}")))
        .start();
    let a = Asterisk::builder("office-a")
        .file("extensions_operator.conf", hints("operator-routes", |e| format!("Custom:office-b-{e}")))
        .start();
    let exts: Vec<String> = (FIRST..FIRST + N).map(|e| e.to_string()).collect();
    let owner_plan = MeshPlan {
        node: "office-b".into(),
        sources: vec![],
        exports: exts
            .iter()
            .map(|e| MeshExport {
                extension: e.clone(),
                context: "operator-local".into(),
                watchers: vec!["office-a".into()],
            })
            .collect(),
    };
    let watcher_plan = MeshPlan {
        node: "office-a".into(),
        sources: vec![MeshSource {
            node: "office-b".into(),
            endpoint: None,
            imports: exts
                .iter()
                .map(|e| MeshImport { extension: e.clone(), device: format!("Custom:office-b-{e}") })
                .collect(),
        }],
        exports: vec![],
    };
    let pki = Pki::new("bench");
    let (tls_a, tls_b) = (pki.issue("a", "office-a"), pki.issue("b", "office-b"));
    let listen_b = SocketAddr::from((b.addr, 7443));
    let cfg = |node: &str, ami: SocketAddr, listen: SocketAddr, plan: MeshPlan, tls: &MeshTls| ChildConfig {
        node: node.into(),
        ami: ami.to_string(),
        listen,
        plan,
        endpoints: BTreeMap::from([("office-b".into(), format!("https://{listen_b}"))]),
        ca: tls.ca.display().to_string(),
        cert: tls.cert.display().to_string(),
        key: tls.key.display().to_string(),
    };
    let mut owner = MeshProcess::start(&cfg("office-b", b.ami_addr(), listen_b, owner_plan, &tls_b));
    let mut watcher = MeshProcess::start(&cfg(
        "office-a",
        a.ami_addr(),
        SocketAddr::from((a.addr, 7443)),
        watcher_plan,
        &tls_a,
    ));

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let owner_log = Arc::new(Mutex::new(Vec::new()));
        let hint_log = Arc::new(Mutex::new(Vec::new()));
        let watcher_log = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(observe_with_hints(b.ami_addr(), "Custom:drive-", owner_log.clone(), Some(hint_log.clone())));
        tokio::spawn(observe(a.ami_addr(), "Custom:office-b-", watcher_log.clone()));
        // Wait for the watcher's snapshot (every mirror written once).
        let start = Instant::now();
        while metric(&watcher.metrics(), "asterisk_agent_mesh_updates_applied_total") < f64::from(N) {
            assert!(start.elapsed() < Duration::from_secs(20), "the mesh never came up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut bench = Bench { owner_addr: b.ami_addr(), owner_log, hint_log, watcher_log, k: 0 };
        // Warm-up: every extension leaves its initial state once.
        bench.phase(2000.0, 1.0, Duration::from_millis(500)).await;
        if !full {
            // `cargo test --all-targets` runs this binary without `--bench`: a short smoke run
            // (real processes, real Asterisk), no measurements.
            let p = bench.phase(100.0, 1.0, Duration::from_millis(500)).await;
            assert_eq!(p.watcher_events, p.owner_events, "every change relayed at 100/s");
            assert_eq!(wrong_mirrors(&a, &b).await, 0, "mirrors differ from their owner's state");
            println!("mesh_relay smoke run ok ({} changes relayed); `cargo bench --bench mesh_relay` measures", p.sent);
            return;
        }

        println!("\n## Relay latency (owner DeviceStateChange → watcher DeviceStateChange), {N} extensions\n");
        println!("| offered/s | sent | owner events | watcher events | coalesced | p50 µs | p90 µs | p99 µs | max µs | hint→mirror p50 µs | p99 µs | AMI leg p50 µs | p99 µs |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let row = |p: &Phase| {
            println!(
                "| {:.0} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
                p.offered,
                p.sent,
                p.owner_events,
                p.watcher_events,
                p.coalesced,
                pct(&p.lat, 0.5),
                pct(&p.lat, 0.9),
                pct(&p.lat, 0.99),
                p.lat.last().copied().unwrap_or(f64::NAN),
                pct(&p.hop, 0.5),
                pct(&p.hop, 0.99),
                pct(&p.leg, 0.5),
                pct(&p.leg, 0.99),
            )
        };
        for (rate, secs) in [(10.0, 20.0), (100.0, 10.0)] {
            row(&bench.phase(rate, secs, Duration::from_millis(500)).await);
        }
        if std::env::var("AO_MESH_BENCH_QUICK").is_ok() {
            row(&bench.phase(1000.0, 10.0, Duration::from_millis(500)).await);
            return;
        }
        // 1,000/s with the mesh processes' CPU and memory.
        let (cpu_o0, _, _) = owner.usage();
        let (cpu_w0, _, _) = watcher.usage();
        let ast0: Vec<u64> = [&a, &b].iter().map(|x| proc_usage(x.pid().unwrap()).1).collect();
        let ast_cpu0: Vec<f64> = [&a, &b].iter().map(|x| proc_usage(x.pid().unwrap()).0).collect();
        let p = bench.phase(1000.0, 10.0, Duration::from_millis(500)).await;
        let (cpu_o1, rss_o, hwm_o) = owner.usage();
        let (cpu_w1, rss_w, hwm_w) = watcher.usage();
        row(&p);
        let secs = p.send_secs + 0.5;
        let ast_cpu1: Vec<f64> = [&a, &b].iter().map(|x| proc_usage(x.pid().unwrap()).0).collect();
        let mut usage = vec![format!(
            "1,000/s: owner mesh CPU {:.1} % RSS {} kB (peak {} kB); watcher mesh CPU {:.1} % RSS {} kB (peak {} kB)",
            100.0 * (cpu_o1 - cpu_o0) / secs,
            rss_o,
            hwm_o,
            100.0 * (cpu_w1 - cpu_w0) / secs,
            rss_w,
            hwm_w
        )];
        usage.push(format!(
            "1,000/s: Asterisk CPU office-a (watcher) {:.1} %, office-b (owner) {:.1} %",
            100.0 * (ast_cpu1[0] - ast_cpu0[0]) / secs,
            100.0 * (ast_cpu1[1] - ast_cpu0[1]) / secs
        ));

        // Highest sustained rate: offered rates, 4 s each.
        println!("\n## Sustained rates (4 s each)\n");
        println!("| offered/s | achieved owner changes/s | watcher writes/s | coalesced | p50 µs | p99 µs | max µs |");
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        for rate in [2000.0, 5000.0, 10000.0, 15000.0] {
            let p = bench.phase(rate, 4.0, Duration::from_secs(1)).await;
            println!(
                "| {:.0} | {:.0} | {:.0} | {} | {:.0} | {:.0} | {:.0} |",
                rate,
                p.owner_events as f64 / p.send_secs,
                p.watcher_events as f64 / p.send_secs,
                p.coalesced,
                pct(&p.lat, 0.5),
                pct(&p.lat, 0.99),
                p.lat.last().copied().unwrap_or(f64::NAN)
            );
        }

        // 20,000/s offered for 5 s, then 100/s probes for 3 s, observed as one run: when does
        // the relay get back under 10 ms after the last Setvar of the burst was sent?
        bench.owner_log.lock().unwrap().clear();
        bench.watcher_log.lock().unwrap().clear();
        let cpu = |owner: &MeshProcess, watcher: &MeshProcess| {
            [owner.usage().0, watcher.usage().0, proc_usage(b.pid().unwrap()).0, proc_usage(a.pid().unwrap()).0]
        };
        let cpu0 = cpu(&owner, &watcher);
        let b_ami = b.ami_addr();
        let burst_start = Instant::now();
        let mut k = bench.k;
        let driver = tokio::spawn(async move {
            let r = drive(b_ami, 20000.0, 5.0, &mut k, None).await;
            (r, k)
        });
        if std::env::var("AO_MESH_BENCH_TRACE").is_ok() {
            while !driver.is_finished() || burst_start.elapsed() < Duration::from_secs(9) {
                let (om, wm) = (owner.metrics(), watcher.metrics());
                eprintln!(
                    "t={:.2}s owner-observed={} owner-sent={} watcher-received={} applied={} watcher-observed={}",
                    burst_start.elapsed().as_secs_f64(),
                    bench.owner_log.lock().unwrap().len(),
                    metric(&om, "asterisk_agent_mesh_updates_sent_total"),
                    metric(&wm, "asterisk_agent_mesh_updates_received_total"),
                    metric(&wm, "asterisk_agent_mesh_updates_applied_total"),
                    bench.watcher_log.lock().unwrap().len(),
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        let ((sent, took), mut k) = driver.await.unwrap();
        let burst_end = burst_start + took;
        let answered = burst_start.elapsed();
        let cpu1 = cpu(&owner, &watcher);
        let pc = |i: usize| 100.0 * (cpu1[i] - cpu0[i]) / answered.as_secs_f64();
        usage.push(format!(
            "CPU during the 20,000/s burst: owner mesh {:.0} %, watcher mesh {:.0} %, owner Asterisk {:.0} %, \
             watcher Asterisk {:.0} % (of one core; 2 cores in all, the bench process and its observers on them too)",
            pc(0),
            pc(1),
            pc(2),
            pc(3)
        ));
        let peak = (owner.usage().2, watcher.usage().2);
        drive(b.ami_addr(), 100.0, 3.0, &mut k, None).await;
        bench.k = k;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let owner_events = std::mem::take(&mut *bench.owner_log.lock().unwrap());
        let watcher_events = std::mem::take(&mut *bench.watcher_log.lock().unwrap());
        let in_burst = owner_events.iter().filter(|e| e.2 <= burst_end).count();
        // The owner's Asterisk works through its backlog after the sending stops: its last
        // event of the burst (the probes start only after every burst Setvar was answered).
        let probes_start = burst_start + answered;
        let owner_done = owner_events.iter().filter(|e| e.2 <= probes_start).map(|e| e.2).max().unwrap_or(burst_end);
        let (pairs, _) = matched(&owner_events, &watcher_events);
        let recovered = pairs
            .iter()
            .filter(|(_, l)| *l > 10_000.0)
            .map(|(t, l)| (*t + Duration::from_secs_f64(l / 1e6)).saturating_duration_since(burst_end).as_secs_f64())
            .fold(0.0f64, f64::max);
        let recovered_owner = pairs
            .iter()
            .filter(|(_, l)| *l > 10_000.0)
            .map(|(t, l)| (*t + Duration::from_secs_f64(l / 1e6)).saturating_duration_since(owner_done).as_secs_f64())
            .fold(0.0f64, f64::max);
        let mut after: Vec<f64> =
            pairs.iter().filter(|(t, _)| t.saturating_duration_since(burst_end).as_secs_f64() > recovered).map(|p| p.1).collect();
        after.sort_by(f64::total_cmp);
        let wrong = wrong_mirrors(&a, &b).await;
        let wm = watcher.metrics();
        let om = owner.metrics();
        usage.push(format!(
            "20,000/s for 5 s: {sent} Setvars written in {:.2} s, all answered by the owner's Asterisk after {:.2} s; \
             owner events seen during the sending: {in_burst}; {wrong} of {N} mirrors wrong afterwards; \
             the owner's Asterisk emitted its last burst event {:.3} s after the last Setvar was sent; \
             relay back under 10 ms for good {:.3} s after the last Setvar was sent ({:.3} s after the owner's last \
             burst event); after that p50 {:.0} µs, \
             p99 {:.0} µs over {} changes; peak RSS owner mesh {} kB, watcher mesh {} kB; owner lag snapshots {}, \
             watcher coalesced {} in total, write failures {}",
            took.as_secs_f64(),
            answered.as_secs_f64(),
            owner_done.saturating_duration_since(burst_end).as_secs_f64(),
            recovered,
            recovered_owner,
            pct(&after, 0.5),
            pct(&after, 0.99),
            after.len(),
            peak.0,
            peak.1,
            metric(&om, "asterisk_agent_mesh_lag_snapshots_total"),
            metric(&wm, "asterisk_agent_mesh_updates_coalesced_total"),
            metric(&wm, "asterisk_agent_mesh_write_failures_total"),
        ));
        let ast1: Vec<u64> = [&a, &b].iter().map(|x| proc_usage(x.pid().unwrap()).1).collect();
        usage.push(format!(
            "Asterisk RSS before/after all phases: office-a {} → {} kB, office-b {} → {} kB",
            ast0[0], ast1[0], ast0[1], ast1[1]
        ));
        println!();
        for u in usage {
            println!("- {u}");
        }
    });
}
