//! Loading: finds every `*.yaml`/`*.yml` under a path (hidden folders skipped), splits each
//! file into its documents, records the position of every field, and deserializes each document
//! into its kind's typed spec. Every problem becomes a [`Diagnostic`]; nothing here panics on
//! input. Reads files and nothing else; cross-document checks live in `validate`.
//!
//! Each file is read twice in memory: once as a YAML event stream (granit-parser, the parser
//! under serde-saphyr) to split documents, recover from syntax errors and build the
//! [`SourceMap`]; once per document by serde-saphyr into the typed structs. The envelope's
//! `kind` comes from the first pass, so the `spec` is deserialized straight into the kind's
//! struct with no intermediate value (which would lose positions).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_saphyr::granit_parser::{Event, Parser};
use serde_saphyr::{Error as YamlError, MessageFormatter, UserMessageFormatter};

use crate::diagnostic::{Code, Diagnostic, Severity};
use crate::kinds::{
    API_VERSION, AlertRuleSpec, DeclarationSpec, GuestSpec, HandshakePolicySpec, Kind, Metadata,
    ModbusDeviceSpec, NotificationChannelSpec, ProxmoxClusterSpec, Spec,
};
use crate::source::{MapBuilder, Position, Source, SourceMap};
use crate::values::{CODE_CLOSE, CODE_OPEN};

/// A path that could not be read at all: a usage error (`mycopod validate` exits 2), as
/// opposed to findings inside the files.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The path does not exist or its metadata cannot be read.
    #[error("read metadata of {path}")]
    Metadata {
        /// The path given.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A directory could not be listed.
    #[error("list directory {path}")]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be read.
    #[error("read file {path}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// One loaded file: its display name and text (kept for code frames).
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Name as shown in diagnostics.
    pub name: Arc<str>,
    /// The text.
    pub text: String,
}

impl SourceFile {
    /// Line `n` (1-based) without its line break.
    pub fn line(&self, n: u32) -> Option<&str> {
        let n = usize::try_from(n).ok()?.checked_sub(1)?;
        self.text
            .split('\n')
            .nth(n)
            .map(|l| l.trim_end_matches('\r'))
    }
}

/// A document whose typed spec deserialized.
#[derive(Debug, Clone)]
pub struct Typed {
    /// `metadata`.
    pub metadata: Metadata,
    /// The kind's spec.
    pub spec: Spec,
}

/// One YAML document of a file.
#[derive(Debug, Clone)]
pub struct Document {
    /// Where it was written.
    pub source: Source,
    /// `kind`, when it names one of the seven kinds.
    pub kind: Option<Kind>,
    /// `metadata.name` as written (also when the document did not deserialize), so that
    /// references to a broken document are not reported as dangling.
    pub name: Option<String>,
    /// The typed document, when it deserialized.
    pub typed: Option<Typed>,
}

/// Everything read from a path: files, documents, and the diagnostics of loading (syntax,
/// types, unknown fields). Semantic checks come from [`crate::validate`].
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// Files in path order.
    pub files: Vec<SourceFile>,
    /// Documents in file order.
    pub documents: Vec<Document>,
    /// Findings of loading.
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    /// The file named `name`.
    pub fn file(&self, name: &str) -> Option<&SourceFile> {
        self.files.iter().find(|f| &*f.name == name)
    }

    /// Adds one file's text (as [`load_str`] does) to this set.
    pub fn add_str(&mut self, file_name: &str, text: String) {
        let name: Arc<str> = Arc::from(file_name);
        let (documents, diagnostics) = parse_file(&name, &text);
        self.documents.extend(documents);
        self.diagnostics.extend(diagnostics);
        self.files.push(SourceFile { name, text });
    }
}

/// Loads one text as if it were the file `file_name`.
pub fn load_str(file_name: &str, text: &str) -> Loaded {
    let mut loaded = Loaded::default();
    loaded.add_str(file_name, text.to_owned());
    loaded
}

/// Loads a file, or every `*.yaml`/`*.yml` below a directory (recursively, in name order,
/// skipping hidden entries). File names in diagnostics are `path` joined with the relative
/// name. A file that is not UTF-8 is a finding; a path that cannot be read is a [`LoadError`].
pub fn load_path(path: &Path) -> Result<Loaded, LoadError> {
    let meta = std::fs::metadata(path).map_err(|source| LoadError::Metadata {
        path: path.to_owned(),
        source,
    })?;
    let mut files = Vec::new();
    if meta.is_dir() {
        collect(path, &mut files)?;
    } else {
        files.push(path.to_owned());
    }
    let mut loaded = Loaded::default();
    for file in files {
        let bytes = std::fs::read(&file).map_err(|source| LoadError::ReadFile {
            path: file.clone(),
            source,
        })?;
        let name = display_name(&file);
        match String::from_utf8(bytes) {
            Ok(text) => loaded.add_str(&name, text),
            Err(e) => {
                loaded.diagnostics.push(Diagnostic {
                    file: name.clone(),
                    line: 1,
                    column: 1,
                    path: String::new(),
                    severity: Severity::Error,
                    code: Code::YamlSyntax,
                    message: format!("file is not valid UTF-8 ({e})"),
                });
                loaded.files.push(SourceFile {
                    name: Arc::from(name.as_str()),
                    text: String::new(),
                });
            }
        }
    }
    Ok(loaded)
}

fn display_name(path: &Path) -> String {
    let s = path.to_string_lossy();
    s.strip_prefix("./").unwrap_or(&s).to_owned()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|source| LoadError::ReadDir {
        path: dir.to_owned(),
        source,
    })?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| LoadError::ReadDir {
            path: dir.to_owned(),
            source,
        })?;
        paths.push(entry.path());
    }
    paths.sort();
    for path in paths {
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        // Follows symlinks, like `git` checkouts present them.
        let meta = std::fs::metadata(&path).map_err(|source| LoadError::Metadata {
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    Ok(())
}

struct RawDoc {
    index: u32,
    start_line: u32,
    start: Position,
    builder: MapBuilder,
}

/// Splits a file into documents and deserializes each.
fn parse_file(file: &Arc<str>, text: &str) -> (Vec<Document>, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let mut finished: Vec<RawDoc> = Vec::new();
    // Lines where a document starts or a syntax error stopped one: the boundaries of the
    // per-document text slices.
    let mut boundaries: Vec<u32> = Vec::new();
    let mut current: Option<RawDoc> = None;
    let mut index = 0u32;
    let mut parser = Parser::new_from_str(text);
    loop {
        match parser.next_event() {
            None => break,
            Some(Ok((event, span))) => match event {
                Event::DocumentStart(..) => {
                    let pos = Position::from_span(&span, 0);
                    boundaries.push(pos.line);
                    current = Some(RawDoc {
                        index,
                        start_line: pos.line,
                        start: pos,
                        builder: MapBuilder::new(0),
                    });
                    index += 1;
                }
                Event::DocumentEnd => {
                    if let Some(doc) = current.take()
                        && doc.builder.has_root()
                    {
                        finished.push(doc);
                    }
                }
                _ => {
                    if let Some(doc) = current.as_mut() {
                        doc.builder.event(&event, &span);
                    }
                }
            },
            Some(Err(err)) => {
                let marker = err.marker();
                let line = u32::try_from(marker.line()).unwrap_or(u32::MAX);
                let column = u32::try_from(marker.col())
                    .unwrap_or(u32::MAX)
                    .saturating_add(1);
                boundaries.push(line);
                let path = String::new();
                diagnostics.push(Diagnostic {
                    file: file.to_string(),
                    line,
                    column,
                    path,
                    severity: Severity::Error,
                    code: Code::YamlSyntax,
                    message: format!("yaml syntax error: {}", err.info()),
                });
                current = None;
                match parser.proceed_next_document() {
                    Ok(true) => {}
                    Ok(false) | Err(_) => break,
                }
            }
        }
    }
    boundaries.sort_unstable();
    boundaries.dedup();

    let line_starts = line_starts(text);
    let mut documents = Vec::with_capacity(finished.len());
    for raw in finished {
        let end_line = boundaries
            .iter()
            .copied()
            .find(|&b| b > raw.start_line)
            .unwrap_or(u32::MAX);
        let from = line_start(&line_starts, raw.start_line).unwrap_or(text.len());
        let to = line_start(&line_starts, end_line).unwrap_or(text.len());
        let slice = text.get(from..to).unwrap_or("");
        documents.push(parse_document(file, raw, slice, &mut diagnostics));
    }
    (documents, diagnostics)
}

fn line_starts(text: &str) -> Vec<usize> {
    let mut starts = vec![0];
    starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
    starts
}

fn line_start(starts: &[usize], line: u32) -> Option<usize> {
    starts
        .get(usize::try_from(line).ok()?.checked_sub(1)?)
        .copied()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Envelope<S> {
    #[allow(dead_code)]
    api_version: IgnoredAny,
    #[allow(dead_code)]
    kind: IgnoredAny,
    metadata: Metadata,
    spec: S,
}

fn typed<S: for<'de> Deserialize<'de>>(
    slice: &str,
    wrap: impl FnOnce(S) -> Spec,
) -> Result<Typed, YamlError> {
    let env: Envelope<S> = serde_saphyr::from_str(slice)?;
    Ok(Typed {
        metadata: env.metadata,
        spec: wrap(env.spec),
    })
}

fn parse_document(
    file: &Arc<str>,
    raw: RawDoc,
    slice: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Document {
    let (map, envelope) = raw.builder.finish();
    let source = Source {
        file: file.clone(),
        index: raw.index,
        start: map.value("").unwrap_or(raw.start),
        map: Arc::new(map),
    };
    let mut doc = Document {
        source,
        kind: None,
        name: envelope.name.clone(),
        typed: None,
    };
    let src = &doc.source;
    let err = |path: &str, code: Code, message: String| {
        src.diagnostic(path, Severity::Error, code, message)
    };
    if !envelope.root_is_map {
        diagnostics.push(err(
            "",
            Code::InvalidType,
            "a document must be a mapping with apiVersion, kind, metadata and spec".into(),
        ));
        return doc;
    }
    match envelope.api_version.as_deref() {
        Some(API_VERSION) => {}
        Some(other) => diagnostics.push(err(
            "apiVersion",
            Code::UnknownApiVersion,
            format!("unknown apiVersion \"{other}\", expected \"{API_VERSION}\""),
        )),
        None if src.map.value("apiVersion").is_some() => diagnostics.push(err(
            "apiVersion",
            Code::UnknownApiVersion,
            format!("apiVersion must be the text \"{API_VERSION}\""),
        )),
        None => diagnostics.push(err(
            "",
            Code::MissingField,
            format!("missing field \"apiVersion\" (use \"{API_VERSION}\")"),
        )),
    }
    let kind = match envelope.kind.as_deref() {
        Some(text) => match Kind::from_text(text) {
            Some(kind) => kind,
            None => {
                let names: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                diagnostics.push(err(
                    "kind",
                    Code::UnknownKind,
                    format!("unknown kind \"{text}\"{}", suggest(text, &names)),
                ));
                return doc;
            }
        },
        None => {
            diagnostics.push(err(
                if src.map.value("kind").is_some() { "kind" } else { "" },
                if src.map.value("kind").is_some() {
                    Code::UnknownKind
                } else {
                    Code::MissingField
                },
                "missing field \"kind\" (one of ProxmoxCluster, Guest, ModbusDevice, AlertRule, NotificationChannel, HandshakePolicy, Declaration)".into(),
            ));
            return doc;
        }
    };
    doc.kind = Some(kind);
    let result = match kind {
        Kind::ProxmoxCluster => typed::<ProxmoxClusterSpec>(slice, Spec::ProxmoxCluster),
        Kind::Guest => typed::<GuestSpec>(slice, |s| Spec::Guest(Box::new(s))),
        Kind::ModbusDevice => typed::<ModbusDeviceSpec>(slice, Spec::ModbusDevice),
        Kind::AlertRule => typed::<AlertRuleSpec>(slice, Spec::AlertRule),
        Kind::NotificationChannel => {
            typed::<NotificationChannelSpec>(slice, Spec::NotificationChannel)
        }
        Kind::HandshakePolicy => typed::<HandshakePolicySpec>(slice, Spec::HandshakePolicy),
        Kind::Declaration => typed::<DeclarationSpec>(slice, Spec::Declaration),
    };
    match result {
        Ok(t) => doc.typed = Some(t),
        Err(e) => diagnostics.push(yaml_error(&doc.source, raw.start_line - 1, &e)),
    }
    doc
}

/// ` did you mean "x"?` when a candidate is close enough, else a list of the candidates.
pub(crate) fn suggest(word: &str, candidates: &[&str]) -> String {
    let best = candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(word, c), *c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, c)) => format!(", did you mean \"{c}\"?"),
        None if candidates.is_empty() => String::new(),
        None => format!(", expected one of: {}", candidates.join(", ")),
    }
}

/// Turns a deserialization error of one document into a diagnostic at the right field.
fn yaml_error(source: &Source, line_offset: u32, err: &YamlError) -> Diagnostic {
    let err = err.without_snippet();
    let pos = err
        .location()
        .filter(|l| l.line() > 0)
        .map(|l| Position {
            line: u32::try_from(l.line())
                .unwrap_or(u32::MAX)
                .saturating_add(line_offset),
            column: u32::try_from(l.column()).unwrap_or(u32::MAX),
        })
        .unwrap_or(source.start);
    let map: &SourceMap = &source.map;
    let mut path = map.path_at(pos).to_owned();
    let mut pos = pos;
    if let YamlError::SerdeMissingField { .. } = err {
        // serde-saphyr reports a missing field at the last key it read in the mapping that
        // lacks it; the finding belongs to that mapping.
        if map.key(&path) == Some(pos) {
            path = crate::source::parent_path(&path).to_owned();
            pos = map.key(&path).unwrap_or_else(|| source.locate(&path));
        }
    }
    let (code, message) = match err {
        YamlError::SerdeUnknownField {
            field, expected, ..
        } => (
            Code::UnknownField,
            format!("unknown field \"{field}\"{}", suggest(field, expected)),
        ),
        YamlError::SerdeMissingField { field, .. } => (
            Code::MissingField,
            if path.is_empty() {
                format!("missing field \"{field}\"")
            } else {
                format!("missing field \"{field}\" in {path}")
            },
        ),
        YamlError::SerdeUnknownVariant {
            variant, expected, ..
        } => (
            Code::UnknownVariant,
            format!("unknown value \"{variant}\"{}", suggest(variant, expected)),
        ),
        YamlError::SerdeInvalidType {
            unexpected,
            expected,
            ..
        }
        | YamlError::SerdeInvalidValue {
            unexpected,
            expected,
            ..
        } => (
            Code::InvalidType,
            format!("invalid value: expected {expected}, found {unexpected}"),
        ),
        YamlError::DuplicateMappingKey { key, .. } => (
            Code::DuplicateKey,
            match key {
                Some(k) => format!("duplicate key \"{k}\""),
                None => "duplicate key".to_owned(),
            },
        ),
        YamlError::Message { msg, .. } => coded_message(msg),
        other => {
            let text: Cow<'_, str> = UserMessageFormatter.format_message(other);
            let field = path.rsplit('.').next().unwrap_or("");
            if field.is_empty() {
                (Code::InvalidType, text.into_owned())
            } else {
                (
                    Code::InvalidType,
                    format!("invalid value for {field}: {text}"),
                )
            }
        }
    };
    source.diagnostic_at(pos, &path, Severity::Error, code, message)
}

/// Recovers the code that a value newtype put in front of its message.
fn coded_message(msg: &str) -> (Code, String) {
    if let Some(rest) = msg.strip_prefix(CODE_OPEN)
        && let Some((code, message)) = rest.split_once(CODE_CLOSE)
        && let Some(code) = Code::from_text(code)
    {
        return (code, message.to_owned());
    }
    (Code::InvalidType, msg.to_owned())
}
