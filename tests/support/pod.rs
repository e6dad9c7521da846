//! Managed nodes' pods from the project's real image, run by podman (4.3, from the test-bed; there
//! is no kubelet here). The pod is the controller's own StatefulSet
//! ([`asterisk_operator::controller::managed::stateful_set`]) turned by [`to_podman`] into the
//! Pod that `podman kube play` accepts; every difference from what Kubernetes would run is
//! written down there. Everything a run creates (image tag, network, pods, volumes, folders)
//! carries the run's own name and is removed when its guard drops, also when a test fails.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    HostAlias, HostPathVolumeSource, PersistentVolumeClaimVolumeSource, Pod, PodSpec, Secret,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::fleet::repo;

/// The image base `testbed/setup.sh` makes with debootstrap (step `podbase`).
pub const BASE_IMAGE: &str = "localhost/debian:sid-slim";

/// `podman args…`: stdout, or the command and its stderr.
pub fn podman(args: &[&str]) -> Result<String, String> {
    let out = Command::new("podman").args(args).stdin(Stdio::null()).output().map_err(|e| {
        format!("podman cannot run ({e}): run `bash testbed/setup.sh` (as root) to install it")
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("podman {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Like [`podman`], panicking on failure.
pub fn podman_ok(args: &[&str]) -> String {
    podman(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Checks that podman is installed and configured as `testbed/setup.sh` does it, and that the
/// image base is there; panics saying how to get them otherwise.
pub fn require_podman() {
    let how = "run `bash testbed/setup.sh` (as root): its steps `podman` and `podbase` install podman, \
               write its containers.conf and import the image base";
    let runtime = podman(&["info", "--format", "{{.Host.OCIRuntime.Name}}"])
        .unwrap_or_else(|e| panic!("podman is not usable: {e}; {how}"));
    assert_eq!(runtime.trim(), "runc", "podman is not configured for this machine; {how}");
    assert!(
        podman(&["image", "exists", BASE_IMAGE]).is_ok(),
        "the image base {BASE_IMAGE} is missing; {how}"
    );
    sweep_dead_runs();
}

/// A run's unique name part: pod, volume, network and image names are global on a podman host.
pub fn run_name() -> String {
    format!("ao{}", std::process::id())
}

/// The pid in a name made with [`run_name`] (`ao<pid>` at the start, or after the last `-`),
/// when that process is gone: a run killed before its guards could clean up.
fn dead_run(name: &str) -> bool {
    let part = |s: &str| s.strip_prefix("ao").and_then(|p| p.parse::<u32>().ok());
    let pid = name.split('-').next().and_then(part).or_else(|| name.rsplit('-').next().and_then(part));
    pid.is_some_and(|pid| pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists())
}

/// Removes the pods, volumes, networks and image tags of earlier runs whose test process died
/// (a timeout's SIGKILL skips every guard), so a CI machine that is used again does not fill up.
pub fn sweep_dead_runs() {
    let names = |args: &[&str]| -> Vec<String> {
        podman(args).unwrap_or_default().lines().map(str::to_owned).filter(|n| dead_run(n)).collect()
    };
    for pod in names(&["pod", "ls", "--format", "{{.Name}}"]) {
        let _ = podman(&["pod", "rm", "--force", "--time", "0", &pod]);
    }
    for volume in names(&["volume", "ls", "--format", "{{.Name}}"]) {
        let _ = podman(&["volume", "rm", "--force", &volume]);
    }
    for network in names(&["network", "ls", "--format", "{{.Name}}"]) {
        let _ = podman(&["network", "rm", "--force", &network]);
    }
    let tags = podman(&["images", "--format", "{{.Repository}}:{{.Tag}}"]).unwrap_or_default();
    for tag in tags.lines().filter(|t| t.strip_prefix("localhost/asterisk-operator:").is_some_and(dead_run)) {
        let _ = podman(&["rmi", tag]);
    }
}

/// The tag of the last image a test built: it keeps the build's cached layers (the Debian and
/// Asterisk part) for the next run, which then only adds its binary.
pub const LAST_TEST_IMAGE: &str = "localhost/asterisk-operator:test";

/// Removes, on drop, the untagged images that appeared since it was made: the stage images a
/// build left behind.
pub struct StageImages(Vec<String>);

impl StageImages {
    /// Notes the untagged images there are now.
    pub fn new() -> StageImages {
        StageImages(dangling_images())
    }
}

impl Drop for StageImages {
    fn drop(&mut self) {
        for id in dangling_images().iter().filter(|id| !self.0.contains(id)) {
            let _ = podman(&["rmi", id]);
        }
    }
}

/// An image built from the repository's Dockerfile. On drop its run's tag goes, with the stage
/// images its build left and the image [`LAST_TEST_IMAGE`] named before.
pub struct Image {
    /// `localhost/asterisk-operator:<run>`.
    pub tag: String,
    /// How long `podman build` took.
    pub build_time: Duration,
    /// This build's stage images (the binary's above all).
    _stages: StageImages,
}

fn dangling_images() -> Vec<String> {
    podman(&["images", "--filter", "dangling=true", "--no-trunc", "--quiet"])
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

impl Image {
    /// Builds the Dockerfile's host path (`BINARY_SOURCE=host`) from `binary` (a path inside the
    /// repository, as the build context only lets `target/<profile>/asterisk-operator` in) on
    /// [`BASE_IMAGE`].
    pub fn build_from_host_binary(binary: &Path) -> Image {
        let relative = binary.strip_prefix(repo()).unwrap_or_else(|_| {
            panic!(
                "{} is outside the repository, so the Dockerfile cannot copy it: build with the default target directory",
                binary.display()
            )
        });
        let tag = format!("localhost/asterisk-operator:{}", run_name());
        let base = format!("BASE={BASE_IMAGE}");
        let bin = format!("BINARY={}", relative.display());
        let dir = repo();
        let stages = StageImages::new();
        let start = Instant::now();
        let out = Command::new("podman")
            .args(["build", "--pull=never", "--build-arg", &base, "--build-arg", "BINARY_SOURCE=host"])
            .args(["--build-arg", &bin, "-t", &tag, "-t", LAST_TEST_IMAGE, "-f"])
            .arg(dir.join("Dockerfile"))
            .arg(&dir)
            .stdin(Stdio::null())
            .output()
            .expect("podman build runs");
        let build_time = start.elapsed();
        assert!(
            out.status.success(),
            "podman build failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Image { tag, build_time, _stages: stages }
    }

    /// `podman image inspect` as JSON (the first and only image).
    pub fn inspect(&self) -> serde_json::Value {
        let text = podman_ok(&["image", "inspect", &self.tag]);
        let mut all: Vec<serde_json::Value> = serde_json::from_str(&text).expect("inspect is JSON");
        all.remove(0)
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        // Only untags while LAST_TEST_IMAGE names the same image; then `_stages` drops.
        let _ = podman(&["rmi", &self.tag]);
    }
}

/// A folder of this run under the temporary directory; removed on drop.
pub struct RunDir(pub PathBuf);

impl RunDir {
    /// `<tmp>/ao-<tag>-<run>`, empty.
    pub fn create(tag: &str) -> RunDir {
        let dir = std::env::temp_dir().join(format!("ao-{tag}-{}", run_name()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        RunDir(dir)
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A podman network of this run (its own subnet, so addresses and ports clash with no other
/// run); removed on drop.
pub struct Network {
    /// Its name.
    pub name: String,
    /// The host's address on it (the bridge): what pods reach the host at.
    pub gateway: Ipv4Addr,
}

impl Network {
    /// Creates it; podman picks a free subnet.
    pub fn create() -> Network {
        let name = format!("{}-net", run_name());
        let _ = podman(&["network", "rm", "--force", &name]);
        podman_ok(&["network", "create", &name]);
        let gateway =
            podman_ok(&["network", "inspect", "--format", "{{range .Subnets}}{{.Gateway}}{{end}}", &name]);
        let gateway = gateway.trim().parse().unwrap_or_else(|e| panic!("gateway {gateway:?}: {e}"));
        Network { name, gateway }
    }

    /// The `n`th address after the gateway in its /24.
    pub fn address(&self, n: u8) -> Ipv4Addr {
        let [a, b, c, d] = self.gateway.octets();
        Ipv4Addr::new(a, b, c, d + n)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = podman(&["network", "rm", "--force", &self.name]);
    }
}

/// A folder the converted pod mounts with `hostPath`, standing in for a Secret volume.
#[derive(Clone, Debug)]
pub struct SecretFolder {
    /// Where it is on the host.
    pub path: PathBuf,
    /// File name → contents.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Mode of the files (the volume's `defaultMode`).
    pub mode: u32,
}

/// What [`to_podman`] made: the Pod, and what must exist on the host before it is played.
#[derive(Clone, Debug)]
pub struct PodmanPod {
    /// The Pod for `podman kube play`.
    pub pod: Pod,
    /// Names of the podman volumes to create (`--opt nocopy`, owned by the pod's user).
    pub volumes: Vec<String>,
    /// Folders to write.
    pub secret_folders: Vec<SecretFolder>,
    /// The pod's user and group (the pod-level `runAsUser`/`runAsGroup`).
    pub run_as: i64,
    /// The run's folder (the site's), where the Pod's file is written.
    pub dir: PathBuf,
}

/// Where a converted pod lives on this host.
pub struct PodSite<'a> {
    /// The run's unique name part ([`run_name`]).
    pub run: &'a str,
    /// A folder of this run for the pod's Secret folders.
    pub dir: &'a Path,
    /// Names the pod must resolve (the cluster DNS's job in Kubernetes).
    pub host_aliases: Vec<HostAlias>,
}

/// The StatefulSet's pod 0 as `podman kube play` (4.3) runs it, with the node's `secret`.
///
/// Differences from Kubernetes, each forced by podman (checked on this machine, see
/// `shared/TESTBED.md` "Images and pods"):
/// 1. **A Pod, not a StatefulSet** (podman has none): the template's pod, with the hostname and
///    subdomain the StatefulSet gives pod 0; the podman pod's name gets the run's suffix
///    (pod names are global on a podman host), its hostname stays `<statefulset>-0`.
/// 2. **`restartPolicy: Never`**: under `Always` podman restarts a finished init container in a
///    loop, and it runs no probes; the test kills containers on purpose and restarts them
///    itself where the kubelet would.
/// 3. **The pod-level `runAsUser`/`runAsGroup`/`runAsNonRoot` are copied into every container**:
///    podman ignores the pod-level ones (and `fsGroup`: see 4 and 5).
/// 4. **emptyDir volumes become pre-created podman volumes** (through a claim name), created
///    with `nocopy` and owned by the pod's user: podman's emptyDir copies the image's content
///    of the mount path in (Debian's sample configs into `/etc/asterisk`), Kubernetes' starts
///    empty; the owner stands in for `fsGroup`.
/// 5. **Secret volumes become `hostPath` folders** written from the Secret: podman 4.3's Secret
///    volumes are broken (`data` arrives base64-encoded, `stringData` empty). Each holds the
///    volume's `items` (or every key), files with its `defaultMode`, folder 0550, all owned by
///    the pod's user (Kubernetes: root-owned, group `fsGroup`; the same access for that user).
/// 6. **No container `ports`**: podman publishes them on the host even without `hostPort` (two
///    pods would clash); the host reaches each pod at its own address instead.
/// 7. **`hostAliases` for the headless Services' names**: there is no cluster DNS; the agents
///    dial each other's mesh at `asterisk-<node>-0.asterisk-<node>.<namespace>.svc`.
/// 8. **The annotation `io.podman.annotations.init.container.type: always`**: podman removes a
///    finished init container of the default type (`once`), so the test could not inspect
///    what it ran as; `always` keeps it (and reruns it when the pod starts, as Kubernetes does).
///
/// Probes stay in the Pod but podman does not run them; seccomp `RuntimeDefault`, dropped
/// capabilities, no privilege escalation and resources are what podman applies itself.
pub fn to_podman(sts: &StatefulSet, secret: &Secret, site: &PodSite) -> PodmanPod {
    let name = sts.metadata.name.clone().expect("a named StatefulSet");
    let spec = sts.spec.clone().expect("a StatefulSet spec");
    let template_meta = spec.template.metadata.clone().unwrap_or_default();
    let mut pod: PodSpec = spec.template.spec.clone().expect("a pod template");
    let pod_name = format!("{name}-0");

    // 1.
    pod.hostname = Some(pod_name.clone());
    pod.subdomain = spec.service_name.clone();
    // 2.
    pod.restart_policy = Some("Never".into());
    // 3.
    let pod_security = pod.security_context.clone().unwrap_or_default();
    let run_as = pod_security.run_as_user.expect("the pod sets runAsUser");
    for c in pod.containers.iter_mut().chain(pod.init_containers.iter_mut().flatten()) {
        let sc = c.security_context.get_or_insert_with(Default::default);
        sc.run_as_user = sc.run_as_user.or(pod_security.run_as_user);
        sc.run_as_group = sc.run_as_group.or(pod_security.run_as_group);
        sc.run_as_non_root = sc.run_as_non_root.or(pod_security.run_as_non_root);
        // 6.
        c.ports = None;
    }
    // 4. and 5.
    let mut volumes = Vec::new();
    let mut secret_folders = Vec::new();
    for v in pod.volumes.iter_mut().flatten() {
        if v.empty_dir.take().is_some() {
            let claim = format!("{}-{name}-{}", site.run, v.name);
            v.persistent_volume_claim =
                Some(PersistentVolumeClaimVolumeSource { claim_name: claim.clone(), read_only: None });
            volumes.push(claim);
        } else if let Some(source) = v.secret.take() {
            assert_eq!(source.secret_name, secret.metadata.name, "volume {} names another Secret", v.name);
            let data = secret.data.clone().unwrap_or_default();
            let files = match &source.items {
                Some(items) => items
                    .iter()
                    .map(|i| {
                        (
                            i.path.clone(),
                            data.get(&i.key).unwrap_or_else(|| panic!("no key {}", i.key)).0.clone(),
                        )
                    })
                    .collect(),
                None => data.into_iter().map(|(k, v)| (k, v.0)).collect(),
            };
            let path = site.dir.join(format!("{name}-{}", v.name));
            v.host_path = Some(HostPathVolumeSource {
                path: path.to_string_lossy().into_owned(),
                type_: Some("Directory".into()),
            });
            let mode = source.default_mode.unwrap_or(0o644) as u32;
            secret_folders.push(SecretFolder { path, files, mode });
        }
    }
    // 7.
    pod.host_aliases = Some(site.host_aliases.clone());
    // 8.
    let mut annotations = template_meta.annotations.unwrap_or_default();
    annotations.insert("io.podman.annotations.init.container.type".into(), "always".into());

    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(format!("{pod_name}-{}", site.run)),
            namespace: sts.metadata.namespace.clone(),
            labels: template_meta.labels,
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(pod),
        status: None,
    };
    PodmanPod { pod, volumes, secret_folders, run_as, dir: site.dir.to_owned() }
}

/// The state of one container, from `podman inspect`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerState {
    /// Running now?
    pub running: bool,
    /// Host pid of its first process (0 when stopped).
    pub pid: u32,
    /// When it was last started.
    pub started_at: String,
    /// Its exit code, when stopped.
    pub exit_code: i64,
}

/// A played pod; removed with its volumes and folders on drop (its containers' logs are
/// printed first when the test is failing).
pub struct RunningPod {
    /// The podman pod's name.
    pub name: String,
    /// Its address on the run's network.
    pub ip: Ipv4Addr,
    converted: PodmanPod,
}

impl RunningPod {
    /// Creates the pod's volumes and Secret folders, then `podman kube play`s it on `network`
    /// at `ip`; returns once it is created (its containers start by themselves).
    pub fn play(converted: PodmanPod, network: &Network, ip: Ipv4Addr) -> RunningPod {
        let name = converted.pod.metadata.name.clone().unwrap();
        let owner = format!("o=uid={0},gid={0}", converted.run_as);
        for v in &converted.volumes {
            let _ = podman(&["volume", "rm", "--force", v]);
            podman_ok(&["volume", "create", "--opt", "nocopy", "--opt", &owner, v]);
        }
        let uid = Some(converted.run_as as u32);
        for f in &converted.secret_folders {
            let _ = std::fs::remove_dir_all(&f.path);
            std::fs::create_dir_all(&f.path).unwrap();
            for (file, bytes) in &f.files {
                let path = f.path.join(file);
                std::fs::write(&path, bytes).unwrap();
                set_mode(&path, f.mode);
                std::os::unix::fs::chown(&path, uid, uid).unwrap();
            }
            set_mode(&f.path, 0o550);
            std::os::unix::fs::chown(&f.path, uid, uid).unwrap();
        }
        let pod = RunningPod { name, ip, converted };
        let file = pod.converted.dir.join(format!("{}.json", pod.name));
        std::fs::write(&file, serde_json::to_vec_pretty(&pod.converted.pod).unwrap()).unwrap();
        let ip_text = ip.to_string();
        let file_text = file.to_string_lossy().into_owned();
        podman_ok(&["kube", "play", "--network", &network.name, "--ip", &ip_text, &file_text]);
        pod
    }

    /// The Secret folders it mounts.
    pub fn secret_folders(&self) -> &[SecretFolder] {
        &self.converted.secret_folders
    }

    /// The podman name of its container `container` (kube play names them `<pod>-<container>`).
    pub fn container(&self, container: &str) -> String {
        format!("{}-{container}", self.name)
    }

    /// Every container of the pod as podman has them (the infra container too).
    pub fn podman_containers(&self) -> Vec<String> {
        podman_ok(&["ps", "--all", "--filter", &format!("pod={}", self.name), "--format", "{{.Names}}"])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `podman inspect` of one container, as JSON.
    pub fn inspect(&self, container: &str) -> serde_json::Value {
        let text = podman_ok(&["inspect", &self.container(container)]);
        let mut all: Vec<serde_json::Value> = serde_json::from_str(&text).expect("inspect is JSON");
        all.remove(0)
    }

    /// The state of container `container`.
    pub fn state(&self, container: &str) -> ContainerState {
        let s = &self.inspect(container)["State"];
        ContainerState {
            running: s["Running"].as_bool().unwrap_or(false),
            pid: s["Pid"].as_u64().unwrap_or(0) as u32,
            started_at: s["StartedAt"].as_str().unwrap_or_default().to_owned(),
            exit_code: s["ExitCode"].as_i64().unwrap_or(-1),
        }
    }

    /// Waits until container `container` is running (or panics after `within`).
    pub fn wait_running(&self, container: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.state(container).running {
            assert!(Instant::now() < deadline, "{}: not running after {within:?}", self.container(container));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `podman exec <container> args…` (as the container's user).
    pub fn exec(&self, container: &str, args: &[&str]) -> Output {
        Command::new("podman")
            .arg("exec")
            .arg(self.container(container))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("podman exec runs")
    }

    /// Kills container `container` with SIGKILL, as a crash would.
    pub fn kill(&self, container: &str) {
        podman_ok(&["kill", "--signal", "KILL", &self.container(container)]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.state(container).running {
            assert!(Instant::now() < deadline, "{} still runs after SIGKILL", self.container(container));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts container `container` again, as the kubelet restarts a failed container.
    pub fn restart(&self, container: &str) {
        podman_ok(&["start", &self.container(container)]);
    }

    /// `podman top`: for each process of `container` (by pid), descriptor → value. One call
    /// per descriptor, as some headers and values hold spaces.
    pub fn processes(
        &self,
        container: &str,
        descriptors: &[&str],
    ) -> BTreeMap<u32, BTreeMap<String, String>> {
        self.processes_of(&self.container(container), descriptors)
    }

    /// [`Self::processes`] of a container by its podman name (e.g. the infra container's).
    pub fn processes_of(&self, name: &str, descriptors: &[&str]) -> BTreeMap<u32, BTreeMap<String, String>> {
        let mut processes: BTreeMap<u32, BTreeMap<String, String>> = BTreeMap::new();
        for d in descriptors {
            for line in podman_ok(&["top", name, "pid", d]).lines().skip(1) {
                let (pid, value) = line.trim().split_once(char::is_whitespace).unwrap_or((line.trim(), ""));
                let pid = pid.parse().unwrap_or_else(|_| panic!("podman top {name}: {line:?}"));
                processes.entry(pid).or_default().insert(d.to_string(), value.trim().to_owned());
            }
        }
        processes
    }
}

/// The log of a container by its podman name: stdout and stderr (podman keeps them apart).
pub fn podman_logs(name: &str) -> String {
    let out =
        Command::new("podman").args(["logs", name]).stdin(Stdio::null()).output().expect("podman logs runs");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

impl Drop for RunningPod {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for c in self.podman_containers() {
                let out = Command::new("podman").args(["logs", "--tail", "40", &c]).output();
                if let Ok(out) = out {
                    eprintln!(
                        "---- {c} (last 40 lines) ----\n{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
        let _ = podman(&["pod", "rm", "--force", "--time", "0", &self.name]);
        for v in &self.converted.volumes {
            let _ = podman(&["volume", "rm", "--force", v]);
        }
        for f in &self.converted.secret_folders {
            let _ = std::fs::remove_dir_all(&f.path);
        }
        let _ = std::fs::remove_file(self.converted.dir.join(format!("{}.json", self.name)));
    }
}
