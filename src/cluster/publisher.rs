//! Publishing one writer's messages so that every node applies them in the order they were
//! written, whatever fails on the way.
//!
//! A writer (a node's writes of one subject, one `import --nats`, one command) numbers its
//! messages 1, 2, 3, ... inside their authenticated frame, and the applier applies a writer's
//! message only when its number is the next one it expects: a copy that lands early (its
//! predecessor was lost and is being sent again) or again (a retried publish) is skipped, the
//! same way on every node. So order is decided by the numbers, not by which publish happened to
//! be stored first.
//!
//! That alone would lose the early copies, so the publisher keeps up to [`WINDOW`] messages in
//! flight and confirms them strictly in number order: a message is confirmed when it and every
//! earlier one were acknowledged by JetStream at increasing stream sequences. When an
//! acknowledgement fails or times out, or comes back at a sequence below the previous one's
//! (an early copy), every message not yet confirmed is sent again, in order, under fresh
//! message ids: their new copies are stored after the old ones, in number order, and the
//! applier takes each number from its first copy that is next in line. A confirmed message is
//! therefore always applied, in its place. Messages in flight are retried until confirmed,
//! even after their senders stopped waiting (a later message of the same writer depends on
//! them); a message still queued when its sender gives up is never sent.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use async_nats::jetstream::publish::PublishAck;
use tokio::sync::{mpsc, oneshot};

use super::envelope::{Kind, Origin, StreamKey, WriterId};
use super::log::Log;
use super::progress::{Progress, Waiter};
use crate::error::{Error, Result};

/// Messages sent and not yet confirmed, at most.
pub const WINDOW: usize = 32;
/// Messages waiting to be sent, at most; past it a sender waits for room.
const QUEUE: usize = 1_024;
/// Pauses before sending the unconfirmed messages again: the first and the longest.
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(1);

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
}

struct Submission {
    kind: Kind,
    body: Vec<u8>,
    claim: Arc<AtomicU8>,
    confirmed: oneshot::Sender<u64>,
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
        tokio::spawn(task.run(submissions));
        Publisher { queue, writer }
    }

    pub fn writer(&self) -> WriterId {
        self.writer
    }

    /// Queues a message (after those queued before it); `outcome` receives its outcome when this
    /// node applies it. Errs when the publisher has stopped.
    pub async fn submit(
        &self,
        kind: Kind,
        body: Vec<u8>,
        outcome: Option<Waiter>,
    ) -> Result<Pending> {
        let claim = Arc::new(AtomicU8::new(QUEUED));
        let (confirmed, receiver) = oneshot::channel();
        self.queue
            .send(Submission {
                kind,
                body,
                claim: claim.clone(),
                confirmed,
                outcome,
            })
            .await
            .map_err(|_| Error::Unavailable("the cluster's publisher has stopped".into()))?;
        Ok(Pending {
            claim,
            confirmed: receiver,
        })
    }

    /// Queues a message and waits (at most `wait`) until it is confirmed: its stream sequence.
    pub async fn publish(&self, kind: Kind, body: Vec<u8>, wait: Duration) -> Result<u64> {
        self.submit(kind, body, None).await?.confirmed(wait).await
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
            Err(_) if self.abandon() => Err(Error::Unavailable(format!(
                "the cluster's log did not take the write within {} s (are a quorum of the NATS servers reachable?); nothing was written: retry",
                wait.as_secs_f64()
            ))),
            Err(_) => Err(Error::Unavailable(format!(
                "the write was sent to the cluster's log but not acknowledged within {} s (are a quorum of the NATS servers reachable?); it will be applied once they are: retrying it is safe",
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
    confirmed: oneshot::Sender<u64>,
    ack: AckFuture,
}

struct Task {
    log: Log,
    key: StreamKey,
    subject: &'static str,
    writer: WriterId,
    progress: Option<Arc<Progress>>,
}

impl Task {
    async fn run(self, mut submissions: mpsc::Receiver<Submission>) {
        let mut flights: VecDeque<Flight> = VecDeque::new();
        let mut next_number = 1;
        let mut confirmed_seq = 0;
        let mut round = 0u64;
        let mut pause = FIRST_PAUSE;
        let mut open = true;
        loop {
            if !open && flights.is_empty() {
                return;
            }
            tokio::select! {
                biased;
                ack = front_ack(&mut flights), if !flights.is_empty() => {
                    match ack {
                        // Stored after everything confirmed before it: confirmed.
                        Ok(ack) if ack.sequence > confirmed_seq => {
                            confirmed_seq = ack.sequence;
                            let flight = flights.pop_front().expect("not empty");
                            let _ = flight.confirmed.send(ack.sequence);
                            pause = FIRST_PAUSE;
                        }
                        outcome => {
                            let why = match outcome {
                                Ok(ack) => format!("stored at sequence {} before sequence {confirmed_seq} of an earlier message", ack.sequence),
                                Err(error) => error,
                            };
                            round += 1;
                            tracing::debug!(writer = %self.writer, number = flights[0].number, %why, round, unconfirmed = flights.len(), "sending the unconfirmed messages again, in order");
                            metrics::counter!(crate::metrics::PUBLISH_RETRIES).increment(1);
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(MAX_PAUSE);
                            self.wait_connected().await;
                            for flight in &mut flights {
                                flight.ack = self.send(flight.number, round, flight.frame.clone()).await;
                            }
                        }
                    }
                }
                submission = submissions.recv(), if open && flights.len() < WINDOW => {
                    let Some(submission) = submission else {
                        open = false;
                        continue;
                    };
                    let taken = submission
                        .claim
                        .compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok();
                    if !taken {
                        continue;
                    }
                    let origin = Origin { writer: self.writer, number: next_number };
                    next_number += 1;
                    if let (Some(progress), Some(waiter)) = (&self.progress, submission.outcome) {
                        progress.expect(origin, waiter);
                    }
                    let frame = bytes::Bytes::from(self.key.seal(self.subject, origin, submission.kind, &submission.body));
                    let ack = self.send(origin.number, round, frame.clone()).await;
                    flights.push_back(Flight {
                        number: origin.number,
                        frame,
                        confirmed: submission.confirmed,
                        ack,
                    });
                }
            }
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
