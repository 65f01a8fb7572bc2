//! The Git source: fetch a remote at a ref into a local cache and read the declaration files of
//! one commit.
//!
//! It drives the `git` command line through `tokio::process`, not libgit2 or gix: the CLI
//! honours `~/.ssh/config`, credential helpers and proxies exactly as `git` does, every call
//! can be killed at a hard timeout (libgit2 has no per-call timeout), and it is what Argo CD
//! does. One bare cache repository per remote, fetched incrementally, every call under
//! a hard timeout, credentials passed through the environment and never through arguments or
//! logged URLs. Files are read straight from the object database (`ls-tree` + `cat-file
//! --batch`), so there is no work tree and no checkout race. It must not decide anything about
//! what the files mean.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// How to authenticate to a remote. Secrets are values here; where they come from (an
/// environment variable, a file) is the caller's business.
#[derive(Clone, Default)]
pub enum GitAuth {
    /// No credentials: local paths, `file://`, public remotes, or an ssh agent.
    #[default]
    None,
    /// An HTTPS token (GitHub, Gitea, GitLab), sent as HTTP basic auth with the given user.
    Token {
        /// The basic-auth user name; GitHub accepts `x-access-token`.
        username: String,
        /// The token itself.
        token: String,
    },
    /// An SSH private key file, used with `IdentitiesOnly`.
    SshKey {
        /// Path of the private key.
        key_file: PathBuf,
        /// Path of a known_hosts file; without one, host keys are checked against the user's.
        known_hosts: Option<PathBuf>,
    },
}

impl std::fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GitAuth::None => f.write_str("None"),
            GitAuth::Token { username, .. } => f
                .debug_struct("Token")
                .field("username", username)
                .field("token", &"<redacted>")
                .finish(),
            GitAuth::SshKey {
                key_file,
                known_hosts,
            } => f
                .debug_struct("SshKey")
                .field("key_file", key_file)
                .field("known_hosts", known_hosts)
                .finish(),
        }
    }
}

/// Where the desired state comes from: a remote (a local path or a Git URL) and its cache.
#[derive(Debug, Clone)]
pub struct GitSource {
    remote: String,
    cache: PathBuf,
    auth: GitAuth,
    timeout: Duration,
    git: PathBuf,
}

/// One commit and who made it, as `git log` records it (identities are what the committer's
/// git said; a signed push webhook is the stronger word on who pushed).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommitInfo {
    /// Full object id.
    pub sha: String,
    /// The author's name as git recorded it.
    pub author_name: String,
    /// The author's email, compared with approvers' git identities.
    pub author_email: String,
    /// The committer's name as git recorded it.
    pub committer_name: String,
    /// The committer's email, compared with approvers' git identities.
    pub committer_email: String,
    /// First line of the message.
    pub subject: String,
}

/// A commit id as 40 (SHA-1) or 64 (SHA-256) lower-case hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommitId(String);

impl CommitId {
    /// Accepts a full hex object id as `git rev-parse` prints it.
    pub fn parse(text: &str) -> Option<CommitId> {
        let text = text.trim();
        let hex = text.len() == 40 || text.len() == 64;
        (hex && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| CommitId(text.to_owned()))
    }

    /// The full hex id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first twelve digits, for messages.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl std::fmt::Display for CommitId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One declaration file read from a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Path relative to the repository root (or to the requested sub-folder's parent root),
    /// with `/` separators.
    pub path: String,
    /// The blob's size in bytes.
    pub size: u64,
    /// The file's text; `None` when the caller's `admit` refused the blob.
    pub text: Option<String>,
}

/// What went wrong talking to Git. Messages never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The cache folder could not be prepared.
    #[error("prepare git cache {path}: {source}")]
    Cache {
        /// The cache folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The `git` program could not be started.
    #[error("start git for {op}: {source}")]
    Spawn {
        /// The step (`fetch`, `ls-tree`, ...).
        op: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A git command did not finish in time; it was killed.
    #[error("git {op} on {remote} timed out after {timeout:?}")]
    Timeout {
        /// The step.
        op: &'static str,
        /// The remote, credentials removed.
        remote: String,
        /// The limit that was hit.
        timeout: Duration,
    },
    /// A git command exited unsuccessfully.
    #[error("git {op} on {remote} failed ({status}): {stderr}")]
    Command {
        /// The step.
        op: &'static str,
        /// The remote, credentials removed.
        remote: String,
        /// The exit status as text.
        status: String,
        /// The last lines of standard error, credentials removed.
        stderr: String,
    },
    /// The ref names no branch, tag or commit of the remote.
    #[error("ref {reference:?} not found on {remote}")]
    RefNotFound {
        /// The ref that was asked for.
        reference: String,
        /// The remote, credentials removed.
        remote: String,
    },
    /// A declaration file is not UTF-8 text.
    #[error("{path} at commit {commit} is not UTF-8 text")]
    NotUtf8 {
        /// The file.
        path: String,
        /// The commit it was read from.
        commit: String,
    },
    /// `git cat-file --batch` answered something this module does not understand.
    #[error("unexpected output from git {op}: {detail}")]
    Protocol {
        /// The step.
        op: &'static str,
        /// What was wrong.
        detail: String,
    },
}

impl GitError {
    /// Whether trying again later may help (network trouble, timeouts) as opposed to a
    /// problem that needs a person (a missing ref, a file that is not text).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            GitError::Timeout { .. } | GitError::Command { .. } | GitError::Spawn { .. }
        )
    }
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

impl GitSource {
    /// A source for `remote` (a local path, `file://`, `https://` or an ssh URL) cached under
    /// `cache_root`. Each remote gets its own bare repository there, named by a hash of the
    /// remote so that two sources never share one.
    pub fn new(remote: impl Into<String>, cache_root: impl AsRef<Path>) -> GitSource {
        let remote = remote.into();
        let digest = Sha256::digest(strip_credentials(&remote).as_bytes());
        let cache = cache_root
            .as_ref()
            .join(format!("{}.git", &hex::encode(digest)[..16]));
        GitSource {
            remote,
            cache,
            auth: GitAuth::None,
            timeout: DEFAULT_TIMEOUT,
            git: PathBuf::from("git"),
        }
    }

    /// Use these credentials for fetches.
    pub fn with_auth(mut self, auth: GitAuth) -> GitSource {
        self.auth = auth;
        self
    }

    /// Kill any git command that runs longer than this (default two minutes).
    pub fn with_timeout(mut self, timeout: Duration) -> GitSource {
        self.timeout = timeout;
        self
    }

    /// Run this program instead of `git` from `PATH`.
    pub fn with_git_program(mut self, program: impl Into<PathBuf>) -> GitSource {
        self.git = program.into();
        self
    }

    /// The remote as it may be shown to people: user and password removed.
    pub fn display_remote(&self) -> String {
        strip_credentials(&self.remote)
    }

    /// Fetches the remote's branches and tags into the cache (incrementally) and resolves
    /// `reference` (a branch, a tag, or a full commit id) to a commit.
    #[tracing::instrument(skip(self), fields(remote = %self.display_remote()))]
    pub async fn fetch(&self, reference: &str) -> Result<CommitId, GitError> {
        self.ensure_cache().await?;
        let remote = self.remote_argument();
        self.run(
            "fetch",
            &[
                "fetch",
                "--quiet",
                "--force",
                "--prune",
                "--no-tags",
                "--no-recurse-submodules",
                &remote,
                "+refs/heads/*:refs/remotes/origin/*",
                "+refs/tags/*:refs/tags/*",
            ],
            None,
        )
        .await?;
        self.resolve(reference).await
    }

    /// Resolves `reference` against what the cache holds, without fetching.
    pub async fn resolve(&self, reference: &str) -> Result<CommitId, GitError> {
        let not_found = || GitError::RefNotFound {
            reference: reference.to_owned(),
            remote: self.display_remote(),
        };
        // Refuse anything that git could read as an option or a revision expression.
        if reference.is_empty()
            || reference.starts_with('-')
            || reference.contains("..")
            || reference.chars().any(|c| c.is_whitespace() || c == ':')
        {
            return Err(not_found());
        }
        let candidates = [
            format!("refs/remotes/origin/{reference}^{{commit}}"),
            format!("refs/tags/{reference}^{{commit}}"),
            format!("{reference}^{{commit}}"),
        ];
        for (index, candidate) in candidates.iter().enumerate() {
            // Only a full object id may be taken literally: abbreviations are ambiguous.
            if index == 2 && CommitId::parse(reference).is_none() {
                break;
            }
            match self
                .run(
                    "rev-parse",
                    &["rev-parse", "--verify", "--quiet", candidate],
                    None,
                )
                .await
            {
                Ok(out) => {
                    let text = String::from_utf8_lossy(&out);
                    return CommitId::parse(&text).ok_or_else(|| GitError::Protocol {
                        op: "rev-parse",
                        detail: format!("not an object id: {}", text.trim()),
                    });
                }
                Err(GitError::Command { .. }) => continue,
                Err(other) => return Err(other),
            }
        }
        Err(not_found())
    }

    /// The commits reachable from `to` but not from `since` (all of `to`'s history when
    /// `since` is `None`), newest first, at most `limit`, with their author and committer
    /// identities as git records them.
    #[tracing::instrument(skip(self), fields(remote = %self.display_remote(), to = %to.short()))]
    pub async fn commits_between(
        &self,
        since: Option<&CommitId>,
        to: &CommitId,
        limit: usize,
    ) -> Result<Vec<CommitInfo>, GitError> {
        let (range, limit) = match since {
            Some(s) if s != to => (format!("{}..{}", s.as_str(), to.as_str()), limit),
            // Reconciling the same commit again: it covers that commit alone.
            Some(_) => (to.as_str().to_owned(), 1),
            None => (to.as_str().to_owned(), limit),
        };
        let max = format!("--max-count={}", limit.max(1));
        // Fields separated by NUL, records by 0x1e (neither can occur in an identity).
        let format = "--format=%H%x00%an%x00%ae%x00%cn%x00%ce%x00%s%x1e";
        let args = [
            "log",
            "--no-color",
            max.as_str(),
            format,
            range.as_str(),
            "--",
        ];
        let out = self.run("log", &args, None).await?;
        let text = String::from_utf8_lossy(&out);
        let mut commits = Vec::new();
        for record in text.split('\u{1e}') {
            let record = record.trim_start_matches('\n');
            if record.is_empty() {
                continue;
            }
            let f: Vec<&str> = record.split('\0').collect();
            let [
                sha,
                author_name,
                author_email,
                committer_name,
                committer_email,
                subject,
            ] = f.as_slice()
            else {
                return Err(GitError::Protocol {
                    op: "log",
                    detail: format!("unexpected record with {} fields", f.len()),
                });
            };
            commits.push(CommitInfo {
                sha: (*sha).to_owned(),
                author_name: (*author_name).to_owned(),
                author_email: (*author_email).to_owned(),
                committer_name: (*committer_name).to_owned(),
                committer_email: (*committer_email).to_owned(),
                subject: (*subject).to_owned(),
            });
        }
        Ok(commits)
    }

    /// Reads every `*.yaml`/`*.yml` file under `subdir` (empty for the whole tree) at `commit`,
    /// skipping hidden files and folders, sorted by path. `admit` is asked, in path order, of
    /// each blob's path and size before anything is read; a blob it refuses is listed with its
    /// size and no text, so a commit written to exhaust memory cannot.
    #[tracing::instrument(skip(self, admit), fields(remote = %self.display_remote(), commit = %commit.short()))]
    pub async fn read_declarations(
        &self,
        commit: &CommitId,
        subdir: &str,
        mut admit: impl FnMut(&str, u64) -> bool + Send,
    ) -> Result<Vec<SourceFile>, GitError> {
        let subdir = subdir.trim_matches('/');
        let mut args = vec!["ls-tree", "-r", "-l", "-z", "--full-tree", commit.as_str()];
        if !subdir.is_empty() {
            args.push("--");
            args.push(subdir);
        }
        let listing = self.run("ls-tree", &args, None).await?;
        let mut wanted: BTreeMap<String, (String, u64)> = BTreeMap::new();
        for entry in listing.split(|b| *b == 0).filter(|e| !e.is_empty()) {
            let entry = String::from_utf8_lossy(entry);
            // "<mode> SP <type> SP <object> SP+ <size> TAB <path>"
            let Some((meta, path)) = entry.split_once('\t') else {
                return Err(GitError::Protocol {
                    op: "ls-tree",
                    detail: format!("entry without a tab: {entry}"),
                });
            };
            let mut fields = meta.split_ascii_whitespace();
            let (Some(_mode), Some(kind), Some(object), Some(size)) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err(GitError::Protocol {
                    op: "ls-tree",
                    detail: format!("malformed entry: {entry}"),
                });
            };
            if kind == "blob" && is_declaration_path(path) {
                let size = size.parse::<u64>().map_err(|_| GitError::Protocol {
                    op: "ls-tree",
                    detail: format!("blob without a size: {entry}"),
                })?;
                wanted.insert(path.to_owned(), (object.to_owned(), size));
            }
        }
        let read: BTreeMap<&str, bool> = wanted
            .iter()
            .map(|(path, (_, size))| (path.as_str(), admit(path, *size)))
            .collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let mut request = String::new();
        for (path, (object, _)) in &wanted {
            if read.get(path.as_str()) == Some(&true) {
                request.push_str(object);
                request.push('\n');
            }
        }
        let output = self
            .run(
                "cat-file",
                &["cat-file", "--batch"],
                Some(request.into_bytes()),
            )
            .await?;
        let blobs = parse_cat_file_batch(&output)?;
        let mut files = Vec::with_capacity(wanted.len());
        for (path, (object, size)) in &wanted {
            if read.get(path.as_str()) != Some(&true) {
                files.push(SourceFile {
                    path: path.clone(),
                    size: *size,
                    text: None,
                });
                continue;
            }
            let bytes = blobs
                .get(object.as_str())
                .ok_or_else(|| GitError::Protocol {
                    op: "cat-file",
                    detail: format!("object {object} of {path} missing from the answer"),
                })?;
            let text = String::from_utf8(bytes.to_vec()).map_err(|_| GitError::NotUtf8 {
                path: path.clone(),
                commit: commit.to_string(),
            })?;
            files.push(SourceFile {
                path: path.clone(),
                size: *size,
                text: Some(text),
            });
        }
        Ok(files)
    }

    async fn ensure_cache(&self) -> Result<(), GitError> {
        if self.cache.join("HEAD").is_file() {
            return Ok(());
        }
        let cache_error = |source| GitError::Cache {
            path: self.cache.clone(),
            source,
        };
        if let Some(parent) = self.cache.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(cache_error)?;
        }
        // Initialise under a temporary name and rename, so that a crash never leaves a
        // half-made cache behind that later fetches would trust.
        let staging = self
            .cache
            .with_extension(format!("init-{}", std::process::id()));
        let _ = tokio::fs::remove_dir_all(&staging).await;
        let staging_text = staging.to_string_lossy().into_owned();
        self.run_in(
            None,
            "init",
            &["init", "--quiet", "--bare", &staging_text],
            None,
        )
        .await?;
        match tokio::fs::rename(&staging, &self.cache).await {
            Ok(()) => Ok(()),
            // Another task made it first: use theirs.
            Err(_) if self.cache.join("HEAD").is_file() => {
                let _ = tokio::fs::remove_dir_all(&staging).await;
                Ok(())
            }
            Err(source) => Err(cache_error(source)),
        }
    }

    /// The remote as passed to `git fetch`: local paths made absolute.
    fn remote_argument(&self) -> String {
        let looks_like_url =
            self.remote.contains("://") || (self.remote.contains('@') && self.remote.contains(':'));
        if looks_like_url {
            return self.remote.clone();
        }
        std::path::absolute(&self.remote)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| self.remote.clone())
    }

    async fn run(
        &self,
        op: &'static str,
        args: &[&str],
        stdin: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, GitError> {
        self.run_in(Some(&self.cache), op, args, stdin).await
    }

    async fn run_in(
        &self,
        git_dir: Option<&Path>,
        op: &'static str,
        args: &[&str],
        stdin: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, GitError> {
        let mut command = Command::new(&self.git);
        if let Some(dir) = git_dir {
            command.arg("--git-dir").arg(dir);
        }
        command
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "")
            .env("LC_ALL", "C")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        self.apply_auth(&mut command);

        let work = async {
            let mut child = command
                .spawn()
                .map_err(|source| GitError::Spawn { op, source })?;
            let mut child_stdin = child.stdin.take();
            let mut child_stdout = child.stdout.take();
            let mut child_stderr = child.stderr.take();
            let feed = async {
                if let (Some(pipe), Some(bytes)) = (child_stdin.as_mut(), stdin.as_ref()) {
                    // A broken pipe here shows up as the command's own failure below.
                    let _ = pipe.write_all(bytes).await;
                }
                drop(child_stdin.take());
            };
            let read_out = async {
                let mut buf = Vec::new();
                if let Some(pipe) = child_stdout.as_mut() {
                    let _ = pipe.read_to_end(&mut buf).await;
                }
                buf
            };
            let read_err = async {
                let mut buf = Vec::new();
                if let Some(pipe) = child_stderr.as_mut() {
                    let _ = pipe.read_to_end(&mut buf).await;
                }
                buf
            };
            let ((), out, err) = tokio::join!(feed, read_out, read_err);
            let status = child
                .wait()
                .await
                .map_err(|source| GitError::Spawn { op, source })?;
            Ok::<_, GitError>((status, out, err))
        };
        let (status, out, err) =
            tokio::time::timeout(self.timeout, work)
                .await
                .map_err(|_| GitError::Timeout {
                    op,
                    remote: self.display_remote(),
                    timeout: self.timeout,
                })??;
        if status.success() {
            return Ok(out);
        }
        let stderr = String::from_utf8_lossy(&err);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(GitError::Command {
            op,
            remote: self.display_remote(),
            status: status.to_string(),
            stderr: self.redact(&tail.join(" | ")),
        })
    }

    fn apply_auth(&self, command: &mut Command) {
        match &self.auth {
            GitAuth::None => {}
            GitAuth::Token { username, token } => {
                // Through GIT_CONFIG_* so that the token is never an argument (visible in
                // `ps`) nor part of a URL (logged by git itself on errors).
                use base64::Engine as _;
                let basic =
                    base64::engine::general_purpose::STANDARD.encode(format!("{username}:{token}"));
                command
                    .env("GIT_CONFIG_COUNT", "1")
                    .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                    .env(
                        "GIT_CONFIG_VALUE_0",
                        format!("Authorization: Basic {basic}"),
                    );
            }
            GitAuth::SshKey {
                key_file,
                known_hosts,
            } => {
                let mut ssh = format!(
                    "ssh -i {} -o IdentitiesOnly=yes -o BatchMode=yes",
                    shell_quote(&key_file.to_string_lossy())
                );
                if let Some(hosts) = known_hosts {
                    ssh.push_str(&format!(
                        " -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes",
                        shell_quote(&hosts.to_string_lossy())
                    ));
                }
                command.env("GIT_SSH_COMMAND", ssh);
            }
        }
    }

    /// Removes anything secret from a message: URL credentials and the token itself.
    fn redact(&self, text: &str) -> String {
        let mut text = text.replace(&self.remote, &self.display_remote());
        if let GitAuth::Token { token, .. } = &self.auth
            && !token.is_empty()
        {
            text = text.replace(token.as_str(), "<redacted>");
        }
        text
    }
}

/// `scheme://user:pass@host/...` becomes `scheme://host/...`; anything else is kept.
fn strip_credentials(remote: &str) -> String {
    let Some((scheme, rest)) = remote.split_once("://") else {
        return remote.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => remote.to_owned(),
    }
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Whether a path inside the tree is a declaration file: `.yaml`/`.yml`, and no component
/// (folder or file) starting with a dot.
pub fn is_declaration_path(path: &str) -> bool {
    let hidden = path.split('/').any(|part| part.starts_with('.'));
    let yaml = path.ends_with(".yaml") || path.ends_with(".yml");
    yaml && !hidden
}

/// Splits `git cat-file --batch` output into object id -> contents.
fn parse_cat_file_batch(mut output: &[u8]) -> Result<BTreeMap<&str, &[u8]>, GitError> {
    let protocol = |detail: String| GitError::Protocol {
        op: "cat-file",
        detail,
    };
    let mut objects = BTreeMap::new();
    while !output.is_empty() {
        let newline = output
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| protocol("header without a newline".into()))?;
        let header = std::str::from_utf8(&output[..newline])
            .map_err(|_| protocol("header is not text".into()))?;
        let mut parts = header.split(' ');
        let (Some(object), Some(kind), Some(size)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(protocol(format!("unexpected header {header:?}")));
        };
        if kind != "blob" {
            return Err(protocol(format!("{object} is a {kind}, not a blob")));
        }
        let size: usize = size
            .parse()
            .map_err(|_| protocol(format!("bad size in {header:?}")))?;
        let start = newline + 1;
        let end = start + size;
        if output.len() < end + 1 {
            return Err(protocol(format!("{object} is cut short")));
        }
        objects.insert(object, &output[start..end]);
        output = &output[end + 1..];
    }
    Ok(objects)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn strip_credentials_should_remove_user_and_password_from_urls() {
        assert_eq!(
            strip_credentials("https://bob:s3cret@git.example.org/plant.git"),
            "https://git.example.org/plant.git"
        );
        assert_eq!(
            strip_credentials("ssh://git@host:22/x.git"),
            "ssh://host:22/x.git"
        );
        assert_eq!(strip_credentials("/srv/repo"), "/srv/repo");
        assert_eq!(strip_credentials("git@host:x.git"), "git@host:x.git");
    }

    #[test]
    fn declaration_paths_should_skip_hidden_parts_and_other_extensions() {
        assert!(is_declaration_path("guests/web.yaml"));
        assert!(is_declaration_path("a.yml"));
        assert!(!is_declaration_path(".github/workflows/ci.yaml"));
        assert!(!is_declaration_path("guests/.draft.yaml"));
        assert!(!is_declaration_path("README.md"));
    }

    #[test]
    fn commit_ids_should_be_full_lower_case_hex() {
        assert!(CommitId::parse(&"a".repeat(40)).is_some());
        assert!(CommitId::parse(&"0".repeat(64)).is_some());
        assert!(CommitId::parse("abc123").is_none());
        assert!(CommitId::parse(&"A".repeat(40)).is_none());
    }

    #[test]
    fn cat_file_batch_should_split_objects_by_their_sizes() {
        let out = b"aaa blob 3\nx\ny\nbbb blob 0\n\n";
        let parsed = parse_cat_file_batch(out).unwrap();
        assert_eq!(parsed["aaa"], b"x\ny");
        assert_eq!(parsed["bbb"], b"");
        assert!(parse_cat_file_batch(b"aaa blob 9\nshort\n").is_err());
        assert!(parse_cat_file_batch(b"aaa missing\n").is_err());
    }

    #[test]
    fn token_auth_debug_should_not_show_the_token() {
        let auth = GitAuth::Token {
            username: "x-access-token".into(),
            token: "ghp_secret".into(),
        };
        assert!(!format!("{auth:?}").contains("ghp_secret"));
    }
}
