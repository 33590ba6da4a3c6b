//! The crate's files import each other without a circle: every name lives in the lowest file
//! that needs it, and a file never imports from one that (directly or not) imports from it.
//!
//! Reads every file of `src/` (except `src/bin/`), takes its imports — `use crate::…`,
//! `use super::…` and paths written `crate::…` or `super::…` in the code — and resolves each
//! to the file that defines the name (following `pub use` re-exports), then looks for a
//! circle in that graph. A module's `#[cfg(test)]` module is left out (tests may use anything),
//! and so are the edges from a module to its own submodules: a parent declares its children
//! and gathers what they export, and the children import from it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path: `["cache", "s3"]` for `src/cache/s3.rs`, `[]` for `src/lib.rs`.
type Module = Vec<String>;

fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

/// Every `.rs` file under `src/` but `src/bin/`, by module.
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
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
    let mut out = BTreeMap::new();
    for p in files {
        let rel = p.strip_prefix(src).unwrap().with_extension("");
        let mut parts: Module = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts[0] == "bin" {
            continue;
        }
        if parts == ["lib"] || parts.last().is_some_and(|l| l == "mod") {
            parts.pop();
        }
        out.insert(parts, p);
    }
    out
}

/// The code of a file without comments, string literals' contents and its test module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod ") {
        Some(at) => &text[..at],
        None => text,
    };
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let end = text[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            i = end;
        } else if b[i] == b'r'
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
            && b[i + 1..]
                .iter()
                .position(|c| *c != b'#')
                .is_some_and(|n| b[i + 1 + n] == b'"')
        {
            // A raw string: skipped to its closing quote and as many `#`.
            let hashes = b[i + 1..].iter().take_while(|c| **c == b'#').count();
            let close = format!("\"{}", "#".repeat(hashes));
            let body = i + 2 + hashes;
            i = text[body..]
                .find(&close)
                .map_or(b.len(), |e| body + e + close.len());
            out.push_str("\"\"");
        } else if b[i] == b'"' && !(i > 0 && b[i - 1] == b'\'') {
            // A string: skipped to its closing quote (an escaped quote is stepped over).
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The paths a use tree names, each as its segments (`a::{b, c::d as e}` → `a::b`, `a::c::d`).
fn use_tree(prefix: &[String], tree: &str) -> Vec<Module> {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let base: Vec<String> = tree[..open]
            .split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let prefix: Vec<String> = prefix.iter().cloned().chain(base).collect();
        let inner = &tree[open + 1..tree.rfind('}').unwrap()];
        let (mut depth, mut start, mut out) = (0, 0, Vec::new());
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.extend(use_tree(&prefix, &inner[start..i]));
                    start = i + 1;
                }
                _ => {}
            }
        }
        out.extend(use_tree(&prefix, &inner[start..]));
        return out;
    }
    let path = tree.split(" as ").next().unwrap().trim();
    if path.is_empty() {
        return Vec::new();
    }
    let mut out: Module = prefix.to_vec();
    out.extend(
        path.split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from),
    );
    vec![out]
}

/// Turns a path written in `module` that starts with `crate`, `super` or `self` into one from
/// the crate's root; `None` for other paths (std, other crates, local names).
fn absolute(module: &Module, path: &[String]) -> Option<Module> {
    let mut at: Module = match path.first()?.as_str() {
        "crate" => Vec::new(),
        "super" | "self" => module.clone(),
        _ => return None,
    };
    let mut rest = path;
    if rest[0] == "crate" {
        rest = &rest[1..];
    }
    while let Some(first) = rest.first() {
        match first.as_str() {
            "super" => {
                at.pop()?;
            }
            "self" => {}
            _ => break,
        }
        rest = &rest[1..];
    }
    at.extend(rest.iter().cloned());
    Some(at)
}

/// The `use` statements of a file's code, each as the text after `use` up to its `;`, and
/// whether it is public (a re-export: `pub use`, `pub(crate) use`).
fn uses(code: &str) -> Vec<(bool, &str)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("use ") {
        let at = from + at;
        let before = code[..at].trim_end();
        let starts =
            before.is_empty() || before.ends_with([';', '{', '}', ')']) || before.ends_with("pub");
        let word_start = at == 0 || !code.as_bytes()[at - 1].is_ascii_alphanumeric();
        let end = code[at..].find(';').map_or(code.len(), |e| at + e);
        if starts && word_start {
            let public = before.ends_with("pub")
                || (before.ends_with(')')
                    && before
                        .rsplit_once("pub(")
                        .is_some_and(|(_, r)| !r.contains(';')));
            out.push((public, &code[at + 4..end]));
            from = end;
        } else {
            from = at + 4;
        }
    }
    out
}

/// Paths written in code (not in a `use`) that start with `crate::` or `super::`.
fn inline_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for key in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(key) {
            let at = from + at;
            from = at + key.len();
            if at > 0 {
                let c = code.as_bytes()[at - 1];
                if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c == b':' {
                    continue;
                }
            }
            let path: String = code[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let segments: Vec<String> = path
                .split("::")
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            out.push(segments);
        }
    }
    out
}

struct Crate {
    files: BTreeMap<Module, PathBuf>,
    /// Per module, the names it re-exports (`pub use`) and the path each stands for.
    reexports: BTreeMap<Module, BTreeMap<String, Module>>,
    /// Per module, the absolute paths it imports.
    imports: BTreeMap<Module, Vec<Module>>,
}

impl Crate {
    fn read(src: &Path) -> Crate {
        let files = modules(src);
        let (mut reexports, mut imports) = (BTreeMap::new(), BTreeMap::new());
        for (module, path) in &files {
            let code = code(&std::fs::read_to_string(path).unwrap());
            let mut mine: BTreeMap<String, Module> = BTreeMap::new();
            let mut paths = Vec::new();
            for (public, u) in uses(&code) {
                for p in use_tree(&[], u) {
                    // Relative to this module: `use child::X` in a parent, or `crate::`/`super::`.
                    let abs = absolute(module, &p).or_else(|| {
                        let mut child = module.clone();
                        child.push(p[0].clone());
                        files.contains_key(&child).then(|| {
                            let mut a = module.clone();
                            a.extend(p.iter().cloned());
                            a
                        })
                    });
                    let Some(abs) = abs else { continue };
                    if public {
                        if let Some(last) = abs.last() {
                            mine.insert(last.clone(), abs.clone());
                        }
                    }
                    paths.push(abs);
                }
            }
            for p in inline_paths(&code) {
                if let Some(abs) = absolute(module, &p) {
                    paths.push(abs);
                }
            }
            reexports.insert(module.clone(), mine);
            imports.insert(module.clone(), paths);
        }
        Crate {
            files,
            reexports,
            imports,
        }
    }

    /// The file defining the item at `path`: the longest module prefix, through re-exports.
    fn file_of(&self, path: &[String], depth: usize) -> Option<Module> {
        let n = (0..=path.len())
            .rev()
            .find(|n| self.files.contains_key(&path[..*n]))?;
        let module: Module = path[..n].to_vec();
        if depth < 8 {
            if let Some(target) = path
                .get(n)
                .and_then(|item| self.reexports.get(&module)?.get(item))
            {
                if target.as_slice() != path {
                    let mut further = target.clone();
                    further.extend(path[n + 1..].iter().cloned());
                    return self.file_of(&further, depth + 1);
                }
            }
        }
        Some(module)
    }

    /// Edges between files: `a → b` when `a` imports a name `b` defines (not `b` one of `a`'s
    /// submodules, nor `a` itself).
    fn edges(&self) -> BTreeMap<Module, BTreeSet<Module>> {
        let mut out: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
        for (module, paths) in &self.imports {
            let targets = out.entry(module.clone()).or_default();
            for p in paths {
                let Some(t) = self.file_of(p, 0) else {
                    continue;
                };
                if !t.starts_with(module) {
                    targets.insert(t);
                }
            }
        }
        out
    }
}

/// The circles of `edges`: each strongly connected set of more than one file, with the edges
/// inside it.
fn circles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<(Module, Module)>> {
    // Tarjan's algorithm, iterative over a small graph: recursion is fine at this size.
    struct State<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on: BTreeSet<&'a Module>,
        out: Vec<BTreeSet<&'a Module>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Module) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on.insert(v);
        for w in s.edges.get(v).into_iter().flatten() {
            if !s.edges.contains_key(w) {
                continue;
            }
            if !s.index.contains_key(w) {
                visit(s, w);
                let l = s.low[w].min(s.low[v]);
                s.low.insert(v, l);
            } else if s.on.contains(w) {
                let l = s.index[w].min(s.low[v]);
                s.low.insert(v, l);
            }
        }
        if s.low[v] == s.index[v] {
            let mut set = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                set.insert(w);
                if w == v {
                    break;
                }
            }
            if set.len() > 1 {
                s.out.push(set);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
        .iter()
        .map(|set| {
            set.iter()
                .flat_map(|a| {
                    edges[*a]
                        .iter()
                        .filter(|b| set.contains(b))
                        .map(|b| ((*a).clone(), b.clone()))
                })
                .collect()
        })
        .collect()
}

#[test]
fn no_file_imports_from_a_file_that_imports_from_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let krate = Crate::read(&src);
    let edges = krate.edges();
    // The reader sees the imports at all: a few that must be there.
    for (a, b) in [
        ("plan", "select"),
        ("flow", "fetch"),
        ("cache::tiered", "cache::tier"),
    ] {
        let (a, b): (Module, Module) = (
            a.split("::").map(String::from).collect(),
            b.split("::").map(String::from).collect(),
        );
        assert!(
            edges[&a].contains(&b),
            "{} → {} not found",
            name(&a),
            name(&b)
        );
    }
    let found = circles(&edges);
    let text: Vec<String> = found
        .iter()
        .map(|c| {
            c.iter()
                .map(|(a, b)| format!("{} → {}", name(a), name(b)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect();
    assert!(
        found.is_empty(),
        "files importing each other (move the shared name down to a file both can import):\n{}",
        text.join("\n")
    );
}

#[test]
fn the_catalog_reads_no_source_and_the_tiers_nothing_of_the_plan() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let krate = Crate::read(&src);
    let under = |m: &Module, top: &str| m.first().is_some_and(|f| f == top);
    for (a, targets) in &krate.edges() {
        for b in targets {
            // source.rs is the reader (Source, its arrays); the Scope is source/scope.rs.
            assert!(
                !(under(a, "catalog") && b.as_slice() == ["source"]),
                "{} imports from source.rs (the reader): the catalog needs the Scope only",
                name(a)
            );
        }
    }
    // As written, not through re-exports: `plan::FORMAT_VERSION` is the encoder's.
    for (a, paths) in &krate.imports {
        for p in paths {
            assert!(
                !(under(a, "cache") && under(p, "plan")),
                "{} imports {}: a tier knows a file by its Key only",
                name(a),
                name(p)
            );
        }
    }
}

#[test]
fn a_circle_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir(src.join("a")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\npub mod c;\n").unwrap();
    std::fs::write(src.join("a.rs"), "pub mod x;\npub use x::Thing;\n").unwrap();
    std::fs::write(
        src.join("a/x.rs"),
        "// use crate::c::Never;\nuse crate::b::{self, More};\npub struct Thing;\n",
    )
    .unwrap();
    std::fs::write(src.join("b.rs"), "pub struct More;\n").unwrap();
    std::fs::write(
        src.join("c.rs"),
        "pub struct Never;\nfn f() -> crate::a::Thing { crate::a::Thing }\n",
    )
    .unwrap();
    let krate = Crate::read(src);
    let no_circle = circles(&krate.edges());
    assert!(no_circle.is_empty(), "{no_circle:?}");
    // b imports a's re-export of a::x: b → a::x → b.
    std::fs::write(
        src.join("b.rs"),
        "pub struct More;\n#[allow(dead_code)]\nstatic T: crate::a::Thing = crate::a::Thing;\n\n#[cfg(test)]\nmod tests {\n    use crate::c::Never;\n}\n",
    )
    .unwrap();
    let krate = Crate::read(src);
    let edges = krate.edges();
    let found = circles(&edges);
    let one: Vec<(String, String)> = found
        .iter()
        .flatten()
        .map(|(a, b)| (name(a), name(b)))
        .collect();
    assert_eq!(
        one,
        [("a::x".into(), "b".into()), ("b".into(), "a::x".into())],
        "{edges:?}"
    );
}
