//! Applying write operations inside one write transaction: the run store, the pipeline-run
//! aggregates and the rollups change together, so they can never disagree.
//!
//! Each operation is first checked against what is stored (read-only: a rejection leaves the
//! transaction untouched), then applied. Task-run contributions go straight into the rollup
//! deltas; pipeline runs are gathered per transaction and contribute once, at [`Batch::finish`],
//! with their final state, which then also recomputes the last run of every entity touched.

use std::collections::{BTreeMap, HashMap};

use redb::{ReadableTable, Table, WriteTransaction};
use uuid::Uuid;

use super::cache::EntityCache;
use super::credentials::{ClientRecord, OrgRecord, TokenRecord};
use super::records::{
    AGG_LEN, EntityDetail, EntityKey, LAST_RUN_LEN, PipelineRunAgg, RECORD_PIPELINE_RUN, RunRecord,
    TaskRunHome,
};
use super::rollup::{RollupDeltas, Series, last_run_at_or_before};
use super::tables::{
    self, ENTITY_KEY_LEN, EntityId, ROLLUP_KEY_LEN, RUN_KEY_LEN, meta, pipeline_task_key, run_key,
    run_key_bounds,
};
use crate::error::{Error, Result};
use crate::model::{
    EntityKind, OrgId, PendingTaskRun, PipelineDefinition, PipelineId, PipelineRunId,
    RegisterOutcome, ReportCounts, RunState, Tally, TaskId, TaskRun, TaskRunId, TaskType,
};
use crate::time::{MAX_SECOND, MICROS_PER_SECOND, Timestamp};

/// A change to the database, applied atomically.
#[derive(Clone, Debug)]
pub enum WriteOp {
    /// One batch of task-run reports, each with its organization filled in.
    Report(Vec<TaskRun>),
    /// A pipeline and its tasks, with the organization filled in.
    Register(PipelineDefinition),
    /// A new run of a pipeline: one pending task run per initial task, queued for executors.
    StartPipelineRun { pipeline: PipelineId, org: OrgId },
    /// An organization with its sealed output key, unless it exists.
    CreateOrganization { org: OrgId, record: OrgRecord },
    CreateClient {
        client_id: String,
        record: ClientRecord,
    },
    /// Revokes a client and deletes its tokens.
    RevokeClient { client_id: String },
    /// Stores issued tokens by hash, consuming the refresh token `redeem` in the same step.
    IssueTokens {
        tokens: Vec<([u8; 32], TokenRecord)>,
        redeem: Option<[u8; 32]>,
    },
    /// Deletes tokens that expired more than a day ago.
    PurgeTokens,
}

impl WriteOp {
    /// Roughly the memory the operation holds while it waits for the writer, in bytes.
    pub fn bytes(&self) -> usize {
        const FIXED: usize = 256;
        match self {
            WriteOp::Report(runs) => runs
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

    /// How much work the operation is, for sizing group commits.
    pub fn weight(&self) -> usize {
        match self {
            WriteOp::Report(runs) => runs.len().max(1),
            WriteOp::Register(definition) => definition.tasks.len().max(1),
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
    Organization { record: OrgRecord, created: bool },
    ClientCreated,
    ClientRevoked(bool),
    TokensIssued,
    TokensPurged(u64),
}

/// The result of checking an operation: `Err` is a rejection of that operation alone.
type Verdict = std::result::Result<(), Error>;

/// A pipeline run's aggregate as it was when the transaction first touched it, and as it is now.
struct AggSlot {
    before: Option<PipelineRunAgg>,
    now: Option<PipelineRunAgg>,
}

/// The open tables and gathered changes of one write transaction.
pub struct Batch<'txn> {
    meta: Table<'txn, &'static str, &'static [u8]>,
    entity_keys: Table<'txn, &'static [u8; 16], &'static [u8; ENTITY_KEY_LEN]>,
    entities: Table<'txn, u32, &'static [u8]>,
    pipeline_tasks: Table<'txn, &'static [u8; 8], ()>,
    task_runs: Table<'txn, &'static [u8; 16], &'static [u8]>,
    run_log: Table<'txn, &'static [u8; RUN_KEY_LEN], &'static [u8]>,
    pipeline_runs: Table<'txn, &'static [u8; 16], &'static [u8; AGG_LEN]>,
    rollups: Table<'txn, &'static [u8; ROLLUP_KEY_LEN], &'static [u8]>,
    last_runs: Table<'txn, u32, &'static [u8; LAST_RUN_LEN]>,
    pub(super) organizations: Table<'txn, &'static [u8; 16], &'static [u8]>,
    pub(super) clients: Table<'txn, &'static str, &'static [u8]>,
    pub(super) tokens: Table<'txn, &'static [u8; 32], &'static [u8]>,
    pub(super) token_expiry: Table<'txn, &'static [u8; 40], ()>,
    pending: Table<'txn, u64, &'static [u8; 32]>,
    cache: &'txn EntityCache,
    /// Entities created in this transaction: visible to it, published to the cache on commit.
    created: HashMap<Uuid, EntityKey>,
    next_entity_id: Option<u32>,
    next_serial: Option<u64>,
    deltas: RollupDeltas,
    /// Finished runs new in this transaction, written in key order at [`Batch::finish`]; reads
    /// of `run_log` during the transaction look here first.
    new_log: BTreeMap<[u8; RUN_KEY_LEN], Vec<u8>>,
    aggs: HashMap<PipelineRunId, AggSlot>,
    touched: HashMap<EntityId, Series>,
    pub(super) now: Timestamp,
}

impl<'txn> Batch<'txn> {
    pub fn open(txn: &'txn WriteTransaction, cache: &'txn EntityCache) -> Result<Batch<'txn>> {
        Ok(Batch {
            meta: txn.open_table(tables::META)?,
            entity_keys: txn.open_table(tables::ENTITY_KEYS)?,
            entities: txn.open_table(tables::ENTITIES)?,
            pipeline_tasks: txn.open_table(tables::PIPELINE_TASKS)?,
            task_runs: txn.open_table(tables::TASK_RUNS)?,
            run_log: txn.open_table(tables::RUN_LOG)?,
            pipeline_runs: txn.open_table(tables::PIPELINE_RUNS)?,
            rollups: txn.open_table(tables::ROLLUPS)?,
            last_runs: txn.open_table(tables::LAST_RUNS)?,
            organizations: txn.open_table(tables::ORGANIZATIONS)?,
            clients: txn.open_table(tables::CLIENTS)?,
            tokens: txn.open_table(tables::TOKENS)?,
            token_expiry: txn.open_table(tables::TOKEN_EXPIRY)?,
            pending: txn.open_table(tables::PENDING)?,
            cache,
            created: HashMap::new(),
            next_entity_id: None,
            next_serial: None,
            deltas: RollupDeltas::default(),
            new_log: BTreeMap::new(),
            aggs: HashMap::new(),
            touched: HashMap::new(),
            now: Timestamp::now(),
        })
    }

    /// Checks and applies one operation. `Ok(Err(_))` is a rejection that changed nothing;
    /// `Err(_)` is a storage failure that spoils the whole transaction.
    pub fn apply(&mut self, op: &WriteOp) -> Result<Result<WriteOutcome>> {
        match op {
            WriteOp::Report(runs) => {
                let home_checked = match self.check_report(runs)? {
                    Ok(home_checked) => home_checked,
                    Err(rejection) => return Ok(Err(rejection)),
                };
                let mut counts = ReportCounts::default();
                for run in runs {
                    match self.apply_run(run, !home_checked)? {
                        Ok(applied) => counts.add(applied),
                        // Only a lone run defers its check, so nothing else was applied.
                        Err(rejection) => return Ok(Err(rejection)),
                    }
                }
                Ok(Ok(WriteOutcome::Report(counts)))
            }
            WriteOp::Register(definition) => {
                if let Err(rejection) = self.check_register(definition)? {
                    return Ok(Err(rejection));
                }
                Ok(Ok(WriteOutcome::Register(self.apply_register(definition)?)))
            }
            WriteOp::StartPipelineRun { pipeline, org } => Ok(self
                .start_pipeline_run(*pipeline, *org)?
                .map(WriteOutcome::Started)),
            WriteOp::CreateOrganization { org, record } => {
                let (record, created) = self.create_organization(*org, record)?;
                Ok(Ok(WriteOutcome::Organization { record, created }))
            }
            WriteOp::CreateClient { client_id, record } => Ok(self
                .create_client(client_id, record)?
                .map(|()| WriteOutcome::ClientCreated)),
            WriteOp::RevokeClient { client_id } => Ok(Ok(WriteOutcome::ClientRevoked(
                self.revoke_client(client_id)?,
            ))),
            WriteOp::IssueTokens { tokens, redeem } => Ok(self
                .issue_tokens(tokens, redeem.as_ref())?
                .map(|()| WriteOutcome::TokensIssued)),
            WriteOp::PurgeTokens => {
                // Kept a day past expiry, so that a late client hears "expired", not "unknown".
                let cutoff = Timestamp::from_micros(self.now.micros() - 86_400 * MICROS_PER_SECOND)
                    .unwrap_or(self.now);
                Ok(Ok(WriteOutcome::TokensPurged(self.purge_tokens(cutoff)?)))
            }
        }
    }

    /// Entities this transaction created, to publish once it commits.
    pub fn finish(mut self) -> Result<HashMap<Uuid, EntityKey>> {
        self.flush_pipeline_runs()?;
        let new_log = std::mem::take(&mut self.new_log);
        super::packed::insert_new(
            &mut self.run_log,
            new_log.iter().map(|(key, value)| (key, value.as_slice())),
        )?;
        std::mem::take(&mut self.deltas).flush(&mut self.rollups)?;
        for series in std::mem::take(&mut self.touched).into_values() {
            let last = last_run_at_or_before(
                &self.rollups,
                &self.run_log,
                &self.pipeline_runs,
                series,
                MAX_SECOND,
            )?;
            match last {
                Some(last) => {
                    self.last_runs.insert(series.id.0, &last.encode())?;
                }
                None => {
                    self.last_runs.remove(series.id.0)?;
                }
            }
        }
        if let Some(next) = self.next_entity_id {
            self.meta
                .insert(meta::NEXT_ENTITY_ID, next.to_le_bytes().as_slice())?;
        }
        if let Some(next) = self.next_serial {
            self.meta
                .insert(meta::NEXT_TASK_RUN_SERIAL, next.to_le_bytes().as_slice())?;
        }
        Ok(self.created)
    }

    // ---- checks (read-only) ----

    /// Checks a batch of reports. `Ok(Ok(false))` means a lone report of an existing pipeline
    /// and task whose task-run ownership is left to [`Batch::apply_run`] to check (the insert it
    /// does anyway shows what was there, and can be undone with no other change made).
    fn check_report(&mut self, runs: &[TaskRun]) -> Result<Result<bool>> {
        // What earlier reports of this same batch will create, so later ones agree with them.
        let mut new_pipelines: HashMap<PipelineId, OrgId> = HashMap::new();
        let mut new_tasks: HashMap<TaskId, PipelineId> = HashMap::new();
        let mut run_pipelines: HashMap<PipelineRunId, PipelineId> = HashMap::new();
        let mut home_checked = true;
        for run in runs {
            let org = run
                .organization
                .ok_or_else(|| Error::Internal("report without an organization".into()))?;
            let pipeline = match self.entity(run.pipeline.0)? {
                Some(key) if key.kind != EntityKind::Pipeline => {
                    return Ok(Err(Error::Conflict(format!(
                        "pipeline_uuid {} is the UUID of a task, not a pipeline",
                        run.pipeline
                    ))));
                }
                Some(key) if key.org != org => {
                    return Ok(Err(another_organization("pipeline", run.pipeline.0)));
                }
                Some(key) => Some(key),
                None => {
                    if *new_pipelines.entry(run.pipeline).or_insert(org) != org {
                        return Ok(Err(Error::Conflict(format!(
                            "pipeline {} is reported under two organizations in one batch",
                            run.pipeline
                        ))));
                    }
                    None
                }
            };
            match self.entity(run.task.0)? {
                Some(key) if key.kind != EntityKind::Task => {
                    return Ok(Err(Error::Conflict(format!(
                        "task_uuid {} is the UUID of a pipeline, not a task",
                        run.task
                    ))));
                }
                Some(key) if Some(key.pipeline) != pipeline.map(|p| p.id) => {
                    return Ok(Err(Error::Conflict(format!(
                        "task {} belongs to another pipeline than {}",
                        run.task, run.pipeline
                    ))));
                }
                Some(_) => {}
                None => {
                    if *new_tasks.entry(run.task).or_insert(run.pipeline) != run.pipeline {
                        return Ok(Err(Error::Conflict(format!(
                            "task {} is reported under two pipelines in one batch",
                            run.task
                        ))));
                    }
                }
            }
            let entities_exist = pipeline.is_some() && !new_tasks.contains_key(&run.task);
            if runs.len() == 1 && entities_exist {
                home_checked = false;
            } else if let Some(home) = self.task_runs.get(run.task_run.as_bytes())? {
                let home_pipeline = TaskRunHome::decode(home.value())?.pipeline();
                drop(home);
                if Some(home_pipeline) != pipeline.map(|p| p.id)
                    && self.entity_by_id(home_pipeline)?.org != org
                {
                    return Ok(Err(another_organization("task run", run.task_run.0)));
                }
            }
            if run.finished_at().is_some() {
                if runs.len() > 1
                    && *run_pipelines
                        .entry(run.pipeline_run)
                        .or_insert(run.pipeline)
                        != run.pipeline
                {
                    return Ok(Err(Error::Conflict(format!(
                        "pipeline run {} is reported under two pipelines in one batch",
                        run.pipeline_run
                    ))));
                }
                if let Some(agg) = self.current_agg(run.pipeline_run)?
                    && Some(agg.pipeline) != pipeline.map(|p| p.id)
                {
                    return Ok(Err(Error::Conflict(format!(
                        "pipeline run {} belongs to another pipeline than {}",
                        run.pipeline_run, run.pipeline
                    ))));
                }
            }
        }
        Ok(Ok(home_checked))
    }

    fn check_register(&mut self, definition: &PipelineDefinition) -> Result<Verdict> {
        let org = definition
            .organization
            .ok_or_else(|| Error::Internal("registration without an organization".into()))?;
        let pipeline = match self.entity(definition.pipeline.0)? {
            Some(key) if key.kind != EntityKind::Pipeline => {
                return Ok(Err(Error::Conflict(format!(
                    "pipeline_uuid {} is the UUID of a task, not a pipeline",
                    definition.pipeline
                ))));
            }
            Some(key) if key.org != org => {
                return Ok(Err(another_organization("pipeline", definition.pipeline.0)));
            }
            other => other,
        };
        for task in &definition.tasks {
            match self.entity(task.task.0)? {
                Some(key) if key.kind != EntityKind::Task => {
                    return Ok(Err(Error::Conflict(format!(
                        "task_uuid {} is the UUID of a pipeline, not a task",
                        task.task
                    ))));
                }
                Some(key) if Some(key.pipeline) != pipeline.map(|p| p.id) => {
                    return Ok(Err(Error::Conflict(format!(
                        "task {} belongs to another pipeline than {}",
                        task.task, definition.pipeline
                    ))));
                }
                _ => {}
            }
        }
        Ok(Ok(()))
    }

    // ---- entities ----

    /// The entity with this UUID, as this transaction sees it.
    fn entity(&self, uuid: Uuid) -> Result<Option<EntityKey>> {
        if let Some(key) = self.created.get(&uuid) {
            return Ok(Some(*key));
        }
        if let Some(key) = self.cache.get(&uuid) {
            return Ok(Some(key));
        }
        let Some(bytes) = self.entity_keys.get(uuid.as_bytes())? else {
            return Ok(None);
        };
        let key = EntityKey::decode(bytes.value())?;
        // Not created by this transaction, so it is committed: safe to share.
        self.cache.insert(uuid, key);
        Ok(Some(key))
    }

    fn entity_by_id(&self, id: EntityId) -> Result<EntityKey> {
        let detail = self
            .entities
            .get(id.0)?
            .ok_or_else(|| Error::Internal(format!("entity {} has no details", id.0)))?;
        let uuid = EntityDetail::decode(detail.value())?.uuid;
        self.entity(uuid)?
            .ok_or_else(|| Error::Internal(format!("entity {} has no key", id.0)))
    }

    fn allocate_entity_id(&mut self) -> Result<EntityId> {
        let next = match self.next_entity_id {
            Some(next) => next,
            None => match self.meta.get(meta::NEXT_ENTITY_ID)? {
                Some(bytes) => u32::from_le_bytes(
                    bytes
                        .value()
                        .try_into()
                        .map_err(|_| super::records::corrupt("meta"))?,
                ),
                None => 1,
            },
        };
        let following = next
            .checked_add(1)
            .ok_or_else(|| Error::Unavailable("no more pipeline or task ids".into()))?;
        self.next_entity_id = Some(following);
        Ok(EntityId(next))
    }

    fn create_entity(
        &mut self,
        uuid: Uuid,
        kind: EntityKind,
        org: OrgId,
        pipeline: Option<EntityId>,
        detail: &EntityDetail,
    ) -> Result<EntityKey> {
        let id = self.allocate_entity_id()?;
        let key = EntityKey {
            id,
            kind,
            org,
            pipeline: pipeline.unwrap_or(id),
        };
        self.entity_keys.insert(uuid.as_bytes(), &key.encode())?;
        self.entities.insert(id.0, detail.encode().as_slice())?;
        if let Some(pipeline) = pipeline {
            self.pipeline_tasks
                .insert(&pipeline_task_key(pipeline, id), ())?;
        }
        self.created.insert(uuid, key);
        Ok(key)
    }

    fn ensure_pipeline(&mut self, pipeline: PipelineId, org: OrgId) -> Result<(EntityKey, bool)> {
        if let Some(key) = self.entity(pipeline.0)? {
            return Ok((key, false));
        }
        let detail = EntityDetail {
            uuid: pipeline.0,
            name: String::new(),
            task_type: None,
            is_initial: false,
        };
        let key = self.create_entity(pipeline.0, EntityKind::Pipeline, org, None, &detail)?;
        Ok((key, true))
    }

    fn ensure_task(
        &mut self,
        task: TaskId,
        pipeline: &EntityKey,
        task_type: TaskType,
        is_initial: bool,
    ) -> Result<EntityKey> {
        if let Some(key) = self.entity(task.0)? {
            return Ok(key);
        }
        let detail = EntityDetail {
            uuid: task.0,
            name: String::new(),
            task_type: Some(task_type),
            is_initial,
        };
        self.create_entity(
            task.0,
            EntityKind::Task,
            pipeline.org,
            Some(pipeline.id),
            &detail,
        )
    }

    fn allocate_serial(&mut self) -> Result<u64> {
        let next = match self.next_serial {
            Some(next) => next,
            None => match self.meta.get(meta::NEXT_TASK_RUN_SERIAL)? {
                Some(bytes) => u64::from_le_bytes(
                    bytes
                        .value()
                        .try_into()
                        .map_err(|_| super::records::corrupt("meta"))?,
                ),
                None => 1,
            },
        };
        self.next_serial = Some(next + 1);
        Ok(next)
    }

    /// Creates one pending task run per initial task of the pipeline, in one new pipeline run,
    /// and queues them for executors.
    fn start_pipeline_run(
        &mut self,
        pipeline: PipelineId,
        org: OrgId,
    ) -> Result<Result<Vec<PendingTaskRun>>> {
        let key = match self.entity(pipeline.0)? {
            Some(key) if key.kind == EntityKind::Pipeline && key.org == org => key,
            _ => {
                return Ok(Err(Error::NotFound(format!(
                    "pipeline {pipeline} not found"
                ))));
            }
        };
        let low = pipeline_task_key(key.id, EntityId(0));
        let high = pipeline_task_key(key.id, EntityId(u32::MAX));
        let mut initial = Vec::new();
        for entry in self.pipeline_tasks.range::<&[u8; 8]>(&low..=&high)? {
            let (task_key, _) = entry?;
            let task = EntityId(u32::from_be_bytes(
                task_key.value()[4..].try_into().expect("4 bytes"),
            ));
            let detail = match self.entities.get(task.0)? {
                Some(bytes) => EntityDetail::decode(bytes.value())?,
                None => return Err(Error::Internal(format!("task {} has no details", task.0))),
            };
            if detail.is_initial {
                initial.push((task, detail));
            }
        }
        if initial.is_empty() {
            return Ok(Err(Error::Conflict(format!(
                "pipeline {pipeline} has no initial task to start; register its tasks with is_initial"
            ))));
        }
        let pipeline_run = PipelineRunId(Uuid::new_v4());
        let mut started = Vec::with_capacity(initial.len());
        for (task, detail) in initial {
            let serial = self.allocate_serial()?;
            let task_run = TaskRunId(Uuid::new_v4());
            let task_type = detail.task_type.unwrap_or(TaskType::Query);
            let home = TaskRunHome::Unfinished {
                pipeline: key.id,
                executed_at: None,
                serial,
                created_at: self.now,
                updated_at: self.now,
                record: RunRecord {
                    task,
                    pipeline_run,
                    task_type,
                    state: RunState::Pending,
                    is_successful: false,
                    is_initial_task: true,
                    is_final_task: false,
                    duration_ms: 0,
                    metric_value: None,
                    output: Vec::new(),
                    errors: Vec::new(),
                },
            };
            self.task_runs
                .insert(task_run.as_bytes(), home.encode().as_slice())?;
            let mut queued = [0u8; 32];
            queued[..16].copy_from_slice(task_run.as_bytes());
            queued[16..].copy_from_slice(org.as_bytes());
            self.pending.insert(serial, &queued)?;
            started.push(PendingTaskRun {
                serial,
                task_run,
                pipeline_run,
                pipeline,
                task: TaskId(detail.uuid),
                task_type,
                organization: org,
                created_at: self.now,
            });
        }
        Ok(Ok(started))
    }

    fn apply_register(&mut self, definition: &PipelineDefinition) -> Result<RegisterOutcome> {
        let org = definition.organization.expect("checked");
        let (pipeline, created) = self.ensure_pipeline(definition.pipeline, org)?;
        let detail = EntityDetail {
            uuid: definition.pipeline.0,
            name: definition.name.clone(),
            task_type: None,
            is_initial: false,
        };
        self.entities
            .insert(pipeline.id.0, detail.encode().as_slice())?;
        let mut outcome = RegisterOutcome {
            created,
            ..RegisterOutcome::default()
        };
        for task in &definition.tasks {
            let detail = EntityDetail {
                uuid: task.task.0,
                name: task.name.clone(),
                task_type: Some(task.task_type),
                is_initial: task.is_initial,
            };
            match self.entity(task.task.0)? {
                Some(key) => {
                    self.entities.insert(key.id.0, detail.encode().as_slice())?;
                    outcome.tasks_updated += 1;
                }
                None => {
                    self.create_entity(
                        task.task.0,
                        EntityKind::Task,
                        org,
                        Some(pipeline.id),
                        &detail,
                    )?;
                    outcome.tasks_created += 1;
                }
            }
        }
        Ok(outcome)
    }

    // ---- task runs ----

    /// Applies one report. With `check_home`, a run found stored under another organization is
    /// put back and the report rejected (see [`Batch::check_report`]).
    fn apply_run(&mut self, run: &TaskRun, check_home: bool) -> Result<Result<ReportCounts>> {
        let org = run.organization.expect("checked");
        let (pipeline, _) = self.ensure_pipeline(run.pipeline, org)?;
        let task = self.ensure_task(run.task, &pipeline, run.task_type, run.is_initial_task)?;
        let record = RunRecord {
            task: task.id,
            pipeline_run: run.pipeline_run,
            task_type: run.task_type,
            state: run.state,
            is_successful: run.is_successful,
            is_initial_task: run.is_initial_task,
            is_final_task: run.is_final_task,
            duration_ms: run.duration_ms,
            metric_value: run.metric_value,
            output: run.output.clone(),
            errors: run.errors.clone(),
        };
        let uuid = run.task_run.as_bytes();
        let mut home = match run.finished_at() {
            Some(executed_at) => TaskRunHome::Finished {
                pipeline: pipeline.id,
                executed_at,
            },
            None => TaskRunHome::Unfinished {
                pipeline: pipeline.id,
                executed_at: run.executed_at,
                serial: 0,
                created_at: self.now,
                updated_at: self.now,
                record: record.clone(),
            },
        };
        // One tree descent for the common case of a first report: insert, and look at what
        // was there only if something was.
        let previous = match self.task_runs.insert(uuid, home.encode().as_slice())? {
            Some(old) => Some(TaskRunHome::decode(old.value())?),
            None => None,
        };
        let mut counts = ReportCounts::default();
        match previous {
            None => counts.inserted = 1,
            Some(old) => {
                if check_home
                    && old.pipeline() != pipeline.id
                    && self.entity_by_id(old.pipeline())?.org != org
                {
                    self.task_runs.insert(uuid, old.encode().as_slice())?;
                    return Ok(Err(another_organization("task run", run.task_run.0)));
                }
                if self.is_unchanged(&old, &home, &record, uuid)? {
                    if old != home {
                        self.task_runs.insert(uuid, old.encode().as_slice())?;
                    }
                    counts.unchanged = 1;
                    return Ok(Ok(counts));
                }
                if let (
                    TaskRunHome::Unfinished {
                        serial, created_at, ..
                    },
                    TaskRunHome::Unfinished {
                        serial: new_serial,
                        created_at: new_created_at,
                        ..
                    },
                ) = (&old, &mut home)
                {
                    // A pending run keeps the id and creation time it was given.
                    *new_serial = *serial;
                    *new_created_at = *created_at;
                    self.task_runs.insert(uuid, home.encode().as_slice())?;
                }
                if let TaskRunHome::Unfinished { serial, .. } = old
                    && serial != 0
                    && run.state != RunState::Pending
                {
                    // An executor took it up: it no longer waits in the queue.
                    self.pending.remove(serial)?;
                }
                self.retract_run(&old, uuid)?;
                counts.replaced = 1;
            }
        }
        if let TaskRunHome::Finished { executed_at, .. } = home {
            self.new_log.insert(
                run_key(pipeline.id, executed_at.micros(), uuid),
                record.to_bytes(),
            );
            self.contribute(&task, &record, executed_at)?;
        }
        Ok(Ok(counts))
    }

    /// Whether a new report says exactly what is stored (a redelivery).
    fn is_unchanged(
        &self,
        old: &TaskRunHome,
        new: &TaskRunHome,
        record: &RunRecord,
        uuid: &[u8; 16],
    ) -> Result<bool> {
        Ok(match (old, new) {
            (
                TaskRunHome::Finished {
                    pipeline,
                    executed_at,
                },
                TaskRunHome::Finished {
                    pipeline: new_pipeline,
                    executed_at: new_executed_at,
                },
            ) if pipeline == new_pipeline && executed_at == new_executed_at => {
                let key = run_key(*pipeline, executed_at.micros(), uuid);
                if let Some(pending) = self.new_log.get(&key) {
                    RunRecord::decode(pending)? == *record
                } else {
                    match self.run_log.get(&key)? {
                        Some(stored) => RunRecord::decode(stored.value())? == *record,
                        None => false,
                    }
                }
            }
            (
                TaskRunHome::Unfinished {
                    pipeline,
                    executed_at,
                    record: old_record,
                    ..
                },
                TaskRunHome::Unfinished {
                    pipeline: new_pipeline,
                    executed_at: new_executed_at,
                    ..
                },
            ) => pipeline == new_pipeline && executed_at == new_executed_at && old_record == record,
            _ => false,
        })
    }

    /// Takes a stored run's contribution back out, before its replacement goes in.
    fn retract_run(&mut self, old: &TaskRunHome, uuid: &[u8; 16]) -> Result<()> {
        let TaskRunHome::Finished {
            pipeline,
            executed_at,
        } = *old
        else {
            return Ok(()); // an unfinished run never counted
        };
        let key = run_key(pipeline, executed_at.micros(), uuid);
        let pending = self.new_log.remove(&key);
        let record = match pending {
            Some(bytes) => RunRecord::decode(&bytes)?,
            None => match self.run_log.remove(&key)? {
                Some(bytes) => RunRecord::decode(bytes.value())?,
                None => {
                    return Err(Error::Internal(
                        "a finished task run is missing from the run log".into(),
                    ));
                }
            },
        };
        let tally = Tally::of_run(record.is_successful, u64::from(record.duration_ms));
        self.deltas.retract(record.task, executed_at, tally);
        self.touch(Series {
            id: record.task,
            kind: EntityKind::Task,
            pipeline,
        });
        self.remove_member(record.pipeline_run, pipeline, executed_at, &record)
    }

    /// Adds a finished run's contribution to its task and its pipeline run.
    fn contribute(
        &mut self,
        task: &EntityKey,
        record: &RunRecord,
        executed_at: Timestamp,
    ) -> Result<()> {
        let tally = Tally::of_run(record.is_successful, u64::from(record.duration_ms));
        self.deltas.add(task.id, executed_at, tally);
        self.touch(Series {
            id: task.id,
            kind: EntityKind::Task,
            pipeline: task.pipeline,
        });
        let slot = self.agg_slot(record.pipeline_run)?;
        let micros = executed_at.micros();
        let agg = slot.now.get_or_insert(PipelineRunAgg {
            pipeline: task.pipeline,
            finished: 0,
            failed: 0,
            duration_ms: 0,
            latest_micros: micros,
            earliest_micros: micros,
        });
        agg.finished += 1;
        agg.failed += u32::from(!record.is_successful);
        agg.duration_ms = agg.duration_ms.wrapping_add(u64::from(record.duration_ms));
        agg.latest_micros = agg.latest_micros.max(micros);
        agg.earliest_micros = agg.earliest_micros.min(micros);
        Ok(())
    }

    fn remove_member(
        &mut self,
        pipeline_run: PipelineRunId,
        pipeline: EntityId,
        executed_at: Timestamp,
        record: &RunRecord,
    ) -> Result<()> {
        let slot = self.agg_slot(pipeline_run)?;
        let Some(agg) = slot.now.as_mut() else {
            return Err(Error::Internal(
                "a finished task run's pipeline run has no aggregate".into(),
            ));
        };
        agg.finished -= 1;
        agg.failed -= u32::from(!record.is_successful);
        agg.duration_ms = agg.duration_ms.wrapping_sub(u64::from(record.duration_ms));
        if agg.finished == 0 {
            slot.now = None;
            return Ok(());
        }
        if executed_at.micros() < agg.latest_micros {
            return Ok(());
        }
        // The latest member left: find the remaining members again. They all lie between the
        // earliest bound and the old latest, in this pipeline's log.
        let (earliest, latest) = (agg.earliest_micros, agg.latest_micros);
        let (first, end) = run_key_bounds(pipeline, earliest, latest.saturating_add(1));
        let member = pipeline_run.as_bytes().as_slice();
        let mut times = Vec::new();
        for entry in self.run_log.range::<&[u8; RUN_KEY_LEN]>(&first..&end)? {
            let (key, value) = entry?;
            if value.value().get(RECORD_PIPELINE_RUN) == Some(member) {
                times.push(tables::split_run_key(key.value()).1);
            }
        }
        for (key, value) in self.new_log.range(first..end) {
            if value.get(RECORD_PIPELINE_RUN) == Some(member) {
                times.push(tables::split_run_key(key).1);
            }
        }
        let found = times
            .iter()
            .min()
            .zip(times.iter().max())
            .map(|(a, b)| (*a, *b));
        let (earliest, latest) = found.ok_or_else(|| {
            Error::Internal("a pipeline run's remaining task runs are not in the log".into())
        })?;
        let agg = self
            .aggs
            .get_mut(&pipeline_run)
            .and_then(|slot| slot.now.as_mut())
            .expect("loaded above");
        agg.earliest_micros = earliest;
        agg.latest_micros = latest;
        Ok(())
    }

    fn agg_slot(&mut self, pipeline_run: PipelineRunId) -> Result<&mut AggSlot> {
        if !self.aggs.contains_key(&pipeline_run) {
            let stored = self
                .pipeline_runs
                .get(pipeline_run.as_bytes())?
                .map(|bytes| PipelineRunAgg::decode(bytes.value()));
            self.aggs.insert(
                pipeline_run,
                AggSlot {
                    before: stored,
                    now: stored,
                },
            );
        }
        Ok(self.aggs.get_mut(&pipeline_run).expect("inserted above"))
    }

    fn current_agg(&self, pipeline_run: PipelineRunId) -> Result<Option<PipelineRunAgg>> {
        if let Some(slot) = self.aggs.get(&pipeline_run) {
            return Ok(slot.now);
        }
        Ok(self
            .pipeline_runs
            .get(pipeline_run.as_bytes())?
            .map(|bytes| PipelineRunAgg::decode(bytes.value())))
    }

    fn touch(&mut self, series: Series) {
        self.touched.insert(series.id, series);
    }

    /// Stores every pipeline run this transaction changed and moves its contribution from where
    /// it was to where it is now.
    fn flush_pipeline_runs(&mut self) -> Result<()> {
        for (pipeline_run, slot) in std::mem::take(&mut self.aggs) {
            if slot.before == slot.now {
                continue;
            }
            let contribution =
                |agg: &PipelineRunAgg| (agg.pipeline, agg.latest_micros, agg.tally());
            if slot.before.as_ref().map(contribution) != slot.now.as_ref().map(contribution) {
                for (agg, sign) in [(slot.before, -1), (slot.now, 1)] {
                    let Some(agg) = agg else { continue };
                    let at = Timestamp::from_micros(agg.latest_micros)
                        .ok_or_else(|| super::records::corrupt("pipeline run"))?;
                    if sign < 0 {
                        self.deltas.retract(agg.pipeline, at, agg.tally());
                    } else {
                        self.deltas.add(agg.pipeline, at, agg.tally());
                    }
                    self.touch(Series {
                        id: agg.pipeline,
                        kind: EntityKind::Pipeline,
                        pipeline: agg.pipeline,
                    });
                }
            }
            match slot.now {
                Some(agg) => {
                    self.pipeline_runs
                        .insert(pipeline_run.as_bytes(), &agg.encode())?;
                }
                None => {
                    self.pipeline_runs.remove(pipeline_run.as_bytes())?;
                }
            }
        }
        Ok(())
    }
}

fn another_organization(what: &str, uuid: Uuid) -> Error {
    Error::Conflict(format!(
        "{what} {} belongs to another organization",
        uuid.hyphenated()
    ))
}
