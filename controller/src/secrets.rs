//! Secrets that declarations may name, and where each may be sent.
//!
//! Whoever can commit to the declarations repository is untrusted: a spec may only *name* a
//! secret (`secretEnv`, `secretFile`, `passwordEnv`, `passwordFile`), and the server resolves
//! that name only when its own configuration lists it (`[[secrets]]` in `mycopod.toml`) with
//! the destination the spec would send it to (the scheme, host and port of a Proxmox
//! endpoint or a webhook URL). The server's own secrets (`MYCOPOD_*` variables, the files and
//! variables its configuration reads) can never be listed, so no commit can make the server
//! send them anywhere.
//!
//! [`Registry::check`] turns every refused reference of a desired state into a positioned
//! finding before anything is observed; [`Registry::resolve`] is the only way a secret value
//! is read, and it checks the same rules again at the moment of use.

use std::collections::BTreeMap;
use std::path::PathBuf;

use mycopod_specs::values::HttpUrl;
use mycopod_specs::{Code, DesiredState, Diagnostic, Severity};
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// One `[[secrets]]` entry of the configuration: a variable or a file, and where it may go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretEntry {
    /// The environment variable that holds it (what a spec names in `secretEnv` /
    /// `passwordEnv`).
    #[serde(default)]
    pub env: Option<String>,
    /// The file that holds it (what a spec names in `secretFile` / `passwordFile`).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Origins it may be sent to: `https://pve.lan:8006`, `https://hooks.example.com`.
    /// Only scheme, host and port count (a missing port is the scheme's default).
    pub destinations: Vec<String>,
}

/// A secret reference as a spec writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretRef<'a> {
    /// `secretEnv` / `passwordEnv`.
    Env(&'a str),
    /// `secretFile` / `passwordFile`.
    File(&'a str),
}

impl std::fmt::Display for SecretRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Env(var) => write!(f, "environment variable {var}"),
            SecretRef::File(path) => write!(f, "file {path}"),
        }
    }
}

/// Why a secret is not handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// A secret the server itself uses (`MYCOPOD_*`, the JWT key, the webhook secret, ...).
    #[error("{reference} is one of the server's own secrets; declarations can never name it")]
    ServerOwn {
        /// What the spec named.
        reference: String,
    },
    /// Not listed in `[[secrets]]`.
    #[error(
        "{reference} is not listed in the server's [[secrets]] configuration, so it is not \
         resolved and nothing is sent; an operator must list it with its destinations"
    )]
    NotListed {
        /// What the spec named.
        reference: String,
    },
    /// Listed, but not for this destination.
    #[error("{reference} may be sent only to {allowed}, not to {destination}; nothing is sent")]
    Destination {
        /// What the spec named.
        reference: String,
        /// Where the spec would send it.
        destination: String,
        /// Where it may go.
        allowed: String,
    },
    /// Listed and allowed, but the variable is unset or the file unreadable.
    #[error("{reference} is listed but cannot be read: {reason}")]
    Unreadable {
        /// What the spec named.
        reference: String,
        /// Why.
        reason: String,
    },
}

/// A configuration entry that cannot be accepted (start-up refuses it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[[secrets]] entry {index}: {message}")]
pub struct EntryError {
    /// 1-based position in the list.
    pub index: usize,
    /// What is wrong.
    pub message: String,
}

/// The origin (`scheme://host:port`) of a URL, with the scheme's default port filled in.
pub fn origin(url: &url::Url) -> Option<String> {
    let host = url.host_str()?;
    let port = url.port_or_known_default()?;
    Some(format!(
        "{}://{}:{port}",
        url.scheme(),
        host.to_ascii_lowercase()
    ))
}

#[derive(Debug, Clone)]
struct Listed {
    env: Option<String>,
    file: Option<PathBuf>,
    origins: Vec<String>,
}

/// The secrets declarations may name, built from the configuration and the environment.
#[derive(Clone, Default)]
pub struct Registry {
    listed: Vec<Listed>,
    /// Variables and files the server itself reads; never resolvable.
    own_env: Vec<String>,
    own_files: Vec<PathBuf>,
    env: BTreeMap<String, String>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the values.
        f.debug_struct("Registry")
            .field("listed", &self.listed)
            .finish_non_exhaustive()
    }
}

fn is_server_env(var: &str) -> bool {
    var.starts_with("MYCOPOD_")
}

impl Registry {
    /// The registry of `config`, values read from `env` (and files) when resolved.
    ///
    /// # Errors
    /// An entry with neither or both of `env` and `file`, without destinations, with a
    /// destination that is not an `http(s)://host[:port]` origin, or naming one of the
    /// server's own secrets.
    pub fn from_config(
        config: &Config,
        env: &BTreeMap<String, String>,
    ) -> Result<Registry, EntryError> {
        let mut own_env: Vec<String> = config.git_token_env.iter().cloned().collect();
        own_env.sort();
        let own_files: Vec<PathBuf> = config.jwt_secret_file.iter().cloned().collect();
        let mut listed = Vec::with_capacity(config.secrets.len());
        for (i, entry) in config.secrets.iter().enumerate() {
            let index = i + 1;
            let fail = |message: String| EntryError { index, message };
            match (&entry.env, &entry.file) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(fail("give exactly one of env or file".to_owned()));
                }
                (Some(var), None) => {
                    if var.is_empty() {
                        return Err(fail("env is empty".to_owned()));
                    }
                    if is_server_env(var) || own_env.contains(var) {
                        return Err(fail(format!(
                            "environment variable {var} holds the server's own configuration \
                             or secrets and can never be handed to declarations"
                        )));
                    }
                }
                (None, Some(path)) => {
                    if !path.is_absolute() {
                        return Err(fail(format!(
                            "file {} must be an absolute path",
                            path.display()
                        )));
                    }
                    if own_files.contains(path) {
                        return Err(fail(format!(
                            "file {} holds one of the server's own secrets and can never be \
                             handed to declarations",
                            path.display()
                        )));
                    }
                }
            }
            if entry.destinations.is_empty() {
                return Err(fail(
                    "destinations is empty: list where this secret may be sent".to_owned(),
                ));
            }
            let mut origins = Vec::with_capacity(entry.destinations.len());
            for d in &entry.destinations {
                let url = HttpUrl::parse(d).map_err(|e| fail(format!("destination: {e}")))?;
                let o = origin(url.url())
                    .ok_or_else(|| fail(format!("destination {d} has no host and port")))?;
                origins.push(o);
            }
            listed.push(Listed {
                env: entry.env.clone(),
                file: entry.file.clone(),
                origins,
            });
        }
        Ok(Registry {
            listed,
            own_env,
            own_files,
            env: env.clone(),
        })
    }

    /// A registry listing exactly `entries` (for tests and the demo), reading `env`.
    ///
    /// # Errors
    /// As [`Registry::from_config`].
    pub fn of(
        entries: Vec<SecretEntry>,
        env: &BTreeMap<String, String>,
    ) -> Result<Registry, EntryError> {
        let config = Config {
            secrets: entries,
            ..Config::default()
        };
        Registry::from_config(&config, env)
    }

    /// Whether `reference` may be sent to `destination`; the value is not read.
    ///
    /// # Errors
    /// [`SecretError::ServerOwn`], [`SecretError::NotListed`], [`SecretError::Destination`].
    pub fn permit(
        &self,
        reference: SecretRef<'_>,
        destination: &url::Url,
    ) -> Result<(), SecretError> {
        self.find(reference, destination).map(|_| ())
    }

    fn find(
        &self,
        reference: SecretRef<'_>,
        destination: &url::Url,
    ) -> Result<&Listed, SecretError> {
        let text = reference.to_string();
        let own = match reference {
            SecretRef::Env(var) => is_server_env(var) || self.own_env.iter().any(|v| v == var),
            SecretRef::File(path) => self
                .own_files
                .iter()
                .any(|p| p == std::path::Path::new(path)),
        };
        if own {
            return Err(SecretError::ServerOwn { reference: text });
        }
        let candidates: Vec<&Listed> = self
            .listed
            .iter()
            .filter(|l| match reference {
                SecretRef::Env(var) => l.env.as_deref() == Some(var),
                SecretRef::File(path) => l.file.as_deref() == Some(std::path::Path::new(path)),
            })
            .collect();
        if candidates.is_empty() {
            return Err(SecretError::NotListed { reference: text });
        }
        let target = origin(destination).unwrap_or_else(|| destination.to_string());
        if let Some(hit) = candidates.iter().find(|l| l.origins.contains(&target)) {
            return Ok(hit);
        }
        let mut allowed: Vec<&str> = candidates
            .iter()
            .flat_map(|l| l.origins.iter().map(String::as_str))
            .collect();
        allowed.sort_unstable();
        allowed.dedup();
        Err(SecretError::Destination {
            reference: text,
            destination: target,
            allowed: allowed.join(", "),
        })
    }

    /// The value of `reference`, if it may be sent to `destination`. A trailing newline (from
    /// `echo` or an editor) is dropped.
    ///
    /// # Errors
    /// As [`Registry::permit`], and [`SecretError::Unreadable`].
    pub fn resolve(
        &self,
        reference: SecretRef<'_>,
        destination: &url::Url,
    ) -> Result<String, SecretError> {
        let listed = self.find(reference, destination)?;
        let unreadable = |reason: String| SecretError::Unreadable {
            reference: reference.to_string(),
            reason,
        };
        if let Some(var) = &listed.env {
            return self
                .env
                .get(var)
                .map(|v| v.trim_end_matches(['\n', '\r']).to_owned())
                .ok_or_else(|| unreadable("the variable is not set".to_owned()));
        }
        if let Some(path) = &listed.file {
            return read_secret_file(path).map_err(unreadable);
        }
        Err(unreadable(
            "the entry names neither a variable nor a file".to_owned(),
        ))
    }

    /// Every secret reference in `desired` that this registry refuses, as findings at the
    /// field that names it. Nothing is read.
    pub fn check(&self, desired: &DesiredState) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        let mut refuse = |source: &mycopod_specs::Source,
                          path: &str,
                          reference: SecretRef<'_>,
                          destination: Option<&url::Url>| {
            let result = match destination {
                Some(d) => self.permit(reference, d),
                None => Err(SecretError::NotListed {
                    reference: reference.to_string(),
                }),
            };
            if let Err(e) = result {
                let code = match e {
                    SecretError::Destination { .. } => Code::SecretDestination,
                    _ => Code::SecretNotAllowed,
                };
                out.push(source.diagnostic(path, Severity::Error, code, e.to_string()));
            }
        };
        for c in &desired.clusters {
            let a = &c.spec.auth;
            let d = Some(c.spec.endpoint.url());
            for (path, r) in cluster_refs(a) {
                refuse(&c.source, path, r, d);
            }
        }
        for g in &desired.guests {
            let endpoint = desired
                .clusters
                .iter()
                .find(|c| c.name().as_str() == g.spec.cluster.as_str())
                .map(|c| c.spec.endpoint.url());
            if let Some(var) = &g.spec.password_env {
                refuse(&g.source, "spec.passwordEnv", SecretRef::Env(var), endpoint);
            }
            if let Some(var) = g
                .spec
                .cloud_init
                .as_ref()
                .and_then(|c| c.password_env.as_ref())
            {
                refuse(
                    &g.source,
                    "spec.cloudInit.passwordEnv",
                    SecretRef::Env(var),
                    endpoint,
                );
            }
        }
        for ch in &desired.channels {
            let w = &ch.spec.webhook;
            let d = Some(w.url.url());
            if let Some(var) = &w.secret_env {
                refuse(&ch.source, "spec.webhook.secretEnv", SecretRef::Env(var), d);
            }
            if let Some(path) = &w.secret_file {
                refuse(
                    &ch.source,
                    "spec.webhook.secretFile",
                    SecretRef::File(path),
                    d,
                );
            }
        }
        out
    }
}

/// Whether `desired` names any secret at all.
pub fn names_secrets(desired: &DesiredState) -> bool {
    desired
        .clusters
        .iter()
        .any(|c| !cluster_refs(&c.spec.auth).is_empty())
        || desired.guests.iter().any(|g| {
            g.spec.password_env.is_some()
                || g.spec
                    .cloud_init
                    .as_ref()
                    .is_some_and(|c| c.password_env.is_some())
        })
        || desired
            .channels
            .iter()
            .any(|c| c.spec.webhook.secret_env.is_some() || c.spec.webhook.secret_file.is_some())
}

/// The references a cluster's `auth` makes, with the field naming each.
pub fn cluster_refs(a: &mycopod_specs::kinds::ProxmoxAuth) -> Vec<(&'static str, SecretRef<'_>)> {
    let mut refs = Vec::new();
    if let Some(v) = &a.secret_env {
        refs.push(("spec.auth.secretEnv", SecretRef::Env(v.as_str())));
    }
    if let Some(v) = &a.secret_file {
        refs.push(("spec.auth.secretFile", SecretRef::File(v.as_str())));
    }
    if let Some(v) = &a.password_env {
        refs.push(("spec.auth.passwordEnv", SecretRef::Env(v.as_str())));
    }
    if let Some(v) = &a.password_file {
        refs.push(("spec.auth.passwordFile", SecretRef::File(v.as_str())));
    }
    refs
}

/// Reads a secret file of at most 64 KiB (a secret is short; anything longer is a mistake,
/// or `/dev/zero`).
fn read_secret_file(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    const MAX: u64 = 64 * 1024;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut text = String::new();
    file.take(MAX + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX {
        return Err(format!("longer than {MAX} bytes"));
    }
    Ok(text.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn env() -> BTreeMap<String, String> {
        [
            ("PVE_TOKEN".to_owned(), "s3cret\n".to_owned()),
            (
                "MYCOPOD_JWT_SECRET".to_owned(),
                "the-signing-key".to_owned(),
            ),
        ]
        .into_iter()
        .collect()
    }

    fn entry(var: &str, to: &[&str]) -> SecretEntry {
        SecretEntry {
            env: Some(var.to_owned()),
            file: None,
            destinations: to.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn url(s: &str) -> url::Url {
        url::Url::parse(s).unwrap()
    }

    #[test]
    fn a_listed_secret_should_resolve_only_toward_its_destination() {
        let r = Registry::of(vec![entry("PVE_TOKEN", &["https://pve.lan:8006"])], &env()).unwrap();
        assert_eq!(
            r.resolve(
                SecretRef::Env("PVE_TOKEN"),
                &url("https://PVE.lan:8006/api2/json")
            )
            .unwrap(),
            "s3cret"
        );
        let e = r
            .resolve(
                SecretRef::Env("PVE_TOKEN"),
                &url("http://attacker.example:8006"),
            )
            .unwrap_err();
        assert!(matches!(e, SecretError::Destination { .. }), "{e}");
        // Same host, another port: another origin.
        assert!(
            r.resolve(SecretRef::Env("PVE_TOKEN"), &url("https://pve.lan:9999"))
                .is_err()
        );
    }

    #[test]
    fn the_default_port_should_count_as_the_same_origin() {
        let r = Registry::of(vec![entry("PVE_TOKEN", &["https://hooks.lan"])], &env()).unwrap();
        assert!(
            r.permit(SecretRef::Env("PVE_TOKEN"), &url("https://hooks.lan:443/x"))
                .is_ok()
        );
        assert!(
            r.permit(SecretRef::Env("PVE_TOKEN"), &url("http://hooks.lan/x"))
                .is_err()
        );
    }

    #[test]
    fn an_unlisted_variable_or_file_should_never_be_read() {
        let r = Registry::of(vec![], &env()).unwrap();
        let e = r
            .resolve(SecretRef::Env("PVE_TOKEN"), &url("https://pve.lan:8006"))
            .unwrap_err();
        assert!(matches!(e, SecretError::NotListed { .. }), "{e}");
        let e = r
            .resolve(
                SecretRef::File("/etc/hostname"),
                &url("https://pve.lan:8006"),
            )
            .unwrap_err();
        assert!(matches!(e, SecretError::NotListed { .. }), "{e}");
    }

    #[test]
    fn the_servers_own_secrets_should_never_be_nameable() {
        // Attack: a commit names the JWT signing key as a Proxmox token secret.
        let r = Registry::of(vec![], &env()).unwrap();
        let e = r
            .resolve(
                SecretRef::Env("MYCOPOD_JWT_SECRET"),
                &url("http://attacker:1"),
            )
            .unwrap_err();
        assert!(matches!(e, SecretError::ServerOwn { .. }), "{e}");
        // Nor can an operator list one by mistake.
        let listed = Registry::of(vec![entry("MYCOPOD_JWT_SECRET", &["http://x:1"])], &env());
        assert!(listed.unwrap_err().message.contains("server's own"));
        let config = Config {
            jwt_secret_file: Some(PathBuf::from("/etc/mycopod/jwt")),
            secrets: vec![SecretEntry {
                env: None,
                file: Some(PathBuf::from("/etc/mycopod/jwt")),
                destinations: vec!["https://pve.lan:8006".into()],
            }],
            ..Config::default()
        };
        assert!(Registry::from_config(&config, &env()).is_err());
    }

    #[test]
    fn a_bad_entry_should_be_refused_with_its_position() {
        let e = Registry::of(
            vec![entry("A", &["https://a:1"]), entry("B", &["ftp://b"])],
            &env(),
        )
        .unwrap_err();
        assert_eq!(e.index, 2, "{e}");
        let e = Registry::of(vec![entry("A", &[])], &env()).unwrap_err();
        assert!(e.message.contains("destinations"), "{e}");
    }

    #[test]
    fn the_secrets_list_should_be_read_from_the_configuration_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mycopod.toml");
        std::fs::write(
            &file,
            "[[secrets]]\nenv = \"PVE_TOKEN\"\ndestinations = [\"https://pve.lan:8006\"]\n\n\
             [[secrets]]\nfile = \"/etc/mycopod/hook.secret\"\ndestinations = [\"https://hooks.lan\"]\n",
        )
        .unwrap();
        let config = crate::config::load(&crate::config::Sources {
            file: Some(file),
            ..crate::config::Sources::default()
        })
        .unwrap();
        assert_eq!(config.secrets.len(), 2);
        let r = Registry::from_config(&config, &env()).unwrap();
        assert!(
            r.permit(
                SecretRef::File("/etc/mycopod/hook.secret"),
                &url("https://hooks.lan/x")
            )
            .is_ok()
        );
        assert!(
            r.permit(SecretRef::Env("PVE_TOKEN"), &url("https://hooks.lan"))
                .is_err()
        );
    }

    #[test]
    fn a_huge_secret_file_should_be_refused_not_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; 70 * 1024]).unwrap();
        let r = Registry::of(
            vec![SecretEntry {
                env: None,
                file: Some(big.clone()),
                destinations: vec!["https://pve.lan:8006".into()],
            }],
            &env(),
        )
        .unwrap();
        let e = r
            .resolve(
                SecretRef::File(big.to_str().unwrap()),
                &url("https://pve.lan:8006"),
            )
            .unwrap_err();
        assert!(e.to_string().contains("longer than"), "{e}");
    }
}
