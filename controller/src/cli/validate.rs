//! `mycopod validate [PATH] [--format human|json|github] [--strict]`: loads and validates
//! declarations (under the configuration's `[limits]`) and prints the findings. Exit 0 when clean (warnings allowed unless
//! `--strict`), 1 with findings, 2 when the path cannot be read. Printing only; the checks are
//! in `mycopod_specs`.

use std::io::Write as _;
use std::path::PathBuf;

use clap::ValueEnum;
use mycopod_specs::render::{self, Format};

use super::{EXIT_FINDINGS, EXIT_OK, EXIT_USAGE};

/// Output format of the findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Compiler-style text with code frames.
    Human,
    /// A JSON array of {file, line, column, path, severity, code, message}.
    Json,
    /// GitHub Actions workflow commands (annotations on the pull request).
    Github,
}

impl From<OutputFormat> for Format {
    fn from(value: OutputFormat) -> Self {
        match value {
            OutputFormat::Human => Format::Human,
            OutputFormat::Json => Format::Json,
            OutputFormat::Github => Format::Github,
        }
    }
}

/// Arguments of `mycopod validate`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// A declarations folder (searched recursively for *.yaml and *.yml) or a single file.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// How to print the findings.
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub format: OutputFormat,
    /// Treat warnings as findings (exit 1).
    #[arg(long)]
    pub strict: bool,
}

/// Runs the subcommand and returns the exit code.
/// Files are read under `limits` (the configuration's `[limits]`, as `serve` reads them).
pub fn run(args: &Args, limits: mycopod_specs::Limits) -> u8 {
    let loaded = match mycopod_specs::load_path_with(&args.path, limits) {
        Ok(l) => l,
        Err(e) => {
            let cause = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            eprintln!("error: cannot {e}{cause}");
            return EXIT_USAGE;
        }
    };
    let diagnostics = mycopod_specs::validate(&loaded);
    let output = render::render(args.format.into(), &diagnostics, &loaded);
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`| head`) is not a finding.
    let _ = stdout.write_all(output.as_bytes());
    let _ = stdout.flush();
    let failing = diagnostics.iter().any(|d| d.is_error() || args.strict);
    if matches!(args.format, OutputFormat::Human)
        && !failing
        && let Ok(checked) = mycopod_specs::check(&loaded)
        && crate::secrets::names_secrets(&checked.desired)
    {
        // CI is offline and cannot know which secrets the server lists: say so.
        eprintln!(
            "note: secret references were checked for shape only; the server resolves only \
             the names its [[secrets]] configuration lists, toward their destinations"
        );
    }
    if failing { EXIT_FINDINGS } else { EXIT_OK }
}
