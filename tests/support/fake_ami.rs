//! A small in-test AMI endpoint that behaves like Asterisk for what the mesh uses: Login, Ping,
//! Logoff, `Setvar DEVICE_STATE(…)` (remembered), ExtensionStateList (an event list of the hints
//! it holds) and ExtensionStatus events when a test changes a hint. For tests with more nodes
//! than real Asterisk instances fit on two cores.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use asterisk_operator::ami::{Decoder, ExtensionState, Frame, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

#[derive(Default)]
struct State {
    /// ext → (context, state)
    hints: BTreeMap<String, (String, ExtensionState)>,
    devices: HashMap<String, String>,
    setvars: u64,
}

/// One fake Asterisk.
#[derive(Clone)]
pub struct FakeAmi {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<Arc<Vec<u8>>>,
}

fn status_event(ext: &str, context: &str, s: ExtensionState, action_id: Option<&str>) -> Message {
    let mut m = Message::new();
    m.push_header("Event", "ExtensionStatus");
    if let Some(id) = action_id {
        m.push_header("ActionID", id);
    }
    m.push_header("Exten", ext);
    m.push_header("Context", context);
    m.push_header("Hint", &format!("Custom:fake-{ext}"));
    m.push_header("Status", &s.code().to_string());
    m.push_header("StatusText", s.text());
    m
}

fn response(a: &Message, headers: &[(&str, &str)]) -> Message {
    let mut m = Message::new();
    for (k, v) in headers {
        m.push_header(k, v);
    }
    if let Some(id) = a.get("ActionID") {
        m.push_header("ActionID", id);
    }
    m
}

impl FakeAmi {
    /// Listens on 127.0.0.1 (a free port).
    pub async fn start() -> FakeAmi {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (events, _) = broadcast::channel(1 << 16);
        let fake = FakeAmi { addr, state: Arc::default(), events };
        let f = fake.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                tokio::spawn(f.clone().serve(s));
            }
        });
        fake
    }

    async fn serve(self, s: tokio::net::TcpStream) {
        let _ = s.set_nodelay(true);
        let (mut rd, mut wr) = s.into_split();
        let mut events = self.events.subscribe();
        if wr.write_all(b"Asterisk Call Manager/11.0.0\r\n").await.is_err() {
            return;
        }
        let mut d = Decoder::without_banner();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            tokio::select! {
                r = rd.read(&mut buf) => {
                    let k = match r { Ok(0) | Err(_) => return, Ok(k) => k };
                    let mut out = Vec::new();
                    for f in d.decode(&buf[..k]) {
                        let Ok(Frame::Message(a)) = f else { continue };
                        for m in self.answer(&a) {
                            out.extend_from_slice(&m.to_wire());
                        }
                    }
                    if wr.write_all(&out).await.is_err() { return }
                }
                e = events.recv() => match e {
                    Ok(bytes) => if wr.write_all(&bytes).await.is_err() { return },
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                },
            }
        }
    }

    fn answer(&self, a: &Message) -> Vec<Message> {
        match a.get("Action").unwrap_or("") {
            "Login" => vec![response(a, &[("Response", "Success"), ("Message", "Authentication accepted")])],
            "Ping" => vec![response(a, &[("Response", "Success"), ("Ping", "Pong")])],
            "Logoff" => {
                vec![response(a, &[("Response", "Goodbye"), ("Message", "Thanks for all the fish.")])]
            }
            "Setvar" => {
                let var = a.get("Variable").unwrap_or("");
                let Some(dev) = var.strip_prefix("DEVICE_STATE(").and_then(|v| v.strip_suffix(')')) else {
                    return vec![response(a, &[("Response", "Error"), ("Message", "Variable not set")])];
                };
                let mut st = self.state.lock().unwrap();
                st.devices.insert(dev.to_owned(), a.get("Value").unwrap_or("").to_owned());
                st.setvars += 1;
                vec![response(a, &[("Response", "Success"), ("Message", "Variable Set")])]
            }
            "ExtensionStateList" => {
                let st = self.state.lock().unwrap();
                let id = a.get("ActionID");
                let mut v = vec![response(
                    a,
                    &[
                        ("Response", "Success"),
                        ("EventList", "start"),
                        ("Message", "Extension Statuses will follow"),
                    ],
                )];
                for (ext, (ctx, s)) in &st.hints {
                    v.push(status_event(ext, ctx, *s, id));
                }
                let n = st.hints.len().to_string();
                v.push(response(
                    a,
                    &[("Event", "ExtensionStateListComplete"), ("EventList", "Complete"), ("ListItems", &n)],
                ));
                v
            }
            _ => vec![response(a, &[("Response", "Error"), ("Message", "Invalid/unknown command")])],
        }
    }

    /// Sets a hint's state (a new hint appears in ExtensionStateList) and, when it changed,
    /// sends ExtensionStatus to every connection, as Asterisk does.
    pub fn set_hint(&self, ext: &str, context: &str, s: ExtensionState) {
        let mut st = self.state.lock().unwrap();
        let old = st.hints.insert(ext.to_owned(), (context.to_owned(), s));
        if old.is_some_and(|(_, o)| o == s) {
            return;
        }
        let _ = self.events.send(Arc::new(status_event(ext, context, s, None).to_wire()));
    }

    /// Many hint changes at once, sent as one write per connection.
    pub fn set_hints(&self, changes: &[(String, String, ExtensionState)]) {
        let mut st = self.state.lock().unwrap();
        let mut bytes = Vec::new();
        for (ext, ctx, s) in changes {
            let old = st.hints.insert(ext.clone(), (ctx.clone(), *s));
            if old.is_none_or(|(_, o)| o != *s) {
                bytes.extend_from_slice(&status_event(ext, ctx, *s, None).to_wire());
            }
        }
        let _ = self.events.send(Arc::new(bytes));
    }

    /// A device's value as last written by Setvar.
    pub fn device(&self, dev: &str) -> Option<String> {
        self.state.lock().unwrap().devices.get(dev).cloned()
    }

    /// Setvars answered so far.
    pub fn setvars(&self) -> u64 {
        self.state.lock().unwrap().setvars
    }

    /// Every written device with its value.
    pub fn devices(&self) -> HashMap<String, String> {
        self.state.lock().unwrap().devices.clone()
    }
}
