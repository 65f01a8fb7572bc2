//! Command-line glue of the `mycopod` binary: the clap definitions and one module per
//! subcommand. Each subcommand returns its exit code; none of them holds logic that the
//! library does not also expose.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod apply;
pub mod plan;
pub mod schema;
pub mod serve;
pub mod store_cmds;
pub mod translate;
pub mod validate;

/// mycopod: a declarative GitOps reconciliation controller for homelabs and small plants.
#[derive(Debug, Parser)]
#[command(name = "mycopod", version, about)]
pub struct Cli {
    /// Configuration file (default: `mycopod.toml` in the working directory, if present).
    #[arg(long, global = true, env = "MYCOPOD_CONFIG")]
    pub config: Option<PathBuf>,

    /// Database URL: `sqlite://PATH` (default `sqlite://mycopod.db`) or `postgres://...`.
    /// Overrides `database_url` in the configuration and `MYCOPOD_DATABASE_URL`.
    #[arg(long, global = true)]
    pub database_url: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check declarations for errors (exit 0 clean, 1 findings, 2 usage error).
    Validate(validate::Args),
    /// Print the JSON Schema of the declaration documents.
    Schema(schema::Args),
    /// Show what applying the declarations would change (exit 0 none, 3 changes, 1 error or
    /// anything declared that could not be observed).
    Plan(plan::Args),
    /// Plan and apply, recorded as a run (exit 0 applied or nothing to do, 1 otherwise).
    Apply(apply::Args),
    /// Apply the database migrations that are not applied yet.
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    User(store_cmds::UserCommand),
    /// Inspect the audit log.
    #[command(subcommand)]
    Audit(store_cmds::AuditCommand),
    /// Turn a request in plain words into declarations with the configured model (exit 0
    /// translated, 1 the answers do not validate or the model failed, 2 usage or configuration).
    Translate(translate::Args),
    /// Run the controller: the reconcile loop, telemetry and the HTTP API.
    Serve(serve::Args),
    /// Run the whole job on this machine against simulators: a Proxmox VE simulator, Modbus
    /// simulators, a Git repository and SQLite in the data folder.
    Demo(crate::demo::Args),
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
    if let Some(url) = &cli.database_url {
        sources.flags.insert(
            "database_url".into(),
            serde_json::Value::String(url.clone()),
        );
    }
    crate::config::load(&sources)
}

/// Parses the process arguments and runs the subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Schema(args) = &cli.command {
        return ExitCode::from(schema::run(args));
    }
    let config = match load_config(&cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Command::Validate(args) = &cli.command {
        return ExitCode::from(validate::run(args, config.limits));
    }
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
        let db = config.database_url.clone();
        match cli.command {
            Command::Plan(args) => plan::run(&config, &args).await,
            Command::Apply(args) => apply::run(&config, &args).await,
            Command::Translate(args) => translate::run(&config, &args).await,
            Command::Serve(args) => serve::run(&config, &args).await,
            Command::Demo(args) => serve::demo(&args, cli.database_url.clone()).await,
            Command::Migrate => store_cmds::migrate(&db).await,
            Command::User(cmd) => store_cmds::user(&db, cmd).await,
            Command::Audit(cmd) => store_cmds::audit(&db, cmd).await,
            Command::Validate(_) | Command::Schema(_) => ExitCode::from(EXIT_OK),
        }
    })
}
