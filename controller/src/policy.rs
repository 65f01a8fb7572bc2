//! Handshake policies: which approvals each action needs, and whether a decision counts.
//!
//! **Pure**: no I/O, no clock (`now` is a parameter), no environment. The store records
//! decisions; this module says what they mean.
//!
//! When several policies match one action, **the strictest wins**, field by field:
//! the largest `approvals`; only the roles that every matching policy accepts; self-approval
//! only if every matching policy allows it; the shortest `expiresAfter`; and the action may be
//! applied only while every matching policy's windows are open. Without a match, DESIGN.md's
//! defaults apply: `create`, `update`, `start`, `upsert` run automatically; `delete`, `stop`,
//! `write`, `remove` need one approval from an operator or admin. A resource generated from a
//! natural-language `Declaration` needs at least one approval whatever the policies say.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Duration as ChronoDuration, TimeZone as _, Timelike, Utc};
use mycopod_specs::kinds::{HandshakePolicySpec, Kind, Role, TimeWindow, Verb, Weekday};
use serde::{Deserialize, Serialize};

/// The label that marks resources generated from a natural-language declaration.
pub const DECLARATION_LABEL: &str = "mycopod/declaration";

/// What a policy looks at in an action.
#[derive(Debug, Clone, Copy)]
pub struct ActionSubject<'a> {
    /// The resource's kind.
    pub kind: Kind,
    /// The resource's name.
    pub name: &'a str,
    /// The resource's labels (desired ones; for a delete, the last known ones).
    pub labels: &'a BTreeMap<String, String>,
    /// The action's verb.
    pub verb: Verb,
}

/// A handshake policy by name, as declared or as held in the database.
#[derive(Debug, Clone, Copy)]
pub struct NamedPolicy<'a> {
    /// `metadata.name`.
    pub name: &'a str,
    /// Its spec.
    pub spec: &'a HandshakePolicySpec,
}

/// What an action (or a whole run) needs before it may be applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Requirement {
    /// Distinct approvals needed; 0 applies automatically.
    pub approvals: u32,
    /// Roles whose approvals count.
    pub approver_roles: BTreeSet<Role>,
    /// Whether the user who triggered the run may approve it.
    pub allow_self_approval: bool,
    /// A waiting run expires this many seconds after it was planned.
    pub expires_after_secs: Option<u64>,
    /// Windows from every matching policy; each policy's list must have one open window.
    pub windows: Vec<Vec<TimeWindow>>,
    /// The policies that matched, sorted; empty where the defaults applied.
    pub policies: Vec<String>,
}

impl Requirement {
    /// Nothing needed: applies at once, any time.
    pub fn automatic() -> Requirement {
        Requirement {
            approvals: 0,
            approver_roles: default_roles(),
            allow_self_approval: false,
            expires_after_secs: None,
            windows: Vec::new(),
            policies: Vec::new(),
        }
    }

    /// Combines two requirements so that both are met: the strictest of each field.
    pub fn strictest(mut self, other: &Requirement) -> Requirement {
        self.approvals = self.approvals.max(other.approvals);
        self.approver_roles = self
            .approver_roles
            .intersection(&other.approver_roles)
            .copied()
            .collect();
        self.allow_self_approval &= other.allow_self_approval;
        self.expires_after_secs = match (self.expires_after_secs, other.expires_after_secs) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        for windows in &other.windows {
            if !self.windows.contains(windows) {
                self.windows.push(windows.clone());
            }
        }
        let names: BTreeSet<String> = self
            .policies
            .iter()
            .chain(other.policies.iter())
            .cloned()
            .collect();
        self.policies = names.into_iter().collect();
        self
    }

    /// Whether actions under this requirement may be applied at `now`.
    pub fn window_open(&self, now: DateTime<Utc>) -> bool {
        self.windows.iter().all(|list| any_window_open(list, now))
    }

    /// When the windows next open, searching a week ahead minute by minute boundaries;
    /// `None` if they never open together in that time.
    pub fn next_open(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.window_open(now) {
            return Some(now);
        }
        // Windows open on whole minutes: step to the next minute, then minute by minute.
        let start = now + ChronoDuration::seconds(60 - now.timestamp().rem_euclid(60));
        (0..(8 * 24 * 60))
            .map(|m| start + ChronoDuration::minutes(m))
            .find(|t| self.window_open(*t))
    }
}

fn default_roles() -> BTreeSet<Role> {
    [Role::Operator, Role::Admin].into_iter().collect()
}

/// What an action needs when no policy matches it.
pub fn default_requirement(verb: Verb) -> Requirement {
    let approvals = match verb {
        Verb::Create | Verb::Update | Verb::Start | Verb::Upsert => 0,
        // A restart interrupts the guest as a stop does.
        Verb::Delete | Verb::Stop | Verb::Restart | Verb::Write | Verb::Remove => 1,
    };
    Requirement {
        approvals,
        ..Requirement::automatic()
    }
}

/// Whether `policy` governs `subject`: every criterion it gives must hold.
pub fn matches(policy: &HandshakePolicySpec, subject: &ActionSubject<'_>) -> bool {
    let m = &policy.match_;
    (m.kinds.is_empty() || m.kinds.contains(&subject.kind))
        && (m.verbs.is_empty() || m.verbs.contains(&subject.verb))
        && (m.names.is_empty() || m.names.iter().any(|p| glob_match(p, subject.name)))
        && m.labels
            .iter()
            .all(|(k, v)| subject.labels.get(k).is_some_and(|have| have == v))
}

/// What `subject` needs under `policies`.
pub fn requirement_for(policies: &[NamedPolicy<'_>], subject: &ActionSubject<'_>) -> Requirement {
    let mut matched = policies
        .iter()
        .filter(|p| matches(p.spec, subject))
        .map(|p| requirement_of(p.name, p.spec));
    let mut requirement = match matched.next() {
        // A change to the gate itself is an admin's decision unless a policy says otherwise.
        None if subject.kind == Kind::HandshakePolicy => Requirement {
            approvals: 1,
            approver_roles: [Role::Admin].into_iter().collect(),
            ..Requirement::automatic()
        },
        None => default_requirement(subject.verb),
        Some(first) => matched.fold(first, |acc, next| acc.strictest(&next)),
    };
    if subject.labels.contains_key(DECLARATION_LABEL) && requirement.approvals == 0 {
        requirement.approvals = 1;
    }
    requirement
}

fn requirement_of(name: &str, spec: &HandshakePolicySpec) -> Requirement {
    Requirement {
        approvals: spec.approvals,
        approver_roles: spec.approver_roles.iter().copied().collect(),
        allow_self_approval: spec.allow_self_approval,
        expires_after_secs: spec.expires_after.map(|d| d.as_std().as_secs()),
        windows: if spec.windows.is_empty() {
            Vec::new()
        } else {
            vec![spec.windows.clone()]
        },
        policies: vec![name.to_owned()],
    }
}

/// The requirement of a whole run: the strictest over its actions. An empty run needs
/// nothing.
pub fn run_requirement(per_action: &[Requirement]) -> Requirement {
    let mut iter = per_action.iter();
    match iter.next() {
        None => Requirement::automatic(),
        Some(first) => iter.fold(first.clone(), |acc, next| acc.strictest(next)),
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, rest) = (parts[0], &parts[1..]);
    let Some(mut remaining) = text.strip_prefix(first) else {
        return false;
    };
    let last = rest.len() - 1;
    for (i, part) in rest.iter().enumerate() {
        if i == last {
            return remaining.ends_with(part);
        }
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    true
}

fn any_window_open(windows: &[TimeWindow], now: DateTime<Utc>) -> bool {
    windows.is_empty() || windows.iter().any(|w| window_open(w, now))
}

fn weekday_of(day: chrono::Weekday) -> Weekday {
    match day {
        chrono::Weekday::Mon => Weekday::Mon,
        chrono::Weekday::Tue => Weekday::Tue,
        chrono::Weekday::Wed => Weekday::Wed,
        chrono::Weekday::Thu => Weekday::Thu,
        chrono::Weekday::Fri => Weekday::Fri,
        chrono::Weekday::Sat => Weekday::Sat,
        chrono::Weekday::Sun => Weekday::Sun,
    }
}

/// Whether `now` lies in `window`. A window whose `end` is before its `start` spans midnight
/// and belongs to the day it starts on; `start == end` is open all day.
pub fn window_open(window: &TimeWindow, now: DateTime<Utc>) -> bool {
    let tz = window.timezone.map(|z| z.tz()).unwrap_or(chrono_tz::UTC);
    let local = tz.from_utc_datetime(&now.naive_utc());
    let minute = u16::try_from(local.time().num_seconds_from_midnight() / 60).unwrap_or(0);
    let start = window.start.minutes();
    let end = window.end.minutes();
    let day_ok =
        |day: chrono::Weekday| window.days.is_empty() || window.days.contains(&weekday_of(day));
    if start == end {
        day_ok(local.weekday())
    } else if start < end {
        day_ok(local.weekday()) && minute >= start && minute < end
    } else {
        // Spans midnight: the evening part belongs to today, the morning part to yesterday.
        (minute >= start && day_ok(local.weekday()))
            || (minute < end && day_ok(local.weekday().pred()))
    }
}

/// The declared kind of a planned resource.
pub fn spec_kind(kind: crate::plan::ResourceKind) -> Kind {
    use crate::plan::ResourceKind as R;
    match kind {
        R::Guest => Kind::Guest,
        R::ModbusDevice => Kind::ModbusDevice,
        R::AlertRule => Kind::AlertRule,
        R::NotificationChannel => Kind::NotificationChannel,
        R::HandshakePolicy => Kind::HandshakePolicy,
    }
}

/// What each action of `plan` needs, in plan order.
///
/// The committer does not decide what is allowed: when `trusted` is given (the policies of
/// the last applied commit, as held in the database), each action needs the strictest of
/// what the trusted policies and the commit's own policies ask, so a commit can tighten the
/// gate at once but never relax it. `trusted` is `None` only before anything was ever
/// applied (first start), when the repository's policies count alone. An undeclared resource
/// (a guest being pruned) has no labels.
pub fn requirements_for_plan(
    desired: &mycopod_specs::DesiredState,
    trusted: Option<&[NamedPolicy<'_>]>,
    plan: &crate::plan::Plan,
) -> Vec<Requirement> {
    use crate::plan::ResourceKind as R;
    let declared: Vec<NamedPolicy<'_>> = desired
        .policies
        .iter()
        .map(|p| NamedPolicy {
            name: p.name().as_str(),
            spec: &p.spec,
        })
        .collect();
    let empty = BTreeMap::new();
    plan.actions
        .iter()
        .map(|action| {
            let name = action.resource.name.as_str();
            let labels = match action.resource.kind {
                R::Guest => desired.guest(name).map(|r| r.labels()),
                R::ModbusDevice => desired.device(name).map(|r| r.labels()),
                R::AlertRule => desired.alert_rule(name).map(|r| r.labels()),
                R::NotificationChannel => desired.channel(name).map(|r| r.labels()),
                R::HandshakePolicy => desired.policy(name).map(|r| r.labels()),
            }
            .unwrap_or(&empty);
            let subject = ActionSubject {
                kind: spec_kind(action.resource.kind),
                name,
                labels,
                verb: action.verb,
            };
            let proposed = requirement_for(&declared, &subject);
            let mut needs = match trusted {
                None => proposed,
                Some(trusted) => requirement_for(trusted, &subject).strictest(&proposed),
            };
            // `restart: approval` never lets a restart through unapproved, whatever the
            // policies say; `auto` leaves it to them.
            let restart_needs_approval = action.verb == Verb::Restart
                && desired.guest(name).is_some_and(|g| {
                    g.spec.restart == mycopod_specs::kinds::RestartPolicy::Approval
                });
            if restart_needs_approval {
                needs.approvals = needs.approvals.max(1);
            }
            needs
        })
        .collect()
}

/// The handshake policies held in the database (those of the last applied commit), parsed
/// from the observed configuration; a row that does not parse is named in the error list.
pub fn stored_policies(
    observed: &crate::plan::Observed,
) -> (Vec<(String, HandshakePolicySpec)>, Vec<String>) {
    let mut policies = Vec::new();
    let mut unreadable = Vec::new();
    for ((kind, name), stored) in &observed.config {
        if *kind != crate::plan::ResourceKind::HandshakePolicy {
            continue;
        }
        match serde_json::from_value::<HandshakePolicySpec>(stored.spec.clone()) {
            Ok(spec) => policies.push((name.clone(), spec)),
            Err(e) => unreadable.push(format!("HandshakePolicy/{name}: {e}")),
        }
    }
    (policies, unreadable)
}

/// Everyone who had a hand in the commits a run covers, as recorded with it: author and
/// committer emails of every covered commit, and the webhook's pusher. Lower-case.
pub fn run_authors(plan_document: &serde_json::Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Some(commits) = plan_document.get("commits").and_then(|c| c.as_array()) {
        for c in commits {
            for field in ["author_email", "committer_email"] {
                if let Some(e) = c.get(field).and_then(|v| v.as_str())
                    && !e.trim().is_empty()
                {
                    out.insert(e.trim().to_lowercase());
                }
            }
        }
    }
    if let Some(p) = plan_document.get("pusher").and_then(|v| v.as_str())
        && !p.trim().is_empty()
    {
        out.insert(p.trim().to_lowercase());
    }
    out
}

/// The approval requirement stored with a run by the reconcile step, if any (runs recorded before
/// it was stored, and invalid runs, have none).
pub fn stored_requirement(plan_document: &serde_json::Value) -> Option<Requirement> {
    serde_json::from_value(plan_document.get("requirement")?.clone()).ok()
}

/// One person's decision on a run, as the API receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRequest<'a> {
    /// Who decides.
    pub user: &'a str,
    /// Their role.
    pub role: Role,
    /// The plan hash they looked at.
    pub plan_hash: &'a str,
    /// Their git identities (emails, lower-case), compared with the run's authors.
    pub identities: &'a [String],
}

/// Why a decision is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The decision names another plan than the one waiting (HTTP 409).
    #[error("the run's plan is {current}, not {given}: look at the plan again")]
    StaleHash {
        /// The hash of the waiting plan.
        current: String,
        /// The hash the decision named.
        given: String,
    },
    /// The user's role may not approve under the policies.
    #[error("role {role:?} may not approve this run (allowed: {allowed})")]
    RoleNotAllowed {
        /// The user's role.
        role: Role,
        /// The roles that may.
        allowed: String,
    },
    /// The user triggered the run and the policies forbid self-approval.
    #[error("{user} triggered this run and the policies forbid approving one's own change")]
    SelfApproval {
        /// The approver, who triggered the run.
        user: String,
    },
    /// The user's git identity is an author, committer or pusher of a covered commit, and the
    /// policies forbid self-approval.
    #[error(
        "{user} is {identity}, an author, committer or pusher of the commits this run covers, \
         and the policies forbid approving one's own change"
    )]
    OwnCommit {
        /// The approver, an author of a commit the run covers.
        user: String,
        /// The matching identity.
        identity: String,
    },
    /// The run waited longer than the policies allow.
    #[error("the run expired at {at}")]
    Expired {
        /// When it expired.
        at: DateTime<Utc>,
    },
}

/// Checks one approval against the run's requirement before it is recorded. Rejections need
/// only the hash check and a role that may see the run: anyone who may approve may reject.
pub fn check_decision(
    requirement: &Requirement,
    current_hash: &str,
    requested_by: Option<&str>,
    authors: &BTreeSet<String>,
    planned_at: DateTime<Utc>,
    now: DateTime<Utc>,
    decision: &DecisionRequest<'_>,
) -> Result<(), Refusal> {
    if decision.plan_hash != current_hash {
        return Err(Refusal::StaleHash {
            current: current_hash.to_owned(),
            given: decision.plan_hash.to_owned(),
        });
    }
    if let Some(at) = expires_at(requirement, planned_at)
        && now >= at
    {
        return Err(Refusal::Expired { at });
    }
    if !requirement.approver_roles.contains(&decision.role) {
        let allowed: Vec<&str> = requirement
            .approver_roles
            .iter()
            .map(|r| match r {
                Role::Viewer => "viewer",
                Role::Operator => "operator",
                Role::Admin => "admin",
            })
            .collect();
        return Err(Refusal::RoleNotAllowed {
            role: decision.role,
            allowed: if allowed.is_empty() {
                "none".to_owned()
            } else {
                allowed.join(", ")
            },
        });
    }
    if !requirement.allow_self_approval {
        if requested_by == Some(decision.user) {
            return Err(Refusal::SelfApproval {
                user: decision.user.to_owned(),
            });
        }
        let own = std::iter::once(decision.user.to_lowercase())
            .chain(decision.identities.iter().map(|i| i.to_lowercase()))
            .find(|i| authors.contains(i));
        if let Some(identity) = own {
            return Err(Refusal::OwnCommit {
                user: decision.user.to_owned(),
                identity,
            });
        }
    }
    Ok(())
}

/// When a run planned at `planned_at` expires, if its policies say it does.
pub fn expires_at(requirement: &Requirement, planned_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    requirement
        .expires_after_secs
        .and_then(|s| i64::try_from(s).ok())
        .map(|s| planned_at + ChronoDuration::seconds(s))
}

/// Whether `approvals` distinct counted approvals satisfy the requirement.
pub fn is_satisfied(requirement: &Requirement, approvals: u32) -> bool {
    approvals >= requirement.approvals
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Parses one HandshakePolicy spec from YAML through the real loader.
    fn policy(yaml_spec: &str) -> HandshakePolicySpec {
        let text = format!(
            "apiVersion: mycopod/v1\nkind: HandshakePolicy\nmetadata: {{name: p}}\nspec:\n{}",
            yaml_spec
                .lines()
                .map(|l| format!("  {l}\n"))
                .collect::<String>()
        );
        let loaded = mycopod_specs::load_str("p.yaml", &text);
        let checked = mycopod_specs::check(&loaded)
            .unwrap_or_else(|d| panic!("policy does not validate: {d:?}"));
        checked
            .desired
            .policies
            .first()
            .expect("one policy")
            .spec
            .clone()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn subject<'a>(
        kind: Kind,
        name: &'a str,
        labels: &'a BTreeMap<String, String>,
        verb: Verb,
    ) -> ActionSubject<'a> {
        ActionSubject {
            kind,
            name,
            labels,
            verb,
        }
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn without_a_matching_policy_the_design_defaults_should_apply() {
        let none = labels(&[]);
        let table = [
            (Verb::Create, 0),
            (Verb::Update, 0),
            (Verb::Start, 0),
            (Verb::Upsert, 0),
            (Verb::Delete, 1),
            (Verb::Stop, 1),
            (Verb::Restart, 1),
            (Verb::Write, 1),
            (Verb::Remove, 1),
        ];
        for (verb, approvals) in table {
            let r = requirement_for(&[], &subject(Kind::Guest, "web", &none, verb));
            assert_eq!(r.approvals, approvals, "{verb:?}");
            assert!(r.policies.is_empty());
            assert_eq!(r.approver_roles, default_roles());
        }
    }

    #[test]
    fn a_policy_should_match_on_kind_verb_name_glob_and_labels() {
        let spec = policy(
            "match: {kinds: [Guest], verbs: [delete], names: [\"db-*\"], labels: {tier: prod}}\napprovals: 2",
        );
        let prod = labels(&[("tier", "prod"), ("team", "x")]);
        let dev = labels(&[("tier", "dev")]);
        assert!(matches(
            &spec,
            &subject(Kind::Guest, "db-main", &prod, Verb::Delete)
        ));
        assert!(!matches(
            &spec,
            &subject(Kind::Guest, "db-main", &dev, Verb::Delete)
        ));
        assert!(!matches(
            &spec,
            &subject(Kind::Guest, "web", &prod, Verb::Delete)
        ));
        assert!(!matches(
            &spec,
            &subject(Kind::Guest, "db-main", &prod, Verb::Update)
        ));
        assert!(!matches(
            &spec,
            &subject(Kind::ModbusDevice, "db-main", &prod, Verb::Delete)
        ));
    }

    #[test]
    fn when_several_policies_match_the_strictest_should_win_field_by_field() {
        let a = policy(
            "match: {verbs: [write]}\napprovals: 2\napproverRoles: [operator, admin]\nallowSelfApproval: true\nexpiresAfter: 2h",
        );
        let b = policy(
            "match: {kinds: [ModbusDevice]}\napprovals: 1\napproverRoles: [admin]\nexpiresAfter: 30m",
        );
        let policies = [
            NamedPolicy {
                name: "two-man",
                spec: &a,
            },
            NamedPolicy {
                name: "admins",
                spec: &b,
            },
        ];
        let none = labels(&[]);
        let r = requirement_for(
            &policies,
            &subject(Kind::ModbusDevice, "fm-1", &none, Verb::Write),
        );
        assert_eq!(r.approvals, 2);
        assert_eq!(r.approver_roles, [Role::Admin].into_iter().collect());
        assert!(!r.allow_self_approval);
        assert_eq!(r.expires_after_secs, Some(1800));
        assert_eq!(r.policies, ["admins", "two-man"]);
    }

    #[test]
    fn a_policy_may_lift_the_default_approval_but_declarations_always_need_one() {
        let auto = policy("match: {verbs: [stop]}\napprovals: 0");
        let policies = [NamedPolicy {
            name: "auto-stop",
            spec: &auto,
        }];
        let plain = labels(&[]);
        let generated = labels(&[(DECLARATION_LABEL, "pihole")]);
        assert_eq!(
            requirement_for(&policies, &subject(Kind::Guest, "a", &plain, Verb::Stop)).approvals,
            0
        );
        assert_eq!(
            requirement_for(
                &policies,
                &subject(Kind::Guest, "a", &generated, Verb::Stop)
            )
            .approvals,
            1
        );
        assert_eq!(
            requirement_for(&[], &subject(Kind::Guest, "a", &generated, Verb::Create)).approvals,
            1
        );
    }

    #[test]
    fn windows_should_follow_days_time_zones_and_span_midnight() {
        let spec = policy(
            "match: {}\napprovals: 0\nwindows:\n  - {days: [sat], start: \"22:00\", end: \"02:00\", timezone: Europe/Berlin}",
        );
        let policies = [NamedPolicy {
            name: "night",
            spec: &spec,
        }];
        let none = labels(&[]);
        let r = requirement_for(&policies, &subject(Kind::Guest, "a", &none, Verb::Update));
        // 2026-11-21 is a Saturday; Berlin is UTC+1 in November.
        let table = [
            (utc(2026, 11, 21, 20, 59), false), // 21:59 Berlin, Saturday
            (utc(2026, 11, 21, 21, 0), true),   // 22:00 Berlin, Saturday
            (utc(2026, 11, 22, 0, 59), true),   // 01:59 Berlin, Sunday: the window began Saturday
            (utc(2026, 11, 22, 1, 0), false),   // 02:00 Berlin: closed
            (utc(2026, 11, 22, 21, 30), false), // Sunday 22:30 Berlin: not a window day
        ];
        for (now, open) in table {
            assert_eq!(r.window_open(now), open, "{now}");
        }
        assert_eq!(
            r.next_open(utc(2026, 11, 21, 12, 0)),
            Some(utc(2026, 11, 21, 21, 0))
        );
    }

    #[test]
    fn decisions_should_be_refused_for_stale_hashes_roles_self_approval_and_expiry() {
        let spec = policy("match: {}\napprovals: 2\napproverRoles: [operator]\nexpiresAfter: 1h");
        let policies = [NamedPolicy {
            name: "p",
            spec: &spec,
        }];
        let none = labels(&[]);
        let r = requirement_for(&policies, &subject(Kind::Guest, "a", &none, Verb::Delete));
        let planned = utc(2026, 11, 22, 10, 0);
        let ok_time = utc(2026, 11, 22, 10, 30);
        let hash = "a".repeat(64);
        let authors: BTreeSet<String> = ["dave@plant.example".to_owned()].into();
        let dave_ids = vec!["Dave@Plant.example".to_owned()];
        let check = |user: &str, role: Role, given: &str, now: DateTime<Utc>| {
            let identities: &[String] = if user == "dave" { &dave_ids } else { &[] };
            check_decision(
                &r,
                &hash,
                Some("alice"),
                &authors,
                planned,
                now,
                &DecisionRequest {
                    user,
                    role,
                    plan_hash: given,
                    identities,
                },
            )
        };
        // Attack: the author of the covered commit approves it; git emails match case-blind.
        assert!(matches!(
            check("dave", Role::Operator, &hash, ok_time),
            Err(Refusal::OwnCommit { .. })
        ));
        assert_eq!(check("bob", Role::Operator, &hash, ok_time), Ok(()));
        assert!(matches!(
            check("bob", Role::Operator, &"b".repeat(64), ok_time),
            Err(Refusal::StaleHash { .. })
        ));
        assert!(matches!(
            check("carol", Role::Admin, &hash, ok_time),
            Err(Refusal::RoleNotAllowed { .. })
        ));
        assert!(matches!(
            check("carol", Role::Viewer, &hash, ok_time),
            Err(Refusal::RoleNotAllowed { .. })
        ));
        assert!(matches!(
            check("alice", Role::Operator, &hash, ok_time),
            Err(Refusal::SelfApproval { .. })
        ));
        assert!(matches!(
            check("bob", Role::Operator, &hash, utc(2026, 11, 22, 11, 0)),
            Err(Refusal::Expired { .. })
        ));
        assert!(!is_satisfied(&r, 1));
        assert!(is_satisfied(&r, 2));
    }

    #[test]
    fn a_run_should_need_what_its_strictest_action_needs() {
        let none = labels(&[]);
        let create = requirement_for(&[], &subject(Kind::Guest, "a", &none, Verb::Create));
        let delete = requirement_for(&[], &subject(Kind::Guest, "b", &none, Verb::Delete));
        assert_eq!(run_requirement(&[create.clone(), delete]).approvals, 1);
        assert_eq!(run_requirement(&[create]).approvals, 0);
        assert_eq!(run_requirement(&[]).approvals, 0);
    }

    #[test]
    fn name_globs_should_match_prefixes_suffixes_and_inner_parts() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("db-*", "db-main"));
        assert!(glob_match("*-prod", "web-prod"));
        assert!(glob_match("a*c*e", "abcde"));
        assert!(!glob_match("a*c*e", "abcdf"));
        assert!(!glob_match("db-*", "web"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
    }

    #[test]
    fn a_commit_should_never_relax_the_trusted_policy_that_guards_it() {
        // Attack: the trusted policy asks two approvals for writes; the commit's own policy
        // says zero. The stricter wins.
        let trusted = policy("match: {verbs: [write]}\napprovals: 2");
        let proposed = policy("match: {verbs: [write]}\napprovals: 0");
        let none = labels(&[]);
        let subject = subject(Kind::ModbusDevice, "fm-1", &none, Verb::Write);
        let t = [NamedPolicy {
            name: "guard",
            spec: &trusted,
        }];
        let p = [NamedPolicy {
            name: "guard",
            spec: &proposed,
        }];
        let r = requirement_for(&t, &subject).strictest(&requirement_for(&p, &subject));
        assert_eq!(r.approvals, 2);
        // And a commit that deletes every policy falls back to the defaults, not to nothing.
        let r = requirement_for(&t, &subject).strictest(&requirement_for(&[], &subject));
        assert_eq!(r.approvals, 2);
    }

    #[test]
    fn a_change_to_a_policy_should_need_an_admin_by_default() {
        let none = labels(&[]);
        for verb in [Verb::Upsert, Verb::Remove] {
            let r = requirement_for(&[], &subject(Kind::HandshakePolicy, "p", &none, verb));
            assert_eq!(r.approvals, 1, "{verb:?}");
            assert_eq!(r.approver_roles, [Role::Admin].into_iter().collect());
        }
    }
}
