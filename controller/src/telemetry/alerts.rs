//! Alert evaluation: one rule on one device, fed observation by observation.
//!
//! **Pure**: the state machine takes `now` and an observation and returns the next state and
//! the event to record, if any. Storing alerts and sending notifications happen elsewhere.
//!
//! States: inactive → pending (condition holds, `for` not yet over) → firing → inactive again
//! once the value is back past the threshold by the hysteresis. A value that flaps around the
//! threshold never opens a second alert while one is firing, and a dip shorter than `for`
//! never fires at all.

use chrono::{DateTime, Utc};
use mycopod_specs::kinds::Condition;
use serde::{Deserialize, Serialize};

/// What one poll (or push) says about the rule's subject.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Observation {
    /// A fresh value of the rule's register.
    Value(f64),
    /// The device answered (its poll succeeded).
    Online,
    /// The device is offline (it failed `offlineAfter` polls in a row).
    Offline,
}

/// Where one rule stands for one device.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RuleState {
    /// The condition does not hold.
    #[default]
    Inactive,
    /// The condition holds since `since`, not yet for long enough.
    Pending {
        /// When it started to hold.
        since: DateTime<Utc>,
    },
    /// The alert is open.
    Firing {
        /// When it fired.
        since: DateTime<Utc>,
    },
}

/// What a transition means to the outside world.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AlertEvent {
    /// The alert opened: record it and notify.
    Fired {
        /// The value that made it fire (`None` for offline).
        value: Option<f64>,
    },
    /// The alert closed: record it and notify.
    Resolved {
        /// The value that cleared it (`None` for back online).
        value: Option<f64>,
    },
}

/// The parts of an `AlertRule` the evaluator needs.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleCheck {
    /// When the rule's register is out of bounds: `below`, `above`, `outside` or `offline`.
    pub condition: Condition,
    /// How long it must hold before firing.
    pub hold: std::time::Duration,
    /// How far back past the threshold the value must come before the alert clears.
    pub hysteresis: f64,
}

/// How an observation relates to the condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// The condition holds.
    Breached,
    /// The condition does not hold, and the value is past the hysteresis band.
    Clear,
    /// The condition does not hold, but the value is within the hysteresis band.
    Recovering,
    /// The observation says nothing about this condition (missing data, NaN).
    Unknown,
}

fn classify(check: &RuleCheck, observation: Observation) -> Reading {
    let h = check.hysteresis.abs();
    match (&check.condition, observation) {
        (Condition::Offline(true), Observation::Offline) => Reading::Breached,
        (Condition::Offline(true), Observation::Online | Observation::Value(_)) => Reading::Clear,
        (Condition::Offline(false), _) => Reading::Unknown,
        (_, Observation::Online | Observation::Offline) => Reading::Unknown,
        (_, Observation::Value(v)) if !v.is_finite() => Reading::Unknown,
        (Condition::Above(limit), Observation::Value(v)) => {
            if v > *limit {
                Reading::Breached
            } else if v <= limit - h {
                Reading::Clear
            } else {
                Reading::Recovering
            }
        }
        (Condition::Below(limit), Observation::Value(v)) => {
            if v < *limit {
                Reading::Breached
            } else if v >= limit + h {
                Reading::Clear
            } else {
                Reading::Recovering
            }
        }
        (Condition::Outside([lo, hi]), Observation::Value(v)) => {
            let (lo, hi) = if lo <= hi { (*lo, *hi) } else { (*hi, *lo) };
            if v < lo || v > hi {
                Reading::Breached
            } else if v >= lo + h && v <= hi - h {
                Reading::Clear
            } else {
                Reading::Recovering
            }
        }
    }
}

/// Advances one rule's state by one observation at `now`.
pub fn step(
    check: &RuleCheck,
    state: RuleState,
    observation: Observation,
    now: DateTime<Utc>,
) -> (RuleState, Option<AlertEvent>) {
    let value = match observation {
        Observation::Value(v) => Some(v),
        _ => None,
    };
    let hold = chrono::Duration::from_std(check.hold).unwrap_or(chrono::Duration::MAX);
    match (state, classify(check, observation)) {
        (_, Reading::Unknown) => (state, None),
        (RuleState::Inactive, Reading::Breached) if hold <= chrono::Duration::zero() => (
            RuleState::Firing { since: now },
            Some(AlertEvent::Fired { value }),
        ),
        (RuleState::Inactive, Reading::Breached) => (RuleState::Pending { since: now }, None),
        (RuleState::Inactive, _) => (RuleState::Inactive, None),
        (RuleState::Pending { since }, Reading::Breached) => {
            if now - since >= hold {
                (
                    RuleState::Firing { since: now },
                    Some(AlertEvent::Fired { value }),
                )
            } else {
                (RuleState::Pending { since }, None)
            }
        }
        // A dip shorter than `for` is forgotten.
        (RuleState::Pending { .. }, _) => (RuleState::Inactive, None),
        (RuleState::Firing { .. }, Reading::Clear) => {
            (RuleState::Inactive, Some(AlertEvent::Resolved { value }))
        }
        (RuleState::Firing { since }, Reading::Breached | Reading::Recovering) => {
            (RuleState::Firing { since }, None)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use chrono::TimeZone;
    use std::time::Duration;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn below(limit: f64, hold_secs: u64, hysteresis: f64) -> RuleCheck {
        RuleCheck {
            condition: Condition::Below(limit),
            hold: Duration::from_secs(hold_secs),
            hysteresis,
        }
    }

    /// Feeds (second, observation) pairs and returns the events with their seconds.
    fn run(check: &RuleCheck, feed: &[(i64, Observation)]) -> Vec<(i64, AlertEvent)> {
        let mut state = RuleState::Inactive;
        let mut events = Vec::new();
        for (secs, obs) in feed {
            let (next, event) = step(check, state, *obs, at(*secs));
            state = next;
            if let Some(e) = event {
                events.push((*secs, e));
            }
        }
        events
    }

    use Observation::{Offline, Online, Value};

    #[test]
    fn an_alert_should_fire_only_after_the_condition_held_for_the_whole_duration() {
        let check = below(2.0, 300, 0.2);
        let feed: Vec<(i64, Observation)> = (0..=7).map(|i| (i * 60, Value(1.5))).collect();
        let events = run(&check, &feed);
        assert_eq!(events, [(300, AlertEvent::Fired { value: Some(1.5) })]);
    }

    #[test]
    fn a_dip_shorter_than_for_should_never_fire() {
        let check = below(2.0, 300, 0.2);
        let feed = [
            (0, Value(1.0)),
            (120, Value(1.0)),
            (240, Value(2.5)),
            (360, Value(1.0)),
            (480, Value(1.0)),
        ];
        assert_eq!(run(&check, &feed), []);
    }

    #[test]
    fn a_firing_alert_should_resolve_only_past_the_hysteresis() {
        let check = below(2.0, 0, 0.2);
        let feed = [
            (0, Value(1.9)),   // fires at once (no `for`)
            (10, Value(2.1)),  // above the threshold but inside the band: still firing
            (20, Value(1.95)), // flaps back under: no second alert
            (30, Value(2.19)),
            (40, Value(2.2)), // past 2.0 + 0.2: resolves
            (50, Value(2.5)),
        ];
        assert_eq!(
            run(&check, &feed),
            [
                (0, AlertEvent::Fired { value: Some(1.9) }),
                (40, AlertEvent::Resolved { value: Some(2.2) })
            ]
        );
    }

    #[test]
    fn above_and_outside_should_mirror_below() {
        let above = RuleCheck {
            condition: Condition::Above(80.0),
            hold: Duration::ZERO,
            hysteresis: 5.0,
        };
        let feed = [(0, Value(81.0)), (1, Value(76.0)), (2, Value(75.0))];
        assert_eq!(
            run(&above, &feed),
            [
                (0, AlertEvent::Fired { value: Some(81.0) }),
                (2, AlertEvent::Resolved { value: Some(75.0) })
            ]
        );
        let outside = RuleCheck {
            condition: Condition::Outside([10.0, 20.0]),
            hold: Duration::ZERO,
            hysteresis: 1.0,
        };
        let feed = [
            (0, Value(9.0)),
            (1, Value(10.5)),
            (2, Value(11.0)),
            (3, Value(21.0)),
            (4, Value(19.0)),
        ];
        assert_eq!(
            run(&outside, &feed),
            [
                (0, AlertEvent::Fired { value: Some(9.0) }),
                (2, AlertEvent::Resolved { value: Some(11.0) }),
                (3, AlertEvent::Fired { value: Some(21.0) }),
                (4, AlertEvent::Resolved { value: Some(19.0) })
            ]
        );
    }

    #[test]
    fn an_offline_rule_should_fire_on_offline_and_resolve_when_the_device_answers() {
        let check = RuleCheck {
            condition: Condition::Offline(true),
            hold: Duration::from_secs(60),
            hysteresis: 0.0,
        };
        let feed = [
            (0, Offline),
            (30, Offline),
            (60, Offline),
            (90, Offline),
            (100, Online),
        ];
        assert_eq!(
            run(&check, &feed),
            [
                (60, AlertEvent::Fired { value: None }),
                (100, AlertEvent::Resolved { value: None })
            ]
        );
    }

    #[test]
    fn missing_data_should_neither_fire_nor_resolve_a_value_rule() {
        let check = below(2.0, 0, 0.0);
        let feed = [
            (0, Value(1.0)),
            (1, Offline),
            (2, Value(f64::NAN)),
            (3, Online),
        ];
        assert_eq!(
            run(&check, &feed),
            [(0, AlertEvent::Fired { value: Some(1.0) })]
        );
    }
}
