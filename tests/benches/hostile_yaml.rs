//! `mycopod validate` on declarations written to hurt it, as CI would run it on a pull
//! request: the release binary on a folder holding one hostile file, timed from start to exit,
//! with its peak resident memory. The two files of issue 20:
//!
//! - `deep`: 200 nested mappings with 1,000-character keys over 3,000 leaves (~230 KB), which
//!   made the loader keep every leaf's whole path (~600 MiB);
//! - `wide`: one mapping of 100,000 keys (~1.2 MB), which made the duplicate-key check
//!   quadratic (~12 s).
//!
//! Each runs twice: under the default limits (the wide file is past `limits.file_bytes`, so it
//! is refused unread) and with the limits raised out of the way (`MYCOPOD_LIMITS_FILE_BYTES`,
//! `MYCOPOD_LIMITS_KEYS_PER_MAPPING`), which measures the loader itself. Goal: each under
//! 200 MiB peak and 3 s.
//!
//! Measures only; it asserts nothing about time or memory. It checks that validate exits 1
//! with the expected finding. Peak memory is GNU time's maximum resident set (`/usr/bin/time
//! -f %M`, from the kernel's rusage of the child); where that is missing it is read from
//! `/proc/PID/status` (`VmHWM`) while the child runs. Run it with
//!
//! ```text
//! cargo build --release -p mycopod && cargo bench -p mycopod-tests --bench hostile_yaml
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mycopod_tests::mycopod_bin;

const ENVELOPE: &str = "apiVersion: mycopod/v1\nkind: Declaration\nmetadata: {name: hostile}\n";

/// 200 nested mappings with 1,000-character keys; the innermost holds 3,000 leaves.
fn deep() -> String {
    let mut text = String::from(ENVELOPE);
    text.push_str("spec:\n  text: hi\n  extra: ");
    for level in 0..200 {
        let key: String =
            std::iter::repeat_n(char::from(b'a' + (level % 26) as u8), 1000).collect();
        let _ = write!(text, "{{{key}: ");
    }
    text.push('{');
    for leaf in 0..3000 {
        if leaf > 0 {
            text.push_str(", ");
        }
        let _ = write!(text, "l{leaf}: {leaf}");
    }
    text.push('}');
    text.push_str(&"}".repeat(200));
    text.push('\n');
    text
}

/// One mapping of 100,000 keys.
fn wide() -> String {
    let mut text = String::from(ENVELOPE);
    text.push_str("spec:\n  text: hi\n  extra:\n");
    for key in 0..100_000 {
        let _ = writeln!(text, "    k{key:06}: 1");
    }
    text
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

struct Outcome {
    wall: Duration,
    peak_kib: u64,
    code: Option<i32>,
    stdout: String,
}

fn validate(dir: &Path, env: &[(&str, &str)]) -> Result<Outcome> {
    let gnu_time = Path::new("/usr/bin/time");
    let peak_file = dir.join("peak");
    let mut command = if gnu_time.exists() {
        let mut c = Command::new(gnu_time);
        c.arg("-f")
            .arg("%M")
            .arg("-o")
            .arg(&peak_file)
            .arg(mycopod_bin());
        c
    } else {
        Command::new(mycopod_bin())
    };
    command
        .args(["validate", "--format", "json"])
        .arg(dir.join("repo"))
        .envs(env.iter().copied())
        .env_remove("MYCOPOD_CONFIG")
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let started = Instant::now();
    let mut child = command.spawn().context("start mycopod validate")?;
    let mut polled = 0;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        polled = polled.max(vm_hwm_kib(child.id()).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(2));
    };
    let wall = started.elapsed();
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        use std::io::Read as _;
        out.read_to_string(&mut stdout)?;
    }
    let peak_kib = std::fs::read_to_string(&peak_file)
        .ok()
        .and_then(|t| t.lines().last().and_then(|l| l.trim().parse().ok()))
        .unwrap_or(polled);
    Ok(Outcome {
        wall,
        peak_kib,
        code: status.code(),
        stdout,
    })
}

fn main() -> Result<()> {
    let raised = [
        ("MYCOPOD_LIMITS_FILE_BYTES", "16777216"),
        ("MYCOPOD_LIMITS_KEYS_PER_MAPPING", "1000000"),
    ];
    println!("| file | size | limits | wall | peak RSS | finding |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, text, refused_by_default) in [
        ("deep", deep(), "unknown-field"),
        ("wide", wide(), "limit-exceeded"),
    ] {
        for (limits, env, expected) in [
            ("default", &[][..], refused_by_default),
            ("raised", &raised[..], "unknown-field"),
        ] {
            let dir = tempfile::tempdir()?;
            std::fs::create_dir(dir.path().join("repo"))?;
            std::fs::write(dir.path().join("repo").join(format!("{name}.yaml")), &text)?;
            let out = validate(dir.path(), env)?;
            if out.code != Some(1) || !out.stdout.contains(&format!("\"{expected}\"")) {
                bail!(
                    "{name} under {limits} limits: expected exit 1 with {expected}, got {:?}: {}",
                    out.code,
                    out.stdout.chars().take(2000).collect::<String>()
                );
            }
            println!(
                "| {name} | {:.0} KB | {limits} | {:.2} s | {:.1} MiB | `{expected}` |",
                text.len() as f64 / 1000.0,
                out.wall.as_secs_f64(),
                out.peak_kib as f64 / 1024.0
            );
        }
    }
    Ok(())
}
