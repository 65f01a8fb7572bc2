//! Declarations written to hurt the loader: deep nests of long keys, huge mappings, many
//! documents, big files. Each must cost memory in proportion to its size, and every limit
//! crossed must be a `limit-exceeded` finding naming the file and line, never a crash. The
//! property test at the end feeds random bytes and random YAML shapes with small limits on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;

use mycopod_specs::{Code, Limits, Loaded, load_path_with, load_str, validate};
use proptest::prelude::*;

const ENVELOPE: &str = "apiVersion: mycopod/v1\nkind: Declaration\nmetadata: {name: hostile}\n";

fn with_limits(limits: Limits, file: &str, text: &str) -> Loaded {
    let mut loaded = Loaded::with_limits(limits);
    loaded.add_str(file, text.to_owned());
    loaded
}

fn codes(loaded: &Loaded) -> Vec<(Code, u32, String)> {
    validate(loaded)
        .into_iter()
        .map(|d| (d.code, d.line, d.message))
        .collect()
}

/// `levels` nested mappings with keys of `key_len` characters; the innermost holds `leaves`.
fn deep(levels: usize, key_len: usize, leaves: usize) -> String {
    let mut text = String::from(ENVELOPE);
    text.push_str("spec:\n  text: hi\n  kinds: [Guest]\n  extra: ");
    for level in 0..levels {
        let c = char::from(b'a' + (level % 26) as u8);
        let key: String = std::iter::repeat_n(c, key_len).collect();
        let _ = write!(text, "{{{key}: ");
    }
    text.push('{');
    for leaf in 0..leaves {
        if leaf > 0 {
            text.push_str(", ");
        }
        let _ = write!(text, "l{leaf}: {leaf}");
    }
    text.push('}');
    text.push_str(&"}".repeat(levels));
    text.push('\n');
    text
}

#[test]
fn deep_nests_of_long_keys_should_cost_memory_in_proportion_to_the_file() {
    // Every leaf's path is ~50 x 500 characters: kept whole per node, the map would hold
    // 2,000 x 25,000 bytes = 50 MB for this 30 KB file.
    let text = deep(50, 500, 2_000);
    let loaded = load_str("deep.yaml", &text);
    let doc = &loaded.documents[0];
    let bytes = doc.source.map.heap_bytes();
    assert!(
        bytes < 64 * text.len(),
        "the map holds {bytes} bytes for a {}-byte file",
        text.len()
    );
    // Paths are still whole on demand: the deepest leaf is found by its path.
    let mut path = String::from("spec.extra");
    for level in 0..50 {
        let c = char::from(b'a' + (level % 26) as u8);
        path.push('.');
        path.extend(std::iter::repeat_n(c, 500));
    }
    path.push_str(".l1999");
    let pos = doc
        .source
        .map
        .value(&path)
        .expect("the deepest leaf is mapped");
    assert_eq!(pos.line, 7);
    assert_eq!(doc.source.map.path_at(pos), path);
    // And the finding about it is the unknown field, at its line.
    let found = codes(&loaded);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].0, found[0].1), (Code::UnknownField, 7));
}

#[test]
fn a_huge_mapping_should_be_checked_for_duplicates_in_one_pass() {
    // 100,000 keys, the last repeating the first: found at its line (a quadratic check took
    // ~12 s on this size; this one is linear).
    let mut text = String::from(ENVELOPE);
    text.push_str("spec:\n  text: hi\n  extra:\n");
    for key in 0..100_000 {
        let _ = writeln!(text, "    k{key:06}: 1");
    }
    text.push_str("    k000000: 2\n");
    let limits = Limits {
        file_bytes: 4 * 1024 * 1024,
        keys_per_mapping: 200_000,
        ..Limits::default()
    };
    let loaded = with_limits(limits, "wide.yaml", &text);
    let found = codes(&loaded);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, Code::DuplicateKey);
    assert_eq!(found[0].1, 100_007);
    assert!(found[0].2.contains("k000000"), "{}", found[0].2);
}

#[test]
fn duplicate_findings_should_stop_at_twenty_and_count_the_rest() {
    let mut text = String::from(ENVELOPE);
    text.push_str("spec:\n  text: hi\n");
    for _ in 0..50 {
        text.push_str("  text: again\n");
    }
    let found = codes(&load_str("dups.yaml", &text));
    assert_eq!(found.len(), 21, "{found:?}");
    assert!(found[..20].iter().all(|f| f.0 == Code::DuplicateKey));
    assert!(
        found[20].2.contains("30 more duplicate keys"),
        "{}",
        found[20].2
    );
}

#[test]
fn a_file_past_the_size_limit_should_be_listed_and_not_parsed() {
    let text = format!("{ENVELOPE}spec: {{text: hi}}\n# {}\n", "x".repeat(2_000));
    let limits = Limits {
        file_bytes: 1_000,
        ..Limits::default()
    };
    let loaded = with_limits(limits, "big.yaml", &text);
    assert!(loaded.documents.is_empty(), "nothing parsed");
    assert_eq!(loaded.files.len(), 1, "the file is still listed");
    assert!(loaded.files[0].text.is_empty(), "its text is not kept");
    let found = codes(&loaded);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].0, found[0].1), (Code::LimitExceeded, 1));
    assert!(found[0].2.contains("limits.file_bytes"), "{}", found[0].2);
    assert!(
        found[0].2.contains(&text.len().to_string()),
        "{}",
        found[0].2
    );
}

#[test]
fn a_folder_past_the_total_limit_should_read_files_in_order_until_it() {
    let dir = tempfile::tempdir().unwrap();
    let doc = |name: &str| {
        format!(
            "apiVersion: mycopod/v1\nkind: Declaration\nmetadata: {{name: {name}}}\nspec: {{text: hi, kinds: [Guest]}}\n"
        )
    };
    for name in ["a", "b", "c"] {
        std::fs::write(dir.path().join(format!("{name}.yaml")), doc(name)).unwrap();
    }
    let one = doc("a").len() as u64;
    let limits = Limits {
        total_bytes: 2 * one,
        ..Limits::default()
    };
    let loaded = load_path_with(dir.path(), limits).unwrap();
    let names: Vec<&str> = loaded
        .documents
        .iter()
        .filter_map(|d| d.name.as_deref())
        .collect();
    assert_eq!(names, ["a", "b"]);
    let found: Vec<_> = loaded
        .diagnostics
        .iter()
        .map(|d| {
            (
                d.code,
                d.file.rsplit('/').next().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(found, [(Code::LimitExceeded, "c.yaml".to_owned())]);
    assert!(loaded.diagnostics[0].message.contains("limits.total_bytes"));
}

#[test]
fn a_file_past_the_document_limit_should_stop_at_the_first_extra_document() {
    let mut text = String::new();
    for i in 0..5 {
        let _ = write!(
            text,
            "---\napiVersion: mycopod/v1\nkind: Declaration\nmetadata: {{name: d{i}}}\nspec: {{text: hi, kinds: [Guest]}}\n"
        );
    }
    let limits = Limits {
        documents_per_file: 3,
        ..Limits::default()
    };
    let loaded = with_limits(limits, "many.yaml", &text);
    assert_eq!(loaded.documents.len(), 3);
    let found: Vec<_> = loaded
        .diagnostics
        .iter()
        .map(|d| (d.code, d.line, d.message.clone()))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    // The fourth document starts on line 16.
    assert_eq!((found[0].0, found[0].1), (Code::LimitExceeded, 16));
    assert!(
        found[0].2.contains("limits.documents_per_file"),
        "{}",
        found[0].2
    );
}

#[test]
fn a_mapping_past_the_key_limit_should_be_a_finding_at_the_first_extra_key() {
    let mut text = String::from(ENVELOPE);
    text.push_str("spec:\n  text: hi\n  extra:\n");
    for key in 0..10 {
        let _ = writeln!(text, "    k{key}: 1");
    }
    let limits = Limits {
        keys_per_mapping: 4,
        ..Limits::default()
    };
    let found = codes(&with_limits(limits, "keys.yaml", &text));
    assert_eq!(found.len(), 1, "{found:?}");
    // The mapping starts on line 7 with k0; k4, the fifth key, is on line 11.
    assert_eq!((found[0].0, found[0].1), (Code::LimitExceeded, 11));
    assert!(found[0].2.contains("line 7"), "{}", found[0].2);
    assert!(
        found[0].2.contains("limits.keys_per_mapping"),
        "{}",
        found[0].2
    );
}

/// A random YAML node: scalars (some with long keys), nested mappings and sequences, anchors
/// and aliases, duplicate keys.
fn yaml_node() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        "[a-z0-9]{0,12}",
        Just("null".to_owned()),
        Just("\"quoted: text\"".to_owned()),
        Just("*anchor".to_owned()),
        Just("&anchor 7".to_owned()),
        "[a-z]{200,400}",
    ];
    leaf.prop_recursive(6, 200, 12, |inner| {
        prop_oneof![
            prop::collection::vec(("[a-z]{1,3}|[a-z]{300}", inner.clone()), 0..12).prop_map(
                |entries| {
                    let body: Vec<String> = entries
                        .into_iter()
                        .map(|(k, v)| format!("{k}: {v}"))
                        .collect();
                    format!("{{{}}}", body.join(", "))
                }
            ),
            prop::collection::vec(inner, 0..12).prop_map(|items| format!("[{}]", items.join(", "))),
        ]
    })
}

/// Small limits, so random input crosses them.
const SMALL: Limits = Limits {
    file_bytes: 64 * 1024,
    total_bytes: 128 * 1024,
    documents_per_file: 4,
    keys_per_mapping: 8,
};

fn check_bounded(text: &str) -> Result<(), TestCaseError> {
    let loaded = with_limits(SMALL, "random.yaml", text);
    for doc in &loaded.documents {
        let bytes = doc.source.map.heap_bytes();
        prop_assert!(
            bytes <= 64 * text.len() + 4096,
            "map of {bytes} bytes for {} bytes of input",
            text.len()
        );
    }
    let diagnostics = validate(&loaded);
    if text.len() as u64 > SMALL.file_bytes {
        prop_assert!(diagnostics.iter().any(|d| d.code == Code::LimitExceeded));
        prop_assert!(loaded.documents.is_empty());
    }
    prop_assert!(loaded.documents.len() <= SMALL.documents_per_file as usize);
    for format in [
        mycopod_specs::render::Format::Human,
        mycopod_specs::render::Format::Json,
        mycopod_specs::render::Format::Github,
    ] {
        let _ = mycopod_specs::render::render(format, &diagnostics, &loaded);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_should_never_panic_or_grow_past_the_limits(
        bytes in prop::collection::vec(any::<u8>(), 0..4096),
    ) {
        check_bounded(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn random_yaml_shapes_should_never_panic_or_grow_past_the_limits(
        docs in prop::collection::vec(yaml_node(), 1..8),
        repeat in 1usize..40,
    ) {
        let mut text = String::new();
        for (i, node) in docs.iter().enumerate() {
            let _ = write!(
                text,
                "---\napiVersion: mycopod/v1\nkind: Declaration\nmetadata: {{name: d{i}}}\nspec: {}\n",
                node
            );
        }
        // Repeating the stream pushes some inputs past the file limit.
        check_bounded(&text.repeat(repeat))?;
    }
}
