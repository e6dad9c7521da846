//! Metrics that are right from the first scrape, against real Asterisk 22: an agent polls when
//! AMI logs in and after each apply that changed something, so neither a fresh agent nor a fresh
//! apply serves zeros until the next `--poll-interval` tick (set to ten minutes here, so only
//! those polls can have filled the metrics). And the SIP OPTIONS probe of the node's own
//! transport, as real Asterisk answers it.
//!
//! Needs the test-bed: `bash testbed/setup.sh`.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use asterisk_operator::agent::RunningAgent;
use asterisk_operator::render;
use asterisk_operator::topology;
use support::agent::{self as ag, apply, client, get, parse_metrics, value};
use support::fleet::{self, on_loopback};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn scrape(agent: &RunningAgent) -> BTreeMap<String, f64> {
    let (code, body) = get(agent.http_addr, "/metrics");
    assert_eq!(code, 200, "{body}");
    parse_metrics(&body)
}

/// Scrapes until `asterisk_up` is 1 (the login poll ran), at most 5 s.
fn first_scrape_after_login(agent: &RunningAgent) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = scrape(agent);
        if value(&m, "asterisk_up") == 1.0 || Instant::now() > deadline {
            return m;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

#[test]
fn a_fresh_agent_and_a_fresh_apply_are_scraped_right_and_the_sip_probe_sees_the_transport() {
    let rt = runtime();
    let (set, addrs) = on_loopback(fleet::example("two-offices"));
    let resolution = topology::resolve(&set);
    assert_eq!(resolution.errors, vec![]);
    let bundles = render::render_all(&resolution.topology);
    let bundle = &bundles["office-a"];
    let mut asterisk = ag::asterisk_for_agent("office-a", addrs["office-a"]);
    let booted_at = unix_now();
    // Let Asterisk's uptime reach whole seconds, so 0 would be a wrong answer.
    std::thread::sleep(Duration::from_millis(2100));

    let slow_polls = |mut o: asterisk_operator::agent::AgentOptions| {
        o.node.poll_interval = Duration::from_secs(600);
        o
    };
    let agent = ag::start(&rt, slow_polls(ag::options(&asterisk)));
    let m = first_scrape_after_login(&agent);
    assert_eq!(value(&m, "asterisk_up"), 1.0, "after login, before any poll tick: {m:?}");
    assert!(value(&m, "asterisk_uptime_seconds") >= 2.0, "uptime from the first scrape: {m:?}");
    let started = value(&m, "asterisk_start_time_seconds");
    assert!((started - booted_at).abs() < 3.0, "start time {started} vs booted at {booted_at}");
    assert!(
        !m.keys().any(|k| k.starts_with("asterisk_sip_probe_up")),
        "nothing applied, nothing to probe: {m:?}"
    );

    // Apply, then scrape at once: the counts of the new bundle, and the transport it defines
    // probed. Asterisk 22 answers an OPTIONS from a source no endpoint matches with 401.
    let mut c = client(&rt, &agent);
    let r = apply(&rt, &mut c, bundle);
    assert!(r.ok && !r.unchanged, "{r:?}");
    let m = scrape(&agent);
    let listed = asterisk.rx("pjsip show endpoints");
    let endpoints: f64 = listed
        .lines()
        .find_map(|l| l.trim().strip_prefix("Objects found: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no object count in {listed}"));
    assert!(endpoints >= 3.0, "phones and trunks loaded: {endpoints}");
    assert_eq!(value(&m, "asterisk_pjsip_endpoints"), endpoints, "right after the apply: {m:?}");
    assert!(value(&m, "asterisk_last_reload_timestamp_seconds") > booted_at, "{m:?}");
    let target = format!("{{protocol=\"udp\",target=\"{}:5060\"}}", addrs["office-a"]);
    assert_eq!(value(&m, &format!("asterisk_sip_probe_up{target}")), 1.0, "{m:?}");
    assert_eq!(value(&m, &format!("asterisk_sip_probe_status_code{target}")), 401.0, "{m:?}");
    let took = value(&m, &format!("asterisk_sip_probe_duration_seconds{target}"));
    assert!(took > 0.0 && took < 1.0, "{took}");
    rt.block_on(agent.shutdown());

    // A new agent beside the configured Asterisk: its first scrape has the counts too.
    let agent = ag::start(&rt, slow_polls(ag::options(&asterisk)));
    let m = first_scrape_after_login(&agent);
    assert_eq!(value(&m, "asterisk_pjsip_endpoints"), endpoints, "{m:?}");
    assert_eq!(value(&m, &format!("asterisk_sip_probe_up{target}")), 1.0, "{m:?}");
    let again = value(&m, "asterisk_start_time_seconds");
    assert!(
        (again - started).abs() <= 1.0,
        "the same Asterisk, the same start (uptime is in whole seconds): {again} vs {started}"
    );

    // Asterisk stops: the probe, which does not need AMI, finds nothing answering.
    asterisk.stop();
    let m = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            rt.block_on(agent.node.poll());
            let m = scrape(&agent);
            if value(&m, &format!("asterisk_sip_probe_up{target}")) == 0.0 || Instant::now() > deadline {
                break m;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    assert_eq!(value(&m, "asterisk_up"), 0.0, "{m:?}");
    assert_eq!(value(&m, &format!("asterisk_sip_probe_status_code{target}")), 0.0, "{m:?}");
    assert_eq!(value(&m, &format!("asterisk_sip_probe_up{target}")), 0.0, "{m:?}");
    rt.block_on(agent.shutdown());
}
