//! One committed change at 20, 200 and 1,000 guests, end to end: the release `mycopod serve`
//! binary follows a Git repository, the Proxmox simulator runs in this process on loopback,
//! and each sample commits a one-guest change, sends a signed GitHub push, and times how long
//! until the run is listed by `GET /api/v1/runs` and until it has finished. It also counts the
//! simulator's requests per committed change and reads the server's resident memory (from
//! `/proc`) once it idles after observing 1,000 guests.
//!
//! Measures only; it asserts nothing about time. Run it with
//!
//! ```text
//! cargo build --release -p mycopod && cargo bench -p mycopod-tests --bench push_latency
//! ```
//!
//! `MYCOPOD_BENCH_SAMPLES` sets the samples per size (default 10), `MYCOPOD_BENCH_SIZES` the
//! guest counts (default `20,200,1000`), `MYCOPOD_BENCH_IDLE_SECS` how long the server idles
//! before its memory is read (default 3; long enough to attach a profiler by hand).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mycopod_adapters::proxmox::sim::{SimConfig, SimHandle};
use mycopod_tests::{git, mycopod_bin};
use serde_json::{Value, json};

const SECRET: &str = "bench-webhook-secret";
const PASSWORD: &str = "bench-password-long-enough";

fn declarations(pve: &str, guests: u32, changed_cores: u32) -> String {
    let mut yaml = format!(
        "apiVersion: mycopod/v1\nkind: ProxmoxCluster\nmetadata: {{name: home}}\nspec:\n  \
         endpoint: {pve}\n  auth: {{tokenId: \"mycopod@pve!gitops\", secretEnv: PVE_TOKEN}}\n  \
         defaultNode: pve1\n"
    );
    for i in 0..guests {
        let vmid = 1000 + i;
        let cores = if i == 0 { changed_cores } else { 1 };
        yaml.push_str(&format!(
            "---\napiVersion: mycopod/v1\nkind: Guest\nmetadata: {{name: ct{vmid}}}\nspec:\n  \
             cluster: home\n  type: lxc\n  vmid: {vmid}\n  state: stopped\n  \
             ostemplate: local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst\n  \
             cores: {cores}\n  memory: 256MiB\n  rootfs: {{storage: local-lvm, size: 2G}}\n"
        ));
    }
    yaml
}

struct Server {
    child: Child,
    url: String,
    http: reqwest::Client,
    token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start(dir: &Path, pve: &SimHandle) -> Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let config = dir.join("mycopod.toml");
        std::fs::write(
            &config,
            format!(
                "database_url = \"sqlite://{db}\"\nrepo = \"{repo}\"\ncache_dir = \"{cache}\"\n\
                 listen = \"127.0.0.1:{port}\"\npoll_interval = \"1h\"\n\
                 jwt_secret = \"bench-secret-of-at-least-32-bytes-long\"\n\
                 [github]\nwebhook_secret = \"{SECRET}\"\n\
                 [[secrets]]\nenv = \"PVE_TOKEN\"\ndestinations = [\"{pve}\"]\n",
                db = dir.join("m.db").display(),
                repo = dir.join("repo").display(),
                cache = dir.join("cache").display(),
                pve = pve.base_url(),
            ),
        )?;
        let mut add = Command::new(mycopod_bin())
            .args(["--config", config.to_str().context("path")?])
            .args([
                "user",
                "add",
                "bench",
                "--role",
                "viewer",
                "--password-stdin",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .context("mycopod user add")?;
        writeln!(add.stdin.take().context("stdin")?, "{PASSWORD}")?;
        if !add.wait()?.success() {
            bail!("mycopod user add failed");
        }
        let child = Command::new(mycopod_bin())
            .args(["--config", config.to_str().context("path")?, "serve"])
            .env("PVE_TOKEN", "tok-secret")
            .env("MYCOPOD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start mycopod serve")?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let token = loop {
            let answer = http
                .post(format!("{url}/api/v1/auth/login"))
                .json(&json!({"username": "bench", "password": PASSWORD}))
                .send()
                .await;
            if let Ok(answer) = answer
                && answer.status().is_success()
            {
                let body: Value = answer.json().await?;
                break body["access_token"]
                    .as_str()
                    .context("an access token")?
                    .to_owned();
            }
            if Instant::now() > deadline {
                bail!("serve did not come up");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Ok(Server {
            child,
            url,
            http,
            token,
        })
    }

    /// The run of `commit`, if listed: (id, status).
    async fn run_of(&self, commit: &str) -> Result<Option<(i64, String)>> {
        let body: Value = self
            .http
            .get(format!("{}/api/v1/runs?limit=5", self.url))
            .bearer_auth(&self.token)
            .send()
            .await?
            .json()
            .await?;
        Ok(body["runs"].as_array().and_then(|runs| {
            runs.iter()
                .find(|r| r["commit_sha"].as_str() == Some(commit))
                .map(|r| {
                    (
                        r["id"].as_i64().unwrap_or_default(),
                        r["status"].as_str().unwrap_or_default().to_owned(),
                    )
                })
        }))
    }

    async fn push(&self, commit: &str) -> Result<()> {
        let body = serde_json::to_vec(
            &json!({"ref": "refs/heads/main", "after": commit, "deleted": false}),
        )?;
        let signature = mycopod_adapters::signing::sign_sha256(SECRET.as_bytes(), &body);
        let answer = self
            .http
            .post(format!("{}/api/v1/webhooks/github", self.url))
            .header("content-type", "application/json")
            .header("x-github-event", "push")
            .header("x-github-delivery", commit)
            .header("x-hub-signature-256", signature)
            .body(body)
            .send()
            .await?;
        if !answer.status().is_success() {
            bail!("webhook answered {}", answer.status());
        }
        Ok(())
    }

    /// Commits `yaml`, pushes, and returns (run listed, run finished) after the push.
    async fn change(&self, repo: &Path, yaml: &str, n: usize) -> Result<(Duration, Duration)> {
        std::fs::write(repo.join("site.yaml"), yaml)?;
        git(
            repo,
            &["commit", "--quiet", "--all", "-m", &format!("change {n}")],
        )?;
        let commit = git(repo, &["rev-parse", "HEAD"])?.trim().to_owned();
        let started = Instant::now();
        self.push(&commit).await?;
        let mut listed = None;
        let deadline = started + Duration::from_secs(120);
        loop {
            if let Some((_, status)) = self.run_of(&commit).await? {
                let at = *listed.get_or_insert_with(|| started.elapsed());
                if matches!(status.as_str(), "succeeded" | "failed" | "partially_failed") {
                    if status != "succeeded" {
                        bail!("the run of {commit} ended {status}");
                    }
                    return Ok((at, started.elapsed()));
                }
            }
            if Instant::now() > deadline {
                bail!("no finished run for {commit}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn rss(&self) -> String {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .filter(|l| {
                l.starts_with("VmRSS") || l.starts_with("RssAnon") || l.starts_with("RssFile")
            })
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join(" / ")
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn measure(guests: u32, samples: usize) -> Result<()> {
    let pve = SimHandle::start(SimConfig::default()).await?;
    let temp = tempfile::tempdir()?;
    let dir = temp.path();
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo)?;
    git(&repo, &["init", "--quiet", "--initial-branch=main"])?;
    std::fs::write(
        repo.join("site.yaml"),
        declarations(&pve.base_url(), guests, 1),
    )?;
    git(&repo, &["add", "--all"])?;
    git(&repo, &["commit", "--quiet", "-m", "guests"])?;
    let first = git(&repo, &["rev-parse", "HEAD"])?.trim().to_owned();
    let server = Server::start(dir, &pve).await?;
    // The first commit creates every guest.
    let deadline = Instant::now() + Duration::from_secs(600);
    while server.run_of(&first).await?.map(|(_, s)| s).as_deref() != Some("succeeded") {
        if Instant::now() > deadline {
            bail!("the guests were not created");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut listed = Vec::new();
    let mut finished = Vec::new();
    let mut requests = Vec::new();
    for n in 0..samples {
        pve.clear_requests();
        let cores = if n % 2 == 0 { 2 } else { 1 };
        let (l, f) = server
            .change(&repo, &declarations(&pve.base_url(), guests, cores), n)
            .await?;
        listed.push(l);
        finished.push(f);
        // Whatever else the change causes happens right after it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        requests.push(pve.request_count());
    }
    listed.sort();
    finished.sort();
    println!(
        "| {guests} | {} / {} / {} ms | {} / {} / {} ms | {:?} |",
        ms(percentile(&listed, 0.5)),
        ms(percentile(&listed, 0.99)),
        ms(*listed.last().context("samples")?),
        ms(percentile(&finished, 0.5)),
        ms(percentile(&finished, 0.99)),
        ms(*finished.last().context("samples")?),
        requests,
    );
    if guests == 1000 {
        tokio::time::sleep(Duration::from_secs(env_number(
            "MYCOPOD_BENCH_IDLE_SECS",
            3,
        )))
        .await;
        println!(
            "idle resident memory after observing {guests} guests (VmRSS / RssAnon / RssFile): {}",
            server.rss()
        );
    }
    drop(server);
    Ok(())
}

/// A whole number from the environment, or `default`.
fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; nothing else is taken from the command line.
    let samples = usize::try_from(env_number("MYCOPOD_BENCH_SAMPLES", 10)).unwrap_or(10);
    // `MYCOPOD_BENCH_SIZES=1000` measures one size; the default is all three.
    let sizes: Vec<u32> = match std::env::var("MYCOPOD_BENCH_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .context("MYCOPOD_BENCH_SIZES: guest counts")
            })
            .collect::<Result<_>>()?,
        Err(_) => vec![20, 200, 1000],
    };
    let rt = tokio::runtime::Runtime::new()?;
    println!(
        "| guests | push → run listed (p50 / p99 / max) | push → run finished (p50 / p99 / max) | simulator requests per change |"
    );
    println!("| --- | --- | --- | --- |");
    for guests in sizes {
        rt.block_on(measure(guests, samples))?;
    }
    Ok(())
}
