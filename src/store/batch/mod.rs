//! One write transaction: the run store, the pipeline-run aggregates, the UUID indexes and the
//! rollups change together, so they can never disagree.
//!
//! Each operation is first checked against what is stored (read-only: a rejection leaves the
//! transaction untouched), then applied. Task-run contributions go straight into the rollup
//! deltas; pipeline runs are gathered and contribute once, at [`Batch::finish`], with their final
//! state, which then also brings the last run of every touched entity up to date.
//!
//! Nothing in here reads the clock or draws random numbers: every time and every new UUID comes
//! with the operation, so applying the same operations in the same order gives the same tables,
//! however they are grouped into transactions.
//!
//! - [`reports`]: checking and applying task-run reports;
//! - [`pipeline_runs`]: aggregates and their members;
//! - [`entities`]: organizations, pipelines, tasks, registration, starting runs;
//! - [`credentials`]: organizations' keys, clients and tokens;
//! - [`last_runs`]: keeping each entity's latest run;
//! - [`restore`]: unfinished runs carried over from an older database.

mod alerting;
mod alerts;
mod credentials;
mod entities;
mod last_runs;
mod lineage;
mod pipeline_runs;
mod prune;
mod reports;
mod restore;
mod stream;

use rustc_hash::FxHashMap as HashMap;

use redb::{ReadableTable, WriteTransaction};
use uuid::Uuid;

use super::cache::EntityCache;
use super::credentials::{ClientRecord, IssueOutcome, OrgRecord};
use super::index::{Filters, IndexWork, Learned, PendingState};
use super::records::{EntityKey, TaskRunHome};
use super::rollup::{PreparedDeltas, RollupDeltas};
use super::tables::{EntityId, OrgIndex, RUN_KEY_LEN, RunId, WriteTables, index_key, meta};
use crate::error::{Error, Result};
use crate::model::{
    OrgId, PendingTaskRun, PipelineDefinition, PipelineId, PipelineRunId, RegisterOutcome,
    ReportCounts, TaskRun, TaskRunId,
};
use crate::time::Timestamp;

pub use credentials::IssueRequest;
pub use entities::derived_task_run;
use last_runs::LastRunWork;
use pipeline_runs::Aggs;
pub use prune::PruneProgress;
pub(super) use prune::read_cut;
pub use restore::UnfinishedRun;
pub use stream::Admission;

/// A change to the database, applied atomically. Each carries what the writer must not decide
/// itself (times, new UUIDs), so that the same operations always give the same tables.
#[derive(Clone, Debug)]
pub enum WriteOp {
    /// One batch of task-run reports, each with its organization filled in, received at `at`.
    Report { runs: Vec<TaskRun>, at: Timestamp },
    /// One OpenLineage run event of organization `org`, resolved, received at `at`.
    Lineage {
        org: OrgId,
        event: Box<crate::lineage::Observed>,
        at: Timestamp,
    },
    /// A new alert rule of organization `org` (its webhook secret sealed).
    CreateRule {
        org: OrgId,
        rule: Uuid,
        stored: Box<crate::alerts::StoredRule>,
    },
    /// Deletes an alert rule at `at` (its firing alerts resolve, undelivered).
    DeleteRule {
        org: OrgId,
        rule: Uuid,
        at: Timestamp,
    },
    /// The clock reached `at`: the alert rules it decides (`missing`, `stuck`) are judged.
    AlertTick { at: Timestamp },
    /// A delivery from the outbox ended at `at` (see [`crate::alerts::DeliveryEnd`]).
    FinishDelivery {
        serial: u64,
        end: crate::alerts::DeliveryEnd,
        at: Timestamp,
    },
    /// A delivery's attempt number `attempts` failed with `error`; the next one is not before
    /// `next_at` (microseconds).
    RetryDelivery {
        serial: u64,
        attempts: u32,
        next_at: i64,
        error: String,
    },
    /// The ends of several deliveries (each a [`WriteOp::FinishDelivery`] or a
    /// [`WriteOp::RetryDelivery`]), applied in order: the courier records them together.
    Deliveries(Vec<WriteOp>),
    /// A pipeline and its tasks, with the organization filled in.
    Register(PipelineDefinition),
    /// A new run of a pipeline: one pending task run per initial task, queued for executors,
    /// in the pipeline run `pipeline_run` (task-run UUIDs are derived from it).
    StartPipelineRun {
        pipeline: PipelineId,
        org: OrgId,
        pipeline_run: PipelineRunId,
        at: Timestamp,
    },
    /// An organization with its sealed output key, unless it exists.
    CreateOrganization { org: OrgId, record: OrgRecord },
    CreateClient {
        client_id: String,
        record: ClientRecord,
    },
    /// Revokes a client at `at`: its tokens are refused from then on.
    RevokeClient { client_id: String, at: Timestamp },
    /// Stores issued tokens (see [`IssueRequest`]).
    IssueTokens(IssueRequest),
    /// Deletes tokens that expired before `before`.
    PurgeTokens { before: Timestamp },
    /// Unfinished task runs carried over by `runledger upgrade`, and the next REST id to hand
    /// out (at least).
    Restore {
        unfinished: Vec<UnfinishedRun>,
        next_serial: u64,
    },
    /// One step of retention: deletes at most `limit` task runs executed before `before` (a
    /// UTC midnight; the cut only moves forward), see [`PruneProgress`].
    Prune { before: i64, limit: usize },
}

impl WriteOp {
    /// Roughly the memory the operation holds while it waits for the writer, in bytes.
    pub fn bytes(&self) -> usize {
        const FIXED: usize = 256;
        match self {
            WriteOp::Report { runs, .. } => runs
                .iter()
                .map(|run| {
                    FIXED
                        + run.output.len()
                        + run
                            .errors
                            .iter()
                            .map(|e| 72 + e.code.len() + e.severity.len() + e.message.len())
                            .sum::<usize>()
                })
                .sum(),
            _ => FIXED * self.weight(),
        }
    }

    /// Whether the operation is applied in a transaction of its own: pruning deletes what
    /// other operations in a shared transaction might have read.
    pub fn is_exclusive(&self) -> bool {
        matches!(self, WriteOp::Prune { .. })
    }

    /// The organization whose share of the writer this write draws on, when it has one.
    pub fn organization(&self) -> Option<OrgId> {
        match self {
            WriteOp::Report { runs, .. } => runs.first().and_then(|run| run.organization),
            WriteOp::Register(definition) => definition.organization,
            WriteOp::Lineage { org, .. }
            | WriteOp::CreateRule { org, .. }
            | WriteOp::DeleteRule { org, .. } => Some(*org),
            WriteOp::StartPipelineRun { org, .. } | WriteOp::CreateOrganization { org, .. } => {
                Some(*org)
            }
            WriteOp::CreateClient { record, .. } => Some(record.org),
            WriteOp::IssueTokens(request) => request.tokens.first().map(|(_, token)| token.org),
            _ => None,
        }
    }

    /// The operation's kind, as a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            WriteOp::Report { .. } => "report",
            WriteOp::Register(_) => "register",
            WriteOp::Lineage { .. } => "lineage",
            WriteOp::CreateRule { .. } => "create_rule",
            WriteOp::DeleteRule { .. } => "delete_rule",
            WriteOp::AlertTick { .. } => "alert_tick",
            WriteOp::FinishDelivery { .. } => "finish_delivery",
            WriteOp::RetryDelivery { .. } => "retry_delivery",
            WriteOp::Deliveries(_) => "deliveries",
            WriteOp::StartPipelineRun { .. } => "start_pipeline_run",
            WriteOp::CreateOrganization { .. } => "create_organization",
            WriteOp::CreateClient { .. } => "create_client",
            WriteOp::RevokeClient { .. } => "revoke_client",
            WriteOp::IssueTokens(_) => "issue_tokens",
            WriteOp::PurgeTokens { .. } => "purge_tokens",
            WriteOp::Restore { .. } => "restore",
            WriteOp::Prune { .. } => "prune",
        }
    }

    /// What the operation is, in a few words, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            WriteOp::Report { .. } => "a report of task runs",
            WriteOp::Register(_) => "a pipeline registration",
            WriteOp::Lineage { .. } => "an OpenLineage event",
            WriteOp::CreateRule { .. } => "a new alert rule",
            WriteOp::DeleteRule { .. } => "a deletion of an alert rule",
            WriteOp::AlertTick { .. } => "a clock tick of the alert rules",
            WriteOp::FinishDelivery { .. } => "the end of an alert delivery",
            WriteOp::RetryDelivery { .. } => "a failed alert delivery",
            WriteOp::Deliveries(_) => "the ends of alert deliveries",
            WriteOp::StartPipelineRun { .. } => "a pipeline run",
            WriteOp::CreateOrganization { .. } => "a new organization",
            WriteOp::CreateClient { .. } => "a new client",
            WriteOp::RevokeClient { .. } => "a revocation",
            WriteOp::IssueTokens(_) => "a token grant",
            WriteOp::PurgeTokens { .. } => "a purge of expired tokens",
            WriteOp::Restore { .. } => "a restore of unfinished runs",
            WriteOp::Prune { .. } => "a retention step",
        }
    }

    /// How much work the operation is, for sizing group commits.
    pub fn weight(&self) -> usize {
        match self {
            WriteOp::Report { runs, .. } => runs.len().max(1),
            WriteOp::Restore { unfinished, .. } => unfinished.len().max(1),
            WriteOp::Prune { limit, .. } => (*limit).max(1),
            WriteOp::Register(definition) => definition.tasks.len().max(1),
            WriteOp::Deliveries(ends) => ends.len().max(1),
            _ => 1,
        }
    }
}

/// What an applied operation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    Report(ReportCounts),
    Register(RegisterOutcome),
    Started(Vec<PendingTaskRun>),
    Organization {
        record: OrgRecord,
        created: bool,
    },
    ClientCreated,
    ClientRevoked(bool),
    Tokens(IssueOutcome),
    TokensPurged(u64),
    Restored,
    Pruned(PruneProgress),
    RuleCreated,
    RuleDeleted(bool),
    AlertsJudged,
    /// Whether the delivery's outbox entry was there to change.
    DeliveryRecorded(bool),
    /// How many of the deliveries' entries were there to change.
    DeliveriesRecorded(usize),
}

/// Index entries from which [`Batch::finish`] writes tables from several threads (when allowed):
/// below, a thread costs more than it saves.
const PARALLEL_FROM: usize = 1_024;

/// The result of checking an operation: `Err` is a rejection of that operation alone.
type Verdict = std::result::Result<(), Error>;

/// What a committed transaction created, for the in-memory caches.
#[derive(Default)]
pub struct Created {
    pub entities: HashMap<(OrgIndex, Uuid), EntityKey>,
    pub orgs: HashMap<OrgId, OrgIndex>,
    /// The UUID indexes' inserts, for the committed filters.
    pub indexes: Vec<Learned>,
    /// Organizations whose alert rules changed, with their rules now.
    pub rules: HashMap<OrgId, std::sync::Arc<crate::alerts::OrgRules>>,
    /// Whether the outbox got something to deliver.
    pub outbox: bool,
    /// The first and last outbox entries this transaction put there, if any.
    pub outbox_serials: Option<(u64, u64)>,
}

/// Counters handed out in this transaction, written back at [`Batch::finish`].
#[derive(Default)]
struct Counters {
    next_entity_id: Option<u32>,
    next_org_index: Option<u32>,
    next_serial: Option<u64>,
    next_run_id: Option<u64>,
    /// The first pipeline-run id handed out in this transaction.
    first_run_id: Option<u64>,
}

/// The open tables and gathered changes of one write transaction.
pub struct Batch<'txn> {
    pub(super) t: WriteTables<'txn>,
    cache: &'txn EntityCache,
    filters: &'txn Filters,
    /// The committed alert rules.
    rule_set: &'txn crate::alerts::RuleSet,
    alerting: alerting::Alerting,
    /// Task runs' homes written in this transaction (inserted in key order at
    /// [`Batch::finish`]); reads of `task_index` look here first.
    task_index: IndexWork<PendingHome>,
    /// Pipeline runs' ids handed out (or found) in this transaction.
    pipeline_index: IndexWork<RunId>,
    created: Created,
    counters: Counters,
    deltas: RollupDeltas,
    /// Threads the transaction may use (see [`Batch::open`]).
    threads: usize,
    /// Whether the task runs of the operations being applied are each reported once in the
    /// whole transaction (see [`Batch::set_new_task_runs`]).
    new_task_runs: bool,
    /// Finished runs new in this transaction, in the order they came (`None` once replaced
    /// again), written in key order at [`Batch::finish`]; a pending home says which is its run.
    new_log: Vec<([u8; RUN_KEY_LEN], Option<Vec<u8>>)>,
    /// Stored runs replaced in this transaction, taken out of the run log at the next
    /// write-out.
    removed_log: Vec<[u8; RUN_KEY_LEN]>,
    /// The retention cut once read (`None` until then); only pruning moves it.
    cut: std::cell::Cell<Option<Option<i64>>>,
    aggs: Aggs,
    /// Pipeline-run aggregates as the tables hold them, read or written by this transaction
    /// (judging reads the same ones again and again).
    stored_aggs: std::cell::RefCell<HashMap<RunId, super::records::PipelineRunAgg>>,
    last_run_work: HashMap<EntityId, LastRunWork>,
}

/// A task run's home as a transaction wrote it: a finished run with its place in `new_log`
/// (kept small: a large import holds one per run), or an unfinished one.
#[derive(Clone, Debug)]
pub(super) enum PendingHome {
    Finished {
        pipeline: EntityId,
        executed_at: Timestamp,
        log: usize,
    },
    Unfinished(Box<TaskRunHome>),
}

impl PendingHome {
    fn new(home: TaskRunHome, log: Option<usize>) -> PendingHome {
        match (home, log) {
            (
                TaskRunHome::Finished {
                    pipeline,
                    executed_at,
                },
                Some(log),
            ) => PendingHome::Finished {
                pipeline,
                executed_at,
                log,
            },
            (home, _) => PendingHome::Unfinished(Box::new(home)),
        }
    }

    fn home(&self) -> TaskRunHome {
        match self {
            PendingHome::Finished {
                pipeline,
                executed_at,
                ..
            } => TaskRunHome::Finished {
                pipeline: *pipeline,
                executed_at: *executed_at,
            },
            PendingHome::Unfinished(home) => (**home).clone(),
        }
    }

    fn log(&self) -> Option<usize> {
        match self {
            PendingHome::Finished { log, .. } => Some(*log),
            PendingHome::Unfinished(_) => None,
        }
    }
}

impl<'txn> Batch<'txn> {
    /// A batch over `txn`; `filters` are the committed UUID-index filters, which the caller
    /// holds unchanged until the transaction commits or fails. With `threads` above 1, a large
    /// transaction adds up its rollups and writes the task index on other threads than the
    /// run log at [`Batch::finish`]; every table gets the same writes either way.
    pub fn open(
        txn: &'txn WriteTransaction,
        cache: &'txn EntityCache,
        filters: &'txn Filters,
        rule_set: &'txn crate::alerts::RuleSet,
        threads: usize,
    ) -> Result<Batch<'txn>> {
        Ok(Batch {
            t: WriteTables::open(txn)?,
            cache,
            filters,
            rule_set,
            alerting: Default::default(),
            task_index: IndexWork::new(&filters.task_runs),
            pipeline_index: IndexWork::new(&filters.pipeline_runs).keep_written(),
            created: Created::default(),
            counters: Counters::default(),
            deltas: RollupDeltas::default(),
            threads,
            new_task_runs: false,
            new_log: Vec::new(),
            cut: std::cell::Cell::new(None),
            aggs: Aggs::default(),
            stored_aggs: Default::default(),
            removed_log: Vec::new(),
            last_run_work: HashMap::default(),
        })
    }

    /// Says whether each task run of the operations applied from now on is reported once in
    /// the whole transaction and nowhere else in it (a bulk load knows): looking one up, the
    /// transaction then asks only what was stored before it.
    pub fn set_new_task_runs(&mut self, new: bool) {
        self.new_task_runs = new;
    }

    /// Makes room for about `runs` task runs, so that a large transaction's maps do not grow
    /// (and move) step by step.
    pub fn reserve(&mut self, runs: usize) {
        self.new_log.reserve(runs);
        self.task_index.reserve(runs);
        self.pipeline_index.reserve(runs / 2);
        self.aggs.reserve(runs / 2);
    }

    /// Checks and applies one operation. `Ok(Err(_))` is a rejection that changed nothing;
    /// `Err(_)` is a storage failure that spoils the whole transaction.
    pub fn apply(&mut self, op: &WriteOp) -> Result<Result<WriteOutcome>> {
        // Alerts judged later must see their pipelines as their operation left them: anything
        // else than a report of other pipelines or a delivery's end (a rule, a tick, a 410
        // that disables a webhook, a rename, an OpenLineage event of pipelines not known in
        // advance) has them judged first.
        let defers = match op {
            WriteOp::Report { runs, .. } => {
                self.judge_changed_by(runs)?;
                true
            }
            WriteOp::FinishDelivery { serial, end, .. } => {
                *end != crate::alerts::DeliveryEnd::Gone && !self.may_be_judged_later(*serial)?
            }
            WriteOp::RetryDelivery { serial, .. } => !self.may_be_judged_later(*serial)?,
            // Each end decides for itself, below.
            WriteOp::Deliveries(_) => true,
            _ => false,
        };
        if !defers {
            self.judge_deferred()?;
        }
        match op {
            WriteOp::Report { runs, at } => {
                let outcome = self.report(runs, *at)?;
                self.defer_touched(*at);
                Ok(outcome.map(WriteOutcome::Report))
            }
            WriteOp::Lineage { org, event, at } => {
                let outcome = self.lineage(*org, event, *at)?;
                self.defer_touched(*at);
                Ok(outcome.map(WriteOutcome::Report))
            }
            WriteOp::AlertTick { at } => {
                self.alert_tick(*at)?;
                Ok(Ok(WriteOutcome::AlertsJudged))
            }
            WriteOp::FinishDelivery { serial, end, at } => Ok(Ok(WriteOutcome::DeliveryRecorded(
                self.finish_delivery(*serial, *end, *at)?,
            ))),
            WriteOp::RetryDelivery {
                serial,
                attempts,
                next_at,
                error,
            } => Ok(Ok(WriteOutcome::DeliveryRecorded(
                self.retry_delivery(*serial, *attempts, *next_at, error)?,
            ))),
            WriteOp::CreateRule { org, rule, stored } => Ok(self
                .create_rule(*org, *rule, stored)?
                .map(|()| WriteOutcome::RuleCreated)),
            WriteOp::DeleteRule { org, rule, at } => Ok(Ok(WriteOutcome::RuleDeleted(
                self.delete_rule(*org, *rule, *at)?,
            ))),
            WriteOp::Deliveries(ends) => {
                let mut recorded = 0;
                for end in ends {
                    let outcome = match end {
                        WriteOp::FinishDelivery { .. } | WriteOp::RetryDelivery { .. } => {
                            self.apply(end)?
                        }
                        other => Err(Error::invalid(
                            "deliveries",
                            format!("{} is not the end of a delivery", other.name()),
                        )),
                    };
                    if let Ok(WriteOutcome::DeliveryRecorded(true)) = outcome {
                        recorded += 1;
                    }
                }
                Ok(Ok(WriteOutcome::DeliveriesRecorded(recorded)))
            }
            WriteOp::Register(definition) => {
                if let Err(rejection) = self.check_register(definition)? {
                    return Ok(Err(rejection));
                }
                Ok(Ok(WriteOutcome::Register(self.apply_register(definition)?)))
            }
            WriteOp::StartPipelineRun {
                pipeline,
                org,
                pipeline_run,
                at,
            } => Ok(self
                .start_pipeline_run(*pipeline, *org, *pipeline_run, *at)?
                .map(WriteOutcome::Started)),
            WriteOp::CreateOrganization { org, record } => {
                let (record, created) = self.create_organization(*org, record)?;
                Ok(Ok(WriteOutcome::Organization { record, created }))
            }
            WriteOp::CreateClient { client_id, record } => Ok(self
                .create_client(client_id, record)?
                .map(|()| WriteOutcome::ClientCreated)),
            WriteOp::RevokeClient { client_id, at } => Ok(Ok(WriteOutcome::ClientRevoked(
                self.revoke_client(client_id, *at)?,
            ))),
            WriteOp::IssueTokens(request) => {
                Ok(self.issue_tokens(request)?.map(WriteOutcome::Tokens))
            }
            WriteOp::PurgeTokens { before } => {
                Ok(Ok(WriteOutcome::TokensPurged(self.purge_tokens(*before)?)))
            }
            WriteOp::Restore {
                unfinished,
                next_serial,
            } => Ok(self
                .restore(unfinished, *next_serial)?
                .map(|()| WriteOutcome::Restored)),
            WriteOp::Prune { before, limit } => {
                Ok(self.prune(*before, *limit)?.map(WriteOutcome::Pruned))
            }
        }
    }

    /// Writes what was gathered; returns what this transaction created, to publish once it
    /// commits.
    pub fn finish(mut self) -> Result<Created> {
        // Everything is written once; what waits to be judged is judged after (judging only
        // writes alerts and the outbox).
        self.write_pending(false)?;
        self.judge_written()?;
        self.store_counters()?;
        let learned = [self.task_index.finish(), self.pipeline_index.finish()];
        for (learned, committed) in learned
            .iter()
            .zip([&self.filters.task_runs, &self.filters.pipeline_runs])
        {
            learned.store(committed, &mut self.t.meta, &mut self.t.index_filters)?;
        }
        let mut created = self.created;
        created.indexes = learned.into();
        Ok(created)
    }

    /// Writes what the transaction gathered so far to the tables; the transaction goes on (a
    /// bulk load in one transaction does this after each chunk, so that what it holds in
    /// memory stays bounded).
    pub fn write_out(&mut self) -> Result<()> {
        self.write_pending(true)?;
        self.judge_written()
    }

    /// Writes what was gathered to the tables; with `more`, the transaction goes on. Every
    /// table ends the same however often this is done: a pipeline's rollups are written from
    /// its contributions and its run log, whatever the grouping.
    pub(super) fn write_pending(&mut self, more: bool) -> Result<()> {
        for key in std::mem::take(&mut self.removed_log) {
            self.t.run_log.remove(&key)?;
        }
        self.flush_pipeline_runs()?;
        let mut new_log = self.take_new_log();
        new_log.sort_unstable_by_key(|(key, _)| *key);
        self.gather_new_runs(&new_log)?;
        let homes = self.task_index.take_writes(&self.filters.task_runs, more);
        let run_ids = self
            .pipeline_index
            .take_writes(&self.filters.pipeline_runs, more);
        // Ids handed out so far now have their aggregates stored.
        self.counters.first_run_id = None;
        // Homes new in a fresh period go in through cursors, as one run; others one by one.
        let (mut added, mut changed) = (Vec::new(), Vec::new());
        for write in homes {
            let home = write.value.home().encode();
            if write.fresh {
                added.push((write.key, home));
            } else {
                changed.push((write.key, home));
            }
        }
        let work = added.len() + changed.len() + new_log.len() + run_ids.len();
        let threads = if work >= PARALLEL_FROM {
            self.threads
        } else {
            1
        };
        let deltas = std::mem::take(&mut self.deltas);
        let cut = self.retention_cut()?;
        let (task_index, pipeline_index) = (&mut self.t.task_index, &mut self.t.pipeline_index);
        // Both UUID indexes, whose keys are random: written beside the rest.
        let insert_homes = move || -> Result<()> {
            super::packed::insert_new(task_index, &added)?;
            for (key, home) in changed {
                task_index.insert(&key, home.as_slice())?;
            }
            for write in run_ids {
                pipeline_index.insert(&write.key, write.value.0)?;
            }
            Ok(())
        };
        // The rollups read the run log (a bucket's runs): it is written first, here, and the
        // rollups flushed after it, once added up.
        let run_log = &mut self.t.run_log;
        let (years, rollups) = (&mut self.t.year_rollups, &mut self.t.rollups);
        let (runs, pipeline_tasks) = (&self.t.pipeline_runs, &self.t.pipeline_tasks);
        let mut write_rollups = move |prepared: PreparedDeltas, run_log: &RunLog<'txn>| {
            prepared.flush(&mut super::rollup::FlushTables {
                years,
                rollups,
                run_log,
                runs,
                pipeline_tasks,
                cut,
            })
        };
        match threads {
            1 => {
                insert_homes()?;
                super::packed::insert_new(run_log, &new_log)?;
                write_rollups(deltas.prepare(), &*run_log)?;
            }
            2 => std::thread::scope(|scope| {
                // One helper adds up the rollups, hands them over, then writes the UUID indexes.
                let (send, receive) = std::sync::mpsc::sync_channel(1);
                let helper = scope.spawn(move || {
                    let _ = send.send(deltas.prepare());
                    insert_homes()
                });
                let log = super::packed::insert_new(run_log, &new_log);
                let rollups = match receive.recv() {
                    Ok(prepared) => log.and_then(|()| write_rollups(prepared, &*run_log)),
                    Err(_) => Err(helper_failed()),
                };
                join(helper).and(rollups)
            })?,
            _ => std::thread::scope(|scope| {
                let prepared = scope.spawn(move || deltas.prepare());
                let homes = scope.spawn(insert_homes);
                let log = super::packed::insert_new(run_log, &new_log);
                let rollups = match prepared.join() {
                    Ok(prepared) => log.and_then(|()| write_rollups(prepared, &*run_log)),
                    Err(_) => Err(helper_failed()),
                };
                join(homes).and(rollups)
            })?,
        }
        let work = std::mem::take(&mut self.last_run_work);
        for (id, work) in work {
            self.update_last_run(id, work)?;
        }
        Ok(())
    }

    /// Takes the runs new in this transaction (and still there) to write to the run log.
    fn take_new_log(&mut self) -> Vec<([u8; RUN_KEY_LEN], Vec<u8>)> {
        std::mem::take(&mut self.new_log)
            .into_iter()
            .filter_map(|(key, record)| Some((key, record?)))
            .collect()
    }

    /// The period of a task run's index entry and where the run lives, as this transaction
    /// sees them.
    pub(super) fn find_task_run(
        &self,
        org: OrgIndex,
        task_run: &TaskRunId,
    ) -> Result<Option<(u32, TaskRunHome)>> {
        let uuid = task_run.as_bytes();
        if !self.new_task_runs
            && let Some(pending) = self.task_index.pending(org, uuid)
        {
            return Ok(Some((pending.period, pending.value.home())));
        }
        for period in
            self.task_index
                .candidates(&self.filters.task_runs, org, uuid, self.new_task_runs)
        {
            if let Some(bytes) = self.t.task_index.get(&index_key(period, org, uuid))? {
                return Ok(Some((period, TaskRunHome::decode(bytes.value())?)));
            }
        }
        Ok(None)
    }

    /// Records where a task run lives (written at [`Batch::finish`]): in `period` where it has
    /// an entry, else in a new one. `log` is the new run's place in `new_log`. Returns the
    /// entry's period.
    pub(super) fn put_home(
        &mut self,
        org: OrgIndex,
        task_run: &TaskRunId,
        period: Option<u32>,
        home: TaskRunHome,
        log: Option<usize>,
    ) -> u32 {
        let uuid = task_run.as_bytes();
        let value = PendingHome::new(home, log);
        match period {
            Some(period) => {
                self.task_index
                    .put(org, uuid, period, value, PendingState::Changed);
                period
            }
            None => self.task_index.allocate(org, uuid, value),
        }
    }

    /// Where this transaction put the new run of a task run it wrote, if it did.
    pub(super) fn pending_log(&self, org: OrgIndex, task_run: &TaskRunId) -> Option<usize> {
        self.task_index
            .pending(org, task_run.as_bytes())
            .and_then(|pending| pending.value.log())
    }

    fn store_counters(&mut self) -> Result<()> {
        let counters = &self.counters;
        let values: [(&str, Option<Vec<u8>>); 4] = [
            (
                meta::NEXT_ENTITY_ID,
                counters.next_entity_id.map(|n| n.to_le_bytes().to_vec()),
            ),
            (
                meta::NEXT_ORG_INDEX,
                counters.next_org_index.map(|n| n.to_le_bytes().to_vec()),
            ),
            (
                meta::NEXT_TASK_RUN_SERIAL,
                counters.next_serial.map(|n| n.to_le_bytes().to_vec()),
            ),
            (
                meta::NEXT_RUN_ID,
                counters.next_run_id.map(|n| n.to_le_bytes().to_vec()),
            ),
        ];
        for (name, value) in values {
            if let Some(value) = value {
                self.t.meta.insert(name, value.as_slice())?;
            }
        }
        Ok(())
    }

    /// A counter in `meta`, or `default` when it was never written.
    fn counter<const N: usize>(&self, name: &str, default: [u8; N]) -> Result<[u8; N]> {
        match self.t.meta.get(name)? {
            Some(bytes) => bytes
                .value()
                .try_into()
                .map_err(|_| super::records::corrupt("meta")),
            None => Ok(default),
        }
    }
}

type RunLog<'txn> = redb::Table<'txn, &'static [u8; RUN_KEY_LEN], &'static [u8]>;

/// The outcome of a helper thread: a panic there fails the transaction.
fn join(handle: std::thread::ScopedJoinHandle<'_, Result<()>>) -> Result<()> {
    handle.join().map_err(|_| helper_failed())?
}

fn helper_failed() -> Error {
    Error::Internal("a thread of the write transaction failed".into())
}

fn timestamp(micros: i64) -> Result<Timestamp> {
    Timestamp::from_micros(micros).ok_or_else(|| super::records::corrupt("task run"))
}
