//! `asterisk-operator controller`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use std::sync::Arc;

use super::agent_policy::{AgentPolicy, HostRule};
use super::kube::{self as kube_mode, KubeError, KubeOptions, LeaseSettings};
use super::manifests::{self, ManifestsError, ManifestsOptions};
use super::metrics::{self, ControllerMetrics};
use crate::agent::error::AgentError;

/// `asterisk-operator controller`.
#[derive(clap::Args, Debug, Clone)]
pub struct ControllerArgs {
    /// Manifest file or folder to reconcile instead of the API server (repeatable). Without it
    /// the controller watches the API server of the current kubeconfig / in-cluster config.
    #[arg(long = "manifests", env = "AO_CONTROLLER_MANIFESTS", value_delimiter = ',')]
    pub manifests: Vec<PathBuf>,
    /// `--manifests` mode: where every resource's status is written (YAML).
    #[arg(long, env = "AO_CONTROLLER_STATUS_FILE", default_value = "controller-status.yaml")]
    pub status_file: PathBuf,
    /// Where generated secrets are kept between runs (mode 0600): always in `--manifests` mode
    /// (default `controller-secrets.yaml`); against an API server only when it has no Secrets API.
    #[arg(long, env = "AO_CONTROLLER_SECRETS_FILE")]
    pub secrets_file: Option<PathBuf>,
    /// Seconds between reconciles (manifests are re-read each time; only changed bundles are pushed).
    #[arg(long, env = "AO_CONTROLLER_INTERVAL", default_value_t = 5.0)]
    pub interval: f64,
    /// `--manifests` mode: reconcile once and exit: 0 when everything is valid and applied, 1 otherwise.
    #[arg(long, requires = "manifests")]
    pub once: bool,
    /// Allow `http://` agent endpoints on loopback hosts, sending them no credential: for tests
    /// and a controller on the same machine as its agents. Off: every agent is reached over TLS
    /// with its node's own token and pinned certificate.
    #[arg(long, env = "AO_CONTROLLER_ALLOW_PLAINTEXT_AGENTS")]
    pub allow_plaintext_agents: bool,
    /// Hosts a `spec.agent.endpoint` may name, as `[NAMESPACE/]PATTERN` (PATTERN: a host name,
    /// `*.domain`, or an address/prefix), comma-separated or repeated. None: any host.
    #[arg(long, env = "AO_CONTROLLER_AGENT_ENDPOINT_HOSTS", value_delimiter = ',')]
    pub agent_endpoint_hosts: Vec<HostRule>,
    /// Namespaces to watch, comma-separated or repeated. None: every namespace (the controller
    /// then needs cluster-wide read access to the operator's resources and labelled Secrets).
    #[arg(long, env = "AO_CONTROLLER_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Images `spec.managed.image` may name, as prefixes (e.g. `ghcr.io/example/asterisk-operator:`),
    /// comma-separated or repeated. None: no managed node runs.
    #[arg(
        long = "managed-image-prefix",
        env = "AO_CONTROLLER_MANAGED_IMAGE_PREFIXES",
        value_delimiter = ','
    )]
    pub managed_image_prefixes: Vec<String>,
    /// Let managed nodes ask for `spec.managed.hostNetwork`.
    #[arg(long, env = "AO_CONTROLLER_ALLOW_HOST_NETWORK")]
    pub allow_host_network: bool,
    /// Seconds to wait for a deleted resource's cleanup (its node applying a bundle without it;
    /// a deleted node's agent applying the empty bundle) before releasing it anyway with a
    /// Warning Event. 0: wait as long as it takes. A resource annotated
    /// `asterisk.operator.dev/skip-cleanup: "true"` is released at once.
    #[arg(long, env = "AO_CONTROLLER_CLEANUP_TIMEOUT", default_value_t = 1800)]
    pub cleanup_timeout: u64,
    /// Namespace of the leader-election Lease (the controller's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Address of `/metrics`, `/healthz` and `/readyz` (not served with `--once`).
    #[arg(long, env = "AO_CONTROLLER_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    pub http_listen: std::net::SocketAddr,
    /// Log format.
    #[arg(long, env = "AO_CONTROLLER_LOG_FORMAT", value_parser = ["text", "json"], default_value = "text")]
    pub log_format: String,
}

/// Why the controller stopped.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// Bad settings.
    #[error(transparent)]
    Settings(#[from] AgentError),
    /// The reconcile failed as a whole.
    #[error(transparent)]
    Manifests(#[from] ManifestsError),
    /// No usable kubeconfig or in-cluster config.
    #[error("no Kubernetes client configuration (kubeconfig or in-cluster): {0}")]
    KubeConfig(#[source] kube::Error),
    /// The API-server mode failed.
    #[error(transparent)]
    Kube(#[from] KubeError),
}

/// Runs the controller until SIGTERM or ctrl-c (or once, with `--once`).
pub async fn run(args: ControllerArgs) -> Result<ExitCode, ControllerError> {
    if args.interval.is_nan() || args.interval <= 0.0 {
        return Err(AgentError::Options("--interval must be positive".into()).into());
    }
    let agents = AgentPolicy {
        allow_plaintext_loopback: args.allow_plaintext_agents,
        endpoint_hosts: args.agent_endpoint_hosts.clone(),
    };
    if let Some(ns) = args.namespaces.iter().find(|ns| !crate::crd::rules::is_dns_label(ns)) {
        return Err(AgentError::Options(format!("--namespaces: {ns:?} is not a namespace name")).into());
    }
    let interval = Duration::from_secs_f64(args.interval);
    // Without --manifests: fail on a missing cluster configuration before binding anything.
    let client = match args.manifests.is_empty() {
        true => Some(kube::Client::try_default().await.map_err(ControllerError::KubeConfig)?),
        false => None,
    };
    let metrics = Arc::new(ControllerMetrics::default());
    let _http = if args.once {
        None
    } else {
        // Unhealthy when no pass finished for ten intervals (at least a minute): a stuck loop.
        let stale = (interval * 10).max(Duration::from_secs(60));
        let (addr, task) = metrics::serve(args.http_listen, metrics.clone(), stale)
            .await
            .map_err(|source| AgentError::Bind { what: "HTTP", addr: args.http_listen, source })?;
        tracing::info!(http = %addr, "serving /metrics, /healthz, /readyz");
        Some(task)
    };
    if let Some(client) = client {
        let opts = KubeOptions {
            agents,
            secrets_file: args.secrets_file.clone(),
            resync: interval,
            debounce: Duration::from_millis(200),
            lease: Some(LeaseSettings {
                namespace: args.lease_namespace.clone(),
                name: "asterisk-operator-controller".into(),
                identity: std::env::var("HOSTNAME")
                    .unwrap_or_else(|_| format!("controller-{}", std::process::id())),
                duration: Duration::from_secs(15),
            }),
            managed: super::managed_settings::ManagedSettings {
                image_prefixes: args.managed_image_prefixes.clone(),
                allow_host_network: args.allow_host_network,
                ..super::managed_settings::ManagedSettings::default()
            },
            namespaces: args.namespaces.clone(),
            cleanup_timeout: (args.cleanup_timeout > 0).then(|| Duration::from_secs(args.cleanup_timeout)),
        };
        kube_mode::run(client, opts, &metrics, crate::daemon::shutdown_signal()).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let opts = ManifestsOptions {
        inputs: args.manifests.clone(),
        status_file: args.status_file.clone(),
        secrets_file: args.secrets_file.clone().unwrap_or_else(|| "controller-secrets.yaml".into()),
        agents,
    };
    let report =
        manifests::run(opts, interval, args.once, &metrics, crate::daemon::shutdown_signal()).await?;
    if args.once {
        for (node, ok) in &report.pushed {
            println!("{node}: {}", if *ok { "applied" } else { "NOT applied (see the status file)" });
        }
        for e in &report.errors {
            eprintln!("invalid: {e}");
        }
        let clean = report.errors.is_empty() && report.pushed.values().all(|ok| *ok);
        return Ok(if clean { ExitCode::SUCCESS } else { ExitCode::from(1) });
    }
    Ok(ExitCode::SUCCESS)
}
