//! How far this node has applied the stream: the applied sequence (watched by reads that must
//! see a write), the writers waiting for their own write's outcome, why the applier is stuck
//! if it is, and the sequence a request wrote (noted for its answer's `x-runledger-seq`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use super::envelope::Origin;
use crate::error::Result;
use crate::store::WriteOutcome;

/// Where a writer's outcome goes once this node applied its message.
pub type Waiter = oneshot::Sender<Result<WriteOutcome>>;

pub struct Progress {
    applied: watch::Sender<u64>,
    waiters: Mutex<HashMap<Origin, Waiter>>,
    /// Why the applier cannot go on, while it cannot.
    stalled: Mutex<Option<String>>,
}

impl Progress {
    /// Progress starting at `applied`, the sequence the database holds.
    pub fn new(applied: u64) -> Progress {
        Progress {
            applied: watch::Sender::new(applied),
            waiters: Mutex::default(),
            stalled: Mutex::default(),
        }
    }

    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Whether the node applied `seq` within `wait`.
    pub async fn wait_for(&self, seq: u64, wait: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        tokio::time::timeout(wait, applied.wait_for(|applied| *applied >= seq))
            .await
            .is_ok_and(|changed| changed.is_ok())
    }

    /// Announces that everything through `seq` is applied (and durable).
    pub fn advance(&self, seq: u64) {
        metrics::gauge!(crate::metrics::APPLIED_SEQ).set(seq as f64);
        self.applied.send_if_modified(|applied| {
            let moved = seq > *applied;
            *applied = (*applied).max(seq);
            moved
        });
    }

    /// Registers a writer waiting for the outcome of the message from `origin`.
    pub fn expect(&self, origin: Origin, waiter: Waiter) {
        let mut waiters = self.lock();
        // A waiter whose writer went away is dropped when its message is applied; these
        // only linger for messages never applied here (a gateway's data writes).
        waiters.retain(|_, waiter| !waiter.is_closed());
        waiters.insert(origin, waiter);
    }

    /// Hands the outcome of the message from `origin` to its writer, if one waits here.
    pub fn deliver(&self, origin: &Origin, outcome: Result<WriteOutcome>) {
        if let Some(waiter) = self.lock().remove(origin) {
            let _ = waiter.send(outcome);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Origin, Waiter>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records why the applier cannot go on (`None`: it goes on).
    pub fn set_stalled(&self, why: Option<String>) {
        *self.stalled.lock().unwrap_or_else(|e| e.into_inner()) = why;
    }

    /// Why the applier cannot go on, if it cannot.
    pub fn stalled(&self) -> Option<String> {
        self.stalled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

tokio::task_local! {
    static WRITTEN: Arc<AtomicU64>;
}

/// Notes that the current request's write is at stream sequence `seq` (the highest wins).
pub fn note_written(seq: u64) {
    let _ = WRITTEN.try_with(|written| written.fetch_max(seq, Ordering::AcqRel));
}

/// Runs a request's future, returning what it wrote to the stream (0: nothing).
pub async fn noting_writes<F: Future>(future: F) -> (F::Output, u64) {
    let written = Arc::new(AtomicU64::new(0));
    let output = WRITTEN.scope(written.clone(), future).await;
    (output, written.load(Ordering::Acquire))
}
