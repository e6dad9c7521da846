//! Golden files: every rendered file of the examples (Asterisk files, mesh plans, desk-phone
//! provisioning files and their index), reviewed once by a person, then diffed.
//! `UPDATE_GOLDEN=1 cargo test --test render_golden` rewrites them after an intended change.

mod support;

use std::path::PathBuf;

use asterisk_operator::{render, topology};
use support::fleet;

fn check_example(name: &str) {
    let resolution = topology::resolve(&fleet::example(name));
    assert_eq!(resolution.errors, vec![], "example {name} is valid");
    let bundles = render::render_all(&resolution.topology);
    assert!(!bundles.is_empty());
    let golden_root = PathBuf::from("tests/golden").join(name);
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    for (node, bundle) in &bundles {
        let mut files = bundle.files.clone();
        files.insert(
            render::MESH_PLAN_FILE.into(),
            serde_json::to_string_pretty(&bundle.mesh).unwrap() + "\n",
        );
        files.insert("HASH".into(), format!("{}\n", bundle.hash));
        if !bundle.provisioning.is_empty() {
            files.insert(
                render::PROVISIONING_INDEX_FILE.into(),
                serde_json::to_string_pretty(&bundle.provisioning.index).unwrap() + "\n",
            );
            for (name, contents) in &bundle.provisioning.files {
                files.insert(format!("{}/{name}", render::PROVISIONING_DIR), contents.clone());
            }
        }
        for (file, contents) in files {
            let rel = golden_root.join(node).join(&file);
            let path = fleet::repo().join(&rel);
            if update {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &contents).unwrap();
                continue;
            }
            let expected = std::fs::read_to_string(&path).unwrap_or_default();
            if expected != contents {
                mismatches
                    .push(format!("{}:\n--- expected\n{expected}\n--- rendered\n{contents}", rel.display()));
            }
        }
    }
    // No stray golden files for nodes or files that are no longer rendered.
    if let Ok(dirs) = std::fs::read_dir(fleet::repo().join(&golden_root)) {
        for dir in dirs.flatten() {
            let node = dir.file_name().to_string_lossy().into_owned();
            assert!(bundles.contains_key(&node), "golden folder {node} has no rendered node");
        }
    }
    assert!(mismatches.is_empty(), "rendered files differ from golden files:\n{}", mismatches.join("\n"));
}

#[test]
fn two_offices_matches_golden_files() {
    check_example("two-offices");
}

#[test]
fn three_sites_matches_golden_files() {
    check_example("three-sites");
}

#[test]
fn desk_phones_matches_golden_files() {
    check_example("desk-phones");
}
