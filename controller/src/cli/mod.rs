//! Subcommand implementations of the `mycopod` binary, one module per group. Each turns
//! arguments into library calls and an exit code; none contains SQL or business rules.

pub mod store_cmds;
