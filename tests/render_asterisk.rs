//! The rendered bundles of both examples, loaded into real Asterisk 22 instances: every phone,
//! trunk, route and hint is there, the log has no complaint about them, the IAX2 trunk comes up
//! with the dynamic side registered, and calls really cross it — over IAX2, over the PJSIP
//! fallback when IAX2 is gone, and through HQ between branches.
//!
//! Needs the test-bed: `bash testbed/setup.sh`.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use asterisk_operator::render::{self, Bundle};
use asterisk_operator::topology;
use support::asterisk::{Asterisk, boot_bundles};
use support::fleet::{self, on_loopback};

/// Renders an example for loopback and boots one Asterisk per node, in node order
/// (nodes with fixed addresses sort first in both examples, so registrars are up first).
fn boot_example(name: &str) -> (BTreeMap<String, Bundle>, BTreeMap<String, Asterisk>) {
    let (set, addrs) = on_loopback(fleet::example(name));
    let resolution = topology::resolve(&set);
    assert_eq!(resolution.errors, vec![]);
    let bundles = render::render_all(&resolution.topology);
    let nodes = boot_bundles(&set, &addrs, &bundles);
    (bundles, nodes)
}

/// WARNING/ERROR lines that a rendered bundle could have caused. Tolerated: what the
/// test-bed's package logs anyway (no music-on-hold sounds installed), and what Asterisk logs
/// when the tests' calls ring phones that are not registered (no SIP phone runs here), or try
/// IAX2 after the test unloaded chan_iax2 to block that trunk, or the SIP stack's start-up race.
fn complaints(asterisk: &Asterisk) -> Vec<String> {
    const EXPECTED: [&str; 5] = [
        "res_musiconhold",
        "Could not create dialog to invalid URI",
        "Failed to create outgoing session to endpoint",
        "No channel type registered for 'IAX2'",
        // pjproject's own start-up race: a SIP request (a peer registering) arrives while
        // res_pjsip_pubsub is still loading. Timing, not configuration.
        "registered during operation. Enable PJSIP_SAFE_MODULE",
    ];
    asterisk.problems_except(&EXPECTED)
}

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn two_offices_runs_on_real_asterisk_and_calls_cross_both_trunks() {
    let (bundles, nodes) = boot_example("two-offices");
    let (a, b) = (&nodes["office-a"], &nodes["office-b"]);

    // Every phone and trunk endpoint is loaded.
    let endpoints_a = a.rx("pjsip show endpoints");
    for name in ["3001", "3002", "a-b-sip"] {
        assert!(
            endpoints_a.contains(&format!(" {name} ")) || endpoints_a.contains(&format!(" {name}/")),
            "office-a lacks endpoint {name}:\n{endpoints_a}"
        );
    }
    let endpoints_b = b.rx("pjsip show endpoints");
    for name in ["4001", "4002", "a-b-sip"] {
        assert!(
            endpoints_b.contains(&format!(" {name} ")) || endpoints_b.contains(&format!(" {name}/")),
            "office-b lacks endpoint {name}:\n{endpoints_b}"
        );
    }
    // The dialplan has the routes, the phones' hints and the mirrored hints.
    let routes_a = a.rx("dialplan show operator-routes");
    assert!(routes_a.contains("'_4XXX'"), "{routes_a}");
    assert!(b.rx("dialplan show operator-routes").contains("'_3XXX'"));
    let hints_a = a.rx("core show hints");
    assert!(hints_a.contains("3001@operator-local") && hints_a.contains("PJSIP/3001"), "{hints_a}");
    assert!(
        hints_a.contains("4001@operator-routes") && hints_a.contains("Custom:office-b-4001"),
        "{hints_a}"
    );
    // The custom device naming works: setting it moves the mirrored hint.
    a.rx("devstate change Custom:office-b-4001 INUSE");
    a.wait_for("core show hint 4001", WAIT, |o| o.contains("InUse"));
    a.rx("devstate change Custom:office-b-4001 NOT_INUSE");
    a.wait_for("core show hint 4001", WAIT, |o| o.contains("Idle"));

    // The IAX2 trunk comes up: office-b (dynamic) registers (its log records the REGACK; its
    // `iax2 show registry` can already show the next "Request Sent"), and office-a sees the
    // peer at office-b's address, reachable.
    b.wait_for_log("Registered IAX2 to", WAIT);
    let b_at = b.addr.to_string();
    a.wait_for("iax2 show peers", WAIT, |o| {
        o.lines().any(|l| l.starts_with("a-b-iax") && l.contains(&b_at) && l.contains("OK"))
    });
    assert!(b.rx("iax2 show peers").lines().any(|l| l.starts_with("a-b-iax")));
    // The PJSIP fallback trunk registers too.
    b.wait_for("pjsip show registrations", WAIT, |o| {
        o.contains("a-b-sip-registration") && o.contains("Registered")
    });

    // A call from office A's phones to 4001 crosses the IAX2 trunk into office B's dialplan.
    a.rx("channel originate Local/4001@operator-phones application Wait 1");
    b.wait_for_log("4001@operator-from-a-b-iax:1", WAIT);

    // Block the IAX2 trunk (office B's IAX2 goes away, office A forgets its registration):
    // the same call now goes over the PJSIP trunk.
    b.rx("module unload chan_iax2.so");
    a.rx("iax2 unregister a-b-iax");
    let b_addr = b.addr.to_string();
    a.wait_for("iax2 show peers", WAIT, |o| {
        o.lines().any(|l| l.starts_with("a-b-iax") && !l.contains(&b_addr))
    });
    a.rx("channel originate Local/4002@operator-phones application Wait 1");
    b.wait_for_log("4002@operator-from-a-b-sip:1", WAIT);
    assert!(!b.log().contains("4002@operator-from-a-b-iax"), "the blocked IAX2 trunk carried no call");

    // And the other direction over PJSIP: office B reaches office A's 3002.
    b.rx("channel originate Local/3002@operator-phones application Wait 1");
    a.wait_for_log("3002@operator-from-a-b-sip:1", WAIT);

    for asterisk in nodes.values() {
        assert_eq!(complaints(asterisk), Vec::<String>::new(), "{} logged complaints", asterisk.name);
    }
    // Dial strings carry names only, never credentials.
    for bundle in bundles.values() {
        for line in bundle.files[render::EXTENSIONS_FILE].lines().filter(|l| l.contains("Dial(")) {
            assert!(!line.contains(':') || line.contains("$["), "credential-looking dial string: {line}");
        }
    }
}

#[test]
fn three_sites_route_branch_to_branch_through_hq() {
    let (_bundles, nodes) = boot_example("three-sites");
    let (hq, north, south) = (&nodes["hq"], &nodes["branch-north"], &nodes["branch-south"]);
    for (node, endpoints) in
        [(hq, &["2000"][..]), (north, &["5001"][..]), (south, &["6001", "7001", "hq-south-sip"][..])]
    {
        let out = node.rx("pjsip show endpoints");
        for e in endpoints {
            assert!(
                out.contains(&format!(" {e} ")) || out.contains(&format!(" {e}/")),
                "{} lacks {e}:\n{out}",
                node.name
            );
        }
    }
    let peers = hq.rx("iax2 show peers");
    assert!(peers.contains("hq-north") && peers.contains("hq-south"), "{peers}");
    south.wait_for_log("Registered IAX2 to", WAIT);
    north.wait_for("iax2 show peers", WAIT, |o| {
        o.lines().any(|l| l.starts_with("hq-north") && l.contains("OK"))
    });
    let south_at = south.addr.to_string();
    hq.wait_for("iax2 show peers", WAIT, |o| {
        o.lines().any(|l| l.starts_with("hq-south") && l.contains(&south_at) && l.contains("OK"))
    });
    assert!(north.rx("core show hints").contains("Custom:branch-south-6001"));

    // North has no trunk to south: its call to 6001 goes to HQ, which passes it on.
    north.rx("channel originate Local/6001@operator-phones application Wait 1");
    hq.wait_for_log("6001@operator-from-hq-north:1", WAIT);
    south.wait_for_log("6001@operator-from-hq-south:1", WAIT);
    // And back: south's 7-prefixed plan is reachable from north too.
    south.rx("channel originate Local/5001@operator-phones application Wait 1");
    north.wait_for_log("5001@operator-from-hq-north:1", WAIT);

    for asterisk in nodes.values() {
        assert_eq!(complaints(asterisk), Vec::<String>::new(), "{} logged complaints", asterisk.name);
    }
}
