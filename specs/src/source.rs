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

/// One node of a document: its own path segment, its parent, and where its key and value start.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The parent entry; [`NO_PARENT`] for the document root.
    parent: u32,
    /// The entry's own segment in [`SourceMap::segments`]: `spec`, `.name`, `[3]`, `["a.b"]`.
    seg_start: u32,
    seg_end: u32,
    /// [`chain`] of the parent's hash and this segment: the hash of the whole path.
    hash: u64,
    key: Option<Position>,
    value: Position,
}

const NO_PARENT: u32 = u32::MAX;

/// The hash of a path one segment longer than the path whose hash is `parent`. The hash of
/// the empty path (the root) is `chain(0, "")`.
fn chain(parent: u64, segment: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parent.hash(&mut h);
    segment.hash(&mut h);
    h.finish()
}

/// The segments of a path as [`push_key`] and [`push_index`] write them, delimiters included:
/// `a.b[2]["x.y"]` -> `a`, `.b`, `[2]`, `["x.y"]`.
fn segments(path: &str) -> impl Iterator<Item = &str> {
    let bytes = path.as_bytes();
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= bytes.len() {
            return None;
        }
        let start = at;
        if bytes[at..].starts_with(b"[\"") {
            at += 2;
            while at < bytes.len() {
                match bytes[at] {
                    b'\\' => at += 2,
                    b'"' if bytes.get(at + 1) == Some(&b']') => {
                        at += 2;
                        break;
                    }
                    _ => at += 1,
                }
            }
        } else if bytes[at] == b'[' {
            while at < bytes.len() && bytes[at] != b']' {
                at += 1;
            }
            at += 1;
        } else {
            at += 1;
            while at < bytes.len() && bytes[at] != b'.' && bytes[at] != b'[' {
                at += 1;
            }
        }
        at = at.min(bytes.len());
        path.get(start..at)
    })
}

/// Positions of every node of one document, by field path.
///
/// Paths join mapping keys with `.` and sequence indexes with `[i]`; keys that are not plain
/// words (letters, digits, `_`, `-`) are quoted: `metadata.labels["app.kubernetes.io/name"]`.
/// The document root has the empty path.
///
/// Each node keeps only its own segment and its parent, so the map grows with the input, not
/// with the sum of path lengths (deeply nested long keys would otherwise repeat every
/// ancestor's key in every descendant's path). Whole paths are put together on demand; a
/// lookup by path goes through a hash of the path chained segment by segment.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    segments: String,
    entries: Vec<Entry>,
    /// Path hash -> the first entry with that hash.
    index: std::collections::HashMap<u64, u32>,
}

impl SourceMap {
    fn segment(&self, e: &Entry) -> &str {
        self.segments
            .get(e.seg_start as usize..e.seg_end as usize)
            .unwrap_or("")
    }

    fn entry(&self, idx: u32) -> Option<&Entry> {
        self.entries.get(idx as usize)
    }

    /// The whole path of entry `idx`.
    fn path(&self, idx: u32) -> String {
        let mut parts = Vec::new();
        let mut at = self.entry(idx);
        while let Some(e) = at {
            parts.push(self.segment(e));
            at = self.entry(e.parent);
        }
        parts.iter().rev().copied().collect()
    }

    /// Whether entry `idx` has the path `path`, compared segment by segment from the end.
    fn matches(&self, idx: u32, path: &str) -> bool {
        let mut rest = path;
        let mut at = self.entry(idx);
        while let Some(e) = at {
            match rest.strip_suffix(self.segment(e)) {
                Some(r) => rest = r,
                None => return false,
            }
            at = self.entry(e.parent);
        }
        rest.is_empty()
    }

    fn find(&self, path: &str) -> Option<&Entry> {
        let hash = segments(path).fold(chain(0, ""), chain);
        if let Some(&idx) = self.index.get(&hash)
            && self.matches(idx, path)
        {
            return self.entry(idx);
        }
        // Two paths with one hash: look at every entry.
        (0..self.entries.len())
            .filter_map(|i| u32::try_from(i).ok())
            .find(|&i| self.matches(i, path))
            .and_then(|i| self.entry(i))
    }

    fn push(&mut self, parent: u32, segment: &str, key: Option<Position>, value: Position) -> u32 {
        let parent_hash = self.entry(parent).map_or(0, |p| p.hash);
        let hash = chain(parent_hash, segment);
        let seg_start = u32::try_from(self.segments.len()).unwrap_or(u32::MAX);
        self.segments.push_str(segment);
        let seg_end = u32::try_from(self.segments.len()).unwrap_or(u32::MAX);
        let idx = u32::try_from(self.entries.len()).unwrap_or(NO_PARENT - 1);
        self.entries.push(Entry {
            parent,
            seg_start,
            seg_end,
            hash,
            key,
            value,
        });
        self.index.entry(hash).or_insert(idx);
        idx
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
    pub fn path_at(&self, pos: Position) -> String {
        let last = self.entries.len();
        let found = self
            .entries
            .iter()
            .position(|e| e.key == Some(pos))
            .or_else(|| self.entries.iter().rposition(|e| e.value == pos))
            .or_else(|| {
                self.entries
                    .iter()
                    .rposition(|e| e.key.unwrap_or(e.value) <= pos)
            })
            .unwrap_or(last);
        match u32::try_from(found) {
            Ok(idx) if found < last => self.path(idx),
            _ => String::new(),
        }
    }

    /// The heap memory the map holds, in bytes: its segments, its entries and its index.
    /// Grows with the input's size, whatever the nesting (the loader's memory bound).
    pub fn heap_bytes(&self) -> usize {
        self.segments.capacity()
            + self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.index.capacity() * (std::mem::size_of::<(u64, u32)>() + 1)
    }

    /// Every path of the document with the position of its value, in document order.
    pub fn iter(&self) -> impl Iterator<Item = (String, Position)> + '_ {
        (0..self.entries.len())
            .filter_map(|i| u32::try_from(i).ok())
            .filter_map(|i| Some((self.path(i), self.entry(i)?.value)))
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
    let first = path.is_empty();
    key_segment(path, key, first);
}

/// Appends the segment of `key` to `out`: `key` when it is the first segment of a path,
/// `.key` after another one, `["k.e.y"]` (escaped) when the key is not a plain word.
fn key_segment(out: &mut String, key: &str, first: bool) {
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        if !first {
            out.push('.');
        }
        out.push_str(key);
    } else {
        out.push_str("[\"");
        for c in key.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push_str("\"]");
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
        /// The mapping's own entry.
        entry: u32,
        expecting_key: bool,
        /// The pending key's position (none for a complex key) and rendered segment.
        key: Option<(Option<Position>, String)>,
    },
    Seq {
        entry: u32,
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
    frames: Vec<Frame>,
    line_offset: u32,
    pub envelope: EnvelopeScalars,
    seen_root: bool,
}

impl MapBuilder {
    pub fn new(line_offset: u32) -> Self {
        Self {
            map: SourceMap::default(),
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

    /// The segment of a key under the mapping whose entry is `parent`.
    fn key_segment(&self, parent: u32, key: &str) -> String {
        let first = self
            .map
            .entry(parent)
            .is_some_and(|p| p.parent == NO_PARENT);
        let mut out = String::new();
        key_segment(&mut out, key, first);
        out
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
                    if let Some(&Frame::Map { entry, .. }) = self.frames.last() {
                        let seg = self.key_segment(entry, "?");
                        if let Some(Frame::Map {
                            expecting_key, key, ..
                        }) = self.frames.last_mut()
                        {
                            *expecting_key = false;
                            *key = Some((None, seg));
                        }
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
            entry,
            expecting_key: true,
            ..
        }) = self.frames.last()
        {
            let entry = *entry;
            if is_start {
                self.frames.push(Frame::Ignore { depth: 1 });
                return;
            }
            let text = match event {
                Event::Scalar(text, ..) => text.as_ref(),
                _ => "*",
            };
            let seg = self.key_segment(entry, text);
            if let Some(Frame::Map {
                expecting_key, key, ..
            }) = self.frames.last_mut()
            {
                *expecting_key = false;
                *key = Some((Some(pos), seg));
            }
            return;
        }
        // A value: its parent entry, its key position and its segment.
        let (parent, key, segment) = match self.frames.last_mut() {
            Some(Frame::Map { entry, key, .. }) => match key.take() {
                Some((pos, segment)) => (*entry, pos, segment),
                None => (*entry, None, String::new()),
            },
            Some(Frame::Seq { entry, next }) => {
                let mut segment = String::new();
                push_index(&mut segment, *next);
                *next += 1;
                (*entry, None, segment)
            }
            Some(Frame::Ignore { .. }) => return,
            None => {
                self.seen_root = true;
                self.envelope.root_is_map = matches!(event, Event::MappingStart(..));
                (NO_PARENT, None, String::new())
            }
        };
        let idx = self.map.push(parent, &segment, key, pos);
        if let Event::Scalar(text, ..) = event {
            let slot = if self.map.matches(idx, "apiVersion") {
                Some(&mut self.envelope.api_version)
            } else if self.map.matches(idx, "kind") {
                Some(&mut self.envelope.kind)
            } else if self.map.matches(idx, "metadata.name") {
                Some(&mut self.envelope.name)
            } else {
                None
            };
            if let Some(slot) = slot {
                *slot = Some(text.to_string());
            }
        }
        match event {
            Event::MappingStart(..) => self.frames.push(Frame::Map {
                entry: idx,
                expecting_key: true,
                key: None,
            }),
            Event::SequenceStart(..) => self.frames.push(Frame::Seq {
                entry: idx,
                next: 0,
            }),
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
