//! The README's route tables list exactly the routes the proto declares
//! (plus the probes, metrics and the document), so the docs cannot drift.

use std::collections::BTreeSet;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// (method, path) of every README table row that starts with methods.
fn readme_routes() -> BTreeSet<(String, String)> {
    let readme = include_str!("../../README.md");
    let mut out = BTreeSet::new();
    for line in readme.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 3 {
            continue;
        }
        let methods: Vec<&str> = cells[1].split(", ").collect();
        if !methods.iter().all(|m| METHODS.contains(m)) {
            continue;
        }
        let path = cells[2].trim_matches('`');
        for m in methods {
            out.insert((m.to_owned(), path.to_owned()));
        }
    }
    out
}

#[test]
fn the_readme_lists_every_route_and_only_those() {
    let mut served: BTreeSet<(String, String)> = swrm::rest::OPERATIONS
        .iter()
        .map(|op| (op.method.to_owned(), op.path.to_owned()))
        .collect();
    for path in [
        "/healthz",
        "/readyz",
        "/livez",
        "/metrics",
        "/api/openapi.json",
    ] {
        served.insert(("GET".into(), path.into()));
    }
    let documented = readme_routes();
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "README lacks {missing:?}; README lists unknown {extra:?}"
    );
}
