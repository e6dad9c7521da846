//! The AMI client against a real Asterisk 22 from the test-bed (`testbed/README.md`).
//! These tests FAIL, with a message naming `testbed/setup.sh`, when the test-bed is missing.

mod support;

use std::sync::Arc;
use std::time::Duration;

use asterisk_operator::ami::actions::{self, Setvar};
use asterisk_operator::ami::{
    AmiError, AuthMethod, ConnectionState, DeviceState, Event, EventStream, ExtensionState, Session,
    SessionConfig,
};
use asterisk_operator::secret::SecretValue;
use support::asterisk::Asterisk;

const OPERATOR_EXTENSIONS: &str = "\
[operator-hints]
exten => 4001,hint,Custom:office-b-4001
exten => 4002,hint,Custom:office-b-4002
";

const OPERATOR_PJSIP: &str = "\
[1001]
type = endpoint
context = default
disallow = all
allow = ulaw
auth = 1001
aors = 1001

[1001]
type = auth
auth_type = userpass
username = 1001
password = pw1001

[1001]
type = aor
max_contacts = 1

[1002]
type = endpoint
context = default
aors = 1002

[1002]
type = aor
";

fn node(name: &str) -> Asterisk {
    Asterisk::builder(name)
        .file("extensions_operator.conf", OPERATOR_EXTENSIONS)
        .file("pjsip_operator.conf", OPERATOR_PJSIP)
        .start()
}

fn config(a: &Asterisk, secret: &str) -> SessionConfig {
    let mut c = SessionConfig::new(a.ami_addr().to_string(), "admin", SecretValue::new(secret));
    c.action_timeout = Duration::from_secs(5);
    c.backoff_initial = Duration::from_millis(100);
    c.backoff_max = Duration::from_secs(1);
    c
}

/// Wait until every predicate has matched some event (any order; other events are skipped).
async fn expect_all(ev: &mut EventStream, what: &str, preds: &[&dyn Fn(&Event) -> bool]) {
    let mut seen = vec![false; preds.len()];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.iter().any(|s| !s) {
        match tokio::time::timeout_at(deadline, ev.recv()).await {
            Ok(Some(e)) => {
                for (i, p) in preds.iter().enumerate() {
                    seen[i] |= p(&e);
                }
            }
            Ok(None) => panic!("event stream closed while waiting for {what}"),
            Err(_) => panic!("not all of {what} within 10 s: seen {seen:?}"),
        }
    }
}

/// Wait for the first event matching `pred` (other events are skipped).
async fn expect_event(ev: &mut EventStream, what: &str, pred: impl Fn(&Event) -> bool) -> Arc<Event> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, ev.recv()).await {
            Ok(Some(e)) if pred(&e) => return e,
            Ok(Some(_)) => {}
            Ok(None) => panic!("event stream closed while waiting for {what}"),
            Err(_) => panic!("no {what} event within 10 s"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_actions_lists_devstate_events_and_reload_on_real_asterisk() {
    let ast = node("amia");

    // Wrong secret: a clear authentication error (Asterisk closes the connection after it).
    let e = Session::connect(config(&ast, "wrong")).await.unwrap_err();
    assert!(matches!(&e, AmiError::AuthFailed { message, .. } if message == "Authentication failed"), "{e}");

    // MD5 challenge login works too.
    let mut md5 = config(&ast, "secret");
    md5.auth = AuthMethod::Md5;
    let s = Session::connect(md5).await.unwrap();
    s.call(&actions::Ping).await.unwrap();
    s.close().await;

    let s = Session::spawn(config(&ast, "secret"));
    let mut ev = s.events();
    s.wait_connected(Duration::from_secs(10)).await.unwrap();
    expect_event(&mut ev, "FullyBooted", |e| matches!(e, Event::FullyBooted(_))).await;

    let settings = s.call(&actions::CoreSettings).await.unwrap();
    assert!(settings.asterisk_version.starts_with("22."), "{settings:?}");
    assert_eq!(settings.ami_version, "11.0.0");
    let status = s.call(&actions::CoreStatus).await.unwrap();
    assert_eq!(status.current_calls, 0);

    // Command: output lines, and an unknown command is an error carrying Asterisk's text.
    let out = s.call(&actions::Command("core show version".into())).await.unwrap();
    assert!(out[0].starts_with("Asterisk 22."), "{out:?}");
    let hints = s.call(&actions::Command("core show hints".into())).await.unwrap();
    assert!(hints.iter().any(|l| l.starts_with("4001@operator-hints")), "{hints:?}");
    let e = s.call(&actions::Command("no such cli command".into())).await.unwrap_err().to_string();
    assert!(e.contains("Command") && e.contains("No such command"), "{e}");

    // Setvar on a Custom device state: DeviceStateChange and ExtensionStatus follow (either order).
    s.call(&Setvar::device_state("Custom:office-b-4001", DeviceState::InUse)).await.unwrap();
    expect_all(
        &mut ev,
        "DeviceStateChange + ExtensionStatus",
        &[
            &|e| matches!(e, Event::DeviceStateChange(d) if d.device == "Custom:office-b-4001" && d.state == Some(DeviceState::InUse)),
            &|e| {
                matches!(e, Event::ExtensionStatus(x) if x.exten == "4001" && x.context == "operator-hints"
                    && x.hint == "Custom:office-b-4001" && x.status == ExtensionState::InUse && x.status_text == "InUse")
            },
        ],
    )
    .await;
    let got = s.call(&actions::Getvar::device_state("Custom:office-b-4001")).await.unwrap();
    assert_eq!(got.as_deref(), Some("INUSE"));
    let st = s
        .call(&actions::ExtensionStateQuery { exten: "4001".into(), context: "operator-hints".into() })
        .await
        .unwrap();
    assert_eq!(st.status, ExtensionState::InUse);
    // Ringing maps to 8.
    s.call(&Setvar::device_state("Custom:office-b-4002", ExtensionState::Ringing.to_device_state()))
        .await
        .unwrap();
    expect_event(
        &mut ev,
        "ExtensionStatus 4002 ringing",
        |e| matches!(e, Event::ExtensionStatus(x) if x.exten == "4002" && x.status_code == 8),
    )
    .await;
    // UNKNOWN is refused with Asterisk's message.
    let e = s
        .call(&Setvar::device_state("Custom:office-b-4001", DeviceState::Unknown))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("Variable not set"), "{e}");

    // ExtensionStateList and DeviceStateList.
    let list = s.call(&actions::ExtensionStateList).await.unwrap();
    let mine: Vec<_> =
        list.iter().filter(|x| x.context == "operator-hints").map(|x| (x.exten.as_str(), x.status)).collect();
    assert_eq!(mine, [("4001", ExtensionState::InUse), ("4002", ExtensionState::Ringing)]);
    let devs = s.call(&actions::DeviceStateList).await.unwrap();
    assert!(
        devs.iter().any(|d| d.device == "Custom:office-b-4001" && d.state == Some(DeviceState::InUse)),
        "{devs:?}"
    );

    // PJSIPShowEndpoints lists the configured endpoints; contacts is a (here empty) list.
    let eps = s.call(&actions::PJSIPShowEndpoints).await.unwrap();
    let names: Vec<_> = eps.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["1001", "1002"]);
    assert_eq!(eps[0].aor, "1001");
    assert!(s.call(&actions::PJSIPShowContacts).await.unwrap().is_empty());
    assert!(s.call(&actions::PJSIPShowRegistrationsOutbound).await.unwrap().is_empty());
    assert!(s.call(&actions::IAXpeers).await.unwrap().is_empty());
    assert!(s.call(&actions::CoreShowChannels).await.unwrap().is_empty());

    // Reload res_pjsip.so: success and its Reload event with Status 0; an unknown module: error + 2.
    assert_eq!(s.call(&actions::Reload(Some("res_pjsip.so".into()))).await.unwrap(), "Module Reloaded");
    expect_event(
        &mut ev,
        "Reload res_pjsip.so",
        |e| matches!(e, Event::Reload(r) if r.module == "res_pjsip.so" && r.status == 0),
    )
    .await;
    let e = s.call(&actions::Reload(Some("nosuchmodule.so".into()))).await.unwrap_err().to_string();
    assert!(e.contains("No such module"), "{e}");
    expect_event(
        &mut ev,
        "Reload nosuchmodule.so",
        |e| matches!(e, Event::Reload(r) if r.module == "nosuchmodule.so" && r.status == 2),
    )
    .await;

    // Concurrent actions on the one connection.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.call(&Setvar { variable: format!("GLOBAL(AO_T{i})"), value: format!("v{i}"), channel: None })
                .await?;
            s.call(&actions::Getvar { variable: format!("GLOBAL(AO_T{i})"), channel: None }).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap().unwrap(), Some(format!("v{i}")));
    }

    let stats = s.stats();
    assert!(stats.events_by_type.get("Reload").copied().unwrap_or(0) >= 2, "{stats:?}");
    assert_eq!(stats.events_dropped, 0);
    s.close().await;
    assert_eq!(*s.state().borrow(), ConnectionState::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_survives_asterisk_stop_and_restart() {
    let mut ast = node("amib");
    let s = Session::spawn(config(&ast, "secret"));
    let mut ev = s.events();
    s.wait_connected(Duration::from_secs(10)).await.unwrap();
    s.call(&Setvar::device_state("Custom:office-b-4001", DeviceState::Busy)).await.unwrap();
    expect_event(
        &mut ev,
        "ExtensionStatus busy",
        |e| matches!(e, Event::ExtensionStatus(x) if x.exten == "4001" && x.status == ExtensionState::Busy),
    )
    .await;

    // Stop Asterisk under the open session.
    tokio::task::block_in_place(|| ast.stop());
    let mut st = s.state();
    tokio::time::timeout(
        Duration::from_secs(10),
        st.wait_for(|s| matches!(s, ConnectionState::Disconnected { .. })),
    )
    .await
    .expect("session notices Asterisk went away")
    .unwrap();
    let e = s.call(&actions::Ping).await.unwrap_err();
    assert!(e.is_transient(), "{e}");

    // Start it again: the session reconnects and logs in by itself, events flow again.
    tokio::task::block_in_place(|| ast.boot());
    s.wait_connected(Duration::from_secs(15)).await.unwrap();
    expect_event(&mut ev, "FullyBooted after restart", |e| matches!(e, Event::FullyBooted(_))).await;
    s.call(&Setvar::device_state("Custom:office-b-4001", DeviceState::InUse)).await.unwrap();
    expect_all(
        &mut ev,
        "DeviceStateChange + ExtensionStatus after restart",
        &[
            &|e| matches!(e, Event::DeviceStateChange(d) if d.device == "Custom:office-b-4001" && d.state == Some(DeviceState::InUse)),
            &|e| matches!(e, Event::ExtensionStatus(x) if x.exten == "4001" && x.status == ExtensionState::InUse),
        ],
    )
    .await;
    let stats = s.stats();
    assert!(stats.reconnects >= 1, "{stats:?}");
    assert_eq!(stats.auth_failures, 0);
    s.close().await;
}
