//! The engine in cluster mode: writes go to the cluster's log instead of the local writer, and
//! the log's messages, applied in order by [`crate::cluster::apply`], come back here to change
//! the database and what lives in memory beside it (the executors' queues, the token cache).

use std::sync::Arc;

use super::{Engine, OutputKey};
use crate::cluster::apply::Replica;
use crate::cluster::envelope::Origin;
use crate::cluster::logged::{Content, Logged};
use crate::cluster::{Cluster, Role};
use crate::error::{Error, Result};
use crate::model::{OrgId, RunState};
use crate::store::credentials::IssueOutcome;
use crate::store::{
    Admission, LoggedContent, LoggedMessage, LoggedOutcome, Skip, Taken, WriteOp, WriteOutcome,
};

/// How a cluster node is doing, as `/healthz` says.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Health {
    /// `ok`, or `stalled` while the applier cannot go on (then reads grow stale).
    pub status: &'static str,
    pub role: &'static str,
    pub cluster: String,
    pub applied_seq: u64,
    /// Whether a quorum of the stream's replicas answered the last probe (every 2 s): without
    /// one, writes and token grants are refused after 5 s, reads are served.
    pub quorum: bool,
    /// Why the applier is stalled, and what to do about it.
    pub stalled: Option<String>,
}

impl Engine {
    /// How this node is doing, in cluster mode.
    pub fn health(&self) -> Option<Health> {
        let cluster = self.writes.cluster()?;
        let stalled = cluster.progress.stalled();
        Some(Health {
            status: if stalled.is_some() { "stalled" } else { "ok" },
            role: match cluster.role {
                Role::Node => "node",
                Role::Gateway => "gateway",
            },
            cluster: cluster.key.cluster().to_string(),
            applied_seq: cluster.progress.applied(),
            quorum: cluster.has_quorum(),
            stalled,
        })
    }

    /// The engine as a node of `cluster`: writes are published to its log. Start
    /// [`crate::cluster::apply::run`] to apply the log.
    pub fn with_cluster(mut self, cluster: Arc<Cluster>) -> Engine {
        self.writes = super::writes::Writes::Cluster(cluster);
        // Alerts are delivered by the holder of the delivery lease only.
        self.delivering
            .store(false, std::sync::atomic::Ordering::Release);
        self
    }

    /// Set while this node holds the delivery lease (see [`crate::cluster::lease`]).
    pub fn delivery_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.delivering.clone()
    }

    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.writes.cluster()
    }

    /// The stream sequence this node has applied, in cluster mode.
    pub fn applied_seq(&self) -> Option<u64> {
        self.writes.cluster().map(|c| c.progress.applied())
    }

    /// Applies a write (see [`super::writes`]) and waits until it is durable.
    pub(super) async fn write(&self, op: WriteOp) -> Result<WriteOutcome> {
        self.writes.write(&self.store, op).await
    }

    /// [`Engine::write`] on the calling (blocking) thread.
    pub(super) fn write_now(&self, op: WriteOp) -> Result<WriteOutcome> {
        self.writes.write_now(&self.store, op)
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
        match self.writes.cluster() {
            Some(cluster) if cluster.role == Role::Gateway => {
                Err(crate::cluster::gateway_refuses_reads())
            }
            _ => Ok(()),
        }
    }

    /// Whether `peer` may make this node look the cluster's log up for a token it does not
    /// know (see [`super::throttle`]).
    pub fn may_look_up(&self, peer: Option<std::net::IpAddr>) -> bool {
        self.throttle.lookup(peer, std::time::Instant::now())
    }

    /// Waits (bounded) until this node has applied stream sequence `seq`; without a cluster
    /// there is nothing to wait for.
    pub async fn wait_applied(&self, seq: u64) -> Result<()> {
        match self.writes.cluster() {
            Some(cluster) => cluster.wait_applied(seq).await,
            None => Ok(()),
        }
    }

    /// What follows a message of the log: the in-memory state, its writer's outcome, the
    /// metrics and the log.
    fn after_message(&self, cluster: &Cluster, entry: Logged, outcome: LoggedOutcome) {
        let seq = entry.seq;
        match (entry.content, outcome) {
            (Content::Numbered { origin, ops, .. }, LoggedOutcome::Taken(taken)) => {
                let mut own = ops.ok();
                for Taken {
                    number,
                    seq,
                    kept_ops,
                    outcome,
                } in taken
                {
                    let ops = match kept_ops {
                        Some(ops) => Some(ops),
                        None if number == origin.number => own.take(),
                        None => None,
                    };
                    let origin = Origin {
                        writer: origin.writer,
                        number,
                    };
                    match outcome {
                        Ok(outcomes) => {
                            let mut first = None;
                            for (op, outcome) in ops.iter().flatten().zip(outcomes) {
                                self.after_apply(op, &outcome);
                                first.get_or_insert(outcome);
                            }
                            if let Some(outcome) = first {
                                cluster.progress.deliver(&origin, outcome);
                            }
                        }
                        Err(skip) => {
                            let refused =
                                Error::NoQuorum(format!("the write was not applied: {}", skip.why));
                            cluster.progress.deliver(&origin, Err(refused));
                            skipped(seq, &skip);
                        }
                    }
                }
            }
            (Content::Numbered { origin, .. }, LoggedOutcome::NotApplied(admission)) => {
                let label = match admission {
                    Admission::Duplicate => "duplicate",
                    Admission::Early { kept: true, .. } => "early",
                    _ => "dropped",
                };
                tracing::debug!(seq, writer = %origin.writer, number = origin.number, ?admission, "a copy not applied in its place");
                metrics::counter!(crate::metrics::MESSAGES_SKIPPED, "reason" => label).increment(1);
            }
            (Content::Refused(skip), _) => skipped(seq, &skip),
            (Content::Numbered { .. }, LoggedOutcome::Skipped) => {}
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

impl Replica for Engine {
    /// Applies messages of the log, in order: runs of ordinary messages share a transaction,
    /// an exclusive one (a retention step) has its own; each transaction records its last
    /// sequence. Then the in-memory state follows and waiting writers get their outcomes.
    /// `Err` leaves the rest for the next attempt (nothing after the last commit is lost or
    /// applied twice). Blocks.
    fn apply_logged(&self, entries: Vec<Logged>) -> Result<()> {
        let Some(cluster) = self.writes.cluster().cloned() else {
            return Err(Error::Internal(
                "applying a log outside cluster mode".into(),
            ));
        };
        let replay = |copy: &[u8]| Logged::from_copy(&cluster, copy);
        let mut entries = entries.into_iter().peekable();
        while let Some(first) = entries.next() {
            let mut group = vec![first];
            if !group[0].is_exclusive() {
                while let Some(entry) = entries.next_if(|entry| !entry.is_exclusive()) {
                    group.push(entry);
                }
            }
            let last = group.last().expect("a group is never empty").seq;
            let outcomes = {
                let copies: Vec<Box<dyn Fn() -> Vec<u8> + '_>> = group
                    .iter()
                    .map(|entry| Box::new(move || entry.copy()) as Box<dyn Fn() -> Vec<u8>>)
                    .collect();
                let messages: Vec<LoggedMessage<'_>> = group
                    .iter()
                    .zip(&copies)
                    .map(|(entry, copy)| LoggedMessage {
                        seq: entry.seq,
                        content: match &entry.content {
                            Content::Numbered {
                                origin,
                                confirmed,
                                ops,
                            } => LoggedContent::Numbered {
                                writer: origin.writer.0,
                                number: origin.number,
                                confirmed: *confirmed,
                                ops: ops.as_deref().map_err(Clone::clone),
                                copy: copy.as_ref(),
                            },
                            Content::Refused(skip) => LoggedContent::Skip(skip.clone()),
                        },
                    })
                    .collect();
                self.store.apply_logged(&messages, last, &replay)?
            };
            for (entry, outcome) in group.into_iter().zip(outcomes) {
                self.after_message(&cluster, entry, outcome);
            }
            cluster.progress.advance(last);
        }
        Ok(())
    }
}

/// Logs and counts a message skipped for good (the same on every node).
fn skipped(seq: u64, skip: &Skip) {
    tracing::warn!(seq, reason = %skip.why, "a message of the cluster's log was skipped on every node (recorded in the skipped table)");
    metrics::counter!(crate::metrics::MESSAGES_SKIPPED, "reason" => skip.label).increment(1);
}
