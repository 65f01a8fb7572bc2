//! A small OpenAI-compatible server on loopback for tests: `POST /v1/chat/completions` answers
//! with queued replies in the real response shape, records every request with its arrival
//! time, and can behave like an endpoint that refuses `response_format: json_schema`.
//!
//! A test double for [`super::LlmClient`] and the translation built on it: it must never be
//! used in place of a real model.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// What the server does with the next request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// 200 with a chat completion whose message content is this text.
    Content(String),
    /// Any status with these headers and body (a 429 with `Retry-After`, a 503...).
    Status {
        /// HTTP status.
        status: u16,
        /// Extra headers.
        headers: Vec<(String, String)>,
        /// Sent as it is, whatever the status.
        body: String,
    },
    /// Never answers (until the server is dropped): for timeouts.
    Hang,
}

impl Reply {
    /// A 200 answer with `text` as the message content.
    pub fn content(text: impl Into<String>) -> Self {
        Reply::Content(text.into())
    }

    /// A 429 with `Retry-After: SECS`.
    pub fn rate_limited(secs: u32) -> Self {
        Reply::Status {
            status: 429,
            headers: vec![("retry-after".to_owned(), secs.to_string())],
            body: error_body("rate limit reached, retry later", "rate_limit_exceeded"),
        }
    }

    /// A 5xx with an OpenAI-style error body.
    pub fn server_error(status: u16) -> Self {
        Reply::Status {
            status,
            headers: Vec::new(),
            body: error_body("the server had an error", "server_error"),
        }
    }
}

fn error_body(message: &str, code: &str) -> String {
    json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}})
        .to_string()
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// When it arrived.
    pub at: Instant,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The JSON body.
    pub body: Value,
}

impl Recorded {
    /// `response_format.type` of the request (`json_schema`, `json_object`), if any.
    pub fn response_format(&self) -> Option<&str> {
        self.body
            .get("response_format")
            .and_then(|f| f.get("type"))
            .and_then(Value::as_str)
    }

    /// The `content` of every message, in order.
    pub fn contents(&self) -> Vec<String> {
        self.body
            .get("messages")
            .and_then(Value::as_array)
            .map(|ms| {
                ms.iter()
                    .filter_map(|m| m.get("content").and_then(Value::as_str))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[derive(Debug, Default)]
struct SimState {
    replies: VecDeque<Reply>,
    requests: Vec<Recorded>,
    refuse_json_schema: bool,
}

/// Shared view of the simulator's state.
#[derive(Debug, Clone, Default)]
pub struct SimControl {
    state: Arc<Mutex<SimState>>,
}

impl SimControl {
    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A test that panicked while holding the lock leaves usable data behind.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a reply.
    pub fn push(&self, reply: Reply) {
        self.lock().replies.push_back(reply);
    }

    /// Makes every request asking for `json_schema` fail with 400 as llama.cpp or an older
    /// endpoint would, without consuming a queued reply.
    pub fn refuse_json_schema(&self, on: bool) {
        self.lock().refuse_json_schema = on;
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Replies not yet used.
    pub fn pending(&self) -> usize {
        self.lock().replies.len()
    }
}

/// A running simulator; stops when dropped.
#[derive(Debug)]
pub struct LlmSim {
    addr: SocketAddr,
    control: SimControl,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for LlmSim {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl std::ops::Deref for LlmSim {
    type Target = SimControl;
    fn deref(&self) -> &SimControl {
        &self.control
    }
}

impl LlmSim {
    /// Binds `127.0.0.1:0` and serves `replies` in order.
    pub async fn start(replies: Vec<Reply>) -> std::io::Result<LlmSim> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let control = SimControl::default();
        control.lock().replies.extend(replies);
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(control.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "llm simulator stopped");
            }
        });
        Ok(LlmSim {
            addr,
            control,
            server,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API base to configure: `http://ADDR/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

async fn completions(
    State(control): State<SimControl>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let at = Instant::now();
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            error_body("body is not JSON", "invalid_json"),
        )
            .into_response();
    };
    let recorded = Recorded {
        at,
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body,
    };
    let model = recorded
        .body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_owned();
    let refuses = recorded.response_format() == Some("json_schema");
    let reply = {
        let mut state = control.lock();
        let refuse = refuses && state.refuse_json_schema;
        state.requests.push(recorded);
        if refuse {
            None
        } else {
            Some(state.replies.pop_front())
        }
    };
    match reply {
        None => (
            StatusCode::BAD_REQUEST,
            error_body(
                "response_format type 'json_schema' is not supported by this server",
                "unsupported_response_format",
            ),
        )
            .into_response(),
        Some(None) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            error_body("llm simulator: no canned reply left", "sim_exhausted"),
        )
            .into_response(),
        Some(Some(Reply::Content(text))) => Json(completion(&model, &text)).into_response(),
        Some(Some(Reply::Status {
            status,
            headers,
            body,
        })) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = (status, body).into_response();
            for (k, v) in headers {
                if let (Ok(k), Ok(v)) = (
                    axum::http::HeaderName::from_bytes(k.as_bytes()),
                    axum::http::HeaderValue::from_str(&v),
                ) {
                    response.headers_mut().insert(k, v);
                }
            }
            response.headers_mut().insert(
                "content-type",
                axum::http::HeaderValue::from_static("application/json"),
            );
            response
        }
        Some(Some(Reply::Hang)) => {
            std::future::pending::<()>().await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
    }
}

/// A chat completion in the shape OpenAI, Ollama and llama.cpp send.
fn completion(model: &str, content: &str) -> Value {
    json!({
        "id": "chatcmpl-sim",
        "object": "chat.completion",
        "created": 1_763_780_000u32,
        "model": model,
        "system_fingerprint": "fp_sim",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}
    })
}
