//! The `mycopod` command line: parses arguments and calls into the library.
//! Nothing but argument parsing and exit codes lives here; each subcommand is in `mycopod::cli`.

/// jemalloc with background purging: glibc's malloc kept what a run of 1,000 guests had freed
/// in a dozen per-thread arenas (68 MB held, 12 MB of it in use), so the idle server sat at
/// the peak of its last run. Measured in BENCHMARKS.md ("One committed change, end to end").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    mycopod::cli::main()
}
