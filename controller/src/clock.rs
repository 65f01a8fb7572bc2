//! The one wall clock the controller's I/O layers read (the API, applying a run): the system
//! clock in production, a manual one in tests. Pure layers take `now` as a parameter instead.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};

/// The wall clock of the API and the apply path: the system clock, or a manual clock that tests
/// set (so lockout, token expiry and window checks can be tested without sleeping).
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Arc<Mutex<DateTime<Utc>>>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock that stays at `start` until it is set or advanced.
    pub fn manual(start: DateTime<Utc>) -> Clock {
        Clock {
            manual: Some(Arc::new(Mutex::new(start))),
        }
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        match &self.manual {
            None => Utc::now(),
            Some(t) => match t.lock() {
                Ok(t) => *t,
                Err(poisoned) => *poisoned.into_inner(),
            },
        }
    }

    /// Moves a manual clock forward; does nothing on the system clock.
    pub fn advance(&self, by: Duration) {
        if let Some(t) = &self.manual {
            let mut t = match t.lock() {
                Ok(t) => t,
                Err(poisoned) => poisoned.into_inner(),
            };
            *t += by;
        }
    }
}
