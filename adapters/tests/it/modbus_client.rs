//! The Modbus client against the simulator on loopback: coalescing, every type and layout,
//! verified writes, timeouts, exceptions and dropped connections.
//!
//! No mocks of the client: every test is a real Modbus TCP (or RTU over TCP) conversation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::float_cmp)]

use std::sync::Arc;
use std::time::Duration;

use mycopod_adapters::modbus::{
    ClientOptions, DataType, DeviceDef, ErrorClass, Exception, Fault, Layout, ManualClock,
    ModbusClient, ModbusError, RegisterDef, RequestError, SimDevice, Simulator, Table, Value,
    Waveform, read_many,
};

const TEST_TIMEOUT: Duration = Duration::from_secs(20);

fn fast() -> ClientOptions {
    ClientOptions {
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
    }
}

fn flow_meter() -> DeviceDef {
    let mut d = DeviceDef::tcp("fm-1", "127.0.0.1", 0);
    // Long enough never to expire on a loaded CI machine unless a fault makes it.
    d.timeout = Duration::from_secs(1);
    d.registers = vec![
        RegisterDef::new("flow_rate", Table::Holding, 0, DataType::F32),
        RegisterDef::new("status", Table::Holding, 10, DataType::U16),
        RegisterDef::new("cutoff", Table::Holding, 20, DataType::F32).writable(0.001),
        RegisterDef::new("alarm", Table::Holding, 11, DataType::Bool).with_bit(2),
        RegisterDef::new(
            "serial",
            Table::Holding,
            30,
            DataType::String { registers: 4 },
        ),
        RegisterDef::new("temperature", Table::Input, 5, DataType::I16).scaled(0.1, 0.0),
        RegisterDef::new("total", Table::Input, 100, DataType::U64),
        RegisterDef::new("pump", Table::Coil, 0, DataType::Bool).writable(0.0),
        RegisterDef::new("door", Table::Discrete, 7, DataType::Bool),
    ];
    d
}

async fn start(sim: SimDevice) -> (Simulator, ModbusClient) {
    let sim = sim.start().await.unwrap();
    let client = ModbusClient::with_options(sim.device_def(), fast()).unwrap();
    (sim, client)
}

fn get<'a>(values: &'a [(String, Value)], name: &str) -> &'a Value {
    &values.iter().find(|(n, _)| n == name).unwrap().1
}

async fn timed<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test timed out")
}

#[tokio::test]
async fn read_all_should_coalesce_registers_into_one_request_per_table() {
    timed(async {
        let (sim, client) = start(
            SimDevice::new(flow_meter())
                .value("flow_rate", Value::Float(12.5))
                .value("status", Value::Int(3))
                .value("alarm", Value::Bool(true))
                .value("serial", Value::Text("FM01-7".into()))
                .value("temperature", Value::Float(-4.2))
                .value("total", Value::Int(9_000_000_000))
                .value("pump", Value::Bool(true)),
        )
        .await;
        let values = client.read_all().await.unwrap();
        assert_eq!(values.len(), 9);
        assert_eq!(get(&values, "flow_rate"), &Value::Float(12.5));
        assert_eq!(get(&values, "status"), &Value::Int(3));
        assert_eq!(get(&values, "alarm"), &Value::Bool(true));
        assert_eq!(get(&values, "serial"), &Value::Text("FM01-7".into()));
        let Value::Float(t) = get(&values, "temperature") else {
            panic!("temperature is not a float")
        };
        assert!((t + 4.2).abs() < 1e-9);
        assert_eq!(get(&values, "total"), &Value::Int(9_000_000_000));
        assert_eq!(get(&values, "pump"), &Value::Bool(true));
        assert_eq!(get(&values, "door"), &Value::Bool(false));

        // Holding 0..34 in one request (gaps of at most 16), input 5 and 100..104 in two
        // (gap 94), one coil request, one discrete request.
        assert_eq!(client.read_plan().len(), 5);
        assert_eq!(sim.requests(3), 1, "read holding registers");
        assert_eq!(sim.requests(4), 2, "read input registers");
        assert_eq!(sim.requests(1), 1, "read coils");
        assert_eq!(sim.requests(2), 1, "read discrete inputs");
        assert_eq!(sim.total_requests(), 5);
    })
    .await;
}

#[tokio::test]
async fn read_registers_should_read_only_the_named_registers_coalesced() {
    timed(async {
        let (sim, client) =
            start(SimDevice::new(flow_meter()).value("status", Value::Int(7))).await;
        let values = client
            .read_registers(&["status", "flow_rate"])
            .await
            .unwrap();
        assert_eq!(values[0], ("status".to_owned(), Value::Int(7)));
        assert_eq!(values[1], ("flow_rate".to_owned(), Value::Float(0.0)));
        assert_eq!(sim.total_requests(), 1);
        let err = client.read_registers(&["nope"]).await.unwrap_err();
        assert!(matches!(err, ModbusError::UnknownRegister { .. }), "{err}");
        assert_eq!(err.class(), ErrorClass::NotFound);
    })
    .await;
}

fn sample(data_type: DataType) -> Vec<Value> {
    match data_type {
        DataType::U16 => vec![Value::Int(0), Value::Int(65535), Value::Int(0x1234)],
        DataType::I16 => vec![Value::Int(-32768), Value::Int(-2), Value::Int(32767)],
        DataType::U32 => vec![Value::Int(0x1234_5678), Value::Int(u32::MAX.into())],
        DataType::I32 => vec![Value::Int(-123_456_789), Value::Int(i32::MIN.into())],
        DataType::U64 => vec![
            Value::Int(0x0123_4567_89AB_CDEF),
            Value::Int(u64::MAX.into()),
        ],
        DataType::I64 => vec![Value::Int(i64::MIN.into()), Value::Int(-5)],
        DataType::F32 => vec![Value::Float(123.45), Value::Float(-0.001)],
        DataType::F64 => vec![Value::Float(-2.5e300), Value::Float(0.1)],
        DataType::Bool => vec![Value::Bool(true), Value::Bool(false)],
        DataType::String { .. } => vec![Value::Text("AbCdE".into()), Value::Text(String::new())],
    }
}

#[tokio::test]
async fn every_data_type_and_layout_should_round_trip_through_client_and_simulator() {
    timed(async {
        let types = [
            DataType::U16,
            DataType::I16,
            DataType::U32,
            DataType::I32,
            DataType::U64,
            DataType::I64,
            DataType::F32,
            DataType::F64,
            DataType::String { registers: 3 },
        ];
        let mut device = DeviceDef::tcp("all-types", "127.0.0.1", 0);
        let mut address = 0u16;
        for layout in Layout::ALL {
            for data_type in types {
                let name = format!("{data_type}-{layout:?}");
                let reg = RegisterDef::new(name, Table::Holding, address, data_type)
                    .layout(layout)
                    .writable(0.0);
                address += reg.width();
                device.registers.push(reg);
            }
        }
        device.registers.push(
            RegisterDef::new("bit5", Table::Holding, address, DataType::Bool)
                .with_bit(5)
                .writable(0.0),
        );
        device.registers.push(
            RegisterDef::new("bit6", Table::Holding, address, DataType::Bool)
                .with_bit(6)
                .writable(0.0),
        );
        device
            .registers
            .push(RegisterDef::new("coil", Table::Coil, 3, DataType::Bool).writable(0.0));
        let (sim, client) = start(SimDevice::new(device.clone())).await;

        for reg in &device.registers {
            let data_type = if reg.bit.is_some() {
                DataType::Bool
            } else {
                reg.data_type
            };
            for value in sample(data_type) {
                // Client writes, simulator holds it, client reads it back.
                let expected = match (&value, data_type) {
                    (Value::Float(x), DataType::F32) => Value::Float(f64::from(*x as f32)),
                    _ => value.clone(),
                };
                let read_back = client.write_value(&reg.name, &value).await.unwrap();
                assert_eq!(read_back, expected, "{} via client", reg.name);
                assert_eq!(
                    sim.value(&reg.name).unwrap(),
                    expected,
                    "{} in sim",
                    reg.name
                );
                // Simulator sets it behind the client's back, client reads it.
                sim.set_value(&reg.name, &value).unwrap();
                let read = client.read_registers(&[&reg.name]).await.unwrap();
                assert_eq!(read[0].1, expected, "{} set in sim", reg.name);
            }
        }
        // Setting one bit left its neighbour alone.
        client
            .write_value("bit5", &Value::Bool(true))
            .await
            .unwrap();
        client
            .write_value("bit6", &Value::Bool(false))
            .await
            .unwrap();
        assert_eq!(sim.value("bit5").unwrap(), Value::Bool(true));
        let all = client.read_all().await.unwrap();
        assert_eq!(get(&all, "bit5"), &Value::Bool(true));
        assert_eq!(get(&all, "bit6"), &Value::Bool(false));
        assert!(sim.requests(6) > 0, "single register writes used");
        assert!(sim.requests(16) > 0, "multiple register writes used");
        assert!(sim.requests(5) > 0, "single coil writes used");
        assert_eq!(client.connect_count().await, 1);
    })
    .await;
}

#[tokio::test]
async fn rtu_over_tcp_should_read_and_write_like_tcp() {
    timed(async {
        let (sim, client) = start(
            SimDevice::new(flow_meter())
                .rtu_over_tcp()
                .value("flow_rate", Value::Float(3.5)),
        )
        .await;
        let values = client.read_all().await.unwrap();
        assert_eq!(get(&values, "flow_rate"), &Value::Float(3.5));
        client
            .write_value("cutoff", &Value::Float(0.75))
            .await
            .unwrap();
        assert_eq!(sim.value("cutoff").unwrap(), Value::Float(0.75));
    })
    .await;
}

#[tokio::test]
async fn writes_should_be_verified_by_reading_back() {
    timed(async {
        let (sim, client) = start(SimDevice::new(flow_meter())).await;
        let read_back = client
            .write_value("cutoff", &Value::Float(0.75))
            .await
            .unwrap();
        assert_eq!(read_back, Value::Float(0.75));
        assert_eq!(sim.requests(16), 1, "f32 is written with function 16");
        assert_eq!(sim.requests(3), 1, "and read back with function 3");

        // A device that acknowledges but ignores the write is caught by the read-back.
        sim.set_fault(Fault::IgnoreWrites);
        let err = client
            .write_value("cutoff", &Value::Float(1.5))
            .await
            .unwrap_err();
        assert!(matches!(err, ModbusError::VerifyWrite { .. }), "{err}");
        assert_eq!(err.class(), ErrorClass::Rejected);
        assert_eq!(
            err.to_string(),
            "verify cutoff on fm-1: wrote 1.5, read back 0.75"
        );
        sim.clear_faults();

        // Not writable in the definition: refused before any request.
        let before = sim.total_requests();
        let err = client
            .write_value("status", &Value::Int(1))
            .await
            .unwrap_err();
        assert!(matches!(err, ModbusError::NotWritable { .. }), "{err}");
        // Out of range for the type: refused before any request.
        let err = client
            .write_value("pump", &Value::Float(0.5))
            .await
            .unwrap_err();
        assert!(matches!(err, ModbusError::Codec { .. }), "{err}");
        assert_eq!(sim.total_requests(), before);
    })
    .await;
}

#[tokio::test]
async fn simulator_should_refuse_writes_to_read_only_addresses_with_illegal_data_address() {
    timed(async {
        let sim = SimDevice::new(flow_meter()).start().await.unwrap();
        // The client believes `status` is writable; the device does not.
        let mut def = sim.device_def();
        for reg in &mut def.registers {
            if reg.name == "status" {
                reg.writable = true;
            }
        }
        let client = ModbusClient::with_options(def, fast()).unwrap();
        let err = client
            .write_value("status", &Value::Int(1))
            .await
            .unwrap_err();
        assert_eq!(
            err.exception(),
            Some(Exception::IllegalDataAddress),
            "{err}"
        );
        assert!(matches!(err, ModbusError::WriteRegisters { .. }), "{err}");
        assert_eq!(err.class(), ErrorClass::Rejected);
    })
    .await;
}

#[tokio::test]
async fn exceptions_should_be_reported_by_name_and_keep_the_connection() {
    timed(async {
        let (sim, client) = start(SimDevice::new(flow_meter())).await;
        sim.set_fault(Fault::Exception {
            table: Table::Holding,
            address: 10,
            exception: Exception::IllegalDataAddress,
        });
        let err = client.read_all().await.unwrap_err();
        assert_eq!(err.exception(), Some(Exception::IllegalDataAddress));
        assert_eq!(err.class(), ErrorClass::Rejected);
        assert_eq!(err.to_string(), "read holding registers 0..34 on fm-1");
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert_eq!(source, "device answered IllegalDataAddress");
        sim.clear_faults();

        sim.set_fault(Fault::Exception {
            table: Table::Input,
            address: 101,
            exception: Exception::ServerDeviceBusy,
        });
        let err = client.read_registers(&["total"]).await.unwrap_err();
        assert_eq!(err.exception(), Some(Exception::ServerDeviceBusy));
        sim.clear_faults();

        // An unknown address is refused by the device itself.
        let mut def = sim.device_def();
        def.registers.push(RegisterDef::new(
            "ghost",
            Table::Holding,
            500,
            DataType::U16,
        ));
        let ghost_client = ModbusClient::with_options(def, fast()).unwrap();
        let err = ghost_client.read_registers(&["ghost"]).await.unwrap_err();
        assert_eq!(err.exception(), Some(Exception::IllegalDataAddress));

        // An exception is an answer: the connection stays.
        client.read_all().await.unwrap();
        assert_eq!(client.connect_count().await, 1);
        assert_eq!(sim.connections(), 2);
    })
    .await;
}

#[tokio::test]
async fn a_silent_device_should_time_out_and_the_next_read_should_reconnect_and_be_correct() {
    timed(async {
        let (sim, client) =
            start(SimDevice::new(flow_meter()).value("status", Value::Int(1))).await;
        client.read_all().await.unwrap();
        sim.set_fault(Fault::Silent);
        let err = client.read_all().await.unwrap_err();
        assert!(
            matches!(
                &err,
                ModbusError::ReadRegisters {
                    source: RequestError::Timeout(_),
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.class(), ErrorClass::Transient);
        sim.clear_faults();
        sim.set_value("status", &Value::Int(2)).unwrap();
        let values = client.read_all().await.unwrap();
        assert_eq!(get(&values, "status"), &Value::Int(2));
        assert_eq!(client.connect_count().await, 2);
        assert_eq!(sim.connections(), 2);
    })
    .await;
}

#[tokio::test]
async fn a_late_reply_should_never_be_matched_to_the_next_request() {
    timed(async {
        let (sim, client) =
            start(SimDevice::new(flow_meter()).value("status", Value::Int(1))).await;
        // The answer to this read arrives after the timeout, carrying status = 1.
        sim.set_fault(Fault::Delay(Duration::from_secs(2)));
        let err = client.read_registers(&["status"]).await.unwrap_err();
        assert!(
            matches!(
                &err,
                ModbusError::ReadRegisters {
                    source: RequestError::Timeout(_),
                    ..
                }
            ),
            "{err:?}"
        );
        sim.clear_faults();
        sim.set_value("status", &Value::Int(2)).unwrap();
        // The next read must see the new value on a new connection, not the late reply.
        let values = client.read_registers(&["status"]).await.unwrap();
        assert_eq!(values[0].1, Value::Int(2));
        assert_eq!(client.connect_count().await, 2);
    })
    .await;
}

#[tokio::test]
async fn a_dropped_connection_should_be_recovered() {
    timed(async {
        let (sim, client) =
            start(SimDevice::new(flow_meter()).value("status", Value::Int(5))).await;
        client.read_all().await.unwrap();

        // The device closes the connection on the next request.
        sim.set_fault(Fault::DropConnection);
        let err = client.read_all().await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Transient, "{err:?}");
        sim.clear_faults();
        let values = client.read_all().await.unwrap();
        assert_eq!(get(&values, "status"), &Value::Int(5));

        // The connection is closed between requests (as gateways close idle connections):
        // the kept connection fails, and the read is sent once more on a fresh one.
        sim.drop_connections();
        let values = client.read_all().await.unwrap();
        assert_eq!(get(&values, "status"), &Value::Int(5));
        // 1: first read, dropped by the fault; 2: its one retry, dropped too; 3: after
        // clearing the fault, closed by drop_connections; 4: the retry of that read.
        assert_eq!(sim.connections(), 4);
        assert_eq!(client.connect_count().await, 4);
    })
    .await;
}

#[tokio::test]
async fn connecting_to_a_closed_port_should_fail_as_transient_with_the_endpoint() {
    timed(async {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let client = ModbusClient::with_options(
            {
                let mut d = flow_meter();
                d.endpoint = mycopod_adapters::modbus::Endpoint::Tcp {
                    host: "127.0.0.1".into(),
                    port,
                };
                d
            },
            fast(),
        )
        .unwrap();
        let err = client.read_all().await.unwrap_err();
        assert!(matches!(err, ModbusError::Connect { .. }), "{err:?}");
        assert_eq!(err.class(), ErrorClass::Transient);
        assert_eq!(
            err.to_string(),
            format!("connect to fm-1 at tcp 127.0.0.1:{port}")
        );
    })
    .await;
}

#[tokio::test]
async fn setpoints_should_be_observed_compared_and_applied() {
    timed(async {
        let (sim, client) = start(
            SimDevice::new(flow_meter())
                .value("cutoff", Value::Float(0.5))
                .value("pump", Value::Bool(false)),
        )
        .await;
        let observed = client.observe_setpoints(&["cutoff", "pump"]).await.unwrap();
        assert_eq!(sim.total_requests(), 2, "one holding and one coil request");
        let desired = Value::Float(0.75);
        assert!(
            client
                .setpoint_differs("cutoff", &desired, &observed["cutoff"])
                .unwrap()
        );
        assert!(
            !client
                .setpoint_differs("cutoff", &Value::Float(0.5005), &observed["cutoff"])
                .unwrap(),
            "within tolerance 0.001"
        );
        client.apply_setpoint("cutoff", &desired).await.unwrap();
        client
            .apply_setpoint("pump", &Value::Bool(true))
            .await
            .unwrap();
        let observed = client.observe_setpoints(&["cutoff", "pump"]).await.unwrap();
        assert!(
            !client
                .setpoint_differs("cutoff", &desired, &observed["cutoff"])
                .unwrap()
        );
        // 0.1 is not exact in f32: normalizing the desired value keeps it from differing forever.
        client
            .apply_setpoint("cutoff", &Value::Float(0.1))
            .await
            .unwrap();
        let observed = client.observe_setpoints(&["cutoff"]).await.unwrap();
        assert_ne!(observed["cutoff"], Value::Float(0.1));
        assert!(
            !client
                .setpoint_differs("cutoff", &Value::Float(0.1), &observed["cutoff"])
                .unwrap()
        );
        assert_eq!(observed.len(), 1);
        assert_eq!(sim.value("pump").unwrap(), Value::Bool(true));
    })
    .await;
}

#[tokio::test]
async fn waveforms_should_follow_the_injected_clock() {
    timed(async {
        let clock = Arc::new(ManualClock::new());
        let (_sim, client) = start(
            SimDevice::new(flow_meter())
                .clock(clock.clone())
                .waveform(
                    "flow_rate",
                    Waveform::Sine {
                        amplitude: 2.0,
                        period: Duration::from_secs(60),
                        center: 10.0,
                    },
                )
                .waveform(
                    "total",
                    Waveform::Ramp {
                        start: 1000.0,
                        rate_per_s: 2.0,
                    },
                ),
        )
        .await;
        let read = |values: Vec<(String, Value)>, name: &str| get(&values, name).as_f64().unwrap();
        let v = client.read_all().await.unwrap();
        assert_eq!(read(v.clone(), "flow_rate"), 10.0);
        assert_eq!(read(v, "total"), 1000.0);
        clock.advance(Duration::from_secs(15));
        let v = client.read_all().await.unwrap();
        assert_eq!(read(v.clone(), "flow_rate"), 12.0);
        assert_eq!(read(v, "total"), 1030.0);
    })
    .await;
}

#[tokio::test]
async fn many_devices_should_be_polled_concurrently() {
    timed(async {
        let mut sims = Vec::new();
        let mut clients = Vec::new();
        for i in 0..10 {
            let mut def = flow_meter();
            def.name = format!("fm-{i}");
            let (sim, client) = start(SimDevice::new(def).value("status", Value::Int(i))).await;
            sims.push(sim);
            clients.push(Arc::new(client));
        }
        // One silent device must not hold up the others beyond its own timeout.
        sims[3].set_fault(Fault::Silent);
        let results = read_many(&clients).await;
        for (i, r) in results.iter().enumerate() {
            if i == 3 {
                assert!(r.is_err());
            } else {
                let values = r.as_ref().unwrap();
                assert_eq!(
                    get(values, "status"),
                    &Value::Int(i128::try_from(i).unwrap())
                );
            }
        }
    })
    .await;
}

#[tokio::test]
async fn write_values_should_send_neighbours_together_and_verify_each() {
    timed(async {
        let mut def = DeviceDef::tcp("batch", "127.0.0.1", 0);
        for k in 0..4u16 {
            def.registers.push(
                RegisterDef::new(format!("pump{k}"), Table::Coil, k, DataType::Bool).writable(0.0),
            );
        }
        for k in 0..3u16 {
            def.registers.push(
                RegisterDef::new(format!("mode{k}"), Table::Holding, 40 + k, DataType::U16)
                    .writable(0.0),
            );
        }
        def.registers
            .push(RegisterDef::new("limit", Table::Holding, 43, DataType::F32).writable(0.001));
        def.registers
            .push(RegisterDef::new("far", Table::Holding, 90, DataType::U16).writable(0.0));
        let (sim, client) = start(SimDevice::new(def)).await;
        let values = [
            ("pump2", Value::Bool(true)),
            ("pump0", Value::Bool(true)),
            ("pump1", Value::Bool(false)),
            ("pump3", Value::Bool(true)),
            ("mode1", Value::Int(11)),
            ("mode0", Value::Int(10)),
            ("mode2", Value::Int(12)),
            ("limit", Value::Float(2.5)),
            ("far", Value::Int(9)),
        ];
        let read_back = client.write_values(&values).await.unwrap();
        let expected: Vec<(String, Value)> = values
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.clone()))
            .collect();
        assert_eq!(read_back, expected);
        assert_eq!(
            sim.requests(15),
            1,
            "four neighbouring coils in one request"
        );
        assert_eq!(sim.requests(5), 0);
        assert_eq!(sim.requests(16), 1, "mode0..2 and limit in one request");
        assert_eq!(sim.requests(6), 1, "far alone");
        assert_eq!(sim.requests(1), 1, "coils read back at once");
        assert_eq!(sim.requests(3), 2, "holding 40..45 and 90 read back");
        assert_eq!(sim.value("mode2").unwrap(), Value::Int(12));

        // One bad value writes nothing.
        sim.reset_counters();
        let err = client
            .write_values(&[("mode0", Value::Int(1)), ("mode1", Value::Int(-1))])
            .await
            .unwrap_err();
        assert!(matches!(err, ModbusError::Codec { .. }), "{err}");
        assert_eq!(sim.total_requests(), 0);
        assert_eq!(sim.value("mode0").unwrap(), Value::Int(10));
    })
    .await;
}

#[tokio::test]
async fn simulator_should_answer_out_of_spec_requests_like_a_device() {
    use tokio_modbus::client::{Reader as _, Writer as _};
    use tokio_modbus::{ExceptionCode, Slave};
    timed(async {
        let sim = SimDevice::new(flow_meter())
            .value("status", Value::Int(9))
            .start()
            .await
            .unwrap();
        let mut ctx = tokio_modbus::client::tcp::connect_slave(sim.addr(), Slave(1))
            .await
            .unwrap();
        assert_eq!(
            ctx.read_holding_registers(10, 1).await.unwrap(),
            Ok(vec![9])
        );
        // Gaps between defined registers read as zero.
        assert_eq!(
            ctx.read_holding_registers(12, 3).await.unwrap(),
            Ok(vec![0, 0, 0])
        );
        assert_eq!(
            ctx.read_holding_registers(0, 126).await.unwrap(),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            ctx.read_holding_registers(34, 1).await.unwrap(),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            ctx.write_single_register(10, 1).await.unwrap(),
            Err(ExceptionCode::IllegalDataAddress),
            "status is read-only"
        );
        assert_eq!(
            ctx.write_multiple_registers(19, &[0, 0, 0]).await.unwrap(),
            Err(ExceptionCode::IllegalDataAddress),
            "19 is not part of the writable cutoff at 20..22"
        );
        assert_eq!(
            ctx.write_multiple_registers(20, &[1, 2]).await.unwrap(),
            Ok(())
        );
        let mut other_unit = tokio_modbus::client::tcp::connect_slave(sim.addr(), Slave(7))
            .await
            .unwrap();
        assert_eq!(
            other_unit.read_holding_registers(10, 1).await.unwrap(),
            Err(ExceptionCode::GatewayTargetDevice)
        );
        assert_eq!(sim.requests(3), 5);
        assert_eq!(sim.requests(6), 1);
        assert_eq!(sim.requests(16), 2);
        assert_eq!(sim.connections(), 2);
    })
    .await;
}

#[tokio::test]
async fn simulator_should_listen_on_a_given_address() {
    timed(async {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let sim = SimDevice::new(flow_meter())
            .listen(addr)
            .value("status", Value::Int(4))
            .start()
            .await
            .unwrap();
        assert_eq!(sim.addr(), addr);
        let client = ModbusClient::with_options(sim.device_def(), fast()).unwrap();
        let values = client.read_registers(&["status"]).await.unwrap();
        assert_eq!(values[0].1, Value::Int(4));
    })
    .await;
}

#[tokio::test]
async fn a_read_abandoned_by_its_caller_should_take_its_connection_with_it() {
    timed(async {
        let (sim, client) =
            start(SimDevice::new(flow_meter()).value("status", Value::Int(1))).await;
        client.read_all().await.unwrap();
        sim.set_fault(Fault::Delay(Duration::from_millis(500)));
        // The caller gives up before the device answers (and before the device timeout).
        let abandoned = tokio::time::timeout(
            Duration::from_millis(100),
            client.read_registers(&["status"]),
        )
        .await;
        assert!(
            abandoned.is_err(),
            "the read should still have been waiting"
        );
        sim.clear_faults();
        sim.set_value("status", &Value::Int(2)).unwrap();
        // The late answer (status = 1) must not be taken for this read's.
        let values = client.read_registers(&["status"]).await.unwrap();
        assert_eq!(values[0].1, Value::Int(2));
        assert_eq!(client.connect_count().await, 2);
    })
    .await;
}
