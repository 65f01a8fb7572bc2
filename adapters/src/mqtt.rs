//! MQTT publishing (alert events and, optionally, readings) through `rumqttc`, for plant owners
//! who feed Home Assistant or Node-RED from a broker such as Mosquitto.
//!
//! One [`MqttPublisher`] keeps one connection, driven by a background task that reconnects
//! with backoff. Publishing never waits: a message is queued, or refused when the queue is
//! full or the topic is invalid. This module transports only; which events go to which topic
//! is decided by the controller. It never subscribes and never logs payloads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::task::JoinHandle;

/// Messages queued towards the broker before [`MqttPublisher::publish`] starts refusing.
pub const QUEUE: usize = 1024;

/// Why the publisher could not be made or a message not be queued.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The broker URL is not `mqtt://HOST[:PORT]` (or `tcp://`).
    #[error("invalid MQTT broker url {url}: {reason}")]
    Url {
        /// The URL as given (credentials removed).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The queue towards the broker is full (the broker is slow or unreachable) or the topic
    /// is invalid; the message was dropped.
    #[error("publish to MQTT topic {topic}: message dropped ({reason})")]
    Publish {
        /// Where the message was to go.
        topic: String,
        /// Why.
        reason: String,
    },
}

/// A connection to one MQTT broker that publishes with QoS 1.
pub struct MqttPublisher {
    client: AsyncClient,
    connected: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for MqttPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttPublisher")
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl Drop for MqttPublisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Host and port of `mqtt://HOST[:PORT]` or `tcp://HOST[:PORT]` (port 1883 by default).
pub fn parse_broker_url(url: &str) -> Result<(String, u16), MqttError> {
    let bad = |reason: &str| MqttError::Url {
        url: url.split('@').next_back().unwrap_or_default().to_owned(),
        reason: reason.to_owned(),
    };
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "mqtt" | "tcp") {
        return Err(bad(
            "the scheme must be mqtt:// or tcp:// (TLS is not supported)",
        ));
    }
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("no host"))?;
    Ok((host.to_owned(), parsed.port().unwrap_or(1883)))
}

impl MqttPublisher {
    /// Starts a publisher for the broker at `url` with the given client id. Returns at once;
    /// the connection is made (and remade after failures, with backoff up to 30 s) in the
    /// background, and messages published meanwhile wait in the queue.
    ///
    /// # Errors
    /// [`MqttError::Url`] for a malformed URL.
    pub fn connect(url: &str, client_id: &str) -> Result<MqttPublisher, MqttError> {
        let (host, port) = parse_broker_url(url)?;
        let mut options = MqttOptions::new(client_id, host, port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_session(true);
        let (client, mut events) = AsyncClient::new(options, QUEUE);
        let connected = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&connected);
        let task = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        flag.store(true, Ordering::Relaxed);
                        backoff = Duration::from_millis(200);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if flag.swap(false, Ordering::Relaxed) {
                            tracing::warn!(error = %e, "MQTT connection lost");
                        } else {
                            tracing::debug!(error = %e, "MQTT connect failed");
                        }
                        // The next poll reconnects; wait first so a dead broker is not hammered.
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        });
        Ok(MqttPublisher {
            client,
            connected,
            task,
        })
    }

    /// Whether the broker has accepted the connection and it has not failed since.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Queues `payload` for `topic` with QoS 1; never waits.
    ///
    /// # Errors
    /// [`MqttError::Publish`] when the queue is full or the topic is invalid.
    pub fn publish(&self, topic: &str, payload: Vec<u8>, retain: bool) -> Result<(), MqttError> {
        self.client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
            .map_err(|e| MqttError::Publish {
                topic: topic.to_owned(),
                reason: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_should_default_to_port_1883_and_refuse_other_schemes() {
        assert_eq!(
            parse_broker_url("mqtt://127.0.0.1").ok(),
            Some(("127.0.0.1".to_owned(), 1883))
        );
        assert_eq!(
            parse_broker_url("tcp://broker.lan:1884").ok(),
            Some(("broker.lan".to_owned(), 1884))
        );
        assert!(parse_broker_url("mqtts://broker.lan").is_err());
        assert!(parse_broker_url("127.0.0.1:1883").is_err());
    }
}
