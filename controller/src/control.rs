//! The handle that ties the running parts of `mycopod serve` together without globals: the
//! HTTP API asks the reconcile loop for a reconcile through it, reads the controller's status
//! and the sync state of every declared resource from it, and the telemetry tasks follow the
//! desired state the loop last loaded (a `watch` of it) and fill its slot for the way to
//! their alert evaluator (pushed readings are evaluated like polled ones).
//!
//! It holds plain data behind locks and channels; it does no I/O and makes no decisions.

use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use mycopod_adapters::llm::LlmClient;
use mycopod_specs::Loaded;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::desired::Snapshot;
use crate::events::{Event, EventBus};
use crate::model::Trigger;
use crate::telemetry::{Sample, SampleFeed};

/// A request for a reconcile, from the API (manual, webhook) or the loop's own timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerRequest {
    /// What asked.
    pub trigger: Trigger,
    /// The user or API key that asked, if any (recorded on the run).
    pub requested_by: Option<String>,
    /// Who pushed, from a signed GitHub webhook (compared with approvers).
    pub pusher: Option<String>,
}

/// How a declared resource compares with what was observed at the last reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// Observed as declared.
    InSync,
    /// The last plan has an action for it.
    OutOfSync,
    /// Applied, but a change only takes effect after the guest restarts.
    RestartRequired,
    /// The last action for it failed.
    Failed,
    /// It differs, but its `mode: detect` means mycopod only reports it.
    Drift,
    /// A Declaration that has no translation (no model configured, or translation failed).
    NotTranslated,
    /// Not observed yet (the controller just started, or its system was unreachable).
    Unknown,
}

/// One declared resource and its sync state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceStatus {
    /// The kind (`Guest`, `ModbusDevice`, ...).
    pub kind: String,
    /// The resource's name.
    pub name: String,
    /// Its sync state.
    pub sync: SyncState,
    /// What differs or failed, one line per field or error.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// When its sync state last changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed_at: Option<DateTime<Utc>>,
}

/// The controller's status as the API shows it (`GET /api/v1/status`, `/readyz`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ControllerStatus {
    /// When this process started.
    pub started_at: DateTime<Utc>,
    /// The scope reconciled (`REPO@REF`), if a repository is configured.
    pub scope: Option<String>,
    /// Whether this replica holds the reconcile leadership (always true on SQLite).
    pub leader: bool,
    /// When the source was last fetched successfully.
    pub last_fetch_at: Option<DateTime<Utc>>,
    /// Why the last fetch failed; cleared by the next good fetch. The last good desired
    /// state stays in force meanwhile.
    pub last_fetch_error: Option<String>,
    /// The commit last fetched.
    pub commit: Option<String>,
    /// When the last reconcile finished.
    pub last_reconcile_at: Option<DateTime<Utc>>,
    /// What the last reconcile did (`in_sync`, `waiting run 4`, `applied run 5: succeeded`,
    /// `invalid run 6`) or why it failed.
    pub last_outcome: Option<String>,
    /// Whether the last reconcile failed (it is retried with backoff).
    pub last_reconcile_failed: bool,
    /// Every declared resource with its sync state, sorted by kind and name.
    pub resources: Vec<ResourceStatus>,
    /// What the last reconcile could not observe; nothing was planned for these.
    pub unobserved: Vec<Unobserved>,
}

/// Something declared that the last reconcile could not observe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unobserved {
    /// `ProxmoxCluster/home`, `ModbusDevice/fm-1`.
    pub resource: String,
    /// Why it could not be observed.
    pub reason: String,
}

impl ControllerStatus {
    fn new(now: DateTime<Utc>) -> ControllerStatus {
        ControllerStatus {
            started_at: now,
            scope: None,
            leader: false,
            last_fetch_at: None,
            last_fetch_error: None,
            commit: None,
            last_reconcile_at: None,
            last_outcome: None,
            last_reconcile_failed: false,
            resources: Vec::new(),
            unobserved: Vec::new(),
        }
    }
}

/// The shared handle. Cheap to clone; all clones see the same state.
#[derive(Debug, Clone)]
pub struct Control {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    triggers: mpsc::UnboundedSender<TriggerRequest>,
    status: RwLock<ControllerStatus>,
    desired: watch::Sender<Option<Arc<Snapshot>>>,
    files: RwLock<Option<Arc<Loaded>>>,
    model: RwLock<Option<LlmClient>>,
    samples: SampleFeed,
    events: EventBus,
}

impl Control {
    /// A handle and the receiving end of its trigger requests (for the reconcile loop).
    /// `events` is where status changes are announced (normally the store's bus).
    pub fn new(
        events: EventBus,
        now: DateTime<Utc>,
    ) -> (Control, mpsc::UnboundedReceiver<TriggerRequest>) {
        let (triggers, rx) = mpsc::unbounded_channel();
        let (desired, _) = watch::channel(None);
        let control = Control {
            inner: Arc::new(Inner {
                triggers,
                status: RwLock::new(ControllerStatus::new(now)),
                desired,
                files: RwLock::new(None),
                model: RwLock::new(None),
                samples: SampleFeed::default(),
                events,
            }),
        };
        (control, rx)
    }

    /// Asks the loop for a reconcile. Returns false when no loop listens (the process is
    /// shutting down, or this handle was made without one).
    pub fn trigger(&self, request: TriggerRequest) -> bool {
        self.inner.triggers.send(request).is_ok()
    }

    /// A copy of the current status.
    pub fn status(&self) -> ControllerStatus {
        match self.inner.status.read() {
            Ok(status) => status.clone(),
            // A writer panicked halfway; the data is still the best we have.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Changes the status and announces it on the event bus.
    pub fn update_status(&self, change: impl FnOnce(&mut ControllerStatus)) {
        {
            let mut status = match self.inner.status.write() {
                Ok(status) => status,
                Err(poisoned) => poisoned.into_inner(),
            };
            change(&mut status);
        }
        self.inner.events.publish(Event::Controller);
    }

    /// Follows the desired state: the receiver sees each new snapshot the loop loads.
    pub fn desired(&self) -> watch::Receiver<Option<Arc<Snapshot>>> {
        self.inner.desired.subscribe()
    }

    /// The desired state last loaded, if any.
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.inner.desired.borrow().clone()
    }

    /// The files of the commit last fetched (the inventory a translation is given).
    pub fn files(&self) -> Option<Arc<Loaded>> {
        match self.inner.files.read() {
            Ok(files) => files.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Records the files of the commit last fetched.
    pub fn set_files(&self, files: Arc<Loaded>) {
        let mut slot = match self.inner.files.write() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        *slot = Some(files);
    }

    /// The model that translates declarations, if one is configured.
    pub fn model(&self) -> Option<LlmClient> {
        match self.inner.model.read() {
            Ok(model) => model.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Sets the model that translates declarations.
    pub fn set_model(&self, model: Option<LlmClient>) {
        let mut slot = match self.inner.model.write() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        *slot = model;
    }

    /// Where samples that did not come from a poller (pushed readings) go to be evaluated
    /// for alerts: the running telemetry's evaluator, if telemetry runs.
    pub fn sample_feed(&self) -> Option<mpsc::Sender<Arc<Sample>>> {
        self.inner.samples.sender()
    }

    /// The slot telemetry fills with its evaluator's sender while it runs (give it to
    /// `telemetry::spawn`).
    pub fn sample_slot(&self) -> SampleFeed {
        self.inner.samples.clone()
    }

    /// Publishes a newly loaded desired state (only commits that validated).
    pub fn set_desired(&self, snapshot: Snapshot) {
        self.inner.desired.send_replace(Some(Arc::new(snapshot)));
    }

    /// Forgets the desired state (this replica lost the leadership): what follows it, such
    /// as device polling, stops until the replica leads again and loads a commit.
    pub fn clear_desired(&self) {
        self.inner.desired.send_replace(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycopod_specs::DesiredState;

    #[tokio::test]
    async fn a_trigger_should_reach_the_loop_and_fail_once_the_loop_is_gone() {
        let (control, mut rx) = Control::new(EventBus::new(), Utc::now());
        let request = TriggerRequest {
            trigger: Trigger::Manual,
            requested_by: Some("ops".into()),
            pusher: None,
        };
        assert!(control.trigger(request.clone()));
        assert_eq!(rx.recv().await, Some(request.clone()));
        drop(rx);
        assert!(!control.trigger(request));
    }

    #[tokio::test]
    async fn a_status_change_should_be_visible_to_clones_and_announced() {
        let bus = EventBus::new();
        let mut events = bus.subscribe();
        let (control, _rx) = Control::new(bus, Utc::now());
        let other = control.clone();
        control.update_status(|s| s.commit = Some("abc".into()));
        assert_eq!(other.status().commit.as_deref(), Some("abc"));
        assert_eq!(events.recv().await.ok(), Some(Event::Controller));
    }

    #[tokio::test]
    async fn desired_state_followers_should_see_each_new_snapshot() {
        let (control, _rx) = Control::new(EventBus::new(), Utc::now());
        let mut follower = control.desired();
        assert!(follower.borrow().is_none());
        control.set_desired(Snapshot {
            commit: "c1".into(),
            desired: Arc::new(DesiredState::default()),
            loaded_at: Utc::now(),
        });
        assert!(follower.changed().await.is_ok());
        let commit = follower.borrow().as_ref().map(|s| s.commit.clone());
        assert_eq!(commit.as_deref(), Some("c1"));
        assert_eq!(
            control.current().map(|s| s.commit.clone()).as_deref(),
            Some("c1")
        );
    }
}
