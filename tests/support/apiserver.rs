//! A real Kubernetes API server for custom resources (etcd + apiextensions-apiserver from the
//! test-bed), started per test binary through `testbed/apiserver.sh`.

use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use std::time::{Duration, Instant};

use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Resource};

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

/// Installs the checked-in `crds/` and waits until all four are Established.
pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for file in ["asterisknode", "trunk", "phone", "blfsubscription"] {
        let crd: CustomResourceDefinition =
            serde_saphyr::from_str(&super::fleet::read(format!("crds/{file}.yaml"))).unwrap();
        crds.create(&PostParams::default(), &crd)
            .await
            .unwrap_or_else(|e| panic!("crds/{file}.yaml refused: {e}"));
    }
    for _ in 0..100 {
        let list = crds.list(&Default::default()).await.unwrap();
        let established = list
            .items
            .iter()
            .filter(|c| c.spec.group == "asterisk.operator.dev")
            .filter(|c| {
                c.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"))
            })
            .count();
        if established == 4 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("CRDs never became Established");
}

/// Creates `r` in the `default` namespace.
pub async fn create<K>(client: &Client, mut r: K)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    r.meta_mut().namespace = Some("default".into());
    let api: Api<K> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &r)
        .await
        .unwrap_or_else(|e| panic!("create {:?}: {e}", r.meta().name));
}

/// Polls `check` until it returns true, for up to `within`.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The condition of type `t`, if any.
pub fn condition<'a>(
    conditions: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    t: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    conditions.iter().find(|c| c.type_ == t)
}
