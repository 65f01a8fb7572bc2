//! Telemetry's use of MQTT: alert events to `{prefix}/alerts/{rule}/{device}` and, when
//! enabled, each poll's readings to `{prefix}/readings/{device}`, as JSON.
//!
//! Publishing never waits (a full queue drops the message with a warning), so a slow broker
//! delays neither polling nor alert evaluation. It decides nothing about alerts.

use std::collections::BTreeMap;

use mycopod_adapters::mqtt::{MqttError, MqttPublisher};
use serde::Serialize;

use super::deliver::AlertMessage;
use super::evaluate::Notice;
use super::poll::{Sample, SampleKind};

/// Where and what to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttSettings {
    /// `mqtt://HOST[:PORT]`.
    pub url: String,
    /// The first topic level (`mycopod`).
    pub topic_prefix: String,
    /// Whether readings are published too (alert events always are).
    pub publish_readings: bool,
}

/// A publisher with its topics.
#[derive(Debug)]
pub struct MqttSink {
    publisher: MqttPublisher,
    settings: MqttSettings,
}

#[derive(Serialize)]
struct ReadingsMessage<'a> {
    device: &'a str,
    time: chrono::DateTime<chrono::Utc>,
    values: BTreeMap<&'a str, f64>,
}

impl MqttSink {
    /// Connects (in the background) to the broker of `settings`.
    ///
    /// # Errors
    /// A malformed broker URL.
    pub fn connect(settings: MqttSettings) -> Result<MqttSink, MqttError> {
        let client_id = format!("mycopod-{}", std::process::id());
        Ok(MqttSink {
            publisher: MqttPublisher::connect(&settings.url, &client_id)?,
            settings,
        })
    }

    fn send(&self, topic: &str, body: &impl Serialize) {
        let payload = match serde_json::to_vec(body) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(topic, error = %e, "serialise MQTT message");
                return;
            }
        };
        if let Err(e) = self.publisher.publish(topic, payload, false) {
            tracing::warn!(error = %e, "MQTT message dropped");
        }
    }

    /// Publishes an alert event.
    pub fn alert(&self, notice: &Notice) {
        let topic = format!(
            "{}/alerts/{}/{}",
            self.settings.topic_prefix, notice.alert.rule, notice.alert.device
        );
        self.send(&topic, &AlertMessage::new(&notice.alert, notice.event));
    }

    /// Publishes a poll's readings, if readings publishing is on.
    pub fn reading(&self, sample: &Sample) {
        if !self.settings.publish_readings {
            return;
        }
        let SampleKind::Values(values) = &sample.kind else {
            return;
        };
        let topic = format!("{}/readings/{}", self.settings.topic_prefix, sample.device);
        let message = ReadingsMessage {
            device: &sample.device,
            time: sample.time,
            values: values.iter().map(|(k, v)| (k.as_str(), *v)).collect(),
        };
        self.send(&topic, &message);
    }
}
