//! The `mycopod` command line: parses arguments and calls into the library.
//! Nothing but argument parsing and exit codes lives here; each subcommand is in `mycopod::cli`.

fn main() -> std::process::ExitCode {
    mycopod::cli::main()
}
