//! The modules stand in layers: no two modules import each other, directly or around a loop.
//! Checked on the source text: every `crate::…` and `super::…` path in `use` lines and in code
//! (comments and doc links left out), between the top-level modules of the crate and between
//! the children of each module folder.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/` with its module path (`["controller", "kube", "workloads"]`).
fn modules(src: &Path) -> Vec<(Vec<String>, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    files
        .into_iter()
        .filter(|f| !f.ends_with("main.rs") && !f.ends_with("lib.rs"))
        .map(|f| {
            let rel = f.strip_prefix(src).unwrap().with_extension("");
            let mut path: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
            if path.last().is_some_and(|l| l == "mod") {
                path.pop();
            }
            (path, std::fs::read_to_string(&f).unwrap())
        })
        .collect()
}

/// The module paths a file refers to, resolved from `crate::` and `super::` (test modules and
/// comments left out: a test may reach anywhere).
fn references(module: &[String], text: &str) -> BTreeSet<Vec<String>> {
    let code: String = text
        .split("#[cfg(test)]")
        .next()
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        if code[..i].ends_with(char::is_alphanumeric) {
            continue; // `asterisk_operator::…` spelled out, or part of a longer name
        }
        for parts in paths(&code[i + "crate::".len()..]) {
            out.insert(parts);
        }
    }
    for (i, _) in code.match_indices("super::") {
        if code[..i].ends_with("super::") {
            continue; // counted from the first `super::` of the run
        }
        // `super` of `a/b.rs` and of `a/b/mod.rs` alike is `a`.
        let mut base: Vec<String> = module.to_vec();
        let mut rest = &code[i..];
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        for parts in paths(rest) {
            let mut target = base.clone();
            target.extend(parts);
            out.insert(target);
        }
    }
    out
}

/// The paths a `use` tree or a path expression starting at `text` names, up to three segments
/// each: `a::b::C` → `[a, b, C]`; `{a, b::c}` → `[a]`, `[b, c]`; `a::{b, c}` → `[a, b]`, `[a, c]`.
fn paths(text: &str) -> Vec<Vec<String>> {
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    let mut prefix = Vec::new();
    let mut rest = text;
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            // The group's items, split at top-level commas.
            let (mut depth, mut end) = (0, group.len());
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        end = i;
                        break;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            let mut items = Vec::new();
            let (mut depth, mut from) = (0, 0);
            let inner = &group[..end];
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(&inner[from..i]);
                        from = i + 1;
                    }
                    _ => {}
                }
            }
            items.push(&inner[from..]);
            return items
                .into_iter()
                .flat_map(|item| paths(item.trim()))
                .map(|p| prefix.iter().cloned().chain(p).take(3).collect())
                .collect();
        }
        let name = ident(rest);
        if name.is_empty() {
            break;
        }
        rest = &rest[name.len()..];
        prefix.push(name);
        match rest.strip_prefix("::") {
            Some(r) if prefix.len() < 3 => rest = r,
            _ => break,
        }
    }
    if prefix.is_empty() { Vec::new() } else { vec![prefix] }
}

/// A cycle in `edges`, if any.
fn cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut c = stack[i..].to_vec();
            c.push(n.to_owned());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_owned());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for n in edges.keys() {
        if let Some(c) = visit(n, edges, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

/// Every cycle, one per level that has one.
fn cycles(src: &Path) -> Vec<String> {
    let modules = modules(src);
    let dirs: BTreeSet<Vec<String>> = modules.iter().map(|(p, _)| p.clone()).collect();
    // Each level: the children of one parent (the crate root, or a module folder).
    let mut levels: BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (path, text) in &modules {
        for target in references(path, text) {
            // The deepest common parent decides the level; the edge joins its two children.
            let common = path.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common >= path.len() || common >= target.len() {
                continue; // a module using its own child, or a child its ancestor
            }
            let parent = path[..common].to_vec();
            let (from, to) = (path[common].clone(), target[common].clone());
            if from != to && dirs.iter().any(|d| d.starts_with(&target[..=common])) {
                levels.entry(parent).or_default().entry(from).or_default().insert(to);
            }
        }
    }
    let mut cycles = Vec::new();
    for (parent, edges) in &levels {
        if let Some(c) = cycle(edges) {
            cycles.push(format!("in crate::{}: {}", parent.join("::"), c.join(" -> ")));
        }
    }
    cycles
}

#[test]
fn no_module_imports_another_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let cycles = cycles(&src);
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn a_cycle_is_found() {
    let dir = std::env::temp_dir().join(format!("ao-layers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("outer")).unwrap();
    std::fs::write(dir.join("lib.rs"), "pub mod outer;\npub mod other;\n").unwrap();
    std::fs::write(dir.join("other.rs"), "pub fn f() {}\n").unwrap();
    std::fs::write(dir.join("outer/mod.rs"), "mod a;\nmod b;\nuse crate::other::f;\n").unwrap();
    std::fs::write(dir.join("outer/a.rs"), "// super::b in a comment does not count\nuse super::b::B;\n")
        .unwrap();
    std::fs::write(dir.join("outer/b.rs"), "pub struct B;\nconst _: fn() = crate::outer::a::g;\n").unwrap();
    assert_eq!(cycles(&dir), ["in crate::outer: a -> b -> a"]);
    std::fs::write(dir.join("outer/b.rs"), "pub struct B;\n").unwrap();
    assert_eq!(cycles(&dir), Vec::<String>::new());
    std::fs::remove_dir_all(&dir).unwrap();
}
