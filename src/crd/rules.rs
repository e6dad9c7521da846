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

/// The prefix of every section and context name the operator renders itself
/// (`operator-transport`, `operator-local`, `operator-routes`, `operator-from-<trunk>`).
pub const OPERATOR_PREFIX: &str = "operator-";

/// The phone context nodes get by default: the operator's own, so it may carry the prefix.
pub const DEFAULT_PHONE_CONTEXT: &str = "operator-phones";

/// Sections a trunk renders besides the one named after it (IAX2 user `<trunk>-in`; PJSIP
/// `<trunk>-auth`, `-identify`, `-registration`): another trunk must not be named like them.
pub const TRUNK_SECTION_SUFFIXES: [&str; 4] = ["-in", "-auth", "-identify", "-registration"];

/// Why `name` cannot be a trunk's name (it is also the name of its sections on both ends), if
/// it cannot: phones' sections are their extensions (digits), `general` is iax.conf's own
/// section, and the operator's and other trunks' derived sections are taken.
pub fn trunk_name_conflict(name: &str) -> Option<String> {
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Some(format!(
            "{name:?} does not start with a letter, so its sections could be taken for a phone's (phones' sections are named after their extensions)"
        ));
    }
    if name == "general" {
        return Some("\"general\" is iax.conf's own [general] section".into());
    }
    if name.starts_with(OPERATOR_PREFIX) {
        return Some(format!(
            "names starting with {OPERATOR_PREFIX:?} are the operator's own sections and contexts"
        ));
    }
    TRUNK_SECTION_SUFFIXES.iter().find(|s| name.ends_with(*s)).map(|suffix| {
        format!(
            "names ending in {suffix:?} are the sections the operator renders for trunk {:?}",
            &name[..name.len() - suffix.len()]
        )
    })
}

/// Why `context` cannot be a node's phone context, if it cannot: `general` and `globals` are
/// extensions.conf's own sections, and `operator-…` contexts (but the default) are the operator's.
pub fn phone_context_conflict(context: &str) -> Option<String> {
    match context {
        "general" | "globals" => Some(format!("[{context}] is extensions.conf's own section, not a context")),
        c if c.starts_with(OPERATOR_PREFIX) && c != DEFAULT_PHONE_CONTEXT => Some(format!(
            "contexts starting with {OPERATOR_PREFIX:?} are the operator's own (local extensions, routes, trunks)"
        )),
        _ => None,
    }
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
    fn reserved_section_and_context_names() {
        for taken in
            ["3001", "general", "operator-transport", "a-b-in", "x-auth", "x-identify", "x-registration"]
        {
            assert!(trunk_name_conflict(taken).is_some(), "{taken}");
        }
        for free in ["a-b-iax", "office-link", "b2"] {
            assert_eq!(trunk_name_conflict(free), None, "{free}");
        }
        for taken in ["general", "globals", "operator-routes", "operator-local", "operator-from-a-b"] {
            assert!(phone_context_conflict(taken).is_some(), "{taken}");
        }
        for free in [DEFAULT_PHONE_CONTEXT, "phones", "office-a-phones", "default"] {
            assert_eq!(phone_context_conflict(free), None, "{free}");
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
