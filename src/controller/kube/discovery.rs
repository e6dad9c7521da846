//! Which of the APIs a managed node needs (v1 Secrets and Services, apps/v1 StatefulSets) the
//! server serves: asked once, and again while some are missing, so a node on a server without
//! them gets a condition instead of failing requests every pass.

use std::time::{Duration, Instant};

use kube::Client;

/// APIs a managed node needs, as named in its condition.
pub(crate) const SECRETS_API: &str = "v1 Secrets";
pub(crate) const SERVICES_API: &str = "v1 Services";
pub(crate) const STATEFULSETS_API: &str = "apps/v1 StatefulSets";

/// While workload APIs are missing, ask the server again this often.
const REDISCOVER: Duration = Duration::from_secs(60);

/// What the last discovery found.
#[derive(Debug, Default)]
pub(crate) struct WorkloadApis {
    /// APIs found missing (empty: all served); `None`: not asked yet.
    missing: Option<Vec<String>>,
    discovered: Option<Instant>,
}

impl WorkloadApis {
    /// The APIs managed nodes need that the server does not serve (asked again after
    /// [`REDISCOVER`] while some are missing); says so once in the log when that changes.
    /// `secrets_watched`: the controller started with a Secret cache (without one it cannot
    /// see the Secrets it creates).
    pub async fn missing(&mut self, client: &Client, secrets_watched: bool) -> Vec<String> {
        let due = match (&self.missing, self.discovered) {
            (Some(m), _) if m.is_empty() => false,
            (Some(_), Some(at)) => at.elapsed() >= REDISCOVER,
            _ => true,
        };
        if due {
            let found = discover(client).await;
            let before = self.missing.replace(found.clone());
            self.discovered = Some(Instant::now());
            if before.as_ref() != Some(&found) {
                match found.is_empty() {
                    true => tracing::info!("the API server serves what managed nodes need"),
                    false => tracing::warn!(
                        missing = %found.join(", "),
                        "the API server does not serve what managed nodes need: they get Managed=False (WorkloadAPIUnavailable); the other nodes reconcile as usual"
                    ),
                }
            }
        }
        let mut missing = self.missing.clone().unwrap_or_default();
        if !secrets_watched && !missing.iter().any(|m| m.starts_with(SECRETS_API)) {
            missing.push(format!("{SECRETS_API} (not served when the controller started; restart it)"));
        }
        missing
    }

    /// A request answered 404 for `api`: it is gone; discover again next pass.
    pub fn lost(&mut self, api: &str) {
        tracing::warn!(api, "the API server answered 404 for a workload API managed nodes need");
        self.missing = Some(vec![api.to_owned()]);
        self.discovered = None;
    }
}

/// Which of the APIs managed nodes need the server does not serve.
async fn discover(client: &Client) -> Vec<String> {
    let mut missing = Vec::new();
    let core = client.list_core_api_resources("v1").await;
    let apps = client.list_api_group_resources("apps/v1").await;
    for (result, wanted) in [
        (core, vec![("secrets", SECRETS_API), ("services", SERVICES_API)]),
        (apps, vec![("statefulsets", STATEFULSETS_API)]),
    ] {
        match result {
            Ok(list) => missing.extend(
                wanted
                    .into_iter()
                    .filter(|(r, _)| !list.resources.iter().any(|x| x.name == *r))
                    .map(|(_, api)| api.to_owned()),
            ),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                missing.extend(wanted.into_iter().map(|(_, api)| api.to_owned()))
            }
            Err(e) => {
                missing.extend(wanted.into_iter().map(|(_, api)| format!("{api} (discovery failed: {e})")))
            }
        }
    }
    missing
}

/// A 404 for the resource type itself ("the server could not find the requested resource"),
/// not for one object or its namespace.
pub(crate) fn not_served(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if not_served_status(s))
}

/// [`not_served`] on the Status the server answered.
pub(crate) fn not_served_status(s: &kube::core::Status) -> bool {
    s.code == 404 && s.message.contains("could not find the requested resource")
}
