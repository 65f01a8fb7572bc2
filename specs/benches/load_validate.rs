//! Loads and validates a generated repository of 10,000 documents (mixed kinds, realistic
//! sizes) from a temp dir: the goal is under 1 s on one core and under 100 MiB peak.
//! Prints the peak resident memory (VmHWM) after one untimed pass, then lets criterion time
//! `load_path` + `validate`. Run: `cargo bench -p mycopod-specs -- --sample-size 10`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use mycopod_specs::{load_path, validate};

mod support;
use support::{DOCS_PER_FILE, DOCUMENTS, generate};

fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time this thread has run, from the scheduler (immune to other processes on the machine).
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let bytes = generate(dir.path());
    let before = status_kib("VmHWM:").unwrap_or(0);
    let started = std::time::Instant::now();
    let cpu = cpu_ns();
    let loaded = load_path(dir.path()).unwrap();
    let diagnostics = validate(&loaded);
    let cpu = cpu_ns() - cpu;
    let elapsed = started.elapsed();
    let peak = status_kib("VmHWM:").unwrap_or(0);
    assert_eq!(loaded.documents.len(), DOCUMENTS);
    assert!(
        diagnostics.is_empty(),
        "generated repository has findings: {:?}",
        &diagnostics[..diagnostics.len().min(3)]
    );
    drop((loaded, diagnostics));
    println!(
        "repository: {DOCUMENTS} documents, {} files, {:.1} MiB of YAML; one pass {:.0} ms wall, {:.0} ms CPU; peak RSS (VmHWM) {:.1} MiB before, {:.1} MiB after",
        DOCUMENTS / DOCS_PER_FILE,
        bytes as f64 / 1_048_576.0,
        elapsed.as_secs_f64() * 1000.0,
        cpu as f64 / 1e6,
        before as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    c.bench_function("load_and_validate_10000_documents", |b| {
        b.iter(|| {
            let loaded = load_path(dir.path()).unwrap();
            let diagnostics = validate(&loaded);
            (loaded.documents.len(), diagnostics.len())
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
