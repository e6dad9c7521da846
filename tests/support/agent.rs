//! In-process agents beside harness Asterisk instances, and small HTTP/metrics helpers.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use asterisk_operator::agent::proto::ApplyResult;
use asterisk_operator::agent::{
    AgentClient, AgentOptions, ClientOptions, NodeConfig, RunningAgent, bundle_to_proto, connect,
};
use asterisk_operator::ami::SessionConfig;
use asterisk_operator::render::Bundle;
use asterisk_operator::secret::SecretValue;

use super::asterisk::Asterisk;

/// A TCP port free on loopback now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The agent binary as its own process beside `asterisk` (what the benchmarks measure), on
/// loopback without TLS or token: gRPC on `grpc`, HTTP on `http`, its AMI secret written into
/// `dir`. Add flags, then spawn.
pub fn agent_process(asterisk: &Asterisk, dir: &Path, grpc: u16, http: u16) -> Command {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("ami-secret"), AMI_SECRET).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_asterisk-operator"));
    cmd.args(["agent", "--node", &asterisk.name, "--insecure", "--ami-user", AMI_USER])
        .arg("--ami-addr")
        .arg(asterisk.ami_addr().to_string())
        .arg("--ami-secret-file")
        .arg(dir.join("ami-secret"))
        .arg("--config-dir")
        .arg(asterisk.etc_dir())
        .arg("--keys-dir")
        .arg(asterisk.keys_dir())
        .args(["--grpc-listen", &format!("127.0.0.1:{grpc}"), "--http-listen", &format!("127.0.0.1:{http}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    cmd
}

/// The AMI user the agent logs in as: the least privilege docs/agent.md recommends.
pub const AMI_USER: &str = "asterisk-operator";
/// Its secret.
pub const AMI_SECRET: &str = "AgentAmiSecret0";

/// `manager.conf` with the agent's least-privilege user, for an instance on `addr`.
pub fn manager_conf(addr: Ipv4Addr) -> String {
    format!(
        "[general]\nenabled = yes\nwebenabled = no\nport = 5038\nbindaddr = {addr}\ndisplayconnects = no\n\n\
         [{AMI_USER}]\nsecret = {AMI_SECRET}\nread = system,call\nwrite = system,call,reporting\n"
    )
}

/// An Asterisk named `name` on `addr` with the operator's main files and the agent's AMI user,
/// no bundle yet (the agent brings it).
pub fn asterisk_for_agent(name: &str, addr: Ipv4Addr) -> Asterisk {
    Asterisk::builder(name).addr(addr).operator_main_files().file("manager.conf", manager_conf(addr)).start()
}

/// Agent options for `asterisk` with plaintext gRPC and HTTP on free loopback ports.
pub fn options(asterisk: &Asterisk) -> AgentOptions {
    let mut opts = options_for_addr(&asterisk.name, asterisk.addr);
    opts.node = NodeConfig {
        asterisk_log: Some(asterisk.host_dir().join("log/messages")),
        ..NodeConfig { config_dir: asterisk.etc_dir(), keys_dir: asterisk.keys_dir(), ..opts.node }
    };
    opts.node.state_file = asterisk.etc_dir().join(".asterisk-operator-applied.json");
    opts
}

/// Agent options for node `name` whose Asterisk listens on `addr` (directories under /tmp).
pub fn options_for_addr(name: &str, addr: Ipv4Addr) -> AgentOptions {
    let mut ami = SessionConfig::new(
        SocketAddr::from((addr, 5038)).to_string(),
        AMI_USER,
        SecretValue::new(AMI_SECRET),
    );
    ami.keepalive = Some(Duration::from_secs(2));
    ami.backoff_initial = Duration::from_millis(100);
    ami.backoff_max = Duration::from_millis(500);
    let tmp = std::env::temp_dir().join(format!("ao-agent-{}-{name}", std::process::id()));
    let mut node = NodeConfig::new(name, tmp.join("etc"), tmp.join("keys"));
    node.ping_timeout = Duration::from_secs(1);
    node.poll_interval = Duration::from_secs(1);
    node.boot_timeout = Duration::from_secs(20);
    node.provisioning_file = Some(tmp.join("provisioning.json"));
    AgentOptions {
        node,
        ami,
        grpc_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        http_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        tls: None,
        token: None,
        plaintext: true,
        no_auth: true,
        mesh: None,
        provision: Default::default(),
    }
}

/// Starts an agent for `asterisk` on `rt`.
pub fn start(rt: &tokio::runtime::Runtime, opts: AgentOptions) -> RunningAgent {
    rt.block_on(asterisk_operator::agent::start(opts)).expect("agent starts")
}

/// A plaintext gRPC client of `agent` (the agents of [`options`] serve with `--plaintext --no-auth` on loopback).
pub fn client(rt: &tokio::runtime::Runtime, agent: &RunningAgent) -> AgentClient {
    rt.block_on(connect(&ClientOptions::new(&format!("http://{}", agent.grpc_addr)))).unwrap()
}

/// Applies `bundle` through `c` and returns the agent's answer.
pub fn apply(rt: &tokio::runtime::Runtime, c: &mut AgentClient, bundle: &Bundle) -> ApplyResult {
    rt.block_on(c.apply(bundle_to_proto(bundle))).expect("Apply answers").into_inner()
}

/// A token for tests.
pub fn token() -> SecretValue {
    SecretValue::new("TestAgentToken0123")
}

/// `GET path` over HTTP/1.0: (status code, body).
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("HTTP connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: agent\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("HTTP response");
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (code, body)
}

/// Parses the text exposition format: series (name with labels, as written) → value, checking
/// that every sample belongs to a family announced by `# TYPE`.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut types = BTreeMap::new();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line has a kind");
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = series.split('{').next().unwrap();
        let family = types.keys().filter(|f| name.starts_with(f.as_str())).max_by_key(|f| f.len());
        assert!(family.is_some(), "sample {name} has no # TYPE family in\n{text}");
        out.insert(series.to_owned(), value);
    }
    assert!(text.trim_end().ends_with("# EOF"), "exposition does not end with # EOF");
    out
}

/// Value of a series, 0 when absent.
pub fn value(metrics: &BTreeMap<String, f64>, series: &str) -> f64 {
    metrics.get(series).copied().unwrap_or(0.0)
}

/// Boots an empty Asterisk (with the agent's AMI user) and an in-process agent for every node
/// of `set`, and points each node's `spec.agent.endpoint` at its agent.
pub fn boot_with_agents(
    rt: &tokio::runtime::Runtime,
    set: &mut asterisk_operator::topology::ResourceSet,
    addrs: &BTreeMap<String, Ipv4Addr>,
) -> (BTreeMap<String, Asterisk>, BTreeMap<String, RunningAgent>) {
    boot_agents(rt, set, addrs, false)
}

/// [`boot_with_agents`] with the device-state mesh in every agent (plaintext, on the node's
/// loopback address, port [`MESH_PORT`]).
pub fn boot_with_mesh_agents(
    rt: &tokio::runtime::Runtime,
    set: &mut asterisk_operator::topology::ResourceSet,
    addrs: &BTreeMap<String, Ipv4Addr>,
) -> (BTreeMap<String, Asterisk>, BTreeMap<String, RunningAgent>) {
    boot_agents(rt, set, addrs, true)
}

/// The mesh port of [`boot_with_mesh_agents`].
pub const MESH_PORT: u16 = 7444;

fn boot_agents(
    rt: &tokio::runtime::Runtime,
    set: &mut asterisk_operator::topology::ResourceSet,
    addrs: &BTreeMap<String, Ipv4Addr>,
    mesh: bool,
) -> (BTreeMap<String, Asterisk>, BTreeMap<String, RunningAgent>) {
    let mut nodes = BTreeMap::new();
    let mut agents = BTreeMap::new();
    for node in &mut set.nodes {
        let name = node.metadata.name.clone().unwrap();
        let asterisk = asterisk_for_agent(&name, addrs[&name]);
        let mut opts = options(&asterisk);
        if mesh {
            opts.mesh = Some(asterisk_operator::agent::MeshOptions {
                listen: SocketAddr::from((addrs[&name], MESH_PORT)),
                tls: None,
                endpoints: addrs
                    .iter()
                    .map(|(n, a)| (n.clone(), format!("http://{a}:{MESH_PORT}")))
                    .collect(),
            });
        }
        let agent = start(rt, opts);
        node.spec.agent.as_mut().unwrap().endpoint = format!("http://{}", agent.grpc_addr);
        nodes.insert(name.clone(), asterisk);
        agents.insert(name, agent);
    }
    (nodes, agents)
}

/// Boots an Asterisk (with the agent's AMI user) and an in-process agent running the mesh with
/// `mesh(node, addr)` for every node of `addrs`, and applies each node's bundle through it.
pub async fn boot_mesh_agents(
    addrs: &BTreeMap<String, Ipv4Addr>,
    bundles: &BTreeMap<String, Bundle>,
    mut mesh: impl FnMut(&str, Ipv4Addr) -> asterisk_operator::agent::MeshOptions,
) -> (BTreeMap<String, Asterisk>, BTreeMap<String, RunningAgent>) {
    let mut nodes = BTreeMap::new();
    let mut agents = BTreeMap::new();
    for (name, addr) in addrs {
        let asterisk = asterisk_for_agent(name, *addr);
        let mut opts = options(&asterisk);
        opts.mesh = Some(mesh(name, *addr));
        agents.insert(name.clone(), asterisk_operator::agent::start(opts).await.expect("agent starts"));
        nodes.insert(name.clone(), asterisk);
    }
    for (name, agent) in &agents {
        let mut c = connect(&ClientOptions::new(&format!("http://{}", agent.grpc_addr))).await.unwrap();
        let r = c.apply(bundle_to_proto(&bundles[name])).await.unwrap().into_inner();
        assert!(r.ok, "{name}: {r:?}");
    }
    (nodes, agents)
}

/// An AMI connection of the test's own to `asterisk`, as the agent's user.
pub async fn observer(asterisk: &Asterisk) -> asterisk_operator::ami::Session {
    let cfg = SessionConfig::new(asterisk.ami_addr().to_string(), AMI_USER, SecretValue::new(AMI_SECRET));
    asterisk_operator::ami::Session::connect(cfg).await.expect("AMI login")
}
