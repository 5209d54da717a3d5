//! Applying write operations inside one write transaction: the run store, the pipeline-run
//! aggregates and the rollups change together, so they can never disagree.
//!
//! Each operation is first checked against what is stored (read-only: a rejection leaves the
//! transaction untouched), then applied. Task-run contributions go straight into the rollup
//! deltas; pipeline runs are gathered per transaction and contribute once, at [`Batch::finish`],
//! with their final state, which then also updates the last run of every entity touched.
//!
//! Every step costs a bounded number of tree operations whatever a tenant has stored: a report
//! touches its task run, its pipeline run's aggregate and member index (whose last key is the
//! pipeline run's latest task run, so replacing that one is a lookup, not a scan), and one
//! rollup record per level. Repeated reports of one task run in a batch collapse to the last.

use std::collections::{BTreeMap, HashMap};

use redb::{ReadableTable, Table, WriteTransaction};
use uuid::Uuid;

use super::cache::EntityCache;
use super::credentials::{ClientRecord, IssueOutcome, OrgRecord, TokenRecord};
use super::records::{
    EntityDetail, EntityKey, InlineMembers, LAST_RUN_LEN, LastRunRecord, PipelineRunAgg, RunRecord,
    TaskRunHome,
};
use super::rollup::{RollupDeltas, Series, last_run_at_or_before};
use super::tables::{
    self, ENTITY_KEY_LEN, EntityId, MEMBER_KEY_LEN, OrgIndex, ROLLUP_KEY_LEN, RUN_KEY_LEN,
    SCOPED_KEY_LEN, member_key, member_key_micros, meta, pipeline_task_key, run_key, scoped_key,
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
    /// Revokes a client: its tokens are refused from then on.
    RevokeClient { client_id: String },
    /// Stores tokens issued to `client_id` by hash, consuming the refresh token `redeem` in the
    /// same step; refused if the client was revoked in the meantime.
    IssueTokens {
        client_id: String,
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
    Tokens(IssueOutcome),
    TokensPurged(u64),
}

/// The result of checking an operation: `Err` is a rejection of that operation alone.
type Verdict = std::result::Result<(), Error>;

/// A pipeline run's aggregate as it was when the transaction first touched it, and as it is now.
struct AggSlot {
    before: Option<PipelineRunAgg>,
    now: Option<PipelineRunAgg>,
}

/// What a transaction did to the runs of one entity, to bring its last run up to date at
/// [`Batch::finish`] without reading its history: the stored last run stays unless it was
/// retracted or a later run arrived.
struct LastRunWork {
    series: Series,
    /// The latest run added by this transaction (and still there).
    best: Option<LastRunRecord>,
    /// Runs taken back out, by executed_at and run UUID.
    retracted: Vec<(Timestamp, Uuid)>,
}

/// What a batch will create, so that later reports of the same batch agree with earlier ones.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NewEntity {
    Pipeline,
    Task(PipelineId),
}

/// The open tables and gathered changes of one write transaction.
pub struct Batch<'txn> {
    meta: Table<'txn, &'static str, &'static [u8]>,
    org_index: Table<'txn, &'static [u8; 16], u32>,
    entity_keys: Table<'txn, &'static [u8; SCOPED_KEY_LEN], &'static [u8; ENTITY_KEY_LEN]>,
    entities: Table<'txn, u32, &'static [u8]>,
    pipeline_tasks: Table<'txn, &'static [u8; 8], ()>,
    task_runs: Table<'txn, &'static [u8; SCOPED_KEY_LEN], &'static [u8]>,
    run_log: Table<'txn, &'static [u8; RUN_KEY_LEN], &'static [u8]>,
    pipeline_runs: Table<'txn, &'static [u8; SCOPED_KEY_LEN], &'static [u8]>,
    run_members: Table<'txn, &'static [u8; MEMBER_KEY_LEN], u32>,
    rollups: Table<'txn, &'static [u8; ROLLUP_KEY_LEN], &'static [u8]>,
    last_runs: Table<'txn, u32, &'static [u8; LAST_RUN_LEN]>,
    pub(super) organizations: Table<'txn, &'static [u8; 16], &'static [u8]>,
    pub(super) clients: Table<'txn, &'static str, &'static [u8]>,
    pub(super) tokens: Table<'txn, &'static [u8; 32], &'static [u8]>,
    pub(super) token_expiry: Table<'txn, &'static [u8; 40], ()>,
    pub(super) token_family: Table<'txn, &'static [u8; 48], ()>,
    pending: Table<'txn, u64, &'static [u8; 32]>,
    cache: &'txn EntityCache,
    /// Entities and organization indexes created in this transaction: visible to it, published
    /// to the cache on commit.
    created: Created,
    next_entity_id: Option<u32>,
    next_org_index: Option<u32>,
    next_serial: Option<u64>,
    deltas: RollupDeltas,
    /// Finished runs new in this transaction, written in key order at [`Batch::finish`]; reads
    /// of `run_log` during the transaction look here first.
    new_log: BTreeMap<[u8; RUN_KEY_LEN], Vec<u8>>,
    aggs: HashMap<(OrgIndex, PipelineRunId), AggSlot>,
    last_run_work: HashMap<EntityId, LastRunWork>,
    pub(super) now: Timestamp,
}

/// What a committed transaction created, for the entity cache.
#[derive(Default)]
pub struct Created {
    pub entities: HashMap<(OrgIndex, Uuid), EntityKey>,
    pub orgs: HashMap<OrgId, OrgIndex>,
}

impl<'txn> Batch<'txn> {
    pub fn open(txn: &'txn WriteTransaction, cache: &'txn EntityCache) -> Result<Batch<'txn>> {
        Ok(Batch {
            meta: txn.open_table(tables::META)?,
            org_index: txn.open_table(tables::ORG_INDEX)?,
            entity_keys: txn.open_table(tables::ENTITY_KEYS)?,
            entities: txn.open_table(tables::ENTITIES)?,
            pipeline_tasks: txn.open_table(tables::PIPELINE_TASKS)?,
            task_runs: txn.open_table(tables::TASK_RUNS)?,
            run_log: txn.open_table(tables::RUN_LOG)?,
            pipeline_runs: txn.open_table(tables::PIPELINE_RUNS)?,
            run_members: txn.open_table(tables::RUN_MEMBERS)?,
            rollups: txn.open_table(tables::ROLLUPS)?,
            last_runs: txn.open_table(tables::LAST_RUNS)?,
            organizations: txn.open_table(tables::ORGANIZATIONS)?,
            clients: txn.open_table(tables::CLIENTS)?,
            tokens: txn.open_table(tables::TOKENS)?,
            token_expiry: txn.open_table(tables::TOKEN_EXPIRY)?,
            token_family: txn.open_table(tables::TOKEN_FAMILY)?,
            pending: txn.open_table(tables::PENDING)?,
            cache,
            created: Created::default(),
            next_entity_id: None,
            next_org_index: None,
            next_serial: None,
            deltas: RollupDeltas::default(),
            new_log: BTreeMap::new(),
            aggs: HashMap::new(),
            last_run_work: HashMap::new(),
            now: Timestamp::now(),
        })
    }

    /// Checks and applies one operation. `Ok(Err(_))` is a rejection that changed nothing;
    /// `Err(_)` is a storage failure that spoils the whole transaction.
    pub fn apply(&mut self, op: &WriteOp) -> Result<Result<WriteOutcome>> {
        match op {
            WriteOp::Report(runs) => {
                let (runs, collapsed) = collapse(runs);
                if let Err(rejection) = self.check_report(&runs)? {
                    return Ok(Err(rejection));
                }
                let mut counts = ReportCounts {
                    replaced: collapsed,
                    ..ReportCounts::default()
                };
                for (_, run) in runs {
                    counts.add(self.apply_run(run)?);
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
            WriteOp::IssueTokens {
                client_id,
                tokens,
                redeem,
            } => Ok(self
                .issue_tokens(client_id, tokens, redeem.as_ref())?
                .map(WriteOutcome::Tokens)),
            WriteOp::PurgeTokens => {
                // Kept a day past expiry, so that a late client hears "expired", not "unknown".
                let cutoff = Timestamp::from_micros(self.now.micros() - 86_400 * MICROS_PER_SECOND)
                    .unwrap_or(self.now);
                Ok(Ok(WriteOutcome::TokensPurged(self.purge_tokens(cutoff)?)))
            }
        }
    }

    /// What this transaction created, to publish once it commits.
    pub fn finish(mut self) -> Result<Created> {
        self.flush_pipeline_runs()?;
        let new_log = std::mem::take(&mut self.new_log);
        for (key, value) in &new_log {
            let (_, micros, task_run) = tables::split_run_key(key);
            let (task, is_successful, duration_ms) = RunRecord::decode_outcome(value)?;
            let added = LastRunRecord {
                executed_at: timestamp(micros)?,
                run: Uuid::from_bytes(task_run),
                is_successful,
                duration_ms: u64::from(duration_ms),
            };
            let work = self.last_run_work.get_mut(&task).ok_or_else(|| {
                Error::Internal("a new task run's series was not recorded".into())
            })?;
            if work
                .best
                .is_none_or(|best| added.order_key() > best.order_key())
            {
                work.best = Some(added);
            }
        }
        super::packed::insert_new(
            &mut self.run_log,
            new_log.iter().map(|(key, value)| (key, value.as_slice())),
        )?;
        std::mem::take(&mut self.deltas).flush(&mut self.rollups)?;
        for (id, work) in std::mem::take(&mut self.last_run_work) {
            self.update_last_run(id, work)?;
        }
        if let Some(next) = self.next_entity_id {
            self.meta
                .insert(meta::NEXT_ENTITY_ID, next.to_le_bytes().as_slice())?;
        }
        if let Some(next) = self.next_org_index {
            self.meta
                .insert(meta::NEXT_ORG_INDEX, next.to_le_bytes().as_slice())?;
        }
        if let Some(next) = self.next_serial {
            self.meta
                .insert(meta::NEXT_TASK_RUN_SERIAL, next.to_le_bytes().as_slice())?;
        }
        Ok(self.created)
    }

    /// Brings an entity's last run up to date once its runs and rollups are: the stored one
    /// stays unless a later run was added or it was retracted; only when it was retracted and
    /// nothing as late replaced it do the rollups name the latest second left (the descent).
    fn update_last_run(&mut self, id: EntityId, work: LastRunWork) -> Result<()> {
        let stored = self
            .last_runs
            .get(id.0)?
            .map(|bytes| LastRunRecord::decode(bytes.value()))
            .transpose()?;
        let last = match (stored, work.best) {
            (None, best) => best,
            (Some(stored), Some(best)) if best.order_key() >= stored.order_key() => Some(best),
            (Some(stored), _) if !work.retracted.contains(&(stored.executed_at, stored.run)) => {
                Some(stored)
            }
            (Some(_), _) => last_run_at_or_before(
                &self.rollups,
                &self.run_log,
                &self.pipeline_runs,
                work.series,
                MAX_SECOND,
            )?,
        };
        if last != stored {
            match last {
                Some(last) => {
                    self.last_runs.insert(id.0, &last.encode())?;
                }
                None => {
                    self.last_runs.remove(id.0)?;
                }
            }
        }
        Ok(())
    }

    // ---- checks (read-only) ----

    /// Checks a (collapsed) batch of reports; every rejection names the result it is about.
    fn check_report(&mut self, runs: &[(usize, &TaskRun)]) -> Result<Verdict> {
        let mut new_entities: HashMap<(OrgId, Uuid), NewEntity> = HashMap::new();
        let mut run_pipelines: HashMap<(OrgId, PipelineRunId), PipelineId> = HashMap::new();
        for &(index, run) in runs {
            let field = |name: &str| format!("results[{index}].{name}");
            let org = run
                .organization
                .ok_or_else(|| Error::Internal("report without an organization".into()))?;
            if run.task.0 == run.pipeline.0 {
                return Ok(Err(Error::invalid(
                    &field("task_uuid"),
                    "is the same UUID as pipeline_uuid; a UUID names a pipeline or a task, not both",
                )));
            }
            let org_index = self.find_org_index(org)?;
            let pipeline = match self.entity(org_index, run.pipeline.0)? {
                Some(key) if key.kind != EntityKind::Pipeline => {
                    return Ok(Err(Error::invalid(
                        &field("pipeline_uuid"),
                        format!(
                            "{} is a task of this organization, not a pipeline",
                            run.pipeline
                        ),
                    )));
                }
                Some(key) => Some(key),
                None => {
                    match new_entities
                        .entry((org, run.pipeline.0))
                        .or_insert(NewEntity::Pipeline)
                    {
                        NewEntity::Pipeline => {}
                        NewEntity::Task(_) => {
                            return Ok(Err(Error::invalid(
                                &field("pipeline_uuid"),
                                format!(
                                    "{} is a task_uuid earlier in this batch, not a pipeline",
                                    run.pipeline
                                ),
                            )));
                        }
                    }
                    None
                }
            };
            match self.entity(org_index, run.task.0)? {
                Some(key) if key.kind != EntityKind::Task => {
                    return Ok(Err(Error::invalid(
                        &field("task_uuid"),
                        format!(
                            "{} is a pipeline of this organization, not a task",
                            run.task
                        ),
                    )));
                }
                Some(key) if Some(key.pipeline) != pipeline.map(|p| p.id) => {
                    return Ok(Err(Error::Conflict(format!(
                        "{}: task {} belongs to another pipeline than {}",
                        field("task_uuid"),
                        run.task,
                        run.pipeline
                    ))));
                }
                Some(_) => {}
                None => match new_entities
                    .entry((org, run.task.0))
                    .or_insert(NewEntity::Task(run.pipeline))
                {
                    NewEntity::Pipeline => {
                        return Ok(Err(Error::invalid(
                            &field("task_uuid"),
                            format!(
                                "{} is a pipeline_uuid earlier in this batch, not a task",
                                run.task
                            ),
                        )));
                    }
                    NewEntity::Task(first) if *first != run.pipeline => {
                        return Ok(Err(Error::Conflict(format!(
                            "{}: task {} is reported under two pipelines in one batch",
                            field("task_uuid"),
                            run.task
                        ))));
                    }
                    NewEntity::Task(_) => {}
                },
            }
            if run.finished_at().is_some() {
                let first = *run_pipelines
                    .entry((org, run.pipeline_run))
                    .or_insert(run.pipeline);
                if first != run.pipeline {
                    return Ok(Err(Error::Conflict(format!(
                        "{}: pipeline run {} is reported under two pipelines in one batch",
                        field("pipeline_run_uuid"),
                        run.pipeline_run
                    ))));
                }
                if let Some(org_index) = org_index
                    && let Some(agg) = self.current_agg(org_index, run.pipeline_run)?
                    && Some(agg.pipeline) != pipeline.map(|p| p.id)
                {
                    return Ok(Err(Error::Conflict(format!(
                        "{}: pipeline run {} belongs to another pipeline than {}",
                        field("pipeline_run_uuid"),
                        run.pipeline_run,
                        run.pipeline
                    ))));
                }
            }
        }
        Ok(Ok(()))
    }

    fn check_register(&mut self, definition: &PipelineDefinition) -> Result<Verdict> {
        let org = definition
            .organization
            .ok_or_else(|| Error::Internal("registration without an organization".into()))?;
        let org_index = self.find_org_index(org)?;
        let pipeline = match self.entity(org_index, definition.pipeline.0)? {
            Some(key) if key.kind != EntityKind::Pipeline => {
                return Ok(Err(Error::invalid(
                    "pipeline_uuid",
                    format!(
                        "{} is a task of this organization, not a pipeline",
                        definition.pipeline
                    ),
                )));
            }
            other => other,
        };
        for (index, task) in definition.tasks.iter().enumerate() {
            let field = format!("tasks[{index}].task_uuid");
            if task.task.0 == definition.pipeline.0 {
                return Ok(Err(Error::invalid(
                    &field,
                    "is the same UUID as pipeline_uuid; a UUID names a pipeline or a task, not both",
                )));
            }
            if definition.tasks[..index]
                .iter()
                .any(|t| t.task == task.task)
            {
                return Ok(Err(Error::invalid(
                    &field,
                    format!("{} is listed twice", task.task),
                )));
            }
            match self.entity(org_index, task.task.0)? {
                Some(key) if key.kind != EntityKind::Task => {
                    return Ok(Err(Error::invalid(
                        &field,
                        format!(
                            "{} is a pipeline of this organization, not a task",
                            task.task
                        ),
                    )));
                }
                Some(key) if Some(key.pipeline) != pipeline.map(|p| p.id) => {
                    return Ok(Err(Error::Conflict(format!(
                        "{field}: task {} belongs to another pipeline than {}",
                        task.task, definition.pipeline
                    ))));
                }
                _ => {}
            }
        }
        Ok(Ok(()))
    }

    // ---- organizations and entities ----

    /// The organization's index, if it has one (it gets one with its first pipeline).
    fn find_org_index(&self, org: OrgId) -> Result<Option<OrgIndex>> {
        if let Some(index) = self.created.orgs.get(&org) {
            return Ok(Some(*index));
        }
        if let Some(index) = self.cache.org_index(org) {
            return Ok(Some(index));
        }
        let Some(index) = self.org_index.get(org.as_bytes())? else {
            return Ok(None);
        };
        let index = OrgIndex(index.value());
        self.cache.insert_org(org, index);
        Ok(Some(index))
    }

    fn ensure_org_index(&mut self, org: OrgId) -> Result<OrgIndex> {
        if let Some(index) = self.find_org_index(org)? {
            return Ok(index);
        }
        let next = match self.next_org_index {
            Some(next) => next,
            None => read_counter(&self.meta, meta::NEXT_ORG_INDEX)?.unwrap_or(1),
        };
        let following = next
            .checked_add(1)
            .ok_or_else(|| Error::Unavailable("no more organization indexes".into()))?;
        self.next_org_index = Some(following);
        self.org_index.insert(org.as_bytes(), next)?;
        self.created.orgs.insert(org, OrgIndex(next));
        Ok(OrgIndex(next))
    }

    /// The entity with this UUID in the organization, as this transaction sees it.
    fn entity(&self, org: Option<OrgIndex>, uuid: Uuid) -> Result<Option<EntityKey>> {
        let Some(org) = org else {
            return Ok(None);
        };
        if let Some(key) = self.created.entities.get(&(org, uuid)) {
            return Ok(Some(*key));
        }
        if let Some(key) = self.cache.get(org, &uuid) {
            return Ok(Some(key));
        }
        let Some(bytes) = self.entity_keys.get(&scoped_key(org, uuid.as_bytes()))? else {
            return Ok(None);
        };
        let key = EntityKey::decode(bytes.value())?;
        // Not created by this transaction, so it is committed: safe to share.
        self.cache.insert(uuid, key);
        Ok(Some(key))
    }

    fn allocate_entity_id(&mut self) -> Result<EntityId> {
        let next = match self.next_entity_id {
            Some(next) => next,
            None => read_counter(&self.meta, meta::NEXT_ENTITY_ID)?.unwrap_or(1),
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
        org: (OrgId, OrgIndex),
        pipeline: Option<EntityId>,
        detail: &EntityDetail,
    ) -> Result<EntityKey> {
        let id = self.allocate_entity_id()?;
        let key = EntityKey {
            id,
            kind,
            org: org.0,
            org_index: org.1,
            pipeline: pipeline.unwrap_or(id),
        };
        self.entity_keys
            .insert(&scoped_key(org.1, uuid.as_bytes()), &key.encode())?;
        self.entities.insert(id.0, detail.encode().as_slice())?;
        if let Some(pipeline) = pipeline {
            self.pipeline_tasks
                .insert(&pipeline_task_key(pipeline, id), ())?;
        }
        self.created.entities.insert((org.1, uuid), key);
        Ok(key)
    }

    fn ensure_pipeline(&mut self, pipeline: PipelineId, org: OrgId) -> Result<(EntityKey, bool)> {
        let org_index = self.ensure_org_index(org)?;
        if let Some(key) = self.entity(Some(org_index), pipeline.0)? {
            return Ok((key, false));
        }
        let detail = EntityDetail {
            uuid: pipeline.0,
            org_index,
            name: String::new(),
            task_type: None,
            is_initial: false,
        };
        let key = self.create_entity(
            pipeline.0,
            EntityKind::Pipeline,
            (org, org_index),
            None,
            &detail,
        )?;
        Ok((key, true))
    }

    fn ensure_task(
        &mut self,
        task: TaskId,
        pipeline: &EntityKey,
        task_type: TaskType,
        is_initial: bool,
    ) -> Result<EntityKey> {
        if let Some(key) = self.entity(Some(pipeline.org_index), task.0)? {
            return Ok(key);
        }
        let detail = EntityDetail {
            uuid: task.0,
            org_index: pipeline.org_index,
            name: String::new(),
            task_type: Some(task_type),
            is_initial,
        };
        self.create_entity(
            task.0,
            EntityKind::Task,
            (pipeline.org, pipeline.org_index),
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
        let org_index = self.find_org_index(org)?;
        let key = match self.entity(org_index, pipeline.0)? {
            Some(key) if key.kind == EntityKind::Pipeline => key,
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
            self.task_runs.insert(
                &scoped_key(key.org_index, task_run.as_bytes()),
                home.encode().as_slice(),
            )?;
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
            org_index: pipeline.org_index,
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
                org_index: pipeline.org_index,
                name: task.name.clone(),
                task_type: Some(task.task_type),
                is_initial: task.is_initial,
            };
            match self.entity(Some(pipeline.org_index), task.task.0)? {
                Some(key) => {
                    self.entities.insert(key.id.0, detail.encode().as_slice())?;
                    outcome.tasks_updated += 1;
                }
                None => {
                    self.create_entity(
                        task.task.0,
                        EntityKind::Task,
                        (org, pipeline.org_index),
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

    /// Applies one checked report.
    fn apply_run(&mut self, run: &TaskRun) -> Result<ReportCounts> {
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
        let home_key = scoped_key(pipeline.org_index, uuid);
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
        let previous = match self.task_runs.insert(&home_key, home.encode().as_slice())? {
            Some(old) => Some(TaskRunHome::decode(old.value())?),
            None => None,
        };
        let mut counts = ReportCounts::default();
        match previous {
            None => counts.inserted = 1,
            Some(old) => {
                if self.is_unchanged(&old, &home, &record, uuid)? {
                    if old != home {
                        self.task_runs.insert(&home_key, old.encode().as_slice())?;
                    }
                    counts.unchanged = 1;
                    return Ok(counts);
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
                    self.task_runs.insert(&home_key, home.encode().as_slice())?;
                }
                if let TaskRunHome::Unfinished { serial, .. } = old
                    && serial != 0
                    && run.state != RunState::Pending
                {
                    // An executor took it up: it no longer waits in the queue.
                    self.pending.remove(serial)?;
                }
                self.retract_run(&old, pipeline.org_index, uuid)?;
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
        Ok(counts)
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
    fn retract_run(&mut self, old: &TaskRunHome, org: OrgIndex, uuid: &[u8; 16]) -> Result<()> {
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
        self.last_run_work(Series {
            id: record.task,
            kind: EntityKind::Task,
            pipeline,
            org,
        })
        .retracted
        .push((executed_at, Uuid::from_bytes(*uuid)));
        self.remove_member(org, record.pipeline_run, pipeline, executed_at, &record)
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
        // The added run itself is found in `new_log` at finish.
        self.last_run_work(Series {
            id: task.id,
            kind: EntityKind::Task,
            pipeline: task.pipeline,
            org: task.org_index,
        });
        let micros = executed_at.micros();
        let slot = self.agg_slot(task.org_index, record.pipeline_run)?;
        let agg = slot.now.get_or_insert(PipelineRunAgg {
            pipeline: task.pipeline,
            finished: 0,
            failed: 0,
            duration_ms: 0,
            latest_micros: micros,
            members: Some(InlineMembers::default()),
        });
        agg.finished += 1;
        agg.failed += u32::from(!record.is_successful);
        agg.duration_ms = agg.duration_ms.wrapping_add(u64::from(record.duration_ms));
        agg.latest_micros = agg.latest_micros.max(micros);
        // Instants to add to the member index: this one once the pipeline run is too large to
        // keep them inline, and all of them the moment it becomes so.
        let indexed: Vec<i64> = match agg.members.as_mut().map(|m| m.insert(micros)) {
            Some(true) => Vec::new(),
            Some(false) => {
                let mut all = agg.members.take().expect("inline").as_slice().to_vec();
                all.push(micros);
                all
            }
            None => vec![micros],
        };
        for micros in indexed {
            let member = member_key(task.org_index, record.pipeline_run.as_bytes(), micros);
            let count = self.run_members.get(&member)?.map_or(0, |c| c.value());
            self.run_members.insert(&member, count + 1)?;
        }
        Ok(())
    }

    /// Takes a finished task run out of its pipeline run. When it was the latest, the next
    /// latest comes from the aggregate's own members, or for a large pipeline run from one
    /// lookup in the member index.
    fn remove_member(
        &mut self,
        org: OrgIndex,
        pipeline_run: PipelineRunId,
        pipeline: EntityId,
        executed_at: Timestamp,
        record: &RunRecord,
    ) -> Result<()> {
        let micros = executed_at.micros();
        let missing = || {
            Error::Internal(format!(
                "a finished task run of pipeline run {pipeline_run} is missing from its members"
            ))
        };
        let slot = self.agg_slot(org, pipeline_run)?;
        let Some(agg) = slot.now.as_mut() else {
            return Err(Error::Internal(
                "a finished task run's pipeline run has no aggregate".into(),
            ));
        };
        if agg.pipeline != pipeline {
            return Err(Error::Internal(format!(
                "pipeline run {pipeline_run} is stored under another pipeline than its task run"
            )));
        }
        agg.finished -= 1;
        agg.failed -= u32::from(!record.is_successful);
        agg.duration_ms = agg.duration_ms.wrapping_sub(u64::from(record.duration_ms));
        let was_latest = micros >= agg.latest_micros;
        if let Some(members) = &mut agg.members {
            if !members.remove(micros) {
                return Err(missing());
            }
            match members.latest() {
                Some(latest) => agg.latest_micros = latest,
                None => slot.now = None,
            }
            return Ok(());
        }
        if agg.finished == 0 {
            slot.now = None;
        }
        let member = member_key(org, pipeline_run.as_bytes(), micros);
        let count = self.run_members.get(&member)?.map(|c| c.value());
        match count {
            Some(1) => {
                self.run_members.remove(&member)?;
            }
            Some(count) if count > 1 => {
                self.run_members.insert(&member, count - 1)?;
            }
            _ => return Err(missing()),
        }
        if !was_latest || self.current_agg(org, pipeline_run)?.is_none() {
            return Ok(());
        }
        let low = member_key(org, pipeline_run.as_bytes(), i64::MIN);
        let high = member_key(org, pipeline_run.as_bytes(), i64::MAX);
        let latest = match self
            .run_members
            .range::<&[u8; MEMBER_KEY_LEN]>(&low..=&high)?
            .next_back()
        {
            Some(entry) => member_key_micros(entry?.0.value()),
            None => {
                return Err(Error::Internal(format!(
                    "pipeline run {pipeline_run} has finished task runs but no members"
                )));
            }
        };
        let agg = self
            .aggs
            .get_mut(&(org, pipeline_run))
            .and_then(|slot| slot.now.as_mut())
            .expect("loaded above");
        agg.latest_micros = latest;
        Ok(())
    }

    fn agg_slot(&mut self, org: OrgIndex, pipeline_run: PipelineRunId) -> Result<&mut AggSlot> {
        if !self.aggs.contains_key(&(org, pipeline_run)) {
            let stored = self
                .pipeline_runs
                .get(&scoped_key(org, pipeline_run.as_bytes()))?
                .map(|bytes| PipelineRunAgg::decode(bytes.value()))
                .transpose()?;
            self.aggs.insert(
                (org, pipeline_run),
                AggSlot {
                    before: stored,
                    now: stored,
                },
            );
        }
        Ok(self
            .aggs
            .get_mut(&(org, pipeline_run))
            .expect("inserted above"))
    }

    fn current_agg(
        &self,
        org: OrgIndex,
        pipeline_run: PipelineRunId,
    ) -> Result<Option<PipelineRunAgg>> {
        if let Some(slot) = self.aggs.get(&(org, pipeline_run)) {
            return Ok(slot.now);
        }
        self.pipeline_runs
            .get(&scoped_key(org, pipeline_run.as_bytes()))?
            .map(|bytes| PipelineRunAgg::decode(bytes.value()))
            .transpose()
    }

    fn last_run_work(&mut self, series: Series) -> &mut LastRunWork {
        self.last_run_work
            .entry(series.id)
            .or_insert_with(|| LastRunWork {
                series,
                best: None,
                retracted: Vec::new(),
            })
    }

    /// Stores every pipeline run this transaction changed and moves its contribution from where
    /// it was to where it is now.
    fn flush_pipeline_runs(&mut self) -> Result<()> {
        for ((org, pipeline_run), slot) in std::mem::take(&mut self.aggs) {
            if slot.before == slot.now {
                continue;
            }
            let contribution =
                |agg: &PipelineRunAgg| (agg.pipeline, agg.latest_micros, agg.tally());
            if slot.before.as_ref().map(contribution) != slot.now.as_ref().map(contribution) {
                if let Some(before) = slot.before {
                    let at = timestamp(before.latest_micros)?;
                    self.deltas.retract(before.pipeline, at, before.tally());
                    self.last_run_work(pipeline_series(before.pipeline, org))
                        .retracted
                        .push((at, pipeline_run.0));
                }
                if let Some(now) = slot.now {
                    let at = timestamp(now.latest_micros)?;
                    self.deltas.add(now.pipeline, at, now.tally());
                    let added = LastRunRecord {
                        executed_at: at,
                        run: pipeline_run.0,
                        is_successful: now.failed == 0,
                        duration_ms: now.duration_ms,
                    };
                    let work = self.last_run_work(pipeline_series(now.pipeline, org));
                    if work
                        .best
                        .is_none_or(|best| added.order_key() > best.order_key())
                    {
                        work.best = Some(added);
                    }
                }
            }
            let key = scoped_key(org, pipeline_run.as_bytes());
            match slot.now {
                Some(agg) => {
                    self.pipeline_runs.insert(&key, agg.encode().as_slice())?;
                }
                None => {
                    self.pipeline_runs.remove(&key)?;
                }
            }
        }
        Ok(())
    }
}

/// The last report of each task run in a batch, with its index in the batch, in the order of
/// those last reports; and how many earlier reports they replace. Later reports of a task run
/// replace earlier ones anyway, so only the last is applied (and a batch repeating one run
/// thousands of times costs one).
fn collapse(runs: &[TaskRun]) -> (Vec<(usize, &TaskRun)>, u64) {
    let mut last: HashMap<(Option<OrgId>, TaskRunId), usize> = HashMap::with_capacity(runs.len());
    for (index, run) in runs.iter().enumerate() {
        last.insert((run.organization, run.task_run), index);
    }
    let kept: Vec<(usize, &TaskRun)> = runs
        .iter()
        .enumerate()
        .filter(|(index, run)| last[&(run.organization, run.task_run)] == *index)
        .collect();
    let collapsed = (runs.len() - kept.len()) as u64;
    (kept, collapsed)
}

fn pipeline_series(pipeline: EntityId, org: OrgIndex) -> Series {
    Series {
        id: pipeline,
        kind: EntityKind::Pipeline,
        pipeline,
        org,
    }
}

fn timestamp(micros: i64) -> Result<Timestamp> {
    Timestamp::from_micros(micros).ok_or_else(|| super::records::corrupt("task run"))
}

/// A little-endian u32 counter in `meta`.
fn read_counter(meta: &Table<'_, &'static str, &'static [u8]>, name: &str) -> Result<Option<u32>> {
    meta.get(name)?
        .map(|bytes| {
            bytes
                .value()
                .try_into()
                .map(u32::from_le_bytes)
                .map_err(|_| super::records::corrupt("meta"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(task_run: u128, duration_ms: u32) -> TaskRun {
        TaskRun {
            task_run: TaskRunId(Uuid::from_u128(task_run)),
            pipeline_run: PipelineRunId(Uuid::from_u128(100)),
            pipeline: PipelineId(Uuid::from_u128(200)),
            task: TaskId(Uuid::from_u128(300)),
            organization: Some(OrgId(Uuid::from_u128(1))),
            task_type: TaskType::Query,
            state: RunState::Finished,
            is_successful: true,
            duration_ms,
            executed_at: Timestamp::from_micros(0),
            output: Vec::new(),
            errors: Vec::new(),
            metric_value: None,
            is_initial_task: false,
            is_final_task: false,
        }
    }

    #[test]
    fn a_batch_collapses_to_the_last_report_of_each_task_run() {
        let runs = vec![report(1, 10), report(2, 20), report(1, 11), report(1, 12)];
        let (kept, collapsed) = collapse(&runs);
        let kept: Vec<(usize, u32)> = kept.iter().map(|(i, r)| (*i, r.duration_ms)).collect();
        assert_eq!(kept, vec![(1, 20), (3, 12)]);
        assert_eq!(collapsed, 2);
        let mut other_org = report(1, 13);
        other_org.organization = Some(OrgId(Uuid::from_u128(2)));
        let runs = vec![report(1, 10), other_org];
        assert_eq!(
            collapse(&runs).0.len(),
            2,
            "task runs are namespaced per organization"
        );
    }
}
