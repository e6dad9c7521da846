//! `asterisk-operator controller` from the command line: without a cluster configuration it
//! says so, and with `--manifests --once` it reports unreachable agents in the status file and
//! its exit code instead of hanging or crashing.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_asterisk-operator"))
}

#[test]
fn without_manifests_it_needs_a_cluster_configuration() {
    let out = bin()
        .arg("controller")
        .env_remove("AO_CONTROLLER_MANIFESTS")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no Kubernetes client configuration"), "{stderr}");
    let once = bin().args(["controller", "--once"]).env_remove("AO_CONTROLLER_MANIFESTS").output().unwrap();
    assert!(!once.status.success());
    assert!(String::from_utf8_lossy(&once.stderr).contains("--manifests"), "--once is for --manifests mode");
}

#[test]
fn once_with_unreachable_agents_writes_status_and_fails() {
    let work = std::env::temp_dir().join(format!("ao-cli-controller-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    // The example's agents (office-a-agent:7443, …) do not resolve here.
    let out = bin()
        .args([
            "controller",
            "--once",
            "--manifests",
            concat!(env!("CARGO_MANIFEST_DIR"), "/examples/two-offices.yaml"),
        ])
        .arg("--status-file")
        .arg(work.join("status.yaml"))
        .arg("--secrets-file")
        .arg(work.join("secrets.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("default/office-a: NOT applied"), "{stdout}");
    let status = std::fs::read_to_string(work.join("status.yaml")).unwrap();
    assert!(
        status.contains("reason: AgentUnreachable") && status.contains("type: AgentConnected"),
        "{status}"
    );
    assert!(status.contains("reason: Valid"), "the resources themselves are valid: {status}");
    std::fs::remove_dir_all(&work).unwrap();
}
