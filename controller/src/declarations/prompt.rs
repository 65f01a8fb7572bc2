//! The prompt of a translation: the system prompt (rules and the JSON Schema of the kinds it
//! may produce), the inventory of names the repository already declares, the user's request,
//! and the correction message that sends findings back. Pure string building; the version of
//! this text is [`PROMPT_VERSION`], part of every cache key and output header.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use mycopod_specs::DesiredState;
use mycopod_specs::kinds::{Condition, Connection, Kind};
use serde_json::{Value, json};

/// Bumped whenever the prompt text or the answer schema changes meaning, so that cached
/// translations made with an older prompt are made again.
pub const PROMPT_VERSION: u32 = 1;

/// The kinds a translation produces when its declaration names none. `HandshakePolicy` is left
/// out on purpose (a model must not write the rules that govern its own output unless asked),
/// and `Declaration` is never produced.
pub const DEFAULT_KINDS: [Kind; 5] = [
    Kind::Guest,
    Kind::ModbusDevice,
    Kind::AlertRule,
    Kind::NotificationChannel,
    Kind::ProxmoxCluster,
];

/// The kinds allowed for a declaration that lists `requested` (empty: the defaults), in the
/// canonical kind order, never `Declaration`.
pub fn allowed_kinds(requested: &[Kind]) -> Vec<Kind> {
    let wanted: BTreeSet<Kind> = if requested.is_empty() {
        DEFAULT_KINDS.into_iter().collect()
    } else {
        requested.iter().copied().collect()
    };
    Kind::ALL
        .into_iter()
        .filter(|k| *k != Kind::Declaration && wanted.contains(k))
        .collect()
}

/// The JSON Schema of an answer: `{"documents": [DOCUMENT, ...]}`, where a document follows
/// `mycopod_specs::schema::json_schema()` with `kind` narrowed to `kinds`. Its `$defs` are moved
/// to the root so that the `#/$defs/...` references still resolve.
pub fn answer_schema(kinds: &[Kind]) -> Value {
    let mut document = mycopod_specs::schema::json_schema();
    let defs = document
        .as_object_mut()
        .and_then(|o| {
            o.remove("$schema");
            o.remove("$id");
            o.remove("$defs")
        })
        .unwrap_or_else(|| json!({}));
    let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    if let Some(kind) = document.pointer_mut("/properties/kind") {
        *kind = json!({"enum": names});
    }
    // Only the spec schemas of allowed kinds, and only the definitions they reach: the schema
    // goes into the prompt, and local models have small context windows.
    if let Some(Value::Array(all_of)) = document.get_mut("allOf") {
        all_of.retain(|branch| {
            branch
                .pointer("/if/properties/kind/const")
                .and_then(Value::as_str)
                .is_some_and(|k| names.contains(&k))
        });
    }
    let mut defs = reachable_defs(&document, defs);
    drop_null_defaults(&mut document);
    drop_null_defaults(&mut defs);
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "mycopod documents",
        "type": "object",
        "required": ["documents"],
        "additionalProperties": false,
        "properties": {
            "documents": {"type": "array", "minItems": 1, "items": document}
        },
        "$defs": defs
    })
}

/// The entries of `defs` that `root` refers to (`#/$defs/NAME`), directly or through others.
fn reachable_defs(root: &Value, defs: Value) -> Value {
    let Value::Object(mut defs) = defs else {
        return json!({});
    };
    let mut seen = BTreeSet::new();
    let mut todo = Vec::new();
    refs(root, &mut todo);
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(def) = defs.get(&name) {
            refs(def, &mut todo);
        }
    }
    defs.retain(|name, _| seen.contains(name));
    Value::Object(defs)
}

/// Removes `"default": null` annotations (most optional fields carry one): they say nothing
/// to a model and cost context.
fn drop_null_defaults(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("default").is_some_and(Value::is_null) {
                map.remove("default");
            }
            map.values_mut().for_each(drop_null_defaults);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_null_defaults),
        _ => {}
    }
}

fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref"
                    && let Some(name) = v.as_str().and_then(|r| r.strip_prefix("#/$defs/"))
                {
                    out.push(name.to_owned());
                } else {
                    refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// The system prompt: what mycopod is, the rules of a good answer, and the answer schema.
pub fn system_prompt(kinds: &[Kind], schema: &Value) -> String {
    let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    let schema_text = serde_json::to_string(schema).unwrap_or_default();
    format!(
        "You translate a homelab or plant owner's request into mycopod declarations. mycopod is a \
GitOps controller: each declaration is a document with `apiVersion: mycopod/v1`, a `kind`, \
`metadata` (name, labels) and a `spec`.

Rules:
- Answer with exactly one JSON object of the form {{\"documents\": [...]}} and nothing else.
- Produce only these kinds: {kinds}.
- metadata.name is a DNS label (lowercase letters, digits and '-', at most 63 characters) and must not repeat a name the inventory lists for the same kind.
- Refer only to clusters, nodes, devices, registers and channels that the inventory lists or that your answer creates.
- A Guest always gets a vmid that no guest of its cluster uses yet. Memory and sizes carry units (512MiB, 4GiB, 32G); durations are written like 500ms, 10s, 5m, 2h, 1d.
- Secrets are never written inline: name an environment variable (secretEnv, passwordEnv) instead.
- Leave out optional fields the request does not ask for; do not invent addresses or credentials.

The JSON Schema of the answer:
{schema_text}
",
        kinds = names.join(", ")
    )
}

/// The user message: the inventory of the repository, then the request.
pub fn user_prompt(inventory: &str, text: &str) -> String {
    format!(
        "What the repository already declares:\n{inventory}\nThe request:\n\"\"\"\n{}\n\"\"\"\n",
        text.trim()
    )
}

/// The message that returns an answer's findings for one correction.
pub fn correction_prompt(validated_yaml: Option<&str>, findings: &str) -> String {
    let mut out = String::from(
        "Your answer does not validate. Correct every finding below and answer again with the \
complete JSON object {\"documents\": [...]} (every document, not only the corrected ones).\n",
    );
    if let Some(yaml) = validated_yaml {
        let _ = write!(
            out,
            "\nYour documents as they were checked (line numbers refer to this text):\n{yaml}\n"
        );
    }
    let _ = write!(out, "\nFindings:\n{findings}");
    out
}

/// The names the repository declares, as indented text for the prompt: clusters with their
/// default and used nodes, guests with cluster and vmid, devices with their registers, alert
/// rules and channels. Sorted, so the same repository always gives the same prompt.
pub fn inventory(desired: &DesiredState) -> String {
    let mut out = String::new();
    let mut section = |title: &str, lines: Vec<String>| {
        let _ = writeln!(out, "{title}:");
        if lines.is_empty() {
            out.push_str("  (none)\n");
        }
        for line in lines {
            let _ = writeln!(out, "  - {line}");
        }
    };
    section(
        "clusters",
        desired
            .clusters
            .iter()
            .map(|c| {
                let mut nodes: BTreeSet<&str> = desired
                    .guests
                    .iter()
                    .filter(|g| g.spec.cluster.as_str() == c.name().as_str())
                    .filter_map(|g| g.spec.node.as_ref().map(|n| n.as_str()))
                    .collect();
                let default = c.spec.default_node.as_ref().map(|n| n.as_str());
                nodes.extend(default);
                let nodes: Vec<&str> = nodes.into_iter().collect();
                format!(
                    "{} (defaultNode: {}; nodes: {})",
                    c.name(),
                    default.unwrap_or("none"),
                    if nodes.is_empty() {
                        "none known".to_owned()
                    } else {
                        nodes.join(", ")
                    }
                )
            })
            .collect(),
    );
    section(
        "guests",
        desired
            .guests
            .iter()
            .map(|g| {
                let vmid = g
                    .spec
                    .vmid
                    .map(|v| v.get().to_string())
                    .unwrap_or_else(|| "none".to_owned());
                format!("{} (cluster {}, vmid {vmid})", g.name(), g.spec.cluster)
            })
            .collect(),
    );
    section(
        "modbus devices",
        desired
            .devices
            .iter()
            .map(|d| {
                let connection = match &d.spec.connection {
                    Connection::Tcp(_) => "tcp",
                    Connection::RtuOverTcp(_) => "rtu over tcp",
                    Connection::Rtu(_) => "serial rtu",
                };
                let registers: Vec<String> = d
                    .spec
                    .registers
                    .iter()
                    .map(|r| {
                        let kind = format!("{:?} {:?}", r.table, r.value_type).to_lowercase();
                        let mut s = format!("{} [{kind}", r.name);
                        if let Some(unit) = &r.unit {
                            let _ = write!(s, ", {unit}");
                        }
                        if r.writable {
                            s.push_str(", writable");
                        }
                        s.push(']');
                        s
                    })
                    .collect();
                format!(
                    "{} ({connection}; registers: {})",
                    d.name(),
                    if registers.is_empty() {
                        "none".to_owned()
                    } else {
                        registers.join(", ")
                    }
                )
            })
            .collect(),
    );
    section(
        "alert rules",
        desired
            .alert_rules
            .iter()
            .map(|a| {
                let what = match &a.spec.condition {
                    Condition::Offline(_) => "offline".to_owned(),
                    _ => a
                        .spec
                        .register
                        .as_ref()
                        .map(|r| r.to_string())
                        .unwrap_or_default(),
                };
                format!("{} (device {}, {what})", a.name(), a.spec.device)
            })
            .collect(),
    );
    section(
        "notification channels",
        desired
            .channels
            .iter()
            .map(|c| c.name().to_string())
            .collect(),
    );
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use expect_test::expect;

    const REPO: &str = r#"
apiVersion: mycopod/v1
kind: ProxmoxCluster
metadata: {name: home}
spec:
  endpoint: https://pve.lan:8006
  auth: {tokenId: "mycopod@pve!gitops", secretEnv: PVE_TOKEN}
  defaultNode: pve1
---
apiVersion: mycopod/v1
kind: Guest
metadata: {name: web}
spec: {cluster: home, node: pve2, type: qemu, vmid: 120, clone: {from: 9000}}
---
apiVersion: mycopod/v1
kind: ModbusDevice
metadata: {name: fm-1}
spec:
  connection: {tcp: {host: 10.0.0.21, port: 502}}
  registers:
    - {name: flow_rate, table: holding, address: 0, type: f32, unit: m3/h}
    - {name: cutoff, table: holding, address: 20, type: f32, writable: true}
---
apiVersion: mycopod/v1
kind: NotificationChannel
metadata: {name: ops}
spec: {webhook: {url: "https://hooks.lan/x", secretEnv: HOOK}}
"#;

    #[test]
    fn inventory_should_list_names_nodes_vmids_and_registers() {
        let loaded = mycopod_specs::load_str("repo.yaml", REPO);
        let desired = DesiredState::from_loaded(&loaded);
        expect![[r#"
            clusters:
              - home (defaultNode: pve1; nodes: pve1, pve2)
            guests:
              - web (cluster home, vmid 120)
            modbus devices:
              - fm-1 (tcp; registers: flow_rate [holding f32, m3/h], cutoff [holding f32, writable])
            alert rules:
              (none)
            notification channels:
              - ops
        "#]]
        .assert_eq(&inventory(&desired));
    }

    #[test]
    fn the_answer_schema_should_wrap_documents_and_keep_references_resolvable() {
        let schema = answer_schema(&allowed_kinds(&[]));
        let text = schema.to_string();
        let defs = schema["$defs"].as_object().unwrap();
        assert!(!defs.is_empty());
        let mut rest = text.as_str();
        while let Some(i) = rest.find("\"$ref\":\"#/$defs/") {
            rest = &rest[i + 16..];
            let name = &rest[..rest.find('"').unwrap()];
            assert!(defs.contains_key(name), "undefined $ref {name}");
        }
        let kinds = &schema["properties"]["documents"]["items"]["properties"]["kind"]["enum"];
        assert_eq!(
            kinds,
            &json!([
                "ProxmoxCluster",
                "Guest",
                "ModbusDevice",
                "AlertRule",
                "NotificationChannel"
            ])
        );
    }

    #[test]
    fn a_narrowed_schema_should_keep_only_the_allowed_specs_and_their_definitions() {
        let full = answer_schema(&allowed_kinds(&[])).to_string().len();
        let schema = answer_schema(&[Kind::AlertRule]);
        let text = schema.to_string();
        assert!(text.len() * 3 < full, "{} vs {full}", text.len());
        let defs = schema["$defs"].as_object().unwrap();
        assert!(defs.contains_key("AlertRuleSpec"));
        assert!(!defs.contains_key("GuestSpec"));
        let mut rest = text.as_str();
        while let Some(i) = rest.find("\"$ref\":\"#/$defs/") {
            rest = &rest[i + 16..];
            let name = &rest[..rest.find('"').unwrap()];
            assert!(defs.contains_key(name), "undefined $ref {name}");
        }
    }

    #[test]
    fn allowed_kinds_should_never_include_declarations() {
        assert_eq!(
            allowed_kinds(&[Kind::Declaration, Kind::HandshakePolicy, Kind::Guest]),
            vec![Kind::Guest, Kind::HandshakePolicy]
        );
        assert!(!allowed_kinds(&[]).contains(&Kind::HandshakePolicy));
    }
}
