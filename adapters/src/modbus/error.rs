//! Typed errors of the Modbus adapter, each named after the step that failed, with a class.
//!
//! Transport failures (retry after reconnecting) and exception responses (the device refused:
//! do not retry) stay distinct types all the way up; nothing here flattens them into strings.

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use super::{DataType, Table, Value};

pub use crate::error_class::ErrorClass;

/// A Modbus exception response, named as in the Modbus specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exception {
    /// 0x01: the function code is not supported.
    IllegalFunction,
    /// 0x02: the address (or address plus quantity) is not allowed.
    IllegalDataAddress,
    /// 0x03: a value in the request is not allowed.
    IllegalDataValue,
    /// 0x04: an unrecoverable error while performing the action.
    ServerDeviceFailure,
    /// 0x05: accepted, processing takes long.
    Acknowledge,
    /// 0x06: busy with a long-running command.
    ServerDeviceBusy,
    /// 0x08: parity error in extended memory.
    MemoryParityError,
    /// 0x0A: the gateway has no path to the target.
    GatewayPathUnavailable,
    /// 0x0B: the target device behind the gateway did not respond.
    GatewayTargetDevice,
    /// Any other exception code.
    Other(u8),
}

impl Exception {
    /// The exception code on the wire.
    #[must_use]
    pub fn code(self) -> u8 {
        u8::from(tokio_modbus::ExceptionCode::from(self))
    }
}

impl From<tokio_modbus::ExceptionCode> for Exception {
    fn from(code: tokio_modbus::ExceptionCode) -> Self {
        use tokio_modbus::ExceptionCode as E;
        match code {
            E::IllegalFunction => Exception::IllegalFunction,
            E::IllegalDataAddress => Exception::IllegalDataAddress,
            E::IllegalDataValue => Exception::IllegalDataValue,
            E::ServerDeviceFailure => Exception::ServerDeviceFailure,
            E::Acknowledge => Exception::Acknowledge,
            E::ServerDeviceBusy => Exception::ServerDeviceBusy,
            E::MemoryParityError => Exception::MemoryParityError,
            E::GatewayPathUnavailable => Exception::GatewayPathUnavailable,
            E::GatewayTargetDevice => Exception::GatewayTargetDevice,
            E::Custom(c) => Exception::Other(c),
        }
    }
}

impl From<Exception> for tokio_modbus::ExceptionCode {
    fn from(e: Exception) -> Self {
        use tokio_modbus::ExceptionCode as E;
        match e {
            Exception::IllegalFunction => E::IllegalFunction,
            Exception::IllegalDataAddress => E::IllegalDataAddress,
            Exception::IllegalDataValue => E::IllegalDataValue,
            Exception::ServerDeviceFailure => E::ServerDeviceFailure,
            Exception::Acknowledge => E::Acknowledge,
            Exception::ServerDeviceBusy => E::ServerDeviceBusy,
            Exception::MemoryParityError => E::MemoryParityError,
            Exception::GatewayPathUnavailable => E::GatewayPathUnavailable,
            Exception::GatewayTargetDevice => E::GatewayTargetDevice,
            Exception::Other(c) => E::new(c),
        }
    }
}

impl fmt::Display for Exception {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exception::Other(c) => write!(f, "exception 0x{c:02X}"),
            other => write!(f, "{other:?}"),
        }
    }
}

/// Why one request to a device failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// No answer within the device's timeout; the connection was dropped.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed; it was dropped.
    #[error("transport failed")]
    Transport(#[source] std::io::Error),
    /// The answer did not match the request (a protocol violation); the connection was dropped.
    #[error("protocol violation")]
    Protocol(#[source] tokio_modbus::ProtocolError),
    /// The answer carried fewer values than asked for; the connection was dropped.
    #[error("short answer: asked for {expected}, got {got}")]
    ShortResponse {
        /// Quantity asked for.
        expected: usize,
        /// Quantity received.
        got: usize,
    },
    /// The device answered with an exception.
    #[error("device answered {0}")]
    Exception(Exception),
}

impl RequestError {
    /// Whether retrying (after a reconnect) may help.
    #[must_use]
    pub fn class(&self) -> ErrorClass {
        match self {
            RequestError::Exception(_) => ErrorClass::Rejected,
            _ => ErrorClass::Transient,
        }
    }

    /// The exception the device answered with, if that is what happened.
    #[must_use]
    pub fn exception(&self) -> Option<Exception> {
        match self {
            RequestError::Exception(e) => Some(*e),
            _ => None,
        }
    }
}

/// Why a value could not be decoded from or encoded into registers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodecError {
    /// Fewer registers than the type needs.
    #[error("{data_type} needs {expected} registers, got {got}")]
    WrongLength {
        /// Type being decoded.
        data_type: DataType,
        /// Registers needed.
        expected: usize,
        /// Registers given.
        got: usize,
    },
    /// The value does not fit the register type after removing scale and offset.
    #[error("{value} does not fit {data_type} (raw {raw})")]
    OutOfRange {
        /// Value asked for.
        value: String,
        /// Raw number it would need.
        raw: f64,
        /// Target type.
        data_type: DataType,
    },
    /// The value's kind does not match the register's type (text into a number, ...).
    #[error("{value} cannot be written as {data_type}")]
    TypeMismatch {
        /// Value asked for.
        value: String,
        /// Target type.
        data_type: DataType,
    },
    /// The text has non-ASCII characters or does not fit the registers.
    #[error("text {text:?} does not fit {registers} registers as ascii")]
    BadText {
        /// Text asked for.
        text: String,
        /// Registers available.
        registers: u16,
    },
}

/// Why a device's registers could not be planned into read requests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The register runs past address 65535.
    #[error("register {register} at {address} with width {width} runs past address 65535")]
    PastEnd {
        /// Register name.
        register: String,
        /// Its address.
        address: u16,
        /// Its width.
        width: u16,
    },
    /// The register alone is wider than one request may be, or has width 0.
    #[error("register {register} has width {width}, allowed 1..={max}")]
    BadWidth {
        /// Register name.
        register: String,
        /// Its width.
        width: u16,
        /// Largest width one request can read.
        max: u16,
    },
    /// A register definition contradicts itself (bit out of range, writable input register...).
    #[error("register {register}: {reason}")]
    Invalid {
        /// Register name.
        register: String,
        /// What is wrong.
        reason: String,
    },
}

/// An error of the Modbus client, named after the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum ModbusError {
    /// The device definition could not be turned into read requests.
    #[error("plan reads for {device}")]
    Plan {
        /// Device name.
        device: String,
        /// What is wrong with it.
        #[source]
        source: PlanError,
    },
    /// Opening the connection failed or timed out.
    #[error("connect to {device} at {endpoint}")]
    Connect {
        /// Device name.
        device: String,
        /// Where it was tried.
        endpoint: String,
        /// Why it failed.
        #[source]
        source: RequestError,
    },
    /// A read request failed.
    #[error("read {table} {range:?} on {device}")]
    ReadRegisters {
        /// Device name.
        device: String,
        /// Table read.
        table: Table,
        /// Addresses read, half open.
        range: Range<u32>,
        /// Why it failed.
        #[source]
        source: RequestError,
    },
    /// A write request failed.
    #[error("write {register} ({table} {range:?}) on {device}")]
    WriteRegisters {
        /// Device name.
        device: String,
        /// Register name.
        register: String,
        /// Table written.
        table: Table,
        /// Addresses written, half open.
        range: Range<u32>,
        /// Why it failed.
        #[source]
        source: RequestError,
    },
    /// The value read back after a write differs from the value written.
    #[error("verify {register} on {device}: wrote {written}, read back {read_back}")]
    VerifyWrite {
        /// Device name.
        device: String,
        /// Register name.
        register: String,
        /// Value written.
        written: Value,
        /// Value read back.
        read_back: Value,
    },
    /// A value could not be encoded or decoded for a register.
    #[error("convert {register} on {device}")]
    Codec {
        /// Device name.
        device: String,
        /// Register name.
        register: String,
        /// Why.
        #[source]
        source: CodecError,
    },
    /// The register name is not defined on the device.
    #[error("find register {register} on {device}: not defined")]
    UnknownRegister {
        /// Device name.
        device: String,
        /// Register name asked for.
        register: String,
    },
    /// The register is defined but not writable.
    #[error("write {register} on {device}: not writable")]
    NotWritable {
        /// Device name.
        device: String,
        /// Register name.
        register: String,
    },
    /// The endpoint kind is not available in this build.
    #[error("connect to {device} at {endpoint}: not supported in this build ({reason})")]
    Unsupported {
        /// Device name.
        device: String,
        /// Where the device was to be reached, as declared.
        endpoint: String,
        /// What is missing.
        reason: &'static str,
    },
}

impl ModbusError {
    /// How a caller should treat the error: transient ones are retried with backoff.
    #[must_use]
    pub fn class(&self) -> ErrorClass {
        match self {
            ModbusError::Connect { source, .. }
            | ModbusError::ReadRegisters { source, .. }
            | ModbusError::WriteRegisters { source, .. } => source.class(),
            ModbusError::UnknownRegister { .. } => ErrorClass::NotFound,
            ModbusError::Plan { .. }
            | ModbusError::VerifyWrite { .. }
            | ModbusError::Codec { .. }
            | ModbusError::NotWritable { .. }
            | ModbusError::Unsupported { .. } => ErrorClass::Rejected,
        }
    }

    /// The exception the device answered with, if the error is one.
    #[must_use]
    pub fn exception(&self) -> Option<Exception> {
        match self {
            ModbusError::Connect { source, .. }
            | ModbusError::ReadRegisters { source, .. }
            | ModbusError::WriteRegisters { source, .. } => source.exception(),
            _ => None,
        }
    }
}
