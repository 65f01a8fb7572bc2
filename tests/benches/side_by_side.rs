//! Side by side: converging 100 QEMU guests on the Proxmox simulator with `mycopod apply`,
//! with Ansible's `community.proxmox.proxmox_kvm` module, and with a plain `proxmoxer` script,
//! first from nothing (create and start every guest) and then again with nothing to change.
//! Each tool gets a fresh simulator served over HTTPS on loopback (proxmoxer and Ansible speak
//! only HTTPS) and the same declared guests: name, 1 core, 512 MiB, one virtio NIC on vmbr0,
//! an 8 GiB disk on `local-lvm`, running. The simulator counts every request; each pass is
//! timed from the tool's start to its exit, so process start-up is part of the figure.
//!
//! Measures only; it asserts nothing about time. It checks that each tool did the work (every
//! guest exists, runs and has the declared cores and memory; the second pass writes nothing)
//! and prints a Markdown table. Run it with
//!
//! ```text
//! python3 -m venv /tmp/pyb && /tmp/pyb/bin/pip install ansible proxmoxer requests
//! cargo build --release -p mycopod
//! PATH=/tmp/pyb/bin:$PATH MYCOPOD_BENCH_PYTHON=/tmp/pyb/bin/python \
//!   cargo bench -p mycopod-tests --bench side_by_side
//! ```
//!
//! `MYCOPOD_BENCH_GUESTS` sets the guest count (default 100), `MYCOPOD_BENCH_TOOLS` which
//! tools run (default `mycopod,proxmoxer,ansible`), `MYCOPOD_BENCH_PYTHON` the Python that has
//! proxmoxer (default `python3`; Ansible's module runs with it too). A tool that is not
//! installed is reported as skipped. The proxmoxer script and the playbook are
//! `tests/benches/side_by_side/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mycopod_adapters::proxmox::sim::{SimConfig, SimStatus};
use mycopod_tests::mycopod_bin;
use mycopod_tests::tls_sim::TlsSim;

const TOKEN_SECRET: &str = "tok-secret";
const FIRST_VMID: u32 = 1000;

/// What one pass of one tool cost.
struct Pass {
    wall: Duration,
    requests: usize,
    writes: usize,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/side_by_side")
}

fn declarations(endpoint: &str, ca_file: &Path, guests: u32) -> String {
    let mut yaml = format!(
        "apiVersion: mycopod/v1\nkind: ProxmoxCluster\nmetadata: {{name: home}}\nspec:\n  \
         endpoint: {endpoint}\n  auth: {{tokenId: \"mycopod@pve!gitops\", secretEnv: PVE_TOKEN}}\n  \
         tls: {{caFile: \"{ca}\"}}\n  defaultNode: pve1\n",
        ca = ca_file.display()
    );
    for vmid in FIRST_VMID..FIRST_VMID + guests {
        yaml.push_str(&format!(
            "---\napiVersion: mycopod/v1\nkind: Guest\nmetadata: {{name: vm{vmid}}}\nspec:\n  \
             cluster: home\n  type: qemu\n  vmid: {vmid}\n  state: running\n  cores: 1\n  \
             memory: 512MiB\n  disks:\n    - {{interface: scsi0, storage: local-lvm, size: 8G}}\n  \
             networks:\n    - {{model: virtio, bridge: vmbr0}}\n"
        ));
    }
    yaml
}

/// Runs `command`, failing with its output when it does not exit 0.
fn run(what: &str, command: &mut Command) -> Result<Output> {
    let out = command
        .output()
        .with_context(|| format!("start {what} ({command:?})"))?;
    if !out.status.success() {
        bail!(
            "{what} exited {}\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Times one pass of a tool and counts the simulator's requests during it.
fn pass(sim: &TlsSim, what: &str, command: &mut Command) -> Result<Pass> {
    sim.control.clear_requests();
    let started = Instant::now();
    run(what, command)?;
    let wall = started.elapsed();
    let log = sim.control.requests();
    Ok(Pass {
        wall,
        requests: log.len(),
        writes: log.iter().filter(|r| r.is_write()).count(),
    })
}

/// Every guest exists, runs and carries the declared name, cores and memory.
fn check_converged(sim: &TlsSim, tool: &str, guests: u32) -> Result<()> {
    for vmid in FIRST_VMID..FIRST_VMID + guests {
        let Some(guest) = sim.control.guest(vmid) else {
            bail!("{tool}: guest {vmid} was not created");
        };
        let value = |key: &str| guest.config.get(key).map(String::as_str).unwrap_or("");
        if guest.status != SimStatus::Running
            || value("cores") != "1"
            || value("memory") != "512"
            || value("name") != format!("vm{vmid}")
        {
            bail!(
                "{tool}: guest {vmid} is {:?} with {:?}",
                guest.status,
                guest.config
            );
        }
    }
    Ok(())
}

/// Both passes of one tool against its own simulator.
fn measure(
    rt: &tokio::runtime::Runtime,
    tool: &str,
    guests: u32,
    dir: &Path,
) -> Result<(Pass, Pass)> {
    let sim = rt.block_on(TlsSim::start(SimConfig::default()))?;
    let python = env_or("MYCOPOD_BENCH_PYTHON", "python3");
    let command = || -> Result<Command> {
        let mut c = match tool {
            "mycopod" => {
                let repo = dir.join("repo");
                std::fs::create_dir_all(&repo)?;
                let ca = dir.join("pve-ca.pem");
                std::fs::write(&ca, &sim.ca_pem)?;
                std::fs::write(repo.join("site.yaml"), declarations(&sim.url, &ca, guests))?;
                std::fs::write(
                    dir.join("mycopod.toml"),
                    format!(
                        "[[secrets]]\nenv = \"PVE_TOKEN\"\ndestinations = [\"{}\"]\n",
                        sim.url
                    ),
                )?;
                let mut c = Command::new(mycopod_bin());
                c.current_dir(dir)
                    .args(["apply", "--repo", "repo"])
                    .env(
                        "MYCOPOD_DATABASE_URL",
                        format!("sqlite://{}", dir.join("m.db").display()),
                    )
                    .env("MYCOPOD_LOG", "warn");
                c
            }
            "proxmoxer" => {
                let mut c = Command::new(&python);
                c.arg(scripts_dir().join("converge.py"));
                c
            }
            "ansible" => {
                let mut c =
                    Command::new(env_or("MYCOPOD_BENCH_ANSIBLE_PLAYBOOK", "ansible-playbook"));
                c.current_dir(dir)
                    .args(["-i", "localhost,", "-e"])
                    .arg(format!("ansible_python_interpreter={python}"))
                    .arg(scripts_dir().join("playbook.yml"))
                    .env("ANSIBLE_NOCOLOR", "1")
                    .env("ANSIBLE_LOCALHOST_WARNING", "false")
                    .env("ANSIBLE_INVENTORY_UNPARSED_WARNING", "false")
                    .env("ANSIBLE_LOCAL_TEMP", dir.join("ansible-tmp"));
                c
            }
            other => bail!("unknown tool {other} (mycopod, proxmoxer or ansible)"),
        };
        c.env("PVE_PORT", sim.port.to_string())
            .env("PVE_TOKEN", TOKEN_SECRET)
            .env("GUESTS", guests.to_string())
            .env("FIRST_VMID", FIRST_VMID.to_string())
            .env("NODE", "pve1");
        Ok(c)
    };
    let first = pass(&sim, &format!("{tool}, from nothing"), &mut command()?)?;
    check_converged(&sim, tool, guests)?;
    let second = pass(&sim, &format!("{tool}, nothing to change"), &mut command()?)?;
    check_converged(&sim, tool, guests)?;
    if second.writes != 0 {
        bail!(
            "{tool} wrote {} times with nothing to change",
            second.writes
        );
    }
    Ok((first, second))
}

/// The first line a tool prints of its version, or why it is not there.
fn installed(tool: &str) -> Result<String> {
    let python = env_or("MYCOPOD_BENCH_PYTHON", "python3");
    let out = match tool {
        "mycopod" => run(tool, Command::new(mycopod_bin()).arg("--version"))?,
        "proxmoxer" => run(
            tool,
            Command::new(&python).args([
                "-c",
                "import proxmoxer; print('proxmoxer', proxmoxer.__version__)",
            ]),
        )?,
        "ansible" => {
            run(
                "proxmoxer for ansible",
                Command::new(&python).args(["-c", "import proxmoxer"]),
            )?;
            run(
                tool,
                Command::new(env_or("MYCOPOD_BENCH_ANSIBLE_PLAYBOOK", "ansible-playbook"))
                    .arg("--version"),
            )?
        }
        other => bail!("unknown tool {other}"),
    };
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned())
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; this harness takes no arguments of its own.
    let guests: u32 = env_or("MYCOPOD_BENCH_GUESTS", "100")
        .parse()
        .context("MYCOPOD_BENCH_GUESTS")?;
    let tools = env_or("MYCOPOD_BENCH_TOOLS", "mycopod,proxmoxer,ansible");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    for tool in tools.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let version = match installed(tool) {
            Ok(v) => v,
            Err(e) => {
                println!("{tool}: skipped, not usable here: {e:#}");
                continue;
            }
        };
        println!("{tool} ({version}): converging {guests} guests ...");
        let dir = tempfile::tempdir()?;
        let (first, second) = measure(&rt, tool, guests, dir.path())?;
        println!(
            "{tool}: from nothing {:.2} s, {} requests ({} writes); nothing to change {:.2} s, \
             {} requests",
            first.wall.as_secs_f64(),
            first.requests,
            first.writes,
            second.wall.as_secs_f64(),
            second.requests
        );
        rows.push((tool.to_owned(), version, first, second));
    }
    println!();
    println!(
        "| tool | from nothing: wall | requests (per guest) | nothing to change: wall | requests |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for (tool, version, first, second) in &rows {
        println!(
            "| {tool} ({version}) | {:.2} s | {} ({:.2}) | {:.2} s | {} |",
            first.wall.as_secs_f64(),
            first.requests,
            first.requests as f64 / f64::from(guests.max(1)),
            second.wall.as_secs_f64(),
            second.requests
        );
    }
    Ok(())
}
