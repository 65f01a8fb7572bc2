//! A Modbus TCP device simulator on loopback, built from a [`DeviceDef`], for tests and
//! benchmarks of everything that talks Modbus.
//!
//! It is a stateful fake, not a request script: writes change its registers and reads return
//! them. It accepts writes only to writable registers and answers IllegalDataAddress for
//! unknown or read-only addresses; registers can follow waveforms on an injectable clock;
//! faults (an exception for an address, a delay, dropping the connection, going silent) can
//! be switched on and off; it counts requests per function code. It never talks to anything
//! but the clients that connect to it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_modbus::server::Service;
use tokio_modbus::server::tcp::Server;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

use super::error::{CodecError, Exception, PlanError};
use super::plan::check_register;
use super::waveform::{Clock, SystemClock, WalkCache, Waveform};
use super::{
    DataType, DeviceDef, Endpoint, MAX_READ_BITS, MAX_READ_REGISTERS, MAX_WRITE_REGISTERS,
    RegisterDef, Table, Value, codec,
};

/// A fault the simulator can be told to show.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer every request touching this address of this table with the exception.
    Exception {
        /// Table of the address.
        table: Table,
        /// The register or coil address as sent on the wire (0-based).
        address: u16,
        /// Exception to answer with.
        exception: Exception,
    },
    /// Answer every request only after this delay.
    Delay(Duration),
    /// Read requests but never answer them.
    Silent,
    /// Close the connection when the next request arrives (on every connection, until cleared).
    DropConnection,
    /// Acknowledge writes without storing them, like a device in local/manual mode.
    IgnoreWrites,
}

/// Why a simulator could not be built or a value not be set.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The listener could not be bound.
    #[error("bind simulator for {device}")]
    Bind {
        /// Device name.
        device: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A register definition is unusable.
    #[error("define register {register} of simulated {device}")]
    Define {
        /// Device name.
        device: String,
        /// Register name.
        register: String,
        /// Why.
        #[source]
        source: PlanError,
    },
    /// The register is not defined on the device.
    #[error("find register {register} of simulated {device}: not defined")]
    UnknownRegister {
        /// Device name.
        device: String,
        /// Register name.
        register: String,
    },
    /// The value does not fit the register.
    #[error("set register {register} of simulated {device}")]
    Codec {
        /// Device name.
        device: String,
        /// Register name.
        register: String,
        /// Why.
        #[source]
        source: CodecError,
    },
}

/// What a simulator starts with: the device definition, initial values, waveforms and clock.
#[derive(Debug)]
pub struct SimDevice {
    device: DeviceDef,
    values: Vec<(String, Value)>,
    waveforms: Vec<(String, Waveform)>,
    clock: Arc<dyn Clock>,
    rtu_over_tcp: bool,
    listen: SocketAddr,
}

impl SimDevice {
    /// A simulated device with every register at zero and the real clock.
    #[must_use]
    pub fn new(device: DeviceDef) -> Self {
        Self {
            device,
            values: Vec::new(),
            waveforms: Vec::new(),
            clock: Arc::new(SystemClock::new()),
            rtu_over_tcp: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }

    /// Listens on this address instead of a free port on 127.0.0.1 (for a demo with fixed
    /// ports; tests keep the default).
    #[must_use]
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Speaks RTU frames (with CRC) over TCP instead of Modbus TCP, like a serial gateway.
    #[must_use]
    pub fn rtu_over_tcp(mut self) -> Self {
        self.rtu_over_tcp = true;
        self
    }

    /// Sets an initial value.
    #[must_use]
    pub fn value(mut self, register: impl Into<String>, value: Value) -> Self {
        self.values.push((register.into(), value));
        self
    }

    /// Lets a register follow a waveform (until a client or [`Simulator::set_value`] writes it).
    #[must_use]
    pub fn waveform(mut self, register: impl Into<String>, waveform: Waveform) -> Self {
        self.waveforms.push((register.into(), waveform));
        self
    }

    /// Uses the given clock for waveforms (a [`super::ManualClock`] in deterministic tests).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Binds `127.0.0.1:0` (or the [`Self::listen`] address) and starts serving. The server stops when the [`Simulator`] drops.
    ///
    /// # Errors
    /// [`SimError`] for an unusable definition, an unknown register or value, or a failed bind.
    pub async fn start(self) -> Result<Simulator, SimError> {
        let name = self.device.name.clone();
        let mut memory = Memory::default();
        let mut extent: HashMap<Table, (u32, u32)> = HashMap::new();
        let mut writable = HashSet::new();
        for reg in &self.device.registers {
            check_register(reg).map_err(|source| SimError::Define {
                device: name.clone(),
                register: reg.name.clone(),
                source,
            })?;
            let span = reg.span();
            let e = extent.entry(reg.table).or_insert((span.start, span.end));
            *e = (e.0.min(span.start), e.1.max(span.end));
            for a in span {
                let a = u16::try_from(a).unwrap_or(u16::MAX);
                memory.cells.entry((reg.table, a)).or_insert(0);
                if reg.writable {
                    writable.insert((reg.table, a));
                }
            }
        }
        let state = Arc::new(State {
            device: self.device,
            extent,
            writable,
            memory: Mutex::new(memory),
            faults: Mutex::new(Vec::new()),
            counts: Mutex::new(BTreeMap::new()),
            connections: AtomicU64::new(0),
            open: Mutex::new(Vec::new()),
            clock: self.clock,
        });
        for (register, value) in &self.values {
            state.set_value(register, value)?;
        }
        for (register, waveform) in self.waveforms {
            let reg = state.def(&register)?.clone();
            lock(&state.memory)
                .waves
                .push((reg, waveform, WalkCache::new()));
        }

        let listener = TcpListener::bind(self.listen)
            .await
            .map_err(|source| SimError::Bind {
                device: name.clone(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SimError::Bind {
            device: name.clone(),
            source,
        })?;
        let serving = Arc::clone(&state);
        let rtu_over_tcp = self.rtu_over_tcp;
        let task = tokio::spawn(async move {
            let on_connected = move |stream: TcpStream, _peer: SocketAddr| {
                let state = Arc::clone(&serving);
                async move { state.accept(stream) }
            };
            let on_error =
                |err: std::io::Error| tracing::debug!(%err, "simulated connection ended");
            let served = if rtu_over_tcp {
                tokio_modbus::server::rtu_over_tcp::Server::new(listener)
                    .serve(&on_connected, on_error)
                    .await
            } else {
                Server::new(listener).serve(&on_connected, on_error).await
            };
            if let Err(err) = served {
                tracing::debug!(%err, "simulator stopped");
            }
        });
        Ok(Simulator {
            addr,
            state,
            task,
            rtu_over_tcp,
        })
    }
}

/// A running simulated device. Dropping it stops the server and closes its connections.
#[derive(Debug)]
pub struct Simulator {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
    rtu_over_tcp: bool,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.task.abort();
        self.state.drop_connections();
    }
}

impl Simulator {
    /// The address the simulator listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The device definition with its endpoint pointing at this simulator.
    #[must_use]
    pub fn device_def(&self) -> DeviceDef {
        let mut device = self.state.device.clone();
        let (host, port) = (self.addr.ip().to_string(), self.addr.port());
        device.endpoint = if self.rtu_over_tcp {
            Endpoint::RtuOverTcp { host, port }
        } else {
            Endpoint::Tcp { host, port }
        };
        device
    }

    /// The current value of a register, behind the client's back.
    ///
    /// # Errors
    /// [`SimError::UnknownRegister`].
    pub fn value(&self, register: &str) -> Result<Value, SimError> {
        self.state.value(register)
    }

    /// Sets a register behind the client's back (also stops its waveform).
    ///
    /// # Errors
    /// [`SimError::UnknownRegister`], [`SimError::Codec`].
    pub fn set_value(&self, register: &str, value: &Value) -> Result<(), SimError> {
        self.state.set_value(register, value)
    }

    /// Switches a fault on; it stays until [`Self::clear_faults`].
    pub fn set_fault(&self, fault: Fault) {
        lock(&self.state.faults).push(fault);
    }

    /// Switches every fault off.
    pub fn clear_faults(&self) {
        lock(&self.state.faults).clear();
    }

    /// Closes every open connection now.
    pub fn drop_connections(&self) {
        self.state.drop_connections();
    }

    /// Requests received with this function code (3 = read holding registers, ...).
    #[must_use]
    pub fn requests(&self, function: u8) -> u64 {
        lock(&self.state.counts)
            .get(&function)
            .copied()
            .unwrap_or(0)
    }

    /// Requests received, per function code.
    #[must_use]
    pub fn request_counts(&self) -> BTreeMap<u8, u64> {
        lock(&self.state.counts).clone()
    }

    /// Requests received in total.
    #[must_use]
    pub fn total_requests(&self) -> u64 {
        lock(&self.state.counts).values().sum()
    }

    /// Sets every request counter back to zero.
    pub fn reset_counters(&self) {
        lock(&self.state.counts).clear();
    }

    /// Connections accepted so far.
    #[must_use]
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::Relaxed)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Default)]
struct Memory {
    /// Registers (holding, input) and bits (coil, discrete as 0/1) of defined addresses.
    cells: HashMap<(Table, u16), u16>,
    /// Registers following a waveform.
    waves: Vec<(RegisterDef, Waveform, WalkCache)>,
}

impl Memory {
    fn get(&self, table: Table, address: u16) -> u16 {
        self.cells.get(&(table, address)).copied().unwrap_or(0)
    }

    /// Stores encoded words (or a bit) for a register, merging register bits.
    fn store(&mut self, reg: &RegisterDef, words: &[u16]) {
        if let Some(bit) = reg.bit {
            let mask = 1u16 << (bit & 15);
            let cell = self.cells.entry((reg.table, reg.address)).or_insert(0);
            *cell = (*cell & !mask) | (words.first().copied().unwrap_or(0) & mask);
            return;
        }
        for (a, w) in (reg.address..).zip(words) {
            self.cells.insert((reg.table, a), *w);
        }
    }

    fn words(&self, reg: &RegisterDef) -> Vec<u16> {
        (0..reg.width())
            .map(|i| self.get(reg.table, reg.address.saturating_add(i)))
            .collect()
    }

    /// Brings every waveform register up to `elapsed`.
    fn refresh(&mut self, elapsed: Duration) {
        let mut updates = Vec::with_capacity(self.waves.len());
        for (reg, wave, cache) in &mut self.waves {
            let x = wave.value_at(elapsed, cache);
            let value = if reg.data_type == DataType::Bool {
                Value::Bool(x >= 0.5)
            } else {
                Value::Float(x)
            };
            // A value the register cannot hold keeps the previous one.
            if let Ok(words) = codec::encode(reg, &value) {
                updates.push((reg.clone(), words));
            }
        }
        for (reg, words) in updates {
            self.store(&reg, &words);
        }
    }

    /// Stops the waveforms of registers overlapping the written addresses.
    fn stop_waves(&mut self, table: Table, range: std::ops::Range<u32>) {
        self.waves.retain(|(reg, _, _)| {
            let span = reg.span();
            reg.table != table || span.end <= range.start || span.start >= range.end
        });
    }
}

#[derive(Debug)]
struct State {
    device: DeviceDef,
    /// Per table, the addresses from the lowest defined one to the end of the highest: reads
    /// inside are answered (gaps read as 0), reads outside are IllegalDataAddress.
    extent: HashMap<Table, (u32, u32)>,
    writable: HashSet<(Table, u16)>,
    memory: Mutex<Memory>,
    faults: Mutex<Vec<Fault>>,
    counts: Mutex<BTreeMap<u8, u64>>,
    connections: AtomicU64,
    /// Handles of the open sockets, so that [`Simulator::drop_connections`] can close them.
    /// Weak: the socket closes as soon as tokio-modbus drops the connection's service.
    open: Mutex<Vec<Weak<std::net::TcpStream>>>,
    clock: Arc<dyn Clock>,
}

type Answer = Result<Option<Response>, ExceptionCode>;

impl State {
    fn def(&self, register: &str) -> Result<&RegisterDef, SimError> {
        self.device
            .register(register)
            .ok_or_else(|| SimError::UnknownRegister {
                device: self.device.name.clone(),
                register: register.to_owned(),
            })
    }

    fn value(&self, register: &str) -> Result<Value, SimError> {
        let reg = self.def(register)?;
        let mut mem = lock(&self.memory);
        mem.refresh(self.clock.elapsed());
        let words = mem.words(reg);
        if reg.table.is_bits() {
            return Ok(Value::Bool(words.first().is_some_and(|w| *w != 0)));
        }
        codec::decode(reg, &words).map_err(|source| SimError::Codec {
            device: self.device.name.clone(),
            register: register.to_owned(),
            source,
        })
    }

    fn set_value(&self, register: &str, value: &Value) -> Result<(), SimError> {
        let reg = self.def(register)?;
        let words = codec::encode(reg, value).map_err(|source| SimError::Codec {
            device: self.device.name.clone(),
            register: register.to_owned(),
            source,
        })?;
        let mut mem = lock(&self.memory);
        mem.stop_waves(reg.table, reg.span());
        mem.store(reg, &words);
        Ok(())
    }

    fn drop_connections(&self) {
        for stream in lock(&self.open).drain(..).filter_map(|w| w.upgrade()) {
            // Already closed by the peer is fine.
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn accept(
        self: &Arc<Self>,
        stream: TcpStream,
    ) -> std::io::Result<Option<(SimService, TcpStream)>> {
        stream.set_nodelay(true)?;
        // Keep a clone of the socket so that a fault can shut it down from outside the
        // request loop tokio-modbus runs.
        let std_stream = stream.into_std()?;
        let handle = Arc::new(std_stream.try_clone()?);
        let stream = TcpStream::from_std(std_stream)?;
        {
            let mut open = lock(&self.open);
            open.retain(|s| s.strong_count() > 0);
            open.push(Arc::downgrade(&handle));
        }
        self.connections.fetch_add(1, Ordering::Relaxed);
        Ok(Some((
            SimService {
                state: Arc::clone(self),
                socket: handle,
            },
            stream,
        )))
    }

    async fn handle(&self, req: SlaveRequest<'static>, socket: &std::net::TcpStream) -> Answer {
        let request = req.request;
        *lock(&self.counts)
            .entry(request.function_code().value())
            .or_insert(0) += 1;
        let faults = lock(&self.faults).clone();
        for fault in &faults {
            match fault {
                Fault::Silent => return Ok(None),
                Fault::DropConnection => {
                    let _ = socket.shutdown(Shutdown::Both);
                    return Ok(None);
                }
                Fault::Delay(d) => tokio::time::sleep(*d).await,
                Fault::Exception { .. } | Fault::IgnoreWrites => {}
            }
        }
        if req.slave != self.device.unit {
            return Err(ExceptionCode::GatewayTargetDevice);
        }
        if let Some((table, range)) = touched(&request) {
            for fault in &faults {
                if let Fault::Exception {
                    table: t,
                    address,
                    exception,
                } = fault
                    && *t == table
                    && range.contains(&u32::from(*address))
                {
                    return Err((*exception).into());
                }
            }
        }
        let ignore_writes = faults.contains(&Fault::IgnoreWrites);
        self.serve(request, ignore_writes).map(Some)
    }

    fn check_read(
        &self,
        table: Table,
        start: u16,
        count: u16,
        max: u16,
    ) -> Result<(), ExceptionCode> {
        if count == 0 || count > max {
            return Err(ExceptionCode::IllegalDataValue);
        }
        let end = u32::from(start) + u32::from(count);
        match self.extent.get(&table) {
            Some(&(lo, hi)) if u32::from(start) >= lo && end <= hi => Ok(()),
            _ => Err(ExceptionCode::IllegalDataAddress),
        }
    }

    fn check_write(&self, table: Table, start: u16, count: usize) -> Result<(), ExceptionCode> {
        let all = (0..count).all(|i| {
            u16::try_from(i)
                .ok()
                .and_then(|i| start.checked_add(i))
                .is_some_and(|a| self.writable.contains(&(table, a)))
        });
        if all {
            Ok(())
        } else {
            Err(ExceptionCode::IllegalDataAddress)
        }
    }

    fn serve(
        &self,
        request: Request<'static>,
        ignore_writes: bool,
    ) -> Result<Response, ExceptionCode> {
        let read_words = |table: Table, start: u16, count: u16| {
            self.check_read(table, start, count, MAX_READ_REGISTERS)?;
            let mut mem = lock(&self.memory);
            mem.refresh(self.clock.elapsed());
            Ok::<_, ExceptionCode>(
                (start..=start.saturating_add(count - 1))
                    .map(|a| mem.get(table, a))
                    .collect::<Vec<u16>>(),
            )
        };
        let read_bits = |table: Table, start: u16, count: u16| {
            self.check_read(table, start, count, MAX_READ_BITS)?;
            let mut mem = lock(&self.memory);
            mem.refresh(self.clock.elapsed());
            Ok::<_, ExceptionCode>(
                (start..=start.saturating_add(count - 1))
                    .map(|a| mem.get(table, a) != 0)
                    .collect::<Vec<bool>>(),
            )
        };
        let write = |table: Table, start: u16, values: &[u16]| {
            self.check_write(table, start, values.len())?;
            if ignore_writes {
                return Ok(());
            }
            let mut mem = lock(&self.memory);
            let end = u32::from(start) + u32::try_from(values.len()).unwrap_or(0);
            mem.stop_waves(table, u32::from(start)..end);
            for (a, v) in (start..).zip(values) {
                mem.cells.insert((table, a), *v);
            }
            Ok::<_, ExceptionCode>(())
        };
        match request {
            Request::ReadHoldingRegisters(a, n) => {
                read_words(Table::Holding, a, n).map(Response::ReadHoldingRegisters)
            }
            Request::ReadInputRegisters(a, n) => {
                read_words(Table::Input, a, n).map(Response::ReadInputRegisters)
            }
            Request::ReadCoils(a, n) => read_bits(Table::Coil, a, n).map(Response::ReadCoils),
            Request::ReadDiscreteInputs(a, n) => {
                read_bits(Table::Discrete, a, n).map(Response::ReadDiscreteInputs)
            }
            Request::WriteSingleRegister(a, w) => {
                write(Table::Holding, a, &[w]).map(|()| Response::WriteSingleRegister(a, w))
            }
            Request::WriteMultipleRegisters(a, words) => {
                let n = u16::try_from(words.len()).unwrap_or(u16::MAX);
                if n == 0 || n > MAX_WRITE_REGISTERS {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                write(Table::Holding, a, &words).map(|()| Response::WriteMultipleRegisters(a, n))
            }
            Request::WriteSingleCoil(a, on) => {
                write(Table::Coil, a, &[u16::from(on)]).map(|()| Response::WriteSingleCoil(a, on))
            }
            Request::WriteMultipleCoils(a, bits) => {
                let n = u16::try_from(bits.len()).unwrap_or(u16::MAX);
                if n == 0 || n > 1968 {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                let words: Vec<u16> = bits.iter().map(|b| u16::from(*b)).collect();
                write(Table::Coil, a, &words).map(|()| Response::WriteMultipleCoils(a, n))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }
}

/// The table and address range a request touches, for address-based exception faults.
fn touched(request: &Request<'_>) -> Option<(Table, std::ops::Range<u32>)> {
    let span = |a: u16, n: usize| {
        let a = u32::from(a);
        a..a + u32::try_from(n).unwrap_or(u32::MAX - a)
    };
    Some(match request {
        Request::ReadHoldingRegisters(a, n) => (Table::Holding, span(*a, usize::from(*n))),
        Request::ReadInputRegisters(a, n) => (Table::Input, span(*a, usize::from(*n))),
        Request::ReadCoils(a, n) => (Table::Coil, span(*a, usize::from(*n))),
        Request::ReadDiscreteInputs(a, n) => (Table::Discrete, span(*a, usize::from(*n))),
        Request::WriteSingleRegister(a, _) => (Table::Holding, span(*a, 1)),
        Request::WriteMultipleRegisters(a, w) => (Table::Holding, span(*a, w.len())),
        Request::WriteSingleCoil(a, _) => (Table::Coil, span(*a, 1)),
        Request::WriteMultipleCoils(a, b) => (Table::Coil, span(*a, b.len())),
        _ => return None,
    })
}

/// The tokio-modbus service of one simulated connection.
struct SimService {
    state: Arc<State>,
    socket: Arc<std::net::TcpStream>,
}

impl Service for SimService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let state = Arc::clone(&self.state);
        let socket = Arc::clone(&self.socket);
        Box::pin(async move { state.handle(req, &socket).await })
    }
}
