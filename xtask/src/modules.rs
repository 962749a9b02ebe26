//! `cargo xtask modules`: the module dependency graph of the product crate
//! (`voipdetect/src/lib.rs` and everything it declares), read with `syn`,
//! and a check that it has no cycle: between the crate's top-level
//! modules, and between the children of every module that has some.
//!
//! A module depends on another when it names a path into it (`use
//! crate::window::DirWindow`, `super::host::ifindex`, or such a path in an
//! expression or a type). Test code (`#[cfg(test)]`) is left out, as
//! `cargo modules` does by default: tests may reach across the crate.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use syn::visit::Visit;

/// A module path inside the crate: `["datapath", "maps"]`; the root is `[]`.
type ModPath = Vec<String>;

/// Every module of the crate and the modules each one names.
#[derive(Debug, Default)]
pub struct Graph {
    pub modules: BTreeSet<ModPath>,
    pub edges: BTreeMap<ModPath, BTreeSet<ModPath>>,
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| a.path().is_ident("cfg") && a.parse_args::<syn::Meta>().is_ok_and(|m| m.path().is_ident("test")))
}

/// Paths (as segment lists) a module names.
#[derive(Default)]
struct Refs {
    paths: Vec<Vec<String>>,
}

impl Refs {
    fn use_tree(&mut self, prefix: &mut Vec<String>, t: &syn::UseTree) {
        match t {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let mut v = prefix.clone();
                v.push(n.ident.to_string());
                self.paths.push(v);
            }
            syn::UseTree::Rename(r) => {
                let mut v = prefix.clone();
                v.push(r.ident.to_string());
                self.paths.push(v);
            }
            syn::UseTree::Glob(_) => self.paths.push(prefix.clone()),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Refs {
    fn visit_item(&mut self, i: &'ast syn::Item) {
        let attrs = match i {
            // Submodules are walked as modules of their own.
            syn::Item::Mod(_) => return,
            syn::Item::Fn(x) => &x.attrs,
            syn::Item::Impl(x) => &x.attrs,
            syn::Item::Use(x) => &x.attrs,
            syn::Item::Struct(x) => &x.attrs,
            syn::Item::Enum(x) => &x.attrs,
            syn::Item::Const(x) => &x.attrs,
            syn::Item::Static(x) => &x.attrs,
            syn::Item::Trait(x) => &x.attrs,
            syn::Item::Type(x) => &x.attrs,
            syn::Item::Macro(x) => &x.attrs,
            _ => return syn::visit::visit_item(self, i),
        };
        if !is_cfg_test(attrs) {
            syn::visit::visit_item(self, i);
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if !is_cfg_test(&f.attrs) {
            syn::visit::visit_impl_item_fn(self, f);
        }
    }

    /// `pub(super)` names who may see an item, not a dependency.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_path(&mut self, p: &'ast syn::Path) {
        self.paths.push(p.segments.iter().map(|s| s.ident.to_string()).collect());
        syn::visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        // `crate::x::y` inside macro arguments (format!, matches!, ...).
        let tokens: Vec<String> = m.tokens.clone().into_iter().map(|t| t.to_string()).collect();
        let mut i = 0;
        while i < tokens.len() {
            if tokens[i] == "crate" || tokens[i] == "super" {
                let mut path = vec![tokens[i].clone()];
                let mut j = i + 1;
                while j + 2 < tokens.len() + 1 && tokens.get(j).is_some_and(|t| t == ":") && tokens.get(j + 1).is_some_and(|t| t == ":") {
                    match tokens.get(j + 2) {
                        Some(seg) if seg.chars().all(|c| c.is_alphanumeric() || c == '_') => path.push(seg.clone()),
                        _ => break,
                    }
                    j += 3;
                }
                self.paths.push(path);
                i = j;
            } else {
                i += 1;
            }
        }
        syn::visit::visit_macro(self, m);
    }
}

/// A module's file and the items in it.
struct Module {
    path: ModPath,
    items: Vec<syn::Item>,
    /// Where `mod child;` of this module looks for `child.rs` / `child/mod.rs`.
    dir: PathBuf,
}

fn parse_file(file: &Path) -> anyhow::Result<syn::File> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    syn::parse_file(&text).with_context(|| format!("parsing {}", file.display()))
}

/// Reads the crate whose root file is `lib`.
pub fn graph(lib: &Path) -> anyhow::Result<Graph> {
    let root_dir = lib.parent().context("crate root has a directory")?.to_path_buf();
    let mut pending = vec![Module { path: Vec::new(), items: parse_file(lib)?.items, dir: root_dir }];
    let mut parsed: Vec<(ModPath, Refs)> = Vec::new();
    let mut g = Graph::default();
    while let Some(m) = pending.pop() {
        g.modules.insert(m.path.clone());
        let mut refs = Refs::default();
        for item in &m.items {
            if let syn::Item::Mod(sub) = item {
                if is_cfg_test(&sub.attrs) {
                    continue;
                }
                let name = sub.ident.to_string();
                let mut path = m.path.clone();
                path.push(name.clone());
                let child = match &sub.content {
                    Some((_, items)) => Module { path, items: items.clone(), dir: m.dir.join(&name) },
                    None => {
                        let flat = m.dir.join(format!("{name}.rs"));
                        let nested = m.dir.join(&name).join("mod.rs");
                        let file = if flat.is_file() { flat } else { nested };
                        Module { path, items: parse_file(&file)?.items, dir: m.dir.join(&name) }
                    }
                };
                pending.push(child);
            } else {
                refs.visit_item(item);
            }
        }
        parsed.push((m.path, refs));
    }
    for (path, refs) in parsed {
        let mut deps = BTreeSet::new();
        for p in refs.paths {
            if let Some(target) = resolve(&g.modules, &path, &p)
                && target != path
            {
                deps.insert(target);
            }
        }
        g.edges.insert(path, deps);
    }
    Ok(g)
}

/// The module a path used inside module `from` points into, if it points
/// into this crate: the longest module prefix of its absolute form.
fn resolve(modules: &BTreeSet<ModPath>, from: &ModPath, p: &[String]) -> Option<ModPath> {
    let mut abs: Vec<String> = match p.first().map(String::as_str) {
        Some("crate") => Vec::new(),
        Some("super") | Some("self") => from.clone(),
        _ => {
            // A child module named directly (`maps::Maps` inside datapath).
            let mut child = from.clone();
            child.push(p.first()?.clone());
            if !modules.contains(&child) {
                return None;
            }
            from.clone()
        }
    };
    let mut rest = p;
    while let Some(first) = rest.first() {
        match first.as_str() {
            "crate" => {}
            "self" => {}
            "super" => {
                abs.pop()?;
            }
            _ => break,
        }
        rest = &rest[1..];
    }
    abs.extend(rest.iter().cloned());
    (0..=abs.len()).rev().map(|n| abs[..n].to_vec()).find(|m| modules.contains(m))
}

/// The cycles among `nodes` under `edges` (strongly connected components
/// of more than one node), by Tarjan's algorithm.
pub fn cycles(nodes: &BTreeSet<String>, edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        if let Some(ws) = t.edges.get(v) {
            for w in ws {
                if !t.index.contains_key(w.as_str()) {
                    visit(t, w);
                    let lw = t.low[w.as_str()];
                    let lv = t.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if t.on.contains(w.as_str()) {
                    let iw = t.index[w.as_str()];
                    let lv = t.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T { edges, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), on: BTreeSet::new(), next: 0, out: Vec::new() };
    for n in nodes {
        if !t.index.contains_key(n.as_str()) {
            visit(&mut t, n);
        }
    }
    t.out
}

/// The graph between the children of `parent` (the parent's own file is
/// the node `parent` itself, shown as "(self)").
fn level(g: &Graph, parent: &ModPath) -> (BTreeSet<String>, BTreeMap<String, BTreeSet<String>>) {
    let name_of = |m: &ModPath| -> Option<String> {
        if !m.starts_with(parent) {
            return None;
        }
        Some(m.get(parent.len()).cloned().unwrap_or_else(|| "(self)".into()))
    };
    let mut nodes = BTreeSet::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, tos) in &g.edges {
        let Some(a) = name_of(from) else { continue };
        nodes.insert(a.clone());
        for to in tos {
            if let Some(b) = name_of(to)
                && b != a
            {
                edges.entry(a.clone()).or_default().insert(b);
            }
        }
    }
    (nodes, edges)
}

/// Prints the top-level listing and fails on any cycle.
pub fn check(lib: &Path) -> anyhow::Result<()> {
    let g = graph(lib)?;
    let (nodes, edges) = level(&g, &Vec::new());
    println!("xtask: module dependencies of {} (test code left out)", lib.display());
    for n in nodes.iter().filter(|n| *n != "(self)") {
        let deps: Vec<&str> = edges.get(n).map(|d| d.iter().map(String::as_str).filter(|d| *d != "(self)").collect()).unwrap_or_default();
        println!("  {n:<12} -> {}", if deps.is_empty() { "-".into() } else { deps.join(", ") });
    }
    let mut found = Vec::new();
    let parents: BTreeSet<ModPath> = g.modules.iter().filter(|m| !m.is_empty()).map(|m| m[..m.len() - 1].to_vec()).collect();
    for parent in parents {
        let (nodes, edges) = level(&g, &parent);
        for c in cycles(&nodes, &edges) {
            let at = if parent.is_empty() { "crate".to_owned() } else { parent.join("::") };
            found.push(format!("in {at}: {}", c.join(" <-> ")));
        }
    }
    if std::env::var_os("XTASK_MODULES_DEBUG").is_some() {
        for (from, tos) in &g.edges {
            println!("  {} -> {:?}", from.join("::"), tos.iter().map(|t| t.join("::")).collect::<Vec<_>>());
        }
    }
    if !found.is_empty() {
        bail!("module cycles: {}", found.join("; "));
    }
    println!("xtask: no module cycles");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_cycle_is_found_and_a_chain_is_not() {
        let nodes = set(&["a", "b", "c", "d"]);
        let mut edges = BTreeMap::new();
        edges.insert("a".to_string(), set(&["b"]));
        edges.insert("b".to_string(), set(&["c"]));
        edges.insert("d".to_string(), set(&["a"]));
        assert!(cycles(&nodes, &edges).is_empty());
        edges.insert("c".to_string(), set(&["a"]));
        assert_eq!(cycles(&nodes, &edges), vec![vec!["a".to_string(), "b".into(), "c".into()]]);
    }

    #[test]
    fn paths_resolve_to_the_module_they_name() {
        let modules: BTreeSet<ModPath> =
            [vec![], vec!["a".into()], vec!["d".into()], vec!["d".into(), "x".into()], vec!["d".into(), "y".into()]].into_iter().collect();
        let p = |s: &str| s.split("::").map(str::to_owned).collect::<Vec<_>>();
        let from: ModPath = vec!["d".into(), "x".into()];
        assert_eq!(resolve(&modules, &from, &p("crate::a::Thing")), Some(vec!["a".into()]));
        assert_eq!(resolve(&modules, &from, &p("super::y::f")), Some(vec!["d".into(), "y".into()]));
        assert_eq!(resolve(&modules, &from, &p("super::Datapath")), Some(vec!["d".into()]));
        assert_eq!(resolve(&modules, &from, &p("std::fs::read")), None);
        let d: ModPath = vec!["d".into()];
        assert_eq!(resolve(&modules, &d, &p("x::Maps")), Some(vec!["d".into(), "x".into()]));
    }

    #[test]
    fn the_test_crate_fixture_shows_its_cycle() {
        let dir = std::env::temp_dir().join(format!("xtask-modules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("lib.rs"), "mod a; mod b;\n#[cfg(test)] mod t;").unwrap();
        std::fs::write(dir.join("a.rs"), "use crate::b::B; pub struct A;").unwrap();
        std::fs::write(dir.join("b.rs"), "pub struct B; fn f() -> crate::a::A { crate::a::A }\n#[cfg(test)] mod tests { use crate::t; }")
            .unwrap();
        let g = graph(&dir.join("lib.rs")).unwrap();
        let (nodes, edges) = level(&g, &Vec::new());
        assert_eq!(cycles(&nodes, &edges), vec![vec!["a".to_string(), "b".into()]]);
        assert!(check(&dir.join("lib.rs")).is_err());
        std::fs::write(dir.join("b.rs"), "pub struct B;").unwrap();
        assert!(check(&dir.join("lib.rs")).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
