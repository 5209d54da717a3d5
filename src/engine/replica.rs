//! The engine in cluster mode: writes go to the cluster's log instead of the local writer, and
//! the log's messages, applied in order by [`crate::cluster::apply`], come back here to change
//! the database and what lives in memory beside it (the executors' queues, the token cache).

use std::sync::Arc;

use super::{Engine, OutputKey};
use crate::cluster::envelope::Origin;
use crate::cluster::{Cluster, Role};
use crate::error::{Error, Result};
use crate::model::{OrgId, RunState};
use crate::store::credentials::IssueOutcome;
use crate::store::{Admission, LoggedContent, LoggedMessage, LoggedOutcome, WriteOp, WriteOutcome};

/// A message of the log, read: its sequence and what it holds.
#[derive(Debug)]
pub struct Logged {
    pub seq: u64,
    pub content: Content,
}

#[derive(Debug)]
pub enum Content {
    /// An authentic message of a writer: its operations (none for a pass-over permission), or
    /// why they cannot be read.
    Numbered {
        origin: Origin,
        ops: std::result::Result<Vec<WriteOp>, String>,
    },
    /// Skipped for good: the metric's label and why.
    Refused { label: &'static str, why: String },
}

impl Logged {
    fn is_exclusive(&self) -> bool {
        matches!(&self.content, Content::Numbered { ops: Ok(ops), .. } if ops.iter().any(WriteOp::is_exclusive))
    }

    fn message(&self) -> LoggedMessage<'_> {
        let content = match &self.content {
            Content::Numbered { origin, ops } => LoggedContent::Numbered {
                writer: origin.writer.0,
                number: origin.number,
                ops: ops.as_deref().map_err(Clone::clone),
            },
            Content::Refused { why, .. } => LoggedContent::Skip(why.clone()),
        };
        LoggedMessage {
            seq: self.seq,
            content,
        }
    }
}

impl Engine {
    /// The engine as a node of `cluster`: writes are published to its log. Start
    /// [`crate::cluster::apply::run`] to apply the log.
    pub fn with_cluster(mut self, cluster: Arc<Cluster>) -> Engine {
        self.cluster = Some(cluster);
        self
    }

    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// The stream sequence this node has applied, in cluster mode.
    pub fn applied_seq(&self) -> Option<u64> {
        self.cluster.as_ref().map(|c| c.progress.applied())
    }

    /// Applies a write: through the cluster's log in cluster mode, else the local writer.
    pub(super) async fn write(&self, op: WriteOp) -> Result<WriteOutcome> {
        match &self.cluster {
            Some(cluster) => cluster.write(op).await,
            None => self.store.write(op).await,
        }
    }

    /// [`Engine::write`] on the calling (blocking) thread.
    pub(super) fn write_now(&self, op: WriteOp) -> Result<WriteOutcome> {
        match &self.cluster {
            Some(cluster) => tokio::runtime::Handle::try_current()
                .map_err(|_| Error::Internal("a cluster write outside the runtime".into()))?
                .block_on(cluster.write(op)),
            None => self
                .store
                .apply_now(std::slice::from_ref(&op))?
                .pop()
                .unwrap_or_else(|| Err(Error::Internal("no outcome for a write".into()))),
        }
    }

    /// Cluster mode: the organization's output key, and the write creating the organization
    /// when this node does not hold it yet.
    pub(super) fn cluster_output_key(&self, org: OrgId) -> Result<(OutputKey, Option<WriteOp>)> {
        if let Some(record) = self.store.reader()?.organization(org)? {
            return Ok((self.keys.open(org, &record)?, None));
        }
        let (key, create) = self.keys.derived(org)?;
        Ok((key, Some(create)))
    }

    /// Refuses reads on a write gateway.
    pub(super) fn check_readable(&self) -> Result<()> {
        match &self.cluster {
            Some(cluster) if cluster.role == Role::Gateway => {
                Err(crate::cluster::gateway_refuses_reads())
            }
            _ => Ok(()),
        }
    }

    /// Waits (bounded) until this node has applied stream sequence `seq`; without a cluster
    /// there is nothing to wait for.
    pub async fn wait_applied(&self, seq: u64) -> Result<()> {
        match &self.cluster {
            Some(cluster) => cluster.wait_applied(seq).await,
            None => Ok(()),
        }
    }

    /// Applies messages of the log, in order: runs of ordinary messages share a transaction,
    /// an exclusive one (a retention step) has its own; each transaction records its last
    /// sequence. Then the in-memory state follows and waiting writers get their outcomes.
    /// `Err` leaves the rest for the next attempt (nothing after the last commit is lost or
    /// applied twice). Blocks.
    pub fn apply_logged(&self, entries: Vec<Logged>) -> Result<()> {
        let Some(cluster) = self.cluster.clone() else {
            return Err(Error::Internal(
                "applying a log outside cluster mode".into(),
            ));
        };
        let mut entries = entries.into_iter().peekable();
        while let Some(first) = entries.next() {
            let mut group = vec![first];
            if !group[0].is_exclusive() {
                while let Some(entry) = entries.next_if(|entry| !entry.is_exclusive()) {
                    group.push(entry);
                }
            }
            let last = group.last().expect("a group is never empty").seq;
            let messages: Vec<LoggedMessage<'_>> = group.iter().map(Logged::message).collect();
            let outcomes = self.store.apply_logged(&messages, last)?;
            drop(messages);
            for (entry, outcome) in group.into_iter().zip(outcomes) {
                self.after_message(&cluster, entry, outcome);
            }
            cluster.progress.advance(last);
        }
        Ok(())
    }

    /// What follows an applied (or skipped) message: the in-memory state, its writer's
    /// outcome, the metrics and the log.
    fn after_message(&self, cluster: &Cluster, entry: Logged, outcome: LoggedOutcome) {
        let seq = entry.seq;
        match (entry.content, outcome) {
            (Content::Numbered { origin, ops }, LoggedOutcome::Applied(outcomes)) => {
                let mut first = None;
                for (op, outcome) in ops.iter().flatten().zip(outcomes) {
                    self.after_apply(op, &outcome);
                    first.get_or_insert(outcome);
                }
                if let Some(outcome) = first {
                    cluster.progress.deliver(&origin, outcome);
                }
            }
            (Content::Numbered { origin, .. }, LoggedOutcome::NotApplied(admission)) => {
                let label = match admission {
                    Admission::Duplicate => "duplicate",
                    _ => "out_of_order",
                };
                tracing::debug!(seq, writer = %origin.writer, number = origin.number, ?admission, "a copy not applied");
                metrics::counter!(crate::metrics::MESSAGES_SKIPPED, "reason" => label).increment(1);
            }
            (content, _) => {
                let (label, why) = match content {
                    Content::Refused { label, why } => (label, why),
                    Content::Numbered { ops, .. } => ("malformed", ops.err().unwrap_or_default()),
                };
                tracing::warn!(seq, reason = %why, "a message of the cluster's log was skipped on every node (recorded in the skipped table)");
                metrics::counter!(crate::metrics::MESSAGES_SKIPPED, "reason" => label).increment(1);
            }
        }
    }

    /// What follows an applied operation outside the database, on every node alike.
    fn after_apply(&self, op: &WriteOp, outcome: &Result<WriteOutcome>) {
        match (op, outcome) {
            (WriteOp::Report { runs, .. }, Ok(_)) => {
                for run in runs.iter().filter(|run| run.state != RunState::Pending) {
                    if let Some(org) = run.organization {
                        self.dispatcher.taken_up(org, &[run.task_run]);
                    }
                }
            }
            (_, Ok(WriteOutcome::Started(runs))) => self.dispatcher.enqueue(runs.clone()),
            (WriteOp::RevokeClient { .. }, _)
            | (_, Ok(WriteOutcome::Tokens(IssueOutcome::ReuseDetected { .. }))) => {
                self.tokens.invalidate();
            }
            _ => {}
        }
    }
}
