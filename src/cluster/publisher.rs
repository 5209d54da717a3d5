//! Publishing one writer's messages so that every node applies them in the order they were
//! written, whatever fails on the way.
//!
//! A writer (a node's writes of one subject, one `import --nats`, one command) numbers its
//! messages 1, 2, 3, ... inside their authenticated frame, and every node applies a writer's
//! messages in number order only (`store::batch::stream`): a copy stored before an earlier
//! number's is kept and applied right after it, a copy of a number applied already is a
//! duplicate. So the order is decided by the numbers, not by which publish happened to be
//! stored first.
//!
//! The publisher keeps up to [`WINDOW`] messages in flight and confirms them strictly in number
//! order, each once JetStream acknowledged it: a confirmed message will be applied in its
//! place. When an acknowledgement fails or times out, every message not yet confirmed is sent
//! again, in order, under fresh message ids (so that JetStream stores the new copies rather
//! than answering with a lost one's place). Messages in flight are retried until confirmed, even
//! after their senders stopped waiting, since later messages depend on them; a message still
//! queued when its sender gives up is never sent.
//!
//! Every frame also says through which number the writer had confirmed when it was sent. A
//! node that meets a number whose predecessors were all confirmed, but that it never saw (they
//! were deleted from the stream, or trimmed, and the operator let it pass over them), applies it
//! at once rather than waiting for them for ever; and a writer that falls idle after a burst
//! sends one empty message (a fence) carrying its final count, so that no copy waits for a
//! next write that may never come.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::publish::PublishAck;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::envelope::{Kind, Origin, Sealed, StreamKey, WriterId};
use super::log::Log;
use super::progress::{Progress, Waiter};
use crate::error::{Error, NO_QUORUM_RETRY_SECS, Result};

/// Messages sent and not yet confirmed, at most.
pub const WINDOW: usize = 32;
/// Messages waiting to be sent, at most; past it a sender waits for room.
const QUEUE: usize = 1_024;
/// Pauses before sending the unconfirmed messages again: the first and the longest.
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// How long a writer is idle before it sends its fence.
const FENCE_AFTER: Duration = Duration::from_secs(1);

/// Where a queued message stands, decided once by whichever side gets there first: the
/// publisher taking it to send, or its sender giving up.
const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const ABANDONED: u8 = 2;

/// The sending side of one writer; clones share the writer.
#[derive(Clone)]
pub struct Publisher {
    queue: mpsc::Sender<Submission>,
    writer: WriterId,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

struct Submission {
    kind: Kind,
    body: Vec<u8>,
    deadline: Option<i64>,
    claim: Arc<AtomicU8>,
    confirmed: Option<oneshot::Sender<u64>>,
    /// Who waits for the message's outcome once this node applies it.
    outcome: Option<Waiter>,
}

/// A message queued for publishing.
pub struct Pending {
    claim: Arc<AtomicU8>,
    confirmed: oneshot::Receiver<u64>,
}

impl Publisher {
    /// A new writer publishing to `subject`, with a random id. With `progress`, the outcomes
    /// of its messages are handed to their senders when this node applies them.
    pub fn spawn(
        log: Log,
        key: StreamKey,
        subject: &'static str,
        progress: Option<Arc<Progress>>,
    ) -> Publisher {
        Publisher::spawn_as(WriterId::random(), log, key, subject, progress)
    }

    /// [`Publisher::spawn`] under a given writer id: a command run again after an interruption
    /// (`cluster adopt`) sends the same numbered messages, which the applier takes once.
    pub fn spawn_as(
        writer: WriterId,
        log: Log,
        key: StreamKey,
        subject: &'static str,
        progress: Option<Arc<Progress>>,
    ) -> Publisher {
        let (queue, submissions) = mpsc::channel(QUEUE);
        let task = Task {
            log,
            key,
            subject,
            writer,
            progress,
        };
        let task = tokio::spawn(task.run(submissions));
        Publisher {
            queue,
            writer,
            task: Arc::new(Mutex::new(Some(task))),
        }
    }

    pub fn writer(&self) -> WriterId {
        self.writer
    }

    /// Queues a message (after those queued before it); `outcome` receives its outcome when this
    /// node applies it; a copy stored after `deadline` (Unix microseconds) is not applied. Errs
    /// when the publisher has stopped.
    pub async fn submit(
        &self,
        kind: Kind,
        body: Vec<u8>,
        deadline: Option<i64>,
        outcome: Option<Waiter>,
    ) -> Result<Pending> {
        let claim = Arc::new(AtomicU8::new(QUEUED));
        let (confirmed, receiver) = oneshot::channel();
        self.queue
            .send(Submission {
                kind,
                body,
                deadline,
                claim: claim.clone(),
                confirmed: Some(confirmed),
                outcome,
            })
            .await
            .map_err(|_| Error::Unavailable("the cluster's publisher has stopped".into()))?;
        Ok(Pending {
            claim,
            confirmed: receiver,
        })
    }

    /// Queues a message without a deadline and waits (at most `wait`) until it is confirmed:
    /// its stream sequence.
    pub async fn publish(&self, kind: Kind, body: Vec<u8>, wait: Duration) -> Result<u64> {
        self.submit(kind, body, None, None)
            .await?
            .confirmed(wait)
            .await
    }

    /// For a command about to exit: waits (at most `wait`) until everything sent is confirmed
    /// and the writer's fence is stored.
    pub async fn finish(self, wait: Duration) -> Result<()> {
        let Publisher { queue, task, .. } = self;
        drop(queue);
        let task = task.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(task) = task else {
            return Ok(());
        };
        match tokio::time::timeout(wait, task).await {
            Ok(_) => Ok(()),
            Err(_) => Err(Error::NoQuorum(format!(
                "the cluster's log did not confirm the last messages within {} s",
                wait.as_secs()
            ))),
        }
    }
}

impl Pending {
    /// Its stream sequence once confirmed, waiting at most `wait`. When the wait ends first,
    /// a message not sent yet never will be; one sent will still be (the error says which).
    pub async fn confirmed(mut self, wait: Duration) -> Result<u64> {
        match tokio::time::timeout(wait, &mut self.confirmed).await {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(_)) => Err(Error::Unavailable(
                "the cluster's publisher stopped before the write was stored".into(),
            )),
            Err(_) if self.abandon() => Err(Error::NoQuorum(format!(
                "the cluster's log did not take the write within {} s (are a quorum of the NATS servers reachable?); nothing was written: retry",
                wait.as_secs_f64()
            ))),
            Err(_) => Err(Error::NoQuorum(format!(
                "the write was sent to the cluster's log but not acknowledged within {} s (are a quorum of the NATS servers reachable?); retry after {NO_QUORUM_RETRY_SECS} s (Retry-After), by when it is either applied or never will be",
                wait.as_secs_f64()
            ))),
        }
    }

    /// Withdraws the message if it was not sent yet; false when it was.
    fn abandon(&self) -> bool {
        self.claim
            .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // A sender that went away without waiting: not sent unless it was already.
        self.abandon();
    }
}

type AckFuture = Pin<Box<dyn Future<Output = std::result::Result<PublishAck, String>> + Send>>;

/// A message sent and not yet confirmed.
struct Flight {
    number: u64,
    frame: bytes::Bytes,
    confirmed: Option<oneshot::Sender<u64>>,
    ack: AckFuture,
}

struct Task {
    log: Log,
    key: StreamKey,
    subject: &'static str,
    writer: WriterId,
    progress: Option<Arc<Progress>>,
}

/// The publisher's counts.
#[derive(Default)]
struct Counts {
    /// The next number to hand out.
    next: u64,
    /// Every number through this one is confirmed.
    confirmed: u64,
    /// The confirmed count the last frame sent carried.
    told: u64,
    /// Rounds of sending again, for fresh message ids.
    round: u64,
}

impl Task {
    async fn run(self, mut submissions: mpsc::Receiver<Submission>) {
        let mut flights: VecDeque<Flight> = VecDeque::new();
        let mut counts = Counts {
            next: 1,
            ..Counts::default()
        };
        let mut pause = FIRST_PAUSE;
        let mut open = true;
        loop {
            // Idle, with numbers confirmed beyond what the last frame told: the fence tells
            // them (at once when the writer is closing).
            let fence_due = flights.is_empty() && counts.told + 1 < counts.confirmed;
            if !open && flights.is_empty() && !fence_due {
                return;
            }
            tokio::select! {
                biased;
                ack = front_ack(&mut flights), if !flights.is_empty() => match ack {
                    Ok(ack) => {
                        let flight = flights.pop_front().expect("not empty");
                        counts.confirmed = flight.number;
                        if let Some(confirmed) = flight.confirmed {
                            let _ = confirmed.send(ack.sequence);
                        }
                        pause = FIRST_PAUSE;
                    }
                    Err(why) => {
                        counts.round += 1;
                        tracing::debug!(writer = %self.writer, number = flights[0].number, %why, round = counts.round, unconfirmed = flights.len(), "sending the unconfirmed messages again, in order");
                        metrics::counter!(crate::metrics::PUBLISH_RETRIES).increment(1);
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(MAX_PAUSE);
                        self.wait_connected().await;
                        for flight in &mut flights {
                            flight.ack = self.send(flight.number, counts.round, flight.frame.clone()).await;
                        }
                    }
                },
                submission = submissions.recv(), if open && flights.len() < WINDOW => {
                    let Some(submission) = submission else {
                        open = false;
                        continue;
                    };
                    let taken = submission
                        .claim
                        .compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok();
                    if taken {
                        let flight = self.take(submission, &mut counts).await;
                        flights.push_back(flight);
                    }
                },
                () = tokio::time::sleep(if open { FENCE_AFTER } else { Duration::ZERO }), if fence_due => {
                    let fence = Submission {
                        kind: Kind::Operations,
                        body: super::codec::encode(&[]).expect("no operations to encode"),
                        deadline: None,
                        claim: Arc::new(AtomicU8::new(TAKEN)),
                        confirmed: None,
                        outcome: None,
                    };
                    let flight = self.take(fence, &mut counts).await;
                    flights.push_back(flight);
                },
            }
        }
    }

    /// Numbers a message taken from the queue and sends its first copy.
    async fn take(&self, submission: Submission, counts: &mut Counts) -> Flight {
        let origin = Origin {
            writer: self.writer,
            number: counts.next,
        };
        counts.next += 1;
        if let (Some(progress), Some(waiter)) = (&self.progress, submission.outcome) {
            progress.expect(origin, waiter);
        }
        let message = Sealed {
            origin,
            confirmed: counts.confirmed,
            kind: submission.kind,
            deadline: submission.deadline,
            body: &submission.body,
        };
        counts.told = counts.confirmed;
        let frame = bytes::Bytes::from(self.key.seal(self.subject, &message));
        let ack = self.send(origin.number, counts.round, frame.clone()).await;
        Flight {
            number: origin.number,
            frame,
            confirmed: submission.confirmed,
            ack,
        }
    }

    /// Sends one copy of message `number`; its acknowledgement to come (or the failure).
    async fn send(&self, number: u64, round: u64, frame: bytes::Bytes) -> AckFuture {
        // An id per copy: JetStream must store the new copy, not answer with the old one's
        // place.
        let id = format!("{}-{number}-{round}", self.writer);
        match self.log.send(self.subject, &id, frame).await {
            Ok(ack) => Box::pin(async move { ack.await.map_err(|e| e.to_string()) }),
            Err(error) => Box::pin(std::future::ready(Err(error.to_string()))),
        }
    }

    /// Sends nothing while disconnected: the client would only buffer copies to send later.
    async fn wait_connected(&self) {
        while !self.log.connected() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The acknowledgement of the oldest unconfirmed message. Cancel-safe: the future lives in the
/// flight.
async fn front_ack(flights: &mut VecDeque<Flight>) -> std::result::Result<PublishAck, String> {
    let flight = flights.front_mut().expect("called with flights");
    (&mut flight.ack).await
}
