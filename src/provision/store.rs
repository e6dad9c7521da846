//! The files the agent serves: swapped in whole when a bundle brings new ones, kept on disk in
//! one snapshot file (outside Asterisk's config folder) so a restarted agent serves at once,
//! and looked up in memory by name, case-insensitively — no request path ever reaches the disk.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use super::ProvisionError;
use super::access::Network;
use super::fetch::{Fetch, FetchResult, LastFetch, ProvisionMetrics};
use crate::render::{PROVISIONING_INDEX_FILE, Provisioning, ProvisioningIndex, credential_verifier};

/// One servable file.
#[derive(Debug)]
pub struct ServedFile {
    /// Its name as rendered (the case the vendor uses).
    pub name: String,
    /// Its bytes.
    pub contents: Arc<[u8]>,
    /// The Phone it belongs to; `None` for a common file.
    pub phone: Option<String>,
    /// `cisco`, `yealink`, …
    pub vendor: &'static str,
}

/// Everything served at one moment; replaced whole, never edited.
#[derive(Debug, Default)]
pub struct Served {
    files: HashMap<String, ServedFile>,
    networks: Vec<Network>,
    verifiers: HashMap<String, String>,
}

impl Served {
    fn new(p: &Provisioning) -> Served {
        let files = p
            .files
            .iter()
            .map(|(name, contents)| {
                let owner = p.index.files.get(name);
                let file = ServedFile {
                    name: name.clone(),
                    contents: Arc::from(contents.as_bytes()),
                    phone: owner.and_then(|o| o.phone.clone()),
                    vendor: owner.map_or("unknown", |o| o.vendor.as_str()),
                };
                (name.to_ascii_lowercase(), file)
            })
            .collect();
        Served {
            files,
            networks: p.index.allowed_networks.iter().filter_map(|n| Network::parse(n)).collect(),
            verifiers: p.index.credentials.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }

    /// The file named `name`, whatever the case of its letters (phones and DHCP setups disagree
    /// on the case of a MAC); one leading `/` is allowed, as some clients send it.
    pub fn lookup(&self, name: &str) -> Option<&ServedFile> {
        let name = name.strip_prefix('/').unwrap_or(name);
        self.files.get(&name.to_ascii_lowercase())
    }

    /// The networks that fetch without credentials.
    pub fn networks(&self) -> &[Network] {
        &self.networks
    }

    /// Is `password` the provisioning password of Phone `phone`? Constant time in the password.
    pub fn password_ok(&self, phone: &str, password: &str) -> bool {
        let Some(want) = self.verifiers.get(phone) else { return false };
        let got = credential_verifier(phone, password);
        want.len() == got.len() && want.bytes().zip(got.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// No files.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// What the snapshot file holds.
#[derive(Default, Serialize, Deserialize)]
struct Snapshot {
    files: BTreeMap<String, String>,
    index: ProvisioningIndex,
}

/// The agent's provisioning files and fetch records.
pub struct ProvisionStore {
    /// The snapshot file; `None`: memory only.
    path: Option<PathBuf>,
    current: Mutex<Provisioning>,
    served: RwLock<Arc<Served>>,
    last: Mutex<BTreeMap<String, LastFetch>>,
    metrics: ProvisionMetrics,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ProvisionStore {
    /// The store kept in `path`, with what an earlier run saved there (nothing when absent;
    /// an unreadable snapshot is reported and served as empty until the next bundle). Without
    /// a path (an agent that serves no phones) the files are only kept in memory.
    pub fn open(path: Option<&Path>, metrics: ProvisionMetrics) -> ProvisionStore {
        let shown = path.map_or(String::new(), |p| p.display().to_string());
        let snapshot = match path.map(std::fs::read_to_string) {
            None => Snapshot::default(),
            Some(Ok(text)) => serde_json::from_str::<Snapshot>(&text).unwrap_or_else(|e| {
                tracing::error!(file = %shown, error = %e, "provisioning snapshot unreadable; serving nothing until the next bundle");
                Snapshot::default()
            }),
            Some(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Snapshot::default(),
            Some(Err(e)) => {
                tracing::error!(file = %shown, error = %e, "cannot read the provisioning snapshot");
                Snapshot::default()
            }
        };
        let current = Provisioning { files: snapshot.files, index: snapshot.index };
        let served = Served::new(&current);
        metrics.files.set(served.len() as i64);
        if !served.is_empty() {
            tracing::info!(files = served.len(), "serving the provisioning files of the last bundle");
        }
        ProvisionStore {
            path: path.map(Path::to_owned),
            current: Mutex::new(current),
            served: RwLock::new(Arc::new(served)),
            last: Mutex::new(BTreeMap::new()),
            metrics,
        }
    }

    /// Serves `next` from now on: saves it first (so a restart serves the same), then swaps it
    /// in. Returns the names that changed (added, changed or removed; the index as
    /// `provisioning.json`); nothing is written when nothing changed.
    pub fn apply(&self, next: &Provisioning) -> Result<Vec<String>, ProvisionError> {
        let mut current = lock(&self.current);
        let mut changed: Vec<String> = next
            .files
            .iter()
            .filter(|(name, contents)| current.files.get(*name) != Some(*contents))
            .map(|(name, _)| name.clone())
            .chain(current.files.keys().filter(|name| !next.files.contains_key(*name)).cloned())
            .collect();
        if current.index != next.index {
            changed.push(PROVISIONING_INDEX_FILE.to_owned());
        }
        if changed.is_empty() {
            return Ok(changed);
        }
        changed.sort();
        if let Some(path) = &self.path {
            let snapshot = Snapshot { files: next.files.clone(), index: next.index.clone() };
            let text = serde_json::to_string(&snapshot).expect("the snapshot serializes");
            // 0600: the files hold the phones' SIP passwords.
            crate::secret::write_secret_file(path, text.as_bytes(), 0o600)
                .map_err(|source| ProvisionError::Save { path: path.clone(), source })?;
        }
        let served = Served::new(next);
        self.metrics.files.set(served.len() as i64);
        *self.served.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(served);
        *current = next.clone();
        // Records of phones that no longer have a file here say nothing any more.
        lock(&self.last).retain(|phone, _| next.index.credentials.contains_key(phone));
        Ok(changed)
    }

    /// What is served now.
    pub fn served(&self) -> Arc<Served> {
        self.served.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Logs and counts a fetch; a phone's own file served in full becomes its last fetch.
    pub fn record(&self, fetch: &Fetch) {
        self.metrics.count(fetch);
        tracing::info!(
            phone = fetch.phone.unwrap_or("-"),
            file = fetch.file,
            source = %fetch.source,
            user_agent = fetch.user_agent.unwrap_or("-"),
            protocol = fetch.protocol.as_str(),
            result = fetch.result.as_str(),
            "provisioning fetch"
        );
        if let (FetchResult::Ok, Some(phone)) = (fetch.result, fetch.phone) {
            lock(&self.last).insert(phone.to_owned(), LastFetch::of(fetch, phone));
        }
    }

    /// Every phone's last fetch, by phone name.
    pub fn last_fetches(&self) -> Vec<LastFetch> {
        lock(&self.last).values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::DeviceVendor;
    use crate::render::ServedFile as IndexEntry;

    fn provisioning(files: &[(&str, &str, Option<&str>)], password: &str) -> Provisioning {
        let mut p = Provisioning::default();
        for (name, contents, phone) in files {
            p.files.insert(name.to_string(), contents.to_string());
            p.index.files.insert(
                name.to_string(),
                IndexEntry { phone: phone.map(str::to_owned), vendor: DeviceVendor::Yealink },
            );
        }
        p.index.credentials.insert("reception".into(), credential_verifier("reception", password));
        p.index.allowed_networks = vec!["10.0.0.0/8".into()];
        p
    }

    #[test]
    fn files_are_found_by_name_in_any_case_and_survive_a_restart() {
        let dir = std::env::temp_dir().join(format!("ao-prov-store-{}", std::process::id()));
        let path = dir.join("provisioning.json");
        let store = ProvisionStore::open(Some(&path), ProvisionMetrics::default());
        assert!(store.served().is_empty());
        let p = provisioning(
            &[("001a2b3c4d5e.cfg", "a", Some("reception")), ("y000000000000.cfg", "c", None)],
            "pw0123456789",
        );
        assert_eq!(
            store.apply(&p).unwrap(),
            vec!["001a2b3c4d5e.cfg", "provisioning.json", "y000000000000.cfg"]
        );
        assert_eq!(store.apply(&p).unwrap(), Vec::<String>::new(), "the same again changes nothing");
        let served = store.served();
        assert_eq!(&*served.lookup("001A2B3C4D5E.CFG").unwrap().contents, b"a");
        assert_eq!(served.lookup("/001a2b3c4d5e.cfg").unwrap().name, "001a2b3c4d5e.cfg");
        assert!(served.lookup("../001a2b3c4d5e.cfg").is_none());
        assert!(served.password_ok("reception", "pw0123456789") && !served.password_ok("reception", "nope"));
        assert!(!served.password_ok("lobby", "pw0123456789"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

        let restarted = ProvisionStore::open(Some(&path), ProvisionMetrics::default());
        assert_eq!(&*restarted.served().lookup("Y000000000000.cfg").unwrap().contents, b"c");
        let mut next = p.clone();
        next.files.insert("001a2b3c4d5e.cfg".into(), "b".into());
        next.files.remove("y000000000000.cfg");
        assert_eq!(restarted.apply(&next).unwrap(), vec!["001a2b3c4d5e.cfg", "y000000000000.cfg"]);
        assert!(restarted.served().lookup("y000000000000.cfg").is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
