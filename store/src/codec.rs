//! How the domain enums and small helper types travel through sqlx: enums as their text
//! spelling on both backends, scope lists as comma-separated text, times truncated to the
//! microsecond both backends keep. No SQL here.

use chrono::{DateTime, SubsecRound, TimeZone, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Database, Decode, Encode, Type};

use crate::model::{
    ActionStatus, AlertState, ConfigKind, Decision, DeliveryStatus, Role, RunStatus, Scope, Trigger,
};

macro_rules! text_codec {
    ($($t:ty),+ $(,)?) => {$(
        impl<DB: Database> Type<DB> for $t
        where
            String: Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <String as Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <String as Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: Database> Encode<'q, DB> for $t
        where
            &'static str: Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as Database>::ArgumentBuffer,
            ) -> Result<IsNull, BoxDynError> {
                <&'static str as Encode<'q, DB>>::encode(self.as_str(), buf)
            }
        }

        impl<'r, DB: Database> Decode<'r, DB> for $t
        where
            &'r str: Decode<'r, DB>,
        {
            fn decode(value: <DB as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
                let text = <&'r str as Decode<'r, DB>>::decode(value)?;
                Ok(text.parse::<$t>()?)
            }
        }
    )+};
}

text_codec!(
    Role,
    RunStatus,
    Trigger,
    ActionStatus,
    Decision,
    Scope,
    AlertState,
    ConfigKind,
    DeliveryStatus,
);

/// Truncates a time to the microsecond, the precision PostgreSQL keeps, so a value written
/// and read back compares equal on both backends (and hashes the same in the audit chain).
pub fn db_time(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// Microseconds since the Unix epoch, the storage form of reading times.
pub fn to_micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// The inverse of [`to_micros`]; out-of-range values clamp to the epoch.
pub fn from_micros(us: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(us).single().unwrap_or_default()
}

/// Joins scopes into their stored form (`read,trigger`).
pub fn scopes_to_text(scopes: &[Scope]) -> String {
    let mut sorted: Vec<Scope> = scopes.to_vec();
    sorted.sort();
    sorted.dedup();
    sorted
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses the stored form of scopes.
pub fn scopes_from_text(text: &str) -> Result<Vec<Scope>, crate::model::ParseEnumError> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect()
}
