//! The device-state mesh between real Asterisk 22 instances (two-offices on loopback, rendered
//! bundles loaded at boot, mTLS between the mesh nodes): office-b owns 4001/4002, office-a
//! mirrors them onto `Custom:office-b-<ext>`.
//!
//! Needs the test-bed: `bash testbed/setup.sh`.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use asterisk_operator::ami::{DeviceState, ExtensionState};
use support::mesh::{self as m, Pki, STATES, TestMesh, drive_device, observer};

const MIRROR: &str = "Custom:office-b-4002";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_offices_mirror_every_state_survive_restarts_and_bursts() {
    let (bundles, nodes) = m::boot("two-offices", &["4002"]);
    let (a, b) = (&nodes["office-a"], &nodes["office-b"]);
    let pki = Pki::new("two");
    let (tls_a, tls_b) = (pki.issue("a", "office-a"), pki.issue("b", "office-b"));
    let owners = BTreeMap::from([("office-b".to_owned(), b.addr)]);
    let plan_a = bundles["office-a"].mesh.clone();
    let plan_b = bundles["office-b"].mesh.clone();

    let owner = TestMesh::start(b, plan_b.clone(), m::config("office-b", &owners, Some(&tls_b))).await;
    let watcher = TestMesh::start(a, plan_a, m::config("office-a", &owners, Some(&tls_a))).await;
    let (obs_a, obs_b) = (observer(a).await, observer(b).await);
    let drive = drive_device("4002");

    // The snapshot: 4001's phone is not registered (UNAVAILABLE), 4002's hint is idle.
    m::wait_device(&obs_a, "Custom:office-b-4001", DeviceState::Unavailable, Duration::from_secs(5)).await;
    m::wait_device(&obs_a, MIRROR, DeviceState::NotInUse, Duration::from_secs(5)).await;

    // Every state value crosses, read back both as the device state and as the mirrored hint.
    for state in STATES.iter().rev().chain(STATES.iter()) {
        m::set_state(&obs_b, &drive, *state).await;
        let took = m::wait_device(&obs_a, MIRROR, *state, Duration::from_secs(2)).await;
        assert_eq!(m::hint_state(&obs_a, "4002", "operator-routes").await, ExtensionState::from(*state));
        assert_eq!(m::hint_state(&obs_b, "4002", "operator-local").await, ExtensionState::from(*state));
        assert!(took < Duration::from_millis(500), "{state} took {took:?}");
    }

    // The owner's mesh node goes away: the mirrors go UNAVAILABLE within the 3 s timeout.
    m::set_state(&obs_b, &drive, DeviceState::InUse).await;
    m::wait_device(&obs_a, MIRROR, DeviceState::InUse, Duration::from_secs(2)).await;
    let tls_b = owner.tls.clone();
    owner.stop().await;
    let lost = m::wait_device(&obs_a, MIRROR, DeviceState::Unavailable, Duration::from_millis(3500)).await;
    assert!(lost >= Duration::from_millis(2500), "went UNAVAILABLE before the timeout: {lost:?}");
    assert!(watcher.node.owners_up().is_empty());

    // It comes back (a new epoch): the right state within 1 s.
    let owner = TestMesh::start(b, plan_b.clone(), m::config("office-b", &owners, tls_b.as_ref())).await;
    let back = m::wait_device(&obs_a, MIRROR, DeviceState::InUse, Duration::from_secs(1)).await;
    eprintln!("owner mesh node restarted: state back after {back:?} (lost after {lost:?})");
    assert_eq!(watcher.node.owners_up(), vec!["office-b".to_owned()]);

    // The owner's Asterisk restarts: UNAVAILABLE while it is gone, then the truth again, and
    // changes flow on the new AMI connection.
    m::set_state(&obs_b, &drive, DeviceState::Busy).await;
    m::wait_device(&obs_a, MIRROR, DeviceState::Busy, Duration::from_secs(2)).await;
    let mut nodes = nodes;
    let b = nodes.get_mut("office-b").unwrap();
    b.stop();
    m::wait_device(&obs_a, MIRROR, DeviceState::Unavailable, Duration::from_secs(3)).await;
    b.boot();
    let obs_b = observer(b).await;
    let truth = m::device_state(&obs_b, &drive).await;
    let expected = match truth.parse::<DeviceState>() {
        Ok(DeviceState::Unknown) | Err(_) => DeviceState::NotInUse, // never set: the hint is idle
        Ok(s) => s,
    };
    m::wait_device(&obs_a, MIRROR, expected, Duration::from_secs(10)).await;
    m::set_state(&obs_b, &drive, DeviceState::Ringing).await;
    m::wait_device(&obs_a, MIRROR, DeviceState::Ringing, Duration::from_secs(2)).await;

    // 1,000 changes in a burst (pipelined on one AMI connection, so their order on the wire is
    // whatever the tasks make it; the last one goes alone after the rest): the mirror ends right
    // and never queues more than one write per mirrored extension.
    let start = Instant::now();
    let mut burst = tokio::task::JoinSet::new();
    for i in 0..999usize {
        let (s, d) = (obs_b.clone(), drive.clone());
        let state = STATES[i % STATES.len()];
        burst.spawn(async move {
            s.call(&asterisk_operator::ami::actions::Setvar::device_state(&d, state)).await
        });
        if burst.len() >= 64 {
            burst.join_next().await.unwrap().unwrap().unwrap();
        }
        assert!(watcher.node.pending_writes() <= 2, "unbounded write queue");
    }
    while let Some(r) = burst.join_next().await {
        r.unwrap().unwrap();
    }
    m::set_state(&obs_b, &drive, DeviceState::OnHold).await;
    m::wait_device(&obs_a, MIRROR, DeviceState::OnHold, Duration::from_secs(5)).await;
    eprintln!("1000-change burst sent in {:?}", start.elapsed());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(m::device_state(&obs_a, MIRROR).await, "ONHOLD", "a late write overtook the final state");

    // The watcher's Asterisk restarts and the owner changes meanwhile: the change is written as
    // soon as the watcher's AMI is back (and every mirror with it).
    let a = nodes.get_mut("office-a").unwrap();
    a.stop();
    m::set_state(&obs_b, &drive, DeviceState::Busy).await;
    a.boot();
    let obs_a = observer(a).await;
    m::wait_device(&obs_a, MIRROR, DeviceState::Busy, Duration::from_secs(5)).await;
    m::wait_device(&obs_a, "Custom:office-b-4001", DeviceState::Unavailable, Duration::from_secs(2)).await;

    let metrics = watcher.node.metrics().encode();
    for needle in ["asterisk_agent_mesh_updates_applied_total", "asterisk_agent_mesh_owners_lost_total 1"] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    let count = |name: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split(' ').nth(1))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(count("asterisk_agent_mesh_propagation_latency_seconds_count") > 0);
    owner.stop().await;
    watcher.stop().await;
}

/// A real SIP phone (baresip) registers as 4001 on office-b, answers a call and hangs up:
/// office-a's mirrored lamp follows (UNAVAILABLE → NOT_INUSE → INUSE → NOT_INUSE), and goes
/// UNAVAILABLE again when the phone leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_phone_on_office_b_drives_office_a_lamp() {
    use asterisk_operator::ami::Action;
    use support::baresip::{Baresip, phone_password};

    let (bundles, nodes) = m::boot("two-offices", &[]);
    let (a, b) = (&nodes["office-a"], &nodes["office-b"]);
    let pki = Pki::new("phone");
    let (tls_a, tls_b) = (pki.issue("a", "office-a"), pki.issue("b", "office-b"));
    let owners = BTreeMap::from([("office-b".to_owned(), b.addr)]);
    let owner =
        TestMesh::start(b, bundles["office-b"].mesh.clone(), m::config("office-b", &owners, Some(&tls_b)))
            .await;
    let watcher =
        TestMesh::start(a, bundles["office-a"].mesh.clone(), m::config("office-a", &owners, Some(&tls_a)))
            .await;
    let (obs_a, obs_b) = (observer(a).await, observer(b).await);
    let lamp = "Custom:office-b-4001";
    m::wait_device(&obs_a, lamp, DeviceState::Unavailable, Duration::from_secs(5)).await;

    let password = phone_password(&bundles["office-b"].files[asterisk_operator::render::PJSIP_FILE], "4001");
    let mut phone = Baresip::start(support::asterisk::fresh_address(), b.addr, "4001", &password);
    let registered = tokio::time::timeout(
        Duration::from_secs(15),
        m::wait_device(&obs_a, lamp, DeviceState::NotInUse, Duration::from_secs(15)),
    )
    .await;
    assert!(registered.is_ok(), "the phone never registered; baresip log:\n{}", phone.log());
    assert_eq!(m::hint_state(&obs_a, "4001", "operator-routes").await, ExtensionState::Idle);

    // A call to the phone: it answers (answermode=auto) and is in use for 3 s.
    let originate = Action::new("Originate")
        .header("Channel", "PJSIP/4001")
        .header("Application", "Wait")
        .header("Data", "3")
        .header("Async", "true");
    obs_b.send(originate).await.expect("Originate");
    let in_use = tokio::time::timeout(
        Duration::from_secs(10),
        m::wait_device(&obs_a, lamp, DeviceState::InUse, Duration::from_secs(10)),
    )
    .await;
    assert!(
        in_use.is_ok(),
        "the lamp never showed the call; baresip log:\n{}\noffice-b log:\n{}",
        phone.log(),
        b.log().lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
    assert_eq!(m::hint_state(&obs_b, "4001", "operator-local").await, ExtensionState::InUse);
    m::wait_device(&obs_a, lamp, DeviceState::NotInUse, Duration::from_secs(10)).await;

    // The phone leaves (unregisters): UNAVAILABLE.
    phone.stop();
    m::wait_device(&obs_a, lamp, DeviceState::Unavailable, Duration::from_secs(10)).await;
    owner.stop().await;
    watcher.stop().await;
}

/// three-sites: HQ mirrors 5001 (north), 6001 and 7001 (south); north mirrors 6001. Every state
/// of every exported extension reaches every watcher; a new BLF target (north starts watching
/// 7001; its plan changes before the owner's) and its removal take effect without restarting
/// anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sites_mirror_to_every_watcher_and_follow_interest_changes() {
    use asterisk_operator::render::MeshImport;

    let (bundles, nodes) = m::boot("three-sites", &["5001", "6001", "7001"]);
    let pki = Pki::new("three");
    let owners: BTreeMap<String, _> = nodes.iter().map(|(n, a)| (n.clone(), a.addr)).collect();
    let mut meshes = BTreeMap::new();
    let mut obs = BTreeMap::new();
    for (name, asterisk) in &nodes {
        let tls = pki.issue(name, name);
        let mesh =
            TestMesh::start(asterisk, bundles[name].mesh.clone(), m::config(name, &owners, Some(&tls))).await;
        meshes.insert(name.clone(), mesh);
        obs.insert(name.clone(), observer(asterisk).await);
    }
    // (owner, extension, watchers)
    let exported = [
        ("branch-north", "5001", &["hq"][..]),
        ("branch-south", "6001", &["branch-north", "hq"][..]),
        ("branch-south", "7001", &["hq"][..]),
    ];
    for state in STATES {
        for (owner, ext, watchers) in exported {
            m::set_state(&obs[owner], &drive_device(ext), state).await;
            for w in watchers {
                let device = format!("Custom:{owner}-{ext}");
                m::wait_device(&obs[*w], &device, state, Duration::from_secs(2)).await;
                assert_eq!(
                    m::hint_state(&obs[*w], ext, "operator-routes").await,
                    ExtensionState::from(state)
                );
            }
        }
    }

    // A new BLF key: north starts watching 7001 (both plans change, nothing restarts).
    m::set_state(&obs["branch-south"], &drive_device("7001"), DeviceState::Busy).await;
    let device = "Custom:branch-south-7001";
    let mut north_plan = bundles["branch-north"].mesh.clone();
    north_plan.sources[0].imports.push(MeshImport { extension: "7001".into(), device: device.into() });
    let mut south_plan = bundles["branch-south"].mesh.clone();
    south_plan
        .exports
        .iter_mut()
        .find(|e| e.extension == "7001")
        .unwrap()
        .watchers
        .push("branch-north".into());
    // The watcher's plan arrives first: the owner refuses 7001 to it until its own plan says
    // north is a watcher, then sends it on the open stream.
    meshes["branch-north"].plan.send_replace(north_plan.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        m::device_state(&obs["branch-north"], device).await,
        "UNAVAILABLE",
        "sent before it was allowed"
    );
    meshes["branch-south"].plan.send_replace(south_plan);
    m::wait_device(&obs["branch-north"], device, DeviceState::Busy, Duration::from_secs(2)).await;
    m::set_state(&obs["branch-south"], &drive_device("7001"), DeviceState::Ringing).await;
    m::wait_device(&obs["branch-north"], device, DeviceState::Ringing, Duration::from_secs(2)).await;
    let text = meshes["branch-north"].node.metrics().encode();
    assert!(
        text.contains("asterisk_agent_mesh_owners_lost_total 0\n"),
        "the link was not restarted:\n{text}"
    );

    // And it goes away again: north stops following 7001, the rest keeps flowing.
    north_plan.sources[0].imports.retain(|i| i.extension != "7001");
    meshes["branch-north"].plan.send_replace(north_plan);
    // Wait until north's mirror table has dropped 7001 (what decides that a later change is
    // not written), instead of guessing how long that takes.
    let dropped = std::time::Instant::now();
    while meshes["branch-north"].node.desired(device).is_some() {
        assert!(dropped.elapsed() < Duration::from_secs(2), "north still mirrors {device}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    m::set_state(&obs["branch-south"], &drive_device("7001"), DeviceState::InUse).await;
    m::set_state(&obs["branch-south"], &drive_device("6001"), DeviceState::OnHold).await;
    m::wait_device(
        &obs["branch-north"],
        "Custom:branch-south-6001",
        DeviceState::OnHold,
        Duration::from_secs(2),
    )
    .await;
    m::wait_device(&obs["hq"], device, DeviceState::InUse, Duration::from_secs(2)).await;
    assert_eq!(
        m::device_state(&obs["branch-north"], device).await,
        "RINGING",
        "an unwatched extension still flowed"
    );

    for (_, mesh) in meshes {
        mesh.stop().await;
    }
}
