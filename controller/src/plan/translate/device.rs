//! From a `ModbusDevice` declaration to the adapter's device and register definitions, and
//! from declared setpoints to the values the client writes.
//!
//! Pure: no I/O. The spec has been validated before (addresses, widths, writability), so this
//! only maps one vocabulary onto the other.

use mycopod_specs::kinds::{
    Connection, ModbusDeviceSpec, Order, Register, SetpointValue, ValueType,
};

use mycopod_adapters::modbus::{
    ByteOrder, DataType, DeviceDef, Endpoint, Parity, RegisterDef, Table, Value, WordOrder,
};

/// The adapter's definition of the device `name` declares with `spec`.
pub fn device_def(name: &str, spec: &ModbusDeviceSpec) -> DeviceDef {
    let endpoint = match &spec.connection {
        Connection::Tcp(tcp) => Endpoint::Tcp {
            host: tcp.host.clone(),
            port: tcp.port,
        },
        Connection::RtuOverTcp(tcp) => Endpoint::RtuOverTcp {
            host: tcp.host.clone(),
            port: tcp.port,
        },
        Connection::Rtu(rtu) => Endpoint::Rtu {
            path: rtu.path.clone(),
            baud: rtu.baud,
            parity: match rtu.parity {
                mycopod_specs::kinds::Parity::None => Parity::None,
                mycopod_specs::kinds::Parity::Even => Parity::Even,
                mycopod_specs::kinds::Parity::Odd => Parity::Odd,
            },
            stop_bits: rtu.stop_bits,
        },
    };
    DeviceDef {
        name: name.to_owned(),
        endpoint,
        unit: spec.unit,
        timeout: spec.timeout.as_std(),
        max_gap: spec.max_gap,
        registers: spec.registers.iter().map(register_def).collect(),
    }
}

/// The adapter's definition of one declared register.
pub fn register_def(register: &Register) -> RegisterDef {
    let table = match register.table {
        mycopod_specs::kinds::Table::Holding => Table::Holding,
        mycopod_specs::kinds::Table::Input => Table::Input,
        mycopod_specs::kinds::Table::Coil => Table::Coil,
        mycopod_specs::kinds::Table::Discrete => Table::Discrete,
    };
    let data_type = match register.value_type {
        ValueType::U16 => DataType::U16,
        ValueType::I16 => DataType::I16,
        ValueType::U32 => DataType::U32,
        ValueType::I32 => DataType::I32,
        ValueType::U64 => DataType::U64,
        ValueType::I64 => DataType::I64,
        ValueType::F32 => DataType::F32,
        ValueType::F64 => DataType::F64,
        ValueType::Bool => DataType::Bool,
        ValueType::String => DataType::String {
            registers: register.length.unwrap_or(1).max(1),
        },
    };
    RegisterDef {
        name: register.name.as_str().to_owned(),
        table,
        address: register.address.get(),
        data_type,
        word_order: match register.word_order {
            Order::Big => WordOrder::High,
            Order::Little => WordOrder::Low,
        },
        byte_order: match register.byte_order {
            Order::Big => ByteOrder::High,
            Order::Little => ByteOrder::Low,
        },
        scale: register.scale.unwrap_or(1.0),
        offset: register.offset.unwrap_or(0.0),
        bit: register.bit,
        writable: register.writable,
        tolerance: register.tolerance.unwrap_or(0.0),
    }
}

/// The value a declared setpoint asks the client to write.
pub fn setpoint_value(value: &SetpointValue) -> Value {
    match value {
        SetpointValue::Bool(b) => Value::Bool(*b),
        SetpointValue::Number(x) => Value::Float(*x),
        SetpointValue::Text(t) => Value::Text(t.clone()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn device(yaml_spec: &str) -> (String, ModbusDeviceSpec) {
        let text = format!(
            "apiVersion: mycopod/v1\nkind: ModbusDevice\nmetadata: {{name: fm-1}}\nspec:\n{}",
            yaml_spec
                .lines()
                .map(|l| format!("  {l}\n"))
                .collect::<String>()
        );
        let loaded = mycopod_specs::load_str("d.yaml", &text);
        let checked = mycopod_specs::check(&loaded).unwrap_or_else(|d| panic!("{d:?}"));
        let d = &checked.desired.devices[0];
        (d.name().as_str().to_owned(), d.spec.clone())
    }

    #[test]
    fn a_declared_device_should_map_connection_registers_layout_and_scaling() {
        let (name, spec) = device(
            "connection: {rtuOverTcp: {host: 127.0.0.1, port: 5020}}\nunit: 7\ntimeout: 500ms\nmaxGap: 4\nregisters:\n  - {name: flow_rate, table: holding, address: 0, type: f32, wordOrder: little}\n  - {name: total, table: input, address: 10, type: u32, scale: 0.1, offset: -1}\n  - {name: tag, table: holding, address: 20, type: string, length: 4}\n  - {name: pump, table: coil, address: 3, type: bool, writable: true}\n  - {name: cutoff, table: holding, address: 30, type: f32, writable: true, tolerance: 0.001, min: 0, max: 5}\nsetpoints: {cutoff: 0.75, pump: true}",
        );
        let def = device_def(&name, &spec);
        assert_eq!(def.name, "fm-1");
        assert_eq!(
            def.endpoint,
            Endpoint::RtuOverTcp {
                host: "127.0.0.1".into(),
                port: 5020
            }
        );
        assert_eq!(def.unit, 7);
        assert_eq!(def.timeout, std::time::Duration::from_millis(500));
        assert_eq!(def.max_gap, 4);
        let flow = def.register("flow_rate").unwrap();
        assert_eq!(
            (flow.data_type, flow.word_order, flow.byte_order),
            (DataType::F32, WordOrder::Low, ByteOrder::High)
        );
        let total = def.register("total").unwrap();
        assert_eq!(
            (total.table, total.scale, total.offset),
            (Table::Input, 0.1, -1.0)
        );
        assert_eq!(
            def.register("tag").unwrap().data_type,
            DataType::String { registers: 4 }
        );
        let cutoff = def.register("cutoff").unwrap();
        assert!(cutoff.writable);
        assert_eq!(cutoff.tolerance, 0.001);
        assert_eq!(
            setpoint_value(&spec.setpoints["cutoff"]),
            Value::Float(0.75)
        );
        assert_eq!(setpoint_value(&spec.setpoints["pump"]), Value::Bool(true));
    }
}
