//! A resource's author chooses `spec.agent.endpoint`, so an endpoint must never be a way to
//! receive the controller's credentials or a bundle (which holds SIP and trunk secrets). Two
//! listeners this test owns stand in for someone else's: a plain TCP one behind an `http://`
//! endpoint, and a TLS one with its own certificate behind an `https://` endpoint. The
//! controller (`--manifests` mode, default settings) sends neither anything secret, and each
//! node's status says why without leaking anything either.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use asterisk_operator::controller::agent_policy::AgentPolicy;
use asterisk_operator::controller::manifests::{ManifestsController, ManifestsOptions};
use asterisk_operator::controller::status::ResourceStatus;
use asterisk_operator::topology::{Kind, ObjectRef};

/// Everything a listener received: connections and raw bytes.
#[derive(Default)]
struct Catch {
    connections: AtomicUsize,
    bytes: Mutex<Vec<u8>>,
}

/// A plain TCP listener that records whatever arrives.
fn plain_listener() -> (u16, Arc<Catch>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let catch = Arc::new(Catch::default());
    let c = catch.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            c.connections.fetch_add(1, Ordering::SeqCst);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                c.bytes.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        }
    });
    (port, catch)
}

/// A TLS listener with a certificate of its own (as anyone can make one, even for the agent's
/// name): records the raw bytes and whatever a completed handshake would let it decrypt.
fn tls_listener() -> (u16, Arc<Catch>, Arc<Mutex<Vec<u8>>>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let key = rcgen::KeyPair::generate().unwrap();
    let names = vec!["trap-tls.default.asterisk-agent".to_owned(), "127.0.0.1".to_owned()];
    let cert = rcgen::CertificateParams::new(names).unwrap().self_signed(&key).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let catch = Arc::new(Catch::default());
    let decrypted = Arc::new(Mutex::new(Vec::new()));
    let (c, d) = (catch.clone(), decrypted.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            c.connections.fetch_add(1, Ordering::SeqCst);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut buf = [0u8; 16384];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                c.bytes.lock().unwrap().extend_from_slice(&buf[..n]);
                if conn.read_tls(&mut &buf[..n]).is_err() || conn.process_new_packets().is_err() {
                    let _ = conn.write_tls(&mut stream);
                    break;
                }
                let mut plain = Vec::new();
                let _ = conn.reader().read_to_end(&mut plain);
                d.lock().unwrap().extend(plain);
                while conn.wants_write() {
                    if conn.write_tls(&mut stream).is_err() {
                        break;
                    }
                }
                let _ = stream.flush();
            }
        }
    });
    (port, catch, decrypted)
}

fn fleet(http_port: u16, tls_port: u16) -> String {
    format!(
        r#"apiVersion: asterisk.operator.dev/v1alpha1
kind: AsteriskNode
metadata: {{name: trap-http}}
spec:
  numbering: {{prefixes: ["3"], length: 4}}
  address: 192.0.2.10
  agent: {{endpoint: "http://127.0.0.1:{http_port}"}}
---
apiVersion: asterisk.operator.dev/v1alpha1
kind: AsteriskNode
metadata: {{name: trap-tls}}
spec:
  numbering: {{prefixes: ["4"], length: 4}}
  address: 192.0.2.11
  agent: {{endpoint: "https://127.0.0.1:{tls_port}"}}
---
apiVersion: asterisk.operator.dev/v1alpha1
kind: Trunk
metadata: {{name: a-b}}
spec: {{protocol: iax2, ends: [trap-http, trap-tls]}}
---
apiVersion: asterisk.operator.dev/v1alpha1
kind: Phone
metadata: {{name: desk-a}}
spec: {{node: trap-http, extension: "3001"}}
---
apiVersion: asterisk.operator.dev/v1alpha1
kind: Phone
metadata: {{name: desk-b}}
spec: {{node: trap-tls, extension: "4001"}}
"#
    )
}

fn condition(
    statuses: &BTreeMap<ObjectRef, ResourceStatus>,
    node: &str,
    type_: &str,
) -> (String, String, String) {
    let c = statuses[&ObjectRef::new(Kind::AsteriskNode, "default", node)]
        .conditions()
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap()
        .clone();
    (c.status, c.reason, c.message)
}

#[test]
fn an_endpoint_a_resource_names_receives_no_credential_and_no_bundle() {
    let (http_port, plain) = plain_listener();
    let (tls_port, tls, decrypted) = tls_listener();
    let work = std::env::temp_dir().join(format!("ao-endpoints-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("fleet.yaml"), fleet(http_port, tls_port)).unwrap();
    let secrets_file = work.join("secrets.yaml");
    let mut controller = ManifestsController::new(ManifestsOptions {
        inputs: vec![work.join("fleet.yaml")],
        status_file: work.join("status.yaml"),
        secrets_file: secrets_file.clone(),
        agents: AgentPolicy::default(),
    });
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let report = rt.block_on(controller.reconcile()).unwrap();
    assert_eq!(report.pushed.values().filter(|ok| **ok).count(), 0, "{:?}", report.pushed);
    std::thread::sleep(Duration::from_millis(300)); // let the listener threads record the end

    // Plain http: refused before connecting.
    assert_eq!(plain.connections.load(Ordering::SeqCst), 0, "the http endpoint was contacted");
    let (status, reason, message) = condition(controller.statuses(), "trap-http", "ConfigApplied");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "NoAgent"), "{message}");
    assert!(message.contains("plain http") && message.contains("https://"), "{message}");

    // TLS with a certificate that is not the node's pinned one: the handshake fails, nothing
    // is decrypted, and the raw bytes hold no secret (only the TLS hello).
    assert!(tls.connections.load(Ordering::SeqCst) >= 1, "the TLS endpoint was tried");
    assert!(decrypted.lock().unwrap().is_empty(), "application data reached a foreign TLS server");
    let (status, reason, message) = condition(controller.statuses(), "trap-tls", "ConfigApplied");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "AgentUnreachable"), "{message}");
    assert_eq!(condition(controller.statuses(), "trap-tls", "AgentConnected").0, "False");

    // No secret anywhere the listeners or the status could show it: not the node's agent
    // token, not a phone's or the trunk's password.
    let kept = std::fs::read_to_string(&secrets_file).unwrap();
    let secrets: Vec<String> = kept
        .lines()
        .filter_map(|l| l.split_once(": \""))
        .map(|(_, v)| v.trim_end_matches('"').to_owned())
        .filter(|v| v.len() >= 16 && !v.contains("BEGIN"))
        .collect();
    assert!(secrets.len() >= 5, "tokens, AMI secrets and passwords were generated: {kept}");
    let raw = [plain.bytes.lock().unwrap().clone(), tls.bytes.lock().unwrap().clone()].concat();
    let status_text = std::fs::read_to_string(work.join("status.yaml")).unwrap();
    for secret in &secrets {
        assert!(!raw.windows(secret.len()).any(|w| w == secret.as_bytes()), "a secret crossed to a listener");
        assert!(!status_text.contains(secret.as_str()), "a secret is in the status");
    }
    let raw_text = String::from_utf8_lossy(&raw);
    assert!(!raw_text.contains("pjsip") && !raw_text.contains("3001"), "bundle content crossed");
    std::fs::remove_dir_all(&work).unwrap();
}
