//! Dependencies point one way: within each crate of the workspace, the graph of top-level
//! modules (`crate::X` paths, per file) has no cycle, and a plugin never reaches into another
//! plugin kind (inputs ↛ outputs, outputs ↛ inputs). docs/architecture.md draws the graph this
//! test keeps true.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The `src/` folders checked: every crate of the workspace.
fn crate_sources() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    ["agent/src", "agent/core/src", "alerter/src"]
        .iter()
        .map(|p| root.join(p))
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("live.rs") {
            // A plugin's live.rs belongs to the integration test binary (agent/build.rs), not
            // to the library whose module graph is checked here.
            out.push(path);
        }
    }
}

/// `crate::a`, `crate::{a, b::c}` → the top-level module names referenced in `text`
/// (comments removed first).
fn referenced_modules(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // A braced group: the first path segment of each comma-separated item at depth 0.
            let mut depth = 0;
            let mut items = vec![String::new()];
            for c in group.chars() {
                match c {
                    '}' if depth == 0 => break,
                    ',' if depth == 0 => items.push(String::new()),
                    _ => {
                        depth += i32::from(c == '{') - i32::from(c == '}');
                        items.last_mut().unwrap().push(c);
                    }
                }
            }
            for item in items {
                let ident: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !ident.is_empty() {
                    out.insert(ident);
                }
            }
        } else {
            let ident: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !ident.is_empty() {
                out.insert(ident);
            }
        }
    }
    out
}

/// The module graph of one crate: top-level module → modules its files reference.
fn module_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let top = first.trim_end_matches(".rs").to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let deps = graph.entry(top.clone()).or_default();
        for m in referenced_modules(&text) {
            if m != top && m != "self" && m != "super" {
                deps.insert(m);
            }
        }
    }
    graph
}

/// A cycle in `graph` as a path `a → b → … → a`, if any.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &Graph,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for d in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, graph, done, stack) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut done, &mut Vec::new()))
}

#[test]
fn top_level_modules_form_a_dag_in_every_crate() {
    for src in crate_sources() {
        let graph = module_graph(&src);
        assert!(graph.len() > 3, "{}: modules not found", src.display());
        if let Some(cycle) = find_cycle(&graph) {
            panic!(
                "{}: module cycle {} (docs/architecture.md: dependencies point one way)",
                src.display(),
                cycle.join(" → ")
            );
        }
    }
}

#[test]
fn plugins_do_not_reach_into_other_plugin_kinds() {
    let agent = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for (kind, forbidden) in [("inputs", "crate::outputs"), ("outputs", "crate::inputs")] {
        let mut files = Vec::new();
        rust_files(&agent.join(kind), &mut files);
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            assert!(
                !text.contains(forbidden),
                "{} uses {forbidden}: shared code goes to `common` or `plugin`",
                f.display()
            );
        }
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let g = |edges: &[(&str, &str)]| {
        let mut graph = Graph::new();
        for (a, b) in edges {
            graph
                .entry(a.to_string())
                .or_default()
                .insert(b.to_string());
        }
        graph
    };
    assert_eq!(find_cycle(&g(&[("a", "b"), ("b", "c"), ("a", "c")])), None);
    assert_eq!(
        find_cycle(&g(&[("a", "b"), ("b", "c"), ("c", "a")])).unwrap(),
        ["a", "b", "c", "a"]
    );
    let refs = referenced_modules(
        "use crate::a::X;\nuse crate::{b::{c, d}, e};\n// crate::commented\nlet x = crate::f::g();",
    );
    assert_eq!(refs.into_iter().collect::<Vec<_>>(), ["a", "b", "e", "f"]);
}

#[test]
fn a_reintroduced_cycle_fails_the_check() {
    // The real graph plus one back edge (hostpaths → config, as the old code had
    // hostpaths → inputs → config) must be reported.
    let mut graph = module_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    graph
        .entry("hostpaths".into())
        .or_default()
        .insert("agent".into());
    assert!(find_cycle(&graph).is_some());
}
