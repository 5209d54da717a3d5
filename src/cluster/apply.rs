//! Following the stream into the node's database: an ordered consumer from the sequence after
//! the last applied one, messages taken in groups as they arrive, each group applied in one
//! transaction that also records its last sequence. A crash between two groups loses nothing
//! and applies nothing twice: the next start resumes after the recorded sequence.
//!
//! What the stream holds decides everything, so every node decides alike: a message whose tag
//! does not verify, or that does not decode, is skipped and recorded (the `skipped` table); a
//! writer's message that is not that writer's next is not applied (see
//! [`super::publisher`]). Two things stop the applier, reported on `/healthz` and in the log
//! with the way out: a sequence missing from the stream (deleted, or trimmed below this node),
//! and a message whose transaction fails (a full disk; or a bug). Both wait for the cause to go
//! away, or for the operator's permission to pass over those sequences (`runledger cluster
//! skip`, a message of its own that a stalled node looks up).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::stream::RawMessageErrorKind;
use tokio::sync::watch;
use tokio_stream::StreamExt;

use super::envelope::{self, Kind};
use super::logged::{Content, Logged};
use super::{Cluster, Role, codec, log};
use crate::error::{Error, Result};
use crate::store::Skip;

/// Messages applied in one transaction at most.
const MAX_GROUP: usize = 512;
/// Bytes of messages applied in one transaction at most.
const MAX_GROUP_BYTES: usize = 16 << 20;
/// The consumer's idle heartbeat: two missed ones end it.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long without a message before the node checks that its consumer is not stuck.
const WATCHDOG: Duration = Duration::from_secs(10);
/// How long JetStream keeps a consumer whose node stopped asking (it died).
const CONSUMER_INACTIVE: Duration = Duration::from_secs(30);
/// Pauses before following the log again after a failure: the first, and the longest.
const FIRST_PAUSE: Duration = Duration::from_millis(250);
const MAX_PAUSE: Duration = Duration::from_secs(2);

/// Why following the log stopped.
enum Stop {
    /// Asked to.
    Asked,
    /// The log cannot be read now (NATS unreachable, no quorum): try again.
    Log(Error),
    /// Sequence `seq` cannot be applied, or is missing: the applier is stalled there.
    Stuck { seq: u64, error: Error },
}

/// What the log is applied into: a node's database and what lives in memory beside it (the
/// engine implements it). The applier only reads the log and hands its messages over.
pub trait Replica: Send + Sync + 'static {
    /// Applies messages of the log, in order, each transaction recording its last sequence;
    /// `Err` leaves the rest for the next attempt (nothing after the last commit is lost or
    /// applied twice). Blocks.
    fn apply_logged(&self, entries: Vec<Logged>) -> Result<()>;
}

/// Applies the stream into `replica` until `stop` turns true, resuming after every failure (a
/// NATS server gone, a full disk) from what the database holds.
pub async fn run<R: Replica>(
    replica: Arc<R>,
    cluster: Arc<Cluster>,
    mut stop: watch::Receiver<bool>,
) {
    let mut pause = FIRST_PAUSE;
    let mut applied = cluster.progress.applied();
    // The sequence the applier is stuck at: applied alone, once the operator allows passing it.
    let mut stuck_at = None;
    loop {
        let error = match follow(&replica, &cluster, &mut stop, &mut stuck_at).await {
            Stop::Asked => return,
            Stop::Log(error) => error,
            Stop::Stuck { seq, error } => {
                stuck_at = Some(seq);
                let why = format!("stuck at stream sequence {seq}: {error}");
                cluster.progress.set_stalled(Some(why));
                metrics::gauge!(crate::metrics::APPLIER_STALLED).set(1.0);
                error
            }
        };
        // Retried at once after progress, else less and less often.
        if cluster.progress.applied() > applied {
            applied = cluster.progress.applied();
            pause = FIRST_PAUSE;
        }
        tracing::warn!(%error, applied, retry_in = ?pause, "applying the cluster's log stopped; resuming");
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Clears the stall once the node got past the sequence it was stuck at.
fn unstick(cluster: &Cluster, stuck_at: &mut Option<u64>) {
    if stuck_at.is_some_and(|seq| cluster.progress.applied() >= seq) {
        *stuck_at = None;
        cluster.progress.set_stalled(None);
        metrics::gauge!(crate::metrics::APPLIER_STALLED).set(0.0);
    }
}

/// One consumer's life. While `stuck_at` names a sequence, messages up to it are applied one
/// per transaction, so the one that fails is known and can be passed over.
async fn follow<R: Replica>(
    replica: &Arc<R>,
    cluster: &Cluster,
    stop: &mut watch::Receiver<bool>,
    stuck_at: &mut Option<u64>,
) -> Stop {
    let start = cluster.progress.applied() + 1;
    let stream = match cluster.log.stream().await {
        Ok(stream) => stream,
        Err(error) => return Stop::Log(error),
    };
    let filter = match cluster.role {
        Role::Node => String::new(),
        Role::Gateway => log::CREDENTIALS_SUBJECT.to_string(),
    };
    // An ephemeral consumer of our own rather than JetStream's "ordered" one, whose idle
    // heartbeat is fixed at 15 s: with a 1 s heartbeat a consumer lost with its server is noticed
    // in two, and the applier starts another from what the database holds.
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ack_policy: AckPolicy::None,
            filter_subject: filter,
            inactive_threshold: CONSUMER_INACTIVE,
            num_replicas: 1,
            memory_storage: true,
            ..Default::default()
        })
        .await;
    let consumer = match consumer {
        Ok(consumer) => consumer,
        Err(error) => return Stop::Log(consumer_error("cannot create a consumer", error)),
    };
    let messages = consumer
        .stream()
        .heartbeat(HEARTBEAT)
        .expires(HEARTBEAT * 5)
        .max_messages_per_batch(MAX_GROUP)
        .max_bytes_per_batch(MAX_GROUP_BYTES)
        .messages()
        .await;
    let mut messages = match messages {
        Ok(messages) => messages,
        Err(error) => return Stop::Log(consumer_error("cannot read the stream", error)),
    };
    // The consumer's own count: a jump is a delivery lost on the way, not a message missing
    // from the stream.
    let mut delivered = 0;
    loop {
        let first = tokio::select! {
            next = messages.next() => next,
            _ = stop.changed() => return Stop::Asked,
            () = tokio::time::sleep(WATCHDOG) => {
                // Nothing for a while: fine if there is nothing to apply, else this consumer
                // stopped delivering without saying so.
                let newest = match cluster.role {
                    Role::Node => cluster.log.state().await.map(|state| state.last_seq),
                    Role::Gateway => cluster.log.last_credentials_seq().await,
                };
                match newest {
                    Ok(newest) if newest > cluster.progress.applied() => {
                        return Stop::Log(consumer_error(
                            "the consumer stopped delivering",
                            format!("the stream holds sequence {newest}, this node applied {}", cluster.progress.applied()),
                        ));
                    }
                    _ => continue,
                }
            }
        };
        let first = match first {
            Some(Ok(message)) => message,
            Some(Err(error)) => return Stop::Log(consumer_error("reading", error)),
            None => return Stop::Log(consumer_error("the consumer ended", "no more messages")),
        };
        let careful = stuck_at.is_some_and(|seq| cluster.progress.applied() < seq);
        let mut group = vec![first];
        let mut bytes = group[0].payload.len();
        while !careful && group.len() < MAX_GROUP && bytes < MAX_GROUP_BYTES {
            // Only what has arrived already: the group never waits for more.
            match tokio::time::timeout(Duration::ZERO, messages.next()).await {
                Ok(Some(Ok(message))) => {
                    bytes += message.payload.len();
                    group.push(message);
                }
                Ok(Some(Err(error))) => return Stop::Log(consumer_error("reading", error)),
                Ok(None) | Err(_) => break,
            }
        }
        let mut entries = Vec::with_capacity(group.len() + 1);
        let mut expected = cluster.progress.applied() + 1;
        for message in group {
            let (seq, stored_at) = match message.info() {
                Ok(info) => {
                    metrics::gauge!(crate::metrics::STREAM_SEQ)
                        .set((info.stream_sequence + info.pending) as f64);
                    if info.consumer_sequence != delivered + 1 {
                        return Stop::Log(consumer_error(
                            "a delivery was lost",
                            format!(
                                "message {} of the consumer after {delivered}",
                                info.consumer_sequence
                            ),
                        ));
                    }
                    delivered = info.consumer_sequence;
                    let stored_at = (info.published.unix_timestamp_nanos() / 1_000) as i64;
                    (info.stream_sequence, stored_at)
                }
                Err(error) => {
                    return Stop::Log(consumer_error("a message without its sequence", error));
                }
            };
            // A node applies every sequence; a gateway only those of its subject.
            if cluster.role == Role::Node && seq != expected {
                // Missing from the stream, or only from this delivery?
                match stream.get_raw_message(expected).await {
                    Ok(_) => {
                        return Stop::Log(consumer_error(
                            "a delivery was lost",
                            format!("sequence {expected} came as {seq}"),
                        ));
                    }
                    Err(error) if error.kind() != RawMessageErrorKind::NoMessageFound => {
                        return Stop::Log(consumer_error("cannot look a sequence up", error));
                    }
                    Err(_) => {}
                }
                match pass_over(cluster, expected, seq - 1, "missing from the stream").await {
                    Ok(Some(skip)) => entries.push(skip),
                    Ok(None) => {
                        let error = Error::Unavailable(format!(
                            "the cluster's log no longer holds {} (deleted, or trimmed below this node): restore a backup of another node taken after that point into this data dir, or pass over them, losing what they held, with `runledger cluster skip {}`",
                            range_text(expected, seq - 1),
                            range_arg(expected, seq - 1),
                        ));
                        return Stop::Stuck {
                            seq: expected,
                            error,
                        };
                    }
                    Err(error) => return Stop::Log(error),
                }
            }
            expected = seq + 1;
            entries.push(read(
                cluster,
                seq,
                stored_at,
                message.subject.as_str(),
                message.payload.clone(),
            ));
        }
        let first_seq = entries[0].seq;
        // Should it fail and be passed over, a writer's message still takes its turn.
        let first_origin = match &entries[0].content {
            Content::Numbered {
                origin, confirmed, ..
            } => Some((*origin, *confirmed)),
            Content::Refused(_) => None,
        };
        let applying = replica.clone();
        let applied = tokio::task::spawn_blocking(move || applying.apply_logged(entries)).await;
        let error = match applied {
            Ok(Ok(())) => {
                unstick(cluster, stuck_at);
                continue;
            }
            Ok(Err(error)) => error,
            Err(panic) => Error::Internal(format!("the applier panicked: {panic}")),
        };
        if !careful {
            // Which message fails is found by applying one at a time.
            return Stop::Stuck {
                seq: first_seq,
                error,
            };
        }
        match pass_over(
            cluster,
            first_seq,
            first_seq,
            &format!("could not be applied ({error})"),
        )
        .await
        {
            Ok(Some(mut skip)) => {
                if let (Some((origin, confirmed)), Content::Refused(why)) =
                    (first_origin, &skip.content)
                {
                    skip.content = Content::Numbered {
                        origin,
                        confirmed,
                        ops: Err(why.clone()),
                    };
                }
                let applying = replica.clone();
                let skipped =
                    tokio::task::spawn_blocking(move || applying.apply_logged(vec![skip])).await;
                match skipped {
                    Ok(Ok(())) => unstick(cluster, stuck_at),
                    Ok(Err(error)) => {
                        return Stop::Stuck {
                            seq: first_seq,
                            error,
                        };
                    }
                    Err(panic) => {
                        let error = Error::Internal(format!("the applier panicked: {panic}"));
                        return Stop::Stuck {
                            seq: first_seq,
                            error,
                        };
                    }
                }
            }
            Ok(None) => {
                let error = Error::Unavailable(format!(
                    "{error}; once its cause is gone it is applied, or pass over it, losing what it held, with `runledger cluster skip {first_seq}`"
                ));
                return Stop::Stuck {
                    seq: first_seq,
                    error,
                };
            }
            Err(error) => return Stop::Log(error),
        }
    }
}

/// A message as the engine applies it: authenticated and decoded, or refused and why.
/// `stored_at` is the stream's timestamp of the message (Unix microseconds), the same on every
/// node, against which its deadline is checked.
pub(crate) fn read(
    cluster: &Cluster,
    seq: u64,
    stored_at: i64,
    subject: &str,
    payload: bytes::Bytes,
) -> Logged {
    let content = match cluster.key.open(subject, &payload) {
        Err(refusal) => Content::Refused(Skip {
            label: refusal.label(),
            why: format!("sequence {seq} on {subject}: {refusal}"),
        }),
        Ok(frame) => {
            let malformed = |why: String| Skip {
                label: "malformed",
                why: format!("sequence {seq} on {subject}: {why}"),
            };
            let ops = match frame.kind {
                _ if frame.deadline.is_some_and(|deadline| stored_at > deadline) => Err(Skip {
                    label: "expired",
                    why: format!(
                        "sequence {seq} on {subject}: stored at {}, after its deadline {} (its writer had been told it failed)",
                        micros_text(stored_at),
                        micros_text(frame.deadline.unwrap_or_default())
                    ),
                }),
                Kind::Operations => codec::decode_from(subject, frame.body).map_err(malformed),
                Kind::PassOver if subject == log::CONTROL_SUBJECT => {
                    envelope::read_pass_over(frame.body)
                        .map(|_| Vec::new())
                        .map_err(malformed)
                }
                Kind::PassOver => Err(malformed(format!("a pass-over permission on {subject}"))),
            };
            Content::Numbered {
                origin: frame.origin,
                confirmed: frame.confirmed,
                ops,
            }
        }
    };
    Logged {
        seq,
        stored_at,
        subject: subject.to_string(),
        payload,
        content,
    }
}

fn micros_text(micros: i64) -> String {
    crate::time::Timestamp::from_micros(micros)
        .map_or_else(|| micros.to_string(), crate::time::format_rfc3339)
}

/// The skip of sequences `first..=last` when the operator allowed passing over them (an
/// authentic permission in the stream covering them all), else `None`.
async fn pass_over(cluster: &Cluster, first: u64, last: u64, what: &str) -> Result<Option<Logged>> {
    for (seq, payload) in cluster.log.permissions(first).await? {
        let Ok(frame) = cluster.key.open(log::CONTROL_SUBJECT, &payload) else {
            continue;
        };
        let Ok((from, to)) = envelope::read_pass_over(frame.body) else {
            continue;
        };
        if frame.kind == Kind::PassOver && from <= first && last <= to {
            let why = format!(
                "{} {what}; passed over as the operator allowed (`runledger cluster skip`, sequence {seq})",
                range_text(first, last)
            );
            tracing::warn!(
                first,
                last,
                permission = seq,
                "passing over sequences of the cluster's log"
            );
            return Ok(Some(Logged {
                seq: first,
                stored_at: 0,
                subject: String::new(),
                payload: bytes::Bytes::new(),
                content: Content::Refused(Skip {
                    label: "passed_over",
                    why,
                }),
            }));
        }
    }
    Ok(None)
}

fn range_text(first: u64, last: u64) -> String {
    if first == last {
        format!("sequence {first}")
    } else {
        format!("sequences {first} to {last}")
    }
}

fn range_arg(first: u64, last: u64) -> String {
    if first == last {
        first.to_string()
    } else {
        format!("{first}..{last}")
    }
}

fn consumer_error(what: &str, error: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("the cluster's log: {what}: {error}"))
}
