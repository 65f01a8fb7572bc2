//! Random mutations of the example files (deleted, duplicated and swapped lines, flipped
//! characters, truncation) must never panic the loader, the validator or the renderers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use mycopod_specs::render::{Format, render};
use mycopod_specs::{DesiredState, load_str, validate};
use proptest::prelude::*;

fn example_files() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                out.push((
                    path.display().to_string(),
                    std::fs::read_to_string(&path).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    FlipChar(usize, char),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let chars = prop::sample::select(vec![
        ':', '-', ' ', '\t', '[', ']', '{', '}', '"', '\'', '#', '&', '*', '!', '|', '>', ',', '?',
        '%', '@', '`', '0', '9', 'x', '\n', 'é', '\u{feff}', '\0',
    ]);
    prop_oneof![
        any::<usize>().prop_map(Mutation::DeleteLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (any::<usize>(), chars).prop_map(|(i, c)| Mutation::FlipChar(i, c)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    let n = lines.len().max(1);
    match *m {
        Mutation::DeleteLine(i) => {
            if !lines.is_empty() {
                lines.remove(i % n);
            }
        }
        Mutation::DuplicateLine(i) => {
            if !lines.is_empty() {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
        }
        Mutation::SwapLines(a, b) => {
            if !lines.is_empty() {
                lines.swap(a % n, b % n);
            }
        }
        Mutation::FlipChar(i, c) => {
            let mut chars: Vec<char> = text.chars().collect();
            if !chars.is_empty() {
                let k = i % chars.len();
                chars[k] = c;
            }
            return chars.into_iter().collect();
        }
        Mutation::Truncate(i) => {
            let chars: Vec<char> = text.chars().collect();
            let k = i % (chars.len() + 1);
            return chars[..k].iter().collect();
        }
    }
    lines.join("\n")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_examples_should_never_panic_the_loader_or_validator(
        file in 0usize..64,
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let files = example_files();
        let (name, text) = &files[file % files.len()];
        let mut text = text.clone();
        for m in &mutations {
            text = apply(&text, m);
        }
        let loaded = load_str(name, &text);
        let diagnostics = validate(&loaded);
        for d in &diagnostics {
            // Positions stay inside the file (or are 0 for "no position").
            prop_assert!(d.line as usize <= text.split('\n').count() + 1, "{d:?}");
        }
        for format in [Format::Human, Format::Json, Format::Github] {
            let _ = render(format, &diagnostics, &loaded);
        }
        let _ = DesiredState::from_loaded(&loaded);
    }
}
