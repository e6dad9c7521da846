//! mTLS and liveness between mesh nodes, without Asterisk (the AMI sessions point nowhere; the owner's
//! snapshot says UNAVAILABLE for what it cannot see, which is all these tests need): peers with
//! certificates naming them subscribe; a certificate naming another node, or from another CA,
//! is refused on either side.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use asterisk_operator::ami::Session;
use asterisk_operator::mesh::MeshConfig;
use support::mesh::{Pki, TestMesh, ami_config, pair_plans, subscribes};

#[tokio::test]
async fn peers_whose_certificates_name_them_subscribe() {
    let pki = Pki::new("ok");
    assert!(subscribes(pki.issue("b", "office-b"), pki.issue("a", "office-a")).await);
}

#[tokio::test]
async fn an_owner_refuses_a_watcher_whose_certificate_names_another_node() {
    let pki = Pki::new("wrong-watcher");
    // A valid certificate of the fleet's CA, but for office-c, claiming to be office-a.
    assert!(!subscribes(pki.issue("b", "office-b"), pki.issue("c", "office-c")).await);
}

#[tokio::test]
async fn a_watcher_refuses_an_owner_whose_certificate_names_another_node() {
    let pki = Pki::new("wrong-owner");
    assert!(!subscribes(pki.issue("x", "office-x"), pki.issue("a", "office-a")).await);
}

#[tokio::test]
async fn certificates_of_another_ca_are_refused() {
    let (fleet, other) = (Pki::new("fleet"), Pki::new("other"));
    assert!(!subscribes(fleet.issue("b", "office-b"), other.issue("a", "office-a")).await);
}

/// Heartbeats keep an idle stream up past the timeout; silence (the owner gone) loses it after
/// the timeout, not before.
#[tokio::test]
async fn heartbeats_keep_an_idle_stream_up_and_silence_loses_it() {
    let (plan_a, plan_b) = pair_plans();
    let nowhere = || Session::spawn(ami_config("127.0.0.1:9".parse().unwrap()));
    let owner = TestMesh::start_on(
        "office-b",
        SocketAddr::from(([127, 0, 0, 1], 0)),
        plan_b,
        MeshConfig::new("office-b"),
        nowhere(),
    )
    .await;
    let mut cfg_a = MeshConfig::new("office-a");
    cfg_a.endpoints = BTreeMap::from([("office-b".into(), format!("http://{}", owner.server.addr))]);
    let watcher =
        TestMesh::start_on("office-a", SocketAddr::from(([127, 0, 0, 1], 0)), plan_a, cfg_a, nowhere()).await;
    let start = Instant::now();
    while watcher.node.owners_up().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(2), "never subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(watcher.node.owners_up(), vec!["office-b".to_owned()], "an idle stream was dropped");
    let text = watcher.node.metrics().encode();
    assert!(text.contains("asterisk_agent_mesh_owners_lost_total 0\n"), "{text}");
    let age: f64 = text
        .lines()
        .find(|l| l.starts_with("asterisk_agent_mesh_heartbeat_age_seconds{peer=\"office-b\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(age < 1.5, "heartbeat age {age}");

    let gone = Instant::now();
    owner.stop().await;
    while !watcher.node.owners_up().is_empty() {
        assert!(gone.elapsed() < Duration::from_millis(3500), "still up 3.5 s after the owner left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone.elapsed() >= Duration::from_millis(2500), "lost before the timeout: {:?}", gone.elapsed());
    assert!(watcher.node.metrics().encode().contains("asterisk_agent_mesh_owners_lost_total 1\n"));
    watcher.stop().await;
}
