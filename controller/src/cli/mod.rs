//! Command-line glue of the `mycopod` binary: the clap definitions and one module per
//! subcommand. Each subcommand returns its exit code; none of them holds logic that the
//! library does not also expose.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod translate;

/// mycopod: a declarative GitOps reconciliation controller for homelabs and small plants.
#[derive(Debug, Parser)]
#[command(name = "mycopod", version, about)]
pub struct Cli {
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

/// Parses the process arguments and runs the subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Translate(args) => translate::run(&args),
    };
    ExitCode::from(code)
}
