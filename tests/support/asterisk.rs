//! Real Asterisk 22 instances for integration tests, run from the test-bed's Debian sid root
//! (see `testbed/README.md`). Each instance gets its own loopback address, so every port is the
//! standard one and tests run in parallel without clashes.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::fleet::repo;

/// The test-bed root, or a panic that says how to make it.
pub fn sid_root() -> PathBuf {
    let root = PathBuf::from(
        std::env::var("AO_SID_ROOT").unwrap_or_else(|_| "/var/cache/asterisk-operator/sid-root".into()),
    );
    let ready = root.join("usr/sbin/asterisk").exists() && root.join("proc/self").exists();
    assert!(
        ready,
        "the Asterisk test-bed is missing or not mounted at {}: run `bash testbed/setup.sh` (as root) first",
        root.display()
    );
    root
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh loopback address no other test process uses: 127.(100+n).(pid>>8).(pid), skipping
/// any whose AMI port is already taken. A pid whose low byte is 0 or 255 (not host addresses)
/// takes 127.(1+n).(pid>>8).(1 or 254) instead, a range no other pid uses.
pub fn fresh_address() -> Ipv4Addr {
    let pid = std::process::id();
    let (first, last) = match pid as u8 {
        0 => (1, 1),
        255 => (1, 254),
        low => (100, low),
    };
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < if first == 1 { 99 } else { 150 }, "out of test addresses");
        let addr = Ipv4Addr::new(127, first + n as u8, (pid >> 8) as u8, last);
        if TcpListener::bind((addr, 5038)).is_ok() {
            return addr;
        }
    }
}

/// One running Asterisk.
pub struct Asterisk {
    /// Node name.
    pub name: String,
    /// Loopback address of all its listeners (AMI 5038, SIP 5060, IAX2 4569, HTTP 8088).
    pub addr: Ipv4Addr,
    root: PathBuf,
    /// Instance folder inside the root.
    dir: String,
    child: Option<Child>,
}

/// Builder for an instance: template files, then the test's own files on top.
pub struct AsteriskBuilder {
    name: String,
    addr: Option<Ipv4Addr>,
    files: Vec<(String, String)>,
    /// AMI secret: write the base configuration with `asterisk-operator bootstrap` instead of
    /// the test-bed templates.
    bootstrap: Option<String>,
}

impl AsteriskBuilder {
    /// Uses this address instead of a fresh one.
    pub fn addr(mut self, addr: Ipv4Addr) -> Self {
        self.addr = Some(addr);
        self
    }

    /// Writes `contents` as `etc/<name>` after the templates (so it replaces a template).
    pub fn file(mut self, name: &str, contents: impl Into<String>) -> Self {
        self.files.push((name.to_owned(), contents.into()));
        self
    }

    /// Writes the base configuration with the real `asterisk-operator bootstrap` (as the init
    /// container of a managed pod does), run inside the root with this instance's directories,
    /// AMI bound to its address, and `ami_secret` for the agent's user; no test-bed templates.
    pub fn bootstrapped(mut self, ami_secret: &str) -> Self {
        self.bootstrap = Some(ami_secret.to_owned());
        self
    }

    /// Main config files as an operator-managed server has them: one `#tryinclude` line each,
    /// no SIP transport or IAX2 bind of their own (the operator renders those).
    pub fn operator_main_files(self) -> Self {
        self.file("pjsip.conf", "[global]\ntype=global\nuser_agent=Asterisk test\n\n#tryinclude pjsip_operator.conf\n")
            .file("iax.conf", "[general]\ndisallow=all\nallow=ulaw\nallow=alaw\nautokill=yes\n\n#tryinclude iax_operator.conf\n")
    }

    /// Writes the files and starts Asterisk; returns once it is fully booted.
    pub fn start(self) -> Asterisk {
        let root = sid_root();
        let addr = self.addr.unwrap_or_else(fresh_address);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = format!("/tmp/ao-tests/{}-{id}-{}", std::process::id(), self.name);
        let host_dir = root.join(dir.trim_start_matches('/'));
        let _ = std::fs::remove_dir_all(&host_dir);
        for sub in ["etc", "db", "spool", "run", "log", "cache", "keys"] {
            std::fs::create_dir_all(host_dir.join(sub)).unwrap();
        }
        let entity = format!(
            "02:00:{:02x}:{:02x}:{:02x}:{:02x}",
            addr.octets()[0],
            addr.octets()[1],
            addr.octets()[2],
            addr.octets()[3]
        );
        let mut asterisk = Asterisk { name: self.name, addr, root, dir, child: None };
        match &self.bootstrap {
            Some(secret) => {
                std::fs::write(host_dir.join("ami-secret"), format!("{secret}\n")).unwrap();
                std::fs::copy(env!("CARGO_BIN_EXE_asterisk-operator"), host_dir.join("asterisk-operator"))
                    .expect("copy the binary into the root");
                asterisk.bootstrap();
            }
            None => {
                let templates = repo().join("testbed/asterisk-node");
                for entry in std::fs::read_dir(&templates).expect("testbed/asterisk-node templates") {
                    let path = entry.unwrap().path();
                    let text = std::fs::read_to_string(&path).unwrap();
                    let text = text
                        .replace("@ID@", &asterisk.name)
                        .replace("@DIR@", &asterisk.dir)
                        .replace("@ADDR@", &addr.to_string())
                        .replace("@ENTITYID@", &entity);
                    std::fs::write(host_dir.join("etc").join(path.file_name().unwrap()), text).unwrap();
                }
            }
        }
        for (name, contents) in &self.files {
            let path = host_dir.join("etc").join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        }
        asterisk.boot();
        asterisk
    }
}

impl Asterisk {
    /// An instance named `name` (a node name), to configure and start.
    pub fn builder(name: &str) -> AsteriskBuilder {
        AsteriskBuilder { name: name.to_owned(), addr: None, files: Vec::new(), bootstrap: None }
    }

    /// Runs `asterisk-operator bootstrap` (copied into the instance folder by
    /// [`AsteriskBuilder::bootstrapped`]) inside the root; returns its stdout.
    pub fn bootstrap(&self) -> String {
        let d = &self.dir;
        let out = Command::new("chroot")
            .arg(&self.root)
            .arg(format!("{d}/asterisk-operator"))
            .arg("bootstrap")
            .args(["--node", &self.name, "--ami-bind", &self.addr.to_string()])
            // In-test agents dial this address from the host, whose source address is 127.0.0.1.
            .args(["--ami-permit", "127.0.0.1"])
            .args(["--ami-secret-file", &format!("{d}/ami-secret")])
            .args(["--config-dir", &format!("{d}/etc"), "--keys-dir", &format!("{d}/keys")])
            .args(["--log-dir", &format!("{d}/log"), "--run-dir", &format!("{d}/run")])
            .args(["--db-dir", &format!("{d}/db"), "--spool-dir", &format!("{d}/spool")])
            .args(["--cache-dir", &format!("{d}/cache")])
            .stdin(Stdio::null())
            .output()
            .expect("chroot asterisk-operator bootstrap runs");
        assert!(
            out.status.success(),
            "bootstrap failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn conf(&self) -> String {
        format!("{}/etc/asterisk.conf", self.dir)
    }

    /// The instance folder as seen from the host.
    pub fn host_dir(&self) -> PathBuf {
        self.root.join(self.dir.trim_start_matches('/'))
    }

    /// Where its config files are (what the agent's `--config-dir` points at).
    pub fn etc_dir(&self) -> PathBuf {
        self.host_dir().join("etc")
    }

    /// Where its RSA keys are (`astkeydir`).
    pub fn keys_dir(&self) -> PathBuf {
        self.host_dir().join("keys")
    }

    /// AMI address.
    pub fn ami_addr(&self) -> SocketAddr {
        SocketAddr::from((self.addr, 5038))
    }

    /// Starts the process (again) and waits until it is fully booted.
    pub fn boot(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let stdout = std::fs::File::create(self.host_dir().join("log/stdout")).unwrap();
        let stderr = stdout.try_clone().unwrap();
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new("chroot")
                .arg(&self.root)
                .args(["asterisk", "-C", &self.conf(), "-f", "-n"])
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                .process_group(0)
                .spawn()
                .expect("chroot asterisk starts")
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("{}: asterisk exited during boot ({status}); log:\n{}", self.name, self.log());
            }
            let out = self.cli(&["core waitfullybooted"]);
            if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("fully booted") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: not fully booted after 30 s; log:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    fn cli(&self, command: &[&str]) -> std::process::Output {
        Command::new("chroot")
            .arg(&self.root)
            .args(["asterisk", "-C", &self.conf(), "-rx"])
            .args(command)
            .stdin(Stdio::null())
            .output()
            .expect("chroot asterisk -rx runs")
    }

    /// Runs a CLI command (`asterisk -rx`) and returns its output; panics when it fails.
    pub fn rx(&self, command: &str) -> String {
        let out = self.cli(&[command]);
        assert!(
            out.status.success(),
            "{}: `{command}` failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls `rx(command)` until `pred` holds, for up to `timeout`; returns the last output.
    pub fn wait_for(&self, command: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.rx(command);
            if pred(&out) {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "{}: `{command}` never matched within {timeout:?}; last output:\n{out}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The full log (`log/messages`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.host_dir().join("log/messages")).unwrap_or_default()
    }

    /// Polls the log until it contains `needle`, for up to `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "{}: log never showed {needle:?} within {timeout:?}; log:\n{log}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Writes a file into its config folder.
    pub fn write_config(&self, name: &str, contents: &str) {
        let path = self.etc_dir().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }

    /// Stops Asterisk (`core stop now`, then SIGKILL after 5 s) and waits for the process.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = self.cli(&["core stop now"]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The Asterisk process id while it runs (`chroot` execs asterisk, so it is the child's).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Is the process running?
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Lines of the log at WARNING or ERROR level that mention none of `expected`.
    pub fn problems_except(&self, expected: &[&str]) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("WARNING[") || l.contains("ERROR["))
            .filter(|l| !expected.iter().any(|e| l.contains(e)))
            .map(str::to_owned)
            .collect()
    }

    /// Lines of the log at WARNING or ERROR level that mention `needle`.
    pub fn problems_about(&self, needle: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| (l.contains("WARNING[") || l.contains("ERROR[")) && l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Asterisk {
    fn drop(&mut self) {
        self.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(self.host_dir());
        }
    }
}

/// Boots one Asterisk per node of `set` at `addrs`, each with its rendered bundle in place
/// before start; nodes with a fixed address first, so registrars are up before registrants.
pub fn boot_bundles(
    set: &asterisk_operator::topology::ResourceSet,
    addrs: &std::collections::BTreeMap<String, Ipv4Addr>,
    bundles: &std::collections::BTreeMap<String, asterisk_operator::render::Bundle>,
) -> std::collections::BTreeMap<String, Asterisk> {
    let mut order: Vec<&String> = bundles.keys().collect();
    order.sort_by_key(|n| {
        set.nodes.iter().find(|x| x.metadata.name.as_deref() == Some(n)).unwrap().spec.address.is_none()
    });
    let mut nodes = std::collections::BTreeMap::new();
    for node in order {
        let builder = Asterisk::builder(node).addr(addrs[node]).operator_main_files();
        let builder = bundles[node]
            .files
            .iter()
            .filter(|(f, _)| !f.starts_with("keys/"))
            .fold(builder, |b, (f, c)| b.file(f, c.clone()));
        nodes.insert(node.clone(), builder.start());
    }
    nodes
}
