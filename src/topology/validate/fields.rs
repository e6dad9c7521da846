//! Rules for values that reach a config line, and the lookup of referenced secrets. The CRD
//! schema states the same rules; manifests read offline bypass it, so the resolver checks again.

use std::net::IpAddr;

use super::Reporter;
use crate::crd::SecretKeyRef;
use crate::secret::SecretValue;
use crate::topology::{RSA_PRIVATE_KEY, RSA_PUBLIC_KEY, Reason, ResourceSet, SecretSource};

/// A context or mailbox context: letters, digits, '_' and '-', at most `max` of them.
pub(super) fn is_name(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub(super) fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_codec(s: &str) -> bool {
    (2..=16).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// An address and prefix length (`192.0.2.0/24`, `2001:db8::/32`).
pub(super) fn valid_cidr(cidr: &str) -> bool {
    let Some((addr, len)) = cidr.split_once('/') else { return false };
    let Ok(addr) = addr.parse::<IpAddr>() else { return false };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    len.parse::<u8>().is_ok_and(|l| l <= max)
}

/// Checks every codec name of the list at `field`; returns whether all are fine.
pub(super) fn check_codecs(r: &mut Reporter, field: &str, codecs: &[String]) -> bool {
    let mut ok = true;
    for (i, codec) in codecs.iter().enumerate() {
        ok &= r.check(
            is_codec(codec),
            format!("{field}[{i}]"),
            codec,
            "use Asterisk codec names: 2-16 lowercase letters, digits or '_' (ulaw, alaw, g722, opus, …)",
        );
    }
    ok
}

/// Characters that Asterisk config lines or IAX2 `register =>` lines cannot carry in a secret.
fn secret_is_config_safe(value: &str) -> bool {
    value
        .chars()
        .all(|c| c.is_ascii_graphic() && !matches!(c, ';' | ':' | '@' | '"' | '\\' | '#' | ',' | '[' | ']'))
}

const MIN_SECRET_LEN: usize = 12;

/// Looks up key `key` of the Secret `reference` names; reports an error on `field` when it is
/// missing or unusable.
pub(super) fn secret_value(
    set: &ResourceSet,
    r: &mut Reporter,
    field: &str,
    reference: &SecretKeyRef,
    key: &str,
) -> Option<SecretValue> {
    let Some(value) = set.secrets.get(&reference.name).and_then(|s| s.get(key)) else {
        let (problem, fix) = match (set.secrets.contains_key(&reference.name), set.secret_source) {
            (true, _) => (
                format!("Secret {:?} has no key {key:?}", reference.name),
                "add the key to the Secret, or remove the reference to have a Secret generated",
            ),
            (false, SecretSource::Files) => (
                format!("Secret {:?} does not exist", reference.name),
                "create the Secret with that key, or remove the reference to have one generated",
            ),
            // Whether an unlabelled Secret of that name exists is not the resource author's
            // business: the message is the same either way.
            (false, SecretSource::Labelled) => (
                format!("Secret {:?} is not available to the operator", reference.name),
                "create it with that key and the label asterisk.operator.dev/secret=usable (the operator reads no other Secret), or remove the reference to have one generated",
            ),
        };
        r.error(field, Reason::MissingSecret, problem, fix);
        return None;
    };
    if key == RSA_PRIVATE_KEY || key == RSA_PUBLIC_KEY {
        if !value.expose().contains("-----BEGIN") {
            r.error(
                field,
                Reason::UnusableSecret,
                format!("Secret {:?} key {key:?} is not a PEM key", reference.name),
                "store the key pair made by `astgenkey -n` (PEM) under rsa.key and rsa.pub",
            );
            return None;
        }
        return Some(value.clone());
    }
    if value.expose().len() < MIN_SECRET_LEN || !secret_is_config_safe(value.expose()) {
        r.error(
            field,
            Reason::UnusableSecret,
            format!(
                "Secret {:?} key {key:?} is shorter than {MIN_SECRET_LEN} characters or holds spaces or one of ; : @ \" \\ # , [ ]",
                reference.name
            ),
            "use a longer secret of letters, digits and simple punctuation, or delete the Secret to have one generated",
        );
        return None;
    }
    Some(value.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_forms() {
        assert!(valid_cidr("192.0.2.0/24"));
        assert!(valid_cidr("2001:db8::/32"));
        assert!(!valid_cidr("192.0.2.0/33"));
        assert!(!valid_cidr("192.0.2.0"));
        assert!(!valid_cidr("example.com/24"));
    }

    #[test]
    fn config_unsafe_secrets_are_refused() {
        assert!(secret_is_config_safe("Abc123-_.!%&"));
        for bad in ["a;b", "a b", "a:b", "a@b", "a\"b", "a\\b", "a#b", "a,b", "a[b", "a\nb"] {
            assert!(!secret_is_config_safe(bad), "{bad:?}");
        }
    }
}
