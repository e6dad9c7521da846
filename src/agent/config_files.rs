//! The operator's files on disk, as the agent reads and writes them: `*_operator.conf` in
//! Asterisk's config folder and `keys/*` in its key folder.
//!
//! A file that exists but cannot be read is an error, never "absent": treating it as absent
//! would overwrite it, and a rollback would delete it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::plan::{self, Target};

/// Where the agent's files go.
#[derive(Clone, Debug)]
pub struct ConfigDirs {
    /// Asterisk's config folder.
    pub config: PathBuf,
    /// Asterisk's key folder.
    pub keys: PathBuf,
}

/// A file the agent must not touch because it cannot read it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot read {path}: {reason}; the agent leaves it alone (fix its permissions or type, or remove it)"
)]
pub struct Unreadable {
    /// The bundle file name.
    pub file: String,
    /// Where it is.
    pub path: String,
    /// The operating system's reason.
    pub reason: String,
}

impl ConfigDirs {
    /// Where a bundle file lives.
    pub fn path_of(&self, file: &str) -> PathBuf {
        let dir = match plan::classify(file).map(|(_, t)| t) {
            Ok(Target::Keys) => &self.keys,
            _ => &self.config,
        };
        dir.join(plan::target_name(file))
    }

    /// The current contents of `files` (`None`: absent). Names the agent does not manage are
    /// skipped (the plan refuses them with a better message).
    pub fn read_current<'a>(
        &self,
        files: impl Iterator<Item = &'a String>,
    ) -> Result<BTreeMap<String, Option<Vec<u8>>>, Unreadable> {
        let mut out = BTreeMap::new();
        for file in files.filter(|f| plan::classify(f).is_ok()) {
            let path = self.path_of(file);
            let contents = match std::fs::read(&path) {
                Ok(bytes) => Some(bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    return Err(Unreadable {
                        file: file.clone(),
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    });
                }
            };
            out.insert(file.clone(), contents);
        }
        Ok(out)
    }

    /// Writes (temp file in the same folder, fsync, rename) or removes (`None`) one file.
    pub fn write(&self, file: &str, contents: Option<&[u8]>) -> Result<(), String> {
        let path = self.path_of(file);
        let Some(contents) = contents else {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(format!("removing {}: {e}", path.display()))
                }
                _ => Ok(()),
            };
        };
        write_atomic(&path, contents).map_err(|e| format!("writing {}: {e}", path.display()))
    }

    /// Puts every backed-up file back; the files that could not be restored, with why.
    pub fn restore(&self, backup: &BTreeMap<String, Option<Vec<u8>>>) -> Vec<String> {
        let mut failed = Vec::new();
        for (file, old) in backup {
            if let Err(e) = self.write(file, old.as_deref()) {
                tracing::error!(file = %file, error = %e, "restoring the previous file failed");
                failed.push(e);
            }
        }
        failed
    }
}

/// Temp file in the target's folder, fsync, rename over the target, fsync the folder (the
/// journal relies on being on disk before the first config file changes). Mode 0640: Asterisk
/// (same user or group as the agent) must read it; the files hold secrets.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::secret::write_secret_file(path, bytes, 0o640)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{EXTENSIONS_FILE, PJSIP_FILE};

    #[test]
    fn unreadable_is_an_error_absent_is_none_and_bytes_are_kept_exactly() {
        let root = std::env::temp_dir().join(format!("ao-config-files-{}", std::process::id()));
        let dirs = ConfigDirs { config: root.join("etc"), keys: root.join("keys") };
        std::fs::create_dir_all(&dirs.config).unwrap();
        // Latin-1, as a hand edit might leave it: readable, kept byte for byte.
        std::fs::write(dirs.config.join(PJSIP_FILE), b"callerid=M\xfcller\n").unwrap();
        let names = [PJSIP_FILE.to_owned(), "keys/t.key".to_owned()];
        let current = dirs.read_current(names.iter()).unwrap();
        assert_eq!(current[PJSIP_FILE].as_deref(), Some(&b"callerid=M\xfcller\n"[..]));
        assert_eq!(current["keys/t.key"], None);
        // A folder where a file should be cannot be read: an error naming it, not "absent".
        std::fs::create_dir_all(dirs.config.join(EXTENSIONS_FILE)).unwrap();
        let names = [EXTENSIONS_FILE.to_owned()];
        let err = dirs.read_current(names.iter()).unwrap_err();
        assert_eq!(err.file, EXTENSIONS_FILE);
        assert!(
            err.to_string().contains("cannot read") && err.to_string().contains(EXTENSIONS_FILE),
            "{err}"
        );
        // Restore writes back what was there and removes what was absent.
        dirs.write(PJSIP_FILE, Some(b"new")).unwrap();
        dirs.write("keys/t.key", Some(b"k")).unwrap();
        let failed = dirs.restore(&BTreeMap::from([
            (PJSIP_FILE.to_owned(), Some(b"callerid=M\xfcller\n".to_vec())),
            ("keys/t.key".to_owned(), None),
        ]));
        assert!(failed.is_empty(), "{failed:?}");
        assert_eq!(std::fs::read(dirs.config.join(PJSIP_FILE)).unwrap(), b"callerid=M\xfcller\n");
        assert!(!dirs.keys.join("t.key").exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
