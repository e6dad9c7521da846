//! `asterisk-operator ami` as a person debugging a server runs it, against a real Asterisk 22.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::asterisk::Asterisk;

fn ami(asterisk: &Asterisk, secret: &str) -> Command {
    let secret_file = asterisk.host_dir().join(format!("secret-{secret}"));
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_asterisk-operator"));
    cmd.args(["ami", "--addr", &asterisk.ami_addr().to_string(), "--user", "admin", "--secret-file"])
        .arg(secret_file);
    cmd
}

#[test]
fn actions_print_json_and_a_wrong_secret_fails_clearly() {
    let asterisk = Asterisk::builder("ami-cli").start();

    let ping = ami(&asterisk, "secret").args(["action", "Ping"]).output().unwrap();
    assert!(ping.status.success(), "{}", String::from_utf8_lossy(&ping.stderr));
    let reply: serde_json::Value = serde_json::from_slice(&ping.stdout).expect("JSON on stdout");
    assert_eq!(reply["response"]["Response"], "Success", "{reply}");
    assert_eq!(reply["response"]["Ping"], "Pong", "{reply}");

    let cmd =
        ami(&asterisk, "secret").args(["action", "Command", "Command=core show version"]).output().unwrap();
    assert!(cmd.status.success());
    assert!(
        String::from_utf8_lossy(&cmd.stdout).contains("Asterisk 22"),
        "{}",
        String::from_utf8_lossy(&cmd.stdout)
    );

    let list = ami(&asterisk, "secret").args(["action", "CoreShowChannels"]).output().unwrap();
    assert!(list.status.success());
    let reply: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert!(reply["events"].is_array(), "event lists are printed: {reply}");

    let wrong = ami(&asterisk, "not-the-secret").args(["action", "Ping"]).output().unwrap();
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.to_lowercase().contains("auth"), "{stderr}");
    assert!(
        !stderr.contains("not-the-secret")
            && !String::from_utf8_lossy(&wrong.stdout).contains("not-the-secret")
    );
}

#[test]
fn events_are_tailed_as_json_lines_with_a_filter() {
    let asterisk = Asterisk::builder("ami-events")
        .file("extensions_operator.conf", "[operator-local]\nexten => 4001,hint,Custom:office-b-4001\n")
        .start();
    let mut child = ami(&asterisk, "secret")
        .args(["events", "--filter", "Event=DeviceStateChange"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let reader = std::thread::spawn(move || lines.next().map(|l| l.unwrap()));
    // Change the state until the tail (which needs a moment to log in) prints the event.
    let deadline = Instant::now() + Duration::from_secs(15);
    let states = ["INUSE", "NOT_INUSE"];
    let mut i = 0;
    while !reader.is_finished() {
        assert!(Instant::now() < deadline, "no event line within 15 s");
        asterisk.rx(&format!("devstate change Custom:office-b-4001 {}", states[i % 2]));
        i += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    let line = reader.join().unwrap().expect("one line");
    child.kill().unwrap();
    let _ = child.wait();
    let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(event["Event"], "DeviceStateChange", "{event}");
    assert_eq!(event["Device"], "Custom:office-b-4001", "{event}");
}
