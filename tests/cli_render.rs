//! The `render` command as a user runs it: the embedded example, secrets kept between runs,
//! invalid resources listed with a non-zero exit while the valid part is still written, and
//! `--strict`.

use std::path::Path;
use std::process::{Command, Output};

fn render(args: &[&str], out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_asterisk-operator"))
        .arg("render")
        .args(args)
        .arg("-o")
        .arg(out)
        .output()
        .expect("the binary runs")
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ao-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn embedded_example_renders_and_keeps_its_secrets() {
    let out = tempdir("embedded");
    let first = render(&[], &out);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let summary = String::from_utf8_lossy(&first.stdout);
    assert!(summary.contains("2 nodes, 4 phones, 2 trunks, 2 routes, 2 BLF mirrors"), "{summary}");
    assert!(summary.contains("generated 7 secrets"), "{summary}");
    for file in ["pjsip_operator.conf", "iax_operator.conf", "extensions_operator.conf", "mesh.json"] {
        assert!(out.join("office-a").join(file).is_file() && out.join("office-b").join(file).is_file());
    }
    // The reception's desk phone: its file and the index, beside (not among) the Asterisk files.
    let sep = std::fs::read_to_string(out.join("office-a/provisioning/SEP001A2B3C4D5E.cnf.xml")).unwrap();
    assert!(sep.contains("<featureID>21</featureID>"), "{sep}");
    assert!(out.join("office-a/provisioning.json").is_file() && !out.join("office-b/provisioning").exists());
    let secrets = out.join("secrets.yaml");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&secrets).unwrap().permissions().mode() & 0o777, 0o600);
    let pjsip = std::fs::read_to_string(out.join("office-a/pjsip_operator.conf")).unwrap();

    // A second run reads secrets.yaml back: same passwords, same hashes, nothing generated.
    let second = render(&[], &out);
    assert!(second.status.success());
    assert!(!String::from_utf8_lossy(&second.stdout).contains("generated"));
    assert_eq!(std::fs::read_to_string(out.join("office-a/pjsip_operator.conf")).unwrap(), pjsip);
    // Secrets appear in the config files (they must), never in what the command prints.
    let password = pjsip.lines().find_map(|l| l.strip_prefix("password=")).unwrap();
    assert!(!String::from_utf8_lossy(&first.stdout).contains(password));
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn invalid_resources_are_listed_and_the_rest_is_written() {
    let out = tempdir("invalid");
    let manifest = out.with_extension("yaml");
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/two-offices.yaml")).unwrap();
    std::fs::write(
        &manifest,
        format!(
            "{example}\n---\napiVersion: asterisk.operator.dev/v1alpha1\nkind: Phone\nmetadata: {{name: stray}}\n\
             spec: {{node: office-a, extension: \"4999\"}}\n"
        ),
    )
    .unwrap();
    let run = render(&["-f", manifest.to_str().unwrap()], &out);
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains(
            "Phone default/stray: spec.extension: 4999 is outside node office-a's numbering plan (3XXX)"
        ),
        "{stderr}"
    );
    assert!(out.join("office-a/pjsip_operator.conf").is_file(), "the valid part is written");

    let strict_out = tempdir("strict");
    let strict = render(&["--strict", "-f", manifest.to_str().unwrap()], &strict_out);
    assert_eq!(strict.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&strict.stderr).contains("--strict: nothing written"));
    assert!(!strict_out.exists(), "--strict writes nothing");
    std::fs::remove_dir_all(&out).unwrap();
    std::fs::remove_file(&manifest).unwrap();
}

#[test]
fn a_mistyped_document_is_named_with_its_field_and_fix_and_the_rest_is_written() {
    let out = tempdir("bad-yaml");
    let manifest = out.with_extension("yaml");
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/two-offices.yaml")).unwrap();
    // One wrong enum value, one wrong type: each document is reported, every valid node written.
    std::fs::write(
        &manifest,
        format!(
            "{example}\n---\napiVersion: asterisk.operator.dev/v1alpha1\nkind: Trunk\nmetadata: {{name: t}}\n\
             spec: {{protocol: sip, ends: [office-a, office-b]}}\n---\napiVersion: asterisk.operator.dev/v1alpha1\n\
             kind: Phone\nmetadata: {{name: lobby}}\nspec: {{node: office-a, extension: \"3010\", nat: maybe}}\n"
        ),
    )
    .unwrap();
    let documents = example.matches("\n---").count() + usize::from(!example.starts_with("---")) + 1;
    let run = render(&["-f", manifest.to_str().unwrap()], &out);
    assert_eq!(run.status.code(), Some(1), "{}", String::from_utf8_lossy(&run.stderr));
    let stderr = String::from_utf8_lossy(&run.stderr);
    let file = manifest.to_str().unwrap();
    assert!(
        stderr.contains(&format!(
            "{file}: document {documents}: Trunk default/t: spec.protocol: unknown variant `sip`, expected `iax2` or `pjsip`; use `iax2` or `pjsip`"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{file}: document {}: Phone default/lobby: spec.nat: invalid type: string \"maybe\", expected a boolean; give a boolean",
            documents + 1
        )),
        "{stderr}"
    );
    for node in ["office-a", "office-b"] {
        assert!(out.join(node).join("pjsip_operator.conf").is_file(), "{node} written");
    }
    assert!(!std::fs::read_to_string(out.join("office-a/pjsip_operator.conf")).unwrap().contains("[3010]"));
    std::fs::remove_dir_all(&out).unwrap();
    std::fs::remove_file(&manifest).unwrap();
}

#[test]
fn a_namespace_that_is_not_a_name_never_becomes_a_path() {
    let dir = std::env::temp_dir().join(format!("ao-render-ns-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = dir.join("fleet.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: asterisk.operator.dev/v1alpha1\nkind: AsteriskNode\nmetadata: {name: a, namespace: \"../../etc\"}\nspec: {numbering: {prefixes: [\"3\"], length: 4}, agent: {endpoint: \"https://a:7443\"}}\n",
    )
    .unwrap();
    let out = dir.join("out");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_asterisk-operator"))
        .args(["render", "-f"])
        .arg(&manifest)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("metadata.namespace: \"../../etc\" is not a DNS-1123 label"), "{err}");
    assert!(!dir.join("etc").exists() && !std::path::Path::new("/etc/a").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
