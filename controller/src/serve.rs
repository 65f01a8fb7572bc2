//! `mycopod serve`: the long-running controller. It opens and migrates the database, starts
//! the reconcile loop (which only reconciles while this process holds the leadership), the
//! telemetry tasks, and the HTTP API, and stops them all cleanly when asked.
//!
//! This module wires parts together; it makes no decisions of its own.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::Utc;
use mycopod_adapters::git::GitAuth;
use mycopod_adapters::github::{GitHub, RepoRef};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::control::Control;
use crate::device_clients::DeviceClients;
use crate::plan::Options;
use crate::reconcile::driver::{self, Driver, LoopSettings};
use crate::reconcile::run::RunSettings;
use crate::store::Store;
use crate::telemetry::TelemetrySettings;
use tokio_util::sync::CancellationToken;

/// How long shutdown waits for a reconcile in progress before giving up on it (an action
/// left running is verified by observation after the restart, never repeated blindly).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// The loop settings `config` describes.
pub fn loop_settings(config: &Config, env: &BTreeMap<String, String>) -> Result<LoopSettings> {
    let Some(repo) = config.repo.clone() else {
        bail!(
            "no repository to reconcile: set `repo` in mycopod.toml or MYCOPOD_REPO (a local \
             path or a Git URL)"
        );
    };
    let scope = LoopSettings::scope_of(&repo, &config.git_ref);
    let mut run = RunSettings::new(scope);
    run.options = Options {
        prune: config.prune,
    };
    run.self_heal = config.self_heal;
    let git_auth = match &config.git_token_env {
        Some(var) => GitAuth::Token {
            username: "x-access-token".to_owned(),
            token: env.get(var).cloned().with_context(|| {
                format!("environment variable {var} (named by git_token_env) is not set")
            })?,
        },
        None => GitAuth::None,
    };
    let github = match &config.github.token {
        Some(token) => {
            let repo_ref = RepoRef::from_remote(&repo).with_context(|| {
                format!("github.token is set but {repo} is not a GitHub repository URL")
            })?;
            let client = GitHub::new(
                &config.github.api_url,
                token.clone(),
                "mycopod",
                Duration::from_secs(10),
            )
            .context("configure the GitHub client")?;
            Some((client, repo_ref))
        }
        None => None,
    };
    Ok(LoopSettings {
        run,
        repo,
        git_ref: config.git_ref.clone(),
        path: config.path.clone(),
        limits: config.limits,
        cache_dir: config.cache_dir.clone(),
        git_auth,
        poll_interval: config.poll_interval.as_std(),
        drift_interval: config.drift_interval.as_std(),
        full_read_interval: config.full_read_interval.as_std(),
        backoff_base: Duration::from_secs(1),
        backoff_cap: Duration::from_secs(300),
        lease_ttl: Duration::from_secs(15),
        secrets: secret_registry(config, env)?,
        github,
        llm: llm_client(config)?,
        device_clients: None,
    })
}

/// The secrets declarations may name (`[[secrets]]`), values read from `env` and files.
pub fn secret_registry(
    config: &Config,
    env: &BTreeMap<String, String>,
) -> Result<crate::secrets::Registry> {
    crate::secrets::Registry::from_config(config, env)
        .map_err(|e| anyhow::anyhow!("configuration: {e}"))
}

/// The model client `config` describes, if a model is configured.
pub fn llm_client(config: &Config) -> Result<Option<mycopod_adapters::llm::LlmClient>> {
    use mycopod_adapters::llm::{LlmClient, LlmSettings, OPENAI_BASE_URL};
    let Some(model) = config.llm.model.clone().filter(|m| !m.trim().is_empty()) else {
        return Ok(None);
    };
    let base_url = match (&config.llm.base_url, &config.llm.api_key) {
        (Some(url), _) if !url.trim().is_empty() => url.clone(),
        (_, Some(_)) => OPENAI_BASE_URL.to_owned(),
        _ => bail!(
            "llm.model is set but no endpoint: set llm.base_url (MYCOPOD_LLM_BASE_URL) or \
             llm.api_key (MYCOPOD_LLM_API_KEY) for the OpenAI API"
        ),
    };
    let mut settings = LlmSettings::new(base_url, model);
    settings.api_key = config.llm.api_key.clone().filter(|k| !k.is_empty());
    settings.timeout = config.llm.timeout.as_std();
    Ok(Some(
        LlmClient::new(settings).context("configure the model client")?,
    ))
}

/// A running server: its address, and the means to stop it.
pub struct Running {
    /// Where the API listens.
    pub addr: SocketAddr,
    /// The shared handle (status, triggers).
    pub control: Control,
    /// The database the server's loop and API share.
    pub store: Store,
    stop: watch::Sender<bool>,
    cancel: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Asks every part to stop and waits for them (the reconcile loop at most
    /// [`SHUTDOWN_GRACE`]).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.cancel.cancel();
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(SHUTDOWN_GRACE, task).await.is_err() {
                tracing::warn!("a task did not stop within {SHUTDOWN_GRACE:?}; aborting it");
                abort.abort();
            }
        }
        self.store.close().await;
    }
}

/// Starts everything on `listener` (bind it first, so tests can use port 0).
pub async fn start(
    config: &Config,
    env: &BTreeMap<String, String>,
    listener: TcpListener,
) -> Result<Running> {
    if config
        .github
        .webhook_secret
        .as_deref()
        .is_some_and(|s| s.trim().is_empty())
    {
        bail!(
            "github.webhook_secret (MYCOPOD_GITHUB_WEBHOOK_SECRET) is set but empty: anyone \
             could sign a webhook with it; set a long random value or unset it"
        );
    }
    let mut settings = loop_settings(config, env)?;
    // One Modbus client per device, shared by the loop and the pollers.
    let clients = DeviceClients::new();
    settings.device_clients = Some(clients.clone());
    let store = Store::connect(&config.database_url)
        .await
        .with_context(|| {
            format!(
                "open the database {}",
                crate::store::redact_url(&config.database_url)
            )
        })?;
    store.migrate().await.context("migrate the database")?;
    let (control, triggers) = Control::new(store.events().clone(), Utc::now());
    let state = crate::api::AppState::new(store.clone(), control.clone(), config)
        .context("configure the HTTP API")?;
    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();

    let settings_secrets = settings.secrets.clone();
    let driver = Driver::new(store.clone(), control.clone(), settings);
    tasks.push(tokio::spawn(driver::run(driver, triggers, stopped.clone())));

    let cancel = CancellationToken::new();
    let telemetry = crate::telemetry::spawn(
        store.clone(),
        control.desired(),
        control.sample_slot(),
        clients,
        TelemetrySettings::from_config(&config.telemetry, settings_secrets),
        cancel.clone(),
    )
    .context("start telemetry")?;
    tasks.push(telemetry);

    let addr = listener
        .local_addr()
        .context("read the listening address")?;
    let app = crate::api::app(state);
    let mut api_stop = stopped.clone();
    tasks.push(tokio::spawn(async move {
        let serve = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = api_stop.wait_for(|stop| *stop).await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "the HTTP server stopped");
        }
    }));
    tracing::info!(%addr, "mycopod is serving");
    Ok(Running {
        addr,
        control,
        store,
        stop,
        cancel,
        tasks,
    })
}

/// Runs until Ctrl-C or SIGTERM, then stops cleanly.
pub async fn run_until_signal(config: &Config, listen: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("listen on {listen}"))?;
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let running = start(config, &env, listener).await?;
    // Through tracing, so that with MYCOPOD_LOG_FORMAT=json every line is JSON.
    tracing::info!(addr = %running.addr, "serving the API on http://{}", running.addr);
    wait_for_signal().await;
    tracing::info!("stopping");
    running.shutdown().await;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
