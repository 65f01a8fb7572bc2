//! Polls 100 simulated Modbus TCP devices with 40 registers each, concurrently, through the
//! real client on loopback; clients and simulators share one current-thread runtime (one core).
//!
//! Reports registers read per second (criterion's element throughput) and prints the requests
//! per poll cycle. It measures; it asserts nothing about speed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mycopod_adapters::modbus::{
    DataType, DeviceDef, ModbusClient, RegisterDef, SimDevice, Simulator, Table, Value, Waveform,
    read_many,
};

const DEVICES: usize = 100;

/// 40 registers: 16 f32 and 8 u16 holding (one request), 8 scaled i16 and 4 u32 input
/// (two requests, 92 apart), 4 coils (one request).
fn device(i: usize) -> DeviceDef {
    let mut d = DeviceDef::tcp(format!("fm-{i}"), "127.0.0.1", 0);
    d.timeout = Duration::from_secs(2);
    for k in 0..16u16 {
        d.registers.push(RegisterDef::new(
            format!("flow{k}"),
            Table::Holding,
            k * 2,
            DataType::F32,
        ));
    }
    for k in 0..8u16 {
        d.registers.push(RegisterDef::new(
            format!("status{k}"),
            Table::Holding,
            40 + k,
            DataType::U16,
        ));
    }
    for k in 0..8u16 {
        d.registers.push(
            RegisterDef::new(format!("temp{k}"), Table::Input, k, DataType::I16).scaled(0.1, 0.0),
        );
    }
    for k in 0..4u16 {
        d.registers.push(RegisterDef::new(
            format!("total{k}"),
            Table::Input,
            100 + k * 2,
            DataType::U32,
        ));
    }
    for k in 0..4u16 {
        d.registers.push(
            RegisterDef::new(format!("pump{k}"), Table::Coil, k, DataType::Bool).writable(0.0),
        );
    }
    d
}

async fn fleet() -> (Vec<Simulator>, Vec<Arc<ModbusClient>>) {
    let mut sims = Vec::with_capacity(DEVICES);
    let mut clients = Vec::with_capacity(DEVICES);
    for i in 0..DEVICES {
        let sim = SimDevice::new(device(i))
            .waveform(
                "flow0",
                Waveform::Sine {
                    amplitude: 1.0,
                    period: Duration::from_secs(60),
                    center: 5.0,
                },
            )
            .waveform(
                "total0",
                Waveform::Ramp {
                    start: 0.0,
                    rate_per_s: 10.0,
                },
            )
            .value("status0", Value::Int(1))
            .start()
            .await
            .unwrap();
        clients.push(Arc::new(ModbusClient::new(sim.device_def()).unwrap()));
        sims.push(sim);
    }
    (sims, clients)
}

fn poll(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (sims, clients) = rt.block_on(fleet());

    // One cycle up front: connects, checks every value arrives, counts the requests.
    let first = rt.block_on(read_many(&clients));
    let registers: usize = first.iter().map(|r| r.as_ref().unwrap().len()).sum();
    let requests: u64 = sims.iter().map(Simulator::total_requests).sum();
    println!(
        "modbus_poll: {DEVICES} devices, {registers} registers and {requests} requests per cycle \
         ({} per device)",
        requests / DEVICES as u64
    );

    let mut group = c.benchmark_group("modbus_poll");
    group.throughput(Throughput::Elements(registers as u64));
    group.sample_size(20);
    group.bench_function("100_devices_x_40_registers", |b| {
        b.to_async(&rt).iter(|| async {
            // A failed poll would be fast and meaningless: every device must answer.
            let results = read_many(&clients).await;
            assert!(results.iter().all(Result::is_ok), "a device failed");
            results
        });
    });
    group.finish();
    drop(sims);
}

criterion_group!(benches, poll);
criterion_main!(benches);
