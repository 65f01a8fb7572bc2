//! Tidy tests: structural rules of the workspace, checked by reading the source tree (as
//! rust-analyzer does). Each rule names what it protects; a failure lists every offending
//! `file:line`. Comment lines are not checked, so docs may name what a module must not do.

use std::path::{Path, PathBuf};

/// The workspace root (this crate lives in `tests/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Every `.rs` file under `dir` (relative to the root), sorted.
fn rust_files(dir: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join(dir), &mut out);
    out.sort();
    assert!(
        !out.is_empty(),
        "no Rust files under {dir}: the tidy test looks in the wrong place"
    );
    out
}

/// `file:line: text` for each code line of `text` (comments skipped) containing a pattern.
fn violations(file: &str, text: &str, patterns: &[&str]) -> Vec<String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
        .filter(|(_, line)| patterns.iter().any(|p| line.contains(p)))
        .map(|(n, line)| format!("{file}:{}: {}", n + 1, line.trim()))
        .collect()
}

/// Checks every file of `files` against `patterns`, naming the rule on failure.
fn check(rule: &str, files: &[PathBuf], patterns: &[&str]) {
    let root = root();
    let mut found = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let shown = path
            .strip_prefix(&root)
            .unwrap_or(path)
            .display()
            .to_string();
        found.extend(violations(&shown, &text, patterns));
    }
    assert!(found.is_empty(), "{rule}:\n{}", found.join("\n"));
}

fn files_of(dirs: &[&str]) -> Vec<PathBuf> {
    dirs.iter().flat_map(|d| rust_files(d)).collect()
}

/// The pure layers: the planner, the policies, the reconcile decisions and the alert state
/// machine.
fn pure_files() -> Vec<PathBuf> {
    let mut files = rust_files("controller/src/plan");
    files.push(root().join("controller/src/policy.rs"));
    files.push(root().join("controller/src/telemetry/alerts.rs"));
    files.push(root().join("controller/src/reconcile/decide.rs"));
    files.push(root().join("controller/src/reconcile/deep_reads.rs"));
    files.push(root().join("controller/src/reconcile/status.rs"));
    files
}

#[test]
fn the_planner_policies_and_alert_rules_should_read_no_clock_randomness_or_environment() {
    check(
        "the plan, policy and alert-evaluation code is pure: `now` is a parameter",
        &pure_files(),
        &[
            "Utc::now",
            "Local::now",
            "Instant::now",
            "SystemTime",
            "rand::",
            "std::env",
            "tokio::",
        ],
    );
}

#[test]
fn the_plan_layer_should_import_no_client_and_no_store() {
    check(
        "the planner never sees a client, a socket or the database",
        &rust_files("controller/src/plan"),
        &[
            "reqwest",
            "tokio_modbus",
            "sqlx",
            "ProxmoxClient",
            "ModbusClient",
            "modbus::client",
            "proxmox::client",
            "crate::store",
            "crate::reconcile",
        ],
    );
}

#[test]
fn specs_should_use_no_network_clock_database_or_environment() {
    check(
        "specs reads only the files it is asked to load",
        &rust_files("specs/src"),
        &[
            "Utc::now",
            "Instant::now",
            "SystemTime",
            "std::env",
            "std::net",
            "tokio",
            "reqwest",
            "sqlx",
        ],
    );
}

#[test]
fn adapters_should_not_know_the_spec_types() {
    check(
        "adapters translate and transport; turning specs into their terms is the planner's",
        &files_of(&["adapters/src", "adapters/tests", "adapters/benches"]),
        &["mycopod_specs"],
    );
}

#[test]
fn sqlx_should_appear_only_in_the_store() {
    check(
        "SQL lives in the mycopod-store crate (store/src); everything else calls the Store",
        &files_of(&["adapters/src", "specs/src", "controller/src"]),
        &["sqlx"],
    );
}

#[test]
fn the_store_should_know_nothing_of_specs_adapters_or_the_controller() {
    check(
        "mycopod-store is the bottom of its stack: specs, adapters and the loop sit above it",
        &rust_files("store/src"),
        &["mycopod_specs", "mycopod_adapters", "mycopod::"],
    );
}

#[test]
fn api_routes_should_be_registered_only_through_openapi_registrations() {
    // `routes!` registers a handler in the router and in /openapi.json at once; a plain
    // `.route(` would serve a path the document (and the role-table test) never sees.
    check(
        "every API route goes through utoipa_axum's routes!",
        &rust_files("controller/src/api"),
        &[".route("],
    );
}

#[test]
fn every_source_file_should_start_with_a_module_doc() {
    let root = root();
    let missing: Vec<String> = files_of(&[
        "adapters/src",
        "specs/src",
        "store/src",
        "controller/src",
        "tests/src",
    ])
    .into_iter()
    .filter(|p| {
        std::fs::read_to_string(p)
            .map(|t| !t.trim_start().starts_with("//!"))
            .unwrap_or(true)
    })
    .map(|p| p.strip_prefix(&root).unwrap_or(&p).display().to_string())
    .collect();
    assert!(
        missing.is_empty(),
        "files without a //! line saying what the module does:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_checker_should_find_a_clock_in_code_and_ignore_it_in_comments() {
    // The rules above are only as good as this matcher: show it catches what they forbid.
    let planted = "//! no `Utc::now()` here\nfn f() {\n    let t = chrono::Utc::now();\n}\n";
    assert_eq!(
        violations("plan/x.rs", planted, &["Utc::now"]),
        ["plan/x.rs:3: let t = chrono::Utc::now();"]
    );
    assert!(violations("plan/x.rs", "// Utc::now\n", &["Utc::now"]).is_empty());
}
