//! `asterisk-operator agent` and `asterisk-operator push`: flags (each also from an environment
//! variable) and the two entry points main.rs calls.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::client::{self, AgentAccess, ClientOptions};
use super::error::AgentError;
use super::node::{NodeConfig, bundle_to_proto};
use super::server::{self, AgentOptions, ServerTls};
use crate::ami::SessionConfig;
use crate::render::Bundle;
use crate::secret::SecretValue;

/// `asterisk-operator agent`.
#[derive(clap::Args, Debug, Clone)]
pub struct AgentArgs {
    /// Node name (the AsteriskNode this agent serves); bundles for other nodes are refused.
    #[arg(long, env = "AO_AGENT_NODE")]
    pub node: String,
    /// The AsteriskNode's namespace; bundles for other namespaces are refused (node names are
    /// unique only within a namespace).
    #[arg(long, env = "AO_AGENT_NAMESPACE", default_value = crate::crd::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Asterisk's AMI address.
    #[arg(long, env = "AO_AGENT_AMI_ADDR", default_value = "127.0.0.1:5038")]
    pub ami_addr: String,
    /// AMI user (a manager.conf section; see docs/agent.md for the classes it needs).
    #[arg(long, env = "AO_AGENT_AMI_USER", default_value = "asterisk-operator")]
    pub ami_user: String,
    /// File holding the AMI secret.
    #[arg(long, env = "AO_AGENT_AMI_SECRET_FILE")]
    pub ami_secret_file: PathBuf,
    /// Asterisk's config directory, where the `*_operator.conf` files go.
    #[arg(long, env = "AO_AGENT_CONFIG_DIR", default_value = "/etc/asterisk")]
    pub config_dir: PathBuf,
    /// Asterisk's key directory (RSA keys of IAX2 trunks).
    #[arg(long, env = "AO_AGENT_KEYS_DIR", default_value = "/var/lib/asterisk/keys")]
    pub keys_dir: PathBuf,
    /// Where the agent records what it applied (default: `<config-dir>/.asterisk-operator-applied.json`).
    #[arg(long, env = "AO_AGENT_STATE_FILE")]
    pub state_file: Option<PathBuf>,
    /// Asterisk's log file (e.g. /var/log/asterisk/messages): its errors about our files are
    /// returned with a failed apply.
    #[arg(long, env = "AO_AGENT_ASTERISK_LOG")]
    pub asterisk_log: Option<PathBuf>,
    /// gRPC listen address (Agent service).
    #[arg(long, env = "AO_AGENT_GRPC_LISTEN", default_value = "0.0.0.0:7443")]
    pub grpc_listen: SocketAddr,
    /// HTTP listen address (/healthz, /readyz, /metrics).
    #[arg(long, env = "AO_AGENT_HTTP_LISTEN", default_value = "0.0.0.0:9090")]
    pub http_listen: SocketAddr,
    /// Server certificate (PEM) for gRPC over TLS.
    #[arg(long, env = "AO_AGENT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Server key (PEM).
    #[arg(long, env = "AO_AGENT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) that client certificates must chain to: mTLS.
    #[arg(long, env = "AO_AGENT_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// File holding a shared token callers must send as `authorization: Bearer <token>`.
    #[arg(long, env = "AO_AGENT_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Serve gRPC (and the mesh, without mesh certificates) in plaintext. Only on a loopback
    /// address: for tests and a controller on the same host.
    #[arg(long, env = "AO_AGENT_PLAINTEXT")]
    pub plaintext: bool,
    /// Accept callers that present neither a token nor a client certificate. Only on a
    /// loopback address.
    #[arg(long, env = "AO_AGENT_NO_AUTH")]
    pub no_auth: bool,
    /// Both --plaintext and --no-auth (local testing only; loopback addresses only).
    #[arg(long, env = "AO_AGENT_INSECURE")]
    pub insecure: bool,
    /// Device-state mesh listen address (other agents subscribe here); absent: no mesh.
    #[arg(long, env = "AO_AGENT_MESH_LISTEN")]
    pub mesh_listen: Option<SocketAddr>,
    /// Mesh CA (PEM) that signs every agent's mesh certificate.
    #[arg(long, env = "AO_AGENT_MESH_CA", requires_all = ["mesh_cert", "mesh_key"])]
    pub mesh_ca: Option<PathBuf>,
    /// This agent's mesh certificate (PEM; DNS SAN = the node name).
    #[arg(long, env = "AO_AGENT_MESH_CERT", requires = "mesh_ca")]
    pub mesh_cert: Option<PathBuf>,
    /// Its key (PEM).
    #[arg(long, env = "AO_AGENT_MESH_KEY", requires = "mesh_ca")]
    pub mesh_key: Option<PathBuf>,
    /// Seconds Asterisk has to answer the AMI Ping of /healthz.
    #[arg(long, env = "AO_AGENT_PING_TIMEOUT", default_value_t = 3.0)]
    pub ping_timeout: f64,
    /// Seconds between polls of counts and trunk states.
    #[arg(long, env = "AO_AGENT_POLL_INTERVAL", default_value_t = 15.0)]
    pub poll_interval: f64,
    /// One `asterisk_phone_registered{endpoint}` series per phone.
    #[arg(long, env = "AO_AGENT_PER_PHONE_METRICS")]
    pub per_phone_metrics: bool,
    /// SIP OPTIONS probe of the node's own transport at each poll: `auto` (the transport of the
    /// applied `pjsip_operator.conf`, a wildcard bind probed on loopback), `off`, or
    /// `udp:ADDRESS:PORT` / `tcp:ADDRESS:PORT`.
    #[arg(long, env = "AO_AGENT_SIP_PROBE", default_value = "auto")]
    pub sip_probe: crate::agent::sip_probe::ProbeSetting,
    /// Log format.
    #[arg(long, env = "AO_AGENT_LOG_FORMAT", value_parser = ["text", "json"], default_value = "text")]
    pub log_format: String,
    /// Test-only fault injection (`hold-before-reload`): the crash tests use it; never set it.
    #[arg(long, env = "AO_AGENT_TEST_FAULT", hide = true)]
    pub test_fault: Option<super::node::Fault>,
    /// Serve the desk phones' files over TFTP, on ADDR[:PORT] (alone: 0.0.0.0:69).
    #[arg(long, env = "AO_AGENT_PROVISION_TFTP", num_args = 0..=1, default_missing_value = "0.0.0.0:69", value_parser = listen_addr(crate::provision::TFTP_PORT))]
    pub provision_tftp: Option<SocketAddr>,
    /// Serve them over HTTP, on ADDR[:PORT] (alone: 0.0.0.0:6970).
    #[arg(long, env = "AO_AGENT_PROVISION_HTTP", num_args = 0..=1, default_missing_value = "0.0.0.0:6970", value_parser = listen_addr(crate::provision::HTTP_PORT))]
    pub provision_http: Option<SocketAddr>,
    /// Serve them over HTTPS, on ADDR[:PORT] (alone: 0.0.0.0:6971); needs --provision-tls-cert/-key.
    #[arg(long, env = "AO_AGENT_PROVISION_HTTPS", num_args = 0..=1, default_missing_value = "0.0.0.0:6971", value_parser = listen_addr(crate::provision::HTTPS_PORT), requires_all = ["provision_tls_cert", "provision_tls_key"])]
    pub provision_https: Option<SocketAddr>,
    /// Certificate chain (PEM) of the provisioning HTTPS listener.
    #[arg(long, env = "AO_AGENT_PROVISION_TLS_CERT", requires = "provision_https")]
    pub provision_tls_cert: Option<PathBuf>,
    /// Its key (PEM).
    #[arg(long, env = "AO_AGENT_PROVISION_TLS_KEY", requires = "provision_https")]
    pub provision_tls_key: Option<PathBuf>,
    /// Where the served provisioning files are kept between restarts (not under --config-dir);
    /// used when a --provision-* server runs.
    #[arg(
        long,
        env = "AO_AGENT_PROVISIONING_FILE",
        default_value = "/var/lib/asterisk-operator/provisioning.json"
    )]
    pub provisioning_file: PathBuf,
}

/// A listen address `ADDR:PORT`, or `ADDR` alone with `default_port`.
fn listen_addr(default_port: u16) -> impl Fn(&str) -> Result<SocketAddr, String> + Clone {
    move |text: &str| {
        text.parse::<SocketAddr>()
            .or_else(|_| {
                text.trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .map(|ip| SocketAddr::new(ip, default_port))
            })
            .map_err(|_| format!("{text:?} is not ADDR or ADDR:PORT"))
    }
}

impl AgentArgs {
    /// Options for [`server::start`]; reads the secret and token files.
    pub fn options(&self) -> Result<AgentOptions, AgentError> {
        if !(self.ping_timeout > 0.0 && self.poll_interval > 0.0) {
            return Err(AgentError::Options("--ping-timeout and --poll-interval must be positive".into()));
        }
        let secret = SecretValue::read_file(&self.ami_secret_file)?;
        let mut ami = SessionConfig::new(&self.ami_addr, &self.ami_user, secret);
        // Keepalive well inside the health timeout, so a dead connection is noticed quickly.
        ami.keepalive = Some(Duration::from_secs(5));
        ami.backoff_max = Duration::from_secs(5);
        let mut node = NodeConfig::new(&self.node, self.config_dir.clone(), self.keys_dir.clone());
        node.namespace.clone_from(&self.namespace);
        if let Some(f) = &self.state_file {
            node.state_file = f.clone();
        }
        node.asterisk_log = self.asterisk_log.clone();
        node.ping_timeout = Duration::from_secs_f64(self.ping_timeout);
        node.poll_interval = Duration::from_secs_f64(self.poll_interval);
        node.per_phone_metrics = self.per_phone_metrics;
        node.sip_probe = self.sip_probe;
        node.fault = self.test_fault;
        let serves_phones =
            self.provision_tftp.is_some() || self.provision_http.is_some() || self.provision_https.is_some();
        node.provisioning_file = serves_phones.then(|| self.provisioning_file.clone());
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(ServerTls {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            }),
            _ => None,
        };
        let token = self.token_file.as_deref().map(SecretValue::read_file).transpose()?;
        Ok(AgentOptions {
            node,
            ami,
            grpc_listen: self.grpc_listen,
            http_listen: self.http_listen,
            tls,
            token,
            plaintext: self.plaintext || self.insecure,
            no_auth: self.no_auth || self.insecure,
            mesh: self.mesh_listen.map(|listen| server::MeshOptions {
                listen,
                tls: match (&self.mesh_ca, &self.mesh_cert, &self.mesh_key) {
                    (Some(ca), Some(cert), Some(key)) => {
                        Some(crate::mesh::MeshTls { ca: ca.clone(), cert: cert.clone(), key: key.clone() })
                    }
                    _ => None,
                },
                endpoints: Default::default(),
            }),
            provision: crate::provision::ProvisionOptions {
                tftp: self.provision_tftp,
                http: self.provision_http,
                https: self.provision_https,
                tls_cert: self.provision_tls_cert.clone(),
                tls_key: self.provision_tls_key.clone(),
                tftp_max_blksize: None,
            },
        })
    }
}

/// Runs the agent until SIGTERM or ctrl-c.
pub async fn run_agent(args: AgentArgs) -> Result<ExitCode, AgentError> {
    let opts = args.options()?;
    server::run(opts, crate::daemon::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// `asterisk-operator push`.
#[derive(clap::Args, Debug, Clone)]
pub struct PushArgs {
    /// Agent URL: `https://host:7443`, or `http://…` for an agent started with `--insecure`.
    #[arg(long, env = "AO_PUSH_AGENT")]
    pub agent: String,
    /// File holding the agent's shared token.
    #[arg(long, env = "AO_PUSH_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// CA (PEM) that signed the agent's certificate.
    #[arg(long, env = "AO_PUSH_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mTLS.
    #[arg(long, env = "AO_PUSH_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Client key (PEM) for mTLS.
    #[arg(long, env = "AO_PUSH_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Name to verify the agent's certificate against (default: the URL's host).
    #[arg(long, env = "AO_PUSH_TLS_DOMAIN")]
    pub tls_domain: Option<String>,
    /// Node name (default: the folder's name).
    #[arg(long)]
    pub node: Option<String>,
    /// The node's namespace (the agent refuses a bundle for another one).
    #[arg(long, default_value = crate::crd::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// A rendered node folder (`render -o out` → `out/<node>`).
    pub dir: PathBuf,
}

/// Sends one rendered node folder; exit code 1 when the apply failed.
pub async fn run_push(args: PushArgs) -> Result<ExitCode, AgentError> {
    let node = match &args.node {
        Some(n) => n.clone(),
        None => args
            .dir
            .canonicalize()
            .map_err(|source| AgentError::Read { path: args.dir.clone(), source })?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| {
                AgentError::Options(format!(
                    "cannot tell the node name from {}; give --node",
                    args.dir.display()
                ))
            })?,
    };
    let bundle = Bundle::read_from(&node, &args.dir)?.in_namespace(&args.namespace);
    let access = AgentAccess {
        token: args.token_file.as_deref().map(SecretValue::read_file).transpose()?,
        tls_ca: args.tls_ca.clone(),
        tls_ca_pem: None,
        tls_cert: args.tls_cert.clone(),
        tls_key: args.tls_key.clone(),
        tls_domain: args.tls_domain.clone(),
    };
    let opts = ClientOptions::with_access(&args.agent, access);
    let mut c = client::connect(&opts).await?;
    let result = c.apply(bundle_to_proto(&bundle)).await?.into_inner();
    if args.json {
        println!("{}", result_json(&result));
    } else {
        print!("{}", result_text(&node, &bundle, &result));
    }
    Ok(if result.ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The result as one JSON object.
pub fn result_json(r: &super::proto::ApplyResult) -> String {
    serde_json::json!({
        "ok": r.ok,
        "appliedHash": r.applied_hash,
        "unchanged": r.unchanged,
        "changedFiles": r.changed_files,
        "reloadedModules": r.reloaded_modules,
        "rolledBack": r.rolled_back,
        "superseded": r.superseded,
        "restartRequired": r.restart_required,
        "durationSeconds": r.duration_seconds,
        "error": r.error.as_ref().map(|e| serde_json::json!({"file": e.file, "message": e.message})),
    })
    .to_string()
}

/// The result for people.
pub fn result_text(node: &str, bundle: &Bundle, r: &super::proto::ApplyResult) -> String {
    let mut s = String::new();
    let short = |h: &str| h.chars().take(12).collect::<String>();
    if r.ok && r.unchanged {
        s += &format!(
            "{node}: bundle {} already applied; nothing written, nothing reloaded\n",
            bundle.short_hash()
        );
    } else if r.ok {
        s += &format!(
            "{node}: applied bundle {} in {:.2} s\n  changed:  {}\n  reloaded: {}\n",
            bundle.short_hash(),
            r.duration_seconds,
            r.changed_files.join(", "),
            r.reloaded_modules.join(", ")
        );
    } else if !r.restart_required.is_empty() {
        s += &format!(
            "{node}: bundle {} written and reloaded, but NOT all in force: {}\n",
            bundle.short_hash(),
            r.restart_required
        );
    } else {
        let e = r.error.clone().unwrap_or_default();
        let file = if e.file.is_empty() { String::new() } else { format!("{}: ", e.file) };
        s += &format!("{node}: apply of bundle {} FAILED: {file}{}\n", bundle.short_hash(), e.message);
        if r.rolled_back {
            s += &format!("  rolled back; bundle {} stays in force\n", short(&r.applied_hash));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentArgs,
    }

    fn args(extra: &[&str]) -> Result<AgentArgs, clap::Error> {
        let base = [
            "agent",
            "--node",
            "office-a",
            "--ami-secret-file",
            "/dev/null",
            "--config-dir",
            "/etc/asterisk",
            "--grpc-listen",
            "127.0.0.1:7443",
            "--http-listen",
            "127.0.0.1:9090",
        ];
        Cli::try_parse_from(base.iter().chain(extra)).map(|c| c.agent)
    }

    #[test]
    fn provisioning_servers_are_off_unless_asked_and_take_their_default_ports() {
        let a = args(&[]).unwrap();
        assert_eq!((a.provision_tftp, a.provision_http, a.provision_https), (None, None, None));
        let a = args(&["--provision-tftp", "--provision-http", "10.20.0.2"]).unwrap();
        assert_eq!(a.provision_tftp, Some("0.0.0.0:69".parse().unwrap()));
        assert_eq!(a.provision_http, Some("10.20.0.2:6970".parse().unwrap()));
        let a = args(&["--provision-tftp", "127.0.0.1:6969", "--provision-http=[::1]"]).unwrap();
        assert_eq!(a.provision_tftp, Some("127.0.0.1:6969".parse().unwrap()));
        assert_eq!(a.provision_http, Some("[::1]:6970".parse().unwrap()));
        assert!(args(&["--provision-https"]).is_err(), "HTTPS needs a certificate and key");
        assert!(args(&["--provision-tftp", "not-an-address"]).is_err());
    }

    #[test]
    fn the_provisioning_file_is_only_used_when_serving_and_never_in_the_config_folder() {
        let dir = std::env::temp_dir().join(format!("ao-cli-prov-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("ami-secret");
        std::fs::write(&secret, "AgentAmiSecret0\n").unwrap();
        let secret = secret.to_string_lossy().into_owned();
        let with = |extra: &[&str]| {
            let mut a = args(extra).unwrap();
            a.ami_secret_file = secret.clone().into();
            a.insecure = true;
            a.options().unwrap()
        };
        assert_eq!(with(&[]).node.provisioning_file, None);
        let opts = with(&["--provision-tftp"]);
        assert_eq!(
            opts.node.provisioning_file.as_deref(),
            Some(std::path::Path::new("/var/lib/asterisk-operator/provisioning.json"))
        );
        opts.check().unwrap();
        let inside = with(&["--provision-http", "--provisioning-file", "/etc/asterisk/phones.json"]);
        let err = inside.check().unwrap_err().to_string();
        assert!(err.contains("inside Asterisk's config folder"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
