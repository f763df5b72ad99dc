//! The code's shape, read from its files: no two sibling modules import
//! each other, however far round (only a parent and its children may), and
//! no code outside `runner/` asks which runner runs (it asks the runner).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates whose modules are read, by their source directories.
const CRATES: [&str; 5] = ["gateway/src", "builder/src", "runner/src", "state/src", "hooks/src"];

/// A module: its path below its crate's root (empty for the root).
type Module = Vec<String>;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_owned()
}

/// Every `.rs` file below `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("a source directory").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The module a file holds, from its path below the crate's `src`.
fn module_of(src: &Path, file: &Path) -> Module {
    let relative = file.strip_prefix(src).expect("below src").with_extension("");
    let mut module: Module = relative.iter().map(|part| part.to_string_lossy().into_owned()).collect();
    if matches!(module.last().map(String::as_str), Some("lib" | "main" | "mod")) {
        module.pop();
    }
    module
}

/// The code of a file without its comments and its `#[cfg(test)]` module.
fn code(text: &str) -> String {
    let text = text.find("#[cfg(test)]").map_or(text, |at| &text[..at]);
    text.lines().map(|line| line.find("//").map_or(line, |at| &line[..at])).collect::<Vec<_>>().join("\n")
}

/// The module paths `code` names through `crate::` or `super::`, from `module`.
fn named_paths(module: &Module, code: &str) -> BTreeSet<Module> {
    let mut paths = BTreeSet::new();
    for start in ["crate::", "super::"] {
        for (at, _) in code.match_indices(start) {
            if code[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let words: Vec<&str> = code[at..]
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap_or_default()
                .split("::")
                .filter(|word| !word.is_empty())
                .collect();
            let mut base: Module = if words[0] == "crate" { Vec::new() } else { module[..module.len() - 1].to_vec() };
            let mut rest = &words[1..];
            while rest.first() == Some(&"super") {
                base.pop();
                rest = &rest[1..];
            }
            // A module's name is lower case; an item's (a type, a trait) is not.
            base.extend(
                rest.iter()
                    .take_while(|word| word.starts_with(|c: char| c.is_ascii_lowercase()))
                    .map(|w| (*w).to_owned()),
            );
            paths.insert(base);
        }
    }
    paths
}

fn is_ancestor(a: &Module, b: &Module) -> bool {
    a.len() < b.len() && b[..a.len()] == a[..]
}

/// Each crate's modules and the modules each one imports from.
fn import_graphs() -> BTreeMap<&'static str, BTreeMap<Module, BTreeSet<Module>>> {
    let root = workspace();
    let mut graphs = BTreeMap::new();
    for krate in CRATES {
        let src = root.join(krate);
        let files: Vec<(Module, String)> = sources(&src)
            .into_iter()
            .map(|file| (module_of(&src, &file), code(&std::fs::read_to_string(&file).expect("a source file"))))
            .collect();
        let modules: BTreeSet<Module> = files.iter().map(|(module, _)| module.clone()).collect();
        let mut graph = BTreeMap::new();
        for (module, code) in &files {
            let imports: BTreeSet<Module> = named_paths(module, code)
                .into_iter()
                .filter_map(|mut path| {
                    while !modules.contains(&path) {
                        path.pop()?;
                    }
                    Some(path)
                })
                .filter(|path| path != module)
                .collect();
            graph.insert(module.clone(), imports);
        }
        graphs.insert(krate, graph);
    }
    graphs
}

/// The strongly connected parts of `graph` of more than one module (Tarjan).
fn cycles(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct Walk<'g> {
        graph: &'g BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'g Module, (usize, usize)>,
        stack: Vec<&'g Module>,
        found: Vec<Vec<Module>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, module: &'g Module) -> usize {
            let me = self.index.len();
            self.index.insert(module, (me, me));
            self.stack.push(module);
            let mut low = me;
            for next in self.graph.get(module).into_iter().flatten() {
                low = match self.index.get(next) {
                    None => low.min(self.visit(next)),
                    Some(&(index, _)) if self.stack.contains(&next) => low.min(index),
                    Some(_) => low,
                };
            }
            self.index.insert(module, (me, low));
            if low == me {
                let at = self.stack.iter().position(|m| *m == module).expect("on the stack");
                let part: Vec<Module> = self.stack.drain(at..).cloned().collect();
                if part.len() > 1 {
                    self.found.push(part);
                }
            }
            low
        }
    }
    let mut walk = Walk { graph, index: BTreeMap::new(), stack: Vec::new(), found: Vec::new() };
    for module in graph.keys() {
        if !walk.index.contains_key(module) {
            walk.visit(module);
        }
    }
    walk.found
}

#[test]
fn no_two_sibling_modules_import_each_other() {
    let mut found = Vec::new();
    for (krate, graph) in import_graphs() {
        assert!(graph.len() > 3, "{krate}: no modules read");
        for part in cycles(&graph) {
            let siblings = part.iter().any(|a| part.iter().any(|b| a != b && !is_ancestor(a, b) && !is_ancestor(b, a)));
            if siblings {
                let names: Vec<String> =
                    part.iter().map(|m| if m.is_empty() { "(root)".into() } else { m.join("::") }).collect();
                found.push(format!("{krate}: {}", names.join(" ↔ ")));
            }
        }
    }
    assert!(found.is_empty(), "modules that import each other:\n{}", found.join("\n"));
}

#[test]
fn no_code_outside_the_runner_asks_which_runner_runs() {
    let root = workspace();
    let mut found = Vec::new();
    for krate in CRATES.into_iter().filter(|krate| !krate.starts_with("runner/")) {
        for file in sources(&root.join(krate)) {
            let code = code(&std::fs::read_to_string(&file).expect("a source file"));
            for kind in ["Docker", "Systemd", "Kubernetes", "Swarm"] {
                for named in [format!("RunnerKind::{kind}"), format!("Runner::{kind}")] {
                    if code.contains(&named) {
                        found.push(format!("{}: {named}", file.strip_prefix(&root).unwrap_or(&file).display()));
                    }
                }
            }
        }
    }
    assert!(found.is_empty(), "code outside runner/ that names a runner's kind:\n{}", found.join("\n"));
}

#[test]
fn the_checker_sees_a_cycle() {
    let module = |path: &str| path.split("::").map(str::to_owned).collect::<Module>();
    let graph = BTreeMap::from([
        (module("a"), BTreeSet::from([module("b")])),
        (module("b"), BTreeSet::from([module("c::d")])),
        (module("c::d"), BTreeSet::from([module("a")])),
        (module("c"), BTreeSet::from([module("c::d")])),
    ]);
    assert_eq!(cycles(&graph).len(), 1);
    let paths = named_paths(&module("x::y"), "use super::z::Thing; crate::a::b::f(); super::super::w;");
    assert_eq!(paths, BTreeSet::from([module("x::z"), module("a::b::f"), module("w")]));
}
