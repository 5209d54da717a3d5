//! How far this node has applied the stream: the applied sequence (watched by reads that must
//! see a write), the writers waiting for their own write's outcome, and the sequence a request
//! wrote (noted for its answer's `x-runledger-seq`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use crate::error::Result;
use crate::store::WriteOutcome;

type Waiter = oneshot::Sender<Result<WriteOutcome>>;

pub struct Progress {
    applied: watch::Sender<u64>,
    waiters: Mutex<HashMap<String, Waiter>>,
}

impl Progress {
    /// Progress starting at `applied`, the sequence the database holds.
    pub fn new(applied: u64) -> Progress {
        Progress {
            applied: watch::Sender::new(applied),
            waiters: Mutex::default(),
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

    /// Registers a writer waiting for the outcome of the message with id `id`.
    pub fn expect(&self, id: &str) -> oneshot::Receiver<Result<WriteOutcome>> {
        let (sender, receiver) = oneshot::channel();
        self.lock().insert(id.to_string(), sender);
        receiver
    }

    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Hands the outcome of message `id` to its writer, if one waits here.
    pub fn deliver(&self, id: &str, outcome: Result<WriteOutcome>) {
        if let Some(waiter) = self.lock().remove(id) {
            let _ = waiter.send(outcome);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiter>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
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
