//! `Declaration` documents in the reconcile loop: each one is translated when its text or the
//! model changes, through a cache keyed by (text hash, model, prompt version) in the database,
//! so the same commit always plans the same way. The generated documents join the commit's
//! files under `.mycopod/generated/NAME.yaml` (a path Git never serves, so nothing in the
//! repository collides with it), carrying the label `mycopod/declaration: NAME`, which makes
//! every action on them need at least one approval whatever the policies say.
//!
//! Without a model configured, Declarations stay "not translated" and nothing fails. A model
//! that fails or answers garbage leaves its Declaration "failed to translate" with the reason;
//! the rest of the commit is reconciled as usual.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use mycopod_specs::{DesiredState, Loaded};

use super::{ChatModel, PROMPT_VERSION, Request, TranslateError, cache_key, translate};
use crate::store::{CachedTranslation, Store};

/// What became of one Declaration in this reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expansion {
    /// No model is configured.
    NoModel,
    /// Translated now, or taken from the cache.
    Translated {
        /// The model that translated it (for a cached translation, the one that did then).
        model: String,
        /// Whether the translation came from the cache.
        cached: bool,
        /// The generated file's path among the commit's files.
        file: String,
    },
    /// The model failed or its answers did not validate.
    Failed {
        /// Why.
        reason: String,
    },
}

/// The path the generated documents of declaration `name` get among the commit's files.
pub fn generated_path(name: &str) -> String {
    format!(".mycopod/generated/{name}.yaml")
}

/// Translates (or takes from the cache) every Declaration of `loaded` and returns the files
/// with the generated ones added, and what became of each Declaration by name.
pub async fn expand<M: ChatModel>(
    store: &Store,
    model: Option<&M>,
    loaded: &Loaded,
    now: DateTime<Utc>,
) -> (Loaded, BTreeMap<String, Expansion>) {
    let declared = DesiredState::from_loaded(loaded).declarations;
    let mut out = loaded.clone();
    let mut states = BTreeMap::new();
    for declaration in declared {
        let name = declaration.name().as_str().to_owned();
        let Some(model) = model else {
            states.insert(name, Expansion::NoModel);
            continue;
        };
        let key = cache_key(&declaration.spec.text, model.model_name(), PROMPT_VERSION);
        let version = i64::from(key.prompt_version);
        let file = generated_path(&name);
        let cached = match store
            .cached_translation(&key.text_sha256, &key.model, version)
            .await
        {
            Ok(found) => found,
            Err(e) => {
                states.insert(
                    name,
                    Expansion::Failed {
                        reason: format!("read the translation cache: {e}"),
                    },
                );
                continue;
            }
        };
        let (yaml, was_cached) = match cached {
            Some(entry) => (entry.yaml, true),
            None => {
                let request = Request {
                    name: name.clone(),
                    text: declaration.spec.text.clone(),
                    kinds: declaration.spec.kinds.clone(),
                    file: file.clone(),
                };
                match translate(model, loaded, &request, now).await {
                    Ok(t) => {
                        let entry = CachedTranslation {
                            text_sha256: key.text_sha256.clone(),
                            model: key.model.clone(),
                            prompt_version: version,
                            declaration: name.clone(),
                            yaml_sha256: super::output::sha256_hex(t.yaml.as_bytes()),
                            yaml: t.yaml,
                            created_at: now,
                        };
                        match store.cache_translation(&entry).await {
                            // Another replica may have cached first: use what is stored.
                            Ok(stored) => (stored.yaml, false),
                            Err(e) => {
                                tracing::warn!(declaration = %name, error = %e, "cache translation");
                                (entry.yaml, false)
                            }
                        }
                    }
                    Err(e) => {
                        let reason = match &e {
                            TranslateError::Model { .. } => crate::error_chain(&e),
                            TranslateError::Invalid { .. } => e.to_string(),
                        };
                        tracing::warn!(declaration = %name, "{reason}");
                        states.insert(name, Expansion::Failed { reason });
                        continue;
                    }
                }
            }
        };
        out.add_str(&file, yaml);
        states.insert(
            name,
            Expansion::Translated {
                model: key.model.clone(),
                cached: was_cached,
                file,
            },
        );
    }
    (out, states)
}
