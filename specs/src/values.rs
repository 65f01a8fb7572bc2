//! Value newtypes of the spec format: names, vmids, byte sizes, durations, register addresses,
//! times of day, time zones and URLs, each built by `parse`/`TryFrom` so that the rest of the
//! system only ever sees valid values. Pure parsing; no I/O, no clock.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use crate::diagnostic::Code;

/// Why a value did not parse: the diagnostic class and a lowercase message naming the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValueError {
    /// The diagnostic class this error is reported under (`invalid-duration`, ...).
    pub code: Code,
    /// Human-readable explanation, lowercase, no trailing period.
    pub message: String,
}

impl ValueError {
    fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Marker placed in front of serde error messages so that the loader can recover the
/// diagnostic class of a value error from the YAML deserializer's free-form message.
pub(crate) const CODE_OPEN: char = '\u{1}';
pub(crate) const CODE_CLOSE: char = '\u{2}';

fn de_error<E: de::Error>(err: ValueError) -> E {
    E::custom(format_args!(
        "{CODE_OPEN}{}{CODE_CLOSE}{}",
        err.code.as_str(),
        err.message
    ))
}

/// Implements `Deserialize` (from a YAML string, via `FromStr`), `Serialize` (as the string form),
/// `TryFrom<&str>` and a string JSON Schema for a newtype.
macro_rules! string_value {
    ($ty:ident, $schema_name:literal, $description:literal, $pattern:expr) => {
        impl TryFrom<&str> for $ty {
            type Error = ValueError;
            fn try_from(value: &str) -> Result<Self, Self::Error> {
                value.parse()
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(de_error)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl schemars::JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $schema_name.into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                let pattern: Option<&str> = $pattern;
                match pattern {
                    Some(p) => schemars::json_schema!({
                        "type": "string", "description": $description, "pattern": p
                    }),
                    None => schemars::json_schema!({"type": "string", "description": $description}),
                }
            }
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Name

/// A resource name: a DNS label (RFC 1123): 1 to 63 characters of `a-z`, `0-9` and `-`,
/// starting and ending with a letter or digit. Used for `metadata.name` and references.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    /// Parses a DNS label.
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        let fail = |why: &str| {
            Err(ValueError::new(
                Code::InvalidName,
                format!("invalid name \"{text}\": {why}"),
            ))
        };
        if text.is_empty() {
            return fail("must not be empty");
        }
        if text.len() > 63 {
            return fail("must be at most 63 characters");
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return fail("use only lowercase letters, digits and '-' (a DNS label)");
        }
        if text.starts_with('-') || text.ends_with('-') {
            return fail("must start and end with a letter or digit");
        }
        Ok(Self(text.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Name {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

string_value!(
    Name,
    "Name",
    "a DNS label: lowercase letters, digits and '-', at most 63 characters",
    Some("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
);

// ---------------------------------------------------------------------------------------------
// Ident

/// An identifier inside a resource, such as a register name (`flow_rate`): 1 to 63 characters
/// of ASCII letters, digits, `_` and `-`, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ident(String);

impl Ident {
    /// Parses an identifier.
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        let ok = !text.is_empty()
            && text.len() <= 63
            && text.starts_with(|c: char| c.is_ascii_alphabetic())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(ValueError::new(
                Code::InvalidName,
                format!(
                    "invalid identifier \"{text}\": use a letter followed by letters, digits, '_' or '-' (at most 63)"
                ),
            ))
        }
    }

    /// The identifier as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Ident {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for Ident {
    fn borrow(&self) -> &str {
        &self.0
    }
}

string_value!(
    Ident,
    "Ident",
    "an identifier: a letter, then letters, digits, '_' or '-'",
    Some("^[A-Za-z][A-Za-z0-9_-]{0,62}$")
);

// ---------------------------------------------------------------------------------------------
// Vmid

/// A Proxmox VE guest id, `100..=999999999` (the range PVE accepts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Vmid(u32);

impl Vmid {
    /// The smallest vmid PVE accepts.
    pub const MIN: u32 = 100;
    /// The largest vmid PVE accepts.
    pub const MAX: u32 = 999_999_999;

    /// The numeric id.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u64> for Vmid {
    type Error = ValueError;
    fn try_from(value: u64) -> Result<Self, Self::Error> {
        if (u64::from(Self::MIN)..=u64::from(Self::MAX)).contains(&value) {
            Ok(Self(value as u32))
        } else {
            Err(ValueError::new(
                Code::InvalidVmid,
                format!("invalid vmid {value}: must be between 100 and 999999999"),
            ))
        }
    }
}

impl FromStr for Vmid {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let n: u64 = s.trim().parse().map_err(|_| {
            ValueError::new(
                Code::InvalidVmid,
                format!("invalid vmid \"{s}\": expected a whole number between 100 and 999999999"),
            )
        })?;
        Self::try_from(n)
    }
}

impl fmt::Display for Vmid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for Vmid {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Vmid;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a vmid between 100 and 999999999")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Vmid, E> {
                Vmid::try_from(v).map_err(de_error)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Vmid, E> {
                Vmid::try_from(u64::try_from(v).unwrap_or(0)).map_err(de_error)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Vmid, E> {
                v.parse().map_err(de_error)
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl schemars::JsonSchema for Vmid {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Vmid".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "integer", "minimum": 100, "maximum": 999_999_999u32,
            "description": "a Proxmox VE guest id"
        })
    }
}

// ---------------------------------------------------------------------------------------------
// RegisterAddress

/// A Modbus register or coil address, `0..=65535` (the protocol's zero-based PDU address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct RegisterAddress(u16);

impl RegisterAddress {
    /// The address as a number.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl From<u16> for RegisterAddress {
    fn from(value: u16) -> Self {
        Self(value)
    }
}

impl TryFrom<i64> for RegisterAddress {
    type Error = ValueError;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        u16::try_from(value).map(Self).map_err(|_| {
            ValueError::new(
                Code::InvalidAddress,
                format!("invalid register address {value}: must be between 0 and 65535"),
            )
        })
    }
}

impl fmt::Display for RegisterAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for RegisterAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = RegisterAddress;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a register address between 0 and 65535")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RegisterAddress, E> {
                RegisterAddress::try_from(i64::try_from(v).unwrap_or(i64::MAX)).map_err(de_error)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RegisterAddress, E> {
                RegisterAddress::try_from(v).map_err(de_error)
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl schemars::JsonSchema for RegisterAddress {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RegisterAddress".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "integer", "minimum": 0, "maximum": 65535,
            "description": "zero-based Modbus address"
        })
    }
}

// ---------------------------------------------------------------------------------------------
// ByteSize

/// A size in bytes.
///
/// Accepted forms: binary units `KiB`, `MiB`, `GiB`, `TiB`; PVE's single-letter units `K`, `M`,
/// `G`, `T`, which Proxmox VE means as powers of 1024 (so `8G` = `8GiB`); `B` for bytes; and a
/// plain number, which means **MiB**, the unit PVE uses for `memory`, `swap` and `balloon`
/// (write disk sizes with a unit, as PVE's own `size=32G` does). Decimal units (`GB`) are
/// rejected because PVE has none and guessing would be wrong by 7%.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(u64);

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
const TIB: u64 = 1024 * GIB;

impl ByteSize {
    /// A size of `bytes` bytes.
    pub fn from_bytes(bytes: u64) -> Self {
        Self(bytes)
    }

    /// A size of `mib` MiB.
    pub fn from_mib(mib: u64) -> Self {
        Self(mib.saturating_mul(MIB))
    }

    /// The size in bytes.
    pub fn as_bytes(self) -> u64 {
        self.0
    }

    /// The size in whole MiB, rounded down (PVE's unit for memory).
    pub fn as_mib(self) -> u64 {
        self.0 / MIB
    }

    /// The size in whole GiB, rounded down (PVE's usual unit for disks).
    pub fn as_gib(self) -> u64 {
        self.0 / GIB
    }

    /// The size written the way PVE writes disk sizes: the largest of `T`, `G`, `M`, `K` that
    /// divides it exactly (`32G`, `512M`), else bytes.
    pub fn to_pve(self) -> String {
        for (unit, factor) in [("T", TIB), ("G", GIB), ("M", MIB), ("K", KIB)] {
            if self.0 != 0 && self.0.is_multiple_of(factor) {
                return format!("{}{unit}", self.0 / factor);
            }
        }
        self.0.to_string()
    }

    /// Parses a size (see the type documentation for the accepted forms).
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        let fail = || {
            ValueError::new(
                Code::InvalidByteSize,
                format!(
                    "invalid byte size \"{text}\": expected a number with a unit such as 512MiB, 4GiB or 32G"
                ),
            )
        };
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        if num.is_empty() {
            return Err(fail());
        }
        let n: u64 = num.parse().map_err(|_| fail())?;
        let factor = match unit.trim() {
            "" => MIB,
            "B" => 1,
            "K" | "KiB" => KIB,
            "M" | "MiB" => MIB,
            "G" | "GiB" => GIB,
            "T" | "TiB" => TIB,
            _ => return Err(fail()),
        };
        n.checked_mul(factor).map(Self).ok_or_else(fail)
    }
}

impl FromStr for ByteSize {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for ByteSize {
    type Error = ValueError;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl fmt::Display for ByteSize {
    /// Writes the largest binary unit that divides the size exactly (`4GiB`, `512MiB`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, factor) in [("TiB", TIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)] {
            if self.0 != 0 && self.0.is_multiple_of(factor) {
                return write!(f, "{}{unit}", self.0 / factor);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 512MiB, 4GiB or 32G")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize::from_mib(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v).map(ByteSize::from_mib).map_err(|_| {
                    de_error(ValueError::new(
                        Code::InvalidByteSize,
                        format!("invalid byte size {v}: must not be negative"),
                    ))
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(de_error)
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl schemars::JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "a size: 512MiB, 4GiB, PVE's 32G or 512M; a plain number means MiB",
            "anyOf": [
                {"type": "string", "pattern": "^[0-9]+ ?(B|K|M|G|T|KiB|MiB|GiB|TiB)?$"},
                {"type": "integer", "minimum": 0}
            ]
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Duration

/// A duration written as a whole number and a unit: `500ms`, `10s`, `5m`, `2h`, `1d`.
/// Several parts may be combined (`1h30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(std::time::Duration);

impl Duration {
    /// The duration as a standard library value.
    pub fn as_std(self) -> std::time::Duration {
        self.0
    }

    /// Whole milliseconds.
    pub fn as_millis(self) -> u128 {
        self.0.as_millis()
    }

    /// Parses a duration such as `500ms`, `10s`, `5m`, `2h`, `1d` or `1h30m`.
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        let fail = || {
            ValueError::new(
                Code::InvalidDuration,
                format!(
                    "invalid duration \"{text}\": expected a number followed by ms, s, m, h or d (like 500ms, 10s, 5m, 2h, 1d)"
                ),
            )
        };
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(fail());
        }
        let mut total: u128 = 0;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(fail)?;
            if digits == 0 {
                return Err(fail());
            }
            let n: u128 = rest[..digits].parse().map_err(|_| fail())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let millis = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(fail()),
            };
            rest = &rest[unit_len..];
            total = n
                .checked_mul(millis)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(fail)?;
        }
        let millis = u64::try_from(total).map_err(|_| fail())?;
        Ok(Self(std::time::Duration::from_millis(millis)))
    }
}

impl From<std::time::Duration> for Duration {
    fn from(value: std::time::Duration) -> Self {
        Self(value)
    }
}

impl FromStr for Duration {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Duration {
    /// Writes the largest unit that divides the duration exactly (`5m`, `1500ms`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        for (unit, factor) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1000),
        ] {
            if ms != 0 && ms.is_multiple_of(factor) {
                return write!(f, "{}{unit}", ms / factor);
            }
        }
        write!(f, "{ms}ms")
    }
}

string_value!(
    Duration,
    "Duration",
    "a duration: 500ms, 10s, 5m, 2h, 1d",
    Some("^([0-9]+(ms|s|m|h|d))+$")
);

// ---------------------------------------------------------------------------------------------
// TimeOfDay

/// A wall-clock time `HH:MM` (24-hour), used in handshake time windows. `24:00` is allowed as
/// the end of a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay {
    minutes: u16,
}

impl TimeOfDay {
    /// Minutes since midnight, `0..=1440`.
    pub fn minutes(self) -> u16 {
        self.minutes
    }

    /// Parses `HH:MM`.
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        let fail = || {
            ValueError::new(
                Code::InvalidTimeWindow,
                format!("invalid time of day \"{text}\": expected HH:MM between 00:00 and 24:00"),
            )
        };
        let (h, m) = text.split_once(':').ok_or_else(fail)?;
        if h.len() != 2 || m.len() != 2 {
            return Err(fail());
        }
        let h: u16 = h.parse().map_err(|_| fail())?;
        let m: u16 = m.parse().map_err(|_| fail())?;
        if m >= 60 || h > 24 || (h == 24 && m != 0) {
            return Err(fail());
        }
        Ok(Self {
            minutes: h * 60 + m,
        })
    }
}

impl FromStr for TimeOfDay {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.minutes / 60, self.minutes % 60)
    }
}

string_value!(
    TimeOfDay,
    "TimeOfDay",
    "a time of day, HH:MM (24-hour)",
    Some("^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$")
);

// ---------------------------------------------------------------------------------------------
// TimeZone

/// An IANA time zone name (`Europe/Berlin`, `UTC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeZone(chrono_tz::Tz);

impl TimeZone {
    /// The zone for date arithmetic.
    pub fn tz(self) -> chrono_tz::Tz {
        self.0
    }

    /// Parses an IANA zone name.
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        text.parse::<chrono_tz::Tz>().map(Self).map_err(|_| {
            ValueError::new(
                Code::InvalidTimeZone,
                format!(
                    "invalid time zone \"{text}\": expected an IANA zone name such as Europe/Berlin or UTC"
                ),
            )
        })
    }
}

impl FromStr for TimeZone {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for TimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

string_value!(
    TimeZone,
    "TimeZone",
    "an IANA time zone name such as Europe/Berlin",
    None
);

// ---------------------------------------------------------------------------------------------
// HttpUrl

/// An absolute `http` or `https` URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpUrl(url::Url);

impl HttpUrl {
    /// The parsed URL.
    pub fn url(&self) -> &url::Url {
        &self.0
    }

    /// Whether the scheme is `https`.
    pub fn is_https(&self) -> bool {
        self.0.scheme() == "https"
    }

    /// Parses an absolute http(s) URL.
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        match url::Url::parse(text) {
            Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => {
                Ok(Self(u))
            }
            Ok(_) => Err(ValueError::new(
                Code::InvalidUrl,
                format!("invalid url \"{text}\": expected an http:// or https:// url with a host"),
            )),
            Err(e) => Err(ValueError::new(
                Code::InvalidUrl,
                format!("invalid url \"{text}\": {e}"),
            )),
        }
    }
}

impl FromStr for HttpUrl {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

string_value!(
    HttpUrl,
    "HttpUrl",
    "an absolute http:// or https:// url",
    Some("^https?://")
);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn byte_size_should_read_binary_and_pve_units() {
        assert_eq!(ByteSize::parse("512MiB").unwrap().as_mib(), 512);
        assert_eq!(ByteSize::parse("4GiB").unwrap().as_mib(), 4096);
        assert_eq!(ByteSize::parse("8G").unwrap().as_gib(), 8);
        assert_eq!(ByteSize::parse("512M").unwrap().as_mib(), 512);
        assert_eq!(ByteSize::parse("2048").unwrap().as_mib(), 2048);
        assert_eq!(ByteSize::parse("32G").unwrap().to_pve(), "32G");
        assert_eq!(ByteSize::parse("4GiB").unwrap().to_string(), "4GiB");
        assert!(ByteSize::parse("4GB").is_err());
        assert!(ByteSize::parse("G").is_err());
        assert!(ByteSize::parse("99999999999999999999T").is_err());
    }

    #[test]
    fn duration_should_read_every_unit_and_combinations() {
        assert_eq!(Duration::parse("500ms").unwrap().as_millis(), 500);
        assert_eq!(Duration::parse("10s").unwrap().as_millis(), 10_000);
        assert_eq!(Duration::parse("5m").unwrap().as_millis(), 300_000);
        assert_eq!(Duration::parse("2h").unwrap().as_millis(), 7_200_000);
        assert_eq!(Duration::parse("1d").unwrap().as_millis(), 86_400_000);
        assert_eq!(Duration::parse("1h30m").unwrap().to_string(), "90m");
        for bad in ["", "5", "m", "5 minutes", "1.5s", "-1s"] {
            assert!(Duration::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn name_should_accept_dns_labels_only() {
        assert!(Name::parse("fm-1").is_ok());
        for bad in ["", "Web", "-a", "a-", "a_b", &"a".repeat(64)] {
            assert!(Name::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn vmid_and_address_should_check_their_ranges() {
        assert!(Vmid::try_from(99).is_err());
        assert!(Vmid::try_from(100).is_ok());
        assert!(Vmid::try_from(999_999_999).is_ok());
        assert!(Vmid::try_from(1_000_000_000).is_err());
        assert!(RegisterAddress::try_from(65_535i64).is_ok());
        assert!(RegisterAddress::try_from(65_536i64).is_err());
        assert!(RegisterAddress::try_from(-1i64).is_err());
    }

    #[test]
    fn time_values_should_parse() {
        assert_eq!(TimeOfDay::parse("08:30").unwrap().minutes(), 510);
        assert!(TimeOfDay::parse("24:00").is_ok());
        assert!(TimeOfDay::parse("25:00").is_err());
        assert!(TimeOfDay::parse("8:30").is_err());
        assert!(TimeZone::parse("Europe/Berlin").is_ok());
        assert!(TimeZone::parse("Mars/Olympus").is_err());
    }
}
