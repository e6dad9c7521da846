//! The agent's SIP check of its own Asterisk (monit's `port 5060 protocol SIP`): one
//! out-of-dialog OPTIONS request to the node's PJSIP transport, and the status line it gets back.
//!
//! What answers counts, not what it says: checked on Asterisk 22.10.1, an OPTIONS from a source
//! that matches no endpoint gets `401 Unauthorized` (PJSIP challenges rather than reveal which
//! endpoints exist) and a NOTICE "No matching endpoint found" in Asterisk's log. Any well-formed
//! response to our Call-ID proves the SIP stack reads and answers on that transport; silence or
//! a refused connection proves it does not.
//!
//! The target comes from what the agent applied (the transport section of
//! `pjsip_operator.conf`), or from `--sip-probe` ([`ProbeSetting`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Transport protocol of the probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Udp,
    Tcp,
}

impl Protocol {
    fn via(self) -> &'static str {
        match self {
            Protocol::Udp => "UDP",
            Protocol::Tcp => "TCP",
        }
    }
}

/// Where the probe is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeTarget {
    pub protocol: Protocol,
    pub addr: SocketAddr,
}

/// `--sip-probe`: `auto` (the applied transport), `off`, or `udp:HOST:PORT` / `tcp:HOST:PORT`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProbeSetting {
    #[default]
    Auto,
    Off,
    Fixed(ProbeTarget),
}

/// A `--sip-probe` value that is none of the accepted forms.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("--sip-probe {0:?}: expected auto, off, udp:ADDRESS:PORT or tcp:ADDRESS:PORT")]
pub struct ProbeSettingError(String);

impl FromStr for ProbeSetting {
    type Err = ProbeSettingError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ProbeSettingError(s.to_owned());
        match s {
            "auto" => return Ok(ProbeSetting::Auto),
            "off" => return Ok(ProbeSetting::Off),
            _ => {}
        }
        let (proto, addr) = s.split_once(':').ok_or_else(bad)?;
        let protocol = match proto {
            "udp" => Protocol::Udp,
            "tcp" => Protocol::Tcp,
            _ => return Err(bad()),
        };
        let addr = addr.parse().map_err(|_| bad())?;
        Ok(ProbeSetting::Fixed(ProbeTarget { protocol, addr }))
    }
}

impl ProbeSetting {
    /// The target for this setting, given the applied `pjsip_operator.conf` (if any).
    pub fn target(&self, applied_pjsip: Option<&str>) -> Option<ProbeTarget> {
        match self {
            ProbeSetting::Off => None,
            ProbeSetting::Fixed(t) => Some(*t),
            ProbeSetting::Auto => applied_pjsip.and_then(target_from_pjsip),
        }
    }
}

/// The first `type=transport` section of a PJSIP file with protocol udp or tcp; a wildcard bind
/// address is probed on loopback (the agent runs beside Asterisk). TLS and WebSocket transports
/// are not probed.
pub fn target_from_pjsip(text: &str) -> Option<ProbeTarget> {
    let mut sections: Vec<Vec<(&str, &str)>> = Vec::new();
    for line in text.lines() {
        let line = line.split(';').next().unwrap_or("").trim();
        if line.starts_with('[') {
            sections.push(Vec::new());
        } else if let (Some(section), Some((k, v))) = (sections.last_mut(), line.split_once('=')) {
            section.push((k.trim_end_matches('>').trim(), v.trim_start_matches('>').trim()));
        }
    }
    sections.iter().find_map(|s| {
        let get = |key: &str| s.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        if get("type") != Some("transport") {
            return None;
        }
        let protocol = match get("protocol").unwrap_or("udp") {
            "udp" => Protocol::Udp,
            "tcp" => Protocol::Tcp,
            _ => return None,
        };
        let bind = get("bind")?;
        let mut addr: SocketAddr =
            bind.parse().ok().or_else(|| bind.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 5060)))?;
        match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => addr.set_ip(Ipv4Addr::LOCALHOST.into()),
            IpAddr::V6(ip) if ip.is_unspecified() => addr.set_ip(Ipv6Addr::LOCALHOST.into()),
            _ => {}
        }
        Some(ProbeTarget { protocol, addr })
    })
}

/// The OPTIONS request, sent from `local`. `tag` makes Call-ID, branch and From tag unique.
pub fn options_request(target: &ProbeTarget, local: SocketAddr, tag: &str) -> String {
    let host = |a: SocketAddr| match a.ip() {
        IpAddr::V6(ip) => format!("[{ip}]:{}", a.port()),
        IpAddr::V4(ip) => format!("{ip}:{}", a.port()),
    };
    let (to, from) = (host(target.addr), host(local));
    format!(
        "OPTIONS sip:{to} SIP/2.0\r\n\
         Via: SIP/2.0/{via} {from};branch=z9hG4bK-ao-{tag};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:asterisk-operator-probe@{from}>;tag={tag}\r\n\
         To: <sip:{to}>\r\n\
         Call-ID: {tag}@asterisk-operator-probe\r\n\
         CSeq: 1 OPTIONS\r\n\
         User-Agent: asterisk-operator agent\r\n\
         Accept: application/sdp\r\n\
         Content-Length: 0\r\n\r\n",
        via = target.protocol.via(),
    )
}

/// Why a reply is not an answer to our probe.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplyError {
    #[error("not a SIP response: {0:?}")]
    NotSip(String),
    #[error("a response to another request (Call-ID {0:?})")]
    OtherCall(String),
}

/// The status code of a response to the probe with `tag`. Provisional responses (1xx) are
/// answers too: the stack is alive.
pub fn parse_reply(reply: &str, tag: &str) -> Result<u16, ReplyError> {
    let mut lines = reply.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let code = status_line
        .strip_prefix("SIP/2.0 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (100..700).contains(c))
        .ok_or_else(|| ReplyError::NotSip(status_line.chars().take(80).collect()))?;
    let call_id = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("call-id") || k.trim() == "i")
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    if call_id != format!("{tag}@asterisk-operator-probe") {
        return Err(ReplyError::OtherCall(call_id));
    }
    Ok(code)
}

/// What one probe found.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeOutcome {
    /// The response's status code; `None`: no answer (the error says why).
    pub status: Option<u16>,
    pub duration: Duration,
    pub error: Option<String>,
}

/// Sends one OPTIONS to `target` and waits up to `within` for its response.
pub async fn probe(target: &ProbeTarget, within: Duration) -> ProbeOutcome {
    let start = Instant::now();
    let tag = format!("{:016x}", rand::random::<u64>());
    let result = tokio::time::timeout(within, exchange(target, &tag)).await;
    let duration = start.elapsed();
    match result {
        Ok(Ok(code)) => ProbeOutcome { status: Some(code), duration, error: None },
        Ok(Err(e)) => ProbeOutcome { status: None, duration, error: Some(e) },
        Err(_) => {
            ProbeOutcome { status: None, duration, error: Some(format!("no answer within {within:?}")) }
        }
    }
}

async fn exchange(target: &ProbeTarget, tag: &str) -> Result<u16, String> {
    let io = |what: &str| {
        let what = what.to_owned();
        move |e: std::io::Error| format!("{what} {}: {e}", target.addr)
    };
    match target.protocol {
        Protocol::Udp => {
            let any: SocketAddr = match target.addr {
                SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            let socket = UdpSocket::bind(any).await.map_err(io("binding a socket for"))?;
            socket.connect(target.addr).await.map_err(io("connecting to"))?;
            let local = socket.local_addr().map_err(io("local address towards"))?;
            socket.send(options_request(target, local, tag).as_bytes()).await.map_err(io("sending to"))?;
            let mut buf = vec![0u8; 65_535];
            loop {
                // A connected UDP socket reports the ICMP "port unreachable" of a closed port.
                let n = socket.recv(&mut buf).await.map_err(io("receiving from"))?;
                match parse_reply(&String::from_utf8_lossy(&buf[..n]), tag) {
                    Ok(code) => return Ok(code),
                    Err(ReplyError::OtherCall(_)) => continue,
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
        Protocol::Tcp => {
            let mut stream = TcpStream::connect(target.addr).await.map_err(io("connecting to"))?;
            let local = stream.local_addr().map_err(io("local address towards"))?;
            stream
                .write_all(options_request(target, local, tag).as_bytes())
                .await
                .map_err(io("sending to"))?;
            let mut buf = Vec::with_capacity(2048);
            loop {
                let mut chunk = [0u8; 2048];
                let n = stream.read(&mut chunk).await.map_err(io("receiving from"))?;
                if n == 0 {
                    return Err(format!("{} closed the connection without answering", target.addr));
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    return parse_reply(&String::from_utf8_lossy(&buf[..end + 4]), tag)
                        .map_err(|e| e.to_string());
                }
                if buf.len() > 65_535 {
                    return Err(format!("{} sent 64 KiB without ending a header", target.addr));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_is_the_rendered_transport_with_wildcards_on_loopback() {
        type Case<'a> = (&'a str, &'a str, Option<(Protocol, &'a str)>);
        let cases: &[Case] = &[
            (
                "rendered wildcard",
                "[operator-transport]\ntype=transport\nprotocol=udp\nbind=0.0.0.0:5060\n",
                Some((Protocol::Udp, "127.0.0.1:5060")),
            ),
            (
                "tcp on an address",
                "[t]\ntype = transport\nprotocol = tcp\nbind = 127.0.0.21:5070 ; comment\n",
                Some((Protocol::Tcp, "127.0.0.21:5070")),
            ),
            ("ipv6 wildcard", "[t]\ntype=transport\nbind=[::]:5060\n", Some((Protocol::Udp, "[::1]:5060"))),
            ("no port", "[t]\ntype=transport\nbind=127.0.0.9\n", Some((Protocol::Udp, "127.0.0.9:5060"))),
            ("tls is not probed", "[t]\ntype=transport\nprotocol=tls\nbind=0.0.0.0:5061\n", None),
            (
                "endpoint before transport",
                "[3001]\ntype=endpoint\n\n[tr]\ntype=transport\nbind=127.0.0.5:5080\n",
                Some((Protocol::Udp, "127.0.0.5:5080")),
            ),
            ("no transport", "[3001]\ntype=endpoint\n", None),
            ("bad bind", "[t]\ntype=transport\nbind=nowhere\n", None),
        ];
        for (case, text, want) in cases {
            let want = want.map(|(protocol, a)| ProbeTarget { protocol, addr: a.parse().unwrap() });
            assert_eq!(target_from_pjsip(text), want, "{case}");
        }
    }

    #[test]
    fn settings_parse_and_pick_their_target() {
        let fixed: ProbeSetting = "tcp:127.0.0.7:5062".parse().unwrap();
        let t = ProbeTarget { protocol: Protocol::Tcp, addr: "127.0.0.7:5062".parse().unwrap() };
        assert_eq!(fixed, ProbeSetting::Fixed(t));
        assert_eq!(fixed.target(Some("[t]\ntype=transport\nbind=1.2.3.4:5060\n")), Some(t));
        assert_eq!(
            "off".parse::<ProbeSetting>().unwrap().target(Some("[t]\ntype=transport\nbind=1.2.3.4\n")),
            None
        );
        assert_eq!(ProbeSetting::Auto.target(None), None);
        for bad in ["", "udp", "sctp:1.2.3.4:5060", "udp:host:5060", "udp:1.2.3.4"] {
            assert!(bad.parse::<ProbeSetting>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_request_is_a_complete_options_with_our_tag() {
        let t = ProbeTarget { protocol: Protocol::Udp, addr: "127.0.0.21:5060".parse().unwrap() };
        let req = options_request(&t, "127.0.0.1:40000".parse().unwrap(), "abc");
        assert!(req.starts_with("OPTIONS sip:127.0.0.21:5060 SIP/2.0\r\n"), "{req}");
        assert!(
            req.contains("\r\nVia: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK-ao-abc;rport\r\n"),
            "{req}"
        );
        assert!(req.contains("\r\nCall-ID: abc@asterisk-operator-probe\r\n"), "{req}");
        assert!(req.ends_with("Content-Length: 0\r\n\r\n"), "{req}");
        let v6 = ProbeTarget { protocol: Protocol::Tcp, addr: "[::1]:5060".parse().unwrap() };
        let req = options_request(&v6, "[::1]:40000".parse().unwrap(), "x");
        assert!(req.starts_with("OPTIONS sip:[::1]:5060 SIP/2.0\r\nVia: SIP/2.0/TCP [::1]:40000;"), "{req}");
    }

    #[test]
    fn replies_are_matched_by_call_id_and_read_for_their_code() {
        let reply = |status: &str, call_id: &str| {
            format!("{status}\r\nVia: SIP/2.0/UDP x\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n\r\n")
        };
        let ours = "t1@asterisk-operator-probe";
        let cases: &[(&str, String, Result<u16, ReplyError>)] = &[
            ("401 from Asterisk 22", reply("SIP/2.0 401 Unauthorized", ours), Ok(401)),
            ("200", reply("SIP/2.0 200 OK", ours), Ok(200)),
            ("provisional", reply("SIP/2.0 100 Trying", ours), Ok(100)),
            ("compact header", format!("SIP/2.0 404 Not Found\r\ni: {ours}\r\n\r\n"), Ok(404)),
            (
                "another call",
                reply("SIP/2.0 200 OK", "other@x"),
                Err(ReplyError::OtherCall("other@x".into())),
            ),
            (
                "a request",
                reply("OPTIONS sip:x SIP/2.0", ours),
                Err(ReplyError::NotSip("OPTIONS sip:x SIP/2.0".into())),
            ),
            ("garbage", "HTTP/1.1 200 OK\r\n\r\n".into(), Err(ReplyError::NotSip("HTTP/1.1 200 OK".into()))),
            ("bad code", reply("SIP/2.0 9x9 Odd", ours), Err(ReplyError::NotSip("SIP/2.0 9x9 Odd".into()))),
        ];
        for (case, text, want) in cases {
            assert_eq!(&parse_reply(text, "t1"), want, "{case}");
        }
    }

    #[tokio::test]
    async fn a_closed_udp_port_fails_fast_and_a_silent_one_times_out() {
        // A port just released: nothing listens, the kernel answers ICMP port unreachable.
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let t = ProbeTarget { protocol: Protocol::Udp, addr: closed };
        let out = probe(&t, Duration::from_secs(2)).await;
        assert_eq!(out.status, None);
        assert!(out.duration < Duration::from_secs(2), "{out:?}");
        // A socket that reads and never answers.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let t = ProbeTarget { protocol: Protocol::Udp, addr: silent.local_addr().unwrap() };
        let out = probe(&t, Duration::from_millis(200)).await;
        assert_eq!(out.status, None);
        assert!(out.error.as_deref().unwrap_or("").contains("no answer"), "{out:?}");
    }
}
