//! Loads and validates one repository and reports time per phase and peak memory (VmHWM).
//! Without a path it generates the benchmark's 10,000-document repository in a temp dir.
//! Run: `cargo run --release -p mycopod-specs --example load_repo [-- PATH]`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../benches/support/mod.rs"]
mod support;

use std::time::Instant;

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

/// CPU time this thread has run, from the scheduler (immune to other processes on the machine).
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    let temp = tempfile::tempdir().unwrap();
    let path = match std::env::args().nth(1) {
        Some(p) => std::path::PathBuf::from(p),
        None => {
            support::generate(temp.path());
            temp.path().to_owned()
        }
    };
    let before = status_kib("VmHWM:");
    let cpu = cpu_ns();
    let t = Instant::now();
    let loaded = mycopod_specs::load_path(&path).unwrap();
    let load = t.elapsed();
    let t = Instant::now();
    let diagnostics = mycopod_specs::validate(&loaded);
    let validate = t.elapsed();
    let t = Instant::now();
    let desired = mycopod_specs::DesiredState::from_loaded(&loaded);
    let desired_time = t.elapsed();
    let cpu = cpu_ns() - cpu;
    println!(
        "{} documents in {} files: wall time load {:.0} ms, validate {:.0} ms, desired state {:.0} ms ({} guests); {} findings; CPU time of all three {:.0} ms",
        loaded.documents.len(),
        loaded.files.len(),
        load.as_secs_f64() * 1e3,
        validate.as_secs_f64() * 1e3,
        desired_time.as_secs_f64() * 1e3,
        desired.guests.len(),
        diagnostics.len(),
        cpu as f64 / 1e6
    );
    println!(
        "peak RSS (VmHWM): {:.1} MiB before loading, {:.1} MiB after",
        before as f64 / 1024.0,
        status_kib("VmHWM:") as f64 / 1024.0
    );
}
