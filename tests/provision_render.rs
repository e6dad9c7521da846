//! Desk-phone provisioning, the pure half: one test per validation error of a device (bad MAC,
//! duplicate MAC anywhere in the fleet, unsupported model, no address to register to, bad node
//! settings), each naming the field and the fix while the rest of the fleet still renders; and
//! every XML file of every vendor well-formed by `xmllint`, the reference parser.

mod support;

use std::process::Command;

use asterisk_operator::render;
use asterisk_operator::topology::{self, Kind, Reason, Resolution, ValidationError};
use support::fleet;

const BASE: &str = r#"
apiVersion: asterisk.operator.dev/v1alpha1
kind: AsteriskNode
metadata: {name: office-a}
spec: {numbering: {prefixes: ["3"], length: 4}, address: 192.0.2.10, agent: {endpoint: "https://a:7443"}}
---
apiVersion: asterisk.operator.dev/v1alpha1
kind: AsteriskNode
metadata: {name: office-b}
spec: {numbering: {prefixes: ["4"], length: 4}, agent: {endpoint: "https://b:7443"}, provisioning: {sipServer: 192.168.10.2}}
---
apiVersion: asterisk.operator.dev/v1alpha1
kind: Trunk
metadata: {name: a-b}
spec: {protocol: iax2, ends: [office-a, office-b]}
---
apiVersion: asterisk.operator.dev/v1alpha1
kind: Phone
metadata: {name: desk-a, creationTimestamp: "2026-01-01T00:00:00Z"}
spec: {node: office-a, extension: "3001", device: {vendor: yealink, model: T46S, mac: "80:5e:c0:00:00:01"}}
"#;

fn resolve_with(extra: &str) -> Resolution {
    fleet::resolve_with(BASE, extra)
}

/// Exactly one error (see [`fleet::single_error`]); the base fleet (and desk-a's file) still
/// there.
fn single_error(res: &Resolution, kind: Kind, name: &str, field: &str, reason: Reason) -> ValidationError {
    let e = fleet::single_error(res, kind, name, field, reason);
    let t = &res.topology;
    assert!(t.nodes.contains_key("office-a") && t.phones.contains_key("desk-a"));
    let a = render::render(t, "office-a").unwrap();
    assert!(a.provisioning.files.contains_key("805ec0000001.cfg"), "{:?}", a.provisioning.files.keys());
    e
}

fn phone(name: &str, node: &str, ext: &str, device: &str) -> String {
    format!(
        "apiVersion: asterisk.operator.dev/v1alpha1\nkind: Phone\nmetadata: {{name: {name}, creationTimestamp: \"2026-02-01T00:00:00Z\"}}\n\
         spec: {{node: {node}, extension: \"{ext}\", device: {device}}}\n"
    )
}

#[test]
fn base_fleet_renders_its_desk_phone() {
    let res = resolve_with("");
    assert_eq!(res.errors, vec![]);
    let a = render::render(&res.topology, "office-a").unwrap();
    let file = &a.provisioning.files["805ec0000001.cfg"];
    assert!(
        file.starts_with("#!version:1.0.0.1\n")
            && file.contains("account.1.sip_server.1.address = 192.0.2.10")
    );
    assert!(a.provisioning.files.contains_key("y000000000000.cfg"));
    // Provisioning files are not Asterisk files: nothing under the bundle's config files.
    assert!(a.files.keys().all(|f| !f.ends_with(".cfg")));
}

#[test]
fn a_bad_mac_is_refused_with_the_notations_that_work() {
    let res = resolve_with(&phone(
        "desk-b",
        "office-a",
        "3002",
        r#"{vendor: snom, model: D785, mac: "00:04:13:zz:00:01"}"#,
    ));
    let e = single_error(&res, Kind::Phone, "desk-b", "spec.device.mac", Reason::InvalidMac);
    assert!(e.fix.contains("00:1a:2b:3c:4d:5e") && e.fix.contains("001a2b3c4d5e"), "{e}");
    assert!(!res.topology.phones.contains_key("desk-b"));

    let res = resolve_with(&phone(
        "desk-b",
        "office-a",
        "3002",
        r#"{vendor: snom, model: D785, mac: "ff:ff:ff:ff:ff:ff"}"#,
    ));
    let e = single_error(&res, Kind::Phone, "desk-b", "spec.device.mac", Reason::InvalidMac);
    assert!(e.problem.contains("broadcast"), "{e}");
}

#[test]
fn a_mac_used_twice_anywhere_in_the_fleet_names_both_phones() {
    // The same MAC in another notation, on another node: still the same phone.
    let res = resolve_with(&phone(
        "desk-b",
        "office-b",
        "4001",
        r#"{vendor: polycom, model: "VVX 410", mac: "805E.C000.0001"}"#,
    ));
    let e = single_error(&res, Kind::Phone, "desk-b", "spec.device.mac", Reason::DuplicateMac);
    assert!(e.problem.contains("desk-a") && e.problem.contains("desk-b"), "{e}");
    assert!(e.problem.contains("80:5e:c0:00:00:01"), "{e}");
    // The older phone keeps it; the newer one is left out whole.
    assert!(res.topology.phones.contains_key("desk-a") && !res.topology.phones.contains_key("desk-b"));
}

#[test]
fn a_model_the_vendor_format_does_not_cover_is_refused() {
    let res = resolve_with(&phone(
        "desk-b",
        "office-a",
        "3002",
        r#"{vendor: cisco, model: "7912G", mac: "00:1b:54:00:00:02"}"#,
    ));
    let e = single_error(&res, Kind::Phone, "desk-b", "spec.device.model", Reason::UnsupportedModel);
    assert!(e.fix.contains("7960") && e.fix.contains("88xx"), "{e}");
}

#[test]
fn a_phone_on_a_node_without_an_address_for_phones_is_refused() {
    // office-c has no address (it registers to office-a) and says nowhere where phones reach it.
    let extra = r#"
apiVersion: asterisk.operator.dev/v1alpha1
kind: AsteriskNode
metadata: {name: office-c}
spec: {numbering: {prefixes: ["5"], length: 4}, agent: {endpoint: "https://c:7443"}}
---
apiVersion: asterisk.operator.dev/v1alpha1
kind: Trunk
metadata: {name: a-c}
spec: {protocol: iax2, ends: [office-a, office-c]}
"#;
    let device = r#"{vendor: cisco, model: "7941", mac: "00:1b:54:00:00:02"}"#;
    let res = resolve_with(&format!("{extra}---\n{}", phone("desk-c", "office-c", "5001", device)));
    let e = single_error(&res, Kind::Phone, "desk-c", "spec.device", Reason::NoSipServer);
    assert!(e.fix.contains("spec.provisioning.sipServer") && e.fix.contains("office-c"), "{e}");
}

#[test]
fn bad_node_settings_name_their_field() {
    let res = resolve_with(
        r#"
apiVersion: asterisk.operator.dev/v1alpha1
kind: AsteriskNode
metadata: {name: office-c}
spec:
  numbering: {prefixes: ["5"], length: 4}
  address: 192.0.2.30
  agent: {endpoint: "https://c:7443"}
  provisioning: {allowedNetworks: ["10.0.0.0/33"]}
"#,
    );
    // office-c is invalid, so it is also unreachable by no trunk: only the settings error counts.
    let errors: Vec<_> = res.errors.iter().filter(|e| e.reason == Reason::InvalidField).collect();
    assert_eq!(errors.len(), 1, "{:#?}", res.errors);
    assert_eq!(errors[0].field, "spec.provisioning.allowedNetworks[0]");
    assert!(!res.topology.nodes.contains_key("office-c"));
}

#[test]
fn every_xml_file_of_every_vendor_is_well_formed() {
    let xmllint = which("xmllint");
    let res = topology::resolve(&fleet::example("desk-phones"));
    assert_eq!(res.errors, vec![]);
    let bundles = render::render_all(&res.topology);
    let dir = std::env::temp_dir().join(format!("ao-xmllint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut checked = Vec::new();
    for bundle in bundles.values() {
        for (name, contents) in &bundle.provisioning.files {
            if !contents.starts_with("<?xml") {
                continue;
            }
            let path = dir.join(name);
            std::fs::write(&path, contents).unwrap();
            let out = Command::new(&xmllint).arg("--noout").arg(&path).output().unwrap();
            assert!(
                out.status.success(),
                "{name} is not well-formed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            checked.push(name.clone());
        }
    }
    checked.sort();
    // Cisco SEP, Polycom master and parameter file, Snom.
    assert_eq!(
        checked,
        ["000413AA0105.xml", "0004f2aa0104-phone.cfg", "0004f2aa0104.cfg", "SEP001B54AA0102.cnf.xml"]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A test-bed tool, or a failure that says how to get it.
fn which(tool: &str) -> std::path::PathBuf {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(tool)).find(|p| p.is_file()))
        .unwrap_or_default();
    found.unwrap_or_else(|| {
        panic!("{tool} is missing: run `bash testbed/setup.sh` (installs the provisioning clients)")
    })
}
