//! `asterisk-operator ami`: send one action, or tail events, as JSON.
//!
//! ```text
//! asterisk-operator ami --addr 127.0.0.1:5038 --user admin --secret-file F action Ping
//! asterisk-operator ami … action Setvar Variable='DEVICE_STATE(Custom:x)' Value=INUSE
//! asterisk-operator ami … events --filter Event=ExtensionStatus
//! ```
//! The secret is read from a file and never printed or logged (values of `Secret`/`Key` headers are
//! redacted in all output).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use super::codec::{Action, Message};
use super::correlate::Reply;
use super::error::AmiError;
use super::session::{AuthMethod, Session, SessionConfig};
use super::types::EventMask;
use crate::secret::SecretValue;

#[derive(clap::Args, Debug, Clone)]
pub struct AmiArgs {
    /// AMI address (host:port).
    #[arg(long, default_value = "127.0.0.1:5038", env = "AMI_ADDR")]
    pub addr: String,
    /// AMI user (manager.conf section).
    #[arg(long, env = "AMI_USER")]
    pub user: String,
    /// File holding the AMI secret (trailing newline ignored).
    #[arg(long, env = "AMI_SECRET_FILE")]
    pub secret_file: PathBuf,
    /// Log in with an MD5 challenge instead of sending the secret.
    #[arg(long)]
    pub md5: bool,
    /// Per-action timeout, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    #[command(subcommand)]
    pub command: AmiCommand,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum AmiCommand {
    /// Send one action and print its response (and event list, if any) as JSON.
    Action {
        /// Action name, e.g. Ping, CoreSettings, PJSIPShowEndpoints.
        name: String,
        /// Headers as Key=Value (repeat a key for repeated headers, e.g. Variable=…).
        #[arg(value_name = "KEY=VALUE")]
        headers: Vec<String>,
    },
    /// Print events as JSON lines until interrupted, reconnecting by itself.
    Events {
        /// Only events with this header value (Key=Value, case-insensitive value); all filters must match.
        #[arg(long, value_name = "KEY=VALUE")]
        filter: Vec<String>,
        /// Event mask, e.g. `on` or `system,call`.
        #[arg(long, default_value = "on")]
        mask: String,
    },
}

fn parse_kv(s: &str) -> Result<(String, String), AmiError> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| AmiError::Usage(format!("expected KEY=VALUE, got {s:?}")))
}

/// Build the action of `ami action NAME KEY=VALUE…`.
pub fn build_action(name: &str, headers: &[String]) -> Result<Action, AmiError> {
    let mut a = Action::new(name);
    for h in headers {
        let (k, v) = parse_kv(h)?;
        a.push(k, v);
    }
    a.validate()?;
    Ok(a)
}

/// Whether an event passes every `Key=Value` filter.
pub fn matches_filters(m: &Message, filters: &[(String, String)]) -> bool {
    filters.iter().all(|(k, v)| m.get_all(k).any(|x| x.eq_ignore_ascii_case(v)))
}

/// JSON of a reply: `{"response": {...}, "events": [...], "complete": {...}}` (list parts only when
/// the action answered with an event list).
pub fn reply_json(r: &Reply) -> serde_json::Value {
    let mut o = serde_json::Map::new();
    o.insert("response".into(), serde_json::to_value(&r.response).unwrap_or_default());
    if r.is_list() {
        o.insert("events".into(), serde_json::to_value(&r.events).unwrap_or_default());
        o.insert("complete".into(), serde_json::to_value(&r.complete).unwrap_or_default());
    }
    serde_json::Value::Object(o)
}

fn config(args: &AmiArgs, events: EventMask) -> Result<SessionConfig, AmiError> {
    let mut cfg = SessionConfig::new(
        &args.addr,
        &args.user,
        SecretValue::read_file(&args.secret_file).map_err(|e| AmiError::Usage(e.to_string()))?,
    );
    cfg.auth = if args.md5 { AuthMethod::Md5 } else { AuthMethod::Plain };
    cfg.events = events;
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        return Err(AmiError::Usage("--timeout must be a positive number of seconds".into()));
    }
    cfg.action_timeout = Duration::from_secs_f64(args.timeout);
    Ok(cfg)
}

/// Run `ami` printing to stdout.
pub async fn run(args: AmiArgs) -> Result<(), AmiError> {
    let stdout = std::io::stdout();
    run_to(args, &mut stdout.lock(), async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}

/// Run `ami`, writing output to `out`; `events` stops when `stop` completes.
pub async fn run_to<W: Write>(
    args: AmiArgs,
    out: &mut W,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), AmiError> {
    match &args.command {
        AmiCommand::Action { name, headers } => {
            let action = build_action(name, headers)?;
            let session = Session::connect(config(&args, EventMask::Off)?).await?;
            let r = session.send(action).await;
            session.close().await;
            let r = r?;
            let text = serde_json::to_string_pretty(&reply_json(&r)).unwrap_or_default();
            writeln!(out, "{text}")?;
            if r.response.is_error() {
                return Err(AmiError::Action {
                    action: name.clone(),
                    message: r.response.message().unwrap_or("(no message)").to_owned(),
                });
            }
            Ok(())
        }
        AmiCommand::Events { filter, mask } => {
            let filters = filter.iter().map(|f| parse_kv(f)).collect::<Result<Vec<_>, _>>()?;
            let mask: EventMask = mask.parse().unwrap_or_default();
            let session = Session::spawn(config(&args, mask)?);
            let mut events = session.events();
            let mut state = session.state();
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    changed = state.changed() => {
                        if changed.is_err() { break; }
                        let st = state.borrow_and_update().clone();
                        tracing::info!(state = ?st, "AMI connection state");
                    }
                    ev = events.recv() => match ev {
                        Some(ev) if matches_filters(ev.message(), &filters) => {
                            let line = serde_json::to_string(ev.message()).unwrap_or_default();
                            writeln!(out, "{line}")?;
                            out.flush()?;
                        }
                        Some(_) => {}
                        None => break,
                    },
                }
            }
            session.close().await;
            Ok(())
        }
    }
}
