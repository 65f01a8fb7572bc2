//! The JSON Schema (draft 2020-12) of mycopod documents, derived from the same Rust types the
//! loader uses, for editors (yaml-language-server) and as the target shape given to an LLM.
//! Pure: builds a value, prints nothing.

use schemars::{JsonSchema, SchemaGenerator, generate::SchemaSettings};
use serde_json::{Value, json};

use crate::kinds::{
    API_VERSION, AlertRuleSpec, DeclarationSpec, GuestSpec, HandshakePolicySpec, Kind, Metadata,
    ModbusDeviceSpec, NotificationChannelSpec, ProxmoxClusterSpec,
};

fn spec_schema<S: JsonSchema>(generator: &mut SchemaGenerator) -> Value {
    generator.subschema_for::<S>().to_value()
}

/// The schema of one document of any of the seven kinds. The envelope is checked at the top;
/// `kind` selects the `spec` schema through `if`/`then`, which yaml-language-server reports
/// more precisely than a `oneOf`.
pub fn json_schema() -> Value {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    let metadata = generator.subschema_for::<Metadata>().to_value();
    let specs: Vec<(Kind, Value)> = vec![
        (
            Kind::ProxmoxCluster,
            spec_schema::<ProxmoxClusterSpec>(&mut generator),
        ),
        (Kind::Guest, spec_schema::<GuestSpec>(&mut generator)),
        (
            Kind::ModbusDevice,
            spec_schema::<ModbusDeviceSpec>(&mut generator),
        ),
        (
            Kind::AlertRule,
            spec_schema::<AlertRuleSpec>(&mut generator),
        ),
        (
            Kind::NotificationChannel,
            spec_schema::<NotificationChannelSpec>(&mut generator),
        ),
        (
            Kind::HandshakePolicy,
            spec_schema::<HandshakePolicySpec>(&mut generator),
        ),
        (
            Kind::Declaration,
            spec_schema::<DeclarationSpec>(&mut generator),
        ),
    ];
    let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
    let all_of: Vec<Value> = specs
        .into_iter()
        .map(|(kind, spec)| {
            json!({
                "if": {"properties": {"kind": {"const": kind.as_str()}}, "required": ["kind"]},
                "then": {"properties": {"spec": spec}}
            })
        })
        .collect();
    let defs = generator.take_definitions(true);
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://example.invalid/mycopod/v1/schema.json",
        "title": "mycopod document",
        "description": "One document of a mycopod declarations repository (apiVersion mycopod/v1).",
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": false,
        "properties": {
            "apiVersion": {"const": API_VERSION},
            "kind": {"enum": kinds},
            "metadata": metadata,
            "spec": {"type": "object"}
        },
        "allOf": all_of,
        "$defs": defs
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_should_name_every_kind_and_define_every_reference() {
        let schema = json_schema();
        let text = schema.to_string();
        for kind in Kind::ALL {
            assert!(text.contains(&format!("\"const\":\"{kind}\"")), "{kind}");
        }
        let defs = schema["$defs"].as_object().cloned().unwrap_or_default();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("\"$ref\":\"#/$defs/") {
            rest = &rest[i + 16..];
            let name = &rest[..rest.find('"').unwrap_or(0)];
            assert!(defs.contains_key(name), "undefined $ref {name}");
        }
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
    }
}
