//! The agent against real Asterisk 22: the two-offices bundles applied through two agents,
//! idempotence, reloading only what changed, rollback of a broken bundle, health while Asterisk
//! dies and comes back, the metrics, and caller authentication. The agents log in with the
//! least-privilege AMI user of docs/agent.md.
//!
//! Needs the test-bed: `bash testbed/setup.sh`.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use asterisk_operator::agent::proto::StatusRequest;
use asterisk_operator::agent::{RunningAgent, bundle_to_proto};
use asterisk_operator::render::{self, Bundle, PJSIP_FILE};
use asterisk_operator::topology::{self, ResourceSet};
use support::agent::{self as ag, apply, client, get, parse_metrics, value};
use support::asterisk::Asterisk;
use support::fleet::{self, on_loopback};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn render(set: &ResourceSet) -> BTreeMap<String, Bundle> {
    let resolution = topology::resolve(set);
    assert_eq!(resolution.errors, vec![]);
    render::render_all(&resolution.topology)
}

fn metrics(agent: &RunningAgent) -> BTreeMap<String, f64> {
    let (code, body) = get(agent.http_addr, "/metrics");
    assert_eq!(code, 200, "{body}");
    parse_metrics(&body)
}

const PJSIP_RELOADS: &str = r#"asterisk_agent_reloads_total{module="res_pjsip.so",result="ok"}"#;
const IAX_RELOADS: &str = r#"asterisk_agent_reloads_total{module="chan_iax2.so",result="ok"}"#;
const DIALPLAN_RELOADS: &str = r#"asterisk_agent_reloads_total{module="pbx_config.so",result="ok"}"#;

fn total_reloads(m: &BTreeMap<String, f64>) -> f64 {
    m.iter().filter(|(k, _)| k.starts_with("asterisk_agent_reloads_total{")).map(|(_, v)| v).sum()
}

/// Boots one Asterisk per node with the main files only (nothing of the operator yet).
fn boot_empty(set: &ResourceSet, addrs: &BTreeMap<String, std::net::Ipv4Addr>) -> BTreeMap<String, Asterisk> {
    let mut nodes = BTreeMap::new();
    for node in &set.nodes {
        let name = node.metadata.name.clone().unwrap();
        let asterisk = ag::asterisk_for_agent(&name, addrs[&name]);
        nodes.insert(name, asterisk);
    }
    nodes
}

#[test]
fn two_offices_applied_through_two_agents_reload_only_what_changed_and_roll_back() {
    let rt = runtime();
    let (mut set, addrs) = on_loopback(fleet::example("two-offices"));
    let bundles = render(&set);
    let nodes = boot_empty(&set, &addrs);
    let (a, b) = (&nodes["office-a"], &nodes["office-b"]);
    let agent_a = ag::start(&rt, ag::options(a));
    let agent_b = ag::start(&rt, ag::options(b));
    let (mut ca, mut cb) = (client(&rt, &agent_a), client(&rt, &agent_b));

    // First apply: every file written, every module reloaded once, in order.
    for (c, node) in [(&mut ca, "office-a"), (&mut cb, "office-b")] {
        let r = apply(&rt, c, &bundles[node]);
        assert!(r.ok, "{node}: {r:?}");
        assert!(!r.unchanged);
        assert_eq!(r.applied_hash, bundles[node].hash);
        assert_eq!(r.reloaded_modules, ["res_pjsip.so", "chan_iax2.so", "pbx_config.so"], "{node}");
        assert_eq!(r.changed_files.len(), 3, "{node}: {:?}", r.changed_files);
    }
    // Phones and trunks are there, as Asterisk itself shows them.
    let endpoints_a = a.rx("pjsip show endpoints");
    for name in ["3001", "3002", "a-b-sip"] {
        assert!(
            endpoints_a.contains(&format!(" {name} ")) || endpoints_a.contains(&format!(" {name}/")),
            "{endpoints_a}"
        );
    }
    let endpoints_b = b.rx("pjsip show endpoints");
    for name in ["4001", "4002", "a-b-sip"] {
        assert!(
            endpoints_b.contains(&format!(" {name} ")) || endpoints_b.contains(&format!(" {name}/")),
            "{endpoints_b}"
        );
    }
    assert!(a.rx("iax2 show peers").contains("a-b-iax"));
    assert!(a.rx("dialplan show operator-routes").contains("'_4XXX'"));
    // The dynamic side registers over IAX2 and the trunk comes up on both ends.
    a.wait_for("iax2 show peers", Duration::from_secs(20), |o| o.contains("OK ("));
    let status = rt.block_on(ca.status(StatusRequest {})).unwrap().into_inner();
    assert!(status.ami_connected && status.ready, "{status:?}");
    assert!(status.asterisk_version.contains("22."), "{status:?}");
    assert_eq!(status.applied_hash, bundles["office-a"].hash);
    assert_eq!(status.endpoints, 3, "{status:?}");
    assert_eq!(status.trunks, 2, "{status:?}");
    assert!(status.uptime_seconds < 600, "{status:?}");
    assert!(status.last_reload_unix > 0, "{status:?}");

    let m = metrics(&agent_a);
    assert_eq!(value(&m, PJSIP_RELOADS), 1.0);
    assert_eq!(value(&m, IAX_RELOADS), 1.0);
    assert_eq!(value(&m, DIALPLAN_RELOADS), 1.0);
    assert_eq!(value(&m, r#"asterisk_agent_applies_total{result="ok"}"#), 1.0);
    assert_eq!(
        value(&m, &format!(r#"asterisk_agent_bundle_info{{hash="{}"}}"#, bundles["office-a"].hash)),
        1.0
    );
    assert_eq!(value(&m, "asterisk_agent_ami_connected"), 1.0);
    assert_eq!(value(&m, "asterisk_pjsip_endpoints"), 3.0);
    assert_eq!(value(&m, r#"asterisk_trunk_up{trunk="a-b-iax",protocol="iax2"}"#), 1.0, "{m:#?}");
    assert!(m.contains_key(r#"asterisk_trunk_up{trunk="a-b-sip",protocol="pjsip"}"#), "{m:#?}");
    // PJSIP and the dialplan were reloaded; chan_iax2 was unloaded and loaded, because a reload
    // ignores its new listener address.
    assert!(value(&m, r#"asterisk_agent_ami_events_total{type="Reload"}"#) >= 2.0, "{m:#?}");
    assert!(value(&m, r#"asterisk_agent_ami_events_total{type="Load"}"#) >= 1.0, "{m:#?}");
    assert!(value(&m, r#"asterisk_agent_reload_duration_seconds_count{module="res_pjsip.so"}"#) == 1.0);
    assert!(m.contains_key("asterisk_active_channels") && m.contains_key("asterisk_uptime_seconds"));
    assert!(value(&m, "asterisk_last_reload_timestamp_seconds") > 1.7e9, "{m:#?}");

    // The same bundle again: nothing written, nothing reloaded.
    let before = std::fs::metadata(a.etc_dir().join(PJSIP_FILE)).unwrap().modified().unwrap();
    let r = apply(&rt, &mut ca, &bundles["office-a"]);
    assert!(r.ok && r.unchanged, "{r:?}");
    assert!(r.reloaded_modules.is_empty() && r.changed_files.is_empty(), "{r:?}");
    assert_eq!(std::fs::metadata(a.etc_dir().join(PJSIP_FILE)).unwrap().modified().unwrap(), before);
    let m2 = metrics(&agent_a);
    assert_eq!(total_reloads(&m2), total_reloads(&m), "re-applying reloaded something");
    assert_eq!(value(&m2, r#"asterisk_agent_applies_total{result="unchanged"}"#), 1.0);

    // One phone changes: only pjsip_operator.conf is written, only res_pjsip.so reloaded.
    let phone = set.phones.iter_mut().find(|p| p.spec.extension == "3002").unwrap();
    phone.spec.display_name = Some("Accounts Desk".into());
    let changed = render(&set);
    let r = apply(&rt, &mut ca, &changed["office-a"]);
    assert!(r.ok, "{r:?}");
    assert_eq!(r.changed_files, [PJSIP_FILE]);
    assert_eq!(r.reloaded_modules, ["res_pjsip.so"]);
    assert!(a.rx("pjsip show endpoint 3002").contains("Accounts Desk"));
    let m3 = metrics(&agent_a);
    assert_eq!(value(&m3, PJSIP_RELOADS), 2.0);
    assert_eq!(value(&m3, IAX_RELOADS), 1.0);
    assert_eq!(value(&m3, DIALPLAN_RELOADS), 1.0);

    // A broken PJSIP section: Asterisk refuses the object, the agent restores the previous file,
    // reloads again, and says which file and what Asterisk said.
    let good_text = changed["office-a"].files[PJSIP_FILE].clone();
    let mut files = changed["office-a"].files.clone();
    files.insert(
        PJSIP_FILE.into(),
        format!("{good_text}\n[3999]\ntype=endpoint\naors=3999\nbogus_option=yes\n\n[3999]\ntype=aor\n"),
    );
    let broken = Bundle::new("office-a", files, changed["office-a"].mesh.clone());
    let r = apply(&rt, &mut ca, &broken);
    assert!(!r.ok && r.rolled_back, "{r:?}");
    let err = r.error.clone().unwrap();
    assert_eq!(err.file, PJSIP_FILE, "{err:?}");
    assert!(err.message.contains("3999"), "{err:?}");
    assert!(err.message.contains("bogus_option"), "Asterisk's own message is missing: {err:?}");
    assert_eq!(r.applied_hash, changed["office-a"].hash);
    assert_eq!(r.reloaded_modules, ["res_pjsip.so", "res_pjsip.so"]);
    assert_eq!(std::fs::read_to_string(a.etc_dir().join(PJSIP_FILE)).unwrap(), good_text);
    let endpoints = a.rx("pjsip show endpoints");
    assert!(
        endpoints.contains(" 3001") && endpoints.contains(" 3002") && !endpoints.contains("3999"),
        "{endpoints}"
    );
    assert!(a.rx("pjsip show aors").contains(" 3001"));
    let (code, body) = get(agent_a.http_addr, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("pjsip_operator.conf"), "{body}");
    let m4 = metrics(&agent_a);
    assert_eq!(value(&m4, r#"asterisk_agent_applies_total{result="failed"}"#), 1.0);
    assert_eq!(value(&m4, r#"asterisk_agent_reloads_total{module="res_pjsip.so",result="failed"}"#), 1.0);

    // The good bundle again: the files on disk already match it, so nothing is reloaded, and the
    // agent is ready again.
    let r = apply(&rt, &mut ca, &changed["office-a"]);
    assert!(r.ok && r.unchanged, "{r:?}");
    assert_eq!(get(agent_a.http_addr, "/readyz").0, 200);

    rt.block_on(agent_a.shutdown());
    rt.block_on(agent_b.shutdown());
}

#[test]
fn healthz_fails_within_its_timeout_when_asterisk_dies_and_recovers_after_restart() {
    let rt = runtime();
    let addr = support::asterisk::fresh_address();
    let mut ast = ag::asterisk_for_agent("office-h", addr);
    let agent = ag::start(&rt, ag::options(&ast));
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(agent.http_addr, "/healthz").0 != 200 {
        assert!(Instant::now() < deadline, "healthz never became 200");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, body) = get(agent.http_addr, "/healthz");
    assert!(body.starts_with("ok"), "{body}");
    assert_eq!(get(agent.http_addr, "/readyz").0, 200);
    assert_eq!(value(&metrics(&agent), "asterisk_up"), 1.0);

    ast.stop();
    let t = Instant::now();
    let (code, body) = get(agent.http_addr, "/healthz");
    let took = t.elapsed();
    assert_eq!(code, 503, "{body}");
    assert!(took <= Duration::from_millis(1500), "healthz took {took:?} (timeout 1 s)");
    assert!(body.contains("Ping"), "{body}");
    let (code, body) = get(agent.http_addr, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("AMI not connected"), "{body}");
    let m = metrics(&agent);
    assert_eq!(value(&m, "asterisk_up"), 0.0);
    assert_eq!(value(&m, "asterisk_agent_ami_connected"), 0.0);

    ast.boot();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, body) = get(agent.http_addr, "/healthz");
        if code == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "healthz did not recover: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(get(agent.http_addr, "/readyz").0, 200);
    let m = metrics(&agent);
    assert_eq!(value(&m, "asterisk_up"), 1.0);
    assert!(value(&m, "asterisk_agent_ami_reconnects_total") >= 1.0, "{m:#?}");
    rt.block_on(agent.shutdown());
}

#[test]
fn push_needs_the_token_and_the_command_reports_the_result() {
    let rt = runtime();
    let (set, addrs) = on_loopback(fleet::example("two-offices"));
    let bundles = render(&set);
    let addr = addrs["office-a"];
    let ast = ag::asterisk_for_agent("office-a", addr);
    let mut opts = ag::options(&ast);
    opts.token = Some(ag::token());
    let agent = ag::start(&rt, opts);
    let url = format!("http://{}", agent.grpc_addr);

    // Without the token, and with a wrong one: refused before anything is applied.
    let mut c = client(&rt, &agent);
    let err = rt.block_on(c.apply(bundle_to_proto(&bundles["office-a"]))).unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(!ast.etc_dir().join(PJSIP_FILE).exists());

    let dir = std::env::temp_dir().join(format!("ao-push-{}", std::process::id()));
    let folder = dir.join("office-a");
    bundles["office-a"].write_to(&folder).unwrap();
    let (good, bad) = (dir.join("token"), dir.join("wrong"));
    std::fs::write(&good, format!("{}\n", ag::token().expose())).unwrap();
    std::fs::write(&bad, "NotTheToken0\n").unwrap();
    let push = |token: &std::path::Path, json: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_asterisk-operator"));
        cmd.args(["push", "--agent", &url, "--token-file"]).arg(token);
        if json {
            cmd.arg("--json");
        }
        cmd.arg(&folder).output().unwrap()
    };
    let out = push(&bad, false);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("token"), "{out:?}");
    assert!(!ast.etc_dir().join(PJSIP_FILE).exists());

    // With it: applied, readable result, exit 0; again: unchanged.
    let out = push(&good, false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("applied bundle") && text.contains("res_pjsip.so"), "{text}");
    let out = push(&good, true);
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["ok"], true);
    assert_eq!(json["unchanged"], true);
    assert_eq!(json["appliedHash"], bundles["office-a"].hash.as_str());

    // A folder that is not a valid bundle for the agent: exit 1 with the file named.
    std::fs::write(folder.join("sip.conf"), "[x]\n").unwrap();
    let out = push(&good, false);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("sip.conf"), "{out:?}");

    let _ = std::fs::remove_dir_all(&dir);
    rt.block_on(agent.shutdown());
}

#[test]
fn plaintext_or_unauthenticated_serving_is_explicit_and_loopback_only() {
    let addr = support::asterisk::fresh_address();
    // No Asterisk needed: the check happens before anything starts.
    let base = ag::options_for_addr("office-x", addr);
    let mut opts = base.clone();
    opts.plaintext = false;
    let err = opts.check().unwrap_err().to_string();
    assert!(err.contains("--plaintext") && err.contains("--tls-cert"), "{err}");
    opts.tls = Some(asterisk_operator::agent::ServerTls {
        cert: "cert.pem".into(),
        key: "key.pem".into(),
        client_ca: None,
    });
    opts.no_auth = false;
    let err = opts.check().unwrap_err().to_string();
    assert!(err.contains("--tls-client-ca") && err.contains("--token-file"), "{err}");
    opts.token = Some(ag::token());
    opts.check().unwrap();

    // Off loopback, neither plaintext nor unauthenticated serving is accepted.
    let mut open = base.clone();
    open.grpc_listen = "0.0.0.0:7443".parse().unwrap();
    let err = open.check().unwrap_err().to_string();
    assert!(err.contains("only on a loopback address, not 0.0.0.0:7443"), "{err}");
    open.tls = opts.tls.clone();
    let err = open.check().unwrap_err().to_string();
    assert!(err.contains("--no-auth lets anyone who reaches 0.0.0.0:7443 apply configuration"), "{err}");
    // The mesh without mTLS: only on loopback, whatever the gRPC side does.
    let mut mesh = opts.clone();
    mesh.plaintext = true;
    mesh.mesh = Some(asterisk_operator::agent::MeshOptions {
        listen: "0.0.0.0:7444".parse().unwrap(),
        tls: None,
        endpoints: Default::default(),
    });
    let err = mesh.check().unwrap_err().to_string();
    assert!(err.contains("trusts the node name each peer claims") && err.contains("0.0.0.0:7444"), "{err}");
}
