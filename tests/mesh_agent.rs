//! The mesh inside the agent: two agents (two-offices on real Asterisk 22, mesh over mTLS on its
//! own port) get their bundles through Apply, and office-b's hint state shows on office-a's
//! mirrored hint; the mesh metrics are in the agent's /metrics. The agents' AMI user is the
//! least-privilege one of docs/agent.md plus `write = call` (Setvar needs it).
//!
//! Needs the test-bed: `bash testbed/setup.sh`.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use asterisk_operator::agent::proto::{NodeStatus, StatusRequest};
use asterisk_operator::agent::{ClientOptions, MeshOptions, connect};
use asterisk_operator::ami::DeviceState;
use asterisk_operator::render;
use asterisk_operator::topology;
use support::agent::{self as ag, get, parse_metrics, value};
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
    m::drive_hints(&mut bundles, "office-b", &["4002"]);

    let pki = Pki::new("agent");
    let (nodes, agents) = ag::boot_mesh_agents(&addrs, &bundles, |name, addr| MeshOptions {
        listen: SocketAddr::from((addr, MESH_PORT)),
        tls: Some(pki.issue(name, name)),
        endpoints: addrs.iter().map(|(n, a)| (n.clone(), format!("https://{a}:{MESH_PORT}"))).collect(),
    })
    .await;
    let (obs_a, obs_b) = (ag::observer(&nodes["office-a"]).await, ag::observer(&nodes["office-b"]).await);
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

    // office-a's Status reports its mirrors (what the BlfSubscriptions' Mirrored condition is
    // made of): live while office-b is heard from, UNAVAILABLE and not live once it is gone.
    let mut client_a =
        connect(&ClientOptions::new(&format!("http://{}", agents["office-a"].grpc_addr))).await.unwrap();
    let mirror_4002 = |s: &NodeStatus| s.mirrors.iter().find(|m| m.extension == "4002").cloned().unwrap();
    let status = client_a.status(StatusRequest {}).await.unwrap().into_inner();
    assert!(status.mesh, "{status:?}");
    let m4002 = mirror_4002(&status);
    assert_eq!((m4002.owner.as_str(), m4002.state.as_str(), m4002.live), ("office-b", "NOT_INUSE", true));
    assert!(m4002.changed_unix > 0, "{m4002:?}");
    let mut agents = agents;
    agents.remove("office-b").unwrap().shutdown().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = mirror_4002(&client_a.status(StatusRequest {}).await.unwrap().into_inner());
        if !m.live {
            assert_eq!(m.state, "UNAVAILABLE", "{m:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "office-b's loss not noticed: {m:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (_, agent) in agents {
        agent.shutdown().await;
    }
}
