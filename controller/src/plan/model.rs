//! The plan's data: actions with stable keys, verbs and field-level changes, its canonical JSON
//! and `plan_hash`, and the human rendering `mycopod plan` prints.
//!
//! Pure and deterministic: no clock, no I/O; everything rendered or hashed is ordered.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The kinds of resource a plan can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResourceKind {
    /// A Proxmox VE VM or container.
    Guest,
    /// A Modbus device (its setpoints).
    ModbusDevice,
    /// An alert rule held in the database.
    AlertRule,
    /// A notification channel held in the database.
    NotificationChannel,
    /// A handshake policy held in the database.
    HandshakePolicy,
}

impl ResourceKind {
    /// The kind as written in declarations (`Guest`, `ModbusDevice`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Guest => "Guest",
            ResourceKind::ModbusDevice => "ModbusDevice",
            ResourceKind::AlertRule => "AlertRule",
            ResourceKind::NotificationChannel => "NotificationChannel",
            ResourceKind::HandshakePolicy => "HandshakePolicy",
        }
    }

    /// Whether the resource lives in mycopod's own database rather than an outside system.
    pub fn is_database_held(self) -> bool {
        matches!(
            self,
            ResourceKind::AlertRule
                | ResourceKind::NotificationChannel
                | ResourceKind::HandshakePolicy
        )
    }
}

impl std::fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an action does: the verbs of DESIGN.md, shared with handshake policies.
pub use mycopod_specs::kinds::Verb;

/// The marker `mycopod plan` prints in front of an action.
pub fn marker(verb: Verb) -> char {
    match verb {
        Verb::Create | Verb::Upsert => '+',
        Verb::Delete | Verb::Remove => '-',
        Verb::Update | Verb::Write | Verb::Start | Verb::Stop | Verb::Restart => '~',
    }
}

/// How disruptive one change is, from least to most. The order matters: an action's impact
/// is the greatest of its changes'.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Impact {
    /// Takes effect at once, without interrupting anything.
    #[default]
    Live,
    /// Lands in the guest's pending configuration; takes effect at the next restart.
    Restart,
    /// The resource must be made anew.
    Recreate,
    /// Data is destroyed (a deleted guest, a removed disk).
    DestroysData,
}

impl Impact {
    /// The words `mycopod plan` prints for it.
    pub fn describe(self) -> &'static str {
        match self {
            Impact::Live => "applied live",
            Impact::Restart => "restart required",
            Impact::Recreate => "recreates the resource",
            Impact::DestroysData => "destroys data",
        }
    }
}

/// The resource an action is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ResourceRef {
    /// Its kind.
    pub kind: ResourceKind,
    /// Its `metadata.name`.
    pub name: String,
}

impl std::fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// One field's change: `field: observed -> desired`. Values are JSON so that numbers,
/// strings and lists render and hash alike everywhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    /// The field in spec terms (`memory`, `networks[0].vlan`, `setpoints.cutoff`).
    pub field: String,
    /// What was observed; `None` where the field is absent.
    pub observed: Option<serde_json::Value>,
    /// What is declared; `None` where the declaration drops the field.
    pub desired: Option<serde_json::Value>,
    /// How disruptive it is.
    pub impact: Impact,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// Stable across plans for the same intent: `Guest/pihole:update`.
    pub key: String,
    /// What it does.
    pub verb: Verb,
    /// What it is about.
    pub resource: ResourceRef,
    /// The field-level diff, sorted by field.
    pub changes: Vec<FieldChange>,
    /// Keys of actions that must succeed before this one runs.
    pub depends_on: Vec<String>,
}

impl Action {
    /// A new action with its stable key derived from the resource and verb.
    pub fn new(resource: ResourceRef, verb: Verb, mut changes: Vec<FieldChange>) -> Action {
        changes.sort_by(|a, b| a.field.cmp(&b.field));
        Action {
            key: action_key(&resource, verb),
            verb,
            resource,
            changes,
            depends_on: Vec::new(),
        }
    }

    /// The greatest impact of its changes; deletes always destroy data.
    pub fn impact(&self) -> Impact {
        let own = match self.verb {
            Verb::Delete => Impact::DestroysData,
            _ => Impact::Live,
        };
        self.changes
            .iter()
            .map(|c| c.impact)
            .fold(own, std::cmp::max)
    }
}

/// The stable key of an action: `Kind/name:verb`.
pub fn action_key(resource: &ResourceRef, verb: Verb) -> String {
    format!("{}/{}:{}", resource.kind, resource.name, verb)
}

/// The ordered list of actions that brings what is observed to what one commit declares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The commit whose declarations were planned.
    pub commit: String,
    /// The actions, in the order they are applied.
    pub actions: Vec<Action>,
}

/// The SHA-256 of a plan's canonical JSON, as 64 lower-case hex digits. An approval names the
/// hash it approves.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PlanHash(String);

impl PlanHash {
    /// The hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Accepts 64 lower-case hex digits.
    pub fn parse(text: &str) -> Option<PlanHash> {
        (text.len() == 64
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| PlanHash(text.to_owned()))
    }
}

impl std::fmt::Display for PlanHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Plan {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// The canonical JSON: compact, object keys sorted at every level, actions in plan order.
    /// Same plan, same bytes, on every machine.
    pub fn canonical_json(&self) -> String {
        match serde_json::to_value(self) {
            Ok(value) => crate::model::canonical_json(&value),
            // Serialising plain data with string keys cannot fail; keep the type honest anyway.
            Err(err) => format!("{{\"unserialisable_plan\":{:?}}}", err.to_string()),
        }
    }

    /// The plan's hash, which approvals bind to.
    pub fn hash(&self) -> PlanHash {
        PlanHash(hex::encode(Sha256::digest(
            self.canonical_json().as_bytes(),
        )))
    }

    /// Counts per verb, in verb order, leaving out verbs with none.
    pub fn counts(&self) -> Vec<(Verb, usize)> {
        Verb::ALL
            .into_iter()
            .map(|verb| (verb, self.actions.iter().filter(|a| a.verb == verb).count()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// One line: `3 to create, 1 to update` or `no changes`.
    pub fn summary(&self) -> String {
        let counts = self.counts();
        if counts.is_empty() {
            return "no changes".to_owned();
        }
        counts
            .iter()
            .map(|(verb, n)| format!("{n} to {verb}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The readable plan: `+` create, `~` update with field diffs, `-` delete, `!` restart
    /// required (or worse) on the changes that need it.
    pub fn render(&self) -> String {
        let short = self.commit.get(..12).unwrap_or(&self.commit);
        let mut out = format!("plan for commit {short}: {}\n", self.summary());
        for action in &self.actions {
            let _ = writeln!(
                out,
                "{} {} {}",
                marker(action.verb),
                action.resource,
                action.verb
            );
            let width = action
                .changes
                .iter()
                .map(|c| c.field.len())
                .max()
                .unwrap_or(0);
            for change in &action.changes {
                let marker = if change.impact >= Impact::Restart {
                    '!'
                } else {
                    ' '
                };
                let value = |v: &Option<serde_json::Value>| match v {
                    None => "(none)".to_owned(),
                    Some(serde_json::Value::String(s)) => format!("{s:?}"),
                    Some(other) => other.to_string(),
                };
                let _ = write!(
                    out,
                    "  {marker} {:<width$}  {} -> {}",
                    change.field,
                    value(&change.observed),
                    value(&change.desired),
                );
                if change.impact > Impact::Live {
                    let _ = write!(out, "  ({})", change.impact.describe());
                }
                out.push('\n');
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use expect_test::expect;
    use serde_json::json;

    fn guest(name: &str) -> ResourceRef {
        ResourceRef {
            kind: ResourceKind::Guest,
            name: name.to_owned(),
        }
    }

    fn change(
        field: &str,
        observed: Option<serde_json::Value>,
        desired: Option<serde_json::Value>,
        impact: Impact,
    ) -> FieldChange {
        FieldChange {
            field: field.to_owned(),
            observed,
            desired,
            impact,
        }
    }

    fn sample() -> Plan {
        Plan {
            commit: "3f2a9c1d2e4b5a6978877665544332211aabbccd".to_owned(),
            actions: vec![
                Action::new(
                    ResourceRef {
                        kind: ResourceKind::AlertRule,
                        name: "low-flow".into(),
                    },
                    Verb::Upsert,
                    vec![change(
                        "condition.below",
                        None,
                        Some(json!(2.0)),
                        Impact::Live,
                    )],
                ),
                Action::new(
                    guest("web"),
                    Verb::Create,
                    vec![
                        change("memory", None, Some(json!("2GiB")), Impact::Live),
                        change("cores", None, Some(json!(2)), Impact::Live),
                    ],
                ),
                Action::new(
                    guest("dns"),
                    Verb::Update,
                    vec![
                        change(
                            "memory",
                            Some(json!("512MiB")),
                            Some(json!("1GiB")),
                            Impact::Restart,
                        ),
                        change(
                            "tags",
                            Some(json!(["dns"])),
                            Some(json!(["dns", "prod"])),
                            Impact::Live,
                        ),
                    ],
                ),
                Action::new(guest("old"), Verb::Delete, vec![]),
            ],
        }
    }

    #[test]
    fn render_should_mark_verbs_and_restart_required_changes() {
        expect![[r#"
            plan for commit 3f2a9c1d2e4b: 1 to create, 1 to update, 1 to delete, 1 to upsert
            + AlertRule/low-flow upsert
                condition.below  (none) -> 2.0
            + Guest/web create
                cores   (none) -> 2
                memory  (none) -> "2GiB"
            ~ Guest/dns update
              ! memory  "512MiB" -> "1GiB"  (restart required)
                tags    ["dns"] -> ["dns","prod"]
            - Guest/old delete
        "#]]
        .assert_eq(&sample().render());
    }

    #[test]
    fn action_keys_should_name_kind_resource_and_verb() {
        let plan = sample();
        let keys: Vec<&str> = plan.actions.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "AlertRule/low-flow:upsert",
                "Guest/web:create",
                "Guest/dns:update",
                "Guest/old:delete"
            ]
        );
    }

    #[test]
    fn canonical_json_should_sort_object_keys_and_keep_action_order() {
        let json = sample().canonical_json();
        assert!(json.starts_with(r#"{"actions":[{"changes":[{"desired":2.0,"field":"condition.below","impact":"live","observed":null}]"#), "{json}");
        assert!(
            json.ends_with(r#""commit":"3f2a9c1d2e4b5a6978877665544332211aabbccd"}"#),
            "{json}"
        );
    }

    #[test]
    fn hash_should_be_stable_and_change_with_any_field() {
        let plan = sample();
        assert_eq!(plan.hash(), sample().hash());
        assert!(PlanHash::parse(plan.hash().as_str()).is_some());

        let mut other = sample();
        other.actions[2].changes[0].desired = Some(json!("2GiB"));
        assert_ne!(plan.hash(), other.hash());

        let mut reordered = sample();
        reordered.actions.swap(0, 1);
        assert_ne!(plan.hash(), reordered.hash(), "order is part of the plan");
    }

    #[test]
    fn impact_should_be_the_greatest_of_the_changes_and_deletes_destroy_data() {
        let plan = sample();
        assert_eq!(plan.actions[1].impact(), Impact::Live);
        assert_eq!(plan.actions[2].impact(), Impact::Restart);
        assert_eq!(plan.actions[3].impact(), Impact::DestroysData);
    }

    #[test]
    fn an_empty_plan_should_say_no_changes() {
        let plan = Plan {
            commit: "abc".into(),
            actions: vec![],
        };
        assert!(plan.is_empty());
        assert_eq!(plan.render(), "plan for commit abc: no changes\n");
    }

    #[test]
    fn verbs_should_parse_what_they_print() {
        for verb in Verb::ALL {
            assert_eq!(Verb::parse(verb.as_str()), Some(verb));
        }
        assert_eq!(Verb::parse("destroy"), None);
    }

    #[test]
    fn plans_should_round_trip_through_json() {
        let plan = sample();
        let back: Plan = serde_json::from_str(&plan.canonical_json()).unwrap();
        assert_eq!(back, plan);
        assert_eq!(back.hash(), plan.hash());
    }
}
