//! The work queue that feeds reconciles: triggers in, one scope at a time out.
//!
//! Like kube-runtime's scheduler: a scope (what one reconcile covers) is queued at most once,
//! with the earliest deadline asked for and the union of the reasons; a scope that is being
//! reconciled is never handed out again until it is finished, and a trigger that arrives in the
//! meantime queues it once more for afterwards. It knows nothing of what a reconcile does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// What a reconcile asks for when it ends, as in kube-runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// Run again after this long (a poll interval, a backoff).
    After(Duration),
    /// Wait for the next trigger.
    AwaitChange,
}

#[derive(Debug)]
struct Pending<R> {
    due: Instant,
    reasons: BTreeSet<R>,
}

#[derive(Debug)]
struct State<K, R> {
    pending: BTreeMap<K, Pending<R>>,
    running: BTreeSet<K>,
    closed: bool,
}

/// A deduplicating, delay-aware queue of scopes `K` with trigger reasons `R`.
#[derive(Debug)]
pub struct WorkQueue<K, R> {
    state: Mutex<State<K, R>>,
    changed: Notify,
}

/// A scope handed out by [`WorkQueue::next`], with every reason it was queued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Work<K, R> {
    /// The scope to reconcile.
    pub scope: K,
    /// Why, deduplicated and sorted.
    pub reasons: BTreeSet<R>,
}

impl<K: Ord + Clone, R: Ord + Clone> Default for WorkQueue<K, R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Ord + Clone, R: Ord + Clone> WorkQueue<K, R> {
    /// An empty, open queue.
    pub fn new() -> Self {
        WorkQueue {
            state: Mutex::new(State {
                pending: BTreeMap::new(),
                running: BTreeSet::new(),
                closed: false,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K, R>> {
        // A panic while holding this lock cannot leave the maps half-changed (every update
        // is a single insert or remove), so a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `scope` to run now.
    pub fn trigger(&self, scope: K, reason: R) {
        self.schedule(scope, reason, Duration::ZERO);
    }

    /// Queues `scope` to run after `delay`. If it is already queued, the earlier deadline is
    /// kept and the reasons are merged.
    pub fn schedule(&self, scope: K, reason: R, delay: Duration) {
        let due = Instant::now() + delay;
        let mut state = self.lock();
        if state.closed {
            return;
        }
        let entry = state.pending.entry(scope).or_insert_with(|| Pending {
            due,
            reasons: BTreeSet::new(),
        });
        entry.due = entry.due.min(due);
        entry.reasons.insert(reason);
        drop(state);
        self.changed.notify_waiters();
        self.changed.notify_one();
    }

    /// Waits for the next scope that is due and not running, and marks it running. Returns
    /// `None` once the queue is closed.
    pub async fn next(&self) -> Option<Work<K, R>> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Register interest before looking, so that a change between the look and the
            // wait is not missed.
            notified.as_mut().enable();
            let wait_until = {
                let mut state = self.lock();
                if state.closed {
                    return None;
                }
                let now = Instant::now();
                let candidate = state
                    .pending
                    .iter()
                    .filter(|(scope, _)| !state.running.contains(*scope))
                    .min_by_key(|(_, p)| p.due)
                    .map(|(scope, p)| (scope.clone(), p.due));
                match candidate {
                    Some((scope, due)) if due <= now => {
                        let reasons = state
                            .pending
                            .remove(&scope)
                            .map(|p| p.reasons)
                            .unwrap_or_default();
                        state.running.insert(scope.clone());
                        return Some(Work { scope, reasons });
                    }
                    Some((_, due)) => Some(due),
                    None => None,
                }
            };
            match wait_until {
                Some(due) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(due) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Marks `scope` finished and queues it again as the reconcile asked.
    pub fn finish(&self, scope: &K, requeue: Requeue, reason: R) {
        self.lock().running.remove(scope);
        match requeue {
            Requeue::After(delay) => self.schedule(scope.clone(), reason, delay),
            Requeue::AwaitChange => {
                self.changed.notify_waiters();
                self.changed.notify_one();
            }
        }
    }

    /// How many scopes wait (running ones not counted).
    pub fn len(&self) -> usize {
        self.lock().pending.len()
    }

    /// Whether no scope waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `scope` is being reconciled now.
    pub fn is_running(&self, scope: &K) -> bool {
        self.lock().running.contains(scope)
    }

    /// Stops handing out work: every `next` returns `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_waiters();
        self.changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::sync::Arc;

    type Queue = WorkQueue<&'static str, &'static str>;

    async fn next_within(
        queue: &Queue,
        limit: Duration,
    ) -> Option<Work<&'static str, &'static str>> {
        tokio::time::timeout(limit, queue.next())
            .await
            .ok()
            .flatten()
    }

    #[tokio::test(start_paused = true)]
    async fn triggers_for_one_scope_should_be_merged_into_one_work_item() {
        let queue = Queue::new();
        queue.trigger("repo", "poll");
        queue.trigger("repo", "webhook");
        queue.trigger("repo", "poll");
        let work = next_within(&queue, Duration::from_secs(1)).await.unwrap();
        assert_eq!(work.scope, "repo");
        assert_eq!(
            work.reasons.into_iter().collect::<Vec<_>>(),
            ["poll", "webhook"]
        );
        assert!(queue.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn scheduler_should_keep_the_earlier_deadline() {
        let queue = Queue::new();
        queue.schedule("repo", "drift", Duration::from_secs(60));
        queue.schedule("repo", "poll", Duration::from_secs(5));
        queue.schedule("repo", "late", Duration::from_secs(120));
        let start = Instant::now();
        let work = queue.next().await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(work.reasons.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_running_scope_should_not_be_handed_out_twice() {
        let queue = Queue::new();
        queue.trigger("repo", "poll");
        let first = queue.next().await.unwrap();
        assert!(queue.is_running(&"repo"));
        queue.trigger("repo", "webhook");
        assert!(
            next_within(&queue, Duration::from_secs(30)).await.is_none(),
            "a second reconcile of a running scope must wait"
        );
        queue.finish(&first.scope, Requeue::AwaitChange, "done");
        let second = next_within(&queue, Duration::from_secs(1)).await.unwrap();
        assert_eq!(second.reasons.into_iter().collect::<Vec<_>>(), ["webhook"]);
    }

    #[tokio::test(start_paused = true)]
    async fn other_scopes_should_run_while_one_is_busy() {
        let queue = Queue::new();
        queue.trigger("homelab", "poll");
        queue.trigger("plant", "poll");
        let a = queue.next().await.unwrap();
        let b = queue.next().await.unwrap();
        assert_ne!(a.scope, b.scope);
    }

    #[tokio::test(start_paused = true)]
    async fn finish_with_requeue_after_should_bring_the_scope_back_after_the_delay() {
        let queue = Queue::new();
        queue.trigger("repo", "poll");
        let work = queue.next().await.unwrap();
        queue.finish(&work.scope, Requeue::After(Duration::from_secs(30)), "poll");
        let start = Instant::now();
        let again = queue.next().await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        assert_eq!(again.scope, "repo");
    }

    #[tokio::test(start_paused = true)]
    async fn a_trigger_should_wake_a_waiting_worker_before_the_scheduled_deadline() {
        let queue = Arc::new(Queue::new());
        queue.schedule("repo", "poll", Duration::from_secs(300));
        let worker = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.next().await })
        };
        tokio::time::sleep(Duration::from_secs(10)).await;
        queue.trigger("repo", "webhook");
        let work = tokio::time::timeout(Duration::from_secs(1), worker)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(work.reasons.contains("webhook"));
    }

    #[tokio::test(start_paused = true)]
    async fn close_should_release_every_waiting_worker() {
        let queue = Arc::new(Queue::new());
        let worker = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.next().await })
        };
        tokio::task::yield_now().await;
        queue.close();
        let got = tokio::time::timeout(Duration::from_secs(1), worker)
            .await
            .unwrap()
            .unwrap();
        assert!(got.is_none());
        queue.trigger("repo", "poll");
        assert!(queue.is_empty(), "a closed queue takes no more work");
    }
}
