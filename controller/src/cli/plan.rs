//! `mycopod plan`: what applying the declarations would change, without changing anything.
//!
//! It reads the declarations (a local working tree, or a Git remote at a ref), validates them,
//! observes through the real adapters (read-only requests only), plans, and prints the plan
//! with the approvals the policies demand. Exit 0: no changes; 3: changes; 1: invalid
//! declarations or resources that cannot be planned; 2: usage or configuration error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use mycopod_adapters::git::GitSource;
use mycopod_specs::{DesiredState, Loaded};
use serde_json::json;

use crate::config::Config;
use crate::plan::{Options, Planned};
use crate::policy::{NamedPolicy, requirements_for_plan, run_requirement};
use crate::reconcile::observe::LiveWorld;
use crate::reconcile::run::trusted_policies;
use crate::secrets::Registry;
use crate::store::Store;
use mycopod_specs::kinds::HandshakePolicySpec;

/// Exit code when the plan has changes (like terraform's `-detailed-exitcode`).
pub const EXIT_CHANGES: u8 = 3;

/// `mycopod plan` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The declarations: a local folder (its files as they are now) or a Git URL.
    /// Default: `repo` from the configuration, else the current folder.
    #[arg(long)]
    pub repo: Option<String>,
    /// Branch, tag or commit of a Git URL (default: `ref` from the configuration, `main`).
    #[arg(long = "ref")]
    pub git_ref: Option<String>,
    /// Sub-folder of the repository that holds the declarations.
    #[arg(long)]
    pub path: Option<String>,
    /// Also plan deletion of managed guests that are no longer declared.
    #[arg(long)]
    pub prune: bool,
    /// Write the plan as JSON to this file too.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Plan even though the configured database does not exist (as if nothing was ever
    /// applied). Without it, a database URL other than the default that names no database
    /// is an error, since a mistyped URL would silently plan against nothing.
    #[arg(long)]
    pub allow_new_database: bool,
}

/// Where the declarations came from and their files, loaded.
pub struct Source {
    /// The commit id, or `worktree` for a local folder.
    pub commit: String,
    /// The loaded files.
    pub loaded: Loaded,
}

fn is_remote(repo: &str) -> bool {
    repo.contains("://") || (repo.contains('@') && repo.contains(':') && !Path::new(repo).exists())
}

/// Reads the declarations of `repo` as `config` says: a local folder as it is, a remote at
/// the configured ref.
pub async fn read_source(
    config: &Config,
    repo: &str,
    git_ref: &str,
    path: &str,
) -> Result<Source, String> {
    if !is_remote(repo) {
        let dir = Path::new(repo).join(path);
        let loaded =
            mycopod_specs::load_path_with(&dir, config.limits).map_err(|e| e.to_string())?;
        return Ok(Source {
            commit: "worktree".to_owned(),
            loaded,
        });
    }
    let mut source = GitSource::new(repo, &config.cache_dir);
    if let Some(var) = &config.git_token_env {
        let token = std::env::var(var)
            .map_err(|_| format!("environment variable {var} (git_token_env) is not set"))?;
        source = source.with_auth(mycopod_adapters::git::GitAuth::Token {
            username: "x-access-token".to_owned(),
            token,
        });
    }
    let commit = source.fetch(git_ref).await.map_err(|e| e.to_string())?;
    let loaded = crate::reconcile::driver::read_commit(&source, &commit, path, config.limits)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Source {
        commit: commit.to_string(),
        loaded,
    })
}

/// Opens the configured database for reading, if it exists; never creates one.
async fn open_store_if_present(url: &str) -> Result<Option<Store>, String> {
    if sqlite_file_is_absent(url) {
        return Ok(None);
    }
    Store::connect(url)
        .await
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Whether `url` names a SQLite file that does not exist (`plan` never creates one).
fn sqlite_file_is_absent(url: &str) -> bool {
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .is_some_and(|path| {
            let file = path.split('?').next().unwrap_or(path);
            file.is_empty() || !Path::new(file).exists()
        })
}

/// The approvals each action needs (under the `trusted` policies and the commit's, see
/// [`requirements_for_plan`]), as text lines, and the run's total.
pub fn approvals_summary(
    desired: &DesiredState,
    trusted: Option<&[(String, HandshakePolicySpec)]>,
    planned: &Planned,
) -> (Vec<String>, u32) {
    let trusted: Option<Vec<NamedPolicy<'_>>> = trusted.map(|list| {
        list.iter()
            .map(|(name, spec)| NamedPolicy { name, spec })
            .collect()
    });
    let requirements = requirements_for_plan(desired, trusted.as_deref(), &planned.plan);
    let lines = planned
        .plan
        .actions
        .iter()
        .zip(&requirements)
        .filter(|(_, r)| r.approvals > 0)
        .map(|(action, r)| {
            let by = if r.policies.is_empty() {
                "default policy".to_owned()
            } else {
                r.policies.join(", ")
            };
            format!("{}: {} approval(s) ({by})", action.key, r.approvals)
        })
        .collect();
    (lines, run_requirement(&requirements).approvals)
}

/// Where the declarations come from: flags over the configuration, the current folder last.
#[derive(Debug, Clone)]
pub struct Target {
    /// A local folder or a Git URL.
    pub repo: String,
    /// Branch, tag or commit of a Git URL.
    pub git_ref: String,
    /// Sub-folder of the repository.
    pub path: String,
}

impl Target {
    /// The target from flags, falling back to the configuration.
    pub fn new(
        config: &Config,
        repo: &Option<String>,
        git_ref: &Option<String>,
        path: &Option<String>,
    ) -> Target {
        Target {
            repo: repo
                .clone()
                .or_else(|| config.repo.clone())
                .unwrap_or_else(|| ".".to_owned()),
            git_ref: git_ref.clone().unwrap_or_else(|| config.git_ref.clone()),
            path: path.clone().unwrap_or_else(|| config.path.clone()),
        }
    }
}

/// Reads and checks the declarations of `target`. On failure the findings (or the read
/// error) are printed with `consequence` and the exit code to return is given back.
pub async fn load_declarations(
    config: &Config,
    target: &Target,
    consequence: &str,
) -> Result<(Source, DesiredState, Registry), ExitCode> {
    let source = match read_source(config, &target.repo, &target.git_ref, &target.path).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: read declarations from {}: {e}", target.repo);
            return Err(ExitCode::from(super::EXIT_USAGE));
        }
    };
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let secrets = match Registry::from_config(config, &env) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: configuration: {e}");
            return Err(ExitCode::from(super::EXIT_USAGE));
        }
    };
    match mycopod_specs::check(&source.loaded) {
        Ok(checked) => {
            // The secrets a commit names are checked against the server's list before
            // anything is observed, so nothing is sent for a refused reference.
            let findings = secrets.check(&checked.desired);
            if findings.is_empty() {
                return Ok((source, checked.desired, secrets));
            }
            eprint!(
                "{}",
                mycopod_specs::render::render_human(&findings, &source.loaded)
            );
            eprintln!(
                "error: the declarations name secrets the server does not allow; {consequence}"
            );
            Err(ExitCode::from(super::EXIT_FINDINGS))
        }
        Err(findings) => {
            eprint!(
                "{}",
                mycopod_specs::render::render_human(&findings, &source.loaded)
            );
            eprintln!("error: the declarations do not validate; {consequence}");
            Err(ExitCode::from(super::EXIT_FINDINGS))
        }
    }
}

/// Runs `mycopod plan`.
pub async fn run(config: &Config, args: &Args) -> ExitCode {
    let (source, desired, secrets) = match load_declarations(
        config,
        &Target::new(config, &args.repo, &args.git_ref, &args.path),
        "nothing was planned",
    )
    .await
    {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };

    if sqlite_file_is_absent(&config.database_url) {
        let url = crate::store::redact_url(&config.database_url);
        if config.database_url != Config::default().database_url && !args.allow_new_database {
            eprintln!(
                "error: the database {url} does not exist, and plan never creates one; check \
                 --database-url / MYCOPOD_DATABASE_URL / database_url, or pass \
                 --allow-new-database to plan as if nothing was ever applied"
            );
            return ExitCode::from(super::EXIT_USAGE);
        }
        eprintln!(
            "warning: no database at {url}: planned as if nothing was ever applied (database-held \
             configuration counts as new; approvals follow the commit's own policies)"
        );
    }
    let store = match open_store_if_present(&config.database_url).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "warning: database not readable ({e}); database-held configuration is planned as new"
            );
            None
        }
    };
    // Deep reads kept by `apply` and `serve` stand in for reading every guest again; plan
    // itself records none (it writes nothing).
    let world = LiveWorld::new(&desired, &secrets)
        .with_full_read_interval(config.full_read_interval.as_std())
        .without_recording_reads();
    let (observed, problems) = world.observe(&desired, store.as_ref()).await;

    let planned = crate::plan::plan(
        &source.commit,
        &desired,
        &observed,
        Options {
            prune: args.prune || config.prune,
        },
    );
    print!("{}", planned.plan.render());
    for note in &planned.notes {
        println!("note: {}", describe_note(note));
    }
    let target = Target::new(config, &args.repo, &args.git_ref, &args.path);
    let trusted = match &store {
        Some(store) => {
            let scope = format!("{}@{}", target.repo, target.git_ref);
            match trusted_policies(store, &scope, &observed).await {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: read the policies in force: {e}");
                    return ExitCode::from(super::EXIT_FINDINGS);
                }
            }
        }
        None => None,
    };
    let (approval_lines, run_approvals) = approvals_summary(&desired, trusted.as_deref(), &planned);
    if !planned.plan.is_empty() {
        println!("plan hash: {}", planned.plan.hash());
        if run_approvals == 0 {
            println!("approvals: none needed; the server applies this plan by itself");
        } else {
            println!("approvals: {run_approvals} needed before the server applies this plan");
            for line in &approval_lines {
                println!("  {line}");
            }
        }
    }
    for issue in &planned.issues {
        eprintln!("error: {issue}");
    }
    // A plan that could not see part of the world is not a plan of it: what could not be
    // observed is named, nothing is planned for it, and the plan fails.
    for p in &problems {
        eprintln!("error: could not observe {}: {}", p.resource, p.message);
    }
    if !problems.is_empty() {
        eprintln!(
            "error: the plan is incomplete: {} could not be observed and nothing is planned for \
             what they hold; it is not \"no changes\"",
            count(problems.len(), "resource", "resources")
        );
    }

    if let Some(out) = &args.out {
        let document = json!({
            "commit": source.commit,
            "plan_hash": planned.plan.hash(),
            "plan": planned.plan,
            "notes": planned.notes,
            "issues": planned.issues,
            "approvals_needed": run_approvals,
            "unobserved": problems
                .iter()
                .map(|p| json!({"resource": p.resource, "reason": p.message}))
                .collect::<Vec<_>>(),
        });
        let text = match serde_json::to_string_pretty(&document) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: serialise plan: {e}");
                return ExitCode::from(super::EXIT_FINDINGS);
            }
        };
        if let Err(e) = std::fs::write(out, text + "\n") {
            eprintln!("error: write {}: {e}", out.display());
            return ExitCode::from(super::EXIT_USAGE);
        }
    }

    if !planned.issues.is_empty() || !problems.is_empty() {
        ExitCode::from(super::EXIT_FINDINGS)
    } else if planned.plan.is_empty() {
        ExitCode::from(super::EXIT_OK)
    } else {
        ExitCode::from(EXIT_CHANGES)
    }
}

/// `n` with the singular or plural noun.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// One line for a note.
pub fn describe_note(note: &crate::plan::Note) -> String {
    use crate::plan::Note;
    match note {
        Note::Unreachable { kind, name } => {
            format!("{kind}/{name} did not answer: its resources were not planned")
        }
        Note::RestartRequired { resource, keys } => {
            format!(
                "{resource} needs a restart for {} to take effect",
                keys.join(", ")
            )
        }
        Note::Drift { resource, changes } => {
            format!(
                "{resource} drifted ({}) and is in detect mode: not changed",
                changes.join(", ")
            )
        }
        Note::NotPruned { detail, .. } => detail.clone(),
    }
}
