//! An OpenAI-compatible chat client (async-openai) that asks a model for JSON: structured output
//! with a JSON Schema where the endpoint supports it, plain JSON mode where it refuses the
//! schema, retries on 429 (honouring `Retry-After`) and 5xx, all under one timeout per call.
//! Works with OpenAI, Ollama, vLLM and llama.cpp's server; [`sim`] is a local test double.
//!
//! It transports; it never judges an answer. Whether the text is a valid declaration is the
//! controller's question (`controller::declarations`), and nothing here touches a real machine.
//!
//! async-openai retries 429 and 5xx by itself (its `OpenAIRetryLayer`) and turns error
//! responses into values without their headers. Both are bypassed: the client is given a tower
//! service of ours ([`Client::with_http_service`], feature `middleware`) that sends each request
//! once and hands non-2xx responses back as an [`HttpStatus`] carrying the status, the
//! `Retry-After` delay and the body, so the retry policy below is the only one.

pub mod sim;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestAssistantMessageContent,
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestSystemMessageContent, ChatCompletionRequestUserMessage,
    ChatCompletionRequestUserMessageContent, CreateChatCompletionRequest, ResponseFormat,
    ResponseFormatJsonSchema,
};
use reqwest::header::HeaderMap;
use serde_json::Value;

/// Where and how to reach the model. The controller maps its `[llm]` configuration into this.
/// `Debug` shows whether an API key is set, never the key.
#[derive(Clone, PartialEq)]
pub struct LlmSettings {
    /// The API base, up to and including `/v1` (`http://127.0.0.1:11434/v1` for Ollama).
    pub base_url: String,
    /// The model name as the endpoint knows it (`qwen2.5:7b`).
    pub model: String,
    /// Sent as `Authorization: Bearer KEY` when set.
    pub api_key: Option<String>,
    /// Limit of one call, retries and waits included.
    pub timeout: Duration,
    /// Requests per call at most (the schema fallback request is not counted). At least 1.
    pub max_attempts: u32,
    /// Wait before the first retry of a 5xx or a connection failure; doubled each time.
    pub backoff: Duration,
    /// The longest `Retry-After` honoured; a longer one ends the call as rate limited.
    pub max_retry_after: Duration,
}

/// The OpenAI API base, used when no base URL is configured.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

impl std::fmt::Debug for LlmSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmSettings")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("max_retry_after", &self.max_retry_after)
            .finish()
    }
}

impl LlmSettings {
    /// Settings with the defaults: 60 s per call, 3 attempts, 500 ms first backoff, at most
    /// 30 s of `Retry-After`.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        LlmSettings {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            timeout: Duration::from_secs(60),
            max_attempts: 3,
            backoff: Duration::from_millis(500),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

/// How the answer's shape is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// `response_format: {type: json_schema}` (structured output).
    JsonSchema,
    /// `response_format: {type: json_object}` (any JSON object).
    JsonObject,
}

/// Who says a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Instructions.
    System,
    /// The request, or feedback on an answer.
    User,
    /// An earlier answer of the model.
    Assistant,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Who says it.
    pub role: Role,
    /// The text.
    pub content: String,
}

impl Message {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Message {
            role: Role::System,
            content: content.into(),
        }
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Message {
            role: Role::User,
            content: content.into(),
        }
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Message {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// The JSON Schema the answer should follow.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputSchema {
    /// `a-z A-Z 0-9 _ -`, at most 64 characters.
    pub name: String,
    /// The schema of the answer (a JSON object).
    pub schema: Value,
}

/// The text of an answer and how it was obtained.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The message content as the model sent it.
    pub content: String,
    /// The mode of the request that was answered.
    pub mode: OutputMode,
    /// The model as the endpoint reported it.
    pub model: String,
    /// HTTP requests this call made (retries and the schema fallback included).
    pub requests: u32,
}

pub use crate::error_class::ErrorClass;

/// Why a call failed. Messages name the model and the step.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The settings cannot make a client (bad API key characters, empty model, TLS setup).
    #[error("configure llm client for {base_url}: {reason}")]
    Configure {
        /// The endpoint's base URL, as configured.
        base_url: String,
        /// What is wrong.
        reason: String,
    },
    /// No answer within the call's timeout.
    #[error("call model {model}: no answer within {after:?}")]
    Timeout {
        /// The model name the request asked for.
        model: String,
        /// The timeout.
        after: Duration,
    },
    /// The endpoint could not be reached or the connection broke, on every attempt.
    #[error("call model {model} at {base_url}: connection failed after {attempts} attempts")]
    Connect {
        /// The model name the request asked for.
        model: String,
        /// The endpoint's base URL, as configured.
        base_url: String,
        /// Requests made.
        attempts: u32,
        /// The last transport error.
        #[source]
        source: Box<OpenAIError>,
    },
    /// Still rate limited after the last attempt, or asked to wait longer than allowed.
    #[error("call model {model}: rate limited (429) after {attempts} attempts{}", wait_note(.retry_after))]
    RateLimited {
        /// The model name the request asked for.
        model: String,
        /// Requests made.
        attempts: u32,
        /// The last `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// A 5xx on the last attempt.
    #[error("call model {model}: server error {status} after {attempts} attempts: {body}")]
    Server {
        /// The model name the request asked for.
        model: String,
        /// HTTP status.
        status: u16,
        /// Requests made.
        attempts: u32,
        /// Start of the response body.
        body: String,
    },
    /// A 4xx other than 429: the request itself was refused (unknown model, bad key).
    #[error("call model {model}: request refused with {status}: {body}")]
    Refused {
        /// The model name the request asked for.
        model: String,
        /// HTTP status.
        status: u16,
        /// Start of the response body.
        body: String,
    },
    /// A 2xx whose body is not a chat completion.
    #[error("read answer of model {model}")]
    Decode {
        /// The model name the request asked for.
        model: String,
        /// What async-openai reported.
        #[source]
        source: Box<OpenAIError>,
    },
    /// A chat completion without text (no choice, no content, or a refusal).
    #[error("read answer of model {model}: {reason}")]
    EmptyAnswer {
        /// The model name the request asked for.
        model: String,
        /// What was missing.
        reason: String,
    },
}

fn wait_note(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!(" (retry after {d:?})"),
        None => String::new(),
    }
}

impl LlmError {
    /// Whether retrying later can help.
    pub fn class(&self) -> ErrorClass {
        match self {
            LlmError::Timeout { .. }
            | LlmError::Connect { .. }
            | LlmError::RateLimited { .. }
            | LlmError::Server { .. }
            | LlmError::EmptyAnswer { .. } => ErrorClass::Transient,
            LlmError::Configure { .. } | LlmError::Refused { .. } | LlmError::Decode { .. } => {
                ErrorClass::Rejected
            }
        }
    }
}

/// A non-2xx response, as our transport hands it to async-openai (boxed in
/// [`OpenAIError::Boxed`]) so that the status and `Retry-After` survive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("http status {status}: {body}")]
pub struct HttpStatus {
    /// HTTP status.
    pub status: u16,
    /// The delay asked for by `retry-after-ms` or `Retry-After`.
    pub retry_after: Option<Duration>,
    /// Start of the body (at most 2000 characters).
    pub body: String,
}

/// The delay a response asks for: `retry-after-ms` (OpenAI), else `Retry-After` as seconds
/// (whole or fractional) or as an HTTP date relative to `now`. Pure.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = text("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let at = SystemTime::from(date.with_timezone(&chrono::Utc));
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

const BODY_LIMIT: usize = 2000;

/// Sends each request once; non-2xx responses become [`HttpStatus`] errors.
#[derive(Clone)]
struct Transport {
    http: reqwest::Client,
}

type TransportFuture =
    Pin<Box<dyn Future<Output = Result<reqwest::Response, OpenAIError>> + Send + 'static>>;

impl tower::Service<HttpRequestFactory> for Transport {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future = TransportFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, factory: HttpRequestFactory) -> Self::Future {
        let http = self.http.clone();
        Box::pin(async move {
            let request = factory.build().await?;
            let response = http.execute(request).await.map_err(OpenAIError::Reqwest)?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            let wait = retry_after(response.headers(), SystemTime::now());
            let body = response.text().await.unwrap_or_default();
            Err(OpenAIError::Boxed(Box::new(HttpStatus {
                status: status.as_u16(),
                retry_after: wait,
                body: body.chars().take(BODY_LIMIT).collect(),
            })))
        })
    }
}

/// A chat client for one model. Cheap to clone; clones share the remembered output mode.
#[derive(Clone)]
pub struct LlmClient {
    client: Client<OpenAIConfig>,
    settings: LlmSettings,
    /// Set once the endpoint refused `json_schema` and accepted `json_object`.
    schema_refused: Arc<AtomicBool>,
}

impl std::fmt::Debug for LlmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmClient")
            .field("base_url", &self.settings.base_url)
            .field("model", &self.settings.model)
            .field("mode", &self.mode())
            .finish_non_exhaustive()
    }
}

/// What went wrong with one request, before deciding whether to retry.
enum Failure {
    Status(HttpStatus),
    Transport(OpenAIError),
    Decode(OpenAIError),
}

fn classify(error: OpenAIError) -> Failure {
    match error {
        OpenAIError::Boxed(boxed) => match boxed.downcast::<HttpStatus>() {
            Ok(status) => Failure::Status(*status),
            Err(other) => Failure::Transport(OpenAIError::Boxed(other)),
        },
        OpenAIError::ApiError(api) => Failure::Status(HttpStatus {
            status: api.status_code.as_u16(),
            retry_after: None,
            body: api.api_error.message,
        }),
        e @ OpenAIError::Reqwest(_) => Failure::Transport(e),
        e => Failure::Decode(e),
    }
}

/// Whether a 400/422 says the endpoint does not take `response_format: json_schema` (llama.cpp,
/// older Ollama and vLLM builds, proxies), as opposed to refusing the request for another reason.
fn refuses_schema(status: &HttpStatus) -> bool {
    if !matches!(status.status, 400 | 422) {
        return false;
    }
    let body = status.body.to_ascii_lowercase();
    ["response_format", "json_schema", "schema", "grammar"]
        .iter()
        .any(|w| body.contains(w))
}

impl LlmClient {
    /// A client for `settings`. No request is made.
    pub fn new(settings: LlmSettings) -> Result<Self, LlmError> {
        let configure = |reason: String| LlmError::Configure {
            base_url: settings.base_url.clone(),
            reason,
        };
        if settings.model.trim().is_empty() {
            return Err(configure("no model named".to_owned()));
        }
        let url = url::Url::parse(&settings.base_url)
            .map_err(|e| configure(format!("base url is not a url ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(configure("base url must be http or https".to_owned()));
        }
        let key = settings.api_key.clone().unwrap_or_default();
        // async-openai builds the Authorization header with `unwrap`: refuse what would panic.
        if key.chars().any(|c| c.is_control() || !c.is_ascii()) {
            return Err(configure(
                "api key contains control or non-ASCII characters".to_owned(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| configure(format!("build http client ({e})")))?;
        // Every field is set explicitly: `OpenAIConfig::new` would read OPENAI_* variables.
        let config = OpenAIConfig::new()
            .with_api_base(settings.base_url.trim_end_matches('/'))
            .with_api_key(key)
            .with_org_id("")
            .with_project_id("");
        // Our reqwest client both builds requests and (through `Transport`) sends them; the
        // default executor with async-openai's retry layer is replaced.
        let client = Client::build(http.clone(), config).with_http_service(Transport { http });
        Ok(LlmClient {
            client,
            settings,
            schema_refused: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The settings this client was made with.
    pub fn settings(&self) -> &LlmSettings {
        &self.settings
    }

    /// The configured model name.
    pub fn model(&self) -> &str {
        &self.settings.model
    }

    /// The mode the next call starts with: [`OutputMode::JsonObject`] once the endpoint
    /// refused a schema, for the rest of this client's life.
    pub fn mode(&self) -> OutputMode {
        if self.schema_refused.load(Ordering::Relaxed) {
            OutputMode::JsonObject
        } else {
            OutputMode::JsonSchema
        }
    }

    /// Sends `messages` and returns the answer's text, asking for JSON following `schema`.
    /// Retries 429 (waiting `Retry-After`), 5xx and connection failures up to
    /// `max_attempts`, falls back once to JSON mode when the schema is refused, and gives up
    /// at `timeout` whatever is pending.
    #[tracing::instrument(name = "llm.complete", skip_all, fields(model = %self.settings.model, base_url = %self.settings.base_url))]
    pub async fn complete(
        &self,
        messages: &[Message],
        schema: &OutputSchema,
    ) -> Result<Answer, LlmError> {
        let after = self.settings.timeout;
        let deadline = tokio::time::Instant::now() + after;
        match tokio::time::timeout_at(deadline, self.attempts(messages, schema, deadline)).await {
            Ok(result) => result,
            Err(_) => Err(LlmError::Timeout {
                model: self.settings.model.clone(),
                after,
            }),
        }
    }

    async fn attempts(
        &self,
        messages: &[Message],
        schema: &OutputSchema,
        deadline: tokio::time::Instant,
    ) -> Result<Answer, LlmError> {
        let model = || self.settings.model.clone();
        let max = self.settings.max_attempts.max(1);
        let mut mode = self.mode();
        let mut fell_back = false;
        let mut attempt = 0u32;
        let mut requests = 0u32;
        loop {
            attempt += 1;
            requests += 1;
            let request = chat_request(&self.settings.model, messages, schema, mode);
            let failure = match self.client.chat().create(request).await {
                Ok(response) => {
                    if fell_back {
                        self.schema_refused.store(true, Ordering::Relaxed);
                        tracing::info!(
                            "endpoint refused json_schema; using json_object from now on"
                        );
                    }
                    return answer(response, mode, requests, &self.settings.model);
                }
                Err(e) => classify(e),
            };
            let wait = match failure {
                Failure::Status(status)
                    if mode == OutputMode::JsonSchema && !fell_back && refuses_schema(&status) =>
                {
                    tracing::warn!(status = status.status, body = %status.body, "json_schema refused; retrying in json_object mode");
                    mode = OutputMode::JsonObject;
                    fell_back = true;
                    attempt -= 1;
                    continue;
                }
                Failure::Status(status) if status.status == 429 => {
                    let wait = status.retry_after.unwrap_or_else(|| self.backoff(attempt));
                    // Waiting past the call's deadline would only end in a timeout that hides
                    // the rate limit.
                    let past_deadline = tokio::time::Instant::now() + wait >= deadline;
                    if attempt >= max || wait > self.settings.max_retry_after || past_deadline {
                        return Err(LlmError::RateLimited {
                            model: model(),
                            attempts: requests,
                            retry_after: status.retry_after,
                        });
                    }
                    wait
                }
                Failure::Status(status) if status.status >= 500 => {
                    if attempt >= max {
                        return Err(LlmError::Server {
                            model: model(),
                            status: status.status,
                            attempts: requests,
                            body: status.body,
                        });
                    }
                    status
                        .retry_after
                        .unwrap_or_else(|| self.backoff(attempt))
                        .min(self.settings.max_retry_after)
                }
                Failure::Status(status) => {
                    return Err(LlmError::Refused {
                        model: model(),
                        status: status.status,
                        body: status.body,
                    });
                }
                Failure::Transport(source) => {
                    if attempt >= max {
                        return Err(LlmError::Connect {
                            model: model(),
                            base_url: self.settings.base_url.clone(),
                            attempts: requests,
                            source: Box::new(source),
                        });
                    }
                    tracing::warn!(error = %source, attempt, "llm request failed; retrying");
                    self.backoff(attempt)
                }
                Failure::Decode(source) => {
                    return Err(LlmError::Decode {
                        model: model(),
                        source: Box::new(source),
                    });
                }
            };
            tracing::warn!(
                attempt,
                wait_ms = wait.as_millis() as u64,
                "retrying llm request"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// The wait before retrying after `attempt` failures: from `backoff`, doubling, jittered,
    /// and never longer than `max_retry_after` (the longest wait a call accepts at all).
    fn backoff(&self, attempt: u32) -> Duration {
        crate::backoff::Backoff::new(self.settings.backoff, self.settings.max_retry_after)
            .random(attempt)
    }
}

fn chat_request(
    model: &str,
    messages: &[Message],
    schema: &OutputSchema,
    mode: OutputMode,
) -> CreateChatCompletionRequest {
    let messages = messages
        .iter()
        .map(|m| match m.role {
            Role::System => {
                ChatCompletionRequestMessage::System(ChatCompletionRequestSystemMessage {
                    content: ChatCompletionRequestSystemMessageContent::Text(m.content.clone()),
                    name: None,
                })
            }
            Role::User => ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage {
                content: ChatCompletionRequestUserMessageContent::Text(m.content.clone()),
                name: None,
            }),
            Role::Assistant => {
                ChatCompletionRequestMessage::Assistant(ChatCompletionRequestAssistantMessage {
                    content: Some(ChatCompletionRequestAssistantMessageContent::Text(
                        m.content.clone(),
                    )),
                    ..Default::default()
                })
            }
        })
        .collect();
    let response_format = match mode {
        OutputMode::JsonSchema => ResponseFormat::JsonSchema {
            json_schema: ResponseFormatJsonSchema {
                description: None,
                name: schema.name.clone(),
                schema: schema.schema.clone(),
                // OpenAI's strict mode accepts only a subset of JSON Schema (no if/then).
                strict: None,
            },
        },
        OutputMode::JsonObject => ResponseFormat::JsonObject,
    };
    CreateChatCompletionRequest {
        messages,
        model: model.to_owned(),
        response_format: Some(response_format),
        temperature: Some(0.0),
        ..Default::default()
    }
}

fn answer(
    response: async_openai::types::chat::CreateChatCompletionResponse,
    mode: OutputMode,
    requests: u32,
    model: &str,
) -> Result<Answer, LlmError> {
    let empty = |reason: &str| LlmError::EmptyAnswer {
        model: model.to_owned(),
        reason: reason.to_owned(),
    };
    let choice = response
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| empty("no choice in the response"))?;
    if let Some(refusal) = choice.message.refusal.filter(|r| !r.trim().is_empty()) {
        return Err(empty(&format!("the model refused: {refusal}")));
    }
    let content = choice
        .message
        .content
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| empty("the message has no content"))?;
    Ok(Answer {
        content,
        mode,
        model: response.model,
        requests,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn retry_after_should_read_seconds_milliseconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // 06 Nov 1994 08:49:37
        assert_eq!(
            retry_after(&headers(&[("retry-after", "1")]), now),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "0.5")]), now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            retry_after(
                &headers(&[("retry-after", "1"), ("retry-after-ms", "250")]),
                now
            ),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            retry_after(
                &headers(&[("retry-after", "Sun, 06 Nov 1994 08:49:40 GMT")]),
                now
            ),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after(
                &headers(&[("retry-after", "Sun, 06 Nov 1994 08:49:00 GMT")]),
                now
            ),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "-3")]), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn a_schema_refusal_should_be_told_from_other_bad_requests() {
        let s = |status, body: &str| HttpStatus {
            status,
            retry_after: None,
            body: body.to_owned(),
        };
        assert!(refuses_schema(&s(
            400,
            r#"{"error":{"message":"response_format type json_schema is not supported"}}"#
        )));
        assert!(refuses_schema(&s(
            422,
            "unsupported JSON Schema keyword: if"
        )));
        assert!(!refuses_schema(&s(400, "model 'x' not found")));
        assert!(!refuses_schema(&s(500, "response_format crashed")));
    }

    #[test]
    fn errors_should_carry_a_class() {
        let e = LlmError::RateLimited {
            model: "m".into(),
            attempts: 3,
            retry_after: Some(Duration::from_secs(2)),
        };
        assert_eq!(e.class(), ErrorClass::Transient);
        assert_eq!(
            e.to_string(),
            "call model m: rate limited (429) after 3 attempts (retry after 2s)"
        );
        let e = LlmError::Refused {
            model: "m".into(),
            status: 404,
            body: "no such model".into(),
        };
        assert_eq!(e.class(), ErrorClass::Rejected);
    }

    #[test]
    fn settings_should_never_show_the_api_key() {
        let mut s = LlmSettings::new("http://127.0.0.1:1/v1", "m");
        s.api_key = Some("sk-secret".into());
        let shown = format!("{s:?}");
        assert!(!shown.contains("sk-secret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        let client = LlmClient::new(s).unwrap();
        assert!(!format!("{client:?}").contains("sk-secret"));
    }

    #[test]
    fn a_client_should_refuse_settings_that_cannot_work() {
        let mut s = LlmSettings::new("http://127.0.0.1:1/v1", "");
        assert!(matches!(
            LlmClient::new(s.clone()),
            Err(LlmError::Configure { .. })
        ));
        s.model = "m".into();
        s.api_key = Some("line\nbreak".into());
        assert!(matches!(
            LlmClient::new(s.clone()),
            Err(LlmError::Configure { .. })
        ));
        s.api_key = None;
        s.base_url = "ftp://x".into();
        assert!(matches!(LlmClient::new(s), Err(LlmError::Configure { .. })));
    }
}
