//! The service's modules form layers: no top-level module of `src/` uses one
//! that uses it back, directly or through others. Read from the source: a
//! module uses another where its files (outside their unit tests) name
//! `crate::other`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// Each top-level module and the top-level modules its files name.
fn uses() -> BTreeMap<String, BTreeSet<String>> {
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = vec![Path::new(SOURCE).to_path_buf()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|entry| entry.unwrap().path()));
            continue;
        }
        let relative = path.strip_prefix(SOURCE).unwrap();
        let top = relative.components().next().unwrap().as_os_str().to_str().unwrap();
        let module = top.trim_end_matches(".rs").to_owned();
        if module == "lib" || module == "main" || path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        let named = code.match_indices("crate::").map(|(at, _)| {
            code[at + "crate::".len()..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>()
        });
        let entry = uses.entry(module.clone()).or_default();
        entry.extend(named.filter(|other| *other != module));
    }
    let modules: BTreeSet<String> = uses.keys().cloned().collect();
    uses.values_mut().for_each(|used| used.retain(|m| modules.contains(m)));
    uses
}

/// A path from `from` back to `to` through what modules use, if there is one.
fn path_back(uses: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> Option<Vec<String>> {
    let mut seen = BTreeSet::new();
    let mut paths = vec![vec![from.to_owned()]];
    while let Some(path) = paths.pop() {
        let last = path.last().unwrap();
        if last == to {
            return Some(path);
        }
        if seen.insert(last.clone()) {
            for next in &uses[last] {
                paths.push([path.clone(), vec![next.clone()]].concat());
            }
        }
    }
    None
}

#[test]
fn no_module_uses_one_that_uses_it_back() {
    let uses = uses();
    assert!(uses.len() >= 10, "the modules were found: {uses:?}");
    assert!(uses["ingest"].contains("store"), "uses are read: {:?}", uses["ingest"]);
    for (module, used) in &uses {
        for other in used {
            if let Some(back) = path_back(&uses, other, module) {
                panic!("{module} uses {other}, and {} leads back", back.join(" → "));
            }
        }
    }
}

/// `src/`'s root reads as the architecture: the areas are folders, and only
/// a handful of files sit beside them.
#[test]
fn the_source_root_holds_at_most_eight_files() {
    let files: Vec<String> = std::fs::read_dir(SOURCE)
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_type().unwrap().is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.len() <= 8, "{} files at src/'s root: {files:?}", files.len());
}
