//! Mesh test helpers: an example fleet booted on loopback with a drivable hint, mesh
//! certificates made with `openssl`, a mesh node per Asterisk, and AMI observers.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use asterisk_operator::ami::{self, DeviceState, ExtensionState, Session, SessionConfig, actions};
use asterisk_operator::controller::mesh_pki::{MESH_CA_KEY, MESH_CERT_KEY, MESH_KEY_KEY, MeshLeaf};
use asterisk_operator::mesh::{self, MeshConfig, MeshNode, MeshServer, MeshTls, PeerAuth};
use asterisk_operator::render::{self, Bundle, MeshExport, MeshImport, MeshPlan, MeshSource};
use asterisk_operator::secret::SecretValue;
use asterisk_operator::topology;

use tokio::sync::watch;

use super::asterisk::{Asterisk, boot_bundles};
use super::fleet;

/// The mesh port every test node listens on (each node has its own address).
pub const MESH_PORT: u16 = 7443;

/// Every device state a mirrored hint can show.
pub const STATES: [DeviceState; 7] = [
    DeviceState::NotInUse,
    DeviceState::InUse,
    DeviceState::Busy,
    DeviceState::Unavailable,
    DeviceState::Ringing,
    DeviceState::RingInUse,
    DeviceState::OnHold,
];

/// The custom device that drives `ext`'s hint on its owner when the test replaced the hint
/// (see [`boot`]).
pub fn drive_device(ext: &str) -> String {
    format!("Custom:drive-{ext}")
}

/// Replaces the `PJSIP/<ext>` hints of `driven` in `node`'s bundle by `Custom:drive-<ext>`
/// (see [`drive_device`]), so a test can set every state of those hints with one Setvar.
pub fn drive_hints(bundles: &mut BTreeMap<String, Bundle>, node: &str, driven: &[&str]) {
    let b = &bundles[node];
    let mut files = b.files.clone();
    let ext = files.get_mut(render::EXTENSIONS_FILE).unwrap();
    for e in driven {
        *ext = ext.replace(
            &format!("exten => {e},hint,PJSIP/{e}\n"),
            &format!("exten => {e},hint,{}\n", drive_device(e)),
        );
    }
    let rebuilt = Bundle::new(node, files, b.mesh.clone());
    bundles.insert(node.to_owned(), rebuilt);
}

/// Writes a node's mesh keys into `dir` as the kubelet mounts its Secret (one file a key, named
/// after it) and returns them as the agent's `--mesh-ca/--mesh-cert/--mesh-key`.
pub fn mount_leaf(dir: &Path, leaf: &MeshLeaf) -> MeshTls {
    std::fs::create_dir_all(dir).unwrap();
    for (key, value) in leaf.data() {
        std::fs::write(dir.join(key), value.0).unwrap();
    }
    MeshTls { ca: dir.join(MESH_CA_KEY), cert: dir.join(MESH_CERT_KEY), key: dir.join(MESH_KEY_KEY) }
}

/// Watcher `office-a` of office-b's 4001, and owner `office-b` exporting it to office-a.
pub fn pair_plans() -> (MeshPlan, MeshPlan) {
    let watcher = MeshPlan {
        node: "office-a".into(),
        sources: vec![MeshSource {
            node: "office-b".into(),
            endpoint: None,
            imports: vec![MeshImport { extension: "4001".into(), device: "Custom:office-b-4001".into() }],
        }],
        exports: vec![],
    };
    let owner = MeshPlan {
        node: "office-b".into(),
        sources: vec![],
        exports: vec![MeshExport {
            extension: "4001".into(),
            context: "operator-local".into(),
            watchers: vec!["office-a".into()],
        }],
    };
    (watcher, owner)
}

/// Is `owner` the one owner up at `watcher` within `within`?
pub async fn owner_up(watcher: &TestMesh, owner: &str, within: Duration) -> bool {
    let start = Instant::now();
    loop {
        if watcher.node.owners_up() == vec![owner.to_owned()] {
            return true;
        }
        if start.elapsed() > within {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Why a subscription did not come up: what the watcher's link saw, and what the owner's
/// listener refused (when the refusal happened in its TLS handshake).
#[derive(Debug)]
pub struct Refusal {
    /// The watcher's last link error, with its causes.
    pub at_watcher: String,
    /// The owner listener's last refused handshake.
    pub at_owner: Option<String>,
}

/// On loopback without Asterisk (the AMI sessions point nowhere; the owner's snapshot says
/// UNAVAILABLE for what it cannot see): owner `office-b` with `owner_tls`, watcher `office-a`
/// with `watcher_tls`; is the owner up at the watcher within 2 s, and if not, why?
pub async fn subscription(owner_tls: MeshTls, watcher_tls: MeshTls) -> Result<(), Refusal> {
    let (plan_a, plan_b) = pair_plans();
    let nowhere = || Session::spawn(ami_config("127.0.0.1:9".parse().unwrap()));
    let mut cfg_b = MeshConfig::new("office-b");
    cfg_b.tls = Some(owner_tls);
    let owner =
        TestMesh::start_on("office-b", SocketAddr::from(([127, 0, 0, 1], 0)), plan_b, cfg_b, nowhere()).await;
    let mut cfg_a = MeshConfig::new("office-a");
    cfg_a.tls = Some(watcher_tls);
    cfg_a.endpoints = BTreeMap::from([("office-b".into(), format!("https://{}", owner.server.addr))]);
    let watcher =
        TestMesh::start_on("office-a", SocketAddr::from(([127, 0, 0, 1], 0)), plan_a, cfg_a, nowhere()).await;
    let up = owner_up(&watcher, "office-b", Duration::from_secs(2)).await;
    let outcome = if up {
        assert_eq!(watcher.node.desired("Custom:office-b-4001"), Some(DeviceState::Unavailable));
        Ok(())
    } else {
        let text = owner.node.metrics().encode();
        assert!(text.contains("asterisk_agent_mesh_subscribers 0\n"), "{text}");
        let start = Instant::now();
        let at_watcher = loop {
            if let Some(e) = watcher.node.link_error("office-b") {
                break e;
            }
            assert!(start.elapsed() < Duration::from_secs(3), "the watcher's link never failed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Err(Refusal { at_watcher, at_owner: owner.server.last_refusal() })
    };
    owner.stop().await;
    watcher.stop().await;
    outcome
}

/// [`subscription`] as a yes/no.
pub async fn subscribes(owner_tls: MeshTls, watcher_tls: MeshTls) -> bool {
    subscription(owner_tls, watcher_tls).await.is_ok()
}

/// Renders an example for loopback and boots one Asterisk per node (registrars first). The
/// hints of the extensions in `driven` are replaced by `Custom:drive-<ext>` so a test can set
/// every state with one Setvar; the rest keep their `PJSIP/<ext>` hints.
pub fn boot(example: &str, driven: &[&str]) -> (BTreeMap<String, Bundle>, BTreeMap<String, Asterisk>) {
    let (set, addrs) = fleet::on_loopback(fleet::example(example));
    let resolution = topology::resolve(&set);
    assert_eq!(resolution.errors, vec![]);
    let mut bundles = render::render_all(&resolution.topology);
    for bundle in bundles.values_mut() {
        let ext = bundle.files.get_mut(render::EXTENSIONS_FILE).unwrap();
        for e in driven {
            *ext = ext.replace(
                &format!("exten => {e},hint,PJSIP/{e}\n"),
                &format!("exten => {e},hint,{}\n", drive_device(e)),
            );
        }
    }
    let nodes = boot_bundles(&set, &addrs, &bundles);
    (bundles, nodes)
}

/// A CA and per-node certificates (SAN = node name), made with `openssl` in a fresh folder.
pub struct Pki {
    pub dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Pki {
    /// A new CA in a fresh temporary folder.
    pub fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("ao-mesh-pki-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                &format!("/CN=mesh-ca-{tag}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        Pki { dir }
    }

    /// A certificate for `node` (file stem `file`), naming it in its SAN.
    pub fn issue(&self, file: &str, node: &str) -> MeshTls {
        let (key, csr, pem, ext) =
            (format!("{file}.key"), format!("{file}.csr"), format!("{file}.pem"), format!("{file}.ext"));
        std::fs::write(
            self.dir.join(&ext),
            format!("subjectAltName=DNS:{node}\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n"),
        )
        .unwrap();
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={node}"),
            ],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
        MeshTls { ca: self.dir.join("ca.pem"), cert: self.dir.join(pem), key: self.dir.join(key) }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// AMI settings for a test-bed Asterisk (admin / secret).
pub fn ami_config(addr: SocketAddr) -> SessionConfig {
    let mut cfg = SessionConfig::new(addr.to_string(), "admin", SecretValue::new("secret"));
    cfg.backoff_initial = Duration::from_millis(100);
    cfg.backoff_max = Duration::from_millis(500);
    cfg.keepalive = Some(Duration::from_secs(2));
    cfg
}

/// An AMI connection of the test's own (to drive and to read back).
pub async fn observer(asterisk: &Asterisk) -> Session {
    let mut cfg = ami_config(asterisk.ami_addr());
    cfg.events = ami::EventMask::Off;
    Session::connect(cfg).await.expect("AMI login")
}

/// A node's mesh: its AMI session, the mesh tasks, its server on `<addr>:7443`.
pub struct TestMesh {
    pub name: String,
    pub listen: SocketAddr,
    pub node: MeshNode,
    pub server: MeshServer,
    pub session: Session,
    pub plan: watch::Sender<MeshPlan>,
    pub tls: Option<MeshTls>,
}

/// Mesh settings for `node` with owners reached at the given addresses.
pub fn config(node: &str, owners: &BTreeMap<String, Ipv4Addr>, tls: Option<&MeshTls>) -> MeshConfig {
    let mut cfg = MeshConfig::new(node);
    cfg.tls = tls.cloned();
    let scheme = if tls.is_some() { "https" } else { "http" };
    cfg.endpoints = owners.iter().map(|(n, a)| (n.clone(), format!("{scheme}://{a}:{MESH_PORT}"))).collect();
    cfg
}

impl TestMesh {
    /// Starts the mesh of `asterisk` with `plan`.
    pub async fn start(asterisk: &Asterisk, plan: MeshPlan, cfg: MeshConfig) -> TestMesh {
        let session = Session::spawn(ami_config(asterisk.ami_addr()));
        let listen = SocketAddr::from((asterisk.addr, MESH_PORT));
        Self::start_on(&asterisk.name, listen, plan, cfg, session).await
    }

    /// Starts a mesh on `session`, serving on `listen`.
    pub async fn start_on(
        name: &str,
        listen: SocketAddr,
        plan: MeshPlan,
        cfg: MeshConfig,
        session: Session,
    ) -> TestMesh {
        let tls = cfg.tls.clone();
        let auth = if tls.is_some() { PeerAuth::Certificate } else { PeerAuth::Insecure };
        let (plan_tx, plan_rx) = watch::channel(plan);
        let node = MeshNode::spawn(cfg, plan_rx, session.clone(), auth);
        let server = mesh::serve(node.service(), listen, tls.as_ref()).await.expect("mesh server binds");
        TestMesh { name: name.to_owned(), listen, node, server, session, plan: plan_tx, tls }
    }

    /// Stops the mesh node and its server (the AMI session is closed too).
    pub async fn stop(self) {
        self.node.shutdown();
        self.server.stop().await;
        self.session.close().await;
    }
}

/// `DEVICE_STATE(device)` on `session`.
pub async fn device_state(session: &Session, device: &str) -> String {
    session.call(&actions::Getvar::device_state(device)).await.expect("Getvar").unwrap_or_default()
}

/// Sets `device` to `state` through AMI.
pub async fn set_state(session: &Session, device: &str, state: DeviceState) {
    session.call(&actions::Setvar::device_state(device, state)).await.expect("Setvar");
}

/// The hint state of `ext@context`.
pub async fn hint_state(session: &Session, ext: &str, context: &str) -> ExtensionState {
    session
        .call(&actions::ExtensionStateQuery { exten: ext.into(), context: context.into() })
        .await
        .expect("ExtensionState")
        .status
}

/// Polls until `device` reads `state` on `session`; returns how long it took.
pub async fn wait_device(session: &Session, device: &str, state: DeviceState, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let now = device_state(session, device).await;
        if now == state.as_str() {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{device} is {now}, not {state}, after {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
