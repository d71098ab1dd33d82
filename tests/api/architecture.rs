//! The import graph of `src/` follows ARCHITECTURE.md: `app` composes; below it `api → engine →
//! {providers, jobs} → domain` (and `api → export → domain`), with `config` and `metrics` as leaves and the sandbox apart. Read from
//! the source as text: every `crate::module` path a file names, its `#[cfg(test)]` parts included.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// What each top-level module may import of ours. `app` and the binary compose everything.
fn allowed(module: &str) -> Option<&'static [&'static str]> {
    Some(match module {
        "app" | "main" | "lib" => return None,
        "domain" | "sync" | "metrics" | "deadline" | "proto" | "redis_link" => &[],
        "clock" => &["sync"],
        "config" => &["domain"],
        "telemetry" => &["config"],
        "providers" => &[
            "clock",
            "config",
            "deadline",
            "domain",
            "metrics",
            "redis_link",
            "sync",
            "telemetry",
        ],
        "jobs" => &["clock", "domain", "redis_link", "sync"],
        "engine" => &[
            "clock",
            "config",
            "deadline",
            "domain",
            "jobs",
            "metrics",
            "providers",
            "redis_link",
            "sync",
        ],
        // Caller identity: TLS, tokens and grants, read from the configuration.
        "auth" => &["config", "sync"],
        "api" => &[
            "auth", "deadline", "domain", "engine", "export", "jobs", "metrics", "proto", "sync",
        ],
        // The FOCUS file writers see only records.
        "export" => &["domain"],
        "sandbox" => &["sync"],
        // Between the network and the services: it builds its refusals in the api's status.rs.
        "server" => &["api", "metrics", "sync"],
        // The CLI is a gRPC client; it shares the api's wire conversions of domain values, and the
        // name of the token variable the server leaves alone.
        "cli" => &["api", "config", "domain", "proto"],
        "demo" => &["config", "domain", "sandbox"],
        _ => &[],
    })
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The top-level modules `text` names through `crate::`.
fn imports(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::{c, d}, e}`: the names at depth zero.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.insert(first_name(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            found.insert(first_name(&item));
        } else {
            found.insert(first_name(rest));
        }
    }
    found.remove("");
    found
}

fn first_name(path: &str) -> String {
    path.trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

#[test]
fn every_import_runs_the_way_the_architecture_says() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 50, "read the whole tree: {}", files.len());
    let mut wrong: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut edges = 0;
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let module = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .expect("a name")
            .trim_end_matches(".rs")
            .to_string();
        let Some(allowed) = allowed(&module) else {
            continue;
        };
        let text = std::fs::read_to_string(file).expect("readable");
        for imported in imports(&text) {
            if imported == module || imported == "self" {
                continue;
            }
            edges += 1;
            if !allowed.contains(&imported.as_str()) {
                wrong
                    .entry(format!("{module} → {imported}"))
                    .or_default()
                    .push(relative.display().to_string());
            }
        }
    }
    assert!(edges > 20, "imports were found: {edges}");
    assert!(
        wrong.is_empty(),
        "imports against the architecture: {wrong:#?}"
    );
}

#[test]
fn the_import_reader_sees_grouped_and_nested_paths() {
    let text = "use crate::{\n    config::{A, B},\n    domain::C, // crate::commented\n    jobs,\n};\nlet x = crate::engine::f();";
    assert_eq!(
        imports(text),
        ["config", "domain", "engine", "jobs"]
            .map(String::from)
            .into()
    );
}
