//! Desk phones fetch their files from a real agent beside a real Asterisk 22, with the real
//! clients of the test-bed: tftp-hpa (no options, like an old phone; netascii and octet),
//! atftp (blksize and tsize), curl over TFTP, HTTP and HTTPS. Every file arrives byte-identical
//! to the rendered one, whatever the case of the MAC in the name; unknown names (the CTL/ITL
//! files Cisco phones ask for first) are "not found"; HTTP without credentials is 401; a source
//! outside the node's allowed networks is refused; each fetch is counted and the phone's last
//! fetch reported; the files survive an agent restart; and none of it reloads Asterisk.
//!
//! Needs the test-bed: `bash testbed/setup.sh`.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use asterisk_operator::agent::RunningAgent;
use asterisk_operator::agent::proto::StatusRequest;
use asterisk_operator::crd::NodeProvisioning;
use asterisk_operator::render::{self, Bundle};
use asterisk_operator::topology::{self, ResourceSet};
use support::agent::{self as ag, apply, client, get, parse_metrics, value};
use support::asterisk::fresh_address;
use support::fleet::{self, on_loopback};
use support::provision::{self as pv, atftp, curl, http_code, tftp_hpa};

const NODE: &str = "branch";

/// The desk-phones example on loopback; the branch's phones reach it at its own address, and
/// only `allowed` may fetch without credentials.
fn fleet(allowed: Ipv4Addr) -> (ResourceSet, BTreeMap<String, Ipv4Addr>) {
    let (mut set, addrs) = on_loopback(fleet::example("desk-phones"));
    let branch = set.nodes.iter_mut().find(|n| n.metadata.name.as_deref() == Some(NODE)).unwrap();
    let settings = branch.spec.provisioning.get_or_insert_with(NodeProvisioning::default);
    settings.sip_server = Some(addrs[NODE].to_string());
    settings.allowed_networks = vec![format!("{allowed}/32")];
    (set, addrs)
}

fn render_branch(set: &ResourceSet) -> Bundle {
    let resolution = topology::resolve(set);
    assert_eq!(resolution.errors, vec![]);
    render::render(&resolution.topology, NODE).unwrap()
}

fn metrics(agent: &RunningAgent) -> BTreeMap<String, f64> {
    let (code, body) = get(agent.http_addr, "/metrics");
    assert_eq!(code, 200, "{body}");
    parse_metrics(&body)
}

fn fetches(m: &BTreeMap<String, f64>, vendor: &str, protocol: &str, result: &str) -> f64 {
    value(
        m,
        &format!(
            r#"asterisk_agent_provisioning_fetches_total{{vendor="{vendor}",protocol="{protocol}",result="{result}"}}"#
        ),
    )
}

fn reloads(m: &BTreeMap<String, f64>) -> f64 {
    m.iter().filter(|(k, _)| k.starts_with("asterisk_agent_reloads_total{")).map(|(_, v)| v).sum()
}

/// Asserts the client succeeded and fetched exactly `want`.
fn fetched(what: &str, out: std::process::Output, path: &Path, want: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let got = std::fs::read(path).unwrap_or_else(|e| panic!("{what}: no file: {e}"));
    assert!(
        got == want.as_bytes(),
        "{what}: {} bytes differ from the rendered {} bytes",
        got.len(),
        want.len()
    );
    std::fs::remove_file(path).unwrap();
}

/// `name` with the case of its letters swapped (MACs written the other way round).
fn other_case(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_uppercase() { c.to_ascii_lowercase() } else { c.to_ascii_uppercase() })
        .collect()
}

#[test]
fn real_clients_fetch_every_file_over_tftp_http_and_https() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // The tools connect from 127.0.0.1 (the kernel's source for loopback); that is the allowed
    // network. `outsider` is another loopback address curl sends from.
    let inside = Ipv4Addr::LOCALHOST;
    let outsider = fresh_address();
    let (set, addrs) = fleet(inside);
    let bundle = render_branch(&set);
    let files = bundle.provisioning.files.clone();
    assert_eq!(files.len(), 7, "{:?}", files.keys());
    let secrets = set.secrets.clone();
    let password =
        |phone: &str| secrets[&format!("phone-{phone}.provisioning")]["secret"].expose().to_owned();

    let addr = addrs[NODE];
    let asterisk = ag::asterisk_for_agent(NODE, addr);
    let work = std::env::temp_dir().join(format!("ao-provision-{}", std::process::id()));
    let tls = pv::tls_pair(&work.join("tls"), IpAddr::V4(addr));
    let opts = pv::serving(ag::options(&asterisk), addr, Some(tls.clone()));
    let snapshot = opts.node.provisioning_file.clone().unwrap();
    let agent = ag::start(&rt, opts.clone());
    let mut c = client(&rt, &agent);
    let result = apply(&rt, &mut c, &bundle);
    assert!(result.ok, "{result:?}");
    assert!(result.provisioning_changed.contains(&"provisioning.json".to_owned()), "{result:?}");
    assert!(asterisk.rx("pjsip show endpoints").contains(" 205/"), "the Asterisk part is in force too");
    // Nothing of the phones' files went where Asterisk reads its configuration.
    for entry in std::fs::read_dir(asterisk.etc_dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!files.keys().any(|f| f.eq_ignore_ascii_case(&name)), "{name} in the config folder");
    }
    let reloads_before = reloads(&metrics(&agent));

    let (tftp, http, https) =
        (agent.provision.tftp.unwrap(), agent.provision.http.unwrap(), agent.provision.https.unwrap());
    let out = work.join("fetched");
    std::fs::create_dir_all(&work).unwrap();

    for (name, contents) in &files {
        // tftp-hpa: no options; netascii (its default) and octet; the MAC in the other case.
        fetched(&format!("tftp-hpa netascii {name}"), tftp_hpa(tftp, name, "netascii", &out), &out, contents);
        let swapped = other_case(name);
        fetched(
            &format!("tftp-hpa octet {swapped}"),
            tftp_hpa(tftp, &swapped, "octet", &out),
            &out,
            contents,
        );
        // atftp with options: a block size smaller than some files, so several blocks travel.
        fetched(&format!("atftp {name}"), atftp(tftp, name, 512, &out), &out, contents);
        fetched(&format!("atftp {swapped}"), atftp(tftp, &swapped, 1428, &out), &out, contents);
        // curl over TFTP (sends tsize and blksize).
        let url = format!("tftp://{tftp}/{name}");
        fetched(&format!("curl {url}"), curl(&url, &out, &[]), &out, contents);
        // HTTP from the allowed network, no credentials.
        let url = format!("http://{http}/{swapped}");
        fetched(&format!("curl {url}"), curl(&url, &out, &["--fail"]), &out, contents);
        // HTTPS, verified against the agent's certificate.
        let url = format!("https://{https}/{name}");
        let cacert = tls.0.to_string_lossy().into_owned();
        fetched(&format!("curl {url}"), curl(&url, &out, &["--fail", "--cacert", &cacert]), &out, contents);
    }

    // Unknown names: "not found" quickly, over TFTP (curl exits 68 on TFTP error 1) and HTTP.
    let cisco = files.keys().find(|n| n.starts_with("SEP")).unwrap();
    let ctl = format!("CTL{}", cisco.trim_end_matches(".cnf.xml")) + ".tlv";
    let started = std::time::Instant::now();
    for name in [ctl.as_str(), "ITLFile.tlv", "../etc/passwd", "sip.ld"] {
        let o = curl(&format!("tftp://{tftp}/{name}"), &out, &[]);
        assert_eq!(o.status.code(), Some(68), "{name}: {}", String::from_utf8_lossy(&o.stderr));
        let o = tftp_hpa(tftp, name, "octet", &out);
        let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(said.contains("Error code 1: file not found"), "{name}: {said}");
        assert_eq!(http_code(&format!("http://{http}/{name}"), &[]), 404, "{name}");
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "not found took {:?}", started.elapsed());

    // From outside the allowed networks: TFTP refuses (curl exits 69: access violation),
    // HTTP(S) without credentials is 401, with the wrong password 401, with the phone's own
    // password its own file, and another phone's file "not found".
    let from_outside = ["--interface", &outsider.to_string()];
    let (snom, snom_text) = files.iter().find(|(n, _)| n.ends_with(".xml") && !n.starts_with("SEP")).unwrap();
    let o = curl(&format!("tftp://{tftp}/{snom}"), &out, &from_outside);
    assert_eq!(o.status.code(), Some(69), "TFTP from outside: {}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(http_code(&format!("http://{http}/{snom}"), &from_outside), 401);
    let wrong = ["--interface", &outsider.to_string(), "-u", "workshop:not-the-password"];
    assert_eq!(http_code(&format!("http://{http}/{snom}"), &wrong), 401);
    let own = format!("workshop:{}", password("workshop"));
    let with_own = ["--interface", &outsider.to_string(), "-u", &own, "--fail"];
    fetched(
        "HTTP with the phone's credentials",
        curl(&format!("http://{http}/{snom}"), &out, &with_own),
        &out,
        snom_text,
    );
    assert_eq!(http_code(&format!("http://{http}/{cisco}"), &with_own[..4]), 404, "another phone's file");
    assert_eq!(http_code(&format!("http://{http}/y000000000000.cfg"), &with_own[..4]), 200, "a common file");

    // Counted by vendor, protocol and result; the phones' last fetches reported; no reload.
    let m = metrics(&agent);
    assert!(fetches(&m, "cisco", "tftp", "ok") >= 10.0, "{m:?}");
    assert!(fetches(&m, "yealink", "https", "ok") >= 2.0);
    assert!(fetches(&m, "unknown", "tftp", "not_found") >= 8.0);
    assert_eq!(fetches(&m, "snom", "tftp", "forbidden"), 1.0);
    assert!(fetches(&m, "snom", "http", "unauthorized") >= 2.0);
    assert_eq!(value(&m, "asterisk_agent_provisioning_files"), 7.0);
    assert_eq!(reloads(&m), reloads_before, "serving files reloads nothing");
    let status = rt.block_on(c.status(StatusRequest {})).unwrap().into_inner();
    let workshop = status.provisioning_fetches.iter().find(|f| f.phone == "workshop").unwrap();
    assert_eq!(
        (workshop.source.as_str(), workshop.protocol.as_str()),
        (outsider.to_string().as_str(), "http")
    );
    assert!(workshop.user_agent.starts_with("curl/"), "{workshop:?}");
    assert_eq!(status.provisioning_fetches.len(), 5, "every phone fetched");

    // A restarted agent serves the same files before any bundle arrives.
    rt.block_on(agent.shutdown());
    let agent = ag::start(&rt, opts);
    let tftp = agent.provision.tftp.unwrap();
    fetched("TFTP after a restart", tftp_hpa(tftp, snom, "octet", &out), &out, snom_text);
    assert!(snapshot.is_file() && !snapshot.starts_with(asterisk.etc_dir()));
    rt.block_on(agent.shutdown());
    std::fs::remove_dir_all(&work).unwrap();
    let _ = std::fs::remove_file(&snapshot);
}

/// The TFTP shell with a stranger: a datagram from another port during a transfer is answered
/// "unknown transfer ID" and the transfer goes on; a write request is refused.
#[test]
fn transfers_ignore_strangers_and_writes_are_refused() {
    use asterisk_operator::provision::tftp::packet::{self, ErrorCode, Mode, Packet, Request};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (set, _) = fleet(Ipv4Addr::LOCALHOST);
        let bundle = render_branch(&set);
        let store =
            std::sync::Arc::new(asterisk_operator::provision::ProvisionStore::open(None, Default::default()));
        store.apply(&bundle.provisioning).unwrap();
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let opts = asterisk_operator::provision::ProvisionOptions {
            tftp: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
            ..Default::default()
        };
        let running = asterisk_operator::provision::start(&opts, store, stop).await.unwrap();
        let server = running.tftp.unwrap();
        let (name, contents) = bundle.provisioning.files.iter().max_by_key(|(_, c)| c.len()).unwrap();
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let rrq = Packet::Rrq(Request { filename: name.clone(), mode: Mode::Octet, options: vec![] });
        client.send_to(&rrq.encode(), server).await.unwrap();
        let mut buf = vec![0u8; 1024];
        let (len, tid) = client.recv_from(&mut buf).await.unwrap();
        assert_ne!(tid, server, "the transfer comes from its own port");
        let Packet::Data { block: 1, data: first } = packet::decode(&buf[..len]).unwrap() else {
            panic!("no DATA 1")
        };
        let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        stranger.send_to(&Packet::Ack { block: 1 }.encode(), tid).await.unwrap();
        let (len, _) = stranger.recv_from(&mut buf).await.unwrap();
        assert!(matches!(
            packet::decode(&buf[..len]).unwrap(),
            Packet::Error { code: ErrorCode::UnknownTransferId, .. }
        ));
        // The real client goes on as if nothing happened.
        let mut got = first;
        let mut block = 1u16;
        loop {
            client.send_to(&Packet::Ack { block }.encode(), tid).await.unwrap();
            if got.len() % 512 != 0 || got.len() < 512 * usize::from(block) {
                break;
            }
            let (len, from) = client.recv_from(&mut buf).await.unwrap();
            assert_eq!(from, tid);
            let Packet::Data { block: b, data } = packet::decode(&buf[..len]).unwrap() else {
                panic!("no DATA")
            };
            assert_eq!(b, block + 1);
            got.extend_from_slice(&data);
            block = b;
        }
        assert_eq!(got, contents.as_bytes());
        let wrq = Packet::Wrq(Request { filename: name.clone(), mode: Mode::Octet, options: vec![] });
        client.send_to(&wrq.encode(), server).await.unwrap();
        let (len, _) = client.recv_from(&mut buf).await.unwrap();
        assert!(matches!(
            packet::decode(&buf[..len]).unwrap(),
            Packet::Error { code: ErrorCode::AccessViolation, .. }
        ));
        stop_tx.send(true).unwrap();
        running.stopped(std::time::Duration::from_secs(2)).await;
    });
}
