//! Loading: finds every `*.yaml`/`*.yml` under a path (hidden folders skipped), splits each
//! file into its documents, records the position of every field, and deserializes each document
//! into its kind's typed spec. Every problem becomes a [`Diagnostic`]; nothing here panics on
//! input. Reads files and nothing else; cross-document checks live in `validate`.
//!
//! Each file is parsed once, as a YAML event stream (granit-parser, the parser under
//! serde-saphyr), which splits documents, recovers from syntax errors at the next document, and
//! feeds both the [`SourceMap`] and a positioned node tree per document. The typed structs are
//! deserialized from that tree (`tree`), so errors keep the position of their node. The
//! envelope's `kind` is read first, then the document is deserialized straight into the kind's
//! struct.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_saphyr::granit_parser::{Event, Parser};

use crate::diagnostic::{Code, Diagnostic, Severity};
use crate::kinds::{
    API_VERSION, AlertRuleSpec, DeclarationSpec, GuestSpec, HandshakePolicySpec, Kind, Metadata,
    ModbusDeviceSpec, NotificationChannelSpec, ProxmoxClusterSpec, Spec,
};
use crate::source::{MapBuilder, Position, Source, SourceMap};
use crate::tree::{self, ErrorKind, Node, TreeBuilder};
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
    /// Its whole text, as read.
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

/// Limits on what one load reads, so that declarations written to hurt (a pull request's
/// checkout, a pushed commit) cost bounded memory and time. Crossing one is a
/// `limit-exceeded` error naming the file and line, never a crash. `mycopod.toml`'s `[limits]`
/// sets them; declarations cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// The largest file read, in bytes (default 1 MiB).
    pub file_bytes: u64,
    /// The most bytes read from one folder or commit in all (default 32 MiB).
    pub total_bytes: u64,
    /// The most YAML documents in one file (default 10,000).
    pub documents_per_file: u32,
    /// The most keys in one YAML mapping (default 10,000).
    pub keys_per_mapping: u32,
}

impl Limits {
    /// No limit at all: for input the caller made itself (benchmarks, generated fixtures),
    /// never for declarations read from a folder, a commit or a request.
    pub const NONE: Limits = Limits {
        file_bytes: u64::MAX,
        total_bytes: u64::MAX,
        documents_per_file: u32::MAX,
        keys_per_mapping: u32::MAX,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            file_bytes: 1024 * 1024,
            total_bytes: 32 * 1024 * 1024,
            documents_per_file: 10_000,
            keys_per_mapping: 10_000,
        }
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
    /// The limits files are read under.
    pub limits: Limits,
    /// Bytes admitted so far, against [`Limits::total_bytes`].
    read_bytes: u64,
}

impl Loaded {
    /// The file named `name`.
    pub fn file(&self, name: &str) -> Option<&SourceFile> {
        self.files.iter().find(|f| &*f.name == name)
    }

    /// An empty set that reads under `limits`.
    pub fn with_limits(limits: Limits) -> Loaded {
        Loaded {
            limits,
            ..Loaded::default()
        }
    }

    /// Adds one file's text (as [`load_str`] does) to this set, unless it is past the size
    /// limits: then the file is listed without its text and the finding says why.
    pub fn add_str(&mut self, file_name: &str, text: String) {
        if self.admit(file_name, text.len() as u64) {
            self.add_admitted(file_name, text);
        }
    }

    /// Parses one file already admitted by [`Loaded::admit`] (a reader that checked its size
    /// before reading it).
    pub fn add_admitted(&mut self, file_name: &str, text: String) {
        let name: Arc<str> = Arc::from(file_name);
        let (documents, diagnostics) = parse_file(&name, &text, &self.limits);
        self.documents.extend(documents);
        self.diagnostics.extend(diagnostics);
        self.files.push(SourceFile { name, text });
    }

    /// Whether a file of `bytes` bytes may be read under the size limits, counting it against
    /// the total when it may. When not, lists the file without its text with a
    /// `limit-exceeded` finding. Readers that know a file's size before reading it (a folder's
    /// metadata, Git's object sizes) call this first and skip reading what is refused.
    pub fn admit(&mut self, file_name: &str, bytes: u64) -> bool {
        let why = if bytes > self.limits.file_bytes {
            format!(
                "not read: the file has {bytes} bytes, more than the limit of {} \
                 (limits.file_bytes)",
                self.limits.file_bytes
            )
        } else if self.read_bytes.saturating_add(bytes) > self.limits.total_bytes {
            format!(
                "not read: with this file the declarations pass the limit of {} bytes in all \
                 (limits.total_bytes)",
                self.limits.total_bytes
            )
        } else {
            self.read_bytes += bytes;
            return true;
        };
        self.list_unread(file_name, Code::LimitExceeded, why);
        false
    }

    /// Lists a file whose text is not read, with the error that says why.
    fn list_unread(&mut self, file_name: &str, code: Code, why: String) {
        self.diagnostics
            .push(Diagnostic::file_error(file_name, 1, 1, code, why));
        self.files.push(SourceFile {
            name: Arc::from(file_name),
            text: String::new(),
        });
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
///
/// A directory is untrusted input (a pull request's checkout): only regular files inside it
/// are read. A symlink that leads outside it, a device, a FIFO or a socket is a `not-read`
/// finding and is never opened, so nothing outside the folder can reach the output.
pub fn load_path(path: &Path) -> Result<Loaded, LoadError> {
    load_path_with(path, Limits::default())
}

/// [`load_path`] under `limits`: a file past them is a `limit-exceeded` finding and is not
/// read (its size is taken from its metadata, and reading stops at the limit should it grow).
pub fn load_path_with(path: &Path, limits: Limits) -> Result<Loaded, LoadError> {
    let meta = std::fs::metadata(path).map_err(|source| LoadError::Metadata {
        path: path.to_owned(),
        source,
    })?;
    let mut files = Vec::new();
    let mut refused = Vec::new();
    if meta.is_dir() {
        let root = std::fs::canonicalize(path).map_err(|source| LoadError::Metadata {
            path: path.to_owned(),
            source,
        })?;
        let mut walk = Walk {
            root: &root,
            files: &mut files,
            refused: &mut refused,
            visited: std::collections::HashSet::new(),
        };
        walk.dir(path)?;
    } else if meta.is_file() {
        files.push((path.to_owned(), meta.len()));
    } else {
        refused.push((path.to_owned(), NOT_REGULAR));
    }
    let mut loaded = Loaded::with_limits(limits);
    for (file, size) in files {
        let name = display_name(&file);
        if !loaded.admit(&name, size) {
            continue;
        }
        let bytes =
            read_at_most(&file, limits.file_bytes).map_err(|source| LoadError::ReadFile {
                path: file.clone(),
                source,
            })?;

        match String::from_utf8(bytes) {
            Ok(text) => loaded.add_admitted(&name, text),
            Err(e) => loaded.list_unread(
                &name,
                Code::YamlSyntax,
                format!("file is not valid UTF-8 ({e})"),
            ),
        }
    }
    for (file, why) in refused {
        loaded.diagnostics.push(Diagnostic::file_error(
            &display_name(&file),
            0,
            0,
            Code::NotRead,
            format!("not read: {why}"),
        ));
    }
    Ok(loaded)
}

/// Reads a file, failing when it holds more than `limit` bytes (it grew after its size was
/// checked).
fn read_at_most(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::other(format!(
            "the file grew past the limit of {limit} bytes while it was read"
        )));
    }
    Ok(bytes)
}

const NOT_REGULAR: &str = "not a regular file (a device, FIFO or socket)";
const OUTSIDE: &str = "a symlink that leads outside the folder";
const DANGLING: &str = "a symlink that leads nowhere";

fn display_name(path: &Path) -> String {
    let s = path.to_string_lossy();
    s.strip_prefix("./").unwrap_or(&s).to_owned()
}

/// A walk of a directory for declaration files: what to read, and what was refused and why.
struct Walk<'a> {
    /// The directory loaded, canonical: nothing outside it is read.
    root: &'a Path,
    /// Regular files to read, with their sizes.
    files: &'a mut Vec<(PathBuf, u64)>,
    refused: &'a mut Vec<(PathBuf, &'static str)>,
    /// Directories already walked (a symlink back to an ancestor must not loop forever).
    visited: std::collections::HashSet<PathBuf>,
}

impl Walk<'_> {
    fn dir(&mut self, dir: &Path) -> Result<(), LoadError> {
        if let Ok(real) = std::fs::canonicalize(dir)
            && !self.visited.insert(real)
        {
            return Ok(());
        }
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
            if !hidden {
                self.entry(path)?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, path: PathBuf) -> Result<(), LoadError> {
        let declaration = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
        let own = std::fs::symlink_metadata(&path).map_err(|source| LoadError::Metadata {
            path: path.clone(),
            source,
        })?;
        let meta = if own.file_type().is_symlink() {
            // Followed only where it stays inside the folder, as a checkout presents links
            // between its own files.
            match std::fs::canonicalize(&path) {
                Ok(real) if real.starts_with(self.root) => {
                    std::fs::metadata(&real).map_err(|source| LoadError::Metadata {
                        path: path.clone(),
                        source,
                    })?
                }
                Ok(real) => {
                    if declaration || real.is_dir() {
                        self.refused.push((path, OUTSIDE));
                    }
                    return Ok(());
                }
                Err(_) => {
                    if declaration {
                        self.refused.push((path, DANGLING));
                    }
                    return Ok(());
                }
            }
        } else {
            own
        };
        if meta.is_dir() {
            self.dir(&path)?;
        } else if declaration {
            if meta.is_file() {
                self.files.push((path, meta.len()));
            } else {
                self.refused.push((path, NOT_REGULAR));
            }
        }
        Ok(())
    }
}

/// Duplicate keys reported one by one per document; the rest are counted in one finding.
const MAX_DUPLICATES_SHOWN: usize = 20;

struct RawDoc {
    index: u32,
    start: Position,
    builder: MapBuilder,
    tree: TreeBuilder,
}

/// Splits a file into documents and deserializes each.
fn parse_file(file: &Arc<str>, text: &str, limits: &Limits) -> (Vec<Document>, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let mut documents = Vec::new();
    let mut current: Option<RawDoc> = None;
    let mut index = 0u32;
    let mut parser = Parser::new_from_str(text);
    loop {
        match parser.next_event() {
            None => break,
            Some(Ok((event, span))) => match event {
                Event::DocumentStart(..) => {
                    let start = Position::from_span(&span, 0);
                    if index >= limits.documents_per_file {
                        diagnostics.push(Diagnostic::file_error(
                            file,
                            start.line,
                            start.column,
                            Code::LimitExceeded,
                            format!(
                                "more than {} documents in one file (limits.documents_per_file); \
                                 the rest of the file is not read",
                                limits.documents_per_file
                            ),
                        ));
                        break;
                    }
                    current = Some(RawDoc {
                        index,
                        start,
                        builder: MapBuilder::new(0),
                        tree: TreeBuilder::with_max_keys(
                            usize::try_from(limits.keys_per_mapping).unwrap_or(usize::MAX),
                        ),
                    });
                    index += 1;
                }
                Event::DocumentEnd => {
                    if let Some(doc) = current.take()
                        && doc.builder.has_root()
                    {
                        documents.push(parse_document(file, doc, limits, &mut diagnostics));
                    }
                }
                _ => {
                    if let Some(doc) = current.as_mut() {
                        doc.builder.event(&event, &span);
                        doc.tree.event(&event, &span);
                    }
                }
            },
            Some(Err(err)) => {
                let marker = err.marker();
                diagnostics.push(Diagnostic::file_error(
                    file,
                    u32::try_from(marker.line()).unwrap_or(u32::MAX),
                    u32::try_from(marker.col())
                        .unwrap_or(u32::MAX)
                        .saturating_add(1),
                    Code::YamlSyntax,
                    format!("yaml syntax error: {}", err.info()),
                ));
                current = None;
                match parser.proceed_next_document() {
                    Ok(true) => {}
                    Ok(false) | Err(_) => break,
                }
            }
        }
    }
    (documents, diagnostics)
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
    root: &Node,
    wrap: impl FnOnce(S) -> Spec,
) -> Result<Typed, tree::Error> {
    let env: Envelope<S> = tree::from_node(root)?;
    Ok(Typed {
        metadata: env.metadata,
        spec: wrap(env.spec),
    })
}

fn parse_document(
    file: &Arc<str>,
    raw: RawDoc,
    limits: &Limits,
    diagnostics: &mut Vec<Diagnostic>,
) -> Document {
    let (map, envelope) = raw.builder.finish();
    let duplicates = raw.tree.duplicates.clone();
    let alias_limit = raw.tree.alias_limit;
    let key_limit = raw.tree.key_limit;
    let root = raw.tree.finish();
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
    if let Some(pos) = alias_limit {
        diagnostics.push(doc.source.diagnostic_at(
            pos,
            "",
            Severity::Error,
            Code::YamlSyntax,
            "aliases expand to too many nodes (more than 100000); write the values out",
        ));
        return doc;
    }
    if let Some((mapping, key)) = key_limit {
        let path = doc.source.map.path_at(mapping);
        diagnostics.push(doc.source.diagnostic_at(
            key,
            &path,
            Severity::Error,
            Code::LimitExceeded,
            format!(
                "the mapping at line {} has more than {} keys (limits.keys_per_mapping); \
                 the document is not read further",
                mapping.line, limits.keys_per_mapping
            ),
        ));
        return doc;
    }
    if !duplicates.is_empty() {
        let total = duplicates.len();
        // One finding per duplicate up to the cap; the one past it counts the rest.
        for (shown, d) in duplicates.iter().take(MAX_DUPLICATES_SHOWN + 1).enumerate() {
            let message = if shown < MAX_DUPLICATES_SHOWN {
                format!("duplicate key \"{}\"", d.key)
            } else {
                format!(
                    "{} more duplicate keys in this document (the first {MAX_DUPLICATES_SHOWN} are shown)",
                    total - MAX_DUPLICATES_SHOWN
                )
            };
            let path = doc.source.map.path_at(d.pos);
            diagnostics.push(doc.source.diagnostic_at(
                d.pos,
                &path,
                Severity::Error,
                Code::DuplicateKey,
                message,
            ));
        }
        return doc;
    }
    let Some(root) = root else { return doc };
    let root = &root;
    let result = match kind {
        Kind::ProxmoxCluster => typed::<ProxmoxClusterSpec>(root, Spec::ProxmoxCluster),
        Kind::Guest => typed::<GuestSpec>(root, |s| Spec::Guest(Box::new(s))),
        Kind::ModbusDevice => typed::<ModbusDeviceSpec>(root, Spec::ModbusDevice),
        Kind::AlertRule => typed::<AlertRuleSpec>(root, Spec::AlertRule),
        Kind::NotificationChannel => {
            typed::<NotificationChannelSpec>(root, Spec::NotificationChannel)
        }
        Kind::HandshakePolicy => typed::<HandshakePolicySpec>(root, Spec::HandshakePolicy),
        Kind::Declaration => typed::<DeclarationSpec>(root, Spec::Declaration),
    };
    match result {
        Ok(t) => doc.typed = Some(t),
        Err(e) => diagnostics.push(tree_error(&doc.source, &e)),
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
fn tree_error(source: &Source, err: &tree::Error) -> Diagnostic {
    let map: &SourceMap = &source.map;
    let mut pos = err.pos.unwrap_or(source.start);
    let mut path = map.path_at(pos);
    if let ErrorKind::MissingField(_) = err.kind {
        // A missing field is reported by the mapping that lacks it, whose position is that of
        // its first key in block style; the finding belongs to the mapping itself.
        if map.key(&path) == Some(pos) {
            path = crate::source::parent_path(&path).to_owned();
        }
        pos = map.key(&path).unwrap_or_else(|| source.locate(&path));
    }
    let (code, message) = match &err.kind {
        ErrorKind::UnknownField { field, expected } => (
            Code::UnknownField,
            format!("unknown field \"{field}\"{}", suggest(field, expected)),
        ),
        ErrorKind::MissingField(field) => (
            Code::MissingField,
            if path.is_empty() {
                format!("missing field \"{field}\"")
            } else {
                format!("missing field \"{field}\" in {path}")
            },
        ),
        ErrorKind::UnknownVariant { variant, expected } => (
            Code::UnknownVariant,
            format!("unknown value \"{variant}\"{}", suggest(variant, expected)),
        ),
        ErrorKind::InvalidType {
            unexpected,
            expected,
        } => (
            Code::InvalidType,
            format!("invalid value: expected {expected}, found {unexpected}"),
        ),
        ErrorKind::Message(msg) => coded_message(msg),
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
