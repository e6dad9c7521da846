//! The apply journal: what an apply is about to change, persisted before the first file is
//! written, so an agent killed between writing and verifying (SIGKILL, OOM, the 5 s shutdown cut)
//! can put the last verified files back when it starts again, instead of finding the new files on
//! disk and answering "unchanged" while Asterisk still runs the old configuration.
//!
//! Life of one apply: [`Journal::begin`] (written and fsynced) → files written → modules
//! reloaded and verified → [`Journal::finish`] (removed) once the outcome is recorded, whether
//! it is success or a rollback that really restored the old files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config_files::write_atomic;

/// An apply in progress, as persisted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// Hash of the bundle being applied.
    pub target_hash: String,
    /// Every changed file (bundle naming) with what was there before: `None` = absent. Only
    /// files the agent could read are here (an unreadable file stops the apply before this).
    /// Hex in the JSON: the bytes are kept exactly, whatever their encoding.
    #[serde(with = "hex_backups")]
    pub backups: BTreeMap<String, Option<Vec<u8>>>,
    /// Modules (AMI names) whose configuration the apply touches: after a recovery they are
    /// reloaded, because Asterisk may have loaded the new files in between.
    pub modules: BTreeSet<String>,
}

/// The journal next to the state file: `<state-file>.journal`.
pub fn path_for(state_file: &Path) -> PathBuf {
    let mut name = state_file.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".journal");
    state_file.with_file_name(name)
}

impl Journal {
    /// Persists the journal (temp file, fsync, rename) before anything is written.
    pub fn begin(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_vec(self).expect("journal serializes");
        write_atomic(path, &text).map_err(|e| format!("writing the apply journal {}: {e}", path.display()))
    }

    /// Removes the journal: the apply's outcome is recorded.
    pub fn finish(path: &Path) -> Result<(), String> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(format!("removing the apply journal {}: {e}", path.display()))
            }
            _ => Ok(()),
        }
    }

    /// The journal of an interrupted apply, if there is one. A journal that cannot be read or
    /// parsed is an error (its backups may be the only copy of the verified files).
    pub fn load(path: &Path) -> Result<Option<Journal>, String> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("the apply journal {} is damaged: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("reading the apply journal {}: {e}", path.display())),
        }
    }
}

mod hex_backups {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(b: &BTreeMap<String, Option<Vec<u8>>>, s: S) -> Result<S::Ok, S::Error> {
        let hexed: BTreeMap<&String, Option<String>> =
            b.iter().map(|(k, v)| (k, v.as_ref().map(hex::encode))).collect();
        hexed.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Option<Vec<u8>>>, D::Error> {
        let hexed = BTreeMap::<String, Option<String>>::deserialize(d)?;
        hexed
            .into_iter()
            .map(|(k, v)| Ok((k, v.map(hex::decode).transpose().map_err(serde::de::Error::custom)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_round_trips_and_lives_beside_the_state_file() {
        let dir = std::env::temp_dir().join(format!("ao-journal-{}", std::process::id()));
        let state = dir.join(".asterisk-operator-applied.json");
        let path = path_for(&state);
        assert_eq!(path, dir.join(".asterisk-operator-applied.json.journal"));
        assert_eq!(Journal::load(&path).unwrap(), None);
        let j = Journal {
            target_hash: "abc".into(),
            backups: BTreeMap::from([
                ("pjsip_operator.conf".into(), Some(b"[x]\n\xff".to_vec())),
                ("keys/t.key".into(), None),
            ]),
            modules: ["res_pjsip.so".to_owned()].into(),
        };
        j.begin(&path).unwrap();
        assert_eq!(Journal::load(&path).unwrap(), Some(j));
        Journal::finish(&path).unwrap();
        Journal::finish(&path).unwrap();
        assert_eq!(Journal::load(&path).unwrap(), None);
        std::fs::write(&path, "{").unwrap();
        assert!(Journal::load(&path).unwrap_err().contains("damaged"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
