//! Where and how the controller may reach a node's agent (pure), decided before any connection
//! is made. An endpoint is something a resource's author writes, so it must not become a way to
//! receive credentials or bundles, or to probe the network from the controller:
//!
//! * credentials and bundles go only over TLS, to an agent that proves it holds the node's own
//!   key (its pinned certificate); a plain `http://` endpoint is refused unless the controller
//!   was started for local testing (`--allow-plaintext-agents`), and then only on a loopback
//!   host and with no credential at all;
//! * the operator's administrator may restrict which hosts `spec.agent.endpoint` may name, per
//!   namespace (`--agent-endpoint-hosts`).

use std::net::IpAddr;
use std::str::FromStr;

use crate::agent::client::AgentAccess;

/// The operator's rules for agent endpoints.
#[derive(Clone, Debug, Default)]
pub struct AgentPolicy {
    /// Allow `http://` endpoints on loopback hosts, sending no credential (tests, a controller
    /// on the same host as its agents).
    pub allow_plaintext_loopback: bool,
    /// Hosts a `spec.agent.endpoint` may name; none: any host.
    pub endpoint_hosts: Vec<HostRule>,
}

/// One allowed endpoint host, for one namespace or all: `[NAMESPACE/]PATTERN`, where PATTERN is
/// a host name, `*.suffix` (any name under it), or a network in CIDR form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRule {
    namespace: Option<String>,
    pattern: HostPattern,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    Name(String),
    Suffix(String),
    Network(IpAddr, u8),
}

impl FromStr for HostRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (namespace, pattern) = match s.split_once('/') {
            // `10.0.0.0/8` is a network, not namespace `10.0.0.0`.
            Some((ns, rest))
                if ns.parse::<IpAddr>().is_err() && !rest.chars().all(|c| c.is_ascii_digit()) =>
            {
                (Some(ns.to_owned()), rest)
            }
            _ => (None, s),
        };
        let pattern = if let Some(suffix) = pattern.strip_prefix("*.") {
            HostPattern::Suffix(format!(".{}", suffix.to_ascii_lowercase()))
        } else if let Some((addr, len)) = pattern.split_once('/') {
            let addr: IpAddr = addr.parse().map_err(|_| format!("{pattern:?}: not a network"))?;
            let len: u8 = len.parse().map_err(|_| format!("{pattern:?}: not a prefix length"))?;
            if len > if addr.is_ipv4() { 32 } else { 128 } {
                return Err(format!("{pattern:?}: prefix length too long"));
            }
            HostPattern::Network(addr, len)
        } else if crate::crd::rules::is_host(pattern) {
            HostPattern::Name(pattern.to_ascii_lowercase())
        } else {
            return Err(format!("{pattern:?}: give a host name, *.domain or an address/prefix"));
        };
        Ok(HostRule { namespace, pattern })
    }
}

impl HostRule {
    fn allows(&self, namespace: &str, host: &str) -> bool {
        if self.namespace.as_deref().is_some_and(|ns| ns != namespace) {
            return false;
        }
        let host = host.to_ascii_lowercase();
        match &self.pattern {
            HostPattern::Name(name) => host == *name,
            HostPattern::Suffix(suffix) => host.ends_with(suffix.as_str()),
            HostPattern::Network(net, len) => {
                host.parse::<IpAddr>().is_ok_and(|ip| in_network(ip, *net, *len))
            }
        }
    }
}

fn in_network(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// How to reach the agent of a node of `namespace` at `endpoint`, given the node's own
/// credentials (`Err`: why there are none): the access to use, or why the controller must not
/// connect. `managed`: the endpoint is the node's pod, which the controller chose itself.
pub fn reach(
    policy: &AgentPolicy,
    namespace: &str,
    endpoint: &str,
    managed: bool,
    credentials: Result<AgentAccess, String>,
) -> Result<AgentAccess, String> {
    let uri: tonic::transport::Uri =
        endpoint.parse().map_err(|_| format!("spec.agent.endpoint {endpoint:?} is not a URL"))?;
    let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
    if !managed
        && !policy.endpoint_hosts.is_empty()
        && !policy.endpoint_hosts.iter().any(|r| r.allows(namespace, &host))
    {
        return Err(format!(
            "spec.agent.endpoint names host {host:?}, which the operator does not allow for namespace {namespace}; use an allowed host, or ask the operator's administrator (--agent-endpoint-hosts)"
        ));
    }
    match uri.scheme_str() {
        Some("https") => credentials,
        Some("http") if !policy.allow_plaintext_loopback => Err(format!(
            "spec.agent.endpoint {endpoint} is plain http: the controller sends bundles (they hold SIP and trunk secrets) and credentials only over TLS; use https:// — the agent serves TLS with the certificate of its node's Secret"
        )),
        Some("http") if !is_loopback(&host) => Err(format!(
            "spec.agent.endpoint {endpoint} is plain http on a host that is not loopback; plaintext agents are allowed only on this machine's loopback (local testing): use https://"
        )),
        // Local testing on loopback: no credential ever crosses plaintext.
        Some("http") => Ok(AgentAccess::default()),
        _ => Err(format!("spec.agent.endpoint {endpoint:?} must start with https://")),
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretValue;

    fn own() -> Result<AgentAccess, String> {
        Ok(AgentAccess { token: Some(SecretValue::new("NodeToken0123456")), ..AgentAccess::default() })
    }

    fn rules(list: &[&str]) -> Vec<HostRule> {
        list.iter().map(|r| r.parse().unwrap()).collect()
    }

    #[test]
    fn credentials_go_only_over_tls_and_plaintext_only_to_loopback_when_allowed() {
        let strict = AgentPolicy::default();
        let testing = AgentPolicy { allow_plaintext_loopback: true, ..AgentPolicy::default() };
        let token = |a: &Result<AgentAccess, String>| a.as_ref().ok().and_then(|a| a.token.clone());
        let cases: [(&str, &AgentPolicy, &str, Result<bool, &str>); 6] = [
            ("tls", &strict, "https://pbx.example:7443", Ok(true)),
            ("plaintext refused", &strict, "http://127.0.0.1:7443", Err("plain http")),
            ("plaintext off loopback", &testing, "http://192.0.2.7:7443", Err("not loopback")),
            ("plaintext on loopback: no credential", &testing, "http://127.0.0.1:7443", Ok(false)),
            ("ipv6 loopback", &testing, "http://[::1]:7443", Ok(false)),
            ("other scheme", &strict, "ftp://pbx:21", Err("must start with https://")),
        ];
        for (name, policy, endpoint, want) in cases {
            let got = reach(policy, "default", endpoint, false, own());
            match want {
                Ok(with_token) => assert_eq!(token(&got).is_some(), with_token, "{name}: {got:?}"),
                Err(text) => assert!(got.as_ref().is_err_and(|e| e.contains(text)), "{name}: {got:?}"),
            }
        }
        let none = reach(&strict, "default", "https://pbx:7443", false, Err("no Secret yet".into()));
        assert_eq!(none.unwrap_err(), "no Secret yet");
    }

    #[test]
    fn endpoint_hosts_are_limited_per_namespace() {
        let policy = AgentPolicy {
            endpoint_hosts: rules(&["*.pbx.example", "team-a/192.0.2.0/24", "lab/agent-1"]),
            ..AgentPolicy::default()
        };
        let ok = |ns: &str, endpoint: &str| reach(&policy, ns, endpoint, false, own()).is_ok();
        assert!(ok("team-b", "https://office-a.pbx.example:7443"));
        assert!(!ok("team-b", "https://pbx.example.org:7443"));
        assert!(ok("team-a", "https://192.0.2.10:7443"));
        assert!(!ok("team-b", "https://192.0.2.10:7443"), "the network is team-a's only");
        assert!(ok("lab", "https://AGENT-1:7443"));
        assert!(!ok("team-b", "https://10.0.0.1:22"));
        let err = reach(&policy, "team-b", "https://10.0.0.1:22", false, own()).unwrap_err();
        assert!(err.contains("does not allow") && !err.contains("NodeToken"), "{err}");
        assert!(
            reach(&policy, "team-b", "https://asterisk-x-0.asterisk-x.team-b.svc:7443", true, own()).is_ok()
        );
        assert!("bad host!".parse::<HostRule>().is_err());
        assert!("10.0.0.0/99".parse::<HostRule>().is_err());
    }
}
