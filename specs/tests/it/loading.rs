//! Loading from disk and from text: file discovery, multi-document files, recovery after a
//! syntax error, positions handed to later steps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mycopod_specs::{Code, check, load_path, load_str, validate};

const DECL: &str =
    "apiVersion: mycopod/v1\nkind: Declaration\nmetadata: {name: NAME}\nspec: {text: hi}\n";

fn decl(name: &str) -> String {
    DECL.replace("NAME", name)
}

#[test]
fn load_path_should_read_yaml_and_yml_recursively_and_skip_hidden_entries() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    std::fs::create_dir_all(root.join(".hidden")).unwrap();
    std::fs::write(root.join("one.yaml"), decl("one")).unwrap();
    std::fs::write(root.join("a/b/two.yml"), decl("two")).unwrap();
    std::fs::write(root.join("a/notes.txt"), "kind: [").unwrap();
    std::fs::write(root.join(".hidden/three.yaml"), "kind: [").unwrap();
    std::fs::write(root.join(".dot.yaml"), "kind: [").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(root, root.join("a/loop")).unwrap();
    let loaded = load_path(root).unwrap();
    let names: Vec<&str> = loaded
        .documents
        .iter()
        .map(|d| d.name.as_deref().unwrap())
        .collect();
    assert_eq!(names, ["two", "one"]);
    assert!(validate(&loaded).is_empty());
    assert!(loaded.files[0].name.ends_with("a/b/two.yml"));
}

#[test]
fn load_path_should_fail_on_a_missing_path_and_report_non_utf8_files() {
    let dir = tempfile::tempdir().unwrap();
    assert!(load_path(&dir.path().join("missing")).is_err());
    std::fs::write(dir.path().join("bad.yaml"), [0xff, 0xfe, 0x00]).unwrap();
    let loaded = load_path(dir.path()).unwrap();
    let d = validate(&loaded);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].code, Code::YamlSyntax);
    assert!(d[0].message.contains("UTF-8"), "{}", d[0].message);
}

#[test]
fn a_syntax_error_should_lose_only_its_own_document() {
    let text = format!("{}---\nkind: [\n---\n{}", decl("first"), decl("third"));
    let loaded = load_str("multi.yaml", &text);
    let names: Vec<&str> = loaded
        .documents
        .iter()
        .map(|d| d.name.as_deref().unwrap())
        .collect();
    assert_eq!(names, ["first", "third"]);
    let d = validate(&loaded);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!((d[0].code, d[0].line), (Code::YamlSyntax, 6));
    // The third document's positions are those of the file, not of the document.
    let third = &loaded.documents[1].source;
    assert_eq!(third.locate("metadata.name").line, 10);
}

#[test]
fn every_finding_of_a_file_should_be_collected_not_just_the_first() {
    let text = format!(
        "{}---\n{}---\n{}",
        decl("a").replace("text: hi", "txet: hi"),
        decl("b").replace("mycopod/v1", "mycopod/v9"),
        decl("c").replace("{text: hi}", "{text: \"\"}")
    );
    let loaded = load_str("many.yaml", &text);
    let codes: Vec<Code> = validate(&loaded).iter().map(|d| d.code).collect();
    assert_eq!(
        codes,
        [
            Code::UnknownField,
            Code::UnknownApiVersion,
            Code::EmptyDeclaration
        ]
    );
}

#[test]
fn desired_state_should_keep_positions_for_later_findings() {
    let text = "apiVersion: mycopod/v1\nkind: ModbusDevice\nmetadata: {name: fm-1}\nspec:\n  connection: {tcp: {host: 10.0.0.21}}\n  registers:\n    - {name: a, table: holding, address: 0, type: u16}\n    - name: b\n      table: holding\n      address: 7\n      type: f32\n";
    let loaded = load_str("dev.yaml", text);
    let checked = check(&loaded).unwrap();
    let dev = checked.desired.device("fm-1").unwrap();
    assert_eq!(dev.spec.max_gap, 16);
    assert_eq!(dev.spec.offline_after, 3);
    let d = dev.source.diagnostic(
        "spec.registers[1].address",
        mycopod_specs::Severity::Error,
        Code::UnknownReference,
        "planner finding",
    );
    assert_eq!((d.file.as_str(), d.line, d.column), ("dev.yaml", 10, 16));
}

#[test]
fn deeply_nested_input_should_be_a_finding_not_a_stack_overflow() {
    // Regression guard: the tree and its drop are recursive; the parser's depth limit keeps
    // them shallow.
    let n = 100_000;
    let text = format!(
        "apiVersion: mycopod/v1\nkind: Declaration\nmetadata: {{name: a}}\nspec: {{text: hi, kinds: {}{}}}\n",
        "[".repeat(n),
        "]".repeat(n)
    );
    let loaded = load_str("deep.yaml", &text);
    let d = validate(&loaded);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].code, Code::YamlSyntax);
}
