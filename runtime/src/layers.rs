//! Keeps the host's rooms layered: each top-level module may use only modules of its own layer
//! or below, and no two modules may use each other, even through others. The layers are the
//! ones `lib.rs` lists; a new module must be placed in one here, or this test fails.
//!
//! It reads the source rather than the compiler's output, so it sees what a reader sees:
//! every `crate::<module>` path outside comments, in code and tests alike.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The host's top-level modules, bottom layer first.
const LAYERS: &[&[&str]] = &[
    // Foundations: plain values and helpers every room shares.
    &[
        "units", "names", "settings", "inputs", "event", "outcome", "backoff", "metrics",
    ],
    &["engine"],
    &["wire"],
    &["broker"],
    // State kept in Redis, each owned by one module.
    &[
        "registry",
        "canary",
        "records",
        "schemas",
        "retention",
        "telemetry",
    ],
    &["delivery"],
    &["triggers"],
    // The control plane.
    &["manifest", "status", "charts", "deployments"],
    &["api"],
    &["host"],
    &["cli"],
];

/// Every `crate::<module>` use in each top-level module: (user, used) → the first place seen.
fn uses(src: &Path) -> BTreeMap<(String, String), String> {
    let known: BTreeSet<&str> = LAYERS.iter().flat_map(|l| l.iter().copied()).collect();
    let mut found = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("the source folder reads") {
            let path = entry.expect("a folder entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).expect("under src");
            let top = relative
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .map(|t| t.trim_end_matches(".rs").to_owned())
                .expect("a file name");
            if !known.contains(top.as_str()) {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("a source file reads");
            for (n, line) in text.lines().enumerate() {
                let code = line.trim_start();
                if code.starts_with("//") {
                    continue;
                }
                for (at, _) in code.match_indices("crate::") {
                    let rest = &code[at + "crate::".len()..];
                    let used: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if used != top && known.contains(used.as_str()) {
                        found
                            .entry((top.clone(), used))
                            .or_insert_with(|| format!("{}:{}", relative.display(), n + 1));
                    }
                }
            }
        }
    }
    found
}

#[test]
fn every_module_is_in_a_layer_and_uses_only_its_own_or_lower() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layer_of: BTreeMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, l)| l.iter().map(move |m| (*m, i)))
        .collect();
    let mut unplaced = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let module = name.trim_end_matches(".rs");
        let test_only = ["lib", "main", "layers"].contains(&module);
        if !test_only && !layer_of.contains_key(module) {
            unplaced.push(module.to_owned());
        }
    }
    assert!(
        unplaced.is_empty(),
        "modules in no layer of layers.rs: {unplaced:?}: place each in the layer it belongs to"
    );
    let upward: Vec<String> = uses(&src)
        .into_iter()
        .filter(|((user, used), _)| layer_of[used.as_str()] > layer_of[user.as_str()])
        .map(|((user, used), at)| format!("{user} uses {used} (above it) at {at}"))
        .collect();
    assert!(upward.is_empty(), "upward uses:\n{}", upward.join("\n"));
}

#[test]
fn no_two_modules_use_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let uses = uses(&src);
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (user, used) in uses.keys() {
        graph.entry(user).or_default().push(used);
    }
    // A depth-first walk from every module; a module met again on the current path closes a
    // cycle, reported with the places that make it.
    fn walk<'a>(
        at: &'a str,
        graph: &BTreeMap<&'a str, Vec<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(start) = path.iter().position(|m| *m == at) {
            let mut cycle = path[start..].to_vec();
            cycle.push(at);
            return Some(cycle);
        }
        if !done.insert(at) {
            return None;
        }
        path.push(at);
        for next in graph.get(at).into_iter().flatten() {
            if let Some(cycle) = walk(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        if let Some(cycle) = walk(module, &graph, &mut Vec::new(), &mut done) {
            let places: Vec<String> = cycle
                .windows(2)
                .map(|w| {
                    format!(
                        "{} uses {} at {}",
                        w[0],
                        w[1],
                        uses[&(w[0].to_owned(), w[1].to_owned())]
                    )
                })
                .collect();
            panic!(
                "an import cycle: {}\n{}",
                cycle.join(" -> "),
                places.join("\n")
            );
        }
    }
}
