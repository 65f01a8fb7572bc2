//! Modbus: plain device and register definitions, the pure register codec and read planner,
//! the tokio-modbus client (TCP, RTU over TCP, serial RTU behind the `serial` feature) and a
//! Modbus TCP simulator.
//!
//! This module translates and transports; it never decides whether a setpoint should change.
//! The definitions here mirror the `ModbusDevice` spec but do not depend on `mycopod-specs`;
//! a later step converts the spec into them.
//!
//! ```
//! use mycopod_adapters::modbus::{
//!     DataType, DeviceDef, ModbusClient, RegisterDef, SimDevice, Table, Value,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let mut device = DeviceDef::tcp("fm-1", "10.0.0.21", 502);
//! device.registers = vec![
//!     RegisterDef::new("flow_rate", Table::Holding, 0, DataType::F32),
//!     RegisterDef::new("cutoff", Table::Holding, 10, DataType::F32).writable(0.001),
//! ];
//! // A simulator stands in for the device; its definition points the client at it.
//! let sim = SimDevice::new(device).value("flow_rate", Value::Float(4.5)).start().await?;
//! let client = ModbusClient::new(sim.device_def())?;
//!
//! let readings = client.read_all().await?; // one request: holding 0..12
//! assert_eq!(readings[0], ("flow_rate".to_owned(), Value::Float(4.5)));
//! client.apply_setpoint("cutoff", &Value::Float(0.75)).await?; // written and read back
//! assert_eq!(sim.request_counts(), [(3, 2), (16, 1)].into());
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```

pub mod client;
pub mod codec;
pub mod error;
pub mod plan;
pub mod sim;
pub mod waveform;

use std::fmt;
use std::time::Duration;

pub use client::{ClientOptions, ModbusClient, read_many};
pub use codec::{decode, decode_bit, differs, encode, register_differs};
pub use error::{CodecError, ErrorClass, Exception, ModbusError, PlanError, RequestError};
pub use plan::{ReadRequest, plan_reads};
pub use sim::{Fault, SimDevice, SimError, Simulator};
pub use waveform::{Clock, ManualClock, SystemClock, Waveform};

/// Largest number of registers one read request may ask for (function 03/04).
pub const MAX_READ_REGISTERS: u16 = 125;
/// Largest number of coils or discrete inputs one read request may ask for (function 01/02).
pub const MAX_READ_BITS: u16 = 2000;
/// Largest number of registers one write request may carry (function 16).
pub const MAX_WRITE_REGISTERS: u16 = 123;
/// Default largest gap (in registers or bits) that read planning bridges between two registers.
pub const DEFAULT_MAX_GAP: u16 = 16;

/// One of the four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Read/write 16-bit registers (functions 03, 06, 16).
    Holding,
    /// Read-only 16-bit registers (function 04).
    Input,
    /// Read/write single bits (functions 01, 05, 15).
    Coil,
    /// Read-only single bits (function 02).
    Discrete,
}

impl Table {
    /// Whether the table holds single bits rather than 16-bit registers.
    #[must_use]
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }

    /// Whether Modbus allows writing to this table at all.
    #[must_use]
    pub fn is_writable(self) -> bool {
        matches!(self, Table::Holding | Table::Coil)
    }

    /// Largest quantity one read request on this table may ask for.
    #[must_use]
    pub fn max_read(self) -> u16 {
        if self.is_bits() {
            MAX_READ_BITS
        } else {
            MAX_READ_REGISTERS
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Table::Holding => "holding registers",
            Table::Input => "input registers",
            Table::Coil => "coils",
            Table::Discrete => "discrete inputs",
        })
    }
}

/// How the bits of a register definition are interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// Unsigned 16-bit integer, one register.
    U16,
    /// Signed 16-bit integer, one register.
    I16,
    /// Unsigned 32-bit integer, two registers.
    U32,
    /// Signed 32-bit integer, two registers.
    I32,
    /// Unsigned 64-bit integer, four registers.
    U64,
    /// Signed 64-bit integer, four registers.
    I64,
    /// IEEE 754 single precision, two registers.
    F32,
    /// IEEE 754 double precision, four registers.
    F64,
    /// A coil, a discrete input, or one bit of a register (see [`RegisterDef::bit`]).
    Bool,
    /// ASCII text over this many registers (two characters per register), NUL padded.
    String {
        /// Number of registers the text occupies.
        registers: u16,
    },
}

impl DataType {
    /// Number of registers (or bits, for coils and discrete inputs) the value occupies.
    #[must_use]
    pub fn width(self) -> u16 {
        match self {
            DataType::U16 | DataType::I16 | DataType::Bool => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
            DataType::String { registers } => registers,
        }
    }

    /// Whether the type is an integer (exact unless scaled).
    #[must_use]
    pub fn is_integer(self) -> bool {
        matches!(
            self,
            DataType::U16
                | DataType::I16
                | DataType::U32
                | DataType::I32
                | DataType::U64
                | DataType::I64
        )
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataType::U16 => f.write_str("u16"),
            DataType::I16 => f.write_str("i16"),
            DataType::U32 => f.write_str("u32"),
            DataType::I32 => f.write_str("i32"),
            DataType::U64 => f.write_str("u64"),
            DataType::I64 => f.write_str("i64"),
            DataType::F32 => f.write_str("f32"),
            DataType::F64 => f.write_str("f64"),
            DataType::Bool => f.write_str("bool"),
            DataType::String { registers } => write!(f, "string[{registers}]"),
        }
    }
}

/// Order of the 16-bit words of a multi-register value.
///
/// `High` (the default) sends the most significant word first, as the Modbus standard does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WordOrder {
    /// Most significant word first (no word swap).
    #[default]
    High,
    /// Least significant word first ("word swap").
    Low,
}

/// Order of the two bytes inside each register.
///
/// `High` (the default) sends the most significant byte first, as the Modbus standard does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ByteOrder {
    /// Most significant byte first (no byte swap).
    #[default]
    High,
    /// Least significant byte first ("byte swap").
    Low,
}

/// The four layouts users know by name, as (word order, byte order) pairs.
///
/// For the 32-bit value with bytes `A B C D` (A most significant):
///
/// | name            | word order | byte order | registers      |
/// | --------------- | ---------- | ---------- | -------------- |
/// | `none`          | `High`     | `High`     | `AB CD`        |
/// | `byte`          | `High`     | `Low`      | `BA DC`        |
/// | `word`          | `Low`      | `High`     | `CD AB`        |
/// | `word+byte`     | `Low`      | `Low`      | `DC BA`        |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Big endian, no swap (`ABCD`).
    None,
    /// Bytes swapped inside each register (`BADC`).
    ByteSwap,
    /// Words swapped (`CDAB`).
    WordSwap,
    /// Words and bytes swapped, fully little endian (`DCBA`).
    WordByteSwap,
}

impl Layout {
    /// All four layouts, for tests and tables.
    pub const ALL: [Layout; 4] = [
        Layout::None,
        Layout::ByteSwap,
        Layout::WordSwap,
        Layout::WordByteSwap,
    ];

    /// The (word order, byte order) pair of the layout.
    #[must_use]
    pub fn orders(self) -> (WordOrder, ByteOrder) {
        match self {
            Layout::None => (WordOrder::High, ByteOrder::High),
            Layout::ByteSwap => (WordOrder::High, ByteOrder::Low),
            Layout::WordSwap => (WordOrder::Low, ByteOrder::High),
            Layout::WordByteSwap => (WordOrder::Low, ByteOrder::Low),
        }
    }
}

/// A decoded value, after scale and offset.
///
/// Integers read without scaling stay exact (`Int`); scaled integers and floats are `Float`.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A coil, discrete input or register bit.
    Bool(bool),
    /// An unscaled integer (covers the whole u64 and i64 ranges).
    Int(i128),
    /// A float, or an integer after scale and offset.
    Float(f64),
    /// ASCII text with trailing NULs removed.
    Text(String),
}

impl Value {
    /// The value as a number, if it is one (booleans count as 0 and 1).
    #[must_use]
    #[allow(clippy::cast_precision_loss)]
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            Value::Int(i) => Some(*i as f64),
            Value::Float(x) => Some(*x),
            Value::Text(_) => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Text(s) => write!(f, "{s:?}"),
        }
    }
}

/// One named value on a device: where it lives and how to read it.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterDef {
    /// Name, unique per device.
    pub name: String,
    /// Table the value lives in.
    pub table: Table,
    /// Address of the first register (or bit) of the value, 0-based as on the wire.
    pub address: u16,
    /// Type of the value.
    pub data_type: DataType,
    /// Word order of multi-register values.
    pub word_order: WordOrder,
    /// Byte order inside each register.
    pub byte_order: ByteOrder,
    /// Multiplier applied to the raw number (`value = raw * scale + offset`).
    pub scale: f64,
    /// Added to the raw number after scaling.
    pub offset: f64,
    /// For a `Bool` in a holding or input register: which bit (0 = least significant).
    pub bit: Option<u8>,
    /// Whether mycopod may write the value (only holding registers and coils can be).
    pub writable: bool,
    /// Largest difference between a written and a read-back analog value that still counts
    /// as equal; also the band within which a setpoint is considered held.
    pub tolerance: f64,
}

impl RegisterDef {
    /// A read-only register with the default layout, no scaling and no tolerance.
    #[must_use]
    pub fn new(name: impl Into<String>, table: Table, address: u16, data_type: DataType) -> Self {
        Self {
            name: name.into(),
            table,
            address,
            data_type,
            word_order: WordOrder::High,
            byte_order: ByteOrder::High,
            scale: 1.0,
            offset: 0.0,
            bit: None,
            writable: false,
            tolerance: 0.0,
        }
    }

    /// The same register with the given layout.
    #[must_use]
    pub fn layout(mut self, layout: Layout) -> Self {
        (self.word_order, self.byte_order) = layout.orders();
        self
    }

    /// The same register with scale and offset.
    #[must_use]
    pub fn scaled(mut self, scale: f64, offset: f64) -> Self {
        self.scale = scale;
        self.offset = offset;
        self
    }

    /// The same register, writable, with a tolerance for read-back comparison.
    #[must_use]
    pub fn writable(mut self, tolerance: f64) -> Self {
        self.writable = true;
        self.tolerance = tolerance;
        self
    }

    /// The same register as one bit of a 16-bit register.
    #[must_use]
    pub fn with_bit(mut self, bit: u8) -> Self {
        self.bit = Some(bit);
        self
    }

    /// Number of registers (or bits) the value occupies on the wire.
    #[must_use]
    pub fn width(&self) -> u16 {
        if self.table.is_bits() || self.bit.is_some() {
            1
        } else {
            self.data_type.width()
        }
    }

    /// The half-open address range `[address, address + width)` the value occupies.
    #[must_use]
    pub fn span(&self) -> std::ops::Range<u32> {
        let start = u32::from(self.address);
        start..start + u32::from(self.width())
    }

    /// Whether the value is compared with a tolerance (floats and scaled integers).
    #[must_use]
    #[allow(clippy::float_cmp)]
    pub fn is_analog(&self) -> bool {
        matches!(self.data_type, DataType::F32 | DataType::F64)
            || (self.data_type.is_integer() && (self.scale != 1.0 || self.offset != 0.0))
    }
}

/// Serial parity of an RTU line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Parity {
    /// No parity bit.
    #[default]
    None,
    /// Even parity.
    Even,
    /// Odd parity.
    Odd,
}

/// How to reach a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Modbus TCP (MBAP header).
    Tcp {
        /// Host name or IP address.
        host: String,
        /// TCP port, usually 502.
        port: u16,
    },
    /// RTU frames (with CRC) carried over a TCP connection, as serial gateways do.
    RtuOverTcp {
        /// Host name or IP address of the gateway.
        host: String,
        /// TCP port of the gateway.
        port: u16,
    },
    /// RTU over a local serial port (needs the `serial` cargo feature).
    Rtu {
        /// Device path, e.g. `/dev/ttyUSB0`.
        path: String,
        /// Baud rate.
        baud: u32,
        /// The parity bit of each character: none, even or odd.
        parity: Parity,
        /// Stop bits, 1 or 2.
        stop_bits: u8,
    },
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp { host, port } => write!(f, "tcp {host}:{port}"),
            Endpoint::RtuOverTcp { host, port } => write!(f, "rtu over tcp {host}:{port}"),
            Endpoint::Rtu { path, baud, .. } => write!(f, "rtu {path} at {baud} baud"),
        }
    }
}

/// One Modbus device: how to reach it and what its registers mean.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceDef {
    /// Name of the device (the spec's `metadata.name`).
    pub name: String,
    /// How to reach it.
    pub endpoint: Endpoint,
    /// Unit (slave) id.
    pub unit: u8,
    /// Upper bound for connecting and for every single request.
    pub timeout: Duration,
    /// Largest gap read planning bridges between two registers of one table.
    pub max_gap: u16,
    /// Every register the device declares: where it is and how to decode it.
    pub registers: Vec<RegisterDef>,
}

impl DeviceDef {
    /// A Modbus TCP device with unit 1, a one-second timeout and the default gap.
    #[must_use]
    pub fn tcp(name: impl Into<String>, host: impl Into<String>, port: u16) -> Self {
        Self {
            name: name.into(),
            endpoint: Endpoint::Tcp {
                host: host.into(),
                port,
            },
            unit: 1,
            timeout: Duration::from_secs(1),
            max_gap: DEFAULT_MAX_GAP,
            registers: Vec::new(),
        }
    }

    /// The register with the given name.
    #[must_use]
    pub fn register(&self, name: &str) -> Option<&RegisterDef> {
        self.registers.iter().find(|r| r.name == name)
    }
}
