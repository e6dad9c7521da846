//! Session logic against an in-test fake AMI server: login, multiplexing, lists, timeouts, drops,
//! reconnect, keepalive, logoff, and the CLI. The real thing is in ami_asterisk.rs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use asterisk_operator::ami::actions::{self, md5_key};
use asterisk_operator::ami::cli::{AmiArgs, AmiCommand, run_to};
use asterisk_operator::ami::{
    Action, AmiError, AuthMethod, ConnectionState, Decoder, Event, EventMask, Frame, Message, Session,
    SessionConfig,
};
use asterisk_operator::secret::SecretValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

/// What the fake server does with one action: messages to send back, or close the connection.
enum Answer {
    Send(Vec<Message>),
    Nothing,
}

type Handler = dyn Fn(usize, &Message) -> Answer + Send + Sync;

struct Fake {
    addr: String,
    connections: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<Message>>>,
    push: broadcast::Sender<Vec<u8>>,
    kill: broadcast::Sender<()>,
}

fn resp(a: &Message, kv: &[(&str, &str)]) -> Message {
    let mut m = Message::from_headers(kv.iter().copied().take(1));
    if let Some(id) = a.action_id() {
        m.push_header("ActionID", id);
    }
    for (k, v) in &kv[1..] {
        m.push_header(k, v);
    }
    m
}

/// Plain login with secret "s3cret"; MD5 with challenge "12345"; Ping; Logoff; else `extra`.
fn standard(extra: impl Fn(usize, &Message) -> Answer + Send + Sync + 'static) -> Arc<Handler> {
    Arc::new(move |conn, a| match a.get("Action").unwrap_or("") {
        "Challenge" => Answer::Send(vec![resp(a, &[("Response", "Success"), ("Challenge", "12345")])]),
        "Login" => {
            let ok = a.get("Secret") == Some("s3cret")
                || a.get("Key") == Some(md5_key("12345", &SecretValue::new("s3cret")).as_str());
            if ok {
                let mut v = vec![resp(a, &[("Response", "Success"), ("Message", "Authentication accepted")])];
                // Like Asterisk: FullyBooted right after login, if events are on.
                if a.get("Events") != Some("off") {
                    v.push(Message::from_headers([
                        ("Event", "FullyBooted"),
                        ("Privilege", "system,all"),
                        ("Status", "Fully Booted"),
                    ]));
                }
                Answer::Send(v)
            } else {
                Answer::Send(vec![resp(a, &[("Response", "Error"), ("Message", "Authentication failed")])])
            }
        }
        "Ping" => {
            Answer::Send(vec![resp(a, &[("Response", "Success"), ("Ping", "Pong"), ("Timestamp", "1.5")])])
        }
        "Logoff" => {
            Answer::Send(vec![resp(a, &[("Response", "Goodbye"), ("Message", "Thanks for all the fish.")])])
        }
        _ => extra(conn, a),
    })
}

async fn fake(handler: Arc<Handler>) -> Fake {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let connections = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(Mutex::new(Vec::new()));
    let (push, _) = broadcast::channel::<Vec<u8>>(64);
    let (kill, _) = broadcast::channel::<()>(4);
    let f = Fake {
        addr,
        connections: connections.clone(),
        received: received.clone(),
        push: push.clone(),
        kill: kill.clone(),
    };
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { return };
            let n = connections.fetch_add(1, Ordering::SeqCst) + 1;
            let handler = handler.clone();
            let received = received.clone();
            let mut push = push.subscribe();
            let mut kill = kill.subscribe();
            tokio::spawn(async move {
                s.write_all(b"Asterisk Call Manager/11.0.0\r\n").await.unwrap();
                let mut d = Decoder::without_banner();
                let mut buf = vec![0u8; 4096];
                loop {
                    tokio::select! {
                        r = s.read(&mut buf) => {
                            let Ok(k) = r else { return };
                            if k == 0 { return; }
                            for f in d.decode(&buf[..k]) {
                                let Ok(Frame::Message(a)) = f else { continue };
                                received.lock().unwrap().push(a.clone());
                                match handler(n, &a) {
                                    Answer::Send(ms) => {
                                        for m in ms { s.write_all(&m.to_wire()).await.unwrap(); }
                                    }
                                    Answer::Nothing => {}
                                }
                            }
                        }
                        p = push.recv() => if let Ok(bytes) = p { let _ = s.write_all(&bytes).await; },
                        _ = kill.recv() => return,
                    }
                }
            });
        }
    });
    f
}

/// A writer the test can read while the command still writes to it.
#[derive(Clone, Default)]
struct SharedOut(Arc<Mutex<Vec<u8>>>);

impl SharedOut {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for SharedOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn config(addr: &str) -> SessionConfig {
    let mut c = SessionConfig::new(addr, "admin", SecretValue::new("s3cret"));
    c.action_timeout = Duration::from_secs(2);
    c.backoff_initial = Duration::from_millis(50);
    c.backoff_max = Duration::from_millis(400);
    c
}

#[tokio::test]
async fn login_ping_and_concurrent_actions_answered_out_of_order() {
    // Getvar answers are held back and released in reverse order when the 5th arrives.
    let held: Arc<Mutex<Vec<Message>>> = Arc::default();
    let h = held.clone();
    let f = fake(standard(move |_, a| {
        if a.get("Action") == Some("Getvar") {
            let mut h = h.lock().unwrap();
            h.push(resp(
                a,
                &[
                    ("Response", "Success"),
                    ("Variable", a.get("Variable").unwrap()),
                    ("Value", a.get("Variable").unwrap()),
                ],
            ));
            if h.len() == 5 {
                return Answer::Send(h.drain(..).rev().collect());
            }
            return Answer::Nothing;
        }
        Answer::Send(vec![resp(a, &[("Response", "Error"), ("Message", "nope")])])
    }))
    .await;
    let s = Session::connect(config(&f.addr)).await.unwrap();
    assert!(s.is_connected());
    let pong = s.call(&actions::Ping).await.unwrap();
    assert_eq!(pong.timestamp, Some(1.5));
    let mut tasks = Vec::new();
    for i in 0..5 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.call(&actions::Getvar { variable: format!("V{i}"), channel: None }).await.unwrap()
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap(), Some(format!("V{i}")));
    }
    let e = s.call(&actions::Reload(Some("res_pjsip.so".into()))).await.unwrap_err();
    assert!(
        matches!(&e, AmiError::Action { action, message } if action == "Reload" && message == "nope"),
        "{e}"
    );
    // The login carried the event mask, and the secret went only in the Login action.
    let rec = f.received.lock().unwrap().clone();
    assert_eq!(rec[0].get("Action"), Some("Login"));
    assert_eq!(rec[0].get("Events"), Some("on"));
    s.close().await;
    assert_eq!(*s.state().borrow(), ConnectionState::Closed);
    let rec = f.received.lock().unwrap().clone();
    assert_eq!(rec.last().unwrap().get("Action"), Some("Logoff"));
}

#[tokio::test]
async fn md5_login_never_sends_the_secret() {
    let f = fake(standard(|_, _| Answer::Nothing)).await;
    let mut c = config(&f.addr);
    c.auth = AuthMethod::Md5;
    let s = Session::connect(c).await.unwrap();
    s.call(&actions::Ping).await.unwrap();
    s.close().await;
    let rec = f.received.lock().unwrap().clone();
    assert_eq!(rec[0].get("Action"), Some("Challenge"));
    assert_eq!(rec[1].get("AuthType"), Some("MD5"));
    assert!(rec.iter().all(|m| m.get("Secret").is_none()));
}

#[tokio::test]
async fn list_action_collects_its_items_while_other_events_flow() {
    let f = fake(standard(|_, a| {
        if a.get("Action") == Some("ExtensionStateList") {
            let id = a.action_id().unwrap();
            let item = |e: &str, st: &str| {
                Message::from_headers([
                    ("Event", "ExtensionStatus"),
                    ("ActionID", id),
                    ("Exten", e),
                    ("Context", "lab"),
                    ("Hint", "Custom:x"),
                    ("Status", st),
                    ("StatusText", "x"),
                ])
            };
            return Answer::Send(vec![
                resp(
                    a,
                    &[
                        ("Response", "Success"),
                        ("EventList", "start"),
                        ("Message", "Extension Statuses will follow"),
                    ],
                ),
                item("1001", "0"),
                // An unrelated event in the middle of the list goes to the event stream.
                Message::from_headers([
                    ("Event", "DeviceStateChange"),
                    ("Device", "Custom:y"),
                    ("State", "BUSY"),
                ]),
                item("1002", "8"),
                Message::from_headers([
                    ("Event", "ExtensionStateListComplete"),
                    ("ActionID", id),
                    ("EventList", "Complete"),
                    ("ListItems", "2"),
                ]),
            ]);
        }
        Answer::Nothing
    }))
    .await;
    let s = Session::connect(config(&f.addr)).await.unwrap();
    let mut ev = s.events();
    let list = s.call(&actions::ExtensionStateList).await.unwrap();
    assert_eq!(
        list.iter().map(|x| (x.exten.as_str(), x.status_code)).collect::<Vec<_>>(),
        [("1001", 0), ("1002", 8)]
    );
    let e = tokio::time::timeout(Duration::from_secs(2), ev.recv()).await.unwrap().unwrap();
    let Event::DeviceStateChange(d) = &*e else { panic!("{e:?}") };
    assert_eq!((d.device.as_str(), d.state), ("Custom:y", Some(asterisk_operator::ami::DeviceState::Busy)));
    assert_eq!(s.stats().events_by_type.get("DeviceStateChange"), Some(&1));
    s.close().await;
}

#[tokio::test]
async fn timeout_of_one_action_leaves_the_session_usable() {
    let f = fake(standard(|_, _| Answer::Nothing)).await;
    let s = Session::connect(config(&f.addr)).await.unwrap();
    let t0 = Instant::now();
    let e = s.send_with_timeout(Action::new("Blackhole"), Duration::from_millis(200)).await.unwrap_err();
    assert!(matches!(&e, AmiError::Timeout { action, .. } if action == "Blackhole"), "{e}");
    assert!(e.to_string().contains("Blackhole"));
    assert!(t0.elapsed() < Duration::from_secs(1));
    s.call(&actions::Ping).await.unwrap();
    assert_eq!(s.stats().action_timeouts, 1);
    // Header injection is refused before anything is sent.
    let e = s.send(Action::new("Setvar").header("Value", "x\r\nAction: Logoff")).await.unwrap_err();
    assert!(matches!(e, AmiError::Encode(_)), "{e}");
    assert!(f.received.lock().unwrap().iter().all(|m| m.get("Action") != Some("Setvar")));
    s.close().await;
}

#[tokio::test]
async fn refused_login_is_reported_and_retried_with_backoff_not_hot_looped() {
    let f = fake(standard(|_, _| Answer::Nothing)).await;
    let mut c = config(&f.addr);
    c.secret = SecretValue::new("wrong");
    let e = Session::connect(c.clone()).await.unwrap_err();
    assert!(
        matches!(&e, AmiError::AuthFailed { user, message } if user == "admin" && message == "Authentication failed"),
        "{e}"
    );
    assert!(!e.to_string().contains("wrong"));

    let before = f.connections.load(Ordering::SeqCst);
    let s = Session::spawn(c);
    let mut st = s.state();
    let got = tokio::time::timeout(
        Duration::from_secs(2),
        st.wait_for(|s| matches!(s, ConnectionState::Disconnected { auth_failed: true, .. })),
    )
    .await
    .unwrap()
    .unwrap()
    .clone();
    assert!(
        matches!(got, ConnectionState::Disconnected { ref reason, .. } if reason.contains("Authentication failed"))
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let attempts = f.connections.load(Ordering::SeqCst) - before;
    // Backoff 50 ms doubling to 400 ms (with jitter): at most ~8 attempts in 1.2 s, never hundreds.
    assert!((2..=10).contains(&attempts), "{attempts} attempts");
    assert!(s.stats().auth_failures >= 2);
    // Actions while disconnected fail fast.
    let e = s.call(&actions::Ping).await.unwrap_err();
    assert!(matches!(e, AmiError::NotConnected { .. }), "{e}");
    s.close().await;
}

#[tokio::test]
async fn reconnects_relogs_in_and_events_flow_again() {
    let f = fake(standard(|_, _| Answer::Nothing)).await;
    let mut c = config(&f.addr);
    c.events = EventMask::classes(["system", "call"]);
    // The agent's pattern: spawn, subscribe, then wait (so no event of the first login is missed).
    let s = Session::spawn(c);
    let mut ev = s.events();
    s.wait_connected(Duration::from_secs(3)).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(2), ev.recv()).await.unwrap().unwrap();
    assert!(matches!(&*first, Event::FullyBooted(_)));
    // A pending action fails with Disconnected when the server goes away.
    let pending = {
        let s = s.clone();
        tokio::spawn(async move { s.send(Action::new("Blackhole")).await })
    };
    // Kill the connection only once the action is on the wire (waiting for it, not guessing).
    let sent = Instant::now();
    while !f.received.lock().unwrap().iter().any(|m| m.get("Action") == Some("Blackhole")) {
        assert!(sent.elapsed() < Duration::from_secs(3), "Blackhole never reached the server");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    f.kill.send(()).unwrap();
    let e = pending.await.unwrap().unwrap_err();
    assert!(matches!(e, AmiError::Disconnected { .. }), "{e}");
    s.wait_connected(Duration::from_secs(3)).await.unwrap();
    let again = tokio::time::timeout(Duration::from_secs(2), ev.recv()).await.unwrap().unwrap();
    assert!(matches!(&*again, Event::FullyBooted(_)));
    f.push
        .send(
            Message::from_headers([("Event", "Reload"), ("Module", "res_pjsip.so"), ("Status", "0")])
                .to_wire(),
        )
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(2), ev.recv()).await.unwrap().unwrap();
    assert!(matches!(&*r, Event::Reload(x) if x.module == "res_pjsip.so" && x.succeeded()));
    assert_eq!(s.stats().reconnects, 1);
    assert_eq!(f.connections.load(Ordering::SeqCst), 2);
    let logins: Vec<_> =
        f.received.lock().unwrap().iter().filter(|m| m.get("Action") == Some("Login")).cloned().collect();
    assert_eq!(logins.len(), 2);
    assert!(logins.iter().all(|l| l.get("Events") == Some("system,call")));
    s.close().await;
}

#[tokio::test]
async fn full_subscriber_buffer_drops_and_counts() {
    let f = fake(standard(|_, _| Answer::Nothing)).await;
    let mut c = config(&f.addr);
    c.events = EventMask::Off;
    let s = Session::connect(c).await.unwrap();
    let mut small = s.events_with_capacity(2);
    let mut big = s.events_with_capacity(100);
    let mut burst = Vec::new();
    for i in 0..10 {
        burst.extend(
            Message::from_headers([
                ("Event", "DeviceStateChange"),
                ("Device", &format!("Custom:{i}")),
                ("State", "INUSE"),
            ])
            .to_wire(),
        );
    }
    f.push.send(burst).unwrap();
    for _ in 0..10 {
        tokio::time::timeout(Duration::from_secs(2), big.recv()).await.unwrap().unwrap();
    }
    // The session is still responsive although `small` is not being read.
    s.call(&actions::Ping).await.unwrap();
    assert_eq!(small.dropped(), 8);
    assert_eq!(s.stats().events_dropped, 8);
    assert_eq!(s.stats().events_received, 10);
    let Event::DeviceStateChange(d) = &*small.recv().await.unwrap() else { panic!() };
    assert_eq!(d.device, "Custom:0");
    s.close().await;
}

#[tokio::test]
async fn keepalive_detects_a_silent_server_and_reconnects() {
    // The first connection swallows everything after login (including Pings).
    let f = fake(Arc::new(|conn, a| {
        let std = standard(|_, _| Answer::Nothing);
        if conn == 1 && a.get("Action") == Some("Ping") {
            return Answer::Nothing;
        }
        std(conn, a)
    }))
    .await;
    let mut c = config(&f.addr);
    c.keepalive = Some(Duration::from_millis(150));
    let s = Session::connect(c).await.unwrap();
    let mut st = s.state();
    tokio::time::timeout(
        Duration::from_secs(3),
        st.wait_for(
            |s| matches!(s, ConnectionState::Disconnected { reason, .. } if reason.contains("keepalive")),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    s.wait_connected(Duration::from_secs(3)).await.unwrap();
    assert_eq!(f.connections.load(Ordering::SeqCst), 2);
    s.call(&actions::Ping).await.unwrap();
    s.close().await;
}

#[tokio::test]
async fn cli_action_prints_json_and_events_filter() {
    let f = fake(standard(|_, a| {
        if a.get("Action") == Some("DeviceStateList") {
            let id = a.action_id().unwrap();
            return Answer::Send(vec![
                resp(a, &[("Response", "Success"), ("EventList", "start")]),
                Message::from_headers([
                    ("Event", "DeviceStateChange"),
                    ("ActionID", id),
                    ("Device", "Custom:a"),
                    ("State", "INUSE"),
                ]),
                Message::from_headers([
                    ("Event", "DeviceStateListComplete"),
                    ("ActionID", id),
                    ("EventList", "Complete"),
                    ("ListItems", "1"),
                ]),
            ]);
        }
        Answer::Nothing
    }))
    .await;
    let dir = std::env::temp_dir().join(format!("ami-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let args = |command| AmiArgs {
        addr: f.addr.clone(),
        user: "admin".into(),
        secret_file: secret.clone(),
        md5: false,
        timeout: 2.0,
        command,
    };

    let mut out = Vec::new();
    run_to(args(AmiCommand::Action { name: "Ping".into(), headers: vec![] }), &mut out, async {})
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["response"]["Ping"], "Pong");
    assert!(v.get("events").is_none());

    let mut out = Vec::new();
    run_to(args(AmiCommand::Action { name: "DeviceStateList".into(), headers: vec![] }), &mut out, async {})
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["events"][0]["Device"], "Custom:a");
    assert_eq!(v["complete"]["ListItems"], "1");

    let mut out = Vec::new();
    let e = run_to(
        args(AmiCommand::Action { name: "Setvar".into(), headers: vec!["novalue".into()] }),
        &mut out,
        async {},
    )
    .await
    .unwrap_err();
    assert!(matches!(e, AmiError::Usage(_)));

    let push = f.push.clone();
    let received = f.received.clone();
    let out = SharedOut::default();
    let written = out.clone();
    let stop = async move {
        // The events command's own login (the third Login this fake has seen) subscribes it.
        let start = Instant::now();
        while received.lock().unwrap().iter().filter(|m| m.get("Action") == Some("Login")).count() < 3 {
            assert!(start.elapsed() < Duration::from_secs(3), "the events command never logged in");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for (d, st) in [("Custom:a", "INUSE"), ("Custom:b", "BUSY")] {
            push.send(
                Message::from_headers([("Event", "DeviceStateChange"), ("Device", d), ("State", st)])
                    .to_wire(),
            )
            .unwrap();
        }
        push.send(Message::from_headers([("Event", "Reload"), ("Module", "x"), ("Status", "0")]).to_wire())
            .unwrap();
        // Stop once both matching events are printed (the Reload between them is filtered out).
        while written.text().lines().count() < 2 {
            assert!(start.elapsed() < Duration::from_secs(3), "events never printed: {}", written.text());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let events = AmiCommand::Events { filter: vec!["Event=devicestatechange".into()], mask: "on".into() };
    let mut sink = out.clone();
    run_to(args(events), &mut sink, stop).await.unwrap();
    let text = out.text();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[1]["State"], "BUSY");
    assert!(!text.contains("s3cret"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A peer that accepts, logs the session in, then never reads again (a hung Asterisk whose
/// socket buffers fill up): every caller gets its answer within its timeout, queueing included,
/// the stalled write drops the connection, and the session reconnects by itself.
#[tokio::test]
async fn a_peer_that_stops_reading_fails_every_call_within_its_timeout() {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(16).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let logins = Arc::new(AtomicUsize::new(0));
    let count = logins.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let n = count.fetch_add(1, Ordering::SeqCst);
            s.write_all(b"Asterisk Call Manager/11.0.0\r\n").await.unwrap();
            let mut d = Decoder::without_banner();
            let mut buf = vec![0u8; 4096];
            'login: loop {
                let k = s.read(&mut buf).await.unwrap();
                for f in d.decode(&buf[..k]) {
                    let Ok(Frame::Message(a)) = f else { continue };
                    if a.get("Action") == Some("Login") {
                        let ok = resp(&a, &[("Response", "Success"), ("Message", "Authentication accepted")]);
                        s.write_all(&ok.to_wire()).await.unwrap();
                        break 'login;
                    }
                }
            }
            if n == 0 {
                held.push(s); // the first connection: never read again
            } else {
                tokio::spawn(async move {
                    // Later connections answer Pings, like a recovered Asterisk.
                    let mut d = Decoder::without_banner();
                    let mut buf = vec![0u8; 4096];
                    loop {
                        let Ok(k) = s.read(&mut buf).await else { return };
                        if k == 0 {
                            return;
                        }
                        for f in d.decode(&buf[..k]) {
                            let Ok(Frame::Message(a)) = f else { continue };
                            let pong = resp(&a, &[("Response", "Success"), ("Ping", "Pong")]);
                            if s.write_all(&pong.to_wire()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        }
    });
    let mut c = config(&addr);
    c.action_timeout = Duration::from_millis(500);
    c.keepalive = None;
    let s = Session::connect(c).await.unwrap();
    // Far more than the socket buffers hold: the connection task's write blocks, the queue of
    // 256 fills, and later callers wait to enqueue.
    let big = "x".repeat(32 * 1024);
    let mut st = s.state();
    let stalled = tokio::spawn(async move {
        loop {
            if let ConnectionState::Disconnected { reason, .. } = &*st.borrow_and_update() {
                return reason.clone();
            }
            if st.changed().await.is_err() {
                return String::new();
            }
        }
    });
    let t0 = Instant::now();
    let mut calls = Vec::new();
    for i in 0..400 {
        let s = s.clone();
        let value = big.clone();
        calls.push(tokio::spawn(async move {
            let started = Instant::now();
            let r = s
                .send(Action::new("Setvar").header("Variable", format!("V{i}")).header("Value", value))
                .await;
            (r, started.elapsed())
        }));
    }
    for call in calls {
        let (r, took) = call.await.unwrap();
        let e = r.expect_err("nothing can answer");
        assert!(
            matches!(
                e,
                AmiError::Timeout { .. } | AmiError::Disconnected { .. } | AmiError::NotConnected { .. }
            ),
            "{e}"
        );
        assert!(took < Duration::from_millis(1500), "a call took {took:?} (timeout 500 ms)");
    }
    assert!(t0.elapsed() < Duration::from_secs(3), "all calls took {:?}", t0.elapsed());
    let reason =
        tokio::time::timeout(Duration::from_secs(3), stalled).await.expect("never disconnected").unwrap();
    assert!(reason.contains("write stalled"), "{reason}");
    s.wait_connected(Duration::from_secs(3)).await.unwrap();
    s.call(&actions::Ping).await.unwrap();
    assert!(logins.load(Ordering::SeqCst) >= 2);
    s.close().await;
}
