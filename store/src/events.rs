//! Live change notifications inside one process: the store publishes an [`Event`] after each
//! committed change of a run, an action, an approval or an alert, and the HTTP API streams them
//! to clients (`GET /api/v1/events`). Events say *what* changed; clients read the current state
//! through the API, so a lagging subscriber that misses events loses nothing but latency.
//!
//! This module does no I/O and never blocks a publisher: a full channel drops the oldest events
//! for slow subscribers (they see [`tokio::sync::broadcast::error::RecvError::Lagged`]).

use serde::Serialize;
use tokio::sync::broadcast;

/// How many events a subscriber may fall behind before it starts losing the oldest.
pub const EVENT_BUFFER: usize = 1024;

/// One committed change.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A run was recorded or changed status.
    Run {
        /// The run.
        run_id: i64,
        /// Its status after the change (`RunStatus` as text).
        status: String,
    },
    /// An action changed status.
    Action {
        /// The run it belongs to.
        run_id: i64,
        /// The action.
        action_id: i64,
        /// Its status after the change.
        status: String,
    },
    /// An approval or rejection was recorded.
    Approval {
        /// The run.
        run_id: i64,
        /// Who decided.
        user: String,
        /// `approve` or `reject`.
        decision: String,
    },
    /// An alert was opened, changed state or was acknowledged.
    Alert {
        /// The alert.
        alert_id: i64,
        /// Its state after the change.
        state: String,
    },
    /// The controller's status changed (new commit, fetch error, leadership, reconcile end).
    Controller,
}

impl Event {
    /// The SSE event name: `run`, `action`, `approval`, `alert` or `controller`.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Run { .. } => "run",
            Event::Action { .. } => "action",
            Event::Approval { .. } => "approval",
            Event::Alert { .. } => "alert",
            Event::Controller => "controller",
        }
    }
}

/// A broadcast channel of [`Event`]s. Cheap to clone; every clone publishes to the same
/// subscribers.
#[derive(Debug, Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new()
    }
}

impl EventBus {
    /// A bus with room for [`EVENT_BUFFER`] events per subscriber.
    pub fn new() -> EventBus {
        let (sender, _) = broadcast::channel(EVENT_BUFFER);
        EventBus { sender }
    }

    /// Publishes `event` to the current subscribers; without subscribers it is dropped.
    pub fn publish(&self, event: Event) {
        // An error only means nobody listens right now, which is fine.
        let _ = self.sender.send(event);
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_should_see_events_published_after_they_subscribed() {
        let bus = EventBus::new();
        bus.publish(Event::Controller);
        let mut rx = bus.subscribe();
        bus.publish(Event::Run {
            run_id: 7,
            status: "applying".into(),
        });
        let got = rx.recv().await;
        assert_eq!(
            got.ok(),
            Some(Event::Run {
                run_id: 7,
                status: "applying".into()
            })
        );
        assert!(rx.try_recv().is_err(), "the earlier event was not replayed");
    }

    #[test]
    fn events_should_serialize_with_a_type_tag() {
        let json = serde_json::to_value(Event::Approval {
            run_id: 3,
            user: "ops".into(),
            decision: "approve".into(),
        })
        .ok();
        assert_eq!(
            json,
            Some(
                serde_json::json!({"type": "approval", "run_id": 3, "user": "ops", "decision": "approve"})
            )
        );
    }
}
