//! One test per validation error of the topology resolver: the error names the resource, the
//! field and the fix; the invalid resource is left out and everything else still resolves.

mod support;

use asterisk_operator::render;
use asterisk_operator::topology::{self, Kind, Reason, Resolution};
use support::fleet::{self, single_error};

const BASE: &str = r#"
apiVersion: asterisk.operator.dev/v1alpha1
kind: AsteriskNode
metadata: {name: office-a}
spec: {numbering: {prefixes: ["3"], length: 4}, address: 192.0.2.10, agent: {endpoint: "https://a:7443"}}
---
apiVersion: asterisk.operator.dev/v1alpha1
kind: AsteriskNode
metadata: {name: office-b}
spec: {numbering: {prefixes: ["4"], length: 4}, agent: {endpoint: "https://b:7443"}}
---
apiVersion: asterisk.operator.dev/v1alpha1
kind: Trunk
metadata: {name: a-b}
spec: {protocol: iax2, ends: [office-a, office-b]}
---
apiVersion: asterisk.operator.dev/v1alpha1
kind: Phone
metadata: {name: p3001}
spec: {node: office-a, extension: "3001"}
---
apiVersion: asterisk.operator.dev/v1alpha1
kind: Phone
metadata: {name: p4001}
spec: {node: office-b, extension: "4001"}
"#;

fn resolve_with(extra: &str) -> Resolution {
    fleet::resolve_with(BASE, extra)
}

/// The base fleet still resolves and renders around the invalid resource.
fn base_still_works(res: &Resolution) {
    let t = &res.topology;
    assert!(t.nodes.contains_key("office-a") && t.nodes.contains_key("office-b"));
    assert!(t.trunks.contains_key("a-b"));
    assert!(t.phones.contains_key("p3001") && t.phones.contains_key("p4001"));
    let a = render::render(t, "office-a").unwrap();
    assert!(a.files[render::PJSIP_FILE].contains("[3001]"));
    assert!(a.files[render::EXTENSIONS_FILE].contains("exten => _4XXX,1,Dial(IAX2/a-b/${EXTEN})"));
}

#[test]
fn base_fleet_is_valid() {
    let res = resolve_with("");
    assert_eq!(res.errors, vec![]);
    base_still_works(&res);
}

#[test]
fn overlapping_numbering_plans() {
    let res = resolve_with(
        r#"
apiVersion: asterisk.operator.dev/v1alpha1
kind: AsteriskNode
metadata: {name: office-c}
spec: {numbering: {prefixes: ["31"], length: 4}, address: 192.0.2.30, agent: {endpoint: "https://c:7443"}}
"#,
    );
    let e = single_error(
        &res,
        Kind::AsteriskNode,
        "office-c",
        "spec.numbering.prefixes",
        Reason::OverlappingNumbering,
    );
    assert!(e.problem.contains("31XX") && e.problem.contains("office-a"), "{e}");
    assert!(!res.topology.nodes.contains_key("office-c"));
    base_still_works(&res);
}

#[test]
fn extension_outside_its_nodes_plan() {
    let res = resolve_with(
        r#"
apiVersion: asterisk.operator.dev/v1alpha1
kind: Phone
metadata: {name: stray}
spec: {node: office-a, extension: "4999"}
"#,
    );
    let e = single_error(&res, Kind::Phone, "stray", "spec.extension", Reason::OutsideNumbering);
    assert!(e.problem.contains("3XXX"), "{e}");
    assert!(!res.topology.phones.contains_key("stray"));
    base_still_works(&res);
}

#[test]
fn extension_with_letters() {
    let res = resolve_with(
        r#"
apiVersion: asterisk.operator.dev/v1alpha1
kind: Phone
metadata: {name: lettered}
spec: {node: office-a, extension: "30a1"}
"#,
    );
    single_error(&res, Kind::Phone, "lettered", "spec.extension", Reason::InvalidField);
    base_still_works(&res);
}

#[test]
fn duplicate_extension() {
    let res = resolve_with(
        r#"
apiVersion: asterisk.operator.dev/v1alpha1
kind: Phone
metadata: {name: zz-copy}
spec: {node: office-a, extension: "3001"}
"#,
    );
    let e = single_error(&res, Kind::Phone, "zz-copy", "spec.extension", Reason::DuplicateExtension);
    assert!(e.problem.contains("p3001"), "{e}");
    assert_eq!(res.topology.phones["p3001"].extension, "3001");
    base_still_works(&res);
}

#[test]
fn phone_on_missing_node() {
    let res = resolve_with(
        r#"
apiVersion: asterisk.operator.dev/v1alpha1
kind: Phone
metadata: {name: orphan}
spec: {node: office-z, extension: "3002"}
"#,
    );
    let e = single_error(&res, Kind::Phone, "orphan", "spec.node", Reason::MissingNode);
    assert!(e.problem.contains("office-z"));
    base_still_works(&res);
}

#[test]
fn trunk_to_missing_node() {
    let res = resolve_with(
        r#"
apiVersion: asterisk.operator.dev/v1alpha1
kind: Trunk
metadata: {name: a-z}
spec: {protocol: pjsip, ends: [office-a, office-z]}
"#,
    );
    single_error(&res, Kind::Trunk, "a-z", "spec.ends[1]", Reason::MissingNode);
    base_still_works(&res);
}

#[test]
fn blf_watcher_phone_missing() {
    let res = resolve_with(
        r#"
apiVersion: asterisk.operator.dev/v1alpha1
kind: BlfSubscription
metadata: {name: ghost-watches}
spec: {watcher: {phone: ghost}, targets: [{extension: "4001"}]}
"#,
    );
    single_error(&res, Kind::BlfSubscription, "ghost-watches", "spec.watcher.phone", Reason::MissingPhone);
    assert!(res.topology.mirrors.is_empty());
    base_still_works(&res);
}

#[test]
fn missing_referenced_secret() {
    let yaml = format!(
        "{BASE}\n---\n{}",
        r#"
apiVersion: asterisk.operator.dev/v1alpha1
kind: Phone
metadata: {name: locked}
spec: {node: office-a, extension: "3002", secretRef: {name: no-such-secret, key: password}}
"#
    );
    // Resolve without filling secrets for the explicit reference: fill only the defaults.
    let mut set = fleet::parse(&yaml);
    set.phones.retain(|p| p.metadata.name.as_deref() != Some("locked"));
    let mut set = fleet::with_test_secrets(set);
    set.phones.extend(
        fleet::parse(&yaml).phones.into_iter().filter(|p| p.metadata.name.as_deref() == Some("locked")),
    );
    let res = topology::resolve(&set);
    let e = single_error(&res, Kind::Phone, "locked", "spec.secretRef", Reason::MissingSecret);
    assert!(e.problem.contains("no-such-secret"), "{e}");
    base_still_works(&res);
}

#[test]
fn weak_or_config_breaking_secret() {
    let res = resolve_with(
        r#"
apiVersion: v1
kind: Secret
metadata: {name: bad-secret}
stringData: {secret: "pass;word with spaces"}
---
apiVersion: asterisk.operator.dev/v1alpha1
kind: Phone
metadata: {name: weak}
spec: {node: office-a, extension: "3003", secretRef: {name: bad-secret}}
"#,
    );
    let e = single_error(&res, Kind::Phone, "weak", "spec.secretRef", Reason::UnusableSecret);
    assert!(!e.to_string().contains("pass;word"), "the secret value never appears in errors: {e}");
    base_still_works(&res);
}

#[test]
fn trunk_from_a_node_to_itself() {
    let res = resolve_with(
        r#"
apiVersion: asterisk.operator.dev/v1alpha1
kind: Trunk
metadata: {name: loop}
spec: {protocol: iax2, ends: [office-a, office-a]}
"#,
    );
    single_error(&res, Kind::Trunk, "loop", "spec.ends", Reason::SelfTrunk);
    base_still_works(&res);
}

#[test]
fn trunk_between_two_dynamic_nodes() {
    let res = resolve_with(
        r#"
apiVersion: asterisk.operator.dev/v1alpha1
kind: AsteriskNode
metadata: {name: office-c}
spec: {numbering: {prefixes: ["5"], length: 4}, agent: {endpoint: "https://c:7443"}}
---
apiVersion: asterisk.operator.dev/v1alpha1
kind: Trunk
metadata: {name: a-c}
spec: {protocol: iax2, ends: [office-a, office-c]}
---
apiVersion: asterisk.operator.dev/v1alpha1
kind: Trunk
metadata: {name: b-c}
spec: {protocol: iax2, ends: [office-b, office-c]}
"#,
    );
    single_error(&res, Kind::Trunk, "b-c", "spec.ends", Reason::BothEndsDynamic);
    assert!(res.topology.trunks.contains_key("a-c"));
    base_still_works(&res);
}

#[test]
fn auth_method_that_does_not_fit_the_protocol() {
    let res = resolve_with(
        r#"
apiVersion: asterisk.operator.dev/v1alpha1
kind: Trunk
metadata: {name: a-b-sip}
spec: {protocol: pjsip, ends: [office-a, office-b], priority: 2, auth: {method: md5}}
"#,
    );
    single_error(&res, Kind::Trunk, "a-b-sip", "spec.auth.method", Reason::AuthMismatch);
    base_still_works(&res);
}

#[test]
fn node_unreachable_over_the_trunk_graph() {
    let res = resolve_with(
        r#"
apiVersion: asterisk.operator.dev/v1alpha1
kind: AsteriskNode
metadata: {name: island}
spec: {numbering: {prefixes: ["6"], length: 4}, address: 192.0.2.60, agent: {endpoint: "https://i:7443"}}
---
apiVersion: asterisk.operator.dev/v1alpha1
kind: Phone
metadata: {name: p6001}
spec: {node: island, extension: "6001"}
"#,
    );
    let e = single_error(&res, Kind::AsteriskNode, "island", "spec", Reason::Unreachable);
    assert!(e.fix.contains("add a Trunk"), "{e}");
    // The island still renders its own phones, but nobody routes to it.
    let island = render::render(&res.topology, "island").unwrap();
    assert!(island.files[render::PJSIP_FILE].contains("[6001]"));
    assert!(
        !render::render(&res.topology, "office-a").unwrap().files[render::EXTENSIONS_FILE].contains("_6XXX")
    );
    base_still_works(&res);
}

#[test]
fn blf_target_that_does_not_exist() {
    let res = resolve_with(
        r#"
apiVersion: asterisk.operator.dev/v1alpha1
kind: BlfSubscription
metadata: {name: keys}
spec: {watcher: {phone: p3001}, targets: [{extension: "4001"}, {extension: "4999"}]}
"#,
    );
    let e =
        single_error(&res, Kind::BlfSubscription, "keys", "spec.targets[1].extension", Reason::UnknownTarget);
    assert!(e.problem.contains("4999"));
    assert!(res.topology.mirrors.is_empty(), "nothing of an invalid subscription is applied");
    base_still_works(&res);
}

#[test]
fn node_with_both_agent_and_managed() {
    let res = resolve_with(
        r#"
apiVersion: asterisk.operator.dev/v1alpha1
kind: AsteriskNode
metadata: {name: office-c}
spec: {numbering: {prefixes: ["5"], length: 4}, address: 192.0.2.5, agent: {endpoint: "https://c:7443"}, managed: {image: "asterisk:22"}}
"#,
    );
    single_error(&res, Kind::AsteriskNode, "office-c", "spec.agent", Reason::InvalidField);
    base_still_works(&res);
}

#[test]
fn invalid_node_takes_its_phones_and_trunks_out_with_errors_each() {
    let res = resolve_with(
        r#"
apiVersion: asterisk.operator.dev/v1alpha1
kind: AsteriskNode
metadata: {name: office-c}
spec: {numbering: {prefixes: ["4"], length: 4}, address: 192.0.2.5, agent: {endpoint: "https://c:7443"}}
---
apiVersion: asterisk.operator.dev/v1alpha1
kind: Phone
metadata: {name: on-c}
spec: {node: office-c, extension: "4500"}
"#,
    );
    let fields: Vec<(&str, &str)> =
        res.errors.iter().map(|e| (e.object.name.as_str(), e.field.as_str())).collect();
    assert_eq!(fields, vec![("office-c", "spec.numbering.prefixes"), ("on-c", "spec.node")]);
    base_still_works(&res);
}

#[test]
fn values_that_would_break_out_of_a_config_line_are_refused() {
    // Manifests rendered offline bypass the API server's schema, so the resolver checks too.
    let res = resolve_with(
        r#"
apiVersion: asterisk.operator.dev/v1alpha1
kind: AsteriskNode
metadata: {name: office-c}
spec: {numbering: {prefixes: ["5"], length: 4}, address: "192.0.2.5\n[evil]", agent: {endpoint: "https://c:7443"}}
---
apiVersion: asterisk.operator.dev/v1alpha1
kind: Phone
metadata: {name: quoted}
spec: {node: office-a, extension: "3005", displayName: "Bob\" <9999>"}
---
apiVersion: asterisk.operator.dev/v1alpha1
kind: Phone
metadata: {name: codec}
spec: {node: office-a, extension: "3006", codecs: ["ulaw\nallow=all"]}
"#,
    );
    let fields: Vec<(&str, &str, Reason)> =
        res.errors.iter().map(|e| (e.object.name.as_str(), e.field.as_str(), e.reason)).collect();
    assert_eq!(
        fields,
        vec![
            ("office-c", "spec.address", Reason::InvalidField),
            ("codec", "spec.codecs[0]", Reason::InvalidField),
            ("quoted", "spec.displayName", Reason::InvalidField),
        ]
    );
    for bundle in render::render_all(&res.topology).values() {
        for text in bundle.files.values() {
            assert!(!text.contains("evil") && !text.contains("9999") && !text.contains("\nallow=all"));
        }
    }
    base_still_works(&res);
}

#[test]
fn managed_node_names_leave_room_for_kubernetes_labels_and_get_their_pod_endpoint() {
    let managed = |name: &str| {
        format!(
            r#"
apiVersion: asterisk.operator.dev/v1alpha1
kind: AsteriskNode
metadata: {{name: {name}}}
spec: {{numbering: {{prefixes: ["5"], length: 4}}, managed: {{image: "asterisk:22"}}}}
---
apiVersion: asterisk.operator.dev/v1alpha1
kind: Trunk
metadata: {{name: a-m}}
spec: {{protocol: iax2, ends: [office-a, {name}]}}
"#
        )
    };
    let long = "m".repeat(44);
    let res = resolve_with(&managed(&long));
    // The trunk to the invalid node goes too, with its own error.
    assert!(res.errors.iter().any(|e| e.object.kind == Kind::Trunk), "{:#?}", res.errors);
    let node_errors: Vec<_> = res.errors.iter().filter(|e| e.object.kind == Kind::AsteriskNode).collect();
    assert_eq!(node_errors.len(), 1, "{node_errors:#?}");
    let e = node_errors[0];
    assert_eq!((e.field.as_str(), e.reason), ("metadata.name", Reason::InvalidField));
    assert!(e.problem.contains("44 characters") && e.fix.contains("43"), "{e}");
    base_still_works(&res);

    let fits = "m".repeat(43);
    let res = resolve_with(&managed(&fits));
    assert_eq!(res.errors, vec![]);
    let node = &res.topology.nodes[&fits];
    assert!(node.managed);
    assert_eq!(
        node.agent_endpoint.as_deref(),
        Some(format!("https://asterisk-{fits}-0.asterisk-{fits}.default.svc:7443").as_str()),
        "pushed to pod 0 under the headless Service"
    );
}

#[test]
fn trunk_names_that_collide_with_rendered_sections() {
    // A trunk is rendered as sections named after it on both ends: a name like an extension
    // (a phone's sections), iax.conf's [general], the operator's own names and other trunks'
    // derived sections would all collide.
    for (name, says) in [
        ("3001", "does not start with a letter"),
        ("general", "iax.conf's own [general] section"),
        ("operator-transport", "the operator's own sections"),
        ("a-b-in", "the sections the operator renders for trunk \"a-b\""),
        ("a-b-auth", "the sections the operator renders for trunk \"a-b\""),
        ("x-registration", "for trunk \"x\""),
    ] {
        let res = resolve_with(&format!(
            "apiVersion: asterisk.operator.dev/v1alpha1\nkind: Trunk\nmetadata: {{name: \"{name}\"}}\nspec: {{protocol: pjsip, ends: [office-a, office-b], priority: 2}}\n"
        ));
        let e = single_error(&res, Kind::Trunk, name, "metadata.name", Reason::ReservedName);
        assert!(e.problem.contains(says), "{name}: {e}");
        assert!(e.fix.contains("rename the trunk"), "{e}");
        base_still_works(&res);
        assert!(!res.topology.trunks.contains_key(name));
    }
}

#[test]
fn phone_contexts_that_are_not_contexts_or_the_operators() {
    for context in ["general", "globals", "operator-routes", "operator-local", "operator-from-a-b"] {
        let res = resolve_with(&format!(
            "apiVersion: asterisk.operator.dev/v1alpha1\nkind: AsteriskNode\nmetadata: {{name: office-c}}\nspec: {{numbering: {{prefixes: [\"5\"], length: 4}}, address: 192.0.2.30, agent: {{endpoint: \"https://c:7443\"}}, phoneContext: {context}}}\n---\napiVersion: asterisk.operator.dev/v1alpha1\nkind: Trunk\nmetadata: {{name: a-c}}\nspec: {{protocol: iax2, ends: [office-a, office-c]}}\n"
        ));
        let e = res
            .errors
            .iter()
            .find(|e| e.object.name == "office-c")
            .unwrap_or_else(|| panic!("{context}: {:#?}", res.errors));
        assert_eq!(
            (e.field.as_str(), e.reason),
            ("spec.phoneContext", Reason::ReservedName),
            "{context}: {e}"
        );
        assert!(e.fix.contains("operator-phones"), "{e}");
        base_still_works(&res);
    }
}
