//! The finding type shared by loading and validation: where (file, line, column, field path),
//! how bad (severity), which class (a stable `code`) and what (message). Plain data; rendering
//! lives in `render`.

use std::fmt;

use serde::Serialize;

/// How serious a finding is. Errors fail `mycopod validate`; warnings only with `--strict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Legal but suspicious.
    Warning,
    /// The repository cannot be applied.
    Error,
}

impl Severity {
    /// `error` or `warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident => $text:literal,)*) => {
        /// The stable class of a diagnostic. The kebab-case text is part of the output contract
        /// (JSON `code`, the `error[code]` header): never rename one.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code {
            $($(#[$doc])* $variant,)*
        }

        impl Code {
            /// Every code, in declaration order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The kebab-case text of the code.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $text,)*
                }
            }

            /// The code with the given kebab-case text.
            pub fn from_text(text: &str) -> Option<Code> {
                match text {
                    $($text => Some(Code::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

codes! {
    /// The file is not well-formed YAML.
    YamlSyntax => "yaml-syntax",
    /// A mapping repeats a key.
    DuplicateKey => "duplicate-key",
    /// A value has the wrong type (a list where a number belongs, ...).
    InvalidType => "invalid-type",
    /// A field that the kind does not have.
    UnknownField => "unknown-field",
    /// A required field is absent.
    MissingField => "missing-field",
    /// A value is not one of the allowed words (`type: kvm`).
    UnknownVariant => "unknown-variant",
    /// `apiVersion` is not `mycopod/v1`.
    UnknownApiVersion => "unknown-api-version",
    /// `kind` is not one of the seven kinds.
    UnknownKind => "unknown-kind",
    /// A name or identifier is not well-formed.
    InvalidName => "invalid-name",
    /// A vmid outside 100..=999999999.
    InvalidVmid => "invalid-vmid",
    /// A malformed byte size.
    InvalidByteSize => "invalid-byte-size",
    /// A malformed duration.
    InvalidDuration => "invalid-duration",
    /// A register address outside 0..=65535.
    InvalidAddress => "invalid-address",
    /// A malformed time of day or time window.
    InvalidTimeWindow => "invalid-time-window",
    /// An unknown time zone.
    InvalidTimeZone => "invalid-timezone",
    /// A malformed URL.
    InvalidUrl => "invalid-url",
    /// A number outside the range its field allows, or `min` above `max`.
    InvalidRange => "invalid-range",
    /// Two resources of one kind share a name.
    DuplicateName => "duplicate-name",
    /// Two guests of one cluster share a vmid.
    DuplicateVmid => "duplicate-vmid",
    /// Two registers of one device share a name.
    DuplicateRegister => "duplicate-register",
    /// A reference to a cluster, device, register or channel that does not exist.
    UnknownReference => "unknown-reference",
    /// Two registers of one table cover the same address.
    RegisterOverlap => "register-overlap",
    /// A register runs past address 65535.
    RegisterOutOfRange => "register-out-of-range",
    /// A register's `length` is too short for its type, or a string has none.
    RegisterTooShort => "register-too-short",
    /// A type that the table cannot hold (an `f32` coil), or a writable input register.
    RegisterTable => "register-table",
    /// A setpoint on a register that is not `writable`.
    SetpointNotWritable => "setpoint-not-writable",
    /// A setpoint outside the register's `min`/`max`.
    SetpointOutOfRange => "setpoint-out-of-range",
    /// A setpoint whose value does not fit the register's type.
    SetpointType => "setpoint-type",
    /// An alert threshold on a register that is not a number.
    NonNumericRegister => "non-numeric-register",
    /// A secret written inline where a reference is required.
    InlineSecret => "inline-secret",
    /// A qemu-only field on an lxc guest, or the reverse.
    WrongGuestType => "wrong-guest-type",
    /// Neither the guest nor its cluster names a node.
    MissingNode => "missing-node",
    /// Credentials that are neither a token nor a user with a password reference.
    InvalidAuth => "invalid-auth",
    /// TLS verification turned off.
    InsecureTls => "insecure-tls",
    /// A guest without `vmid` (PVE picks one; the controller cannot adopt it reliably).
    MissingVmid => "missing-vmid",
    /// A policy asks for more approvals than its roles can plausibly give.
    ImplausibleApprovals => "implausible-approvals",
    /// A declaration without text.
    EmptyDeclaration => "empty-declaration",
    /// A secret reference the server's `[[secrets]]` list does not allow (unlisted, or one of
    /// the server's own secrets). Found by `plan` and `serve`, which know the list.
    SecretNotAllowed => "secret-not-allowed",
    /// A listed secret that would be sent to a destination its entry does not name.
    SecretDestination => "secret-destination",
    /// A file of the folder that is not read: a symlink leading outside the folder (or
    /// nowhere), or not a regular file (a device, FIFO or socket).
    NotRead => "not-read",
    /// Input past one of the loader's limits (file size, bytes in all, documents per file,
    /// keys per mapping): not read, or not deserialized, so that hostile input costs bounded
    /// memory and time.
    LimitExceeded => "limit-exceeded",
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// One finding, pointing at a field of a document.
///
/// `line` and `column` are 1-based (column counts characters); both are 0 when the finding has
/// no position (an empty file). `path` is the field path inside the document
/// (`spec.registers[2].address`), empty for the document as a whole.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Diagnostic {
    /// The file, as given to the loader (relative to the loaded path's parent when loaded from
    /// a directory).
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
    /// Field path in the document, like `spec.registers[2].address`.
    pub path: String,
    /// Error or warning.
    pub severity: Severity,
    /// Stable class of the finding.
    pub code: Code,
    /// Lowercase explanation without a trailing period.
    pub message: String,
}

impl Diagnostic {
    /// An error about a file as a whole, or a place in it outside any document's fields.
    pub fn file_error(
        file: &str,
        line: u32,
        column: u32,
        code: Code,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            file: file.to_owned(),
            line,
            column,
            path: String::new(),
            severity: Severity::Error,
            code,
            message: message.into(),
        }
    }

    /// Whether this is an error (not a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}
