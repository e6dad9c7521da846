//! The mesh inside the agent: two agents (two-offices on real Asterisk 22, mesh over mTLS on its
//! own port) get their bundles through Apply, and office-b's hint state shows on office-a's
//! mirrored hint; the mesh metrics are in the agent's /metrics. The agents' AMI user is the
//! least-privilege one of docs/agent.md plus `write = call` (Setvar needs it).
//!
//! Needs the test-bed: `bash testbed/setup.sh`.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use asterisk_operator::agent::{ClientOptions, MeshOptions, bundle_to_proto, connect};
use asterisk_operator::ami::{DeviceState, Session, SessionConfig};
use asterisk_operator::render::{self, Bundle, EXTENSIONS_FILE};
use asterisk_operator::secret::SecretValue;
use asterisk_operator::topology;
use support::agent::{self as ag, AMI_SECRET, AMI_USER, get, parse_metrics, value};
use support::asterisk::Asterisk;
use support::fleet::{self, on_loopback};
use support::mesh::{self as m, Pki, drive_device};

const MESH_PORT: u16 = 7444;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_with_the_mesh_mirror_office_b_on_office_a() {
    let (set, addrs) = on_loopback(fleet::example("two-offices"));
    let resolution = topology::resolve(&set);
    assert_eq!(resolution.errors, vec![]);
    let mut bundles = render::render_all(&resolution.topology);
    // office-b's 4002 hint on a custom device the test can set to anything.
    let b = &bundles["office-b"];
    let mut files = b.files.clone();
    let ext = files.get_mut(EXTENSIONS_FILE).unwrap();
    *ext = ext.replace(
        "exten => 4002,hint,PJSIP/4002\n",
        &format!("exten => 4002,hint,{}\n", drive_device("4002")),
    );
    bundles.insert("office-b".into(), Bundle::new("office-b", files, b.mesh.clone()));

    let pki = Pki::new("agent");
    let mut nodes = BTreeMap::new();
    let mut agents = BTreeMap::new();
    for (name, addr) in &addrs {
        let asterisk = ag::asterisk_for_agent(name, *addr);
        let mut opts = ag::options(&asterisk);
        opts.mesh = Some(MeshOptions {
            listen: SocketAddr::from((*addr, MESH_PORT)),
            tls: Some(pki.issue(name, name)),
            endpoints: addrs.iter().map(|(n, a)| (n.clone(), format!("https://{a}:{MESH_PORT}"))).collect(),
        });
        agents.insert(name.clone(), asterisk_operator::agent::start(opts).await.expect("agent starts"));
        nodes.insert(name.clone(), asterisk);
    }
    for (name, agent) in &agents {
        let mut c = connect(&ClientOptions::new(&format!("http://{}", agent.grpc_addr))).await.unwrap();
        let r = c.apply(bundle_to_proto(&bundles[name])).await.unwrap().into_inner();
        assert!(r.ok, "{name}: {r:?}");
    }

    let observer = |a: &Asterisk| {
        let cfg = SessionConfig::new(a.ami_addr().to_string(), AMI_USER, SecretValue::new(AMI_SECRET));
        Session::connect(cfg)
    };
    let (obs_a, obs_b) =
        (observer(&nodes["office-a"]).await.unwrap(), observer(&nodes["office-b"]).await.unwrap());
    let mirror = "Custom:office-b-4002";
    m::wait_device(&obs_a, mirror, DeviceState::NotInUse, Duration::from_secs(10)).await;
    for state in [DeviceState::InUse, DeviceState::Ringing, DeviceState::NotInUse] {
        m::set_state(&obs_b, &drive_device("4002"), state).await;
        m::wait_device(&obs_a, mirror, state, Duration::from_secs(2)).await;
    }
    m::wait_device(&obs_a, "Custom:office-b-4001", DeviceState::Unavailable, Duration::from_secs(2)).await;

    let (code, body) = get(agents["office-a"].http_addr, "/metrics");
    assert_eq!(code, 200);
    let metrics = parse_metrics(&body);
    assert!(value(&metrics, "asterisk_agent_mesh_updates_applied_total") >= 3.0, "{body}");
    assert_eq!(value(&metrics, "asterisk_agent_mesh_peers_up"), 1.0, "{body}");
    let (_, body) = get(agents["office-b"].http_addr, "/metrics");
    assert_eq!(value(&parse_metrics(&body), "asterisk_agent_mesh_subscribers"), 1.0, "{body}");
    for (_, agent) in agents {
        agent.shutdown().await;
    }
}
