//! The single writer: one thread owns every write transaction. Requests queue on a channel
//! bounded both in requests and in the bytes they hold; the thread takes everything queued (up
//! to a weight limit) into one transaction, commits it durably (one fsync for the whole group),
//! then answers each request. Many small concurrent reports therefore cost few fsyncs, and
//! nothing is acknowledged before it is durable.
//!
//! Each organization has a share of a group ([`ORG_SHARE`]): past it, its further writes wait
//! for the next group (in their order), while other organizations' writes queued behind them
//! join this one. So one tenant's flood of large batches delays another's small write by a
//! group of at most one batch of its own, not by everything it queued.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc, oneshot};

use rustc_hash::{FxHashMap, FxHashSet};

use super::WriteContext;
use super::batch::{WriteOp, WriteOutcome};
use super::handle::Handle;
use crate::error::{Error, Result};
use crate::model::OrgId;

/// The most work (task runs, roughly) one group commit takes on.
const MAX_GROUP_WEIGHT: usize = 50_000;
/// The most work of one organization a group takes on (a largest batch); past it, the
/// organization's further writes wait for the next group.
const ORG_SHARE: usize = crate::model::MAX_REPORT_BATCH;

/// Submitters that may wait for room at once; past them a write is refused at once, so that
/// waiting writes (each holding its decoded batch) cannot pile up either.
const MAX_WAITING: usize = 64;

type Reply = oneshot::Sender<Result<WriteOutcome>>;

/// A queued write, holding its share of the queue's byte budget until it is applied.
struct Queued {
    op: WriteOp,
    reply: Reply,
    _room: Room,
}

/// A queued write's share of the queue (and of its gauges), given back when dropped.
struct Room(OwnedSemaphorePermit);

impl Room {
    fn new(permit: OwnedSemaphorePermit) -> Room {
        metrics::gauge!(crate::metrics::QUEUE_DEPTH).increment(1);
        metrics::gauge!(crate::metrics::QUEUE_BYTES).increment(permit.num_permits() as f64);
        Room(permit)
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        metrics::gauge!(crate::metrics::QUEUE_DEPTH).decrement(1);
        metrics::gauge!(crate::metrics::QUEUE_BYTES).decrement(self.0.num_permits() as f64);
    }
}

/// A handle to the writer thread.
pub struct Writer {
    /// `None` once closed: the thread drains the queue and stops when the last sender is gone.
    sender: RwLock<Option<mpsc::Sender<Queued>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// How long a submitter waits for room in a full queue before it is told to retry.
    queue_wait: Duration,
    /// The bytes queued writes may hold ([`WriteOp::bytes`]), as permits.
    room: Arc<Semaphore>,
    room_bytes: usize,
    waiting: Semaphore,
}

/// A write that was queued; await it with [`outcome`] once durable.
pub type PendingWrite = oneshot::Receiver<Result<WriteOutcome>>;

impl Writer {
    /// Starts the writer thread with room for `queue` waiting requests holding at most
    /// `queue_bytes` between them.
    pub fn spawn(
        db: Arc<Handle>,
        context: Arc<WriteContext>,
        queue: usize,
        queue_bytes: usize,
        queue_wait: Duration,
    ) -> Writer {
        let queue_bytes = queue_bytes.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        let (sender, receiver) = mpsc::channel(queue);
        let thread = std::thread::Builder::new()
            .name("runledger-writer".into())
            .spawn(move || run(&db, &context, receiver))
            .expect("the writer thread can be started");
        Writer {
            sender: RwLock::new(Some(sender)),
            thread: Mutex::new(Some(thread)),
            queue_wait,
            room: Arc::new(Semaphore::new(queue_bytes)),
            room_bytes: queue_bytes,
            waiting: Semaphore::new(MAX_WAITING),
        }
    }

    fn sender(&self) -> Result<mpsc::Sender<Queued>> {
        self.sender
            .read()
            .expect("never poisoned")
            .clone()
            .ok_or_else(stopped)
    }

    /// Queues a write, waiting a little for room in a full queue; past that (or when too many
    /// already wait) the write is refused as overloaded with nothing applied, so that memory
    /// stays bounded and the caller learns to back off.
    pub async fn submit(&self, op: WriteOp) -> Result<PendingWrite> {
        let (reply, pending) = oneshot::channel();
        let sender = self.sender()?;
        let bytes = op.bytes().clamp(1, self.room_bytes) as u32;
        // The usual case, a queue with room, needs no timer.
        let room = match self.room.clone().try_acquire_many_owned(bytes) {
            Ok(room) => room,
            Err(TryAcquireError::Closed) => return Err(stopped()),
            Err(TryAcquireError::NoPermits) => {
                let _turn = self.waiting.try_acquire().map_err(|_| self.overloaded())?;
                let acquire = self.room.clone().acquire_many_owned(bytes);
                match tokio::time::timeout(self.queue_wait, acquire).await {
                    Ok(Ok(room)) => room,
                    Ok(Err(_)) => return Err(stopped()),
                    Err(_) => return Err(self.overloaded()),
                }
            }
        };
        let queued = Queued {
            op,
            reply,
            _room: Room::new(room),
        };
        let waiting = match sender.try_send(queued) {
            Ok(()) => return Ok(pending),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(stopped()),
            Err(mpsc::error::TrySendError::Full(waiting)) => waiting,
        };
        let _turn = self.waiting.try_acquire().map_err(|_| self.overloaded())?;
        match sender.send_timeout(waiting, self.queue_wait).await {
            Ok(()) => Ok(pending),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => Err(self.overloaded()),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(stopped()),
        }
    }

    fn overloaded(&self) -> Error {
        let error = self.overloaded_now();
        crate::metrics::record_refused(&error);
        error
    }

    fn overloaded_now(&self) -> Error {
        let sender = self.sender.read().expect("never poisoned");
        let queued = sender
            .as_ref()
            .map_or(0, |s| s.max_capacity() - s.capacity());
        let held = (self.room_bytes - self.room.available_permits()) >> 20;
        Error::Overloaded {
            message: format!(
                "the write queue is full ({queued} writes holding {held} MiB wait for the disk); nothing was applied, retry later"
            ),
            retry_after_secs: 1,
        }
    }

    /// Queues a write and waits until it is durable.
    pub async fn write(&self, op: WriteOp) -> Result<WriteOutcome> {
        outcome(self.submit(op).await?).await
    }

    /// Refuses new writes, lets the thread finish everything already queued, and waits for it.
    /// Blocks: call it from a blocking context.
    pub fn shutdown(&self) {
        self.sender.write().expect("never poisoned").take();
        let thread = self.thread.lock().expect("never poisoned").take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The outcome of a queued write.
pub async fn outcome(pending: PendingWrite) -> Result<WriteOutcome> {
    pending.await.map_err(|_| stopped())?
}

fn stopped() -> Error {
    Error::Unavailable("the server is shutting down; the write was not applied".into())
}

fn run(db: &Handle, context: &WriteContext, mut receiver: mpsc::Receiver<Queued>) {
    // Writes held back for a later group, oldest first.
    let mut held: VecDeque<Queued> = VecDeque::new();
    loop {
        let first = match held.pop_front() {
            Some(first) => first,
            None => match receiver.blocking_recv() {
                Some(first) => first,
                None => return,
            },
        };
        let group = gather(first, &mut held, || receiver.try_recv().ok());
        let (requests, started) = (group.len(), std::time::Instant::now());
        commit_group(db, context, group);
        tracing::debug!(requests, held = held.len(), elapsed = ?started.elapsed(), "group committed");
    }
}

/// What gathering a group needs to know of a write.
trait Work {
    fn organization(&self) -> Option<OrgId>;
    fn weight(&self) -> usize;
    fn is_exclusive(&self) -> bool;
}

impl Work for Queued {
    fn organization(&self) -> Option<OrgId> {
        self.op.organization()
    }
    fn weight(&self) -> usize {
        self.op.weight()
    }
    fn is_exclusive(&self) -> bool {
        self.op.is_exclusive()
    }
}

/// A group starting with `first`: the writes held back before, then those queued (`next`),
/// up to [`MAX_GROUP_WEIGHT`], each organization up to its [`ORG_SHARE`]. Held back for a
/// later group, in their order: an organization's writes past its share (and its later ones),
/// an exclusive write (and everything after it). An exclusive write is a group of its own.
fn gather<T: Work>(
    first: T,
    held: &mut VecDeque<T>,
    mut next: impl FnMut() -> Option<T>,
) -> Vec<T> {
    let mut weight = first.weight();
    let mut shares: FxHashMap<Option<OrgId>, usize> = FxHashMap::default();
    shares.insert(first.organization(), weight);
    let exclusive = first.is_exclusive();
    let mut group = vec![first];
    // Organizations with a write held back in this pass: their later writes wait too.
    let mut waiting: FxHashSet<Option<OrgId>> = FxHashSet::default();
    let mut later: VecDeque<T> = VecDeque::new();
    while !exclusive && weight < MAX_GROUP_WEIGHT {
        let Some(write) = held.pop_front().or_else(&mut next) else {
            break;
        };
        if write.is_exclusive() {
            later.push_back(write);
            break;
        }
        let org = write.organization();
        let share = shares.get(&org).copied().unwrap_or(0);
        if waiting.contains(&org) || (org.is_some() && share + write.weight() > ORG_SHARE) {
            waiting.insert(org);
            later.push_back(write);
            continue;
        }
        weight += write.weight();
        shares.insert(org, share + write.weight());
        group.push(write);
    }
    later.append(held);
    *held = later;
    group
}

/// Applies a group and answers it; the group's room in the queue is given back on return.
fn commit_group(handle: &Handle, context: &WriteContext, group: Vec<Queued>) {
    let mut rooms = Vec::with_capacity(group.len());
    let (ops, replies): (Vec<WriteOp>, Vec<Reply>) = group
        .into_iter()
        .map(|Queued { op, reply, _room }| {
            rooms.push(_room);
            (op, reply)
        })
        .unzip();
    // A failed write (a full disk) is recovered from before the group is answered (see
    // `Handle::write`); the failed group was not acknowledged.
    let result = handle.write(|db| {
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            super::apply_batch(db, context, &ops, None)
        }))
        .unwrap_or_else(|_| {
            Err(Error::Internal(
                "the writer panicked; the group was rolled back".into(),
            ))
        })
    });
    match result {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(outcome);
            }
        }
        Err(error) => {
            tracing::error!(%error, requests = replies.len(), "group commit failed");
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Write(&'static str, Option<u128>, usize);

    impl Work for Write {
        fn organization(&self) -> Option<OrgId> {
            self.1.map(|org| OrgId(uuid::Uuid::from_u128(org)))
        }
        fn weight(&self) -> usize {
            self.2
        }
        fn is_exclusive(&self) -> bool {
            self.0 == "prune"
        }
    }

    /// The groups `queue` makes, by their writes' names.
    fn groups(queue: Vec<Write>) -> Vec<Vec<&'static str>> {
        let mut queue: VecDeque<Write> = queue.into();
        let mut held = VecDeque::new();
        let mut groups = Vec::new();
        while let Some(first) = held.pop_front().or_else(|| queue.pop_front()) {
            let group = gather(first, &mut held, || queue.pop_front());
            groups.push(group.into_iter().map(|w| w.0).collect());
        }
        groups
    }

    #[test]
    fn a_flood_of_one_organization_takes_a_share_of_each_group_and_keeps_its_order() {
        let big = ORG_SHARE;
        let queue = vec![
            Write("a1", Some(1), big),
            Write("a2", Some(1), big),
            Write("a3", Some(1), big),
            Write("b1", Some(2), 1),
            Write("a4", Some(1), 1),
            Write("b2", Some(2), 1),
        ];
        assert_eq!(
            groups(queue),
            vec![vec!["a1", "b1", "b2"], vec!["a2"], vec!["a3"], vec!["a4"]]
        );
    }

    #[test]
    fn small_writes_share_a_group_and_an_exclusive_one_stands_alone_in_its_place() {
        let queue = vec![
            Write("a1", Some(1), 10),
            Write("b1", Some(2), 10),
            Write("prune", None, 1),
            Write("a2", Some(1), 10),
        ];
        assert_eq!(
            groups(queue),
            vec![vec!["a1", "b1"], vec!["prune"], vec!["a2"]]
        );
    }
}
