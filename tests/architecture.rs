//! The module structure of `src/` stays a layered graph: no import cycle among the
//! modules of one folder, and the vocabulary modules import nothing above them.
//!
//! A "dependency" is any `crate::…` or `super::…` path in code (comments and doc links
//! are ignored), resolved to the sibling module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module: its path from the crate root (`["driver", "conn"]`) and its source.
struct Module {
    path: Vec<String>,
    code: String,
}

fn modules() -> Vec<Module> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&root, &mut files);
    files
        .into_iter()
        .map(|file| {
            let rel = file.strip_prefix(&root).unwrap().with_extension("");
            let mut path: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(path.last().map(String::as_str), Some("mod" | "lib")) {
                path.pop();
            }
            Module {
                path,
                code: strip_comments(&std::fs::read_to_string(&file).unwrap()),
            }
        })
        .collect()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code without `//` comments (doc comments included) and without `#[cfg(test)]`
/// modules, which may reach anywhere.
fn strip_comments(source: &str) -> String {
    let code = match source.find("#[cfg(test)]\nmod tests") {
        Some(i) => &source[..i],
        None => source,
    };
    code.lines()
        .map(|line| match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every module path (absolute, from the crate root) that `module` names in code.
fn references(module: &Module) -> BTreeSet<Vec<String>> {
    let mut out = BTreeSet::new();
    let code = &module.code;
    // `use crate::a::{b, c}` and inline `crate::a::b(...)`.
    for (i, _) in code.match_indices("crate::") {
        if i > 0 && is_ident(code.as_bytes()[i - 1]) {
            continue; // e.g. `tower_mqtt_crate::`
        }
        out.insert(path_after(&code[i + "crate::".len()..]));
    }
    // `super::x` from a module whose parent is `module.path[..len-1]`.
    for (i, _) in code.match_indices("super::") {
        if i > 0 && is_ident(code.as_bytes()[i - 1]) {
            continue;
        }
        let Some(parent) = module.path.len().checked_sub(1) else {
            continue;
        };
        let mut target = module.path[..parent].to_vec();
        target.extend(path_after(&code[i + "super::".len()..]));
        out.insert(target);
    }
    out
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The leading `a::b::c` segments of `rest` (stops at `{`, `*` or a non-path char).
fn path_after(rest: &str) -> Vec<String> {
    let mut segs = Vec::new();
    let mut rest = rest;
    loop {
        let end = rest
            .find(|c: char| !is_ident(c as u8))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        segs.push(rest[..end].to_owned());
        match rest[end..].strip_prefix("::") {
            Some(next) => rest = next,
            None => break,
        }
    }
    segs
}

/// For each folder, the dependency graph among its direct child modules: an edge
/// `a → b` when code in `a` (or below it) names `b` (or something below it).
fn sibling_graphs(mods: &[Module]) -> BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> {
    let known: BTreeSet<Vec<String>> = mods.iter().map(|m| m.path.clone()).collect();
    let mut graphs: BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for m in mods {
        for target in references(m) {
            // The folder both sit in: the longest common prefix.
            let common = m
                .path
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if common >= m.path.len() || common >= target.len() {
                continue; // a module naming its own descendants, or its ancestor's items
            }
            let folder = m.path[..common].to_vec();
            let mut child = folder.clone();
            child.push(target[common].clone());
            if !known.contains(&child) {
                continue; // an item of the folder's own module (e.g. `super::Backoff`)
            }
            graphs
                .entry(folder)
                .or_default()
                .entry(m.path[common].clone())
                .or_default()
                .insert(target[common].clone());
        }
    }
    graphs
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn src_has_no_import_cycle() {
    let mods = modules();
    assert!(mods.len() > 10, "found the source files");
    let mut cycles = Vec::new();
    for (folder, graph) in sibling_graphs(&mods) {
        if let Some(cycle) = find_cycle(&graph) {
            cycles.push(format!(
                "in crate::{}: {}",
                folder.join("::"),
                cycle.join(" → ")
            ));
        }
    }
    assert!(
        cycles.is_empty(),
        "import cycles in src/:\n{}",
        cycles.join("\n")
    );
}

/// Bottom to top; a module may only import modules ranked below it.
const LAYERS: &[&[&str]] = &[
    &["error", "signal", "migration", "guarantees", "scale_out"],
    &["config", "topic"],
    &["disposition", "transport"],
    &["message", "options"],
    &["event", "testing"],
    &["driver"],
    &["publisher", "sys_watch", "retire"],
    &["consumer", "fuzz"],
];

#[test]
fn top_level_modules_import_only_downward() {
    let rank = |name: &str| LAYERS.iter().position(|layer| layer.contains(&name));
    let mods = modules();
    let graphs = sibling_graphs(&mods);
    let top = graphs.get(&Vec::new()).cloned().unwrap_or_default();
    let mut upward = Vec::new();
    for (from, targets) in &top {
        let Some(from_rank) = rank(from) else {
            upward.push(format!("{from} is not in the LAYERS table of this test"));
            continue;
        };
        for to in targets {
            match rank(to) {
                Some(to_rank) if to_rank < from_rank => {}
                Some(_) => upward.push(format!("{from} imports {to} (same layer or above)")),
                None => upward.push(format!("{to} is not in the LAYERS table of this test")),
            }
        }
    }
    assert!(upward.is_empty(), "layering broken:\n{}", upward.join("\n"));
}

#[test]
fn the_public_vocabulary_does_not_name_rumqttc() {
    for m in modules() {
        if m.path
            .first()
            .is_some_and(|p| p == "error" || p == "config")
        {
            assert!(
                !m.code.contains("rumqttc::"),
                "crate::{} names rumqttc in code; keep the conversions next to the codec",
                m.path.join("::")
            );
        }
    }
}
