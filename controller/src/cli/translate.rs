//! `mycopod translate "TEXT" [--repo PATH] [--out FILE] [--name NAME] [--kind KIND]...`: asks the
//! configured model to turn TEXT into declarations, validated against the repository, and
//! prints or writes the YAML. Exit 0 translated, 1 when the answers do not validate or the model
//! fails, 2 on usage or configuration errors. Glue only: the translation is
//! `mycopod::declarations::translate`; nothing is committed or applied.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use mycopod_adapters::llm::{LlmClient, LlmSettings, OPENAI_BASE_URL};
use mycopod_specs::kinds::Kind;
use mycopod_specs::values::Name;

use super::{EXIT_FINDINGS, EXIT_OK, EXIT_USAGE};
use crate::config::Config;
use crate::declarations::{self, Request, TranslateError};

/// Arguments of `mycopod translate`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// What you want, in your own words ("a Debian container for Pi-hole, 1 core, 512 MB").
    pub text: String,
    /// The declarations repository that supplies the names already declared.
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// Write the YAML to this file instead of printing it.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The declaration's name, used in the `mycopod/declaration` label (default: from the text).
    #[arg(long)]
    pub name: Option<String>,
    /// A kind the translation may produce (repeatable; default: Guest, ModbusDevice, AlertRule,
    /// NotificationChannel, ProxmoxCluster). `HandshakePolicy` only when given here.
    #[arg(long = "kind", value_name = "KIND")]
    pub kinds: Vec<String>,
}

const NO_MODEL: &str = "no model configured for `mycopod translate`
  set MYCOPOD_LLM_MODEL (or `model` under [llm] in mycopod.toml),
  and for a local server MYCOPOD_LLM_BASE_URL (`base_url`), e.g. http://127.0.0.1:11434/v1 for Ollama
  or http://127.0.0.1:8081/v1 for llama.cpp's llama-server;
  MYCOPOD_LLM_API_KEY (`api_key`) if the endpoint wants a key";

const NO_ENDPOINT: &str = "no endpoint configured for the model
  set MYCOPOD_LLM_BASE_URL (`base_url` under [llm] in mycopod.toml) for a local or self-hosted
  server, or MYCOPOD_LLM_API_KEY (`api_key`) to use the OpenAI API";

/// Runs the subcommand with the loaded configuration and returns the exit code.
pub async fn run(config: &Config, args: &Args) -> ExitCode {
    ExitCode::from(translate(config, args).await)
}

async fn translate(config: &Config, args: &Args) -> u8 {
    let prepared = match prepare(config, args) {
        Ok(p) => p,
        Err(message) => {
            eprintln!("error: {message}");
            return EXIT_USAGE;
        }
    };
    let result = declarations::translate(
        &prepared.client,
        &prepared.repo,
        &prepared.request,
        chrono::Utc::now(),
    )
    .await;
    match result {
        Ok(t) => {
            if !t.warnings.is_empty() {
                eprint!(
                    "{}",
                    mycopod_specs::render::render_human(&t.warnings, &t.loaded)
                );
            }
            let written = match &args.out {
                Some(path) => write_file(path, &t.yaml),
                None => {
                    let mut stdout = std::io::stdout().lock();
                    // A closed pipe (`| head`) is not a failure of the translation.
                    let _ = stdout.write_all(t.yaml.as_bytes());
                    let _ = stdout.flush();
                    Ok(())
                }
            };
            if let Err(message) = written {
                eprintln!("error: {message}");
                return EXIT_FINDINGS;
            }
            let docs: Vec<String> = t
                .documents
                .iter()
                .map(|(kind, name)| format!("{kind}/{name}"))
                .collect();
            eprintln!(
                "translated declaration {} into {} with model {} ({} answer{}); review it before committing{}",
                prepared.request.name,
                docs.join(", "),
                t.model,
                t.answers,
                if t.answers == 1 { "" } else { "s" },
                args.out
                    .as_ref()
                    .map(|p| format!(" ({})", p.display()))
                    .unwrap_or_default()
            );
            EXIT_OK
        }
        Err(e @ TranslateError::Model { .. }) => {
            eprintln!("error: {}", crate::error_chain(&e));
            EXIT_FINDINGS
        }
        Err(e @ TranslateError::Invalid { .. }) => {
            eprintln!("error: {e}");
            if let TranslateError::Invalid {
                rendered,
                last_answer,
                ..
            } = &e
            {
                eprintln!("\nfindings about the corrected answer:\n{rendered}");
                eprintln!("the model's last answer was:");
                for line in last_answer.lines() {
                    eprintln!("  | {line}");
                }
            }
            EXIT_FINDINGS
        }
    }
}

struct Prepared {
    client: LlmClient,
    repo: mycopod_specs::Loaded,
    request: Request,
}

/// Everything that can be a usage or configuration error, checked before the model is asked.
fn prepare(config: &Config, args: &Args) -> Result<Prepared, String> {
    if args.text.trim().is_empty() {
        return Err("the request text is empty".to_owned());
    }
    let model = config
        .llm
        .model
        .clone()
        .filter(|m| !m.trim().is_empty())
        .ok_or_else(|| NO_MODEL.to_owned())?;
    let base_url = match (&config.llm.base_url, &config.llm.api_key) {
        (Some(url), _) if !url.trim().is_empty() => url.clone(),
        (_, Some(_)) => OPENAI_BASE_URL.to_owned(),
        _ => return Err(NO_ENDPOINT.to_owned()),
    };
    let name = match &args.name {
        Some(name) => name.clone(),
        None => declarations::default_name(&args.text),
    };
    Name::parse(&name).map_err(|e| format!("invalid --name \"{name}\": {e}"))?;

    let mut kinds = Vec::new();
    for text in &args.kinds {
        match Kind::from_text(text) {
            Some(Kind::Declaration) => {
                return Err("--kind Declaration: a translation never produces declarations".into());
            }
            Some(kind) => kinds.push(kind),
            None => {
                let all: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                return Err(format!(
                    "unknown --kind \"{text}\" (one of: {})",
                    all.join(", ")
                ));
            }
        }
    }

    let repo = mycopod_specs::load_path_with(&args.repo, config.limits).map_err(|e| {
        let cause = std::error::Error::source(&e)
            .map(|s| format!(": {s}"))
            .unwrap_or_default();
        format!("cannot {e}{cause}")
    })?;
    let own_errors = mycopod_specs::validate(&repo)
        .iter()
        .filter(|d| d.is_error())
        .count();
    if own_errors > 0 {
        eprintln!(
            "warning: the repository {} has {own_errors} error(s) of its own (see `mycopod validate`); translating anyway",
            args.repo.display()
        );
    }

    let file = match &args.out {
        Some(path) => path.display().to_string(),
        None => format!("{name}.yaml"),
    };
    let mut settings = LlmSettings::new(base_url, model);
    settings.api_key = config.llm.api_key.clone().filter(|k| !k.is_empty());
    settings.timeout = config.llm.timeout.as_std();
    let client = LlmClient::new(settings).map_err(|e| e.to_string())?;
    Ok(Prepared {
        client,
        repo,
        request: Request {
            name,
            text: args.text.clone(),
            kinds,
            file,
        },
    })
}

fn write_file(path: &Path, text: &str) -> Result<(), String> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("create directory {}: {e}", parent.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
}
