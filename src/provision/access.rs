//! Who may fetch which provisioning file (pure): a source inside the node's allowed networks
//! fetches any file; elsewhere a phone fetches its own files (and the vendors' common ones)
//! with its provisioning credentials over HTTP(S). TFTP carries no credentials, so it serves
//! the allowed networks only.

use std::net::IpAddr;

use base64::Engine;

/// A network in CIDR form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parses `192.168.10.0/24` or `2001:db8::/32`.
    pub fn parse(text: &str) -> Option<Network> {
        let (addr, prefix) = text.split_once('/')?;
        let addr: IpAddr = addr.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Network { addr, prefix })
    }

    /// Is `ip` inside? An IPv4 address mapped into IPv6 (`::ffff:a.b.c.d`, what a dual-stack
    /// listener reports) counts as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// User and password of an HTTP `Authorization: Basic` header.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicCredentials {
    /// The user (a Phone's name).
    pub user: String,
    /// The password.
    pub password: crate::secret::SecretValue,
}

impl std::fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BasicCredentials({:?}, <redacted>)", self.user)
    }
}

/// Parses an `Authorization` header value; `None` unless it is well-formed Basic.
pub fn parse_basic(header: &str) -> Option<BasicCredentials> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some(BasicCredentials { user: user.to_owned(), password: crate::secret::SecretValue::new(password) })
}

/// A file as the access decision sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileOwner<'a> {
    /// The Phone it belongs to; `None` for a common file.
    pub phone: Option<&'a str>,
}

/// The decision for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Serve the file.
    Serve,
    /// 404 / TFTP error 1: no such file (or not one this caller may know about).
    NotFound,
    /// 401: credentials needed (HTTP only).
    Unauthorized,
    /// TFTP error 2: the source is outside the allowed networks.
    Forbidden,
}

/// The HTTP(S) decision. `credentials_ok(user, password)` says whether the password is that
/// Phone's. A phone with valid credentials asking for another phone's file gets `NotFound`, as
/// if it did not exist: one phone's credential never reveals another's SIP password.
pub fn http(
    file: Option<FileOwner>,
    source: IpAddr,
    networks: &[Network],
    credentials: Option<&BasicCredentials>,
    credentials_ok: impl Fn(&BasicCredentials) -> bool,
) -> Access {
    if networks.iter().any(|n| n.contains(source)) {
        return if file.is_some() { Access::Serve } else { Access::NotFound };
    }
    match credentials.filter(|c| credentials_ok(c)) {
        None => Access::Unauthorized,
        Some(c) => match file {
            Some(FileOwner { phone: None }) => Access::Serve,
            Some(FileOwner { phone: Some(owner) }) if owner == c.user => Access::Serve,
            _ => Access::NotFound,
        },
    }
}

/// The TFTP decision: allowed networks only. Files of unknown names are "not found" for
/// every source (Cisco phones ask for `CTLSEP…tlv` and `ITLSEP…tlv` first and expect exactly
/// that); outside sources learn nothing more.
pub fn tftp(file: Option<FileOwner>, source: IpAddr, networks: &[Network]) -> Access {
    match (file, networks.iter().any(|n| n.contains(source))) {
        (None, _) => Access::NotFound,
        (Some(_), true) => Access::Serve,
        (Some(_), false) => Access::Forbidden,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_contain_their_addresses_and_mapped_ipv4() {
        let lan = Network::parse("10.20.0.0/24").unwrap();
        assert!(lan.contains(ip("10.20.0.77")) && !lan.contains(ip("10.20.1.1")));
        assert!(lan.contains(ip("::ffff:10.20.0.5")));
        assert!(Network::parse("0.0.0.0/0").unwrap().contains(ip("192.0.2.1")));
        assert!(Network::parse("127.1.2.3/32").unwrap().contains(ip("127.1.2.3")));
        let v6 = Network::parse("2001:db8::/32").unwrap();
        assert!(
            v6.contains(ip("2001:db8::1")) && !v6.contains(ip("2001:db9::1")) && !v6.contains(ip("10.0.0.1"))
        );
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "::/129"] {
            assert_eq!(Network::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn basic_credentials_parse_and_never_print() {
        let c = parse_basic("Basic cmVjZXB0aW9uOnMzY3JldDpwYXNz").unwrap();
        assert_eq!((c.user.as_str(), c.password.expose()), ("reception", "s3cret:pass"));
        assert!(!format!("{c:?}").contains("s3cret"));
        for bad in ["Bearer x", "Basic !!!", "Basic bm9jb2xvbg==", ""] {
            assert!(parse_basic(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn http_decisions() {
        let lan = [Network::parse("10.20.0.0/24").unwrap()];
        let own = Some(FileOwner { phone: Some("reception") });
        let common = Some(FileOwner { phone: None });
        let reception = BasicCredentials { user: "reception".into(), password: SecretValue::new("right") };
        let lobby = BasicCredentials { user: "lobby".into(), password: SecretValue::new("right") };
        let wrong = BasicCredentials { user: "reception".into(), password: SecretValue::new("wrong") };
        let ok = |c: &BasicCredentials| c.password.expose() == "right";
        let inside = ip("10.20.0.9");
        let outside = ip("192.0.2.9");
        use Access::*;
        let table: Vec<(Option<FileOwner>, IpAddr, Option<&BasicCredentials>, Access)> = vec![
            (own, inside, None, Serve),
            (None, inside, None, NotFound),
            (own, outside, None, Unauthorized),
            (None, outside, None, Unauthorized),
            (own, outside, Some(&wrong), Unauthorized),
            (own, outside, Some(&reception), Serve),
            (common, outside, Some(&lobby), Serve),
            (own, outside, Some(&lobby), NotFound),
            (None, outside, Some(&reception), NotFound),
        ];
        for (file, source, creds, want) in table {
            assert_eq!(http(file, source, &lan, creds, ok), want, "{file:?} {source} {creds:?}");
        }
    }

    #[test]
    fn tftp_decisions() {
        let lan = [Network::parse("10.20.0.0/24").unwrap()];
        let own = Some(FileOwner { phone: Some("reception") });
        assert_eq!(tftp(own, ip("10.20.0.9"), &lan), Access::Serve);
        assert_eq!(tftp(own, ip("192.0.2.9"), &lan), Access::Forbidden);
        assert_eq!(tftp(None, ip("10.20.0.9"), &lan), Access::NotFound);
        assert_eq!(tftp(None, ip("192.0.2.9"), &lan), Access::NotFound);
        assert_eq!(tftp(own, ip("10.20.0.9"), &[]), Access::Forbidden, "no networks: TFTP serves nobody");
    }
}
