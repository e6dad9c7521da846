//! Naming rules that values must follow because they end up in Asterisk config lines, custom
//! device names and Kubernetes object names. One home for each rule: the CRD schema states it
//! (so `kubectl apply` refuses at once), and the topology resolver and `bootstrap` check it again
//! for values that did not pass an API server (manifests read offline, command-line flags).

/// Longest DNS-1123 label (a Kubernetes object name of most kinds).
pub const DNS_LABEL_MAX: usize = 63;

/// What to do about a name that is not a DNS-1123 label.
pub const DNS_LABEL_FIX: &str =
    "use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit";

/// Is `name` a DNS-1123 label? Resource names double as Asterisk section names and custom
/// device names, so they must be (what the API server enforces for most kinds anyway).
pub fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= DNS_LABEL_MAX
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Schema pattern of a host name or IP address (a node's `address`, its NAT external address).
pub const HOST_PATTERN: &str = r"^[A-Za-z0-9]([A-Za-z0-9.:-]{0,251}[A-Za-z0-9])?$";

/// Longest host name.
pub const HOST_MAX: usize = 253;

/// What to do about a value that is not a host.
pub const HOST_FIX: &str = "use a host name or an IP address (letters, digits, '.', '-', ':')";

/// Does `s` match [`HOST_PATTERN`]: letters, digits, '.', '-' and ':', starting and ending with a
/// letter or digit, at most 253 characters?
pub fn is_host(s: &str) -> bool {
    let edge = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    !s.is_empty()
        && s.len() <= HOST_MAX
        && edge(s.bytes().next())
        && edge(s.bytes().last())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["office-a", "a", "3001", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "Office", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }

    #[test]
    fn hosts_as_the_schema_pattern_states_them() {
        for ok in ["192.0.2.10", "pbx.example.com", "2001:db8::1", "a", "office-a"] {
            assert!(is_host(ok), "{ok}");
        }
        for bad in ["", "-pbx", "pbx.", ":1", "pbx example", "pbx;x", "[::1]", &"a".repeat(254)] {
            assert!(!is_host(bad), "{bad}");
        }
        assert!(HOST_PATTERN.contains("{0,251}") && HOST_MAX == 251 + 2, "pattern and length agree");
    }
}
