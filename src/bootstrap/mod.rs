//! `asterisk-operator bootstrap`: writes a managed node's base Asterisk 22 configuration into
//! its config directory (the init container of the StatefulSet runs it before Asterisk starts).
//!
//! The base files are embedded in the binary ([`TEMPLATES`]): `asterisk.conf`, `modules.conf`,
//! `logger.conf`, `manager.conf` with the agent's least-privilege AMI user bound to one address,
//! `pjsip.conf` / `iax.conf` / `extensions.conf` that `#tryinclude` the operator-rendered
//! `*_operator.conf` files, and the small files whose absence makes Asterisk log errors. The
//! base files are rewritten on every run; nothing else in the directory is touched, so the files
//! the agent applied (`*_operator.conf`, its state file) survive a restart of the init container.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::secret::SecretValue;

/// The embedded base files: (file name, template). Placeholders are `@NAME@` words.
pub const TEMPLATES: &[(&str, &str)] = &[
    ("asterisk.conf", include_str!("templates/asterisk.conf")),
    ("modules.conf", include_str!("templates/modules.conf")),
    ("logger.conf", include_str!("templates/logger.conf")),
    ("manager.conf", include_str!("templates/manager.conf")),
    ("pjsip.conf", include_str!("templates/pjsip.conf")),
    ("iax.conf", include_str!("templates/iax.conf")),
    ("extensions.conf", include_str!("templates/extensions.conf")),
    ("indications.conf", include_str!("templates/indications.conf")),
    ("http.conf", include_str!("templates/http.conf")),
    ("prometheus.conf", include_str!("templates/prometheus.conf")),
    ("acl.conf", include_str!("templates/acl.conf")),
    ("ari.conf", include_str!("templates/ari.conf")),
    ("ccss.conf", include_str!("templates/ccss.conf")),
    ("cdr.conf", include_str!("templates/cdr.conf")),
    ("cel.conf", include_str!("templates/cel.conf")),
    ("cli_aliases.conf", include_str!("templates/cli_aliases.conf")),
    ("features.conf", include_str!("templates/features.conf")),
    ("pjproject.conf", include_str!("templates/pjproject.conf")),
    ("pjsip_notify.conf", include_str!("templates/pjsip_notify.conf")),
    ("pjsip_wizard.conf", include_str!("templates/pjsip_wizard.conf")),
    ("queues.conf", include_str!("templates/queues.conf")),
    ("udptl.conf", include_str!("templates/udptl.conf")),
    ("voicemail.conf", include_str!("templates/voicemail.conf")),
    ("websocket_client.conf", include_str!("templates/websocket_client.conf")),
];

/// The only file that holds a secret (the AMI user's): written owner-only.
const SECRET_FILE: &str = "manager.conf";

/// `asterisk-operator bootstrap`.
#[derive(clap::Args, Debug, Clone)]
pub struct BootstrapArgs {
    /// Node name (Asterisk's `systemname`, the SIP User-Agent).
    #[arg(long, env = "AO_BOOTSTRAP_NODE")]
    pub node: String,
    /// Asterisk's config directory: the base files are written here.
    #[arg(long, env = "AO_BOOTSTRAP_CONFIG_DIR", default_value = "/etc/asterisk")]
    pub config_dir: PathBuf,
    /// File holding the AMI secret of the agent's user.
    #[arg(long, env = "AO_BOOTSTRAP_AMI_SECRET_FILE")]
    pub ami_secret_file: PathBuf,
    /// AMI user (the agent's `--ami-user`).
    #[arg(long, env = "AO_BOOTSTRAP_AMI_USER", default_value = "asterisk-operator")]
    pub ami_user: String,
    /// Address AMI listens on and accepts its user from (the agent dials it).
    #[arg(long, env = "AO_BOOTSTRAP_AMI_BIND", default_value = "127.0.0.1")]
    pub ami_bind: IpAddr,
    /// The one address AMI accepts its user from (default: `--ami-bind`, right when the agent
    /// dials that address from inside the pod).
    #[arg(long, env = "AO_BOOTSTRAP_AMI_PERMIT")]
    pub ami_permit: Option<IpAddr>,
    /// Where the agent writes RSA keys (its `--keys-dir`); must end in `/keys`, because Asterisk
    /// reads keys from `<astkeydir>/keys`.
    #[arg(long, env = "AO_BOOTSTRAP_KEYS_DIR", default_value = "/var/lib/asterisk/keys")]
    pub keys_dir: PathBuf,
    /// Asterisk's log directory (`messages` is what the agent's `--asterisk-log` reads).
    #[arg(long, env = "AO_BOOTSTRAP_LOG_DIR", default_value = "/var/log/asterisk")]
    pub log_dir: PathBuf,
    /// Control socket and pid file.
    #[arg(long, env = "AO_BOOTSTRAP_RUN_DIR", default_value = "/var/run/asterisk")]
    pub run_dir: PathBuf,
    /// The internal database (astdb).
    #[arg(long, env = "AO_BOOTSTRAP_DB_DIR", default_value = "/var/lib/asterisk")]
    pub db_dir: PathBuf,
    /// Spool (voicemail, outgoing call files).
    #[arg(long, env = "AO_BOOTSTRAP_SPOOL_DIR", default_value = "/var/spool/asterisk")]
    pub spool_dir: PathBuf,
    /// Cache.
    #[arg(long, env = "AO_BOOTSTRAP_CACHE_DIR", default_value = "/var/cache/asterisk")]
    pub cache_dir: PathBuf,
}

/// Bootstrapping failed; each error names the flag or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// A flag's value cannot go into an Asterisk config file.
    #[error("--{flag}: {problem}")]
    Invalid {
        /// The flag.
        flag: &'static str,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// The AMI secret file could not be read.
    #[error("--ami-secret-file: {0}")]
    Secret(#[from] crate::secret::SecretFileError),
    /// A file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// What one run wrote.
#[derive(Debug, Default)]
pub struct BootstrapReport {
    /// Base files written, in template order.
    pub written: Vec<String>,
}

/// A value that goes into a config file must not end or comment a line.
fn config_safe(flag: &'static str, value: &str) -> Result<(), BootstrapError> {
    if value.is_empty() || value.chars().any(|c| c.is_control() || c == ';') || value.trim() != value {
        return Err(BootstrapError::Invalid {
            flag,
            problem: "empty, or holds a control character, ';' or surrounding spaces, which would break the Asterisk config file".into(),
        });
    }
    Ok(())
}

fn dir_value(flag: &'static str, dir: &Path) -> Result<String, BootstrapError> {
    let text = dir.to_str().ok_or_else(|| BootstrapError::Invalid { flag, problem: "not UTF-8".into() })?;
    config_safe(flag, text)?;
    if !dir.is_absolute() {
        return Err(BootstrapError::Invalid {
            flag,
            problem: format!("{text} is relative; give an absolute path"),
        });
    }
    Ok(text.trim_end_matches('/').to_owned())
}

/// The base files for `args` with `secret`: (file name, contents), without touching the disk.
pub fn render(
    args: &BootstrapArgs,
    secret: &SecretValue,
) -> Result<Vec<(&'static str, String)>, BootstrapError> {
    if !crate::crd::rules::is_dns_label(&args.node) {
        return Err(BootstrapError::Invalid {
            flag: "node",
            problem: format!("{:?} is not an AsteriskNode name (a DNS-1123 label)", args.node),
        });
    }
    config_safe("ami-user", &args.ami_user)?;
    if args.ami_user.contains(['[', ']']) {
        return Err(BootstrapError::Invalid {
            flag: "ami-user",
            problem: "must not contain '[' or ']'".into(),
        });
    }
    config_safe("ami-secret-file", secret.expose()).map_err(|_| BootstrapError::Invalid {
        flag: "ami-secret-file",
        problem: "the secret holds a control character, ';' or surrounding spaces, which manager.conf cannot carry; use letters and digits".into(),
    })?;
    if args.keys_dir.file_name().is_none_or(|n| n != "keys") {
        return Err(BootstrapError::Invalid {
            flag: "keys-dir",
            problem: format!(
                "{} does not end in /keys; Asterisk reads RSA keys from <astkeydir>/keys, so use e.g. /var/lib/asterisk/keys",
                args.keys_dir.display()
            ),
        });
    }
    let key_parent = args.keys_dir.parent().unwrap_or(Path::new("/"));
    // IPv4 only: manager.conf's permit is written as address/netmask.
    let v4 = |flag: &'static str, ip: IpAddr| match ip {
        IpAddr::V4(ip) => Ok(ip),
        IpAddr::V6(_) => Err(BootstrapError::Invalid {
            flag,
            problem: "give an IPv4 address (the agent dials 127.0.0.1:5038 in a pod)".into(),
        }),
    };
    let bind = v4("ami-bind", args.ami_bind)?;
    let permit = v4("ami-permit", args.ami_permit.unwrap_or(args.ami_bind))?;
    let values = [
        ("@NODE@", args.node.clone()),
        ("@CONFIG_DIR@", dir_value("config-dir", &args.config_dir)?),
        ("@KEY_PARENT_DIR@", dir_value("keys-dir", key_parent)?),
        ("@LOG_DIR@", dir_value("log-dir", &args.log_dir)?),
        ("@RUN_DIR@", dir_value("run-dir", &args.run_dir)?),
        ("@DB_DIR@", dir_value("db-dir", &args.db_dir)?),
        ("@SPOOL_DIR@", dir_value("spool-dir", &args.spool_dir)?),
        ("@CACHE_DIR@", dir_value("cache-dir", &args.cache_dir)?),
        ("@AMI_BIND@", bind.to_string()),
        ("@AMI_PERMIT@", permit.to_string()),
        ("@AMI_USER@", args.ami_user.clone()),
    ];
    Ok(TEMPLATES
        .iter()
        .map(|(name, template)| {
            let mut text = values.iter().fold((*template).to_owned(), |t, (k, v)| t.replace(k, v));
            if *name == SECRET_FILE {
                text = text.replace("@AMI_SECRET@", secret.expose());
            }
            (*name, text)
        })
        .collect())
}

/// Writes the base files into `args.config_dir` (created if missing), each atomically (temp
/// file, fsync, rename): `manager.conf` mode 0600, the others 0640. Files that are not base
/// files — the operator-rendered ones above all — are left as they are.
pub fn write(args: &BootstrapArgs) -> Result<BootstrapReport, BootstrapError> {
    let secret = SecretValue::read_file(&args.ami_secret_file)?;
    let files = render(args, &secret)?;
    let dir = &args.config_dir;
    std::fs::create_dir_all(dir).map_err(|source| BootstrapError::Write { path: dir.clone(), source })?;
    let mut report = BootstrapReport::default();
    for (name, text) in files {
        let mode = if name == SECRET_FILE { 0o600 } else { 0o640 };
        write_atomic(&dir.join(name), text.as_bytes(), mode)?;
        report.written.push(name.to_owned());
    }
    Ok(report)
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), BootstrapError> {
    let tmp = path.with_extension("conf.bootstrap-tmp");
    let io = |source| BootstrapError::Write { path: path.to_owned(), source };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    let mut file = options.open(&tmp).map_err(io)?;
    #[cfg(unix)]
    {
        // An existing temp file keeps its old mode: set it explicitly.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(io)?;
    }
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

impl BootstrapReport {
    /// One line for the init container's log (no file contents: manager.conf holds a secret).
    pub fn summary(&self, dir: &Path) -> String {
        format!("wrote {} base files into {}: {}", self.written.len(), dir.display(), self.written.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BootstrapArgs,
    }

    fn args(extra: &[&str]) -> BootstrapArgs {
        let base = ["bootstrap", "--node", "office-a", "--ami-secret-file", "/run/secret/ami"];
        Cli::parse_from(base.iter().chain(extra)).args
    }

    fn file<'a>(files: &'a [(&str, String)], name: &str) -> &'a str {
        &files.iter().find(|(n, _)| *n == name).unwrap().1
    }

    #[test]
    fn renders_every_template_without_placeholders_left() {
        let files = render(&args(&[]), &SecretValue::new("AmiSecret0123")).unwrap();
        assert_eq!(files.len(), TEMPLATES.len());
        for (name, text) in &files {
            assert!(!text.contains('@'), "{name} keeps a placeholder:\n{text}");
            assert!(!name.ends_with("_operator.conf"), "{name}: operator-rendered files are the agent's");
        }
        let manager = file(&files, "manager.conf");
        assert!(manager.contains("[asterisk-operator]\nsecret = AmiSecret0123\n"), "{manager}");
        assert!(
            manager.contains("bindaddr = 127.0.0.1\n")
                && manager.contains("permit = 127.0.0.1/255.255.255.255")
        );
        assert!(
            manager.contains("read = system,call\nwrite = system,call,reporting\n"),
            "docs/agent.md's user"
        );
        let secret_holders: Vec<_> =
            files.iter().filter(|(_, t)| t.contains("AmiSecret0123")).map(|(n, _)| *n).collect();
        assert_eq!(secret_holders, ["manager.conf"]);
        for (main, owned) in [
            ("pjsip.conf", "pjsip_operator.conf"),
            ("iax.conf", "iax_operator.conf"),
            ("extensions.conf", "extensions_operator.conf"),
        ] {
            assert!(file(&files, main).contains(&format!("#tryinclude {owned}\n")), "{main}");
        }
        let conf = file(&files, "asterisk.conf");
        assert!(conf.contains("astetcdir => /etc/asterisk\n"));
        assert!(conf.contains("astkeydir => /var/lib/asterisk\n"), "keys are read from <astkeydir>/keys");
        assert!(conf.contains("systemname = office-a\n"));
    }

    #[test]
    fn refuses_values_that_would_break_a_config_file() {
        let secret = SecretValue::new("ok");
        for (bad, flag) in [
            (args(&["--keys-dir", "/var/lib/asterisk/rsa"]), "--keys-dir"),
            (args(&["--config-dir", "etc"]), "--config-dir"),
            (args(&["--log-dir", "/var/log;x"]), "--log-dir"),
            (args(&["--ami-bind", "::1"]), "--ami-bind"),
            (args(&["--ami-permit", "::1"]), "--ami-permit"),
            (args(&["--ami-user", "a]b"]), "--ami-user"),
        ] {
            let e = render(&bad, &secret).unwrap_err().to_string();
            assert!(e.starts_with(flag), "{e}");
        }
        let mut bad = args(&[]);
        bad.node = "Office A".into();
        assert!(render(&bad, &secret).unwrap_err().to_string().starts_with("--node"));
        let e = render(&args(&[]), &SecretValue::new("a;b")).unwrap_err().to_string();
        assert!(
            e.starts_with("--ami-secret-file") && !e.contains("a;b"),
            "names the flag, not the value: {e}"
        );
    }

    #[test]
    fn writes_base_files_and_leaves_the_operators_alone() {
        let dir = std::env::temp_dir().join(format!("ao-bootstrap-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("ami-secret");
        std::fs::write(&secret, "AmiSecret0123\n").unwrap();
        let config = dir.join("etc");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::write(config.join("pjsip_operator.conf"), "; applied by the agent\n").unwrap();
        std::fs::write(config.join("manager.conf"), "stale").unwrap();
        let mut a = args(&[]);
        a.config_dir = config.clone();
        a.ami_secret_file = secret;
        let report = write(&a).unwrap();
        assert_eq!(report.written.len(), TEMPLATES.len());
        assert_eq!(
            std::fs::read_to_string(config.join("pjsip_operator.conf")).unwrap(),
            "; applied by the agent\n"
        );
        let manager = std::fs::read_to_string(config.join("manager.conf")).unwrap();
        assert!(manager.contains("secret = AmiSecret0123\n"), "trailing newline of the file dropped");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |f: &str| std::fs::metadata(config.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode("manager.conf"), 0o600);
            assert_eq!(mode("pjsip.conf"), 0o640);
        }
        assert!(!report.summary(&config).contains("AmiSecret0123"));
        let leftovers: Vec<_> = std::fs::read_dir(&config)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
