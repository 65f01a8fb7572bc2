//! A positioned YAML node tree built from the parser's events, and a serde `Deserializer` over
//! it. The loader parses each file once: the same event stream feeds the [`SourceMap`] and this
//! tree, and the typed specs are deserialized from the tree, so every error keeps the position
//! of the node it is about. Pure; no I/O.
//!
//! Scalars resolve by the YAML 1.2 core schema when the target type does not decide (`null`,
//! `true`/`false`, integers, floats, else text); quoted scalars are always text. Aliases are
//! expanded, merge keys (`<<`) are applied.
//!
//! [`SourceMap`]: crate::source::SourceMap

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Visitor};
use serde_saphyr::granit_parser::{Event, ScalarStyle, Span};

use crate::source::Position;

/// One YAML node with the position where it starts.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub pos: Position,
    pub kind: NodeKind,
}

#[derive(Debug, Clone)]
pub(crate) enum NodeKind {
    /// Text of a scalar; `plain` when unquoted and untagged (subject to type resolution).
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// A duplicate key found while building the tree.
#[derive(Debug, Clone)]
pub(crate) struct DuplicateKey {
    pub key: String,
    pub pos: Position,
}

enum Open {
    Seq(Position, Vec<Node>, usize),
    Map(OpenMap),
}

/// A mapping being built: its entries, the key waiting for its value, and every scalar key
/// written so far, so that a duplicate is found in constant time rather than by comparing
/// with every earlier key.
struct OpenMap {
    pos: Position,
    entries: Vec<(Node, Node)>,
    key: Option<Node>,
    anchor: usize,
    seen: std::collections::HashSet<String>,
}

/// Builds a [`Node`] tree from the node events of one document.
/// Most nodes that alias expansion may copy into one document; guards against "billion laughs"
/// documents (nested aliases that grow exponentially).
const MAX_ALIASED_NODES: usize = 100_000;

#[derive(Default)]
pub(crate) struct TreeBuilder {
    stack: Vec<Open>,
    root: Option<Node>,
    anchors: HashMap<usize, (Node, usize)>,
    aliased: usize,
    pub duplicates: Vec<DuplicateKey>,
    /// Where alias expansion stopped because of [`MAX_ALIASED_NODES`].
    pub alias_limit: Option<Position>,
    /// Most keys one mapping may have; 0 means no limit.
    pub max_keys: usize,
    /// The first mapping with more than [`TreeBuilder::max_keys`] keys: where it starts and
    /// the key past the limit. Keys past it are dropped, so memory stays bounded.
    pub key_limit: Option<(Position, Position)>,
}

fn size(node: &Node) -> usize {
    match &node.kind {
        NodeKind::Scalar { .. } => 1,
        NodeKind::Seq(items) => 1 + items.iter().map(size).sum::<usize>(),
        NodeKind::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| size(k) + size(v))
                .sum::<usize>()
        }
    }
}

impl TreeBuilder {
    /// A builder that stops taking keys into a mapping past `max_keys` (0: no limit).
    pub fn with_max_keys(max_keys: usize) -> Self {
        TreeBuilder {
            max_keys,
            ..TreeBuilder::default()
        }
    }

    pub fn finish(self) -> Option<Node> {
        self.root
    }

    fn complete(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            let n = size(&node);
            self.anchors.insert(anchor, (node.clone(), n));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Open::Seq(_, items, _)) => items.push(node),
            Some(Open::Map(map)) => match map.key.take() {
                None => map.key = Some(node),
                Some(k) => {
                    if self.max_keys != 0 && map.entries.len() >= self.max_keys {
                        if self.key_limit.is_none() {
                            self.key_limit = Some((map.pos, k.pos));
                        }
                        return;
                    }
                    if let NodeKind::Scalar { text, .. } = &k.kind
                        && !map.seen.insert(text.clone())
                    {
                        self.duplicates.push(DuplicateKey {
                            key: text.clone(),
                            pos: k.pos,
                        });
                    }
                    map.entries.push((k, node));
                }
            },
        }
    }

    pub fn event(&mut self, event: &Event<'_>, span: &Span) {
        let pos = Position::from_span(span, 0);
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let plain = matches!(style, ScalarStyle::Plain) && tag.is_none();
                let node = Node {
                    pos,
                    kind: NodeKind::Scalar {
                        text: text.to_string(),
                        plain,
                    },
                };
                self.complete(node, *anchor);
            }
            Event::SequenceStart(_, anchor, _) => {
                self.stack.push(Open::Seq(pos, Vec::new(), *anchor));
            }
            Event::MappingStart(_, anchor, _) => {
                self.stack.push(Open::Map(OpenMap {
                    pos,
                    entries: Vec::new(),
                    key: None,
                    anchor: *anchor,
                    seen: std::collections::HashSet::new(),
                }));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Open::Seq(p, items, a)) => (
                        Node {
                            pos: p,
                            kind: NodeKind::Seq(items),
                        },
                        a,
                    ),
                    Some(Open::Map(map)) => (
                        Node {
                            pos: map.pos,
                            kind: NodeKind::Map(merge_keys(map.entries)),
                        },
                        map.anchor,
                    ),
                    None => return,
                };
                self.complete(node, anchor);
            }
            Event::Alias(id) => {
                let found = self
                    .anchors
                    .get(id)
                    .filter(|(_, n)| self.aliased.saturating_add(*n) <= MAX_ALIASED_NODES);
                if found.is_none() && self.anchors.contains_key(id) && self.alias_limit.is_none() {
                    self.alias_limit = Some(pos);
                }
                let node = match found {
                    Some((n, count)) => {
                        self.aliased += count;
                        n.clone()
                    }
                    None => Node {
                        pos,
                        kind: NodeKind::Scalar {
                            text: String::new(),
                            plain: true,
                        },
                    },
                };
                self.complete(node, 0);
            }
            Event::UnresolvedAlias(_) => self.complete(
                Node {
                    pos,
                    kind: NodeKind::Scalar {
                        text: String::new(),
                        plain: true,
                    },
                },
                0,
            ),
            _ => {}
        }
    }
}

fn is_merge_key(node: &Node) -> bool {
    matches!(&node.kind, NodeKind::Scalar { text, plain: true } if text == "<<")
}

fn key_text(node: &Node) -> Option<&str> {
    match &node.kind {
        NodeKind::Scalar { text, .. } => Some(text),
        _ => None,
    }
}

/// Expands YAML merge keys (`<<: *defaults`, `<<: [*a, *b]`): keys written in the mapping win
/// over merged ones, and earlier merged mappings win over later ones. A `<<` whose value is not
/// a mapping (or a list of mappings) stays as an ordinary key, so it is reported as unknown.
fn merge_keys(entries: Vec<(Node, Node)>) -> Vec<(Node, Node)> {
    if !entries.iter().any(|(k, _)| is_merge_key(k)) {
        return entries;
    }
    let mut own = Vec::with_capacity(entries.len());
    let mut merged: Vec<(Node, Node)> = Vec::new();
    for (k, v) in entries {
        if !is_merge_key(&k) {
            own.push((k, v));
            continue;
        }
        let sources: Vec<Node> = match v.kind {
            NodeKind::Map(_) => vec![v],
            NodeKind::Seq(items) if items.iter().all(|i| matches!(i.kind, NodeKind::Map(_))) => {
                items
            }
            kind => {
                own.push((k, Node { pos: v.pos, kind }));
                continue;
            }
        };
        for source in sources {
            if let NodeKind::Map(inner) = source.kind {
                merged.extend(inner);
            }
        }
    }
    let mut present: std::collections::HashSet<String> = own
        .iter()
        .filter_map(|(k, _)| key_text(k).map(str::to_owned))
        .collect();
    for (k, v) in merged {
        match key_text(&k) {
            Some(t) if present.contains(t) => {}
            Some(t) => {
                present.insert(t.to_owned());
                own.push((k, v));
            }
            None => own.push((k, v)),
        }
    }
    own
}

/// What went wrong while deserializing from the tree.
#[derive(Debug, Clone)]
pub(crate) enum ErrorKind {
    UnknownField {
        field: String,
        expected: &'static [&'static str],
    },
    MissingField(&'static str),
    UnknownVariant {
        variant: String,
        expected: &'static [&'static str],
    },
    InvalidType {
        unexpected: String,
        expected: String,
    },
    Message(String),
}

/// A deserialization error with the position of the node it is about (set by the innermost
/// node that saw it).
#[derive(Debug, Clone)]
pub(crate) struct Error {
    pub pos: Option<Position>,
    pub kind: ErrorKind,
}

impl Error {
    fn at(mut self, pos: Position) -> Self {
        if self.pos.is_none() {
            self.pos = Some(pos);
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::UnknownField { field, .. } => write!(f, "unknown field \"{field}\""),
            ErrorKind::MissingField(field) => write!(f, "missing field \"{field}\""),
            ErrorKind::UnknownVariant { variant, .. } => write!(f, "unknown value \"{variant}\""),
            ErrorKind::InvalidType {
                unexpected,
                expected,
            } => write!(f, "invalid value: expected {expected}, found {unexpected}"),
            ErrorKind::Message(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self {
            pos: None,
            kind: ErrorKind::Message(msg.to_string()),
        }
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self {
            pos: None,
            kind: ErrorKind::InvalidType {
                unexpected: unexp.to_string(),
                expected: exp.to_string(),
            },
        }
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::invalid_type(unexp, exp)
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Self {
            pos: None,
            kind: ErrorKind::UnknownField {
                field: field.to_owned(),
                expected,
            },
        }
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Self {
            pos: None,
            kind: ErrorKind::UnknownVariant {
                variant: variant.to_owned(),
                expected,
            },
        }
    }

    fn missing_field(field: &'static str) -> Self {
        Self {
            pos: None,
            kind: ErrorKind::MissingField(field),
        }
    }
}

fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

fn parse_int(text: &str) -> Option<i128> {
    let (neg, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let value = if let Some(hex) = digits.strip_prefix("0x") {
        i128::from_str_radix(hex, 16).ok()?
    } else if let Some(oct) = digits.strip_prefix("0o") {
        i128::from_str_radix(oct, 8).ok()?
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()?
    } else {
        return None;
    };
    Some(if neg { -value } else { value })
}

fn parse_float(text: &str) -> Option<f64> {
    match text {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => Some(f64::NAN),
        _ => {
            let ok = text
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
                && text.bytes().any(|b| b.is_ascii_digit());
            if ok { text.parse().ok() } else { None }
        }
    }
}

impl<'a> Node {
    fn unexpected(&'a self) -> de::Unexpected<'a> {
        match &self.kind {
            NodeKind::Scalar { text, plain } => {
                if *plain {
                    if is_null(text) {
                        return de::Unexpected::Unit;
                    }
                    if let Some(b) = parse_bool(text) {
                        return de::Unexpected::Bool(b);
                    }
                    if let Some(i) = parse_int(text) {
                        if let Ok(v) = i64::try_from(i) {
                            return de::Unexpected::Signed(v);
                        }
                    } else if let Some(f) = parse_float(text) {
                        return de::Unexpected::Float(f);
                    }
                }
                de::Unexpected::Str(text)
            }
            NodeKind::Seq(_) => de::Unexpected::Seq,
            NodeKind::Map(_) => de::Unexpected::Map,
        }
    }

    fn invalid<V: de::Expected>(&self, exp: &V) -> Error {
        <Error as de::Error>::invalid_type(self.unexpected(), exp).at(self.pos)
    }
}

/// Deserializes `T` from a node.
pub(crate) fn from_node<'de, T: de::Deserialize<'de>>(node: &'de Node) -> Result<T, Error> {
    T::deserialize(node)
}

macro_rules! int_method {
    ($method:ident, $visit:ident, $ty:ty) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match &self.kind {
                NodeKind::Scalar { text, .. } => match parse_int(text) {
                    Some(i) => match <$ty>::try_from(i) {
                        Ok(v) => visitor.$visit(v).map_err(|e: Error| e.at(self.pos)),
                        Err(_) => Err(Error {
                            pos: Some(self.pos),
                            kind: ErrorKind::Message(format!(
                                "number {i} is out of range for {}",
                                stringify!($ty)
                            )),
                        }),
                    },
                    None => Err(self.invalid(&visitor)),
                },
                _ => Err(self.invalid(&visitor)),
            }
        }
    };
}

impl<'de> de::Deserializer<'de> for &'de Node {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = match &self.kind {
            NodeKind::Scalar { text, plain: true } => {
                if is_null(text) {
                    visitor.visit_unit()
                } else if let Some(b) = parse_bool(text) {
                    visitor.visit_bool(b)
                } else if let Some(i) = parse_int(text) {
                    if let Ok(v) = u64::try_from(i) {
                        visitor.visit_u64(v)
                    } else if let Ok(v) = i64::try_from(i) {
                        visitor.visit_i64(v)
                    } else {
                        visitor.visit_f64(i as f64)
                    }
                } else if let Some(f) = parse_float(text) {
                    visitor.visit_f64(f)
                } else {
                    visitor.visit_str(text)
                }
            }
            NodeKind::Scalar { text, plain: false } => visitor.visit_str(text),
            NodeKind::Seq(items) => visitor.visit_seq(SeqAccess { iter: items.iter() }),
            NodeKind::Map(entries) => visitor.visit_map(MapAccess {
                iter: entries.iter(),
                value: None,
            }),
        };
        r.map_err(|e: Error| e.at(self.pos))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.kind {
            NodeKind::Scalar { text, .. } => match parse_bool(text) {
                Some(b) => visitor.visit_bool(b).map_err(|e: Error| e.at(self.pos)),
                None => Err(self.invalid(&visitor)),
            },
            _ => Err(self.invalid(&visitor)),
        }
    }

    int_method!(deserialize_i8, visit_i8, i8);
    int_method!(deserialize_i16, visit_i16, i16);
    int_method!(deserialize_i32, visit_i32, i32);
    int_method!(deserialize_i64, visit_i64, i64);
    int_method!(deserialize_u8, visit_u8, u8);
    int_method!(deserialize_u16, visit_u16, u16);
    int_method!(deserialize_u32, visit_u32, u32);
    int_method!(deserialize_u64, visit_u64, u64);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.kind {
            NodeKind::Scalar { text, .. } => {
                let v = parse_int(text)
                    .map(|i| i as f64)
                    .or_else(|| parse_float(text));
                match v {
                    Some(f) => visitor.visit_f64(f).map_err(|e: Error| e.at(self.pos)),
                    None => Err(self.invalid(&visitor)),
                }
            }
            _ => Err(self.invalid(&visitor)),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.kind {
            NodeKind::Scalar { text, plain } if !(*plain && is_null(text)) => {
                visitor.visit_str(text).map_err(|e: Error| e.at(self.pos))
            }
            _ => Err(self.invalid(&visitor)),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        Err(self.invalid(&visitor))
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        Err(self.invalid(&visitor))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.kind {
            NodeKind::Scalar { text, plain: true } if is_null(text) => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.kind {
            NodeKind::Scalar { text, plain: true } if is_null(text) => visitor.visit_unit(),
            _ => Err(self.invalid(&visitor)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor
            .visit_newtype_struct(self)
            .map_err(|e: Error| e.at(self.pos))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.kind {
            NodeKind::Seq(items) => visitor
                .visit_seq(SeqAccess { iter: items.iter() })
                .map_err(|e: Error| e.at(self.pos)),
            _ => Err(self.invalid(&visitor)),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.kind {
            NodeKind::Map(entries) => visitor
                .visit_map(MapAccess {
                    iter: entries.iter(),
                    value: None,
                })
                .map_err(|e: Error| e.at(self.pos)),
            _ => Err(self.invalid(&visitor)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match &self.kind {
            NodeKind::Scalar { .. } => visitor
                .visit_enum(EnumAccess {
                    variant: self,
                    value: None,
                })
                .map_err(|e: Error| e.at(self.pos)),
            NodeKind::Map(entries) if entries.len() == 1 => {
                let (k, v) = &entries[0];
                visitor
                    .visit_enum(EnumAccess {
                        variant: k,
                        value: Some(v),
                    })
                    .map_err(|e: Error| e.at(self.pos))
            }
            _ => Err(Error {
                pos: Some(self.pos),
                kind: ErrorKind::Message(
                    "expected a single word or a mapping with exactly one key".into(),
                ),
            }),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
}

struct SeqAccess<'de> {
    iter: std::slice::Iter<'de, Node>,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        match self.iter.next() {
            Some(node) => seed
                .deserialize(node)
                .map(Some)
                .map_err(|e: Error| e.at(node.pos)),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct MapAccess<'de> {
    iter: std::slice::Iter<'de, (Node, Node)>,
    value: Option<&'de Node>,
}

impl<'de> de::MapAccess<'de> for MapAccess<'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.iter.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(k)
                    .map(Some)
                    .map_err(|e: Error| e.at(k.pos))
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.value.take() {
            Some(v) => seed.deserialize(v).map_err(|e: Error| e.at(v.pos)),
            None => Err(de::Error::custom("value requested before key")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct EnumAccess<'de> {
    variant: &'de Node,
    value: Option<&'de Node>,
}

impl<'de> de::EnumAccess<'de> for EnumAccess<'de> {
    type Error = Error;
    type Variant = VariantAccess<'de>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), Error> {
        let v = seed
            .deserialize(self.variant)
            .map_err(|e: Error| e.at(self.variant.pos))?;
        Ok((
            v,
            VariantAccess {
                value: self.value,
                pos: self.variant.pos,
            },
        ))
    }
}

struct VariantAccess<'de> {
    value: Option<&'de Node>,
    pos: Position,
}

impl<'de> VariantAccess<'de> {
    fn content(&self) -> Result<&'de Node, Error> {
        self.value.ok_or_else(|| Error {
            pos: Some(self.pos),
            kind: ErrorKind::Message("this value needs content: write it as `name: value`".into()),
        })
    }
}

impl<'de> de::VariantAccess<'de> for VariantAccess<'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        match self.value {
            None => Ok(()),
            Some(v) => <() as de::Deserialize>::deserialize(v).map_err(|e: Error| e.at(v.pos)),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        let v = self.content()?;
        seed.deserialize(v).map_err(|e: Error| e.at(v.pos))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        let v = self.content()?;
        de::Deserializer::deserialize_seq(v, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let v = self.content()?;
        de::Deserializer::deserialize_map(v, visitor)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde::Deserialize;
    use serde_saphyr::granit_parser::Parser;

    fn tree(text: &str) -> (Node, Vec<DuplicateKey>) {
        let mut b = TreeBuilder::default();
        for ev in Parser::new_from_str(text) {
            let (ev, span) = ev.unwrap();
            b.event(&ev, &span);
        }
        let dups = b.duplicates.clone();
        (b.finish().unwrap(), dups)
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct T {
        n: Option<u16>,
        s: String,
        f: f64,
        b: bool,
        list: Vec<String>,
        e: E,
        u: U,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum E {
        Below(f64),
        Outside([f64; 2]),
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum U {
        Qemu,
        Lxc,
    }

    #[test]
    fn deserializer_should_resolve_scalars_aliases_and_enum_forms() {
        let (node, dups) = tree(
            "n: 0x10\ns: 'true'\nf: 3\nb: true\nlist: [&a x, *a]\ne: {outside: [1, 2.5]}\nu: lxc\n",
        );
        assert!(dups.is_empty());
        let t: T = from_node(&node).unwrap();
        assert_eq!(
            t,
            T {
                n: Some(16),
                s: "true".into(),
                f: 3.0,
                b: true,
                list: vec!["x".into(), "x".into()],
                e: E::Outside([1.0, 2.5]),
                u: U::Lxc,
            }
        );
        let (node, _) = tree("n: ~\ns: a\nf: .inf\nb: false\nlist: []\ne: {below: -1}\nu: qemu\n");
        let t: T = from_node(&node).unwrap();
        assert_eq!((t.n, t.e, t.u), (None, E::Below(-1.0), U::Qemu));
    }

    #[test]
    fn merge_keys_should_apply_with_own_keys_winning() {
        let (node, dups) = tree(
            "base: &b {s: base, f: 1, b: true}\nt:\n  <<: *b\n  s: own\n  n: 7\n  list: []\n  e: {below: 1}\n  u: qemu\n",
        );
        assert!(dups.is_empty());
        #[derive(Deserialize)]
        struct Outer {
            #[allow(dead_code)]
            base: serde::de::IgnoredAny,
            t: T,
        }
        let o: Outer = from_node(&node).unwrap();
        assert_eq!(
            (o.t.s.as_str(), o.t.f, o.t.b, o.t.n),
            ("own", 1.0, true, Some(7))
        );
    }

    #[test]
    fn deserializer_errors_should_carry_the_position_of_their_node() {
        let (node, _) = tree("n: 70000\ns: a\nf: 1\nb: true\nlist: []\ne: {below: 1}\nu: qemu\n");
        let err = from_node::<T>(&node).unwrap_err();
        assert_eq!(err.pos, Some(Position { line: 1, column: 4 }));
        let (node, _) = tree("n: 1\ns: a\nf: 1\nb: yes\nlist: []\ne: {below: 1}\nu: qemu\n");
        let err = from_node::<T>(&node).unwrap_err();
        assert_eq!(err.pos, Some(Position { line: 4, column: 4 }));
        assert_eq!(
            err.to_string(),
            "invalid value: expected a boolean, found string \"yes\""
        );
        let (_, dups) = tree("a: 1\nb: 2\na: 3\n");
        assert_eq!(dups.len(), 1);
        assert_eq!(dups[0].pos, Position { line: 3, column: 1 });
    }
}
