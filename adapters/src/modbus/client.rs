//! The Modbus client of one device: coalesced reads, verified writes, reconnects with backoff.
//!
//! Every request runs under the device's timeout (tokio-modbus has none of its own). After a
//! timeout, a transport failure or a protocol violation the connection is dropped, so a late
//! reply can never be matched to the next request; the next call reconnects after an
//! exponential backoff. Exception responses keep the connection and surface as typed,
//! non-retried errors. Requests to one device are serialized behind one mutex; different
//! devices are independent and can be polled concurrently. The client decides nothing about
//! what should be written: callers pass the values.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_modbus::client::{Client as _, Context};
use tokio_modbus::{Request, Response, Slave};

use super::codec::{differs, normalize, register_differs};
use super::error::{ModbusError, PlanError, RequestError};
use super::plan::{ReadRequest, check_register, plan_reads};
use super::{DeviceDef, Endpoint, MAX_WRITE_REGISTERS, RegisterDef, Table, Value, codec};

/// Tuning of reconnects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    /// Wait before the first reconnect after a failure; doubles with each further failure.
    pub backoff_initial: Duration,
    /// Upper bound of the wait between reconnects.
    pub backoff_max: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
        }
    }
}

/// Connection state of one device, only touched with the device's mutex held.
#[derive(Default)]
struct Conn {
    ctx: Option<Context>,
    /// Consecutive failures since the last successful request.
    failures: u32,
    /// No reconnect before this instant.
    retry_at: Option<Instant>,
    /// Successful connects so far.
    connects: u64,
}

impl Conn {
    /// Drops the connection (a late reply must never reach the next request) and schedules the
    /// next connect attempt.
    fn fail(&mut self, options: &ClientOptions) {
        self.ctx = None;
        self.failures = self.failures.saturating_add(1);
        let wait = crate::backoff::Backoff::new(options.backoff_initial, options.backoff_max)
            .random(self.failures);
        self.retry_at = Some(Instant::now() + wait);
    }

    fn succeed(&mut self) {
        self.failures = 0;
        self.retry_at = None;
    }
}

/// Registers or bits read by one request.
enum Block {
    Words(Vec<u16>),
    Bits(Vec<bool>),
}

/// A client for one Modbus device. Cheap to share behind an `Arc`; all requests to the device
/// go through one connection, one at a time.
pub struct ModbusClient {
    device: DeviceDef,
    plan: Vec<ReadRequest>,
    options: ClientOptions,
    conn: Mutex<Conn>,
}

impl std::fmt::Debug for ModbusClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModbusClient")
            .field("device", &self.device.name)
            .field("endpoint", &self.device.endpoint)
            .field("requests_per_read_all", &self.plan.len())
            .finish_non_exhaustive()
    }
}

impl ModbusClient {
    /// A client for `device` with default reconnect options. Does not connect yet.
    ///
    /// # Errors
    /// [`ModbusError::Plan`] when a register cannot be read (bad width, past 65535, ...).
    pub fn new(device: DeviceDef) -> Result<Self, ModbusError> {
        Self::with_options(device, ClientOptions::default())
    }

    /// A client for `device` with the given reconnect options. Does not connect yet.
    ///
    /// # Errors
    /// [`ModbusError::Plan`] when a register cannot be read (bad width, past 65535, ...).
    pub fn with_options(device: DeviceDef, options: ClientOptions) -> Result<Self, ModbusError> {
        let plan =
            plan_reads(&device.registers, device.max_gap).map_err(|source| ModbusError::Plan {
                device: device.name.clone(),
                source,
            })?;
        Ok(Self {
            device,
            plan,
            options,
            conn: Mutex::new(Conn::default()),
        })
    }

    /// The device definition.
    #[must_use]
    pub fn device(&self) -> &DeviceDef {
        &self.device
    }

    /// The requests one [`Self::read_all`] sends.
    #[must_use]
    pub fn read_plan(&self) -> &[ReadRequest] {
        &self.plan
    }

    /// How many times a connection has been opened successfully.
    pub async fn connect_count(&self) -> u64 {
        self.conn.lock().await.connects
    }

    /// Closes the connection, if any; the next request reconnects without waiting.
    pub async fn disconnect(&self) {
        let mut conn = self.conn.lock().await;
        if let Some(mut ctx) = conn.ctx.take() {
            // Best effort: the connection is gone either way.
            let _ = tokio::time::timeout(self.device.timeout, ctx.disconnect()).await;
        }
    }

    /// Reads every register of the device with the coalesced read plan, in definition order.
    ///
    /// # Errors
    /// The first failing request ([`ModbusError::ReadRegisters`], [`ModbusError::Connect`]).
    #[tracing::instrument(skip_all, fields(device = %self.device.name))]
    pub async fn read_all(&self) -> Result<Vec<(String, Value)>, ModbusError> {
        let defs: Vec<&RegisterDef> = self.device.registers.iter().collect();
        let mut conn = self.conn.lock().await;
        self.read_defs(&mut conn, &defs, &self.plan).await
    }

    /// Reads the named registers, coalesced, in the order of `names`.
    ///
    /// # Errors
    /// [`ModbusError::UnknownRegister`] before any request; otherwise the first failing request.
    #[tracing::instrument(skip_all, fields(device = %self.device.name))]
    pub async fn read_registers(
        &self,
        names: &[&str],
    ) -> Result<Vec<(String, Value)>, ModbusError> {
        let defs = names
            .iter()
            .map(|n| self.def(n))
            .collect::<Result<Vec<_>, _>>()?;
        let plan = plan_reads(defs.iter().copied(), self.device.max_gap)
            .map_err(|source| self.plan_error(source))?;
        let mut conn = self.conn.lock().await;
        self.read_defs(&mut conn, &defs, &plan).await
    }

    /// Reads the setpoint registers `names` (coalesced) for comparison with desired values.
    ///
    /// # Errors
    /// As [`Self::read_registers`].
    pub async fn observe_setpoints(
        &self,
        names: &[&str],
    ) -> Result<BTreeMap<String, Value>, ModbusError> {
        Ok(self.read_registers(names).await?.into_iter().collect())
    }

    /// Whether an observed value fails to hold a desired setpoint of register `name`: the
    /// desired value is first normalized to what the register can hold (rounding of scaled
    /// integers, f32 precision), then compared with the register's tolerance.
    ///
    /// # Errors
    /// [`ModbusError::UnknownRegister`].
    pub fn setpoint_differs(
        &self,
        name: &str,
        desired: &Value,
        observed: &Value,
    ) -> Result<bool, ModbusError> {
        let def = self.def(name)?;
        Ok(register_differs(def, desired, observed))
    }

    /// Writes the setpoint and verifies it by reading it back; returns the value read back.
    ///
    /// # Errors
    /// As [`Self::write_value`].
    pub async fn apply_setpoint(&self, name: &str, value: &Value) -> Result<Value, ModbusError> {
        self.write_value(name, value).await
    }

    /// Writes `value` to register `name`, then reads it back and compares; returns the value
    /// read back. See [`Self::write_values`] for the functions used and the comparison.
    ///
    /// # Errors
    /// As [`Self::write_values`].
    pub async fn write_value(&self, name: &str, value: &Value) -> Result<Value, ModbusError> {
        let mut read_back = self.write_values(&[(name, value.clone())]).await?;
        // write_values returns one value per value written.
        read_back.pop().map(|(_, v)| v).ok_or_else(|| {
            self.plan_error(PlanError::Invalid {
                register: name.to_owned(),
                reason: "nothing read back".to_owned(),
            })
        })
    }

    /// Writes several values in one exchange with the device, then reads them all back
    /// (coalesced) and compares: exactly for integers, booleans and text, within the register's
    /// tolerance for analog values. Returns the values read back, in the order given.
    ///
    /// Coils at consecutive addresses go out together with function 15 (a lone coil with 05);
    /// holding registers that follow each other without a gap go out with function 16 in
    /// chunks of at most 123 registers (a lone one-register value with 06). A register bit is
    /// read, changed and written back with 06. Every value is encoded before the first request,
    /// so a bad value writes nothing.
    ///
    /// # Errors
    /// [`ModbusError::UnknownRegister`], [`ModbusError::NotWritable`], [`ModbusError::Codec`]
    /// before any request; [`ModbusError::WriteRegisters`] or [`ModbusError::ReadRegisters`]
    /// when a request fails; [`ModbusError::VerifyWrite`] for the first value read back
    /// different from the value written.
    #[tracing::instrument(skip_all, fields(device = %self.device.name, count = values.len()))]
    pub async fn write_values(
        &self,
        values: &[(&str, Value)],
    ) -> Result<Vec<(String, Value)>, ModbusError> {
        let mut items = Vec::with_capacity(values.len());
        for (name, value) in values {
            let def = self.def(name)?;
            if !def.writable || !def.table.is_writable() {
                return Err(ModbusError::NotWritable {
                    device: self.device.name.clone(),
                    register: def.name.clone(),
                });
            }
            check_register(def).map_err(|source| self.plan_error(source))?;
            let words =
                codec::encode(def, value).map_err(|source| self.codec_error(def, source))?;
            let written = normalize(def, value).unwrap_or_else(|| value.clone());
            items.push(WriteItem {
                def,
                words,
                written,
            });
        }
        let defs: Vec<&RegisterDef> = items.iter().map(|i| i.def).collect();
        let plan = plan_reads(defs.iter().copied(), self.device.max_gap)
            .map_err(|source| self.plan_error(source))?;

        let mut conn = self.conn.lock().await;
        for group in write_groups(&items) {
            self.write_group(&mut conn, &group).await?;
        }
        let read_back = self.read_defs(&mut conn, &defs, &plan).await?;
        drop(conn);
        for (item, (_, got)) in items.iter().zip(&read_back) {
            if differs(&item.written, got, verify_tolerance(item.def)) {
                return Err(ModbusError::VerifyWrite {
                    device: self.device.name.clone(),
                    register: item.def.name.clone(),
                    written: item.written.clone(),
                    read_back: got.clone(),
                });
            }
        }
        Ok(read_back)
    }

    /// Sends one group of writes (see [`write_groups`]).
    async fn write_group(
        &self,
        conn: &mut Conn,
        group: &[&WriteItem<'_>],
    ) -> Result<(), ModbusError> {
        let Some(first) = group.first() else {
            return Ok(());
        };
        let def = first.def;
        let names: Vec<&str> = group.iter().map(|i| i.def.name.as_str()).collect();
        let end = group.last().map_or(def.span().end, |i| i.def.span().end);
        let write_err = |source| ModbusError::WriteRegisters {
            device: self.device.name.clone(),
            register: names.join(","),
            table: def.table,
            range: def.span().start..end,
            source,
        };
        match (def.table, def.bit) {
            (Table::Coil, _) => {
                let bits: Vec<bool> = group
                    .iter()
                    .map(|i| i.words.first().is_some_and(|w| *w != 0))
                    .collect();
                let request = match bits.as_slice() {
                    [on] => Request::WriteSingleCoil(def.address, *on),
                    _ => Request::WriteMultipleCoils(def.address, bits.into()),
                };
                self.transact(conn, request, &write_err).await?;
            }
            (_, Some(bit)) => {
                let own = ReadRequest {
                    table: def.table,
                    start: def.address,
                    count: 1,
                };
                let current = match self.read_block(conn, own).await? {
                    Block::Words(w) => w.first().copied().unwrap_or(0),
                    Block::Bits(_) => 0,
                };
                let mask = 1u16 << (bit & 15);
                let merged = (current & !mask) | (first.words.first().copied().unwrap_or(0) & mask);
                self.transact(
                    conn,
                    Request::WriteSingleRegister(def.address, merged),
                    &write_err,
                )
                .await?;
            }
            _ => {
                let words: Vec<u16> = group.iter().flat_map(|i| i.words.iter().copied()).collect();
                if let [word] = words.as_slice() {
                    self.transact(
                        conn,
                        Request::WriteSingleRegister(def.address, *word),
                        &write_err,
                    )
                    .await?;
                    return Ok(());
                }
                for (i, chunk) in words.chunks(usize::from(MAX_WRITE_REGISTERS)).enumerate() {
                    // check_register keeps every value inside the address space.
                    let offset = u16::try_from(i * usize::from(MAX_WRITE_REGISTERS)).unwrap_or(0);
                    let address = def.address.saturating_add(offset);
                    self.transact(
                        conn,
                        Request::WriteMultipleRegisters(address, chunk.to_vec().into()),
                        &write_err,
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }

    fn def(&self, name: &str) -> Result<&RegisterDef, ModbusError> {
        self.device
            .register(name)
            .ok_or_else(|| ModbusError::UnknownRegister {
                device: self.device.name.clone(),
                register: name.to_owned(),
            })
    }

    fn plan_error(&self, source: PlanError) -> ModbusError {
        ModbusError::Plan {
            device: self.device.name.clone(),
            source,
        }
    }

    fn codec_error(&self, def: &RegisterDef, source: super::CodecError) -> ModbusError {
        ModbusError::Codec {
            device: self.device.name.clone(),
            register: def.name.clone(),
            source,
        }
    }

    /// Sends the planned requests and decodes `defs` from the blocks read.
    async fn read_defs(
        &self,
        conn: &mut Conn,
        defs: &[&RegisterDef],
        plan: &[ReadRequest],
    ) -> Result<Vec<(String, Value)>, ModbusError> {
        let mut blocks = Vec::with_capacity(plan.len());
        for req in plan {
            blocks.push((*req, self.read_block(conn, *req).await?));
        }
        let mut out = Vec::with_capacity(defs.len());
        for def in defs {
            let Some((req, block)) = blocks.iter().find(|(r, _)| r.covers(def)) else {
                // The plan covers every register by construction (see plan tests).
                return Err(self.plan_error(PlanError::Invalid {
                    register: def.name.clone(),
                    reason: "not covered by the read plan".to_owned(),
                }));
            };
            let at = usize::from(def.address - req.start);
            let value = match block {
                Block::Bits(bits) => codec::decode_bit(bits[at]),
                Block::Words(words) => {
                    codec::decode(def, &words[at..]).map_err(|e| self.codec_error(def, e))?
                }
            };
            out.push((def.name.clone(), value));
        }
        Ok(out)
    }

    /// One read request, with its answer checked for length.
    async fn read_block(&self, conn: &mut Conn, req: ReadRequest) -> Result<Block, ModbusError> {
        let err = |source| ModbusError::ReadRegisters {
            device: self.device.name.clone(),
            table: req.table,
            range: req.range(),
            source,
        };
        let request = match req.table {
            Table::Holding => Request::ReadHoldingRegisters(req.start, req.count),
            Table::Input => Request::ReadInputRegisters(req.start, req.count),
            Table::Coil => Request::ReadCoils(req.start, req.count),
            Table::Discrete => Request::ReadDiscreteInputs(req.start, req.count),
        };
        let expected = usize::from(req.count);
        let (block, got) = match self.transact(conn, request, err).await? {
            Response::ReadHoldingRegisters(mut w) | Response::ReadInputRegisters(mut w) => {
                let got = w.len();
                w.truncate(expected);
                (Block::Words(w), got)
            }
            Response::ReadCoils(mut b) | Response::ReadDiscreteInputs(mut b) => {
                let got = b.len();
                b.truncate(expected);
                (Block::Bits(b), got)
            }
            // tokio-modbus rejects a response of another function as a protocol error.
            _ => (Block::Words(Vec::new()), 0),
        };
        if got < expected {
            conn.fail(&self.options);
            return Err(err(RequestError::ShortResponse { expected, got }));
        }
        Ok(block)
    }

    /// Sends one request under the device timeout, connecting first if needed.
    ///
    /// A connection kept from an earlier request may have been closed by the device in the
    /// meantime (gateways close idle connections): when such a reused connection fails with a
    /// transport error, the request is sent once more on a fresh connection. Reads are
    /// idempotent and every write is verified by reading back, so repeating is safe. Timeouts
    /// are never repeated.
    async fn transact(
        &self,
        conn: &mut Conn,
        request: Request<'static>,
        wrap: impl Fn(RequestError) -> ModbusError,
    ) -> Result<Response, ModbusError> {
        let mut reused = conn.ctx.is_some();
        loop {
            // The context stays in this future while the request is in flight: if the caller
            // drops the future mid-request, the connection goes with it and no late reply can
            // reach a later request.
            let mut ctx = match conn.ctx.take() {
                Some(ctx) => ctx,
                None => self.connect(conn).await?,
            };
            let timeout = self.device.timeout;
            return match tokio::time::timeout(timeout, ctx.call(request.clone())).await {
                Ok(Ok(Ok(response))) => {
                    conn.ctx = Some(ctx);
                    conn.succeed();
                    Ok(response)
                }
                Ok(Ok(Err(exception))) => {
                    // The device answered: the connection is in sync and stays.
                    conn.ctx = Some(ctx);
                    conn.succeed();
                    Err(wrap(RequestError::Exception(exception.into())))
                }
                Ok(Err(tokio_modbus::Error::Transport(e))) if reused => {
                    tracing::debug!(device = %self.device.name, err = %e, "kept connection failed; reconnecting once");
                    reused = false;
                    continue;
                }
                Ok(Err(tokio_modbus::Error::Transport(e))) => {
                    conn.fail(&self.options);
                    Err(wrap(RequestError::Transport(e)))
                }
                Ok(Err(tokio_modbus::Error::Protocol(e))) => {
                    conn.fail(&self.options);
                    Err(wrap(RequestError::Protocol(e)))
                }
                Err(_) => {
                    conn.fail(&self.options);
                    tracing::debug!(device = %self.device.name, ?timeout, "request timed out; connection dropped");
                    Err(wrap(RequestError::Timeout(timeout)))
                }
            };
        }
    }

    /// Opens a connection, waiting out the backoff of earlier failures first.
    async fn connect(&self, conn: &mut Conn) -> Result<Context, ModbusError> {
        if let Some(at) = conn.retry_at {
            tokio::time::sleep_until(at).await;
        }
        let endpoint = self.device.endpoint.to_string();
        let err = |source| ModbusError::Connect {
            device: self.device.name.clone(),
            endpoint: endpoint.clone(),
            source,
        };
        let slave = Slave(self.device.unit);
        let opened = tokio::time::timeout(self.device.timeout, async {
            match &self.device.endpoint {
                Endpoint::Tcp { host, port } => {
                    let stream = tcp_stream(host, *port).await?;
                    Ok(Some(tokio_modbus::client::tcp::attach_slave(stream, slave)))
                }
                Endpoint::RtuOverTcp { host, port } => {
                    let stream = tcp_stream(host, *port).await?;
                    Ok(Some(tokio_modbus::client::rtu::attach_slave(stream, slave)))
                }
                Endpoint::Rtu { .. } => serial(&self.device.endpoint, slave),
            }
        })
        .await;
        match opened {
            Ok(Ok(Some(ctx))) => {
                conn.connects += 1;
                tracing::debug!(device = %self.device.name, %endpoint, "connected");
                Ok(ctx)
            }
            Ok(Ok(None)) => Err(ModbusError::Unsupported {
                device: self.device.name.clone(),
                endpoint,
                reason: "build with the `serial` feature for rtu over a serial port",
            }),
            Ok(Err(e)) => {
                conn.fail(&self.options);
                Err(err(RequestError::Transport(e)))
            }
            Err(_) => {
                conn.fail(&self.options);
                Err(err(RequestError::Timeout(self.device.timeout)))
            }
        }
    }
}

/// One value to write, encoded.
struct WriteItem<'a> {
    def: &'a RegisterDef,
    words: Vec<u16>,
    written: Value,
}

/// Groups writes into requests: coils at consecutive addresses (up to 1968, the function 15
/// limit), and whole holding registers that follow each other without gap or overlap (any
/// total; split into chunks of 123 when sent). Register bits are written one by one.
fn write_groups<'i, 'a>(items: &'i [WriteItem<'a>]) -> Vec<Vec<&'i WriteItem<'a>>> {
    let mut sorted: Vec<&WriteItem<'a>> = items.iter().collect();
    sorted.sort_by_key(|i| (i.def.table, i.def.address, i.def.bit));
    let mut groups: Vec<Vec<&WriteItem<'a>>> = Vec::new();
    for item in sorted {
        let joins = groups.last().and_then(|g| g.last()).is_some_and(|last| {
            let (a, b) = (last.def, item.def);
            a.table == b.table
                && a.bit.is_none()
                && b.bit.is_none()
                && a.span().end == b.span().start
                && (b.table != Table::Coil || groups.last().map_or(0, Vec::len) < 1968)
        });
        match groups.last_mut() {
            Some(group) if joins => group.push(item),
            _ => groups.push(vec![item]),
        }
    }
    groups
}

async fn tcp_stream(host: &str, port: u16) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect((host, port)).await?;
    // Requests are small and answered one at a time: Nagle would only add latency.
    stream.set_nodelay(true)?;
    Ok(stream)
}

#[cfg(feature = "serial")]
#[allow(clippy::unnecessary_wraps)]
fn serial(endpoint: &Endpoint, slave: Slave) -> std::io::Result<Option<Context>> {
    use tokio_serial::SerialPortBuilderExt as _;
    let Endpoint::Rtu {
        path,
        baud,
        parity,
        stop_bits,
    } = endpoint
    else {
        return Ok(None);
    };
    let parity = match parity {
        super::Parity::None => tokio_serial::Parity::None,
        super::Parity::Even => tokio_serial::Parity::Even,
        super::Parity::Odd => tokio_serial::Parity::Odd,
    };
    let stop_bits = if *stop_bits == 2 {
        tokio_serial::StopBits::Two
    } else {
        tokio_serial::StopBits::One
    };
    let port = tokio_serial::new(path.as_str(), *baud)
        .parity(parity)
        .stop_bits(stop_bits)
        .open_native_async()
        .map_err(std::io::Error::from)?;
    Ok(Some(tokio_modbus::client::rtu::attach_slave(port, slave)))
}

#[cfg(not(feature = "serial"))]
#[allow(clippy::unnecessary_wraps)]
fn serial(_endpoint: &Endpoint, _slave: Slave) -> std::io::Result<Option<Context>> {
    Ok(None)
}

/// Tolerance when verifying a write: the register's own for analog values, none otherwise.
fn verify_tolerance(def: &RegisterDef) -> f64 {
    if def.is_analog() { def.tolerance } else { 0.0 }
}

/// Reads all registers of many devices concurrently (each device still one request at a time).
pub async fn read_many(
    clients: &[Arc<ModbusClient>],
) -> Vec<Result<Vec<(String, Value)>, ModbusError>> {
    futures::future::join_all(clients.iter().map(|c| c.read_all())).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_failed_connect_should_wait_out_the_jittered_backoff_and_a_success_should_clear_it() {
        let options = ClientOptions {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(350),
        };
        let full = [100u128, 200, 350, 350];
        let mut conn = Conn::default();
        for full in full {
            let before = Instant::now();
            conn.fail(&options);
            let wait = conn.retry_at.unwrap().saturating_duration_since(before);
            // The shared backoff's upper half (its own tests check the curve).
            assert!(
                wait.as_millis() >= full / 2 - 1 && wait.as_millis() <= full,
                "{wait:?} for {full} ms"
            );
        }
        conn.succeed();
        assert!(conn.retry_at.is_none());
    }
}
