//! The alert evaluator: feeds each sample to the pure state machine of every AlertRule on its
//! device and records the transitions in the store (one open alert per rule and device).
//!
//! Rules are read from the database (as runs reconciled them) and re-read every
//! `reload_every`, so a rule landed by a run takes effect without a restart. A pending alert
//! whose condition clears before `for` is over is discarded, so a value flapping around a
//! threshold leaves no trail and never notifies. Sending notifications is not done here: a
//! transition to firing or resolved queues its notifications in the store in the same
//! transaction (so a crash cannot lose them), and the evaluator returns [`Notice`]s so the
//! notifier can start on them at once.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use mycopod_specs::kinds::{AlertRuleSpec, Condition};
use tokio::time::Instant;

use super::alerts::{Observation, RuleCheck, RuleState as Machine, step};
use super::poll::{Sample, SampleKind};
use crate::model::{AlertState, ConfigKind};
use crate::store::{Alert, Store, StoreError};

/// What a notification says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoticeEvent {
    /// The alert started firing.
    Firing,
    /// The alert resolved.
    Resolved,
}

impl NoticeEvent {
    /// `firing` or `resolved`, as recorded in the delivery log.
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeEvent::Firing => "firing",
            NoticeEvent::Resolved => "resolved",
        }
    }

    /// Parses [`NoticeEvent::as_str`].
    pub fn parse(s: &str) -> Option<NoticeEvent> {
        match s {
            "firing" => Some(NoticeEvent::Firing),
            "resolved" => Some(NoticeEvent::Resolved),
            _ => None,
        }
    }
}

/// An alert that fired or resolved, to be sent to the rule's channels.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// The alert as stored after the change.
    pub alert: Alert,
    /// What happened.
    pub event: NoticeEvent,
    /// The rule's NotificationChannel names.
    pub channels: Vec<String>,
}

/// One rule as loaded from the database.
#[derive(Debug, Clone)]
struct Rule {
    spec: AlertRuleSpec,
    check: RuleCheck,
    severity: String,
}

/// Where one rule stands on one device, with the stored alert it mirrors.
#[derive(Debug, Clone, Copy)]
struct Tracked {
    state: Machine,
    alert_id: Option<i64>,
}

/// Evaluates samples against the alert rules in the store.
#[derive(Debug)]
pub struct Evaluator {
    store: Store,
    reload_every: Duration,
    loaded_at: Option<Instant>,
    rules: BTreeMap<String, Rule>,
    tracked: HashMap<(String, String), Tracked>,
    /// The time of the newest sample evaluated per device that has rules.
    newest: HashMap<String, DateTime<Utc>>,
}

fn rule_from_spec(spec: AlertRuleSpec) -> Rule {
    let check = RuleCheck {
        condition: spec.condition.clone(),
        hold: spec
            .for_duration
            .as_ref()
            .map(|d| d.as_std())
            .unwrap_or_default(),
        hysteresis: spec.hysteresis.unwrap_or(0.0),
    };
    let severity = serde_json::to_value(spec.severity)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "warning".to_owned());
    Rule {
        spec,
        check,
        severity,
    }
}

impl Evaluator {
    /// An evaluator that re-reads the rules at most every `reload_every` (zero: before each
    /// sample).
    pub fn new(store: Store, reload_every: Duration) -> Evaluator {
        Evaluator {
            store,
            reload_every,
            loaded_at: None,
            rules: BTreeMap::new(),
            tracked: HashMap::new(),
            newest: HashMap::new(),
        }
    }

    /// Reads the rules from the store now. A rule whose stored spec does not parse is skipped
    /// with a warning. Alerts of rules that are gone are closed: a pending one is discarded,
    /// a firing one resolved (without notification: there are no channels left to ask).
    ///
    /// # Errors
    /// Store errors.
    pub async fn reload_rules(&mut self, now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut rules = BTreeMap::new();
        for object in self
            .store
            .list_config_objects(ConfigKind::AlertRule)
            .await?
        {
            match serde_json::from_value::<AlertRuleSpec>(object.spec) {
                Ok(spec) => {
                    rules.insert(object.name, rule_from_spec(spec));
                }
                Err(e) => {
                    tracing::warn!(rule = %object.name, error = %e, "stored alert rule does not parse");
                }
            }
        }
        let gone: Vec<(String, String)> = self
            .tracked
            .keys()
            .filter(|(rule, _)| !rules.contains_key(rule))
            .cloned()
            .collect();
        for key in gone {
            if let Some(Tracked {
                state,
                alert_id: Some(id),
            }) = self.tracked.get(&key).copied()
            {
                match state {
                    Machine::Pending { .. } => {
                        self.store.discard_pending_alert(id).await?;
                    }
                    Machine::Firing { .. } => {
                        self.store
                            .transition_alert(
                                id,
                                AlertState::Firing,
                                AlertState::Resolved,
                                None,
                                now,
                            )
                            .await?;
                    }
                    Machine::Inactive => {}
                }
            }
            self.tracked.remove(&key);
        }
        self.rules = rules;
        self.loaded_at = Some(Instant::now());
        Ok(())
    }

    async fn tracked(&mut self, rule: &str, device: &str) -> Result<Tracked, StoreError> {
        let key = (rule.to_owned(), device.to_owned());
        if let Some(t) = self.tracked.get(&key) {
            return Ok(*t);
        }
        // First sight since start: pick up an alert left open by an earlier process.
        let t = match self.store.get_open_alert(rule, device).await? {
            Some(alert) if alert.state == AlertState::Firing => Tracked {
                state: Machine::Firing {
                    since: alert.firing_at.unwrap_or(alert.opened_at),
                },
                alert_id: Some(alert.id),
            },
            Some(alert) => Tracked {
                state: Machine::Pending {
                    since: alert.opened_at,
                },
                alert_id: Some(alert.id),
            },
            None => Tracked {
                state: Machine::Inactive,
                alert_id: None,
            },
        };
        self.tracked.insert(key, t);
        Ok(t)
    }

    /// Evaluates every rule on the sample's device and records the transitions; returns the
    /// alerts that fired or resolved. A transition whose store write fails is not taken, so
    /// the next sample tries again. A sample older than its device's evaluation clock is
    /// ignored: a gateway sending a backlog late cannot move an alert back in time. The clock
    /// moves to each sample's [`Sample::clock`]: a pushed reading dated ahead (within the
    /// ingest skew) is evaluated, but moves the clock no further than when it arrived, so the
    /// samples that follow it are evaluated too.
    ///
    /// # Errors
    /// Store errors.
    pub async fn observe(&mut self, sample: &Sample) -> Result<Vec<Notice>, StoreError> {
        let stale = self
            .loaded_at
            .is_none_or(|at| at.elapsed() >= self.reload_every);
        if stale {
            self.reload_rules(sample.time).await?;
        }
        let matching: Vec<(String, Rule)> = self
            .rules
            .iter()
            .filter(|(_, r)| r.spec.device.as_str() == sample.device)
            .map(|(name, r)| (name.clone(), r.clone()))
            .collect();
        if matching.is_empty() {
            return Ok(Vec::new());
        }
        match self.newest.get_mut(sample.device.as_str()) {
            Some(newest) if sample.time < *newest => {
                tracing::debug!(device = %sample.device, time = %sample.time, "sample older than the newest evaluated: ignored");
                return Ok(Vec::new());
            }
            // A pushed reading dated ahead moves the clock only to when it arrived.
            Some(newest) => *newest = (*newest).max(sample.clock),
            None => {
                self.newest.insert(sample.device.clone(), sample.clock);
            }
        }
        let mut notices = Vec::new();
        for (name, rule) in matching {
            let Some(observation) = observation(&rule.spec, &sample.kind) else {
                continue;
            };
            let before = self.tracked(&name, &sample.device).await?;
            let (state, _) = step(&rule.check, before.state, observation, sample.time);
            let value = match observation {
                Observation::Value(v) => Some(v),
                _ => None,
            };
            let alert_id = self
                .record(&name, &rule, sample, before, state, value, &mut notices)
                .await?;
            self.tracked.insert(
                (name.clone(), sample.device.clone()),
                Tracked { state, alert_id },
            );
        }
        Ok(notices)
    }

    /// Writes one transition; returns the id of the alert that is open afterwards.
    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        name: &str,
        rule: &Rule,
        sample: &Sample,
        before: Tracked,
        state: Machine,
        value: Option<f64>,
        notices: &mut Vec<Notice>,
    ) -> Result<Option<i64>, StoreError> {
        let store = &self.store;
        let now = sample.time;
        let device = sample.device.as_str();
        let channels = || {
            rule.spec
                .notify
                .iter()
                .map(|c| c.as_str().to_owned())
                .collect::<Vec<_>>()
        };
        match (before.state, state, before.alert_id) {
            (Machine::Inactive, Machine::Pending { .. }, _) => {
                let (alert, _) = store
                    .open_alert(
                        name,
                        device,
                        AlertState::Pending,
                        &rule.severity,
                        value,
                        now,
                    )
                    .await?;
                Ok(Some(alert.id))
            }
            (Machine::Inactive, Machine::Firing { .. }, _) => {
                let channels = channels();
                let (alert, created) = store
                    .open_alert_notifying(
                        name,
                        device,
                        AlertState::Firing,
                        &rule.severity,
                        value,
                        now,
                        &channels,
                    )
                    .await?;
                // An alert already open (another evaluator got there first) is only
                // notified if this evaluator is the one that makes it fire.
                let fired = created
                    || (alert.state == AlertState::Pending
                        && store
                            .transition_alert_notifying(
                                alert.id,
                                AlertState::Pending,
                                AlertState::Firing,
                                value,
                                now,
                                &channels,
                            )
                            .await?);
                if fired {
                    notices.push(Notice {
                        alert: store.get_alert(alert.id).await?,
                        event: NoticeEvent::Firing,
                        channels,
                    });
                }
                Ok(Some(alert.id))
            }
            (Machine::Pending { .. }, Machine::Firing { .. }, Some(id)) => {
                if store
                    .transition_alert_notifying(
                        id,
                        AlertState::Pending,
                        AlertState::Firing,
                        value,
                        now,
                        &channels(),
                    )
                    .await?
                {
                    notices.push(Notice {
                        alert: store.get_alert(id).await?,
                        event: NoticeEvent::Firing,
                        channels: channels(),
                    });
                }
                Ok(Some(id))
            }
            (Machine::Pending { .. }, Machine::Inactive, Some(id)) => {
                store.discard_pending_alert(id).await?;
                Ok(None)
            }
            (Machine::Firing { .. }, Machine::Inactive, Some(id)) => {
                if store
                    .transition_alert_notifying(
                        id,
                        AlertState::Firing,
                        AlertState::Resolved,
                        value,
                        now,
                        &channels(),
                    )
                    .await?
                {
                    notices.push(Notice {
                        alert: store.get_alert(id).await?,
                        event: NoticeEvent::Resolved,
                        channels: channels(),
                    });
                }
                Ok(None)
            }
            // A pending or firing state without a stored alert cannot come from the store;
            // open one so the state and the table agree again.
            (Machine::Pending { .. } | Machine::Firing { .. }, _, None)
                if !matches!(state, Machine::Inactive) =>
            {
                let stored = if matches!(state, Machine::Firing { .. }) {
                    AlertState::Firing
                } else {
                    AlertState::Pending
                };
                let (alert, _) = store
                    .open_alert(name, device, stored, &rule.severity, value, now)
                    .await?;
                Ok(Some(alert.id))
            }
            (_, Machine::Inactive, _) => Ok(None),
            (_, _, id) => Ok(id),
        }
    }
}

/// What a sample says about a rule's subject, if anything.
fn observation(spec: &AlertRuleSpec, kind: &SampleKind) -> Option<Observation> {
    match (&spec.condition, kind) {
        (Condition::Offline(_), SampleKind::Values(_)) => Some(Observation::Online),
        (Condition::Offline(_), SampleKind::Failed { offline: true, .. }) => {
            Some(Observation::Offline)
        }
        (Condition::Offline(_), SampleKind::Failed { offline: false, .. }) => None,
        (_, SampleKind::Values(values)) => {
            let register = spec.register.as_ref()?;
            values
                .iter()
                .find(|(name, _)| name == register.as_str())
                .map(|(_, v)| Observation::Value(*v))
        }
        (_, SampleKind::Failed { .. }) => None,
    }
}
