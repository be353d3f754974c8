//! The import rules of `ARCHITECTURE.md`, checked against the source: each
//! top-level module of `src/` may name (`crate::x`) only the modules its
//! row allows, and SQL (`sqlx::query`) is written in `store/` alone.
//!
//! Arrows that break a rule today and are being moved are listed in
//! `KNOWN`; the test fails on any other arrow, and on a `KNOWN` entry that no
//! longer occurs (so the list only shrinks).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Which modules each module may import. Lower layers first.
const MAY_IMPORT: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("par", &[]),
    ("azure", &["model", "par"]),
    ("engine", &["model"]),
    ("topology", &["model", "engine"]),
    ("store", &["model", "azure", "engine", "topology"]),
    ("index", &["model", "engine", "topology", "store"]),
    ("access", &["store"]),
    ("enrich", &["model", "azure", "engine", "topology", "index"]),
    ("sync", &["model", "engine", "store", "index"]),
    (
        "ingest",
        &[
            "model", "par", "azure", "engine", "topology", "store", "index", "sync",
        ],
    ),
    (
        "collector",
        &[
            "model", "par", "azure", "engine", "topology", "store", "index", "sync", "ingest",
        ],
    ),
    ("demo", &["model", "store", "index", "ingest"]),
    (
        "api",
        &[
            "model",
            "par",
            "azure",
            "engine",
            "topology",
            "store",
            "index",
            "enrich",
            "sync",
            "ingest",
            "collector",
            "access",
        ],
    ),
];

/// Arrows that break the rules today, each with where it is going.
const KNOWN: &[(&str, &str)] = &[];

/// Files outside `store/` that still run SQL, to be moved into it.
const SQL_OUTSIDE_STORE: &[&str] = &[];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to (`None` for the crate root and binaries).
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" | "bin" => None,
        f => Some(f.trim_end_matches(".rs").to_string()),
    }
}

/// Every `crate::name` in `text`, also inside `use crate::{a::.., b::..}`.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The first path segment of each item at the group's top level.
            let (mut depth, mut start) = (0usize, true);
            let mut name = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && (c.is_alphanumeric() || c == '_') => name.push(c),
                    _ if start && !name.is_empty() => {
                        out.insert(std::mem::take(&mut name));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.insert(name);
        }
    }
    out
}

fn arrows() -> BTreeMap<(String, String), Vec<String>> {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let modules: BTreeSet<String> = MAY_IMPORT.iter().map(|(m, _)| m.to_string()).collect();
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&root).unwrap();
        let Some(from) = module_of(rel) else { continue };
        if from == "sim" {
            continue;
        }
        assert!(
            modules.contains(&from),
            "src/{}: module `{from}` has no row in MAY_IMPORT (tests/architecture.rs, ARCHITECTURE.md)",
            rel.display()
        );
        for to in crate_refs(&std::fs::read_to_string(&f).unwrap()) {
            if to != from && modules.contains(&to) {
                out.entry((from.clone(), to))
                    .or_default()
                    .push(rel.display().to_string());
            }
        }
    }
    out
}

#[test]
fn arrows_run_one_way() {
    let allowed: BTreeMap<&str, &[&str]> = MAY_IMPORT.iter().copied().collect();
    let found = arrows();
    let mut broken = Vec::new();
    for ((from, to), files) in &found {
        let ok = allowed[from.as_str()].contains(&to.as_str())
            || KNOWN.contains(&(from.as_str(), to.as_str()));
        if !ok {
            broken.push(format!("{from} -> {to} ({})", files.join(", ")));
        }
    }
    assert!(
        broken.is_empty(),
        "imports that ARCHITECTURE.md does not allow:\n{}",
        broken.join("\n")
    );
    let gone: Vec<_> = KNOWN
        .iter()
        .filter(|(f, t)| !found.contains_key(&(f.to_string(), t.to_string())))
        .collect();
    assert!(
        gone.is_empty(),
        "arrows listed as known that no longer occur (take them off KNOWN): {gone:?}"
    );
}

#[test]
fn the_table_has_no_circle() {
    // Every allowed arrow points to a module listed earlier in MAY_IMPORT.
    let order: Vec<&str> = MAY_IMPORT.iter().map(|(m, _)| *m).collect();
    for (i, (m, deps)) in MAY_IMPORT.iter().enumerate() {
        for d in *deps {
            let j = order.iter().position(|x| x == d);
            assert!(
                j.is_some_and(|j| j < i),
                "{m} may import {d}, listed after it"
            );
        }
    }
}

#[test]
fn sql_is_written_in_the_store() {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut found = BTreeSet::new();
    for f in files {
        let rel = f.strip_prefix(&root).unwrap().display().to_string();
        if rel.starts_with("store/") || rel.starts_with("sim/") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        if text.contains("sqlx::query") || text.contains("query_as(") || text.contains("query(\"") {
            found.insert(rel);
        }
    }
    let known: BTreeSet<String> = SQL_OUTSIDE_STORE.iter().map(|s| s.to_string()).collect();
    let new: Vec<_> = found.difference(&known).collect();
    let gone: Vec<_> = known.difference(&found).collect();
    assert!(new.is_empty(), "SQL outside store/: {new:?}");
    assert!(
        gone.is_empty(),
        "no longer run SQL (take them off SQL_OUTSIDE_STORE): {gone:?}"
    );
}

#[test]
fn crate_refs_reads_grouped_uses() {
    let r = crate_refs(
        "use crate::{engine::Micros, model::{Mac, Ip}};\nlet x = crate::store::f();\n// crate::api\n",
    );
    let want: BTreeSet<String> = ["engine", "model", "store"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(r, want);
}
