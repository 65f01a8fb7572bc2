//! What one reconcile does with a fresh plan, decided without I/O: apply an approved run,
//! wait for a window, say the world is in sync, keep a run waiting, or record a new one, and
//! which recorded runs that supersedes. `run.rs` reads the runs, calls these functions and
//! carries out what they say; the rules live here, table-tested.

use chrono::{DateTime, Utc};

use crate::policy::{Requirement, run_requirement};

/// A run already recorded for the scope, as far as deciding needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownRun<'a> {
    /// The run.
    pub id: i64,
    /// The hash of the plan it was recorded with.
    pub plan_hash: &'a str,
    /// The commit it was planned from.
    pub commit: &'a str,
}

impl KnownRun<'_> {
    fn is(&self, commit: &str, hash: &str) -> bool {
        self.plan_hash == hash && self.commit == commit
    }
}

/// What to do with the fresh plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// An approved run is exactly the fresh plan: apply it (inside its window).
    ApplyApproved {
        /// The run.
        run_id: i64,
    },
    /// Nothing to do: the world matches the commit.
    InSync,
    /// The same plan of the same commit already waits for approval; record nothing.
    StillWaiting {
        /// The waiting run.
        run_id: i64,
    },
    /// Record a new run for the plan (it supersedes the scope's waiting runs).
    RecordNew,
}

/// [`Next`], plus the recorded runs it makes obsolete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What to do.
    pub next: Next,
    /// Approved runs whose plan is no longer the fresh one: superseded, never applied.
    pub supersede_approved: Vec<i64>,
    /// Waiting runs left with nothing to do (only when the plan is empty).
    pub supersede_waiting: Vec<i64>,
}

/// Decides what a reconcile of `commit` does, given its fresh plan's `hash` (and whether that
/// plan is empty) and the scope's approved and waiting runs, oldest first. An approved run is
/// applied only when it is exactly the fresh plan of the same commit; approved runs looked at
/// before it that are not are superseded.
pub fn decide(
    commit: &str,
    hash: &str,
    plan_is_empty: bool,
    approved: &[KnownRun<'_>],
    waiting: &[KnownRun<'_>],
) -> Decision {
    let mut supersede_approved = Vec::new();
    for run in approved {
        if run.is(commit, hash) {
            return Decision {
                next: Next::ApplyApproved { run_id: run.id },
                supersede_approved,
                supersede_waiting: Vec::new(),
            };
        }
        supersede_approved.push(run.id);
    }
    let (next, supersede_waiting) = if plan_is_empty {
        (Next::InSync, waiting.iter().map(|r| r.id).collect())
    } else if let Some(same) = waiting.iter().find(|r| r.is(commit, hash)) {
        (Next::StillWaiting { run_id: same.id }, Vec::new())
    } else {
        (Next::RecordNew, Vec::new())
    };
    Decision {
        next,
        supersede_approved,
        supersede_waiting,
    }
}

/// What a new run needs: the strictest of its actions' requirements, and at least one
/// approval for a drift run unless self-healing is on (correcting drift is a person's call).
pub fn new_run_requirement(
    per_action: &[Requirement],
    drift: bool,
    self_heal: bool,
) -> Requirement {
    let mut needs = run_requirement(per_action);
    if drift && !self_heal && needs.approvals == 0 {
        needs.approvals = 1;
    }
    needs
}

/// When a run that needs nothing more may be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Approvals are missing: wait for them.
    Approvals,
    /// Approved, but outside its policies' windows: wait for the next opening (`None`: none
    /// within a week).
    Window(Option<DateTime<Utc>>),
    /// Apply now.
    Open,
}

/// Whether a run that needs `needs` and has been `approved` (or needs no approval) applies
/// at `now`. Windows hold for zero-approval runs too.
pub fn gate(needs: &Requirement, approved: bool, now: DateTime<Utc>) -> Gate {
    if !approved && needs.approvals > 0 {
        Gate::Approvals
    } else if !needs.window_open(now) {
        Gate::Window(needs.next_open(now))
    } else {
        Gate::Open
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use chrono::TimeZone as _;

    fn run<'a>(id: i64, commit: &'a str, hash: &'a str) -> KnownRun<'a> {
        KnownRun {
            id,
            plan_hash: hash,
            commit,
        }
    }

    #[test]
    fn decide_should_follow_the_table() {
        // (what happens, fresh plan empty?, approved runs, waiting runs) -> decision; the
        // fresh plan is always hash "h" of commit "c".
        type Case<'a> = (
            &'a str,
            bool,
            Vec<KnownRun<'a>>,
            Vec<KnownRun<'a>>,
            Decision,
        );
        let d = |next, sa: Vec<i64>, sw: Vec<i64>| Decision {
            next,
            supersede_approved: sa,
            supersede_waiting: sw,
        };
        let cases: Vec<Case<'_>> = vec![
            (
                "nothing recorded, nothing to do",
                true,
                vec![],
                vec![],
                d(Next::InSync, vec![], vec![]),
            ),
            (
                "an empty plan supersedes every waiting run",
                true,
                vec![],
                vec![run(1, "c", "h"), run(2, "b", "x")],
                d(Next::InSync, vec![], vec![1, 2]),
            ),
            (
                "the approved run is the fresh plan: apply it",
                false,
                vec![run(3, "c", "h")],
                vec![run(4, "c", "h")],
                d(Next::ApplyApproved { run_id: 3 }, vec![], vec![]),
            ),
            (
                "an approved run of another plan is superseded, never applied",
                false,
                vec![run(3, "c", "old")],
                vec![],
                d(Next::RecordNew, vec![3], vec![]),
            ),
            (
                "the same hash from another commit is not the approved plan",
                false,
                vec![run(3, "b", "h")],
                vec![],
                d(Next::RecordNew, vec![3], vec![]),
            ),
            (
                "approved runs before the matching one are superseded, later ones kept",
                false,
                vec![run(3, "c", "old"), run(5, "c", "h"), run(6, "c", "other")],
                vec![],
                d(Next::ApplyApproved { run_id: 5 }, vec![3], vec![]),
            ),
            (
                "the same plan already waits: record nothing",
                false,
                vec![],
                vec![run(7, "b", "x"), run(8, "c", "h")],
                d(Next::StillWaiting { run_id: 8 }, vec![], vec![]),
            ),
            (
                "a changed plan is recorded anew (the store supersedes what waits)",
                false,
                vec![],
                vec![run(7, "c", "x")],
                d(Next::RecordNew, vec![], vec![]),
            ),
            (
                "an approved run whose world converged anyway is superseded",
                true,
                vec![run(3, "c", "old")],
                vec![],
                d(Next::InSync, vec![3], vec![]),
            ),
        ];
        for (what, empty, approved, waiting, want) in cases {
            assert_eq!(decide("c", "h", empty, &approved, &waiting), want, "{what}");
        }
    }

    fn needs(approvals: u32) -> Requirement {
        Requirement {
            approvals,
            ..Requirement::automatic()
        }
    }

    #[test]
    fn drift_should_need_a_person_unless_self_healing() {
        assert_eq!(new_run_requirement(&[needs(0)], false, false).approvals, 0);
        assert_eq!(new_run_requirement(&[needs(0)], true, false).approvals, 1);
        assert_eq!(new_run_requirement(&[needs(0)], true, true).approvals, 0);
        assert_eq!(
            new_run_requirement(&[needs(2), needs(0)], true, false).approvals,
            2
        );
        assert_eq!(new_run_requirement(&[], false, false).approvals, 0);
    }

    #[test]
    fn gate_should_hold_for_approvals_first_then_windows_even_without_approvals() {
        let at = |h| Utc.with_ymd_and_hms(2026, 12, 7, h, 10, 0).unwrap();
        let windowed = |approvals| Requirement {
            windows: vec![vec![
                serde_json::from_value(serde_json::json!({
                    "start": "10:00", "end": "10:30", "timezone": "UTC"
                }))
                .unwrap(),
            ]],
            ..needs(approvals)
        };
        assert_eq!(gate(&needs(1), false, at(10)), Gate::Approvals);
        assert_eq!(gate(&needs(1), true, at(10)), Gate::Open);
        assert_eq!(gate(&needs(0), false, at(3)), Gate::Open);
        assert_eq!(gate(&windowed(1), false, at(10)), Gate::Approvals);
        assert_eq!(gate(&windowed(1), true, at(10)), Gate::Open);
        assert_eq!(
            gate(&windowed(0), false, at(11)),
            Gate::Window(Some(Utc.with_ymd_and_hms(2026, 12, 8, 10, 0, 0).unwrap())),
            "a zero-approval run waits for its window too"
        );
    }
}
