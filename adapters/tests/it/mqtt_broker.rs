//! The MQTT publisher against a real broker (Mosquitto on this machine): a subscriber on the
//! same broker receives what the publisher sends.
//!
//! Ignored unless asked for: set `MYCOPOD_TEST_MQTT_URL` (for example `mqtt://127.0.0.1:1883`)
//! and run with `--include-ignored`. With the variable unset, the ignored test fails rather
//! than passing silently; with it set and the broker unreachable, it fails on its timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mycopod_adapters::mqtt::{MqttPublisher, parse_broker_url};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const TEST_TIMEOUT: Duration = Duration::from_secs(20);

fn broker_url() -> String {
    std::env::var("MYCOPOD_TEST_MQTT_URL")
        .expect("MYCOPOD_TEST_MQTT_URL must name the test broker (mqtt://127.0.0.1:1883)")
}

#[tokio::test]
#[ignore = "needs MYCOPOD_TEST_MQTT_URL"]
async fn a_subscriber_should_receive_what_the_publisher_sends() {
    let url = broker_url();
    let (host, port) = parse_broker_url(&url).unwrap();
    let topic = format!("mycopod-test/{}/alerts", std::process::id());
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (subscriber, mut events) = AsyncClient::new(
            MqttOptions::new(format!("sub-{}", std::process::id()), host, port),
            16,
        );
        subscriber
            .subscribe(&topic, QoS::AtLeastOnce)
            .await
            .unwrap();
        // Wait until the broker confirmed the subscription before publishing.
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => break,
                Ok(_) => {}
                Err(e) => panic!("subscriber cannot reach the broker at {url}: {e}"),
            }
        }
        let publisher =
            MqttPublisher::connect(&url, &format!("pub-{}", std::process::id())).unwrap();
        publisher
            .publish(&topic, br#"{"state":"firing"}"#.to_vec(), false)
            .unwrap();
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    assert_eq!(p.topic, topic);
                    assert_eq!(&p.payload[..], br#"{"state":"firing"}"#);
                    break;
                }
                Ok(_) => {}
                Err(e) => panic!("subscriber lost the broker: {e}"),
            }
        }
        assert!(publisher.is_connected());
    })
    .await
    .expect("no message from the broker in time");
}
