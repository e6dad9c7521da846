//! The AMI session: one TCP connection to Asterisk, kept up by a background task.
//!
//! * Login (plain `Secret`, or MD5 via `Challenge`), with the session's event mask in `Events:`; the
//!   same login (and so the same mask) is repeated after every reconnect.
//! * Actions from any number of tasks are multiplexed on the one connection by ActionID, each with
//!   its own timeout; list actions complete when their `EventList: Complete` event arrives.
//! * Events go to every [`EventStream`] through a bounded buffer each. A full buffer drops the event
//!   for that subscriber and counts it ([`SessionStats::events_dropped`]); the reader never blocks,
//!   so responses keep flowing whatever subscribers do.
//! * A keepalive Ping; no answer before the next one means the connection is dead.
//! * Every write is bounded (by the action timeout; the keepalive's by its interval): a peer that
//!   accepts and stops reading makes the write fail, the connection count as lost and every
//!   waiting caller fail within its own timeout, queueing included.
//! * Reconnect with exponential backoff and jitter. A refused Login (Asterisk closes the connection
//!   after it) is reported as [`ConnectionState::Disconnected`] with `auth_failed` and backs off like
//!   any other failure: no hot loop.
//! * [`Session::close`] sends `Logoff` and waits for Asterisk's `Goodbye`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, timeout};

use super::actions::{self, TypedAction};
use super::codec::{Action, DecodeError, Decoder, Frame, Limits, Message};
use super::correlate::{Correlator, Expect, Reply, Routed};
use super::error::AmiError;
use super::events::Event;
use super::types::EventMask;
use crate::secret::SecretValue;

/// How to log in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AuthMethod {
    /// `Secret:` in the Login action (localhost).
    #[default]
    Plain,
    /// `Challenge` then `Key: md5(challenge + secret)`: the secret never crosses the wire.
    Md5,
}

#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// `host:port`, e.g. `127.0.0.1:5038`.
    pub addr: String,
    pub username: String,
    pub secret: SecretValue,
    pub auth: AuthMethod,
    /// Event classes to receive; sent with every Login.
    pub events: EventMask,
    /// Default per-action timeout (queueing, writing and the answer); also the longest a
    /// write may take before the connection counts as dead.
    pub action_timeout: Duration,
    /// TCP connect + banner + login.
    pub connect_timeout: Duration,
    /// Interval of the keepalive Ping (`None`: no keepalive).
    pub keepalive: Option<Duration>,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Buffered events per subscriber before dropping.
    pub event_buffer: usize,
    pub limits: Limits,
}

impl SessionConfig {
    pub fn new(addr: impl Into<String>, username: impl Into<String>, secret: SecretValue) -> Self {
        SessionConfig {
            addr: addr.into(),
            username: username.into(),
            secret,
            auth: AuthMethod::Plain,
            events: EventMask::On,
            action_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            keepalive: Some(Duration::from_secs(15)),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            event_buffer: 4096,
            limits: Limits::default(),
        }
    }
}

/// The connection as seen by metrics and `/readyz`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    Connecting {
        attempt: u32,
    },
    /// Logged in; `banner` is e.g. `Asterisk Call Manager/11.0.0`.
    Connected {
        banner: String,
    },
    /// Waiting to retry. `auth_failed`: Asterisk refused the login.
    Disconnected {
        reason: String,
        auth_failed: bool,
    },
    /// Closed by [`Session::close`] or because every handle was dropped.
    Closed,
}

impl ConnectionState {
    pub fn is_connected(&self) -> bool {
        matches!(self, ConnectionState::Connected { .. })
    }
}

/// Counters of a session (monotonic).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SessionStats {
    /// Successful logins after the first.
    pub reconnects: u64,
    /// Connection attempts that failed (connect, banner or login).
    pub connect_failures: u64,
    pub auth_failures: u64,
    pub actions_sent: u64,
    pub action_timeouts: u64,
    pub events_received: u64,
    /// Events a subscriber missed because its buffer was full.
    pub events_dropped: u64,
    /// Frames the decoder dropped (oversized).
    pub decode_errors: u64,
    pub events_by_type: HashMap<String, u64>,
}

#[derive(Default)]
struct Counters {
    reconnects: AtomicU64,
    connect_failures: AtomicU64,
    auth_failures: AtomicU64,
    actions_sent: AtomicU64,
    action_timeouts: AtomicU64,
    events_received: AtomicU64,
    events_dropped: AtomicU64,
    decode_errors: AtomicU64,
}

struct Subscriber {
    tx: mpsc::Sender<Arc<Event>>,
    dropped: Arc<AtomicU64>,
}

struct Shared {
    counters: Counters,
    by_type: Mutex<HashMap<String, u64>>,
    subscribers: Mutex<Vec<Subscriber>>,
    events: Mutex<EventMask>,
    next_id: AtomicU64,
    id_prefix: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn publish(&self, msg: Message) {
        self.counters.events_received.fetch_add(1, Ordering::Relaxed);
        {
            let mut by = lock(&self.by_type);
            let name = msg.event_name().unwrap_or("");
            match by.get_mut(name) {
                Some(n) => *n += 1,
                None => {
                    by.insert(name.to_owned(), 1);
                }
            }
        }
        let mut subs = lock(&self.subscribers);
        if subs.is_empty() {
            return;
        }
        let ev = Arc::new(Event::from_message(msg));
        subs.retain(|s| match s.tx.try_send(ev.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                s.dropped.fetch_add(1, Ordering::Relaxed);
                self.counters.events_dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }
}

/// A subscription to the session's events.
pub struct EventStream {
    rx: mpsc::Receiver<Arc<Event>>,
    dropped: Arc<AtomicU64>,
}

impl EventStream {
    /// The next event; `None` once the session is closed.
    pub async fn recv(&mut self) -> Option<Arc<Event>> {
        self.rx.recv().await
    }

    /// Events this subscriber missed because its buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

enum Cmd {
    Send { id: String, action: Action, reply: oneshot::Sender<Result<Reply, AmiError>> },
    Cancel(String),
    SetEvents(EventMask),
    Close(oneshot::Sender<()>),
}

enum Waiter {
    Caller { tx: oneshot::Sender<Result<Reply, AmiError>>, action: String },
    Keepalive,
    Logoff,
}

/// A handle on the session; clone it freely. The connection task ends when [`Session::close`] is
/// called or the last handle is dropped (with a Logoff either way).
#[derive(Clone)]
pub struct Session {
    cmd: mpsc::Sender<Cmd>,
    state: watch::Receiver<ConnectionState>,
    shared: Arc<Shared>,
    action_timeout: Duration,
    username: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("user", &self.username).field("state", &*self.state.borrow()).finish()
    }
}

impl Session {
    /// Start a session that keeps trying to connect in the background (the agent's mode: Asterisk
    /// may not be up yet). Watch [`Session::state`] to see it connect.
    pub fn spawn(config: SessionConfig) -> Session {
        Self::start(config, None, None).0
    }

    /// Like [`Session::spawn`], with an event subscription (buffer of `capacity`) made before the
    /// first connection, so no event can be missed, not even the `FullyBooted` Asterisk sends
    /// right after the login.
    pub fn spawn_subscribed(config: SessionConfig, capacity: usize) -> (Session, EventStream) {
        let (s, events) = Self::start(config, None, Some(capacity));
        (s, events.expect("subscribed before start"))
    }

    /// Connect and log in once, failing at once if that does not work (bad address, refused login).
    /// After that the session reconnects by itself like [`Session::spawn`].
    pub async fn connect(config: SessionConfig) -> Result<Session, AmiError> {
        let (tx, rx) = oneshot::channel();
        let s = Self::start(config, Some(tx), None).0;
        match rx.await {
            Ok(Ok(())) => Ok(s),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(AmiError::Closed),
        }
    }

    fn start(
        config: SessionConfig,
        first: Option<oneshot::Sender<Result<(), AmiError>>>,
        subscribe: Option<usize>,
    ) -> (Session, Option<EventStream>) {
        let (cmd_tx, cmd_rx) = mpsc::channel(256);
        let (state_tx, state_rx) = watch::channel(ConnectionState::Connecting { attempt: 1 });
        let id_prefix = format!("ao{:06x}", rand::rng().random_range(0..0x100_0000u32));
        let shared = Arc::new(Shared {
            counters: Counters::default(),
            by_type: Mutex::new(HashMap::new()),
            subscribers: Mutex::new(Vec::new()),
            events: Mutex::new(config.events.clone()),
            next_id: AtomicU64::new(1),
            id_prefix,
        });
        let s = Session {
            cmd: cmd_tx,
            state: state_rx,
            shared: shared.clone(),
            action_timeout: config.action_timeout,
            username: config.username.clone(),
        };
        let events = subscribe.map(|capacity| s.events_with_capacity(capacity));
        tokio::spawn(Driver { cfg: config, shared, cmd_rx, state_tx }.run(first));
        (s, events)
    }

    /// The connection state (a `watch`: `.changed().await` to follow it).
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.state.clone()
    }

    pub fn is_connected(&self) -> bool {
        self.state.borrow().is_connected()
    }

    /// Wait until logged in (again), at most `within`.
    pub async fn wait_connected(&self, within: Duration) -> Result<(), AmiError> {
        let mut st = self.state.clone();
        let r = timeout(within, st.wait_for(|s| s.is_connected() || *s == ConnectionState::Closed)).await;
        match r {
            Ok(Ok(s)) if s.is_connected() => Ok(()),
            Ok(_) => Err(AmiError::Closed),
            Err(_) => Err(AmiError::NotConnected {
                action: "(wait)".into(),
                reason: format!("not connected within {within:?}: {:?}", *self.state.borrow()),
            }),
        }
    }

    pub fn stats(&self) -> SessionStats {
        let c = &self.shared.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SessionStats {
            reconnects: g(&c.reconnects),
            connect_failures: g(&c.connect_failures),
            auth_failures: g(&c.auth_failures),
            actions_sent: g(&c.actions_sent),
            action_timeouts: g(&c.action_timeouts),
            events_received: g(&c.events_received),
            events_dropped: g(&c.events_dropped),
            decode_errors: g(&c.decode_errors),
            events_by_type: lock(&self.shared.by_type).clone(),
        }
    }

    /// Subscribe to events, with a buffer of `capacity` (≥ 1) events.
    pub fn events_with_capacity(&self, capacity: usize) -> EventStream {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        lock(&self.shared.subscribers).push(Subscriber { tx, dropped: dropped.clone() });
        EventStream { rx, dropped }
    }

    /// Subscribe to events with a buffer of 4096 events.
    pub fn events(&self) -> EventStream {
        self.events_with_capacity(4096)
    }

    /// Send any action and wait for its complete answer (response plus event list) with the
    /// session's default timeout. `Response: Error` is returned as a reply, not an error; see
    /// [`actions::check`].
    pub async fn send(&self, action: Action) -> Result<Reply, AmiError> {
        self.send_with_timeout(action, self.action_timeout).await
    }

    pub async fn send_with_timeout(&self, action: Action, after: Duration) -> Result<Reply, AmiError> {
        action.validate()?;
        let n = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n}", self.shared.id_prefix);
        let name = action.name().to_owned();
        let (tx, rx) = oneshot::channel();
        // The whole call is bounded, queueing included: a connection whose writes stall fills
        // the queue, and a caller must not wait behind it forever.
        let deadline = Instant::now() + after;
        match tokio::time::timeout_at(
            deadline,
            self.cmd.send(Cmd::Send { id: id.clone(), action, reply: tx }),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(AmiError::Closed),
            Err(_) => {
                self.shared.counters.action_timeouts.fetch_add(1, Ordering::Relaxed);
                return Err(AmiError::Timeout { action: name, after });
            }
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(AmiError::Closed),
            Err(_) => {
                self.shared.counters.action_timeouts.fetch_add(1, Ordering::Relaxed);
                let _ = self.cmd.try_send(Cmd::Cancel(id));
                Err(AmiError::Timeout { action: name, after })
            }
        }
    }

    /// Send a typed action and parse its answer.
    pub async fn call<A: TypedAction>(&self, a: &A) -> Result<A::Output, AmiError> {
        A::parse(self.send(a.action()).await?)
    }

    /// Change the event mask now and for every later login.
    pub async fn set_event_mask(&self, mask: EventMask) -> Result<(), AmiError> {
        self.cmd.send(Cmd::SetEvents(mask.clone())).await.map_err(|_| AmiError::Closed)?;
        self.call(&actions::Events(mask)).await
    }

    /// Logoff and stop reconnecting. Waits for Asterisk's Goodbye (bounded).
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        let _ = timeout(Duration::from_secs(5), async {
            if self.cmd.send(Cmd::Close(tx)).await.is_ok() {
                let _ = rx.await;
            }
        })
        .await;
    }
}

struct Conn {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    dec: Decoder,
    banner: String,
    buf: Vec<u8>,
}

impl Conn {
    async fn write_action(&mut self, action: &Action, id: &str) -> Result<(), AmiError> {
        let mut out = Vec::with_capacity(128);
        action.encode(Some(id), &mut out)?;
        self.wr.write_all(&out).await?;
        Ok(())
    }

    /// [`Conn::write_action`] bounded by `within`: a peer that stops reading (a hung Asterisk
    /// whose socket buffer is full) would otherwise block the connection task, its keepalive
    /// and every caller queued behind it. A stalled write counts as a dead connection.
    async fn write_within(&mut self, action: &Action, id: &str, within: Duration) -> Result<(), AmiError> {
        match timeout(within, self.write_action(action, id)).await {
            Ok(r) => r,
            Err(_) => Err(AmiError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("write stalled: Asterisk read nothing for {within:?}"),
            ))),
        }
    }

    /// Read until the response to `id` (login phase only: nothing else is in flight yet).
    async fn await_response(&mut self, id: &str, shared: &Shared) -> Result<Message, AmiError> {
        loop {
            while let Some(f) = self.dec.next_frame() {
                match f {
                    Ok(Frame::Banner(b)) => self.banner = b,
                    Ok(Frame::Message(m)) if m.response().is_some() && m.action_id() == Some(id) => {
                        return Ok(m);
                    }
                    Ok(Frame::Message(m)) if m.event_name().is_some() => shared.publish(m),
                    Ok(Frame::Message(_)) => {}
                    Err(_) => {
                        shared.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            let n = self.rd.read(&mut self.buf).await?;
            if n == 0 {
                return Err(AmiError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "Asterisk closed the connection",
                )));
            }
            self.dec.feed(&self.buf[..n]);
        }
    }
}

enum Exit {
    Closed(Option<oneshot::Sender<()>>),
    Lost(String),
}

struct Driver {
    cfg: SessionConfig,
    shared: Arc<Shared>,
    cmd_rx: mpsc::Receiver<Cmd>,
    state_tx: watch::Sender<ConnectionState>,
}

impl Driver {
    async fn run(mut self, mut first: Option<oneshot::Sender<Result<(), AmiError>>>) {
        let mut attempt: u32 = 0;
        let mut backoff = self.cfg.backoff_initial;
        let mut connected_before = false;
        loop {
            attempt += 1;
            self.state_tx.send_replace(ConnectionState::Connecting { attempt });
            let login = timeout(self.cfg.connect_timeout, self.login()).await.unwrap_or_else(|_| {
                Err(AmiError::Connect {
                    addr: self.cfg.addr.clone(),
                    reason: format!("no login within {:?}", self.cfg.connect_timeout),
                })
            });
            match login {
                Ok(conn) => {
                    if let Some(f) = first.take() {
                        let _ = f.send(Ok(()));
                    }
                    if connected_before {
                        self.shared.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    connected_before = true;
                    attempt = 0;
                    let connected_at = Instant::now();
                    tracing::info!(addr = %self.cfg.addr, banner = %conn.banner, "AMI connected");
                    self.state_tx.send_replace(ConnectionState::Connected { banner: conn.banner.clone() });
                    match self.serve(conn).await {
                        Exit::Closed(done) => {
                            self.state_tx.send_replace(ConnectionState::Closed);
                            if let Some(d) = done {
                                let _ = d.send(());
                            }
                            return;
                        }
                        Exit::Lost(reason) => {
                            // Start the backoff afresh only after a connection that stayed up a
                            // while: a server that accepts and drops at once is not hammered.
                            if connected_at.elapsed() >= Duration::from_secs(10) {
                                backoff = self.cfg.backoff_initial;
                            }
                            tracing::warn!(addr = %self.cfg.addr, %reason, "AMI connection lost");
                            self.state_tx
                                .send_replace(ConnectionState::Disconnected { reason, auth_failed: false });
                        }
                    }
                }
                Err(e) => {
                    let auth_failed = matches!(e, AmiError::AuthFailed { .. });
                    self.shared.counters.connect_failures.fetch_add(1, Ordering::Relaxed);
                    if auth_failed {
                        self.shared.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::warn!(addr = %self.cfg.addr, error = %e, "AMI connect failed");
                    self.state_tx
                        .send_replace(ConnectionState::Disconnected { reason: e.to_string(), auth_failed });
                    if let Some(f) = first.take() {
                        let _ = f.send(Err(e));
                        self.state_tx.send_replace(ConnectionState::Closed);
                        return;
                    }
                }
            }
            // Back off with jitter ("equal jitter": half fixed, half random), serving commands.
            let half = backoff / 2;
            let delay = half + half.mul_f64(rand::rng().random_range(0.0..=1.0));
            backoff = (backoff * 2).min(self.cfg.backoff_max);
            let until = Instant::now() + delay;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => break,
                    cmd = self.cmd_rx.recv() => match cmd {
                        None => { self.state_tx.send_replace(ConnectionState::Closed); return; }
                        Some(Cmd::Close(done)) => {
                            self.state_tx.send_replace(ConnectionState::Closed);
                            let _ = done.send(());
                            return;
                        }
                        Some(Cmd::Send { action, reply, .. }) => {
                            let reason = match &*self.state_tx.borrow() {
                                ConnectionState::Disconnected { reason, .. } => reason.clone(),
                                s => format!("{s:?}"),
                            };
                            let _ = reply.send(Err(AmiError::NotConnected { action: action.name().into(), reason }));
                        }
                        Some(Cmd::SetEvents(m)) => *lock(&self.shared.events) = m,
                        Some(Cmd::Cancel(_)) => {}
                    }
                }
            }
        }
    }

    async fn login(&self) -> Result<Conn, AmiError> {
        let cfg = &self.cfg;
        let stream = TcpStream::connect(&cfg.addr)
            .await
            .map_err(|e| AmiError::Connect { addr: cfg.addr.clone(), reason: e.to_string() })?;
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let mut conn = Conn {
            rd,
            wr,
            dec: Decoder::with_limits(cfg.limits),
            banner: String::new(),
            buf: vec![0; 64 * 1024],
        };
        let challenge = match cfg.auth {
            AuthMethod::Plain => None,
            AuthMethod::Md5 => {
                let id = format!("{}-challenge", self.shared.id_prefix);
                conn.write_action(&Action::new("Challenge").header("AuthType", "MD5"), &id).await?;
                let r = conn.await_response(&id, &self.shared).await?;
                let c = actions::check("Challenge", Reply { response: r, ..Reply::default() })?;
                Some(c.response.get("Challenge").map(str::to_owned).ok_or_else(|| AmiError::Protocol {
                    action: "Challenge".into(),
                    detail: "no Challenge header".into(),
                })?)
            }
        };
        let mask = lock(&self.shared.events).clone();
        let login = actions::login_action(&cfg.username, &cfg.secret, challenge.as_deref(), &mask);
        let id = format!("{}-login", self.shared.id_prefix);
        conn.write_action(&login, &id).await?;
        let r = match conn.await_response(&id, &self.shared).await {
            Ok(r) => r,
            // Some servers close without answering a bad login.
            Err(AmiError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(AmiError::AuthFailed {
                    user: cfg.username.clone(),
                    message: "connection closed during login".into(),
                });
            }
            Err(e) => return Err(e),
        };
        if r.is_error() {
            return Err(AmiError::AuthFailed {
                user: cfg.username.clone(),
                message: r.message().unwrap_or("(no message)").to_owned(),
            });
        }
        Ok(conn)
    }

    fn handle_frame(
        &self,
        f: Result<Frame, DecodeError>,
        corr: &mut Correlator<Waiter>,
        ka_pending: &mut Option<String>,
        goodbye: &mut bool,
    ) {
        match f {
            Err(e) => {
                self.shared.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "AMI frame dropped");
            }
            Ok(Frame::Banner(_)) => {}
            Ok(Frame::Message(m)) => match corr.route(m) {
                Routed::Done { token, action_id, reply } => match token {
                    Waiter::Caller { tx, .. } => {
                        let _ = tx.send(Ok(reply));
                    }
                    Waiter::Keepalive => {
                        if ka_pending.as_deref() == Some(action_id.as_str()) {
                            *ka_pending = None;
                        }
                    }
                    Waiter::Logoff => *goodbye = true,
                },
                Routed::Event(m) => self.shared.publish(m),
                Routed::Unmatched(m) => tracing::debug!(message = ?m, "AMI response nobody waits for"),
                Routed::Consumed => {}
            },
        }
    }

    async fn serve(&mut self, mut conn: Conn) -> Exit {
        let mut corr: Correlator<Waiter> = Correlator::new();
        let mut ka_pending: Option<String> = None;
        let mut goodbye = false;
        let ka_every = self.cfg.keepalive.unwrap_or(Duration::from_secs(3600 * 24 * 365));
        let mut ka = tokio::time::interval_at(Instant::now() + ka_every, ka_every);
        let exit = loop {
            while let Some(f) = conn.dec.next_frame() {
                self.handle_frame(f, &mut corr, &mut ka_pending, &mut goodbye);
            }
            tokio::select! {
                r = conn.rd.read(&mut conn.buf) => match r {
                    Ok(0) => break Exit::Lost("Asterisk closed the connection".into()),
                    Ok(n) => conn.dec.feed(&conn.buf[..n]),
                    Err(e) => break Exit::Lost(format!("read error: {e}")),
                },
                cmd = self.cmd_rx.recv() => match cmd {
                    Some(Cmd::Send { id, action, reply }) => {
                        self.shared.counters.actions_sent.fetch_add(1, Ordering::Relaxed);
                        let name = action.name().to_owned();
                        match conn.write_within(&action, &id, self.cfg.action_timeout).await {
                            Ok(()) => corr.register(id, Expect::for_action(&name), Waiter::Caller { tx: reply, action: name }),
                            Err(AmiError::Io(e)) => {
                                let _ = reply.send(Err(AmiError::Disconnected { action: name, reason: e.to_string() }));
                                break Exit::Lost(format!("write error: {e}"));
                            }
                            Err(e) => { let _ = reply.send(Err(e)); }
                        }
                    }
                    Some(Cmd::Cancel(id)) => { corr.cancel(&id); }
                    Some(Cmd::SetEvents(m)) => *lock(&self.shared.events) = m,
                    Some(Cmd::Close(done)) => break Exit::Closed(Some(done)),
                    None => break Exit::Closed(None),
                },
                _ = ka.tick() => {
                    if ka_pending.is_some() {
                        break Exit::Lost(format!("keepalive: no answer to Ping within {ka_every:?}"));
                    }
                    let id = format!("{}-ka{}", self.shared.id_prefix, self.shared.next_id.fetch_add(1, Ordering::Relaxed));
                    if let Err(e) = conn.write_within(&Action::new("Ping"), &id, ka_every).await {
                        break Exit::Lost(format!("keepalive write: {e}"));
                    }
                    corr.register(id.clone(), Expect::default(), Waiter::Keepalive);
                    ka_pending = Some(id);
                }
            }
        };
        match exit {
            Exit::Lost(reason) => {
                for (_, w) in corr.drain() {
                    if let Waiter::Caller { tx, action } = w {
                        let _ = tx.send(Err(AmiError::Disconnected { action, reason: reason.clone() }));
                    }
                }
                Exit::Lost(reason)
            }
            Exit::Closed(done) => {
                // Clean Logoff: wait (bounded) for Goodbye, answering nothing else.
                let id = format!("{}-logoff", self.shared.id_prefix);
                if conn.write_within(&Action::new("Logoff"), &id, Duration::from_secs(2)).await.is_ok() {
                    corr.register(id, Expect::default(), Waiter::Logoff);
                    let deadline = Instant::now() + Duration::from_secs(2);
                    while !goodbye {
                        while let Some(f) = conn.dec.next_frame() {
                            self.handle_frame(f, &mut corr, &mut ka_pending, &mut goodbye);
                        }
                        if goodbye {
                            break;
                        }
                        match tokio::time::timeout_at(deadline, conn.rd.read(&mut conn.buf)).await {
                            Ok(Ok(n)) if n > 0 => conn.dec.feed(&conn.buf[..n]),
                            _ => break,
                        }
                    }
                }
                let _ = timeout(Duration::from_secs(2), conn.wr.shutdown()).await;
                for (_, w) in corr.drain() {
                    if let Waiter::Caller { tx, .. } = w {
                        let _ = tx.send(Err(AmiError::Closed));
                    }
                }
                tracing::info!(addr = %self.cfg.addr, goodbye, "AMI session closed");
                Exit::Closed(done)
            }
        }
    }
}
