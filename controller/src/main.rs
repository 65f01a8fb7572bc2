//! The `mycopod` command line: parses arguments with clap and dispatches to the subcommand
//! modules under `cli/`. No logic and no SQL here.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mycopod: a declarative GitOps reconciliation controller for homelabs and small plants.
#[derive(Debug, Parser)]
#[command(name = "mycopod", version, about)]
struct Cli {
    /// Database URL: `sqlite://PATH` or `postgres://...`.
    #[arg(
        long,
        global = true,
        env = "MYCOPOD_DATABASE_URL",
        default_value = "sqlite://mycopod.db"
    )]
    database_url: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply the database migrations that are not applied yet.
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    User(cli::store_cmds::UserCommand),
    /// Inspect the audit log.
    #[command(subcommand)]
    Audit(cli::store_cmds::AuditCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let db = cli.database_url;
    runtime.block_on(async move {
        match cli.command {
            Command::Migrate => cli::store_cmds::migrate(&db).await,
            Command::User(cmd) => cli::store_cmds::user(&db, cmd).await,
            Command::Audit(cmd) => cli::store_cmds::audit(&db, cmd).await,
        }
    })
}
