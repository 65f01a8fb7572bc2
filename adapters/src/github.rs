//! GitHub: commit statuses through octocrab, and reading webhook deliveries.
//!
//! Posting a status is one call with a timeout; the controller decides when and what.
//! Webhook signature checks use [`crate::signing`]. Push payloads are read leniently (only
//! `ref`, `after` and `deleted`) so that a field GitHub adds or drops never stops a reconcile.

use std::time::Duration;

use octocrab::Octocrab;
use octocrab::models::StatusState;
use serde::Deserialize;

/// GitHub allows at most this many characters in a status description.
pub const MAX_DESCRIPTION: usize = 140;

/// The state of a commit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitState {
    /// A run waits for approval or is being applied.
    Pending,
    /// The run succeeded, or there was nothing to do.
    Success,
    /// The run failed, was rejected, or the specs were invalid.
    Failure,
    /// mycopod itself could not finish.
    Error,
}

impl CommitState {
    fn to_octocrab(self) -> StatusState {
        match self {
            CommitState::Pending => StatusState::Pending,
            CommitState::Success => StatusState::Success,
            CommitState::Failure => StatusState::Failure,
            CommitState::Error => StatusState::Error,
        }
    }
}

/// A repository on GitHub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRef {
    /// The owner (user or organisation).
    pub owner: String,
    /// The repository name.
    pub name: String,
}

impl RepoRef {
    /// Reads `owner/name` out of a GitHub remote: `https://github.com/o/r(.git)`,
    /// `git@github.com:o/r.git`, `ssh://git@github.com/o/r.git`, or plain `o/r`.
    pub fn from_remote(remote: &str) -> Option<RepoRef> {
        let remote = remote.trim().trim_end_matches('/');
        let path = if let Some((_, rest)) = remote.split_once("://") {
            rest.split_once('/')?.1
        } else if let Some((host, rest)) = remote.split_once(':') {
            if host.contains('/') {
                return None;
            }
            rest
        } else {
            remote
        };
        let path = path.strip_suffix(".git").unwrap_or(path);
        let mut parts = path.split('/');
        let (owner, name) = (parts.next()?, parts.next()?);
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        (parts.next().is_none() && valid(owner) && valid(name)).then(|| RepoRef {
            owner: owner.to_owned(),
            name: name.to_owned(),
        })
    }
}

/// Failures talking to GitHub.
#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    /// The client could not be built (bad base URI).
    #[error("configure github client for {base}: {source}")]
    Configure {
        /// The API base.
        base: String,
        /// The octocrab error.
        source: Box<octocrab::Error>,
    },
    /// GitHub refused or could not be reached.
    #[error("post commit status on {owner}/{repo}@{sha}: {source}")]
    PostStatus {
        /// Repository owner.
        owner: String,
        /// Repository name.
        repo: String,
        /// The commit.
        sha: String,
        /// The octocrab error.
        source: Box<octocrab::Error>,
    },
    /// No answer in time.
    #[error("post commit status on {owner}/{repo}@{sha} timed out after {timeout:?}")]
    Timeout {
        /// Repository owner.
        owner: String,
        /// Repository name.
        repo: String,
        /// The commit.
        sha: String,
        /// The limit.
        timeout: Duration,
    },
}

/// Posts commit statuses.
#[derive(Debug, Clone)]
pub struct GitHub {
    client: Octocrab,
    timeout: Duration,
    context: String,
}

impl GitHub {
    /// A client for the API at `base` (`https://api.github.com`, or a test server) with a
    /// token. Statuses carry `context` (e.g. `mycopod`).
    pub fn new(
        base: &str,
        token: String,
        context: impl Into<String>,
        timeout: Duration,
    ) -> Result<GitHub, GitHubError> {
        let configure = |source| GitHubError::Configure {
            base: base.to_owned(),
            source: Box::new(source),
        };
        let client = Octocrab::builder()
            .base_uri(base)
            .map_err(configure)?
            .personal_token(token)
            .set_connect_timeout(Some(timeout))
            .set_read_timeout(Some(timeout))
            .build()
            .map_err(configure)?;
        Ok(GitHub {
            client,
            timeout,
            context: context.into(),
        })
    }

    /// Posts a status on `sha`. The description is cut to GitHub's limit.
    #[tracing::instrument(skip(self, description, target_url), fields(repo = %format!("{}/{}", repo.owner, repo.name)))]
    pub async fn post_status(
        &self,
        repo: &RepoRef,
        sha: &str,
        state: CommitState,
        description: &str,
        target_url: Option<&str>,
    ) -> Result<(), GitHubError> {
        let handler = self.client.repos(&repo.owner, &repo.name);
        let mut builder = handler
            .create_status(sha.to_owned(), state.to_octocrab())
            .context(self.context.clone())
            .description(truncate(description, MAX_DESCRIPTION));
        if let Some(url) = target_url {
            builder = builder.target(url.to_owned());
        }
        match tokio::time::timeout(self.timeout, builder.send()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(source)) => Err(GitHubError::PostStatus {
                owner: repo.owner.clone(),
                repo: repo.name.clone(),
                sha: sha.to_owned(),
                source: Box::new(source),
            }),
            Err(_) => Err(GitHubError::Timeout {
                owner: repo.owner.clone(),
                repo: repo.name.clone(),
                sha: sha.to_owned(),
                timeout: self.timeout,
            }),
        }
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// What a webhook delivery asks of mycopod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookEvent {
    /// GitHub checks the hook: answer 200.
    Ping,
    /// A push to `git_ref` (`refs/heads/main`) that now points at `after`.
    Push {
        /// The full ref pushed to.
        git_ref: String,
        /// The new commit (all zeros when the ref was deleted).
        after: String,
        /// Whether the push deleted the ref.
        deleted: bool,
        /// Who pushed (`pusher.email`, else `pusher.name`, else `sender.login`), as GitHub
        /// signs it: a stronger word than the commits' own author fields.
        pusher: Option<String>,
    },
    /// Any other event: answer 204.
    Other(String),
}

impl WebhookEvent {
    /// Whether this is a push that moved `branch` (a short name like `main`) to a commit.
    pub fn moves_branch(&self, branch: &str) -> bool {
        match self {
            WebhookEvent::Push {
                git_ref, deleted, ..
            } => !deleted && git_ref.strip_prefix("refs/heads/") == Some(branch),
            _ => false,
        }
    }
}

#[derive(Deserialize)]
struct PushPayload {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    pusher: Option<PushPusher>,
    #[serde(default)]
    sender: Option<PushSender>,
}

#[derive(serde::Deserialize)]
struct PushPusher {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

#[derive(serde::Deserialize)]
struct PushSender {
    #[serde(default)]
    login: Option<String>,
}

/// Reads a delivery from its `X-GitHub-Event` header and body. The signature must have been
/// checked before. A push whose body lacks `ref` or `after` is an error.
pub fn parse_webhook(event: &str, body: &[u8]) -> Result<WebhookEvent, serde_json::Error> {
    match event {
        "ping" => Ok(WebhookEvent::Ping),
        "push" => {
            let push: PushPayload = serde_json::from_slice(body)?;
            let pusher = push
                .pusher
                .as_ref()
                .and_then(|p| p.email.clone().or_else(|| p.name.clone()))
                .or_else(|| push.sender.and_then(|s| s.login))
                .filter(|p| !p.trim().is_empty());
            Ok(WebhookEvent::Push {
                git_ref: push.git_ref,
                after: push.after,
                deleted: push.deleted,
                pusher,
            })
        }
        other => Ok(WebhookEvent::Other(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_push_should_name_its_pusher() {
        let body = br#"{"ref":"refs/heads/main","after":"abc","pusher":{"name":"mallory","email":"Mallory@x.example"},"sender":{"login":"mal"}}"#;
        let event = parse_webhook("push", body).unwrap();
        assert!(matches!(
            event,
            WebhookEvent::Push { pusher: Some(ref p), .. } if p == "Mallory@x.example"
        ));
        let body = br#"{"ref":"refs/heads/main","after":"abc","sender":{"login":"mal"}}"#;
        assert!(matches!(
            parse_webhook("push", body).unwrap(),
            WebhookEvent::Push { pusher: Some(ref p), .. } if p == "mal"
        ));
    }

    #[test]
    fn repo_ref_should_read_every_common_remote_form() {
        let want = Some(RepoRef {
            owner: "acme".into(),
            name: "plant-gitops".into(),
        });
        for remote in [
            "https://github.com/acme/plant-gitops",
            "https://github.com/acme/plant-gitops.git",
            "https://x-access-token:t@github.com/acme/plant-gitops.git/",
            "git@github.com:acme/plant-gitops.git",
            "ssh://git@github.com/acme/plant-gitops.git",
            "acme/plant-gitops",
        ] {
            assert_eq!(RepoRef::from_remote(remote), want, "{remote}");
        }
        assert_eq!(RepoRef::from_remote("/srv/repo"), None);
        assert_eq!(RepoRef::from_remote("https://github.com/acme"), None);
        assert_eq!(RepoRef::from_remote("https://github.com/a/b/c"), None);
    }

    #[test]
    fn a_push_to_the_tracked_branch_should_move_it_and_a_deletion_should_not() {
        let body = br#"{"ref":"refs/heads/main","before":"a","after":"b","deleted":false,"extra":{"x":1}}"#;
        let event = parse_webhook("push", body).unwrap();
        assert!(event.moves_branch("main"));
        assert!(!event.moves_branch("dev"));
        let deleted = br#"{"ref":"refs/heads/main","after":"0000","deleted":true}"#;
        assert!(!parse_webhook("push", deleted).unwrap().moves_branch("main"));
        let tag = br#"{"ref":"refs/tags/main","after":"b"}"#;
        assert!(!parse_webhook("push", tag).unwrap().moves_branch("main"));
    }

    #[test]
    fn ping_and_other_events_should_be_recognised_and_a_bad_push_refused() {
        assert_eq!(parse_webhook("ping", b"{}").unwrap(), WebhookEvent::Ping);
        assert_eq!(
            parse_webhook("issues", b"not json").unwrap(),
            WebhookEvent::Other("issues".into())
        );
        assert!(parse_webhook("push", br#"{"after":"b"}"#).is_err());
        assert!(parse_webhook("push", b"garbage").is_err());
    }

    #[test]
    fn long_descriptions_should_be_cut_to_githubs_limit() {
        let long = "x".repeat(300);
        let cut = truncate(&long, MAX_DESCRIPTION);
        assert_eq!(cut.chars().count(), MAX_DESCRIPTION);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("short", MAX_DESCRIPTION), "short");
    }
}
