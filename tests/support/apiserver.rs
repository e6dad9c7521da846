//! A real Kubernetes API server for custom resources (etcd + apiextensions-apiserver from the
//! test-bed), started per test binary through `testbed/apiserver.sh`.

use std::path::PathBuf;
use std::process::Command;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::fleet::repo;

/// A running API server; stopped on drop.
pub struct ApiServer {
    dir: PathBuf,
}

impl ApiServer {
    /// Starts one in a fresh folder; panics with a how-to when the test-bed lacks it.
    pub fn start(name: &str) -> ApiServer {
        let bin = PathBuf::from("/var/cache/asterisk-operator/bin/apiextensions-apiserver");
        assert!(bin.exists(), "{} is missing: run `bash testbed/setup.sh` (as root) first", bin.display());
        let dir = std::env::temp_dir().join(format!("ao-apiserver-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new("bash")
            .arg(repo().join("testbed/apiserver.sh"))
            .arg("start")
            .arg(&dir)
            .output()
            .expect("testbed/apiserver.sh runs");
        assert!(
            out.status.success(),
            "testbed/apiserver.sh start failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ApiServer { dir }
    }

    /// A kube client with the test admin's client certificate.
    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(self.dir.join("kubeconfig")).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kube config");
        Client::try_from(config).expect("kube client")
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ =
            Command::new("bash").arg(repo().join("testbed/apiserver.sh")).arg("stop").arg(&self.dir).output();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
