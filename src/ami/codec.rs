//! Pure AMI wire codec: bytes → frames ([`Decoder`]) and actions → bytes ([`Action::encode`]).
//!
//! No I/O happens here. The decoder is incremental: feed it whatever a socket read returned (a frame
//! may be split anywhere, even inside a CRLF) and pull complete frames out. What it copes with,
//! all seen on a real Asterisk 22 (see `tests/fixtures/ami/README.md`):
//!
//! * the one-line banner `Asterisk Call Manager/11.0.0` with no blank line after it;
//! * CRLF-terminated lines, and bare-LF lines (IAXnetstats' raw table rows);
//! * lines without a `Key: value` shape (`No categories found`, IAXnetstats rows), kept as raw lines;
//! * repeated keys (`Output:` of `Command`, `Variable:`), values containing colons;
//! * `Response: Follows` from older servers, whose body runs until `--END COMMAND--` and may contain
//!   blank lines;
//! * a stray blank line between frames (IAXnetstats with no calls answers just `\r\n`), surfaced as
//!   an empty [`Message`] so the session can complete that action.
//!
//! Memory is bounded: a line longer than [`Limits::max_line`] (even one that never ends) or a frame
//! larger than [`Limits::max_frame`] yields a [`DecodeError`], the frame is dropped and the decoder
//! resynchronises at the next blank line without buffering the dropped bytes.

use std::fmt;

use serde::ser::{SerializeMap, SerializeSeq};

/// Upper bounds on what the decoder buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted line, without its line ending. GetConfigJSON answers with one long line.
    pub max_line: usize,
    /// Largest accepted frame (sum of its line lengths).
    pub max_frame: usize,
    /// Most lines in one frame (bounds the per-line index, which is larger than a short line).
    pub max_lines: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_line: 1 << 20, max_frame: 8 << 20, max_lines: 1 << 18 }
    }
}

/// A malformed or oversized frame. The decoder has already dropped it and resynchronises by itself;
/// keep calling [`Decoder::next_frame`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("AMI line longer than {limit} bytes: frame dropped")]
    LineTooLong { limit: usize },
    #[error("AMI frame larger than {limit} bytes: dropped")]
    FrameTooLarge { limit: usize },
    #[error("AMI frame with more than {limit} lines: dropped")]
    TooManyLines { limit: usize },
}

/// A header (`Key: value`) or a raw line, as offsets into [`Message::buf`].
#[derive(Clone, Copy, PartialEq, Eq)]
struct Line {
    start: u32,
    /// End of the key; `RAW` for a raw line.
    key_end: u32,
    value_start: u32,
    end: u32,
}

const RAW: u32 = u32::MAX;

/// One AMI frame: its headers in wire order (repeated keys kept) and any raw lines.
///
/// Stored as one string plus offsets, so decoding does not allocate per header.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Message {
    buf: String,
    lines: Vec<Line>,
}

/// What a [`Message`] is. `OriginateResponse` is an *event* that also carries a `Response:` header, so
/// the first header decides, not the presence of `Response:`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    Response,
    Event,
    /// Neither: IAXnetstats' raw table, or an empty frame.
    Raw,
}

impl Message {
    /// An empty message.
    pub fn new() -> Self {
        Message::default()
    }

    /// Build a message from headers (tests, fake servers).
    pub fn from_headers<K: AsRef<str>, V: AsRef<str>>(headers: impl IntoIterator<Item = (K, V)>) -> Self {
        let mut m = Message::new();
        for (k, v) in headers {
            m.push_header(k.as_ref(), v.as_ref());
        }
        m
    }

    pub fn push_header(&mut self, key: &str, value: &str) {
        let start = self.buf.len();
        self.buf.push_str(key);
        let key_end = self.buf.len();
        self.buf.push_str(": ");
        let value_start = self.buf.len();
        self.buf.push_str(value);
        self.lines.push(Line {
            start: start as u32,
            key_end: key_end as u32,
            value_start: value_start as u32,
            end: self.buf.len() as u32,
        });
    }

    pub fn push_raw(&mut self, line: &str) {
        let start = self.buf.len();
        self.buf.push_str(line);
        let end = self.buf.len() as u32;
        self.lines.push(Line { start: start as u32, key_end: RAW, value_start: end, end });
    }

    fn slice(&self, a: u32, b: u32) -> &str {
        self.buf.get(a as usize..b as usize).unwrap_or("")
    }

    /// Headers in wire order, repeated keys included.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.lines
            .iter()
            .filter(|l| l.key_end != RAW)
            .map(|l| (self.slice(l.start, l.key_end), self.slice(l.value_start, l.end)))
    }

    /// Lines that were not `Key: value` (IAXnetstats rows, `No categories found`, a
    /// `Response: Follows` body).
    pub fn raw_lines(&self) -> impl Iterator<Item = &str> + '_ {
        self.lines.iter().filter(|l| l.key_end == RAW).map(|l| self.slice(l.start, l.end))
    }

    /// Number of headers plus raw lines.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The first value of `key` (ASCII case-insensitive, as Asterisk itself matches headers).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.headers().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
    }

    /// Every value of `key`, in order (e.g. `Output` lines).
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers().filter(move |(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
    }

    fn first_header(&self) -> Option<(&str, &str)> {
        self.headers().next()
    }

    pub fn kind(&self) -> MessageKind {
        match self.first_header() {
            Some((k, _)) if k.eq_ignore_ascii_case("Event") => MessageKind::Event,
            Some((k, _)) if k.eq_ignore_ascii_case("Response") => MessageKind::Response,
            _ => MessageKind::Raw,
        }
    }

    /// `Event:` value when this is an event.
    pub fn event_name(&self) -> Option<&str> {
        match self.first_header() {
            Some((k, v)) if k.eq_ignore_ascii_case("Event") => Some(v),
            _ => None,
        }
    }

    /// `Response:` value when this is a response (not for `OriginateResponse` events).
    pub fn response(&self) -> Option<&str> {
        match self.first_header() {
            Some((k, v)) if k.eq_ignore_ascii_case("Response") => Some(v),
            _ => None,
        }
    }

    pub fn action_id(&self) -> Option<&str> {
        self.get("ActionID")
    }

    pub fn message(&self) -> Option<&str> {
        self.get("Message")
    }

    /// `Response: Error` (or an unknown response value other than Success/Follows/Goodbye).
    pub fn is_error(&self) -> bool {
        match self.response() {
            Some(r) => !["Success", "Follows", "Goodbye"].iter().any(|ok| r.eq_ignore_ascii_case(ok)),
            None => false,
        }
    }

    /// `EventList: start` on a response.
    pub fn starts_event_list(&self) -> bool {
        self.get("EventList").is_some_and(|v| v.eq_ignore_ascii_case("start"))
    }

    /// `EventList: Complete` on an event.
    pub fn completes_event_list(&self) -> bool {
        self.get("EventList").is_some_and(|v| v.eq_ignore_ascii_case("Complete"))
    }

    /// Encode back to wire form (headers and raw lines, CRLF, blank line). For tests and fake servers.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.buf.len() + 4 * self.lines.len() + 2);
        for l in &self.lines {
            out.extend_from_slice(self.slice(l.start, l.end).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut l = f.debug_list();
        for line in &self.lines {
            if line.key_end == RAW {
                l.entry(&self.slice(line.start, line.end));
            } else {
                let key = self.slice(line.start, line.key_end);
                let value = self.slice(line.value_start, line.end);
                l.entry(&(key, crate::ami::types::redact_value(key, value)));
            }
        }
        l.finish()
    }
}

/// JSON form: an object in wire order; a repeated key becomes an array of its values; raw lines go
/// under `"_raw"`. (A plain JSON map would lose repeated keys, as GetConfigJSON shows.)
impl serde::Serialize for Message {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut keys: Vec<&str> = Vec::new();
        for (k, _) in self.headers() {
            if !keys.iter().any(|seen| seen.eq_ignore_ascii_case(k)) {
                keys.push(k);
            }
        }
        let raw: Vec<&str> = self.raw_lines().collect();
        let mut map = s.serialize_map(Some(keys.len() + usize::from(!raw.is_empty())))?;
        struct All<'a>(&'a Message, &'a str);
        impl serde::Serialize for All<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(None)?;
                for v in self.0.get_all(self.1) {
                    seq.serialize_element(&crate::ami::types::redact_value(self.1, v))?;
                }
                seq.end()
            }
        }
        for k in keys {
            if self.get_all(k).nth(1).is_some() {
                map.serialize_entry(k, &All(self, k))?;
            } else {
                map.serialize_entry(k, &crate::ami::types::redact_value(k, self.get(k).unwrap_or("")))?;
            }
        }
        if !raw.is_empty() {
            map.serialize_entry("_raw", &raw)?;
        }
        map.end()
    }
}

/// A decoded unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// The greeting line, e.g. `Asterisk Call Manager/11.0.0`.
    Banner(String),
    Message(Message),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    ExpectBanner,
    Headers,
    /// Inside a `Response: Follows` frame; `body` once the first non-header line was seen.
    Follows {
        body: bool,
    },
    /// Dropping an oversized frame: first to the end of the current line (`mid_line`), then to the
    /// next blank line.
    Discard {
        mid_line: bool,
    },
}

/// Incremental AMI decoder.
pub struct Decoder {
    input: Vec<u8>,
    pos: usize,
    state: State,
    cur: Message,
    limits: Limits,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

fn is_header_key(key: &[u8]) -> bool {
    !key.is_empty() && !key.iter().any(|&b| b == b' ' || b == b'\t')
}

/// Split a line into header parts: `(key, value)` with exactly one space after the colon removed
/// (`Output:     -= hints =-` keeps its indentation), or `None` for a raw line.
fn split_header(line: &str) -> Option<(usize, usize)> {
    let colon = memchr::memchr(b':', line.as_bytes())?;
    if !is_header_key(&line.as_bytes()[..colon]) {
        return None;
    }
    let mut vs = colon + 1;
    if line.as_bytes().get(vs) == Some(&b' ') {
        vs += 1;
    }
    Some((colon, vs))
}

impl Decoder {
    /// A decoder for a fresh connection: the first line may be the banner.
    pub fn new() -> Self {
        Decoder::with_limits(Limits::default())
    }

    pub fn with_limits(limits: Limits) -> Self {
        let limits = Limits {
            max_line: limits.max_line.min(u32::MAX as usize / 2),
            max_frame: limits.max_frame.min(u32::MAX as usize / 2),
            max_lines: limits.max_lines,
        };
        Decoder { input: Vec::new(), pos: 0, state: State::ExpectBanner, cur: Message::new(), limits }
    }

    /// A decoder that does not expect a banner (e.g. for the client→server direction).
    pub fn without_banner() -> Self {
        let mut d = Decoder::new();
        d.state = State::Headers;
        d
    }

    /// Bytes currently held (unconsumed input plus the frame being built).
    pub fn buffered(&self) -> usize {
        self.input.len() - self.pos + self.cur.buf.len() + self.cur.lines.len() * size_of::<Line>()
    }

    /// Append received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        if self.pos > 0 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        if let State::Discard { mid_line: true } = self.state {
            // Drop bytes up to the end of the line being discarded without buffering them.
            match memchr::memchr(b'\n', data) {
                None => return,
                Some(i) => {
                    self.state = State::Discard { mid_line: false };
                    self.input.extend_from_slice(&data[i + 1..]);
                    return;
                }
            }
        }
        self.input.extend_from_slice(data);
    }

    /// Feed `data` and collect every frame it completes.
    pub fn decode(&mut self, data: &[u8]) -> Vec<Result<Frame, DecodeError>> {
        self.feed(data);
        let mut out = Vec::new();
        while let Some(f) = self.next_frame() {
            out.push(f);
        }
        out
    }

    fn fail(&mut self, err: DecodeError, mid_line: bool) -> Option<Result<Frame, DecodeError>> {
        self.cur = Message::new();
        self.state = State::Discard { mid_line };
        if mid_line {
            self.input.clear();
            self.pos = 0;
        }
        Some(Err(err))
    }

    fn finish(&mut self) -> Option<Result<Frame, DecodeError>> {
        self.state = State::Headers;
        Some(Ok(Frame::Message(std::mem::take(&mut self.cur))))
    }

    /// The next complete frame, `None` when more input is needed.
    pub fn next_frame(&mut self) -> Option<Result<Frame, DecodeError>> {
        loop {
            let rest_len = self.input.len() - self.pos;
            let Some(nl) = memchr::memchr(b'\n', &self.input[self.pos..]) else {
                if let State::Discard { mid_line } = self.state {
                    // A lone CR at a line start may be the blank line that ends the discard: keep it.
                    if !mid_line && &self.input[self.pos..] == b"\r" {
                        return None;
                    }
                    // Drop the partial line now; remember we are inside it.
                    self.input.clear();
                    self.pos = 0;
                    self.state = State::Discard { mid_line: mid_line || rest_len > 0 };
                    return None;
                }
                // +1: the CR of a line of exactly `max_line` bytes may arrive before its LF.
                if rest_len > self.limits.max_line + 1 {
                    return self.fail(DecodeError::LineTooLong { limit: self.limits.max_line }, true);
                }
                return None;
            };
            let line_start = self.pos;
            self.pos += nl + 1;
            let mut line_end = line_start + nl;
            if line_end > line_start && self.input[line_end - 1] == b'\r' {
                line_end -= 1;
            }
            let len = line_end - line_start;

            if let State::Discard { .. } = self.state {
                if len == 0 {
                    self.state = State::Headers;
                }
                continue;
            }
            if len > self.limits.max_line {
                return self.fail(DecodeError::LineTooLong { limit: self.limits.max_line }, false);
            }
            if self.cur.buf.len() + len > self.limits.max_frame {
                return self.fail(DecodeError::FrameTooLarge { limit: self.limits.max_frame }, false);
            }
            if self.cur.lines.len() >= self.limits.max_lines {
                return self.fail(DecodeError::TooManyLines { limit: self.limits.max_lines }, false);
            }

            let bytes = &self.input[line_start..line_end];
            let text: std::borrow::Cow<'_, str> = match std::str::from_utf8(bytes) {
                Ok(s) => s.into(),
                Err(_) => String::from_utf8_lossy(bytes).into_owned().into(),
            };

            match self.state {
                State::ExpectBanner => {
                    if len == 0 {
                        continue;
                    }
                    self.state = State::Headers;
                    if split_header(&text).is_none() {
                        return Some(Ok(Frame::Banner(text.into_owned())));
                    }
                    push_line(&mut self.cur, &text);
                    self.after_header();
                }
                State::Headers => {
                    if len == 0 {
                        return self.finish();
                    }
                    push_line(&mut self.cur, &text);
                    self.after_header();
                }
                State::Follows { body } => {
                    if let Some(before) = text.strip_suffix("--END COMMAND--") {
                        if !before.is_empty() {
                            self.cur.push_raw(before);
                        }
                        // The blank line that follows ends the frame.
                        self.state = State::Headers;
                        continue;
                    }
                    if !body && len > 0 && split_header(&text).is_some() {
                        push_line(&mut self.cur, &text);
                    } else {
                        self.cur.push_raw(&text);
                        self.state = State::Follows { body: true };
                    }
                }
                State::Discard { .. } => {}
            }
        }
    }

    fn after_header(&mut self) {
        if self.cur.lines.len() == 1 && self.cur.response().is_some_and(|r| r.eq_ignore_ascii_case("Follows"))
        {
            self.state = State::Follows { body: false };
        }
    }
}

fn push_line(m: &mut Message, text: &str) {
    match split_header(text) {
        Some((colon, vs)) => {
            let base = m.buf.len();
            m.buf.push_str(text);
            m.lines.push(Line {
                start: base as u32,
                key_end: (base + colon) as u32,
                value_start: (base + vs.min(text.len())) as u32,
                end: m.buf.len() as u32,
            });
        }
        None => m.push_raw(text),
    }
}

/// An action header that would corrupt the stream (header injection) or cannot be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("AMI action {action}: header {key:?} contains CR or LF (header injection refused)")]
    LineBreak { action: String, key: String },
    #[error("AMI action {action}: invalid header name {key:?} (empty, or contains ':' or whitespace)")]
    BadKey { action: String, key: String },
}

/// An AMI action to send: its name and headers in order (repeated keys allowed, e.g. `Variable`).
/// `ActionID` is added by [`Action::encode`].
#[derive(Clone, PartialEq, Eq)]
pub struct Action {
    name: String,
    headers: Vec<(String, String)>,
}

impl Action {
    pub fn new(name: impl Into<String>) -> Self {
        Action { name: name.into(), headers: Vec::new() }
    }

    /// Builder form of [`Action::push`].
    pub fn header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.push(key, value);
        self
    }

    /// Append a header (repeats allowed).
    pub fn push(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.headers.push((key.into(), value.into()));
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.headers().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
    }

    /// Check every header without encoding.
    pub fn validate(&self) -> Result<(), EncodeError> {
        check_key(&self.name, "Action", &self.name)?;
        check_value(&self.name, "Action", &self.name)?;
        for (k, v) in self.headers() {
            check_key(&self.name, k, k)?;
            check_value(&self.name, k, v)?;
        }
        Ok(())
    }

    /// Append the wire form to `out`: `Action`, then `ActionID` (when given), then the headers, then
    /// the blank line. On error nothing is appended.
    pub fn encode(&self, action_id: Option<&str>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.validate()?;
        if let Some(id) = action_id {
            check_value(&self.name, "ActionID", id)?;
        }
        out.extend_from_slice(b"Action: ");
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(id) = action_id {
            out.extend_from_slice(b"ActionID: ");
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        for (k, v) in self.headers() {
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        Ok(())
    }

    /// Rebuild an action from a decoded client→server message (`Action` first; `ActionID` split off).
    pub fn from_message(m: &Message) -> Option<(Action, Option<String>)> {
        let name = m.get("Action")?;
        let mut a = Action::new(name);
        let mut id = None;
        let mut seen_action = false;
        for (k, v) in m.headers() {
            if !seen_action && k.eq_ignore_ascii_case("Action") {
                seen_action = true;
            } else if id.is_none() && k.eq_ignore_ascii_case("ActionID") {
                id = Some(v.to_owned());
            } else {
                a.push(k, v);
            }
        }
        Some((a, id))
    }
}

fn check_key(action: &str, key: &str, k: &str) -> Result<(), EncodeError> {
    if k.is_empty() || k.bytes().any(|b| b == b':' || b.is_ascii_whitespace()) {
        if k.bytes().any(|b| b == b'\r' || b == b'\n') {
            return Err(EncodeError::LineBreak { action: action.into(), key: key.into() });
        }
        return Err(EncodeError::BadKey { action: action.into(), key: key.into() });
    }
    Ok(())
}

fn check_value(action: &str, key: &str, v: &str) -> Result<(), EncodeError> {
    if memchr::memchr2(b'\r', b'\n', v.as_bytes()).is_some() {
        return Err(EncodeError::LineBreak { action: action.into(), key: key.into() });
    }
    Ok(())
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Action");
        d.field("name", &self.name);
        let hs: Vec<(&str, std::borrow::Cow<'_, str>)> =
            self.headers().map(|(k, v)| (k, crate::ami::types::redact_value(k, v))).collect();
        d.field("headers", &hs);
        d.finish()
    }
}
