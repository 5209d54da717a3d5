//! Cluster mode: every write goes into one replicated, totally ordered NATS JetStream stream
//! ([`log`]), and every node applies that stream, in order and exactly once, into its own
//! database ([`apply`]): the last applied sequence is written in the same transaction as the
//! changes. Reads are served from the local database. No consensus code of our own: JetStream
//! orders and replicates, the engine's deterministic apply does the rest.
//!
//! - [`envelope`]: the authenticated frame of every message (its writer and number);
//! - [`codec`]: operations as message bodies;
//! - [`log`]: the stream: its identity, creating it, sending, trimming;
//! - [`publisher`]: one writer's messages, confirmed in order whatever is retried;
//! - [`apply`]: following the stream into the node's database;
//! - [`progress`]: the applied sequence, writers waiting for their outcome, read-your-writes.

pub mod apply;
pub mod codec;
pub mod envelope;
pub mod lease;
pub mod log;
pub mod logged;
pub mod progress;
pub mod publisher;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;
use uuid::Uuid;

pub use envelope::StreamKey;
pub use log::{InitOutcome, Log, StreamIdentity, StreamState};
pub use progress::{Progress, note_written, noting_writes};
pub use publisher::Publisher;

use crate::error::{Error, Result};
use crate::model::{RegisterOutcome, ReportCounts};
use crate::store::{WriteOp, WriteOutcome};
use envelope::Kind;

/// How long a write (a token grant included) may wait for the cluster's log to store it before
/// it is answered 503 / UNAVAILABLE with Retry-After.
pub const PUBLISH_WAIT: Duration = Duration::from_secs(5);
/// How far apart the clocks of nodes and NATS servers may be: a node's write carries the
/// deadline [`PUBLISH_WAIT`] plus this, after which a copy stored is not applied.
const CLOCK_MARGIN: Duration = Duration::from_secs(2);
/// How long a writer waits for its node to apply its own write, once stored, before answering
/// that it is in the log but not applied here yet.
const APPLY_WAIT: Duration = Duration::from_secs(10);
/// How long a read with `x-runledger-min-seq` waits for the node to catch up by default.
pub const DEFAULT_MIN_SEQ_WAIT: Duration = Duration::from_secs(2);
/// How long catching up on credentials may wait for the log, and then for this node.
const CATCH_UP_WAIT: Duration = Duration::from_secs(1);
/// How often a node asks whether a quorum of the stream's replicas answers.
const QUORUM_PROBE: Duration = Duration::from_secs(2);

/// What a node does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Accepts writes, applies the whole stream into its data dir, serves reads.
    Node,
    /// Accepts writes only; applies just the credentials (to authenticate callers), in a
    /// scratch database; refuses reads.
    Gateway,
}

/// A node's view of the cluster: the log, its key, how far it applied it, what it does.
pub struct Cluster {
    pub log: Log,
    pub key: StreamKey,
    pub progress: Arc<Progress>,
    pub role: Role,
    pub min_seq_wait: Duration,
    data: Publisher,
    credentials: Publisher,
    /// Whether the last probe reached a quorum of the stream's replicas.
    quorum: Arc<AtomicBool>,
    /// The last credentials lookup: when it began and what it found.
    lookups: tokio::sync::Mutex<Option<(std::time::Instant, u64)>>,
}

impl Cluster {
    /// The node's cluster, starting at `applied`; starts its publishers and its quorum probe
    /// (call within the runtime).
    pub fn new(log: Log, key: StreamKey, role: Role, applied: u64) -> Cluster {
        let progress = Arc::new(Progress::new(applied));
        let publisher =
            |subject| Publisher::spawn(log.clone(), key.clone(), subject, Some(progress.clone()));
        let quorum = Arc::new(AtomicBool::new(true));
        tokio::spawn(probe_quorum(log.clone(), Arc::downgrade(&quorum)));
        Cluster {
            data: publisher(log::DATA_SUBJECT),
            credentials: publisher(log::CREDENTIALS_SUBJECT),
            log,
            key,
            progress,
            role,
            min_seq_wait: DEFAULT_MIN_SEQ_WAIT,
            quorum,
            lookups: tokio::sync::Mutex::new(None),
        }
    }

    /// Whether the last probe (every 2 s) reached a quorum of the stream's replicas.
    pub fn has_quorum(&self) -> bool {
        self.quorum.load(Ordering::Acquire)
    }

    /// Whether this node applies messages of `subject`.
    fn applies(&self, subject: &str) -> bool {
        self.role == Role::Node || subject == log::CREDENTIALS_SUBJECT
    }

    /// Publishes a write and answers its outcome: once this node has applied it, or (on a
    /// gateway, for what it does not apply) as soon as the log confirmed it. The write's
    /// sequence is noted for the answer's `x-runledger-seq`.
    pub async fn write(self: &Arc<Self>, op: WriteOp) -> Result<WriteOutcome> {
        self.publish(op).await?.outcome().await
    }

    /// Publishes a write and returns once the log confirmed it (at most [`PUBLISH_WAIT`]); its
    /// outcome follows (see [`Published::outcome`]). Writes published one after another are
    /// applied in that order on every node.
    pub async fn publish(self: &Arc<Self>, op: WriteOp) -> Result<Published> {
        let credential = codec::is_credential(&op);
        let (publisher, subject) = if credential {
            (&self.credentials, log::CREDENTIALS_SUBJECT)
        } else {
            (&self.data, log::DATA_SUBJECT)
        };
        let body = codec::encode(std::slice::from_ref(&op))?;
        check_size(&self.log, body.len())?;
        let (waiter, outcome) = if self.applies(subject) {
            let (sender, receiver) = oneshot::channel();
            (Some(sender), Ok(receiver))
        } else {
            (None, Err(acknowledged_only(&op)))
        };
        let deadline = crate::time::Timestamp::now().micros()
            + (PUBLISH_WAIT + CLOCK_MARGIN).as_micros() as i64;
        let seq = publisher
            .submit(Kind::Operations, body, Some(deadline), waiter)
            .await?
            .confirmed(PUBLISH_WAIT)
            .await?;
        note_written(seq);
        Ok(Published { seq, outcome })
    }

    /// Waits (about a second at most) until this node has applied every credentials message
    /// the log held when this call began: a client created or a token granted through another
    /// node a moment ago is then known here. False when the node could not catch up.
    ///
    /// One lookup of the log at a time, whatever the number of callers: a caller takes the
    /// answer of a lookup that began after it arrived, so a flood of unknown tokens costs the
    /// log a lookup per round trip, not one each.
    pub async fn catch_up_credentials(&self) -> bool {
        let arrived = std::time::Instant::now();
        let seq = {
            let Ok(mut last) = tokio::time::timeout(CATCH_UP_WAIT, self.lookups.lock()).await
            else {
                return false;
            };
            match *last {
                Some((began, seq)) if began >= arrived => seq,
                _ => {
                    let began = std::time::Instant::now();
                    let lookup = self.log.last_credentials_seq();
                    match tokio::time::timeout(CATCH_UP_WAIT, lookup).await {
                        Ok(Ok(seq)) => {
                            *last = Some((began, seq));
                            seq
                        }
                        _ => return false,
                    }
                }
            }
        };
        self.progress.wait_for(seq, CATCH_UP_WAIT).await
    }

    /// Waits until this node applied `seq`, at most the configured time.
    pub async fn wait_applied(&self, seq: u64) -> Result<()> {
        if self.role == Role::Gateway {
            return Err(gateway_refuses_reads());
        }
        if self.progress.wait_for(seq, self.min_seq_wait).await {
            Ok(())
        } else {
            Err(Error::Unavailable(format!(
                "x-runledger-min-seq: this node has applied the cluster's log through sequence {}, not yet {seq}; retry, or ask another node",
                self.progress.applied()
            )))
        }
    }
}

/// Refuses a body the NATS servers would refuse.
fn check_size(log: &Log, body: usize) -> Result<()> {
    let max = log.max_payload();
    // The frame adds its head and tag.
    if body + 64 > max {
        return Err(Error::TooLarge(format!(
            "the write is {body} bytes encoded, over the {max} bytes the NATS servers accept in one message (raise max_payload, or send smaller batches)"
        )));
    }
    Ok(())
}

/// Asks every [`QUORUM_PROBE`] whether a quorum of the stream's replicas is up (see
/// [`Log::quorum`]), until the cluster is gone.
async fn probe_quorum(log: Log, quorum: std::sync::Weak<AtomicBool>) {
    loop {
        let reached = tokio::time::timeout(QUORUM_PROBE, log.quorum())
            .await
            .is_ok_and(|quorum| quorum.is_ok_and(|up| up));
        let Some(quorum) = quorum.upgrade() else {
            return;
        };
        if quorum.swap(reached, Ordering::AcqRel) != reached {
            tracing::warn!(reached, "the cluster's quorum");
        }
        metrics::gauge!(crate::metrics::QUORUM).set(f64::from(u8::from(reached)));
        drop(quorum);
        tokio::time::sleep(QUORUM_PROBE).await;
    }
}

/// A write in the log, its outcome to come.
pub struct Published {
    seq: u64,
    outcome: std::result::Result<oneshot::Receiver<Result<WriteOutcome>>, Result<WriteOutcome>>,
}

impl Published {
    /// The outcome once this node applied the write (or the gateway's answer at once).
    pub async fn outcome(self) -> Result<WriteOutcome> {
        let waiter = match self.outcome {
            Ok(waiter) => waiter,
            Err(answer) => return answer,
        };
        let seq = self.seq;
        match tokio::time::timeout(APPLY_WAIT, waiter).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(Error::Unavailable(format!(
                "the write is in the cluster's log at sequence {seq}, but this node is stopping before applying it; the other nodes apply it"
            ))),
            Err(_) => Err(Error::Unavailable(format!(
                "the write is in the cluster's log at sequence {seq}, but this node has not applied it within {} s; it will be (read with x-runledger-min-seq: {seq})",
                APPLY_WAIT.as_secs()
            ))),
        }
    }
}

/// The error a gateway answers reads with.
pub fn gateway_refuses_reads() -> Error {
    Error::Unavailable(
        "this node is a write gateway (--role gateway): it holds no runs; ask a node that serves reads"
            .into(),
    )
}

/// A gateway's answer to a write it does not apply: it is in the log, and every node will
/// apply it, but its counts are not known here.
fn acknowledged_only(op: &WriteOp) -> Result<WriteOutcome> {
    match op {
        WriteOp::Report { .. } => Ok(WriteOutcome::Report(ReportCounts::default())),
        WriteOp::Register(_) => Ok(WriteOutcome::Register(RegisterOutcome {
            created: false,
            tasks_created: 0,
            tasks_updated: 0,
        })),
        other => Err(Error::Unavailable(format!(
            "a write gateway cannot answer {}; send it to a node that serves reads",
            other.name()
        ))),
    }
}

/// What a node's data dir says about where it starts in the stream.
#[derive(Clone, Copy, Debug)]
pub struct StartingPoint {
    /// The cluster whose stream it applied, if any.
    pub cluster: Option<Uuid>,
    /// The adoption it continues (`runledger cluster adopt`), if any.
    pub baseline: Option<Uuid>,
    /// The last stream sequence it applied.
    pub applied: u64,
    /// Whether it holds any organization.
    pub has_organizations: bool,
}

impl StartingPoint {
    pub fn of(store: &crate::store::Store) -> Result<StartingPoint> {
        let reader = store.reader()?;
        Ok(StartingPoint {
            cluster: reader.cluster_id()?,
            baseline: reader.baseline()?,
            applied: reader.applied_seq()?,
            has_organizations: reader.any_organization()?.is_some(),
        })
    }

    /// Whether a node starting here may apply the stream `stream`: a node of another cluster
    /// never may; a stream made by `cluster adopt` holds only what came after the adopted
    /// store, so only copies of that store may apply it; a stream made by `cluster init`
    /// starts empty, so a single node's store (organizations, nothing applied, not adopted)
    /// would keep history no other node has.
    pub fn check(&self, stream: &StreamIdentity) -> Result<()> {
        match self.cluster {
            Some(own) if own != stream.cluster => {
                return Err(Error::Unavailable(format!(
                    "this data dir belongs to cluster {own}, and the stream on these NATS servers to cluster {}: start this node from an empty data dir or a backup of a node of this cluster",
                    stream.cluster
                )));
            }
            None if self.applied > 0 => {
                return Err(Error::Unavailable(format!(
                    "this data dir applied a cluster's stream (through sequence {}) that names no cluster, so not this one (cluster {}): start this node from an empty data dir or a backup of a node of this cluster",
                    self.applied, stream.cluster
                )));
            }
            _ => {}
        }
        match (stream.adopted, self.baseline) {
            (Some(stream), Some(own)) if stream == own => Ok(()),
            (Some(stream), _) => Err(Error::Unavailable(format!(
                "the cluster's stream continues the single-node store adopted as {stream} (`runledger cluster adopt`), and this data dir is not a copy of it: start this node from a backup of the adopted data dir or of another node"
            ))),
            (None, Some(own)) => Err(Error::Unavailable(format!(
                "this data dir was adopted as {own} into a cluster whose stream is not this one: start this node from an empty data dir or a backup of a node of this cluster"
            ))),
            (None, None) if self.applied == 0 && self.has_organizations => {
                Err(Error::Unavailable(
                    "this data dir holds a single node's store, which the cluster's stream does not continue: make a new cluster from it with `runledger cluster adopt`, or start this node from an empty data dir".into(),
                ))
            }
            (None, None) => Ok(()),
        }
    }
}

/// How long a command waits for its message to be confirmed.
const COMMAND_WAIT: Duration = Duration::from_secs(60);

/// Publishes `ops` as one message of a new writer (a command's) on `subject`; its sequence once
/// confirmed.
pub async fn publish_once(
    log: &Log,
    key: &StreamKey,
    subject: &'static str,
    ops: &[WriteOp],
) -> Result<u64> {
    let body = codec::encode(ops)?;
    check_size(log, body.len())?;
    let publisher = Publisher::spawn(log.clone(), key.clone(), subject, None);
    let seq = publisher
        .publish(Kind::Operations, body, COMMAND_WAIT)
        .await?;
    publisher.finish(COMMAND_WAIT).await?;
    Ok(seq)
}

/// Revokes a client on every node: its tokens fail once each node applies the revocation.
pub async fn revoke_client(log: &Log, key: &StreamKey, client_id: &str) -> Result<u64> {
    let op = WriteOp::RevokeClient {
        client_id: client_id.to_string(),
        at: crate::time::Timestamp::now(),
    };
    publish_once(log, key, log::CREDENTIALS_SUBJECT, &[op]).await
}

/// An organization's output key derived from the master key (the same on every node and
/// command, see [`crate::crypto::MasterKey::derive_org_key`]), and the write creating the
/// organization with it (a no-op where it exists).
pub fn organization(
    master: &crate::crypto::MasterKey,
    org: crate::model::OrgId,
) -> (crate::crypto::OutputKey, WriteOp) {
    let key = master.derive_org_key(org);
    let record = crate::store::credentials::OrgRecord {
        sealed_key: master.seal_org_key(org, &key),
        created_at: crate::time::Timestamp::now(),
    };
    (key, WriteOp::CreateOrganization { org, record })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data dir; one that applied a stream records the cluster (7) it belongs to.
    fn at(baseline: Option<Uuid>, applied: u64, has_organizations: bool) -> StartingPoint {
        StartingPoint {
            cluster: (applied > 0).then_some(Uuid::from_u128(7)),
            baseline,
            applied,
            has_organizations,
        }
    }

    fn stream(adopted: Option<Uuid>) -> StreamIdentity {
        StreamIdentity {
            cluster: Uuid::from_u128(7),
            key_check: String::new(),
            adopted,
        }
    }

    #[test]
    fn a_node_starts_only_where_the_stream_begins() {
        let (adopted, other) = (Uuid::from_u128(1), Uuid::from_u128(2));
        // A stream made by `cluster adopt`: copies of the adopted store only.
        assert!(
            at(Some(adopted), 0, true)
                .check(&stream(Some(adopted)))
                .is_ok()
        );
        assert!(
            at(Some(adopted), 900, true)
                .check(&stream(Some(adopted)))
                .is_ok()
        );
        for refused in [
            at(None, 0, false),
            at(Some(other), 0, true),
            at(None, 0, true),
        ] {
            let error = refused
                .check(&stream(Some(adopted)))
                .unwrap_err()
                .to_string();
            assert!(error.contains("not a copy of it"), "{error}");
        }
        // A stream made by `cluster init`: empty data dirs and its own nodes' backups.
        assert!(at(None, 0, false).check(&stream(None)).is_ok());
        let single = at(None, 0, true)
            .check(&stream(None))
            .unwrap_err()
            .to_string();
        assert!(single.contains("cluster adopt"), "{single}");
        let foreign = at(Some(other), 0, true)
            .check(&stream(None))
            .unwrap_err()
            .to_string();
        assert!(foreign.contains("adopted as"), "{foreign}");
        // Another cluster's node, or one whose file names no cluster but applied a stream.
        let other_cluster = StartingPoint {
            cluster: Some(Uuid::from_u128(8)),
            ..at(None, 42, true)
        };
        let error = other_cluster.check(&stream(None)).unwrap_err().to_string();
        assert!(error.contains("belongs to cluster"), "{error}");
        let unnamed = StartingPoint {
            cluster: None,
            ..at(None, 42, true)
        };
        let unnamed = unnamed.check(&stream(None)).unwrap_err().to_string();
        assert!(unnamed.contains("names no cluster"), "{unnamed}");
        let own = StartingPoint {
            cluster: Some(Uuid::from_u128(7)),
            ..at(None, 42, true)
        };
        assert!(own.check(&stream(None)).is_ok());
    }
}
