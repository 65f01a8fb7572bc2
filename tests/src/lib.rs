//! Shared helpers for the end-to-end tests: run the built `mycopod demo` binary in a temp
//! folder, talk to its API over HTTP, look at its simulators through their own protocols, and
//! commit to its Git repository. Nothing here reaches into the process under test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod tls_sim;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The `mycopod` binary cargo built next to this test (`target/<profile>/mycopod`).
/// `cargo test --workspace` builds it, because the controller package has integration tests.
pub fn mycopod_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps");
    let bin = profile_dir.join(format!("mycopod{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build -p mycopod`), or run the suite with \
         `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// A running `mycopod demo`.
pub struct Demo {
    child: Child,
    /// The data folder.
    pub dir: PathBuf,
    /// The API's base URL.
    pub url: String,
    /// `demo-credentials.json`.
    pub credentials: Value,
    http: reqwest::Client,
    _temp: Option<tempfile::TempDir>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A run's id and status, from `GET /api/v1/runs`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    /// Run id.
    pub id: i64,
    /// `awaiting_approval`, `succeeded`, ... (`RunStatus`).
    pub status: String,
    /// `poll`, `webhook`, `manual`, `drift` or `cli`.
    pub trigger: String,
    /// The SHA of the commit the run is for.
    pub commit: String,
}

impl Demo {
    /// Starts the demo in a fresh temp folder. `database_url` runs it on PostgreSQL.
    pub async fn start(database_url: Option<&str>) -> Result<Demo> {
        let temp = tempfile::tempdir()?;
        let dir = temp.path().join("data");
        let mut demo = Demo::start_in(&dir, database_url).await?;
        demo._temp = Some(temp);
        Ok(demo)
    }

    /// Starts the demo on `dir` (kept between starts). It polls its repository only every
    /// hour, so in these tests reconciles come from the API and the webhook.
    pub async fn start_in(dir: &Path, database_url: Option<&str>) -> Result<Demo> {
        let mut command = Command::new(mycopod_bin());
        command
            .arg("demo")
            .args(["--listen", "127.0.0.1:0", "--poll-interval", "1h"])
            .arg("--data-dir")
            .arg(dir)
            .env("MYCOPOD_LOG", "warn")
            .env_remove("MYCOPOD_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(url) = database_url {
            command.args(["--database-url", url]);
        }
        let mut child = command.spawn().context("start mycopod demo")?;
        let stdout = child.stdout.take().context("demo stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.trim().strip_prefix("API and web page:") {
                    return Ok::<_, anyhow::Error>(rest.trim().trim_end_matches('/').to_owned());
                }
            }
            bail!("the demo exited before it was ready")
        })
        .await
        .context("the demo did not come up within 60 s")??;
        // Keep draining the demo's output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let credentials: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("demo-credentials.json"))
                .context("read demo-credentials.json")?,
        )?;
        assert_eq!(credentials["url"].as_str(), Some(url.as_str()));
        Ok(Demo {
            child,
            dir: dir.to_owned(),
            url,
            credentials,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            _temp: None,
        })
    }

    /// Stops the demo as Ctrl-C would, and waits for it to exit.
    pub async fn stop(mut self) -> Result<std::process::ExitStatus> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status();
        }
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .context("the demo did not stop within 60 s")??;
        Ok(status)
    }

    /// The generated password of a demo user.
    pub fn password(&self, user: &str) -> String {
        self.credentials["users"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|u| u["name"] == user)
            .and_then(|u| u["password"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no demo user {user}"))
    }

    /// Signs in; returns the access token.
    pub async fn login(&self, user: &str) -> Result<String> {
        let body = self
            .post_json(
                "/api/v1/auth/login",
                None,
                &json!({"username": user, "password": self.password(user)}),
            )
            .await?;
        Ok(body["access_token"]
            .as_str()
            .context("login answered without an access token")?
            .to_owned())
    }

    /// `GET path` with a bearer token; fails unless 2xx.
    pub async fn get(&self, path: &str, token: &str) -> Result<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("GET {path}: {status}: {body}");
        }
        Ok(body)
    }

    /// `POST path` with a JSON body; fails unless 2xx.
    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Result<Value> {
        let (status, body) = self.post_raw(path, token, body).await?;
        if !status.is_success() {
            bail!("POST {path}: {status}: {body}");
        }
        Ok(body)
    }

    /// `PATCH path` with a JSON body; fails unless 2xx.
    pub async fn patch_json(&self, path: &str, token: &str, body: &Value) -> Result<Value> {
        let response = self
            .http
            .patch(format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(body)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("PATCH {path}: {status}: {body}");
        }
        Ok(body)
    }

    /// `POST path` with a JSON body; returns the status and the body.
    pub async fn post_raw(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> Result<(reqwest::StatusCode, Value)> {
        let mut request = self.http.post(format!("{}{path}", self.url)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// Sends a GitHub push delivery for `main`, signed with the demo's webhook secret.
    pub async fn push_webhook(&self, after: &str) -> Result<reqwest::StatusCode> {
        let body = serde_json::to_vec(&json!({
            "ref": "refs/heads/main",
            "after": after,
            "deleted": false,
        }))?;
        let secret = self.credentials["webhook_secret"]
            .as_str()
            .context("the demo credentials name the webhook secret")?;
        let signature = mycopod_adapters::signing::sign_sha256(secret.as_bytes(), &body);
        let response = self
            .http
            .post(format!("{}/api/v1/webhooks/github", self.url))
            .header("content-type", "application/json")
            .header("x-github-event", "push")
            .header("x-github-delivery", "e2e-1")
            .header("x-hub-signature-256", signature)
            .body(body)
            .send()
            .await?;
        Ok(response.status())
    }

    /// The runs, oldest first.
    pub async fn runs(&self, token: &str) -> Result<Vec<RunRow>> {
        let body = self.get("/api/v1/runs?limit=200", token).await?;
        let mut rows: Vec<RunRow> = body["runs"]
            .as_array()
            .context("runs list")?
            .iter()
            .map(|r| RunRow {
                id: r["id"].as_i64().unwrap_or_default(),
                status: r["status"].as_str().unwrap_or_default().to_owned(),
                trigger: r["trigger"].as_str().unwrap_or_default().to_owned(),
                commit: r["commit_sha"].as_str().unwrap_or_default().to_owned(),
            })
            .collect();
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }

    /// Waits (up to 60 s, checking every 100 ms) until `check` finds what it looks for.
    pub async fn wait_for<T, F, Fut>(&self, what: &str, mut check: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>>>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(found) = check().await? {
                return Ok(found);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("timed out waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until a run other than those in `known` appears; returns it.
    pub async fn wait_for_new_run(&self, token: &str, known: &[RunRow]) -> Result<RunRow> {
        self.wait_for("a new run", || async {
            Ok(self
                .runs(token)
                .await?
                .into_iter()
                .find(|r| known.iter().all(|k| k.id != r.id)))
        })
        .await
    }

    /// Waits until run `id` reaches a terminal or waiting state among `states`.
    pub async fn wait_for_status(&self, token: &str, id: i64, states: &[&str]) -> Result<Value> {
        self.wait_for(&format!("run {id} to reach {states:?}"), || async {
            let run = self.get(&format!("/api/v1/runs/{id}"), token).await?;
            let status = run["run"]["status"].as_str().unwrap_or_default().to_owned();
            Ok(states.contains(&status.as_str()).then_some(run))
        })
        .await
    }

    /// Asks for a reconcile and waits until the controller finished one after asking.
    pub async fn reconcile(&self, token: &str) -> Result<Value> {
        let before = self.get("/api/v1/status", token).await?["last_reconcile_at"].clone();
        self.post_json("/api/v1/reconcile", Some(token), &json!({}))
            .await?;
        self.wait_for("a reconcile to finish", || async {
            let status = self.get("/api/v1/status", token).await?;
            Ok((status["last_reconcile_at"] != before).then_some(status))
        })
        .await
    }

    /// The demo's Git repository.
    pub fn repo(&self) -> PathBuf {
        self.dir.join("repo")
    }

    /// Edits a file of the demo repository and commits; returns the new commit.
    pub fn commit_edit(&self, file: &str, from: &str, to: &str, message: &str) -> Result<String> {
        let path = self.repo().join(file);
        let text = std::fs::read_to_string(&path)?;
        if !text.contains(from) {
            bail!("{file} has no `{from}`");
        }
        std::fs::write(&path, text.replacen(from, to, 1))?;
        git(&self.repo(), &["commit", "--quiet", "--all", "-m", message])?;
        Ok(git(&self.repo(), &["rev-parse", "HEAD"])?.trim().to_owned())
    }

    /// The port a simulator listens on, from `demo-state.json`.
    pub fn state(&self) -> Result<Value> {
        Ok(serde_json::from_str(&std::fs::read_to_string(
            self.dir.join("demo-state.json"),
        )?)?)
    }

    /// `GET /api2/json{path}` on the Proxmox simulator, with the demo's API token.
    pub async fn pve(&self, path: &str) -> Result<Value> {
        let port = self.state()?["pve_port"].as_u64().context("pve_port")?;
        let response = self
            .http
            .get(format!("http://127.0.0.1:{port}/api2/json{path}"))
            .header("authorization", "PVEAPIToken=mycopod@pve!gitops=tok-secret")
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("PVE GET {path}: {status}: {body}");
        }
        Ok(body["data"].clone())
    }

    /// `PUT /api2/json{path}` on the Proxmox simulator (a change behind mycopod's back).
    pub async fn pve_put(&self, path: &str, form: &[(&str, &str)]) -> Result<()> {
        let port = self.state()?["pve_port"].as_u64().context("pve_port")?;
        let response = self
            .http
            .put(format!("http://127.0.0.1:{port}/api2/json{path}"))
            .header("authorization", "PVEAPIToken=mycopod@pve!gitops=tok-secret")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(form)
                    .finish(),
            )
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("PVE PUT {path}: {}", response.status());
        }
        Ok(())
    }

    /// Reads every register of a demo device through the real Modbus client.
    pub async fn read_device(
        &self,
        name: &str,
    ) -> Result<Vec<(String, mycopod_adapters::modbus::Value)>> {
        let loaded = mycopod_specs::load_path(&self.repo()).context("load the demo repo")?;
        let desired = mycopod_specs::check(&loaded)
            .map_err(|d| anyhow::anyhow!("the demo repo does not validate: {d:?}"))?
            .desired;
        let device = desired
            .device(name)
            .with_context(|| format!("no device {name} in the demo repo"))?;
        let client = mycopod_adapters::modbus::client::ModbusClient::new(
            mycopod::plan::translate::device::device_def(name, &device.spec),
        )?;
        Ok(client.read_all().await?)
    }
}

/// Runs git in `dir`.
pub fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "e2e")
        .env("GIT_AUTHOR_EMAIL", "e2e@example.invalid")
        .env("GIT_COMMITTER_NAME", "e2e")
        .env("GIT_COMMITTER_EMAIL", "e2e@example.invalid")
        .output()?;
    if !out.status.success() {
        bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A fresh PostgreSQL database on the server named by `MYCOPOD_TEST_DATABASE_URL`; returns
/// its URL. Panics (fails the test) when the variable is unset.
pub async fn fresh_postgres() -> Result<String> {
    use sqlx::Connection;
    let server = std::env::var("MYCOPOD_TEST_DATABASE_URL").unwrap_or_default();
    assert!(
        !server.is_empty(),
        "MYCOPOD_TEST_DATABASE_URL is not set: the PostgreSQL pass of the end-to-end suite \
         needs a server, e.g. postgres://postgres@127.0.0.1:5432/test"
    );
    let name = format!("mycopod_e2e_{:016x}", rand::random::<u64>());
    let mut admin = sqlx::PgConnection::connect(&server).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    let mut url = url::Url::parse(&server)?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

/// Drops a database made by [`fresh_postgres`] (best effort: a leftover only costs disk).
pub async fn drop_postgres(database_url: &str) {
    use sqlx::Connection;
    let Ok(server) = std::env::var("MYCOPOD_TEST_DATABASE_URL") else {
        return;
    };
    let Ok(url) = url::Url::parse(database_url) else {
        return;
    };
    let name = url.path().trim_start_matches('/').to_owned();
    if !name.starts_with("mycopod_e2e_") {
        return;
    }
    if let Ok(mut admin) = sqlx::PgConnection::connect(&server).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await;
    }
}
