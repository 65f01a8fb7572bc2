//! Planning the configuration mycopod keeps in its own database: alert rules, notification
//! channels and handshake policies are upserted when their spec changed and removed when no
//! longer declared (every row in those tables is mycopod's own).
//!
//! Pure. Field diffs compare the stored spec JSON with the declared one, leaf by leaf.

use std::collections::BTreeMap;

use mycopod_specs::{DesiredState, Resource};
use rayon::prelude::*;
use serde::Serialize;
use serde_json::Value as Json;

use super::observed::Observed;
use super::{Action, Builder, FieldChange, Impact, ResourceKind, ResourceRef, Verb};

/// Flattens a spec into `path -> leaf`; objects are walked, lists and scalars are leaves,
/// and empty lists, empty objects and nulls are left out.
pub fn flatten(value: &Json) -> BTreeMap<String, Json> {
    fn walk(prefix: &str, value: &Json, out: &mut BTreeMap<String, Json>) {
        match value {
            Json::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&path, v, out);
                }
            }
            // Empty values say nothing: `[]`, `{}` and null count as absent.
            Json::Null => {}
            Json::Array(items) if items.is_empty() => {}
            Json::Object(_) => {}
            other => {
                out.insert(prefix.to_owned(), other.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", value, &mut out);
    out
}

/// The field changes that turn `stored` into `declared`.
pub fn json_changes(stored: Option<&Json>, declared: Option<&Json>) -> Vec<FieldChange> {
    let old = stored.map(flatten).unwrap_or_default();
    let new = declared.map(flatten).unwrap_or_default();
    let mut fields: Vec<&String> = old.keys().chain(new.keys()).collect();
    fields.sort();
    fields.dedup();
    fields
        .into_iter()
        .filter(|f| old.get(*f) != new.get(*f))
        .map(|f| FieldChange {
            field: f.clone(),
            observed: old.get(f).cloned(),
            desired: new.get(f).cloned(),
            impact: Impact::Live,
        })
        .collect()
}

fn plan_kind<S: Serialize + Sync>(
    kind: ResourceKind,
    declared: &[Resource<S>],
    observed: &Observed,
    out: &mut Builder,
) {
    let names: std::collections::HashSet<&str> =
        declared.iter().map(|r| r.name().as_str()).collect();
    // The stored rows of this kind by name, looked up without building a key per resource.
    let stored_by_name: std::collections::HashMap<&str, &Json> = observed
        .config
        .range((kind, String::new())..)
        .take_while(|((k, _), _)| *k == kind)
        .map(|((_, name), stored)| (name.as_str(), &stored.spec))
        .collect();
    // Serialising and comparing each spec is independent of the others: done side by side,
    // collected in declaration order.
    let upserts: Vec<Option<Action>> = declared
        .par_iter()
        .map(|resource| {
            let name = resource.name().as_str();
            // Specs are plain data; serialising them cannot fail. A failure would show as a
            // change on every plan, never as a silent skip.
            let spec = serde_json::to_value(&resource.spec).unwrap_or(Json::Null);
            let stored = stored_by_name.get(name).copied();
            if stored == Some(&spec) {
                return None;
            }
            let changes = json_changes(stored, Some(&spec));
            Some(Action::new(
                ResourceRef {
                    kind,
                    name: name.to_owned(),
                },
                Verb::Upsert,
                changes,
            ))
        })
        .collect();
    out.upserts.extend(upserts.into_iter().flatten());
    for ((_, name), stored) in observed
        .config
        .range((kind, String::new())..)
        .take_while(|((k, _), _)| *k == kind)
    {
        if names.contains(name.as_str()) {
            continue;
        }
        out.removes.push(Action::new(
            ResourceRef {
                kind,
                name: name.clone(),
            },
            Verb::Remove,
            json_changes(Some(&stored.spec), None),
        ));
    }
}

pub(super) fn plan_config(desired: &DesiredState, observed: &Observed, out: &mut Builder) {
    // Channels before the rules that notify them; policies before anything they gate.
    plan_kind(
        ResourceKind::NotificationChannel,
        &desired.channels,
        observed,
        out,
    );
    plan_kind(
        ResourceKind::HandshakePolicy,
        &desired.policies,
        observed,
        out,
    );
    plan_kind(ResourceKind::AlertRule, &desired.alert_rules, observed, out);
}
