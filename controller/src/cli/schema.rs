//! `mycopod schema`: prints the JSON Schema (draft 2020-12) of declaration documents, for
//! editors through yaml-language-server. Printing only; the schema is built by `mycopod_specs`.

use std::io::Write as _;

use super::{EXIT_FINDINGS, EXIT_OK};

/// Arguments of `mycopod schema` (none yet).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {}

/// Prints the schema; returns the exit code.
pub fn run(_args: &Args) -> u8 {
    let schema = mycopod_specs::schema::json_schema();
    match serde_json::to_string_pretty(&schema) {
        Ok(text) => {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{text}");
            EXIT_OK
        }
        Err(e) => {
            eprintln!("error: serialize the json schema: {e}");
            EXIT_FINDINGS
        }
    }
}
