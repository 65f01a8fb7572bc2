//! Domain vocabulary shared by the store, the reconcile loop, the API and telemetry: roles,
//! run and action states (with the legal transitions), triggers, decisions, API key scopes and
//! alert states. Plain data with `as_str`/`FromStr`; no I/O and no SQL here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A word that is not one of an enum's spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?} (expected one of: {})", expected.join(", "))]
pub struct ParseEnumError {
    /// Which vocabulary was being parsed (`role`, `run status`, ...).
    pub what: &'static str,
    /// The text that did not match.
    pub value: String,
    /// The accepted spellings.
    pub expected: &'static [&'static str],
}

/// Declares a string-backed enum with `as_str`, `ALL`, `Display`, `FromStr` and serde.
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable spelling used in the database, the API and the CLI.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseEnumError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(ParseEnumError {
                        what: $what,
                        value: s.to_owned(),
                        expected: &[$($text),+],
                    }),
                }
            }
        }
    };
}

string_enum! {
    /// What a user may do: `viewer` reads, `operator` also approves, triggers and acks,
    /// `admin` may do everything including users and API keys.
    Role, "role" {
        Viewer => "viewer",
        Operator => "operator",
        Admin => "admin",
    }
}

impl Role {
    /// Whether this role includes everything `other` may do.
    pub fn includes(self, other: Role) -> bool {
        self >= other
    }
}

string_enum! {
    /// The life of a run (see DESIGN.md, "Plans, runs and actions").
    RunStatus, "run status" {
        Observing => "observing",
        NoChanges => "no_changes",
        AwaitingApproval => "awaiting_approval",
        Approved => "approved",
        Applying => "applying",
        Succeeded => "succeeded",
        Failed => "failed",
        PartiallyFailed => "partially_failed",
        Rejected => "rejected",
        Expired => "expired",
        Superseded => "superseded",
        Invalid => "invalid",
    }
}

impl RunStatus {
    /// Whether no further transition leaves this state.
    pub fn is_terminal(self) -> bool {
        self.legal_next().is_empty()
    }

    /// Whether a run may be recorded in this state when it is created: observing (its
    /// trigger was just accepted; nothing is planned yet), waiting for approval, approved
    /// right away (nothing needs approval), or invalid (specs did not validate).
    pub fn is_initial(self) -> bool {
        matches!(
            self,
            RunStatus::Observing
                | RunStatus::AwaitingApproval
                | RunStatus::Approved
                | RunStatus::Invalid
        )
    }

    /// Whether a run observing may be planned into this state (with its plan and actions).
    pub fn is_planned(self) -> bool {
        matches!(
            self,
            RunStatus::AwaitingApproval | RunStatus::Approved | RunStatus::Invalid
        )
    }

    /// The states a run in this state may move to.
    pub fn legal_next(self) -> &'static [RunStatus] {
        use RunStatus::*;
        match self {
            // Observation and planning end it: planned (waiting, approved or invalid), nothing
            // to change, failed (it could not observe), or superseded by a run already
            // holding the same plan.
            Observing => &[
                AwaitingApproval,
                Approved,
                Invalid,
                NoChanges,
                Failed,
                Superseded,
            ],
            AwaitingApproval => &[Approved, Rejected, Expired, Superseded],
            Approved => &[Applying, Expired, Superseded],
            // Applying may end superseded when crash recovery re-plans and the hash changed.
            Applying => &[Succeeded, Failed, PartiallyFailed, Superseded],
            NoChanges | Succeeded | Failed | PartiallyFailed | Rejected | Expired | Superseded
            | Invalid => &[],
        }
    }

    /// Whether `self -> to` is a legal transition.
    pub fn can_transition_to(self, to: RunStatus) -> bool {
        self.legal_next().contains(&to)
    }
}

string_enum! {
    /// What started a run.
    Trigger, "trigger" {
        Poll => "poll",
        Webhook => "webhook",
        Manual => "manual",
        Drift => "drift",
        Cli => "cli",
    }
}

string_enum! {
    /// The state of one action of a run.
    ActionStatus, "action status" {
        Pending => "pending",
        /// Outside a policy time window, or waiting for an action it depends on.
        Waiting => "waiting",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Skipped => "skipped",
    }
}

impl ActionStatus {
    /// The states an action in this state may move to. `running -> pending` is a retry.
    pub fn legal_next(self) -> &'static [ActionStatus] {
        use ActionStatus::*;
        match self {
            Pending => &[Waiting, Running, Skipped, Failed],
            Waiting => &[Pending, Running, Skipped, Failed],
            Running => &[Pending, Succeeded, Failed],
            Succeeded | Failed | Skipped => &[],
        }
    }

    /// Whether `self -> to` is a legal transition.
    pub fn can_transition_to(self, to: ActionStatus) -> bool {
        self.legal_next().contains(&to)
    }

    /// Whether no further transition leaves this state.
    pub fn is_terminal(self) -> bool {
        self.legal_next().is_empty()
    }
}

string_enum! {
    /// An operator's decision on a run.
    Decision, "decision" {
        Approve => "approve",
        Reject => "reject",
    }
}

string_enum! {
    /// What an API key may be used for.
    Scope, "scope" {
        Read => "read",
        Trigger => "trigger",
        Ingest => "ingest",
    }
}

string_enum! {
    /// The state of an alert: pending until its `for` duration passed, then firing, then
    /// resolved once the value crossed back past the hysteresis.
    AlertState, "alert state" {
        Pending => "pending",
        Firing => "firing",
        Resolved => "resolved",
    }
}

string_enum! {
    /// The kinds of configuration that runs reconcile into the database.
    ConfigKind, "config kind" {
        AlertRule => "AlertRule",
        NotificationChannel => "NotificationChannel",
        HandshakePolicy => "HandshakePolicy",
    }
}

string_enum! {
    /// The outcome of one notification delivery attempt.
    DeliveryStatus, "delivery status" {
        /// Not attempted yet: recorded (attempt 0) with the alert transition that causes it,
        /// due at `next_attempt_at`.
        Queued => "queued",
        /// Failed, another attempt is scheduled at `next_attempt_at`.
        Retrying => "retrying",
        Succeeded => "succeeded",
        /// Failed and no further attempt will be made.
        Failed => "failed",
        /// Not sent: the alert's severity is below the channel's `minSeverity`.
        Skipped => "skipped",
    }
}

/// Writes `value` as canonical JSON: object keys sorted at every level, no whitespace, arrays
/// in order. Independent of serde_json's `preserve_order` feature. The one canonical form:
/// plan hashes, audit entries and stored spec hashes all use it.
pub fn canonical_json(value: &serde_json::Value) -> String {
    let mut out = Vec::with_capacity(256);
    write_canonical(value, &mut out);
    // Only serde_json's output and ASCII punctuation went in, so this is always UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn write_canonical(value: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            // Already sorted without `preserve_order`; sorting sorted input is one pass.
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(out, key);
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        other => write_scalar(out, other),
    }
}

/// A key or a leaf value, written as serde_json writes it. Writing into a `Vec` cannot fail.
fn write_scalar<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    if let Err(e) = serde_json::to_writer(&mut *out, value) {
        tracing::error!("canonical json: a value did not serialize: {e}");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn every_enum_should_parse_its_own_spelling() {
        for s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>().unwrap(), *s);
        }
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), *r);
        }
        for a in ActionStatus::ALL {
            assert_eq!(a.as_str().parse::<ActionStatus>().unwrap(), *a);
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn terminal_run_states_should_have_no_way_out() {
        use RunStatus::*;
        for s in [
            NoChanges,
            Succeeded,
            Failed,
            PartiallyFailed,
            Rejected,
            Expired,
            Superseded,
            Invalid,
        ] {
            assert!(s.is_terminal(), "{s}");
        }
        assert!(Approved.can_transition_to(Applying));
        assert!(!AwaitingApproval.can_transition_to(Applying));
        assert!(!Applying.can_transition_to(Approved));
        assert!(Observing.can_transition_to(NoChanges));
        assert!(!Observing.can_transition_to(Applying));
        assert!(Observing.is_initial() && !Observing.is_planned());
    }

    #[test]
    fn admin_should_include_operator_and_viewer() {
        assert!(Role::Admin.includes(Role::Operator));
        assert!(Role::Operator.includes(Role::Viewer));
        assert!(!Role::Viewer.includes(Role::Operator));
    }

    #[test]
    fn serde_should_use_the_same_spelling_as_as_str() {
        let json = serde_json::to_string(&RunStatus::PartiallyFailed).unwrap();
        assert_eq!(json, "\"partially_failed\"");
    }

    #[test]
    fn canonical_json_should_sort_keys_at_every_level() {
        let v = serde_json::json!({"b": 1, "a": {"z": [3, {"y": null, "x": "s"}], "c": true}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":true,"z":[3,{"x":"s","y":null}]},"b":1}"#
        );
    }
}
