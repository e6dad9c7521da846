//! `asterisk-operator controller`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use std::sync::Arc;

use super::kube::{self as kube_mode, KubeError, KubeOptions, LeaseSettings};
use super::manifests::{self, ManifestsError, ManifestsOptions};
use super::metrics::{self, ControllerMetrics};
use crate::agent::client::AgentAccess;
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
    /// File holding the agents' shared token.
    #[arg(long, env = "AO_CONTROLLER_AGENT_TOKEN_FILE")]
    pub agent_token_file: Option<PathBuf>,
    /// CA (PEM) that signed the agents' certificates.
    #[arg(long, env = "AO_CONTROLLER_AGENT_CA")]
    pub agent_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mTLS to the agents.
    #[arg(long, env = "AO_CONTROLLER_AGENT_CERT", requires = "agent_key")]
    pub agent_cert: Option<PathBuf>,
    /// Client key (PEM) for mTLS to the agents.
    #[arg(long, env = "AO_CONTROLLER_AGENT_KEY", requires = "agent_cert")]
    pub agent_key: Option<PathBuf>,
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
    let agents = AgentAccess {
        token: args
            .agent_token_file
            .as_deref()
            .map(crate::secret::SecretValue::read_file)
            .transpose()
            .map_err(AgentError::from)?,
        tls_ca: args.agent_ca.clone(),
        tls_ca_pem: None,
        tls_cert: args.agent_cert.clone(),
        tls_key: args.agent_key.clone(),
        tls_domain: None,
    };
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
            managed: super::managed_settings::ManagedSettings::default(),
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
