//! Every fetch of a provisioning file: logged (phone, file, source, user agent, result, never a
//! credential), counted by vendor, protocol and result, and — when it served a phone's own
//! file — remembered as that phone's last fetch, which its Phone status shows.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::crd::ProvisioningStatus;

/// How a file was fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// TFTP (RFC 1350).
    Tftp,
    /// HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Protocol {
    /// As in metrics labels and the Phone status.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tftp => "tftp",
            Protocol::Http => "http",
            Protocol::Https => "https",
        }
    }
}

/// How a fetch ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchResult {
    /// The whole file was served.
    Ok,
    /// No such file (or not one this caller may see).
    NotFound,
    /// HTTP without valid credentials from outside the allowed networks.
    Unauthorized,
    /// TFTP from outside the allowed networks.
    Forbidden,
    /// The transfer broke off (the client gave up or stopped answering).
    Failed,
}

impl FetchResult {
    /// As in metrics labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FetchResult::Ok => "ok",
            FetchResult::NotFound => "not_found",
            FetchResult::Unauthorized => "unauthorized",
            FetchResult::Forbidden => "forbidden",
            FetchResult::Failed => "failed",
        }
    }
}

/// One fetch, as the servers report it.
#[derive(Clone, Debug)]
pub struct Fetch<'a> {
    /// The name asked for.
    pub file: &'a str,
    /// Whose file it is, when it is one.
    pub phone: Option<&'a str>,
    /// Its vendor (`unknown` for names that are no file).
    pub vendor: &'a str,
    /// Where the request came from.
    pub source: SocketAddr,
    /// HTTP User-Agent.
    pub user_agent: Option<&'a str>,
    /// How.
    pub protocol: Protocol,
    /// How it ended.
    pub result: FetchResult,
}

/// A phone's last successful fetch of one of its own files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastFetch {
    /// The Phone.
    pub phone: String,
    /// The file served.
    pub file: String,
    /// The source address (IP, without the port).
    pub source: String,
    /// `tftp`, `http` or `https`.
    pub protocol: String,
    /// HTTP User-Agent, empty for TFTP.
    pub user_agent: String,
    /// When, in milliseconds since the Unix epoch.
    pub unix_millis: i64,
}

impl LastFetch {
    /// The record of `fetch`, now.
    pub fn of(fetch: &Fetch, phone: &str) -> LastFetch {
        let unix_millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        LastFetch {
            phone: phone.to_owned(),
            file: fetch.file.to_owned(),
            source: fetch.source.ip().to_canonical().to_string(),
            protocol: fetch.protocol.as_str().to_owned(),
            user_agent: fetch.user_agent.unwrap_or("").to_owned(),
            unix_millis,
        }
    }
}

/// What a Phone's status says about its provisioning, from its node's last fetch record.
pub fn phone_status(last: &LastFetch) -> ProvisioningStatus {
    let non_empty = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
    ProvisioningStatus {
        last_fetch_time: k8s_openapi::jiff::Timestamp::from_millisecond(last.unix_millis)
            .ok()
            .map(|t| t.to_string()),
        last_fetch_source: non_empty(&last.source),
        last_fetch_file: non_empty(&last.file),
        last_fetch_protocol: non_empty(&last.protocol),
        user_agent: non_empty(&last.user_agent),
    }
}

/// `{vendor, protocol, result}`: a handful of each, so few series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FetchLabels {
    /// `cisco`, `yealink`, `polycom`, `snom`, or `unknown` for names that are no file.
    pub vendor: String,
    /// `tftp`, `http`, `https`.
    pub protocol: String,
    /// `ok`, `not_found`, `unauthorized`, `forbidden`, `failed`.
    pub result: String,
}

/// The provisioning metrics of the agent (`asterisk_agent_provisioning_*`). Clones share values.
#[derive(Clone, Default)]
pub struct ProvisionMetrics {
    /// Fetches by vendor, protocol and result.
    pub fetches: Family<FetchLabels, Counter>,
    /// Files the agent serves now.
    pub files: Gauge,
}

impl ProvisionMetrics {
    /// Registers the metrics in the agent's registry.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("asterisk_agent_provisioning");
        r.register(
            "fetches",
            "Provisioning file requests by vendor, protocol and result",
            self.fetches.clone(),
        );
        r.register("files", "Provisioning files served", self.files.clone());
    }

    /// Counts one fetch.
    pub fn count(&self, fetch: &Fetch) {
        let labels = FetchLabels {
            vendor: fetch.vendor.to_owned(),
            protocol: fetch.protocol.as_str().to_owned(),
            result: fetch.result.as_str().to_owned(),
        };
        self.fetches.get_or_create(&labels).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phone_status_says_when_from_where_and_how() {
        let last = LastFetch {
            phone: "reception".into(),
            file: "SEP001A2B3C4D5E.cnf.xml".into(),
            source: "10.20.0.7".into(),
            protocol: "tftp".into(),
            user_agent: String::new(),
            unix_millis: 1_795_000_000_123,
        };
        let status = phone_status(&last);
        assert_eq!(status.last_fetch_time.as_deref(), Some("2026-11-18T11:06:40.123Z"));
        assert_eq!(status.last_fetch_source.as_deref(), Some("10.20.0.7"));
        assert_eq!(status.last_fetch_file.as_deref(), Some("SEP001A2B3C4D5E.cnf.xml"));
        assert_eq!(status.last_fetch_protocol.as_deref(), Some("tftp"));
        assert_eq!(status.user_agent, None, "TFTP has no user agent");
    }

    #[test]
    fn an_ipv4_mapped_source_is_shown_as_ipv4() {
        let fetch = Fetch {
            file: "f",
            phone: Some("p"),
            vendor: "snom",
            source: "[::ffff:10.0.0.1]:1234".parse().unwrap(),
            user_agent: Some("snomD785"),
            protocol: Protocol::Http,
            result: FetchResult::Ok,
        };
        let last = LastFetch::of(&fetch, "p");
        assert_eq!((last.source.as_str(), last.user_agent.as_str()), ("10.0.0.1", "snomD785"));
    }
}
