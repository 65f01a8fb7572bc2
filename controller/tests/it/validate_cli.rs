//! End-to-end tests of `mycopod validate` and `mycopod schema`: the real binary, run in temp
//! dirs, checked by exit code and output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn mycopod(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mycopod"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .canonicalize()
        .unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A temp copy of examples/plant whose first alert rule names a register that does not exist.
/// Returns the temp dir and the 1-based line and column of the dangling reference.
fn plant_with_dangling_register() -> (tempfile::TempDir, usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&examples().join("plant"), &dir.path().join("plant"));
    let alerts = dir.path().join("plant/alerts.yaml");
    let text = std::fs::read_to_string(&alerts).unwrap();
    let text = text.replacen("register: flow_rate", "register: flow_rat", 1);
    std::fs::write(&alerts, &text).unwrap();
    let (line, content) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains("flow_rat") && !l.contains("flow_rate"))
        .unwrap();
    (dir, line + 1, content.find("flow_rat").unwrap() + 1)
}

#[test]
fn validate_should_exit_0_on_the_plant_example() {
    let out = mycopod(&["validate", "examples/plant"], &examples().join(".."));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "no problems found\n");
}

#[test]
fn validate_should_default_to_the_current_folder() {
    let out = mycopod(&["validate"], &examples().join("homelab"));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn validate_should_exit_1_and_name_file_line_and_column_of_a_dangling_register() {
    let (dir, line, column) = plant_with_dangling_register();
    let out = mycopod(&["validate", "plant"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("--> plant/alerts.yaml:{line}:{column}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("error[unknown-reference]: unknown register \"flow_rat\" on ModbusDevice \"fm-101\", did you mean \"flow_rate\"?"),
        "{stdout}"
    );
    assert!(
        stdout.contains("register: flow_rat"),
        "code frame: {stdout}"
    );
    assert!(stdout.ends_with("1 error, 0 warnings\n"), "{stdout}");
}

#[test]
fn validate_json_should_print_a_stable_array_of_findings() {
    let (dir, line, column) = plant_with_dangling_register();
    let out = mycopod(&["validate", "plant", "--format", "json"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected = serde_json::json!([{
        "file": "plant/alerts.yaml",
        "line": line,
        "column": column,
        "path": "spec.register",
        "severity": "error",
        "code": "unknown-reference",
        "message": "unknown register \"flow_rat\" on ModbusDevice \"fm-101\", did you mean \"flow_rate\"?"
    }]);
    assert_eq!(value, expected);
    let keys: Vec<&str> = value[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 7);
}

#[test]
fn validate_github_should_print_workflow_commands() {
    let (dir, line, column) = plant_with_dangling_register();
    let out = mycopod(&["validate", "plant", "--format", "github"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout,
        format!(
            "::error file=plant/alerts.yaml,line={line},col={column},title=mycopod unknown-reference::unknown register \"flow_rat\" on ModbusDevice \"fm-101\", did you mean \"flow_rate\"? (at spec.register)\n"
        )
    );
}

#[test]
fn validate_should_exit_0_with_warnings_and_1_with_strict() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.yml"),
        "apiVersion: mycopod/v1\nkind: HandshakePolicy\nmetadata: {name: p}\nspec:\n  match: {verbs: [delete]}\n  approvals: 9\n",
    )
    .unwrap();
    // Hidden folders are skipped: this broken file must not count.
    std::fs::create_dir(dir.path().join(".git")).unwrap();
    std::fs::write(dir.path().join(".git/broken.yaml"), "kind: [").unwrap();
    let out = mycopod(&["validate", "."], dir.path());
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("warning[implausible-approvals]") && stdout.contains("--> policy.yml:6:14"),
        "{stdout}"
    );
    let out = mycopod(&["validate", ".", "--strict"], dir.path());
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn validate_should_exit_2_on_a_missing_path() {
    let dir = tempfile::tempdir().unwrap();
    let out = mycopod(&["validate", "no-such-folder"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such-folder"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn validate_should_exit_2_on_an_unknown_format() {
    let out = mycopod(&["validate", ".", "--format", "xml"], &examples());
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn schema_should_print_a_draft_2020_12_schema_covering_every_kind() {
    let dir = tempfile::tempdir().unwrap();
    let out = mycopod(&["schema"], dir.path());
    assert_eq!(out.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    let kinds = schema["properties"]["kind"]["enum"].as_array().unwrap();
    assert_eq!(kinds.len(), 7);
    assert_eq!(schema["allOf"].as_array().unwrap().len(), 7);
}

#[test]
fn validate_should_refuse_what_leads_out_of_the_folder_and_never_print_it() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, "token: SECRET-LINE-from-outside\n").unwrap();
    std::fs::create_dir(outside.path().join("dir")).unwrap();
    std::fs::write(
        outside.path().join("dir/site.yaml"),
        "SECRET-LINE-in-a-linked-folder: [\n",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&examples().join("plant"), &dir.path().join("repo"));
    let repo = dir.path().join("repo");
    std::os::unix::fs::symlink(&secret, repo.join("leak.yaml")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", repo.join("zero.yaml")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("dir"), repo.join("linked")).unwrap();
    let made = Command::new("mkfifo")
        .arg(repo.join("pipe.yaml"))
        .status()
        .unwrap();
    assert!(made.success());

    for format in ["human", "json", "github"] {
        let out = mycopod(&["validate", "repo", "--format", format], dir.path());
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{format}: {stdout}{stderr}");
        for name in ["leak.yaml", "zero.yaml", "linked", "pipe.yaml"] {
            assert!(
                stdout.contains(&format!("repo/{name}")),
                "{format}: {name} is named: {stdout}"
            );
        }
        assert_eq!(
            stdout.matches("not-read").count(),
            4,
            "{format}: one finding each: {stdout}"
        );
        assert!(
            !stdout.contains("SECRET") && !stderr.contains("SECRET"),
            "{format}: {stdout}{stderr}"
        );
    }
}

/// `validate` reads under the configured limits, as `serve` does: a file past
/// `MYCOPOD_LIMITS_FILE_BYTES` is a `limit-exceeded` finding naming it, and is not read.
#[test]
fn validate_should_refuse_a_file_past_the_configured_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&examples().join("plant"), &dir.path().join("plant"));
    let out = Command::new(env!("CARGO_BIN_EXE_mycopod"))
        .args(["validate", "plant", "--format", "json"])
        .current_dir(dir.path())
        .env("MYCOPOD_LIMITS_FILE_BYTES", "200")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let findings: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let findings = findings.as_array().unwrap();
    assert!(!findings.is_empty());
    for f in findings {
        assert_eq!(f["code"], "limit-exceeded", "{f}");
        assert!(
            f["message"].as_str().unwrap().contains("limits.file_bytes"),
            "{f}"
        );
    }
    let out = mycopod(&["validate", "plant"], dir.path());
    assert_eq!(out.status.code(), Some(0), "the default limits read it");
}
