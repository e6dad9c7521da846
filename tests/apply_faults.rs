//! Apply correctness under faults, against real Asterisk 22: an agent SIGKILLed between writing
//! and reloading, a forward chan_iax2 load failure, a file the agent cannot read, a SIP
//! transport change a reload does not apply, an iax.conf that includes the operator's file
//! before `[general]`, a stalled Asterisk, and a bundle larger than gRPC's default 4 MiB.
//!
//! Needs the test-bed: `bash testbed/setup.sh`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use asterisk_operator::agent::proto::StatusRequest;
use asterisk_operator::agent::{AgentClient, ClientOptions, bundle_to_proto, connect};
use asterisk_operator::ami::actions::{IAXpeers, PJSIPShowEndpoints};
use asterisk_operator::ami::{Action, Session};
use asterisk_operator::render::{self, Bundle, EXTENSIONS_FILE, IAX_FILE, PJSIP_FILE};
use asterisk_operator::topology::{self, ResourceSet};
use support::agent::{self as ag, apply, client, get};
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

/// Endpoint names Asterisk has loaded, asked over AMI.
fn endpoints(rt: &tokio::runtime::Runtime, ami: &Session) -> BTreeSet<String> {
    rt.block_on(ami.call(&PJSIPShowEndpoints)).unwrap().into_iter().map(|e| e.name).collect()
}

/// IAX2 peer names Asterisk has loaded.
fn iax_peers(rt: &tokio::runtime::Runtime, ami: &Session) -> BTreeSet<String> {
    rt.block_on(ami.call(&IAXpeers))
        .unwrap()
        .into_iter()
        .map(|p| p.name.split('/').next().unwrap().to_owned())
        .collect()
}

/// Is the module loaded (AMI ModuleCheck)?
fn module_loaded(rt: &tokio::runtime::Runtime, ami: &Session, module: &str) -> bool {
    let reply = rt.block_on(ami.send(Action::new("ModuleCheck").header("Module", module))).unwrap();
    !reply.response.is_error()
}

/// The two-offices fleet on loopback with one more phone on office-a.
fn with_extra_phone(set: &ResourceSet, ext: &str) -> ResourceSet {
    let mut set = set.clone();
    let mut phone = set.phones.iter().find(|p| p.spec.node == "office-a").unwrap().clone();
    phone.metadata.name = Some(format!("extra-{ext}"));
    phone.spec.extension = ext.into();
    phone.spec.secret_ref = None;
    phone.spec.device = None; // another desk, not a second phone with the same MAC
    set.phones.push(phone);
    fleet::with_test_secrets(set)
}

/// The `asterisk-operator agent` process for `asterisk`, gRPC on `<its address>:7443`.
struct AgentProcess {
    child: Child,
    url: String,
}

impl AgentProcess {
    fn start(asterisk: &Asterisk, dir: &std::path::Path, fault: Option<&str>) -> AgentProcess {
        let secret = dir.join("ami-secret");
        std::fs::write(&secret, format!("{}\n", ag::AMI_SECRET)).unwrap();
        let addr = asterisk.addr;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_asterisk-operator"));
        cmd.args(["agent", "--node", &asterisk.name, "--insecure", "--ami-user", ag::AMI_USER])
            .args(["--ami-addr", &asterisk.ami_addr().to_string()])
            .arg("--ami-secret-file")
            .arg(&secret)
            .arg("--config-dir")
            .arg(asterisk.etc_dir())
            .arg("--keys-dir")
            .arg(asterisk.keys_dir())
            .args(["--grpc-listen", &format!("{addr}:7443"), "--http-listen", &format!("{addr}:9090")])
            .env_remove("AO_AGENT_TEST_FAULT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(dir.join(format!("agent-{}.log", fault.unwrap_or("plain")))).unwrap(),
            );
        if let Some(f) = fault {
            cmd.env("AO_AGENT_TEST_FAULT", f);
        }
        AgentProcess { child: cmd.spawn().unwrap(), url: format!("http://{addr}:7443") }
    }

    fn client(&self, rt: &tokio::runtime::Runtime) -> AgentClient {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match rt.block_on(connect(&ClientOptions::new(&self.url))) {
                Ok(c) => return c,
                Err(e) => {
                    assert!(Instant::now() < deadline, "agent never served gRPC: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    fn sigkill(mut self) {
        let _ = Command::new("kill").args(["-KILL", &self.child.id().to_string()]).status();
        let status = self.child.wait().unwrap();
        assert!(!status.success(), "killed: {status}");
    }

    fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

#[test]
fn an_agent_killed_between_writing_and_reloading_leaves_nothing_claimed_and_the_repush_runs() {
    let rt = runtime();
    let (set, addrs) = on_loopback(fleet::example("two-offices"));
    let v1 = render(&set)["office-a"].clone();
    let v2 = render(&with_extra_phone(&set, "3050"))["office-a"].clone();
    let ast = ag::asterisk_for_agent("office-a", addrs["office-a"]);
    let dir = std::env::temp_dir().join(format!("ao-apply-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ami = rt.block_on(ag::observer(&ast));

    let agent = AgentProcess::start(&ast, &dir, None);
    let r = rt.block_on(agent.client(&rt).apply(bundle_to_proto(&v1))).unwrap().into_inner();
    assert!(r.ok && !r.unchanged, "{r:?}");
    agent.stop();

    // v2 with the fault: written (journal first), then the agent holds before reloading and is
    // SIGKILLed there.
    let agent = AgentProcess::start(&ast, &dir, Some("hold-before-reload"));
    let mut c = agent.client(&rt);
    let v2_proto = bundle_to_proto(&v2);
    let pending = rt.spawn(async move { c.apply(v2_proto).await });
    let pjsip = ast.etc_dir().join(PJSIP_FILE);
    let journal = ast.etc_dir().join(".asterisk-operator-applied.json.journal");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(std::fs::read_to_string(&pjsip).unwrap_or_default().contains("[3050]") && journal.exists()) {
        assert!(Instant::now() < deadline, "the agent never wrote v2");
        std::thread::sleep(Duration::from_millis(20));
    }
    agent.sigkill();
    assert!(rt.block_on(pending).unwrap().is_err(), "the killed agent answered");
    assert!(!endpoints(&rt, &ami).contains("3050"), "Asterisk was reloaded before the kill");

    // Restarted: the interrupted apply is rolled back on disk; the same bundle again is applied
    // for real (not "unchanged"), and Asterisk runs it.
    let agent = AgentProcess::start(&ast, &dir, None);
    let mut c = agent.client(&rt);
    assert!(!journal.exists(), "journal left after the start");
    assert_eq!(std::fs::read_to_string(&pjsip).unwrap(), v1.files[PJSIP_FILE], "v1 restored on disk");
    let r = rt.block_on(c.apply(bundle_to_proto(&v2))).unwrap().into_inner();
    assert!(r.ok && !r.unchanged, "{r:?}");
    assert!(r.reloaded_modules.contains(&"res_pjsip.so".to_owned()), "{r:?}");
    assert!(endpoints(&rt, &ami).contains("3050"), "Asterisk does not run v2");
    let r = rt.block_on(c.apply(bundle_to_proto(&v2))).unwrap().into_inner();
    assert!(r.ok && r.unchanged, "{r:?}");
    agent.stop();
    rt.block_on(ami.close());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_forward_iax2_load_failure_rolls_back_to_a_loaded_chan_iax2_with_the_old_peers() {
    let rt = runtime();
    let (mut set, addrs) = on_loopback(fleet::example("two-offices"));
    let v1 = render(&set)["office-a"].clone();
    let ast = ag::asterisk_for_agent("office-a", addrs["office-a"]);
    let agent = ag::start(&rt, ag::options(&ast));
    let mut c = client(&rt, &agent);
    let ami = rt.block_on(ag::observer(&ast));
    let r = apply(&rt, &mut c, &v1);
    assert!(r.ok, "{r:?}");
    assert!(iax_peers(&rt, &ami).contains("a-b-iax"));

    // v2 moves the IAX2 listener to an address this machine does not have: chan_iax2 is
    // unloaded and loaded, and the load cannot bind its listener ("Unable to create network
    // socket"): a chan_iax2 without a listener is a failed load.
    let node = set.nodes.iter_mut().find(|n| n.metadata.name.as_deref() == Some("office-a")).unwrap();
    node.spec.iax.bind = Some("192.0.2.77".into());
    let v2 = render(&set)["office-a"].clone();
    let r = apply(&rt, &mut c, &v2);
    assert!(!r.ok, "{r:?}");
    let err = r.error.clone().unwrap();
    assert_eq!(err.file, IAX_FILE, "{err:?}");
    assert!(err.message.contains("without its listener") && err.message.contains("192.0.2.77"), "{err:?}");
    assert!(r.rolled_back, "the rollback restored and loaded chan_iax2: {r:?}");
    assert_eq!(r.reloaded_modules, ["chan_iax2.so", "chan_iax2.so"], "{r:?}");
    assert_eq!(std::fs::read_to_string(ast.etc_dir().join(IAX_FILE)).unwrap(), v1.files[IAX_FILE]);
    assert!(module_loaded(&rt, &ami, "chan_iax2.so"), "chan_iax2 left unloaded");
    assert!(iax_peers(&rt, &ami).contains("a-b-iax"), "old peers not back");
    // ... and listening on its old address again.
    assert!(
        ast.rx("iax2 show netstats").contains("Packets")
            || ast.rx("module show like chan_iax2").contains("Running")
    );
    let status = rt.block_on(c.status(StatusRequest {})).unwrap().into_inner();
    assert_eq!(status.applied_hash, v1.hash);
    rt.block_on(ami.close());
    rt.block_on(agent.shutdown());
}

#[test]
fn a_file_the_agent_cannot_read_stops_the_apply_and_is_left_alone() {
    let rt = runtime();
    let (set, addrs) = on_loopback(fleet::example("two-offices"));
    let v1 = render(&set)["office-a"].clone();
    let ast = ag::asterisk_for_agent("office-a", addrs["office-a"]);
    // A folder where the dialplan file goes: reading it fails (EISDIR). The agent runs as root
    // here, so a permission bit cannot make a file unreadable; this is the same error path.
    let blocked = ast.etc_dir().join(EXTENSIONS_FILE);
    std::fs::create_dir_all(blocked.join("keep")).unwrap();
    let agent = ag::start(&rt, ag::options(&ast));
    let mut c = client(&rt, &agent);
    let r = apply(&rt, &mut c, &v1);
    assert!(!r.ok && !r.rolled_back, "{r:?}");
    let err = r.error.clone().unwrap();
    assert_eq!(err.file, EXTENSIONS_FILE, "{err:?}");
    assert!(err.message.contains("cannot read") && err.message.contains("leaves it alone"), "{err:?}");
    assert!(r.changed_files.is_empty() && r.reloaded_modules.is_empty(), "{r:?}");
    assert!(blocked.join("keep").is_dir(), "the unreadable entry was touched");
    assert!(!ast.etc_dir().join(PJSIP_FILE).exists(), "nothing is written when one file is unreadable");
    std::fs::remove_dir_all(&blocked).unwrap();
    let r = apply(&rt, &mut c, &v1);
    assert!(r.ok, "{r:?}");
    rt.block_on(agent.shutdown());
}

#[test]
fn a_sip_transport_change_answers_restart_required_until_asterisk_restarts() {
    let rt = runtime();
    let (mut set, addrs) = on_loopback(fleet::example("two-offices"));
    let v1 = render(&set)["office-a"].clone();
    let mut ast = ag::asterisk_for_agent("office-a", addrs["office-a"]);
    let agent = ag::start(&rt, ag::options(&ast));
    let mut c = client(&rt, &agent);
    assert!(apply(&rt, &mut c, &v1).ok);
    let addr = addrs["office-a"];
    assert!(ast.rx("pjsip show transports").contains(&format!("{addr}:5060")));

    let node = set.nodes.iter_mut().find(|n| n.metadata.name.as_deref() == Some("office-a")).unwrap();
    node.spec.sip.port = 5070;
    let v2 = render(&set)["office-a"].clone();
    let r = apply(&rt, &mut c, &v2);
    assert!(!r.ok && !r.rolled_back, "{r:?}");
    assert!(r.restart_required.contains(&format!("{addr}:5060 -> {addr}:5070")), "{r:?}");
    assert!(r.restart_required.contains("restart Asterisk"), "{r:?}");
    assert_eq!(r.error.clone().unwrap().file, PJSIP_FILE);
    // Asterisk indeed kept the old transport: the agent did not claim what is not so.
    let transports = ast.rx("pjsip show transports");
    assert!(transports.contains(&format!("{addr}:5060")) && !transports.contains(":5070"), "{transports}");
    // The same bundle again: the same answer, nothing reloaded; the status says it too.
    let again = apply(&rt, &mut c, &v2);
    assert!(!again.ok && again.restart_required == r.restart_required && again.reloaded_modules.is_empty());
    let status = rt.block_on(c.status(StatusRequest {})).unwrap().into_inner();
    assert_eq!(status.restart_required, r.restart_required);

    // After Asterisk restarts (with the files on disk) the bundle is in force and verified.
    ast.stop();
    std::thread::sleep(Duration::from_millis(2500)); // the start time must differ by seconds
    ast.boot();
    let deadline = Instant::now() + Duration::from_secs(20);
    let r = loop {
        let r = apply(&rt, &mut c, &v2);
        if r.ok || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(r.ok && r.restart_required.is_empty(), "{r:?}");
    assert!(ast.rx("pjsip show transports").contains(&format!("{addr}:5070")));
    let status = rt.block_on(c.status(StatusRequest {})).unwrap().into_inner();
    assert!(status.restart_required.is_empty(), "{status:?}");
    rt.block_on(agent.shutdown());
}

#[test]
fn an_iax_conf_that_includes_the_file_before_general_is_named_as_the_cause() {
    let rt = runtime();
    let (set, addrs) = on_loopback(fleet::example("two-offices"));
    let v1 = render(&set)["office-a"].clone();
    let ast = Asterisk::builder("office-a")
        .addr(addrs["office-a"])
        .operator_main_files()
        .file("iax.conf", "#tryinclude iax_operator.conf\n\n[general]\ndisallow=all\nallow=ulaw\n")
        .file("manager.conf", ag::manager_conf(addrs["office-a"]))
        .start();
    let agent = ag::start(&rt, ag::options(&ast));
    let mut c = client(&rt, &agent);
    let r = apply(&rt, &mut c, &v1);
    assert!(!r.ok, "{r:?}");
    let err = r.error.clone().unwrap();
    assert_eq!(err.file, IAX_FILE, "{err:?}");
    assert!(err.message.contains("a-b-iax"), "{err:?}");
    assert!(
        err.message
            .contains("iax.conf has no [general] section before its `#tryinclude iax_operator.conf` line")
            && err
                .message
                .contains("put `#tryinclude iax_operator.conf` at the end of iax.conf, after [general]"),
        "{err:?}"
    );
    rt.block_on(agent.shutdown());
}

#[test]
fn a_stalled_asterisk_fails_the_apply_within_its_timeout_and_the_agent_stays_healthy() {
    let rt = runtime();
    let (mut set, addrs) = on_loopback(fleet::example("two-offices"));
    let v1 = render(&set)["office-a"].clone();
    let ast = ag::asterisk_for_agent("office-a", addrs["office-a"]);
    let mut opts = ag::options(&ast);
    opts.ami.action_timeout = Duration::from_secs(2);
    let agent = ag::start(&rt, opts);
    let mut c = client(&rt, &agent);
    assert!(apply(&rt, &mut c, &v1).ok);

    // SIGSTOP: the kernel still accepts and buffers, nothing answers. That is a hung Asterisk.
    let pid = ast.pid().unwrap().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let phone = set.phones.iter_mut().find(|p| p.spec.extension == "3002").unwrap();
    phone.spec.display_name = Some("Stalled".into());
    let v2 = render(&set)["office-a"].clone();
    let t = Instant::now();
    let r = apply(&rt, &mut c, &v2);
    let took = t.elapsed();
    assert!(!r.ok, "{r:?}");
    // Reload (2 s) then the rollback's reload (2 s, or at once once the keepalive dropped the
    // connection): bounded, nowhere near "forever".
    assert!(took < Duration::from_secs(12), "the apply took {took:?}");
    let err = r.error.clone().unwrap();
    assert!(err.message.contains("no answer within") || err.message.contains("not connected"), "{err:?}");
    assert!(!r.rolled_back, "a rollback Asterisk never confirmed is not claimed: {r:?}");
    assert!(err.message.contains("rollback incomplete"), "{err:?}");
    // The agent itself is fine: it answers at once, and says why it is not ready.
    let t = Instant::now();
    let (code, body) = get(agent.http_addr, "/healthz");
    assert_eq!(code, 503, "{body}");
    assert!(t.elapsed() < Duration::from_secs(3), "healthz took {:?}", t.elapsed());
    let status = rt.block_on(c.status(StatusRequest {})).unwrap().into_inner();
    assert!(!status.ready, "{status:?}");

    // Asterisk resumes: the agent reconnects and the same bundle is applied and verified.
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let r = loop {
        let r = apply(&rt, &mut c, &v2);
        if r.ok || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(r.ok && !r.unchanged, "{r:?}");
    assert!(ast.rx("pjsip show endpoint 3002").contains("Stalled"));
    rt.block_on(agent.shutdown());
}

#[test]
fn a_bundle_larger_than_four_mib_reaches_the_agent() {
    let rt = runtime();
    // No Asterisk needed: the whole message has to arrive before anything can be said about it.
    let mut opts = ag::options_for_addr("office-a", support::asterisk::fresh_address());
    opts.ami.addr = "127.0.0.1:9".into();
    let agent = ag::start(&rt, opts);
    let mut c = client(&rt, &agent);
    let mut phones = String::new();
    for i in 0..60_000 {
        phones.push_str(&format!(
            "[{i}]\ntype=endpoint\ncontext=operator-local\naors={i}\nauth={i}-auth\ncallerid=\"Desk {i}\" <{i}>\n\n"
        ));
    }
    assert!(phones.len() > 5 * 1024 * 1024, "{}", phones.len());
    let files = BTreeMap::from([(PJSIP_FILE.to_owned(), phones)]);
    let big = Bundle::new("office-z", files, Default::default());
    // Refused for its node, which the agent can only tell from the decoded message (tonic's
    // default limit answered "message length too large" before reading it).
    let refused = rt.block_on(c.apply(bundle_to_proto(&big))).expect_err("another node's bundle");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("not default/office-z"), "{refused:?}");
    rt.block_on(agent.shutdown());
}

#[test]
fn the_first_apply_on_a_pbx_already_listening_there_reloads_chan_iax2_without_unloading_it() {
    let rt = runtime();
    // Adopting a running PBX: its iax.conf binds the default 0.0.0.0:4569 and the node renders
    // no `iax.bind` on port 4569 — the same listener, so IAX2 calls would stay up.
    let (mut set, addrs) = on_loopback(fleet::example("two-offices"));
    let node = set.nodes.iter_mut().find(|n| n.metadata.name.as_deref() == Some("office-a")).unwrap();
    node.spec.iax.bind = None;
    let v1 = render(&set)["office-a"].clone();
    let ast = ag::asterisk_for_agent("office-a", addrs["office-a"]);
    let binds = |log: &str| log.lines().filter(|l| l.contains("Binding IAX2 to")).count();
    let before = binds(&ast.log());
    assert_eq!(before, 1, "{}", ast.log());
    let agent = ag::start(&rt, ag::options(&ast));
    let mut c = client(&rt, &agent);
    let r = apply(&rt, &mut c, &v1);
    assert!(r.ok, "{r:?}");
    assert!(r.reloaded_modules.contains(&"chan_iax2.so".to_owned()), "{r:?}");
    let ami = rt.block_on(ag::observer(&ast));
    assert!(iax_peers(&rt, &ami).contains("a-b-iax"), "peers loaded by the reload");
    assert_eq!(binds(&ast.log()), before, "chan_iax2 was unloaded and loaded:\n{}", ast.log());
    rt.block_on(ami.close());
    rt.block_on(agent.shutdown());
}
