//! Desk-phone provisioning in tests: agents that serve phone files, the real clients that fetch
//! them (tftp-hpa, atftp, curl from the test-bed), and a TLS certificate for HTTPS.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use asterisk_operator::agent::AgentOptions;
use asterisk_operator::provision::ProvisionOptions;

/// A test-bed client, or a failure that says how to get it.
pub fn tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|p| p.is_file()));
    found.unwrap_or_else(|| {
        panic!("{name} is missing: run `bash testbed/setup.sh` (its provclients step installs tftp-hpa, atftp, curl and xmllint)")
    })
}

/// `opts` serving TFTP and HTTP on `addr` (free ports), and HTTPS too when given a certificate.
pub fn serving(mut opts: AgentOptions, addr: Ipv4Addr, tls: Option<(PathBuf, PathBuf)>) -> AgentOptions {
    let any = |ip: Ipv4Addr| Some(SocketAddr::from((ip, 0)));
    opts.provision = ProvisionOptions {
        tftp: any(addr),
        http: any(addr),
        https: tls.as_ref().and_then(|_| any(addr)),
        tls_cert: tls.as_ref().map(|t| t.0.clone()),
        tls_key: tls.map(|t| t.1),
        tftp_max_blksize: None,
    };
    opts
}

/// A self-signed (not CA) certificate for `ip`, written as `cert.pem` and `key.pem` in `dir`.
pub fn tls_pair(dir: &Path, ip: IpAddr) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::IpAddress(ip));
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

/// Runs a client with a deadline (a stuck transfer must fail the test, not hang it).
pub fn run(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null());
    let mut timeout = Command::new("timeout");
    timeout.arg("30").arg(cmd.get_program()).args(cmd.get_args());
    timeout.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// tftp-hpa: a plain RFC 1350 request, no options (like an old phone); `mode` `octet` or
/// `netascii` (tftp-hpa's default).
pub fn tftp_hpa(server: SocketAddr, name: &str, mode: &str, into: &Path) -> Output {
    let mut cmd = Command::new(tool("tftp"));
    cmd.args(["-m", mode, &server.ip().to_string(), &server.port().to_string(), "-c", "get", name]).arg(into);
    run(cmd)
}

/// atftp asking for blksize and tsize.
pub fn atftp(server: SocketAddr, name: &str, blksize: u16, into: &Path) -> Output {
    let mut cmd = Command::new(tool("atftp"));
    cmd.args(["--option", &format!("blksize {blksize}"), "--option", "tsize 0", "-g", "-r", name, "-l"])
        .arg(into)
        .args([&server.ip().to_string(), &server.port().to_string()]);
    run(cmd)
}

/// curl fetching `url` (tftp://, http://, https://) into `into`, with extra arguments.
pub fn curl(url: &str, into: &Path, extra: &[&str]) -> Output {
    let mut cmd = Command::new(tool("curl"));
    cmd.args(["-s", "-S", "--max-time", "20", "-o"]).arg(into).args(extra).arg(url);
    run(cmd)
}

/// curl's HTTP status code for `url` (body discarded).
pub fn http_code(url: &str, extra: &[&str]) -> u16 {
    let mut cmd = Command::new(tool("curl"));
    cmd.args(["-s", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}"]).args(extra).arg(url);
    let out = run(cmd);
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}
