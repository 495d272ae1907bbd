//! The module graph of `src/` has no cycles between files.
//!
//! Every `.rs` file under `src/` is mapped to its module path, scanned for the crate-internal paths
//! it names (`use crate::..`, `use super::..`, `crate::a::b` and `super::x` in code, `self::child`,
//! and bare `child::x` for a child module the file declares), and each path is resolved to the
//! deepest module file that exists (`crate::shard::reply::LocalReply` → `src/shard/reply.rs`).
//! Comments, string and char literals and `mod tests` blocks are ignored, and so are files that are
//! test modules themselves. A `mod child;` declaration is not a dependency: a `mod.rs` depends on a
//! child only when it names one of the child's items. A name a module re-exports (`pub use
//! child::Item;`) resolves to the file that really defines it, so a child that reads a sibling's
//! type through the parent's re-export depends on the sibling, not on the parent.
//!
//! The point is ARCHITECTURE.md's rule: dependencies between files point one way, so each file can
//! be read (and changed) knowing only the files below it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// A module path below the crate root: `["shard", "reply"]`; the root itself is `[]`.
type ModPath = Vec<String>;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Star,
    Semi,
    Other,
}

/// Replaces comments, string literals and char literals with spaces (newlines kept), so that what
/// is left is code. Lifetimes (`'a`) are left alone.
fn strip(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
        } else if (c == 'r' || (c == 'b' && next == Some('r')))
            && !prev_is_ident(&b, i)
            && raw_string_hashes(&b, if c == 'b' { i + 2 } else { i + 1 }).is_some()
        {
            let start = if c == 'b' { i + 2 } else { i + 1 };
            let hashes = raw_string_hashes(&b, start).unwrap();
            // Skip r, #..#, and the opening quote; find `"` followed by the same number of `#`.
            let mut j = start + hashes + 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            for &ch in &b[i..j.min(b.len())] {
                blank(&mut out, ch);
            }
            i = j;
        } else if c == '"' {
            // Plain and byte strings (a leading `b` is then just an identifier char: harmless).
            blank(&mut out, c);
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    blank(&mut out, b[i]);
                    i += 1;
                }
                if i < b.len() {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
            if i < b.len() {
                out.push(' ');
                i += 1;
            }
        } else if c == '\'' {
            // A char literal is `'x'` or `'\..'`; anything else is a lifetime or label.
            let end = if next == Some('\\') {
                (i + 2..b.len()).find(|&j| b[j] == '\'' && j > i + 2)
            } else if b.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(e) => {
                    for &ch in &b[i..=e] {
                        blank(&mut out, ch);
                    }
                    i = e + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn prev_is_ident(b: &[char], i: usize) -> bool {
    i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_')
}

/// At `at` (just after `r` or `br`): `#`* then `"` starts a raw string; returns the `#` count.
fn raw_string_hashes(b: &[char], at: usize) -> Option<usize> {
    let mut n = 0;
    while b.get(at + n) == Some(&'#') {
        n += 1;
    }
    (b.get(at + n) == Some(&'"')).then_some(n)
}

fn tokenize(code: &str) -> Vec<Tok> {
    let b: Vec<char> = code.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_alphabetic() || c == '_' {
            let s = i;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            let word: String = b[s..i].iter().collect();
            // Raw identifiers `r#type` name the same thing as `type`.
            if word == "r" && b.get(i) == Some(&'#') {
                i += 1;
                continue;
            }
            toks.push(Tok::Ident(word));
            continue;
        }
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let t = match c {
            ':' if b.get(i + 1) == Some(&':') => {
                i += 1;
                Tok::PathSep
            }
            '{' => Tok::Open,
            '}' => Tok::Close,
            ',' => Tok::Comma,
            '*' => Tok::Star,
            ';' => Tok::Semi,
            _ => Tok::Other,
        };
        toks.push(t);
        i += 1;
    }
    toks
}

/// Removes `mod tests { .. }` and any `#[cfg(test)] mod x { .. }`: test code may reach anywhere.
fn drop_test_modules(toks: Vec<Tok>) -> Vec<Tok> {
    let mut out = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        let cfg_test =
            i >= 5 && toks[i - 5] == Tok::Ident("cfg".into()) && toks[i - 3] == Tok::Ident("test".into());
        if toks[i] == Tok::Ident("mod".into())
            && matches!(toks.get(i + 1), Some(Tok::Ident(name)) if name == "tests" || cfg_test)
            && toks.get(i + 2) == Some(&Tok::Open)
        {
            let mut depth = 0;
            let mut j = i + 2;
            while j < toks.len() {
                match toks[j] {
                    Tok::Open => depth += 1,
                    Tok::Close => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            i = j + 1;
            continue;
        }
        out.push(toks[i].clone());
        i += 1;
    }
    out
}

/// Parses a path (or use tree) starting at `toks[i]`: `a::b::{c, d::e}`, `a::*`. Appends every
/// full path named, as written (segments), to `out`; returns the index after it.
fn parse_tree(toks: &[Tok], mut i: usize, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
    let mut path = prefix.to_vec();
    loop {
        match toks.get(i) {
            Some(Tok::Ident(w)) => {
                path.push(w.clone());
                i += 1;
            }
            Some(Tok::Star) => {
                path.push("*".into());
                i += 1;
                break;
            }
            Some(Tok::Open) => {
                i += 1;
                loop {
                    match toks.get(i) {
                        Some(Tok::Close) => {
                            i += 1;
                            break;
                        }
                        Some(Tok::Comma) => i += 1,
                        // `a as b`: the rename is no path.
                        Some(Tok::Ident(w)) if w == "as" => i += 2,
                        None => break,
                        _ => {
                            let before = i;
                            i = parse_tree(toks, i, &path, out);
                            if i == before {
                                i += 1;
                            }
                        }
                    }
                }
                return i;
            }
            _ => break,
        }
        if toks.get(i) == Some(&Tok::PathSep) {
            i += 1;
        } else {
            break;
        }
    }
    if path.len() > prefix.len() || prefix.is_empty() {
        out.push(path);
    }
    i
}

/// Every crate-internal path a file names, made absolute (from the crate root). `me` is the file's
/// module path; `children` are the modules it declares with `mod x;` (names usable bare).
fn scan(me: &ModPath, src: &str) -> Vec<ModPath> {
    let toks = drop_test_modules(tokenize(&strip(src)));
    let children: BTreeSet<String> = toks
        .windows(3)
        .filter_map(|w| match w {
            [Tok::Ident(m), Tok::Ident(name), Tok::Semi] if m == "mod" => Some(name.clone()),
            _ => None,
        })
        .collect();
    let mut raw = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let starts_path = match &toks[i] {
            Tok::Ident(w) => {
                let after_sep = i > 0 && toks[i - 1] == Tok::PathSep;
                let is_decl = i > 0 && toks[i - 1] == Tok::Ident("mod".into());
                !after_sep
                    && !is_decl
                    && toks.get(i + 1) == Some(&Tok::PathSep)
                    && (w == "crate" || w == "super" || w == "self" || children.contains(w))
            }
            _ => false,
        };
        if starts_path {
            i = parse_tree(&toks, i, &[], &mut raw);
        } else {
            i += 1;
        }
    }
    raw.into_iter().filter_map(|p| absolute(me, &p)).collect()
}

fn absolute(me: &ModPath, p: &[String]) -> Option<ModPath> {
    let mut segs = p.iter().peekable();
    let mut base: ModPath = match segs.peek().map(|s| s.as_str()) {
        Some("crate") => {
            segs.next();
            Vec::new()
        }
        Some("self") => {
            segs.next();
            me.clone()
        }
        Some("super") => {
            let mut b = me.clone();
            while segs.peek().map(|s| s.as_str()) == Some("super") {
                segs.next();
                b.pop()?;
            }
            b
        }
        Some(_) => me.clone(), // a declared child, named bare
        None => return None,
    };
    for s in segs {
        if s == "self" {
            continue; // `use a::{self, b}`: `self` names `a`
        }
        base.push(s.clone());
    }
    Some(base)
}

/// The module graph: files by module path, and each file's (absolute) paths.
struct Graph {
    files: BTreeMap<ModPath, PathBuf>,
    paths: BTreeMap<ModPath, Vec<ModPath>>,
    /// Per module, the names it re-exports with `pub use`: name → absolute target path; a glob
    /// re-export (`pub use model::*;`) is stored under `*` (the last one wins: rare enough).
    reexports: HashMap<ModPath, HashMap<String, ModPath>>,
    /// Per module, the names of the items it defines itself (`struct X`, `fn f`, ...).
    defines: HashMap<ModPath, BTreeSet<String>>,
}

impl Graph {
    fn new() -> Graph {
        Graph {
            files: BTreeMap::new(),
            paths: BTreeMap::new(),
            reexports: HashMap::new(),
            defines: HashMap::new(),
        }
    }

    fn add(&mut self, module: ModPath, file: PathBuf, src: &str) {
        self.reexports.insert(module.clone(), reexports(&module, src));
        self.defines.insert(module.clone(), defines(src));
        self.paths.insert(module.clone(), scan(&module, src));
        self.files.insert(module, file);
    }

    /// The file a path lands in: the deepest module that exists, following re-exports of the
    /// item named just below it (at most a few hops; a re-export loop stops where it is).
    fn resolve(&self, path: &ModPath) -> ModPath {
        let mut path = path.clone();
        for _ in 0..8 {
            let depth = (0..=path.len()).rev().find(|&n| self.files.contains_key(&path[..n]));
            let Some(depth) = depth else { return Vec::new() };
            let module = path[..depth].to_vec();
            let Some(item) = path.get(depth).filter(|i| *i != "*") else { return module };
            let own = self.defines.get(&module).is_some_and(|d| d.contains(item));
            let re = self.reexports.get(&module);
            let explicit = re.and_then(|r| r.get(item));
            // An item the module neither defines nor names may come in through its glob re-export.
            let glob = re.and_then(|r| r.get("*")).and_then(|g| {
                let target = &g[..g.len() - 1];
                let defined = self.defines.get(target).is_some_and(|d| d.contains(item));
                defined.then(|| {
                    let mut t = target.to_vec();
                    t.push(item.clone());
                    t
                })
            });
            let follow = if own { None } else { explicit.cloned().or(glob) };
            match follow {
                Some(target) if !target.starts_with(&path) => {
                    let mut next = target.clone();
                    next.extend(path[depth + 1..].iter().cloned());
                    path = next;
                }
                _ => return module,
            }
        }
        path
    }

    /// Edges between files, each with one path that creates it (for the failure message).
    ///
    /// With `parent_edges: false`, a file's use of items its own parent module (`mod.rs`, or
    /// `lib.rs` for a top-level file) declares is left out: a parent that defines the vocabulary its
    /// children share and calls into them is ordinary Rust layout. Re-exports were already followed
    /// to the defining file, so what is left out is only what the parent itself declares.
    fn edges(&self, parent_edges: bool) -> BTreeMap<ModPath, BTreeMap<ModPath, ModPath>> {
        let mut edges: BTreeMap<ModPath, BTreeMap<ModPath, ModPath>> = BTreeMap::new();
        for (from, paths) in &self.paths {
            let e = edges.entry(from.clone()).or_default();
            for p in paths {
                let to = self.resolve(p);
                let to_parent = !from.is_empty() && to[..] == from[..from.len() - 1];
                if to_parent && !parent_edges {
                    continue;
                }
                if &to != from {
                    e.entry(to).or_insert_with(|| p.clone());
                }
            }
        }
        edges
    }
}

/// `pub use` / `pub(crate) use` items of a module: the name each brings into scope → its target.
fn reexports(me: &ModPath, src: &str) -> HashMap<String, ModPath> {
    let toks = drop_test_modules(tokenize(&strip(src)));
    let mut out = HashMap::new();
    let mut i = 0;
    while i + 1 < toks.len() {
        if toks[i] == Tok::Ident("pub".into()) {
            // Skip a visibility qualifier: pub(crate), pub(super), pub(in ..).
            let mut j = i + 1;
            if toks.get(j) == Some(&Tok::Other) {
                j += 1;
                while matches!(toks.get(j), Some(Tok::Ident(_)) | Some(Tok::PathSep)) {
                    j += 1;
                }
                j += 1;
            }
            if toks.get(j) == Some(&Tok::Ident("use".into())) {
                let mut paths = Vec::new();
                let end = parse_tree(&toks, j + 1, &[], &mut paths);
                // `pub use x::Y as Z;` exports Z: handled by taking the `as` name when present.
                let alias = match (toks.get(end), toks.get(end + 1)) {
                    (Some(Tok::Ident(a)), Some(Tok::Ident(z))) if a == "as" && paths.len() == 1 => {
                        Some(z.clone())
                    }
                    _ => None,
                };
                for p in paths {
                    let Some(mut name) = alias.clone().or_else(|| p.last().cloned()) else { continue };
                    if name == "self" {
                        // `pub use a::{self}` exports `a`.
                        name = p.iter().rev().nth(1).cloned().unwrap_or_default();
                    }
                    let abs = match p.first().map(|s| s.as_str()) {
                        Some("crate") | Some("super") | Some("self") => absolute(me, &p),
                        // A bare first segment: a child module of this one (uniform paths).
                        Some(_) => absolute(me, &p),
                        None => None,
                    };
                    if let Some(abs) = abs {
                        out.insert(name, abs);
                    }
                }
                i = end;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// Names of the items a file defines at any depth (outside `mod tests`): good enough to tell
/// where a glob re-export's item lives.
fn defines(src: &str) -> BTreeSet<String> {
    let toks = drop_test_modules(tokenize(&strip(src)));
    let kinds = ["struct", "enum", "fn", "type", "const", "static", "trait", "union", "mod", "macro_rules"];
    toks.windows(2)
        .filter_map(|w| match w {
            [Tok::Ident(k), Tok::Ident(name)] if kinds.contains(&k.as_str()) => Some(name.clone()),
            _ => None,
        })
        .collect()
}

/// Module path of a file below `src/`: `shard/reply.rs` → shard::reply, `shard/mod.rs` → shard.
fn module_of(rel: &Path) -> ModPath {
    let mut segs: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
    let last = segs.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        segs.push(stem.to_string());
    }
    segs
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rs_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Strongly connected components with more than one file (Tarjan, iterative enough for ~100 files).
fn cycles(edges: &BTreeMap<ModPath, BTreeMap<ModPath, ModPath>>) -> Vec<Vec<ModPath>> {
    struct T<'a> {
        edges: &'a BTreeMap<ModPath, BTreeMap<ModPath, ModPath>>,
        index: HashMap<ModPath, usize>,
        low: HashMap<ModPath, usize>,
        stack: Vec<ModPath>,
        on: BTreeSet<ModPath>,
        out: Vec<Vec<ModPath>>,
    }
    fn visit(t: &mut T, v: &ModPath) {
        let n = t.index.len();
        t.index.insert(v.clone(), n);
        t.low.insert(v.clone(), n);
        t.stack.push(v.clone());
        t.on.insert(v.clone());
        let next: Vec<ModPath> = t.edges.get(v).map(|e| e.keys().cloned().collect()).unwrap_or_default();
        for w in next {
            if !t.index.contains_key(&w) {
                visit(t, &w);
                let l = t.low[&w].min(t.low[v]);
                t.low.insert(v.clone(), l);
            } else if t.on.contains(&w) {
                let l = t.index[&w].min(t.low[v]);
                t.low.insert(v.clone(), l);
            }
        }
        if t.low[v] == t.index[v] {
            let mut scc = Vec::new();
            loop {
                let w = t.stack.pop().unwrap();
                t.on.remove(&w);
                scc.push(w.clone());
                if &w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                t.out.push(scc);
            }
        }
    }
    let mut t = T {
        edges,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

/// The shortest cycle through `start` inside `scc` (breadth-first), as a list of modules.
fn shortest_cycle(
    edges: &BTreeMap<ModPath, BTreeMap<ModPath, ModPath>>,
    scc: &[ModPath],
    start: &ModPath,
) -> Vec<ModPath> {
    let inside: BTreeSet<&ModPath> = scc.iter().collect();
    let mut prev: HashMap<ModPath, ModPath> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start.clone()]);
    while let Some(v) = queue.pop_front() {
        for w in edges.get(&v).into_iter().flat_map(|e| e.keys()) {
            if !inside.contains(w) {
                continue;
            }
            if w == start {
                let mut path = vec![v.clone()];
                let mut cur = v.clone();
                while &cur != start {
                    cur = prev[&cur].clone();
                    path.push(cur.clone());
                }
                path.reverse();
                path.push(start.clone());
                return path;
            }
            if !prev.contains_key(w) {
                prev.insert(w.clone(), v.clone());
                queue.push_back(w.clone());
            }
        }
    }
    Vec::new()
}

fn load_src() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    let mut g = Graph::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap().to_path_buf();
        // main.rs is the binary crate (it reaches the library as `skiff::`), and a file that is a
        // test module (`mod tests;` → tests.rs) is test code: neither is part of the graph.
        if rel == Path::new("main.rs") || rel.file_stem().is_some_and(|s| s == "tests") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        g.add(module_of(&rel), rel, &text);
    }
    g
}

/// The cycles of a graph as a message: per cycle, its files, then the shortest cycle through each
/// of them, every step labelled with a path that creates it.
fn describe_cycles(g: &Graph, edges: &BTreeMap<ModPath, BTreeMap<ModPath, ModPath>>) -> Option<String> {
    let sccs = cycles(edges);
    if sccs.is_empty() {
        return None;
    }
    let name = |m: &ModPath| g.files.get(m).map(|f| format!("src/{}", f.display())).unwrap_or_default();
    let mut msg = String::new();
    for scc in &sccs {
        let all: Vec<String> = scc.iter().map(name).collect();
        msg.push_str(&format!("\ncycle among {} files: {}\n", scc.len(), all.join(", ")));
        let mut seen = BTreeSet::new();
        for start in scc {
            let cyc = shortest_cycle(edges, scc, start);
            let mut key: Vec<ModPath> = cyc[..cyc.len().saturating_sub(1)].to_vec();
            key.sort();
            if cyc.is_empty() || !seen.insert(key) {
                continue;
            }
            let steps: Vec<String> = cyc
                .windows(2)
                .map(|w| format!("{} --[{}]-->", name(&w[0]), edges[&w[0]][&w[1]].join("::")))
                .collect();
            msg.push_str(&format!("  {} {}\n", steps.join(" "), name(cyc.last().unwrap())));
        }
    }
    Some(msg)
}

/// No two files under src/ depend on each other, directly or around a loop, counting a child's use
/// of what its parent `mod.rs` declares too: a `mod.rs` that both defines shared types and calls
/// into its children is a cycle (the types then live in a file of their own, as `http/message.rs`,
/// `shard/state.rs` and `config/error.rs` do). `mod child;` declarations and re-exports of a
/// child's items are not dependencies of the child on its parent.
#[test]
fn no_cycles_between_files() {
    let g = load_src();
    assert!(g.files.len() > 10, "found only {} files under src/", g.files.len());
    if let Some(msg) = describe_cycles(&g, &g.edges(true)) {
        panic!("files under src/ depend on each other in a cycle (see docs/ARCHITECTURE.md, Rules):\n{msg}");
    }
}

#[test]
fn scanner_sees_code_paths_and_ignores_the_rest() {
    let me: ModPath = vec!["shard".into(), "conn".into()];
    let src = r##"
//! Docs naming crate::docs_only::X.
use crate::config::{self, Bootstrap};
use crate::{http::{RequestHead, fields::Token}, stats as s};
use super::reply::LocalReply;
use super::super::route;
use self::inner::Thing;
mod inner;
mod declared_only;
/* crate::block_comment /* nested crate::nested */ */
fn f<'a>(x: &'a str) -> char {
    let _ = "crate::in_a_string";
    let _ = r#"crate::in_a_raw "string"#;
    let _ = crate::snapshot::Snapshot::build();
    let _ = super::request::Request::new();
    let _ = inner::helper();
    let c = '"'; let _ = crate::after_char::Y;
    'x'
}
#[cfg(test)]
mod tests {
    use crate::only_in_tests::Z;
}
"##;
    let mut got: Vec<String> = scan(&me, src).iter().map(|p| p.join("::")).collect();
    got.sort();
    got.dedup();
    let mut want = vec![
        "config",
        "config::Bootstrap",
        "http::RequestHead",
        "http::fields::Token",
        "stats",
        "shard::reply::LocalReply",
        "route",
        "shard::conn::inner::Thing",
        "snapshot::Snapshot::build",
        "shard::request::Request::new",
        "shard::conn::inner::helper",
        "after_char::Y",
    ];
    want.sort();
    assert_eq!(got, want);

    // Resolution: the deepest module file, through a parent's re-export to the defining file, and
    // `mod child;` alone is no edge.
    let mut g = Graph::new();
    g.add(vec![], "lib.rs".into(), "mod shard; mod snapshot;");
    g.add(vec!["shard".into()], "shard/mod.rs".into(), "mod reply; mod conn; pub use reply::LocalReply;");
    g.add(vec!["shard".into(), "reply".into()], "shard/reply.rs".into(), "pub struct LocalReply;");
    g.add(me.clone(), "shard/conn.rs".into(), "use super::LocalReply; use crate::snapshot::Snapshot;");
    g.add(vec!["snapshot".into()], "snapshot.rs".into(), "use crate::shard::conn::X;");
    let e = g.edges(true);
    let to = |m: &[&str]| -> Vec<Vec<String>> {
        e[&m.iter().map(|s| s.to_string()).collect::<Vec<_>>()].keys().cloned().collect()
    };
    assert_eq!(to(&[]), Vec::<Vec<String>>::new());
    assert_eq!(to(&["shard"]), vec![vec!["shard".to_string(), "reply".to_string()]]);
    assert_eq!(
        to(&["shard", "conn"]),
        vec![vec!["shard".to_string(), "reply".to_string()], vec!["snapshot".to_string()]]
    );
    let sccs = cycles(&e);
    assert_eq!(sccs.len(), 1);

    // A glob re-export: the item resolves to the file that defines it.
    let mut h = Graph::new();
    h.add(vec!["config".into()], "config/mod.rs".into(), "mod model; pub use model::*; pub fn load() {}");
    h.add(vec!["config".into(), "model".into()], "config/model.rs".into(), "pub struct Cluster;");
    assert_eq!(h.resolve(&vec!["config".into(), "Cluster".into()]), vec!["config", "model"]);
    assert_eq!(h.resolve(&vec!["config".into(), "load".into()]), vec!["config"]);
    assert_eq!(shortest_cycle(&e, &sccs[0], &sccs[0][0]).len(), 3);
}
