//! The client side of the `Agent` service: what the controller and `push` use.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use asterisk_operator::agent::client::{ClientOptions, connect};
//! let mut client = connect(&ClientOptions::new("http://127.0.0.1:7443")).await?;
//! let status = client.status(asterisk_operator::agent::proto::StatusRequest {}).await?.into_inner();
//! # Ok(()) }
//! ```

use std::path::PathBuf;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::error::AgentError;
use super::proto::agent_client;
use crate::secret::SecretValue;

/// The credentials a caller presents to an agent and the identity it expects of it: what the
/// controller holds per node (managed nodes pin their agent's own certificate) and what `push`
/// is given on its command line.
#[derive(Clone, Debug, Default)]
pub struct AgentAccess {
    /// Sent as `authorization: Bearer <token>`.
    pub token: Option<SecretValue>,
    /// CA that signed the agent's certificate (PEM file).
    pub tls_ca: Option<PathBuf>,
    /// The same as PEM text: a CA, or the agent's own self-signed certificate to pin (what the
    /// controller does for managed nodes). Used with or instead of `tls_ca`.
    pub tls_ca_pem: Option<String>,
    /// Client certificate for mTLS (PEM file).
    pub tls_cert: Option<PathBuf>,
    /// Its key (PEM file).
    pub tls_key: Option<PathBuf>,
    /// Name to check the agent's certificate against, if not the URL's host.
    pub tls_domain: Option<String>,
}

/// How to reach an agent.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// `https://host:port` (TLS) or `http://host:port` (agent started with `--insecure`).
    pub url: String,
    /// What to present and whom to trust.
    pub access: AgentAccess,
    /// Per-call timeout (an apply of a large bundle takes seconds).
    pub timeout: std::time::Duration,
}

impl ClientOptions {
    /// Options for `url` with no credentials and a 60 s timeout.
    pub fn new(url: &str) -> Self {
        Self::with_access(url, AgentAccess::default())
    }

    /// Options for `url` presenting `access`, with a 60 s timeout.
    pub fn with_access(url: &str, access: AgentAccess) -> Self {
        ClientOptions { url: url.to_owned(), access, timeout: std::time::Duration::from_secs(60) }
    }
}

/// Adds the bearer token to every call.
#[derive(Clone)]
pub struct BearerToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// The generated client with the token interceptor.
pub type AgentClient = agent_client::AgentClient<InterceptedService<Channel, BearerToken>>;

/// Connects to an agent (TLS when the URL is `https://`).
pub async fn connect(opts: &ClientOptions) -> Result<AgentClient, AgentError> {
    let mut endpoint = Endpoint::from_shared(opts.url.clone())
        .map_err(|source| AgentError::BadUrl { url: opts.url.clone(), source })?
        .timeout(opts.timeout)
        .connect_timeout(std::time::Duration::from_secs(10));
    let access = &opts.access;
    if opts.url.starts_with("https://") {
        let read = read_file;
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &access.tls_ca {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let Some(pem) = &access.tls_ca_pem {
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        match (&access.tls_cert, &access.tls_key) {
            (Some(c), Some(k)) => tls = tls.identity(Identity::from_pem(read(c)?, read(k)?)),
            (None, None) => {}
            _ => return Err(AgentError::Options("--tls-cert and --tls-key go together".into())),
        }
        if let Some(d) = &access.tls_domain {
            tls = tls.domain_name(d.clone());
        }
        endpoint = endpoint.tls_config(tls).map_err(AgentError::Tls)?;
    }
    let channel =
        endpoint.connect().await.map_err(|source| AgentError::Connect { url: opts.url.clone(), source })?;
    let token =
        match &access.token {
            Some(t) => Some(format!("Bearer {}", t.expose()).parse().map_err(|_| {
                AgentError::Options("the token holds characters not allowed in a header".into())
            })?),
            None => None,
        };
    Ok(agent_client::AgentClient::with_interceptor(channel, BearerToken(token))
        .max_decoding_message_size(super::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(super::MAX_MESSAGE_BYTES))
}

/// Reads a whole file, naming it in the error.
pub(crate) fn read_file(path: &PathBuf) -> Result<Vec<u8>, AgentError> {
    std::fs::read(path).map_err(|source| AgentError::Read { path: path.clone(), source })
}
