//! Command-line glue of the `mycopod` binary: the clap definitions and one module per
//! subcommand. Each subcommand returns its exit code; none of them holds logic that the
//! library does not also expose.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod translate;

/// mycopod: a declarative GitOps reconciliation controller for homelabs and small plants.
#[derive(Debug, Parser)]
#[command(name = "mycopod", version, about)]
pub struct Cli {
    /// Configuration file (default: `mycopod.toml` in the working directory, if present).
    #[arg(long, global = true, env = "MYCOPOD_CONFIG")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Turn a request in plain words into declarations with the configured model (exit 0
    /// translated, 1 the answers do not validate or the model failed, 2 usage or configuration).
    Translate(translate::Args),
}

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: findings or failure.
pub const EXIT_FINDINGS: u8 = 1;
/// Exit code: usage or configuration error.
pub const EXIT_USAGE: u8 = 2;

/// The configuration from the file, the environment and the global flags.
pub fn load_config(cli: &Cli) -> Result<crate::config::Config, crate::config::ConfigError> {
    let mut sources = crate::config::Sources::from_process_env();
    sources.file = cli.config.clone();
    crate::config::load(&sources)
}

/// Parses the process arguments and runs the subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load_config(&cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Translate(args) => translate::run(&config, &args).await,
        }
    })
}
