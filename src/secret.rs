//! Secret values: passwords and keys read from Kubernetes Secrets or generated.

use std::fmt;
use std::path::{Path, PathBuf};

use rand::Rng;
use rand::distr::Alphanumeric;

/// A secret value. Its `Debug` and `Display` never show it, so it cannot leak into logs by
/// accident; [`SecretValue::expose`] is the one place it is read.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretValue(String);

impl SecretValue {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// A fresh random secret: 32 alphanumeric characters (≈190 bits), safe in every Asterisk
    /// config file and dial-free context (no `;`, `:`, `@`, quotes or spaces).
    pub fn generate() -> Self {
        let value: String = rand::rng().sample_iter(&Alphanumeric).take(32).map(char::from).collect();
        Self(value)
    }

    /// The value itself, for rendering into a config file.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads a secret file (AMI secret, token): the whole file but a trailing newline, which
    /// editors and `echo` add; an empty value is an error, never an empty password.
    pub fn read_file(path: &Path) -> Result<Self, SecretFileError> {
        let bytes =
            std::fs::read(path).map_err(|source| SecretFileError::Read { path: path.to_owned(), source })?;
        let text = String::from_utf8_lossy(&bytes);
        let value = text.trim_end_matches(['\r', '\n']);
        if value.is_empty() {
            return Err(SecretFileError::Empty(path.to_owned()));
        }
        Ok(Self(value.to_owned()))
    }
}

/// A secret file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file could not be read.
    #[error("reading secret file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file holds nothing but a newline.
    #[error("secret file {0} is empty")]
    Empty(PathBuf),
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Writes a file that holds secrets without ever leaving it half-written: a temp file beside
/// it with `mode` (no one else may read it), fsync, rename over the target, fsync the folder
/// (the rename itself is durable only then).
pub fn write_secret_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.ao-tmp-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(mode);
    #[cfg(not(unix))]
    let _ = mode;
    let written = options.open(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    written
        .and_then(|()| std::fs::rename(&tmp, path))
        .inspect(|()| {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        })
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let s = SecretValue::new("hunter2hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2hunter2");
    }

    #[test]
    fn secret_files_lose_their_trailing_newline_and_must_not_be_empty() {
        let dir = std::env::temp_dir().join(format!("ao-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, "s3cr3t value\r\n").unwrap();
        assert_eq!(SecretValue::read_file(&file).unwrap().expose(), "s3cr3t value");
        std::fs::write(&file, "\n").unwrap();
        assert!(matches!(SecretValue::read_file(&file), Err(SecretFileError::Empty(_))));
        let missing = dir.join("missing");
        let e = SecretValue::read_file(&missing).unwrap_err();
        assert!(e.to_string().starts_with("reading secret file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn generated_secrets_are_long_distinct_and_config_safe() {
        let a = SecretValue::generate();
        let b = SecretValue::generate();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 32);
        assert!(a.expose().chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
