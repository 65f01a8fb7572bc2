//! The Modbus client against pymodbus, a Modbus TCP server not written here, so that the
//! simulator is not the only peer the client has ever met.
//!
//! Ignored locally; CI runs it with `--include-ignored` and then it must fail loudly when
//! pymodbus cannot be started, never pass silently.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::float_cmp)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use mycopod_adapters::modbus::{
    ClientOptions, DataType, DeviceDef, Exception, Layout, ModbusClient, RegisterDef, Table, Value,
};
use tokio::io::AsyncReadExt as _;
use tokio::process::{Child, Command};

/// Starts the pymodbus server script on a free loopback port and waits (bounded) until it
/// accepts connections. Panics with the server's own output when it cannot start.
async fn start_pymodbus() -> (Child, u16) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/pymodbus_server.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start python3 for the pymodbus interop test: {e}"));
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(mut err) = child.stderr.take() {
                err.read_to_string(&mut stderr).await.unwrap();
            }
            panic!(
                "pymodbus server exited ({status}) before accepting connections; install it with \
                 `python3 -m pip install 'pymodbus>=3.6,<4'`. Its output:\n{stderr}"
            );
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return (child, port);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("pymodbus server did not accept connections on 127.0.0.1:{port} within 10s");
}

fn device(port: u16) -> DeviceDef {
    let mut d = DeviceDef::tcp("pymodbus", "127.0.0.1", port);
    d.timeout = Duration::from_secs(2);
    d.registers = vec![
        RegisterDef::new("f32_be", Table::Holding, 0, DataType::F32),
        RegisterDef::new("f32_ws", Table::Holding, 2, DataType::F32).layout(Layout::WordSwap),
        RegisterDef::new("u16", Table::Holding, 10, DataType::U16),
        RegisterDef::new("i16", Table::Holding, 11, DataType::I16),
        RegisterDef::new("u64", Table::Holding, 20, DataType::U64),
        RegisterDef::new(
            "name",
            Table::Holding,
            30,
            DataType::String { registers: 3 },
        ),
        RegisterDef::new("cutoff", Table::Holding, 50, DataType::F32).writable(0.001),
        RegisterDef::new("count", Table::Holding, 60, DataType::U32)
            .layout(Layout::WordByteSwap)
            .writable(0.0),
        RegisterDef::new("mode", Table::Holding, 70, DataType::U16).writable(0.0),
        RegisterDef::new("temp", Table::Input, 5, DataType::I16).scaled(0.1, 0.0),
        RegisterDef::new("pump", Table::Coil, 3, DataType::Bool).writable(0.0),
        RegisterDef::new("door", Table::Discrete, 7, DataType::Bool),
    ];
    d
}

#[tokio::test]
#[ignore = "needs pymodbus (python3 -m pip install pymodbus); CI runs it"]
async fn client_should_read_and_write_a_pymodbus_server() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (mut child, port) = start_pymodbus().await;
        let client = ModbusClient::with_options(device(port), ClientOptions::default()).unwrap();
        assert_eq!(client.read_plan().len(), 5, "{:?}", client.read_plan());

        let values = client.read_all().await.unwrap();
        let get = |name: &str| values.iter().find(|(n, _)| n == name).unwrap().1.clone();
        assert_eq!(get("f32_be"), Value::Float(f64::from(123.45f32)));
        assert_eq!(get("f32_ws"), Value::Float(f64::from(123.45f32)));
        assert_eq!(get("u16"), Value::Int(0x1234));
        assert_eq!(get("i16"), Value::Int(-2));
        assert_eq!(get("u64"), Value::Int(0x0123_4567_89AB_CDEF));
        assert_eq!(get("name"), Value::Text("MYCO".into()));
        let temp = get("temp").as_f64().unwrap();
        assert!((temp - 65.2).abs() < 1e-9, "{temp}");
        assert_eq!(get("pump"), Value::Bool(false));
        assert_eq!(get("door"), Value::Bool(false));

        // Writes with functions 16, 06 and 05, each verified by reading back.
        assert_eq!(
            client
                .write_value("cutoff", &Value::Float(0.75))
                .await
                .unwrap(),
            Value::Float(0.75)
        );
        assert_eq!(
            client
                .write_value("count", &Value::Int(3_000_000_000))
                .await
                .unwrap(),
            Value::Int(3_000_000_000)
        );
        assert_eq!(
            client.write_value("mode", &Value::Int(4)).await.unwrap(),
            Value::Int(4)
        );
        assert_eq!(
            client
                .write_value("pump", &Value::Bool(true))
                .await
                .unwrap(),
            Value::Bool(true)
        );
        let again = client
            .read_registers(&["cutoff", "count", "mode", "pump"])
            .await
            .unwrap();
        assert_eq!(again[0].1, Value::Float(0.75));
        assert_eq!(again[1].1, Value::Int(3_000_000_000));
        assert_eq!(again[2].1, Value::Int(4));
        assert_eq!(again[3].1, Value::Bool(true));

        // An address pymodbus does not have comes back as a named exception.
        let mut ghost = device(port);
        ghost.registers.push(RegisterDef::new(
            "ghost",
            Table::Holding,
            5000,
            DataType::U16,
        ));
        let ghost = ModbusClient::new(ghost).unwrap();
        let err = ghost.read_registers(&["ghost"]).await.unwrap_err();
        assert_eq!(
            err.exception(),
            Some(Exception::IllegalDataAddress),
            "{err:?}"
        );

        assert_eq!(client.connect_count().await, 1);
        child.kill().await.unwrap();
    })
    .await
    .expect("interop test timed out");
}
