//! The house's rooms: which top-level module of a crate uses which (every `use` tree
//! and path of its non-test code, parsed with `syn`, `crate::`/`super::`/`self::`
//! resolved), so import circles between them are found, and how long each module's
//! non-test code is. Run by `cargo test` (the `native` phase) over `edge/`, `sim/` and `app/`.
//!
//! A room is a top-level module with everything under it (`providers` holds
//! `providers/segmind.rs`), except under [`HOUSES`] (`objects`), where each child is a
//! room of its own (`objects/ledger`): a module may use its own children and parent
//! freely, and two rooms may depend on each other in one direction only.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The longest a module's non-test code may be, in lines.
pub const MAX_LINES: usize = 600;

/// Top-level modules that only gather rooms: each of their children is a room.
pub const HOUSES: [&str; 1] = ["objects"];

/// The room of a module path.
fn room_of(module: &[String]) -> String {
    match module {
        [house, child, ..] if HOUSES.contains(&house.as_str()) => format!("{house}/{child}"),
        [first, ..] => first.clone(),
        [] => String::new(),
    }
}

/// One source file: its room and module path, and its text.
struct Source {
    room: String,
    module: Vec<String>,
    text: String,
}

fn sources(src: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel: PathBuf = path.strip_prefix(src).unwrap_or(&path).with_extension("");
                let mut module: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if module.last().is_some_and(|m| m == "mod") {
                    module.pop();
                }
                if module == ["lib"] || module == ["main"] {
                    module.clear();
                }
                // A module file of its own holding tests (`tests.rs`) is test code.
                if module.last().is_some_and(|m| m == "tests") {
                    continue;
                }
                let room = room_of(&module);
                let text = fs::read_to_string(&path).unwrap_or_default();
                out.push(Source { room, module, text });
            }
        }
    }
    out
}

/// The text before the file's `#[cfg(test)] mod tests { … }`, where its tests start (a
/// `mod tests;` declaration is not a start: that file is skipped as a whole).
fn non_test(text: &str) -> &str {
    [
        "#[cfg(test)]\nmod tests {",
        "#[cfg(test)]\npub(crate) mod tests {",
    ]
    .iter()
    .filter_map(|start| text.find(start))
    .min()
    .map_or(text, |i| &text[..i])
}

/// Whether an item is compiled for tests only (`#[cfg(test)]`).
fn test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Path>()
                .is_ok_and(|p| p.is_ident("test"))
    })
}

/// Collects the rooms a file's non-test code names, resolving `crate::`, `super::` and
/// `self::` against the file's module path, in `use` trees and in every other path.
struct Uses<'a> {
    module: &'a [String],
    rooms: &'a BTreeSet<String>,
    found: BTreeSet<String>,
}

impl Uses<'_> {
    /// The room of a path written in this file, from its segments.
    fn note(&mut self, segments: &[String]) {
        let Some((first, rest)) = segments.split_first() else {
            return;
        };
        let mut path: Vec<String> = match first.as_str() {
            "crate" => Vec::new(),
            "self" => self.module.to_vec(),
            "super" => {
                let mut base = self.module.to_vec();
                base.pop();
                let mut rest = rest;
                while let Some(("super", more)) = rest.split_first().map(|(h, t)| (h.as_str(), t)) {
                    base.pop();
                    rest = more;
                }
                base.extend(rest.iter().cloned());
                self.add(&base);
                return;
            }
            _ => return,
        };
        path.extend(rest.iter().cloned());
        self.add(&path);
    }

    fn add(&mut self, path: &[String]) {
        let room = room_of(path);
        if self.rooms.contains(&room) {
            self.found.insert(room);
        }
    }

    /// Every full path a `use` tree names (`a::{b, c::d}` → `a::b`, `a::c::d`).
    fn tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                prefix.push(n.ident.to_string());
                self.note(&prefix.clone());
                prefix.pop();
            }
            syn::UseTree::Rename(r) => {
                prefix.push(r.ident.to_string());
                self.note(&prefix.clone());
                prefix.pop();
            }
            syn::UseTree::Glob(_) => self.note(&prefix.clone()),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.tree(prefix, t);
                }
            }
        }
    }
}

impl<'ast> syn::visit::Visit<'ast> for Uses<'_> {
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        if !test_only(&u.attrs) {
            self.tree(&mut Vec::new(), &u.tree);
        }
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if !test_only(&m.attrs) {
            syn::visit::visit_item_mod(self, m);
        }
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        if !test_only(&f.attrs) {
            syn::visit::visit_item_fn(self, f);
        }
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        self.note(&segments);
        syn::visit::visit_path(self, p);
    }
}

/// The rooms a file's code names (its own aside).
fn uses(src: &Source, rooms: &BTreeSet<String>) -> BTreeSet<String> {
    let file =
        syn::parse_file(&src.text).unwrap_or_else(|e| panic!("{}: {e}", src.module.join("/")));
    let mut v = Uses {
        module: &src.module,
        rooms,
        found: BTreeSet::new(),
    };
    syn::visit::Visit::visit_file(&mut v, &file);
    v.found.remove(&src.room);
    v.found
}

/// Each room's rooms it uses.
pub fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let files = sources(src);
    let rooms: BTreeSet<String> = files
        .iter()
        .map(|f| f.room.clone())
        .filter(|r| !r.is_empty())
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> =
        rooms.iter().map(|r| (r.clone(), BTreeSet::new())).collect();
    for f in files.iter().filter(|f| !f.room.is_empty()) {
        let used = uses(f, &rooms);
        graph.entry(f.room.clone()).or_default().extend(used);
    }
    graph
}

/// The circles of `graph`: each strongly connected set of two or more rooms (Tarjan).
pub fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut set = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                set.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if set.len() > 1 {
                set.sort();
                s.out.push(set);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// Each module file of `src` whose non-test code is over [`MAX_LINES`], with its
/// length.
pub fn long_modules(src: &Path) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = sources(src)
        .into_iter()
        .map(|f| {
            let name = if f.module.is_empty() {
                "(root)".to_owned()
            } else {
                f.module.join("/")
            };
            (name, non_test(&f.text).lines().count())
        })
        .filter(|(_, n)| *n > MAX_LINES)
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::root;

    #[test]
    fn no_room_reaches_back_into_a_room_that_uses_it() {
        for krate in ["edge", "sim", "app"] {
            let graph = graph(&root().join(krate).join("src"));
            let found = circles(&graph);
            assert!(found.is_empty(), "{krate}: import circles {found:?}");
        }
    }

    #[test]
    fn no_module_grows_past_six_hundred_lines_of_code() {
        for krate in ["edge", "sim", "app"] {
            let long = long_modules(&root().join(krate).join("src"));
            assert!(
                long.is_empty(),
                "{krate}: modules over {MAX_LINES} lines of non-test code: {long:?}"
            );
        }
    }

    #[test]
    fn multi_line_use_trees_super_paths_and_inline_paths_are_read() {
        let dir = std::env::temp_dir().join(format!("rooms-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("objects/ledger")).unwrap();
        let write = |path: &str, text: &str| fs::write(dir.join(path), text).unwrap();
        write(
            "lib.rs",
            "pub mod a;\npub mod b;\npub mod c;\npub mod objects;\n",
        );
        // A rustfmt-style multi-line group, nested, reaching b.
        write("a.rs", "use crate::{\n    c,\n    b::{X, Y},\n};\n");
        // A house's child reaching a through `super::super`.
        write("objects.rs", "pub mod ledger;\n");
        write("objects/ledger.rs", "fn f() { super::super::a::g(); }\n");
        // An inline path in an expression, reaching the ledger's room.
        write("b.rs", "fn f() { crate::objects::ledger::h(); }\n");
        // Test code names anything.
        write("c.rs", "#[cfg(test)]\nmod tests {\n    use crate::a;\n}\n");
        let g = graph(&dir);
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(g["a"], ["b", "c"].map(str::to_owned).into());
        assert_eq!(g["objects/ledger"], ["a"].map(str::to_owned).into());
        assert!(g["c"].is_empty(), "{g:?}");
        assert_eq!(circles(&g), [["a", "b", "objects/ledger"]]);
    }

    #[test]
    fn circles_are_found_between_rooms_not_within_one() {
        let g: BTreeMap<String, BTreeSet<String>> = [
            ("a", vec!["b"]),
            ("b", vec!["c"]),
            ("c", vec!["a"]),
            ("d", vec!["a"]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
        .collect();
        assert_eq!(circles(&g), [["a", "b", "c"]]);
    }
}
