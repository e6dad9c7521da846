//! The mesh material the controller issues for managed nodes ([`mesh_pki`]) carries real
//! device states between real agents: two agents (two-offices on real Asterisk 22) run the mesh
//! over mTLS with the namespace CA and leaves the controller's own code made, mounted as the
//! node Secret's files are. Owners are dialled as in a cluster: at the host of their agent
//! endpoint on the fleet's mesh port (7444), the certificate checked against the owner's node
//! name, not that host. A leaf from another CA is refused by the owner.
//!
//! Also without Asterisk: a CA a user made with openssl (`asterisk-mesh-ca`) is accepted and
//! checked, and its leaves interoperate with certificates the user issues by hand for agents
//! outside the cluster.
//!
//! The first test needs the test-bed: `bash testbed/setup.sh`.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use asterisk_operator::agent::MeshOptions;
use asterisk_operator::ami::{DeviceState, Session};
use asterisk_operator::controller::managed::MESH_PORT;
use asterisk_operator::controller::managed_settings::ManagedSettings;
use asterisk_operator::controller::mesh_pki::{self, MeshCa};
use asterisk_operator::crd::AgentEndpoint;
use asterisk_operator::mesh::MeshConfig;
use asterisk_operator::render;
use asterisk_operator::topology;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use support::agent::{self as ag, get, parse_metrics, value};
use support::fleet::{self, on_loopback};
use support::mesh::{
    self as m, Pki, TestMesh, ami_config, drive_device, mount_leaf, owner_up, pair_plans, subscribes,
    subscription,
};

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ao-mesh-managed-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_issued_mesh_certificates_carry_states_between_real_agents() {
    let (mut set, addrs) = on_loopback(fleet::example("two-offices"));
    // Agent endpoints whose host is not the node name, as a managed node's pod DNS name is not.
    for node in &mut set.nodes {
        let addr = addrs[node.metadata.name.as_deref().unwrap()];
        node.spec.agent = Some(AgentEndpoint { endpoint: format!("https://{addr}:7443") });
    }
    let resolution = topology::resolve(&set);
    assert_eq!(resolution.errors, vec![]);
    let mut bundles = render::render_all(&resolution.topology);
    m::drive_hints(&mut bundles, "office-b", &["4002"]);

    // The namespace CA as the controller generates it, read back from its Secret like the next
    // pass does; a leaf per node, mounted as the node Secret's files.
    let now = SystemTime::now();
    let generated = MeshCa::generate("default", now).unwrap();
    let ca_secret = mesh_pki::ca_secret("default", &generated, &ManagedSettings::default());
    let ca = MeshCa::from_secret(&ca_secret, now).unwrap();
    let dir = temp_dir("agents");
    // No endpoint overrides: owners are dialled at their agent endpoint's host on 7444.
    let (nodes, agents) = ag::boot_mesh_agents(&addrs, &bundles, |name, addr| MeshOptions {
        listen: SocketAddr::from((addr, MESH_PORT)),
        tls: Some(mount_leaf(&dir.join(name), &ca.issue(name, now).unwrap())),
        endpoints: BTreeMap::new(),
    })
    .await;
    let (obs_a, obs_b) = (ag::observer(&nodes["office-a"]).await, ag::observer(&nodes["office-b"]).await);
    let mirror = "Custom:office-b-4002";
    m::wait_device(&obs_a, mirror, DeviceState::NotInUse, Duration::from_secs(10)).await;
    for state in [DeviceState::InUse, DeviceState::Ringing, DeviceState::Busy, DeviceState::NotInUse] {
        m::set_state(&obs_b, &drive_device("4002"), state).await;
        m::wait_device(&obs_a, mirror, state, Duration::from_secs(2)).await;
    }
    let (_, body) = get(agents["office-b"].http_addr, "/metrics");
    assert_eq!(value(&parse_metrics(&body), "asterisk_agent_mesh_subscribers"), 1.0, "{body}");

    // A watcher claiming office-a with a leaf of another CA: office-b's agent refuses it. The
    // same watcher with a leaf of the fleet's CA is served (so the refusal is the CA's doing).
    let owner_mesh = format!("https://{}:{MESH_PORT}", addrs["office-b"]);
    let rogue = |tag: &str, issuer: &MeshCa| {
        let mut cfg = MeshConfig::new("office-a");
        cfg.tls = Some(mount_leaf(&dir.join(tag), &issuer.issue("office-a", now).unwrap()));
        cfg.endpoints = BTreeMap::from([("office-b".to_owned(), owner_mesh.clone())]);
        let session = Session::spawn(ami_config("127.0.0.1:9".parse().unwrap()));
        TestMesh::start_on("office-a", SocketAddr::from(([127, 0, 0, 1], 0)), pair_plans().0, cfg, session)
    };
    let stranger = MeshCa::generate("default", now).unwrap();
    let refused = rogue("stranger", &stranger).await;
    assert!(!owner_up(&refused, "office-b", Duration::from_secs(2)).await, "a leaf of another CA was served");
    refused.stop().await;
    let accepted = rogue("fleet", &ca).await;
    assert!(owner_up(&accepted, "office-b", Duration::from_secs(2)).await, "the fleet's leaf was refused");
    accepted.stop().await;

    // The real watcher kept its stream through all that.
    m::set_state(&obs_b, &drive_device("4002"), DeviceState::OnHold).await;
    m::wait_device(&obs_a, mirror, DeviceState::OnHold, Duration::from_secs(2)).await;
    for (_, agent) in agents {
        agent.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `asterisk-mesh-ca` as a user creates it from openssl's files.
fn user_ca_secret(crt: &[u8], key: &[u8]) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = Some(mesh_pki::CA_SECRET.into());
    s.metadata.namespace = Some("pbx".into());
    s.data = Some(BTreeMap::from([
        (mesh_pki::CA_CERT_KEY.to_owned(), ByteString(crt.to_vec())),
        (mesh_pki::CA_KEY_KEY.to_owned(), ByteString(key.to_vec())),
    ]));
    s
}

#[tokio::test]
async fn a_user_ca_made_with_openssl_signs_managed_leaves_that_outside_agents_accept() {
    let pki = Pki::new("user-ca");
    let read = |f: &str| std::fs::read(pki.dir.join(f)).unwrap();
    let (crt, key) = (read("ca.pem"), read("ca.key"));
    let now = SystemTime::now();
    let ca = MeshCa::from_secret(&user_ca_secret(&crt, &key), now).expect("openssl's CA is usable");
    let dir = temp_dir("user-ca");

    // office-b is managed (its leaf from the controller), office-a runs outside the cluster
    // with a certificate the user issued by hand from the same CA: both ways work.
    let managed_b = mount_leaf(&dir.join("b"), &ca.issue("office-b", now).unwrap());
    let outside_a = pki.issue("a", "office-a");
    assert!(subscribes(managed_b.clone(), outside_a.clone()).await, "outside watcher, managed owner");
    let managed_a = mount_leaf(&dir.join("a"), &ca.issue("office-a", now).unwrap());
    let outside_b = pki.issue("b", "office-b");
    assert!(subscribes(outside_b, managed_a).await, "managed watcher, outside owner");
    // A leaf of a CA the controller generated elsewhere is not the fleet's.
    let stranger = MeshCa::generate("pbx", now).unwrap();
    let foreign_a = mount_leaf(&dir.join("x"), &stranger.issue("office-a", now).unwrap());
    let refusal = subscription(managed_b, foreign_a).await.expect_err("another CA's leaf subscribed");
    assert!(refusal.at_watcher.contains("UnknownIssuer"), "{refusal:?}");

    // What the controller refuses to sign with: another key, a leaf, an expired CA.
    let e = MeshCa::from_secret(&user_ca_secret(&crt, stranger.key_pem().expose().as_bytes()), now)
        .unwrap_err()
        .to_string();
    assert_eq!(e, "Secret pbx/asterisk-mesh-ca: ca.key is not the key of ca.crt");
    let leaf = read("a.pem");
    let e = MeshCa::from_secret(&user_ca_secret(&leaf, &read("a.key")), now).unwrap_err().to_string();
    assert!(e.contains("ca.crt is not a CA certificate"), "{e}");
    let e = MeshCa::from_secret(&user_ca_secret(&crt, &key), now + Duration::from_secs(3 * 86_400))
        .unwrap_err()
        .to_string();
    assert!(e.contains("ca.crt is not valid now"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
