//! mTLS and liveness between mesh nodes, without Asterisk (the AMI sessions point nowhere; the owner's
//! snapshot says UNAVAILABLE for what it cannot see, which is all these tests need): peers with
//! certificates naming them subscribe; a certificate naming another node, or from another CA,
//! is refused on either side.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use asterisk_operator::ami::Session;
use asterisk_operator::mesh::{MeshConfig, MeshTls};
use support::mesh::{Pki, TestMesh, ami_config, owner_up, pair_plans, subscription};

#[tokio::test]
async fn peers_whose_certificates_name_them_subscribe() {
    let pki = Pki::new("ok");
    subscription(pki.issue("b", "office-b"), pki.issue("a", "office-a")).await.unwrap();
}

#[tokio::test]
async fn an_owner_refuses_a_watcher_whose_certificate_names_another_node() {
    let pki = Pki::new("wrong-watcher");
    // A valid certificate of the fleet's CA, but for office-c, claiming to be office-a: the TLS
    // handshake succeeds, the owner's name check refuses the subscription.
    let refusal = subscription(pki.issue("b", "office-b"), pki.issue("c", "office-c")).await.unwrap_err();
    assert!(
        refusal.at_watcher.contains("does not have permission")
            && refusal.at_watcher.contains("the client certificate does not name node")
            && refusal.at_watcher.contains("office-a"),
        "{refusal:?}"
    );
    assert_eq!(refusal.at_owner, None, "not a handshake refusal");
}

#[tokio::test]
async fn a_watcher_refuses_an_owner_whose_certificate_names_another_node() {
    let pki = Pki::new("wrong-owner");
    let refusal = subscription(pki.issue("x", "office-x"), pki.issue("a", "office-a")).await.unwrap_err();
    assert!(
        refusal.at_watcher.contains("invalid peer certificate: certificate not valid for name \"office-b\"")
            && refusal.at_watcher.contains("only valid for DnsName(\"office-x\")"),
        "{refusal:?}"
    );
    assert_eq!(
        refusal.at_owner.as_deref(),
        Some("received fatal alert: BadCertificate"),
        "the watcher hung up"
    );
}

#[tokio::test]
async fn certificates_of_another_ca_are_refused() {
    let (fleet, other) = (Pki::new("fleet"), Pki::new("other"));
    // The watcher trusts only the other CA: it refuses the owner's certificate.
    let refusal = subscription(fleet.issue("b", "office-b"), other.issue("a", "office-a")).await.unwrap_err();
    assert!(refusal.at_watcher.contains("invalid peer certificate: UnknownIssuer"), "{refusal:?}");
    // The watcher trusts the fleet CA but presents the other CA's certificate: the owner's
    // listener refuses it in the handshake.
    let mut stranger = other.issue("a2", "office-a");
    stranger.ca = fleet.dir.join("ca.pem");
    let refusal = subscription(fleet.issue("b2", "office-b"), stranger).await.unwrap_err();
    assert_eq!(refusal.at_owner.as_deref(), Some("invalid peer certificate: UnknownIssuer"), "{refusal:?}");
}

/// A CA rotation (or a leaf renewal) rewrites the owner's certificate files while a watcher's
/// link is up: the link keeps working, and a new link that trusts only the new CA is refused
/// before and accepted after, without restarting the owner.
#[tokio::test]
async fn rewritten_certificate_files_are_used_by_new_links_without_a_restart() {
    let (old, new) = (Pki::new("rotate-old"), Pki::new("rotate-new"));
    let files = std::env::temp_dir().join(format!("ao-mesh-rotate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&files);
    std::fs::create_dir_all(&files).unwrap();
    let mounted =
        MeshTls { ca: files.join("ca.crt"), cert: files.join("tls.crt"), key: files.join("tls.key") };
    let install = |t: &MeshTls| {
        // As the kubelet does: new files next to the old ones, then renamed over them.
        for (from, to) in [(&t.ca, &mounted.ca), (&t.cert, &mounted.cert), (&t.key, &mounted.key)] {
            let tmp = to.with_extension("new");
            std::fs::copy(from, &tmp).unwrap();
            std::fs::rename(&tmp, to).unwrap();
        }
    };
    install(&old.issue("b", "office-b"));
    let (plan_a, plan_b) = pair_plans();
    let nowhere = || Session::spawn(ami_config("127.0.0.1:9".parse().unwrap()));
    let mut cfg_b = MeshConfig::new("office-b");
    cfg_b.tls = Some(mounted.clone());
    let owner =
        TestMesh::start_on("office-b", SocketAddr::from(([127, 0, 0, 1], 0)), plan_b, cfg_b, nowhere()).await;
    let watcher_on = |tls: MeshTls| {
        let mut cfg = MeshConfig::new("office-a");
        cfg.tls = Some(tls);
        cfg.endpoints = BTreeMap::from([("office-b".into(), format!("https://{}", owner.server.addr))]);
        cfg
    };
    let first = TestMesh::start_on(
        "office-a",
        SocketAddr::from(([127, 0, 0, 1], 0)),
        plan_a.clone(),
        watcher_on(old.issue("a", "office-a")),
        nowhere(),
    )
    .await;
    assert!(owner_up(&first, "office-b", Duration::from_secs(2)).await);
    let second = TestMesh::start_on(
        "office-a",
        SocketAddr::from(([127, 0, 0, 2], 0)),
        plan_a,
        watcher_on(new.issue("a", "office-a")),
        nowhere(),
    )
    .await;
    let start = Instant::now();
    let before = loop {
        if let Some(e) = second.node.link_error("office-b") {
            break e;
        }
        assert!(start.elapsed() < Duration::from_secs(3), "the new-CA watcher neither failed nor subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(before.contains("UnknownIssuer"), "{before}");

    install(&new.issue("b", "office-b"));
    assert!(owner_up(&second, "office-b", Duration::from_secs(10)).await, "the new certificate was not used");
    assert_eq!(owner.server.certificate_reloads(), 1);
    assert_eq!(first.node.owners_up(), vec!["office-b".to_owned()], "the open link was dropped");
    assert!(first.node.metrics().encode().contains("asterisk_agent_mesh_owners_lost_total 0\n"));
    for m in [first, second, owner] {
        m.stop().await;
    }
    std::fs::remove_dir_all(&files).unwrap();
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
