//! The one API both fronts call. It checks the caller (scope and organization, once, here),
//! fills in what the storage layer needs (the organization, sealed outputs), and hands reads to
//! a snapshot and writes to the writer. Fronts translate requests into these calls and nothing
//! else.

mod access;
mod alerts;
mod deliveries;
mod dispatch;
mod keys;
mod lineage;
mod replica;
mod retention;
mod throttle;
mod token_cache;
mod writes;

use std::future::Future;
use std::sync::Arc;

pub use access::{
    ClientInfo, NewApiKey, NewClient, TokenGrant, TokenRequest, new_api_key, new_client,
};
pub use alerts::{AlertFilter, RuleView, alert_cursor};
pub use deliveries::{DeliveryOptions, run_clock, run_courier};
pub use dispatch::Subscription;
pub use replica::Health;
pub use retention::{PRUNE_STEP, PruneSummary, cut_for};

use crate::auth::{Caller, Scope};
use crate::crypto::OutputKey;
use crate::error::{Error, Result};
use crate::model::{
    BucketCount, BucketStats, EntityKind, EntityRef, Fill, LastRun, LogCursor, LogPage,
    OVERVIEW_WINDOWS, OrgId, OverviewCursor, OverviewPage, PendingTaskRun, PipelineDefinition,
    PipelineId, PipelineOverview, RegisterOutcome, ReportCounts, RunState, Stats, TaskRun,
    TimeRange, WindowStats,
};
use crate::store::backup::BackupReport;
use crate::store::{EntityKey, Reader, Store, WriteOp, WriteOutcome};
use crate::time::Period;
use dispatch::Dispatcher;
use keys::Keyring;
use throttle::FailureThrottle;
use token_cache::TokenCache;

pub use crate::model::MAX_REPORT_BATCH;
/// Log entries per page when the caller does not say.
pub const DEFAULT_LOG_PAGE: u32 = 100;
/// The most log entries one page may hold.
pub const MAX_LOG_PAGE: u32 = 1_000;
/// Pending task runs (started, not yet taken up by an executor) an organization may have by
/// default; past it, starting a pipeline is refused as overloaded.
pub const DEFAULT_MAX_PENDING_RUNS: usize = 10_000;

/// How long issued tokens live.
#[derive(Clone, Copy, Debug)]
pub struct TokenLifetimes {
    pub access_secs: u32,
    pub refresh_secs: u32,
}

impl Default for TokenLifetimes {
    fn default() -> Self {
        TokenLifetimes {
            access_secs: crate::auth::ACCESS_TOKEN_TTL_SECS,
            refresh_secs: crate::auth::REFRESH_TOKEN_TTL_SECS,
        }
    }
}

/// The run ledger: stats, logs, reports, pipelines and credentials over one store.
pub struct Engine {
    store: Store,
    keys: Keyring,
    dispatcher: Arc<Dispatcher>,
    lifetimes: TokenLifetimes,
    tokens: TokenCache,
    throttle: FailureThrottle,
    max_pending_runs: usize,
    /// `serve --keep-runs-days`: whole days of runs kept before today.
    keep_runs_days: Option<u32>,
    /// `serve --webhook-allow-net`: internal ranges webhooks may go to nonetheless.
    webhook_allow: crate::alerts::AllowedNets,
    /// Where writes go: the local writer, or the cluster's log (see [`writes`]).
    writes: writes::Writes,
    /// How alerts are delivered.
    deliveries: DeliveryOptions,
    /// Whether this process delivers alerts and ticks their clock now: always on its own; in a
    /// cluster, while it holds the delivery lease.
    delivering: Arc<std::sync::atomic::AtomicBool>,
}

impl Engine {
    /// The engine over `store`, with the task runs still waiting for an executor queued again.
    /// Refuses to start when the store holds organizations whose output keys the master key
    /// cannot open (a missing or different key file: a new key would be created and every
    /// stored output left unreadable).
    pub fn new(store: Store) -> Result<Engine> {
        Engine::open(store, None)
    }

    /// [`Engine::new`] with the master key given rather than found (environment or the data
    /// dir's key file) on first need.
    pub fn open(store: Store, master: Option<crate::crypto::MasterKey>) -> Result<Engine> {
        let reader = store.reader()?;
        let waiting = reader.pending_runs()?;
        let data_dir = store.data_dir().to_path_buf();
        let keys = match master {
            Some(master) => Keyring::with_master(data_dir, master),
            None => Keyring::new(data_dir),
        };
        if let Some((org, record)) = reader.any_organization()? {
            keys.open_existing(org, &record)?;
        }
        drop(reader);
        Ok(Engine {
            keys,
            store,
            dispatcher: Arc::new(Dispatcher::new(waiting)),
            lifetimes: TokenLifetimes::default(),
            tokens: TokenCache::default(),
            throttle: FailureThrottle::default(),
            max_pending_runs: DEFAULT_MAX_PENDING_RUNS,
            keep_runs_days: None,
            webhook_allow: crate::alerts::AllowedNets::default(),
            writes: writes::Writes::Local,
            deliveries: DeliveryOptions::default(),
            delivering: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        })
    }

    /// The same engine with other token lifetimes.
    pub fn with_token_lifetimes(mut self, lifetimes: TokenLifetimes) -> Engine {
        self.lifetimes = lifetimes;
        self
    }

    /// The same engine with another cap on each organization's pending task runs.
    pub fn with_max_pending_runs(mut self, max: usize) -> Engine {
        self.max_pending_runs = max.max(1);
        self
    }

    /// Keeps runs of the last `days` whole days and today; older ones are pruned in the
    /// background while serving.
    pub fn with_retention(mut self, days: Option<u32>) -> Engine {
        self.keep_runs_days = days;
        self
    }

    /// Lets webhooks go to these internal ranges (loopback, private, link-local addresses are
    /// refused otherwise).
    pub fn with_webhook_allow(mut self, allowed: crate::alerts::AllowedNets) -> Engine {
        self.webhook_allow = allowed;
        self
    }

    /// Whether this process delivers alerts now (see `delivering`).
    pub fn delivers(&self) -> bool {
        self.delivering.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn keep_runs_days(&self) -> Option<u32> {
        self.keep_runs_days
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Queues a batch of task-run reports for the next group commit. The returned future
    /// resolves once the batch is durable (or rejected as a whole).
    pub async fn submit_report(
        &self,
        caller: &Caller,
        mut runs: Vec<TaskRun>,
    ) -> Result<impl Future<Output = Result<ReportCounts>> + use<>> {
        caller.require(Scope::RunsWrite)?;
        if runs.len() > MAX_REPORT_BATCH {
            return Err(Error::TooLarge(format!(
                "a batch holds at most {MAX_REPORT_BATCH} results, this one {}",
                runs.len()
            )));
        }
        for (index, run) in runs.iter_mut().enumerate() {
            let org = organization_for(caller, run.organization)
                .map_err(|e| e.prefixed(&format!("results[{index}]")))?;
            run.organization = Some(org);
            if !run.output.is_empty() {
                let key = self.output_key(org).await?;
                run.output = key.seal_output(&run.task_run, &run.output);
            }
        }
        let taken_up = taken_up(&runs);
        let pending = if runs.is_empty() {
            None
        } else {
            let op = WriteOp::Report {
                runs,
                at: crate::time::Timestamp::now(),
            };
            // Queued now (in cluster mode published, in order), applied while the caller
            // sends its next batch.
            Some(self.writes.submit(&self.store, op).await?)
        };
        // In cluster mode, every node's applier tells its executors (see `replica`).
        let dispatcher = self
            .writes
            .cluster()
            .is_none()
            .then(|| self.dispatcher.clone());
        Ok(async move {
            let Some(pending) = pending else {
                return Ok(ReportCounts::default());
            };
            match pending.await? {
                WriteOutcome::Report(counts) => {
                    if let Some(dispatcher) = dispatcher {
                        for (org, runs) in taken_up {
                            dispatcher.taken_up(org, &runs);
                        }
                    }
                    Ok(counts)
                }
                other => Err(unexpected(other)),
            }
        })
    }

    /// Reports a batch of task runs and waits until it is durable.
    pub async fn report(&self, caller: &Caller, runs: Vec<TaskRun>) -> Result<ReportCounts> {
        self.submit_report(caller, runs).await?.await
    }

    /// Prepares one operator-imported task run for [`Engine::apply_imports`]: fills in and
    /// checks its organization and seals its output. Any thread may prepare while another
    /// applies.
    pub fn prepare_import(&self, run: TaskRun) -> Result<WriteOp> {
        Ok(WriteOp::Report {
            runs: vec![self.prepare_import_run(run)?],
            at: crate::time::Timestamp::now(),
        })
    }

    /// One operator-imported task run with its organization filled in and its output sealed
    /// (see [`Engine::prepare_import`]).
    pub fn prepare_import_run(&self, mut run: TaskRun) -> Result<TaskRun> {
        let org = organization_for(&Caller::OPERATOR, run.organization)?;
        run.organization = Some(org);
        if !run.output.is_empty() {
            let key = self.output_key_now(org)?;
            run.output = key.seal_output(&run.task_run, &run.output);
        }
        Ok(run)
    }

    /// Applies prepared imports in one transaction on the calling thread, each its own atomic
    /// unit: one run's rejection does not stop the others. Blocks. `Err` means nothing was
    /// applied.
    pub fn apply_imports(&self, ops: &[WriteOp]) -> Result<Vec<Result<ReportCounts>>> {
        Ok(self
            .store
            .apply_now(ops)?
            .into_iter()
            .map(|outcome| match outcome? {
                WriteOutcome::Report(counts) => Ok(counts),
                other => Err(unexpected(other)),
            })
            .collect())
    }

    /// Applies prepared imports in one durable transaction on the calling thread, a chunk at a
    /// time (see [`crate::store::Store::apply_chunks`]): the whole import is applied or none of
    /// it. `done` is told each chunk's outcomes. Blocks.
    pub fn import_chunks(
        &self,
        next: impl FnMut() -> Result<Option<crate::store::Chunk>>,
        mut done: impl FnMut(Vec<WriteOp>, Vec<Result<ReportCounts>>) -> Result<()>,
    ) -> Result<()> {
        self.store.apply_chunks(next, |ops, outcomes| {
            let outcomes = outcomes
                .into_iter()
                .map(|outcome| match outcome? {
                    WriteOutcome::Report(counts) => Ok(counts),
                    other => Err(unexpected(other)),
                })
                .collect();
            done(ops, outcomes)
        })
    }

    /// Prepares and applies task runs in one transaction on the calling thread, for bulk loads
    /// by the operator (see [`Engine::prepare_import`] and [`Engine::apply_imports`]).
    pub fn import_now(&self, runs: Vec<TaskRun>) -> Result<Vec<Result<ReportCounts>>> {
        let prepared: Vec<Result<WriteOp>> = runs
            .into_iter()
            .map(|run| self.prepare_import(run))
            .collect();
        let ops: Vec<WriteOp> = prepared
            .iter()
            .filter_map(|op| op.as_ref().ok().cloned())
            .collect();
        let mut outcomes = self.apply_imports(&ops)?.into_iter();
        Ok(prepared
            .into_iter()
            .map(|op| match op {
                Ok(_) => outcomes
                    .next()
                    .unwrap_or_else(|| Err(Error::Internal("an import outcome is missing".into()))),
                Err(error) => Err(error),
            })
            .collect())
    }

    /// Creates or updates a pipeline and its tasks.
    pub async fn register_pipeline(
        &self,
        caller: &Caller,
        mut definition: PipelineDefinition,
    ) -> Result<RegisterOutcome> {
        caller.require(Scope::RunsWrite)?;
        definition
            .validate()
            .map_err(|(field, reason)| Error::invalid(&field, reason))?;
        definition.organization = Some(organization_for(caller, definition.organization)?);
        match self.write(WriteOp::Register(definition)).await? {
            WriteOutcome::Register(outcome) => Ok(outcome),
            other => Err(unexpected(other)),
        }
    }

    /// Starts a run of a pipeline: one pending task run per initial task, handed to the
    /// organization's executors.
    pub async fn run_pipeline(
        &self,
        caller: &Caller,
        pipeline: PipelineId,
    ) -> Result<Vec<PendingTaskRun>> {
        caller.require(Scope::PipelinesRun)?;
        self.check_readable()?;
        let entity = EntityRef {
            kind: EntityKind::Pipeline,
            uuid: pipeline.0,
        };
        let org = visible(&self.store.reader()?, caller, entity)?.org;
        let pending = self.dispatcher.pending(org);
        if pending >= self.max_pending_runs {
            return Err(Error::Overloaded {
                message: format!(
                    "this organization has {pending} task runs waiting for an executor, the most it may have; nothing was started (connect an executor, or retry later)"
                ),
                retry_after_secs: 5,
            });
        }
        match self
            .write(WriteOp::StartPipelineRun {
                pipeline,
                org,
                pipeline_run: crate::model::PipelineRunId(uuid::Uuid::new_v4()),
                at: crate::time::Timestamp::now(),
            })
            .await?
        {
            WriteOutcome::Started(runs) => {
                // In a cluster, every node's applier queues them (see `replica`).
                if self.writes.cluster().is_none() {
                    self.dispatcher.enqueue(runs.clone());
                }
                Ok(runs)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Subscribes an executor to its organization's pending task runs.
    pub fn watch_pending(&self, caller: &Caller) -> Result<Subscription> {
        caller.require(Scope::RunsWrite)?;
        let org = caller.organization().ok_or_else(|| {
            Error::invalid(
                "caller",
                "an executor must authenticate as a client of an organization",
            )
        })?;
        Ok(self.dispatcher.subscribe(org))
    }

    /// Successes, failures and average duration in a range, and the last run at or before its
    /// end.
    pub fn stats(&self, caller: &Caller, entity: EntityRef, range: TimeRange) -> Result<Stats> {
        caller.require(Scope::StatsRead)?;
        self.check_readable()?;
        let reader = self.store.reader()?;
        let key = visible(&reader, caller, entity)?;
        reader.stats(&key, range)
    }

    /// Stats of `n` consecutive calendar buckets from the one containing `date_from` (a second),
    /// oldest first: only buckets with runs, or with [`Fill::Zero`] all of them.
    pub fn aggregated_stats(
        &self,
        caller: &Caller,
        entity: EntityRef,
        period: Period,
        date_from: i64,
        n: BucketCount,
        fill: Fill,
    ) -> Result<Vec<BucketStats>> {
        caller.require(Scope::StatsRead)?;
        self.check_readable()?;
        let reader = self.store.reader()?;
        let key = visible(&reader, caller, entity)?;
        reader.aggregated(&key, period, date_from, n, fill)
    }

    /// The latest finished run; `NotFound` when there is none.
    pub fn last_run(&self, caller: &Caller, entity: EntityRef) -> Result<LastRun> {
        caller.require(Scope::StatsRead)?;
        self.check_readable()?;
        let reader = self.store.reader()?;
        let key = visible(&reader, caller, entity)?;
        reader
            .last_run(&key)?
            .ok_or_else(|| Error::NotFound(format!("{entity} has no finished run")))
    }

    /// A page of a pipeline's finished task runs in a range, newest first. Outputs are the
    /// sealed envelopes.
    pub fn logs(
        &self,
        caller: &Caller,
        pipeline: PipelineId,
        range: TimeRange,
        after: Option<LogCursor>,
        limit: u32,
    ) -> Result<LogPage> {
        caller.require(Scope::StatsRead)?;
        self.check_readable()?;
        check_page_limit(limit)?;
        let reader = self.store.reader()?;
        let entity = EntityRef {
            kind: EntityKind::Pipeline,
            uuid: pipeline.0,
        };
        let key = visible(&reader, caller, entity)?;
        reader.logs(&key, range, after, limit as usize)
    }

    /// A page of a pipeline's task runs that started and have not finished, newest start
    /// first.
    pub fn running(
        &self,
        caller: &Caller,
        pipeline: PipelineId,
        after: Option<LogCursor>,
        limit: u32,
    ) -> Result<crate::model::RunningPage> {
        caller.require(Scope::StatsRead)?;
        self.check_readable()?;
        check_page_limit(limit)?;
        let reader = self.store.reader()?;
        let entity = EntityRef {
            kind: EntityKind::Pipeline,
            uuid: pipeline.0,
        };
        let key = visible(&reader, caller, entity)?;
        reader.running(&key, after, limit as usize)
    }

    /// A page of the overview of the caller's organization's pipelines: each one's last run and
    /// its runs in the last 24 hours, 7 days and 30 days ending at the second `now`.
    pub fn pipelines_overview(
        &self,
        caller: &Caller,
        now: i64,
        after: Option<OverviewCursor>,
        limit: u32,
    ) -> Result<OverviewPage> {
        caller.require(Scope::StatsRead)?;
        self.check_readable()?;
        check_page_limit(limit)?;
        let org = caller.organization().ok_or_else(|| {
            Error::invalid(
                "organization",
                "the operator must name the organization to ask in",
            )
        })?;
        let reader = self.store.reader()?;
        let Some(org_index) = reader.org_index(org)? else {
            return Ok(OverviewPage {
                pipelines: Vec::new(),
                next: None,
            });
        };
        // Resume after the cursor's pipeline, at its place by its current name.
        let after = match after {
            None => None,
            Some(cursor) => {
                let key = reader
                    .entity(org, cursor.pipeline.0)?
                    .filter(|key| key.kind == EntityKind::Pipeline)
                    .ok_or_else(|| {
                        Error::invalid("cursor", "does not name a pipeline of this list")
                    })?;
                Some((reader.detail(key.id)?.name, cursor.pipeline))
            }
        };
        let (listed, more) = reader.pipelines_by_name(org_index, after.as_ref(), limit as usize)?;
        let keys: Vec<EntityKey> = listed
            .iter()
            .map(|(_, _, id)| EntityKey {
                id: *id,
                kind: EntityKind::Pipeline,
                org,
                org_index,
                pipeline: *id,
            })
            .collect();
        let ranges = OVERVIEW_WINDOWS
            .map(|seconds| TimeRange::new(now - seconds + 1, now).expect("a window ends at now"));
        let answers = reader.summaries(&keys, &ranges)?;
        let mut pipelines = Vec::with_capacity(listed.len());
        for ((pipeline, name, _), (summaries, last_run)) in listed.into_iter().zip(answers) {
            let mut windows = [WindowStats::default(); 3];
            for (window, answer) in windows.iter_mut().zip(summaries) {
                *window = answer;
            }
            pipelines.push(PipelineOverview {
                pipeline,
                name,
                last_run,
                windows,
            });
        }
        let next = more
            .then(|| pipelines.last())
            .flatten()
            .map(|last| OverviewCursor {
                pipeline: last.pipeline,
            });
        Ok(OverviewPage { pipelines, next })
    }

    /// Ends the executors' streams of pending task runs, so that a shutdown need not wait for
    /// them.
    pub fn close_streams(&self) {
        self.dispatcher.close();
    }

    /// Copies the database as of now into `destination` (see [`crate::store::backup`]). Blocks.
    /// The master key file, when the data dir has one, is copied along (owner-only): the
    /// organizations' output keys in the database are sealed with it.
    pub fn backup(&self, destination: &std::path::Path) -> Result<BackupReport> {
        let report = crate::store::backup::backup(&self.store, destination)?;
        let key = self.store.data_dir().join(crate::crypto::MASTER_KEY_FILE);
        if let Ok(bytes) = std::fs::read(&key) {
            let copy = destination.join(crate::crypto::MASTER_KEY_FILE);
            if std::fs::read(&copy).is_ok_and(|existing| existing == bytes) {
                return Ok(report);
            }
            crate::private::write_new(&copy, &bytes)
                .map_err(|e| Error::Unavailable(format!("cannot write {}: {e}", copy.display())))?;
        }
        Ok(report)
    }

    /// Finishes queued writes and stops the writer. Blocks.
    pub fn shutdown(&self) {
        self.store.shutdown();
    }

    /// The organization's output key, creating the organization (and its key) if it is new.
    async fn output_key(&self, org: OrgId) -> Result<OutputKey> {
        self.output_key_by(org, |op| self.writes.write(&self.store, op))
            .await
    }

    /// [`Engine::output_key`] on the calling (blocking) thread, for bulk loads.
    fn output_key_now(&self, org: OrgId) -> Result<OutputKey> {
        let write = |op| std::future::ready(self.writes.write_now(&self.store, op));
        ready_now(self.output_key_by(org, write))
    }

    /// The organization's output key, creating the organization through `write` if it is new.
    async fn output_key_by<F: Future<Output = Result<WriteOutcome>>>(
        &self,
        org: OrgId,
        write: impl FnOnce(WriteOp) -> F,
    ) -> Result<OutputKey> {
        if let Some(key) = self.keys.cached(org) {
            return Ok(key);
        }
        if self.writes.cluster().is_some() {
            // Every node derives the same key from the master key.
            let (key, op) = self.cluster_output_key(org)?;
            if let Some(op) = op {
                write(op).await?;
            }
            return Ok(key);
        }
        if let Some(record) = self.store.reader()?.organization(org)? {
            return self.keys.open(org, &record);
        }
        let op = WriteOp::CreateOrganization {
            org,
            record: self.keys.new_record(org)?,
        };
        let outcome = write(op).await?;
        self.opened_organization(org, outcome)
    }

    fn opened_organization(&self, org: OrgId, outcome: WriteOutcome) -> Result<OutputKey> {
        match outcome {
            WriteOutcome::Organization { record, .. } => self.keys.open(org, &record),
            other => Err(unexpected(other)),
        }
    }
}

/// The entity if it exists in the caller's organization and is of the asked kind; otherwise
/// `NotFound` (UUIDs are namespaced per organization: another organization's entities are
/// simply not there).
fn visible(reader: &Reader<'_>, caller: &Caller, entity: EntityRef) -> Result<EntityKey> {
    let org = caller.organization().ok_or_else(|| {
        Error::invalid(
            "organization",
            "the operator must name the organization to ask in",
        )
    })?;
    reader
        .entity(org, entity.uuid)?
        .filter(|key| key.kind == entity.kind)
        .ok_or_else(|| Error::NotFound(format!("{entity} not found")))
}

/// A page size of logs or the overview: 1 to [`MAX_LOG_PAGE`].
fn check_page_limit(limit: u32) -> Result<()> {
    if (1..=MAX_LOG_PAGE).contains(&limit) {
        Ok(())
    } else {
        Err(Error::invalid(
            "limit",
            format!("must be between 1 and {MAX_LOG_PAGE}, got {limit}"),
        ))
    }
}

/// The organization a write is for: the caller's, which a report may repeat but not change.
fn organization_for(caller: &Caller, named: Option<OrgId>) -> Result<OrgId> {
    match (caller.organization(), named) {
        (Some(own), None) => Ok(own),
        (Some(own), Some(named)) if named == own => Ok(own),
        (Some(_), Some(named)) => Err(Error::PermissionDenied(format!(
            "organization_uuid {named} is not the organization of these credentials"
        ))),
        (None, Some(named)) => Ok(named),
        (None, None) => Err(Error::invalid("organization_uuid", "is required")),
    }
}

/// The runs an executor has taken up (reported as running or finished), by organization.
fn taken_up(runs: &[TaskRun]) -> Vec<(OrgId, Vec<crate::model::TaskRunId>)> {
    let mut by_org: Vec<(OrgId, Vec<crate::model::TaskRunId>)> = Vec::new();
    for run in runs.iter().filter(|run| run.state != RunState::Pending) {
        let org = run.organization.expect("filled in before");
        match by_org.iter_mut().find(|(o, _)| *o == org) {
            Some((_, list)) => list.push(run.task_run),
            None => by_org.push((org, vec![run.task_run])),
        }
    }
    by_org
}

fn unexpected(outcome: WriteOutcome) -> Error {
    Error::Internal(format!("the writer answered with {outcome:?}"))
}
/// The output of a future that completes at its first poll (all it awaits is ready): a shared
/// async path taken by a blocking caller.
fn ready_now<T>(future: impl Future<Output = Result<T>>) -> Result<T> {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut context) {
        std::task::Poll::Ready(value) => value,
        std::task::Poll::Pending => Err(Error::Internal(
            "a write on the calling thread did not complete".into(),
        )),
    }
}
