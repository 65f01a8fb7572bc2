//! Outgoing notifications: one webhook delivery, a JSON body signed with HMAC-SHA256.
//!
//! One call is one attempt. Retries, backoff, jitter and the delivery log belong to the
//! controller's telemetry, which uses [`DeliveryError::is_transient`] to decide; this module
//! never retries, never sleeps and never logs the secret.

use std::time::Duration;

use serde::Serialize;

use crate::signing::sign_sha256;

/// The header that carries the body's signature: `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Mycopod-Signature";
/// The header that names the event (`alert.firing`, `alert.resolved`, ...).
pub const EVENT_HEADER: &str = "X-Mycopod-Event";
/// The header with a delivery id, the same on every attempt of one delivery, so receivers
/// can drop duplicates.
pub const DELIVERY_HEADER: &str = "X-Mycopod-Delivery";

/// Sends signed webhook notifications.
#[derive(Debug, Clone)]
pub struct WebhookSender {
    http: reqwest::Client,
    timeout: Duration,
}

/// One notification to deliver.
#[derive(Debug, Clone)]
pub struct Webhook<'a, T: Serialize> {
    /// Where to POST.
    pub url: &'a str,
    /// The signing secret (from the channel's `secretEnv`); `None` sends it unsigned.
    pub secret: Option<&'a [u8]>,
    /// The event name for [`EVENT_HEADER`].
    pub event: &'a str,
    /// The delivery id for [`DELIVERY_HEADER`].
    pub delivery_id: &'a str,
    /// The body, sent as JSON.
    pub body: &'a T,
}

/// A delivery the receiver accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The receiver's status code (2xx).
    pub status: u16,
}

/// A delivery that did not go through.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The body could not be serialised.
    #[error("serialise notification body for {url}: {source}")]
    Body {
        /// The receiver.
        url: String,
        /// The serde error.
        source: serde_json::Error,
    },
    /// No answer: connection refused, reset, DNS, TLS.
    #[error("send notification to {url}: {source}")]
    Send {
        /// The receiver.
        url: String,
        /// The client error.
        source: reqwest::Error,
    },
    /// No answer in time.
    #[error("notification to {url} timed out after {timeout:?}")]
    Timeout {
        /// The receiver.
        url: String,
        /// The limit.
        timeout: Duration,
    },
    /// The receiver answered with an error status.
    #[error("notification to {url} refused with status {status}")]
    Status {
        /// The receiver.
        url: String,
        /// Its status code.
        status: u16,
    },
}

impl DeliveryError {
    /// Whether another attempt may succeed: no answer, a timeout, 408, 425, 429 or a 5xx.
    /// Other 4xx answers mean the receiver will not take it.
    pub fn is_transient(&self) -> bool {
        match self {
            DeliveryError::Body { .. } => false,
            DeliveryError::Send { .. } | DeliveryError::Timeout { .. } => true,
            DeliveryError::Status { status, .. } => {
                matches!(status, 408 | 425 | 429) || *status >= 500
            }
        }
    }

    /// The receiver's status code, where it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            DeliveryError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl WebhookSender {
    /// A sender whose every attempt is bounded by `timeout`.
    pub fn new(timeout: Duration) -> Result<WebhookSender, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("mycopod/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(WebhookSender { http, timeout })
    }

    /// Makes one delivery attempt.
    #[tracing::instrument(skip_all, fields(url = %hook.url, event = %hook.event, delivery = %hook.delivery_id))]
    pub async fn send<T: Serialize>(
        &self,
        hook: &Webhook<'_, T>,
    ) -> Result<Delivered, DeliveryError> {
        let body = serde_json::to_vec(hook.body).map_err(|source| DeliveryError::Body {
            url: hook.url.to_owned(),
            source,
        })?;
        let mut request = self
            .http
            .post(hook.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(EVENT_HEADER, hook.event)
            .header(DELIVERY_HEADER, hook.delivery_id);
        if let Some(secret) = hook.secret {
            request = request.header(SIGNATURE_HEADER, sign_sha256(secret, &body));
        }
        let response = request.body(body).send().await.map_err(|source| {
            if source.is_timeout() {
                DeliveryError::Timeout {
                    url: hook.url.to_owned(),
                    timeout: self.timeout,
                }
            } else {
                DeliveryError::Send {
                    url: hook.url.to_owned(),
                    source,
                }
            }
        })?;
        let status = response.status().as_u16();
        if response.status().is_success() {
            Ok(Delivered { status })
        } else {
            Err(DeliveryError::Status {
                url: hook.url.to_owned(),
                status,
            })
        }
    }
}
