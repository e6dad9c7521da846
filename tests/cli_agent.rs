//! The `agent` process as systemd or the kubelet runs it: SIGTERM stops it promptly, even while
//! a client keeps its gRPC connection open.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use asterisk_operator::agent::proto::StatusRequest;
use asterisk_operator::agent::{ClientOptions, connect};

mod support;

#[test]
fn sigterm_stops_the_agent_even_with_a_client_connected() {
    let dir = std::env::temp_dir().join(format!("ao-cli-agent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(dir.join("ami-secret"), "AgentAmiSecret0\n").unwrap();
    // Its own loopback address, so no outgoing connection can take the ports first.
    let addr = support::asterisk::fresh_address();
    let (grpc, http) = (format!("{addr}:7443"), format!("{addr}:9090"));
    // No Asterisk: the agent keeps retrying AMI, and still serves and stops cleanly.
    let mut agent = Command::new(env!("CARGO_BIN_EXE_asterisk-operator"))
        .args(["agent", "--node", "office-a", "--insecure", "--ami-user", "x", "--ami-addr", "127.0.0.1:9"])
        .arg("--ami-secret-file")
        .arg(dir.join("ami-secret"))
        .arg("--config-dir")
        .arg(dir.join("etc"))
        .arg("--keys-dir")
        .arg(dir.join("keys"))
        .args(["--grpc-listen", &grpc, "--http-listen", &http])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut client = loop {
        match rt.block_on(connect(&ClientOptions::new(&format!("http://{grpc}")))) {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < deadline, "agent never served gRPC: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    let status = rt.block_on(client.status(StatusRequest {})).unwrap().into_inner();
    assert!(!status.ami_connected);

    // The client stays connected while the agent is told to stop.
    let sent = Instant::now();
    let _ = Command::new("kill").args(["-TERM", &agent.id().to_string()]).status();
    loop {
        if let Some(code) = agent.try_wait().unwrap() {
            assert!(code.success(), "clean exit: {code}");
            break;
        }
        assert!(sent.elapsed() < Duration::from_secs(12), "the agent did not stop within 12 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(client);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn insecure_serving_is_refused_off_loopback_with_a_clear_message() {
    for (flags, listen, says) in [
        (&["--insecure"][..], "--grpc-listen=0.0.0.0:0", "only on a loopback address, not 0.0.0.0:0"),
        (&["--plaintext", "--no-auth"][..], "--grpc-listen=192.0.2.1:7443", "only on a loopback address"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_asterisk-operator"))
            .args(["agent", "--node", "office-a", "--ami-user", "x", "--ami-addr", "127.0.0.1:9"])
            .arg("--ami-secret-file")
            .arg(std::env::current_exe().unwrap()) // any readable, non-empty file
            .args(flags)
            .arg(listen)
            .args(["--http-listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flags:?} {listen}: started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says) && err.contains("--tls-cert"), "{flags:?} {listen}: {err}");
    }
}
