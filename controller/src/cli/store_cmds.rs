//! `mycopod migrate`, `mycopod user add` and `mycopod audit verify`: thin glue from arguments
//! to [`crate::store`] calls and exit codes (0 ok, 1 failure or findings, 2 usage or
//! configuration error). No SQL here.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use crate::model::Role;
use crate::store::{Store, StoreError, hash_password};
use anyhow::Context;
use chrono::Utc;
use clap::Subcommand;

/// `mycopod user ...`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user (applies pending migrations first).
    Add {
        /// Login name.
        name: String,
        /// Role: viewer, operator or admin.
        #[arg(long)]
        role: Role,
        /// Read the password from the first line of standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
        /// A git identity (commit email) of the user, repeatable: where policies forbid
        /// self-approval, the user cannot approve runs covering commits by this identity.
        #[arg(long = "git-email", value_name = "EMAIL")]
        git_emails: Vec<String>,
    },
    /// Set a user's git identities (commit emails), replacing the old ones; none clears them.
    GitEmails {
        /// Login name.
        name: String,
        /// Commit author emails that count as this user when self-approval is checked.
        emails: Vec<String>,
    },
}

/// `mycopod audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain; name the first entry that does not match (exit 1).
    Verify,
}

/// An error with the exit code it maps to.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl Failure {
    fn usage(error: anyhow::Error) -> Failure {
        Failure { code: 2, error }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Failure {
        Failure { code: 1, error }
    }
}

fn finish(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

async fn open(url: &str) -> Result<Store, Failure> {
    match Store::connect(url).await {
        Ok(store) => Ok(store),
        Err(e @ StoreError::UnsupportedUrl { .. }) => Err(Failure::usage(e.into())),
        Err(e) => Err(Failure::from(anyhow::Error::from(e))),
    }
}

/// `mycopod migrate`
pub async fn migrate(url: &str) -> ExitCode {
    finish(
        async {
            let store = open(url).await?;
            store.migrate().await.context("migrate the database")?;
            println!("migrations applied ({})", store.backend_name());
            store.close().await;
            Ok(())
        }
        .await,
    )
}

/// `mycopod user ...`
pub async fn user(url: &str, cmd: UserCommand) -> ExitCode {
    match cmd {
        UserCommand::Add {
            name,
            role,
            password_stdin,
            git_emails,
        } => finish(add_user(url, &name, role, password_stdin, &git_emails).await),
        UserCommand::GitEmails { name, emails } => {
            finish(set_git_emails(url, &name, &emails).await)
        }
    }
}

fn read_password(from_stdin: bool) -> Result<String, Failure> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("read the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        if !std::io::stdin().is_terminal() {
            return Err(Failure::usage(anyhow::anyhow!(
                "standard input is not a terminal; use --password-stdin"
            )));
        }
        let first = rpassword::prompt_password("password: ").context("read the password")?;
        let second =
            rpassword::prompt_password("repeat password: ").context("read the password")?;
        if first != second {
            return Err(Failure::usage(anyhow::anyhow!("the passwords differ")));
        }
        first
    };
    if let Some(problem) = crate::store::password_problem(&password) {
        return Err(Failure::usage(anyhow::anyhow!(
            "the password must have {problem}, as the API demands"
        )));
    }
    Ok(password)
}

async fn set_git_emails(url: &str, name: &str, emails: &[String]) -> Result<(), Failure> {
    if let Some(bad) = emails
        .iter()
        .find(|e| !e.contains('@') || e.trim().len() < 3)
    {
        return Err(Failure::usage(anyhow::anyhow!(
            "invalid git email {bad:?}: expected the address git records (git config user.email)"
        )));
    }
    let store = open(url).await?;
    store.migrate().await.context("migrate the database")?;
    let found = store
        .set_user_git_emails(name, emails, "cli", Utc::now())
        .await
        .with_context(|| format!("set the git emails of user {name}"));
    store.close().await;
    if !found? {
        return Err(anyhow::anyhow!("user {name} does not exist").into());
    }
    println!(
        "user {name}: git emails {}",
        if emails.is_empty() {
            "cleared".to_owned()
        } else {
            emails.join(", ")
        }
    );
    Ok(())
}

async fn add_user(
    url: &str,
    name: &str,
    role: Role,
    from_stdin: bool,
    git_emails: &[String],
) -> Result<(), Failure> {
    if let Some(bad) = git_emails.iter().find(|e| !e.contains('@')) {
        return Err(Failure::usage(anyhow::anyhow!(
            "invalid git email {bad:?}: expected the address git records (git config user.email)"
        )));
    }
    if !crate::store::valid_user_name(name) {
        return Err(Failure::usage(anyhow::anyhow!(
            "invalid user name {name:?}: use 1-64 letters, digits, '-', '_', '.' or '@'"
        )));
    }
    let password = read_password(from_stdin)?;
    let hash = hash_password(&password)
        .map_err(|e| anyhow::anyhow!("hash the password of user {name}: {e}"))?;
    let store = open(url).await?;
    store.migrate().await.context("migrate the database")?;
    let mut result = store
        .create_user(name, &hash, role, "cli", Utc::now())
        .await;
    if result.is_ok()
        && !git_emails.is_empty()
        && let Err(e) = store
            .set_user_git_emails(name, git_emails, "cli", Utc::now())
            .await
    {
        result = Err(e);
    }
    store.close().await;
    match result {
        Ok(user) => {
            println!("created user {} with role {}", user.name, user.role);
            Ok(())
        }
        Err(e) if e.is_unique_violation() => {
            Err(anyhow::anyhow!("user {name} already exists").into())
        }
        Err(e) => Err(anyhow::Error::from(e)
            .context(format!("create user {name}"))
            .into()),
    }
}

/// `mycopod audit ...`
pub async fn audit(url: &str, cmd: AuditCommand) -> ExitCode {
    match cmd {
        AuditCommand::Verify => {
            let result = async {
                let store = open(url).await?;
                let report = store.verify_audit().await.context("verify the audit log");
                store.close().await;
                let report = report?;
                match report.failure {
                    None => {
                        println!("audit log ok: {} entries verified", report.checked);
                        Ok(())
                    }
                    Some(f) => Err(Failure::from(anyhow::anyhow!(
                        "audit log tampered at entry {}: {} ({} entries before it verified)",
                        f.seq,
                        f.reason,
                        report.checked
                    ))),
                }
            }
            .await;
            finish(result)
        }
    }
}
