//! The engine in cluster mode: writes go to the cluster's log instead of the local writer, and
//! the log's messages, applied in order by [`crate::cluster::apply`], come back here to change
//! the database and what lives in memory beside it (the executors' queues, the token cache).

use std::sync::Arc;

use super::{Engine, OutputKey};
use crate::cluster::{Cluster, Role};
use crate::error::{Error, Result};
use crate::model::{OrgId, RunState};
use crate::store::credentials::IssueOutcome;
use crate::store::{WriteOp, WriteOutcome};

/// A message of the log, decoded: its sequence, its id (for the writer waiting on it) and its
/// operations.
#[derive(Debug)]
pub struct Logged {
    pub seq: u64,
    pub id: Option<String>,
    pub ops: Vec<WriteOp>,
}

impl Logged {
    fn is_exclusive(&self) -> bool {
        self.ops.iter().any(WriteOp::is_exclusive)
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

    /// Applies messages of the log, in order: runs of ordinary operations share a transaction,
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
            let mut messages = Vec::with_capacity(group.len());
            let mut ops = Vec::new();
            for entry in group {
                messages.push((entry.id, entry.ops.len()));
                ops.extend(entry.ops);
            }
            let mut outcomes = self.store.apply_logged(&ops, last)?.into_iter();
            let mut ops = ops.iter();
            for (id, count) in messages {
                let mut first = None;
                for op in ops.by_ref().take(count) {
                    let outcome = outcomes
                        .next()
                        .unwrap_or_else(|| Err(Error::Internal("an outcome is missing".into())));
                    self.after_apply(op, &outcome);
                    first.get_or_insert(outcome);
                }
                if let (Some(id), Some(outcome)) = (id, first) {
                    cluster.progress.deliver(&id, outcome);
                }
            }
            cluster.progress.advance(last);
        }
        Ok(())
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
