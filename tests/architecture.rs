//! The house rules of ARCHITECTURE.md, checked on the source itself: data flows one
//! way down the pipeline (a module uses only modules before it), the command line
//! lives in the binary, and only `store` speaks SQL.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The library's modules in pipeline order: each may use only those of a lower rank
/// (and the rank-0 helpers, which use nothing).
const RANKS: &[(&str, u32)] = &[
    ("error", 0),
    ("output", 0),
    ("kernels", 1),
    ("arch", 2),
    ("import", 3),
    ("preprocess", 3),
    ("receptive", 3),
    ("crawl", 4),
    ("shard", 4),
    ("source", 5),
    ("model", 5),
    ("peaks", 6),
    ("labels", 6),
    ("stats", 7),
    ("store", 8),
    ("index", 9),
    ("merge", 9),
    ("query", 9),
    ("concepts", 10),
    ("shots", 10),
    ("visualize", 10),
    ("render", 11),
    ("gallery", 12),
    ("serve", 12),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file of a module: `src/NAME.rs` and everything under `src/NAME/`.
fn files_of(module: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let file = src().join(format!("{module}.rs"));
    if file.exists() {
        out.push(file);
    }
    let mut dirs = vec![src().join(module)];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The source without comments (a doc comment naming a module is not a use of it).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The crate's modules that `text` names through `crate::`, `crate::{a, b::c}`
/// included.
fn crate_uses(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            group[..end].split(',').collect()
        } else {
            vec![rest]
        };
        for n in names {
            let ident: String = n
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if ident.starts_with(|c: char| c.is_ascii_lowercase()) {
                out.push(ident);
            }
        }
    }
    out
}

#[test]
fn every_module_uses_only_modules_before_it_in_the_pipeline() {
    let rank: BTreeMap<&str, u32> = RANKS.iter().copied().collect();
    let mut wrong = Vec::new();
    // Every library module has a rank, so a new one must be placed.
    let lib = fs::read_to_string(src().join("lib.rs")).unwrap();
    for line in lib.lines() {
        if let Some(m) = line.strip_prefix("pub mod ").or(line.strip_prefix("mod ")) {
            let m = m.trim_end_matches(';');
            if !rank.contains_key(m) {
                wrong.push(format!("module {m} has no place in RANKS"));
            }
        }
    }
    for &(module, r) in RANKS {
        let files = files_of(module);
        if files.is_empty() {
            wrong.push(format!("no source for module {module}"));
        }
        for f in files {
            let text = code(&fs::read_to_string(&f).unwrap());
            assert!(
                !text.contains("super::super"),
                "{}: reaches up with super::super",
                f.display()
            );
            for used in crate_uses(&text) {
                if used == module {
                    continue;
                }
                match rank.get(used.as_str()) {
                    Some(&u) if u == 0 || u < r => {}
                    Some(&u) => wrong.push(format!(
                        "{} ({module}, rank {r}) uses crate::{used} (rank {u})",
                        f.strip_prefix(src()).unwrap().display()
                    )),
                    None => wrong.push(format!("{} uses unknown crate::{used}", f.display())),
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "modules reaching up the pipeline:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_command_line_is_part_of_the_binary_only() {
    let lib = code(&fs::read_to_string(src().join("lib.rs")).unwrap());
    assert!(!lib.contains("mod cli"), "lib.rs declares the cli module");
    let main = code(&fs::read_to_string(src().join("main.rs")).unwrap());
    assert!(
        main.contains("mod cli;"),
        "main.rs does not hold the cli module"
    );
    // Nothing in the library knows about clap.
    for &(module, _) in RANKS {
        for f in files_of(module) {
            let text = code(&fs::read_to_string(&f).unwrap());
            assert!(!text.contains("clap"), "{} uses clap", f.display());
        }
    }
}

#[test]
fn only_the_store_speaks_sql() {
    const SQL: &[&str] = &[
        "SELECT ",
        "INSERT INTO",
        "INSERT OR",
        "DELETE FROM",
        "UPDATE ",
        "CREATE TABLE",
        "PRAGMA ",
        "rusqlite::",
    ];
    let mut found = Vec::new();
    let mut files = files_of("cli");
    for &(module, _) in RANKS.iter().filter(|(m, _)| *m != "store") {
        files.extend(files_of(module));
    }
    for f in files {
        let text = code(&fs::read_to_string(&f).unwrap());
        for kw in SQL {
            // The error type may carry SQLite's error; nothing else may.
            if text.contains(kw) && !(f.ends_with("error.rs") && *kw == "rusqlite::") {
                found.push(format!(
                    "{}: {kw:?}",
                    f.strip_prefix(src()).unwrap().display()
                ));
            }
        }
    }
    assert!(found.is_empty(), "SQL outside store:\n{}", found.join("\n"));
}

#[test]
fn the_checks_see_what_they_look_for() {
    // The parser itself: a grouped import, a path, a comment that must not count.
    let t = code("use crate::{model::Tap, query};\nlet x = crate::store::open(); // crate::serve");
    assert_eq!(crate_uses(&t), ["model", "query", "store"]);
    // And the files: the store is found, and it does hold SQL.
    let store: String = files_of("store")
        .iter()
        .map(|f| fs::read_to_string(f).unwrap())
        .collect();
    assert!(store.contains("SELECT "));
}
