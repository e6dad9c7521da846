//! Property tests over random valid fleets: rendering is deterministic and independent of input
//! order, every extension is reachable from every node by following the rendered dialplan, and
//! no route can loop.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use asterisk_operator::render::{self, Bundle};
use asterisk_operator::topology::{self, Topology};
use proptest::prelude::*;
use support::fleet;

#[derive(Clone, Debug)]
struct FleetSpec {
    /// Per node: has a fixed address, extension length, phones count.
    nodes: Vec<(bool, u8, u8)>,
    /// Spanning tree: node i (i ≥ 1) links to parent[i-1] < i.
    parents: Vec<usize>,
    /// Extra trunks (a, b, protocol iax2?, priority).
    extra: Vec<(usize, usize, bool, u8)>,
    /// BLF subscriptions: (watcher node, target (node, phone index)).
    blf: Vec<(usize, usize, u8)>,
}

fn fleet_spec() -> impl Strategy<Value = FleetSpec> {
    (2usize..7).prop_flat_map(|n| {
        (
            prop::collection::vec((any::<bool>(), 3u8..6, 1u8..4), n),
            prop::collection::vec(any::<prop::sample::Index>(), n - 1),
            prop::collection::vec((0..n, 0..n, any::<bool>(), 1u8..4), 0..n),
            prop::collection::vec((0..n, 0..n, 0u8..3), 0..6),
        )
            .prop_map(|(nodes, parents, extra, blf)| FleetSpec {
                parents: parents.iter().enumerate().map(|(i, ix)| ix.index(i + 1)).collect(),
                nodes,
                extra,
                blf,
            })
    })
}

fn node_name(i: usize) -> String {
    format!("node-{i}")
}

/// Node i owns numbers starting with digit i+1; phone k of node i is `<i+1>0…0<k+1>`.
fn extension(spec: &FleetSpec, node: usize, phone: u8) -> String {
    let len = usize::from(spec.nodes[node].1);
    format!("{}{:0>width$}", node + 1, phone + 1, width = len - 1)
}

fn manifests(spec: &FleetSpec) -> String {
    let mut docs = Vec::new();
    let api = "apiVersion: asterisk.operator.dev/v1alpha1";
    // Node 0 always has an address, so every trunk below has at least one fixed end.
    let fixed = |i: usize| i == 0 || spec.nodes[i].0;
    for (i, &(_, len, phones)) in spec.nodes.iter().enumerate() {
        let address = if fixed(i) { format!(", address: 192.0.2.{}", i + 1) } else { String::new() };
        docs.push(format!(
            "{api}\nkind: AsteriskNode\nmetadata: {{name: {}}}\nspec: {{numbering: {{prefixes: [\"{}\"], length: {len}}}{address}, agent: {{endpoint: \"https://n{i}:7443\"}}}}",
            node_name(i),
            i + 1
        ));
        for k in 0..phones {
            docs.push(format!(
                "{api}\nkind: Phone\nmetadata: {{name: p-{i}-{k}}}\nspec: {{node: {}, extension: \"{}\"}}",
                node_name(i),
                extension(spec, i, k)
            ));
        }
    }
    let mut trunks = Vec::new();
    for (i, &p) in spec.parents.iter().enumerate() {
        let child = i + 1;
        let parent = if fixed(child) || fixed(p) { p } else { 0 };
        trunks.push((parent, child, true, 1u8));
    }
    trunks.extend(spec.extra.iter().copied().filter(|&(a, b, _, _)| a != b && (fixed(a) || fixed(b))));
    for (t, (a, b, iax, prio)) in trunks.into_iter().enumerate() {
        docs.push(format!(
            "{api}\nkind: Trunk\nmetadata: {{name: t{t}}}\nspec: {{protocol: {}, ends: [{}, {}], priority: {prio}}}",
            if iax { "iax2" } else { "pjsip" },
            node_name(a),
            node_name(b)
        ));
    }
    for (s, &(watcher, owner, k)) in spec.blf.iter().enumerate() {
        let k = k % spec.nodes[owner].2;
        docs.push(format!(
            "{api}\nkind: BlfSubscription\nmetadata: {{name: blf-{s}}}\nspec: {{watcher: {{node: {}}}, targets: [{{extension: \"{}\"}}]}}",
            node_name(watcher),
            extension(spec, owner, k)
        ));
    }
    docs.join("\n---\n")
}

fn resolve(yaml: &str) -> Topology {
    let res = topology::resolve(&fleet::with_test_secrets(fleet::parse(yaml)));
    assert_eq!(res.errors, vec![], "generated fleet is valid");
    res.topology
}

/// From the rendered dialplan of one node: local extensions, and pattern → trunks in order.
struct Dialplan {
    local: BTreeSet<String>,
    routes: Vec<(String, Vec<String>)>,
}

fn dialplan(bundle: &Bundle) -> Dialplan {
    let text = &bundle.files[render::EXTENSIONS_FILE];
    let mut section = "";
    let mut local = BTreeSet::new();
    let mut routes: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix('[') {
            section = name.trim_end_matches(']');
            continue;
        }
        if section == render::LOCAL_CONTEXT
            && let Some(rest) = line.strip_prefix("exten => ")
            && let Some((ext, _)) = rest.split_once(",1,")
        {
            local.insert(ext.to_owned());
        }
        if section == render::ROUTES_CONTEXT {
            if let Some(rest) = line.strip_prefix("exten => _") {
                let (pattern, _) = rest.split_once(',').unwrap();
                routes.push((pattern.to_owned(), Vec::new()));
            }
            if let Some(i) = line.find("Dial(") {
                let target = &line[i + 5..line.rfind(')').unwrap()];
                let trunk = match target.strip_prefix("IAX2/") {
                    Some(rest) => rest.split('/').next().unwrap().to_owned(),
                    None => target.rsplit('@').next().unwrap().to_owned(),
                };
                routes.last_mut().expect("Dial follows a pattern").1.push(trunk);
            }
        }
    }
    Dialplan { local, routes }
}

fn matches(pattern: &str, number: &str) -> bool {
    pattern.len() == number.len() && pattern.chars().zip(number.chars()).all(|(p, c)| p == 'X' || p == c)
}

/// Follows every alternative from `at` towards `number`; panics on a loop or a dead end.
fn walk(plans: &BTreeMap<String, Dialplan>, topo: &Topology, at: &str, number: &str, path: &mut Vec<String>) {
    assert!(!path.iter().any(|n| n == at), "route loop for {number}: {path:?} -> {at}");
    path.push(at.to_owned());
    let plan = &plans[at];
    if plan.local.contains(number) {
        path.pop();
        return;
    }
    let trunks = plan
        .routes
        .iter()
        .find(|(p, _)| matches(p, number))
        .map(|(_, t)| t)
        .unwrap_or_else(|| panic!("{at} has no route for {number} (path {path:?})"));
    assert!(!trunks.is_empty(), "{at}: route for {number} has no trunk");
    for trunk in trunks {
        let next = topo.trunks[trunk].remote_of(at).to_owned();
        walk(plans, topo, &next, number, path);
    }
    path.pop();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn rendering_is_deterministic_and_order_independent(spec in fleet_spec()) {
        let yaml = manifests(&spec);
        let first = render::render_all(&resolve(&yaml));
        let again = render::render_all(&resolve(&yaml));
        prop_assert_eq!(&first, &again);
        let mut docs: Vec<&str> = yaml.split("\n---\n").collect();
        docs.reverse();
        let reversed = render::render_all(&resolve(&docs.join("\n---\n")));
        for (node, bundle) in &first {
            prop_assert_eq!(&bundle.hash, &reversed[node].hash, "node {} depends on input order", node);
        }
    }

    #[test]
    fn every_extension_is_reachable_from_every_node_without_loops(spec in fleet_spec()) {
        let topo = resolve(&manifests(&spec));
        let bundles = render::render_all(&topo);
        let plans: BTreeMap<String, Dialplan> = bundles.iter().map(|(n, b)| (n.clone(), dialplan(b))).collect();
        for from in topo.nodes.keys() {
            for phone in topo.phones.values() {
                walk(&plans, &topo, from, &phone.extension, &mut Vec::new());
            }
        }
    }

    #[test]
    fn every_remote_blf_target_has_a_mirrored_hint_and_a_mesh_import(spec in fleet_spec()) {
        let topo = resolve(&manifests(&spec));
        let bundles = render::render_all(&topo);
        for m in &topo.mirrors {
            let watcher = &bundles[&m.watcher];
            let hint = format!("exten => {},hint,{}", m.extension, render::mirror_device(&m.owner, &m.extension));
            prop_assert!(watcher.files[render::EXTENSIONS_FILE].contains(&hint));
            prop_assert!(watcher.mesh.sources.iter().any(|s| s.node == m.owner && s.imports.iter().any(|i| i.extension == m.extension)));
            prop_assert!(bundles[&m.owner].mesh.exports.iter().any(|e| e.extension == m.extension && e.watchers.contains(&m.watcher)));
        }
    }
}
