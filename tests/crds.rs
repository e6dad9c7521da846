//! The CRDs under `crds/` are the ones generated from the Rust types, and their schemas are
//! structural: every node typed, no `$ref`, no untyped `anyOf`/`oneOf`.

mod support;

use asterisk_operator::crd;
use serde_json::Value;
use support::fleet;

#[test]
fn checked_in_crds_match_the_generated_ones() {
    for (name, generated) in crd::all() {
        let path = format!("crds/{name}.yaml");
        let expected = crd::to_yaml(&generated).unwrap();
        assert_eq!(
            fleet::read(&path),
            expected,
            "{path} is stale: run `cargo run -- crds --dir crds` and commit the result"
        );
    }
}

/// Walks a schema node; `path` names it in failures.
fn check_structural(node: &Value, path: &str, problems: &mut Vec<String>) {
    let Some(obj) = node.as_object() else { return };
    for banned in ["$ref", "anyOf", "oneOf", "allOf", "not"] {
        if obj.contains_key(banned) {
            problems.push(format!("{path}: has {banned}"));
        }
    }
    let typed = obj.contains_key("type")
        || obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
        || obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if !typed {
        problems.push(format!("{path}: no type"));
    }
    if !obj.contains_key("description") && !path.contains(".items") && !path.contains("additionalProperties")
    {
        problems.push(format!("{path}: no description (kubectl explain shows nothing)"));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            check_structural(v, &format!("{path}.{k}"), problems);
        }
    }
    if let Some(items) = obj.get("items") {
        check_structural(items, &format!("{path}.items"), problems);
    }
    if let Some(extra) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        check_structural(extra, &format!("{path}.additionalProperties"), problems);
    }
}

#[test]
fn schemas_are_structural_and_documented() {
    let mut problems = Vec::new();
    for (name, generated) in crd::all() {
        let value = serde_json::to_value(&generated).unwrap();
        assert_eq!(value["spec"]["group"], "asterisk.operator.dev");
        assert_eq!(value["spec"]["scope"], "Namespaced");
        assert!(
            !value["spec"]["names"]["shortNames"].as_array().unwrap().is_empty(),
            "{name} has short names"
        );
        for version in value["spec"]["versions"].as_array().unwrap() {
            assert_eq!(version["name"], "v1alpha1");
            assert!(version["subresources"]["status"].is_object(), "{name} has a status subresource");
            assert!(version["additionalPrinterColumns"].as_array().is_some_and(|c| c.len() >= 3));
            let schema = &version["schema"]["openAPIV3Schema"];
            // metadata/apiVersion/kind are the API server's; check spec and status.
            for part in ["spec", "status"] {
                check_structural(&schema["properties"][part], &format!("{name}.{part}"), &mut problems);
            }
            let conditions = &schema["properties"]["status"]["properties"]["conditions"];
            assert_eq!(conditions["x-kubernetes-list-type"], "map", "{name} conditions merge by type");
            assert_eq!(conditions["x-kubernetes-list-map-keys"], serde_json::json!(["type"]));
            let condition = &conditions["items"]["properties"];
            for field in ["type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"] {
                assert!(condition[field].is_object(), "{name} condition has {field}");
            }
        }
    }
    assert!(problems.is_empty(), "schema problems:\n{}", problems.join("\n"));
}

#[test]
fn secrets_are_referenced_never_inlined() {
    for (name, generated) in crd::all() {
        let text = serde_json::to_string(&generated).unwrap();
        for inline in ["\"password\":", "\"secret\":", "\"privateKey\":"] {
            assert!(!text.contains(inline), "{name} has an inline secret field {inline}");
        }
    }
}
