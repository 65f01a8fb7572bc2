//! Configuration: `mycopod.toml`, then `MYCOPOD_*` environment variables, then flags, each
//! overriding the one before.
//!
//! Loading is the only I/O here (reading the file and the environment it is given); the
//! result is a plain value passed to whatever needs it. There is no global configuration.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use mycopod_specs::values::Duration;
use serde::{Deserialize, Serialize};

/// The environment variable that names the configuration file.
pub const CONFIG_ENV: &str = "MYCOPOD_CONFIG";

/// `MYCOPOD_*` variables that are not configuration keys.
const NOT_CONFIG: [&str; 3] = ["CONFIG", "TEST_DATABASE_URL", "LOG"];

/// Sections whose keys are reached from the environment as `MYCOPOD_<SECTION>_<KEY>`.
const SECTIONS: [&str; 4] = ["LLM", "GITHUB", "TELEMETRY", "LIMITS"];

/// Everything mycopod can be configured with. Every field has a safe default. Its `Debug`
/// output hides the secrets.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `sqlite://PATH` (default `sqlite://mycopod.db`) or `postgres://...`.
    /// Env: `MYCOPOD_DATABASE_URL`.
    pub database_url: String,
    /// The declarations repository: a local path or a Git URL. Env: `MYCOPOD_REPO`.
    pub repo: Option<String>,
    /// The branch, tag or commit to follow (default `main`). Env: `MYCOPOD_REF`.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// A folder inside the repository holding the declarations (default: the whole tree).
    /// Env: `MYCOPOD_PATH`.
    pub path: String,
    /// Environment variable holding an HTTPS token for the repository.
    /// Env: `MYCOPOD_GIT_TOKEN_ENV`.
    pub git_token_env: Option<String>,
    /// Where fetched repositories are cached (default `.mycopod/git`). Env: `MYCOPOD_CACHE_DIR`.
    pub cache_dir: PathBuf,
    /// The HTTP API's address (default `127.0.0.1:8080`). Env: `MYCOPOD_LISTEN`.
    pub listen: SocketAddr,
    /// The JWT signing key, at least 32 bytes. Env: `MYCOPOD_JWT_SECRET`.
    pub jwt_secret: Option<String>,
    /// A file holding the JWT signing key. Env: `MYCOPOD_JWT_SECRET_FILE`.
    pub jwt_secret_file: Option<PathBuf>,
    /// A bearer token `GET /metrics` then demands (`Authorization: Bearer TOKEN`); unset, the
    /// metrics are open to whoever reaches the listener. Env: `MYCOPOD_METRICS_TOKEN`.
    pub metrics_token: Option<String>,
    /// How often the repository is fetched (default `60s`). Env: `MYCOPOD_POLL_INTERVAL`.
    pub poll_interval: Duration,
    /// How often the world is observed for drift without a new commit (default `10m`).
    /// Env: `MYCOPOD_DRIFT_INTERVAL`.
    pub drift_interval: Duration,
    /// The longest a declared guest goes without being read in full (configuration and
    /// pending changes); between full reads one cluster listing shows what changed
    /// (default `10m`). Env: `MYCOPOD_FULL_READ_INTERVAL`.
    pub full_read_interval: Duration,
    /// Whether resources removed from Git are deleted (only managed ones; default off).
    /// Env: `MYCOPOD_PRUNE`.
    pub prune: bool,
    /// Whether drift is corrected without approval where policies allow (default off).
    /// Env: `MYCOPOD_SELF_HEAL`.
    pub self_heal: bool,
    /// The OpenAI-compatible model for `Declaration`s.
    pub llm: LlmConfig,
    /// GitHub commit statuses and webhooks.
    pub github: GitHubConfig,
    /// Readings and alerts.
    pub telemetry: TelemetryConfig,
    /// What one load of the declarations may read (`[limits]`: `file_bytes`, `total_bytes`,
    /// `documents_per_file`, `keys_per_mapping`). Env: `MYCOPOD_LIMITS_FILE_BYTES`, ...
    pub limits: mycopod_specs::Limits,
    /// The secrets declarations may name, each with the destinations it may be sent to
    /// (`[[secrets]]`; only in the file). Anything not listed is never resolved.
    pub secrets: Vec<crate::secrets::SecretEntry>,
}

/// `[llm]`: any OpenAI-compatible endpoint (OpenAI, Ollama, vLLM, llama.cpp's server).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    /// e.g. `http://127.0.0.1:11434/v1`. Env: `MYCOPOD_LLM_BASE_URL`.
    pub base_url: Option<String>,
    /// e.g. `qwen2.5:7b`. Env: `MYCOPOD_LLM_MODEL`.
    pub model: Option<String>,
    /// The API key, if the endpoint wants one. Env: `MYCOPOD_LLM_API_KEY`.
    pub api_key: Option<String>,
    /// Per-request limit (default `60s`). Env: `MYCOPOD_LLM_TIMEOUT`.
    pub timeout: Duration,
}

/// `[github]`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GitHubConfig {
    /// A token allowed to post commit statuses. Env: `MYCOPOD_GITHUB_TOKEN`.
    pub token: Option<String>,
    /// The secret GitHub signs webhook deliveries with. Env: `MYCOPOD_GITHUB_WEBHOOK_SECRET`.
    pub webhook_secret: Option<String>,
    /// The API base (default `https://api.github.com`). Env: `MYCOPOD_GITHUB_API_URL`.
    pub api_url: String,
}

/// `[telemetry]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Readings older than this are deleted (default `30d`). Env: `MYCOPOD_TELEMETRY_RETENTION`.
    pub retention: Duration,
    /// How far in the future a pushed reading's time may be (a gateway's clock skew; default
    /// `30s`); later items are refused one by one. Env: `MYCOPOD_TELEMETRY_INGEST_FUTURE_SKEW`.
    pub ingest_future_skew: Duration,
    /// MQTT broker alert events (and, if enabled, readings) are published to, as
    /// `mqtt://HOST[:PORT]`; unset: no MQTT. Env: `MYCOPOD_TELEMETRY_MQTT_URL`.
    pub mqtt_url: Option<String>,
    /// The first level of every topic (default `mycopod`): alerts go to
    /// `PREFIX/alerts/RULE/DEVICE`, readings to `PREFIX/readings/DEVICE`.
    /// Env: `MYCOPOD_TELEMETRY_MQTT_TOPIC_PREFIX`.
    pub mqtt_topic_prefix: String,
    /// Whether every poll's readings are published too (default off).
    /// Env: `MYCOPOD_TELEMETRY_MQTT_PUBLISH_READINGS`.
    pub mqtt_publish_readings: bool,
}

/// How a secret shows in `Debug` output: whether it is set, never what it is.
fn secret(value: &Option<String>) -> &'static str {
    if value.is_some() { "<set>" } else { "<unset>" }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field(
                "database_url",
                &crate::store::redact_url(&self.database_url),
            )
            .field("repo", &self.repo)
            .field("git_ref", &self.git_ref)
            .field("path", &self.path)
            .field("git_token_env", &self.git_token_env)
            .field("cache_dir", &self.cache_dir)
            .field("listen", &self.listen)
            .field("jwt_secret", &secret(&self.jwt_secret))
            .field("jwt_secret_file", &self.jwt_secret_file)
            .field("metrics_token", &secret(&self.metrics_token))
            .field("poll_interval", &self.poll_interval)
            .field("drift_interval", &self.drift_interval)
            .field("full_read_interval", &self.full_read_interval)
            .field("prune", &self.prune)
            .field("self_heal", &self.self_heal)
            .field("llm", &self.llm)
            .field("github", &self.github)
            .field("telemetry", &self.telemetry)
            .field("limits", &self.limits)
            .field("secrets", &self.secrets)
            .finish()
    }
}

impl std::fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &secret(&self.api_key))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl std::fmt::Debug for GitHubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubConfig")
            .field("token", &secret(&self.token))
            .field("webhook_secret", &secret(&self.webhook_secret))
            .field("api_url", &self.api_url)
            .finish()
    }
}

fn secs(n: u64) -> Duration {
    Duration::from(std::time::Duration::from_secs(n))
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: "sqlite://mycopod.db".to_owned(),
            repo: None,
            git_ref: "main".to_owned(),
            path: String::new(),
            git_token_env: None,
            cache_dir: PathBuf::from(".mycopod/git"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            jwt_secret: None,
            jwt_secret_file: None,
            metrics_token: None,
            poll_interval: secs(60),
            drift_interval: secs(600),
            full_read_interval: secs(600),
            prune: false,
            self_heal: false,
            llm: LlmConfig::default(),
            github: GitHubConfig::default(),
            telemetry: TelemetryConfig::default(),
            limits: mycopod_specs::Limits::default(),
            secrets: Vec::new(),
        }
    }
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            base_url: None,
            model: None,
            api_key: None,
            timeout: secs(60),
        }
    }
}

impl Default for GitHubConfig {
    fn default() -> Self {
        GitHubConfig {
            token: None,
            webhook_secret: None,
            api_url: "https://api.github.com".to_owned(),
        }
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            retention: secs(30 * 86_400),
            ingest_future_skew: secs(30),
            mqtt_url: None,
            mqtt_topic_prefix: "mycopod".to_owned(),
            mqtt_publish_readings: false,
        }
    }
}

/// Why the configuration could not be loaded. The message names the file or variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file was named but cannot be read.
    #[error("read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A value is malformed or a key unknown.
    #[error("invalid configuration from {origin}: {key}: {message}")]
    Invalid {
        /// The file, environment variable or flag the value came from.
        origin: String,
        /// The key (`poll_interval`, `llm.timeout`).
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Where the configuration comes from, for [`load`].
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The file from `--config`; without it, `MYCOPOD_CONFIG`, then `mycopod.toml` in the
    /// working directory if present.
    pub file: Option<PathBuf>,
    /// The environment (`std::env::vars()` in the binary; a map in tests).
    pub env: BTreeMap<String, String>,
    /// Values from flags, as a TOML-shaped JSON object of only the flags given.
    pub flags: serde_json::Map<String, serde_json::Value>,
}

impl Sources {
    /// The process environment and no flags.
    pub fn from_process_env() -> Sources {
        Sources {
            file: None,
            env: std::env::vars().collect(),
            flags: serde_json::Map::new(),
        }
    }
}

/// Builds the configuration: defaults, then the file, then the environment, then flags.
pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));

    let named = sources
        .file
        .clone()
        .or_else(|| sources.env.get(CONFIG_ENV).map(PathBuf::from));
    match named {
        Some(path) => {
            // A file that was asked for must exist: silently running on defaults would hide
            // a typo in a service unit.
            std::fs::File::open(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            figment = figment.merge(Toml::file(&path));
        }
        None => {
            let default = Path::new("mycopod.toml");
            if default.is_file() {
                figment = figment.merge(Toml::file(default));
            }
        }
    }

    let known = known_keys();
    let from_env = env_values(&sources.env, &known);
    figment = figment.merge(env_provider(&from_env));
    figment = figment.merge(Serialized::defaults(&sources.flags));
    figment.extract().map_err(|e| {
        // Name where the bad value came from: the variable, the flag, or the file.
        let key = e.path.join(".");
        let origin = if sources.flags.contains_key(&key) {
            format!("flag --{}", key.replace('_', "-"))
        } else if let Some((var, _)) = from_env.iter().find(|(_, (k, _))| *k == key) {
            format!("environment variable {var}")
        } else {
            e.metadata
                .as_ref()
                .and_then(|m| m.source.as_ref())
                .map(|s| format!("{s}"))
                .unwrap_or_else(|| "configuration".to_owned())
        };
        ConfigError::Invalid {
            origin,
            key,
            message: e.kind.to_string(),
        }
    })
}

/// Every key `Config` has, as `poll_interval` or `llm.base_url`.
fn known_keys() -> std::collections::BTreeSet<String> {
    let mut keys = std::collections::BTreeSet::new();
    if let Ok(serde_json::Value::Object(root)) = serde_json::to_value(Config::default()) {
        for (key, value) in root {
            match value {
                serde_json::Value::Object(section) => {
                    for field in section.keys() {
                        keys.insert(format!("{key}.{field}"));
                    }
                }
                _ => {
                    keys.insert(key);
                }
            }
        }
    }
    keys
}

/// The `MYCOPOD_*` variables that name configuration keys, as variable -> (key, value).
/// Other `MYCOPOD_*` variables (secrets named by specs, test settings) are not configuration
/// and are left alone.
fn env_values(
    env: &BTreeMap<String, String>,
    known: &std::collections::BTreeSet<String>,
) -> BTreeMap<String, (String, String)> {
    env.iter()
        .filter_map(|(var, value)| {
            let key = env_key(var)?;
            known
                .contains(&key)
                .then(|| (var.clone(), (key, value.clone())))
        })
        .collect()
}

/// `MYCOPOD_LLM_BASE_URL` → `llm.base_url`, `MYCOPOD_POLL_INTERVAL` → `poll_interval`.
fn env_key(var: &str) -> Option<String> {
    let rest = var.strip_prefix("MYCOPOD_")?;
    if rest.is_empty() || NOT_CONFIG.contains(&rest) {
        return None;
    }
    for section in SECTIONS {
        if let Some(key) = rest.strip_prefix(section).and_then(|k| k.strip_prefix('_')) {
            return Some(format!(
                "{}.{}",
                section.to_ascii_lowercase(),
                key.to_ascii_lowercase()
            ));
        }
    }
    Some(rest.to_ascii_lowercase())
}

fn env_provider(values: &BTreeMap<String, (String, String)>) -> Serialized<serde_json::Value> {
    let mut root = serde_json::Map::new();
    for (key, value) in values.values() {
        let key = key.clone();
        let value = env_value(&key, value);
        match key.split_once('.') {
            Some((section, field)) => {
                let entry = root
                    .entry(section.to_owned())
                    .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
                if let serde_json::Value::Object(map) = entry {
                    map.insert(field.to_owned(), value);
                }
            }
            None => {
                root.insert(key, value);
            }
        }
    }
    Serialized::defaults(serde_json::Value::Object(root))
}

/// Environment values are text; booleans and the `[limits]` counts are the non-text keys.
fn env_value(key: &str, value: &str) -> serde_json::Value {
    if key.starts_with("limits.")
        && let Ok(n) = value.trim().parse::<u64>()
    {
        return serde_json::Value::from(n);
    }
    match (key, value.to_ascii_lowercase().as_str()) {
        (
            "prune" | "self_heal" | "telemetry.mqtt_publish_readings",
            "true" | "1" | "yes" | "on",
        ) => serde_json::Value::Bool(true),
        (
            "prune" | "self_heal" | "telemetry.mqtt_publish_readings",
            "false" | "0" | "no" | "off" | "",
        ) => serde_json::Value::Bool(false),
        _ => serde_json::Value::String(value.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn debug_output_should_never_show_secrets() {
        let config = load(&Sources {
            env: env(&[
                ("MYCOPOD_JWT_SECRET", "jwt-very-secret-value"),
                ("MYCOPOD_LLM_API_KEY", "sk-secret"),
                ("MYCOPOD_GITHUB_TOKEN", "ghp_secret"),
                ("MYCOPOD_GITHUB_WEBHOOK_SECRET", "hook-secret"),
                ("MYCOPOD_DATABASE_URL", "postgres://app:dbpass@127.0.0.1/db"),
            ]),
            ..Sources::default()
        })
        .unwrap();
        let shown = format!("{config:?}");
        for secret in [
            "jwt-very-secret-value",
            "sk-secret",
            "ghp_secret",
            "hook-secret",
            "dbpass",
        ] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        assert!(shown.contains("<set>"), "{shown}");
    }

    #[test]
    fn defaults_should_be_safe() {
        let config = load(&Sources::default()).unwrap();
        assert_eq!(config.database_url, "sqlite://mycopod.db");
        assert_eq!(config.git_ref, "main");
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert!(!config.prune);
        assert!(!config.self_heal);
        assert_eq!(config.poll_interval.as_std().as_secs(), 60);
        assert_eq!(config.telemetry.retention.as_std().as_secs(), 30 * 86_400);
    }

    #[test]
    fn env_should_override_the_file_and_flags_should_override_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mycopod.toml");
        std::fs::write(
            &file,
            "repo = \"/srv/gitops\"\nref = \"prod\"\npoll_interval = \"30s\"\n\n[llm]\nmodel = \"from-file\"\n",
        )
        .unwrap();
        let mut flags = serde_json::Map::new();
        flags.insert("ref".into(), "hotfix".into());
        let sources = Sources {
            file: Some(file),
            env: env(&[
                ("MYCOPOD_REF", "staging"),
                ("MYCOPOD_POLL_INTERVAL", "5s"),
                ("MYCOPOD_LLM_MODEL", "qwen2.5:7b"),
                ("MYCOPOD_PRUNE", "true"),
                ("MYCOPOD_TEST_DATABASE_URL", "postgres://ignored"),
                ("HOME", "/root"),
            ]),
            flags,
        };
        let config = load(&sources).unwrap();
        assert_eq!(config.repo.as_deref(), Some("/srv/gitops"));
        assert_eq!(config.git_ref, "hotfix");
        assert_eq!(config.poll_interval.as_std().as_secs(), 5);
        assert_eq!(config.llm.model.as_deref(), Some("qwen2.5:7b"));
        assert!(config.prune);
    }

    #[test]
    fn limits_should_come_from_the_file_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mycopod.toml");
        std::fs::write(
            &file,
            "[limits]
file_bytes = 2048
keys_per_mapping = 50
",
        )
        .unwrap();
        let sources = Sources {
            file: Some(file),
            env: env(&[("MYCOPOD_LIMITS_KEYS_PER_MAPPING", "70")]),
            flags: serde_json::Map::new(),
        };
        let config = load(&sources).unwrap();
        assert_eq!(config.limits.file_bytes, 2048);
        assert_eq!(config.limits.keys_per_mapping, 70);
        assert_eq!(
            config.limits.documents_per_file,
            mycopod_specs::Limits::default().documents_per_file
        );
        let bad = Sources {
            file: None,
            env: env(&[("MYCOPOD_LIMITS_FILE_BYTES", "1MiB")]),
            flags: serde_json::Map::new(),
        };
        let err = load(&bad).unwrap_err().to_string();
        assert!(err.contains("MYCOPOD_LIMITS_FILE_BYTES"), "{err}");
    }

    #[test]
    fn a_bad_value_should_name_the_key_and_where_it_came_from() {
        let sources = Sources {
            env: env(&[("MYCOPOD_POLL_INTERVAL", "often")]),
            ..Sources::default()
        };
        let err = load(&sources).unwrap_err().to_string();
        assert!(
            err.contains("environment variable MYCOPOD_POLL_INTERVAL"),
            "{err}"
        );
        assert!(err.contains("poll_interval"), "{err}");
        assert!(err.contains("often"), "{err}");
    }

    #[test]
    fn other_mycopod_variables_should_not_be_taken_for_configuration() {
        // Specs name secrets in environment variables; those are not configuration keys.
        let sources = Sources {
            env: env(&[
                ("MYCOPOD_PVE_TOKEN", "s3cret"),
                ("MYCOPOD_LISTEN", "127.0.0.1:9999"),
            ]),
            ..Sources::default()
        };
        let config = load(&sources).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:9999");
    }

    #[test]
    fn an_unknown_key_in_the_file_should_be_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mycopod.toml");
        std::fs::write(&file, "pol_interval = \"30s\"\n").unwrap();
        let err = load(&Sources {
            file: Some(file),
            ..Sources::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("pol_interval"), "{err}");
    }

    #[test]
    fn a_named_file_that_does_not_exist_should_be_an_error() {
        let err = load(&Sources {
            env: env(&[("MYCOPOD_CONFIG", "/nonexistent/mycopod.toml")]),
            ..Sources::default()
        })
        .unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    }

    #[test]
    fn mqtt_settings_should_come_from_the_telemetry_variables() {
        let config = load(&Sources {
            env: env(&[
                ("MYCOPOD_TELEMETRY_MQTT_URL", "mqtt://127.0.0.1:1883"),
                ("MYCOPOD_TELEMETRY_MQTT_TOPIC_PREFIX", "plant"),
                ("MYCOPOD_TELEMETRY_MQTT_PUBLISH_READINGS", "yes"),
                ("MYCOPOD_TELEMETRY_RETENTION", "7d"),
            ]),
            ..Sources::default()
        })
        .unwrap();
        let t = &config.telemetry;
        assert_eq!(t.mqtt_url.as_deref(), Some("mqtt://127.0.0.1:1883"));
        assert_eq!(t.mqtt_topic_prefix, "plant");
        assert!(t.mqtt_publish_readings);
        assert_eq!(t.retention.as_std().as_secs(), 7 * 86_400);
        let defaults = load(&Sources::default()).unwrap().telemetry;
        assert_eq!(defaults.mqtt_url, None);
        assert_eq!(defaults.mqtt_topic_prefix, "mycopod");
        assert!(!defaults.mqtt_publish_readings);
    }

    #[test]
    fn env_keys_should_map_sections_and_skip_non_config_variables() {
        assert_eq!(
            env_key("MYCOPOD_LLM_BASE_URL").as_deref(),
            Some("llm.base_url")
        );
        assert_eq!(
            env_key("MYCOPOD_GITHUB_WEBHOOK_SECRET").as_deref(),
            Some("github.webhook_secret")
        );
        assert_eq!(
            env_key("MYCOPOD_DATABASE_URL").as_deref(),
            Some("database_url")
        );
        assert_eq!(env_key("MYCOPOD_CONFIG"), None);
        assert_eq!(env_key("MYCOPOD_TEST_DATABASE_URL"), None);
        assert_eq!(env_key("PATH"), None);
    }
}
