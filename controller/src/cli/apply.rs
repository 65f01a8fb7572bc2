//! `mycopod apply`: plan and apply from the command line, recorded as a run like any other.
//!
//! It goes through the same run lifecycle as the server: the run is recorded, approvals bind
//! to its plan hash, and what is applied is exactly what was shown. A plan that needs one
//! approval is applied only with `--approve` (recorded as the local user's approval); a plan
//! that needs more is refused here and must be approved through the server.

use std::process::ExitCode;

use chrono::Utc;

use super::plan::{Target, approvals_summary, describe_note, load_declarations};
use crate::config::Config;
use crate::model::{ActionStatus, Decision, RunStatus, Trigger};
use crate::plan::Options;
use crate::reconcile::driver::remember_reconciled;
use crate::reconcile::observe::LiveWorld;
use crate::reconcile::run::trusted_policies;
use crate::reconcile::run::{Outcome, RunSettings, reconcile};
use crate::store::Store;

/// `mycopod apply` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The declarations: a local folder (its files as they are now) or a Git URL.
    #[arg(long)]
    pub repo: Option<String>,
    /// Branch, tag or commit of a Git URL.
    #[arg(long = "ref")]
    pub git_ref: Option<String>,
    /// Sub-folder of the repository that holds the declarations.
    #[arg(long)]
    pub path: Option<String>,
    /// Also delete managed guests that are no longer declared.
    #[arg(long)]
    pub prune: bool,
    /// Approve a plan that needs one approval, as the local user.
    #[arg(long)]
    pub approve: bool,
}

fn local_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .map(|u| format!("local:{u}"))
        .unwrap_or_else(|_| "local".to_owned())
}

/// Runs `mycopod apply`.
pub async fn run(config: &Config, args: &Args) -> ExitCode {
    let target = Target::new(config, &args.repo, &args.git_ref, &args.path);
    let (source, desired, secrets) =
        match load_declarations(config, &target, "nothing was applied").await {
            Ok(loaded) => loaded,
            Err(code) => return code,
        };
    let store = match Store::connect(&config.database_url).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: open the database: {e}");
            return ExitCode::from(super::EXIT_USAGE);
        }
    };
    if let Err(e) = store.migrate().await {
        eprintln!("error: migrate the database: {e}");
        return ExitCode::from(super::EXIT_USAGE);
    }
    let world = LiveWorld::new(&desired, &secrets)
        .with_full_read_interval(config.full_read_interval.as_std());
    let mut settings = RunSettings::new(format!("{}@{}", target.repo, target.git_ref));
    settings.options = Options {
        prune: args.prune || config.prune,
    };
    let user = local_user();

    // Show the plan first, exactly as `mycopod plan` would.
    let (observed, problems) = world.observe(&desired, Some(&store)).await;
    let planned = crate::plan::plan(&source.commit, &desired, &observed, settings.options);
    print!("{}", planned.plan.render());
    for note in &planned.notes {
        println!("note: {}", describe_note(note));
    }
    for issue in &planned.issues {
        eprintln!("error: {issue}");
    }
    // Applying on a partial view could act on what it believes is absent or converged:
    // nothing is recorded or applied until everything declared can be observed.
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("error: could not observe {}: {}", p.resource, p.message);
        }
        eprintln!(
            "error: nothing was applied: {} of the declared resources could not be observed",
            problems.len()
        );
        return ExitCode::from(super::EXIT_FINDINGS);
    }
    let trusted = match trusted_policies(&store, &settings.scope, &observed).await {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: read the policies in force: {e}");
            return ExitCode::from(super::EXIT_FINDINGS);
        }
    };
    let (approval_lines, needed) = approvals_summary(&desired, trusted.as_deref(), &planned);
    // The run is planned from this same observation: one apply, one observation (and the
    // verification after applying). The approval below names the plan shown above.
    settings.observed = Some(std::sync::Arc::new(observed));

    let mut attempt = 0;
    loop {
        attempt += 1;
        let outcome = reconcile(
            &store,
            &world,
            &settings,
            &source.commit,
            &source.loaded,
            Trigger::Cli,
            Some(&user),
            Utc::now(),
        )
        .await;
        let (outcome, problems) = match outcome {
            Ok(reconciled) => reconciled,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(super::EXIT_FINDINGS);
            }
        };
        if matches!(outcome, Outcome::InSync | Outcome::Applied { .. }) {
            // As `serve` does, so that `serve` afterwards takes this commit as reconciled.
            remember_reconciled(&store, &settings.scope, &source.commit, &outcome).await;
        }
        match outcome {
            Outcome::InSync => {
                println!("nothing to apply");
                return ExitCode::from(if planned.issues.is_empty() {
                    super::EXIT_OK
                } else {
                    super::EXIT_FINDINGS
                });
            }
            Outcome::ObservationFailed => {
                eprintln!("error: nothing was applied: something declared could not be observed");
                for p in &problems {
                    eprintln!("  {}: {}", p.resource, p.message);
                }
                return ExitCode::from(super::EXIT_FINDINGS);
            }
            Outcome::Invalid { .. } => return ExitCode::from(super::EXIT_FINDINGS),
            Outcome::WaitingForWindow { run_id, opens_at } => {
                eprintln!(
                    "run {run_id} is approved but its policies allow applying it only inside \
                     their time windows; {}; nothing was applied",
                    match opens_at {
                        Some(at) => format!("the next one opens at {}", at.to_rfc3339()),
                        None => "none opens within a week".to_owned(),
                    }
                );
                return ExitCode::from(super::EXIT_FINDINGS);
            }
            Outcome::Applied { run_id, status } => {
                return report(&store, run_id, status).await;
            }
            Outcome::Waiting { run_id } => {
                if attempt > 1 {
                    eprintln!(
                        "error: run {run_id} still waits after the approval; the world changed while applying, run again"
                    );
                    return ExitCode::from(super::EXIT_FINDINGS);
                }
                if needed > 1 {
                    eprintln!("error: this plan needs {needed} approvals:");
                    for line in &approval_lines {
                        eprintln!("  {line}");
                    }
                    eprintln!(
                        "run {run_id} waits for them on the server: POST /api/v1/runs/{run_id}/approve with its plan hash"
                    );
                    return ExitCode::from(super::EXIT_FINDINGS);
                }
                if !args.approve {
                    eprintln!("this plan needs one approval:");
                    for line in &approval_lines {
                        eprintln!("  {line}");
                    }
                    eprintln!(
                        "run {run_id} is recorded and waits; run `mycopod apply --approve` to approve and apply it as {user}"
                    );
                    return ExitCode::from(super::EXIT_FINDINGS);
                }
                let hash = match store.get_run(run_id).await {
                    Ok(run) => run.plan_hash,
                    Err(e) => {
                        eprintln!("error: read run {run_id}: {e}");
                        return ExitCode::from(super::EXIT_FINDINGS);
                    }
                };
                if let Err(e) = store
                    .record_decision(
                        run_id,
                        &user,
                        &hash,
                        Decision::Approve,
                        Some("mycopod apply --approve"),
                        Utc::now(),
                    )
                    .await
                {
                    eprintln!("error: approve run {run_id}: {e}");
                    return ExitCode::from(super::EXIT_FINDINGS);
                }
                println!("approved run {run_id} as {user}");
            }
        }
    }
}

async fn report(store: &Store, run_id: i64, status: RunStatus) -> ExitCode {
    match store.list_actions(run_id).await {
        Ok(actions) => {
            for a in actions {
                let mark = match a.status {
                    ActionStatus::Succeeded => "ok",
                    ActionStatus::Failed => "FAILED",
                    ActionStatus::Skipped => "skipped",
                    _ => "?",
                };
                match &a.last_error {
                    Some(e) if a.status != ActionStatus::Succeeded => {
                        println!("{mark:>7}  {}  ({e})", a.key)
                    }
                    _ => println!("{mark:>7}  {}", a.key),
                }
            }
        }
        Err(e) => eprintln!("warning: list the actions of run {run_id}: {e}"),
    }
    println!("run {run_id}: {status}");
    if status == RunStatus::Succeeded {
        ExitCode::from(super::EXIT_OK)
    } else {
        ExitCode::from(super::EXIT_FINDINGS)
    }
}
