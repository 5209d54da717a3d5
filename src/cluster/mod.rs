//! Cluster mode: every write goes into one replicated, totally ordered NATS JetStream stream
//! ([`log`]), and every node applies that stream, in order and exactly once, into its own
//! database ([`apply`]): the last applied sequence is written in the same transaction as the
//! changes. Reads are served from the local database. No consensus code of our own: JetStream
//! orders and replicates, the engine's deterministic apply does the rest.
//!
//! - [`codec`]: operations as stream messages;
//! - [`log`]: the stream: creating it, publishing with de-duplication, trimming;
//! - [`apply`]: following the stream into the node's database;
//! - [`progress`]: the applied sequence, writers waiting for their outcome, read-your-writes.

pub mod apply;
pub mod codec;
pub mod log;
pub mod progress;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot::Receiver;
use uuid::Uuid;

pub use log::{InitOutcome, Log, StreamState};
pub use progress::{Progress, note_written, noting_writes};

use crate::error::{Error, Result};
use crate::model::{RegisterOutcome, ReportCounts};
use crate::store::{WriteOp, WriteOutcome};

/// How long a writer waits for its node to apply its own write before answering that it is
/// in the log but not applied here yet.
const APPLY_WAIT: Duration = Duration::from_secs(30);
/// How long a read with `x-runledger-min-seq` waits for the node to catch up by default.
pub const DEFAULT_MIN_SEQ_WAIT: Duration = Duration::from_secs(2);

/// What a node does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Accepts writes, applies the whole stream into its data dir, serves reads.
    Node,
    /// Accepts writes only; applies just the credentials (to authenticate callers), in a
    /// scratch database; refuses reads.
    Gateway,
}

/// A node's view of the cluster: the log, how far it applied it, what it does.
pub struct Cluster {
    pub log: Log,
    pub progress: Progress,
    pub role: Role,
    pub min_seq_wait: Duration,
}

impl Cluster {
    pub fn new(log: Log, role: Role, applied: u64) -> Cluster {
        Cluster {
            log,
            progress: Progress::new(applied),
            role,
            min_seq_wait: DEFAULT_MIN_SEQ_WAIT,
        }
    }

    /// Whether this node applies messages of `subject`.
    fn applies(&self, subject: &str) -> bool {
        self.role == Role::Node || subject == log::CREDENTIALS_SUBJECT
    }

    /// Publishes a write and answers its outcome: once this node has applied it, or (on a
    /// gateway, for what it does not apply) as soon as the log acknowledged it. The write's
    /// sequence is noted for the answer's `x-runledger-seq`.
    pub async fn write(self: &Arc<Self>, op: WriteOp) -> Result<WriteOutcome> {
        self.publish(op).await?.outcome().await
    }

    /// Publishes a write and returns once the log acknowledged it; its outcome follows (see
    /// [`Published::outcome`]). Writes published one after another are in the log in that
    /// order, and the next can be published while this one is being applied.
    pub async fn publish(self: &Arc<Self>, op: WriteOp) -> Result<Published> {
        let subject = if codec::is_credential(&op) {
            log::CREDENTIALS_SUBJECT
        } else {
            log::DATA_SUBJECT
        };
        let body = codec::encode(std::slice::from_ref(&op))?;
        let id = Uuid::new_v4().simple().to_string();
        let waiter = self.applies(subject).then(|| self.progress.expect(&id));
        let seq = match self.log.publish(subject, &id, body).await {
            Ok(seq) => seq,
            Err(error) => {
                self.progress.forget(&id);
                return Err(error);
            }
        };
        note_written(seq);
        let waiter = match waiter {
            Some(waiter) => Ok(waiter),
            None => Err(acknowledged_only(&op)),
        };
        Ok(Published {
            cluster: self.clone(),
            id,
            seq,
            waiter,
        })
    }
    /// Waits (at most a second) until this node has applied every credentials message the log
    /// holds: a client created or a token granted through another node a moment ago is then
    /// known here. False when the node could not catch up.
    pub async fn catch_up_credentials(&self) -> bool {
        match self.log.last_credentials_seq().await {
            Ok(seq) => self.progress.wait_for(seq, Duration::from_secs(1)).await,
            Err(_) => false,
        }
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

/// A write in the log, its outcome to come.
pub struct Published {
    cluster: Arc<Cluster>,
    id: String,
    seq: u64,
    waiter: std::result::Result<Receiver<Result<WriteOutcome>>, Result<WriteOutcome>>,
}

impl Published {
    /// The outcome once this node applied the write (or the gateway's answer at once).
    pub async fn outcome(self) -> Result<WriteOutcome> {
        let waiter = match self.waiter {
            Ok(waiter) => waiter,
            Err(answer) => return answer,
        };
        let seq = self.seq;
        match tokio::time::timeout(APPLY_WAIT, waiter).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(Error::Unavailable(format!(
                "the write is in the cluster's log at sequence {seq}, but this node is stopping before applying it; the other nodes apply it"
            ))),
            Err(_) => {
                self.cluster.progress.forget(&self.id);
                Err(Error::Unavailable(format!(
                    "the write is in the cluster's log at sequence {seq}, but this node has not applied it within {} s; it will be (read with x-runledger-min-seq: {seq})",
                    APPLY_WAIT.as_secs()
                )))
            }
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
            baseline: reader.baseline()?,
            applied: reader.applied_seq()?,
            has_organizations: reader.any_organization()?.is_some(),
        })
    }

    /// Whether a node starting here may apply a stream that continues `stream_baseline` (the
    /// adoption it names, if any): a stream made by `cluster adopt` holds only what came after
    /// the adopted store, so only copies of that store may apply it; a stream made by `cluster
    /// init` starts empty, so a single node's store (organizations, nothing applied, not
    /// adopted) would keep history no other node has.
    pub fn check(&self, stream_baseline: Option<Uuid>) -> Result<()> {
        match (stream_baseline, self.baseline) {
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

/// Creates an OAuth client cluster-wide (and its organization, with its derived output key,
/// unless it exists): one message, each write its own unit. Returns the credentials (with a new
/// organization's output key) and the message's sequence.
pub async fn create_client(
    log: &Log,
    master: &crate::crypto::MasterKey,
    org: Option<crate::model::OrgId>,
    scopes: crate::auth::Scopes,
) -> Result<(crate::engine::NewClient, u64)> {
    if scopes == crate::auth::Scopes::default() {
        return Err(Error::invalid(
            "scopes",
            "a client needs at least one scope",
        ));
    }
    let new_org = org.is_none();
    let org = org.unwrap_or_else(|| crate::model::OrgId(Uuid::new_v4()));
    let (key, organization) = organization(master, org);
    let (client_id, client_secret, create) = crate::engine::new_client(org, scopes);
    let seq = log
        .publish_ops(log::CREDENTIALS_SUBJECT, &[organization, create])
        .await?;
    Ok((
        crate::engine::NewClient {
            client_id,
            client_secret,
            organization: org,
            scopes,
            // Only for a new organization: an existing one may be adopted, with a key of its
            // own (`runledger key` shows it).
            output_key: new_org.then(|| key.to_base64()),
        },
        seq,
    ))
}

/// Revokes a client on every node: its tokens fail once each node applies the revocation.
pub async fn revoke_client(log: &Log, client_id: &str) -> Result<u64> {
    let op = WriteOp::RevokeClient {
        client_id: client_id.to_string(),
        at: crate::time::Timestamp::now(),
    };
    log.publish_ops(log::CREDENTIALS_SUBJECT, &[op]).await
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

    fn at(baseline: Option<Uuid>, applied: u64, has_organizations: bool) -> StartingPoint {
        StartingPoint {
            baseline,
            applied,
            has_organizations,
        }
    }

    #[test]
    fn a_node_starts_only_where_the_stream_begins() {
        let (adopted, other) = (Uuid::from_u128(1), Uuid::from_u128(2));
        // A stream made by `cluster adopt`: copies of the adopted store only.
        assert!(at(Some(adopted), 0, true).check(Some(adopted)).is_ok());
        assert!(at(Some(adopted), 900, true).check(Some(adopted)).is_ok());
        for refused in [
            at(None, 0, false),
            at(Some(other), 0, true),
            at(None, 0, true),
        ] {
            let error = refused.check(Some(adopted)).unwrap_err().to_string();
            assert!(error.contains("not a copy of it"), "{error}");
        }
        // A stream made by `cluster init`: empty data dirs and its own nodes' backups.
        assert!(at(None, 0, false).check(None).is_ok());
        assert!(at(None, 42, true).check(None).is_ok());
        let single = at(None, 0, true).check(None).unwrap_err().to_string();
        assert!(single.contains("cluster adopt"), "{single}");
        let foreign = at(Some(other), 0, true)
            .check(None)
            .unwrap_err()
            .to_string();
        assert!(foreign.contains("adopted as"), "{foreign}");
    }
}
