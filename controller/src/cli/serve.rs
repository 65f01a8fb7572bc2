//! `mycopod serve` and `mycopod demo`: the long-running commands, with their logging set up.

use std::net::SocketAddr;
use std::process::ExitCode;

use crate::config::Config;

/// `mycopod serve` arguments; each overrides the configuration.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the API listens (default: `listen` from the configuration, `127.0.0.1:8080`).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// The repository to reconcile: a local path or a Git URL.
    #[arg(long)]
    pub repo: Option<String>,
    /// The branch, tag or commit to follow.
    #[arg(long = "ref")]
    pub git_ref: Option<String>,
}

/// Logs to standard error: `MYCOPOD_LOG` (or `RUST_LOG`) filters (default `info`);
/// `MYCOPOD_LOG_FORMAT=json` writes one JSON object per line. Returns whether it is JSON.
pub fn init_logging() -> bool {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("MYCOPOD_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("MYCOPOD_LOG_FORMAT").is_ok_and(|f| f == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second call (tests) keeps the first subscriber.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    json
}

/// Runs `mycopod serve` until Ctrl-C or SIGTERM.
pub async fn run(config: &Config, args: &Args) -> ExitCode {
    let json = init_logging();
    let mut config = config.clone();
    if let Some(repo) = &args.repo {
        config.repo = Some(repo.clone());
    }
    if let Some(git_ref) = &args.git_ref {
        config.git_ref = git_ref.clone();
    }
    let listen = args.listen.unwrap_or(config.listen);
    match crate::serve::run_until_signal(&config, listen).await {
        Ok(()) => ExitCode::from(super::EXIT_OK),
        Err(e) if json => {
            tracing::error!(error = %format!("{e:#}"), "serve failed");
            ExitCode::from(super::EXIT_USAGE)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(super::EXIT_USAGE)
        }
    }
}

/// Runs `mycopod demo` until Ctrl-C.
pub async fn demo(args: &crate::demo::Args, database_url: Option<String>) -> ExitCode {
    let _ = init_logging();
    match crate::demo::run(args, database_url).await {
        Ok(()) => ExitCode::from(super::EXIT_OK),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(super::EXIT_FINDINGS)
        }
    }
}
