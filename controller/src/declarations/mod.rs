//! Natural-language declarations: a request in the owner's words becomes mycopod documents
//! through an OpenAI-compatible model, checked by the same validator as `mycopod validate`.
//!
//! The model is never trusted: its answer is parsed leniently ([`answer`]), labelled with the
//! declaration, rendered as YAML and validated together with the repository ([`output`]). An
//! answer with errors gets one correction round with the findings; a second failure is a
//! [`TranslateError::Invalid`] listing them. Nothing here applies, stores or commits anything:
//! the result is text for a person (or the reconcile loop's approval gate) to act on.
//!
//! Only [`translate`] does I/O, through the [`ChatModel`] it is given; the prompt, parsing,
//! rendering, checking and the cache key are pure.

pub mod answer;
pub mod expand;
pub mod output;
pub mod prompt;

use std::future::Future;

use chrono::{DateTime, Utc};
use mycopod_adapters::llm::{Answer, LlmClient, LlmError, Message, OutputSchema};
use mycopod_specs::kinds::Kind;
use mycopod_specs::{DesiredState, Diagnostic, Loaded};

pub use output::{CacheKey, DECLARATION_LABEL, cache_key};
pub use prompt::PROMPT_VERSION;

/// The chat model a translation talks to. [`LlmClient`] in production; the trait keeps the
/// translation independent of the transport.
pub trait ChatModel {
    /// The configured model name (part of the cache key and the output header).
    fn model_name(&self) -> &str;

    /// One answer to `messages`, asked to follow `schema`.
    fn complete(
        &self,
        messages: &[Message],
        schema: &OutputSchema,
    ) -> impl Future<Output = Result<Answer, LlmError>> + Send;
}

impl ChatModel for LlmClient {
    fn model_name(&self) -> &str {
        self.model()
    }

    fn complete(
        &self,
        messages: &[Message],
        schema: &OutputSchema,
    ) -> impl Future<Output = Result<Answer, LlmError>> + Send {
        LlmClient::complete(self, messages, schema)
    }
}

/// What to translate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The declaration's name (a DNS label); generated resources are labelled with it.
    pub name: String,
    /// The owner's words.
    pub text: String,
    /// Kinds the declaration allows (empty: [`prompt::DEFAULT_KINDS`]).
    pub kinds: Vec<Kind>,
    /// The file name the output will have, used in diagnostics (`declarations/pihole.yaml`).
    pub file: String,
}

/// A translation that validated.
#[derive(Debug, Clone)]
pub struct Translation {
    /// YAML ready to commit: the provenance header, then the documents.
    pub yaml: String,
    /// `(kind, name)` of each generated document, in order.
    pub documents: Vec<(Kind, String)>,
    /// Warnings about the generated file (errors would have failed the translation).
    pub warnings: Vec<Diagnostic>,
    /// The repository plus the generated file, for rendering the warnings with code frames.
    pub loaded: Loaded,
    /// The configured model.
    pub model: String,
    /// The translation's cache key.
    pub key: CacheKey,
    /// Answers asked for: 1, or 2 after a correction.
    pub answers: u32,
}

/// Why a translation failed.
#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    /// The model could not be asked (timeout, rate limit, refused request...).
    #[error("ask model {model} to translate declaration {name}")]
    Model {
        /// The declaration.
        name: String,
        /// The model name that was asked.
        model: String,
        /// The client's error, with its class.
        #[source]
        source: LlmError,
    },
    /// Both the answer and the corrected answer had errors.
    #[error(
        "translate declaration {name}: the answers of model {model} do not validate after one correction ({})",
        mycopod_specs::render::summary(diagnostics)
    )]
    Invalid {
        /// The declaration.
        name: String,
        /// The model name that answered.
        model: String,
        /// The findings about the last answer.
        diagnostics: Vec<Diagnostic>,
        /// The findings rendered like `mycopod validate` does.
        rendered: String,
        /// The last answer as the model sent it.
        last_answer: String,
    },
}

/// One checked answer.
struct Checked {
    /// The YAML that was validated (header included), when the answer could be read.
    yaml: Option<String>,
    documents: Vec<(Kind, String)>,
    findings: Vec<Diagnostic>,
    loaded: Loaded,
}

/// Translates `request` with `model`, using `repo` (the repository's documents) for the
/// inventory and for resolving references. `now` goes into the header.
#[tracing::instrument(name = "declarations.translate", skip_all, fields(declaration = %request.name, model = %model.model_name()))]
pub async fn translate<M: ChatModel>(
    model: &M,
    repo: &Loaded,
    request: &Request,
    now: DateTime<Utc>,
) -> Result<Translation, TranslateError> {
    let model_name = model.model_name().to_owned();
    let repo = output::repository_without(repo, &request.name, &request.file);
    let kinds = prompt::allowed_kinds(&request.kinds);
    let schema = OutputSchema {
        name: "mycopod_documents".to_owned(),
        schema: prompt::answer_schema(&kinds),
    };
    let inventory = prompt::inventory(&DesiredState::from_loaded(&repo));
    let mut messages = vec![
        Message::system(prompt::system_prompt(&kinds, &schema.schema)),
        Message::user(prompt::user_prompt(&inventory, &request.text)),
    ];
    let provenance = output::Provenance {
        declaration: request.name.clone(),
        text: request.text.clone(),
        model: model_name.clone(),
        prompt_version: PROMPT_VERSION,
        generated_at: now,
    };
    let ask = |messages: Vec<Message>| {
        let schema = &schema;
        async move {
            model
                .complete(&messages, schema)
                .await
                .map_err(|source| TranslateError::Model {
                    name: request.name.clone(),
                    model: model.model_name().to_owned(),
                    source,
                })
        }
    };

    let first = ask(messages.clone()).await?;
    let checked = check_answer(&repo, request, &kinds, &provenance, &first.content);
    if !checked.findings.iter().any(Diagnostic::is_error) {
        return Ok(success(checked, &model_name, request, 1));
    }
    tracing::info!(
        errors = checked.findings.len(),
        "answer does not validate; asking once for a correction"
    );
    let findings = mycopod_specs::render::render_human(&checked.findings, &checked.loaded);
    messages.push(Message::assistant(first.content));
    messages.push(Message::user(prompt::correction_prompt(
        checked.yaml.as_deref(),
        &findings,
    )));

    let second = ask(messages).await?;
    let checked = check_answer(&repo, request, &kinds, &provenance, &second.content);
    if !checked.findings.iter().any(Diagnostic::is_error) {
        return Ok(success(checked, &model_name, request, 2));
    }
    let rendered = mycopod_specs::render::render_human(&checked.findings, &checked.loaded);
    Err(TranslateError::Invalid {
        name: request.name.clone(),
        model: model_name,
        diagnostics: checked.findings,
        rendered,
        last_answer: second.content,
    })
}

fn success(checked: Checked, model: &str, request: &Request, answers: u32) -> Translation {
    let (warnings, errors): (Vec<_>, Vec<_>) =
        checked.findings.into_iter().partition(|d| !d.is_error());
    debug_assert!(errors.is_empty());
    Translation {
        yaml: checked.yaml.unwrap_or_default(),
        documents: checked.documents,
        warnings,
        loaded: checked.loaded,
        model: model.to_owned(),
        key: cache_key(&request.text, model, PROMPT_VERSION),
        answers,
    }
}

/// Reads, labels, renders and validates one answer.
fn check_answer(
    repo: &Loaded,
    request: &Request,
    kinds: &[Kind],
    provenance: &output::Provenance,
    content: &str,
) -> Checked {
    let unreadable = |message: String| {
        let mut loaded = repo.clone();
        loaded.add_str(&request.file, String::new());
        Checked {
            yaml: None,
            documents: Vec::new(),
            findings: vec![output::answer_diagnostic(&request.file, message)],
            loaded,
        }
    };
    let mut documents = match answer::parse_answer(content) {
        Ok(documents) => documents,
        Err(e) => return unreadable(e.to_string()),
    };
    output::label_documents(&mut documents, &request.name);
    let body = match output::documents_yaml(&documents) {
        Ok(body) => body,
        Err(e) => return unreadable(format!("the answer cannot be written as YAML: {e}")),
    };
    let yaml = format!("{}{body}", output::header(provenance));
    let (findings, loaded) = output::check_generated(repo, &request.file, &yaml, kinds);
    let generated = loaded
        .documents
        .iter()
        .filter(|d| &*d.source.file == request.file.as_str())
        .filter_map(|d| Some((d.kind?, d.name.clone()?)))
        .collect();
    Checked {
        yaml: Some(yaml),
        documents: generated,
        findings,
        loaded,
    }
}

/// A declaration name from the first words of `text`: lowercase letters and digits joined by
/// `-`, at most 40 characters; `declaration` when nothing usable remains.
pub fn default_name(text: &str) -> String {
    let mut name = String::new();
    for word in text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let word = word.to_ascii_lowercase();
        let extra = if name.is_empty() { 0 } else { 1 };
        if name.len() + extra + word.len() > 40 {
            break;
        }
        if extra == 1 {
            name.push('-');
        }
        name.push_str(&word);
    }
    if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        name.insert_str(0, if name.is_empty() { "declaration" } else { "d-" });
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_should_be_dns_labels_from_the_first_words() {
        assert_eq!(
            default_name("A Debian container for Pi-hole with one core and 512 MB, always on"),
            "a-debian-container-for-pi-hole-with-one"
        );
        assert_eq!(default_name("¿¿??"), "declaration");
        assert_eq!(default_name("2 m3/h alert"), "d-2-m3-h-alert");
        for text in ["x", "Alert me if flow-01 drops", "écran"] {
            let name = default_name(text);
            assert!(mycopod_specs::values::Name::parse(&name).is_ok(), "{name}");
        }
    }
}
