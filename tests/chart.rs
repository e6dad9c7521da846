//! The Helm chart, its alert rules and its dashboard, checked with the real tools the test-bed
//! installs (`bash testbed/setup.sh`): helm 3.17 (lint, template, values schema),
//! kubernetes-validate `--strict` (every rendered object against Kubernetes 1.37's OpenAPI
//! schema), the prometheus-operator CRD schemas (@kubernetes-models/prometheus-operator),
//! promtool (rules checked and unit-tested), and the README generator (the chart README is
//! current). The CRDs in the chart are byte-identical to the generated ones.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use support::fleet::repo;

const CACHE: &str = "/var/cache/asterisk-operator";

fn chart() -> PathBuf {
    repo().join("charts/asterisk-operator")
}

/// A test-bed tool: its path, or a panic saying how to get it.
fn tool(path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    assert!(
        p.exists(),
        "{} is missing: run `bash testbed/setup.sh` (it installs the chart tools)",
        p.display()
    );
    p
}

fn helm() -> PathBuf {
    tool(&format!("{CACHE}/bin/helm"))
}

/// Runs a command; panics with its output unless it succeeds. Returns stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{cmd:?} failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    text
}

/// Every toggle on (and namespaced RBAC), for the "everything" rendering.
const ALL_ON: &str = "serviceMonitor.enabled=true,podMonitor.enabled=true,prometheusRule.enabled=true,\
dashboard.enabled=true,serviceMonitor.additionalLabels.release=kps,managed.allowHostNetwork=true,\
agents.endpointHosts={*.pbx.example},watchNamespaces={tenant-a,tenant-b}";

fn template(set: Option<&str>) -> Vec<Value> {
    let mut cmd = Command::new(helm());
    cmd.args(["template", "ao", "--namespace", "asterisk-operator", "--include-crds"]).arg(chart());
    if let Some(set) = set {
        cmd.args(["--set", set]);
    }
    let text = run(&mut cmd);
    let mut docs = Vec::new();
    for doc in text.split("\n---") {
        let v: Value = serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("rendered YAML: {e}\n{doc}"));
        if !v.is_null() {
            docs.push(v);
        }
    }
    docs
}

fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter().map(|d| d["kind"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn the_chart_crds_are_the_generated_ones_byte_for_byte() {
    let mut names = BTreeSet::new();
    for (name, crd) in asterisk_operator::crd::all() {
        let path = chart().join(format!("crds/{name}.yaml"));
        let in_chart = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let generated = asterisk_operator::crd::to_yaml(&crd).unwrap();
        assert!(
            in_chart == generated,
            "{} differs from `asterisk-operator crds`: run `cargo run -- crds --dir charts/asterisk-operator/crds`",
            path.display()
        );
        names.insert(format!("{name}.yaml"));
    }
    let present: BTreeSet<String> = std::fs::read_dir(chart().join("crds"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(present, names, "no stale CRD file in the chart");
}

#[test]
fn lint_and_template_pass_with_defaults_and_with_every_toggle_and_objects_validate() {
    for strict_lint in [None, Some(ALL_ON)] {
        let mut cmd = Command::new(helm());
        cmd.args(["lint", "--strict"]).arg(chart());
        if let Some(set) = strict_lint {
            cmd.args(["--set", set]);
        }
        run(&mut cmd);
    }
    let defaults = template(None);
    assert_eq!(
        kinds(&defaults),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "Deployment",
            "Pod",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
        .map(String::from)
        .into(),
        "monitoring is off by default"
    );
    let all = template(Some(ALL_ON));
    for k in ["ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"] {
        assert!(kinds(&all).contains(k), "{k} with every toggle on");
    }
    assert_eq!(
        all.iter().find(|d| d["kind"] == "ServiceMonitor").unwrap()["metadata"]["labels"]["release"],
        "kps",
        "additionalLabels reach the object"
    );

    // The restricted profile and the probes a standby passes.
    let deployment = all.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["args"][0], "controller");
    let env: Vec<&str> = c["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert!(env.contains(&"POD_NAMESPACE") && env.contains(&"HOSTNAME"), "{env:?}");

    // No wildcard in any rule.
    for d in all.iter().filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role") {
        for rule in d["rules"].as_array().unwrap() {
            for field in ["apiGroups", "resources", "verbs"] {
                assert!(!rule[field].as_array().unwrap().iter().any(|v| v == "*"), "wildcard in {rule}");
            }
        }
    }

    let dir = tempdir("validate");
    // Every Kubernetes object against the OpenAPI schema of a current release, unknown fields refused.
    let core: Vec<&Value> = all
        .iter()
        .filter(|d| !d["apiVersion"].as_str().unwrap().starts_with("monitoring.coreos.com"))
        .collect();
    let core_file = dir.join("core.yaml");
    std::fs::write(
        &core_file,
        core.iter().map(|d| serde_json::to_string(d).unwrap() + "\n---\n").collect::<String>(),
    )
    .unwrap();
    let kv = tool(&format!("{CACHE}/venv-kubernetes-validate/bin/kubernetes-validate"));
    let out = run(Command::new(&kv).args(["--strict", "--no-warn"]).arg(&core_file));
    assert_eq!(out.matches(" passed for resource ").count(), core.len(), "every object checked:\n{out}");
    // The same validator refuses an unknown field, so the check above can fail.
    let mut typo = (*core.iter().find(|d| d["kind"] == "Deployment").unwrap()).clone();
    typo["spec"]["replica"] = 2.into();
    let typo_file = dir.join("typo.yaml");
    std::fs::write(&typo_file, serde_json::to_string(&typo).unwrap()).unwrap();
    let refused = Command::new(&kv).args(["--strict", "--no-warn"]).arg(&typo_file).output().unwrap();
    assert!(!refused.status.success(), "kubernetes-validate --strict accepts an unknown field");

    // The monitoring objects against the prometheus-operator CRD schemas.
    let monitoring: Vec<&Value> = all
        .iter()
        .filter(|d| d["apiVersion"].as_str().unwrap().starts_with("monitoring.coreos.com"))
        .collect();
    assert_eq!(monitoring.len(), 3);
    let npm = tool(&format!("{CACHE}/chart-npm"));
    let mon_file = dir.join("monitoring.json");
    std::fs::write(&mon_file, serde_json::to_string(&monitoring).unwrap()).unwrap();
    let script = repo().join("tests/chart/validate-monitoring.mjs");
    let out = run(Command::new("node").arg(&script).arg(&npm).arg(&mon_file));
    assert_eq!(out.matches("\nok ").count() + usize::from(out.starts_with("ok ")), 3, "{out}");
    let mut wrong = monitoring.iter().map(|v| (*v).clone()).collect::<Vec<_>>();
    wrong.iter_mut().find(|d| d["kind"] == "ServiceMonitor").unwrap()["spec"]["endpoints"][0]["interval"] =
        30.into();
    std::fs::write(&mon_file, serde_json::to_string(&wrong).unwrap()).unwrap();
    let refused = Command::new("node").arg(&script).arg(&npm).arg(&mon_file).output().unwrap();
    assert!(!refused.status.success(), "the monitoring schema check can fail");
}

#[test]
fn a_mistyped_or_out_of_range_value_is_refused_by_the_schema() {
    for (set, why) in [
        ("controler.replicas=3", "Additional property controler is not allowed"),
        ("serviceMonitor.enable=true", "Additional property enable is not allowed"),
        ("controller.replicas=0", "controller.replicas"),
        ("controller.logFormat=xml", "controller.logFormat"),
        ("prometheusRule.runbookBaseURL=docs", "prometheusRule.runbookBaseURL"),
    ] {
        let out = Command::new(helm()).args(["template", "ao", "--set", set]).arg(chart()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{set} was accepted");
        assert!(err.contains(why), "{set}: {err}");
    }
}

#[test]
fn the_prometheus_rule_is_the_rules_file_with_the_runbook_base_given() {
    let rules: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(chart().join("files/prometheus-rules.yaml")).unwrap(),
    )
    .unwrap();
    let docs =
        template(Some(&format!("{ALL_ON},prometheusRule.runbookBaseURL=https://wiki.example/runbooks/")));
    let rule = docs.iter().find(|d| d["kind"] == "PrometheusRule").unwrap();
    let text = serde_json::to_string(&rules).unwrap().replace(
        "https://github.com/asterisk-operator/asterisk-operator/blob/main/docs/runbooks/",
        "https://wiki.example/runbooks/",
    );
    assert_eq!(rule["spec"], serde_json::from_str::<Value>(&text).unwrap());
}

#[test]
fn promtool_checks_the_rules_and_every_alert_has_a_firing_and_a_quiet_test_and_a_runbook() {
    let rules = chart().join("files/prometheus-rules.yaml");
    let promtool = tool("/usr/bin/promtool");
    run(Command::new(&promtool).args(["check", "rules"]).arg(&rules));
    run(Command::new(&promtool)
        .args(["test", "rules", "alerts_test.yaml"])
        .current_dir(repo().join("tests/prometheus")));

    let parsed: Value = serde_saphyr::from_str(&std::fs::read_to_string(&rules).unwrap()).unwrap();
    let tests: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(repo().join("tests/prometheus/alerts_test.yaml")).unwrap(),
    )
    .unwrap();
    for group in parsed["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            let a = &rule["annotations"];
            for key in ["summary", "description", "runbook_url"] {
                assert!(a[key].as_str().is_some_and(|s| !s.is_empty()), "{name} has no {key}");
            }
            // Fleet-wide alerts (the controller's) have no node to name; every other one does.
            if group["name"] != "asterisk-operator" || name == "AsteriskNodeNotReady" {
                assert!(
                    a["description"].as_str().unwrap().contains("{{ $labels."),
                    "{name}: the description names what fired"
                );
            }
            let url = a["runbook_url"].as_str().unwrap();
            let page = url.rsplit('/').next().unwrap();
            assert_eq!(page, format!("{name}.md"), "{name}'s runbook URL");
            let runbook = repo().join("docs/runbooks").join(page);
            let text = std::fs::read_to_string(&runbook)
                .unwrap_or_else(|_| panic!("{name}: no {}", runbook.display()));
            assert!(text.starts_with(&format!("# {name}")), "{}", runbook.display());
            let cases: Vec<&Value> = tests["tests"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|t| t["alert_rule_test"].as_array().unwrap())
                .filter(|c| c["alertname"] == name)
                .collect();
            let firing =
                cases.iter().filter(|c| c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty())).count();
            let quiet =
                cases.iter().filter(|c| c["exp_alerts"].as_array().is_some_and(|a| a.is_empty())).count();
            assert!(firing >= 1 && quiet >= 1, "{name}: {firing} firing and {quiet} quiet cases");
        }
    }
}

/// The dashboard's panels, each with its queries.
pub fn dashboard() -> Value {
    serde_json::from_str(&std::fs::read_to_string(chart().join("files/dashboard.json")).unwrap()).unwrap()
}

#[test]
fn the_dashboard_is_templated_laid_out_without_overlap_and_its_queries_parse() {
    let d = dashboard();
    let vars: Vec<&str> =
        d["templating"]["list"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(vars, ["datasource", "namespace", "node"]);
    assert_eq!(d["templating"]["list"][0]["type"], "datasource");
    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut cells: Vec<(u64, u64, u64, u64, String)> = Vec::new();
    let mut exprs = Vec::new();
    for p in panels {
        let title = p["title"].as_str().unwrap().to_owned();
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate id in {title}");
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}: data source not templated");
        assert!(
            p["fieldConfig"]["defaults"]["unit"].as_str().is_some_and(|u| !u.is_empty()),
            "{title}: no unit"
        );
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(w > 0 && h > 0 && x + w <= 24, "{title}: outside the 24-column grid");
        for (ox, oy, ow, oh, other) in &cells {
            let apart = x + w <= *ox || ox + ow <= x || y + h <= *oy || oy + oh <= y;
            assert!(apart, "{title} overlaps {other}");
        }
        cells.push((x, y, w, h, title.clone()));
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert_eq!(
                t["datasource"]["uid"], "${datasource}",
                "{title}: a query without the templated data source"
            );
            let expr = t["expr"].as_str().unwrap();
            assert!(
                !expr.contains("rate(") || expr.contains("[$__rate_interval]") || expr.contains("[24h]"),
                "{title}: {expr}"
            );
            exprs.push((title.clone(), expr.to_owned()));
        }
    }
    // Valid PromQL: promtool parses each query as a recording rule (Grafana's variables replaced
    // by what they expand to).
    let dir = tempdir("dashboard");
    let mut file = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in exprs.iter().enumerate() {
        let e = grafana_expand(expr);
        file.push_str(&format!(
            "      - record: panel_query_{i}\n        expr: {}\n",
            serde_json::to_string(&e).unwrap()
        ));
    }
    std::fs::write(dir.join("dashboard-queries.yaml"), file).unwrap();
    run(Command::new(tool("/usr/bin/promtool"))
        .args(["check", "rules"])
        .arg(dir.join("dashboard-queries.yaml")));
}

/// A dashboard query as Grafana sends it with every variable at "All".
pub fn grafana_expand(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m").replace("$namespace", ".*").replace("$node", ".*")
}

#[test]
fn the_chart_readme_is_generated_from_the_values() {
    let dir = tempdir("readme");
    let readme = dir.join("README.md");
    std::fs::copy(chart().join("README.md"), &readme).unwrap();
    let generator = tool(&format!("{CACHE}/chart-npm/node_modules/.bin/readme-generator"));
    run(Command::new(generator)
        .arg("-v")
        .arg(chart().join("values.yaml"))
        .arg("-r")
        .arg(&readme)
        .arg("-c")
        .arg(chart().join("readme-generator.json")));
    let want = std::fs::read_to_string(&readme).unwrap();
    let have = std::fs::read_to_string(chart().join("README.md")).unwrap();
    assert!(
        want == have,
        "charts/asterisk-operator/README.md is not current: run `readme-generator -v values.yaml -r README.md -c readme-generator.json` in the chart folder"
    );
}

fn tempdir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ao-chart-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
