//! Planning Modbus setpoints: one `write` per reachable device whose setpoint registers are
//! outside their tolerance.
//!
//! Pure. Comparison is the register codec's (`codec::register_differs`): the desired value is
//! brought to what the register can hold, so an f32 setpoint never differs forever.

use crate::plan::translate::device::{register_def, setpoint_value};
use mycopod_adapters::modbus::Value;
use mycopod_adapters::modbus::codec::register_differs;
use mycopod_specs::DesiredState;
use mycopod_specs::kinds::Mode;
use serde_json::Value as Json;

use super::observed::Observed;
use super::{Action, Builder, FieldChange, Impact, Note, ResourceKind, ResourceRef, Verb};

/// A register value as JSON for diffs.
pub fn value_json(value: &Value) -> Json {
    match value {
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => i64::try_from(*i)
            .map(Json::from)
            .unwrap_or_else(|_| Json::String(i.to_string())),
        Value::Float(x) => serde_json::Number::from_f64(*x)
            .map(Json::Number)
            .unwrap_or_else(|| Json::String(x.to_string())),
        Value::Text(t) => Json::String(t.clone()),
    }
}

pub(super) fn plan_devices(desired: &DesiredState, observed: &Observed, out: &mut Builder) {
    for device in &desired.devices {
        if device.spec.setpoints.is_empty() {
            continue;
        }
        let name = device.name().as_str();
        let resource = ResourceRef {
            kind: ResourceKind::ModbusDevice,
            name: name.to_owned(),
        };
        let Some(seen) = observed.devices.get(name).filter(|d| d.reachable) else {
            out.notes.push(Note::Unreachable {
                kind: "ModbusDevice".into(),
                name: name.to_owned(),
            });
            continue;
        };
        let mut changes = Vec::new();
        for (register, setpoint) in &device.spec.setpoints {
            // Validation guarantees the register exists and is writable. Only the setpoint
            // registers are translated, not the whole device.
            let Some(reg) = device
                .spec
                .registers
                .iter()
                .find(|r| r.name.as_str() == register.as_str())
                .map(register_def)
            else {
                continue;
            };
            let want = setpoint_value(setpoint);
            let differs = match seen.values.get(register) {
                Some(have) => register_differs(&reg, &want, have),
                None => true,
            };
            if differs {
                changes.push(FieldChange {
                    field: format!("setpoints.{register}"),
                    observed: seen.values.get(register).map(value_json),
                    desired: Some(value_json(&want)),
                    impact: Impact::Live,
                });
            }
        }
        if changes.is_empty() {
            continue;
        }
        if device.spec.mode == Mode::Detect {
            out.notes.push(Note::Drift {
                resource,
                changes: changes.into_iter().map(|c| c.field).collect(),
            });
            continue;
        }
        out.writes.push(Action::new(resource, Verb::Write, changes));
    }
}
