//! Where things are written: 1-based positions, the per-document `SourceMap` from field paths
//! (`spec.registers[2].address`) to the positions of their keys and values, and `Source`, the
//! handle every loaded document carries so that any later step (validation, the planner) can
//! point a diagnostic at the exact field. Builds the map from the YAML event stream; no I/O.

use std::fmt::Write as _;
use std::sync::Arc;

use serde_saphyr::granit_parser::{Event, Span};

use crate::diagnostic::{Code, Diagnostic, Severity};

/// A 1-based line and column (in characters) in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    /// 1-based line; 0 when unknown.
    pub line: u32,
    /// 1-based column in characters; 0 when unknown.
    pub column: u32,
}

impl Position {
    pub(crate) fn from_span(span: &Span, line_offset: u32) -> Self {
        Self {
            line: u32::try_from(span.start.line())
                .unwrap_or(u32::MAX)
                .saturating_add(line_offset),
            column: u32::try_from(span.start.col())
                .unwrap_or(u32::MAX)
                .saturating_add(1),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    path_start: u32,
    path_end: u32,
    key: Option<Position>,
    value: Position,
}

/// Positions of every node of one document, by field path.
///
/// Paths join mapping keys with `.` and sequence indexes with `[i]`; keys that are not plain
/// words (letters, digits, `_`, `-`) are quoted: `metadata.labels["app.kubernetes.io/name"]`.
/// The document root has the empty path.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    paths: String,
    entries: Vec<Entry>,
}

impl SourceMap {
    fn path(&self, e: &Entry) -> &str {
        self.paths
            .get(e.path_start as usize..e.path_end as usize)
            .unwrap_or("")
    }

    fn find(&self, path: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| self.path(e) == path)
    }

    /// Position of the value at `path`.
    pub fn value(&self, path: &str) -> Option<Position> {
        self.find(path).map(|e| e.value)
    }

    /// Position of the key of the mapping entry at `path` (`None` for sequence items and
    /// the root).
    pub fn key(&self, path: &str) -> Option<Position> {
        self.find(path).and_then(|e| e.key)
    }

    /// Best position for a finding about `path`: its value, else the value of the nearest
    /// ancestor that exists (a missing optional field points at its parent), else the root.
    pub fn locate(&self, path: &str) -> Position {
        let mut p = path;
        loop {
            if let Some(pos) = self.value(p) {
                return pos;
            }
            if p.is_empty() {
                return Position::default();
            }
            p = parent_path(p);
        }
    }

    /// The path of the node whose key or value starts at `pos`, else of the last node that
    /// starts before it.
    pub fn path_at(&self, pos: Position) -> &str {
        if let Some(e) = self.entries.iter().find(|e| e.key == Some(pos)) {
            return self.path(e);
        }
        if let Some(e) = self.entries.iter().rev().find(|e| e.value == pos) {
            return self.path(e);
        }
        self.entries
            .iter()
            .rev()
            .find(|e| e.key.unwrap_or(e.value) <= pos)
            .map(|e| self.path(e))
            .unwrap_or("")
    }

    /// Every path of the document with the position of its value, in document order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Position)> {
        self.entries.iter().map(|e| (self.path(e), e.value))
    }
}

/// The parent of a path: `a.b[2]` -> `a.b`, `a.b` -> `a`, `a` -> ``.
pub fn parent_path(path: &str) -> &str {
    if path.ends_with(']') {
        // `[i]` or `["key"]`: cut at the last `[` that opens the final segment.
        if let Some(i) = path.rfind("[\"").filter(|_| path.ends_with("\"]")) {
            return &path[..i];
        }
        if let Some(i) = path.rfind('[') {
            return &path[..i];
        }
    }
    match path.rfind('.') {
        Some(i) => &path[..i],
        None => "",
    }
}

/// Appends the key segment for `key` to `path`.
pub fn push_key(path: &mut String, key: &str) {
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
    } else {
        path.push_str("[\"");
        for c in key.chars() {
            if c == '"' || c == '\\' {
                path.push('\\');
            }
            path.push(c);
        }
        path.push_str("\"]");
    }
}

/// Appends the index segment `[i]` to `path`.
pub fn push_index(path: &mut String, index: usize) {
    let _ = write!(path, "[{index}]");
}

/// Where a document was written: file, start of the document, and the positions of all its
/// fields. Cheap to clone; carried by every resource of the desired state.
#[derive(Debug, Clone)]
pub struct Source {
    /// File name as shown in diagnostics.
    pub file: Arc<str>,
    /// Index of the document within its file, from 0.
    pub index: u32,
    /// Position of the document start.
    pub start: Position,
    /// Field positions.
    pub map: Arc<SourceMap>,
}

impl Source {
    /// Best position for a finding about `path` (see [`SourceMap::locate`]).
    pub fn locate(&self, path: &str) -> Position {
        let p = self.map.locate(path);
        if p.line == 0 { self.start } else { p }
    }

    /// A diagnostic pointing at the value of `path`.
    pub fn diagnostic(
        &self,
        path: &str,
        severity: Severity,
        code: Code,
        message: impl Into<String>,
    ) -> Diagnostic {
        let pos = self.locate(path);
        self.diagnostic_at(pos, path, severity, code, message)
    }

    /// A diagnostic pointing at the key of `path` (for findings about the field itself, such
    /// as an unknown or misplaced field), falling back to its value.
    pub fn diagnostic_at_key(
        &self,
        path: &str,
        severity: Severity,
        code: Code,
        message: impl Into<String>,
    ) -> Diagnostic {
        let pos = self.map.key(path).unwrap_or_else(|| self.locate(path));
        self.diagnostic_at(pos, path, severity, code, message)
    }

    pub(crate) fn diagnostic_at(
        &self,
        pos: Position,
        path: &str,
        severity: Severity,
        code: Code,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            file: self.file.to_string(),
            line: pos.line,
            column: pos.column,
            path: path.to_owned(),
            severity,
            code,
            message: message.into(),
        }
    }
}

enum Frame {
    Map {
        base: usize,
        expecting_key: bool,
        key: Option<Position>,
    },
    Seq {
        base: usize,
        next: usize,
    },
    /// A complex (non-scalar) mapping key: ignored up to its end.
    Ignore {
        depth: usize,
    },
}

/// Scalars of the envelope, captured while building the map so that a document that fails to
/// deserialize can still be named and counted.
#[derive(Debug, Default, Clone)]
pub(crate) struct EnvelopeScalars {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub root_is_map: bool,
}

/// Builds a [`SourceMap`] from the node events of one document.
pub(crate) struct MapBuilder {
    map: SourceMap,
    path: String,
    frames: Vec<Frame>,
    line_offset: u32,
    pub envelope: EnvelopeScalars,
    seen_root: bool,
}

impl MapBuilder {
    pub fn new(line_offset: u32) -> Self {
        Self {
            map: SourceMap::default(),
            path: String::new(),
            frames: Vec::new(),
            line_offset,
            envelope: EnvelopeScalars::default(),
            seen_root: false,
        }
    }

    /// Whether the document had a root node.
    pub fn has_root(&self) -> bool {
        self.seen_root
    }

    pub fn finish(self) -> (SourceMap, EnvelopeScalars) {
        (self.map, self.envelope)
    }

    fn record(&mut self, key: Option<Position>, value: Position) {
        let start = u32::try_from(self.map.paths.len()).unwrap_or(u32::MAX);
        self.map.paths.push_str(&self.path);
        let end = u32::try_from(self.map.paths.len()).unwrap_or(u32::MAX);
        self.map.entries.push(Entry {
            path_start: start,
            path_end: end,
            key,
            value,
        });
    }

    /// Marks the value slot of the parent as filled.
    fn value_done(&mut self) {
        if let Some(Frame::Map { expecting_key, .. }) = self.frames.last_mut() {
            *expecting_key = true;
        }
    }

    pub fn event(&mut self, event: &Event<'_>, span: &Span) {
        let is_start = matches!(event, Event::MappingStart(..) | Event::SequenceStart(..));
        let is_end = matches!(event, Event::MappingEnd | Event::SequenceEnd);
        let is_node = is_start
            || matches!(
                event,
                Event::Scalar(..) | Event::Alias(..) | Event::UnresolvedAlias(..)
            );
        if let Some(Frame::Ignore { depth }) = self.frames.last_mut() {
            if is_start {
                *depth += 1;
            } else if is_end {
                *depth -= 1;
                if *depth == 0 {
                    self.frames.pop();
                    // The complex key is done; its value follows under a placeholder key.
                    if let Some(Frame::Map {
                        base,
                        expecting_key,
                        key,
                    }) = self.frames.last_mut()
                    {
                        let base = *base;
                        *expecting_key = false;
                        *key = None;
                        self.path.truncate(base);
                        push_key(&mut self.path, "?");
                    }
                }
            }
            return;
        }
        if is_end {
            self.frames.pop();
            self.value_done();
            return;
        }
        if !is_node {
            return;
        }
        let pos = Position::from_span(span, self.line_offset);
        // Mapping key?
        if let Some(Frame::Map {
            base,
            expecting_key: expecting @ true,
            key,
        }) = self.frames.last_mut()
        {
            let base = *base;
            if let Event::Scalar(text, ..) = event {
                *expecting = false;
                *key = Some(pos);
                self.path.truncate(base);
                push_key(&mut self.path, text);
            } else if is_start {
                self.frames.push(Frame::Ignore { depth: 1 });
            } else {
                *expecting = false;
                *key = Some(pos);
                self.path.truncate(base);
                push_key(&mut self.path, "*");
            }
            return;
        }
        // A value.
        let key = match self.frames.last_mut() {
            Some(Frame::Map { key, .. }) => key.take(),
            Some(Frame::Seq { base, next }) => {
                let (base, index) = (*base, *next);
                *next += 1;
                self.path.truncate(base);
                push_index(&mut self.path, index);
                None
            }
            Some(Frame::Ignore { .. }) => None,
            None => {
                self.seen_root = true;
                self.envelope.root_is_map = matches!(event, Event::MappingStart(..));
                None
            }
        };
        self.record(key, pos);
        if let Event::Scalar(text, ..) = event {
            let slot = match self.path.as_str() {
                "apiVersion" => Some(&mut self.envelope.api_version),
                "kind" => Some(&mut self.envelope.kind),
                "metadata.name" => Some(&mut self.envelope.name),
                _ => None,
            };
            if let Some(slot) = slot {
                *slot = Some(text.to_string());
            }
        }
        let base = self.path.len();
        match event {
            Event::MappingStart(..) => self.frames.push(Frame::Map {
                base,
                expecting_key: true,
                key: None,
            }),
            Event::SequenceStart(..) => self.frames.push(Frame::Seq { base, next: 0 }),
            _ => self.value_done(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_saphyr::granit_parser::Parser;

    fn map_of(text: &str) -> SourceMap {
        let mut b = MapBuilder::new(0);
        for ev in Parser::new_from_str(text) {
            let (ev, span) = ev.unwrap();
            b.event(&ev, &span);
        }
        b.finish().0
    }

    #[test]
    fn source_map_should_give_line_and_column_of_nested_fields() {
        let m = map_of(
            "spec:\n  registers:\n    - {name: a, address: 0}\n    - name: b\n      address: 7\n  labels: {app.io/x: y}\n",
        );
        let rendered: Vec<String> = m
            .iter()
            .map(|(p, pos)| format!("{p} {}:{}", pos.line, pos.column))
            .collect();
        expect_test::expect![[r#"
            [
                " 1:1",
                "spec 2:3",
                "spec.registers 3:5",
                "spec.registers[0] 3:7",
                "spec.registers[0].name 3:14",
                "spec.registers[0].address 3:26",
                "spec.registers[1] 4:7",
                "spec.registers[1].name 4:13",
                "spec.registers[1].address 5:16",
                "spec.labels 6:11",
                "spec.labels[\"app.io/x\"] 6:22",
            ]
        "#]]
        .assert_debug_eq(&rendered);
        assert_eq!(
            m.key("spec.registers[1].address"),
            Some(Position { line: 5, column: 7 })
        );
        assert_eq!(
            m.locate("spec.registers[1].missing"),
            Position { line: 4, column: 7 }
        );
        assert_eq!(
            m.path_at(Position { line: 5, column: 7 }),
            "spec.registers[1].address"
        );
    }

    #[test]
    fn parent_path_should_strip_one_segment() {
        assert_eq!(parent_path("a.b[2]"), "a.b");
        assert_eq!(parent_path("a.b"), "a");
        assert_eq!(parent_path("a"), "");
        assert_eq!(parent_path("a[\"x.y\"]"), "a");
    }
}
